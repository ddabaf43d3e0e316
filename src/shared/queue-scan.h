/* queue-scan.h: where a message's file lives in the queue directory, and
 * listing a queue. Small queues (maildrop, incoming, active, hold, corrupt)
 * are flat directories; the queues that grow large (deferred, and the defer
 * logs in defer/) spread their files over two levels of hashed
 * subdirectories, QUEUE/X/Y/QUEUEID, X and Y being the first two hex digits
 * of a hash of the queue ID (as Postfix's hash_queue_names with
 * hash_queue_depth 2), so that no directory holds more than a few thousand
 * entries in a queue of a million messages. Subdirectories are created on
 * demand. A scan of a hashed queue also returns files found flat at its top,
 * so that a queue copied from elsewhere is not lost.
 *
 * Entry points: queue_subpath(), queue_open_dir(), queue_move(),
 * queue_locate(), QueueScan (queue_scan_new(), queue_scan_next()). Nothing
 * here reads queue files or logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-bus.h>

#include "cleanup.h"
#include "queue-id.h"

#define QUEUE_MAILDROP "maildrop"
#define QUEUE_INCOMING "incoming"
#define QUEUE_ACTIVE "active"
#define QUEUE_DEFERRED "deferred"
#define QUEUE_HOLD "hold"
#define QUEUE_CORRUPT "corrupt"
#define QUEUE_DEFER_LOG "defer"

/* Longest "queue/X/Y/QUEUEID" plus NUL. */
#define QUEUE_PATH_MAX 40

/* Whether files of queue name are spread over hashed subdirectories. */
bool queue_is_hashed(const char *queue);

/* Writes the path of message id relative to the queue directory
 * ("deferred/A/7/ID", "incoming/ID") to buf. */
void queue_subpath(const char *queue, const char *id, char buf[static QUEUE_PATH_MAX]);

/* Writes the directory part of queue_subpath() ("deferred/A/7",
 * "incoming") to buf. */
void queue_subdir(const char *queue, const char *id, char buf[static QUEUE_PATH_MAX]);

/* Creates the hashed subdirectories that message id needs in queue (mode
 * 0700); nothing for a flat queue. Returns 0 or a negative errno. */
int queue_make_subdir(int queue_dir_fd, const char *queue, const char *id);

/* Renames message id from queue "from" to queue "to" (both relative to
 * queue_dir_fd), creating hashed subdirectories as needed. Returns 0,
 * -ENOENT when the message is not in "from", other negative errnos. */
int queue_move(int queue_dir_fd, const char *id, const char *from, const char *to);

/* Opens the file of message id in queue with flags (O_CLOEXEC added),
 * trying the hashed location and then the flat one. Returns the fd or a
 * negative errno (-ENOENT). */
int queue_open(int queue_dir_fd, const char *queue, const char *id, int flags);

/* Removes the file of message id from queue (hashed or flat). Returns 0 or
 * a negative errno (-ENOENT). */
int queue_unlink(int queue_dir_fd, const char *queue, const char *id);

/* Finds which of the message queues (incoming, active, deferred, hold,
 * maildrop, corrupt) holds id. Returns 0 and the queue name (static) or
 * -ENOENT. */
int queue_locate(int queue_dir_fd, const char *id, const char **ret_queue);

/* The message queues in the order the tools list them. NULL-terminated. */
extern const char *const queue_names[];

typedef struct QueueScan QueueScan;

/* Starts listing queue (relative to queue_dir_fd). A missing queue
 * directory lists as empty. *ret owned by the caller. */
int queue_scan_new(int queue_dir_fd, const char *queue, QueueScan **ret);
/* Next message: 1 with its ID in ret_id (and, when ret_st is set, its
 * fstatat() result; a file that vanished meanwhile is skipped), 0 at the
 * end, or a negative errno. Hidden and foreign names are skipped. */
int queue_scan_next(QueueScan *s, char ret_id[static QUEUE_ID_SIZE], struct stat *ret_st);
/* Like queue_scan_next() but stops at the end of the current hashed
 * subdirectory: returns 0 there while more subdirectories remain
 * (queue_scan_done() tells them apart), so that a daemon can scan a huge
 * queue in slices between other work. */
int queue_scan_next_slice(QueueScan *s, char ret_id[static QUEUE_ID_SIZE], struct stat *ret_st);
bool queue_scan_done(const QueueScan *s);
QueueScan *queue_scan_free(QueueScan *s);
DEFINE_CLEANUP_FUNC(QueueScan, queue_scan_free);

/* --- listing and administration (postqueue, postsuper, posternctl) ------- */

typedef struct QueueListRcpt {
        char *address;
        char *reason;           /* deferral reason from the defer log, NULL when none */
} QueueListRcpt;

typedef struct QueueListEntry {
        const char *queue;      /* static queue name */
        char id[QUEUE_ID_SIZE];
        uint64_t size;          /* content size */
        time_t arrival;
        char *sender;           /* "" for the null sender */
        bool hold;
        QueueListRcpt *rcpts;   /* recipients still to be delivered */
        size_t n_rcpts;
} QueueListEntry;

/* Reads message id in queue for a listing. Returns 0, -ENOENT when it is
 * gone, -EBADMSG for a corrupt file, other negative errnos. The caller
 * calls queue_list_entry_done(). */
int queue_list_read(int queue_dir_fd, const char *queue, const char *id, QueueListEntry *ret);
void queue_list_entry_done(QueueListEntry *e);

/* Administrative moves, each safe while postern-qmgr runs: the queue
 * manager holds an active message under flock() and checks before every
 * delivery and at the end whether the file is still where it put it, so a
 * message taken out of active/ by these is dropped from its memory; status
 * bytes written meanwhile land in the same file wherever it went.
 * Each returns 1 when the message was acted on, 0 when it was not in a
 * queue the operation applies to, or a negative errno. */
int queue_admin_delete(int queue_dir_fd, const char *id, const char *only_queue);
int queue_admin_hold(int queue_dir_fd, const char *id, const char *only_queue);
int queue_admin_release(int queue_dir_fd, const char *id);
int queue_admin_requeue(int queue_dir_fd, const char *id, const char *only_queue);

/* Calls method (Enqueue, Flush, FlushSite, FlushId) of org.postern.Queue1
 * on $POSTERN_RUNTIME_DIR/qmgr, with arg as its one string argument (NULL
 * for none), and waits for the answer; the socket starts the queue manager
 * when it is not running. Returns 0, or a negative errno with the bus error
 * text in *ret_error (caller frees; may be NULL). */
int queue_qmgr_call(const char *method, const char *arg, char **ret_error);

/* Opens a bus connection to org.postern.Queue1 on $POSTERN_RUNTIME_DIR/qmgr
 * (the socket starts the queue manager). Returns 0 with *ret (caller
 * closes with sd_bus_flush_close_unref()) or a negative errno. */
int queue_qmgr_connect(sd_bus **ret);
