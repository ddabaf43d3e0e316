/* bounce.h: the role-wide context of postern-bounce, the service behind
 * org.postern.Bounce1 on the bounce socket. The queue manager calls
 * Notify with an open queue file and the recipients that failed, were
 * delayed or were delivered with NOTIFY=SUCCESS; postern-bounce writes the
 * delivery status notification (and any postmaster copies that
 * notify_classes asks for) into incoming/, syncs it, announces it to the
 * queue manager and replies with the report's queue ID.
 *
 * Entry points: bounce_bus_*() in bounce-bus.c (connections and the
 * vtable), bounce_notify() in bounce-notify.c (who gets which report, queue
 * files, logging). Building the report text is bounce-report.c, the
 * templates bounce-template.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bounce-report.h"
#include "bounce-template.h"
#include "conf.h"

/* Recipients one Notify call may name. */
#define BOUNCE_RCPT_MAX 10000
/* Bytes of the diagnostic text taken from a caller. */
#define BOUNCE_DIAG_ARG_MAX 4096
/* Connections served at once. */
#define BOUNCE_CONNECTIONS_MAX 64

/* notify_classes bits. */
enum {
        BOUNCE_CLASS_BOUNCE = 1 << 0,
        BOUNCE_CLASS_2BOUNCE = 1 << 1,
        BOUNCE_CLASS_DATA = 1 << 2,
        BOUNCE_CLASS_DELAY = 1 << 3,
        BOUNCE_CLASS_POLICY = 1 << 4,
        BOUNCE_CLASS_PROTOCOL = 1 << 5,
        BOUNCE_CLASS_RESOURCE = 1 << 6,
        BOUNCE_CLASS_SOFTWARE = 1 << 7,
};

/* Everything the service reads from the configuration, resolved at start.
 * Strings are owned; notice recipients and the double-bounce sender are
 * qualified with @myorigin when they have no domain. */
typedef struct BounceSettings {
        char *myhostname;
        char *myorigin;
        char *mail_name;
        char *queue_directory;
        char *qmgr_socket;
        char *bounce_notice_recipient;
        char *double_bounce_notice_recipient;   /* 2bounce_notice_recipient */
        char *delay_notice_recipient;
        char *error_notice_recipient;
        char *double_bounce_sender;             /* qualified */
        char *double_bounce_local;              /* as configured */
        unsigned notify_classes;                /* BOUNCE_CLASS_* */
        uint64_t size_limit;                    /* bounce_size_limit */
        uint64_t maximal_queue_lifetime_usec;
        uint64_t bounce_queue_lifetime_usec;
        uint64_t max_idle_usec;
        uid_t mail_owner_uid;
} BounceSettings;

typedef struct Bounce Bounce;
typedef struct BounceConnection BounceConnection;

struct BounceConnection {
        Bounce *bounce;
        BounceConnection *prev, *next;
        sd_bus *bus;
        bool closed;
};

struct Bounce {
        Config *config;
        BounceSettings settings;
        BounceTemplates *templates;
        sd_event *event;
        sd_event_source **listeners;
        size_t n_listeners;
        sd_event_source *idle_timer;
        sd_event_source *reaper;
        BounceConnection *connections;
        unsigned n_connections;
        int queue_dir_fd;
        int incoming_fd;
        sd_bus *qmgr_bus;
        uint64_t qmgr_retry_after;
        bool exiting;
};

void bounce_settings_done(BounceSettings *s);
/* Reads the settings from c; problems go to diags. Returns 0, -ENOMEM. */
int bounce_settings_load(Config *c, Diag *diags, BounceSettings *ret);
/* Parses a notify_classes list into BOUNCE_CLASS_* bits; unknown names go
 * to diags as warnings. */
unsigned bounce_parse_classes(char * const *list, Diag *diags);

/* Re-arms or stops the idle timer after the number of connections changed. */
void bounce_activity_changed(Bounce *b);

/* One recipient of a Notify call; strings borrowed from the bus message. */
typedef struct BounceNotifyRcpt {
        uint32_t index;
        const char *address;
        const char *orig;
        const char *dsn;
        const char *diagnostic;
        const char *relay;              /* "host[addr]:port" of a remote reply, "" */
} BounceNotifyRcpt;

typedef struct BounceNotifyRequest {
        int fd;                         /* the original queue file, borrowed */
        const char *queue_id;
        BounceKind kind;
        const BounceNotifyRcpt *rcpts;
        size_t n_rcpts;
        uint64_t last_attempt_usec;     /* CLOCK_REALTIME; 0: now */
} BounceNotifyRequest;

/* Handles one Notify call: reads the original, decides which reports are
 * due, writes and syncs them into incoming/, announces them and logs.
 * Returns 0 with the queue ID of the report to the sender (or of the
 * double bounce) in *ret_report_id (caller frees; "" when no report was
 * due). Errors: -EBADMSG for a malformed queue file, -EINVAL when the file
 * is not the named message or a recipient index is out of range, other
 * negative errnos for I/O failures (nothing was queued for the sender
 * then). */
int bounce_notify(Bounce *b, const BounceNotifyRequest *req, char **ret_report_id);

/* Takes an accepted connection fd (owned from here on) and serves
 * Bounce1 on it. Returns 0 or a negative errno (logged). */
int bounce_bus_accept(Bounce *b, int fd);
void bounce_bus_connection_free(BounceConnection *c);
/* Announces a new queue file to the queue manager, best effort. */
void bounce_qmgr_notify(Bounce *b, const char *queue_id);
