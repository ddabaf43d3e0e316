/* deliver-local.c: main() of postern-deliver-local, the local(8) and
 * virtual(8) delivery agent. Loads main.cf plus services.d/deliver-local.cf,
 * opens the alias and virtual tables, takes the listening socket from
 * systemd (postern-deliver-local.socket), serves org.postern.Delivery1 on
 * peer-to-peer sd-bus connections and exits after max_idle without
 * connections or deliveries. The bus interface is deliver-local-bus.c; the
 * delivery semantics are local.c and virtual.c. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "bus-names.h"
#include "conf.h"
#include "deliver-local.h"
#include "fileio.h"
#include "log.h"

static const char *arg_config_dir;

static void settings_done(DeliverSettings *s) {
        free(s->myhostname);
        free(s->myorigin);
        strv_free(s->mydestination);
        free(s->queue_directory);
        free(s->qmgr_socket);
        free(s->recipient_delimiter);
        free(s->home_mailbox);
        free(s->mail_spool_directory);
        free(s->mailbox_command);
        free(s->luser_relay);
        strv_free(s->forward_path);
        free(s->default_privs);
        free(s->local_command_shell);
        free(s->virtual_mailbox_base);
        map_list_free(s->alias_maps);
        strv_free(s->alias_map_specs);
        free(s->alias_map_owner);
        map_list_free(s->virtual_mailbox_maps);
        map_list_free(s->virtual_uid_maps);
        map_list_free(s->virtual_gid_maps);
        *s = (DeliverSettings){0};
}

static int strv_copy(char *const *l, char ***ret) {
        _cleanup_strv_free_ char **c = NULL;
        STRV_FOREACH(i, l)
        if (strv_extend(&c, *i) < 0)
                return -ENOMEM;
        if (!c && !(c = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret = steal_ptr(c);
        return 0;
}

static unsigned parse_where(Config *c, ConfParam p, Diag *diags) {
        unsigned w = 0;
        STRV_FOREACH(i, conf_get_list(c, p)) {
                if (strcaseeq(*i, "alias"))
                        w |= DELIVER_FROM_ALIAS;
                else if (strcaseeq(*i, "forward"))
                        w |= DELIVER_FROM_FORWARD;
                else if (strcaseeq(*i, "include"))
                        w |= DELIVER_FROM_INCLUDE;
                else
                        diag_warning(diags, NULL, 0, "%s: ignoring unknown value \"%s\"",
                                     conf_params[p].name, *i);
        }
        return w;
}

static unsigned parse_locks(Config *c, ConfParam p, Diag *diags) {
        unsigned w = 0;
        STRV_FOREACH(i, conf_get_list(c, p)) {
                if (strcaseeq(*i, "fcntl"))
                        w |= DELIVER_LOCK_FCNTL;
                else if (strcaseeq(*i, "dotlock"))
                        w |= DELIVER_LOCK_DOTLOCK;
                else if (strcaseeq(*i, "flock"))
                        w |= DELIVER_LOCK_FLOCK;
                else
                        diag_warning(diags, NULL, 0, "%s: ignoring unknown lock method \"%s\"",
                                     conf_params[p].name, *i);
        }
        return w;
}

static int open_maps(Config *c, ConfParam p, unsigned flags, Diag *diags, MapList **ret) {
        char *const *specs = conf_get_list(c, p);
        if (!specs || !specs[0]) {
                *ret = NULL;
                return 0;
        }
        return map_list_open(specs, flags, diags, ret);
}

/* Postfix runs file and command deliveries from an alias table with the
 * rights of the table's owner (default_privs when that is root): remember
 * the owner of each table's file. */
static int alias_owners(DeliverSettings *s) {
        size_t n = strv_length(s->alias_map_specs);

        s->alias_map_owner = calloc(n + 1, sizeof(uid_t));
        if (!s->alias_map_owner)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *source = NULL, *index = NULL;
                const char *spec = s->alias_map_specs[i], *file = NULL;
                struct stat st;

                s->alias_map_owner[i] = (uid_t)-1;
                if (map_files(spec, &source, &index) >= 0)
                        file = index;
                else if (strchr(spec, ':'))
                        file = strchr(spec, ':') + 1;
                if (file && *file == '/' && stat(file, &st) >= 0)
                        s->alias_map_owner[i] = st.st_uid;
        }
        return 0;
}

static int settings_load(Config *c, Diag *diags, DeliverSettings *s) {
        const char *qmgr, *owner;
        struct passwd *pw;
        int r;

        s->myhostname = strdup(conf_get_str(c, P_MYHOSTNAME));
        s->myorigin = strdup(conf_get_str(c, P_MYORIGIN));
        s->queue_directory = strdup(conf_get_str(c, P_QUEUE_DIRECTORY));
        qmgr = secure_getenv("POSTERN_QMGR_SOCKET");
        s->qmgr_socket =
                qmgr && *qmgr ? strdup(qmgr) : path_join(postern_runtime_dir(), QUEUE_BUS_SOCKET);
        s->recipient_delimiter = strdup(conf_get_str(c, P_RECIPIENT_DELIMITER));
        s->home_mailbox = strdup(conf_get_str(c, P_HOME_MAILBOX));
        s->mail_spool_directory = strdup(conf_get_str(c, P_MAIL_SPOOL_DIRECTORY));
        s->mailbox_command = strdup(conf_get_str(c, P_MAILBOX_COMMAND));
        s->luser_relay = strdup(conf_get_str(c, P_LUSER_RELAY));
        s->default_privs = strdup(conf_get_str(c, P_DEFAULT_PRIVS));
        s->local_command_shell = strdup(conf_get_str(c, P_LOCAL_COMMAND_SHELL));
        s->virtual_mailbox_base = strdup(conf_get_str(c, P_VIRTUAL_MAILBOX_BASE));
        if (!s->myhostname || !s->myorigin || !s->queue_directory || !s->qmgr_socket ||
            !s->recipient_delimiter || !s->home_mailbox || !s->mail_spool_directory ||
            !s->mailbox_command || !s->luser_relay || !s->default_privs ||
            !s->local_command_shell || !s->virtual_mailbox_base)
                return -ENOMEM;
        if ((r = strv_copy(conf_get_list(c, P_MYDESTINATION), &s->mydestination)) < 0 ||
            /* A raw list: split here, $names are expanded per delivery. */
            (r = str_split_list(strempty(conf_get_str(c, P_FORWARD_PATH)), false,
                                &s->forward_path)) < 0 ||
            (r = strv_copy(conf_get_list(c, P_ALIAS_MAPS), &s->alias_map_specs)) < 0)
                return r;

        owner = conf_get_str(c, P_MAIL_OWNER);
        pw = getpwnam(owner);
        s->mail_owner_uid = pw ? pw->pw_uid : (uid_t)-1;
        s->mailbox_size_limit = conf_get_size(c, P_MAILBOX_SIZE_LIMIT);
        s->virtual_mailbox_limit = conf_get_size(c, P_VIRTUAL_MAILBOX_LIMIT);
        s->virtual_minimum_uid = conf_get_int(c, P_VIRTUAL_MINIMUM_UID);
        s->allow_commands = parse_where(c, P_ALLOW_MAIL_TO_COMMANDS, diags);
        s->allow_files = parse_where(c, P_ALLOW_MAIL_TO_FILES, diags);
        s->mailbox_lock = parse_locks(c, P_MAILBOX_DELIVERY_LOCK, diags);
        s->virtual_lock = parse_locks(c, P_VIRTUAL_MAILBOX_LOCK, diags);
        s->lock_attempts = (unsigned)MAX(conf_get_int(c, P_DELIVER_LOCK_ATTEMPTS), 1);
        s->lock_delay_usec = MAX(conf_get_time(c, P_DELIVER_LOCK_DELAY), 1) * 1000000ULL;
        s->stale_lock_sec = conf_get_time(c, P_STALE_LOCK_TIME);
        s->command_time_limit_sec = MAX(conf_get_time(c, P_COMMAND_TIME_LIMIT), 1);
        s->max_idle_usec = MAX(conf_get_time(c, P_MAX_IDLE), 1) * 1000000ULL;
        s->owner_request_special = conf_get_bool(c, P_OWNER_REQUEST_SPECIAL);

        if (!isempty(conf_get_str(c, P_MAILBOX_TRANSPORT)) ||
            !isempty(conf_get_str(c, P_FALLBACK_TRANSPORT)))
                diag_warning(diags, NULL, 0,
                             "mailbox_transport and fallback_transport are not supported by "
                             "postern-deliver-local; ignoring them");

        if ((r = open_maps(c, P_ALIAS_MAPS, MAP_FLAG_FOLD_KEYS | MAP_FLAG_ALIAS, diags,
                           &s->alias_maps)) < 0)
                return r;
        if ((r = alias_owners(s)) < 0)
                return r;
        if ((r = open_maps(c, P_VIRTUAL_MAILBOX_MAPS, MAP_FLAG_FOLD_KEYS, diags,
                           &s->virtual_mailbox_maps)) < 0 ||
            (r = open_maps(c, P_VIRTUAL_UID_MAPS, MAP_FLAG_FOLD_KEYS, diags,
                           &s->virtual_uid_maps)) < 0 ||
            (r = open_maps(c, P_VIRTUAL_GID_MAPS, MAP_FLAG_FOLD_KEYS, diags,
                           &s->virtual_gid_maps)) < 0)
                return r;
        return 0;
}

void deliver_local_activity_changed(DeliverLocal *d) {
        uint64_t now = 0;

        if (d->exiting)
                return;
        (void)sd_notifyf(false, "STATUS=%u connection%s, %u delivery call%s in progress",
                         d->n_connections, d->n_connections == 1 ? "" : "s", d->n_jobs,
                         d->n_jobs == 1 ? "" : "s");
        if (d->n_connections == 0 && d->n_jobs == 0) {
                (void)sd_event_now(d->event, CLOCK_MONOTONIC, &now);
                (void)sd_event_source_set_time(d->idle_timer, now + d->settings.max_idle_usec);
                (void)sd_event_source_set_enabled(d->idle_timer, SD_EVENT_ONESHOT);
        } else
                (void)sd_event_source_set_enabled(d->idle_timer, SD_EVENT_OFF);
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        DeliverLocal *d = userdata;

        for (int i = 0; i < 16; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(errno, "accept() failed: %m");
                        break;
                }
                /* deliver_bus_accept() owns cfd from here, also on failure. */
                (void)deliver_bus_accept(d, cfd);
        }
        deliver_local_activity_changed(d);
        return 0;
}

static int on_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        DeliverLocal *d = userdata;
        if (d->n_connections > 0 || d->n_jobs > 0)
                return 0;
        log_debug("Idle for the max_idle time, exiting");
        (void)sd_notify(false, "STOPPING=1\nSTATUS=Idle, exiting");
        return sd_event_exit(d->event, 0);
}

static int on_signal(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        DeliverLocal *d = userdata;
        (void)sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return sd_event_exit(d->event, 0);
}

/* SIGHUP (systemctl reload): loads the configuration and the tables again
 * and switches to them in place. Deliveries in progress run in children
 * that forked with the old settings and finish with them; the next
 * recipient forks with the new ones. A configuration that does not load
 * changes nothing. */
static int on_reload(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        DeliverLocal *d = userdata;
        _cleanup_(conf_unrefp) Config *c = NULL;
        DeliverSettings n = {0};
        Diag diags = {0};
        int r;

        if (d->exiting)
                return 0;
        (void)sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration");
        r = conf_load(arg_config_dir, "deliver-local", &diags, &c);
        if (r >= 0)
                r = settings_load(c, &diags, &n);
        log_diags(&diags, false);
        if (r < 0) {
                settings_done(&n);
                log_mail(LOG_ERR, MSGID_CONFIG_ERROR, NULL, LOG_NO_FIELDS,
                         "Reload failed: cannot load the configuration (%s); keeping the "
                         "running one",
                         strerror(-r));
        } else {
                settings_done(&d->settings);
                d->settings = n;
                conf_unref(d->config);
                d->config = steal_ptr(c);
                log_info("Reloaded the configuration");
        }
        (void)sd_notify(false, "READY=1");
        deliver_local_activity_changed(d);
        return 0;
}

static int setup_listener(DeliverLocal *d) {
        int n, fd, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Cannot get sockets from systemd: %m");
        if (n != 1) {
                log_error("Expected one listening socket from systemd, got %d: "
                          "postern-deliver-local runs under postern-deliver-local.socket",
                          n);
                return -EBADF;
        }
        fd = SD_LISTEN_FDS_START;
        r = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1);
        if (r <= 0) {
                log_error("The socket from systemd is not a listening AF_UNIX stream socket");
                return -EBADF;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return log_error_errno(errno, "Cannot set up the listening socket: %m");
        r = sd_event_add_io(d->event, &d->listener, fd, EPOLLIN, on_accept, d);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the listening socket: %m");
        return 0;
}

static void help(void) {
        printf("Usage: postern-deliver-local [-c DIR]\n\n"
               "The postern local and virtual delivery agent. Runs under systemd socket\n"
               "activation (postern-deliver-local.socket); see postern-deliver-local(8).\n\n"
               "  -c, --config-dir=DIR   configuration directory (default %s)\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n",
               conf_default_dir());
}

static int parse_argv(int argc, char **argv) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                {"config-dir", required_argument, NULL, 'c'},
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
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("postern-deliver-local %s\n", POSTERN_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "postern-deliver-local: unexpected argument \"%s\"\n",
                        argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static void deliver_local_done(DeliverLocal *d) {
        d->exiting = true;
        while (d->jobs)
                deliver_job_free(d->jobs);
        while (d->connections)
                deliver_bus_connection_free(d->connections);
        sd_event_source_disable_unref(d->listener);
        sd_event_source_disable_unref(d->idle_timer);
        sd_event_source_disable_unref(d->reaper);
        sd_bus_flush_close_unref(d->qmgr_bus);
        settings_done(&d->settings);
        conf_unref(d->config);
        sd_event_unref(d->event);
}

static int run(int argc, char **argv) {
        DeliverLocal d = {0};
        Diag diags = {0};
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        log_setup("postern-deliver-local", "deliver-local", LOG_TARGET_AUTO);
        /* Files we create are private until chmod says otherwise. */
        umask(0077);

        r = conf_load(arg_config_dir, "deliver-local", &diags, &d.config);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot load the configuration: %m");
                goto out;
        }
        r = settings_load(d.config, &diags, &d.settings);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot set up local delivery: %m");
                goto out;
        }
        if (geteuid() != 0)
                log_warning("Not running as root: deliveries to other users will be deferred");

        r = sd_event_default(&d.event);
        if (r < 0)
                goto out;
        /* WATCHDOG=1 from the loop when the unit sets WatchdogSec=. */
        r = sd_event_set_watchdog(d.event, true);
        if (r < 0)
                goto out;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void)signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(d.event, NULL, SIGTERM, on_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGINT, on_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGHUP, on_reload, &d)) < 0)
                goto out;
        r = setup_listener(&d);
        if (r < 0)
                goto out;
        r = sd_event_add_time_relative(d.event, &d.idle_timer, CLOCK_MONOTONIC,
                                       d.settings.max_idle_usec, 0, on_idle, &d);
        if (r < 0)
                goto out;

        (void)sd_notify(false, "READY=1\nSTATUS=Waiting for delivery requests");
        r = sd_event_loop(d.event);
out:
        deliver_local_done(&d);
        return r;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
