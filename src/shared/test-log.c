/* test-log.c: the stderr fallback of the logging module prints the
 * identifier, level and the Postfix-shaped text of mail events. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "strutil.h"
#include "tests.h"

/* Runs f with stderr redirected to a temporary file and returns what it
 * printed (caller frees). */
static char *capture_stderr(void (*f)(void)) {
        char path[] = "/tmp/test-log-XXXXXX";
        int fd = mkstemp(path), saved = dup(STDERR_FILENO);
        char *out = NULL;

        fflush(stderr);
        dup2(fd, STDERR_FILENO);
        f();
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(fd);
        if (file_read_all(path, 1 << 20, &out, NULL) < 0)
                out = NULL;
        unlink(path);
        return out;
}

static void emit_levels(void) {
        log_info("started");
        log_warning("bad line %d, skipping", 3);
        log_debug("not shown");
        (void) log_error_errno(-ENOENT, "cannot open: %m");
}

static void emit_mail(void) {
        log_mail(LOG_INFO, MSGID_DELIVERED, "4XyZ12abc",
                 LOG_FIELDS("POSTERN_RECIPIENT", "a@example.com", "POSTERN_RELAY", NULL,
                            "POSTERN_STATUS", "sent"),
                 "to=<%s>, status=sent", "a@example.com");
        log_mail(LOG_INFO, MSGID_CONNECT, NULL, LOG_NO_FIELDS, "connect from %s", "x[192.0.2.1]");
}

static void test_levels(void) {
        _cleanup_free_ char *out = NULL;
        log_setup("postconf", NULL, LOG_TARGET_STDERR);
        out = capture_stderr(emit_levels);
        CHECK_STR(out, "postconf: started\n"
                       "postconf: warning: bad line 3, skipping\n"
                       "postconf: error: cannot open: No such file or directory\n");
}

static void test_mail(void) {
        _cleanup_free_ char *out = NULL;
        log_setup("postern-smtpd", "submission", LOG_TARGET_STDERR);
        CHECK_STR(log_identifier(), "postern/submission");
        out = capture_stderr(emit_mail);
        CHECK_STR(out, "postern/submission: 4XyZ12abc: to=<a@example.com>, status=sent\n"
                       "postern/submission: connect from x[192.0.2.1]\n");
}

static void test_return_value(void) {
        log_setup("t", NULL, LOG_TARGET_STDERR);
        log_set_max_level(LOG_ERR - 1);
        CHECK_INT(log_error_errno(-EIO, "x"), -EIO);
        CHECK_INT(log_error_errno(EIO, "x"), -EIO);
        CHECK_INT(log_info("x"), 0);
        log_set_max_level(LOG_INFO);
}

TEST_MAIN(test_levels, test_mail, test_return_value)
