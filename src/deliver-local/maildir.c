/* maildir.c: delivery into a Maildir (the qmail maildir(5) format Dovecot
 * and Courier read). The message is written to tmp/ under a name unique
 * across processes and hosts ("SECONDS.MUSECPPIDQCOUNTER.HOST"), fsynced,
 * linked into new/ (rename() where the file system cannot link), and new/
 * is fsynced before success is reported. Missing tmp/, new/ and cur/ (and
 * parents) are created with mode 0700 as the current user, who is the
 * mailbox owner: the caller has dropped privileges already. Entry points:
 * maildir_deliver(), maildir_unique_name(). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "deliver-local.h"

int deliver_make_dirs(const char *dir) {
        _cleanup_free_ char *p = NULL;

        /* Usually all there already: one mkdir() says so, where a walk
         * from the root took one per component (27 for a Maildir's three
         * subdirectories under /home/user/Maildir). */
        if (mkdir(dir, 0700) == 0 || errno == EEXIST)
                return 0;
        if (errno != ENOENT)
                return -errno;
        p = strdup(dir);
        if (!p)
                return -ENOMEM;
        for (char *s = p + 1;; s++) {
                if (*s == '/' || *s == 0) {
                        char c = *s;
                        *s = 0;
                        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                                return -errno;
                        *s = c;
                        if (c == 0)
                                break;
                }
        }
        return 0;
}

char *maildir_unique_name(void) {
        /* The counter keeps names apart within one process; the pid across
         * processes of this host; the host name across hosts sharing the
         * Maildir (maildir(5)). */
        static unsigned counter;
        _cleanup_(strbuf_done) StrBuf host = {0};
        char hn[256] = "localhost";
        struct timeval tv;

        (void)gethostname(hn, sizeof(hn) - 1);
        hn[sizeof(hn) - 1] = 0;
        for (const char *c = hn; *c; c++) {
                int r = *c == '/'   ? strbuf_puts(&host, "\\057")
                        : *c == ':' ? strbuf_puts(&host, "\\072")
                                    : strbuf_putc(&host, *c);
                if (r < 0)
                        return NULL;
        }
        gettimeofday(&tv, NULL);
        return strdup_printf("%lld.M%ldP%dQ%u.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
                             (int)getpid(), ++counter, strempty(host.data));
}

static void fail(DeliverResult *ret, const char *what, const char *path, int error) {
        DeliverStatus st;
        const char *dsn = deliver_errno_dsn(error, &st);
        deliver_result_set(ret, st, dsn, "maildir delivery failed: %s %s: %s", what, path,
                           strerror(abs(error)));
}

void maildir_deliver(const DeliverMsg *m, const char *dir, const char *delivered_to, uint64_t limit,
                     DeliverResult *ret) {
        _cleanup_free_ char *name = NULL, *tmp = NULL, *dst = NULL, *newdir = NULL;
        _cleanup_close_ int fd = -1, dfd = -1;
        const char *subs[] = {"tmp", "new", "cur"};
        int64_t n;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                _cleanup_free_ char *p = strdup_printf("%s/%s", dir, subs[i]);
                if (!p)
                        goto oom;
                r = deliver_make_dirs(p);
                if (r < 0) {
                        fail(ret, "create maildir directory", p, r);
                        return;
                }
        }
        name = maildir_unique_name();
        if (!name)
                goto oom;
        tmp = strdup_printf("%s/tmp/%s", dir, name);
        dst = strdup_printf("%s/new/%s", dir, name);
        newdir = strdup_printf("%s/new", dir);
        if (!tmp || !dst || !newdir)
                goto oom;

        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                fail(ret, "create maildir file", tmp, -errno);
                return;
        }
        n = deliver_copy(m, fd, delivered_to, COPY_MAILDIR, limit);
        if (n >= 0 && fsync(fd) < 0)
                n = -errno;
        if (close(fd) < 0 && n >= 0)
                n = -errno;
        fd = -1;
        if (n < 0) {
                (void)unlink(tmp);
                fail(ret, "error writing message to", tmp, (int)n);
                return;
        }
        if (link(tmp, dst) >= 0)
                (void)unlink(tmp);
        else if (errno != EPERM && errno != ENOTSUP && errno != EXDEV) {
                r = -errno;
                (void)unlink(tmp);
                fail(ret, "link to", dst, r);
                return;
        } else if (rename(tmp, dst) < 0) {
                /* rename() is the fallback on file systems without hard links. */
                r = -errno;
                (void)unlink(tmp);
                fail(ret, "rename to", dst, r);
                return;
        }
        /* The new entry must survive a crash before we say "sent". */
        dfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0) {
                r = -errno;
                (void)unlink(dst);
                fail(ret, "sync", newdir, r);
                return;
        }
        deliver_result_set(ret, DELIVER_SENT, "2.0.0", "delivered to maildir");
        return;
oom:
        deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "out of memory");
}
