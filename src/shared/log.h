/* log.h: the one logging module of every postern program. Programs call
 * log_setup() once, then the level functions (log_info(), log_warning(),
 * log_error(), log_debug()) or, for events in a message's life,
 * log_mail() with a catalog MESSAGE_ID, the queue id, structured fields and
 * the Postfix-shaped text. Output goes to the journal with
 * SYSLOG_IDENTIFIER=postern/SERVICE (or the program name) when the journal
 * socket exists, else to stderr with the same text. src/shared itself logs
 * nothing above debug. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "diag.h"
#include "log-msgid.h"
#include "macro.h"

typedef enum LogTarget {
        LOG_TARGET_AUTO,        /* journal when /run/systemd/journal/socket exists, else stderr */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
} LogTarget;

/* Sets the identifier ("postconf", or "postern/submission" when service is
 * set) and the target. Safe to call again (after a reload). */
void log_setup(const char *program, const char *service, LogTarget target);
void log_set_max_level(int level);
int log_get_max_level(void);
const char *log_identifier(void);

/* Logs text at level (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG). Returns
 * -abs(error) when error is non-zero, else 0, so that
 * "return log_error_errno(r, ...)" works. */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *fmt, ...) _printf_(6, 7);

#define log_full_errno(level, error, ...) \
        log_internal(level, error, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, error, __VA_ARGS__)
#define log_oom() log_full_errno(LOG_ERR, ENOMEM, "Out of memory.")

/* Structured fields: a NULL-terminated list of name, value pairs. A NULL
 * value skips its field. */
#define LOG_FIELDS(...) ((const char *const[]) {__VA_ARGS__, NULL})
#define LOG_NO_FIELDS ((const char *const[]) {NULL})

/* Logs an event in a message's life: MESSAGE_ID=msgid (a 32 hex digit
 * catalog id from log-msgid.h), POSTERN_QUEUE_ID=qid (when qid is set, and
 * the text is prefixed with "QID: "), the given fields, and the text. */
void log_mail(int level, const char *msgid, const char *qid, const char *const *fields,
              const char *fmt, ...) _printf_(5, 6);

/* Logs the entries of a diagnostics list ("FILE:LINE: error: TEXT"):
 * errors with MESSAGE_ID MSGID_CONFIG_ERROR, and warnings (when warnings is
 * set: a reload would only repeat them) with MSGID_CONFIG_WARNING; then
 * empties the list. */
void log_diags(Diag *diags, bool warnings);
