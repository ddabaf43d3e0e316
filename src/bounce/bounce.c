/* bounce.c: main() of postern-bounce, the delivery status notification
 * service. Loads main.cf plus services.d/bounce.cf and the
 * bounce_template_file, opens the queue, takes its listening AF_UNIX socket
 * from systemd (postern-bounce.socket), serves org.postern.Bounce1 on each
 * accepted connection (bounce-bus.c) and exits after max_idle without
 * connections, so that the socket starts it again. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "bounce.h"
#include "bus-names.h"
#include "fileio.h"
#include "log.h"

static const char *arg_config_dir;

void bounce_settings_done(BounceSettings *s) {
        free(s->myhostname);
        free(s->myorigin);
        free(s->mail_name);
        free(s->queue_directory);
        free(s->qmgr_socket);
        free(s->bounce_notice_recipient);
        free(s->double_bounce_notice_recipient);
        free(s->delay_notice_recipient);
        free(s->error_notice_recipient);
        free(s->double_bounce_sender);
        free(s->double_bounce_local);
        *s = (BounceSettings) {0};
}

unsigned bounce_parse_classes(char * const *list, Diag *diags) {
        static const struct {
                const char *name;
                unsigned bit;
        } classes[] = {
                {"bounce", BOUNCE_CLASS_BOUNCE},     {"2bounce", BOUNCE_CLASS_2BOUNCE},
                {"double-bounce", BOUNCE_CLASS_2BOUNCE}, {"data", BOUNCE_CLASS_DATA},
                {"delay", BOUNCE_CLASS_DELAY},       {"policy", BOUNCE_CLASS_POLICY},
                {"protocol", BOUNCE_CLASS_PROTOCOL}, {"resource", BOUNCE_CLASS_RESOURCE},
                {"software", BOUNCE_CLASS_SOFTWARE},
        };
        unsigned bits = 0;

        STRV_FOREACH(i, list) {
                bool found = false;
                for (size_t k = 0; k < ELEMENTSOF(classes); k++)
                        if (strcaseeq(*i, classes[k].name)) {
                                bits |= classes[k].bit;
                                found = true;
                        }
                if (!found)
                        diag_warning(diags, NULL, 0, "notify_classes: ignoring unknown class "
                                     "\"%s\"", *i);
        }
        return bits;
}

/* "postmaster" -> "postmaster@myorigin", as Postfix's cleanup qualifies
 * local addresses. */
static char *qualify(const char *addr, const char *origin) {
        if (strchr(addr, '@') || !*addr)
                return strdup(addr);
        return strdup_printf("%s@%s", addr, origin);
}

int bounce_settings_load(Config *c, Diag *diags, BounceSettings *s) {
        const char *qmgr;
        struct passwd *pw;

        s->myhostname = strdup(conf_get_str(c, P_MYHOSTNAME));
        s->myorigin = strdup(conf_get_str(c, P_MYORIGIN));
        s->mail_name = strdup(conf_get_str(c, P_MAIL_NAME));
        s->queue_directory = strdup(conf_get_str(c, P_QUEUE_DIRECTORY));
        qmgr = secure_getenv("POSTERN_QMGR_SOCKET");
        s->qmgr_socket = qmgr && *qmgr ? strdup(qmgr)
                                      : path_join(postern_runtime_dir(), QUEUE_BUS_SOCKET);
        if (!s->myhostname || !s->myorigin || !s->mail_name || !s->queue_directory ||
            !s->qmgr_socket)
                return -ENOMEM;
        s->bounce_notice_recipient = qualify(conf_get_str(c, P_BOUNCE_NOTICE_RECIPIENT),
                                             s->myorigin);
        s->double_bounce_notice_recipient = qualify(conf_get_str(c, P_2BOUNCE_NOTICE_RECIPIENT),
                                                    s->myorigin);
        s->delay_notice_recipient = qualify(conf_get_str(c, P_DELAY_NOTICE_RECIPIENT),
                                            s->myorigin);
        s->error_notice_recipient = qualify(conf_get_str(c, P_ERROR_NOTICE_RECIPIENT),
                                            s->myorigin);
        s->double_bounce_local = strdup(conf_get_str(c, P_DOUBLE_BOUNCE_SENDER));
        s->double_bounce_sender = qualify(conf_get_str(c, P_DOUBLE_BOUNCE_SENDER), s->myorigin);
        if (!s->bounce_notice_recipient || !s->double_bounce_notice_recipient ||
            !s->delay_notice_recipient || !s->error_notice_recipient ||
            !s->double_bounce_local || !s->double_bounce_sender)
                return -ENOMEM;
        if (!*s->bounce_notice_recipient || !*s->double_bounce_notice_recipient ||
            !*s->delay_notice_recipient || !*s->error_notice_recipient ||
            !*s->double_bounce_sender)
                diag_warning(diags, NULL, 0, "an empty notice recipient or double_bounce_sender "
                             "disables the notifications that use it");
        s->notify_classes = bounce_parse_classes(conf_get_list(c, P_NOTIFY_CLASSES), diags);
        /* Without a recipient there is nobody to send a copy to. */
        if (!*s->bounce_notice_recipient)
                s->notify_classes &= ~BOUNCE_CLASS_BOUNCE;
        if (!*s->double_bounce_notice_recipient || !*s->double_bounce_sender)
                s->notify_classes &= ~BOUNCE_CLASS_2BOUNCE;
        if (!*s->delay_notice_recipient)
                s->notify_classes &= ~BOUNCE_CLASS_DELAY;
        if (!*s->error_notice_recipient)
                s->notify_classes &= ~(BOUNCE_CLASS_POLICY | BOUNCE_CLASS_PROTOCOL |
                                       BOUNCE_CLASS_RESOURCE | BOUNCE_CLASS_SOFTWARE);
        s->size_limit = conf_get_size(c, P_BOUNCE_SIZE_LIMIT);
        s->maximal_queue_lifetime_usec = conf_get_time(c, P_MAXIMAL_QUEUE_LIFETIME) * 1000000ULL;
        s->bounce_queue_lifetime_usec = conf_get_time(c, P_BOUNCE_QUEUE_LIFETIME) * 1000000ULL;
        s->max_idle_usec = MAX(conf_get_time(c, P_MAX_IDLE), 1) * 1000000ULL;
        pw = getpwnam(conf_get_str(c, P_MAIL_OWNER));
        s->mail_owner_uid = pw ? pw->pw_uid : (uid_t) -1;
        return 0;
}

typedef struct UnknownCheck {
        Config *config;
        const char *first_unknown;
} UnknownCheck;

static const char *check_lookup(const char *name, void *userdata) {
        static const char *const suffixes[] = {"_seconds", "_minutes", "_hours", "_days",
                                               "_weeks"};
        UnknownCheck *u = userdata;
        const char *v = conf_get_by_name(u->config, name, true);

        if (v)
                return v;
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++)
                if (endswith(name, suffixes[i]))
                        return "1";     /* checked for real at use time */
        return NULL;
}

/* Loads bounce_template_file (or the built-in templates) into *ret; logs
 * every problem. */
static int load_templates(Config *config, BounceTemplates **ret) {
        const char *file = conf_get_str(config, P_BOUNCE_TEMPLATE_FILE);
        _cleanup_(bounce_templates_freep) BounceTemplates *templates = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL;
        Diag diags = {0};
        size_t len;
        int r;

        if (isempty(file))
                return bounce_templates_new(ret) < 0 ? log_oom() : 0;
        path = path_join(conf_dir(config), file);
        if (!path)
                return log_oom();
        r = file_read_all(path, BOUNCE_TEMPLATE_FILE_MAX, &text, &len);
        if (r < 0)
                return log_error_errno(r, "Cannot read bounce_template_file %s: %m", path);
        r = bounce_templates_parse(text, len, path, &diags, &templates);
        for (size_t i = 0; i < diags.n; i++) {
                _cleanup_free_ char *t = diag_entry_format(&diags.entries[i]);
                log_mail(diags.entries[i].level == DIAG_ERROR ? LOG_ERR : LOG_WARNING,
                         diags.entries[i].level == DIAG_ERROR ? MSGID_CONFIG_ERROR
                                                              : MSGID_CONFIG_WARNING,
                         NULL, LOG_NO_FIELDS, "%s", strempty(t));
        }
        diag_done(&diags);
        if (r < 0)
                return log_error_errno(r, "Cannot use bounce_template_file %s: %m", path);

        /* A $name that nothing defines stays in the text as written: say so
         * once at start rather than in every report. */
        for (size_t k = 0; k < _BOUNCE_TEMPLATE_MAX; k++) {
                const BounceTemplate *t = &templates->t[k];
                const char *parts[] = {t->from, t->subject, t->postmaster_subject, t->text};
                for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
                        UnknownCheck u = {.config = config};
                        _cleanup_free_ char *x = NULL;
                        unsigned unknown = 0;
                        if (bounce_template_expand(parts[i], check_lookup, &u, &x, &unknown) < 0)
                                return log_oom();
                        if (unknown > 0)
                                log_mail(LOG_WARNING, MSGID_CONFIG_WARNING, NULL, LOG_NO_FIELDS,
                                         "%s: %s has %u unknown $name reference(s); they stay "
                                         "as written", path,
                                         bounce_template_kind_to_string((BounceTemplateKind) k),
                                         unknown);
                }
        }
        *ret = steal_ptr(templates);
        return 0;
}

void bounce_activity_changed(Bounce *b) {
        uint64_t now = 0;

        if (b->exiting || !b->idle_timer)
                return;
        (void) sd_notifyf(false, "STATUS=Serving %u connection%s", b->n_connections,
                          b->n_connections == 1 ? "" : "s");
        if (b->n_connections == 0) {
                (void) sd_event_now(b->event, CLOCK_MONOTONIC, &now);
                (void) sd_event_source_set_time(b->idle_timer, now + b->settings.max_idle_usec);
                (void) sd_event_source_set_enabled(b->idle_timer, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(b->idle_timer, SD_EVENT_OFF);
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Bounce *b = userdata;

        for (int i = 0; i < 16; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(errno, "accept() failed: %m");
                        break;
                }
                (void) bounce_bus_accept(b, cfd);
        }
        bounce_activity_changed(b);
        return 0;
}

static int on_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        Bounce *b = userdata;
        if (b->n_connections > 0)
                return 0;
        log_debug("Idle for the max_idle time, exiting");
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Idle, exiting");
        return sd_event_exit(b->event, 0);
}

static int on_signal(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Bounce *b = userdata;
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return sd_event_exit(b->event, 0);
}

/* SIGHUP (systemctl reload): loads the configuration and
 * bounce_template_file again and switches to them in place; a Notify call
 * is handled within one event, so the next one sees the new settings. A
 * configuration that does not load changes nothing. queue_directory needs
 * a restart: the queue stays open. */
static int on_reload(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Bounce *b = userdata;
        _cleanup_(conf_unrefp) Config *c = NULL;
        BounceTemplates *templates = NULL;
        BounceSettings n = {0};
        Diag diags = {0};
        int r;

        if (b->exiting)
                return 0;
        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration");
        r = conf_load(arg_config_dir, "bounce", &diags, &c);
        if (r >= 0)
                r = bounce_settings_load(c, &diags, &n);
        log_diags(&diags, false);
        if (r >= 0)
                r = load_templates(c, &templates);
        if (r < 0) {
                bounce_settings_done(&n);
                log_mail(LOG_ERR, MSGID_CONFIG_ERROR, NULL, LOG_NO_FIELDS,
                         "Reload failed: cannot load the configuration (%s); keeping the "
                         "running one", strerror(-r));
        } else {
                if (!streq(n.queue_directory, b->settings.queue_directory)) {
                        log_warning("queue_directory changed to %s: it takes effect when the "
                                    "bounce service starts again; still using %s",
                                    n.queue_directory, b->settings.queue_directory);
                        free(n.queue_directory);
                        n.queue_directory = steal_ptr(b->settings.queue_directory);
                }
                bounce_settings_done(&b->settings);
                b->settings = n;
                bounce_templates_free(b->templates);
                b->templates = templates;
                conf_unref(b->config);
                b->config = steal_ptr(c);
                log_info("Reloaded the configuration");
        }
        (void) sd_notify(false, "READY=1");
        bounce_activity_changed(b);
        return 0;
}

static int setup_listeners(Bounce *b) {
        int n, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Cannot get sockets from systemd: %m");
        if (n == 0) {
                log_error("No listening socket: postern-bounce runs under systemd socket "
                          "activation (postern-bounce.socket) and never binds one itself");
                return -EBADF;
        }
        b->listeners = calloc((size_t) n, sizeof(sd_event_source *));
        if (!b->listeners)
                return log_oom();
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                r = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1);
                if (r <= 0) {
                        log_error("Socket %d from systemd is not a listening AF_UNIX stream "
                                  "socket", fd);
                        return -EBADF;
                }
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
                    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "Cannot set up socket %d: %m", fd);
                r = sd_event_add_io(b->event, &b->listeners[i], fd, EPOLLIN, on_accept, b);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch socket %d: %m", fd);
                b->n_listeners++;
        }
        return 0;
}

static int open_queue(Bounce *b) {
        const char *q = b->settings.queue_directory;

        b->queue_dir_fd = open(q, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->queue_dir_fd < 0)
                return log_error_errno(errno, "Cannot open queue_directory %s: %m", q);
        b->incoming_fd = openat(b->queue_dir_fd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->incoming_fd < 0)
                return log_error_errno(errno, "Cannot open %s/incoming: %m", q);
        return 0;
}

static void help(void) {
        printf("Usage: postern-bounce [-c DIR]\n\n"
               "The postern delivery status notification service. Runs under systemd\n"
               "socket activation (postern-bounce.socket); see postern-bounce(8).\n\n"
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
                        printf("postern-bounce %s\n", POSTERN_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "postern-bounce: unexpected argument \"%s\"\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static void bounce_done(Bounce *b) {
        b->exiting = true;
        while (b->connections)
                bounce_bus_connection_free(b->connections);
        for (size_t i = 0; i < b->n_listeners; i++)
                sd_event_source_disable_unref(b->listeners[i]);
        free(b->listeners);
        sd_event_source_disable_unref(b->idle_timer);
        sd_event_source_disable_unref(b->reaper);
        sd_bus_flush_close_unref(b->qmgr_bus);
        bounce_templates_free(b->templates);
        bounce_settings_done(&b->settings);
        if (b->queue_dir_fd >= 0)
                close(b->queue_dir_fd);
        if (b->incoming_fd >= 0)
                close(b->incoming_fd);
        conf_unref(b->config);
        sd_event_unref(b->event);
}

static int run(int argc, char **argv) {
        Bounce b = {.queue_dir_fd = -1, .incoming_fd = -1};
        Diag diags = {0};
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        log_setup("postern-bounce", "bounce", LOG_TARGET_AUTO);

        r = conf_load(arg_config_dir, "bounce", &diags, &b.config);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot load the configuration: %m");
                goto out;
        }
        r = bounce_settings_load(b.config, &diags, &b.settings);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the bounce service: %m");
                goto out;
        }
        r = load_templates(b.config, &b.templates);
        if (r < 0)
                goto out;
        r = open_queue(&b);
        if (r < 0)
                goto out;

        r = sd_event_default(&b.event);
        if (r < 0)
                goto out;
        /* WATCHDOG=1 from the loop when the unit sets WatchdogSec=. */
        r = sd_event_set_watchdog(b.event, true);
        if (r < 0)
                goto out;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(b.event, NULL, SIGTERM, on_signal, &b)) < 0 ||
            (r = sd_event_add_signal(b.event, NULL, SIGINT, on_signal, &b)) < 0 ||
            (r = sd_event_add_signal(b.event, NULL, SIGHUP, on_reload, &b)) < 0)
                goto out;
        r = setup_listeners(&b);
        if (r < 0)
                goto out;
        r = sd_event_add_time_relative(b.event, &b.idle_timer, CLOCK_MONOTONIC,
                                       b.settings.max_idle_usec, 0, on_idle, &b);
        if (r < 0)
                goto out;

        (void) sd_notify(false, "READY=1\nSTATUS=Waiting for requests");
        r = sd_event_loop(b.event);
out:
        bounce_done(&b);
        return r;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
