/* test-smtp-sasl.c: unit tests of smtp-sasl.c: the AUTH keyword of an EHLO
 * reply, the mechanism filter, the choice under the security options, the
 * password table values and the PLAIN and LOGIN encodings. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "smtp-sasl.h"
#include "tests.h"

static void ehlo(SmtpReply *r, const char * const *lines) {
        for (const char * const *l = lines; *l; l++)
                (void) smtp_reply_feed(r, *l, strlen(*l));
}

static void test_offered(void) {
        SmtpReply r = {0};
        char *m = NULL;

        ehlo(&r, (const char *[]) {"250-mx.example.net", "250-PIPELINING",
                                   "250-AUTH PLAIN  LOGIN", "250-AUTH=LOGIN",
                                   "250 8BITMIME", NULL});
        CHECK_INT(smtp_sasl_offered(&r, &m), 1);
        CHECK_STR(m, "PLAIN LOGIN LOGIN");
        free(m);
        m = NULL;
        smtp_reply_done(&r);

        ehlo(&r, (const char *[]) {"250-mx.example.net", "250-AUTHX FOO", "250 SIZE 100", NULL});
        CHECK_INT(smtp_sasl_offered(&r, &m), 0);
        CHECK(m == NULL);
        smtp_reply_done(&r);

        /* The greeting line is no keyword. */
        ehlo(&r, (const char *[]) {"250-AUTH greets you", "250 AUTH", NULL});
        CHECK_INT(smtp_sasl_offered(&r, &m), 1);
        CHECK_STR(m, "");
        free(m);
        smtp_reply_done(&r);
}

static void test_options(void) {
        unsigned o = 99;
        const char *bad = NULL;

        CHECK_INT(smtp_sasl_options_parse((char *[]) {"noplaintext", "NoAnonymous", NULL}, &o, &bad), 0);
        CHECK_INT(o, SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOANONYMOUS);
        CHECK_INT(smtp_sasl_options_parse(NULL, &o, &bad), 0);
        CHECK_INT(o, 0);
        CHECK_INT(smtp_sasl_options_parse((char *[]) {"noanonymous", "plaintext", NULL}, &o, &bad),
                  -EINVAL);
        CHECK_STR(bad, "plaintext");
}

static void test_filter_choose(void) {
        char *f;

        f = smtp_sasl_filter("CRAM-MD5 PLAIN LOGIN", NULL);
        CHECK_STR(f, "CRAM-MD5 PLAIN LOGIN");
        free(f);
        f = smtp_sasl_filter("CRAM-MD5 PLAIN LOGIN", (char *[]) {"login", "cram-md5", NULL});
        CHECK_STR(f, "CRAM-MD5 LOGIN");
        free(f);
        f = smtp_sasl_filter("CRAM-MD5 PLAIN LOGIN", (char *[]) {"!plain", "plain", "login", NULL});
        CHECK_STR(f, "LOGIN");
        free(f);
        f = smtp_sasl_filter("PLAIN", (char *[]) {"gssapi", NULL});
        CHECK_STR(f, "");
        free(f);

        CHECK_INT(smtp_sasl_choose("LOGIN CRAM-MD5 PLAIN", SMTP_SASL_NOANONYMOUS), SMTP_SASL_MECH_PLAIN);
        CHECK_INT(smtp_sasl_choose("CRAM-MD5 login", 0), SMTP_SASL_MECH_LOGIN);
        CHECK_INT(smtp_sasl_choose("CRAM-MD5", 0), SMTP_SASL_MECH_NONE);
        CHECK_INT(smtp_sasl_choose("PLAINX LOGINX", 0), SMTP_SASL_MECH_NONE);
        /* Postfix's default, noplaintext: no PLAIN or LOGIN. */
        CHECK_INT(smtp_sasl_choose("PLAIN LOGIN", SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOANONYMOUS),
                  SMTP_SASL_MECH_NONE);
        CHECK_INT(smtp_sasl_choose("PLAIN", SMTP_SASL_NODICTIONARY), SMTP_SASL_MECH_NONE);
        CHECK_STR(smtp_sasl_mech_name(SMTP_SASL_MECH_LOGIN), "LOGIN");
}

static void test_credentials(void) {
        char *u = NULL, *p = NULL;

        CHECK_INT(smtp_sasl_credentials("alice@example.com:s3cr:et", &u, &p), 0);
        CHECK_STR(u, "alice@example.com");
        CHECK_STR(p, "s3cr:et");
        free(u);
        p = smtp_sasl_free_secret(p);
        CHECK(p == NULL);
        CHECK_INT(smtp_sasl_credentials("bob", &u, &p), 0);
        CHECK_STR(u, "bob");
        CHECK_STR(p, "");
        free(u);
        smtp_sasl_free_secret(p);
}

static void test_encoding(void) {
        char *s;

        /* RFC 4648 10. */
        s = smtp_sasl_base64("", 0);
        CHECK_STR(s, "");
        free(s);
        s = smtp_sasl_base64("f", 1);
        CHECK_STR(s, "Zg==");
        free(s);
        s = smtp_sasl_base64("fo", 2);
        CHECK_STR(s, "Zm8=");
        free(s);
        s = smtp_sasl_base64("foobar", 6);
        CHECK_STR(s, "Zm9vYmFy");
        free(s);
        /* LOGIN sends each of user and password this way. */
        s = smtp_sasl_base64("Username:", 9);
        CHECK_STR(s, "VXNlcm5hbWU6");
        free(s);
        /* RFC 4616 4: "\0tim\0tanstaaftanstaaf". */
        s = smtp_sasl_plain_response("tim", "tanstaaftanstaaf");
        CHECK_STR(s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        free(s);
        s = smtp_sasl_plain_response("", "");
        CHECK_STR(s, "AAA=");
        free(s);
}

TEST_MAIN(test_offered, test_options, test_filter_choose, test_credentials, test_encoding)
