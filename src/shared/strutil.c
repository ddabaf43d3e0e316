/* strutil.c: string helpers (see strutil.h). Pure functions over memory;
 * no I/O and no logging. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

bool endswith(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

char *strdup_vprintf(const char *fmt, va_list ap) {
        char *s;
        if (vasprintf(&s, fmt, ap) < 0)
                return NULL;
        return s;
}

char *strdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        s = strdup_vprintf(fmt, ap);
        va_end(ap);
        return s;
}

char *strndup_safe(const char *s, size_t n) {
        return strndup(s, n);
}

char *strstrip(char *s) {
        char *e;
        while (*s && isspace((unsigned char) *s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char) e[-1]))
                e--;
        *e = 0;
        return s;
}

char *ascii_strlower(char *s) {
        for (char *p = s; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        return s;
}

bool str_is_ascii_digits(const char *s) {
        if (!*s)
                return false;
        for (; *s; s++)
                if (*s < '0' || *s > '9')
                        return false;
        return true;
}

int str_split_list(const char *value, bool strip_braces, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        size_t n = 0, cap = 0;
        const char *p = value;

        /* Grows the vector geometrically: values can be long (map lists,
         * restriction lists), and appending one by one would be quadratic. */
        for (;;) {
                const char *start;
                char *item;
                size_t len;
                int depth = 0;

                while (*p && (isspace((unsigned char) *p) || *p == ','))
                        p++;
                if (!*p)
                        break;
                start = p;
                /* An item ends at a separator outside of braces. */
                for (; *p; p++) {
                        if (*p == '{')
                                depth++;
                        else if (*p == '}' && depth > 0)
                                depth--;
                        else if (depth == 0 && (isspace((unsigned char) *p) || *p == ','))
                                break;
                }
                len = (size_t) (p - start);
                if (strip_braces && len >= 2 && start[0] == '{' && start[len - 1] == '}') {
                        _cleanup_free_ char *inner = strndup(start + 1, len - 2);
                        if (!inner)
                                return -ENOMEM;
                        item = strdup(strstrip(inner));
                } else
                        item = strndup(start, len);
                if (!item)
                        return -ENOMEM;
                if (n + 2 > cap) {
                        char **t;
                        cap = cap ? cap * 2 : 8;
                        t = realloc(l, cap * sizeof(char *));
                        if (!t) {
                                free(item);
                                return -ENOMEM;
                        }
                        l = t;
                }
                l[n++] = item;
                l[n] = NULL;
        }
        if (!l) {
                l = calloc(1, sizeof(char *));
                if (!l)
                        return -ENOMEM;
        }
        *ret = steal_ptr(l);
        return 0;
}

char *str_escape_log(const char *s, size_t max) {
        StrBuf b = {0};
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                int r;
                if (b.len >= max) {
                        r = strbuf_puts(&b, "...");
                        if (r < 0)
                                goto oom;
                        break;
                }
                if (*p < 0x20 || *p >= 0x7f || *p == '\\')
                        r = *p == '\\' ? strbuf_puts(&b, "\\\\") : strbuf_printf(&b, "\\x%02x", *p);
                else
                        r = strbuf_putc(&b, (char) *p);
                if (r < 0)
                        goto oom;
        }
        return strbuf_steal(&b);
oom:
        strbuf_done(&b);
        return NULL;
}

char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **p = l; *p; p++)
                free(*p);
        free(l);
        return NULL;
}

size_t strv_length(char * const *l) {
        size_t n = 0;
        if (l)
                while (l[n])
                        n++;
        return n;
}

int strv_consume(char ***l, char *s) {
        size_t n = strv_length(*l);
        char **t;
        if (!s)
                return -ENOMEM;
        t = realloc(*l, (n + 2) * sizeof(char *));
        if (!t) {
                free(s);
                return -ENOMEM;
        }
        t[n] = s;
        t[n + 1] = NULL;
        *l = t;
        return 0;
}

int strv_extend(char ***l, const char *s) {
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        return strv_consume(l, c);
}

bool strv_contains(char * const *l, const char *s) {
        STRV_FOREACH(i, l)
                if (streq(*i, s))
                        return true;
        return false;
}

bool strv_contains_case(char * const *l, const char *s) {
        STRV_FOREACH(i, l)
                if (strcaseeq(*i, s))
                        return true;
        return false;
}

char *strv_join(char * const *l, const char *sep) {
        StrBuf b = {0};
        STRV_FOREACH(i, l) {
                if ((i != l && strbuf_puts(&b, sep) < 0) || strbuf_puts(&b, *i) < 0) {
                        strbuf_done(&b);
                        return NULL;
                }
        }
        return strbuf_steal(&b);
}

int strbuf_reserve(StrBuf *b, size_t extra) {
        size_t need = b->len + extra + 1, cap;
        char *d;
        if (need < b->len)
                return -ENOMEM;
        if (need <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 64;
        while (cap < need) {
                if (cap > SIZE_MAX / 2)
                        return -ENOMEM;
                cap *= 2;
        }
        d = realloc(b->data, cap);
        if (!d)
                return -ENOMEM;
        b->data = d;
        b->cap = cap;
        return 0;
}

int strbuf_append(StrBuf *b, const void *p, size_t n) {
        int r = strbuf_reserve(b, n);
        if (r < 0)
                return r;
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}

int strbuf_puts(StrBuf *b, const char *s) {
        return strbuf_append(b, s, strlen(s));
}

int strbuf_putc(StrBuf *b, char c) {
        return strbuf_append(b, &c, 1);
}

int strbuf_printf(StrBuf *b, const char *fmt, ...) {
        va_list ap;
        int n, r;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        r = strbuf_reserve(b, (size_t) n);
        if (r < 0)
                return r;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t) n;
        return 0;
}

void strbuf_clear(StrBuf *b) {
        b->len = 0;
        if (b->data)
                b->data[0] = 0;
}

void strbuf_done(StrBuf *b) {
        free(b->data);
        *b = (StrBuf) {0};
}

char *strbuf_steal(StrBuf *b) {
        char *d = b->data;
        if (!d)
                d = strdup("");
        *b = (StrBuf) {0};
        return d;
}

static const char *var_value(const char *const *vars, const char *name, size_t n) {
        const char *val = NULL;

        for (size_t i = 0; vars[i]; i += 2)
                if (strlen(vars[i]) == n && strncmp(vars[i], name, n) == 0)
                        val = vars[i + 1];
        return val;
}

char *str_expand_vars(const char *tmpl, const char *const *vars) {
        _cleanup_(strbuf_done) StrBuf b = {0};

        for (const char *p = tmpl; *p;) {
                const char *name, *val, *alt = NULL;
                size_t nlen, alen = 0;
                char op = 0;

                if (*p != '$' || p[1] == '$') {
                        if (strbuf_putc(&b, *p) < 0)
                                return NULL;
                        p += *p == '$' ? 2 : 1;
                        continue;
                }
                p++;
                if (*p == '{' || *p == '(') {
                        char open = *p, close = open == '{' ? '}' : ')';
                        const char *end;
                        name = ++p;
                        nlen = strcspn(p, open == '{' ? "?:}" : "?:)");
                        end = p + nlen;
                        if (*end == '?' || *end == ':') {
                                int depth = 1;
                                op = *end;
                                alt = end + 1;
                                if (*alt == open) {
                                        /* ${name?{text}}: the braces are not part of it. */
                                        alt++;
                                        depth++;
                                }
                                for (end = alt; *end && depth > 0; end++) {
                                        if (*end == open)
                                                depth++;
                                        else if (*end == close)
                                                depth--;
                                }
                                alen = (size_t) (end - 1 - alt);
                                if (alen > 0 && alt[alen - 1] == close && alt[-1] == open)
                                        alen--;
                                p = end;
                        } else
                                p = *end ? end + 1 : end;
                } else {
                        name = p;
                        nlen = 0;
                        while (isalnum((unsigned char) p[nlen]) || p[nlen] == '_')
                                nlen++;
                        if (nlen == 0) {
                                if (strbuf_putc(&b, '$') < 0)
                                        return NULL;
                                continue;
                        }
                        p += nlen;
                }
                val = var_value(vars, name, nlen);
                if ((op == '?' && !isempty(val)) || (op == ':' && isempty(val))) {
                        _cleanup_free_ char *sub = strndup(alt, alen), *x = NULL;
                        if (!sub || !(x = str_expand_vars(sub, vars)) || strbuf_puts(&b, x) < 0)
                                return NULL;
                } else if (op != '?' && val && strbuf_puts(&b, val) < 0)
                        return NULL;
        }
        return strbuf_steal(&b);
}
