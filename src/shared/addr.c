/* addr.c: RFC 5321 path parsing and address helpers (see addr.h). Pure
 * functions over memory. The grammar is RFC 5321 4.1.2 with the leniency
 * Postfix shows by default: the angle brackets may be missing, blanks after
 * the colon are skipped, dot-strings may hold empty atoms ("a..b"). What is
 * never accepted: control characters, unbalanced quotes or brackets, and
 * 8-bit bytes unless the client declared SMTPUTF8. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "cleanup.h"
#include "macro.h"
#include "strutil.h"

static bool is_atext(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

bool addr_has_8bit(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s >= 0x80)
                        return true;
        return false;
}

/* Whether [s, s+len) is a dot-string (RFC 5321 4.1.2), leniently: empty
 * atoms are fine except that the string must not be empty. */
static bool dot_string_valid(const char *s, size_t len, bool allow_8bit) {
        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '.' || is_atext(c))
                        continue;
                if (c >= 0x80 && allow_8bit)
                        continue;
                return false;
        }
        return true;
}

/* RFC 5321 strict dot-string: atoms separated by single dots. Used to decide
 * whether a quoted local part can be written without its quotes. */
static bool dot_string_strict(const char *s, size_t len) {
        bool prev_dot = true;
        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '.') {
                        if (prev_dot)
                                return false;
                        prev_dot = true;
                } else if (is_atext(c) || c >= 0x80) {
                        prev_dot = false;
                } else
                        return false;
        }
        return !prev_dot;
}

static bool ip_literal_valid(const char *s, size_t len) {
        char buf[INET6_ADDRSTRLEN + 8];
        unsigned char addr[sizeof(struct in6_addr)];
        const char *v6;

        if (len < 2 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof(buf))
                return false;
        memcpy(buf, s + 1, len - 2);
        buf[len - 2] = 0;
        v6 = startswith_no_case(buf, "IPv6:");
        if (v6)
                return inet_pton(AF_INET6, v6, addr) == 1;
        return inet_pton(AF_INET, buf, addr) == 1;
}

bool addr_domain_valid(const char *s, size_t len, bool allow_8bit) {
        size_t label = 0;

        if (len > 0 && s[0] == '[')
                return ip_literal_valid(s, len);
        if (len > 0 && s[len - 1] == '.')
                len--;
        /* RFC 1035 2.3.4: 255 octets per name, 63 per label. */
        if (len == 0 || len > 255)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        continue;
                }
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || (c >= 0x80 && allow_8bit)))
                        return false;
                if (++label > 63)
                        return false;
        }
        return label > 0;
}

/* Validates a quoted string [s, s+len) including its quotes and writes its
 * unquoted content to out. */
static int quoted_unquote(const char *s, size_t len, bool allow_8bit, StrBuf *out) {
        if (len < 2 || s[0] != '"' || s[len - 1] != '"')
                return -EINVAL;
        for (size_t i = 1; i < len - 1; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '\\') {
                        if (i + 1 >= len - 1)
                                return -EINVAL;
                        c = (unsigned char) s[++i];
                        if (c < 32 || c == 127 || (c >= 0x80 && !allow_8bit))
                                return -EINVAL;
                } else if (c == '"' || c < 32 || c == 127 || (c >= 0x80 && !allow_8bit))
                        return -EINVAL;
                if (strbuf_putc(out, (char) c) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* Finds the end of a path token: the '>' closing a bracketed path, or the
 * first blank of a bare one; quotes protect both. Returns the index or -1. */
static ssize_t path_end(const char *s, bool bracketed) {
        bool quoted = false;
        for (size_t i = 0; s[i]; i++) {
                if (quoted) {
                        if (s[i] == '\\' && s[i + 1])
                                i++;
                        else if (s[i] == '"')
                                quoted = false;
                        continue;
                }
                if (s[i] == '"')
                        quoted = true;
                else if (bracketed && s[i] == '>')
                        return (ssize_t) i;
                else if (!bracketed && (s[i] == ' ' || s[i] == '\t'))
                        return (ssize_t) i;
                else if (bracketed && s[i] == '<')
                        return -1;
        }
        if (quoted || bracketed)
                return -1;
        return (ssize_t) strlen(s);
}

/* Skips an RFC 5321 A-d-l ("@a,@b:") at the start of [*s, *s+*len). */
static int skip_source_route(const char **s, size_t *len, bool allow_8bit) {
        const char *p = *s, *end = *s + *len, *colon;

        if (*len == 0 || p[0] != '@')
                return 0;
        colon = memchr(p, ':', *len);
        if (!colon)
                return -EINVAL;
        while (p < colon) {
                const char *comma;
                size_t n;
                if (*p != '@')
                        return -EINVAL;
                p++;
                comma = memchr(p, ',', (size_t) (colon - p));
                n = (size_t) ((comma ? comma : colon) - p);
                if (!addr_domain_valid(p, n, allow_8bit))
                        return -EINVAL;
                p += n;
                if (comma)
                        p++;
        }
        *s = colon + 1;
        *len = (size_t) (end - *s);
        return 0;
}

int addr_parse_path(const char *s, unsigned parse_flags, char **ret_addr, unsigned *ret_flags,
                    const char **ret_rest) {
        bool allow_8bit = parse_flags & ADDR_PARSE_ALLOW_8BIT;
        _cleanup_(strbuf_done) StrBuf out = {0};
        const char *inner, *rest, *at = NULL, *dom;
        size_t inner_len, local_len, dom_len;
        unsigned flags = 0;
        bool bracketed, quoted = false;
        ssize_t e;
        int r;

        while (*s == ' ' || *s == '\t')
                s++;
        bracketed = *s == '<';
        if (!bracketed && (parse_flags & ADDR_PARSE_STRICT))
                return -EINVAL;
        e = path_end(s + bracketed, bracketed);
        if (e < 0)
                return -EINVAL;
        inner = s + bracketed;
        inner_len = (size_t) e;
        rest = inner + inner_len + bracketed;
        if (inner_len + 2 > ADDR_PATH_MAX)
                return -E2BIG;
        if (*rest && *rest != ' ' && *rest != '\t')
                return -EINVAL;

        r = skip_source_route(&inner, &inner_len, allow_8bit);
        if (r < 0)
                return r;
        if (inner_len == 0) {
                /* "<>", or "<@a:>" which no one sends. */
                if (!(parse_flags & ADDR_PARSE_ALLOW_EMPTY) || !bracketed)
                        return -EINVAL;
                char *empty = strdup("");
                if (!empty)
                        return -ENOMEM;
                *ret_addr = empty;
                if (ret_flags)
                        *ret_flags = 0;
                if (ret_rest)
                        *ret_rest = rest;
                return 0;
        }

        /* The local part ends at the last '@' outside quotes. */
        for (size_t i = 0; i < inner_len; i++) {
                if (inner[i] == '"' && (i == 0 || inner[i - 1] != '\\'))
                        quoted = !quoted;
                else if (inner[i] == '@' && !quoted)
                        at = inner + i;
                else if ((unsigned char) inner[i] < 32 || inner[i] == 127)
                        return -EINVAL;
        }
        local_len = at ? (size_t) (at - inner) : inner_len;
        if (local_len == 0)
                return -EINVAL;
        if (inner[0] == '"') {
                _cleanup_(strbuf_done) StrBuf uq = {0};
                r = quoted_unquote(inner, local_len, allow_8bit, &uq);
                if (r < 0)
                        return r;
                /* Keep the quotes only where they are needed. */
                if (uq.len > 0 && dot_string_strict(uq.data, uq.len))
                        r = strbuf_append(&out, uq.data, uq.len);
                else
                        r = strbuf_append(&out, inner, local_len);
        } else {
                if (!dot_string_valid(inner, local_len, allow_8bit))
                        return -EINVAL;
                r = strbuf_append(&out, inner, local_len);
        }
        if (r < 0)
                return r;

        if (!at)
                flags |= ADDR_FLAG_NO_DOMAIN;
        else {
                dom = at + 1;
                dom_len = inner_len - local_len - 1;
                if (!addr_domain_valid(dom, dom_len, allow_8bit))
                        return -EINVAL;
                if (dom[0] == '[')
                        flags |= ADDR_FLAG_IP_LITERAL;
                else if (dom[dom_len - 1] == '.')
                        dom_len--;              /* "user@example.com." */
                if (strbuf_putc(&out, '@') < 0 || strbuf_append(&out, dom, dom_len) < 0)
                        return -ENOMEM;
        }
        if (out.len > 0 && addr_has_8bit(out.data)) {
                if (!allow_8bit)
                        return -EINVAL;
                flags |= ADDR_FLAG_8BIT;
        }
        *ret_addr = strbuf_steal(&out);
        if (!*ret_addr)
                return -ENOMEM;
        if (ret_flags)
                *ret_flags = flags;
        if (ret_rest)
                *ret_rest = rest;
        return 0;
}

const char *addr_domain(const char *addr) {
        const char *at = NULL;
        bool quoted = false;
        for (const char *p = addr; *p; p++) {
                if (*p == '\\' && quoted && p[1])
                        p++;
                else if (*p == '"')
                        quoted = !quoted;
                else if (*p == '@' && !quoted)
                        at = p;
        }
        return at ? at + 1 : NULL;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int addr_xtext_decode(const char *s, char **ret) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c < 33 || c > 126 || c == '=')
                        return -EINVAL;
                if (c == '+') {
                        /* RFC 3461 4: "+" followed by two upper-case hex digits. */
                        int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
                        if (hi < 0 || lo < 0)
                                return -EINVAL;
                        c = (unsigned char) (hi * 16 + lo);
                        s += 2;
                }
                if (strbuf_putc(&b, (char) c) < 0)
                        return -ENOMEM;
        }
        *ret = strbuf_steal(&b);
        return *ret ? 0 : -ENOMEM;
}

bool addr_xtext_valid(const char *s) {
        _cleanup_free_ char *d = NULL;
        return addr_xtext_decode(s, &d) == 0;
}

int addr_xtext_encode(const char *s, char **ret) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                int r = c < 33 || c > 126 || c == '+' || c == '='
                                ? strbuf_printf(&b, "+%02X", c)
                                : strbuf_putc(&b, (char) c);
                if (r < 0)
                        return -ENOMEM;
        }
        *ret = strbuf_steal(&b);
        return *ret ? 0 : -ENOMEM;
}

char *addr_quote_local(const char *addr) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        const char *at = strrchr(addr, '@'), *domain = at ? at + 1 : NULL;
        size_t n = domain ? (size_t) (domain - 1 - addr) : strlen(addr);
        bool quote = n == 0 || addr[0] == '.' || addr[n - 1] == '.';

        for (size_t i = 0; i < n && !quote; i++) {
                unsigned char c = (unsigned char) addr[i];
                quote = !(is_atext(c) || c >= 0x80 || (c == '.' && addr[i + 1] != '.'));
        }
        if (!quote)
                return strdup(addr);
        if (strbuf_putc(&b, '"') < 0)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (((addr[i] == '"' || addr[i] == '\\') && strbuf_putc(&b, '\\') < 0) ||
                    strbuf_putc(&b, addr[i]) < 0)
                        return NULL;
        if (strbuf_putc(&b, '"') < 0 || (domain && strbuf_printf(&b, "@%s", domain) < 0))
                return NULL;
        return strbuf_steal(&b);
}

/* --- RFC 5322 address lists in headers ------------------------------------ */

typedef enum HdrTokType {
        HTOK_ATOM,
        HTOK_QSTR,
        HTOK_DLIT,
        HTOK_SPECIAL,
        HTOK_COMMENT,
} HdrTokType;

typedef struct HdrTok {
        HdrTokType type;
        char c;                 /* the character of a special */
        size_t start, end;
} HdrTok;

static bool hdr_special(unsigned char c) {
        return strchr("()<>@,;:\".[]", c) != NULL;
}

static bool hdr_space(unsigned char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Splits [s, s+len) into tokens. -EINVAL for an unterminated quoted string,
 * comment or domain literal, or a control character. */
static int hdr_tokenize(const char *s, size_t len, HdrTok **ret, size_t *ret_n) {
        _cleanup_free_ HdrTok *t = NULL;
        size_t n = 0, cap = 0, i = 0;

        while (i < len) {
                unsigned char c = (unsigned char) s[i];
                HdrTok tok = {.start = i};

                if (hdr_space(c)) {
                        i++;
                        continue;
                }
                if (c < 32 || c == 127)
                        return -EINVAL;
                if (c == '(') {
                        unsigned depth = 0;
                        tok.type = HTOK_COMMENT;
                        for (; i < len; i++) {
                                if (s[i] == '\\' && i + 1 < len)
                                        i++;
                                else if (s[i] == '(')
                                        depth++;
                                else if (s[i] == ')' && --depth == 0)
                                        break;
                        }
                        if (i >= len)
                                return -EINVAL;
                        i++;
                } else if (c == '"' || c == '[') {
                        char close = c == '"' ? '"' : ']';
                        tok.type = c == '"' ? HTOK_QSTR : HTOK_DLIT;
                        for (i++; i < len && s[i] != close; i++)
                                if (s[i] == '\\' && i + 1 < len)
                                        i++;
                        if (i >= len)
                                return -EINVAL;
                        i++;
                } else if (hdr_special(c)) {
                        if (c == ')' || c == ']')
                                return -EINVAL;
                        tok.type = HTOK_SPECIAL;
                        tok.c = (char) c;
                        i++;
                } else {
                        tok.type = HTOK_ATOM;
                        while (i < len && !hdr_space((unsigned char) s[i]) &&
                               !hdr_special((unsigned char) s[i]) &&
                               !((unsigned char) s[i] < 32 || s[i] == 127))
                                i++;
                }
                tok.end = i;
                if (n == cap) {
                        HdrTok *nt = reallocarray(t, cap ? cap * 2 : 16, sizeof(HdrTok));
                        if (!nt)
                                return -ENOMEM;
                        t = nt;
                        cap = cap ? cap * 2 : 16;
                }
                t[n++] = tok;
        }
        *ret = steal_ptr(t);
        *ret_n = n;
        return 0;
}

static bool tok_is(const HdrTok *t, char c) {
        return t->type == HTOK_SPECIAL && t->c == c;
}

/* Parses the addr-spec in tokens [a, b) (comments among them). Adds an
 * item, or nothing when it is empty or has a comment inside. */
static int hdr_addr_spec(const char *s, const HdrTok *t, size_t a, size_t b, AddrHeaderItem **items,
                         size_t *n) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        size_t first = SIZE_MAX, last = 0;
        bool inner_comment = false, in_domain = false, last_word = false, have_domain = false;
        AddrHeaderItem *ni;

        for (size_t i = a; i < b; i++)
                if (t[i].type != HTOK_COMMENT) {
                        if (first == SIZE_MAX)
                                first = i;
                        last = i;
                }
        if (first == SIZE_MAX)
                return 0;
        for (size_t i = first; i <= last; i++) {
                const HdrTok *k = &t[i];
                int r = 0;
                if (k->type == HTOK_COMMENT) {
                        inner_comment = true;
                        continue;
                }
                if (tok_is(k, '@')) {
                        if (in_domain || i == first)
                                return -EINVAL;
                        in_domain = true;
                        last_word = false;
                        r = strbuf_putc(&out, '@');
                } else if (tok_is(k, '.')) {
                        last_word = false;
                        r = strbuf_putc(&out, '.');
                } else if (k->type == HTOK_ATOM || (k->type == HTOK_QSTR && !in_domain) ||
                           (k->type == HTOK_DLIT && in_domain && !have_domain)) {
                        if (last_word)
                                return -EINVAL;         /* "John Smith" without <> */
                        last_word = true;
                        if (in_domain && k->type == HTOK_DLIT && i != last)
                                return -EINVAL;
                        have_domain |= in_domain;
                        if (k->type == HTOK_QSTR) {
                                for (size_t j = k->start + 1; j + 1 < k->end && r >= 0; j++) {
                                        if (s[j] == '\\')
                                                j++;
                                        r = strbuf_putc(&out, s[j]);
                                }
                        } else
                                r = strbuf_append(&out, s + k->start, k->end - k->start);
                } else
                        return -EINVAL;
                if (r < 0)
                        return -ENOMEM;
        }
        if (in_domain && !have_domain)
                return -EINVAL;
        if (inner_comment)
                return 0;               /* left alone: the comment would be lost */
        ni = reallocarray(*items, *n + 1, sizeof(AddrHeaderItem));
        if (!ni)
                return -ENOMEM;
        *items = ni;
        ni[*n] = (AddrHeaderItem) {
                .start = t[first].start,
                .len = t[last].end - t[first].start,
                .addr = strbuf_steal(&out),
        };
        if (!ni[*n].addr)
                return -ENOMEM;
        (*n)++;
        return 0;
}

/* One mailbox: tokens [a, b). */
static int hdr_mailbox(const char *s, const HdrTok *t, size_t a, size_t b, AddrHeaderItem **items,
                       size_t *n) {
        size_t lt = SIZE_MAX, gt = SIZE_MAX;

        for (size_t i = a; i < b; i++) {
                if (tok_is(&t[i], '<')) {
                        if (lt != SIZE_MAX)
                                return -EINVAL;
                        lt = i;
                } else if (tok_is(&t[i], '>')) {
                        if (lt == SIZE_MAX || gt != SIZE_MAX)
                                return -EINVAL;
                        gt = i;
                } else if (gt != SIZE_MAX && t[i].type != HTOK_COMMENT)
                        return -EINVAL;         /* something after <...> */
        }
        if (lt == SIZE_MAX)
                return hdr_addr_spec(s, t, a, b, items, n);
        if (gt == SIZE_MAX)
                return -EINVAL;
        a = lt + 1;
        /* An obsolete source route "<@a,@b:user@domain>". */
        for (size_t i = a; i < gt; i++) {
                if (t[i].type == HTOK_COMMENT)
                        continue;
                if (tok_is(&t[i], '@')) {
                        while (i < gt && !tok_is(&t[i], ':'))
                                i++;
                        if (i >= gt)
                                return -EINVAL;
                        a = i + 1;
                }
                break;
        }
        return hdr_addr_spec(s, t, a, gt, items, n);
}

void addr_header_items_free(AddrHeaderItem *items, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(items[i].addr);
        free(items);
}

int addr_header_parse(const char *s, size_t len, AddrHeaderItem **ret, size_t *ret_n) {
        _cleanup_free_ HdrTok *t = NULL;
        AddrHeaderItem *items = NULL;
        size_t n_tok = 0, n = 0, start = 0;
        bool angle = false, group = false, has_angle = false;
        int r;

        r = hdr_tokenize(s, len, &t, &n_tok);
        if (r < 0)
                return r;
        for (size_t i = 0; i <= n_tok; i++) {
                bool end = i == n_tok;
                if (!end && tok_is(&t[i], '<')) {
                        angle = has_angle = true;
                        continue;
                }
                if (!end && tok_is(&t[i], '>')) {
                        angle = false;
                        continue;
                }
                if (angle && !end)
                        continue;
                if (!end && tok_is(&t[i], ':')) {
                        /* "display-name:" opens a group. */
                        if (group || has_angle) {
                                r = -EINVAL;
                                goto fail;
                        }
                        for (size_t k = start; k < i; k++)
                                if (t[k].type != HTOK_ATOM && t[k].type != HTOK_QSTR &&
                                    t[k].type != HTOK_COMMENT && !tok_is(&t[k], '.')) {
                                        r = -EINVAL;
                                        goto fail;
                                }
                        group = true;
                        start = i + 1;
                        continue;
                }
                if (!end && !tok_is(&t[i], ',') && !tok_is(&t[i], ';'))
                        continue;
                if (!end && tok_is(&t[i], ';')) {
                        if (!group) {
                                r = -EINVAL;
                                goto fail;
                        }
                        group = false;
                }
                if (angle) {
                        r = -EINVAL;
                        goto fail;
                }
                r = hdr_mailbox(s, t, start, i, &items, &n);
                if (r < 0)
                        goto fail;
                start = i + 1;
                has_angle = false;
        }
        *ret = items;
        *ret_n = n;
        return 0;
fail:
        addr_header_items_free(items, n);
        return r;
}
