/* queue-show.c: the mailq / postqueue -p and -j listing (queue_show()).
 * Reads messages with queue_list_read(); the layout follows Postfix's
 * showq: "%-10s%c %8ld %20.20s %s" per message, deferral reasons in
 * parentheses right-aligned within 76 columns, recipients under the
 * sender. Leaves out how the listing reaches the user. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue-scan.h"
#include "queue-show.h"
#include "strutil.h"

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

static void show_json(FILE *f, const QueueListEntry *e) {
        fprintf(f, "{\"queue_name\": ");
        json_string(f, e->queue);
        fprintf(f, ", \"queue_id\": ");
        json_string(f, e->id);
        fprintf(f, ", \"arrival_time\": %lld, \"message_size\": %llu, \"forced_expire\": false, "
                "\"sender\": ", (long long) e->arrival, (unsigned long long) e->size);
        json_string(f, e->sender);
        fprintf(f, ", \"recipients\": [");
        for (size_t i = 0; i < e->n_rcpts; i++) {
                fprintf(f, "%s{\"address\": ", i ? ", " : "");
                json_string(f, e->rcpts[i].address);
                if (e->rcpts[i].reason) {
                        fprintf(f, ", \"delay_reason\": ");
                        json_string(f, e->rcpts[i].reason);
                }
                fprintf(f, "}");
        }
        fprintf(f, "]}\n");
}

static void show_text(FILE *f, const QueueListEntry *e) {
        char mark = e->hold ? '!' : streq(e->queue, QUEUE_ACTIVE) ? '*' : ' ';
        char date[64];
        const char *last_reason = NULL;
        struct tm tm;

        if (!localtime_r(&e->arrival, &tm) || !asctime_r(&tm, date))
                strcpy(date, "??");
        fprintf(f, "%-10s%c %8llu %20.20s %s\n", e->id, mark, (unsigned long long) e->size, date,
                e->sender[0] ? e->sender : "MAILER-DAEMON");
        for (size_t i = 0; i < e->n_rcpts; i++) {
                const char *reason = e->rcpts[i].reason;
                if (reason && (!last_reason || !streq(reason, last_reason))) {
                        int pad = 76 - (int) strlen(reason);
                        fprintf(f, "%*s(%s)\n", pad > 0 ? pad : 0, "", reason);
                        last_reason = reason;
                }
                fprintf(f, "%41s%s\n", "", e->rcpts[i].address);
        }
}

int queue_show(int queue_dir_fd, bool json, FILE *out) {
        unsigned long long total = 0;
        unsigned count = 0;
        int r;

        /* A user without access to the queue must learn so before any
         * output, never see "Mail queue is empty" (Postfix's showq runs
         * as the mail owner for the same reason). */
        for (size_t k = 0; queue_names[k]; k++)
                if (faccessat(queue_dir_fd, queue_names[k], R_OK | X_OK, 0) < 0 && errno != ENOENT)
                        return -errno;

        for (size_t k = 0; queue_names[k]; k++) {
                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                char id[QUEUE_ID_SIZE];

                r = queue_scan_new(queue_dir_fd, queue_names[k], &scan);
                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                        QueueListEntry e = {0};
                        if (queue_list_read(queue_dir_fd, queue_names[k], id, &e) < 0)
                                continue;       /* gone meanwhile, or corrupt */
                        if (json)
                                show_json(out, &e);
                        else {
                                fprintf(out, count == 0 ? "%-11s %8s %-20s %s\n" : "\n",
                                        "-Queue ID-", "--Size--", "----Arrival Time----",
                                        "-Sender/Recipient-------");
                                show_text(out, &e);
                        }
                        total += e.size;
                        count++;
                        queue_list_entry_done(&e);
                }
                if (r < 0)
                        return r;
        }
        if (!json) {
                if (count == 0)
                        fprintf(out, "Mail queue is empty\n");
                else
                        fprintf(out, "\n-- %llu Kbytes in %u Request%s.\n", total / 1024, count,
                                count == 1 ? "" : "s");
        }
        return 0;
}
