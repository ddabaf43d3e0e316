/* log.c: the logging module (see log.h). One identifier per process, one
 * target (journal or stderr); every record carries MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER and, for mail events, MESSAGE_ID and the POSTERN_*
 * fields. Records go to the journal with sd_journal_sendv(); when the
 * journal socket is missing the same text goes to stderr as
 * "IDENT: level: text" (Postfix's command style). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "strutil.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define LOG_MAX_FIELDS 32

/* Process-wide logging state: set once by log_setup() before any other
 * thread exists, read afterwards. */
static char log_ident[128] = "postern";
static LogTarget log_target = LOG_TARGET_AUTO;
static int log_max_level = LOG_INFO;

void log_setup(const char *program, const char *service, LogTarget target) {
        if (service && !streq(service, program))
                snprintf(log_ident, sizeof log_ident, "postern/%s", service);
        else
                snprintf(log_ident, sizeof log_ident, "%s", program);
        if (target == LOG_TARGET_AUTO) {
                const char *e = getenv("POSTERN_LOG_TARGET");
                if (e && streq(e, "stderr"))
                        target = LOG_TARGET_STDERR;
                else if (e && streq(e, "journal"))
                        target = LOG_TARGET_JOURNAL;
                else
                        target = access(JOURNAL_SOCKET, W_OK) == 0 ? LOG_TARGET_JOURNAL
                                                                   : LOG_TARGET_STDERR;
        }
        log_target = target;
}

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

const char *log_identifier(void) {
        return log_ident;
}

static const char *level_name(int level) {
        switch (level) {
        case LOG_EMERG:
        case LOG_ALERT:
        case LOG_CRIT:
                return "fatal";
        case LOG_ERR:
                return "error";
        case LOG_WARNING:
                return "warning";
        case LOG_DEBUG:
                return "debug";
        default:
                return NULL;
        }
}

static void write_stderr(int level, const char *text) {
        const char *name = level_name(level);
        if (name)
                fprintf(stderr, "%s: %s: %s\n", log_ident, name, text);
        else
                fprintf(stderr, "%s: %s\n", log_ident, text);
}

/* Sends MESSAGE plus fields (name, value pairs) to the journal; falls back
 * to stderr when the journal refuses. */
static void emit(int level, const char *text, const char *const *extra, const char *file, int line,
                 const char *func) {
        struct iovec iov[LOG_MAX_FIELDS + 8];
        char *owned[LOG_MAX_FIELDS + 8];
        size_t n = 0, n_owned = 0;

        if (log_target != LOG_TARGET_JOURNAL) {
                write_stderr(level, text);
                return;
        }

#define ADD(...)                                                                \
        do {                                                                    \
                char *_s = strdup_printf(__VA_ARGS__);                          \
                if (_s) {                                                       \
                        owned[n_owned++] = _s;                                  \
                        iov[n++] = (struct iovec) {_s, strlen(_s)};             \
                }                                                               \
        } while (0)

        ADD("MESSAGE=%s", text);
        ADD("PRIORITY=%d", level);
        ADD("SYSLOG_IDENTIFIER=%s", log_ident);
        if (file) {
                ADD("CODE_FILE=%s", file);
                ADD("CODE_LINE=%d", line);
                ADD("CODE_FUNC=%s", func);
        }
        for (size_t i = 0; extra && extra[i] && extra[i + 1] && n + 1 < ELEMENTSOF(iov); i += 2)
                ADD("%s=%s", extra[i], extra[i + 1]);
#undef ADD

        if (sd_journal_sendv(iov, (int) n) < 0)
                write_stderr(level, text);
        for (size_t i = 0; i < n_owned; i++)
                free(owned[i]);
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *fmt, ...) {
        _cleanup_free_ char *text = NULL;
        va_list ap;
        int saved = errno;

        if (error < 0)
                error = -error;
        if (level > log_max_level)
                return error ? -error : 0;
        va_start(ap, fmt);
        /* %m in fmt refers to error, as in systemd's logging. */
        errno = error;
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (text) {
                const char *fields[] = {"ERRNO", NULL, NULL};
                char errbuf[16];
                if (error) {
                        snprintf(errbuf, sizeof errbuf, "%d", error);
                        fields[1] = errbuf;
                }
                emit(level, text, error ? fields : NULL, file, line, func);
        }
        errno = saved;
        return error ? -error : 0;
}

void log_mail(int level, const char *msgid, const char *qid, const char *const *fields,
              const char *fmt, ...) {
        _cleanup_free_ char *body = NULL, *text = NULL;
        const char *all[2 * LOG_MAX_FIELDS + 1];
        size_t n = 0;
        va_list ap;

        if (level > log_max_level)
                return;
        va_start(ap, fmt);
        body = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!body)
                return;
        text = qid ? strdup_printf("%s: %s", qid, body) : strdup(body);
        if (!text)
                return;
        if (msgid) {
                all[n++] = "MESSAGE_ID";
                all[n++] = msgid;
        }
        if (qid) {
                all[n++] = "POSTERN_QUEUE_ID";
                all[n++] = qid;
        }
        /* Fields with a NULL value are skipped, so that callers can pass
         * optional facts without building the list conditionally. */
        for (size_t i = 0; fields && fields[i] && n + 2 < ELEMENTSOF(all); i += 2) {
                if (!fields[i + 1])
                        continue;
                all[n++] = fields[i];
                all[n++] = fields[i + 1];
        }
        all[n] = NULL;
        emit(level, text, all, NULL, 0, NULL);
}

void log_diags(Diag *diags, bool warnings) {
        for (size_t i = 0; i < diags->n; i++) {
                const DiagEntry *e = &diags->entries[i];
                _cleanup_free_ char *t = diag_entry_format(e);
                bool error = e->level == DIAG_ERROR;

                if (!t || (!error && !warnings))
                        continue;
                log_mail(error ? LOG_ERR : LOG_WARNING,
                         error ? MSGID_CONFIG_ERROR : MSGID_CONFIG_WARNING, NULL, LOG_NO_FIELDS,
                         "%s", t);
        }
        diag_done(diags);
}
