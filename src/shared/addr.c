/* addr.c: RFC 5321 path parsing and address helpers (see addr.h). Pure
 * functions over memory. The grammar is RFC 5321 4.1.2 with the leniency
 * Postfix shows by default: the angle brackets may be missing, blanks after
 * the colon are skipped, dot-strings may hold empty atoms ("a..b"). What is
 * never accepted: control characters, unbalanced quotes or brackets, and
 * 8-bit bytes unless the client declared SMTPUTF8. */
#include <arpa/inet.h>
#include <errno.h>
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
