/* test-addr.c: RFC 5321 path parsing: brackets, null sender, source routes,
 * quoted local parts, IP literals, trailing dots, 8-bit addresses, xtext. */
#include <errno.h>

#include "addr.h"
#include "cleanup.h"
#include "macro.h"
#include "strutil.h"
#include "tests.h"

static void check_ok(const char *in, unsigned pflags, const char *want, unsigned want_flags,
                     const char *want_rest) {
        _cleanup_free_ char *a = NULL;
        unsigned flags = 99;
        const char *rest = NULL;
        int r = addr_parse_path(in, pflags, &a, &flags, &rest);
        CHECK_INT(r, 0);
        if (r < 0) {
                fprintf(stderr, "  input: %s\n", in);
                return;
        }
        CHECK_STR(a, want);
        CHECK_INT(flags, want_flags);
        CHECK_STR(rest, want_rest);
}

static void check_fail(const char *in, unsigned pflags, int want) {
        _cleanup_free_ char *a = NULL;
        int r = addr_parse_path(in, pflags, &a, NULL, NULL);
        CHECK_INT(r, want);
        if (r != want)
                fprintf(stderr, "  input: %s\n", in);
}

static void test_basic(void) {
        check_ok("<user@example.com>", 0, "user@example.com", 0, "");
        check_ok("  <user@example.com> SIZE=10", 0, "user@example.com", 0, " SIZE=10");
        check_ok("user@example.com", 0, "user@example.com", 0, "");
        check_ok("user@example.com BODY=8BITMIME", 0, "user@example.com", 0, " BODY=8BITMIME");
        check_ok("<>", ADDR_PARSE_ALLOW_EMPTY, "", 0, "");
        check_ok("<> SIZE=1", ADDR_PARSE_ALLOW_EMPTY, "", 0, " SIZE=1");
        check_ok("<Postmaster>", 0, "Postmaster", ADDR_FLAG_NO_DOMAIN, "");
        check_ok("<a.b+tag@sub.example.org>", 0, "a.b+tag@sub.example.org", 0, "");
        check_ok("<a..b@x.example>", 0, "a..b@x.example", 0, "");
        check_fail("<>", 0, -EINVAL);
        check_fail("", ADDR_PARSE_ALLOW_EMPTY, -EINVAL);
        check_fail("<user@example.com", 0, -EINVAL);
        check_fail("<user@example.com>x", 0, -EINVAL);
        check_fail("user@example.com", ADDR_PARSE_STRICT, -EINVAL);
        check_fail("<@example.com>", 0, -EINVAL);
        check_fail("<user@>", 0, -EINVAL);
        check_fail("<user@exa mple.com>", 0, -EINVAL);
        check_fail("<us(er@example.com>", 0, -EINVAL);
        check_fail("<user@exam..ple.com>", 0, -EINVAL);
        check_fail("<user@example.com..>", 0, -EINVAL);
        check_fail("<a<b@example.com>", 0, -EINVAL);
        check_fail("<us\001er@example.com>", 0, -EINVAL);
}

static void test_route_and_dot(void) {
        check_ok("<@relay.example:user@example.com>", 0, "user@example.com", 0, "");
        check_ok("<@a.example,@b.example:user@example.com>", 0, "user@example.com", 0, "");
        check_ok("<user@example.com.>", 0, "user@example.com", 0, "");
        check_fail("<@a.example,b.example:user@example.com>", 0, -EINVAL);
        check_fail("<@:user@example.com>", 0, -EINVAL);
}

static void test_quoted(void) {
        check_ok("<\"john\"@example.com>", 0, "john@example.com", 0, "");
        check_ok("<\"john doe\"@example.com>", 0, "\"john doe\"@example.com", 0, "");
        check_ok("<\"a@b\"@example.com>", 0, "\"a@b\"@example.com", 0, "");
        check_ok("<\"a\\\"b\"@example.com>", 0, "\"a\\\"b\"@example.com", 0, "");
        check_ok("<\"a>b\"@example.com> X=1", 0, "\"a>b\"@example.com", 0, " X=1");
        check_ok("\"a b\"@example.com SIZE=1", 0, "\"a b\"@example.com", 0, " SIZE=1");
        check_fail("<\"unterminated@example.com>", 0, -EINVAL);
        check_fail("<\"a\"b@example.com>", 0, -EINVAL);
}

static void test_literal(void) {
        check_ok("<user@[192.0.2.1]>", 0, "user@[192.0.2.1]", ADDR_FLAG_IP_LITERAL, "");
        check_ok("<user@[IPv6:2001:db8::1]>", 0, "user@[IPv6:2001:db8::1]", ADDR_FLAG_IP_LITERAL, "");
        check_fail("<user@[192.0.2.300]>", 0, -EINVAL);
        check_fail("<user@[2001:db8::1]>", 0, -EINVAL);
        check_fail("<user@[x]>", 0, -EINVAL);
}

static void test_8bit(void) {
        check_fail("<j\xc3\xb6rg@example.com>", 0, -EINVAL);
        check_ok("<j\xc3\xb6rg@example.com>", ADDR_PARSE_ALLOW_8BIT, "j\xc3\xb6rg@example.com",
                 ADDR_FLAG_8BIT, "");
        check_ok("<user@b\xc3\xbc" "cher.example>", ADDR_PARSE_ALLOW_8BIT,
                 "user@b\xc3\xbc" "cher.example", ADDR_FLAG_8BIT, "");
        CHECK(addr_has_8bit("a\x80"));
        CHECK(!addr_has_8bit("abc"));
}

static void test_long(void) {
        char buf[400];
        memset(buf, 'a', sizeof(buf));
        buf[0] = '<';
        memcpy(buf + 300, "@example.com>", 14);
        check_fail(buf, 0, -E2BIG);
}

static void test_domain_helpers(void) {
        CHECK_STR(addr_domain("user@example.com"), "example.com");
        CHECK_STR(addr_domain("\"a@b\"@example.com"), "example.com");
        CHECK(addr_domain("postmaster") == NULL);
        CHECK(addr_domain_valid("example.com.", 12, false));
        CHECK(!addr_domain_valid(".example.com", 12, false));
}

static void test_xtext(void) {
        _cleanup_free_ char *a = NULL;
        CHECK_INT(addr_xtext_decode("rfc822;a+2Bb@x", &a), 0);
        CHECK_STR(a, "rfc822;a+b@x");
        CHECK(!addr_xtext_valid("a+2g"));
        CHECK(!addr_xtext_valid("a b"));
        CHECK(!addr_xtext_valid("a="));
        CHECK(addr_xtext_valid("QQ314159"));
}

static void test_xtext_encode(void) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        CHECK_INT(addr_xtext_encode("a+b=c d@x", &a), 0);
        CHECK_STR(a, "a+2Bb+3Dc+20d@x");
        CHECK_INT(addr_xtext_decode(a, &b), 0);
        CHECK_STR(b, "a+b=c d@x");
}

static void test_quote_local(void) {
        _cleanup_free_ char *a = addr_quote_local("john.doe@example.com"),
                            *b = addr_quote_local("john doe@example.com"),
                            *c = addr_quote_local("a\"b@x"), *d = addr_quote_local("a..b@x"),
                            *e = addr_quote_local("user");
        CHECK_STR(a, "john.doe@example.com");
        CHECK_STR(b, "\"john doe\"@example.com");
        CHECK_STR(c, "\"a\\\"b\"@x");
        CHECK_STR(d, "\"a..b\"@x");
        CHECK_STR(e, "user");
}

/* Parses value and renders "addr[start,len]" items joined by "|", or the
 * error code. */
static void check_hdr(const char *value, const char *want) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        AddrHeaderItem *items = NULL;
        size_t n = 0;
        int r = addr_header_parse(value, strlen(value), &items, &n);
        if (r < 0)
                (void) strbuf_printf(&b, "error %d", r);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                CHECK_INT(strncmp(value + items[i].start, items[i].addr, 0), 0);
                (void) strbuf_printf(&b, "%s%s=%.*s", i ? "|" : "", items[i].addr,
                                     (int) items[i].len, value + items[i].start);
        }
        addr_header_items_free(items, n);
        CHECK_STR(strempty(b.data), want);
        if (!streq(strempty(b.data), want))
                fprintf(stderr, "  input: %s\n", value);
}

static void test_header_list(void) {
        check_hdr(" user@example.com", "user@example.com=user@example.com");
        check_hdr(" John Doe <john@example.com>, \"Doe, Jane\" <jane@example.com>",
                  "john@example.com=john@example.com|jane@example.com=jane@example.com");
        check_hdr(" john@example.com (John Doe)", "john@example.com=john@example.com");
        check_hdr(" \"john doe\"@example.com", "john doe@example.com=\"john doe\"@example.com");
        check_hdr(" (c) <a@b.example> (d),\n\tc@d.example",
                  "a@b.example=a@b.example|c@d.example=c@d.example");
        check_hdr(" friends: a@x.example, B <b@y.example>;, c@z.example",
                  "a@x.example=a@x.example|b@y.example=b@y.example|c@z.example=c@z.example");
        check_hdr(" undisclosed-recipients:;", "");
        check_hdr(" <@relay.example:user@example.com>", "user@example.com=user@example.com");
        check_hdr(" user", "user=user");
        check_hdr(" a@[192.0.2.1]", "a@[192.0.2.1]=a@[192.0.2.1]");
        check_hdr(" <>", "");
        check_hdr(" a@x.example,", "a@x.example=a@x.example");
        /* A comment inside the addr-spec: the address is left alone. */
        check_hdr(" a(c)@x.example, b@y.example", "b@y.example=b@y.example");
        check_hdr(" John Smith", "error -22");
        check_hdr(" <a@x.example", "error -22");
        check_hdr(" a@x.example>", "error -22");
        check_hdr(" \"unterminated@x", "error -22");
        check_hdr(" (unterminated a@x", "error -22");
        check_hdr(" a@", "error -22");
        check_hdr(" @x.example", "error -22");
        check_hdr(" a@x.example; b@y", "error -22");
        check_hdr(" g: a@x, h: b@y;", "error -22");
}

TEST_MAIN(test_basic, test_route_and_dot, test_quoted, test_literal, test_8bit, test_long,
          test_domain_helpers, test_xtext, test_xtext_encode, test_quote_local, test_header_list)
