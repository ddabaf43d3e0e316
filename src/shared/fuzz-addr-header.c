/* fuzz-addr-header.c: libFuzzer target for addr_header_parse(), the
 * parser of RFC 5322 address lists in headers (From:, To:, ...) that
 * canonical mapping uses on mail as received. Every item must lie inside
 * the input; each address goes through addr_quote_local() and the xtext
 * encoder and decoder, which must give it back. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        AddrHeaderItem *items = NULL;
        size_t n = 0;

        if (size > 65536)
                return 0;
        if (addr_header_parse((const char *) data, size, &items, &n) < 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                char *q, *x = NULL, *back = NULL;
                if (items[i].start > size || items[i].len > size - items[i].start)
                        abort();
                q = addr_quote_local(items[i].addr);
                free(q);
                if (addr_xtext_encode(items[i].addr, &x) == 0 &&
                    (addr_xtext_decode(x, &back) < 0 || strcmp(back, items[i].addr) != 0))
                        abort();
                free(x);
                free(back);
        }
        addr_header_items_free(items, n);
        return 0;
}
