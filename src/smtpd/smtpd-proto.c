/* smtpd-proto.c: SMTP command syntax, the DATA/BDAT decoder and the
 * header/body splitter (see smtpd-proto.h). Pure functions: all state lives
 * in the structs the caller passes. Reply texts follow Postfix 3.7's smtpd
 * so that scripts and administrators see what they know. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "macro.h"
#include "smtpd-proto.h"

static const char *const verb_names[_SMTP_VERB_MAX] = {
        [SMTP_VERB_UNKNOWN] = "unknown",
        [SMTP_VERB_HELO] = "helo",
        [SMTP_VERB_EHLO] = "ehlo",
        [SMTP_VERB_MAIL] = "mail",
        [SMTP_VERB_RCPT] = "rcpt",
        [SMTP_VERB_DATA] = "data",
        [SMTP_VERB_BDAT] = "bdat",
        [SMTP_VERB_RSET] = "rset",
        [SMTP_VERB_NOOP] = "noop",
        [SMTP_VERB_QUIT] = "quit",
        [SMTP_VERB_VRFY] = "vrfy",
        [SMTP_VERB_EXPN] = "expn",
        [SMTP_VERB_HELP] = "help",
        [SMTP_VERB_AUTH] = "auth",
        [SMTP_VERB_STARTTLS] = "starttls",
        [SMTP_VERB_ETRN] = "etrn",
};

const char *smtp_verb_name(SmtpVerb v) {
        return v >= 0 && v < _SMTP_VERB_MAX ? verb_names[v] : "unknown";
}

bool smtp_verb_ends_group(SmtpVerb v) {
        /* RFC 2920 3.1 lists EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP;
         * Postfix adds HELO, AUTH and STARTTLS. QUIT ends the session, so
         * what follows it does not matter. */
        switch (v) {
        case SMTP_VERB_HELO:
        case SMTP_VERB_EHLO:
        case SMTP_VERB_DATA:
        case SMTP_VERB_VRFY:
        case SMTP_VERB_EXPN:
        case SMTP_VERB_NOOP:
        case SMTP_VERB_AUTH:
        case SMTP_VERB_STARTTLS:
                return true;
        default:
                return false;
        }
}

int smtp_line_find(const char *buf, size_t len, size_t max, size_t *ret_len, size_t *ret_consumed,
                   bool *ret_bare_lf) {
        const char *lf = memchr(buf, '\n', len);
        size_t n;

        if (!lf)
                return len > max ? -E2BIG : 0;
        n = (size_t) (lf - buf);
        if (n > max)
                return -E2BIG;
        *ret_consumed = n + 1;
        *ret_bare_lf = !(n > 0 && buf[n - 1] == '\r');
        *ret_len = *ret_bare_lf ? n : n - 1;
        return 1;
}

SmtpVerb smtp_verb_parse(const char *line, const char **ret_args) {
        static const struct {
                const char *name;
                SmtpVerb verb;
        } table[] = {
                {"HELO", SMTP_VERB_HELO}, {"EHLO", SMTP_VERB_EHLO}, {"MAIL", SMTP_VERB_MAIL},
                {"RCPT", SMTP_VERB_RCPT}, {"DATA", SMTP_VERB_DATA}, {"BDAT", SMTP_VERB_BDAT},
                {"RSET", SMTP_VERB_RSET}, {"NOOP", SMTP_VERB_NOOP}, {"QUIT", SMTP_VERB_QUIT},
                {"VRFY", SMTP_VERB_VRFY}, {"EXPN", SMTP_VERB_EXPN}, {"HELP", SMTP_VERB_HELP},
                {"AUTH", SMTP_VERB_AUTH}, {"STARTTLS", SMTP_VERB_STARTTLS},
                {"ETRN", SMTP_VERB_ETRN},
        };
        size_t n = strcspn(line, " \t");
        const char *args = line + n;

        while (*args == ' ' || *args == '\t')
                args++;
        *ret_args = args;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strlen(table[i].name) == n && strncasecmp(line, table[i].name, n) == 0)
                        return table[i].verb;
        return SMTP_VERB_UNKNOWN;
}

void smtp_mail_args_done(SmtpMailArgs *a) {
        free(a->sender);
        free(a->envid);
        *a = (SmtpMailArgs) {0};
}

void smtp_rcpt_args_done(SmtpRcptArgs *a) {
        free(a->address);
        free(a->orcpt);
        *a = (SmtpRcptArgs) {0};
}

/* Iterates over "KEY[=VALUE]" parameters separated by blanks. Copies one
 * parameter into buf (capped) and returns the position after it, or NULL at
 * the end. */
static const char *next_param(const char *p, char *buf, size_t size, bool *ret_too_long) {
        size_t n;
        while (*p == ' ' || *p == '\t')
                p++;
        if (!*p)
                return NULL;
        n = strcspn(p, " \t");
        *ret_too_long = n >= size;
        n = MIN(n, size - 1);
        memcpy(buf, p, n);
        buf[n] = 0;
        return p + strcspn(p, " \t");
}

/* Splits "KEY=VALUE" in place; returns VALUE or NULL when there is no '='. */
static char *param_value(char *param) {
        char *eq = strchr(param, '=');
        if (!eq)
                return NULL;
        *eq = 0;
        return eq + 1;
}

static bool size_parse(const char *s, uint64_t *ret) {
        uint64_t v = 0;
        if (!*s)
                return false;
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return false;
                if (v > (UINT64_MAX - 9) / 10)
                        v = UINT64_MAX / 2;     /* saturate: "too big" in any case */
                else
                        v = v * 10 + (uint64_t) (*s - '0');
        }
        *ret = v;
        return true;
}

int smtp_mail_parse(const char *args, unsigned flags, SmtpMailArgs *ret, const char **ret_reply) {
        SmtpMailArgs a = {0};
        const char *p, *rest;
        char param[1024];
        unsigned parse_flags = ADDR_PARSE_ALLOW_EMPTY;
        bool too_long;
        int r;

        p = startswith_no_case(args, "FROM:");
        if (!p) {
                *ret_reply = "501 5.5.4 Syntax: MAIL FROM:<address>";
                return -EINVAL;
        }
        /* SMTPUTF8 can only be known after the address: parse leniently for
         * 8-bit and check against the parameters below. */
        if (flags & SMTP_PARSE_SMTPUTF8)
                parse_flags |= ADDR_PARSE_ALLOW_8BIT;
        if (flags & SMTP_PARSE_STRICT)
                parse_flags |= ADDR_PARSE_STRICT;
        r = addr_parse_path(p, parse_flags, &a.sender, &a.addr_flags, &rest);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                *ret_reply = r == -E2BIG ? "501 5.1.7 Bad sender address syntax: too long"
                                         : "501 5.1.7 Bad sender address syntax";
                return -EINVAL;
        }
        for (p = rest; (p = next_param(p, param, sizeof(param), &too_long));) {
                char *value = param_value(param);
                if (too_long) {
                        *ret_reply = "501 5.5.4 Bad MAIL parameter: too long";
                        goto fail;
                }
                if (strcaseeq(param, "SIZE")) {
                        if (!value || !size_parse(value, &a.size)) {
                                *ret_reply = "501 5.5.4 Bad message size syntax";
                                goto fail;
                        }
                } else if (strcaseeq(param, "BODY")) {
                        if (value && strcaseeq(value, "8BITMIME"))
                                a.body_8bitmime = true;
                        else if (value && strcaseeq(value, "7BIT"))
                                a.body_8bitmime = false;
                        else {
                                *ret_reply = "501 5.5.4 Unsupported BODY parameter value";
                                goto fail;
                        }
                } else if (strcaseeq(param, "SMTPUTF8") && !value &&
                           (flags & SMTP_PARSE_SMTPUTF8)) {
                        a.smtputf8 = true;
                } else if (strcaseeq(param, "RET") && (flags & SMTP_PARSE_DSN)) {
                        if (a.ret != QUEUE_RET_NONE || !value) {
                                *ret_reply = "501 5.5.4 Bad RET parameter syntax";
                                goto fail;
                        }
                        if (strcaseeq(value, "FULL"))
                                a.ret = QUEUE_RET_FULL;
                        else if (strcaseeq(value, "HDRS"))
                                a.ret = QUEUE_RET_HDRS;
                        else {
                                *ret_reply = "501 5.5.4 Bad RET parameter syntax";
                                goto fail;
                        }
                } else if (strcaseeq(param, "ENVID") && (flags & SMTP_PARSE_DSN)) {
                        /* RFC 3461 4.4: xtext, at most 100 characters. */
                        if (a.envid || !value || !*value || strlen(value) > 100 ||
                            !addr_xtext_valid(value)) {
                                *ret_reply = "501 5.5.4 Bad ENVID parameter syntax";
                                goto fail;
                        }
                        a.envid = strdup(value);
                        if (!a.envid) {
                                smtp_mail_args_done(&a);
                                return -ENOMEM;
                        }
                } else if (strcaseeq(param, "AUTH") && value) {
                        a.auth_seen = true;
                } else if (strcaseeq(param, "RET") || strcaseeq(param, "ENVID")) {
                        *ret_reply = "501 5.7.1 DSN support is disabled";
                        goto fail;
                } else {
                        *ret_reply = "555 5.5.4 Unsupported option";
                        goto fail;
                }
        }
        if ((a.addr_flags & ADDR_FLAG_8BIT) && !a.smtputf8) {
                *ret_reply = "553 5.6.7 Must declare SMTPUTF8 to send unicode address";
                goto fail;
        }
        *ret = a;
        return 0;
fail:
        smtp_mail_args_done(&a);
        return -EINVAL;
}

int smtp_rcpt_parse(const char *args, unsigned flags, SmtpRcptArgs *ret, const char **ret_reply) {
        SmtpRcptArgs a = {0};
        const char *p, *rest;
        char param[1024];
        bool too_long;
        int r;

        p = startswith_no_case(args, "TO:");
        if (!p) {
                *ret_reply = "501 5.5.4 Syntax: RCPT TO:<address>";
                return -EINVAL;
        }
        r = addr_parse_path(p, ((flags & SMTP_PARSE_SMTPUTF8) ? ADDR_PARSE_ALLOW_8BIT : 0) |
                                       ((flags & SMTP_PARSE_STRICT) ? ADDR_PARSE_STRICT : 0),
                            &a.address, &a.addr_flags, &rest);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                *ret_reply = r == -E2BIG ? "501 5.1.3 Bad recipient address syntax: too long"
                                         : "501 5.1.3 Bad recipient address syntax";
                return -EINVAL;
        }
        for (p = rest; (p = next_param(p, param, sizeof(param), &too_long));) {
                char *value = param_value(param);
                if (too_long) {
                        *ret_reply = "501 5.5.4 Bad RCPT parameter: too long";
                        goto fail;
                }
                if (strcaseeq(param, "NOTIFY") && (flags & SMTP_PARSE_DSN)) {
                        int bits = value && !a.notify ? queue_notify_from_string(value) : -EINVAL;
                        if (bits <= 0) {
                                *ret_reply = "501 5.5.4 Error: Bad NOTIFY parameter syntax";
                                goto fail;
                        }
                        a.notify = (unsigned) bits;
                } else if (strcaseeq(param, "ORCPT") && (flags & SMTP_PARSE_DSN)) {
                        /* RFC 3461 4.2: addr-type ";" xtext. */
                        const char *semi = value ? strchr(value, ';') : NULL;
                        if (a.orcpt || !semi || semi == value || !semi[1] ||
                            !addr_xtext_valid(semi + 1) || strlen(value) > 500) {
                                *ret_reply = "501 5.5.4 Error: Bad ORCPT parameter syntax";
                                goto fail;
                        }
                        a.orcpt = strdup(value);
                        if (!a.orcpt) {
                                smtp_rcpt_args_done(&a);
                                return -ENOMEM;
                        }
                } else if (strcaseeq(param, "NOTIFY") || strcaseeq(param, "ORCPT")) {
                        *ret_reply = "501 5.7.1 DSN support is disabled";
                        goto fail;
                } else {
                        *ret_reply = "555 5.5.4 Unsupported option";
                        goto fail;
                }
        }
        if ((a.addr_flags & ADDR_FLAG_8BIT) && !(flags & SMTP_PARSE_UTF8_SESSION)) {
                *ret_reply = "553 5.6.7 Must declare SMTPUTF8 to send unicode address";
                goto fail;
        }
        *ret = a;
        return 0;
fail:
        smtp_rcpt_args_done(&a);
        return -EINVAL;
}

int smtp_bdat_parse(const char *args, uint64_t *ret_size, bool *ret_last, const char **ret_reply) {
        char word[32];
        const char *p = args;
        uint64_t size;
        bool too_long, last = false;

        p = next_param(p, word, sizeof(word), &too_long);
        if (!p || too_long || !size_parse(word, &size))
                goto fail;
        p = next_param(p, word, sizeof(word), &too_long);
        if (p) {
                if (too_long || !strcaseeq(word, "LAST"))
                        goto fail;
                last = true;
                if (next_param(p, word, sizeof(word), &too_long))
                        goto fail;
        }
        *ret_size = size;
        *ret_last = last;
        return 0;
fail:
        *ret_reply = "501 5.5.4 Syntax: BDAT count [LAST]";
        return -EINVAL;
}

void smtp_data_decoder_init(SmtpDataDecoder *d, bool bdat) {
        *d = (SmtpDataDecoder) {
                .state = bdat ? SMTP_DATA_TEXT : SMTP_DATA_SOL,
                .bdat = bdat,
        };
}

int smtp_data_decode(SmtpDataDecoder *d, const char *in, size_t n, StrBuf *out) {
        size_t i = 0, start;
        int r;

        r = strbuf_reserve(out, n + 1);
        if (r < 0)
                return r;
        while (i < n && d->state != SMTP_DATA_END) {
                char c = in[i];

                switch (d->state) {
                case SMTP_DATA_SOL:
                        if (c == '.' && !d->bdat) {
                                d->state = SMTP_DATA_DOT;
                                i++;
                                continue;
                        }
                        d->state = SMTP_DATA_TEXT;
                        continue;       /* same byte as text */
                case SMTP_DATA_SOL_LF:
                        /* A line after a bare LF: its leading dot is a
                         * stuffing dot like any other, but "." there never
                         * ends the message. */
                        if (c == '.' && !d->bdat)
                                i++;
                        d->state = SMTP_DATA_TEXT;
                        continue;
                case SMTP_DATA_DOT:
                        if (c == '\r') {
                                d->state = SMTP_DATA_DOT_CR;
                                i++;
                                continue;
                        }
                        /* RFC 5321 4.5.2: drop the stuffing dot. */
                        d->state = SMTP_DATA_TEXT;
                        continue;
                case SMTP_DATA_DOT_CR:
                        if (c == '\n') {
                                d->state = SMTP_DATA_END;
                                i++;
                                continue;
                        }
                        /* "." CR x: the dot was stuffing, the CR is pending. */
                        d->state = SMTP_DATA_CR;
                        continue;
                case SMTP_DATA_CR:
                        if (c == '\n') {
                                out->data[out->len++] = '\n';
                                d->state = d->bdat ? SMTP_DATA_TEXT : SMTP_DATA_SOL;
                                i++;
                                continue;
                        }
                        /* A bare CR is message text, never a line end. */
                        d->bare_cr = true;
                        out->data[out->len++] = '\r';
                        d->state = SMTP_DATA_TEXT;
                        continue;
                case SMTP_DATA_TEXT:
                        /* Fast path: copy up to the next CR or LF. */
                        start = i;
                        while (i < n && in[i] != '\r' && in[i] != '\n')
                                i++;
                        memcpy(out->data + out->len, in + start, i - start);
                        out->len += i - start;
                        if (i == n)
                                break;
                        if (in[i] == '\r')
                                d->state = SMTP_DATA_CR;
                        else {
                                /* A bare LF ends the line in the content
                                 * (normalized to LF) but cannot start an
                                 * end-of-data sequence. */
                                d->bare_lf = true;
                                out->data[out->len++] = '\n';
                                d->state = d->bdat ? SMTP_DATA_TEXT : SMTP_DATA_SOL_LF;
                        }
                        i++;
                        continue;
                case SMTP_DATA_END:
                        break;
                }
        }
        out->data[out->len] = 0;
        return (int) MIN(i, (size_t) INT32_MAX);
}

int smtp_data_decoder_finish(SmtpDataDecoder *d, StrBuf *out) {
        if (d->state == SMTP_DATA_CR) {
                d->bare_cr = true;
                d->state = SMTP_DATA_TEXT;
                return strbuf_putc(out, '\r');
        }
        return 0;
}

bool smtp_is_header(const char *line, size_t len) {
        size_t i;
        /* RFC 5322 2.2: field-name is printable US-ASCII except ':'. */
        for (i = 0; i < len; i++) {
                unsigned char c = (unsigned char) line[i];
                if (c == ':')
                        return i > 0;
                if (c <= 32 || c >= 127)
                        return false;
        }
        return false;
}

void smtp_content_init(SmtpContent *c, const SmtpContentOps *ops, void *userdata,
                       size_t header_max, size_t line_max) {
        *c = (SmtpContent) {
                .ops = ops,
                .userdata = userdata,
                .header_max = header_max ? header_max : 102400,
                .line_max = line_max ? line_max : 65536,
        };
}

static int flush_header(SmtpContent *c) {
        _cleanup_free_ char *unfolded = NULL;
        size_t j = 0;
        int r;

        if (c->header.len == 0)
                return 0;
        unfolded = malloc(c->header.len + 1);
        if (!unfolded)
                return -ENOMEM;
        for (size_t i = 0; i < c->header.len; i++) {
                char ch = c->header.data[i];
                if (ch == '\n') {
                        if (j > 0 && unfolded[j - 1] == '\r')
                                j--;
                        continue;
                }
                unfolded[j++] = ch;
        }
        unfolded[j] = 0;
        r = c->ops->header(c->userdata, c->header.data, c->header.len, unfolded,
                           c->header_truncated);
        strbuf_clear(&c->header);
        c->header_truncated = false;
        return r;
}

static int end_headers(SmtpContent *c) {
        int r = flush_header(c);
        if (r < 0)
                return r;
        c->in_body = true;
        return c->ops->end_of_headers(c->userdata);
}

/* One complete line (no LF) in the header section. */
static int header_line(SmtpContent *c, const char *line, size_t len) {
        int r;
        if (len > 0 && (line[0] == ' ' || line[0] == '\t') && c->header.len > 0) {
                /* RFC 5322 2.2.3: a continuation line of the current header. */
                if (c->header.len + 1 + len > c->header_max) {
                        c->header_truncated = true;
                        return 0;
                }
                if (strbuf_putc(&c->header, '\n') < 0 || strbuf_append(&c->header, line, len) < 0)
                        return -ENOMEM;
                return 0;
        }
        if (len > 0 && smtp_is_header(line, len)) {
                r = flush_header(c);
                if (r < 0)
                        return r;
                if (len > c->header_max) {
                        len = c->header_max;
                        c->header_truncated = true;
                }
                return strbuf_append(&c->header, line, len);
        }
        r = end_headers(c);
        if (r < 0)
                return r;
        if (len == 0)
                return 0;       /* the separator line */
        return c->ops->body(c->userdata, line, len, true, true);
}

int smtp_content_feed(SmtpContent *c, const char *text, size_t len) {
        int r;

        while (len > 0) {
                const char *lf = memchr(text, '\n', len);
                size_t n = lf ? (size_t) (lf - text) : len, take;

                if (c->in_body) {
                        if (c->line.len == 0 && lf && n <= c->line_max) {
                                /* Fast path: a whole line, no copy. */
                                r = c->ops->body(c->userdata, text, n, !c->in_line, true);
                                if (r < 0)
                                        return r;
                                c->in_line = false;
                                text += n + 1;
                                len -= n + 1;
                                continue;
                        }
                        take = MIN(n, c->line_max - c->line.len);
                        if (strbuf_append(&c->line, text, take) < 0)
                                return -ENOMEM;
                        text += take;
                        len -= take;
                        n -= take;
                        if (lf && n == 0) {
                                r = c->ops->body(c->userdata, c->line.data, c->line.len,
                                                 !c->in_line, true);
                                c->in_line = false;
                                strbuf_clear(&c->line);
                                text++;
                                len--;
                        } else if (c->line.len >= c->line_max) {
                                /* Body lines may be arbitrarily long: pass
                                 * them on in pieces. */
                                r = c->ops->body(c->userdata, c->line.data, c->line.len,
                                                 !c->in_line, false);
                                c->in_line = true;
                                strbuf_clear(&c->line);
                        } else
                                r = 0;
                        if (r < 0)
                                return r;
                        continue;
                }

                if (c->line.len == 0 && lf) {
                        r = header_line(c, text, n);
                        if (r < 0)
                                return r;
                        text += n + 1;
                        len -= n + 1;
                        continue;
                }
                /* A header line split across feeds: keep at most one byte
                 * more than a header may hold, drop the excess. */
                take = c->line.len > c->header_max ? 0 : MIN(n, c->header_max + 1 - c->line.len);
                if (strbuf_append(&c->line, text, take) < 0)
                        return -ENOMEM;
                text += n;
                len -= n;
                if (lf) {
                        r = header_line(c, c->line.data, c->line.len);
                        strbuf_clear(&c->line);
                        if (r < 0)
                                return r;
                        text++;
                        len--;
                }
        }
        return 0;
}

int smtp_content_finish(SmtpContent *c) {
        int r;
        if (c->line.len > 0) {
                /* The last line had no LF: end it. */
                r = smtp_content_feed(c, "\n", 1);
                if (r < 0)
                        return r;
        } else if (c->in_line) {
                r = c->ops->body(c->userdata, "", 0, false, true);
                if (r < 0)
                        return r;
                c->in_line = false;
        }
        if (!c->in_body)
                return end_headers(c);
        return 0;
}

void smtp_content_done(SmtpContent *c) {
        strbuf_done(&c->header);
        strbuf_done(&c->line);
}
