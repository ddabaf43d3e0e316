/* test-bounce-report.c: unit tests of bounce-report.c and
 * bounce-template.c. Reports are compared byte for byte with golden files
 * in $TESTDATA (report-*.eml), template files with their expected dump and
 * diagnostics (template-*.cf -> template-*.expected). GOLDEN_UPDATE=1
 * rewrites the expected files from the actual output (review the diff).
 * Runs with TZ=UTC so that dates are stable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounce-report.h"
#include "bounce-template.h"
#include "fileio.h"
#include "strutil.h"
#include "tests.h"

static char *testdata_path(const char *name) {
        const char *dir = getenv("TESTDATA");
        return strdup_printf("%s/%s", dir ? dir : "testdata", name);
}

static char *read_testdata(const char *name, size_t *ret_len) {
        _cleanup_free_ char *path = testdata_path(name);
        char *buf = NULL;
        int r = path ? file_read_all(path, 16 * 1024 * 1024, &buf, ret_len) : -ENOMEM;
        if (r < 0) {
                fprintf(stderr, "cannot read %s: %s\n", strempty(path), strerror(-r));
                CHECK(r >= 0);
                return NULL;
        }
        return buf;
}

static void golden_check(const char *expected, const char *actual) {
        _cleanup_free_ char *want = NULL;

        if (getenv("GOLDEN_UPDATE")) {
                _cleanup_free_ char *path = testdata_path(expected);
                CHECK(path && file_write_atomic(path, actual, strlen(actual), 0644) >= 0);
                return;
        }
        want = read_testdata(expected, NULL);
        if (!want)
                return;
        tests_run++;
        if (!streq(want, actual)) {
                tests_failed++;
                fprintf(stderr, "%s: output differs from the golden file; actual:\n%s\n",
                        expected, actual);
        }
}

static const char original[] =
        "Received: from client.example.org (client.example.org [192.0.2.10])\n"
        "\tby mx.example.test (postern) with ESMTP id 0ABCDE0001xyzXYZ\n"
        "\tfor <user@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\n"
        "From: Sender <sender@example.org>\n"
        "To: user@example.net\n"
        "Subject: Quarterly figures\n"
        "Message-ID: <m1@example.org>\n"
        "\n"
        "Hello,\n"
        "\n"
        "the figures are attached.\n";

static const char text[] =
        "This is the mail system at host mx.example.test.\n"
        "\n"
        "Your message could not be delivered.\n";

#define MX "mx.example.net[192.0.2.25]:25"

static BounceReport base_report(void) {
        return (BounceReport) {
                .kind = BOUNCE_KIND_FAILURE,
                .audience = BOUNCE_AUDIENCE_SENDER,
                .myhostname = "mx.example.test",
                .mail_name = "postern",
                .queue_id = "0ABCDF0002abcABC",
                .orig_queue_id = "0ABCDE0001xyzXYZ",
                .orig_sender = "sender@example.org",
                .to = "sender@example.org",
                .arrival = {.tv_sec = 1700000000, .tv_usec = 123456},
                .now_usec = 1700003600ULL * 1000000,
                .last_attempt_usec = 1700003500ULL * 1000000,
                .content = original,
                .content_size = sizeof(original) - 1,
                .ret = QUEUE_RET_NONE,
                .size_limit = 50000,
                .charset = "us-ascii",
                .from = "Mail Delivery System <MAILER-DAEMON@mx.example.test>",
                .subject = "Undelivered Mail Returned to Sender",
                .text = text,
        };
}

static void check_report(const BounceReport *r, const char *golden, BounceReportInfo *ret_info) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        BounceReportInfo info;
        int q = bounce_report_build(r, &out, &info);
        CHECK_INT(q, 0);
        if (q < 0)
                return;
        golden_check(golden, out.data);
        if (ret_info)
                *ret_info = info;
}

static void test_failure_remote(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "user@example.net",
                 .orcpt = "rfc822;user+2Btag@example.net",
                 .dsn = "5.1.1",
                 .diagnostic = "550 5.1.1 <user@example.net>: Recipient address rejected: "
                               "User unknown in virtual mailbox table (in reply to RCPT TO "
                               "command)",
                 .relay = MX},
                {.address = "other@example.net",
                 .orig = "alias@example.net",
                 .dsn = "5.2.2",
                 .diagnostic = "552 5.2.2 Mailbox full\r\nX-Injected: yes",
                 .relay = MX},
        };
        BounceReport r = base_report();
        BounceReportInfo info;

        r.rcpts = rcpts;
        r.n_rcpts = ELEMENTSOF(rcpts);
        r.envid = "QQ+2B314159";
        check_report(&r, "report-failure-remote.eml", &info);
        CHECK(info.full_message);
        CHECK(!info.truncated);
        CHECK(!info.eight_bit);
}

static void test_failure_local_hdrs(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "nobody@mx.example.test", .dsn = "5.1.1",
                 .diagnostic = "unknown user: \"nobody\""},
        };
        BounceReport r = base_report();
        BounceReportInfo info;

        r.rcpts = rcpts;
        r.n_rcpts = 1;
        rcpts[0].relay = "local";
        r.ret = QUEUE_RET_HDRS;
        check_report(&r, "report-failure-local-hdrs.eml", &info);
        CHECK(!info.full_message);
        CHECK(!info.truncated);
}

static void test_failure_too_big(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "user@example.net", .dsn = "4.4.7",
                 .diagnostic = "message expired after 5 days in the queue (connect to "
                               "mx.example.net[192.0.2.25]:25: Connection refused)"},
        };
        BounceReport r = base_report();
        BounceReportInfo info;

        r.rcpts = rcpts;
        r.n_rcpts = 1;
        rcpts[0].relay = "";
        r.size_limit = 100;     /* smaller than the original: headers only */
        check_report(&r, "report-failure-expired-truncated.eml", &info);
        CHECK(!info.full_message);
        CHECK(info.truncated);
}

static void test_delay(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "user@example.net", .dsn = "4.4.1",
                 .diagnostic = "connect to mx.example.net[192.0.2.25]:25: Connection timed out"},
        };
        BounceReport r = base_report();

        r.kind = BOUNCE_KIND_DELAY;
        r.rcpts = rcpts;
        r.n_rcpts = 1;
        rcpts[0].relay = "mx.example.net[192.0.2.25]:25";
        r.subject = "Delayed Mail (still being retried)";
        r.retry_until_usec = (1700000000ULL + 5 * 86400) * 1000000 + 123456;
        check_report(&r, "report-delay.eml", NULL);
}

static void test_success(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "user@mx.example.test", .dsn = "2.0.0",
                 .diagnostic = "delivered to maildir"},
        };
        BounceReport r = base_report();
        BounceReportInfo info;

        r.kind = BOUNCE_KIND_SUCCESS;
        r.rcpts = rcpts;
        r.n_rcpts = 1;
        rcpts[0].relay = "local";
        r.ret = QUEUE_RET_FULL;         /* RET is about failures only */
        r.subject = "Successful Mail Delivery Report";
        check_report(&r, "report-success.eml", &info);
        CHECK(!info.full_message);
}

static void test_postmaster_copy(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "user@example.net", .dsn = "5.7.1",
                 .diagnostic = "554 5.7.1 Relay access denied", .relay = MX},
        };
        BounceReport r = base_report();
        BounceReportInfo info;

        r.audience = BOUNCE_AUDIENCE_POSTMASTER;
        r.to = "postmaster@mx.example.test";
        r.subject = "Postmaster Copy: Undelivered Mail";
        r.rcpts = rcpts;
        r.n_rcpts = 1;
        r.ret = QUEUE_RET_FULL;
        check_report(&r, "report-postmaster-copy.eml", &info);
        CHECK(!info.full_message);
}

static void test_double_bounce_8bit(void) {
        static const char bounce[] =
                "Received: by mx.example.test (postern)\n\tid 0ABCDE0001xyzXYZ\n"
                "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\n"
                "Subject: Undelivered Mail Returned to Sender\n"
                "\n"
                "Gr\xc3\xbc\xc3\x9f""e --0ABCDF0002abcABC.1700003600/mx.example.test\n";
        BounceReportRcpt rcpts[] = {
                {.address = "j\xc3\xb6rg@example.org", .dsn = "5.1.1",
                 .diagnostic = "550 5.1.1 no such user \xff", .relay = MX},
        };
        BounceReport r = base_report();
        BounceReportInfo info;

        r.audience = BOUNCE_AUDIENCE_DOUBLE;
        r.orig_sender = "";
        r.to = "postmaster@mx.example.test";
        r.subject = "Postmaster Copy: Undelivered Mail";
        r.rcpts = rcpts;
        r.n_rcpts = 1;
        r.content = bounce;
        r.content_size = sizeof(bounce) - 1;
        check_report(&r, "report-double-bounce.eml", &info);
        CHECK(info.full_message);
        CHECK(info.eight_bit);
}

/* One report for recipients that failed at different servers: each group
 * names its own Remote-MTA, each readable line its own host. */
static void test_two_relays(void) {
        BounceReportRcpt rcpts[] = {
                {.address = "a@example.net", .dsn = "5.1.1",
                 .diagnostic = "550 5.1.1 no such user", .relay = MX},
                {.address = "b@example.org", .dsn = "5.7.1",
                 .diagnostic = "host mx.example.org[198.51.100.7]:25 said: 554 5.7.1 go away "
                               "(in reply to RCPT TO command)",
                 .relay = "mx.example.org[198.51.100.7]:25"},
                {.address = "c@mx.example.test", .dsn = "5.1.1",
                 .diagnostic = "unknown user: \"c\"", .relay = "local"},
        };
        _cleanup_(strbuf_done) StrBuf out = {0};
        BounceReport r = base_report();
        const char *a, *b, *c;

        r.rcpts = rcpts;
        r.n_rcpts = ELEMENTSOF(rcpts);
        CHECK_INT(bounce_report_build(&r, &out, NULL), 0);
        CHECK(strstr(out.data, "<a@example.net>: host " MX " said:"));
        CHECK(strstr(out.data, "<b@example.org>: host mx.example.org[198.51.100.7]:25 said:"));
        a = strstr(out.data, "Final-Recipient: rfc822; a@example.net\n");
        b = strstr(out.data, "Final-Recipient: rfc822; b@example.org\n");
        c = strstr(out.data, "Final-Recipient: rfc822; c@mx.example.test\n");
        CHECK(a && b && c && a < b && b < c);
        CHECK(strstr(a, "Remote-MTA: dns; mx.example.net\n") < b);
        CHECK(strstr(b, "Remote-MTA: dns; mx.example.org\n") < c);
        CHECK(!strstr(c, "Remote-MTA:"));
        /* Diagnostic-Code holds the reply alone, as Postfix's. */
        CHECK(strstr(b, "Diagnostic-Code: smtp; 554 5.7.1 go away\n") < c);
}

static void test_bad_input(void) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        BounceReport r = base_report();
        BounceReportRcpt rc = {.address = "", .dsn = "5.0.0"};

        CHECK_INT(bounce_report_build(&r, &out, NULL), -EINVAL);        /* no recipients */
        r.rcpts = &rc;
        r.n_rcpts = 1;
        CHECK_INT(bounce_report_build(&r, &out, NULL), -EINVAL);        /* empty address */
        rc.address = "a@b";
        r.queue_id = "short";
        CHECK_INT(bounce_report_build(&r, &out, NULL), -EINVAL);
        r.queue_id = "0ABCDF0002abcABC";
        r.content = NULL;
        r.content_size = 0;
        CHECK_INT(bounce_report_build(&r, &out, NULL), 0);
}

static void test_kinds(void) {
        CHECK_INT(bounce_kind_from_string("failure"), BOUNCE_KIND_FAILURE);
        CHECK_INT(bounce_kind_from_string("delay"), BOUNCE_KIND_DELAY);
        CHECK_INT(bounce_kind_from_string("success"), BOUNCE_KIND_SUCCESS);
        CHECK_INT(bounce_kind_from_string("relayed"), BOUNCE_KIND_RELAYED);
        CHECK_INT(bounce_kind_from_string("expanded"), BOUNCE_KIND_EXPANDED);
        CHECK_INT(bounce_kind_from_string("Failure"), -EINVAL);
        CHECK_STR(bounce_kind_action(BOUNCE_KIND_RELAYED), "relayed");
        CHECK_INT(bounce_header_length("A: b\n\nbody", 10), 6);
        CHECK_INT(bounce_header_length("A: b\nC: d\n", 10), 10);
        CHECK_INT(bounce_header_length("\nbody", 5), 1);
}

static const char *lookup(const char *name, void *userdata) {
        if (streq(name, "myhostname"))
                return "mx.example.test";
        if (streq(name, "x"))
                return "$y";    /* no second round */
        return NULL;
}

static void test_expand(void) {
        static const struct {
                const char *in, *out;
                unsigned unknown;
        } cases[] = {
                {"host $myhostname.", "host mx.example.test.", 0},
                {"${myhostname}x", "mx.example.testx", 0},
                {"$$myhostname $", "$myhostname $", 0},
                {"$nosuch and ${nosuch}", "$nosuch and ${nosuch}", 2},
                {"${open", "${open", 0},
                {"$x", "$y", 0},
                {"", "", 0},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *out = NULL;
                unsigned unknown = 99;
                CHECK_INT(bounce_template_expand(cases[i].in, lookup, NULL, &out, &unknown), 0);
                CHECK_STR(out, cases[i].out);
                CHECK_INT(unknown, cases[i].unknown);
        }
}

static void template_case(const char *name) {
        _cleanup_free_ char *in_name = strdup_printf("template-%s.cf", name);
        _cleanup_free_ char *exp_name = strdup_printf("template-%s.expected", name);
        _cleanup_free_ char *input = NULL;
        _cleanup_(bounce_templates_freep) BounceTemplates *t = NULL;
        _cleanup_(strbuf_done) StrBuf out = {0};
        Diag d = {0};
        size_t len;
        int r;

        input = read_testdata(in_name, &len);
        if (!input)
                return;
        r = bounce_templates_parse(input, len, in_name, &d, &t);
        for (size_t i = 0; i < d.n; i++) {
                _cleanup_free_ char *s = diag_entry_format(&d.entries[i]);
                (void) strbuf_printf(&out, "%s\n", strempty(s));
        }
        (void) strbuf_printf(&out, "result: %s\n", r < 0 ? strerror(-r) : "ok");
        if (t)
                CHECK_INT(bounce_templates_dump(t, &out), 0);
        golden_check(exp_name, out.data ? out.data : "");
        diag_done(&d);
}

static void test_templates(void) {
        _cleanup_(bounce_templates_freep) BounceTemplates *t = NULL;

        CHECK_INT(bounce_templates_new(&t), 0);
        CHECK_STR(t->t[BOUNCE_TEMPLATE_FAILURE].subject, "Undelivered Mail Returned to Sender");
        CHECK_STR(t->t[BOUNCE_TEMPLATE_DELAY].subject, "Delayed Mail (still being retried)");
        CHECK_STR(t->t[BOUNCE_TEMPLATE_SUCCESS].subject, "Successful Mail Delivery Report");
        CHECK_STR(t->t[BOUNCE_TEMPLATE_FAILURE].charset, "us-ascii");
        template_case("ok");
        template_case("errors");
        template_case("empty");
        template_case("unterminated");
}

TEST_MAIN(test_failure_remote, test_failure_local_hdrs, test_failure_too_big, test_delay,
          test_success, test_postmaster_copy, test_double_bounce_8bit, test_two_relays,
          test_bad_input,
          test_kinds, test_expand, test_templates)
