/* queue-file.h: the on-disk format of one queued message, shared by the
 * writers (smtpd, pickup, bounce) and the readers (qmgr, delivery agents,
 * postcat). Described for administrators in postern-queue(5).
 *
 * Layout: a 64-byte text header ("POSTERNQ", version, content size,
 * envelope size, flags), the message content (LF line ends, dot-unstuffed,
 * Received header first), then the envelope: "key=value" lines ending with
 * "end=". Each recipient line "rcpt=S NOTIFY ORCPT ADDRESS" carries a status
 * byte S at a fixed offset that the queue manager overwrites in place with a
 * single pwrite() + fdatasync() (queue_file_set_status()), so completed
 * recipients survive a crash without rewriting the file. The envelope comes
 * after the content because content checks (REDIRECT, HOLD) decide it only at
 * the end of the message.
 *
 * Writing: queue_writer_new() creates a hidden temporary file ".QUEUEID" in
 * a queue directory, queue_writer_append() streams content,
 * queue_writer_finish() adds envelope and header, queue_writer_sync() makes
 * the data durable and queue_writer_commit() renames the file into place;
 * the caller then fsyncs the directory (once for a whole batch). A writer
 * freed before commit unlinks its temporary file.
 *
 * Reading: queue_file_read() validates header and envelope and never trusts
 * sizes or offsets it has not checked against the file. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>

#include "cleanup.h"
#include "queue-id.h"
#include "strutil.h"

#define QUEUE_FILE_MAGIC "POSTERNQ"
#define QUEUE_FILE_VERSION 1
#define QUEUE_FILE_HEADER_SIZE 64
/* Caps for readers: a queue file is input like any other. */
#define QUEUE_FILE_ENVELOPE_MAX (64u * 1024 * 1024)
#define QUEUE_FILE_VALUE_MAX 4096

/* Header flags. */
enum {
        QUEUE_FLAG_HOLD = 1 << 0,       /* placed on hold by a content check */
        QUEUE_FLAG_DELAY_WARNED = 1 << 1, /* the delay warning was sent */
        QUEUE_FLAG_REQUEUE = 1 << 2,    /* postsuper -r: resolve and expand again */
        QUEUE_FLAG_ALIAS_ERROR = 1 << 3, /* an alias expansion failed: expand again */
        QUEUE_FLAG_CANONICAL = 1 << 4,  /* canonical mapping was applied (qmgr) */
        QUEUE_FLAG_REMOTE_HEADERS = 1 << 5, /* the client did not match
                                         * local_header_rewrite_clients: its
                                         * headers are rewritten only with
                                         * remote_header_rewrite_domain */
};
/* File offset and width of the flags field in the header, for
 * queue_file_set_flags(). */
#define QUEUE_FILE_FLAGS_OFFSET 48
#define QUEUE_FILE_FLAGS_WIDTH 8

/* Recipient status bytes. */
typedef enum QueueRcptStatus {
        QUEUE_RCPT_PENDING = '-',
        QUEUE_RCPT_DELIVERED = 'D',     /* delivered or relayed */
        QUEUE_RCPT_BOUNCED = 'B',       /* failed and a DSN was queued (or not wanted) */
        QUEUE_RCPT_EXPANDED = 'X',      /* replaced by other recipients (aliases) */
} QueueRcptStatus;

/* RFC 3461 NOTIFY bits; 0 means the client gave no NOTIFY. */
enum {
        QUEUE_NOTIFY_NEVER = 1 << 0,
        QUEUE_NOTIFY_SUCCESS = 1 << 1,
        QUEUE_NOTIFY_FAILURE = 1 << 2,
        QUEUE_NOTIFY_DELAY = 1 << 3,
};

typedef enum QueueRet {
        QUEUE_RET_NONE,
        QUEUE_RET_FULL,
        QUEUE_RET_HDRS,
} QueueRet;

typedef struct QueueRecipient {
        char *address;
        char *orcpt;            /* ORCPT as sent ("rfc822;a+40b"), NULL when absent */
        unsigned notify;        /* QUEUE_NOTIFY_* */
        char status;            /* QueueRcptStatus */
        uint64_t status_offset; /* file offset of the status byte; filled by the reader */
        char *orig;             /* address before virtual alias expansion ("orig=" line
                                 * after the rcpt line), NULL when not expanded */
        char *canon;            /* the recipient as received, before canonical mapping
                                 * ("canon=" line; alias results inherit it), NULL
                                 * when not mapped */
} QueueRecipient;

/* The original recipient of r as Postfix's orig_rcpt: the address as
 * received (before canonical mapping and alias expansion). Logged as
 * orig_to=, passed to the delivery agents (X-Original-To:) and the bounce
 * service. */
static inline const char *queue_rcpt_original(const QueueRecipient *r) {
        return r->canon ? r->canon : r->orig ? r->orig : r->address;
}

typedef struct QueueEnvelope {
        char queue_id[QUEUE_ID_SIZE];
        struct timeval arrival;
        char *sender;           /* "" for the null sender */
        char *envid;            /* xtext as sent, NULL when absent */
        QueueRet ret;
        bool smtputf8;
        bool body_8bitmime;
        char *client_name;
        char *client_addr;
        unsigned client_port;
        char *helo;
        char *protocol;         /* SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA */
        char *service;          /* smtpd, submission, smtps */
        char *tls;              /* TLS facts, NULL for none */
        char *sasl_method;
        char *sasl_username;
        char *fullname;         /* sendmail -F, local submission only */
        char *submit_uid;       /* uid of a local submitter (decimal), NULL otherwise */
        unsigned flags;         /* QUEUE_FLAG_* */
        QueueRecipient *rcpts;
        size_t n_rcpts;
        uint64_t content_offset; /* filled by the reader */
        uint64_t content_size;   /* filled by the reader and the writer */
} QueueEnvelope;

/* Frees what the envelope owns and zeroes it. */
void queue_envelope_done(QueueEnvelope *e);
/* Adds a recipient (copies the strings; orcpt may be NULL) with status
 * pending. Returns 0 or -ENOMEM. */
int queue_envelope_add_rcpt(QueueEnvelope *e, const char *address, unsigned notify,
                            const char *orcpt);
/* Sets the orig (pre-expansion address) of recipient i (copied; NULL
 * clears). Returns 0 or -ENOMEM. */
int queue_envelope_set_orig(QueueEnvelope *e, size_t i, const char *orig);
/* The same for canon (the address before canonical mapping). */
int queue_envelope_set_canon(QueueEnvelope *e, size_t i, const char *canon);
/* Deep copy of everything the envelope owns into *ret. 0 or -ENOMEM. */
int queue_envelope_copy(const QueueEnvelope *e, QueueEnvelope *ret);
/* Removes all recipients. */
void queue_envelope_clear_rcpts(QueueEnvelope *e);

/* Formats the envelope section into out. Returns 0, -EINVAL when a value
 * holds a LF or NUL or is longer than QUEUE_FILE_VALUE_MAX, -ENOMEM. */
int queue_envelope_format(const QueueEnvelope *e, StrBuf *out);
/* Parses an envelope section (text of length len, starting at file offset
 * base, used for the recipients' status offsets) into *ret (zeroed first;
 * the caller calls queue_envelope_done()). -EBADMSG for anything
 * malformed. */
int queue_envelope_parse(const char *text, size_t len, uint64_t base, QueueEnvelope *ret);

/* NOTIFY as text ("SUCCESS,FAILURE", "NEVER", "-" for none) into buf. */
const char *queue_notify_to_string(unsigned notify, char buf[static 32]);
/* Parses an RFC 3461 NOTIFY value (case-insensitive, NEVER alone). Returns
 * the bits or -EINVAL. */
int queue_notify_from_string(const char *s);

typedef struct QueueWriter QueueWriter;

/* Creates the temporary file ".QUEUEID" (O_EXCL, mode 0600) in dir_fd.
 * -EEXIST when the ID is taken (make another). *ret owned by the caller. */
int queue_writer_new(int dir_fd, const char *queue_id, QueueWriter **ret);
/* Appends content (buffered). A write error is remembered and returned by
 * this and every later call (-ENOSPC, -EDQUOT, -EIO, -EFBIG). */
int queue_writer_append(QueueWriter *w, const void *p, size_t n);
/* Content bytes appended so far. */
uint64_t queue_writer_size(const QueueWriter *w);
/* Writes the rest of the content, the envelope (its content_size is
 * ignored: the writer knows) and the header. Nothing is durable yet. */
int queue_writer_finish(QueueWriter *w, const QueueEnvelope *env);
/* fdatasync()s the file. Safe to call from another thread while the owner
 * does not touch the writer. */
int queue_writer_sync(QueueWriter *w);
/* Renames the temporary file to its queue ID in target_dir_fd (the same
 * file system); afterwards freeing the writer keeps the file. The caller
 * fsyncs target_dir_fd. */
int queue_writer_commit(QueueWriter *w, int target_dir_fd);
/* Closes the file and unlinks it unless committed. Returns NULL. */
QueueWriter *queue_writer_free(QueueWriter *w);
DEFINE_CLEANUP_FUNC(QueueWriter, queue_writer_free);

/* Reads and validates header and envelope of an open queue file. Returns 0,
 * -EBADMSG for a malformed or truncated file, other negative errnos for I/O
 * errors. The caller calls queue_envelope_done(). */
int queue_file_read(int fd, QueueEnvelope *ret);

/* Overwrites a recipient's status byte in place and fdatasync()s. */
int queue_file_set_status(int fd, const QueueRecipient *r, char status);
/* Overwrites a recipient's status byte in place without syncing; the
 * caller calls fdatasync() once for a batch. */
int queue_file_put_status(int fd, const QueueRecipient *r, char status);
/* Overwrites the header flags in place and fdatasync()s. */
int queue_file_set_flags(int fd, unsigned flags);

/* Writes a new queue file for the message open at src_fd: the content of
 * src_fd (at env->content_offset, env->content_size bytes) and the envelope
 * env, as the hidden file ".QUEUEID" in dir_fd, synced. The caller commits
 * it with queue_writer_commit() (which may replace the old file) and frees
 * it. Returns 0 or a negative errno. */
int queue_file_rewrite(int src_fd, const QueueEnvelope *env, int dir_fd, QueueWriter **ret);
