/* fuzz-dns-answer.c: libFuzzer target for what a DNS server (or anyone who
 * can spoof its answers) controls: dns_answer_parse() on a raw answer. The
 * first byte picks the record type asked for, the rest is the message. */
#include <stdint.h>
#include <string.h>

#include "dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const DnsType types[] = {
                DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX, DNS_TYPE_TXT, DNS_TYPE_PTR, DNS_TYPE_TLSA,
        };
        DnsAnswer a = {0};
        int r;

        if (size < 1)
                return 0;
        a.name = "fuzz.example";
        a.type = types[data[0] % (sizeof(types) / sizeof(types[0]))];
        r = dns_answer_parse(data + 1, size - 1, &a);
        if (r > 0)
                for (size_t i = 0; i < a.n_records; i++) {
                        const DnsRecord *rec = &a.records[i];
                        /* Touch what the callers read. */
                        if (rec->name)
                                (void) strlen(rec->name);
                        if (rec->text)
                                (void) strlen(rec->text);
                        if (rec->data_len)
                                (void) memchr(rec->data, 0, rec->data_len);
                }
        dns_answer_done(&a);
        return 0;
}
