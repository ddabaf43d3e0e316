/* test-inet.c: unit tests for inet.c: address and prefix parsing, the
 * error classes cidr: tables report, formatting and matching. */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

#include "inet.h"
#include "macro.h"
#include "strutil.h"
#include "tests.h"

static void test_addr_parse(void) {
        InetAddr a;

        CHECK_INT(inet_addr_parse("192.0.2.1", &a), 0);
        CHECK_INT(a.family, AF_INET);
        CHECK_INT(a.bytes[0], 192);
        CHECK_INT(a.bytes[3], 1);
        CHECK_INT(inet_addr_parse("2001:DB8::1", &a), 0);
        CHECK_INT(a.family, AF_INET6);
        CHECK_INT(a.bytes[3], 0xb8);
        CHECK_INT(a.bytes[15], 1);
        CHECK_INT(inet_addr_parse("::ffff:10.0.0.1", &a), 0);
        CHECK(inet_addr_unmap_v4(&a, &a));
        CHECK_INT(a.family, AF_INET);
        CHECK_INT(a.bytes[0], 10);

        CHECK_INT(inet_addr_parse("", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("10.1", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("010.0.0.1", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("300.1.1.1", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("[10.0.0.1]", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("fe80::1%eth0", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("example.com", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("1:2:3:4:5:6:7:8:9", &a), -EINVAL);
        CHECK_INT(inet_addr_parse("0000000000000000000000000000000000000000000000000000000000000000001::", &a),
                  -EINVAL);

        CHECK_INT(inet_addr_parse_bracketed("[::1]", &a), 0);
        CHECK_INT(a.family, AF_INET6);
        CHECK_INT(inet_addr_parse_bracketed("[192.0.2.1]", &a), 0);
        CHECK_INT(a.family, AF_INET);
        CHECK_INT(inet_addr_parse_bracketed("::1", &a), 0);
        CHECK_INT(inet_addr_parse_bracketed("[::1", &a), -EINVAL);
        CHECK_INT(inet_addr_parse_bracketed("[]", &a), -EINVAL);
}

static void check_prefix(const char *s, bool allow, int ret, InetPrefixError err,
                         const char *text) {
        InetPrefix p = {0};
        InetPrefixError e = _INET_PREFIX_ERROR_MAX;
        int r = inet_prefix_parse(s, allow, &p, &e);

        CHECK_INT(r, ret);
        CHECK_INT(e, err);
        if (text) {
                _cleanup_free_ char *f = inet_prefix_to_string(&p);
                CHECK_STR(f, text);
        }
}

static void test_prefix_parse(void) {
        check_prefix("192.0.2.0/24", false, 0, INET_PREFIX_OK, "192.0.2.0/24");
        check_prefix("192.0.2.7", false, 0, INET_PREFIX_OK, "192.0.2.7/32");
        check_prefix("0.0.0.0/0", false, 0, INET_PREFIX_OK, "0.0.0.0/0");
        check_prefix("1.2.3.0/024", false, 0, INET_PREFIX_OK, "1.2.3.0/24");
        check_prefix("2001:DB8::/32", false, 0, INET_PREFIX_OK, "2001:db8::/32");
        check_prefix("[2001:db8::]/32", false, 0, INET_PREFIX_OK, "2001:db8::/32");
        check_prefix("[2001:db8::/32]", false, 0, INET_PREFIX_OK, "2001:db8::/32");
        check_prefix("[::1]", false, 0, INET_PREFIX_OK, "::1/128");
        check_prefix("[192.0.2.1]/32", false, 0, INET_PREFIX_OK, "192.0.2.1/32");
        check_prefix("::/0", false, 0, INET_PREFIX_OK, "::/0");

        /* Host bits: an error unless allowed, and the cleared network comes back. */
        check_prefix("192.168.1.5/24", false, -EINVAL, INET_PREFIX_HOST_BITS, "192.168.1.0/24");
        check_prefix("192.168.1.5/24", true, 0, INET_PREFIX_OK, "192.168.1.0/24");
        check_prefix("1.1.1.1/0", false, -EINVAL, INET_PREFIX_HOST_BITS, "0.0.0.0/0");
        check_prefix("2001:db8::1/33", false, -EINVAL, INET_PREFIX_HOST_BITS, "2001:db8::/33");
        check_prefix("10.0.0.129/25", true, 0, INET_PREFIX_OK, "10.0.0.128/25");

        check_prefix("", false, -EINVAL, INET_PREFIX_EMPTY, NULL);
        check_prefix("300.1.1.1", false, -EINVAL, INET_PREFIX_BAD_ADDRESS, NULL);
        check_prefix("novalue", false, -EINVAL, INET_PREFIX_BAD_ADDRESS, NULL);
        check_prefix("1.2.3.4/24/5", false, -EINVAL, INET_PREFIX_BAD_MASK, NULL);
        check_prefix("1.2.3.4/", false, -EINVAL, INET_PREFIX_BAD_MASK, NULL);
        check_prefix("1.2.3.4/+5", false, -EINVAL, INET_PREFIX_BAD_MASK, NULL);
        check_prefix("1.2.3.4/-1", false, -EINVAL, INET_PREFIX_BAD_MASK, NULL);
        check_prefix("/24", false, -EINVAL, INET_PREFIX_BAD_NETWORK, NULL);
        check_prefix("1.2.3.0/33", false, -EINVAL, INET_PREFIX_BAD_LENGTH, NULL);
        check_prefix("::1/129", false, -EINVAL, INET_PREFIX_BAD_LENGTH, NULL);
        check_prefix("1.2.3.0/99999999999999999999999", false, -EINVAL, INET_PREFIX_BAD_LENGTH,
                     NULL);
        check_prefix("[::1", false, -EINVAL, INET_PREFIX_MISSING_BRACKET, NULL);
        check_prefix("[::1]x", false, -EINVAL, INET_PREFIX_AFTER_BRACKET, NULL);
        check_prefix("[::1]/", false, -EINVAL, INET_PREFIX_BAD_MASK, NULL);
        check_prefix("[]/8", false, -EINVAL, INET_PREFIX_BAD_NETWORK, NULL);

        CHECK_STR(inet_prefix_error_to_string(INET_PREFIX_BAD_LENGTH), "bad mask length");
        CHECK_STR(inet_prefix_error_to_string(_INET_PREFIX_ERROR_MAX), "unknown error");
}

static bool contains(const char *prefix, const char *addr) {
        InetPrefix p;
        InetAddr a;

        if (inet_prefix_parse(prefix, false, &p, NULL) < 0 || inet_addr_parse(addr, &a) < 0)
                return false;
        return inet_prefix_contains(&p, &a);
}

static void test_contains(void) {
        CHECK(contains("192.168.1.0/24", "192.168.1.7"));
        CHECK(!contains("192.168.1.0/24", "192.168.2.7"));
        CHECK(contains("10.0.0.128/25", "10.0.0.200"));
        CHECK(!contains("10.0.0.128/25", "10.0.0.127"));
        CHECK(contains("0.0.0.0/0", "203.0.113.9"));
        CHECK(!contains("0.0.0.0/0", "::1"));
        CHECK(contains("::/0", "::1"));
        CHECK(contains("2001:db8::/32", "2001:db8:ffff::1"));
        CHECK(!contains("2001:db8::/32", "2001:db9::1"));
        CHECK(contains("2001:db8::/31", "2001:db9::1"));
        CHECK(contains("10.0.0.1", "10.0.0.1"));
        CHECK(!contains("10.0.0.1", "10.0.0.2"));
        /* A v4-mapped address is IPv6 until the caller unmaps it. */
        CHECK(!contains("10.0.0.0/8", "::ffff:10.0.0.1"));
}

static void test_format(void) {
        InetAddr a = {.family = AF_INET6};
        _cleanup_free_ char *s = inet_addr_to_string(&a);
        CHECK_STR(s, "::");
        a.family = 12345;
        CHECK(inet_addr_to_string(&a) == NULL);
        CHECK_INT(inet_family_bits(AF_INET), 32);
        CHECK_INT(inet_family_bits(AF_INET6), 128);
        CHECK_INT(inet_family_bits(0), 0);
}

TEST_MAIN(test_addr_parse, test_prefix_parse, test_contains, test_format)
