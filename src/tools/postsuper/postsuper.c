/* postsuper: Postfix-compatible queue maintenance for the super-user.
 * -d ID|ALL [QUEUE] deletes, -h ID|ALL [QUEUE] puts on hold, -H ID|ALL
 * releases from hold (to the deferred queue, due at once), -r ID|ALL
 * [QUEUE] requeues (back to incoming/, marked so that the queue manager
 * resolves and expands the recipients again). "-" reads queue IDs from
 * standard input, one per line (the first word of the line). Counts are
 * reported as Postfix does ("postsuper: Deleted: 3 messages").
 *
 * Safe while postern-qmgr runs: the operations are renames and unlinks that
 * the queue manager notices before each delivery and when it finishes a
 * message (see queue-scan.h and postern-qmgr(8)); a delivery already in
 * flight completes and records its result in the file wherever it went.
 * Requeued messages are announced to the queue manager. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "queue-scan.h"
#include "strutil.h"

typedef enum Op { OP_DELETE, OP_HOLD, OP_RELEASE, OP_REQUEUE, _OP_MAX } Op;

typedef struct Request {
        Op op;
        char *arg;              /* ID, ALL or - */
        const char *queue;      /* optional queue restriction */
} Request;

static const char *const op_done[_OP_MAX] = {
        [OP_DELETE] = "Deleted",
        [OP_HOLD] = "Placed on hold",
        [OP_RELEASE] = "Released from hold",
        [OP_REQUEUE] = "Requeued",
};

static int apply(int qfd, Op op, const char *id, const char *queue) {
        int r;
        switch (op) {
        case OP_DELETE:
                r = queue_admin_delete(qfd, id, queue);
                break;
        case OP_HOLD:
                r = queue_admin_hold(qfd, id, queue);
                break;
        case OP_RELEASE:
                r = queue_admin_release(qfd, id);
                break;
        default:
                r = queue_admin_requeue(qfd, id, queue);
                if (r > 0)
                        (void) queue_qmgr_call("Enqueue", id, NULL);
                break;
        }
        if (r < 0)
                fprintf(stderr, "postsuper: warning: %s: %s\n", id, strerror(-r));
        else if (r > 0 && op == OP_DELETE)
                fprintf(stderr, "postsuper: %s: removed\n", id);
        return r;
}

static int run_all(int qfd, Op op, const char *queue, unsigned *count) {
        static const char *const del[] = {QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, NULL};
        static const char *const hold[] = {QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, NULL};
        static const char *const rel[] = {QUEUE_HOLD, NULL};
        static const char *const req[] = {QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, NULL};
        const char *const *queues = op == OP_DELETE ? del : op == OP_HOLD ? hold
                                    : op == OP_RELEASE ? rel : req;
        const char *one[2] = {queue, NULL};
        int r;

        if (queue)
                queues = one;
        /* Collect all queues first: the operations move files between
         * queues (a requeued message may land in hold/ through
         * header_checks), and no message is acted on twice. Each ID keeps
         * the queue it was found in ("queue\tid"). */
        _cleanup_strv_free_ char **ids = NULL;
        for (size_t k = 0; queues[k]; k++) {
                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                char id[QUEUE_ID_SIZE];

                r = queue_scan_new(qfd, queues[k], &scan);
                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                        _cleanup_free_ char *e = strdup_printf("%zu\t%s", k, id);
                        if (!e || strv_extend(&ids, e) < 0)
                                return -ENOMEM;
                }
                if (r < 0) {
                        fprintf(stderr, "postsuper: fatal: cannot scan %s: %s\n", queues[k],
                                strerror(-r));
                        return r;
                }
        }
        STRV_FOREACH(i, ids) {
                char *tab = strchr(*i, '\t');
                size_t k = strtoul(*i, NULL, 10);
                if (apply(qfd, op, tab + 1, queues[k]) > 0)
                        (*count)++;
        }
        return 0;
}

static bool valid_queue(const char *q) {
        static const char *const names[] = {
                QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, QUEUE_MAILDROP,
                QUEUE_CORRUPT,
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(q, names[i]))
                        return true;
        return false;
}

static void help(void) {
        printf("Usage: postsuper [-c DIR] [-d ID|ALL|-] [-h ID|ALL|-] [-H ID|ALL|-] "
               "[-r ID|ALL|-] [QUEUE]\n\n"
               "  -d   delete messages\n"
               "  -h   put messages on hold\n"
               "  -H   release messages from hold\n"
               "  -r   requeue messages (resolve and expand the recipients again)\n"
               "  ID   a queue ID, ALL for every message, - to read IDs from standard input\n"
               "  QUEUE  limit to incoming, active, deferred or hold\n");
}

int main(int argc, char **argv) {
        _cleanup_(conf_unrefp) Config *cfg = NULL;
        _cleanup_close_ int qfd = -1;
        const char *config_dir = NULL, *queue = NULL;
        Request reqs[64];
        size_t n_reqs = 0;
        unsigned counts[_OP_MAX] = {0};
        Diag diags = {0};
        int c, r;

        while ((c = getopt(argc, argv, "c:d:h:H:r:sv")) >= 0) {
                Op op;
                switch (c) {
                case 'c':
                        config_dir = optarg;
                        continue;
                case 's':
                case 'v':
                        continue;
                case 'd':
                        op = OP_DELETE;
                        break;
                case 'h':
                        op = OP_HOLD;
                        break;
                case 'H':
                        op = OP_RELEASE;
                        break;
                case 'r':
                        op = OP_REQUEUE;
                        break;
                default:
                        help();
                        return EXIT_FAILURE;
                }
                if (n_reqs >= ELEMENTSOF(reqs)) {
                        fprintf(stderr, "postsuper: fatal: too many requests\n");
                        return EXIT_FAILURE;
                }
                if (!streq(optarg, "ALL") && !streq(optarg, "-") && !queue_id_valid(optarg)) {
                        fprintf(stderr, "postsuper: fatal: invalid queue ID: %s\n", optarg);
                        return EXIT_FAILURE;
                }
                reqs[n_reqs++] = (Request) {.op = op, .arg = optarg};
        }
        if (optind < argc) {
                queue = argv[optind++];
                if (!valid_queue(queue) || optind < argc) {
                        fprintf(stderr, "postsuper: fatal: invalid directory name: %s\n", queue);
                        return EXIT_FAILURE;
                }
        }
        if (n_reqs == 0) {
                help();
                return EXIT_FAILURE;
        }
        r = conf_load(config_dir, NULL, &diags, &cfg);
        diag_print(&diags, stderr, "postsuper");
        diag_done(&diags);
        if (r < 0) {
                fprintf(stderr, "postsuper: fatal: cannot load the configuration: %s\n",
                        strerror(-r));
                return EXIT_FAILURE;
        }
        if (config_dir)
                (void) setenv("POSTERN_CONFIG_DIR", config_dir, 1);
        qfd = open(conf_get_str(cfg, P_QUEUE_DIRECTORY), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (qfd < 0) {
                fprintf(stderr, "postsuper: fatal: cannot open queue_directory %s: %m\n",
                        conf_get_str(cfg, P_QUEUE_DIRECTORY));
                return EXIT_FAILURE;
        }
        for (size_t i = 0; i < n_reqs; i++) {
                Request *q = &reqs[i];
                if (streq(q->arg, "ALL")) {
                        if (run_all(qfd, q->op, queue, &counts[q->op]) < 0)
                                return EXIT_FAILURE;
                } else if (streq(q->arg, "-")) {
                        char line[256];
                        while (fgets(line, sizeof(line), stdin)) {
                                char *id = strstrip(line);
                                id[strcspn(id, " \t*!")] = 0;
                                if (!*id)
                                        continue;
                                if (!queue_id_valid(id)) {
                                        fprintf(stderr, "postsuper: warning: invalid queue ID: %s\n", id);
                                        continue;
                                }
                                if (apply(qfd, q->op, id, queue) > 0)
                                        counts[q->op]++;
                        }
                } else if (apply(qfd, q->op, q->arg, queue) > 0)
                        counts[q->op]++;
        }
        for (Op op = 0; op < _OP_MAX; op++) {
                bool asked = false;
                for (size_t i = 0; i < n_reqs; i++)
                        asked |= reqs[i].op == op;
                if (asked && counts[op] > 0)
                        fprintf(stderr, "postsuper: %s: %u message%s\n", op_done[op], counts[op],
                                counts[op] == 1 ? "" : "s");
        }
        return EXIT_SUCCESS;
}
