/* test-dns.c: unit tests of dns.c that need no DNS server: reverse names
 * for PTR and DNSBL queries, type names, resolver set-up with good and bad
 * server lists, and a lookup against a closed local port failing as a
 * temporary error (never "not found"). Lookups against a real server are
 * covered by tests/test_deliver_remote.py with dnsmasq. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>

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

TEST_MAIN(test_reverse_name, test_resolver)
