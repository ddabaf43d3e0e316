/* smtpd.h: the role-wide context of a postern-smtpd worker process (the
 * supervisor in smtpd.c forks the workers). Smtpd owns the sd-event loop,
 * the configuration and the settings read from it, the listening sockets
 * handed over by systemd, the sessions, the queue committer and the
 * connection to the queue manager. Sessions (smtpd-session.c) and the queue
 * (smtpd-queue.c) work against it; the relay check (smtpd-check.c) is one
 * function so that the restriction engine can replace it. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "addr-class.h"
#include "conf.h"
#include "inet.h"
#include "map.h"
#include "queue-file.h"
#include "smtpd-sasl.h"
#include "smtpd-tls.h"
#include "strutil.h"

typedef struct Smtpd Smtpd;
typedef struct SmtpSession SmtpSession;
typedef struct SmtpdQueue SmtpdQueue;

/* local_header_rewrite_clients. */
enum {
        SMTPD_REWRITE_ALL = 1 << 0,             /* static:all */
        SMTPD_REWRITE_MYNETWORKS = 1 << 1,      /* permit_mynetworks */
        SMTPD_REWRITE_SASL = 1 << 2,            /* permit_sasl_authenticated */
        SMTPD_REWRITE_INET_INTERFACES = 1 << 3, /* permit_inet_interfaces */
};

/* smtpd_discard_ehlo_keywords: what EHLO does not announce. */
enum {
        SMTPD_EHLO_PIPELINING = 1 << 0,
        SMTPD_EHLO_SIZE = 1 << 1,
        SMTPD_EHLO_VRFY = 1 << 2,
        SMTPD_EHLO_ETRN = 1 << 3,
        SMTPD_EHLO_STARTTLS = 1 << 4,
        SMTPD_EHLO_AUTH = 1 << 5,
        SMTPD_EHLO_ENHANCEDSTATUSCODES = 1 << 6,
        SMTPD_EHLO_8BITMIME = 1 << 7,
        SMTPD_EHLO_DSN = 1 << 8,
        SMTPD_EHLO_SMTPUTF8 = 1 << 9,
        SMTPD_EHLO_CHUNKING = 1 << 10,
        SMTPD_EHLO_OTHER = 1 << 11,     /* xclient, xforward, verp: never announced */
        SMTPD_EHLO_SILENT = 1 << 12,    /* silent-discard: do not log the discarding */
};

typedef enum SmtpdBareNewline {
        SMTPD_BARE_NEWLINE_NO,          /* accept bare LF as a content line end */
        SMTPD_BARE_NEWLINE_NORMALIZE,   /* the same, and log it (Postfix 3.9 default) */
        SMTPD_BARE_NEWLINE_REJECT,      /* 521 5.5.2 and disconnect */
} SmtpdBareNewline;

/* Everything the sessions read from the configuration, resolved once when
 * a worker starts; it never changes (a reload starts new workers). Strings
 * are owned. */
typedef struct SmtpdSettings {
        char *service;
        char *myhostname;
        char *myorigin;
        char *banner;                   /* expanded smtpd_banner */
        char *mail_name;
        char *queue_directory;
        uint64_t message_size_limit;    /* 0: none */
        uint64_t queue_minfree;
        size_t line_length_limit;
        size_t header_size_limit;
        unsigned recipient_limit;
        uint64_t timeout_usec;
        uint64_t error_sleep_usec;
        unsigned soft_error_limit;
        unsigned hard_error_limit;
        bool disable_vrfy;
        bool smtputf8_enable;
        bool forbid_unauth_pipelining;
        SmtpdBareNewline bare_newline;
        unsigned bare_newline_code;     /* smtpd_forbid_bare_newline_reject_code */
        uint64_t max_idle_usec;
        unsigned session_limit;
        /* Missing Date, Message-ID and From headers are added for
         * always_add_missing_headers, or for clients that match
         * local_header_rewrite_clients (SMTPD_REWRITE_* bits). */
        bool always_add_missing_headers;
        unsigned header_rewrite_clients;
        AddrClassifier *own_addresses;  /* for permit_inet_interfaces, else NULL */
        char *qmgr_socket;
        char **mydestination;
        char **relay_domains;
        char **virtual_domains;         /* virtual alias and mailbox domains */
        InetPrefix *mynetworks;
        size_t n_mynetworks;
        MapList *domain_maps;           /* "type:table" entries of the domain lists */
        MapList *header_checks;
        MapList *body_checks;
        /* TLS (smtpd-tls.c); the context itself is Smtpd.tls. */
        SmtpdTlsLevel tls_level;        /* effective: none when no certificate */
        bool tls_wrappermode;
        unsigned tls_loglevel;
        bool tls_received_header;
        /* SASL (smtpd-sasl.c). */
        bool sasl_enable;
        char *sasl_path;                /* resolved against queue_directory; NULL: unusable */
        char *sasl_service;
        unsigned sasl_forbid;           /* smtpd_sasl_security_options */
        unsigned sasl_tls_forbid;       /* smtpd_sasl_tls_security_options */
        bool tls_auth_only;             /* smtpd_tls_auth_only, or level encrypt */
        bool sasl_authenticated_header;
        bool broken_sasl_auth_clients;
        /* Protocol details. */
        char *reject_footer;            /* smtpd_reject_footer, NULL when empty */
        unsigned ehlo_discard;          /* SMTPD_EHLO_* of smtpd_discard_ehlo_keywords */
        char **noop_commands;           /* smtpd_noop_commands, NULL when empty */
        unsigned junk_command_limit;
        bool strict_rfc821_envelopes;
} SmtpdSettings;

void smtpd_settings_done(SmtpdSettings *s);

struct Smtpd {
        sd_event *event;
        Config *config;
        SmtpdSettings settings;
        int queue_dir_fd;
        int incoming_fd;
        int hold_fd;
        sd_event_source **listeners;
        size_t n_listeners;
        bool accepting;
        SmtpSession *sessions;          /* doubly linked list */
        unsigned n_sessions;
        SmtpdQueue *queue;
        sd_bus *qmgr_bus;
        uint64_t qmgr_retry_after;      /* CLOCK_MONOTONIC usec */
        bool exiting;
        bool draining;                  /* told to stop accepting; exits once idle */
        int master_fd;                  /* report socket to the supervisor (smtpd.c) */
        sd_event_source *master_source;
        sd_event_source *report_timer;
        bool reported_busy;
        uint64_t n_queued;              /* messages committed by this worker */
        TlsContext *tls;                /* current server context; a reload replaces it */
        SmtpdSasl *sasl;                /* Dovecot auth client, NULL without AUTH */
};

/* Session life (smtpd-session.c). */
int smtp_session_new(Smtpd *d, int fd, SmtpSession **ret);
SmtpSession *smtp_session_free(SmtpSession *s);

/* Called whenever a session ends or a commit completes: resumes accepting
 * below the session limit and reports the counts to the supervisor, which
 * decides about idle exit (smtpd.c). */
void smtpd_session_count_changed(Smtpd *d);

/* Relay safety (smtpd-check.c): > 0 the recipient is acceptable (our
 * domain, or a client in mynetworks or authenticated: sasl_username is set
 * after a successful AUTH, permit_sasl_authenticated), 0 it is not
 * (*ret_reply gets the reply, caller frees), < 0 a lookup failed (the
 * caller answers 451 4.3.0). Stand-in for the restriction engine. */
int smtpd_check_recipient(Smtpd *d, const InetAddr *client, const char *sasl_username,
                          const char *rcpt, char **ret_reply);
/* Whether the client address is in mynetworks. */
bool smtpd_client_in_mynetworks(Smtpd *d, const InetAddr *client);

/* Queue committer (smtpd-queue.c): group commit of finished queue files on
 * a worker thread. done() runs on the loop thread with 0 once the file is
 * renamed into target_dir_fd and that directory is durable, or a negative
 * errno (the temporary file is gone then). The committer owns w from the
 * call on. */
typedef void (*SmtpdCommitDone)(void *userdata, int r);
typedef struct SmtpdCommit SmtpdCommit;
int smtpd_queue_new(Smtpd *d, SmtpdQueue **ret);
SmtpdQueue *smtpd_queue_free(SmtpdQueue *q);
int smtpd_queue_commit(SmtpdQueue *q, QueueWriter *w, int target_dir_fd,
                       SmtpdCommitDone done, void *userdata, SmtpdCommit **ret);
/* Forgets the callback of a pending commit (its session went away); the
 * file is still committed. */
void smtpd_commit_detach(SmtpdCommit *c);
unsigned smtpd_queue_pending(SmtpdQueue *q);
/* Whether the queue file system has room for a new message at MAIL
 * (Postfix's smtpd_check_queue() and smtpd_check_size()): at least
 * queue_minfree and 1.5 times message_size_limit free, and a declared
 * SIZE (0: none) fitting, 1.5 times, above queue_minfree. Logs a warning
 * when not. When statvfs fails the answer is yes: a failing write still
 * answers 452. */
bool smtpd_queue_space_ok(Smtpd *d, uint64_t size);

/* Announces a queued message to the queue manager over sd-bus, without
 * waiting; failures are logged at debug: the queue scan finds the file. */
void smtpd_qmgr_notify(Smtpd *d, const char *queue_id);

/* D-Bus names of the queue manager's peer-to-peer interface. */
#define QMGR_BUS_OBJECT "/org/postern/Queue1"
#define QMGR_BUS_INTERFACE "org.postern.Queue1"
#define QMGR_SOCKET_DEFAULT "/run/postern/qmgr"
