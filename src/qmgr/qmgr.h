/* qmgr.h: the role-wide context of postern-qmgr, the queue manager. Qmgr
 * owns the sd-event loop, the configuration and the settings read from it,
 * the queue directory fds, the messages in the active queue, the
 * destinations they wait for, the connections to the delivery agents and
 * the bus server for org.postern.Queue1.
 *
 * The pieces: qmgr.c (main, settings, message life: incoming -> active ->
 * deferred or removed, deferred queue scans, idle exit), qmgr-sched.c
 * (destinations, concurrency windows, round-robin dispatch, Delivery1
 * calls and their results), qmgr-resolve.c (trivial-rewrite: address ->
 * transport and next hop), qmgr-canonical.c (canonical address mapping),
 * qmgr-alias.c (virtual_alias_maps expansion),
 * qmgr-bounce.c (the call site of the bounce service), qmgr-bus.c
 * (org.postern.Queue1 server). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "conf.h"
#include "map.h"
#include "queue-file.h"
#include "strutil.h"

typedef struct Qmgr Qmgr;
typedef struct QmgrMessage QmgrMessage;
typedef struct QmgrDest QmgrDest;
typedef struct QmgrEntry QmgrEntry;
typedef struct QmgrAgent QmgrAgent;
typedef struct QmgrClient QmgrClient;

/* A domain list (mydestination, relay_domains, ...): plain domains,
 * ".domain" for subdomains, "!pattern" negations, and type:table lookups. */
typedef struct QmgrDomainItem {
        char *domain;           /* lower case; NULL for a table */
        Map *map;
        bool negate;
} QmgrDomainItem;

typedef struct QmgrDomainList {
        QmgrDomainItem *items;
        size_t n;
        bool parent_matches;    /* "example.com" also matches "sub.example.com" */
} QmgrDomainList;

/* Everything the queue manager reads from the configuration, resolved once
 * at start. Strings are owned. */
typedef struct QmgrSettings {
        char *queue_directory;
        char *myhostname;
        char *myorigin;
        char *local_transport;
        char *virtual_transport;
        char *relay_transport;
        char *default_transport;
        char *relayhost;
        QmgrDomainList mydestination;
        QmgrDomainList relay_domains;
        QmgrDomainList virtual_alias_domains;
        QmgrDomainList virtual_mailbox_domains;
        MapList *transport_maps;
        bool transport_maps_parent;     /* ".domain" keys (parent_domain_matches_subdomains) */
        MapList *virtual_alias_maps;
        MapList *header_checks;         /* for requeued mail (qmgr-header.c) */
        MapList *canonical_maps;        /* qmgr-canonical.c */
        MapList *sender_canonical_maps;
        MapList *recipient_canonical_maps;
        unsigned canonical_classes;     /* QMGR_CANON_* bits */
        unsigned sender_canonical_classes;
        unsigned recipient_canonical_classes;
        bool propagate_canonical;       /* "canonical" in propagate_unmatched_extensions */
        char *recipient_delimiter;      /* "" when none */
        char *remote_header_rewrite_domain;     /* "" when none */
        unsigned alias_recursion_limit;
        unsigned alias_expansion_limit;
        uint64_t min_backoff_usec;
        uint64_t max_backoff_usec;
        uint64_t queue_run_delay_usec;
        uint64_t max_lifetime_usec;
        uint64_t bounce_lifetime_usec;
        uint64_t delay_warning_usec;    /* 0: off */
        uint64_t max_idle_usec;
        unsigned initial_concurrency;
        unsigned active_limit;
        unsigned process_limit;
        bool soft_bounce;
} QmgrSettings;

void qmgr_settings_done(QmgrSettings *s);

/* canonical_classes and friends. */
enum {
        QMGR_CANON_ENV_FROM = 1 << 0,   /* envelope_sender */
        QMGR_CANON_ENV_RCPT = 1 << 1,   /* envelope_recipient */
        QMGR_CANON_HDR_FROM = 1 << 2,   /* header_sender */
        QMGR_CANON_HDR_RCPT = 1 << 3,   /* header_recipient */
};

/* Chained hash table of string keys; values are the owning structs, which
 * embed their key and chain link. */
typedef struct QmgrHashNode {
        struct QmgrHashNode *next;
        const char *key;
} QmgrHashNode;

typedef struct QmgrHash {
        QmgrHashNode **buckets;
        size_t n_buckets;
        size_t n;
} QmgrHash;

QmgrHashNode *qmgr_hash_get(QmgrHash *h, const char *key);
int qmgr_hash_put(QmgrHash *h, QmgrHashNode *node);
void qmgr_hash_remove(QmgrHash *h, QmgrHashNode *node);
void qmgr_hash_done(QmgrHash *h);

/* Per-recipient state of a message in the active queue. */
typedef struct QmgrRcpt {
        char *dsn;              /* last result: dsn and reason, NULL when none */
        char *reason;
        char *relay;            /* relay of the last result, for notices */
        bool scheduled;         /* waiting in an entry or in flight */
        int notice;             /* QmgrNotice + 1 to send at the next sync, 0 none */
        bool notifying;         /* a Bounce1.Notify for it is in flight */
        bool notice_failed;     /* the last notice could not be queued: defer it */
} QmgrRcpt;

struct QmgrMessage {
        QmgrHashNode node;      /* key: id */
        Qmgr *qmgr;
        char id[QUEUE_ID_SIZE];
        int fd;                 /* O_RDWR, flock()ed while in active/ */
        dev_t dev;
        ino_t ino;
        QueueEnvelope env;
        QmgrRcpt *rcpts;        /* env.n_rcpts */
        unsigned n_scheduled;   /* recipients waiting or in flight */
        unsigned n_jobs;        /* Deliver calls in flight */
        unsigned n_notices;     /* Bounce1.Notify calls in flight */
        bool delay_notice_failed;
        uint64_t active_usec;   /* CLOCK_REALTIME when it entered active/ */
        bool gone;              /* moved away or deleted by postsuper */
        QmgrMessage *prev, *next;       /* all active messages */
        bool sync_queued;       /* written to, waiting for the batched sync */
        QmgrMessage *sync_prev, *sync_next;
};

/* A delivery agent socket (deliver-remote, deliver-local). */
struct QmgrAgent {
        char *name;
        char *path;
        sd_bus *bus;
        unsigned in_flight;
        uint64_t retry_after;   /* CLOCK_MONOTONIC usec */
};

/* Recipients of one message waiting for one destination. */
struct QmgrEntry {
        QmgrMessage *message;
        size_t *rcpts;
        size_t n;
        QmgrEntry *next;
};

struct QmgrDest {
        QmgrHashNode node;      /* key: "transport\tnexthop" */
        Qmgr *qmgr;
        char *key;
        char *transport;
        char *nexthop;
        QmgrAgent *agent;
        unsigned limit;         /* destination concurrency limit */
        unsigned rcpt_limit;    /* recipients per delivery */
        unsigned window;        /* current concurrency */
        unsigned in_flight;
        bool dead;
        uint64_t dead_until;    /* CLOCK_MONOTONIC usec */
        char *dead_dsn;
        char *dead_reason;
        QmgrEntry *head, *tail;
        QmgrDest *rr_prev, *rr_next;    /* ring of destinations with entries */
        bool in_ring;
};

struct Qmgr {
        sd_event *event;
        Config *config;
        QmgrSettings settings;
        int queue_fd;
        int incoming_fd;
        int active_fd;

        QmgrHash messages;
        QmgrMessage *messages_head;
        unsigned n_active;
        QmgrHash dests;
        QmgrDest *ring;                 /* round-robin cursor */
        QmgrAgent agents[2];
        unsigned jobs_in_flight;
        sd_event_source *sched_event;   /* deferred dispatch pass */
        /* Messages whose status bytes wait for the batched fdatasync. */
        QmgrMessage *sync_head;
        unsigned n_sync;
        bool sync_active_dir;           /* removals from active/ to make durable */
        sd_event_source *sync_event;

        /* Incoming: ids announced by Enqueue (a ring, taken oldest first),
         * and whether incoming/ needs a scan. */
        char (*enqueued)[QUEUE_ID_SIZE];
        size_t enqueued_head, n_enqueued, enqueued_cap;
        bool incoming_dirty;
        sd_event_source *incoming_event;
        sd_event_source *incoming_retry;

        /* Deferred queue scan, run in slices. */
        struct QueueScan *scan;
        bool scan_force;                /* flush: ignore the retry times */
        char *scan_site;                /* FlushSite domain */
        bool scan_again;                /* a flush arrived during a scan */
        char *again_site;               /* ... for this site only (NULL: all) */
        uint64_t scan_started;          /* realtime usec of a forced scan's start */
        uint64_t scan_begin_mono;       /* for the log line at the end of a run */
        unsigned scan_seen, scan_due;
        unsigned n_deferred;            /* deferred/ as of the last scan, plus moves since */
        uint64_t next_due;              /* earliest retry time seen (realtime usec); 0 none */
        uint64_t scan_next_due;
        sd_event_source *scan_event;
        sd_event_source *scan_timer;

        /* Bus server. */
        int listen_fd;
        sd_event_source *listen_event;
        QmgrClient *clients;
        sd_event_source *gc_event;

        sd_event_source *idle_timer;
        sd_event_source *status_timer;  /* STATUS= at most once a second */
        uint64_t status_sent_usec;      /* CLOCK_MONOTONIC */
        bool exiting;

        struct QmgrNoticeCall *notices; /* Bounce1.Notify calls in flight */
};

static inline int safe_close_fd(int fd) {
        if (fd >= 0)
                (void) close(fd);
        return -1;
}

static inline char *mfree_str(char *s) {
        free(s);
        return NULL;
}

/* qmgr.c */
void qmgr_kick_incoming(Qmgr *q);
int qmgr_enqueue(Qmgr *q, const char *id);
void qmgr_flush(Qmgr *q, const char *site);
int qmgr_flush_id(Qmgr *q, const char *id);
/* Called by the scheduler when a message has nothing scheduled any more:
 * moves it to deferred/ or removes it. */
void qmgr_message_done(QmgrMessage *m);
/* Checks whether a message is still in active/ (postsuper may have moved
 * or deleted it); marks it gone when not. */
bool qmgr_message_present(QmgrMessage *m);
void qmgr_update_idle(Qmgr *q);
uint64_t now_realtime(void);
uint64_t now_monotonic(void);

/* qmgr-sched.c */
/* Queues recipients of m for the destination (transport, nexthop). */
int qmgr_sched_add(Qmgr *q, QmgrMessage *m, const char *transport, const char *nexthop,
                   size_t rcpt);
/* Runs a dispatch pass soon. */
void qmgr_sched_kick(Qmgr *q);
/* Drops the queued (not in-flight) recipients of m. */
void qmgr_sched_forget_message(Qmgr *q, QmgrMessage *m);
/* Clears dead destinations (all, or those whose next hop is site). */
void qmgr_sched_reset_dead(Qmgr *q, const char *site);
void qmgr_sched_done(Qmgr *q);
/* Records the outcome of recipient i of m and logs it (the one place that
 * logs "to=<...>, relay=..., status=..." lines). status is "sent",
 * "relayed" (sent to a peer without DSN: logged as sent, with a "relayed"
 * notice for NOTIFY=SUCCESS), "deferred" or "bounced". A plain delivery's
 * status byte is written and queued for the batched sync
 * (qmgr_message_sync()). A bounce, or a delivery with a success notice,
 * only notes the notice (qmgr_bounce_want()): its status byte follows the
 * bounce service's reply. */
void qmgr_record_result(QmgrMessage *m, size_t i, const char *status, const char *dsn,
                        const char *relay, const char *text, uint64_t dispatch_usec);
/* The same, for an agent's result: setup_usec is the part of the time
 * since the dispatch that the agent spent setting up its connection (the
 * c of delays=a/b/c/d; 0 for agents that do not report it); tls is the
 * agent's "PROTOCOL CIPHER TRUST" of the relay's connection (NULL or empty:
 * no TLS), logged as ", tls=PROTOCOL/CIPHER/TRUST" after dsn= and as
 * POSTERN_TLS. */
void qmgr_record_result_timed(QmgrMessage *m, size_t i, const char *status, const char *dsn,
                              const char *relay, const char *text, uint64_t dispatch_usec,
                              uint64_t setup_usec, const char *tls);
/* Makes what was written to m's queue file durable: soon, in a batch with
 * the other messages written to in this pass of the event loop (one
 * fdatasync each once nothing more urgent is pending), or at the latest
 * before its file is closed. qmgr_message_sync_now() syncs at once;
 * qmgr_message_sync_drop() forgets the sync of a file just unlinked (the
 * removal itself is made durable with the batch). */
int qmgr_message_sync(QmgrMessage *m);
int qmgr_message_sync_now(QmgrMessage *m);
void qmgr_message_sync_drop(QmgrMessage *m);
/* Formats "delay=..., delays=a/b/c/d" parts. */
void qmgr_format_delay(double v, char buf[static 32]);

/* qmgr-resolve.c */
typedef enum QmgrRouteKind {
        QMGR_ROUTE_DELIVER,
        QMGR_ROUTE_ERROR,       /* error:text: bounce */
        QMGR_ROUTE_DISCARD,     /* discard:text: done without delivery */
        QMGR_ROUTE_DEFER,       /* e.g. unknown transport: try again later */
} QmgrRouteKind;

typedef struct QmgrRoute {
        QmgrRouteKind kind;
        char *transport;
        char *nexthop;
        char *dsn;              /* ERROR, DEFER */
        char *text;             /* ERROR, DISCARD, DEFER */
} QmgrRoute;

/* Resolves a recipient. Returns 0 with *ret filled (qmgr_route_done()
 * frees it), or a negative errno when a table lookup failed (defer). */
int qmgr_resolve(Qmgr *q, const char *rcpt, QmgrRoute *ret);
void qmgr_route_done(QmgrRoute *r);
/* Matches domain against a list: > 0 listed, 0 not, < 0 lookup failed. */
int qmgr_domain_list_match(const QmgrDomainList *l, const char *domain);
int qmgr_domain_list_load(char * const *items, bool parent_matches, Diag *diags,
                          QmgrDomainList *ret);
void qmgr_domain_list_done(QmgrDomainList *l);
/* Whether domain is local for alias purposes ($myorigin, $mydestination). */
int qmgr_domain_is_local(Qmgr *q, const char *domain);
/* Which agent serves a transport name; NULL for none. */
QmgrAgent *qmgr_agent_for_transport(Qmgr *q, const char *transport);

/* qmgr-alias.c */
/* Applies virtual_alias_maps to the pending recipients of env (and, with
 * QUEUE_FLAG_REQUEUE, first undoes a previous expansion). Returns 1 when
 * env changed (the file needs a rewrite), 0 when not, < 0 when a lookup
 * failed (try later). Recipients whose expansion failed stay pending (with
 * QUEUE_FLAG_ALIAS_ERROR on env) and get their error in *ret_errors (index
 * -> "dsn text"), an array of env->n_rcpts strings (caller frees with
 * strv-like loop): the caller bounces them. */
int qmgr_alias_expand(Qmgr *q, QueueEnvelope *env, char ***ret_errors);

/* qmgr-header.c */
typedef enum QmgrHeaderAction {
        QMGR_HEADER_NONE,
        QMGR_HEADER_REJECT,     /* bounce every pending recipient (5.7.1 text) */
        QMGR_HEADER_DISCARD,    /* drop the message, reporting success */
        QMGR_HEADER_HOLD,       /* to the hold queue */
} QmgrHeaderAction;

typedef struct QmgrHeaderVerdict {
        QmgrHeaderAction action;
        char *text;             /* owned; the check's text, "" for none */
} QmgrHeaderVerdict;

/* Runs header_checks over a requeued message open (and locked) at *fd in
 * incoming/ as id, with its envelope env. When a check changed the
 * header section, the file is written anew under the same ID and *fd and
 * *env are replaced by the new file's (1 returned); 0 when nothing
 * changed. The message-wide action lands in *ret (the caller calls
 * qmgr_header_verdict_done()). < 0: lookup or I/O failure, try later. */
int qmgr_header_requeue(Qmgr *q, const char *id, int *fd, QueueEnvelope *env,
                        QmgrHeaderVerdict *ret);
void qmgr_header_verdict_done(QmgrHeaderVerdict *v);
/* Reads the header section of the message at fd (the content up to and
 * including the LF before the first empty line, at most 4 MiB) into
 * *ret_content (NUL-terminated, caller frees; *ret_hdr_len its length). */
int qmgr_header_section(int fd, const QueueEnvelope *env, char **ret_content,
                        size_t *ret_hdr_len);
/* The end (index of the last LF, or hdr_len) of the header that starts at
 * start, folded lines included. */
size_t qmgr_header_next(const char *content, size_t hdr_len, size_t start);
/* Writes the message open at *fd anew under its ID in incoming/ with
 * header (each header ending in LF) in place of the first old_len bytes of
 * its content and with the envelope env; *fd and *env are then the new
 * file's. Returns 0 or a negative errno. */
int qmgr_header_replace(Qmgr *q, const char *id, int *fd, QueueEnvelope *env,
                        const StrBuf *header, size_t old_len);

/* qmgr-canonical.c */
/* Canonical address mapping of a message leaving incoming/ (see the top of
 * qmgr-canonical.c). When the header section changed, the file was written
 * anew and *fd and *env are the new file's; envelope changes are only in
 * *env (the caller writes them). Returns 1 when *env differs from the
 * file, 0 when not, or a negative errno (a table lookup failed: defer). */
int qmgr_canonical(Qmgr *q, const char *id, int *fd, QueueEnvelope *env);

/* qmgr-bounce.c */
typedef enum QmgrNotice {
        QMGR_NOTICE_FAILURE,    /* the recipient bounced: status 'B' after the reply */
        QMGR_NOTICE_DELAY,      /* delay warning: the recipient stays pending */
        QMGR_NOTICE_SUCCESS,    /* delivered with NOTIFY=SUCCESS: 'D' after the reply */
        QMGR_NOTICE_RELAYED,    /* relayed to a peer without DSN, NOTIFY=SUCCESS: 'D' */
} QmgrNotice;
/* Notes that recipient i of m needs a notice of this kind; dsn, reason and
 * relay of m->rcpts[i] describe it. Sent by qmgr_bounce_flush(). */
void qmgr_bounce_want(QmgrMessage *m, size_t i, QmgrNotice kind);
/* Sends the notices noted for m (one Bounce1.Notify per kind, each
 * recipient with its relay); called by qmgr_message_done() when nothing else is in flight.
 * Recipients stay pending on disk until the reply; then bounced or
 * delivered recipients get their status byte and the message moves on
 * (qmgr_message_done()). When the call fails, the recipients are deferred
 * and retried later, so that no notice is lost. Without a bounce service
 * at all (no socket) the event is logged and the recipients are marked at
 * once. Returns the number of calls started. */
unsigned qmgr_bounce_flush(QmgrMessage *m);
/* Forgets the calls in flight (shutdown): their recipients stay pending on
 * disk and are tried again by the next queue manager. */
void qmgr_bounce_done(Qmgr *q);

/* qmgr-bus.c */
int qmgr_bus_setup(Qmgr *q);
void qmgr_bus_done(Qmgr *q);
