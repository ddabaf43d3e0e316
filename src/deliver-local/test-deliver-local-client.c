/* test-deliver-local-client.c: a stand-in for the queue manager in tests
 * and benchmarks. Writes a queue file (queue-file.h writer) for a message
 * read from a file or stdin, connects to the Delivery1 socket and calls
 * Deliver, printing one line per recipient:
 *
 *     INDEX STATUS DSN TEXT
 *
 * and "relay=RELAY". With --count N it makes N calls (--parallel P in
 * flight at once) for the same queue file and prints the rate instead.
 * Recipients are arguments "ADDRESS" or "ADDRESS=ORIGINAL". Built for tests
 * only; not installed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bus-names.h"
#include "fileio.h"
#include "queue-file.h"
#include "queue-id.h"
#include "strutil.h"

static const char *arg_socket;
static const char *arg_transport = "local";
static const char *arg_nexthop = "";
static const char *arg_sender = "sender@example.org";
static const char *arg_queue_dir = ".";
static const char *arg_message;
static unsigned arg_count = 1;
static unsigned arg_parallel = 1;

static int write_queue_file(char *const *rcpts, char *ret_id, int *ret_fd) {
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_close_ int dfd = -1, in = -1;
        _cleanup_free_ char *data = NULL, *path = NULL;
        QueueEnvelope env = {0};
        size_t len = 0;
        int r, fd;

        if (arg_message) {
                r = file_read_all(arg_message, 64 * 1024 * 1024, &data, &len);
                if (r < 0)
                        return r;
        } else {
                _cleanup_(strbuf_done) StrBuf b = {0};
                char buf[65536];
                ssize_t n;
                while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0)
                        if (strbuf_append(&b, buf, (size_t)n) < 0)
                                return -ENOMEM;
                len = b.len;
                data = strbuf_steal(&b);
                if (!data)
                        return -ENOMEM;
        }
        dfd = open(arg_queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        gettimeofday(&env.arrival, NULL);
        queue_id_new(&env.arrival, env.queue_id);
        r = queue_writer_new(dfd, env.queue_id, &w);
        if (r < 0)
                return r;
        /* The queue stores LF line ends. */
        for (size_t i = 0; i < len; i++)
                if (data[i] != '\r' && (r = queue_writer_append(w, data + i, 1)) < 0)
                        return r;
        env.sender = (char *)arg_sender;
        env.protocol = (char *)"ESMTP";
        env.client_name = (char *)"localhost";
        env.client_addr = (char *)"127.0.0.1";
        for (char *const *a = rcpts; *a; a++) {
                _cleanup_free_ char *addr = strdup(*a);
                char *eq;
                if (!addr)
                        return -ENOMEM;
                if ((eq = strchr(addr, '=')))
                        *eq = 0;
                if ((r = queue_envelope_add_rcpt(&env, addr, 0, NULL)) < 0)
                        goto out;
        }
        if ((r = queue_writer_finish(w, &env)) < 0 || (r = queue_writer_sync(w)) < 0 ||
            (r = queue_writer_commit(w, dfd)) < 0)
                goto out;
        fd = openat(dfd, env.queue_id, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        memcpy(ret_id, env.queue_id, QUEUE_ID_SIZE);
        *ret_fd = fd;
        r = 0;
out:
        env.sender = env.protocol = env.client_name = env.client_addr = NULL;
        queue_envelope_done(&env);
        return r;
}

static int make_call(sd_bus *bus, int fd, const char *qid, char *const *rcpts,
                     sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        uint32_t i = 0;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, NULL, DELIVERY_BUS_OBJECT,
                                           DELIVERY_BUS_INTERFACE, "Deliver");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "hsss", fd, qid, arg_transport, arg_nexthop);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "(uss)");
        if (r < 0)
                return r;
        for (char *const *a = rcpts; *a; a++, i++) {
                _cleanup_free_ char *addr = strdup(*a);
                char *eq;
                if (!addr)
                        return -ENOMEM;
                eq = strchr(addr, '=');
                if (eq)
                        *eq++ = 0;
                r = sd_bus_message_append(m, "(uss)", i, addr, eq ? eq : "");
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        *ret = steal_ptr(m);
        return 0;
}

static int print_reply(sd_bus_message *reply) {
        const char *status, *dsn, *text, *relay;
        uint32_t index;
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "(usss)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(usss)", &index, &status, &dsn, &text)) > 0)
                printf("%u %s %s %s\n", index, status, dsn, text);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "s", &relay);
        if (r < 0)
                return r;
        printf("relay=%s\n", relay);
        return 0;
}

static unsigned in_flight, finished, failed;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *status, *dsn, *text;
        uint32_t index;

        in_flight--;
        finished++;
        if (sd_bus_message_is_method_error(m, NULL)) {
                failed++;
                return 0;
        }
        if (sd_bus_message_enter_container(m, 'a', "(usss)") < 0)
                return 0;
        while (sd_bus_message_read(m, "(usss)", &index, &status, &dsn, &text) > 0)
                if (!streq(status, "sent"))
                        failed++;
        return 0;
}

static int run(int argc, char **argv) {
        enum {
                ARG_SOCKET = 0x100,
                ARG_TRANSPORT,
                ARG_NEXTHOP,
                ARG_SENDER,
                ARG_QUEUE_DIR,
                ARG_MESSAGE,
                ARG_COUNT,
                ARG_PARALLEL
        };
        static const struct option options[] = {
                {"socket", required_argument, NULL, ARG_SOCKET},
                {"transport", required_argument, NULL, ARG_TRANSPORT},
                {"nexthop", required_argument, NULL, ARG_NEXTHOP},
                {"sender", required_argument, NULL, ARG_SENDER},
                {"queue-dir", required_argument, NULL, ARG_QUEUE_DIR},
                {"message", required_argument, NULL, ARG_MESSAGE},
                {"count", required_argument, NULL, ARG_COUNT},
                {"parallel", required_argument, NULL, ARG_PARALLEL},
                {},
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *address = NULL, *sock = NULL;
        _cleanup_close_ int fd = -1;
        char qid[QUEUE_ID_SIZE];
        struct timespec t0, t1;
        int c, r;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case ARG_SOCKET:
                        arg_socket = optarg;
                        break;
                case ARG_TRANSPORT:
                        arg_transport = optarg;
                        break;
                case ARG_NEXTHOP:
                        arg_nexthop = optarg;
                        break;
                case ARG_SENDER:
                        arg_sender = optarg;
                        break;
                case ARG_QUEUE_DIR:
                        arg_queue_dir = optarg;
                        break;
                case ARG_MESSAGE:
                        arg_message = optarg;
                        break;
                case ARG_COUNT:
                        arg_count = (unsigned)MAX(atoi(optarg), 1);
                        break;
                case ARG_PARALLEL:
                        arg_parallel = (unsigned)MAX(atoi(optarg), 1);
                        break;
                default:
                        return -EINVAL;
                }
        if (optind >= argc) {
                fprintf(stderr, "usage: test-deliver-local-client [--socket PATH] [--transport "
                                "local|virtual] [--nexthop D] [--sender S] [--queue-dir DIR] "
                                "[--message FILE] [--count N] [--parallel P] RCPT[=ORIG]...\n");
                return -EINVAL;
        }
        r = write_queue_file(argv + optind, qid, &fd);
        if (r < 0) {
                fprintf(stderr, "cannot write the queue file: %s\n", strerror(-r));
                return r;
        }
        sock = arg_socket ? strdup(arg_socket)
                          : path_join(postern_runtime_dir(), DELIVERY_BUS_SOCKET_LOCAL);
        address = sock ? strdup_printf("unix:path=%s", sock) : NULL;
        if (!address)
                return -ENOMEM;
        if ((r = sd_bus_new(&bus)) < 0 || (r = sd_bus_set_address(bus, address)) < 0 ||
            (r = sd_bus_negotiate_fds(bus, 1)) < 0 || (r = sd_bus_start(bus)) < 0) {
                fprintf(stderr, "cannot connect to %s: %s\n", sock, strerror(-r));
                return r;
        }
        printf("queue_id=%s\n", qid);

        if (arg_count == 1) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                r = make_call(bus, fd, qid, argv + optind, &m);
                if (r >= 0)
                        r = sd_bus_call(bus, m, 600 * 1000000ULL, &error, &reply);
                if (r < 0) {
                        fprintf(stderr, "Deliver failed: %s\n",
                                error.message ? error.message : strerror(-r));
                        return r;
                }
                return print_reply(reply);
        }

        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned sent = 0; finished < arg_count;) {
                while (sent < arg_count && in_flight < arg_parallel) {
                        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                        r = make_call(bus, fd, qid, argv + optind, &m);
                        if (r >= 0)
                                r = sd_bus_call_async(bus, NULL, m, on_reply, NULL,
                                                      600 * 1000000ULL);
                        if (r < 0) {
                                fprintf(stderr, "Deliver failed: %s\n", strerror(-r));
                                return r;
                        }
                        sent++;
                        in_flight++;
                }
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r == 0 && (r = sd_bus_wait(bus, UINT64_MAX)) < 0)
                        return r;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        printf("calls=%u failed=%u seconds=%.3f rate=%.1f/s\n", arg_count, failed, dt,
               (double)arg_count / dt);
        return failed ? -EIO : 0;
}

int main(int argc, char **argv) {
        return run(argc, argv) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
