/* deliver-local.h: the role-wide context of postern-deliver-local, the
 * local(8) and virtual(8) delivery agent behind org.postern.Delivery1 on the
 * deliver-local socket.
 *
 * Process model: the daemon (root, few capabilities) runs an sd-event loop
 * with peer-to-peer sd-bus connections. Each recipient of a Deliver call is
 * handled by a forked "recipient child" that resolves the recipient (aliases,
 * .forward, :include:, virtual maps) and delivers each destination in a
 * further child that has dropped to the destination's uid and gid first
 * (priv_run()), or, for its last step (the recipient's own or a virtual
 * mailbox), drops itself. Nothing touches a mailbox, a file or a command as
 * root. The recipient child reports one result line through a pipe.
 *
 * Entry points: deliver_bus_*() in deliver-local-bus.c, local_deliver() in
 * local.c, virtual_deliver() in virtual.c, and the helpers below. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "conf.h"
#include "map.h"
#include "queue-file.h"
#include "strutil.h"

/* Caps on what one Deliver call can make us do. */
#define DELIVER_RCPT_MAX 1000
#define DELIVER_CHILDREN_MAX 64
/* Nesting of aliases, :include: and .forward (Postfix local_recursion_limit). */
#define DELIVER_RECURSION_MAX 1000
/* Destinations one recipient may expand to (Postfix duplicate_filter_limit). */
#define DELIVER_EXPANSION_MAX 1000
/* Bytes of command output kept for the diagnostic. */
#define DELIVER_COMMAND_OUTPUT_MAX 512
/* Longest header section scanned for Delivered-To loops. */
#define DELIVER_HEADER_SCAN_MAX (1024 * 1024)

typedef enum DeliverTransport {
        DELIVER_TRANSPORT_LOCAL,
        DELIVER_TRANSPORT_VIRTUAL,
} DeliverTransport;

/* Lock methods (mailbox_delivery_lock, virtual_mailbox_lock). */
enum {
        DELIVER_LOCK_FCNTL = 1 << 0,
        DELIVER_LOCK_DOTLOCK = 1 << 1,
        DELIVER_LOCK_FLOCK = 1 << 2,
};

/* Where command and file delivery is allowed (allow_mail_to_*). */
enum {
        DELIVER_FROM_ALIAS = 1 << 0,
        DELIVER_FROM_FORWARD = 1 << 1,
        DELIVER_FROM_INCLUDE = 1 << 2,
};

typedef struct DeliverSettings {
        char *myhostname;
        char *myorigin;
        char **mydestination;
        char *queue_directory;
        char *qmgr_socket;
        char *recipient_delimiter;
        char *home_mailbox;
        char *mail_spool_directory;
        char *mailbox_command; /* raw */
        char *luser_relay;     /* raw */
        char **forward_path;   /* raw entries */
        char *default_privs;
        char *local_command_shell;
        char *virtual_mailbox_base;
        uid_t mail_owner_uid;
        uint64_t mailbox_size_limit;
        uint64_t virtual_mailbox_limit;
        long long virtual_minimum_uid;
        unsigned allow_commands; /* DELIVER_FROM_* */
        unsigned allow_files;
        unsigned mailbox_lock; /* DELIVER_LOCK_* */
        unsigned virtual_lock;
        unsigned lock_attempts;
        uint64_t lock_delay_usec;
        uint64_t stale_lock_sec;
        uint64_t command_time_limit_sec;
        uint64_t max_idle_usec;
        bool owner_request_special;
        MapList *alias_maps; /* NULL when empty */
        char **alias_map_specs;
        uid_t *alias_map_owner; /* owner of each alias table's file, -1 unknown */
        MapList *virtual_mailbox_maps;
        MapList *virtual_uid_maps;
        MapList *virtual_gid_maps;
} DeliverSettings;

typedef struct DeliverJob DeliverJob;
typedef struct DeliverConnection DeliverConnection;

typedef struct DeliverLocal {
        sd_event *event;
        Config *config;
        DeliverSettings settings;
        sd_event_source *listener;
        sd_event_source *idle_timer;
        sd_event_source *reaper; /* frees closed connections outside their callbacks */
        DeliverConnection *connections;
        unsigned n_connections;
        DeliverJob *jobs;
        unsigned n_jobs;
        unsigned n_children; /* recipient children running */
        sd_bus *qmgr_bus;    /* announcements of forwarded mail */
        uint64_t qmgr_retry_after;
        bool exiting;
} DeliverLocal;

/* One message as a recipient child sees it. Borrowed from the job. */
typedef struct DeliverMsg {
        const DeliverSettings *settings;
        int queue_fd;
        const QueueEnvelope *env;
        DeliverTransport transport;
        const char *nexthop;
        const char *recipient;      /* envelope recipient, as qmgr gave it */
        const char *orig_recipient; /* the address as first received ("" if none) */
        char *headers;              /* header section of the content, for loop checks */
        size_t headers_len;
} DeliverMsg;

typedef enum DeliverStatus {
        DELIVER_SENT,
        DELIVER_DEFERRED,
        DELIVER_BOUNCED,
} DeliverStatus;

/* The outcome of one delivery. text is owned. */
typedef struct DeliverResult {
        DeliverStatus status;
        char dsn[16];
        char *text;
        char **queue_ids; /* forwarded copies written to incoming/ */
} DeliverResult;

void deliver_result_done(DeliverResult *r);
/* Sets the result (replacing text); keeps queue_ids. Returns the status. */
DeliverStatus deliver_result_set(DeliverResult *r, DeliverStatus status, const char *dsn,
                                 const char *fmt, ...) _printf_(4, 5);
/* Merges sub into acc: the worse status wins (deferred over bounced over
 * sent); forwarded queue ids are collected. */
void deliver_result_merge(DeliverResult *acc, DeliverResult *sub);
const char *deliver_status_to_string(DeliverStatus s);
/* Maps a write/open errno to Postfix's DSN: 4.3.0 for a full disk, 5.2.2
 * for quota and size, 4.2.0 for the rest. */
const char *deliver_errno_dsn(int error, DeliverStatus *ret_status);

/* Serializes a result into a pipe and parses it back. */
int deliver_result_write(int fd, const DeliverResult *r);
int deliver_result_read(int fd, DeliverResult *ret);

/* Identity a delivery runs as. */
typedef struct DeliverUser {
        uid_t uid;
        gid_t gid;
        const char *name;
        const char *home;
        const char *shell;
} DeliverUser;

/* Runs f(userdata, &result) in a child process that has dropped to
 * user->uid/gid (setgroups to the primary group only, setgid, setuid) and
 * returns the child's result in *ret. When the daemon is not root and the
 * uid differs from its own, the result is deferred 4.3.0. A child that dies
 * gives deferred 4.3.0. */
typedef void (*PrivFunc)(void *userdata, DeliverResult *ret);
void priv_run(const DeliverUser *user, PrivFunc f, void *userdata, DeliverResult *ret);
/* Only in a recipient's child process (deliver-local-bus.c), right before a
 * priv_run() that is its last step: that priv_run() drops to the user in
 * this process instead of forking another child, since the child only
 * writes the result and exits after it. */
void priv_run_next_in_place(void);
/* Drops to uid/gid in the current process. Returns 0 or a negative errno. */
int priv_drop(uid_t uid, gid_t gid);
/* Looks up a user by name or uid into a DeliverUser whose strings live in
 * *buf (caller frees). Returns > 0 found, 0 not found, < 0 failure. */
int deliver_user_by_name(const char *name, DeliverUser *ret, char **buf);
int deliver_user_by_uid(uid_t uid, DeliverUser *ret, char **buf);

/* Copying the message. Flags: */
enum {
        COPY_FROM_LINE = 1 << 0,  /* "From sender date" first line */
        COPY_QUOTE_FROM = 1 << 1, /* ">From " quoting of body lines */
        COPY_BLANK_LINE = 1 << 2, /* an empty line after the message */
        COPY_RETURN_PATH = 1 << 3,
        COPY_ORIG_RCPT = 1 << 4, /* X-Original-To */
        COPY_DELIVERED = 1 << 5, /* Delivered-To */
};
#define COPY_MBOX                                                                                  \
        (COPY_FROM_LINE | COPY_QUOTE_FROM | COPY_BLANK_LINE | COPY_RETURN_PATH | COPY_ORIG_RCPT |  \
         COPY_DELIVERED)
#define COPY_MAILDIR (COPY_RETURN_PATH | COPY_ORIG_RCPT | COPY_DELIVERED)
#define COPY_COMMAND (COPY_FROM_LINE | COPY_RETURN_PATH | COPY_ORIG_RCPT | COPY_DELIVERED)

/* Writes the message to fd with the prepended lines the flags ask for.
 * delivered_to is the final recipient. Returns the bytes written or a
 * negative errno (-EFBIG when more than limit bytes would be written, limit
 * 0 meaning none; read errors of the queue file give -EIO). */
int64_t deliver_copy(const DeliverMsg *m, int fd, const char *delivered_to, unsigned flags,
                     uint64_t limit);
bool deliver_msg_has_delivered_to(const DeliverMsg *m, const char *addr);

/* Maildir delivery into dir (created with tmp/, new/, cur/ when missing, as
 * the current user). Runs as the mailbox owner. */
void maildir_deliver(const DeliverMsg *m, const char *dir, const char *delivered_to, uint64_t limit,
                     DeliverResult *ret);
/* Creates dir and its missing parents (mode 0700) as the current user.
 * Returns 0 or a negative errno. */
int deliver_make_dirs(const char *dir);
/* Builds a unique maildir file name "SEC.MUSECPPIDQN.HOST" (host with "/"
 * and ":" escaped as \057 and \072). Caller frees; NULL on out of memory. */
char *maildir_unique_name(void);

/* UNIX mailbox delivery to path (created mode 0600 when missing), locked
 * with the given DELIVER_LOCK_* methods. Runs as the mailbox owner. what is
 * NULL for a mailbox ("delivered to mailbox") or "file" for a file named in
 * an alias or .forward ("delivered to file: PATH"). */
void mbox_deliver(const DeliverMsg *m, const char *path, const char *delivered_to, unsigned lock,
                  uint64_t limit, unsigned copy_flags, const char *what, DeliverResult *ret);
/* Takes and drops a dot-lock "path.lock". Returns 0, -EAGAIN after the
 * attempts ran out, other negative errnos. */
int dotlock_acquire(const char *path, const DeliverSettings *s);
void dotlock_release(const char *path);
/* Delivers into the mailbox fd already opened (spool mailboxes, opened by
 * the recipient child as root and handed to the unprivileged writer). */
void mbox_deliver_fd(const DeliverMsg *m, int fd, const char *path, const char *delivered_to,
                     unsigned lock, uint64_t limit, unsigned copy_flags, const char *what,
                     DeliverResult *ret);

/* Runs command through the shell with the message on stdin, as user. */
void command_deliver(const DeliverMsg *m, const char *command, const DeliverUser *user,
                     const char *delivered_to, const char *extension, DeliverResult *ret);

/* Writes a copy of the message to incoming/ for the given recipients with
 * sender as envelope sender. The new queue id is added to ret->queue_ids.
 * Returns 0 or a negative errno. */
int deliver_forward(const DeliverMsg *m, const char *sender, char *const *rcpts,
                    const char *delivered_to, DeliverResult *ret);

/* The recipient children. Both run as root in a forked child and fill *ret. */
void local_deliver(const DeliverMsg *m, DeliverResult *ret);
void virtual_deliver(const DeliverMsg *m, DeliverResult *ret);

/* Bus side (deliver-local-bus.c). */
int deliver_bus_accept(DeliverLocal *d, int fd);
void deliver_bus_connection_free(DeliverConnection *c);
void deliver_job_free(DeliverJob *j);
/* Called when connection or job counts change: arms the idle timer. */
void deliver_local_activity_changed(DeliverLocal *d);
/* Announces a forwarded message to the queue manager, best effort. */
void deliver_qmgr_notify(DeliverLocal *d, const char *queue_id);

/* Expands $name, ${name}, ${name?value}, ${name:value} in s with the
 * variables (a NULL-terminated name, value list; NULL or "" values are
 * undefined). Values are filtered: characters outside a safe set become
 * "_". *ret_undef is set when an undefined name was used without a
 * conditional form. Returns a new string or NULL on out of memory. */
char *deliver_expand(const char *s, char *const *vars, bool filter, bool *ret_undef);
