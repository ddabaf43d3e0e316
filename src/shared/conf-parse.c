/* conf-parse.c: the syntax of main.cf and services.d/NAME.cf, and of
 * single values. conf_file_parse() splits text into "name = value" logical
 * lines with Postfix's rules (readlline(3) and split_nameval(3)): a line
 * starting with white space continues the previous one, blank lines and
 * lines whose first non-blank character is "#" are skipped even inside a
 * continued line, and "#" anywhere else is part of the value. The value
 * parsers (conf_parse_bool() and friends) check one expanded value. What a
 * name means and whether its value fits is conf.c's business. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf-internal.h"
#include "conf.h"
#include "strutil.h"

/* Longest excerpt of a bad line quoted in a diagnostic. */
#define EXCERPT_MAX 100

static bool is_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n';
}

bool conf_line_is_comment(const char *line, size_t len) {
        size_t i = 0;
        while (i < len && is_blank(line[i]))
                i++;
        return i == len || line[i] == '#';
}

bool conf_line_is_continuation(const char *line, size_t len) {
        return len > 0 && is_blank(line[0]);
}

bool conf_name_valid(const char *s, size_t len) {
        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char) s[i]) && s[i] != '_')
                        return false;
        return true;
}

int conf_split_assignment(const char *text, char **ret_name, char **ret_value, char **ret_error) {
        _cleanup_free_ char *copy = strdup(text), *excerpt = NULL;
        char *eq, *name, *value;

        if (!copy)
                return -ENOMEM;
        eq = strchr(copy, '=');
        if (!eq || strstrip(copy) == eq) {
                excerpt = str_escape_log(strstrip(copy), EXCERPT_MAX);
                if (!excerpt)
                        return -ENOMEM;
                *ret_error = strdup_printf(eq ? "missing parameter name: \"%s\""
                                              : "missing '=' after parameter name: \"%s\"",
                                           excerpt);
                return *ret_error ? -EINVAL : -ENOMEM;
        }
        *eq = 0;
        name = strdup(strstrip(copy));
        value = strdup(strstrip(eq + 1));
        if (!name || !value) {
                free(name);
                free(value);
                return -ENOMEM;
        }
        *ret_name = name;
        *ret_value = value;
        return 0;
}

ConfFile *conf_file_free(ConfFile *f) {
        if (!f)
                return NULL;
        for (size_t i = 0; i < f->n; i++) {
                free(f->entries[i].name);
                free(f->entries[i].value);
        }
        free(f->entries);
        free(f->path);
        free(f);
        return NULL;
}

/* Turns one logical line into an entry, or reports why it cannot be one. */
static int add_logical_line(ConfFile *f, const char *text, unsigned line, Diag *diags) {
        _cleanup_free_ char *name = NULL, *value = NULL, *error = NULL;
        ConfEntry *t;
        int r;

        r = conf_split_assignment(text, &name, &value, &error);
        if (r == -EINVAL) {
                diag_error(diags, f->path, line, "%s", error);
                return 0;
        }
        if (r < 0)
                return r;
        if (!conf_name_valid(name, strlen(name))) {
                _cleanup_free_ char *excerpt = str_escape_log(name, EXCERPT_MAX);
                if (!excerpt)
                        return -ENOMEM;
                diag_warning(diags, f->path, line,
                             "ignoring bad parameter name \"%s\": only letters, digits and "
                             "\"_\" are allowed",
                             excerpt);
                return 0;
        }
        t = realloc(f->entries, (f->n + 1) * sizeof(ConfEntry));
        if (!t)
                return -ENOMEM;
        f->entries = t;
        t[f->n++] = (ConfEntry) {
                .name = steal_ptr(name),
                .value = steal_ptr(value),
                .line = line,
        };
        return 0;
}

int conf_file_parse(const char *text, const char *path, Diag *diags, ConfFile **ret) {
        _cleanup_(conf_file_freep) ConfFile *f = NULL;
        _cleanup_(strbuf_done) StrBuf logical = {0};
        unsigned lineno = 0, start_line = 0;
        bool have_logical = false;
        const char *p = text;
        int r;

        f = calloc(1, sizeof(ConfFile));
        if (!f)
                return -ENOMEM;
        f->path = strdup(path);
        if (!f->path)
                return -ENOMEM;

        while (*p) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t) (nl - p) : strlen(p);

                lineno++;
                if (conf_line_is_comment(p, len)) {
                        /* Skipped without ending a continued logical line. */
                } else if (conf_line_is_continuation(p, len) && have_logical) {
                        r = strbuf_append(&logical, p, len);
                        if (r < 0)
                                return r;
                } else {
                        if (have_logical) {
                                r = add_logical_line(f, logical.data, start_line, diags);
                                if (r < 0)
                                        return r;
                        }
                        if (conf_line_is_continuation(p, len)) {
                                _cleanup_free_ char *excerpt = NULL, *copy = strndup(p, len);
                                if (!copy)
                                        return -ENOMEM;
                                excerpt = str_escape_log(strstrip(copy), EXCERPT_MAX);
                                if (!excerpt)
                                        return -ENOMEM;
                                diag_warning(diags, path, lineno,
                                             "logical line must not start with whitespace: \"%s\"",
                                             excerpt);
                        }
                        strbuf_clear(&logical);
                        r = strbuf_append(&logical, p, len);
                        if (r < 0)
                                return r;
                        have_logical = true;
                        start_line = lineno;
                }
                p += len;
                if (*p == '\n')
                        p++;
        }
        if (have_logical) {
                r = add_logical_line(f, logical.data, start_line, diags);
                if (r < 0)
                        return r;
        }
        *ret = steal_ptr(f);
        return 0;
}

/* Value parsers. Each takes an expanded value, trimmed by the caller. */

int conf_parse_bool(const char *s, bool *ret) {
        bool v;

        if (strcaseeq(s, "yes") || strcaseeq(s, "true"))
                v = true;
        else if (strcaseeq(s, "no") || strcaseeq(s, "false"))
                v = false;
        else
                return -EINVAL;
        if (ret)
                *ret = v;
        return 0;
}

/* Reads the leading decimal digits of s into *ret; returns the number of
 * digits, or -EINVAL for none or overflow. */
static int parse_digits(const char *s, uint64_t *ret) {
        uint64_t v = 0;
        int n = 0;

        for (; *s >= '0' && *s <= '9'; s++, n++) {
                unsigned d = (unsigned) (*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -EINVAL;
                v = v * 10 + d;
        }
        if (n == 0)
                return -EINVAL;
        *ret = v;
        return n;
}

static int multiply(uint64_t v, uint64_t factor, uint64_t *ret) {
        if (factor != 0 && v > UINT64_MAX / factor)
                return -EINVAL;
        *ret = v * factor;
        return 0;
}

int conf_parse_time(const char *s, char default_unit, uint64_t *ret) {
        uint64_t v, factor;
        int n;
        char unit;

        n = parse_digits(s, &v);
        if (n < 0)
                return n;
        s += n;
        if (s[0] && s[1])
                return -EINVAL;
        /* Postfix accepts the units in lower case only. */
        unit = s[0] ? s[0] : (default_unit ? default_unit : 's');
        switch (unit) {
        case 's':
                factor = 1;
                break;
        case 'm':
                factor = 60;
                break;
        case 'h':
                factor = 3600;
                break;
        case 'd':
                factor = 86400;
                break;
        case 'w':
                factor = 604800;
                break;
        default:
                return -EINVAL;
        }
        if (multiply(v, factor, &v) < 0)
                return -EINVAL;
        if (ret)
                *ret = v;
        return 0;
}

int conf_parse_size(const char *s, uint64_t *ret) {
        uint64_t v, factor = 1;
        int n;

        n = parse_digits(s, &v);
        if (n < 0)
                return n;
        s += n;
        if (s[0] && s[1])
                return -EINVAL;
        switch (s[0]) {
        case 0:
                break;
        case 'k':
        case 'K':
                factor = UINT64_C(1) << 10;
                break;
        case 'm':
        case 'M':
                factor = UINT64_C(1) << 20;
                break;
        case 'g':
        case 'G':
                factor = UINT64_C(1) << 30;
                break;
        default:
                return -EINVAL;
        }
        if (multiply(v, factor, &v) < 0)
                return -EINVAL;
        if (ret)
                *ret = v;
        return 0;
}

int conf_parse_int(const char *s, long long *ret) {
        bool negative = false;
        uint64_t v;
        int n;

        if (*s == '-' || *s == '+') {
                negative = *s == '-';
                s++;
        }
        n = parse_digits(s, &v);
        if (n < 0 || s[n])
                return -EINVAL;
        if (negative ? v > (uint64_t) LLONG_MAX + 1 : v > (uint64_t) LLONG_MAX)
                return -EINVAL;
        if (ret)
                *ret = negative ? (long long) (0 - v) : (long long) v;
        return 0;
}
