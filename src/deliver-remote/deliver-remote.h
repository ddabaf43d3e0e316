/* deliver-remote.h: the role-wide context of postern-deliver-remote, the SMTP
 * and LMTP client behind org.postern.Delivery1 (bus-names.h). The Deliver
 * context owns the event loop, the configuration, the DNS resolver, the bus
 * connections, the delivery jobs in progress and the cache of idle server
 * connections. A DeliveryJob is one Deliver call: one message, a set of
 * recipients, one next hop; it resolves the next hop into routes (MX hosts
 * and addresses) and runs SmtpSessions along them until every recipient has
 * a final answer or the routes are used up. Sessions are in smtp-client.c,
 * jobs and routes in deliver-remote-job.c, the bus in deliver-remote-bus.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "conf.h"
#include "dns.h"
#include "inet.h"
#include "map.h"
#include "queue-file.h"
#include "smtp-proto.h"
#include "tls-client.h"

typedef struct Deliver Deliver;
typedef struct DeliveryJob DeliveryJob;
typedef struct SmtpSession SmtpSession;
typedef struct BusConn BusConn;

/* Settings of one client protocol (smtp_* or lmtp_* parameters). */
typedef struct ClientSettings {
        bool lmtp;
        const char *name;               /* "smtp" or "lmtp", for messages */
        char *helo_name;
        uint64_t connect_timeout_usec;  /* 0: the kernel's limit */
        uint64_t helo_timeout_usec;
        uint64_t mail_timeout_usec;
        uint64_t rcpt_timeout_usec;
        uint64_t data_init_timeout_usec;
        uint64_t data_xfer_timeout_usec;
        uint64_t data_done_timeout_usec;
        uint64_t quit_timeout_usec;
        uint64_t starttls_timeout_usec;
        uint64_t cache_time_usec;       /* 0: no connection cache */
        TlsLevel tls_level;
        TlsLevel tls_dane_insecure_mx;  /* may, encrypt or dane: TLSA of an insecure MX */
        char *tls_servername;
        char **tls_verify_match;
        char **tls_secure_match;
        int tls_loglevel;
        bool tls_note_starttls_offer;
        TlsClientConfig tls_opportunistic;
        TlsClientConfig tls_mandatory;
        char *tls_ciphers, *tls_mandatory_ciphers;
        char *tls_key_credential;       /* LoadCredential= file replacing the key, or NULL */
        SSL_CTX *ctx_opportunistic;     /* built on first use */
        SSL_CTX *ctx_mandatory;
        bool ctx_failed;
        bool tls_wrappermode;           /* TLS from the start, no STARTTLS */
        MapList *tls_policy;            /* smtp_tls_policy_maps, NULL: none */
        char *tls_policy_error;         /* the tables could not be opened: defer */
        int address_preference;         /* AF_INET, AF_INET6 or 0 (any) */
        bool balance_inet_protocols;
        bool dnssec;
        /* SASL client (smtp-sasl.h). */
        bool sasl_enable;
        MapList *sasl_passwords;        /* smtp_sasl_password_maps, NULL: none */
        char *sasl_passwords_error;     /* the tables could not be opened: defer */
        unsigned sasl_options;          /* SMTP_SASL_* without TLS */
        unsigned sasl_tls_options;      /* inside TLS */
        unsigned sasl_tls_verified_options;     /* inside TLS, server verified */
        char **sasl_mech_filter;        /* NULL: all */
        bool sasl_soft_bounce;
} ClientSettings;

/* The TLS policy of one delivery: the level with smtp_tls_policy_maps
 * applied, and the attributes that override the main.cf settings (NULL,
 * 0: not given). */
typedef struct TlsPolicy {
        char **match;                   /* match=, split at ":" */
        unsigned protocols;             /* protocols=, TLS_PROTO_* */
        char *ciphers;                  /* ciphers=, as an OpenSSL cipher list */
        char *exclude;                  /* exclude=, as "A:B" */
        char *servername;               /* servername= */
} TlsPolicy;

typedef struct DeliverSettings {
        char *myhostname;
        char *queue_directory;
        char *relayhost;
        char *dns_servers;
        bool dnssec;                    /* smtp_dns_support_level = dnssec */
        bool ipv4, ipv6;
        InetAddr *local_addrs;          /* inet_interfaces + proxy_interfaces */
        size_t n_local_addrs;
        unsigned hopcount_limit;
        size_t line_length_limit;
        unsigned mx_address_limit;
        unsigned mx_session_limit;
        bool smtputf8_enable;
        uint64_t max_idle_usec;
        InetAddr bind_address, bind_address6;   /* family 0: none */
        ClientSettings smtp, lmtp;
} DeliverSettings;

struct Deliver {
        sd_event *event;
        Config *config;
        DeliverSettings settings;
        DnsResolver *dns;
        sd_event_source **listeners;
        size_t n_listeners;
        BusConn *conns;
        DeliveryJob *jobs;
        unsigned n_jobs;
        SmtpSession *cache;             /* idle sessions kept for reuse */
        unsigned n_cached;
        sd_event_source *idle_timer;
        bool exiting;
};

typedef enum RcptState {
        RCPT_PENDING,
        RCPT_SENT,
        RCPT_RELAYED,           /* sent to an SMTP peer without DSN (RFC 3461 5.2.2) */
        RCPT_DEFERRED,
        RCPT_BOUNCED,
} RcptState;

typedef struct DeliveryRcpt {
        uint32_t index;         /* in the queue file */
        char *address;
        char *original;
        const char *orcpt;      /* borrowed from the envelope, NULL when absent */
        unsigned notify;
        RcptState state;
        char dsn[16];
        char *diag;             /* final text, or the last soft failure while pending */
        bool accepted;          /* RCPT TO got 2xx in the current transaction */
} DeliveryRcpt;

typedef struct Route {
        char *host;             /* host name (MX target) or address text */
        InetAddr addr;
        unsigned port;
        char *path;             /* LMTP over a UNIX socket */
        size_t mx;              /* index in job->mx while resolving, SIZE_MAX: none */
        TlsLevel tls_level;     /* for this route: dane becomes may, encrypt or dane */
        TlsDane *dane;          /* with dane: the usable TLSA records */
} Route;

struct DeliveryJob {
        DeliveryJob *next, *prev;
        Deliver *d;
        sd_bus_message *call;
        int fd;                 /* the queue file, read-only */
        char *qid;
        ClientSettings *cs;
        char *nexthop_text;
        Nexthop nexthop;
        char *cache_key;
        QueueEnvelope env;
        DeliveryRcpt *rcpts;
        size_t n_rcpts;
        SmtpHeaderInfo headers;
        int body_8bit;          /* -1 unknown, 0, 1 */
        bool needs_smtputf8;
        TlsLevel tls_level;
        TlsPolicy tls_policy;

        /* Resolution. */
        struct JobLookup *lookups;
        size_t n_lookups;
        unsigned lookups_pending;
        struct MxHost *mx;
        size_t n_mx;
        Route *routes;
        size_t n_routes;
        size_t next_route;
        bool plain_retry;       /* repeat the current route without TLS ("may") */
        bool mx_secure;         /* DNSSEC: the MX answer (or its absence) was validated */
        unsigned sessions;

        SmtpSession *session;
        char *relay;            /* "host[addr]:port" of the last server that answered */
        char *tls;              /* its TLS: "PROTOCOL CIPHER TRUST", NULL: plaintext */
        char *last_diag;        /* the last soft failure, for recipients not reached */
        char last_dsn[16];
        /* CLOCK_MONOTONIC usec: the call's arrival, and the time it took
         * until a session was ready for MAIL FROM (DNS, connect, greeting,
         * EHLO, TLS), 0 until then; qmgr logs it as delays=../../c/.. */
        uint64_t started_usec;
        uint64_t setup_usec;
};

/* deliver-remote.c */
void deliver_jobs_changed(Deliver *d);

/* deliver-remote-job.c */
/* Starts a delivery for a Deliver call (m is referenced until the reply).
 * Returns 0 or a negative errno, with *ret_error_text (caller frees) set
 * for argument errors (-EINVAL). */
int delivery_job_start(Deliver *d, sd_bus_message *m, int fd, const char *qid,
                       const char *transport, const char *nexthop, char **ret_error_text);
DeliveryJob *delivery_job_free(DeliveryJob *j);
/* Called by a session when it is done with the job: the transaction ended
 * (reusable: the session may serve another message) or the session failed.
 * The job continues with the next route or finishes. */
void delivery_job_session_done(DeliveryJob *j, SmtpSession *s, bool reusable);
/* A cached session failed its RSET test: resolve the next hop instead. */
void delivery_job_reuse_failed(DeliveryJob *j);
/* Records a per-recipient result (hard: final; soft: remembered while the
 * recipient stays pending for the next route). */
void delivery_rcpt_result(DeliveryJob *j, DeliveryRcpt *r, int code, const char *dsn,
                          const char *diag);
/* Records a soft failure for every recipient still pending. */
void delivery_job_soft_fail(DeliveryJob *j, const char *dsn, const char *diag);
/* Sets every recipient still pending to a final result. */
void delivery_job_fail_all(DeliveryJob *j, bool hard, const char *dsn, const char *diag);

/* smtp-client.c */
/* Connects to route for job. Returns 0 when the session is under way
 * (job->session set), or a negative errno when the connection failed at
 * once (the failure is recorded on the job). */
int smtp_session_connect(DeliveryJob *job, const Route *route, bool plain);
/* Takes an idle cached session for job (matching its cache key) and tests it
 * with RSET. Returns 1 when one was found, 0 when none. */
int smtp_session_reuse(DeliveryJob *job);
SmtpSession *smtp_session_free(SmtpSession *s);
/* Says QUIT to every cached session and frees them (at exit). */
void smtp_session_cache_flush(Deliver *d);
/* Whether the session already speaks to route (the job's current one). */
const char *smtp_session_relay(const SmtpSession *s);

/* deliver-remote-bus.c */
int deliver_bus_add_connection(Deliver *d, int fd);
BusConn *bus_conn_free(BusConn *c);
/* Sends the job's results; called once per job. */
void deliver_bus_reply(DeliveryJob *j);
