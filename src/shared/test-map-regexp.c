/* test-map-regexp.c: unit tests for map-regexp.c. Golden tests load
 * testdata/map/regexp-rules.regexp and pcre-rules.pcre and check the exact
 * diagnostics and the answer to every query (the regexp expectations were
 * checked against Postfix's own regexp: tables); the rest covers the
 * corners: if/endif skipping, $n expansion, flags, limits, file opening. */
#include <errno.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"
#include "test-map-golden.h"
#include "tests.h"

static void golden_case(const char *type, const char *base) {
        _cleanup_free_ char *input = strdup_printf("%s.%s", base, type);
        _cleanup_free_ char *queries = strdup_printf("%s.queries", base);
        _cleanup_free_ char *expected = strdup_printf("%s.expected", base);
        _cleanup_free_ char *buf = NULL;
        _cleanup_(map_freep) Map *m = NULL;
        StrBuf out = {0};
        Diag d = {0};
        size_t len = 0;

        buf = golden_read(input, &len);
        if (!buf)
                return;
        CHECK_INT(map_regexp_parse_buffer(type, input, buf, len, &d, &m), 0);
        golden_append_diags(&out, &d);
        if (m)
                golden_append_queries(&out, m, queries);
        golden_check(expected, strempty(out.data));
        strbuf_done(&out);
        diag_done(&d);
}

static void test_golden(void) {
        golden_case("regexp", "regexp-rules");
        golden_case("pcre", "pcre-rules");
}

static char *lookup(Map *m, const char *key) {
        char *v = NULL;
        int r = map_lookup(m, key, &v);
        if (r == 0)
                return strdup("(not found)");
        if (r < 0)
                return strdup_printf("(error %d)", r);
        return v;
}

static Map *parse(const char *type, const char *text, Diag *d) {
        Map *m = NULL;
        CHECK_INT(map_regexp_parse_buffer(type, "t", text, strlen(text), d, &m), 0);
        return m;
}

#define CHECK_LOOKUP(m, key, want)                              \
        do {                                                    \
                _cleanup_free_ char *_v = lookup((m), (key));   \
                CHECK_STR(_v, (want));                          \
        } while (0)

static void test_expansion(void) {
        Diag d = {0};
        _cleanup_(map_freep) Map *m = parse("pcre",
                "/^(a)(b)?(c)$/ [$1][$2][$3]\n"
                "/^(x+)(y+)$/ ${2}${1}$$\n"
                "/^lit$/ cost $$5 and $${1}\n"
                "/^(e)$/ ${1}${1}$(1)\n",
                &d);

        CHECK_INT(d.n, 0);
        CHECK_LOOKUP(m, "abc", "[a][b][c]");
        CHECK_LOOKUP(m, "ac", "[a][][c]");
        CHECK_LOOKUP(m, "xxyy", "yyxx$");
        CHECK_LOOKUP(m, "lit", "cost $5 and ${1}");
        CHECK_LOOKUP(m, "E", "EEE");
        CHECK_LOOKUP(m, "nothing", "(not found)");
        /* A lookup that does not want the value still answers. */
        CHECK_INT(map_lookup(m, "abc", NULL), 1);
        diag_done(&d);
}

static void test_if_endif(void) {
        Diag d = {0};
        _cleanup_(map_freep) Map *m = parse("regexp",
                "if /^a/\n"
                "if /^ab/\n"
                "/^abc$/ abc\n"
                "endif\n"
                "/^a/ a-but-not-abc\n"
                "endif\n"
                "/./ other\n"
                "if /^z/\n"
                "/^zz$/ zz\n",
                &d);

        CHECK_LOOKUP(m, "abc", "abc");
        CHECK_LOOKUP(m, "abd", "a-but-not-abc");
        CHECK_LOOKUP(m, "q", "other");
        CHECK_LOOKUP(m, "zz", "other");
        CHECK_INT(d.n, 1);
        CHECK_STR(d.entries[0].text, "IF has no matching ENDIF");
        CHECK_INT(d.entries[0].line, 8);
        diag_done(&d);

        /* An IF without ENDIF skips the rest of the table when it does not match. */
        m = map_free(m);
        m = parse("regexp", "if /^q/\n/./ inside\n", &d);
        CHECK_LOOKUP(m, "q1", "inside");
        CHECK_LOOKUP(m, "r1", "(not found)");
        diag_done(&d);
}

static void test_flags(void) {
        Diag d = {0};
        _cleanup_(map_freep) Map *m = parse("regexp",
                "/^one$/m line\n"
                "/^a.b$/ dot-any\n"
                "/^end$/ end-only\n",
                &d);

        CHECK_INT(d.n, 0);
        /* POSIX semantics: "." matches a newline and "$" is the end of the key,
         * unless m asks for lines. */
        CHECK_LOOKUP(m, "zero\none\ntwo", "line");
        CHECK_LOOKUP(m, "a\nb", "dot-any");
        CHECK_LOOKUP(m, "end\n", "(not found)");
        m = map_free(m);

        m = parse("pcre", "/^end$/ default\n", &d);
        CHECK_LOOKUP(m, "end\n", "default");
        m = map_free(m);
        m = parse("pcre", "/^end$/E dollar-end-only\n/^a.b$/s no-dotall\n/^y$/m multi\n", &d);
        CHECK_LOOKUP(m, "end\n", "(not found)");
        CHECK_LOOKUP(m, "a\nb", "(not found)");
        CHECK_LOOKUP(m, "x\ny\nz", "multi");
        m = map_free(m);
        m = parse("pcre", "/b/A anchored\n", &d);
        CHECK_LOOKUP(m, "ab", "(not found)");
        CHECK_LOOKUP(m, "ba", "anchored");
        CHECK_INT(d.n, 0);
        diag_done(&d);
}

static void test_errors_and_limits(void) {
        Diag d = {0};
        _cleanup_(map_freep) Map *m = NULL;

        /* Catastrophic backtracking fails the lookup instead of hanging: never
         * "not found". */
        m = parse("pcre", "/^(a+)+$/ slow\n", &d);
        {
                char key[64];
                memset(key, 'a', sizeof(key) - 2);
                key[sizeof(key) - 2] = 'b';
                key[sizeof(key) - 1] = 0;
                CHECK(map_lookup(m, key, NULL) < 0);
        }
        m = map_free(m);

        /* A key that is not UTF-8 does not match a UTF pattern, and is no error. */
        m = parse("pcre", "/(*UTF)^\\x{e9}$/ e-acute\n/./ other\n", &d);
        CHECK_LOOKUP(m, "\xc3\xa9", "e-acute");
        CHECK_LOOKUP(m, "\xe9", "other");
        m = map_free(m);

        /* Empty tables and tables of nothing but comments are fine. */
        m = parse("regexp", "", &d);
        CHECK_LOOKUP(m, "x", "(not found)");
        m = map_free(m);
        m = parse("regexp", "# only a comment\n\n", &d);
        CHECK_LOOKUP(m, "x", "(not found)");
        m = map_free(m);
        CHECK_INT(d.n, 0);

        CHECK_INT(map_regexp_parse_buffer("bogus", "t", "", 0, &d, &m), -EPROTONOSUPPORT);
        diag_done(&d);
}

static void test_open_file(void) {
        _cleanup_free_ char *path = golden_path("regexp-rules.regexp");
        _cleanup_free_ char *spec = strdup_printf("regexp:%s", path);
        _cleanup_free_ char *pspec = strdup_printf("pcre:%s", path);
        _cleanup_(map_freep) Map *m = NULL;
        Diag d = {0};

        CHECK_INT(map_open(spec, MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        CHECK_STR(map_type(m), "regexp");
        CHECK_STR(map_spec(m), spec);
        CHECK_LOOKUP(m, "Joe@Example.COM", "local:Joe");
        CHECK_INT(map_walk(m, NULL, NULL), -EOPNOTSUPP);
        m = map_free(m);
        diag_done(&d);

        CHECK_INT(map_open("regexp:/nonexistent/table", 0, &d, &m), -ENOENT);
        CHECK_INT(d.n_errors, 1);
        CHECK_STR(d.entries[0].text, "open /nonexistent/table: No such file or directory");
        diag_done(&d);
        CHECK_INT(map_open("pcre:", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open(pspec, 0, &d, &m), 0);
        m = map_free(m);
        diag_done(&d);
}

TEST_MAIN(test_golden, test_expansion, test_if_endif, test_flags, test_errors_and_limits,
          test_open_file)
