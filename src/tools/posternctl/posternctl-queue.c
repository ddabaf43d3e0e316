/* posternctl-queue.c: "posternctl queue", the native spelling of the queue
 * tools: list (postqueue -p; --json as postqueue -j), show ID (postcat -q),
 * hold, release, delete, requeue ID...|ALL (postsuper -h, -H, -d, -r) and
 * flush [ID|SITE] (postqueue -f, -i, -s), and status (the queue manager's
 * Queue1.Status()). It shares their code in src/shared/queue-scan.c, so
 * both spellings behave alike. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bus-names.h"
#include "conf.h"
#include "posternctl.h"
#include "queue-file.h"
#include "queue-scan.h"
#include "strutil.h"

static void json_str(const char *s) {
        putchar('"');
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p == '"' || *p == '\\')
                        printf("\\%c", *p);
                else if (*p < 0x20 || *p == 0x7f)
                        printf("\\u%04x", *p);
                else
                        putchar(*p);
        putchar('"');
}

static int open_queue(const char *config_dir, int *ret) {
        _cleanup_(conf_unrefp) Config *cfg = NULL;
        Diag diags = {0};
        int r = conf_load(config_dir, NULL, &diags, &cfg), fd;

        diag_print(&diags, stderr, "posternctl");
        diag_done(&diags);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: cannot load the configuration: %s\n", strerror(-r));
                return r;
        }
        fd = open(conf_get_str(cfg, P_QUEUE_DIRECTORY), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "posternctl: error: cannot open the queue: %m\n");
                return -errno;
        }
        *ret = fd;
        return 0;
}

static int queue_list(int qfd, bool json) {
        unsigned count = 0;

        /* An unreadable queue is an error, never an empty listing. */
        for (size_t k = 0; queue_names[k]; k++)
                if (faccessat(qfd, queue_names[k], R_OK | X_OK, 0) < 0 && errno != ENOENT) {
                        fprintf(stderr, "posternctl: error: cannot read the %s queue: %m "
                                "(postqueue -p lists the queue for every user)\n",
                                queue_names[k]);
                        return -errno;
                }
        if (!json)
                printf("%-16s %-8s %10s %-19s %s\n", "ID", "QUEUE", "SIZE", "ARRIVAL", "SENDER / RECIPIENTS");
        for (size_t k = 0; queue_names[k]; k++) {
                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                char id[QUEUE_ID_SIZE];
                int r = queue_scan_new(qfd, queue_names[k], &scan);
                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                        QueueListEntry e = {0};
                        char date[32];
                        struct tm tm;
                        if (queue_list_read(qfd, queue_names[k], id, &e) < 0)
                                continue;
                        count++;
                        if (json) {
                                printf("{\"queue_name\": ");
                                json_str(e.queue);
                                printf(", \"queue_id\": ");
                                json_str(e.id);
                                printf(", \"arrival_time\": %lld, \"message_size\": %" PRIu64
                                       ", \"sender\": ", (long long) e.arrival, e.size);
                                json_str(e.sender);
                                printf(", \"recipients\": [");
                                for (size_t i = 0; i < e.n_rcpts; i++) {
                                        printf("%s{\"address\": ", i ? ", " : "");
                                        json_str(e.rcpts[i].address);
                                        if (e.rcpts[i].reason) {
                                                printf(", \"delay_reason\": ");
                                                json_str(e.rcpts[i].reason);
                                        }
                                        printf("}");
                                }
                                printf("]}\n");
                        } else {
                                localtime_r(&e.arrival, &tm);
                                strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
                                printf("%-16s %-8s %10" PRIu64 " %-19s %s\n", e.id, e.queue, e.size,
                                       date, e.sender[0] ? e.sender : "<>");
                                for (size_t i = 0; i < e.n_rcpts; i++)
                                        printf("%57s%s%s%s%s\n", "", e.rcpts[i].address,
                                               e.rcpts[i].reason ? " (" : "",
                                               strempty(e.rcpts[i].reason),
                                               e.rcpts[i].reason ? ")" : "");
                        }
                        queue_list_entry_done(&e);
                }
                if (r < 0) {
                        fprintf(stderr, "posternctl: error: cannot scan the %s queue: %s\n",
                                queue_names[k], strerror(-r));
                        return r;
                }
        }
        if (!json)
                printf("\n%u message%s.\n", count, count == 1 ? "" : "s");
        return 0;
}

static int queue_show(int qfd, const char *id, bool json) {
        _cleanup_close_ int fd = -1;
        QueueEnvelope env = {0};
        const char *queue;
        int r;

        if (!queue_id_valid(id) || queue_locate(qfd, id, &queue) < 0 ||
            (fd = queue_open(qfd, queue, id, O_RDONLY)) < 0) {
                fprintf(stderr, "posternctl: error: no message %s in the queue\n", id);
                return -ENOENT;
        }
        r = queue_file_read(fd, &env);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: %s: %s\n", id, strerror(-r));
                return r;
        }
        if (json) {
                printf("{\"queue_name\": ");
                json_str(queue);
                printf(", \"queue_id\": ");
                json_str(id);
                printf(", \"arrival_time\": %lld, \"message_size\": %" PRIu64 ", \"sender\": ",
                       (long long) env.arrival.tv_sec, env.content_size);
                json_str(env.sender);
                printf(", \"recipients\": [");
                for (size_t i = 0; i < env.n_rcpts; i++) {
                        char st[2] = {env.rcpts[i].status, 0};
                        printf("%s{\"address\": ", i ? ", " : "");
                        json_str(env.rcpts[i].address);
                        printf(", \"status\": ");
                        json_str(st);
                        if (env.rcpts[i].orig) {
                                printf(", \"original\": ");
                                json_str(env.rcpts[i].orig);
                        }
                        printf("}");
                }
                printf("]}\n");
        } else {
                printf("Queue ID: %s\nQueue: %s\nSize: %" PRIu64 "\nSender: %s\n", id, queue,
                       env.content_size, env.sender[0] ? env.sender : "<>");
                for (size_t i = 0; i < env.n_rcpts; i++)
                        printf("Recipient: %s [%c]%s%s\n", env.rcpts[i].address, env.rcpts[i].status,
                               env.rcpts[i].orig ? " from " : "", strempty(env.rcpts[i].orig));
        }
        queue_envelope_done(&env);
        return 0;
}

/* Prints Queue1.Status() of the running queue manager (the socket starts
 * it): "name: value" lines, or one JSON object. */
static int queue_status(bool json) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        unsigned n = 0;
        int r;

        r = queue_qmgr_connect(&bus);
        if (r >= 0)
                r = sd_bus_call_method(bus, NULL, QUEUE_BUS_OBJECT, QUEUE_BUS_INTERFACE, "Status",
                                       &error, &reply, "");
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (json && r >= 0)
                printf("{");
        while (r >= 0) {
                const char *name, *type;
                r = sd_bus_message_enter_container(reply, 'e', "sv");
                if (r <= 0)
                        break;
                r = sd_bus_message_read(reply, "s", &name);
                if (r >= 0)
                        r = sd_bus_message_peek_type(reply, NULL, &type);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'v', type);
                if (r < 0)
                        break;
                printf(json ? "%s\"%s\": " : "%s%s: ", json ? (n ? ", " : "") : "", name);
                if (streq(type, "u")) {
                        uint32_t v;
                        r = sd_bus_message_read(reply, "u", &v);
                        printf("%" PRIu32, v);
                } else if (streq(type, "t")) {
                        uint64_t v;
                        r = sd_bus_message_read(reply, "t", &v);
                        printf("%" PRIu64, v);
                } else if (streq(type, "b")) {
                        int v;
                        r = sd_bus_message_read(reply, "b", &v);
                        printf("%s", json ? (v ? "true" : "false") : (v ? "yes" : "no"));
                } else {
                        r = sd_bus_message_skip(reply, type);
                        printf(json ? "null" : "-");
                }
                if (!json)
                        printf("\n");
                n++;
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (json && n > 0)
                printf("}\n");
        if (r < 0) {
                fprintf(stderr, "posternctl: error: cannot get the queue manager status: %s\n",
                        error.message ? error.message : strerror(-r));
                return r;
        }
        return 0;
}

static void help(void) {
        printf("Usage: posternctl queue [--json] [-c DIR] COMMAND [ARGS]\n\n"
               "  list                    list the queue\n"
               "  show ID                 show a message's envelope\n"
               "  hold ID...|ALL          put messages on hold\n"
               "  release ID...|ALL       release messages from hold\n"
               "  delete ID...|ALL        delete messages\n"
               "  requeue ID...|ALL       resolve and expand messages again\n"
               "  flush [ID|SITE]         retry deferred mail now\n"
               "  status                  the queue manager's state\n");
}

int verb_queue(int argc, char **argv) {
        static const struct option options[] = {
                {"json", no_argument, NULL, 'j'},
                {"config", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        const char *config_dir = NULL, *cmd;
        _cleanup_close_ int qfd = -1;
        bool json = false;
        unsigned count = 0;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "jc:h", options, NULL)) >= 0)
                switch (c) {
                case 'j':
                        json = true;
                        break;
                case 'c':
                        config_dir = optarg;
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                default:
                        return EXIT_FAILURE;
                }
        cmd = optind < argc ? argv[optind++] : "list";
        if (config_dir)
                (void) setenv("POSTERN_CONFIG_DIR", config_dir, 1);
        if (streq(cmd, "status"))
                return queue_status(json) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        if (streq(cmd, "flush")) {
                _cleanup_free_ char *error = NULL;
                const char *arg = optind < argc ? argv[optind] : NULL;
                r = queue_qmgr_call(!arg ? "Flush" : queue_id_valid(arg) ? "FlushId" : "FlushSite",
                                    arg, &error);
                if (r < 0) {
                        fprintf(stderr, "posternctl: error: flush failed: %s\n", strempty(error));
                        return EXIT_FAILURE;
                }
                if (json) {
                        printf("{\"command\": \"flush\"");
                        if (arg) {
                                printf(", \"%s\": ", queue_id_valid(arg) ? "queue_id" : "site");
                                json_str(arg);
                        }
                        printf("}\n");
                }
                return EXIT_SUCCESS;
        }
        r = open_queue(config_dir, &qfd);
        if (r < 0)
                return EXIT_FAILURE;
        if (streq(cmd, "list"))
                return queue_list(qfd, json) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        if (streq(cmd, "show")) {
                if (optind >= argc) {
                        help();
                        return EXIT_FAILURE;
                }
                return queue_show(qfd, argv[optind], json) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }
        if (!streq(cmd, "hold") && !streq(cmd, "release") && !streq(cmd, "delete") &&
            !streq(cmd, "requeue")) {
                fprintf(stderr, "posternctl: error: unknown queue command \"%s\"\n", cmd);
                return EXIT_FAILURE;
        }
        for (int i = optind; i < argc; i++) {
                _cleanup_strv_free_ char **ids = NULL;
                if (streq(argv[i], "ALL")) {
                        for (size_t k = 0; queue_names[k]; k++) {
                                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                                char id[QUEUE_ID_SIZE];
                                if (streq(queue_names[k], QUEUE_MAILDROP))
                                        continue;
                                r = queue_scan_new(qfd, queue_names[k], &scan);
                                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0)
                                        (void) strv_extend(&ids, id);
                        }
                } else if (queue_id_valid(argv[i]))
                        (void) strv_extend(&ids, argv[i]);
                else {
                        fprintf(stderr, "posternctl: error: not a queue ID: %s\n", argv[i]);
                        return EXIT_FAILURE;
                }
                STRV_FOREACH(id, ids) {
                        r = streq(cmd, "hold")      ? queue_admin_hold(qfd, *id, NULL)
                            : streq(cmd, "release") ? queue_admin_release(qfd, *id)
                            : streq(cmd, "delete")  ? queue_admin_delete(qfd, *id, NULL)
                                                    : queue_admin_requeue(qfd, *id, NULL);
                        if (r > 0) {
                                count++;
                                if (streq(cmd, "requeue"))
                                        (void) queue_qmgr_call("Enqueue", *id, NULL);
                        } else if (r < 0)
                                fprintf(stderr, "posternctl: warning: %s: %s\n", *id, strerror(-r));
                }
        }
        if (json)
                printf("{\"command\": \"%s\", \"messages\": %u}\n", cmd, count);
        else
                printf("%s: %u message%s\n", cmd, count, count == 1 ? "" : "s");
        return EXIT_SUCCESS;
}
