/* fuzz-map-cidr.c: libFuzzer target for the cidr: table parser (and so
 * for inet.c's prefix parsing). The input is a table source file; the
 * parsed table answers lookups for fixed IPv4/IPv6 addresses and for the
 * first word of every input line, parsed as an address. Diagnostics are
 * produced and discarded. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "inet.h"
#include "map-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {
        "1.2.3.4", "10.0.0.1", "192.168.1.1", "0.0.0.0", "255.255.255.255", "::", "::1",
        "2001:db8::1", "::ffff:10.0.0.1", "fe80::1", "not-an-address", "",
};

static void lookup(Map *m, const char *key) {
        char *v = NULL;
        if (map_lookup(m, key, &v) > 0)
                free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf = (const char *) data;
        Map *m = NULL;
        Diag d = {0};

        if (size > 65536)
                return 0;
        if (map_cidr_parse_buffer("fuzz", buf, size, &d, &m) >= 0) {
                for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                        lookup(m, keys[i]);
                /* Each line's first word, as a key and through the address parsers. */
                for (size_t pos = 0; pos < size;) {
                        const char *nl = memchr(buf + pos, '\n', size - pos);
                        size_t n = nl ? (size_t) (nl - (buf + pos)) : size - pos;
                        size_t w = 0;
                        char *word;

                        while (w < n && buf[pos + w] != ' ' && buf[pos + w] != '\t')
                                w++;
                        word = strndup(buf + pos, w);
                        if (word) {
                                InetAddr a;
                                InetPrefix p;
                                char *s;

                                lookup(m, word);
                                if (inet_addr_parse_bracketed(word, &a) >= 0) {
                                        (void) inet_addr_unmap_v4(&a, NULL);
                                        s = inet_addr_to_string(&a);
                                        free(s);
                                }
                                if (inet_prefix_parse(word, true, &p, NULL) >= 0) {
                                        s = inet_prefix_to_string(&p);
                                        free(s);
                                }
                                free(word);
                        }
                        pos += n + 1;
                }
                map_free(m);
        }
        diag_done(&d);
        return 0;
}
