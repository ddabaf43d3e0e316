/* test-bounce-client.c: calls org.postern.Bounce1.Notify the way the queue
 * manager does, for the integration tests. Opens a queue file read-only,
 * passes its fd with the recipients given on the command line and prints
 * the returned report queue ID (an empty line when no report was due). A
 * bus error goes to stderr as "NAME: MESSAGE" with exit status 1. Built
 * for tests only, never installed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "bus-names.h"
#include "cleanup.h"
#include "fileio.h"
#include "strutil.h"

static void usage(void) {
        fprintf(stderr,
                "Usage: test-bounce-client [--socket=PATH] [--relay=RELAY] [--last-attempt=USEC]\n"
                "           --rcpt='INDEX|ADDRESS|ORIG|DSN|DIAGNOSTIC[|RELAY]' ... FILE QUEUE_ID KIND\n"
                "A recipient without its own RELAY gets --relay's.\n");
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'},
                {"relay", required_argument, NULL, 'r'},
                {"last-attempt", required_argument, NULL, 't'},
                {"rcpt", required_argument, NULL, 'R'},
                {},
        };
        _cleanup_free_ char *socket_path = NULL, *address = NULL;
        _cleanup_strv_free_ char **rcpts = NULL;
        _cleanup_close_ int fd = -1;
        sd_bus *bus = NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *relay = "", *result;
        uint64_t last_attempt = 0;
        int c, r, ret = 2;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 's':
                        free(socket_path);
                        socket_path = strdup(optarg);
                        break;
                case 'r':
                        relay = optarg;
                        break;
                case 't':
                        last_attempt = strtoull(optarg, NULL, 10);
                        break;
                case 'R':
                        if (strv_extend(&rcpts, optarg) < 0)
                                return 2;
                        break;
                default:
                        usage();
                        return 2;
                }
        if (argc - optind != 3) {
                usage();
                return 2;
        }
        if (!socket_path)
                socket_path = path_join(postern_runtime_dir(), BOUNCE_BUS_SOCKET);
        address = socket_path ? strdup_printf("unix:path=%s", socket_path) : NULL;
        if (!address)
                return 2;
        fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "Cannot open %s: %s\n", argv[optind], strerror(errno));
                return 2;
        }

        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_message_new_method_call(bus, &m, NULL, BOUNCE_BUS_OBJECT,
                                                   BOUNCE_BUS_INTERFACE, "Notify");
        if (r >= 0)
                r = sd_bus_message_append(m, "hss", fd, argv[optind + 1], argv[optind + 2]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(usssss)");
        STRV_FOREACH(i, rcpts) {
                char *f[6] = {NULL}, *p = *i;
                for (int k = 0; k < 6; k++) {
                        f[k] = p;
                        p = k < 5 && p ? strchr(p, '|') : NULL;
                        if (p)
                                *p++ = '\0';
                }
                if (!f[4]) {
                        fprintf(stderr, "Bad --rcpt \"%s\"\n", *i);
                        goto finish;
                }
                if (r >= 0)
                        r = sd_bus_message_append(m, "(usssss)", (uint32_t) strtoul(f[0], NULL, 10),
                                                  f[1], f[2], f[3], f[4], f[5] ? f[5] : relay);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", last_attempt);
        if (r < 0) {
                fprintf(stderr, "Cannot build the call on %s: %s\n", socket_path, strerror(-r));
                goto finish;
        }
        r = sd_bus_call(bus, m, 60 * 1000000ULL, &error, &reply);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", error.name ? error.name : "error",
                        error.message ? error.message : strerror(-r));
                ret = 1;
                goto finish;
        }
        r = sd_bus_message_read(reply, "s", &result);
        if (r < 0) {
                fprintf(stderr, "Bad reply: %s\n", strerror(-r));
                goto finish;
        }
        printf("%s\n", result);
        ret = 0;
finish:
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        sd_bus_message_unref(m);
        sd_bus_flush_close_unref(bus);
        return ret;
}
