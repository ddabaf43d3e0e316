/* smtpd.c: main() of postern-smtpd, the SMTP server behind the smtpd (25),
 * submission (587) and smtps (465) services. Loads main.cf plus
 * services.d/SERVICE.cf, resolves the settings the sessions use, takes the
 * listening sockets from systemd (it never binds one itself), accepts
 * connections on one sd-event loop, and exits after max_idle without
 * sessions so that socket activation starts it again. Sessions live in
 * smtpd-session.c, the group-committing queue writer in smtpd-queue.c, the
 * relay check in smtpd-check.c, TLS in smtpd-tls.c and the Dovecot SASL
 * client in smtpd-sasl.c. SIGHUP (systemctl reload) reloads the TLS
 * certificates and settings: new connections get the new context, sessions
 * in progress keep theirs. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conf.h"
#include "log.h"
#include "smtpd.h"

/* Sessions per process. Postfix runs one process per session and caps them
 * with default_process_limit; one postern-smtpd serves them all, so the cap
 * is per process and higher. */
#define SESSION_LIMIT_DEFAULT 10000

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

/* Builds the TLS context of the service (at start and on reload). Returns
 * 0 or a negative errno after logging the reason. */
static int tls_load(Smtpd *d, Config *c, bool reload) {
        _cleanup_free_ char *err = NULL;
        SmtpdTlsLevel level = SMTPD_TLS_NONE;
        TlsContext *ctx = NULL;
        int r;

        r = smtpd_tls_context_load(c, d->tls, &level, &ctx, &err);
        if (r < 0)
                return log_error_errno(r, "TLS %s: %s%s", reload ? "reload failed" : "setup failed",
                                       err ? err : strerror(-r),
                                       reload ? "; keeping the previous certificates" : "");
        if (err)
                log_warning("%s", err);
        tls_context_unref(d->tls);
        d->tls = ctx;
        d->settings.tls_level = level;
        if (ctx && d->settings.tls_loglevel >= 1)
                log_info("TLS %s: %s", reload ? "reloaded" : "enabled",
                         d->settings.tls_wrappermode ? "wrapper mode" :
                         level == SMTPD_TLS_ENCRYPT ? "STARTTLS required" : "STARTTLS offered");
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
        /* Postfix's cleanup completes headers of locally submitted mail; here
         * that is mail through the submission services. */
        s->add_missing_headers = !streq(service, "smtpd");

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

static void update_status(Smtpd *d, bool force) {
        uint64_t now = 0;
        (void) sd_event_now(d->event, CLOCK_MONOTONIC, &now);
        if (!force && now < d->status_updated + 1000000)
                return;
        d->status_updated = now;
        (void) sd_notifyf(false, "STATUS=Serving %u session%s", d->n_sessions,
                          d->n_sessions == 1 ? "" : "s");
}

static void set_accepting(Smtpd *d, bool on) {
        if (d->accepting == on)
                return;
        for (size_t i = 0; i < d->n_listeners; i++)
                (void) sd_event_source_set_enabled(d->listeners[i], on ? SD_EVENT_ON : SD_EVENT_OFF);
        d->accepting = on;
}

void smtpd_session_count_changed(Smtpd *d) {
        uint64_t now = 0;

        if (d->exiting)
                return;
        if (d->n_sessions < d->settings.session_limit)
                set_accepting(d, true);
        update_status(d, false);
        if (d->n_sessions == 0 && smtpd_queue_pending(d->queue) == 0) {
                (void) sd_event_now(d->event, CLOCK_MONOTONIC, &now);
                (void) sd_event_source_set_time(d->idle_timer, now + d->settings.max_idle_usec);
                (void) sd_event_source_set_enabled(d->idle_timer, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(d->idle_timer, SD_EVENT_OFF);
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

static int on_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        Smtpd *d = userdata;
        if (d->n_sessions > 0 || smtpd_queue_pending(d->queue) > 0)
                return 0;
        log_debug("Idle for the max_idle time, exiting");
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Idle, exiting");
        return sd_event_exit(d->event, 0);
}

/* SIGHUP: re-reads the configuration for the TLS context only (other
 * settings apply when the service next starts, after max_idle or a
 * restart). A configuration or certificate that does not load changes
 * nothing. */
static int on_reload(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Smtpd *d = userdata;
        _cleanup_(conf_unrefp) Config *c = NULL;
        Diag diags = {0};
        int r;

        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the TLS configuration");
        r = conf_load(arg_config_dir, arg_service, &diags, &c);
        for (size_t i = 0; i < diags.n; i++) {
                _cleanup_free_ char *t = diag_entry_format(&diags.entries[i]);
                if (diags.entries[i].level == DIAG_ERROR)
                        log_error("%s", strempty(t));
        }
        diag_done(&diags);
        if (r < 0)
                log_error_errno(r, "Reload: cannot load the configuration, keeping the running "
                                "one: %m");
        else if (tls_load(d, c, true) >= 0)
                log_info("Reloaded the TLS configuration");
        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %u session%s", d->n_sessions,
                          d->n_sessions == 1 ? "" : "s");
        return 0;
}

static int on_signal(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Smtpd *d = userdata;
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return sd_event_exit(d->event, 0);
}

static int setup_listeners(Smtpd *d) {
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
        d->listeners = calloc((size_t) n, sizeof(sd_event_source *));
        if (!d->listeners)
                return log_oom();
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);
                if (r <= 0) {
                        log_error("Socket %d (%s) from systemd is not a listening stream socket",
                                  fd, names && names[i] ? names[i] : "unnamed");
                        return -EBADF;
                }
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
                    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "Cannot set up socket %d: %m", fd);
                r = sd_event_add_io(d->event, &d->listeners[i], fd, EPOLLIN, on_accept, d);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch socket %d: %m", fd);
                d->n_listeners++;
        }
        d->accepting = true;
        return 0;
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

static void smtpd_done(Smtpd *d) {
        d->exiting = true;
        while (d->sessions)
                smtp_session_free(d->sessions);
        /* Joins the worker after it committed what it was given. */
        d->queue = smtpd_queue_free(d->queue);
        for (size_t i = 0; i < d->n_listeners; i++)
                sd_event_source_disable_unref(d->listeners[i]);
        free(d->listeners);
        sd_event_source_disable_unref(d->idle_timer);
        sd_bus_flush_close_unref(d->qmgr_bus);
        d->sasl = smtpd_sasl_free(d->sasl);
        d->tls = tls_context_unref(d->tls);
        smtpd_settings_done(&d->settings);
        if (d->queue_dir_fd >= 0)
                close(d->queue_dir_fd);
        if (d->incoming_fd >= 0)
                close(d->incoming_fd);
        if (d->hold_fd >= 0)
                close(d->hold_fd);
        conf_unref(d->config);
        sd_event_unref(d->event);
}

static int run(int argc, char **argv) {
        Smtpd d = {.queue_dir_fd = -1, .incoming_fd = -1, .hold_fd = -1};
        Diag diags = {0};
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        log_setup("postern-smtpd", arg_service, LOG_TARGET_AUTO);

        r = conf_load(arg_config_dir, arg_service, &diags, &d.config);
        for (size_t i = 0; i < diags.n; i++) {
                _cleanup_free_ char *t = diag_entry_format(&diags.entries[i]);
                if (diags.entries[i].level == DIAG_ERROR)
                        log_error("%s", strempty(t));
                else
                        log_warning("%s", strempty(t));
        }
        diag_done(&diags);
        if (r < 0) {
                log_error_errno(r, "Cannot load the configuration: %m");
                goto out;
        }
        r = settings_load(d.config, arg_service, &diags, &d.settings);
        for (size_t i = 0; i < diags.n; i++) {
                _cleanup_free_ char *t = diag_entry_format(&diags.entries[i]);
                if (diags.entries[i].level == DIAG_ERROR)
                        log_error("%s", strempty(t));
                else
                        log_warning("%s", strempty(t));
        }
        diag_done(&diags);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the %s service: %m", arg_service);
                goto out;
        }
        r = tls_load(&d, d.config, false);
        if (r < 0)
                goto out;
        r = open_queue(&d);
        if (r < 0)
                goto out;
        raise_fd_limit();

        r = sd_event_default(&d.event);
        if (r < 0)
                goto out;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(d.event, NULL, SIGTERM, on_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGINT, on_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGHUP, on_reload, &d)) < 0)
                goto out;
        if (d.settings.sasl_enable && d.settings.sasl_path) {
                r = smtpd_sasl_new(d.event, d.settings.sasl_path, d.settings.sasl_service, &d.sasl);
                if (r < 0)
                        goto out;
        }
        r = setup_listeners(&d);
        if (r < 0)
                goto out;
        r = smtpd_queue_new(&d, &d.queue);
        if (r < 0) {
                log_error_errno(r, "Cannot start the queue writer: %m");
                goto out;
        }
        r = sd_event_add_time_relative(d.event, &d.idle_timer, CLOCK_MONOTONIC,
                                       d.settings.max_idle_usec, 0, on_idle, &d);
        if (r < 0)
                goto out;

        log_debug("Serving %s with %zu socket(s)", arg_service, d.n_listeners);
        (void) sd_notifyf(false, "READY=1\nSTATUS=Waiting for connections (%s)", arg_service);
        r = sd_event_loop(d.event);
out:
        smtpd_done(&d);
        return r;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
