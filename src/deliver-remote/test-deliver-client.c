/* test-deliver-client.c: calls org.postern.Delivery1.Deliver() the way the
 * queue manager does, for the integration tests and bench/relay-bench.sh.
 *
 *   test-deliver-client SOCKET QUEUEFILE TRANSPORT NEXTHOP [--count N] [RCPT...]
 *
 * Opens QUEUEFILE read-only, passes the fd with the queue ID (the file's
 * name) and the recipients (all pending ones of the queue file when none
 * are named; a named one is "INDEX" or "INDEX:ADDRESS"), and prints one
 * line per recipient result, "INDEX STATUS DSN DIAGNOSTIC", then
 * "relay=RELAY", "setup_usec=N" and "tls=PROTOCOL CIPHER TRUST" (empty
 * after "tls=" for plaintext). With --count N it makes N calls in a row on one connection
 * and prints the rate instead. Exit status 0 when the call succeeded
 * (whatever the recipients' fate), 1 otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bus-names.h"
#include "queue-file.h"
#include "strutil.h"

/* Per-status totals of the --count mode. */
static unsigned long n_sent, n_deferred, n_bounced;

static int call(sd_bus *bus, int fd, const char *qid, const char *transport, const char *nexthop,
                const QueueEnvelope *env, char **rcpts, size_t n_rcpts, bool print) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *relay, *tls = NULL;
        uint64_t setup_usec = 0;
        bool has_setup = false;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, NULL, DELIVERY_BUS_OBJECT, DELIVERY_BUS_INTERFACE,
                                           "Deliver");
        if (r >= 0)
                r = sd_bus_message_append(m, "hsss", fd, qid, transport, nexthop);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(uss)");
        if (n_rcpts == 0)
                for (size_t i = 0; r >= 0 && i < env->n_rcpts; i++) {
                        if (env->rcpts[i].status != QUEUE_RCPT_PENDING)
                                continue;
                        r = sd_bus_message_append(m, "(uss)", (uint32_t) i, env->rcpts[i].address,
                                                  env->rcpts[i].address);
                }
        for (size_t i = 0; r >= 0 && i < n_rcpts; i++) {
                char *colon = strchr(rcpts[i], ':');
                unsigned long idx = strtoul(rcpts[i], NULL, 10);
                const char *addr = colon ? colon + 1
                                         : idx < env->n_rcpts ? env->rcpts[idx].address : "";
                r = sd_bus_message_append(m, "(uss)", (uint32_t) idx, addr, addr);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0) {
                fprintf(stderr, "cannot build the call: %s\n", strerror(-r));
                return r;
        }
        r = sd_bus_call(bus, m, 600 * 1000000ULL, &error, &reply);
        if (r < 0) {
                fprintf(stderr, "Deliver failed: %s: %s\n", error.name ? error.name : "",
                        error.message ? error.message : strerror(-r));
                sd_bus_error_free(&error);
                return r;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(usss)");
        for (;;) {
                uint32_t idx;
                const char *status, *dsn, *diag;
                if (r < 0)
                        break;
                r = sd_bus_message_read(reply, "(usss)", &idx, &status, &dsn, &diag);
                if (r <= 0)
                        break;
                if (print)
                        printf("%u %s %s %s\n", idx, status, dsn, diag);
                else if (streq(status, "sent"))
                        n_sent++;
                else if (streq(status, "bounced"))
                        n_bounced++;
                else
                        n_deferred++;
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r >= 0)
                r = sd_bus_message_read(reply, "s", &relay);
        if (r >= 0 && sd_bus_message_at_end(reply, false) == 0) {
                r = sd_bus_message_read(reply, "t", &setup_usec);
                has_setup = r >= 0;
        }
        if (r >= 0 && sd_bus_message_at_end(reply, false) == 0)
                r = sd_bus_message_read(reply, "s", &tls);
        if (r < 0) {
                fprintf(stderr, "bad reply: %s\n", strerror(-r));
                return r;
        }
        if (print)
                printf("relay=%s\n", relay);
        if (print && has_setup)
                printf("setup_usec=%" PRIu64 "\n", setup_usec);
        if (print && tls)
                printf("tls=%s\n", tls);
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *address = NULL, *path = NULL;
        QueueEnvelope env = {0};
        unsigned long count = 0;
        char **rest;
        int n_rest, fd, r;
        struct timespec t0, t1;

        if (argc < 5) {
                fprintf(stderr, "usage: %s SOCKET QUEUEFILE TRANSPORT NEXTHOP [--count N] "
                        "[INDEX[:ADDRESS]...]\n", argv[0]);
                return 2;
        }
        rest = argv + 5;
        n_rest = argc - 5;
        if (n_rest >= 2 && streq(rest[0], "--count")) {
                count = strtoul(rest[1], NULL, 10);
                rest += 2;
                n_rest -= 2;
        }
        fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "cannot open %s: %m\n", argv[2]);
                return 1;
        }
        r = queue_file_read(fd, &env);
        if (r < 0) {
                fprintf(stderr, "cannot read %s: %s\n", argv[2], strerror(-r));
                return 1;
        }
        path = strdup(argv[2]);
        address = strdup_printf("unix:path=%s", argv[1]);
        if (!path || !address)
                return 1;
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                fprintf(stderr, "cannot connect to %s: %s\n", argv[1], strerror(-r));
                return 1;
        }
        if (count == 0) {
                r = call(bus, fd, basename(path), argv[3], argv[4], &env, rest, (size_t) n_rest, true);
                queue_envelope_done(&env);
                close(fd);
                return r < 0 ? 1 : 0;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned long i = 0; i < count; i++) {
                r = call(bus, fd, basename(path), argv[3], argv[4], &env, rest, (size_t) n_rest,
                         false);
                if (r < 0)
                        break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        {
                double s = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
                printf("%lu deliveries in %.3f s: %.1f messages/s (%lu sent, %lu deferred, "
                       "%lu bounced recipients)\n", count, s, (double) count / s, n_sent,
                       n_deferred, n_bounced);
        }
        queue_envelope_done(&env);
        close(fd);
        return r < 0 ? 1 : 0;
}
