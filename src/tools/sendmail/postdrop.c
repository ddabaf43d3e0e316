/* postdrop: writes one locally submitted message into maildrop/. Installed
 * set-gid postdrop (mode 2755) so that users without access to the queue
 * can submit: the maildrop directory (mode 1730 postern:postdrop) lets the
 * group create files but not list or read them. sendmail runs it with the
 * envelope as arguments ("-f SENDER -F NAME -- RECIPIENT...") and the
 * message (LF line ends, the "." end marker already removed) on standard
 * input. The file is in the queue file format, records the submitter's uid
 * and is mode 0444 for postern-pickup, which checks it and moves it on.
 *
 * Being set-gid, it trusts nothing of its caller: the environment is
 * cleared, and the configuration directory comes from -c or
 * POSTERN_CONFIG_DIR only when the real uid is root (as Postfix's postdrop
 * ignores MAIL_CONFIG). */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "conf.h"
#include "log.h"
#include "queue-file.h"
#include "queue-scan.h"
#include "strutil.h"

#if defined(__SANITIZE_ADDRESS__)
/* Sanitizer builds only: LeakSanitizer inspects the process like a
 * debugger, which a set-gid process (not dumpable) may not, and cannot read
 * ASAN_OPTIONS from /proc there either; its failure would fail every
 * set-gid run of the test builds. */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) {
        return 1;
}
#endif

static char *qualify(const char *a, const char *origin) {
        if (!*a || strchr(a, '@'))
                return strdup(a);
        return strdup_printf("%s@%s", a, origin);
}

/* Configuration problems, as Postfix's sendmail reports them: errors on
 * stderr; warnings (an unknown or unimplemented parameter) on stderr only
 * when it is a terminal, else in the journal, so that cron jobs and scripts
 * that send mail do not mail the administrator a warning every run. */
static void report_diags(Diag *diags) {
        bool tty = isatty(STDERR_FILENO);

        log_setup("postdrop", NULL, LOG_TARGET_JOURNAL);
        for (size_t i = 0; i < diags->n; i++) {
                const DiagEntry *e = &diags->entries[i];
                _cleanup_free_ char *t = diag_entry_format(e);

                if (e->level == DIAG_ERROR || tty)
                        fprintf(stderr, "postdrop: %s\n", t ? t : "(out of memory)");
                else if (t)
                        log_mail(LOG_WARNING, MSGID_CONFIG_WARNING, NULL, LOG_NO_FIELDS, "%s", t);
        }
        diag_done(diags);
}

int main(int argc, char **argv) {
        _cleanup_(conf_unrefp) Config *cfg = NULL;
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_free_ char *config_dir = NULL, *sender = NULL, *fullname = NULL;
        _cleanup_close_ int qfd = -1, dfd = -1;
        QueueEnvelope env = {0};
        char id[QUEUE_ID_SIZE], buf[65536], uidbuf[32];
        uint64_t limit, total = 0;
        struct passwd *pw;
        Diag diags = {0};
        uid_t uid = getuid();
        int i, r;

        if (uid == 0 && getenv("POSTERN_CONFIG_DIR"))
                config_dir = strdup(getenv("POSTERN_CONFIG_DIR"));
        {
                /* Nothing of the caller's environment reaches the
                 * set-gid process except the log target. */
                const char *lt = getenv("POSTERN_LOG_TARGET");
                _cleanup_free_ char *keep = lt ? strdup(lt) : NULL;
                clearenv();
                (void) setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
                if (keep)
                        (void) setenv("POSTERN_LOG_TARGET", keep, 1);
        }
        umask(077);
        for (i = 1; i < argc; i++) {
                if (streq(argv[i], "--")) {
                        i++;
                        break;
                } else if (streq(argv[i], "-c") && i + 1 < argc) {
                        if (uid == 0) {
                                free(config_dir);
                                config_dir = strdup(argv[i + 1]);
                        }
                        i++;
                } else if (streq(argv[i], "-f") && i + 1 < argc) {
                        free(sender);
                        sender = strdup(argv[++i]);
                } else if (streq(argv[i], "-F") && i + 1 < argc) {
                        free(fullname);
                        fullname = strdup(argv[++i]);
                } else if (streq(argv[i], "-r")) {
                        continue;
                } else {
                        fprintf(stderr, "postdrop: fatal: unexpected argument: %s\n", argv[i]);
                        return EXIT_FAILURE;
                }
        }
        if (i >= argc) {
                fprintf(stderr, "postdrop: fatal: no recipients\n");
                return EXIT_FAILURE;
        }
        r = conf_load(config_dir, "sendmail", &diags, &cfg);
        report_diags(&diags);
        if (r < 0) {
                fprintf(stderr, "postdrop: fatal: cannot load the configuration: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        pw = getpwuid(uid);
        if (!sender)
                sender = qualify(pw ? pw->pw_name : "nobody", conf_get_str(cfg, P_MYORIGIN));
        else {
                char *s = qualify(sender, conf_get_str(cfg, P_MYORIGIN));
                free(sender);
                sender = s;
        }
        if (!sender || strchr(sender, '\n') || strlen(sender) > ADDR_PATH_MAX) {
                fprintf(stderr, "postdrop: fatal: bad sender address\n");
                return EXIT_FAILURE;
        }
        env.sender = steal_ptr(sender);
        env.fullname = fullname && !strchr(fullname, '\n') ? steal_ptr(fullname) : NULL;
        snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned) uid);
        env.submit_uid = strdup(uidbuf);
        env.protocol = strdup("local");
        gettimeofday(&env.arrival, NULL);
        for (; i < argc; i++) {
                _cleanup_free_ char *a = qualify(argv[i], conf_get_str(cfg, P_MYORIGIN));
                if (!a || !*a || strchr(a, '\n') || strlen(a) > ADDR_PATH_MAX ||
                    queue_envelope_add_rcpt(&env, a, 0, NULL) < 0) {
                        fprintf(stderr, "postdrop: fatal: bad recipient address: %s\n", argv[i]);
                        queue_envelope_done(&env);
                        return EXIT_FAILURE;
                }
        }

        qfd = open(conf_get_str(cfg, P_QUEUE_DIRECTORY), O_PATH | O_DIRECTORY | O_CLOEXEC);
        /* maildrop/ is 1730 postern:postdrop: the postdrop group may enter
         * and create files but not list it, so that users cannot see each
         * other's submissions. Without read access the directory opens as
         * O_PATH, which suffices for creating and renaming in it. */
        if (qfd >= 0) {
                dfd = openat(qfd, QUEUE_MAILDROP, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0 && errno == EACCES)
                        dfd = openat(qfd, QUEUE_MAILDROP, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
        if (dfd < 0) {
                fprintf(stderr, "postdrop: fatal: cannot open %s/%s: %m\n",
                        conf_get_str(cfg, P_QUEUE_DIRECTORY), QUEUE_MAILDROP);
                queue_envelope_done(&env);
                return EXIT_FAILURE;
        }
        do {
                queue_id_new(NULL, id);
                r = queue_writer_new(dfd, id, &w);
        } while (r == -EEXIST);
        if (r < 0) {
                fprintf(stderr, "postdrop: fatal: cannot create a file in maildrop: %s\n", strerror(-r));
                queue_envelope_done(&env);
                return EXIT_FAILURE;
        }
        memcpy(env.queue_id, id, QUEUE_ID_SIZE);
        limit = conf_get_size(cfg, P_MESSAGE_SIZE_LIMIT);
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        fprintf(stderr, "postdrop: fatal: read error: %m\n");
                        r = -errno;
                        break;
                }
                if (n == 0)
                        break;
                total += (uint64_t) n;
                if (limit > 0 && total > limit) {
                        fprintf(stderr, "postdrop: fatal: message file too big\n");
                        r = -EFBIG;
                        break;
                }
                r = queue_writer_append(w, buf, (size_t) n);
                if (r < 0)
                        break;
        }
        if (r >= 0)
                r = queue_writer_finish(w, &env);
        if (r >= 0)
                r = queue_writer_sync(w);
        if (r >= 0)
                r = queue_writer_commit(w, dfd);
        queue_envelope_done(&env);
        if (r < 0) {
                if (r != -EFBIG)
                        fprintf(stderr, "postdrop: fatal: cannot write the message: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        /* pickup runs as the mail owner and reads it as "other". */
        (void) fchmodat(dfd, id, 0444, 0);
        /* The new name must be durable before sendmail reports success. An
         * O_PATH directory cannot be fsync()ed: sync its file system
         * through the new file instead. */
        if (fsync(dfd) < 0) {
                _cleanup_close_ int ffd = -1;
                if (errno == EBADF)
                        ffd = openat(dfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (ffd < 0 || syncfs(ffd) < 0) {
                        fprintf(stderr, "postdrop: fatal: cannot sync maildrop: %m\n");
                        return EXIT_FAILURE;
                }
        }
        return EXIT_SUCCESS;
}
