/* bounce-report.h: building delivery status notifications (RFC 3464
 * multipart/report messages, report-type=delivery-status) as pure
 * functions: the caller gathers every fact (the original envelope and
 * content, the recipients with their status, the expanded template text,
 * the times and IDs) into a BounceReport and bounce_report_build() returns
 * the message text, ready for the queue (LF line ends). Deciding who gets a
 * report, reading and writing queue files and logging live in
 * bounce-notify.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "queue-file.h"
#include "strutil.h"

/* What happened to the recipients of one report. */
typedef enum BounceKind {
        BOUNCE_KIND_FAILURE,            /* Action: failed */
        BOUNCE_KIND_DELAY,              /* Action: delayed */
        BOUNCE_KIND_SUCCESS,            /* Action: delivered (final delivery) */
        BOUNCE_KIND_RELAYED,            /* Action: relayed (to a peer without DSN) */
        BOUNCE_KIND_EXPANDED,           /* Action: expanded (alias or list expansion) */
        _BOUNCE_KIND_MAX,
} BounceKind;

/* Who reads the report. */
typedef enum BounceAudience {
        BOUNCE_AUDIENCE_SENDER,         /* the original sender: RET decides the attachment */
        BOUNCE_AUDIENCE_POSTMASTER,     /* a notify_classes copy: headers only */
        BOUNCE_AUDIENCE_DOUBLE,         /* a failed bounce, to the postmaster: full message */
} BounceAudience;

/* Longest Diagnostic-Code text kept; longer replies are cut. */
#define BOUNCE_DIAGNOSTIC_MAX 900

/* The kind name of the Notify call ("failure", "delay", "success",
 * "relayed", "expanded") and back; -EINVAL for an unknown name. */
const char *bounce_kind_to_string(BounceKind k);
int bounce_kind_from_string(const char *s);
/* RFC 3464 2.3.3 Action value of a kind. */
const char *bounce_kind_action(BounceKind k);

typedef struct BounceReportRcpt {
        const char *address;            /* final recipient */
        const char *orig;               /* address before alias expansion; NULL: none */
        const char *orcpt;              /* DSN ORCPT as sent ("rfc822;a+2Bb"), NULL: none */
        const char *dsn;                /* "5.1.1" */
        const char *diagnostic;         /* remote reply ("550 5.1.1 ...") or local reason */
        const char *relay;              /* who gave it: "host[addr]:port", "local", "" or
                                         * NULL (Remote-MTA for a remote host) */
} BounceReportRcpt;

typedef struct BounceReport {
        BounceKind kind;
        BounceAudience audience;
        const char *myhostname;
        const char *mail_name;          /* for the Received: header, "postern" */
        const char *queue_id;           /* the report's own queue ID */
        const char *orig_queue_id;
        const char *orig_sender;        /* "" for the null sender */
        const char *to;                 /* recipient of the report (To: header) */
        const char *envid;              /* DSN ENVID as sent (xtext), NULL: none */
        struct timeval arrival;         /* of the original */
        uint64_t now_usec;              /* Date: of the report (CLOCK_REALTIME) */
        uint64_t last_attempt_usec;     /* 0: no Last-Attempt-Date */
        uint64_t retry_until_usec;      /* delay reports: Will-Retry-Until; 0: none */
        const BounceReportRcpt *rcpts;
        size_t n_rcpts;
        const char *content;            /* original message, LF line ends: all of it, or at
                                         * least its header section */
        size_t content_size;            /* bytes at content */
        uint64_t message_size;          /* size of the whole original; 0: content_size */
        QueueRet ret;                   /* RET of the original */
        uint64_t size_limit;            /* bounce_size_limit; 0: no limit */
        /* Expanded template parts. */
        const char *charset;
        const char *from;
        const char *subject;
        const char *text;
} BounceReport;

/* What bounce_report_build() decided, for logging and the queue envelope. */
typedef struct BounceReportInfo {
        bool eight_bit;                 /* the message holds 8-bit data (8BITMIME) */
        bool full_message;              /* message/rfc822, not only headers */
        bool truncated;                 /* larger than bounce_size_limit: headers only */
} BounceReportInfo;

/* Builds the report message into out (appended), with LF line ends and a
 * Received: header first as the queue format wants. Returns 0, -EINVAL for
 * missing facts (no recipients, NULL strings, bad queue IDs), -ENOMEM.
 * ret_info may be NULL. */
int bounce_report_build(const BounceReport *r, StrBuf *out, BounceReportInfo *ret_info);

/* Formats t (CLOCK_REALTIME, microseconds) as an RFC 5322 date-time in
 * local time into buf. */
const char *bounce_format_date(uint64_t usec, char buf[static 64]);

/* Length of the header section of a message (up to and including the empty
 * line, or all of it when there is none). */
size_t bounce_header_length(const char *content, size_t size);
