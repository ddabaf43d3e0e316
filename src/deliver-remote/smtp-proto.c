/* smtp-proto.c: reply reading, EHLO keywords, next-hop syntax, header scan
 * and the DATA encoder of the SMTP/LMTP client. Nothing here does I/O; all
 * input may come from a hostile peer or a damaged queue file and is bounded
 * (SMTP_REPLY_MAX, SMTP_REPLY_LINES_MAX). See smtp-proto.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "inet.h"
#include "smtp-proto.h"

void smtp_reply_done(SmtpReply *r) {
        free(r->text);
        for (size_t i = 0; i < r->n_lines; i++)
                free(r->lines[i]);
        free(r->lines);
        *r = (SmtpReply) {0};
}

bool smtp_parse_dsn(const char *text, unsigned code, char buf[static 16]) {
        const char *p = text;
        size_t n;

        /* RFC 3463: class "." subject "." detail, 1-3 digits each. */
        if (!(*p == '2' || *p == '4' || *p == '5') || (unsigned) (*p - '0') != code / 100)
                return false;
        p++;
        for (int part = 0; part < 2; part++) {
                if (*p != '.')
                        return false;
                p++;
                n = strspn(p, "0123456789");
                if (n < 1 || n > 3)
                        return false;
                p += n;
        }
        if (*p && *p != ' ' && *p != '\t')
                return false;
        n = (size_t) (p - text);
        memcpy(buf, text, n);
        buf[n] = 0;
        return true;
}

int smtp_reply_feed(SmtpReply *r, const char *line, size_t len) {
        unsigned code;
        bool last;
        const char *text;
        size_t tlen, total = r->text ? strlen(r->text) : 0;
        char **lines;
        char *t;

        if (len < 3 || !isdigit((unsigned char) line[0]) || !isdigit((unsigned char) line[1]) ||
            !isdigit((unsigned char) line[2]) || line[0] < '2' || line[0] > '5')
                return -EBADMSG;
        if (len > 3 && line[3] != ' ' && line[3] != '-')
                return -EBADMSG;
        if (memchr(line, 0, len))
                return -EBADMSG;
        code = (unsigned) ((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
        if (r->n_lines > 0 && code != r->code)
                return -EBADMSG;
        if (r->n_lines >= SMTP_REPLY_LINES_MAX || total + len > SMTP_REPLY_MAX)
                return -EBADMSG;
        last = len == 3 || line[3] == ' ';
        text = len > 4 ? line + 4 : "";
        tlen = len > 4 ? len - 4 : 0;

        lines = reallocarray(r->lines, r->n_lines + 1, sizeof(char *));
        if (!lines)
                return -ENOMEM;
        r->lines = lines;
        r->lines[r->n_lines] = strndup_safe(text, tlen);
        if (!r->lines[r->n_lines])
                return -ENOMEM;
        r->n_lines++;

        if (r->n_lines == 1) {
                r->code = code;
                if (!smtp_parse_dsn(r->lines[0], code, r->dsn))
                        r->dsn[0] = 0;
                t = tlen ? strdup_printf("%03u %s", code, r->lines[0]) : strdup_printf("%03u", code);
        } else {
                /* Later lines repeat the enhanced code; keep it once. */
                const char *s = r->lines[r->n_lines - 1];
                char dsn[16];
                if (r->dsn[0] && smtp_parse_dsn(s, code, dsn) && streq(dsn, r->dsn))
                        s += strlen(dsn) + (s[strlen(dsn)] ? 1 : 0);
                t = *s ? strdup_printf("%s %s", r->text, s) : strdup(r->text);
        }
        if (!t)
                return -ENOMEM;
        free(r->text);
        r->text = t;
        return last ? 1 : 0;
}

void smtp_features_parse(const SmtpReply *r, SmtpFeatures *ret) {
        SmtpFeatures f = {.esmtp = true};

        for (size_t i = 1; i < r->n_lines; i++) {
                const char *l = r->lines[i], *arg;
                size_t kw = strcspn(l, " =");
                arg = l[kw] ? l + kw + 1 : "";
#define KW(s) (kw == strlen(s) && strncasecmp(l, s, kw) == 0)
                if (KW("PIPELINING"))
                        f.pipelining = true;
                else if (KW("SIZE")) {
                        f.size = true;
                        f.size_limit = strtoull(arg, NULL, 10);
                } else if (KW("8BITMIME"))
                        f.eightbitmime = true;
                else if (KW("DSN"))
                        f.dsn = true;
                else if (KW("SMTPUTF8"))
                        f.smtputf8 = true;
                else if (KW("STARTTLS"))
                        f.starttls = true;
                else if (KW("ENHANCEDSTATUSCODES"))
                        f.enhancedstatuscodes = true;
#undef KW
        }
        *ret = f;
}

void nexthop_done(Nexthop *n) {
        free(n->host);
        free(n->path);
        *n = (Nexthop) {0};
}

static int parse_port(const char *s, unsigned *ret) {
        static const struct {
                const char *name;
                unsigned port;
        } services[] = {
                {"smtp", 25}, {"submission", 587}, {"submissions", 465}, {"smtps", 465}, {"lmtp", 24},
        };
        char *end;
        unsigned long v;

        if (isempty(s))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(services); i++)
                if (strcaseeq(s, services[i].name)) {
                        *ret = services[i].port;
                        return 0;
                }
        if (!str_is_ascii_digits(s))
                return -EINVAL;
        v = strtoul(s, &end, 10);
        if (*end || v == 0 || v > 65535)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

static bool host_valid(const char *h) {
        return addr_domain_valid(h, strlen(h), false);
}

int nexthop_parse(const char *s, bool lmtp, Nexthop *ret) {
        _cleanup_free_ char *host = NULL;
        Nexthop n = {.kind = NEXTHOP_INET, .port = lmtp ? 24 : 25, .mx = !lmtp};
        const char *p = s, *port = NULL, *rest;
        InetAddr a;

        if (isempty(s))
                return -EINVAL;
        if (lmtp) {
                if ((rest = startswith(s, "unix:"))) {
                        if (isempty(rest))
                                return -EINVAL;
                        n.kind = NEXTHOP_UNIX;
                        n.mx = false;
                        n.path = strdup(rest);
                        if (!n.path)
                                return -ENOMEM;
                        *ret = n;
                        return 0;
                }
                if ((rest = startswith(s, "inet:")))
                        p = rest;
        }
        if (*p == '[') {
                const char *close = strchr(p, ']');
                if (!close || close == p + 1)
                        return -EINVAL;
                host = strndup_safe(p + 1, (size_t) (close - p - 1));
                if (!host)
                        return -ENOMEM;
                n.mx = false;
                if (close[1] == ':')
                        port = close + 2;
                else if (close[1])
                        return -EINVAL;
        } else {
                const char *colon = strrchr(p, ':');
                if (colon && strchr(p, ':') != colon)
                        return -EINVAL; /* bare IPv6 needs brackets */
                host = colon ? strndup_safe(p, (size_t) (colon - p)) : strdup(p);
                if (!host)
                        return -ENOMEM;
                if (colon)
                        port = colon + 1;
        }
        if (port && parse_port(port, &n.port) < 0)
                return -EINVAL;
        {
                /* "[ipv6:2001:db8::1]" as in an address literal. */
                const char *h = startswith_no_case(host, "ipv6:");
                if (inet_addr_parse(h ? h : host, &a) == 0) {
                        if (h)
                                memmove(host, h, strlen(h) + 1);
                        n.literal = true;
                        n.mx = false;
                } else if (!host_valid(host))
                        return -EINVAL;
        }
        n.host = steal_ptr(host);
        *ret = n;
        return 0;
}

bool smtp_has_8bit(const char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) p[i] >= 0x80)
                        return true;
        return false;
}

static bool header_is(const char *line, size_t len, const char *name) {
        size_t n = strlen(name);
        return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

static const char *skip_ws(const char *p, const char *end) {
        while (p < end && (*p == ' ' || *p == '\t'))
                p++;
        return p;
}

void smtp_headers_scan(const char *content, size_t n, SmtpHeaderInfo *ret) {
        SmtpHeaderInfo h = {.content_type_text = true, .cte_identity = true};
        const char *p = content, *end = content + n;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *le = nl ? nl : end;
                size_t len = (size_t) (le - p);

                if (len == 0) {
                        p = le + 1;
                        break;
                }
                if (smtp_has_8bit(p, len))
                        h.headers_8bit = true;
                if (header_is(p, len, "Received"))
                        h.received++;
                else if (header_is(p, len, "MIME-Version"))
                        h.mime_version = true;
                else if (header_is(p, len, "Content-Type")) {
                        const char *v = skip_ws(p + strlen("Content-Type:"), le);
                        size_t vl = (size_t) (le - v);
                        h.content_type_text = vl >= 5 && strncasecmp(v, "text/", 5) == 0;
                        h.content_type_composite =
                                (vl >= 10 && strncasecmp(v, "multipart/", 10) == 0) ||
                                (vl >= 8 && strncasecmp(v, "message/", 8) == 0);
                } else if (header_is(p, len, "Content-Transfer-Encoding")) {
                        const char *v = skip_ws(p + strlen("Content-Transfer-Encoding:"), le);
                        size_t vl = (size_t) (le - v);
                        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\r'))
                                vl--;
                        h.cte_identity = (vl == 4 && strncasecmp(v, "7bit", 4) == 0) ||
                                         (vl == 4 && strncasecmp(v, "8bit", 4) == 0) ||
                                         (vl == 6 && strncasecmp(v, "binary", 6) == 0);
                }
                p = nl ? nl + 1 : end;
        }
        h.header_size = (size_t) (p - content);
        *ret = h;
}

void smtp_encoder_init(SmtpEncoder *e, size_t line_limit, bool downgrade, bool add_mime_version) {
        *e = (SmtpEncoder) {
                .line_limit = line_limit,
                .downgrade = downgrade,
                .add_mime_version = add_mime_version,
                .in_headers = true,
        };
}

void smtp_encoder_done(SmtpEncoder *e) {
        strbuf_done(&e->line);
}

/* Emits one logical line: dot-stuffed (RFC 5321 4.5.2), folded at the line
 * limit (continuations of a header line get a leading space so that they
 * stay part of the header). */
static int emit_line(SmtpEncoder *e, const char *p, size_t n, bool header, StrBuf *out) {
        bool first = true;
        int r;

        do {
                size_t chunk = n;
                if (e->line_limit > 0 && chunk > e->line_limit)
                        chunk = e->line_limit;
                if (!first && header && (r = strbuf_putc(out, ' ')) < 0)
                        return r;
                if ((first || !header) && chunk > 0 && p[0] == '.' && (r = strbuf_putc(out, '.')) < 0)
                        return r;
                if ((r = strbuf_append(out, p, chunk)) < 0 || (r = strbuf_puts(out, "\r\n")) < 0)
                        return r;
                p += chunk;
                n -= chunk;
                first = false;
        } while (n > 0);
        return 0;
}

/* RFC 2045 6.7: quoted-printable, lines of at most 76 characters. */
static int emit_qp(const char *p, size_t n, StrBuf *out) {
        static const char hex[] = "0123456789ABCDEF";
        size_t col = 0;
        int r;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) p[i];
                char enc[4];
                size_t len;
                bool last = i + 1 == n;

                if ((c >= 33 && c <= 126 && c != '=') ||
                    ((c == ' ' || c == '\t') && !last)) {
                        enc[0] = (char) c;
                        len = 1;
                } else {
                        enc[0] = '=';
                        enc[1] = hex[c >> 4];
                        enc[2] = hex[c & 15];
                        len = 3;
                }
                /* A leading dot is encoded rather than stuffed: the
                 * line then never starts with one. */
                if (col == 0 && c == '.') {
                        enc[0] = '=';
                        enc[1] = '2';
                        enc[2] = 'E';
                        len = 3;
                }
                if (col + len > 75) {
                        if ((r = strbuf_puts(out, "=\r\n")) < 0)
                                return r;
                        col = 0;
                        if (c == '.') {
                                enc[0] = '=';
                                enc[1] = '2';
                                enc[2] = 'E';
                                len = 3;
                        }
                }
                if ((r = strbuf_append(out, enc, len)) < 0)
                        return r;
                col += len;
        }
        return strbuf_puts(out, "\r\n");
}

static int process_line(SmtpEncoder *e, const char *p, size_t n, StrBuf *out) {
        int r;

        /* Queue files have LF line ends; a stray CR before it is content. */
        if (e->in_headers) {
                if (n == 0) {
                        e->in_headers = false;
                        e->skipping_header = false;
                        if (e->downgrade) {
                                if (e->add_mime_version &&
                                    (r = strbuf_puts(out, "MIME-Version: 1.0\r\n")) < 0)
                                        return r;
                                if ((r = strbuf_puts(out, "Content-Transfer-Encoding: "
                                                          "quoted-printable\r\n")) < 0)
                                        return r;
                        }
                        return strbuf_puts(out, "\r\n");
                }
                if (p[0] == ' ' || p[0] == '\t') {
                        if (e->skipping_header)
                                return 0;
                        return emit_line(e, p, n, true, out);
                }
                e->skipping_header = e->downgrade && header_is(p, n, "Content-Transfer-Encoding");
                if (e->skipping_header)
                        return 0;
                if (!memchr(p, ':', n)) {
                        /* Not a header: the body starts without an empty line. */
                        e->in_headers = false;
                        if (e->downgrade) {
                                if (e->add_mime_version &&
                                    (r = strbuf_puts(out, "MIME-Version: 1.0\r\n")) < 0)
                                        return r;
                                if ((r = strbuf_puts(out, "Content-Transfer-Encoding: "
                                                          "quoted-printable\r\n\r\n")) < 0)
                                        return r;
                        }
                } else
                        return emit_line(e, p, n, true, out);
        }
        if (e->downgrade)
                return emit_qp(p, n, out);
        return emit_line(e, p, n, false, out);
}

int smtp_encoder_feed(SmtpEncoder *e, const char *p, size_t n, StrBuf *out) {
        const char *end = p + n;
        int r;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                if (!nl) {
                        /* Keep the partial line; a pathological line without
                         * LF is cut into 64 KiB pieces. */
                        if ((r = strbuf_append(&e->line, p, (size_t) (end - p))) < 0)
                                return r;
                        if (e->line.len > 65536) {
                                r = process_line(e, e->line.data, e->line.len, out);
                                strbuf_clear(&e->line);
                                if (r < 0)
                                        return r;
                        }
                        return 0;
                }
                if (e->line.len > 0) {
                        if ((r = strbuf_append(&e->line, p, (size_t) (nl - p))) < 0)
                                return r;
                        r = process_line(e, e->line.data, e->line.len, out);
                        strbuf_clear(&e->line);
                } else
                        r = process_line(e, p, (size_t) (nl - p), out);
                if (r < 0)
                        return r;
                p = nl + 1;
        }
        return 0;
}

int smtp_encoder_finish(SmtpEncoder *e, StrBuf *out) {
        int r;

        if (e->line.len > 0) {
                r = process_line(e, e->line.data, e->line.len, out);
                strbuf_clear(&e->line);
                if (r < 0)
                        return r;
        }
        return strbuf_puts(out, ".\r\n");
}

int smtp_xtext_append(StrBuf *out, const char *s) {
        int r = 0;
        for (const unsigned char *p = (const unsigned char *) s; *p && r >= 0; p++) {
                if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
                        r = strbuf_printf(out, "+%02X", *p);
                else
                        r = strbuf_putc(out, (char) *p);
        }
        return r;
}
