/* bounce-template.c: built-in notification texts, the bounce_template_file
 * parser and $name expansion. Entry points: bounce_templates_new(),
 * bounce_templates_parse(), bounce_templates_dump(),
 * bounce_template_expand(). The file syntax follows Postfix's bounce(5):
 * "NAME_template = <<WORD", header lines (Charset, From, Subject,
 * Postmaster-Subject), an empty line, the text, and WORD alone on a line.
 * Outside here-documents only comments and empty lines are allowed. What
 * the parser leaves out: header continuation lines and RFC 2047 encoding
 * (headers must be printable ASCII). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounce-template.h"

typedef struct Default {
        const char *subject;
        const char *postmaster_subject;
        const char *text;
} Default;

#define DEFAULT_FROM "Mail Delivery System <MAILER-DAEMON@$myhostname>"

static const Default defaults[_BOUNCE_TEMPLATE_MAX] = {
        [BOUNCE_TEMPLATE_FAILURE] = {
                "Undelivered Mail Returned to Sender",
                "Postmaster Copy: Undelivered Mail",
                "This is the mail system at host $myhostname.\n"
                "\n"
                "Your message could not be delivered to one or more of its\n"
                "recipients, and the mail system has stopped trying. The reasons\n"
                "are listed below; your message is attached.\n"
                "\n"
                "If you need help, write to the postmaster of this site and\n"
                "include this report. You may remove your own text from the\n"
                "attached message first.\n"
                "\n"
                "                   The mail system\n",
        },
        [BOUNCE_TEMPLATE_DELAY] = {
                "Delayed Mail (still being retried)",
                "Postmaster Warning: Delayed Mail",
                "This is the mail system at host $myhostname.\n"
                "\n"
                "This is a warning only: there is no need to send your message\n"
                "again.\n"
                "\n"
                "Your message has not yet reached one or more of its recipients.\n"
                "The mail system keeps trying until the message is\n"
                "$maximal_queue_lifetime_days day(s) old and tells you if it has to\n"
                "give up. The reasons for the delay are listed below.\n"
                "\n"
                "                   The mail system\n",
        },
        [BOUNCE_TEMPLATE_SUCCESS] = {
                "Successful Mail Delivery Report",
                "Postmaster Copy: Successful Mail Delivery Report",
                "This is the mail system at host $myhostname.\n"
                "\n"
                "Your message was delivered to the destinations listed below,\n"
                "as its delivery status notification request asked. A message\n"
                "handed on to a system that does not send such reports is listed\n"
                "as relayed; you will hear no more about it.\n"
                "\n"
                "                   The mail system\n",
        },
        [BOUNCE_TEMPLATE_VERIFY] = {
                "Mail Delivery Status Report",
                "Postmaster Copy: Mail Delivery Status Report",
                "This is the mail system at host $myhostname.\n"
                "\n"
                "Below is the mail delivery report that you asked for.\n"
                "\n"
                "                   The mail system\n",
        },
};

static const char *const kind_names[_BOUNCE_TEMPLATE_MAX] = {
        [BOUNCE_TEMPLATE_FAILURE] = "failure_template",
        [BOUNCE_TEMPLATE_DELAY] = "delay_template",
        [BOUNCE_TEMPLATE_SUCCESS] = "success_template",
        [BOUNCE_TEMPLATE_VERIFY] = "verify_template",
};

const char *bounce_template_kind_to_string(BounceTemplateKind k) {
        return k >= 0 && k < _BOUNCE_TEMPLATE_MAX ? kind_names[k] : NULL;
}

static void template_done(BounceTemplate *t) {
        free(t->charset);
        free(t->from);
        free(t->subject);
        free(t->postmaster_subject);
        free(t->text);
        *t = (BounceTemplate) {0};
}

static int template_set_default(BounceTemplate *t, BounceTemplateKind k) {
        template_done(t);
        t->charset = strdup("us-ascii");
        t->from = strdup(DEFAULT_FROM);
        t->subject = strdup(defaults[k].subject);
        t->postmaster_subject = strdup(defaults[k].postmaster_subject);
        t->text = strdup(defaults[k].text);
        if (!t->charset || !t->from || !t->subject || !t->postmaster_subject || !t->text)
                return -ENOMEM;
        return 0;
}

BounceTemplates *bounce_templates_free(BounceTemplates *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < _BOUNCE_TEMPLATE_MAX; i++)
                template_done(&t->t[i]);
        free(t);
        return NULL;
}

int bounce_templates_new(BounceTemplates **ret) {
        _cleanup_(bounce_templates_freep) BounceTemplates *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < _BOUNCE_TEMPLATE_MAX; i++)
                if (template_set_default(&t->t[i], (BounceTemplateKind) i) < 0)
                        return -ENOMEM;
        *ret = steal_ptr(t);
        return 0;
}

/* A line of the input: [start, start + len), without its LF. */
typedef struct Line {
        const char *start;
        size_t len;
} Line;

static bool next_line(const char **p, const char *end, Line *ret) {
        const char *nl;
        if (*p >= end)
                return false;
        nl = memchr(*p, '\n', (size_t) (end - *p));
        ret->start = *p;
        ret->len = (size_t) ((nl ? nl : end) - *p);
        *p = nl ? nl + 1 : end;
        /* A CR before the LF is part of the line end, as in main.cf. */
        if (ret->len > 0 && ret->start[ret->len - 1] == '\r')
                ret->len--;
        return true;
}

static bool line_blank(const Line *l) {
        for (size_t i = 0; i < l->len; i++)
                if (l->start[i] != ' ' && l->start[i] != '\t')
                        return false;
        return true;
}

static bool is_word_char(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_';
}

static bool is_token_char(char c) {
        /* RFC 2045 token characters enough for charset names. */
        return is_word_char(c) || c == '-' || c == '.' || c == '+' || c == ':';
}

static bool has_8bit(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] >= 0x80)
                        return true;
        return false;
}

static bool printable_ascii(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
                        if (*s != '\t')
                                return false;
        return true;
}

/* Splits a header line "Name: value". Returns the header index (0 charset,
 * 1 from, 2 subject, 3 postmaster-subject), -ENOENT for a syntactically
 * valid but unknown name, -EINVAL when the line is not a header at all. */
static int parse_header(const Line *l, char **ret_value) {
        static const char *const names[] = {"Charset", "From", "Subject", "Postmaster-Subject"};
        size_t n = 0;
        const char *v, *e;

        while (n < l->len && (is_word_char(l->start[n]) || l->start[n] == '-'))
                n++;
        if (n == 0 || n >= l->len || l->start[n] != ':')
                return -EINVAL;
        v = l->start + n + 1;
        e = l->start + l->len;
        while (v < e && (*v == ' ' || *v == '\t'))
                v++;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strlen(names[i]) == n && strncasecmp(names[i], l->start, n) == 0) {
                        *ret_value = strndup_safe(v, (size_t) (e - v));
                        return *ret_value ? (int) i : -ENOMEM;
                }
        return -ENOENT;
}

static int set_field(char **field, char *value) {
        free(*field);
        *field = value;
        return 0;
}

/* Parses the body of one here-document (lines [first, n)) into t. Errors
 * go to diags; returns 0, -EINVAL after an error, -ENOMEM. */
static int parse_section(const Line *lines, size_t n, size_t first_lineno, const char *file,
                         const char *name, Diag *diags, BounceTemplate *t) {
        _cleanup_(strbuf_done) StrBuf text = {0};
        size_t i = 0;
        bool bad = false;
        int r;

        /* Headers come first when the first line looks like one; a template
         * without headers starts with its text (or an empty line). */
        if (n > 0 && !line_blank(&lines[0])) {
                char *probe = NULL;
                r = parse_header(&lines[0], &probe);
                free(probe);
                if (r == -ENOMEM)
                        return r;
                if (r != -EINVAL) {
                        for (; i < n && !line_blank(&lines[i]); i++) {
                                char *value = NULL;
                                unsigned lineno = (unsigned) (first_lineno + i);
                                r = parse_header(&lines[i], &value);
                                if (r == -ENOMEM)
                                        return r;
                                if (r == -EINVAL) {
                                        diag_error(diags, file, lineno,
                                                   "%s: expected \"Name: value\" header or an "
                                                   "empty line before the text", name);
                                        bad = true;
                                        continue;
                                }
                                if (r == -ENOENT) {
                                        diag_error(diags, file, lineno,
                                                   "%s: unknown header \"%.*s\" (known: Charset, "
                                                   "From, Subject, Postmaster-Subject)",
                                                   name, (int) MIN(lines[i].len, 80),
                                                   lines[i].start);
                                        bad = true;
                                        continue;
                                }
                                if (!printable_ascii(value)) {
                                        diag_error(diags, file, lineno,
                                                   "%s: header value must be printable ASCII",
                                                   name);
                                        free(value);
                                        bad = true;
                                        continue;
                                }
                                if (r == 0) {
                                        bool ok = *value != '\0';
                                        for (const char *c = value; *c; c++)
                                                ok = ok && is_token_char(*c);
                                        if (!ok) {
                                                diag_error(diags, file, lineno,
                                                           "%s: bad charset name \"%s\"", name,
                                                           value);
                                                free(value);
                                                bad = true;
                                                continue;
                                        }
                                }
                                if (*value == '\0' && r != 0) {
                                        diag_error(diags, file, lineno, "%s: empty header value",
                                                   name);
                                        free(value);
                                        bad = true;
                                        continue;
                                }
                                (void) set_field(r == 0   ? &t->charset
                                                 : r == 1 ? &t->from
                                                 : r == 2 ? &t->subject
                                                          : &t->postmaster_subject,
                                                 value);
                        }
                }
        }
        /* The empty line between headers and text is not part of the text. */
        if (i > 0 && i < n)
                i++;
        else if (i == 0 && n > 0 && line_blank(&lines[0]))
                i++;
        for (; i < n; i++) {
                if (memchr(lines[i].start, '\0', lines[i].len)) {
                        diag_error(diags, file, (unsigned) (first_lineno + i),
                                   "%s: NUL byte in the text", name);
                        bad = true;
                        continue;
                }
                if (strbuf_append(&text, lines[i].start, lines[i].len) < 0 ||
                    strbuf_putc(&text, '\n') < 0)
                        return -ENOMEM;
        }
        if (text.len > BOUNCE_TEMPLATE_TEXT_MAX) {
                diag_error(diags, file, (unsigned) first_lineno,
                           "%s: text longer than %u bytes", name, BOUNCE_TEMPLATE_TEXT_MAX);
                return -EINVAL;
        }
        /* RFC 2045: 8-bit text needs a charset that can say what it is. */
        if (!bad && strcaseeq(t->charset, "us-ascii") && has_8bit(text.data, text.len)) {
                diag_error(diags, file, (unsigned) first_lineno,
                           "%s: 8-bit text needs a Charset: header other than us-ascii", name);
                bad = true;
        }
        if (bad)
                return -EINVAL;
        free(t->text);
        t->text = strbuf_steal(&text);
        if (!t->text)
                return -ENOMEM;
        t->from_file = true;
        return 0;
}

int bounce_templates_parse(const char *text, size_t len, const char *file, Diag *diags,
                           BounceTemplates **ret) {
        _cleanup_(bounce_templates_freep) BounceTemplates *set = NULL;
        _cleanup_free_ Line *lines = NULL;
        size_t n_lines = 0, cap = 0, errors = diags ? diags->n_errors : 0;
        bool seen[_BOUNCE_TEMPLATE_MAX] = {false};
        bool bad = false;
        const char *p = text, *end = text + len;
        Line l;
        int r;

        r = bounce_templates_new(&set);
        if (r < 0)
                return r;
        if (len > BOUNCE_TEMPLATE_FILE_MAX) {
                diag_error(diags, file, 0, "template file larger than %u bytes",
                           BOUNCE_TEMPLATE_FILE_MAX);
                return -EINVAL;
        }
        while (next_line(&p, end, &l)) {
                if (n_lines == cap) {
                        size_t nc = cap ? cap * 2 : 64;
                        Line *nl = reallocarray(lines, nc, sizeof(Line));
                        if (!nl)
                                return -ENOMEM;
                        lines = nl;
                        cap = nc;
                }
                lines[n_lines++] = l;
        }

        for (size_t i = 0; i < n_lines; i++) {
                const Line *cur = &lines[i];
                unsigned lineno = (unsigned) i + 1;
                const char *s = cur->start, *e = cur->start + cur->len, *name, *word, *label;
                size_t name_len, word_len, body, stop;
                int kind = -1;
                BounceTemplate t = {0};

                while (s < e && (*s == ' ' || *s == '\t'))
                        s++;
                if (s == e || *s == '#')
                        continue;
                name = s;
                while (s < e && is_word_char(*s))
                        s++;
                name_len = (size_t) (s - name);
                for (size_t k = 0; k < _BOUNCE_TEMPLATE_MAX; k++)
                        if (strlen(kind_names[k]) == name_len &&
                            strncmp(kind_names[k], name, name_len) == 0)
                                kind = (int) k;
                label = kind >= 0 ? kind_names[kind] : "template";
                while (s < e && (*s == ' ' || *s == '\t'))
                        s++;
                if (name_len == 0 || s == e || *s != '=') {
                        diag_error(diags, file, lineno, "expected \"NAME_template = <<EOF\", "
                                   "a comment or an empty line");
                        bad = true;
                        continue;
                }
                s++;
                while (s < e && (*s == ' ' || *s == '\t'))
                        s++;
                if (e - s < 2 || s[0] != '<' || s[1] != '<') {
                        diag_error(diags, file, lineno,
                                   "%s: expected a here-document \"<<EOF\" after \"=\"", label);
                        bad = true;
                        continue;
                }
                s += 2;
                while (s < e && (*s == ' ' || *s == '\t'))
                        s++;
                word = s;
                while (s < e && is_word_char(*s))
                        s++;
                word_len = (size_t) (s - word);
                while (s < e && (*s == ' ' || *s == '\t'))
                        s++;
                if (word_len == 0 || s != e) {
                        diag_error(diags, file, lineno,
                                   "%s: the here-document needs a terminator word, as in "
                                   "\"<<EOF\"", label);
                        bad = true;
                        continue;
                }
                body = i + 1;
                for (stop = body; stop < n_lines; stop++)
                        if (lines[stop].len == word_len &&
                            memcmp(lines[stop].start, word, word_len) == 0)
                                break;
                if (stop == n_lines) {
                        diag_error(diags, file, lineno,
                                   "%s: here-document not terminated by \"%.*s\" on a line "
                                   "of its own", label, (int) word_len, word);
                        bad = true;
                        break;
                }
                if (kind < 0) {
                        diag_error(diags, file, lineno,
                                   "unknown template \"%.*s\" (expected failure_template, "
                                   "delay_template, success_template or verify_template)",
                                   (int) MIN(name_len, 80), name);
                        bad = true;
                        i = stop;
                        continue;
                }
                if (seen[kind])
                        diag_warning(diags, file, lineno,
                                     "%s defined again; the later definition wins",
                                     kind_names[kind]);
                seen[kind] = true;

                r = template_set_default(&t, (BounceTemplateKind) kind);
                if (r >= 0)
                        r = parse_section(lines + body, stop - body, body + 1, file,
                                          kind_names[kind], diags, &t);
                if (r == -ENOMEM) {
                        template_done(&t);
                        return r;
                }
                if (r < 0) {
                        template_done(&t);
                        bad = true;
                } else {
                        template_done(&set->t[kind]);
                        set->t[kind] = t;
                }
                i = stop;
        }
        if (bad || (diags && diags->n_errors > errors))
                return -EINVAL;
        *ret = steal_ptr(set);
        return 0;
}

int bounce_templates_dump(const BounceTemplates *set, StrBuf *out) {
        for (size_t k = 0; k < _BOUNCE_TEMPLATE_MAX; k++) {
                const BounceTemplate *t = &set->t[k];
                int r;
                if (!t->from_file) {
                        r = strbuf_printf(out, "%s: built-in\n", kind_names[k]);
                        if (r < 0)
                                return r;
                        continue;
                }
                r = strbuf_printf(out,
                                  "%s = <<EOF\nCharset: %s\nFrom: %s\nSubject: %s\n"
                                  "Postmaster-Subject: %s\n\n%sEOF\n",
                                  kind_names[k], t->charset, t->from, t->subject,
                                  t->postmaster_subject, t->text);
                if (r < 0)
                        return r;
        }
        return 0;
}

int bounce_template_expand(const char *text, BounceTemplateLookup lookup, void *userdata,
                           char **ret, unsigned *ret_unknown) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        unsigned unknown = 0;
        const char *p = text;

        while (*p) {
                const char *dollar = strchr(p, '$'), *name, *after;
                _cleanup_free_ char *key = NULL;
                const char *value;
                size_t n;

                if (!dollar) {
                        if (strbuf_puts(&b, p) < 0)
                                return -ENOMEM;
                        break;
                }
                if (strbuf_append(&b, p, (size_t) (dollar - p)) < 0)
                        return -ENOMEM;
                if (dollar[1] == '$') {
                        if (strbuf_putc(&b, '$') < 0)
                                return -ENOMEM;
                        p = dollar + 2;
                        continue;
                }
                if (dollar[1] == '{') {
                        name = dollar + 2;
                        for (n = 0; is_word_char(name[n]); n++)
                                ;
                        if (n == 0 || name[n] != '}') {
                                /* Not a reference: keep the "$" as text. */
                                if (strbuf_putc(&b, '$') < 0)
                                        return -ENOMEM;
                                p = dollar + 1;
                                continue;
                        }
                        after = name + n + 1;
                } else {
                        name = dollar + 1;
                        for (n = 0; is_word_char(name[n]); n++)
                                ;
                        if (n == 0) {
                                if (strbuf_putc(&b, '$') < 0)
                                        return -ENOMEM;
                                p = dollar + 1;
                                continue;
                        }
                        after = name + n;
                }
                key = strndup_safe(name, n);
                if (!key)
                        return -ENOMEM;
                value = lookup ? lookup(key, userdata) : NULL;
                if (value) {
                        if (strbuf_puts(&b, value) < 0)
                                return -ENOMEM;
                } else {
                        unknown++;
                        if (strbuf_append(&b, dollar, (size_t) (after - dollar)) < 0)
                                return -ENOMEM;
                }
                p = after;
        }
        *ret = strbuf_steal(&b);
        if (!*ret)
                return -ENOMEM;
        if (ret_unknown)
                *ret_unknown = unknown;
        return 0;
}
