/* fuzz-map-regexp.c: libFuzzer target for the regexp:/pcre: table parser
 * and the other table text parsers. The first input byte selects the
 * parser: regexp, pcre, the "key whitespace value" and aliases(5) line
 * parsers, or the inline:/static: spec parsers; the rest is a table source
 * file (or spec). Parsed tables answer a few lookups, including one whose
 * key comes from the input, so that matching and $n expansion run too.
 * Diagnostics are produced and discarded. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {
        "", "a", "user@example.com", "Joe@EXAMPLE.COM", "AbC", "12.34", "x\ny", "if-abc",
        "\xc3\xa9", "\xe9", "aaaaaaaaaaaaaaaaaaaaaaaaaaaab",
};

static void lookups(Map *m, const char *extra) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                char *v = NULL;
                if (map_lookup(m, keys[i], &v) > 0)
                        free(v);
        }
        if (extra) {
                char *v = NULL;
                if (map_lookup(m, extra, &v) > 0)
                        free(v);
        }
}

static int walk_entry(const char *key, const char *value, void *userdata) {
        (void) userdata;
        return key[0] == 0 && value[0] == 0 ? -1 : 0;
}

static void source_lines(const char *buf, size_t len) {
        StrBuf line = {0};
        MapSource src;
        Diag d = {0};
        unsigned lineno;

        map_source_init(&src, "fuzz", buf, len);
        while (map_source_next(&src, &line, &lineno, &d) > 0) {
                char *copy = strdup(line.data), *k, *v, *ak = NULL, *av = NULL;
                if (copy)
                        (void) map_parse_key_value(copy, "fuzz", lineno, &d, &k, &v);
                free(copy);
                if (map_parse_alias(line.data, "fuzz", lineno, &d, &ak, &av) > 0) {
                        free(ak);
                        free(av);
                }
        }
        strbuf_done(&line);
        diag_done(&d);
}

static void spec_tables(const char *buf, size_t len) {
        static const char *const prefixes[] = {"inline:", "static:", "proxy:inline:"};

        for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
                char *spec = strdup_printf("%s%.*s", prefixes[i], (int) len, buf);
                Map *m = NULL;
                Diag d = {0};

                if (!spec)
                        return;
                if (map_open(spec, i == 0 ? MAP_FLAG_FOLD_KEYS : 0, &d, &m) >= 0) {
                        lookups(m, NULL);
                        (void) map_walk(m, walk_entry, NULL);
                        map_free(m);
                }
                diag_done(&d);
                free(spec);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf;
        char *extra = NULL;
        Map *m = NULL;
        Diag d = {0};

        if (size < 1 || size > 65536)
                return 0;
        buf = (const char *) data + 1;
        size--;
        switch (data[0] % 4) {
        case 0:
        case 1:
                /* A key from the input: its last line, up to 64 bytes. */
                if (size > 0) {
                        size_t start = size > 64 ? size - 64 : 0;
                        const char *nl = memchr(buf + start, '\n', size - start);
                        if (nl)
                                start = (size_t) (nl + 1 - buf);
                        extra = strndup(buf + start, size - start);
                }
                if (map_regexp_parse_buffer(data[0] % 4 == 0 ? "regexp" : "pcre", "fuzz", buf, size,
                                            &d, &m) >= 0) {
                        lookups(m, extra);
                        map_free(m);
                }
                diag_done(&d);
                free(extra);
                break;
        case 2:
                source_lines(buf, size);
                break;
        default:
                spec_tables(buf, size);
        }
        return 0;
}
