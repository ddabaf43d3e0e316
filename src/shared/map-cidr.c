/* map-cidr.c: the cidr: lookup table type (Postfix's cidr_table(5)).
 * Loads "prefix/len  result" lines in file order and answers lookups for
 * IPv4 and IPv6 addresses, first match wins. A bare address means all its
 * bits, "[...]" brackets are allowed, "!" negates a pattern, and
 * "if PATTERN" ... "endif" blocks nest. Bad lines are reported with
 * file:line and skipped. Keys are not case-folded; a key that is not a
 * numeric address is simply not found (IPv4-mapped IPv6 keys are looked up
 * as IPv6, as Postfix does). Entry points: map_ops_cidr,
 * map_cidr_parse_buffer(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "inet.h"
#include "map-internal.h"
#include "strutil.h"

#define CIDR_NO_ENDIF SIZE_MAX

typedef enum CidrOp {
        CIDR_MATCH,
        CIDR_IF,
        CIDR_ENDIF,
} CidrOp;

typedef struct CidrRule {
        CidrOp op;
        unsigned line;
        InetPrefix prefix;
        bool match;             /* false: "!pattern" */
        char *value;            /* CIDR_MATCH only */
        size_t endif;           /* CIDR_IF: index of its CIDR_ENDIF, or CIDR_NO_ENDIF */
} CidrRule;

typedef struct MapCidr {
        CidrRule *rules;
        size_t n_rules;
} MapCidr;

static void map_cidr_free_data(void *data) {
        MapCidr *c = data;
        for (size_t i = 0; i < c->n_rules; i++)
                free(c->rules[i].value);
        free(c->rules);
        free(c);
}

static bool cidr_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool cidr_is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Parses "[!...]prefix" into rule. Returns 1, or 0 after reporting. */
static int cidr_parse_pattern(const char *file, unsigned line, const char *pattern, Diag *diags,
                              CidrRule *rule) {
        _cleanup_free_ char *shown = NULL, *suggest = NULL;
        InetPrefixError e;
        int r;

        rule->match = true;
        while (*pattern == '!') {
                rule->match = !rule->match;
                pattern++;
        }
        r = inet_prefix_parse(pattern, false, &rule->prefix, &e);
        if (r == -ENOMEM)
                return r;
        if (r >= 0)
                return 1;

        shown = str_escape_log(pattern, 100);
        switch (e) {
        case INET_PREFIX_EMPTY:
                diag_warning(diags, file, line, "no address pattern: skipping this rule");
                break;
        case INET_PREFIX_BAD_ADDRESS:
                diag_warning(diags, file, line, "bad address pattern: \"%s\": skipping this rule",
                             strempty(shown));
                break;
        case INET_PREFIX_MISSING_BRACKET:
                diag_warning(diags, file, line,
                             "missing ']' character after \"%s\": skipping this rule", strempty(shown));
                break;
        case INET_PREFIX_AFTER_BRACKET: {
                /* Quote the pattern up to its "]", as Postfix does. */
                const char *close = strchr(pattern, ']');
                size_t n = close ? (size_t) (close - pattern) + 1 : 0;
                _cleanup_free_ char *head = strndup(pattern, n);
                _cleanup_free_ char *h = head ? str_escape_log(head, 100) : NULL;
                diag_warning(diags, file, line, "garbage after \"%s\": skipping this rule",
                             strempty(h));
                break;
        }
        case INET_PREFIX_HOST_BITS:
                suggest = inet_prefix_to_string(&rule->prefix);
                diag_warning(diags, file, line,
                             "non-null host address bits in \"%s\", "
                             "perhaps you should use \"%s\" instead: skipping this rule",
                             strempty(shown), strempty(suggest));
                break;
        default:
                diag_warning(diags, file, line, "%s in \"%s\": skipping this rule",
                             inet_prefix_error_to_string(e), strempty(shown));
        }
        return 0;
}

static char *cidr_skip_space(char *p) {
        while (cidr_is_space(*p))
                p++;
        return p;
}

/* Parses one logical line. Returns 1 with *rule, 0 when reported and
 * skipped, or -ENOMEM. */
static int cidr_parse_line(const char *file, unsigned line, char *p, size_t nesting, Diag *diags,
                           CidrRule *rule) {
        char *value;
        int r;

        *rule = (CidrRule) {.line = line, .endif = CIDR_NO_ENDIF};

        if (strncasecmp(p, "if", 2) == 0 && !cidr_is_alnum(p[2])) {
                rule->op = CIDR_IF;
                return cidr_parse_pattern(file, line, cidr_skip_space(p + 2), diags, rule);
        }
        if (strncasecmp(p, "endif", 5) == 0 && !cidr_is_alnum(p[5])) {
                rule->op = CIDR_ENDIF;
                if (*cidr_skip_space(p + 5)) {
                        diag_warning(diags, file, line, "garbage after ENDIF: skipping this rule");
                        return 0;
                }
                if (nesting == 0) {
                        diag_warning(diags, file, line, "ENDIF without IF: skipping this rule");
                        return 0;
                }
                return 1;
        }

        rule->op = CIDR_MATCH;
        for (value = p; *value && !cidr_is_space(*value); value++)
                ;
        if (*value)
                *value++ = 0;
        value = cidr_skip_space(value);
        r = cidr_parse_pattern(file, line, p, diags, rule);
        if (r <= 0)
                return r;
        if (*value == 0) {
                diag_warning(diags, file, line, "no lookup result: skipping this rule");
                return 0;
        }
        rule->value = strdup(value);
        return rule->value ? 1 : -ENOMEM;
}

static int cidr_parse(MapCidr *c, const char *file, const char *buf, size_t len, Diag *diags) {
        _cleanup_free_ size_t *stack = NULL;
        size_t nesting = 0, stack_cap = 0;
        StrBuf line = {0};
        MapSource src;
        int r;

        map_source_init(&src, file, buf, len);
        for (;;) {
                CidrRule rule;
                unsigned lineno;
                char *p, *e;
                CidrRule *t;

                r = map_source_next(&src, &line, &lineno, diags);
                if (r <= 0)
                        break;
                p = line.data;
                e = p + strlen(p);
                while (e > p && cidr_is_space(e[-1]))
                        e--;
                *e = 0;
                if (*p == 0)
                        continue;
                r = cidr_parse_line(file, lineno, p, nesting, diags, &rule);
                if (r <= 0) {
                        free(rule.value);
                        if (r < 0)
                                break;
                        continue;
                }
                t = realloc(c->rules, (c->n_rules + 1) * sizeof(CidrRule));
                if (!t) {
                        free(rule.value);
                        r = -ENOMEM;
                        break;
                }
                c->rules = t;
                if (rule.op == CIDR_IF) {
                        if (nesting == stack_cap) {
                                size_t *s = realloc(stack, (stack_cap * 2 + 8) * sizeof(size_t));
                                if (!s) {
                                        r = -ENOMEM;
                                        break;
                                }
                                stack = s;
                                stack_cap = stack_cap * 2 + 8;
                        }
                        stack[nesting++] = c->n_rules;
                } else if (rule.op == CIDR_ENDIF)
                        c->rules[stack[--nesting]].endif = c->n_rules;
                c->rules[c->n_rules++] = rule;
        }
        strbuf_done(&line);
        if (r < 0) {
                diag_error(diags, file, 0, "out of memory while loading the cidr table");
                return r;
        }
        while (nesting > 0)
                diag_warning(diags, file, c->rules[stack[--nesting]].line,
                             "IF has no matching ENDIF");
        return 0;
}

static int cidr_new(Map *m, const char *buf, size_t len, Diag *diags) {
        MapCidr *c = calloc(1, sizeof(MapCidr));
        if (!c)
                return -ENOMEM;
        m->data = c;
        return cidr_parse(c, m->name, buf, len, diags);
}

static int map_cidr_open(Map *m, Diag *diags) {
        _cleanup_free_ char *buf = NULL;
        size_t len;
        int r;

        r = map_read_source(m->name, diags, &buf, &len);
        if (r < 0)
                return r;
        return cidr_new(m, buf, len, diags);
}

int map_cidr_parse_buffer(const char *file, const char *buf, size_t len, Diag *diags, Map **ret) {
        _cleanup_(map_freep) Map *m = NULL;
        int r;

        r = map_new_shell(&map_ops_cidr, "cidr", file, 0, &m);
        if (r < 0)
                return r;
        r = cidr_new(m, buf, len, diags);
        if (r < 0)
                return r;
        *ret = steal_ptr(m);
        return 0;
}

/* Whether rule applies to a: an address of the other family never does,
 * negated or not (Postfix's semantics). */
static bool cidr_applies(const CidrRule *rule, const InetAddr *a) {
        if (rule->prefix.addr.family != a->family)
                return false;
        return inet_prefix_contains(&rule->prefix, a) == rule->match;
}

static int map_cidr_lookup(Map *m, const char *key, char **ret_value) {
        MapCidr *c = m->data;
        InetAddr a;

        if (inet_addr_parse(key, &a) < 0)
                return 0;
        for (size_t i = 0; i < c->n_rules; i++) {
                const CidrRule *rule = &c->rules[i];

                switch (rule->op) {
                case CIDR_MATCH:
                        if (!cidr_applies(rule, &a))
                                continue;
                        if (ret_value) {
                                *ret_value = strdup(rule->value);
                                if (!*ret_value)
                                        return -ENOMEM;
                        }
                        return 1;
                case CIDR_IF:
                        if (cidr_applies(rule, &a))
                                continue;
                        if (rule->endif == CIDR_NO_ENDIF)
                                return 0;
                        i = rule->endif;
                        continue;
                case CIDR_ENDIF:
                        continue;
                }
        }
        return 0;
}

const MapOps map_ops_cidr = {
        .type = "cidr",
        .flags = MAP_OPS_NEEDS_NAME,
        .open = map_cidr_open,
        .lookup = map_cidr_lookup,
        .free_data = map_cidr_free_data,
};
