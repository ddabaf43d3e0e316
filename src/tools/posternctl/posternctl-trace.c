/* posternctl-trace.c: "posternctl trace", the life of a message across all
 * postern units, read from the journal with sd-journal:
 *
 *   posternctl trace [--json] [--since TIME] [-D DIR | --file FILE]... QUEUEID...
 *   posternctl trace [--json] [--since TIME] --sender ADDR | --recipient ADDR
 *
 * It collects the queue IDs first: those given, or those whose entries carry
 * POSTERN_SENDER / POSTERN_RECIPIENT = ADDR; then it follows the reports
 * they caused (entries with POSTERN_ORIG_QUEUE_ID = ID, and the
 * POSTERN_REPORT_QUEUE_ID of the bounce service's entries), so that a bounce
 * and its delivery show up with the message. Finally it prints every entry
 * with POSTERN_QUEUE_ID or POSTERN_ORIG_QUEUE_ID of one of the IDs, in
 * journal (time) order, as "TIME UNIT[PID]: MESSAGE" or, with --json, one
 * JSON object per line. It reads the local journal, or a journal directory
 * or files given with --directory / --file. Entries from other programs are
 * never shown: only the POSTERN_* matches select. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-journal.h>

#include "addr.h"
#include "macro.h"
#include "posternctl.h"
#include "queue-id.h"
#include "strutil.h"

/* Queue IDs followed from one start; a report of a report is rare, a long
 * chain means a loop. */
#define TRACE_IDS_MAX 1000

typedef struct TraceEntry {
        uint64_t usec;          /* CLOCK_REALTIME */
        const char *unit;       /* _SYSTEMD_UNIT, else SYSLOG_IDENTIFIER */
        const char *pid;
        const char *queue_id;
        const char *message;
} TraceEntry;

static void json_str(FILE *f, const char *s) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) strempty(s); *p; p++)
                if (*p == '"' || *p == '\\')
                        fprintf(f, "\\%c", *p);
                else if (*p < 0x20 || *p == 0x7f)
                        fprintf(f, "\\u%04x", *p);
                else
                        fputc(*p, f);
        fputc('"', f);
}

/* Prints one entry: "Nov 14 22:13:20.123456 UNIT[PID]: MESSAGE" (local
 * time) or a JSON object. */
static void trace_print_entry(FILE *f, const TraceEntry *e, bool json) {
        time_t t = (time_t) (e->usec / 1000000u);
        struct tm tm;
        char when[64];

        if (json) {
                fprintf(f, "{\"time_usec\":%" PRIu64 ",\"unit\":", e->usec);
                json_str(f, e->unit);
                fprintf(f, ",\"pid\":%s,\"queue_id\":", e->pid && *e->pid ? e->pid : "null");
                json_str(f, e->queue_id);
                fputs(",\"message\":", f);
                json_str(f, e->message);
                fputs("}\n", f);
                return;
        }
        if (!localtime_r(&t, &tm) || strftime(when, sizeof(when), "%b %d %H:%M:%S", &tm) == 0)
                snprintf(when, sizeof(when), "%" PRIu64, e->usec / 1000000u);
        fprintf(f, "%s.%06u %s[%s]: %s\n", when, (unsigned) (e->usec % 1000000u),
                strempty(e->unit), e->pid && *e->pid ? e->pid : "?", strempty(e->message));
}

/* The value of field in the current entry, copied into *ret (caller
 * frees); NULL when absent. */
static char *field_dup(sd_journal *j, const char *field) {
        const void *data;
        size_t len, n = strlen(field);

        if (sd_journal_get_data(j, field, &data, &len) < 0 || len <= n ||
            ((const char *) data)[n] != '=')
                return NULL;
        return strndup_safe((const char *) data + n + 1, len - n - 1);
}

static int add_match(sd_journal *j, const char *field, const char *value) {
        _cleanup_free_ char *m = strdup_printf("%s=%s", field, value);
        if (!m)
                return -ENOMEM;
        return sd_journal_add_match(j, m, 0);
}

static int seek_start(sd_journal *j, uint64_t since) {
        return since ? sd_journal_seek_realtime_usec(j, since) : sd_journal_seek_head(j);
}

/* Adds the values of field (in entries matching field_match=value for each
 * of values) to *ids, without duplicates. */
static int collect(sd_journal *j, const char *match_field, char **values, const char *field,
                   uint64_t since, char ***ids) {
        int r;

        sd_journal_flush_matches(j);
        STRV_FOREACH(v, values)
                if ((r = add_match(j, match_field, *v)) < 0)
                        return r;
        r = seek_start(j, since);
        if (r < 0)
                return r;
        while ((r = sd_journal_next(j)) > 0) {
                _cleanup_free_ char *id = field_dup(j, field);
                if (!id || !queue_id_valid(id) || strv_contains(*ids, id))
                        continue;
                if (strv_length(*ids) >= TRACE_IDS_MAX)
                        return -E2BIG;
                r = strv_extend(ids, id);
                if (r < 0)
                        return r;
        }
        return r;
}

/* Follows the reports caused by the IDs until nothing new turns up. */
static int follow_reports(sd_journal *j, uint64_t since, char ***ids) {
        size_t before;
        int r;

        do {
                before = strv_length(*ids);
                r = collect(j, "POSTERN_ORIG_QUEUE_ID", *ids, "POSTERN_QUEUE_ID", since, ids);
                if (r >= 0)
                        r = collect(j, "POSTERN_QUEUE_ID", *ids, "POSTERN_REPORT_QUEUE_ID", since,
                                    ids);
                if (r < 0)
                        return r;
        } while (strv_length(*ids) > before);
        return 0;
}

static int print_entries(sd_journal *j, char **ids, uint64_t since, bool json) {
        unsigned n = 0;
        int r;

        sd_journal_flush_matches(j);
        /* Matches of one field are ORed, different fields ANDed; the
         * disjunction joins the two fields. */
        STRV_FOREACH(id, ids)
                if ((r = add_match(j, "POSTERN_QUEUE_ID", *id)) < 0)
                        return r;
        if ((r = sd_journal_add_disjunction(j)) < 0)
                return r;
        STRV_FOREACH(id, ids)
                if ((r = add_match(j, "POSTERN_ORIG_QUEUE_ID", *id)) < 0)
                        return r;
        r = seek_start(j, since);
        if (r < 0)
                return r;
        while ((r = sd_journal_next(j)) > 0) {
                _cleanup_free_ char *unit = field_dup(j, "_SYSTEMD_UNIT");
                _cleanup_free_ char *ident = field_dup(j, "SYSLOG_IDENTIFIER");
                _cleanup_free_ char *pid = field_dup(j, "_PID");
                _cleanup_free_ char *qid = field_dup(j, "POSTERN_QUEUE_ID");
                _cleanup_free_ char *msg = field_dup(j, "MESSAGE");
                TraceEntry e = {
                        .unit = unit ? unit : ident ? ident : "?",
                        .pid = pid,
                        .queue_id = qid,
                        .message = msg,
                };
                if (sd_journal_get_realtime_usec(j, &e.usec) < 0)
                        continue;
                trace_print_entry(stdout, &e, json);
                n++;
        }
        if (r < 0)
                return r;
        return (int) n;
}

/* --since: "@EPOCH", "YYYY-MM-DD [HH:MM[:SS]]", or "-N[smhd]" ago. */
static int parse_since(const char *s, uint64_t *ret) {
        struct tm tm = {0};
        char *end;
        time_t t;

        if (*s == '@') {
                unsigned long long v = strtoull(s + 1, &end, 10);
                if (end == s + 1 || *end)
                        return -EINVAL;
                *ret = (uint64_t) v * 1000000u;
                return 0;
        }
        if (*s == '-') {
                unsigned long long v = strtoull(s + 1, &end, 10), mul = 1;
                if (end == s + 1)
                        return -EINVAL;
                if (streq(end, "m"))
                        mul = 60;
                else if (streq(end, "h"))
                        mul = 3600;
                else if (streq(end, "d"))
                        mul = 86400;
                else if (*end && !streq(end, "s"))
                        return -EINVAL;
                t = time(NULL) - (time_t) (v * mul);
                *ret = (uint64_t) t * 1000000u;
                return 0;
        }
        end = strptime(s, "%Y-%m-%d", &tm);
        if (end && *end == ' ') {
                const char *clock = end + 1;
                end = strptime(clock, "%H:%M:%S", &tm);
                if (!end || *end)
                        end = strptime(clock, "%H:%M", &tm);
        }
        if (!end || *end)
                return -EINVAL;
        tm.tm_isdst = -1;
        t = mktime(&tm);
        if (t == (time_t) -1)
                return -EINVAL;
        *ret = (uint64_t) t * 1000000u;
        return 0;
}

static int help(void) {
        printf("Usage: posternctl trace [OPTIONS] QUEUEID...\n"
               "       posternctl trace [OPTIONS] --sender ADDR | --recipient ADDR\n\n"
               "Shows the journal entries of a message from all postern units in time\n"
               "order, with the bounce or delivery reports it caused.\n\n"
               "  --sender ADDR      trace the messages from ADDR\n"
               "  --recipient ADDR   trace the messages to ADDR\n"
               "  --since TIME       only entries since TIME (\"YYYY-MM-DD [HH:MM[:SS]]\",\n"
               "                     \"@EPOCH\", \"-2h\")\n"
               "  -D, --directory DIR  read the journal files in DIR\n"
               "  --file FILE        read this journal file (repeatable)\n"
               "  --json             one JSON object per entry\n"
               "  -h, --help         show this help\n");
        return 0;
}

int verb_trace(int argc, char **argv) {
        enum { ARG_SENDER = 0x100, ARG_RECIPIENT, ARG_SINCE, ARG_FILE, ARG_JSON };
        static const struct option options[] = {
                {"sender", required_argument, NULL, ARG_SENDER},
                {"recipient", required_argument, NULL, ARG_RECIPIENT},
                {"since", required_argument, NULL, ARG_SINCE},
                {"directory", required_argument, NULL, 'D'},
                {"file", required_argument, NULL, ARG_FILE},
                {"json", no_argument, NULL, ARG_JSON},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        _cleanup_(strv_freep) char **ids = NULL, **files = NULL;
        const char *sender = NULL, *recipient = NULL, *directory = NULL;
        uint64_t since = 0;
        bool json = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "D:h", options, NULL)) >= 0)
                switch (c) {
                case ARG_SENDER:
                        sender = optarg;
                        break;
                case ARG_RECIPIENT:
                        recipient = optarg;
                        break;
                case ARG_SINCE:
                        if (parse_since(optarg, &since) < 0) {
                                fprintf(stderr, "posternctl: error: cannot parse --since "
                                        "\"%s\"\n", optarg);
                                return 2;
                        }
                        break;
                case 'D':
                        directory = optarg;
                        break;
                case ARG_FILE:
                        if (strv_extend(&files, optarg) < 0)
                                return 1;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case 'h':
                        return help();
                default:
                        return 2;
                }
        for (int i = optind; i < argc; i++) {
                if (!queue_id_valid(argv[i])) {
                        fprintf(stderr, "posternctl: error: \"%s\" is not a queue ID\n", argv[i]);
                        return 2;
                }
                if (!strv_contains(ids, argv[i]) && strv_extend(&ids, argv[i]) < 0)
                        return 1;
        }
        if (!ids && !sender && !recipient) {
                fprintf(stderr, "posternctl: error: trace needs a queue ID, --sender or "
                        "--recipient; see posternctl trace --help\n");
                return 2;
        }
        if (directory && files) {
                fprintf(stderr, "posternctl: error: --directory and --file exclude each other\n");
                return 2;
        }

        if (directory)
                r = sd_journal_open_directory(&j, directory, 0);
        else if (files)
                r = sd_journal_open_files(&j, (const char **) files, 0);
        else
                r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: cannot open the journal: %s\n", strerror(-r));
                return 1;
        }

        if (sender || recipient) {
                char *v[] = {(char *) (sender ? sender : recipient), NULL};
                r = collect(j, sender ? "POSTERN_SENDER" : "POSTERN_RECIPIENT", v,
                            "POSTERN_QUEUE_ID", since, &ids);
                if (r >= 0 && sender && recipient) {
                        /* Both: the messages from sender that went to recipient. */
                        _cleanup_(strv_freep) char **to = NULL, **both = NULL;
                        char *w[] = {(char *) recipient, NULL};
                        r = collect(j, "POSTERN_RECIPIENT", w, "POSTERN_QUEUE_ID", since, &to);
                        STRV_FOREACH(id, ids)
                                if (r >= 0 && strv_contains(to, *id))
                                        r = strv_extend(&both, *id);
                        strv_free(ids);
                        ids = steal_ptr(both);
                }
                if (r < 0) {
                        fprintf(stderr, "posternctl: error: cannot read the journal: %s\n",
                                strerror(-r));
                        return 1;
                }
                if (!ids) {
                        fprintf(stderr, "posternctl: no messages %s <%s> in the journal\n",
                                sender ? "from" : "to", sender ? sender : recipient);
                        return 1;
                }
        }
        r = follow_reports(j, since, &ids);
        if (r >= 0)
                r = print_entries(j, ids, since, json);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: cannot read the journal: %s\n", strerror(-r));
                return 1;
        }
        if (r == 0) {
                fprintf(stderr, "posternctl: no journal entries for %s\n", ids[0]);
                return 1;
        }
        return 0;
}
