/* smtpd.c: main() of postern-smtpd, the SMTP server behind the smtpd (25),
 * submission (587) and smtps (465) services, in two parts.
 *
 * The supervisor (the main process systemd knows) loads main.cf plus
 * services.d/SERVICE.cf, builds the TLS context (so that every worker has
 * the same session ticket keys and a ticket from one worker resumes on
 * another), takes the listening sockets from systemd (it never binds one
 * itself) and forks smtpd_worker_processes workers (0: one per CPU). It
 * talks to systemd (READY=1, RELOADING=1, STATUS= with the sessions and
 * messages the workers report, WATCHDOG=1 from its event loop), restarts a
 * worker that dies, and exits with its workers once all of them have been
 * idle for max_idle, so that socket activation starts it again.
 *
 * A worker accepts connections on the shared non-blocking sockets (whoever
 * wins the accept() race serves the client; the others see EAGAIN) and
 * runs the sessions on its own sd-event loop. It reports its counts and
 * whether it is busy over a socketpair; the supervisor sends it one
 * command, drain: stop accepting, finish the sessions, exit.
 *
 * SIGHUP (systemctl reload) re-reads everything: main.cf, services.d,
 * tables and certificates. The supervisor checks the new configuration
 * first; if anything fails it logs why (file:line) and changes nothing.
 * Otherwise it forks a new generation of workers with it, and once they
 * are ready drains the old ones: new connections get the new
 * configuration, sessions in progress finish in the old worker with the
 * one they started with. A worker never changes its configuration.
 *
 * A worker that dies may leave a half-written temporary queue file
 * (incoming/.QUEUEID) behind; the supervisor removes such files, at start
 * and after a worker died, once no process holds them open.
 *
 * Sessions live in smtpd-session.c, the group-committing queue writer in
 * smtpd-queue.c, the relay check in smtpd-check.c, TLS in smtpd-tls.c and
 * the Dovecot SASL client in smtpd-sasl.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conf.h"
#include "log.h"
#include "queue-id.h"
#include "smtpd-check.h"
#include "smtpd.h"

/* Sessions per worker. Postfix runs one process per session and caps them
 * with default_process_limit; one postern-smtpd worker serves many, so the
 * cap is per worker and higher. */
#define SESSION_LIMIT_DEFAULT 10000
/* More workers than this make no sense for an event loop per process. */
#define WORKERS_MAX 64
/* A worker that dies this often within RESTART_WINDOW_USEC is not started
 * again: the service fails, and systemd's Restart= decides. */
#define RESTART_BURST 10
#define RESTART_WINDOW_USEC (10 * 1000000ULL)
#define STATUS_INTERVAL_USEC 1000000ULL

static const char *arg_config_dir;
static const char *arg_service = "smtpd";

void smtpd_settings_done(SmtpdSettings *s) {
        free(s->service);
        free(s->myhostname);
        free(s->myorigin);
        free(s->banner);
        free(s->mail_name);
        free(s->queue_directory);
        free(s->qmgr_socket);
        strv_free(s->mydestination);
        strv_free(s->relay_domains);
        strv_free(s->virtual_domains);
        free(s->mynetworks);
        map_list_free(s->domain_maps);
        map_list_free(s->header_checks);
        map_list_free(s->body_checks);
        free(s->sasl_path);
        free(s->sasl_service);
        free(s->reject_footer);
        strv_free(s->noop_commands);
        addr_classifier_free(s->own_addresses);
        *s = (SmtpdSettings) {0};
}

static int strv_copy(char * const *l, char ***ret) {
        _cleanup_strv_free_ char **c = NULL;
        STRV_FOREACH(i, l)
                if (strv_extend(&c, *i) < 0)
                        return -ENOMEM;
        if (!c && !(c = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret = steal_ptr(c);
        return 0;
}

/* Collects the "type:table" entries of a domain list. */
static int collect_tables(char * const *l, char ***tables) {
        STRV_FOREACH(i, l)
                if (strchr(*i, ':') && strv_extend(tables, *i) < 0)
                        return -ENOMEM;
        return 0;
}

static int open_checks(Config *c, ConfParam p, Diag *diags, MapList **ret) {
        char * const *specs = conf_get_list(c, p);
        if (!specs || !specs[0]) {
                *ret = NULL;
                return 0;
        }
        return map_list_open(specs, 0, diags, ret);
}

static unsigned sasl_options(Config *c, ConfParam p, Diag *diags) {
        const char *unknown = NULL;
        unsigned set = smtpd_sasl_security_parse(conf_get_list(c, p), &unknown);
        if (unknown)
                diag_warning(diags, NULL, 0, "%s: ignoring unknown option \"%s\"",
                             conf_params[p].name, unknown);
        return set;
}

/* The TLS and SASL switches; the TLS context is built by tls_load(). */
static int settings_load_tls_sasl(Config *c, Diag *diags, SmtpdSettings *s) {
        const char *path;

        s->tls_wrappermode = conf_get_bool(c, P_SMTPD_TLS_WRAPPERMODE);
        s->tls_loglevel = (unsigned) MAX(conf_get_int(c, P_SMTPD_TLS_LOGLEVEL), 0);
        s->tls_received_header = conf_get_bool(c, P_SMTPD_TLS_RECEIVED_HEADER);
        s->sasl_enable = conf_get_bool(c, P_SMTPD_SASL_AUTH_ENABLE);
        s->tls_auth_only = conf_get_bool(c, P_SMTPD_TLS_AUTH_ONLY);
        s->sasl_authenticated_header = conf_get_bool(c, P_SMTPD_SASL_AUTHENTICATED_HEADER);
        s->broken_sasl_auth_clients = conf_get_bool(c, P_BROKEN_SASL_AUTH_CLIENTS);
        s->sasl_forbid = sasl_options(c, P_SMTPD_SASL_SECURITY_OPTIONS, diags);
        s->sasl_tls_forbid = sasl_options(c, P_SMTPD_SASL_TLS_SECURITY_OPTIONS, diags);
        s->sasl_service = strdup(conf_get_str(c, P_SMTPD_SASL_SERVICE));
        if (!s->sasl_service)
                return -ENOMEM;
        if (!s->sasl_enable)
                return 0;
        path = conf_get_str(c, P_SMTPD_SASL_PATH);
        if (startswith(path, "inet:")) {
                /* Dovecot's auth listener is a unix socket in every sane
                 * setup; TCP would send passwords over the network. */
                diag_warning(diags, NULL, 0, "smtpd_sasl_path = %s: only unix sockets are "
                             "supported; AUTH will fail temporarily", path);
                return 0;
        }
        /* Postfix: relative to queue_directory ("private/auth"). */
        s->sasl_path = path[0] == '/' ? strdup(path)
                                      : strdup_printf("%s/%s", s->queue_directory, path);
        return s->sasl_path ? 0 : -ENOMEM;
}

/* Builds the TLS context of the service (at start and on reload); previous
 * passes its ticket keys on. Returns 0 with the context (NULL: no TLS) and
 * the effective level, or a negative errno after logging the reason. */
static int tls_load(Config *c, const TlsContext *previous, bool reload,
                    SmtpdTlsLevel *ret_level, TlsContext **ret) {
        _cleanup_free_ char *err = NULL;
        SmtpdTlsLevel level = SMTPD_TLS_NONE;
        TlsContext *ctx = NULL;
        int r;

        r = smtpd_tls_context_load(c, previous, &level, &ctx, &err);
        if (r < 0) {
                log_mail(LOG_ERR, MSGID_CONFIG_ERROR, NULL, LOG_NO_FIELDS, "TLS %s: %s%s",
                         reload ? "reload failed" : "setup failed", err ? err : strerror(-r),
                         reload ? "; keeping the previous certificates" : "");
                return r;
        }
        if (err)
                log_warning("%s", err);
        if (ctx && conf_get_int(c, P_SMTPD_TLS_LOGLEVEL) >= 1)
                log_info("TLS %s: %s", reload ? "reloaded" : "enabled",
                         conf_get_bool(c, P_SMTPD_TLS_WRAPPERMODE) ? "wrapper mode" :
                         level == SMTPD_TLS_ENCRYPT ? "STARTTLS required" : "STARTTLS offered");
        *ret_level = level;
        *ret = ctx;
        return 0;
}

/* Postfix's cleanup completes the headers of locally submitted mail only:
 * always_add_missing_headers, or a client that matches
 * local_header_rewrite_clients. The role (submission) gets it from its
 * services.d file, never from its name. */
static int settings_load_header_rewrite(Config *c, Diag *diags, SmtpdSettings *s) {
        s->always_add_missing_headers = conf_get_bool(c, P_ALWAYS_ADD_MISSING_HEADERS);
        s->header_rewrite_clients = 0;
        STRV_FOREACH(i, conf_get_list(c, P_LOCAL_HEADER_REWRITE_CLIENTS)) {
                if (strcaseeq(*i, "static:all"))
                        s->header_rewrite_clients |= SMTPD_REWRITE_ALL;
                else if (strcaseeq(*i, "permit_mynetworks"))
                        s->header_rewrite_clients |= SMTPD_REWRITE_MYNETWORKS;
                else if (strcaseeq(*i, "permit_sasl_authenticated"))
                        s->header_rewrite_clients |= SMTPD_REWRITE_SASL;
                else if (strcaseeq(*i, "permit_inet_interfaces"))
                        s->header_rewrite_clients |= SMTPD_REWRITE_INET_INTERFACES;
                else
                        diag_warning(diags, NULL, 0,
                                     "local_header_rewrite_clients: ignoring unsupported \"%s\"",
                                     *i);
        }
        if (s->header_rewrite_clients & SMTPD_REWRITE_INET_INTERFACES)
                return addr_classifier_new(c, diags, &s->own_addresses);
        return 0;
}

static unsigned ehlo_discard_parse(char * const *words, Diag *diags) {
        static const struct {
                const char *name;
                unsigned bit;
        } keywords[] = {
                {"pipelining", SMTPD_EHLO_PIPELINING},
                {"size", SMTPD_EHLO_SIZE},
                {"vrfy", SMTPD_EHLO_VRFY},
                {"etrn", SMTPD_EHLO_ETRN},
                {"starttls", SMTPD_EHLO_STARTTLS},
                {"auth", SMTPD_EHLO_AUTH},
                {"enhancedstatuscodes", SMTPD_EHLO_ENHANCEDSTATUSCODES},
                {"8bitmime", SMTPD_EHLO_8BITMIME},
                {"dsn", SMTPD_EHLO_DSN},
                {"smtputf8", SMTPD_EHLO_SMTPUTF8},
                {"chunking", SMTPD_EHLO_CHUNKING},
                {"xclient", SMTPD_EHLO_OTHER},
                {"xforward", SMTPD_EHLO_OTHER},
                {"verp", SMTPD_EHLO_OTHER},
                {"silent-discard", SMTPD_EHLO_SILENT},
        };
        unsigned mask = 0;

        STRV_FOREACH(w, words) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(keywords); i++)
                        if (strcaseeq(*w, keywords[i].name))
                                break;
                if (i < ELEMENTSOF(keywords))
                        mask |= keywords[i].bit;
                else
                        diag_warning(diags, NULL, 0, "smtpd_discard_ehlo_keywords: ignoring "
                                     "unknown keyword \"%s\"", *w);
        }
        return mask;
}

/* smtpd_reject_footer, smtpd_discard_ehlo_keywords, smtpd_noop_commands,
 * smtpd_junk_command_limit, strict_rfc821_envelopes. */
static int settings_load_protocol(Config *c, Diag *diags, SmtpdSettings *s) {
        const char *footer = conf_get_str(c, P_SMTPD_REJECT_FOOTER);
        char * const *noop = conf_get_list(c, P_SMTPD_NOOP_COMMANDS);

        if (!isempty(footer) && !(s->reject_footer = strdup(footer)))
                return -ENOMEM;
        s->ehlo_discard = ehlo_discard_parse(conf_get_list(c, P_SMTPD_DISCARD_EHLO_KEYWORDS),
                                             diags);
        if (noop && noop[0] && strv_copy(noop, &s->noop_commands) < 0)
                return -ENOMEM;
        s->junk_command_limit = (unsigned) MAX(conf_get_int(c, P_SMTPD_JUNK_COMMAND_LIMIT), 0);
        s->strict_rfc821_envelopes = conf_get_bool(c, P_STRICT_RFC821_ENVELOPES);
        return 0;
}

static int settings_load(Config *c, const char *service, Diag *diags, SmtpdSettings *s) {
        _cleanup_strv_free_ char **tables = NULL;
        const char *bare, *qmgr;
        char * const *nets;
        int r;

        s->service = strdup(service);
        s->myhostname = strdup(conf_get_str(c, P_MYHOSTNAME));
        s->myorigin = strdup(conf_get_str(c, P_MYORIGIN));
        s->banner = strdup(conf_get_str(c, P_SMTPD_BANNER));
        s->mail_name = strdup(conf_get_str(c, P_MAIL_NAME));
        s->queue_directory = strdup(conf_get_str(c, P_QUEUE_DIRECTORY));
        /* No qmgr_service_path parameter yet: the environment selects
         * another socket for tests. */
        qmgr = getenv("POSTERN_QMGR_SOCKET");
        s->qmgr_socket = strdup(qmgr && *qmgr ? qmgr : QMGR_SOCKET_DEFAULT);
        if (!s->service || !s->myhostname || !s->myorigin || !s->banner || !s->mail_name ||
            !s->queue_directory || !s->qmgr_socket)
                return -ENOMEM;

        s->message_size_limit = conf_get_size(c, P_MESSAGE_SIZE_LIMIT);
        s->queue_minfree = conf_get_size(c, P_QUEUE_MINFREE);
        s->line_length_limit = (size_t) MAX(conf_get_int(c, P_LINE_LENGTH_LIMIT), 512);
        s->header_size_limit = (size_t) MAX(conf_get_size(c, P_HEADER_SIZE_LIMIT), 1024);
        s->recipient_limit = (unsigned) MAX(conf_get_int(c, P_SMTPD_RECIPIENT_LIMIT), 1);
        s->timeout_usec = MAX(conf_get_time(c, P_SMTPD_TIMEOUT), 1) * 1000000ULL;
        s->error_sleep_usec = conf_get_time(c, P_SMTPD_ERROR_SLEEP_TIME) * 1000000ULL;
        s->soft_error_limit = (unsigned) MAX(conf_get_int(c, P_SMTPD_SOFT_ERROR_LIMIT), 0);
        s->hard_error_limit = (unsigned) MAX(conf_get_int(c, P_SMTPD_HARD_ERROR_LIMIT), 1);
        s->disable_vrfy = conf_get_bool(c, P_DISABLE_VRFY_COMMAND);
        s->smtputf8_enable = conf_get_bool(c, P_SMTPUTF8_ENABLE);
        s->forbid_unauth_pipelining = conf_get_bool(c, P_SMTPD_FORBID_UNAUTH_PIPELINING);
        bare = conf_get_str(c, P_SMTPD_FORBID_BARE_NEWLINE);
        s->bare_newline = strcaseeq(bare, "reject") ? SMTPD_BARE_NEWLINE_REJECT
                          : strcaseeq(bare, "no")   ? SMTPD_BARE_NEWLINE_NO
                                                    : SMTPD_BARE_NEWLINE_NORMALIZE;
        s->bare_newline_code = (unsigned) conf_get_int(c, P_SMTPD_FORBID_BARE_NEWLINE_REJECT_CODE);
        s->max_idle_usec = MAX(conf_get_time(c, P_MAX_IDLE), 1) * 1000000ULL;
        s->session_limit = SESSION_LIMIT_DEFAULT;
        r = settings_load_header_rewrite(c, diags, s);
        if (r < 0)
                return r;
        r = settings_load_protocol(c, diags, s);
        if (r < 0)
                return r;

        if ((r = strv_copy(conf_get_list(c, P_MYDESTINATION), &s->mydestination)) < 0 ||
            (r = strv_copy(conf_get_list(c, P_RELAY_DOMAINS), &s->relay_domains)) < 0 ||
            (r = strv_copy(conf_get_list(c, P_VIRTUAL_ALIAS_DOMAINS), &s->virtual_domains)) < 0)
                return r;
        STRV_FOREACH(i, conf_get_list(c, P_VIRTUAL_MAILBOX_DOMAINS))
                if (strv_extend(&s->virtual_domains, *i) < 0)
                        return -ENOMEM;
        if ((r = collect_tables(s->mydestination, &tables)) < 0 ||
            (r = collect_tables(s->relay_domains, &tables)) < 0 ||
            (r = collect_tables(s->virtual_domains, &tables)) < 0)
                return r;
        if (tables) {
                r = map_list_open(tables, MAP_FLAG_FOLD_KEYS, diags, &s->domain_maps);
                if (r < 0)
                        return r;
        }

        nets = conf_get_list(c, P_MYNETWORKS);
        s->mynetworks = calloc(strv_length(nets) + 1, sizeof(InetPrefix));
        if (!s->mynetworks)
                return -ENOMEM;
        STRV_FOREACH(i, nets) {
                InetPrefixError e;
                if (inet_prefix_parse(*i, true, &s->mynetworks[s->n_mynetworks], &e) == 0)
                        s->n_mynetworks++;
                else
                        diag_warning(diags, NULL, 0,
                                     "mynetworks: ignoring \"%s\" (%s); tables and host names "
                                     "need the restriction engine",
                                     *i, inet_prefix_error_to_string(e));
        }

        r = open_checks(c, P_HEADER_CHECKS, diags, &s->header_checks);
        if (r < 0)
                return r;
        r = open_checks(c, P_BODY_CHECKS, diags, &s->body_checks);
        if (r < 0)
                return r;
        return settings_load_tls_sasl(c, diags, s);
}

/* Worker reports, worker to supervisor, one per SOCK_SEQPACKET message. */
typedef enum WorkerReportType {
        WORKER_REPORT_READY,            /* serving */
        WORKER_REPORT_STATUS,           /* counts changed */
        WORKER_REPORT_DRAINING,         /* no longer accepting */
} WorkerReportType;

typedef struct WorkerReport {
        uint32_t type;
        uint32_t n_sessions;
        uint64_t n_queued;
        uint32_t busy;                  /* sessions or commits in progress */
} WorkerReport;

/* The one command, supervisor to worker: stop accepting, finish the
 * sessions, exit. End of file on the socket (the supervisor died) means
 * the same. */
#define WORKER_CMD_DRAIN 'D'

/* What a worker inherits from the supervisor at fork. */
typedef struct WorkerSetup {
        Config *config;                 /* borrowed */
        TlsContext *tls;                /* borrowed */
        SmtpdTlsLevel tls_level;
        const int *listen_fds;
        size_t n_listen_fds;
} WorkerSetup;

static bool worker_busy(Smtpd *d) {
        return d->n_sessions > 0 || smtpd_queue_pending(d->queue) > 0;
}

static void worker_report(Smtpd *d, WorkerReportType type) {
        WorkerReport rep = {
                .type = type,
                .n_sessions = d->n_sessions,
                .n_queued = d->n_queued,
                .busy = worker_busy(d),
        };

        if (d->master_fd < 0)
                return;
        d->reported_busy = rep.busy;
        /* A full socket only delays the counts: the next report fixes them. */
        (void) send(d->master_fd, &rep, sizeof(rep), MSG_DONTWAIT | MSG_NOSIGNAL);
}

static int on_report_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        worker_report(userdata, WORKER_REPORT_STATUS);
        return 0;
}

static void set_accepting(Smtpd *d, bool on) {
        if (d->accepting == on)
                return;
        for (size_t i = 0; i < d->n_listeners; i++)
                (void) sd_event_source_set_enabled(d->listeners[i], on ? SD_EVENT_ON : SD_EVENT_OFF);
        d->accepting = on;
}

void smtpd_session_count_changed(Smtpd *d) {
        int enabled = SD_EVENT_OFF;
        bool busy;

        if (d->exiting)
                return;
        busy = worker_busy(d);
        if (d->draining) {
                if (!busy) {
                        d->exiting = true;
                        (void) sd_event_exit(d->event, 0);
                        return;
                }
        } else if (d->n_sessions < d->settings.session_limit)
                set_accepting(d, true);
        /* Busy and idle go out at once (the supervisor's idle exit depends
         * on them), counts at most once a second. */
        if (busy != d->reported_busy) {
                worker_report(d, WORKER_REPORT_STATUS);
                return;
        }
        if (d->report_timer && sd_event_source_get_enabled(d->report_timer, &enabled) >= 0 &&
            enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(d->report_timer, STATUS_INTERVAL_USEC);
                (void) sd_event_source_set_enabled(d->report_timer, SD_EVENT_ONESHOT);
        }
}

static void worker_drain(Smtpd *d) {
        if (!d->draining) {
                d->draining = true;
                set_accepting(d, false);
                worker_report(d, WORKER_REPORT_DRAINING);
        }
        smtpd_session_count_changed(d);
}

static int on_master(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Smtpd *d = userdata;
        char cmd = 0;
        ssize_t n;

        n = recv(fd, &cmd, sizeof(cmd), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n == 1 && cmd == WORKER_CMD_DRAIN) {
                worker_drain(d);
                return 0;
        }
        if (n > 0)
                return 0;               /* unknown command */
        /* The supervisor is gone: finish the sessions in progress, exit. */
        log_warning("Supervisor went away, finishing %u session(s) and exiting", d->n_sessions);
        (void) sd_event_source_set_enabled(es, SD_EVENT_OFF);
        d->master_fd = -1;
        worker_drain(d);
        return 0;
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Smtpd *d = userdata;

        /* Drain a burst, but let the sessions run in between. */
        for (int i = 0; i < 64; i++) {
                int cfd;
                if (d->n_sessions >= d->settings.session_limit) {
                        set_accepting(d, false);
                        break;
                }
                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        /* EAGAIN: another worker won the race. */
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                break;
                        if (errno == EMFILE || errno == ENFILE) {
                                /* Wait for a session to end. */
                                log_warning("Out of file descriptors with %u sessions, pausing "
                                            "accept", d->n_sessions);
                                set_accepting(d, false);
                                break;
                        }
                        log_warning_errno(errno, "accept() failed: %m");
                        break;
                }
                if (smtp_session_new(d, cfd, NULL) < 0)
                        log_warning("Cannot set up a session, dropping the connection");
        }
        smtpd_session_count_changed(d);
        return 0;
}

static int on_worker_signal(sd_event_source *es, const struct signalfd_siginfo *si,
                            void *userdata) {
        Smtpd *d = userdata;
        return sd_event_exit(d->event, 0);
}

static int open_queue(Smtpd *d) {
        const char *q = d->settings.queue_directory;

        d->queue_dir_fd = open(q, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d->queue_dir_fd < 0)
                return log_error_errno(errno, "Cannot open queue_directory %s: %m", q);
        d->incoming_fd = openat(d->queue_dir_fd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d->incoming_fd < 0)
                return log_error_errno(errno, "Cannot open %s/incoming: %m", q);
        d->hold_fd = openat(d->queue_dir_fd, "hold", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d->hold_fd < 0)
                return log_error_errno(errno, "Cannot open %s/hold: %m", q);
        return 0;
}

static void smtpd_done(Smtpd *d) {
        d->exiting = true;
        while (d->sessions)
                smtp_session_free(d->sessions);
        /* Joins the worker threads after they committed what they were
         * given. */
        d->queue = smtpd_queue_free(d->queue);
        for (size_t i = 0; i < d->n_listeners; i++)
                sd_event_source_disable_unref(d->listeners[i]);
        free(d->listeners);
        sd_event_source_disable_unref(d->master_source);
        sd_event_source_disable_unref(d->report_timer);
        sd_bus_flush_close_unref(d->qmgr_bus);
        d->sasl = smtpd_sasl_free(d->sasl);
        d->tls = tls_context_unref(d->tls);
        smtpd_settings_done(&d->settings);
        smtpd_check_shutdown();         /* access policy engine, resolver, anvil */
        if (d->queue_dir_fd >= 0)
                close(d->queue_dir_fd);
        if (d->incoming_fd >= 0)
                close(d->incoming_fd);
        if (d->hold_fd >= 0)
                close(d->hold_fd);
        if (d->master_fd >= 0)
                close(d->master_fd);
        conf_unref(d->config);
        sd_event_unref(d->event);
}

/* The life of a worker process, from fork to exit. The configuration and
 * the TLS context come from the supervisor; tables are opened here, since
 * Berkeley DB handles must not cross a fork. */
static int worker_run(const WorkerSetup *ws, int master_fd) {
        Smtpd d = {.queue_dir_fd = -1, .incoming_fd = -1, .hold_fd = -1,
                   .master_fd = master_fd};
        Diag diags = {0};
        int r;

        d.config = conf_ref(ws->config);
        r = settings_load(d.config, arg_service, &diags, &d.settings);
        diag_done(&diags);      /* the supervisor logged them */
        if (r < 0) {
                log_error_errno(r, "Worker cannot set up the %s service: %m", arg_service);
                goto out;
        }
        d.tls = tls_context_ref(ws->tls);
        d.settings.tls_level = ws->tls_level;
        r = open_queue(&d);
        if (r < 0)
                goto out;
        /* The supervisor's loop came along with the fork; it stays untouched
         * (its epoll set is the supervisor's too). */
        r = sd_event_new(&d.event);
        if (r < 0)
                goto out;
        if ((r = sd_event_add_signal(d.event, NULL, SIGTERM, on_worker_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGINT, on_worker_signal, &d)) < 0)
                goto out;
        if (d.settings.sasl_enable && d.settings.sasl_path) {
                r = smtpd_sasl_new(d.event, d.settings.sasl_path, d.settings.sasl_service, &d.sasl);
                if (r < 0)
                        goto out;
        }
        d.listeners = calloc(ws->n_listen_fds, sizeof(sd_event_source *));
        if (!d.listeners) {
                r = log_oom();
                goto out;
        }
        for (size_t i = 0; i < ws->n_listen_fds; i++) {
                r = sd_event_add_io(d.event, &d.listeners[i], ws->listen_fds[i], EPOLLIN, on_accept,
                                    &d);
                if (r < 0) {
                        log_error_errno(r, "Cannot watch socket %d: %m", ws->listen_fds[i]);
                        goto out;
                }
                d.n_listeners++;
        }
        d.accepting = true;
        r = smtpd_queue_new(&d, &d.queue);
        if (r < 0) {
                log_error_errno(r, "Cannot start the queue writer: %m");
                goto out;
        }
        r = sd_event_add_io(d.event, &d.master_source, master_fd, EPOLLIN, on_master, &d);
        if (r < 0)
                goto out;
        r = sd_event_add_time_relative(d.event, &d.report_timer, CLOCK_MONOTONIC,
                                       STATUS_INTERVAL_USEC, 0, on_report_timer, &d);
        if (r < 0)
                goto out;
        (void) sd_event_source_set_enabled(d.report_timer, SD_EVENT_OFF);

        log_debug("Worker serving %s with %zu socket(s)", arg_service, d.n_listeners);
        worker_report(&d, WORKER_REPORT_READY);
        r = sd_event_loop(d.event);
out:
        smtpd_done(&d);
        return r;
}

/* The supervisor. */
typedef struct Master Master;
typedef struct Worker Worker;

struct Worker {
        Master *master;
        Worker *next;
        pid_t pid;
        int fd;                         /* our end of the report socket */
        sd_event_source *child_source;
        sd_event_source *io_source;
        unsigned generation;
        bool ready;
        bool draining;                  /* told to drain */
        bool drain_acked;               /* it stopped accepting */
        bool busy;
        unsigned n_sessions;
        uint64_t n_queued;
};

struct Master {
        sd_event *event;
        Config *config;
        TlsContext *tls;
        SmtpdTlsLevel tls_level;
        uint64_t max_idle_usec;
        unsigned n_workers;             /* wanted per generation */
        unsigned generation;
        int *listen_fds;
        size_t n_listen_fds;
        int incoming_fd;
        Worker *workers;
        sd_event_source *idle_timer;
        sd_event_source *status_timer;
        uint64_t n_queued_gone;         /* by workers that exited */
        bool ready_sent;
        bool reloading;
        bool exiting;
        int exit_code;
        uint64_t restart_window_start;
        unsigned n_restarts;
};

static unsigned cpu_count(void) {
        cpu_set_t set;
        int n;

        if (sched_getaffinity(0, sizeof(set), &set) < 0)
                return 1;
        n = CPU_COUNT(&set);
        return n > 0 ? (unsigned) n : 1;
}

static unsigned workers_wanted(Config *c) {
        long long n = conf_get_int(c, P_SMTPD_WORKER_PROCESSES);
        if (n <= 0)
                n = cpu_count();
        return (unsigned) MIN(n, (long long) WORKERS_MAX);
}

/* Removes temporary queue files (incoming/.QUEUEID) whose writer is gone:
 * messages that were never acknowledged. Every writer keeps its temporary
 * file open from creation to commit, and a write lease is granted only
 * while no other open file description of the file exists (fcntl(2)), so
 * the lease tells an orphan from the file of a live writer of any service
 * (submission and smtps write to the same directory), atomically. Writers
 * never reopen a temporary file, so holding the lease blocks nobody. */
static void remove_orphans(int incoming_fd) {
        DIR *dir;
        int fd;

        fd = openat(incoming_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return;
        dir = fdopendir(fd);
        if (!dir) {
                close(fd);
                return;
        }
        for (struct dirent *e; (e = readdir(dir));) {
                _cleanup_close_ int ffd = -1;

                if (e->d_name[0] != '.' || !queue_id_valid(e->d_name + 1))
                        continue;
                ffd = openat(incoming_fd, e->d_name,
                             O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (ffd < 0 || fcntl(ffd, F_SETLEASE, F_WRLCK) < 0)
                        continue;       /* in use (EAGAIN), or gone */
                if (unlinkat(incoming_fd, e->d_name, 0) == 0)
                        log_warning("Removed the unfinished queue file incoming/%s of a worker "
                                    "that died", e->d_name);
                (void) fcntl(ffd, F_SETLEASE, F_UNLCK);
        }
        closedir(dir);
}

static Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;
        for (Worker **p = &w->master->workers; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        break;
                }
        sd_event_source_disable_unref(w->child_source);
        sd_event_source_disable_unref(w->io_source);
        if (w->fd >= 0)
                close(w->fd);
        free(w);
        return NULL;
}

static void master_update(Master *m);
static int worker_spawn(Master *m);

static void worker_send(Worker *w, char cmd) {
        if (w->fd >= 0 && send(w->fd, &cmd, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                log_debug("Cannot send a command to worker %d: %m", (int) w->pid);
}

static void master_notify_status(Master *m) {
        unsigned sessions = 0, workers = 0;
        uint64_t queued = m->n_queued_gone;

        for (Worker *w = m->workers; w; w = w->next) {
                sessions += w->n_sessions;
                queued += w->n_queued;
                workers++;
        }
        (void) sd_notifyf(false, "STATUS=%u session%s, %" PRIu64 " message%s queued, %u worker%s",
                          sessions, sessions == 1 ? "" : "s", queued, queued == 1 ? "" : "s",
                          workers, workers == 1 ? "" : "s");
}

static int on_status_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        master_notify_status(userdata);
        return 0;
}

static void master_begin_exit(Master *m, int code, bool drain) {
        if (m->exiting)
                return;
        m->exiting = true;
        m->exit_code = code;
        (void) sd_notify(false, drain ? "STOPPING=1\nSTATUS=Idle, exiting"
                                      : "STOPPING=1\nSTATUS=Shutting down");
        (void) sd_event_source_set_enabled(m->idle_timer, SD_EVENT_OFF);
        for (Worker *w = m->workers; w; w = w->next)
                if (drain) {
                        w->draining = true;
                        worker_send(w, WORKER_CMD_DRAIN);
                } else
                        (void) kill(w->pid, SIGTERM);
        if (!m->workers)
                (void) sd_event_exit(m->event, code);
}

/* Moves a reload on: once every worker of the new generation is ready, the
 * older ones are told to drain; once they all stopped accepting, new
 * connections only reach the new configuration and the reload is done. */
static void master_check_generation(Master *m) {
        bool old_left = false;

        for (Worker *w = m->workers; w; w = w->next)
                if (w->generation == m->generation && !w->ready)
                        return;
        if (!m->ready_sent) {
                m->ready_sent = true;
                (void) sd_notify(false, "READY=1");
                master_notify_status(m);
                log_debug("%u worker(s) serving %s", m->n_workers, arg_service);
        }
        if (!m->reloading)
                return;
        for (Worker *w = m->workers; w; w = w->next) {
                if (w->generation == m->generation)
                        continue;
                if (!w->draining) {
                        w->draining = true;
                        worker_send(w, WORKER_CMD_DRAIN);
                }
                if (!w->drain_acked)
                        old_left = true;
        }
        if (old_left)
                return;
        m->reloading = false;
        log_info("Reloaded the TLS configuration, settings and tables; %u new worker%s serving",
                 m->n_workers, m->n_workers == 1 ? "" : "s");
        (void) sd_notify(false, "READY=1");
        master_notify_status(m);
}

/* Status and idle exit after any report. */
static void master_update(Master *m) {
        int enabled = SD_EVENT_OFF;
        bool busy = m->reloading;
        uint64_t now = 0;

        if (sd_event_source_get_enabled(m->status_timer, &enabled) >= 0 &&
            enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(m->status_timer, STATUS_INTERVAL_USEC);
                (void) sd_event_source_set_enabled(m->status_timer, SD_EVENT_ONESHOT);
        }
        if (m->exiting)
                return;
        for (Worker *w = m->workers; w; w = w->next)
                busy |= w->busy || w->draining || !w->ready;
        if (busy) {
                (void) sd_event_source_set_enabled(m->idle_timer, SD_EVENT_OFF);
                return;
        }
        if (sd_event_source_get_enabled(m->idle_timer, &enabled) >= 0 && enabled == SD_EVENT_OFF) {
                (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
                (void) sd_event_source_set_time(m->idle_timer, now + m->max_idle_usec);
                (void) sd_event_source_set_enabled(m->idle_timer, SD_EVENT_ONESHOT);
        }
}

static int on_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        Master *m = userdata;

        for (Worker *w = m->workers; w; w = w->next)
                if (w->busy || w->draining || !w->ready)
                        return 0;
        log_debug("Idle for the max_idle time, exiting");
        master_begin_exit(m, 0, true);
        return 0;
}

static int on_worker_report(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Worker *w = userdata;
        Master *m = w->master;
        WorkerReport rep;
        ssize_t n;

        n = recv(fd, &rep, sizeof(rep), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                /* Gone; its exit status arrives through the child source. */
                (void) sd_event_source_set_enabled(es, SD_EVENT_OFF);
                return 0;
        }
        if (n != sizeof(rep))
                return 0;
        w->n_sessions = rep.n_sessions;
        w->n_queued = rep.n_queued;
        w->busy = rep.busy;
        if (rep.type == WORKER_REPORT_READY)
                w->ready = true;
        else if (rep.type == WORKER_REPORT_DRAINING)
                w->drain_acked = true;
        if (rep.type != WORKER_REPORT_STATUS)
                master_check_generation(m);
        master_update(m);
        return 0;
}

static int on_worker_exit(sd_event_source *es, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        Master *m = w->master;
        bool expected = w->draining || m->exiting;
        bool current = w->generation == m->generation;
        uint64_t now = 0;

        if (expected && si->si_code == CLD_EXITED && si->si_status == 0)
                log_debug("Worker %d exited", (int) w->pid);
        else if (si->si_code == CLD_EXITED)
                log_error("Worker %d exited with status %d%s", (int) w->pid, si->si_status,
                          expected || !current ? "" : ", starting another");
        else
                log_error("Worker %d was killed by signal %s%s", (int) w->pid,
                          strempty(sigabbrev_np(si->si_status)),
                          expected || !current ? "" : ", starting another");
        m->n_queued_gone += w->n_queued;
        remove_orphans(m->incoming_fd);
        worker_free(w);

        if (m->exiting) {
                if (!m->workers)
                        (void) sd_event_exit(m->event, m->exit_code);
                return 0;
        }
        if (!expected && current) {
                (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
                if (now > m->restart_window_start + RESTART_WINDOW_USEC) {
                        m->restart_window_start = now;
                        m->n_restarts = 0;
                }
                if (++m->n_restarts > RESTART_BURST) {
                        log_error("Workers keep failing (%u times within %llus), giving up",
                                  m->n_restarts,
                                  (unsigned long long) (RESTART_WINDOW_USEC / 1000000));
                        master_begin_exit(m, -EIO, false);
                        return 0;
                }
                if (worker_spawn(m) < 0 && !m->workers) {
                        master_begin_exit(m, -EIO, false);
                        return 0;
                }
        }
        master_check_generation(m);
        master_update(m);
        return 0;
}

static int worker_spawn(Master *m) {
        _cleanup_free_ Worker *w = NULL;
        int sv[2], r;
        pid_t pid;

        w = calloc(1, sizeof(*w));
        if (!w)
                return log_oom();
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return log_error_errno(errno, "Cannot create a worker socket: %m");
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(sv[0]);
                close(sv[1]);
                return log_error_errno(r, "Cannot fork a worker: %m");
        }
        if (pid == 0) {
                WorkerSetup ws = {
                        .config = m->config,
                        .tls = m->tls,
                        .tls_level = m->tls_level,
                        .listen_fds = m->listen_fds,
                        .n_listen_fds = m->n_listen_fds,
                };
                close(sv[0]);
                for (Worker *o = m->workers; o; o = o->next)
                        close(o->fd);
                close(m->incoming_fd);
                /* Only the supervisor talks to systemd. */
                (void) unsetenv("NOTIFY_SOCKET");
                (void) unsetenv("WATCHDOG_USEC");
                (void) unsetenv("WATCHDOG_PID");
                r = worker_run(&ws, sv[1]);
                fflush(NULL);
                _exit(r < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
        }
        close(sv[1]);
        w->master = m;
        w->pid = pid;
        w->fd = sv[0];
        w->generation = m->generation;
        r = sd_event_add_child(m->event, &w->child_source, pid, WEXITED, on_worker_exit, w);
        if (r >= 0)
                r = sd_event_add_io(m->event, &w->io_source, w->fd, EPOLLIN, on_worker_report, w);
        if (r < 0) {
                /* Without a way to watch it, the worker must not serve. */
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                sd_event_source_disable_unref(w->child_source);
                close(w->fd);
                return log_error_errno(r, "Cannot watch worker %d: %m", (int) pid);
        }
        w->next = m->workers;
        m->workers = steal_ptr(w);
        return 0;
}

/* Loads and checks the whole configuration: main.cf and services.d, the
 * settings with their tables, the TLS context. Logs every problem; on
 * success *ret_config and *ret_tls (NULL: no TLS) are the caller's. */
static int master_load(const TlsContext *previous, bool reload, Config **ret_config,
                       TlsContext **ret_tls, SmtpdTlsLevel *ret_level) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        SmtpdSettings check = {0};
        Diag diags = {0};
        int r;

        r = conf_load(arg_config_dir, arg_service, &diags, &c);
        if (r >= 0)
                r = settings_load(c, arg_service, &diags, &check);
        smtpd_settings_done(&check);
        log_diags(&diags, !reload);
        if (r < 0) {
                log_mail(LOG_ERR, MSGID_CONFIG_ERROR, NULL, LOG_NO_FIELDS,
                         reload ? "Reload failed: cannot load the configuration of %s (%s); "
                                  "keeping the running one"
                                : "Cannot load the configuration of %s: %s",
                         arg_service, strerror(-r));
                return r;
        }
        r = tls_load(c, previous, reload, ret_level, ret_tls);
        if (r < 0)
                return r;
        *ret_config = steal_ptr(c);
        return 0;
}

static void master_set_config(Master *m, Config *c, TlsContext *tls, SmtpdTlsLevel level) {
        conf_unref(m->config);
        m->config = c;
        tls_context_unref(m->tls);
        m->tls = tls;
        m->tls_level = level;
        m->max_idle_usec = MAX(conf_get_time(c, P_MAX_IDLE), 1) * 1000000ULL;
        m->n_workers = workers_wanted(c);
}

/* SIGHUP: a new generation of workers with the new configuration, or, if
 * it does not load, nothing changes. */
static int on_master_reload(sd_event_source *es, const struct signalfd_siginfo *si,
                            void *userdata) {
        Master *m = userdata;
        Config *c = NULL;
        TlsContext *tls = NULL;
        SmtpdTlsLevel level = SMTPD_TLS_NONE;
        int r;

        if (m->exiting)
                return 0;
        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration");
        r = master_load(m->tls, true, &c, &tls, &level);
        if (r < 0) {
                (void) sd_notify(false, "READY=1");
                master_notify_status(m);
                return 0;
        }
        master_set_config(m, c, tls, level);
        m->generation++;
        m->reloading = true;
        (void) sd_event_source_set_enabled(m->idle_timer, SD_EVENT_OFF);
        for (unsigned i = 0; i < m->n_workers; i++)
                if (worker_spawn(m) < 0)
                        break;
        master_check_generation(m);
        master_update(m);
        return 0;
}

static int on_master_signal(sd_event_source *es, const struct signalfd_siginfo *si,
                            void *userdata) {
        master_begin_exit(userdata, 0, false);
        return 0;
}

static int master_listen_fds(Master *m) {
        _cleanup_strv_free_ char **names = NULL;
        int n, r;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Cannot get sockets from systemd: %m");
        if (n == 0) {
                log_error("No listening sockets: postern-smtpd runs under systemd socket "
                          "activation (postern-%s.socket) and never binds a port itself",
                          arg_service);
                return -EBADF;
        }
        m->listen_fds = calloc((size_t) n, sizeof(int));
        if (!m->listen_fds)
                return log_oom();
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);
                if (r <= 0) {
                        log_error("Socket %d (%s) from systemd is not a listening stream socket",
                                  fd, names && names[i] ? names[i] : "unnamed");
                        return -EBADF;
                }
                /* Non-blocking: workers race for each connection. */
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
                    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "Cannot set up socket %d: %m", fd);
                m->listen_fds[m->n_listen_fds++] = fd;
        }
        return 0;
}

static int master_open_queue(Master *m) {
        const char *q = conf_get_str(m->config, P_QUEUE_DIRECTORY);
        _cleanup_close_ int qfd = -1;

        qfd = open(q, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (qfd < 0)
                return log_error_errno(errno, "Cannot open queue_directory %s: %m", q);
        m->incoming_fd = openat(qfd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->incoming_fd < 0)
                return log_error_errno(errno, "Cannot open %s/incoming: %m", q);
        remove_orphans(m->incoming_fd);
        return 0;
}

static void raise_fd_limit(void) {
        struct rlimit rl;
        /* One descriptor per session plus one per message being written. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static void help(void) {
        printf("Usage: postern-smtpd [-c DIR] [--service=smtpd|submission|smtps]\n\n"
               "The postern SMTP server. Runs under systemd socket activation\n"
               "(postern-smtpd.socket and friends); see postern-smtpd(8).\n\n"
               "  -c, --config-dir=DIR   configuration directory (default %s)\n"
               "      --service=NAME     service role: smtpd, submission or smtps\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n",
               conf_default_dir());
}

static int parse_argv(int argc, char **argv) {
        enum { ARG_SERVICE = 0x100, ARG_VERSION };
        static const struct option options[] = {
                {"config-dir", required_argument, NULL, 'c'},
                {"service", required_argument, NULL, ARG_SERVICE},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_config_dir = optarg;
                        break;
                case ARG_SERVICE:
                        if (!streq(optarg, "smtpd") && !streq(optarg, "submission") &&
                            !streq(optarg, "smtps")) {
                                fprintf(stderr, "postern-smtpd: unknown service \"%s\"\n", optarg);
                                return -EINVAL;
                        }
                        arg_service = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("postern-smtpd %s\n", POSTERN_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "postern-smtpd: unexpected argument \"%s\"\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static void master_done(Master *m) {
        /* Workers still running (a failed start) are told to go; we do not
         * wait: systemd stops what is left in the cgroup. */
        while (m->workers) {
                (void) kill(m->workers->pid, SIGTERM);
                worker_free(m->workers);
        }
        sd_event_source_disable_unref(m->idle_timer);
        sd_event_source_disable_unref(m->status_timer);
        tls_context_unref(m->tls);
        conf_unref(m->config);
        free(m->listen_fds);
        if (m->incoming_fd >= 0)
                close(m->incoming_fd);
        sd_event_unref(m->event);
}

static int run(int argc, char **argv) {
        Master m = {.incoming_fd = -1};
        Config *c = NULL;
        TlsContext *tls = NULL;
        SmtpdTlsLevel level = SMTPD_TLS_NONE;
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        log_setup("postern-smtpd", arg_service, LOG_TARGET_AUTO);

        r = master_load(NULL, false, &c, &tls, &level);
        if (r < 0)
                goto out;
        master_set_config(&m, c, tls, level);
        r = master_listen_fds(&m);
        if (r < 0)
                goto out;
        r = master_open_queue(&m);
        if (r < 0)
                goto out;
        raise_fd_limit();

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        r = sd_event_default(&m.event);
        if (r < 0)
                goto out;
        if ((r = sd_event_add_signal(m.event, NULL, SIGTERM, on_master_signal, &m)) < 0 ||
            (r = sd_event_add_signal(m.event, NULL, SIGINT, on_master_signal, &m)) < 0 ||
            (r = sd_event_add_signal(m.event, NULL, SIGHUP, on_master_reload, &m)) < 0)
                goto out;
        /* WATCHDOG=1 from this loop when the unit sets WatchdogSec=. */
        r = sd_event_set_watchdog(m.event, true);
        if (r < 0)
                goto out;
        r = sd_event_add_time_relative(m.event, &m.idle_timer, CLOCK_MONOTONIC, m.max_idle_usec, 0,
                                       on_idle, &m);
        if (r < 0)
                goto out;
        (void) sd_event_source_set_enabled(m.idle_timer, SD_EVENT_OFF);
        r = sd_event_add_time_relative(m.event, &m.status_timer, CLOCK_MONOTONIC,
                                       STATUS_INTERVAL_USEC, 0, on_status_timer, &m);
        if (r < 0)
                goto out;
        (void) sd_event_source_set_enabled(m.status_timer, SD_EVENT_OFF);

        m.generation = 1;
        for (unsigned i = 0; i < m.n_workers; i++) {
                r = worker_spawn(&m);
                if (r < 0)
                        goto out;
        }
        (void) sd_notifyf(false, "STATUS=Starting %u worker%s (%s)", m.n_workers,
                          m.n_workers == 1 ? "" : "s", arg_service);
        r = sd_event_loop(m.event);
out:
        master_done(&m);
        return r;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
