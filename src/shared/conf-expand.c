/* conf-expand.c: $name expansion with Postfix's mac_expand(3) rules:
 * $name, ${name}, $(name), $$, ${name?value}, ${name:value},
 * ${name?{value}}, ${name:{value}}, ${name?{value1}:{value2}} and the
 * relational form ${{a} OP {b}?{value1}:{value2}} (==, !=, <, <=, >, >=, and
 * the compatibility-level variants such as <=level). The ${name?...} tests
 * look at the raw value of name, as Postfix does.
 *
 * Entry points: conf_expand_text() and conf_scan_refs() (the same walk,
 * collecting names instead of looking them up). Values come from a lookup
 * callback; memoizing, recursion into other parameters and where values
 * live are conf.c's business. Nesting depth and result length are capped. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "conf-internal.h"
#include "strutil.h"

typedef struct Expander {
        ConfLookupFunc lookup;
        void *userdata;
        ConfRefFunc ref;        /* set: scan mode, nothing is looked up or produced */
        void *ref_userdata;
        char ***undefined;
        char *error;
} Expander;

static int fail(Expander *e, const char *fmt, ...) _printf_(2, 3);
static int fail(Expander *e, const char *fmt, ...) {
        va_list ap;

        if (!e->error) {
                va_start(ap, fmt);
                e->error = strdup_vprintf(fmt, ap);
                va_end(ap);
                if (!e->error)
                        return -ENOMEM;
        }
        return -EINVAL;
}

static bool is_name_char(char c) {
        return isalnum((unsigned char) c) || c == '_';
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static size_t skip_space(const char *s, size_t i, size_t len) {
        while (i < len && is_space(s[i]))
                i++;
        return i;
}

static int append(StrBuf *out, const char *p, size_t n) {
        if (out->len + n > CONF_EXPAND_MAX_LEN)
                return -E2BIG;
        return strbuf_append(out, p, n);
}

static int expand(Expander *e, const char *s, size_t len, unsigned depth, StrBuf *out);

/* Finds the "{...}" group starting at s[i] == '{'; sets *ret_start and
 * *ret_len to its inside and returns the index after the closing brace. */
static int group(Expander *e, const char *s, size_t i, size_t len, size_t *ret_start,
                 size_t *ret_len) {
        unsigned level = 1;
        size_t j;

        for (j = i + 1; j < len && level > 0; j++) {
                if (s[j] == '{')
                        level++;
                else if (s[j] == '}')
                        level--;
        }
        if (level > 0)
                return fail(e, "missing \"}\" to close a \"{\" group");
        *ret_start = i + 1;
        *ret_len = j - 1 - (i + 1);
        return (int) j;
}

/* Looks up a name: > 0 found (value in *ret), 0 undefined, < 0 error. */
static int lookup(Expander *e, const char *name, size_t n, bool expanded, unsigned depth,
                  const char **ret) {
        _cleanup_free_ char *copy = strndup(name, n);

        if (!copy)
                return -ENOMEM;
        return e->lookup(e->userdata, copy, expanded, depth, ret);
}

static int reference(Expander *e, const char *name, size_t n, bool conditional) {
        _cleanup_free_ char *copy = strndup(name, n);

        if (!copy)
                return -ENOMEM;
        e->ref(e->ref_userdata, copy, conditional);
        return 0;
}

/* Substitutes a plain $name. */
static int substitute(Expander *e, const char *name, size_t n, unsigned depth, StrBuf *out) {
        const char *v;
        int r;

        if (e->ref)
                return reference(e, name, n, false);
        r = lookup(e, name, n, true, depth + 1, &v);
        if (r < 0)
                return r;
        if (r == 0) {
                if (e->undefined) {
                        _cleanup_free_ char *copy = strndup(name, n);
                        if (!copy)
                                return -ENOMEM;
                        if (!strv_contains(*e->undefined, copy) &&
                            strv_consume(e->undefined, steal_ptr(copy)) < 0)
                                return -ENOMEM;
                }
                return 0;
        }
        return append(out, v, strlen(v));
}

/* Compares two compatibility levels ("3.6", "2", "3.10.1"); -EINVAL for a
 * malformed one. */
static int level_compare(const char *a, const char *b, int *ret) {
        for (;;) {
                unsigned long x = 0, y = 0;
                char *end;

                if (*a) {
                        if (!isdigit((unsigned char) *a))
                                return -EINVAL;
                        errno = 0;
                        x = strtoul(a, &end, 10);
                        if (errno || (*end && *end != '.'))
                                return -EINVAL;
                        a = *end ? end + 1 : end;
                }
                if (*b) {
                        if (!isdigit((unsigned char) *b))
                                return -EINVAL;
                        errno = 0;
                        y = strtoul(b, &end, 10);
                        if (errno || (*end && *end != '.'))
                                return -EINVAL;
                        b = *end ? end + 1 : end;
                }
                if (x != y) {
                        *ret = x < y ? -1 : 1;
                        return 0;
                }
                if (!*a && !*b) {
                        *ret = 0;
                        return 0;
                }
        }
}

/* Numeric when both are all digits (compared by length, then text, so that
 * any length works), else byte order. */
static int value_compare(const char *a, const char *b) {
        if (str_is_ascii_digits(a) && str_is_ascii_digits(b)) {
                size_t la, lb;
                while (*a == '0' && a[1])
                        a++;
                while (*b == '0' && b[1])
                        b++;
                la = strlen(a);
                lb = strlen(b);
                if (la != lb)
                        return la < lb ? -1 : 1;
        }
        return strcmp(a, b);
}

/* Parses "OP" at s[i]: sets *ret_op to one of "==", "!=", "<", "<=", ">",
 * ">=" and *ret_level for the "level" variants; returns the index after. */
static int comparison_operator(Expander *e, const char *s, size_t i, size_t len, char ret_op[3],
                               bool *ret_level) {
        static const char *const ops[] = {"==", "!=", "<=", ">=", "<", ">"};
        size_t n = 0;

        for (size_t k = 0; k < ELEMENTSOF(ops); k++) {
                n = strlen(ops[k]);
                if (len - i >= n && memcmp(s + i, ops[k], n) == 0) {
                        memcpy(ret_op, ops[k], n + 1);
                        break;
                }
                n = 0;
        }
        if (n == 0)
                return fail(e, "expected a comparison (==, !=, <, <=, >, >=) after \"{...}\"");
        i += n;
        *ret_level = len - i >= 5 && memcmp(s + i, "level", 5) == 0;
        if (*ret_level)
                i += 5;
        return (int) i;
}

/* Expands the inside of a "{...}" group into a new string. */
static int expand_group(Expander *e, const char *s, size_t start, size_t n, unsigned depth,
                        char **ret) {
        StrBuf b = {0};
        int r;

        r = expand(e, s + start, n, depth + 1, &b);
        if (r < 0) {
                strbuf_done(&b);
                return r;
        }
        *ret = strbuf_steal(&b);
        return *ret ? 0 : -ENOMEM;
}

/* The part after "?" or ":" (s[i] is the operator): chooses a branch by
 * cond and expands it. In scan mode every branch is scanned. */
static int conditional(Expander *e, const char *s, size_t i, size_t len, bool cond,
                       unsigned depth, StrBuf *out) {
        char op = s[i];
        size_t start1, n1, start2 = 0, n2 = 0;
        bool have2 = false;
        int r;

        i = skip_space(s, i + 1, len);
        if (i < len && s[i] == '{') {
                r = group(e, s, i, len, &start1, &n1);
                if (r < 0)
                        return r;
                i = skip_space(s, (size_t) r, len);
                if (i < len && op == '?' && s[i] == ':') {
                        i = skip_space(s, i + 1, len);
                        if (i < len && s[i] == '{') {
                                r = group(e, s, i, len, &start2, &n2);
                                if (r < 0)
                                        return r;
                                i = skip_space(s, (size_t) r, len);
                                if (i < len)
                                        return fail(e, "unexpected text after \"{...}\"");
                        } else {
                                start2 = i;
                                n2 = len - i;
                        }
                        have2 = true;
                } else if (i < len)
                        return fail(e, "unexpected text after \"{...}\"");
        } else {
                /* The plain form: everything after the operator. */
                start1 = i;
                n1 = len - i;
        }

        if (e->ref) {
                r = expand(e, s + start1, n1, depth + 1, out);
                if (r >= 0 && have2)
                        r = expand(e, s + start2, n2, depth + 1, out);
                return r;
        }
        if (op == ':')
                cond = !cond;
        if (cond)
                return expand(e, s + start1, n1, depth + 1, out);
        if (have2)
                return expand(e, s + start2, n2, depth + 1, out);
        return 0;
}

/* ${{a} OP {b} ? ...}: s[i] is the first "{". */
static int relational(Expander *e, const char *s, size_t i, size_t len, unsigned depth,
                      StrBuf *out) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        size_t start_a, n_a, start_b, n_b;
        char op[3];
        bool level = false, cond = false;
        int r, cmp = 0;

        r = group(e, s, i, len, &start_a, &n_a);
        if (r < 0)
                return r;
        i = skip_space(s, (size_t) r, len);
        r = comparison_operator(e, s, i, len, op, &level);
        if (r < 0)
                return r;
        i = skip_space(s, (size_t) r, len);
        if (i >= len || s[i] != '{')
                return fail(e, "expected \"{...}\" after \"%s%s\"", op, level ? "level" : "");
        r = group(e, s, i, len, &start_b, &n_b);
        if (r < 0)
                return r;
        i = skip_space(s, (size_t) r, len);
        if (i >= len || (s[i] != '?' && s[i] != ':'))
                return fail(e, "expected \"?\" or \":\" after a comparison");

        if (e->ref) {
                r = expand(e, s + start_a, n_a, depth + 1, out);
                if (r >= 0)
                        r = expand(e, s + start_b, n_b, depth + 1, out);
                if (r >= 0)
                        r = conditional(e, s, i, len, false, depth, out);
                return r;
        }

        r = expand_group(e, s, start_a, n_a, depth, &a);
        if (r >= 0)
                r = expand_group(e, s, start_b, n_b, depth, &b);
        if (r < 0)
                return r;
        if (level) {
                if (level_compare(strstrip(a), strstrip(b), &cmp) < 0)
                        return fail(e, "bad compatibility level in \"%s %slevel\" comparison",
                                    a, op);
        } else
                cmp = value_compare(a, b);
        if (streq(op, "=="))
                cond = cmp == 0;
        else if (streq(op, "!="))
                cond = cmp != 0;
        else if (streq(op, "<"))
                cond = cmp < 0;
        else if (streq(op, "<="))
                cond = cmp <= 0;
        else if (streq(op, ">"))
                cond = cmp > 0;
        else
                cond = cmp >= 0;
        return conditional(e, s, i, len, cond, depth, out);
}

/* The inside of "${...}" or "$(...)". */
static int braced(Expander *e, const char *s, size_t len, unsigned depth, StrBuf *out) {
        size_t i = skip_space(s, 0, len), name_start, name_len;
        const char *v;
        bool cond;
        int r;

        if (i < len && s[i] == '{')
                return relational(e, s, i, len, depth, out);
        name_start = i;
        while (i < len && is_name_char(s[i]))
                i++;
        name_len = i - name_start;
        i = skip_space(s, i, len);
        if (name_len == 0)
                return fail(e, "missing parameter name in \"${...}\"");
        if (i == len)
                return substitute(e, s + name_start, name_len, depth, out);
        if (s[i] != '?' && s[i] != ':')
                return fail(e, "expected \"}\", \"?\" or \":\" after \"${%.*s\"", (int) name_len,
                            s + name_start);
        if (e->ref) {
                r = reference(e, s + name_start, name_len, true);
                if (r < 0)
                        return r;
                return conditional(e, s, i, len, false, depth, out);
        }
        r = lookup(e, s + name_start, name_len, false, depth + 1, &v);
        if (r < 0)
                return r;
        cond = r > 0 && *v;
        return conditional(e, s, i, len, cond, depth, out);
}

static int expand(Expander *e, const char *s, size_t len, unsigned depth, StrBuf *out) {
        size_t i = 0;
        int r;

        if (depth > CONF_EXPAND_MAX_DEPTH)
                return -ELOOP;
        while (i < len) {
                const char *dollar = memchr(s + i, '$', len - i);
                size_t run = dollar ? (size_t) (dollar - (s + i)) : len - i;

                if (run > 0) {
                        if (!e->ref) {
                                r = append(out, s + i, run);
                                if (r < 0)
                                        return r;
                        }
                        i += run;
                        continue;
                }
                i++;    /* the "$" */
                if (i < len && s[i] == '$') {
                        if (!e->ref) {
                                r = append(out, "$", 1);
                                if (r < 0)
                                        return r;
                        }
                        i++;
                } else if (i < len && (s[i] == '{' || s[i] == '(')) {
                        char open = s[i], close = open == '{' ? '}' : ')';
                        unsigned level = 1;
                        size_t j;

                        for (j = i + 1; j < len && level > 0; j++) {
                                if (s[j] == open)
                                        level++;
                                else if (s[j] == close)
                                        level--;
                        }
                        if (level > 0)
                                return fail(e, "missing \"%c\" to close \"$%c\"", close, open);
                        r = braced(e, s + i + 1, j - 1 - (i + 1), depth, out);
                        if (r < 0)
                                return r;
                        i = j;
                } else if (i < len && is_name_char(s[i])) {
                        size_t j = i;
                        while (j < len && is_name_char(s[j]))
                                j++;
                        r = substitute(e, s + i, j - i, depth, out);
                        if (r < 0)
                                return r;
                        i = j;
                } else
                        return fail(e, "\"$\" not followed by a parameter name (write \"$$\" for a "
                                       "literal \"$\")");
        }
        return 0;
}

int conf_expand_text(const char *text, ConfLookupFunc lookup_func, void *userdata, unsigned depth,
                     char ***undefined, char **ret, char **ret_error) {
        Expander e = {
                .lookup = lookup_func,
                .userdata = userdata,
                .undefined = undefined,
        };
        StrBuf out = {0};
        int r;

        r = expand(&e, text, strlen(text), depth, &out);
        if (r < 0) {
                strbuf_done(&out);
                if (r == -EINVAL && ret_error)
                        *ret_error = steal_ptr(e.error);
                free(e.error);
                return r;
        }
        *ret = strbuf_steal(&out);
        return *ret ? 0 : -ENOMEM;
}

int conf_scan_refs(const char *text, ConfRefFunc f, void *userdata, char **ret_error) {
        Expander e = {
                .ref = f,
                .ref_userdata = userdata,
        };
        StrBuf out = {0};
        int r;

        r = expand(&e, text, strlen(text), 0, &out);
        strbuf_done(&out);
        if (r == -EINVAL && ret_error)
                *ret_error = steal_ptr(e.error);
        free(e.error);
        return r;
}
