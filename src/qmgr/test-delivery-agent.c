/* test-delivery-agent.c: a delivery agent for the queue tests, built but
 * never installed. It serves org.postern.Delivery1 on the AF_UNIX sockets
 * named with --listen (or the one systemd passes), reads the queue file
 * the queue manager hands over, and answers each recipient as its rules
 * file says, recording every attempt in the record file as one line
 * "QUEUEID RECIPIENT STATUS TRANSPORT NEXTHOP ORIG SIZE CALL" before it
 * replies, CALL numbering the Deliver calls from 1 (which recipients went
 * together).
 *
 * Rules (--rules FILE, read again for every call so that a test can change
 * them while the agent runs): lines "PATTERN STATUS DSN TEXT...", PATTERN an
 * fnmatch(3) pattern on the recipient (case-insensitive), STATUS sent,
 * deferred or bounced; the first match wins, no match means sent. A line
 * "delay MILLISECONDS" makes every call take that long, so that deliveries
 * are in flight when a test kills the queue manager. A line "slow PATTERN
 * MILLISECONDS" delays the reply to calls whose first recipient matches
 * without blocking other calls (a slow destination next to fast ones). */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "bus-names.h"
#include "cleanup.h"
#include "strutil.h"

static char **arg_listen;
static const char *arg_record;
static const char *arg_rules;
static const char *arg_relay = "test-agent[127.0.0.1]:25";
/* --setup-usec: reported as the connection set-up time, as deliver-remote
 * does; without it the reply ends after the relay, as deliver-local's. */
static long long arg_setup_usec = -1;

typedef struct Rule {
        char *pattern, *status, *dsn, *text;
} Rule;

typedef struct Rules {
        Rule *rules;
        size_t n;
        unsigned delay_ms;
        char *slow_pattern;
        unsigned slow_ms;
} Rules;

static void rules_done(Rules *r) {
        for (size_t i = 0; i < r->n; i++) {
                free(r->rules[i].pattern);
                free(r->rules[i].status);
                free(r->rules[i].dsn);
                free(r->rules[i].text);
        }
        free(r->rules);
        free(r->slow_pattern);
        *r = (Rules) {0};
}

static void rules_load(Rules *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        char line[1024];

        *ret = (Rules) {0};
        if (!arg_rules || !(f = fopen(arg_rules, "re")))
                return;
        while (fgets(line, sizeof(line), f)) {
                char pat[512], st[32], dsn[32];
                int consumed = 0;
                unsigned ms;
                Rule *n;
                line[strcspn(line, "\n")] = 0;
                if (sscanf(line, "delay %u", &ms) == 1) {
                        ret->delay_ms = ms;
                        continue;
                }
                if (sscanf(line, "slow %511s %u", pat, &ms) == 2) {
                        free(ret->slow_pattern);
                        ret->slow_pattern = strdup(pat);
                        ret->slow_ms = ms;
                        continue;
                }
                if (sscanf(line, "%511s %31s %31s %n", pat, st, dsn, &consumed) < 3)
                        continue;
                n = reallocarray(ret->rules, ret->n + 1, sizeof(Rule));
                if (!n)
                        return;
                ret->rules = n;
                ret->rules[ret->n++] = (Rule) {
                        strdup(pat), strdup(st), strdup(dsn),
                        strdup(consumed > 0 ? line + consumed : "test"),
                };
        }
}

static int on_slow_reply(sd_event_source *s, uint64_t usec, void *userdata) {
        sd_bus_message *reply = userdata;
        (void) sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        return 0;
}

static int method_deliver(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id, *transport, *nexthop;
        char magic[9] = "";
        struct stat st;
        Rules rules;
        bool slow = false, first = true;
        int fd, r;

        /* Counts calls for the record; global because it spans connections. */
        static unsigned call_seq;
        unsigned call;

        r = sd_bus_message_read(m, "hsss", &fd, &id, &transport, &nexthop);
        if (r < 0)
                return r;
        call = ++call_seq;
        if (fstat(fd, &st) < 0 || pread(fd, magic, 8, 0) != 8 || !streq(magic, "POSTERNQ"))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "not a queue file");
        rules_load(&rules);
        if (rules.delay_ms) {
                struct timespec ts = {rules.delay_ms / 1000, (long) (rules.delay_ms % 1000) * 1000000};
                nanosleep(&ts, NULL);
        }
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(usss)");
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "(uss)");
        while (r >= 0) {
                uint32_t idx;
                const char *addr, *orig, *status = "sent", *dsn = "2.0.0", *text = "250 2.0.0 Ok";
                _cleanup_free_ char *line = NULL;
                r = sd_bus_message_read(m, "(uss)", &idx, &addr, &orig);
                if (r <= 0)
                        break;
                if (first && rules.slow_pattern)
                        slow = fnmatch(rules.slow_pattern, addr, FNM_CASEFOLD) == 0;
                first = false;
                for (size_t i = 0; i < rules.n; i++)
                        if (fnmatch(rules.rules[i].pattern, addr, FNM_CASEFOLD) == 0) {
                                status = rules.rules[i].status;
                                dsn = rules.rules[i].dsn;
                                text = rules.rules[i].text;
                                break;
                        }
                line = strdup_printf("%s %s %s %s %s %s %" PRIu64 " %u\n", id, addr, status,
                                     transport, *nexthop ? nexthop : "-", orig,
                                     (uint64_t) st.st_size, call);
                if (line && arg_record) {
                        int rfd = open(arg_record, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
                        if (rfd >= 0) {
                                (void) write(rfd, line, strlen(line));
                                close(rfd);
                        }
                }
                r = sd_bus_message_append(reply, "(usss)", idx, status, dsn, text);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", arg_relay);
        if (r >= 0 && arg_setup_usec >= 0)
                r = sd_bus_message_append(reply, "t", (uint64_t) arg_setup_usec);
        if (r >= 0 && slow) {
                /* A floating source: freed with the loop. */
                r = sd_event_add_time_relative(sd_bus_get_event(sd_bus_message_get_bus(m)), NULL,
                                               CLOCK_MONOTONIC, rules.slow_ms * 1000ULL, 0,
                                               on_slow_reply, reply);
                if (r >= 0)
                        reply = NULL;   /* owned by the timer */
                rules_done(&rules);
                /* 1: handled, the reply follows (0 would mean "no such
                 * method" to sd-bus). */
                return r < 0 ? r : 1;
        }
        rules_done(&rules);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static const sd_bus_vtable delivery_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Deliver", "hsssa(uss)", "a(usss)s", method_deliver, 0),
        SD_BUS_VTABLE_END,
};

/* sd-bus checks a reply against the declared signature. */
static const sd_bus_vtable delivery_setup_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Deliver", "hsssa(uss)", "a(usss)st", method_deliver, 0),
        SD_BUS_VTABLE_END,
};

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        /* Leaked on purpose until exit: a test process, few connections. */
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        sd_event *e = userdata;
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        sd_bus *bus = NULL;
        sd_id128_t id;

        if (cfd < 0)
                return 0;
        if (sd_id128_randomize(&id) < 0 || sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, cfd, cfd) < 0 ||
            sd_bus_set_server(bus, 1, id) < 0 ||
            sd_bus_add_object_vtable(bus, NULL, DELIVERY_BUS_OBJECT, DELIVERY_BUS_INTERFACE,
                                     arg_setup_usec >= 0 ? delivery_setup_vtable : delivery_vtable, NULL) < 0 ||
            sd_bus_match_signal(bus, NULL, NULL, "/org/freedesktop/DBus/Local",
                                "org.freedesktop.DBus.Local", "Disconnected", on_disconnected,
                                NULL) < 0 ||
            sd_bus_attach_event(bus, e, 0) < 0 || sd_bus_start(bus) < 0) {
                fprintf(stderr, "test-delivery-agent: cannot set up a connection\n");
                sd_bus_unref(bus);
                return 0;
        }
        return 0;
}

static int listen_on(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"listen", required_argument, NULL, 'l'},
                {"record", required_argument, NULL, 'o'},
                {"rules", required_argument, NULL, 'r'},
                {"relay", required_argument, NULL, 'R'},
                {"setup-usec", required_argument, NULL, 'S'},
                {},
        };
        sd_event *e = NULL;
        sigset_t mask;
        int c, n, r;

        while ((c = getopt_long(argc, argv, "l:o:r:R:S:", options, NULL)) >= 0)
                switch (c) {
                case 'l':
                        if (strv_extend(&arg_listen, optarg) < 0)
                                return EXIT_FAILURE;
                        break;
                case 'o':
                        arg_record = optarg;
                        break;
                case 'r':
                        arg_rules = optarg;
                        break;
                case 'R':
                        arg_relay = optarg;
                        break;
                case 'S':
                        arg_setup_usec = atoll(optarg);
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (sd_event_default(&e) < 0)
                return EXIT_FAILURE;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(e, NULL, SIGTERM, on_signal, NULL);
        (void) sd_event_add_signal(e, NULL, SIGINT, on_signal, NULL);
        n = sd_listen_fds(true);
        for (int i = 0; i < n; i++)
                (void) sd_event_add_io(e, NULL, SD_LISTEN_FDS_START + i, EPOLLIN, on_accept, e);
        STRV_FOREACH(p, arg_listen) {
                int fd = listen_on(*p);
                if (fd < 0) {
                        fprintf(stderr, "test-delivery-agent: cannot listen on %s: %s\n", *p,
                                strerror(-fd));
                        return EXIT_FAILURE;
                }
                (void) sd_event_add_io(e, NULL, fd, EPOLLIN, on_accept, e);
        }
        r = sd_event_loop(e);
        sd_event_unref(e);
        strv_free(arg_listen);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
