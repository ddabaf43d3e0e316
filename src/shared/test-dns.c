/* test-dns.c: unit tests of dns.c that need no DNS server: reverse names
 * for PTR and DNSBL queries, type names, resolver set-up with good and bad
 * server lists, and a lookup against a closed local port failing as a
 * temporary error (never "not found"), and the hosts file readers. Lookups against a real server are
 * covered by tests/test_deliver_remote.py with dnsmasq. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
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

TEST_MAIN(test_reverse_name, test_resolver, test_hosts_file)
