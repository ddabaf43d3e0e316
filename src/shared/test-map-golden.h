/* test-map-golden.h: golden-file helpers for the map unit tests. Test data
 * lives in $TESTDATA/map/: an input table, a list of queries (one key per
 * line), and the exact expected output: the diagnostics in
 * diag_entry_format() shape, then one "key<TAB>value" or
 * "key<TAB>(not found)" line per query. With GOLDEN_UPDATE=1 in the
 * environment the expected files are rewritten from the actual output
 * (review the diff before committing). Header-only: each test binary
 * includes it once. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "fileio.h"
#include "map.h"
#include "strutil.h"
#include "tests.h"

static inline char *golden_path(const char *name) {
        const char *dir = getenv("TESTDATA");
        return strdup_printf("%s/map/%s", dir ? dir : "testdata", name);
}

/* Reads $TESTDATA/map/name; NULL (and a failed check) when missing. */
static inline char *golden_read(const char *name, size_t *ret_len) {
        _cleanup_free_ char *path = golden_path(name);
        char *buf = NULL;
        int r;

        r = path ? file_read_all(path, 16 * 1024 * 1024, &buf, ret_len) : -ENOMEM;
        if (r < 0) {
                fprintf(stderr, "cannot read %s: %s\n", strempty(path), strerror(-r));
                CHECK(r >= 0);
                return NULL;
        }
        return buf;
}

static inline void golden_append_diags(StrBuf *out, const Diag *d) {
        for (size_t i = 0; i < d->n; i++) {
                _cleanup_free_ char *s = diag_entry_format(&d->entries[i]);
                (void) strbuf_printf(out, "%s\n", strempty(s));
        }
}

/* Runs every query of $TESTDATA/map/queries against m. */
static inline void golden_append_queries(StrBuf *out, Map *m, const char *queries) {
        _cleanup_free_ char *q = golden_read(queries, NULL);
        char *line, *save = NULL;

        if (!q)
                return;
        /* strtok_r() would skip empty lines, and the empty key is a test case. */
        for (line = q; line && *line; line = save) {
                _cleanup_free_ char *value = NULL;
                char *nl = strchr(line, '\n');
                int r;

                save = nl ? nl + 1 : NULL;
                if (nl)
                        *nl = 0;
                r = map_lookup(m, line, &value);
                if (r > 0)
                        (void) strbuf_printf(out, "%s\t%s\n", line, value);
                else if (r == 0)
                        (void) strbuf_printf(out, "%s\t(not found)\n", line);
                else
                        (void) strbuf_printf(out, "%s\t(error %s)\n", line, strerror(-r));
        }
}

/* Compares actual with $TESTDATA/map/expected. */
static inline void golden_check(const char *expected, const char *actual) {
        _cleanup_free_ char *want = NULL;

        if (getenv("GOLDEN_UPDATE")) {
                _cleanup_free_ char *path = golden_path(expected);
                CHECK(path && file_write_atomic(path, actual, strlen(actual), 0644) >= 0);
                return;
        }
        want = golden_read(expected, NULL);
        if (!want)
                return;
        if (!streq(want, actual))
                fprintf(stderr, "golden mismatch for %s:\n--- expected\n%s--- actual\n%s---\n",
                        expected, want, actual);
        CHECK(streq(want, actual));
}
