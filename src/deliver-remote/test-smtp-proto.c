/* test-smtp-proto.c: unit tests of smtp-proto.c: reply reading (multi-line,
 * enhanced codes, malformed lines), EHLO keywords, next-hop syntax, the
 * header scan and the DATA encoder (CRLF, dot-stuffing, folding,
 * quoted-printable downgrade). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "smtp-proto.h"
#include "tests.h"

static int feed(SmtpReply *r, const char *line) {
        return smtp_reply_feed(r, line, strlen(line));
}

static void test_reply(void) {
        SmtpReply r = {0};

        CHECK_INT(feed(&r, "250 2.1.5 Ok"), 1);
        CHECK_INT(r.code, 250);
        CHECK_STR(r.dsn, "2.1.5");
        CHECK_STR(r.text, "250 2.1.5 Ok");
        smtp_reply_done(&r);

        CHECK_INT(feed(&r, "550-5.1.1 <x@example.net>: Recipient address rejected:"), 0);
        CHECK_INT(feed(&r, "550 5.1.1 User unknown"), 1);
        CHECK_STR(r.dsn, "5.1.1");
        CHECK_STR(r.text, "550 5.1.1 <x@example.net>: Recipient address rejected: User unknown");
        smtp_reply_done(&r);

        CHECK_INT(feed(&r, "220"), 1);
        CHECK_STR(r.text, "220");
        CHECK_STR(r.dsn, "");
        smtp_reply_done(&r);

        /* The class of the enhanced code must agree with the reply code. */
        CHECK_INT(feed(&r, "450 5.1.1 mixed"), 1);
        CHECK_STR(r.dsn, "");
        smtp_reply_done(&r);

        CHECK_INT(feed(&r, "25 short"), -EBADMSG);
        smtp_reply_done(&r);
        CHECK_INT(feed(&r, "250xtext"), -EBADMSG);
        smtp_reply_done(&r);
        CHECK_INT(feed(&r, "650 six"), -EBADMSG);
        smtp_reply_done(&r);
        CHECK_INT(feed(&r, "250-a"), 0);
        CHECK_INT(feed(&r, "251 b"), -EBADMSG);
        smtp_reply_done(&r);
}

static void test_features(void) {
        SmtpReply r = {0};
        SmtpFeatures f;

        feed(&r, "250-mx.example.net");
        feed(&r, "250-PIPELINING");
        feed(&r, "250-SIZE 10240000");
        feed(&r, "250-8BITMIME");
        feed(&r, "250-starttls");
        feed(&r, "250-DSN");
        CHECK_INT(feed(&r, "250 SMTPUTF8"), 1);
        smtp_features_parse(&r, &f);
        CHECK(f.pipelining && f.size && f.eightbitmime && f.starttls && f.dsn && f.smtputf8);
        CHECK_INT(f.size_limit, 10240000);
        CHECK(!f.enhancedstatuscodes);
        smtp_reply_done(&r);
}

static void test_nexthop(void) {
        Nexthop n;

        CHECK_INT(nexthop_parse("example.net", false, &n), 0);
        CHECK_STR(n.host, "example.net");
        CHECK(n.mx && !n.literal);
        CHECK_INT(n.port, 25);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("[mail.example.net]:587", false, &n), 0);
        CHECK_STR(n.host, "mail.example.net");
        CHECK(!n.mx);
        CHECK_INT(n.port, 587);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("[192.0.2.1]", false, &n), 0);
        CHECK(n.literal && !n.mx);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("[ipv6:2001:db8::1]:smtp", false, &n), 0);
        CHECK_STR(n.host, "2001:db8::1");
        CHECK(n.literal);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("example.net:submission", false, &n), 0);
        CHECK(n.mx);
        CHECK_INT(n.port, 587);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("unix:private/dovecot-lmtp", true, &n), 0);
        CHECK_INT(n.kind, NEXTHOP_UNIX);
        CHECK_STR(n.path, "private/dovecot-lmtp");
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("inet:127.0.0.1:2424", true, &n), 0);
        CHECK_STR(n.host, "127.0.0.1");
        CHECK_INT(n.port, 2424);
        CHECK(!n.mx);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("lmtp.example.net", true, &n), 0);
        CHECK_INT(n.port, 24);
        CHECK(!n.mx);
        nexthop_done(&n);

        CHECK_INT(nexthop_parse("", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("[]", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("[host", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("host:0", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("host:99999", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("bad host", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("2001:db8::1", false, &n), -EINVAL);
        CHECK_INT(nexthop_parse("unix:", true, &n), -EINVAL);
}

static void test_headers(void) {
        SmtpHeaderInfo h;
        const char *m = "Received: from a\n\tby b\nReceived: from c\nContent-Type: text/plain; "
                        "charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nbody Received: x\n";

        smtp_headers_scan(m, strlen(m), &h);
        CHECK_INT(h.received, 2);
        CHECK(h.content_type_text && !h.content_type_composite && h.cte_identity);
        CHECK(!h.mime_version && !h.headers_8bit);

        m = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=x\nSubject: \xc3\xa9\n\n";
        smtp_headers_scan(m, strlen(m), &h);
        CHECK(h.mime_version && h.content_type_composite && !h.content_type_text && h.headers_8bit);
}

static void check_encode(const char *in, size_t limit, bool downgrade, const char *expected) {
        SmtpEncoder e;
        StrBuf out = {0};

        smtp_encoder_init(&e, limit, downgrade, downgrade);
        /* Byte by byte: the encoder must not care how content is chunked. */
        for (const char *p = in; *p; p++)
                CHECK_INT(smtp_encoder_feed(&e, p, 1, &out), 0);
        CHECK_INT(smtp_encoder_finish(&e, &out), 0);
        CHECK_STR(out.data, expected);
        smtp_encoder_done(&e);
        strbuf_done(&out);
}

static void test_encoder(void) {
        check_encode("Subject: x\n\n.hidden\nline\n", 998, false,
                     "Subject: x\r\n\r\n..hidden\r\nline\r\n.\r\n");
        check_encode("Subject: x\n\nno newline", 998, false,
                     "Subject: x\r\n\r\nno newline\r\n.\r\n");
        check_encode("Subject: abcdefgh\n\n0123456789.abc\n", 10, false,
                     "Subject: a\r\n bcdefgh\r\n\r\n0123456789\r\n..abc\r\n.\r\n");
        check_encode("Subject: x\nContent-Transfer-Encoding: 8bit\n\ncaf\xc3\xa9 = ok \n.\n", 998,
                     true,
                     "Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: "
                     "quoted-printable\r\n\r\ncaf=C3=A9 =3D ok=20\r\n=2E\r\n.\r\n");
}

static void test_xtext(void) {
        StrBuf b = {0};
        CHECK_INT(smtp_xtext_append(&b, "a+b=c d@example.net"), 0);
        CHECK_STR(b.data, "a+2Bb+3Dc+20d@example.net");
        strbuf_done(&b);
}

TEST_MAIN(test_reply, test_features, test_nexthop, test_headers, test_encoder, test_xtext)
