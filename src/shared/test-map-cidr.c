/* test-map-cidr.c: unit tests for map-cidr.c. Golden tests load
 * testdata/map/cidr-*.cidr and check the exact diagnostics and the answer
 * to every query (checked against Postfix's own cidr: tables), then the
 * corners: negation across families, if/endif skipping, opening files. */
#include <errno.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"
#include "test-map-golden.h"
#include "tests.h"

static void golden_case(const char *base) {
        _cleanup_free_ char *input = strdup_printf("%s.cidr", base);
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
        CHECK_INT(map_cidr_parse_buffer(input, buf, len, &d, &m), 0);
        golden_append_diags(&out, &d);
        if (m)
                golden_append_queries(&out, m, queries);
        golden_check(expected, strempty(out.data));
        strbuf_done(&out);
        diag_done(&d);
}

static void test_golden(void) {
        golden_case("cidr-rules");
        golden_case("cidr-if");
        golden_case("cidr-syntax");
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

#define CHECK_LOOKUP(m, key, want)                              \
        do {                                                    \
                _cleanup_free_ char *_v = lookup((m), (key));   \
                CHECK_STR(_v, (want));                          \
        } while (0)

static Map *parse(const char *text, Diag *d) {
        Map *m = NULL;
        CHECK_INT(map_cidr_parse_buffer("t", text, strlen(text), d, &m), 0);
        return m;
}

static void test_semantics(void) {
        Diag d = {0};
        _cleanup_(map_freep) Map *m = parse(
                "if !192.168.0.0/16\n"
                "!10.0.0.0/8 outside-private-not-ten\n"
                "endif\n"
                "192.168.7.0/24   spaced value  \n"
                "::/0 any-v6\n",
                &d);

        CHECK_INT(d.n, 0);
        /* An IPv4 pattern never applies to an IPv6 key, negated or not. */
        CHECK_LOOKUP(m, "2001:db8::1", "any-v6");
        CHECK_LOOKUP(m, "11.0.0.1", "outside-private-not-ten");
        CHECK_LOOKUP(m, "10.0.0.1", "(not found)");
        CHECK_LOOKUP(m, "192.168.7.9", "spaced value");
        CHECK_LOOKUP(m, "192.168.8.9", "(not found)");
        CHECK_LOOKUP(m, "", "(not found)");
        CHECK_LOOKUP(m, "not an address", "(not found)");
        CHECK_INT(map_lookup(m, "11.0.0.1", NULL), 1);
        CHECK_INT(map_walk(m, NULL, NULL), -EOPNOTSUPP);
        diag_done(&d);
}

static void test_empty(void) {
        Diag d = {0};
        _cleanup_(map_freep) Map *m = parse("", &d);
        CHECK_LOOKUP(m, "10.0.0.1", "(not found)");
        CHECK_INT(d.n, 0);
        m = map_free(m);
        m = parse("endif\nendif\n", &d);
        CHECK_INT(d.n, 2);
        CHECK_LOOKUP(m, "10.0.0.1", "(not found)");
        diag_done(&d);
}

static void test_open_file(void) {
        _cleanup_free_ char *path = golden_path("cidr-rules.cidr");
        _cleanup_free_ char *spec = strdup_printf("cidr:%s", path);
        _cleanup_(map_freep) Map *m = NULL;
        Diag d = {0};

        CHECK_INT(map_open(spec, MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        CHECK_STR(map_type(m), "cidr");
        CHECK_LOOKUP(m, "192.168.1.200", "lan");
        /* Warnings name the file as given. */
        CHECK(d.n > 0 && streq_ptr(d.entries[0].file, path));
        diag_done(&d);
        CHECK_INT(map_open("cidr:/nonexistent/cidr", 0, &d, &m), -ENOENT);
        CHECK_INT(d.n_errors, 1);
        diag_done(&d);
}

TEST_MAIN(test_golden, test_semantics, test_empty, test_open_file)
