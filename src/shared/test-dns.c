/* test-dns.c: unit tests of dns.c that need no DNS server: reverse names
 * for PTR and DNSBL queries, type names, resolver set-up with good and bad
 * server lists, and a lookup against a closed local port failing as a
 * temporary error (never "not found"), the hosts file readers, and the
 * raw answer parser (rcodes, the AD bit, TLSA records) on hand-made
 * messages, and the queries on the wire (random IDs, the AD bit only with
 * dnssec) against a UDP socket that answers them. Lookups against a real server are covered by
 * tests/test_deliver_remote.py with dnsmasq and tests/test_dane.py with a
 * validating unbound. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "macro.h"
#include "tests.h"

static void test_reverse_name(void) {
        InetAddr a;
        char *n;

        CHECK(inet_addr_parse("192.0.2.1", &a) == 0);
        n = dns_reverse_name(&a, NULL);
        CHECK_STR(n, "1.2.0.192.in-addr.arpa");
        free(n);
        n = dns_reverse_name(&a, "zen.example.org");
        CHECK_STR(n, "1.2.0.192.zen.example.org");
        free(n);
        CHECK(inet_addr_parse("2001:db8::1", &a) == 0);
        n = dns_reverse_name(&a, NULL);
        CHECK_STR(n, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
        free(n);
        CHECK_STR(dns_type_to_string(DNS_TYPE_MX), "MX");
        CHECK_STR(dns_type_to_string(DNS_TYPE_AAAA), "AAAA");
}

static int result = 1;

static void on_answer(DnsQuery *q, int r, const DnsAnswer *a, void *userdata) {
        sd_event *e = userdata;
        result = r;
        CHECK(a->error != NULL);
        sd_event_exit(e, 0);
}

static void test_resolver(void) {
        sd_event *e = NULL;
        DnsResolver *r = NULL;
        DnsQuery *q = NULL;

        CHECK(sd_event_new(&e) >= 0);
        CHECK_INT(dns_resolver_new(e, "not an address", 0, 0, &r), -EINVAL);
        /* Nothing listens on port 9 of loopback: refused, a temporary error. */
        CHECK_INT(dns_resolver_new(e, "127.0.0.1:9", 200, 1, &r), 0);
        CHECK_INT(dns_query(r, "", DNS_TYPE_A, on_answer, e, NULL), -EINVAL);
        CHECK_INT(dns_query(r, "example.net.", DNS_TYPE_MX, on_answer, e, &q), 0);
        CHECK(dns_resolver_pending(r) <= 1);
        if (dns_resolver_pending(r) > 0)
                CHECK(sd_event_loop(e) >= 0);
        CHECK_INT(result, -EAGAIN);
        r = dns_resolver_free(r);

        /* A server that never answers (a bound UDP socket nobody reads): a
         * cancelled query never calls back, and freeing the resolver with
         * queries in flight calls nobody either. */
        {
                struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                socklen_t len = sizeof(sa);
                char servers[64];
                int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                CHECK(fd >= 0);
                CHECK(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
                CHECK(getsockname(fd, (struct sockaddr *) &sa, &len) == 0);
                snprintf(servers, sizeof(servers), "127.0.0.1:%u", ntohs(sa.sin_port));
                /* The first loop has exited: a fresh one. */
                e = sd_event_unref(e);
                CHECK(sd_event_new(&e) >= 0);
                CHECK_INT(dns_resolver_new(e, servers, 5000, 1, &r), 0);
                result = 1;
                CHECK_INT(dns_query(r, "example.org", DNS_TYPE_A, on_answer, e, &q), 0);
                q = dns_query_cancel(q);
                CHECK_INT(dns_query(r, "example.com", DNS_TYPE_TXT, on_answer, e, NULL), 0);
                CHECK_INT(dns_resolver_pending(r), 2);
                CHECK(sd_event_run(e, 100000) >= 0);
                r = dns_resolver_free(r);
                CHECK_INT(result, 1);
                close(fd);
        }
        sd_event_unref(e);
}

static void test_hosts_file(void) {
        char path[] = "/tmp/test-dns-hosts.XXXXXX";
        InetAddr a, *addrs = NULL;
        char *name = NULL;
        FILE *f;
        int fd;

        fd = mkstemp(path);
        CHECK(fd >= 0);
        f = fdopen(fd, "w");
        CHECK(f != NULL);
        fputs("# comment 192.0.2.9 commented.example\n"
              "127.0.0.1\tlocalhost\n"
              "192.0.2.1 first.example alias.example # trailing\n"
              "192.0.2.1 second.example\n"
              "not-an-address bogus.example\n"
              "192.0.2.7\n"
              "2001:db8::1 first.example\n"
              "192.0.2.2 First.Example.\n", f);
        fclose(f);

        CHECK(inet_addr_parse("192.0.2.1", &a) == 0);
        CHECK_INT(dns_hosts_name(path, &a, &name), 1);
        CHECK_STR(name, "first.example");
        free(name);
        CHECK(inet_addr_parse("127.0.0.1", &a) == 0);
        CHECK_INT(dns_hosts_name(path, &a, &name), 1);
        CHECK_STR(name, "localhost");
        free(name);
        CHECK(inet_addr_parse("192.0.2.7", &a) == 0);           /* no name */
        CHECK_INT(dns_hosts_name(path, &a, &name), 0);
        CHECK(inet_addr_parse("192.0.2.9", &a) == 0);           /* commented out */
        CHECK_INT(dns_hosts_name(path, &a, &name), 0);

        CHECK_INT(dns_hosts_addrs(path, "first.example.", AF_INET, &addrs), 2);
        CHECK(inet_addr_parse("192.0.2.1", &a) == 0);
        CHECK(memcmp(addrs[0].bytes, a.bytes, 4) == 0);
        CHECK(inet_addr_parse("192.0.2.2", &a) == 0);
        CHECK(memcmp(addrs[1].bytes, a.bytes, 4) == 0);
        free(addrs);
        CHECK_INT(dns_hosts_addrs(path, "FIRST.example", AF_INET6, &addrs), 1);
        CHECK(addrs[0].family == AF_INET6);
        free(addrs);
        CHECK_INT(dns_hosts_addrs(path, "alias.example", AF_INET, &addrs), 1);
        free(addrs);
        CHECK_INT(dns_hosts_addrs(path, "bogus.example", AF_INET, &addrs), 0);
        CHECK(addrs == NULL);
        CHECK_INT(dns_hosts_addrs(path, "first", AF_INET, &addrs), 0);
        unlink(path);
        /* A missing file is an empty one. */
        CHECK_INT(dns_hosts_name(path, &a, &name), 0);
        CHECK_INT(dns_hosts_addrs(path, "first.example", AF_INET, &addrs), 0);
}

/* A response to "_25._tcp.mx.example. IN TLSA": header with the given
 * flags (third and fourth byte) and answer count, the question, then the
 * answer records appended by the caller. */
static size_t tlsa_message(uint8_t *buf, uint8_t flags3, uint8_t flags4, unsigned an) {
        static const uint8_t q[] = {3, '_', '2', '5', 4, '_', 't', 'c', 'p', 2, 'm', 'x',
                                    7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 52, 0, 1};
        uint8_t h[12] = {0x12, 0x34, flags3, flags4, 0, 1, 0, (uint8_t) an, 0, 0, 0, 0};
        memcpy(buf, h, sizeof(h));
        memcpy(buf + 12, q, sizeof(q));
        return sizeof(h) + sizeof(q);
}

static size_t rr(uint8_t *buf, unsigned type, const uint8_t *rdata, size_t rdlen) {
        /* The owner is a pointer to the question name at offset 12. */
        uint8_t h[12] = {0xc0, 12, (uint8_t) (type >> 8), (uint8_t) type, 0, 1, 0, 0, 0x0e, 0x10,
                         0, (uint8_t) rdlen};
        memcpy(buf, h, sizeof(h));
        memcpy(buf + sizeof(h), rdata, rdlen);
        return sizeof(h) + rdlen;
}

static void test_answer_parse(void) {
        uint8_t buf[512];
        uint8_t tlsa1[] = {3, 1, 1, 0xde, 0xad, 0xbe, 0xef};
        uint8_t tlsa2[] = {2, 0, 1, 0x01};
        uint8_t cname[] = {2, 'x', 'y', 0};
        DnsAnswer a = {.type = DNS_TYPE_TLSA};
        size_t n;

        /* NOERROR, RD RA AD: a CNAME, then two TLSA records. */
        n = tlsa_message(buf, 0x81, 0xa0, 3);
        n += rr(buf + n, 5, cname, sizeof(cname));
        n += rr(buf + n, 52, tlsa1, sizeof(tlsa1));
        n += rr(buf + n, 52, tlsa2, sizeof(tlsa2));
        CHECK_INT(dns_answer_parse(buf, n, &a), 2);
        CHECK(a.secure);
        CHECK(!a.nxdomain);
        CHECK_INT(a.records[0].usage, 3);
        CHECK_INT(a.records[0].selector, 1);
        CHECK_INT(a.records[0].mtype, 1);
        CHECK_INT((int) a.records[0].data_len, 4);
        CHECK(memcmp(a.records[0].data, tlsa1 + 3, 4) == 0);
        CHECK_INT((int) a.records[0].ttl, 3600);
        CHECK_INT(a.records[1].usage, 2);
        CHECK_INT(a.records[1].selector, 0);
        CHECK_INT((int) a.records[1].data_len, 1);
        dns_answer_done(&a);

        /* The same without AD: insecure. */
        a = (DnsAnswer) {.type = DNS_TYPE_TLSA};
        n = tlsa_message(buf, 0x81, 0x80, 1);
        n += rr(buf + n, 52, tlsa1, sizeof(tlsa1));
        CHECK_INT(dns_answer_parse(buf, n, &a), 1);
        CHECK(!a.secure);
        /* Cut short inside the record: malformed, no records kept. */
        dns_answer_done(&a);
        a = (DnsAnswer) {.type = DNS_TYPE_TLSA};
        CHECK_INT(dns_answer_parse(buf, n - 2, &a), -EBADMSG);
        CHECK_INT((int) a.n_records, 0);
        /* An rdata too short for TLSA. */
        n = tlsa_message(buf, 0x81, 0xa0, 1);
        n += rr(buf + n, 52, tlsa1, 2);
        CHECK_INT(dns_answer_parse(buf, n, &a), -EBADMSG);
        /* A name with a reserved label type. */
        n = tlsa_message(buf, 0x81, 0xa0, 1);
        buf[n] = 0x80;
        CHECK_INT(dns_answer_parse(buf, n + 12, &a), -EBADMSG);
        CHECK_INT(dns_answer_parse(buf, 5, &a), -EBADMSG);

        /* Secure NXDOMAIN and NODATA. */
        a = (DnsAnswer) {.type = DNS_TYPE_TLSA};
        n = tlsa_message(buf, 0x81, 0xa3, 0);
        CHECK_INT(dns_answer_parse(buf, n, &a), 0);
        CHECK(a.nxdomain && a.secure);
        a = (DnsAnswer) {.type = DNS_TYPE_TLSA};
        n = tlsa_message(buf, 0x81, 0xa0, 0);
        CHECK_INT(dns_answer_parse(buf, n, &a), 0);
        CHECK(!a.nxdomain && a.secure);
        /* Only a CNAME: NODATA too. */
        a = (DnsAnswer) {.type = DNS_TYPE_TLSA};
        n = tlsa_message(buf, 0x81, 0x80, 1);
        n += rr(buf + n, 5, cname, sizeof(cname));
        CHECK_INT(dns_answer_parse(buf, n, &a), 0);
        /* SERVFAIL (what a validator answers for bogus data), REFUSED:
         * temporary; FORMERR: malformed. */
        n = tlsa_message(buf, 0x81, 0x82, 0);
        CHECK_INT(dns_answer_parse(buf, n, &a), -EAGAIN);
        n = tlsa_message(buf, 0x81, 0x85, 0);
        CHECK_INT(dns_answer_parse(buf, n, &a), -EAGAIN);
        n = tlsa_message(buf, 0x81, 0x81, 0);
        CHECK_INT(dns_answer_parse(buf, n, &a), -EBADMSG);

        /* An MX answer goes through c-ares' parser. */
        {
                static const uint8_t q[] = {2, 'm', 'x', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e',
                                            0, 0, 15, 0, 1};
                uint8_t mx[] = {0, 10, 2, 'm', '1', 0xc0, 12};
                uint8_t h[12] = {0, 1, 0x81, 0xa0, 0, 1, 0, 1, 0, 0, 0, 0};
                memcpy(buf, h, sizeof(h));
                memcpy(buf + 12, q, sizeof(q));
                n = 12 + sizeof(q);
                n += rr(buf + n, 15, mx, sizeof(mx));
                a = (DnsAnswer) {.type = DNS_TYPE_MX};
                CHECK_INT(dns_answer_parse(buf, n, &a), 1);
                CHECK(a.secure);
                CHECK_STR(a.records[0].name, "m1.mx.example");
                CHECK_INT((int) a.records[0].preference, 10);
                dns_answer_done(&a);
        }
        CHECK_STR(dns_type_to_string(DNS_TYPE_TLSA), "TLSA");
}

static int got = -100;
static bool got_secure;
static unsigned got_usage;

static void on_tlsa_answer(DnsQuery *q, int r, const DnsAnswer *a, void *userdata) {
        got = r;
        got_secure = a->secure;
        got_usage = r > 0 ? a->records[0].usage : 0;
}

/* Reads one query from fd, checks its flags and answers it with one TLSA
 * record and the AD bit set. Returns the query ID. */
static unsigned answer_query(int fd, bool want_ad) {
        uint8_t buf[512];
        uint8_t tlsa[] = {3, 1, 1, 0xab};
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(fd, buf, sizeof(buf) - 64, 0, (struct sockaddr *) &from, &flen);
        size_t len;

        CHECK(n > 12);
        CHECK(buf[2] & 0x01);                           /* RD */
        CHECK(!!(buf[3] & 0x20) == want_ad);            /* AD */
        CHECK_INT(buf[5], 1);
        buf[2] |= 0x80;                                 /* QR */
        buf[3] = 0xa0;                                  /* RA AD, NOERROR */
        buf[7] = 1;
        len = (size_t) n + rr(buf + n, 52, tlsa, sizeof(tlsa));
        CHECK(sendto(fd, buf, len, 0, (struct sockaddr *) &from, flen) == (ssize_t) len);
        return (unsigned) buf[0] << 8 | buf[1];
}

static void test_query_header(void) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        struct timeval tv = {.tv_sec = 5};
        char servers[64];
        unsigned ids[3];
        sd_event *e = NULL;
        DnsResolver *r = NULL;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        CHECK(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        CHECK(getsockname(fd, (struct sockaddr *) &sa, &len) == 0);
        CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0);
        snprintf(servers, sizeof(servers), "127.0.0.1:%u", ntohs(sa.sin_port));
        CHECK(sd_event_new(&e) >= 0);
        CHECK_INT(dns_resolver_new(e, servers, 5000, 1, &r), 0);

        for (int dnssec = 1; dnssec >= 0; dnssec--) {
                dns_resolver_set_dnssec(r, dnssec);
                for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                        got = -100;
                        CHECK_INT(dns_query(r, "_25._tcp.mx.example", DNS_TYPE_TLSA,
                                            on_tlsa_answer, NULL, NULL), 0);
                        ids[i] = answer_query(fd, dnssec);
                        for (int k = 0; k < 50 && got == -100; k++)
                                CHECK(sd_event_run(e, 100000) >= 0);
                        CHECK_INT(got, 1);
                        CHECK_INT((int) got_usage, 3);
                        /* The AD bit counts only when it was asked for. */
                        CHECK(got_secure == !!dnssec);
                }
                /* Random IDs: three equal ones are a 2^-32 chance. */
                CHECK(ids[0] != ids[1] || ids[1] != ids[2]);
        }
        r = dns_resolver_free(r);
        sd_event_unref(e);
        close(fd);
}

TEST_MAIN(test_reverse_name, test_resolver, test_hosts_file, test_answer_parse, test_query_header)
