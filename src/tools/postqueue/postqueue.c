/* postqueue: the Postfix-compatible queue front end for users. -p (and
 * mailq) lists the queue in Postfix's showq format, -j as one JSON object
 * per message (Postfix 3.1+), -f, -s SITE and -i ID ask the queue manager
 * over org.postern.Queue1 to retry deferred mail now (its socket starts it
 * when it is not running). Listing reads queue_directory directly, so it
 * needs read access to the queue (root or the mail_owner). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "queue-scan.h"
#include "strutil.h"

static const char *arg_config_dir;

static void json_string(FILE *f, const char *s) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fprintf(f, "\\%c", *p);
                else if (*p < 0x20 || *p == 0x7f)
                        fprintf(f, "\\u%04x", *p);
                else
                        fputc(*p, f);
        }
        fputc('"', f);
}

static void show_json(const QueueListEntry *e) {
        printf("{\"queue_name\": ");
        json_string(stdout, e->queue);
        printf(", \"queue_id\": ");
        json_string(stdout, e->id);
        printf(", \"arrival_time\": %lld, \"message_size\": %llu, \"forced_expire\": false, "
               "\"sender\": ", (long long) e->arrival, (unsigned long long) e->size);
        json_string(stdout, e->sender);
        printf(", \"recipients\": [");
        for (size_t i = 0; i < e->n_rcpts; i++) {
                printf("%s{\"address\": ", i ? ", " : "");
                json_string(stdout, e->rcpts[i].address);
                if (e->rcpts[i].reason) {
                        printf(", \"delay_reason\": ");
                        json_string(stdout, e->rcpts[i].reason);
                }
                printf("}");
        }
        printf("]}\n");
}

/* Postfix's showq layout: "%-10s%c %8ld %20.20s %s" for the message line,
 * reasons right-aligned within 76 columns in parentheses, recipients under
 * the sender. */
static void show_text(const QueueListEntry *e) {
        char mark = e->hold ? '!' : streq(e->queue, QUEUE_ACTIVE) ? '*' : ' ';
        char date[64];
        const char *last_reason = NULL;
        struct tm tm;

        if (!localtime_r(&e->arrival, &tm) || !asctime_r(&tm, date))
                strcpy(date, "??");
        printf("%-10s%c %8llu %20.20s %s\n", e->id, mark, (unsigned long long) e->size, date,
               e->sender[0] ? e->sender : "MAILER-DAEMON");
        for (size_t i = 0; i < e->n_rcpts; i++) {
                const char *reason = e->rcpts[i].reason;
                if (reason && (!last_reason || !streq(reason, last_reason))) {
                        int pad = 76 - (int) strlen(reason);
                        printf("%*s(%s)\n", pad > 0 ? pad : 0, "", reason);
                        last_reason = reason;
                }
                printf("%41s%s\n", "", e->rcpts[i].address);
        }
}

static int list_queue(bool json) {
        _cleanup_(conf_unrefp) Config *cfg = NULL;
        _cleanup_close_ int qfd = -1;
        unsigned long long total = 0;
        unsigned count = 0;
        Diag diags = {0};
        int r;

        r = conf_load(arg_config_dir, NULL, &diags, &cfg);
        diag_print(&diags, stderr, "postqueue");
        diag_done(&diags);
        if (r < 0) {
                fprintf(stderr, "postqueue: fatal: cannot load the configuration: %s\n",
                        strerror(-r));
                return r;
        }
        qfd = open(conf_get_str(cfg, P_QUEUE_DIRECTORY), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (qfd < 0) {
                fprintf(stderr, "postqueue: fatal: cannot open queue_directory %s: %m\n",
                        conf_get_str(cfg, P_QUEUE_DIRECTORY));
                return -errno;
        }
        for (size_t k = 0; queue_names[k]; k++) {
                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                char id[QUEUE_ID_SIZE];

                r = queue_scan_new(qfd, queue_names[k], &scan);
                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                        QueueListEntry e = {0};
                        int k2 = queue_list_read(qfd, queue_names[k], id, &e);
                        if (k2 < 0)
                                continue;       /* gone meanwhile, or not readable */
                        if (json)
                                show_json(&e);
                        else {
                                printf(count == 0 ? "%-11s %8s %-20s %s\n" : "\n", "-Queue ID-",
                                       "--Size--", "----Arrival Time----",
                                       "-Sender/Recipient-------");
                                show_text(&e);
                        }
                        total += e.size;
                        count++;
                        queue_list_entry_done(&e);
                }
                if (r < 0 && r != -EACCES) {
                        fprintf(stderr, "postqueue: fatal: cannot scan %s: %s\n", queue_names[k],
                                strerror(-r));
                        return r;
                }
        }
        if (!json) {
                if (count == 0)
                        printf("Mail queue is empty\n");
                else
                        printf("\n-- %llu Kbytes in %u Request%s.\n", total / 1024, count,
                               count == 1 ? "" : "s");
        }
        return 0;
}

static int request(const char *method, const char *arg) {
        _cleanup_free_ char *error = NULL;
        int r = queue_qmgr_call(method, arg, &error);
        if (r < 0)
                fprintf(stderr, "postqueue: fatal: %s request failed: %s\n", method,
                        strempty(error));
        return r;
}

static void help(void) {
        printf("Usage: postqueue [-c DIR] -p | -j | -f | -s SITE | -i QUEUE_ID\n\n"
               "  -p           list the queue (like mailq)\n"
               "  -j           list the queue as JSON, one object per message\n"
               "  -f           retry all deferred mail now\n"
               "  -s SITE      retry deferred mail for SITE now\n"
               "  -i QUEUE_ID  retry one message now\n"
               "  -c DIR       configuration directory\n");
}

int main(int argc, char **argv) {
        enum { NONE, LIST, JSON, FLUSH, SITE, ID } action = NONE;
        const char *arg = NULL;
        int c, r;

        if (strstr(argv[0], "mailq"))
                action = LIST;
        while ((c = getopt(argc, argv, "c:pjfs:i:vh")) >= 0)
                switch (c) {
                case 'c':
                        arg_config_dir = optarg;
                        break;
                case 'p':
                        action = LIST;
                        break;
                case 'j':
                        action = JSON;
                        break;
                case 'f':
                        action = FLUSH;
                        break;
                case 's':
                        action = SITE;
                        arg = optarg;
                        break;
                case 'i':
                        action = ID;
                        arg = optarg;
                        break;
                case 'v':
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                default:
                        help();
                        return EXIT_FAILURE;
                }
        if (arg_config_dir && setenv("POSTERN_CONFIG_DIR", arg_config_dir, 1) < 0)
                return EXIT_FAILURE;
        switch (action) {
        case LIST:
        case JSON:
                r = list_queue(action == JSON);
                break;
        case FLUSH:
                r = request("Flush", NULL);
                break;
        case SITE:
                r = request("FlushSite", arg);
                break;
        case ID:
                r = request("FlushId", arg);
                break;
        default:
                help();
                return EXIT_FAILURE;
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
