/* test-smtpd-notice.c: the session transcript of the postmaster notices
 * (caps, escaping) and the notify_classes class of error replies. */
#include <string.h>

#include "macro.h"
#include "smtpd-notice.h"
#include "smtpd.h"
#include "strutil.h"
#include "tests.h"

/* smtpd-queue.c, linked for smtpd-notice.c, reports to the session layer. */
void smtpd_session_count_changed(Smtpd *d) {
}

static void add(SmtpdTranscript *t, const char *dir, const char *text) {
        smtpd_transcript_add(t, dir, text, strlen(text));
}

static void test_transcript(void) {
        SmtpdTranscript t = {0};
        char line[64];

        add(&t, "Out: ", "220 mx.example.test ESMTP");
        add(&t, "In:  ", "EHLO a\r\x01\xff");
        CHECK_INT(t.n_lines, 2);
        /* Control and 8-bit bytes are escaped: nothing ends a line early. */
        CHECK_STR(t.buf.data, "Out: 220 mx.example.test ESMTP\nIn:  EHLO a\\x0d\\x01\\xff\n");
        /* Only the last SMTPD_TRANSCRIPT_MAX_LINES lines stay. */
        for (int i = 0; i < 60; i++) {
                snprintf(line, sizeof(line), "NOOP %d", i);
                add(&t, "In:  ", line);
        }
        CHECK_INT(t.n_lines, SMTPD_TRANSCRIPT_MAX_LINES);
        CHECK_INT(t.n_dropped, 62 - SMTPD_TRANSCRIPT_MAX_LINES);
        CHECK(startswith(t.buf.data, "In:  NOOP 10\n"));
        CHECK(strstr(t.buf.data, "In:  NOOP 59\n") != NULL);
        smtpd_transcript_done(&t);

        /* Long lines are cut; the byte cap holds. */
        char big[2000];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        for (int i = 0; i < 40; i++)
                add(&t, "In:  ", big);
        CHECK(t.buf.len <= SMTPD_TRANSCRIPT_MAX_BYTES);
        CHECK(t.n_lines >= 16 && t.n_lines < 40);
        CHECK(strlen(t.buf.data) == t.buf.len);
        {
                const char *lf = strchr(t.buf.data, '\n');
                CHECK(lf && (size_t) (lf - t.buf.data) <= 5 + SMTPD_TRANSCRIPT_LINE_MAX + 3);
        }
        smtpd_transcript_done(&t);
}

static void test_classify(void) {
        static const struct {
                const char *reply;
                unsigned want;
        } cases[] = {
                {"502 5.5.2 Error: command not recognized", SMTPD_NOTICE_PROTOCOL},
                {"503 5.5.1 Error: need MAIL command", SMTPD_NOTICE_PROTOCOL},
                {"554 5.5.0 Error: SMTP protocol synchronization", SMTPD_NOTICE_PROTOCOL},
                {"452 4.3.1 Insufficient system storage", SMTPD_NOTICE_RESOURCE},
                {"451 4.3.0 Error: queue file write error", SMTPD_NOTICE_RESOURCE},
                {"451 4.3.0 <a@b>: Temporary lookup failure", SMTPD_NOTICE_RESOURCE},
                {"451 4.3.0 Error: out of memory", SMTPD_NOTICE_SOFTWARE},
                {"552 5.3.4 Message size exceeds fixed limit", SMTPD_NOTICE_BOUNCE},
                {"554 5.7.1 <a@b>: Relay access denied", 0},
                {"535 5.7.8 Error: authentication failed: x", 0},
                {"250 2.0.0 Ok", 0},
                {"221 2.0.0 Bye", 0},
                {"500", 0},
                {"", 0},
        };
        char buf[64];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                CHECK_INT(smtpd_notice_classify(cases[i].reply), cases[i].want);
        CHECK_STR(smtpd_notice_class_names(SMTPD_NOTICE_POLICY | SMTPD_NOTICE_SOFTWARE, buf,
                                           sizeof(buf)),
                  "policy, software");
        CHECK_STR(smtpd_notice_class_names(0, buf, sizeof(buf)), "");
}

TEST_MAIN(test_transcript, test_classify)
