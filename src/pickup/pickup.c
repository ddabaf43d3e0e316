/* pickup.c: postern-pickup, started by postern-pickup.path when maildrop/
 * has files. For each file that postdrop left there it checks the queue
 * file format (a file that fails goes to corrupt/ with a journal entry),
 * writes a new queue file under a new queue ID into incoming/ with a
 * Received: header and the Date:, Message-ID: and From: headers the message
 * lacks, makes it durable (file and directory), removes the maildrop file
 * and announces the new message to the queue manager. It exits when
 * maildrop/ is empty. A crash between the two steps leaves both files; the
 * message is then delivered twice rather than lost, as with Postfix. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conf.h"
#include "log.h"
#include "queue-file.h"
#include "queue-scan.h"
#include "strutil.h"

typedef struct Pickup {
        Config *config;
        int queue_fd, maildrop_fd, incoming_fd;
        uint64_t size_limit;
} Pickup;

/* Which of Date:, Message-ID:, From: the header section has, and the
 * Message-ID's value (unfolded, escaped for logging; NULL without one). */
static void scan_headers(int fd, const QueueEnvelope *env, bool *date, bool *msgid, bool *from,
                         char **ret_msgid_value) {
        char buf[65536];
        size_t n = (size_t) MIN(env->content_size, (uint64_t) sizeof(buf) - 1);
        ssize_t k = pread(fd, buf, n, (off_t) env->content_offset);
        const char *p = buf;

        *date = *msgid = *from = false;
        *ret_msgid_value = NULL;
        if (k <= 0)
                return;
        buf[k] = 0;
        while (*p && *p != '\n') {
                if (strncasecmp(p, "date:", 5) == 0)
                        *date = true;
                else if (strncasecmp(p, "message-id:", 11) == 0 && !*msgid) {
                        const char *e = strchr(p, '\n');
                        _cleanup_free_ char *v = NULL;
                        while (e && (e[1] == ' ' || e[1] == '\t'))
                                e = strchr(e + 1, '\n');
                        v = strndup(p + 11, e ? (size_t) (e - p - 11) : strlen(p + 11));
                        for (char *c = v; c && *c; c++)
                                if (*c == '\n' || *c == '\t')
                                        *c = ' ';
                        *ret_msgid_value = v ? str_escape_log(strstrip(v), 300) : NULL;
                        *msgid = true;
                } else if (strncasecmp(p, "from:", 5) == 0)
                        *from = true;
                p = strchr(p, '\n');
                if (!p)
                        break;
                p++;
        }
}

static int copy_content(int fd, const QueueEnvelope *env, QueueWriter *w) {
        char buf[65536];
        uint64_t off = env->content_offset, left = env->content_size;
        while (left > 0) {
                size_t n = (size_t) MIN(left, (uint64_t) sizeof(buf));
                ssize_t k = pread(fd, buf, n, (off_t) off);
                int r;
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? -errno : -EBADMSG;
                r = queue_writer_append(w, buf, (size_t) k);
                if (r < 0)
                        return r;
                off += (uint64_t) k;
                left -= (uint64_t) k;
        }
        return 0;
}

static void to_corrupt(Pickup *p, const char *id, const char *why) {
        int r = queue_move(p->queue_fd, id, QUEUE_MAILDROP, QUEUE_CORRUPT);
        if (r < 0) {
                log_error_errno(r, "%s: cannot move a bad maildrop file to %s: %m", id, QUEUE_CORRUPT);
                (void) unlinkat(p->maildrop_fd, id, 0);
        } else
                log_mail(LOG_WARNING, MSGID_REMOVED, id, LOG_FIELDS("POSTERN_STATUS", "corrupt"),
                         "bad maildrop file (%s): moved to %s", why, QUEUE_CORRUPT);
}

/* Returns 1 when a message was queued, 0 when the file was skipped. */
static int pick_one(Pickup *p, const char *id) {
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *hdr = NULL;
        QueueEnvelope env = {0}, out = {0};
        const char *myhostname = conf_get_str(p->config, P_MYHOSTNAME);
        char newid[QUEUE_ID_SIZE], date[64];
        bool has_date, has_msgid, has_from;
        _cleanup_free_ char *msgid = NULL;
        struct stat st;
        struct tm tm;
        int r;

        fd = openat(p->maildrop_fd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode)) {
                to_corrupt(p, id, "not a regular file");
                return 0;
        }
        r = queue_file_read(fd, &env);
        if (r == -EBADMSG) {
                to_corrupt(p, id, "malformed");
                return 0;
        }
        if (r < 0)
                return r;
        if (p->size_limit > 0 && env.content_size > p->size_limit) {
                queue_envelope_done(&env);
                to_corrupt(p, id, "message too big");
                return 0;
        }
        /* The owner of the file is who submitted it, whatever it says. */
        free(env.submit_uid);
        env.submit_uid = strdup_printf("%u", (unsigned) st.st_uid);

        do {
                queue_id_new(NULL, newid);
                r = queue_writer_new(p->incoming_fd, newid, &w);
        } while (r == -EEXIST);
        if (r < 0) {
                queue_envelope_done(&env);
                return r;
        }
        gettimeofday(&out.arrival, NULL);
        localtime_r(&out.arrival.tv_sec, &tm);
        strftime(date, sizeof(date), "%a, %e %b %Y %H:%M:%S %z", &tm);
        scan_headers(fd, &env, &has_date, &has_msgid, &has_from, &msgid);
        if (!has_msgid)
                msgid = strdup_printf("<%s@%s>", newid, myhostname);
        hdr = strdup_printf("Received: by %s (postern, from userid %s)\n\tid %s; %s\n%s%s%s%s%s%s%s%s",
                            myhostname, strempty(env.submit_uid), newid, date,
                            has_date ? "" : "Date: ", has_date ? "" : date, has_date ? "" : "\n",
                            has_msgid ? "" : "Message-Id: <", has_msgid ? "" : newid,
                            has_msgid ? "" : "@", has_msgid ? "" : myhostname,
                            has_msgid ? "" : ">\n");
        if (!hdr) {
                queue_envelope_done(&env);
                return -ENOMEM;
        }
        r = queue_writer_append(w, hdr, strlen(hdr));
        if (r >= 0 && !has_from) {
                _cleanup_free_ char *from = env.fullname
                        ? strdup_printf("From: %s <%s>\n", env.fullname, env.sender)
                        : strdup_printf("From: %s\n", env.sender);
                r = from ? queue_writer_append(w, from, strlen(from)) : -ENOMEM;
        }
        if (r >= 0)
                r = copy_content(fd, &env, w);
        if (r >= 0) {
                queue_envelope_done(&out);
                r = queue_envelope_copy(&env, &out);
                if (r >= 0) {
                        memcpy(out.queue_id, newid, QUEUE_ID_SIZE);
                        gettimeofday(&out.arrival, NULL);
                        free(out.service);
                        out.service = strdup("pickup");
                        out.flags = 0;
                        r = queue_writer_finish(w, &out);
                }
        }
        if (r >= 0)
                r = queue_writer_sync(w);
        if (r >= 0)
                r = queue_writer_commit(w, p->incoming_fd);
        if (r >= 0 && fsync(p->incoming_fd) < 0)
                r = -errno;
        if (r >= 0) {
                if (unlinkat(p->maildrop_fd, id, 0) < 0)
                        log_warning("%s: cannot remove the maildrop file: %m", id);
                log_mail(LOG_INFO, MSGID_QUEUED, newid,
                         LOG_FIELDS("POSTERN_SENDER", env.sender, "POSTERN_UID", env.submit_uid),
                         "uid=%s from=<%s>", strempty(env.submit_uid), env.sender);
                /* As Postfix's cleanup, after pickup's line. */
                log_mail(LOG_INFO, MSGID_MESSAGE_ID, newid, LOG_FIELDS("POSTERN_MESSAGE_ID", msgid),
                         "message-id=%s", msgid ?: "<>");
                (void) queue_qmgr_call("Enqueue", newid, NULL);
        } else
                log_error_errno(r, "%s: cannot queue the maildrop file: %m; keeping it", id);
        queue_envelope_done(&env);
        queue_envelope_done(&out);
        return r < 0 ? r : 1;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {},
        };
        Pickup p = {.queue_fd = -1, .maildrop_fd = -1, .incoming_fd = -1};
        const char *config_dir = NULL;
        Diag diags = {0};
        unsigned n = 0, failures = 0;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:", options, NULL)) >= 0)
                if (c == 'c')
                        config_dir = optarg;
                else
                        return EXIT_FAILURE;
        log_setup("postern-pickup", NULL, LOG_TARGET_AUTO);
        r = conf_load(config_dir, "pickup", &diags, &p.config);
        for (size_t i = 0; i < diags.n; i++) {
                _cleanup_free_ char *t = diag_entry_format(&diags.entries[i]);
                log_warning("%s", strempty(t));
        }
        diag_done(&diags);
        if (r < 0) {
                log_error_errno(r, "Cannot load the configuration: %m");
                return EXIT_FAILURE;
        }
        if (config_dir)
                (void) setenv("POSTERN_CONFIG_DIR", config_dir, 1);
        p.size_limit = conf_get_size(p.config, P_MESSAGE_SIZE_LIMIT);
        p.queue_fd = open(conf_get_str(p.config, P_QUEUE_DIRECTORY), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (p.queue_fd >= 0) {
                p.maildrop_fd = openat(p.queue_fd, QUEUE_MAILDROP, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                p.incoming_fd = openat(p.queue_fd, QUEUE_INCOMING, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (p.maildrop_fd < 0 || p.incoming_fd < 0) {
                log_error("Cannot open the queue directories under %s: %m",
                          conf_get_str(p.config, P_QUEUE_DIRECTORY));
                r = -errno;
                goto out;
        }
        (void) sd_notify(false, "READY=1");
        /* Until a scan finds nothing new: postdrop may add files meanwhile. */
        for (;;) {
                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                char id[QUEUE_ID_SIZE];
                unsigned found = 0;

                r = queue_scan_new(p.queue_fd, QUEUE_MAILDROP, &scan);
                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                        int k = pick_one(&p, id);
                        if (k > 0) {
                                n++;
                                found++;
                        } else if (k < 0)
                                failures++;
                }
                if (r < 0) {
                        log_error_errno(r, "Cannot scan maildrop: %m");
                        break;
                }
                if (found == 0)
                        break;
        }
        log_debug("Picked up %u message(s)", n);
out:
        if (p.queue_fd >= 0)
                close(p.queue_fd);
        if (p.maildrop_fd >= 0)
                close(p.maildrop_fd);
        if (p.incoming_fd >= 0)
                close(p.incoming_fd);
        conf_unref(p.config);
        return r < 0 || failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
