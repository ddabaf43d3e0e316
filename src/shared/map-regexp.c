/* map-regexp.c: the regexp: and pcre: table types, both compiled with
 * PCRE2 (8-bit, no UTF unless a pattern asks for it). Syntax follows
 * Postfix's regexp_table(5) and pcre_table(5): "/pattern/flags result"
 * rules tried in file order (first match wins), "!/pattern/" negation,
 * "if /pattern/" ... "endif" blocks that nest, $1..$9, ${n} and $(n) in
 * the result replaced by the matched groups ($$ is a dollar), and for
 * regexp: only, the old "/pattern1/!/pattern2/ result" form.
 *
 * regexp: patterns are POSIX extended (or, with the x flag toggled,
 * basic) regular expressions, translated by pcre2_pattern_convert() and
 * matched with POSIX's view of "." and "$" (m flag: per line). Flags are
 * i (case-insensitive, on by default), x and m; pcre: adds s (dotall, on
 * by default), A, E, U and the obsolete X (ignored).
 *
 * Bad rules are reported with file:line and skipped, as Postfix does.
 * Entry points: map_ops_regexp, map_ops_pcre, map_regexp_parse_buffer(). */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"

/* Bounds on the work one lookup may do, so that a pathological pattern
 * fails the lookup instead of stalling a daemon. */
#define RX_MATCH_LIMIT 1000000
#define RX_HEAP_LIMIT_KIB 65536
#define RX_NO_ENDIF SIZE_MAX

typedef enum RxOp {
        RX_MATCH,
        RX_IF,
        RX_ENDIF,
} RxOp;

typedef struct RxPart {
        unsigned group;         /* 0: literal text */
        char *text;
} RxPart;

typedef struct RxRule {
        RxOp op;
        unsigned line;
        pcre2_code *re;
        bool match;             /* false: the rule applies when re does not match */
        pcre2_code *re2;        /* regexp: "/a/!/b/": second pattern, or NULL */
        bool match2;
        RxPart *parts;          /* the result, split at $n */
        size_t n_parts;
        unsigned max_sub;
        size_t endif;           /* RX_IF: index of its RX_ENDIF, or RX_NO_ENDIF */
} RxRule;

typedef struct MapRegexp {
        bool pcre;
        const char *file;       /* borrowed from the Map */
        Diag *diags;            /* while parsing only */
        RxRule *rules;
        size_t n_rules;
        pcre2_match_data *md;
        pcre2_match_context *mctx;
} MapRegexp;

typedef struct RxPattern {
        char *text;             /* points into the line, NUL-terminated */
        bool match;
        bool icase, extended, multiline, dotall, anchored, dollar_endonly, ungreedy;
} RxPattern;

static void rx_rule_done(RxRule *r) {
        pcre2_code_free(r->re);
        pcre2_code_free(r->re2);
        for (size_t i = 0; i < r->n_parts; i++)
                free(r->parts[i].text);
        free(r->parts);
}

static void map_regexp_free_data(void *data) {
        MapRegexp *x = data;
        for (size_t i = 0; i < x->n_rules; i++)
                rx_rule_done(&x->rules[i]);
        free(x->rules);
        pcre2_match_data_free(x->md);
        pcre2_match_context_free(x->mctx);
        free(x);
}

static const char *rx_kind(const MapRegexp *x) {
        return x->pcre ? "pcre" : "regexp";
}

static bool rx_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool rx_is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Parses "[!...]/pattern/flags" at *pp. Returns 1 and advances *pp past
 * the flags, or 0 after reporting why the rule is skipped. */
static int rx_get_pattern(MapRegexp *x, unsigned line, char **pp, RxPattern *pat) {
        char *p = *pp, delim;

        *pat = (RxPattern) {
                .match = true,
                .icase = true,
                /* regexp: POSIX extended syntax; pcre: PCRE2_EXTENDED off. */
                .extended = !x->pcre,
                .dotall = x->pcre,
        };
        for (;; p++) {
                if (*p == '!')
                        pat->match = !pat->match;
                else if (!rx_is_space(*p))
                        break;
        }
        if (*p == 0) {
                diag_warning(x->diags, x->file, line, "no regexp: skipping this rule");
                return 0;
        }
        delim = *p++;
        pat->text = p;
        for (; *p; p++) {
                if (*p == '\\') {
                        if (!p[1])
                                break;
                        p++;
                } else if (*p == delim)
                        break;
        }
        if (*p == 0) {
                _cleanup_free_ char *d = str_escape_log((char[]) {delim, 0}, 8);
                diag_warning(x->diags, x->file, line,
                             "no closing regexp delimiter \"%s\": skipping this rule", strempty(d));
                return 0;
        }
        *p++ = 0;

        /* regexp: flags also end at "!", which starts a second pattern. */
        for (; *p && !rx_is_space(*p) && (x->pcre || *p != '!'); p++) {
                bool known = true;
                switch (*p) {
                case 'i':
                        pat->icase = !pat->icase;
                        break;
                case 'm':
                        pat->multiline = !pat->multiline;
                        break;
                case 'x':
                        pat->extended = !pat->extended;
                        break;
                case 's':
                        if (x->pcre)
                                pat->dotall = !pat->dotall;
                        else
                                known = false;
                        break;
                case 'A':
                        if (x->pcre)
                                pat->anchored = !pat->anchored;
                        else
                                known = false;
                        break;
                case 'E':
                        if (x->pcre)
                                pat->dollar_endonly = !pat->dollar_endonly;
                        else
                                known = false;
                        break;
                case 'U':
                        if (x->pcre)
                                pat->ungreedy = !pat->ungreedy;
                        else
                                known = false;
                        break;
                case 'X':
                        if (x->pcre)
                                diag_warning(x->diags, x->file, line,
                                             "ignoring obsolete regexp option \"X\"");
                        else
                                known = false;
                        break;
                default:
                        known = false;
                }
                if (!known) {
                        _cleanup_free_ char *f = str_escape_log((char[]) {*p, 0}, 8);
                        diag_warning(x->diags, x->file, line,
                                     "unknown regexp option \"%s\": skipping this rule",
                                     strempty(f));
                        return 0;
                }
        }
        *pp = p;
        return 1;
}

static void rx_pcre2_message(int code, StrBuf *b) {
        PCRE2_UCHAR msg[256];   /* library text, not file data */
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
                (void) strbuf_printf(b, "PCRE2 error %d", code);
        else
                (void) strbuf_puts(b, (const char *) msg);
}

/* Compiles pat. Returns 1 with *ret, 0 after reporting a bad pattern, or
 * -ENOMEM. */
static int rx_compile(MapRegexp *x, unsigned line, const RxPattern *pat, pcre2_code **ret) {
        PCRE2_UCHAR *converted = NULL;
        const char *text = pat->text;
        uint32_t options = 0;
        PCRE2_SIZE off = 0;
        pcre2_code *re;
        int code;

        if (!x->pcre) {
                PCRE2_SIZE clen = 0;
                const char *t;

                code = pcre2_pattern_convert((PCRE2_SPTR) text, strlen(text),
                                             pat->extended ? PCRE2_CONVERT_POSIX_EXTENDED :
                                                             PCRE2_CONVERT_POSIX_BASIC,
                                             &converted, &clen, NULL);
                if (code == PCRE2_ERROR_NOMEMORY)
                        return -ENOMEM;
                if (code != 0) {
                        StrBuf m = {0};
                        rx_pcre2_message(code, &m);
                        diag_warning(x->diags, x->file, line, "%s: skipping this rule",
                                     strempty(m.data));
                        strbuf_done(&m);
                        return 0;
                }
                /* The converter selects NUL as the newline; POSIX's notion
                 * of a line (flag m) needs the default. */
                t = startswith((const char *) converted, "(*NUL)");
                text = t ? t : (const char *) converted;
                if (pat->multiline)
                        options |= PCRE2_MULTILINE;
                else
                        options |= PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY;
        } else {
                if (pat->multiline)
                        options |= PCRE2_MULTILINE;
                if (pat->dotall)
                        options |= PCRE2_DOTALL;
                if (pat->extended)
                        options |= PCRE2_EXTENDED;
                if (pat->anchored)
                        options |= PCRE2_ANCHORED;
                if (pat->dollar_endonly)
                        options |= PCRE2_DOLLAR_ENDONLY;
                if (pat->ungreedy)
                        options |= PCRE2_UNGREEDY;
        }
        if (pat->icase)
                options |= PCRE2_CASELESS;

        re = pcre2_compile((PCRE2_SPTR) text, PCRE2_ZERO_TERMINATED, options, &code, &off, NULL);
        if (converted)
                pcre2_converted_pattern_free(converted);
        if (!re) {
                StrBuf m = {0};
                if (code == PCRE2_ERROR_NOMEMORY)
                        return -ENOMEM;
                rx_pcre2_message(code, &m);
                if (x->pcre)
                        diag_warning(x->diags, x->file, line,
                                     "error in regex at offset %zu: %s: skipping this rule",
                                     (size_t) off, strempty(m.data));
                else
                        diag_warning(x->diags, x->file, line, "%s: skipping this rule",
                                     strempty(m.data));
                strbuf_done(&m);
                return 0;
        }
        *ret = re;
        return 1;
}

static int rx_add_part(RxRule *rule, unsigned group, StrBuf *lit) {
        RxPart *t = realloc(rule->parts, (rule->n_parts + 1) * sizeof(RxPart));
        if (!t)
                return -ENOMEM;
        rule->parts = t;
        t[rule->n_parts] = (RxPart) {.group = group};
        if (lit) {
                t[rule->n_parts].text = strbuf_steal(lit);
                if (!t[rule->n_parts].text)
                        return -ENOMEM;
        }
        rule->n_parts++;
        return 0;
}

/* Splits the result text at $n references, as Postfix's mac_parse() reads
 * it. Returns 1, 0 after reporting bad syntax, or -ENOMEM. */
static int rx_parse_result(MapRegexp *x, unsigned line, const char *s, RxRule *rule) {
        StrBuf lit = {0};
        int r = 0;

        while (*s) {
                const char *name, *end;
                size_t n;
                unsigned long group = 0;

                if (*s != '$') {
                        r = strbuf_putc(&lit, *s++);
                        if (r < 0)
                                break;
                        continue;
                }
                if (s[1] == '$') {
                        r = strbuf_putc(&lit, '$');
                        if (r < 0)
                                break;
                        s += 2;
                        continue;
                }
                s++;
                if (*s == '{' || *s == '(') {
                        char open = *s, close = *s == '{' ? '}' : ')';
                        int level = 1;

                        name = ++s;
                        for (end = s; level > 0; end++) {
                                if (*end == 0)
                                        break;
                                if (*end == open)
                                        level++;
                                else if (*end == close)
                                        level--;
                        }
                        if (level > 0) {
                                diag_warning(x->diags, x->file, line,
                                             "bad replacement syntax: "
                                             "truncated macro reference: skipping this rule");
                                strbuf_done(&lit);
                                return 0;
                        }
                        n = (size_t) (end - 1 - name);
                        s = end;
                } else {
                        name = s;
                        for (end = s; rx_is_alnum(*end) || *end == '_'; end++)
                                ;
                        n = (size_t) (end - name);
                        s = end;
                }
                if (n == 0) {
                        diag_warning(x->diags, x->file, line,
                                     "bad replacement syntax: "
                                     "empty macro name: skipping this rule");
                        strbuf_done(&lit);
                        return 0;
                }
                for (size_t i = 0; i < n; i++) {
                        if (name[i] < '0' || name[i] > '9') {
                                _cleanup_free_ char *raw = strndup(name, n);
                                _cleanup_free_ char *e = raw ? str_escape_log(raw, 64) : NULL;
                                diag_warning(x->diags, x->file, line,
                                             "bad replacement syntax: non-numeric "
                                             "replacement index \"%s\": skipping this rule",
                                             strempty(e));
                                strbuf_done(&lit);
                                return 0;
                        }
                        if (group <= 100000)    /* saturate: far beyond any capture count */
                                group = group * 10 + (unsigned long) (name[i] - '0');
                }
                if (group < 1) {
                        diag_warning(x->diags, x->file, line,
                                     "bad replacement syntax: out of range "
                                     "replacement index \"%.*s\": skipping this rule",
                                     (int) MIN(n, (size_t) 16), name);
                        strbuf_done(&lit);
                        return 0;
                }
                if (lit.len > 0) {
                        r = rx_add_part(rule, 0, &lit);
                        if (r < 0)
                                break;
                }
                r = rx_add_part(rule, (unsigned) group, NULL);
                if (r < 0)
                        break;
                rule->max_sub = MAX(rule->max_sub, (unsigned) group);
        }
        if (r >= 0 && (lit.len > 0 || rule->n_parts == 0))
                r = rx_add_part(rule, 0, &lit);
        strbuf_done(&lit);
        return r < 0 ? r : 1;
}

static char *rx_skip_space(char *p) {
        while (rx_is_space(*p))
                p++;
        return p;
}

/* Parses one logical line into *rule. Returns 1 when there is a rule, 0
 * when the line was reported and skipped, or -ENOMEM. */
static int rx_parse_line(MapRegexp *x, unsigned line, char *p, size_t nesting, RxRule *rule) {
        RxPattern pat, pat2;
        int r;

        *rule = (RxRule) {.line = line, .endif = RX_NO_ENDIF};

        if (!rx_is_alnum(*p)) {
                bool second = false;
                uint32_t groups = 0;

                rule->op = RX_MATCH;
                if (!rx_get_pattern(x, line, &p, &pat))
                        return 0;
                if (!x->pcre && *p == '!') {
                        if (!rx_get_pattern(x, line, &p, &pat2))
                                return 0;
                        second = true;
                }
                p = rx_skip_space(p);
                if (*p == 0)
                        diag_warning(x->diags, x->file, line,
                                     "no replacement text: using empty string");
                r = rx_parse_result(x, line, p, rule);
                if (r <= 0)
                        return r;
                if (rule->max_sub > 0 && !pat.match) {
                        diag_warning(x->diags, x->file, line,
                                     "$number found in negative match replacement text: "
                                     "skipping this rule");
                        return 0;
                }
                r = rx_compile(x, line, &pat, &rule->re);
                if (r <= 0)
                        return r;
                rule->match = pat.match;
                if (pcre2_pattern_info(rule->re, PCRE2_INFO_CAPTURECOUNT, &groups) != 0)
                        groups = 0;
                if (rule->max_sub > groups) {
                        diag_warning(x->diags, x->file, line,
                                     "out of range replacement index \"%u\": skipping this rule",
                                     rule->max_sub);
                        return 0;
                }
                if (second) {
                        r = rx_compile(x, line, &pat2, &rule->re2);
                        if (r <= 0)
                                return r;
                        rule->match2 = pat2.match;
                }
                return 1;
        }

        if (strncasecmp(p, "if", 2) == 0 && !rx_is_alnum(p[2])) {
                rule->op = RX_IF;
                p = rx_skip_space(p + 2);
                if (!rx_get_pattern(x, line, &p, &pat))
                        return 0;
                p = rx_skip_space(p);
                if (*p) {
                        _cleanup_free_ char *e = str_escape_log(p, 100);
                        diag_warning(x->diags, x->file, line,
                                     "ignoring extra text after IF statement: \"%s\"", strempty(e));
                        diag_warning(x->diags, x->file, line,
                                     "do not prepend whitespace to statements "
                                     "between IF and ENDIF");
                }
                r = rx_compile(x, line, &pat, &rule->re);
                if (r <= 0)
                        return r;
                rule->match = pat.match;
                return 1;
        }

        if (strncasecmp(p, "endif", 5) == 0 && !rx_is_alnum(p[5])) {
                rule->op = RX_ENDIF;
                if (nesting == 0) {
                        diag_warning(x->diags, x->file, line, "ignoring ENDIF without matching IF");
                        return 0;
                }
                p = rx_skip_space(p + 5);
                if (*p)
                        diag_warning(x->diags, x->file, line, "ignoring extra text after ENDIF");
                return 1;
        }

        diag_warning(x->diags, x->file, line, "ignoring unrecognized request");
        return 0;
}

static int rx_parse(MapRegexp *x, const char *buf, size_t len) {
        _cleanup_free_ size_t *stack = NULL;
        size_t nesting = 0, stack_cap = 0;
        uint32_t max_sub = 0;
        StrBuf line = {0};
        MapSource src;
        int r;

        map_source_init(&src, x->file, buf, len);
        for (;;) {
                RxRule rule;
                unsigned lineno;
                char *p, *e;

                r = map_source_next(&src, &line, &lineno, x->diags);
                if (r <= 0)
                        break;
                p = line.data;
                e = p + strlen(p);
                while (e > p && rx_is_space(e[-1]))
                        e--;
                *e = 0;
                if (*p == 0)
                        continue;
                r = rx_parse_line(x, lineno, p, nesting, &rule);
                if (r < 0) {
                        rx_rule_done(&rule);
                        break;
                }
                if (r == 0) {
                        rx_rule_done(&rule);
                        continue;
                }
                {
                        RxRule *t = realloc(x->rules, (x->n_rules + 1) * sizeof(RxRule));
                        if (!t) {
                                rx_rule_done(&rule);
                                r = -ENOMEM;
                                break;
                        }
                        x->rules = t;
                }
                if (rule.op == RX_IF) {
                        if (nesting == stack_cap) {
                                size_t *t = realloc(stack, (stack_cap * 2 + 8) * sizeof(size_t));
                                if (!t) {
                                        rx_rule_done(&rule);
                                        r = -ENOMEM;
                                        break;
                                }
                                stack = t;
                                stack_cap = stack_cap * 2 + 8;
                        }
                        stack[nesting++] = x->n_rules;
                } else if (rule.op == RX_ENDIF)
                        x->rules[stack[--nesting]].endif = x->n_rules;
                else
                        max_sub = MAX(max_sub, rule.max_sub);
                x->rules[x->n_rules++] = rule;
        }
        strbuf_done(&line);
        if (r < 0)
                return r;
        while (nesting > 0)
                diag_warning(x->diags, x->file, x->rules[stack[--nesting]].line,
                             "IF has no matching ENDIF");

        x->md = pcre2_match_data_create(max_sub + 1, NULL);
        x->mctx = pcre2_match_context_create(NULL);
        if (!x->md || !x->mctx)
                return -ENOMEM;
        (void) pcre2_set_match_limit(x->mctx, RX_MATCH_LIMIT);
        (void) pcre2_set_heap_limit(x->mctx, RX_HEAP_LIMIT_KIB);
        return 0;
}

static int rx_new(Map *m, const char *buf, size_t len, Diag *diags) {
        MapRegexp *x;
        int r;

        x = calloc(1, sizeof(MapRegexp));
        if (!x)
                return -ENOMEM;
        m->data = x;
        x->pcre = m->ops == &map_ops_pcre;
        x->file = m->name;
        x->diags = diags;
        r = rx_parse(x, buf, len);
        x->diags = NULL;
        if (r == -ENOMEM)
                diag_error(diags, m->name, 0, "out of memory while loading the %s table",
                           rx_kind(x));
        return r;
}

static int map_regexp_open(Map *m, Diag *diags) {
        _cleanup_free_ char *buf = NULL;
        size_t len;
        int r;

        r = map_read_source(m->name, diags, &buf, &len);
        if (r < 0)
                return r;
        return rx_new(m, buf, len, diags);
}

int map_regexp_parse_buffer(const char *type, const char *file, const char *buf, size_t len,
                            Diag *diags, Map **ret) {
        _cleanup_(map_freep) Map *m = NULL;
        const MapOps *ops;
        int r;

        if (streq(type, "regexp"))
                ops = &map_ops_regexp;
        else if (streq(type, "pcre"))
                ops = &map_ops_pcre;
        else
                return -EPROTONOSUPPORT;
        r = map_new_shell(ops, type, file, 0, &m);
        if (r < 0)
                return r;
        r = rx_new(m, buf, len, diags);
        if (r < 0)
                return r;
        *ret = steal_ptr(m);
        return 0;
}

/* Returns 1 when the rule's pattern says "applies", 0 when not, < 0 when
 * matching failed. */
static int rx_exec(MapRegexp *x, const pcre2_code *re, bool match, const char *key, size_t len) {
        int rc = pcre2_match(re, (PCRE2_SPTR) key, len, 0, 0, x->md, x->mctx);

        if (rc >= 0)            /* 0: more groups than the ovector holds; still a match */
                return match;
        if (rc == PCRE2_ERROR_NOMATCH)
                return !match;
        /* A key that is not valid UTF-8 cannot match a (*UTF) pattern. */
        if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)
                return !match;
        if (rc == PCRE2_ERROR_NOMEMORY)
                return -ENOMEM;
        return -EIO;
}

static int rx_expand(MapRegexp *x, const RxRule *rule, const char *key, char **ret_value) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->md);
        uint32_t pairs = pcre2_get_ovector_count(x->md);
        StrBuf b = {0};

        if (!ret_value)
                return 1;
        for (size_t i = 0; i < rule->n_parts; i++) {
                const RxPart *part = &rule->parts[i];
                int r = 0;

                if (part->group == 0)
                        r = strbuf_puts(&b, part->text);
                else if (part->group < pairs && ov[2 * part->group] != PCRE2_UNSET &&
                         ov[2 * part->group + 1] > ov[2 * part->group])
                        r = strbuf_append(&b, key + ov[2 * part->group],
                                          ov[2 * part->group + 1] - ov[2 * part->group]);
                if (r < 0) {
                        strbuf_done(&b);
                        return r;
                }
        }
        *ret_value = strbuf_steal(&b);
        return *ret_value ? 1 : -ENOMEM;
}

static int map_regexp_lookup(Map *m, const char *key, char **ret_value) {
        MapRegexp *x = m->data;
        size_t len = strlen(key);

        for (size_t i = 0; i < x->n_rules; i++) {
                const RxRule *rule = &x->rules[i];
                int r;

                switch (rule->op) {
                case RX_MATCH:
                        r = rx_exec(x, rule->re, rule->match, key, len);
                        if (r <= 0) {
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        if (rule->re2) {
                                /* The second pattern needs no groups, but matching it
                                 * must not clobber the first one's: run it last. */
                                _cleanup_free_ char *value = NULL;
                                r = rx_expand(x, rule, key, ret_value ? &value : NULL);
                                if (r < 0)
                                        return r;
                                r = rx_exec(x, rule->re2, rule->match2, key, len);
                                if (r <= 0) {
                                        if (r < 0)
                                                return r;
                                        continue;
                                }
                                if (ret_value)
                                        *ret_value = steal_ptr(value);
                                return 1;
                        }
                        return rx_expand(x, rule, key, ret_value);
                case RX_IF:
                        r = rx_exec(x, rule->re, rule->match, key, len);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                        if (rule->endif == RX_NO_ENDIF)
                                return 0;
                        i = rule->endif;
                        continue;
                case RX_ENDIF:
                        continue;
                }
        }
        return 0;
}

const MapOps map_ops_regexp = {
        .type = "regexp",
        .flags = MAP_OPS_NEEDS_NAME,
        .open = map_regexp_open,
        .lookup = map_regexp_lookup,
        .free_data = map_regexp_free_data,
};

const MapOps map_ops_pcre = {
        .type = "pcre",
        .flags = MAP_OPS_NEEDS_NAME,
        .open = map_regexp_open,
        .lookup = map_regexp_lookup,
        .free_data = map_regexp_free_data,
};
