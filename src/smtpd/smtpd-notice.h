/* smtpd-notice.h: postmaster notices of SMTP session errors, as Postfix's
 * smtpd_chat_notify() sends them. A session keeps a capped transcript of
 * its commands and replies (SmtpdTranscript: never message content, never
 * AUTH data) and the classes of the errors it answered; when it ends with
 * an error of a class that notify_classes lists (policy, protocol,
 * resource, software), smtpd_notice_send() queues one message with the
 * transcript for error_notice_recipient, sent by double_bounce_sender so
 * that its own failure is discarded, never bounced. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strutil.h"

typedef struct Smtpd Smtpd;

/* The error classes of notify_classes that the SMTP server reports
 * (Postfix's MAIL_ERROR_POLICY and friends). */
enum {
        SMTPD_NOTICE_POLICY = 1 << 0,   /* rejected by a restriction (UCE policy) */
        SMTPD_NOTICE_PROTOCOL = 1 << 1, /* syntax, sequence, unknown command, pipelining */
        SMTPD_NOTICE_RESOURCE = 1 << 2, /* queue storage: 452 4.3.1, queue file write error */
        SMTPD_NOTICE_SOFTWARE = 1 << 3, /* internal errors: 451 4.3.0 */
        SMTPD_NOTICE_BOUNCE = 1 << 4,   /* a message refused for its size: 552 5.3.4 */
};

/* Caps: the last lines only, as much as fits. */
#define SMTPD_TRANSCRIPT_MAX_LINES 50
#define SMTPD_TRANSCRIPT_MAX_BYTES (16 * 1024)
#define SMTPD_TRANSCRIPT_LINE_MAX 500

typedef struct SmtpdTranscript {
        StrBuf buf;             /* "Out: text\n" and "In:  text\n" lines */
        size_t n_lines;
        size_t n_dropped;       /* older lines given up for the caps */
} SmtpdTranscript;

/* Appends one line: direction "In:  " or "Out: ", text of length len
 * (escaped for the notice, cut at SMTPD_TRANSCRIPT_LINE_MAX), dropping the
 * oldest lines beyond the caps. Out of memory loses the line, nothing
 * else. */
void smtpd_transcript_add(SmtpdTranscript *t, const char *direction, const char *text,
                          size_t len);
void smtpd_transcript_done(SmtpdTranscript *t);

/* The notify_classes bits (SMTPD_NOTICE_*) in effect for this worker;
 * 0 when none is enabled or error_notice_recipient is empty. Read from the
 * configuration once per process. */
unsigned smtpd_notice_mask(Smtpd *d);

/* The class of an error reply by its code: X.5.Y (syntax and sequence)
 * is protocol, "452 4.3.1", a 451 queue file write error and a 451
 * temporary lookup failure resource, other "451 4.3.0" software, "552
 * 5.3.4" bounce; anything else 0. */
unsigned smtpd_notice_classify(const char *reply);

/* Names of the classes in mask, "policy, protocol", into buf. */
const char *smtpd_notice_class_names(unsigned mask, char *buf, size_t size);

/* Queues the notice for a session from client ("name[addr]") with the
 * errors in classes (already limited to the mask), reason (NULL or why the
 * session was cut short). Never fails the caller: problems are logged. */
void smtpd_notice_send(Smtpd *d, const SmtpdTranscript *t, const char *client,
                       unsigned classes, const char *reason);
