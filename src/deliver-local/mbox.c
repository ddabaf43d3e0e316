/* mbox.c: delivery into a UNIX mailbox file (mbox, RFC 4155) and into files
 * named in aliases and .forward. The file is locked (fcntl, flock and/or a
 * "FILE.lock" dot-lock, mailbox_delivery_lock / virtual_mailbox_lock) with
 * deliver_lock_attempts tries deliver_lock_delay apart, the message is
 * appended with a "From " line, >From quoting and an empty line, fsynced,
 * and on any failure the file is truncated back to its old length, as
 * Postfix does. Lock trouble defers (4.2.0); a size limit bounces (5.2.2).
 * Entry points: mbox_deliver(), mbox_deliver_fd(), dotlock_*(). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "deliver-local.h"

static void sleep_usec(uint64_t usec) {
        struct timespec ts = {.tv_sec = (time_t)(usec / 1000000),
                              .tv_nsec = (long)(usec % 1000000) * 1000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int dotlock_acquire(const char *path, const DeliverSettings *s) {
        _cleanup_free_ char *lock = strdup_printf("%s.lock", path);

        if (!lock)
                return -ENOMEM;
        for (unsigned i = 0; i < s->lock_attempts; i++) {
                struct stat st;
                int fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        close(fd);
                        return 0;
                }
                if (errno != EEXIST)
                        return -errno;
                /* A lock left by a crashed writer goes after stale_lock_time. */
                if (lstat(lock, &st) >= 0 && s->stale_lock_sec > 0 &&
                    time(NULL) - st.st_mtime > (time_t)s->stale_lock_sec) {
                        (void)unlink(lock);
                        continue;
                }
                if (i + 1 < s->lock_attempts)
                        sleep_usec(s->lock_delay_usec);
        }
        return -EAGAIN;
}

void dotlock_release(const char *path) {
        _cleanup_free_ char *lock = strdup_printf("%s.lock", path);
        if (lock)
                (void)unlink(lock);
}

static int lock_fd(int fd, unsigned lock, const DeliverSettings *s) {
        for (unsigned i = 0; i < s->lock_attempts; i++) {
                int r = 0;
                if (lock & DELIVER_LOCK_FCNTL) {
                        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
                        if (fcntl(fd, F_SETLK, &fl) < 0)
                                r = -errno;
                }
                if (r == 0 && (lock & DELIVER_LOCK_FLOCK) && flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        r = -errno;
                        if (lock & DELIVER_LOCK_FCNTL) {
                                struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
                                (void)fcntl(fd, F_SETLK, &fl);
                        }
                }
                if (r == 0)
                        return 0;
                if (r != -EAGAIN && r != -EACCES && r != -EWOULDBLOCK)
                        return r;
                if (i + 1 < s->lock_attempts)
                        sleep_usec(s->lock_delay_usec);
        }
        return -EAGAIN;
}

void mbox_deliver_fd(const DeliverMsg *m, int fd, const char *path, const char *delivered_to,
                     unsigned lock, uint64_t limit, unsigned copy_flags, const char *what,
                     DeliverResult *ret) {
        struct stat st;
        uint64_t room = 0;
        int64_t n;
        int r;

        if (fstat(fd, &st) < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0", "cannot access %s: %m", path);
                return;
        }
        /* Devices (/dev/null) are written as they are, unlocked. */
        if (S_ISREG(st.st_mode)) {
                r = lock_fd(fd, lock, m->settings);
                if (r < 0) {
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0",
                                           "cannot update mailbox %s: unable to lock for "
                                           "exclusive access: %s",
                                           path, strerror(-r));
                        return;
                }
                if (fstat(fd, &st) < 0) {
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0", "cannot access %s: %m",
                                           path);
                        return;
                }
                if (limit > 0) {
                        if ((uint64_t)st.st_size >= limit) {
                                deliver_result_set(ret, DELIVER_BOUNCED, "5.2.2",
                                                   "cannot update mailbox %s: error writing "
                                                   "message: %s",
                                                   path, strerror(EFBIG));
                                return;
                        }
                        room = limit - (uint64_t)st.st_size;
                }
        }
        n = deliver_copy(m, fd, delivered_to, copy_flags, room);
        if (n >= 0 && S_ISREG(st.st_mode) && fsync(fd) < 0)
                n = -errno;
        if (n < 0) {
                DeliverStatus status;
                const char *dsn = deliver_errno_dsn((int)n, &status);
                /* Leave the mailbox as it was: no half message in it. */
                if (S_ISREG(st.st_mode) && ftruncate(fd, st.st_size) >= 0)
                        (void)fsync(fd);
                deliver_result_set(ret, status, dsn,
                                   "cannot update mailbox %s: error writing message: %s", path,
                                   strerror((int)-n));
                return;
        }
        if (what)
                deliver_result_set(ret, DELIVER_SENT, "2.0.0", "delivered to %s: %s", what, path);
        else
                deliver_result_set(ret, DELIVER_SENT, "2.0.0", "delivered to mailbox");
}

void mbox_deliver(const DeliverMsg *m, const char *path, const char *delivered_to, unsigned lock,
                  uint64_t limit, unsigned copy_flags, const char *what, DeliverResult *ret) {
        _cleanup_close_ int fd = -1;
        const char *slash = strrchr(path, '/');
        bool dotlocked = false;
        struct stat st;
        int r;

        if (slash && slash > path) {
                /* A new virtual domain or user directory: make it, as the owner. */
                _cleanup_free_ char *parent = strndup_safe(path, (size_t)(slash - path));
                if (parent && stat(parent, &st) < 0 && errno == ENOENT)
                        (void)deliver_make_dirs(parent);
        }
        if (lock & DELIVER_LOCK_DOTLOCK) {
                r = dotlock_acquire(path, m->settings);
                if (r < 0 && r != -EACCES && r != -EPERM && r != -EROFS) {
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0",
                                           "cannot update mailbox %s: unable to lock for "
                                           "exclusive access: %s",
                                           path, r == -EAGAIN ? "lock file exists" : strerror(-r));
                        return;
                }
                /* A directory we may not create the lock in (a file in /tmp,
                 * /dev/null) falls back to the kernel locks, as Postfix does. */
                dotlocked = r >= 0;
        }
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOCTTY | O_CLOEXEC, 0600);
        if (fd < 0) {
                DeliverStatus status;
                const char *dsn = deliver_errno_dsn(errno, &status);
                deliver_result_set(ret, status, dsn, "cannot open mailbox %s: %m", path);
        } else
                mbox_deliver_fd(m, fd, path, delivered_to, lock, limit, copy_flags, what, ret);
        if (dotlocked)
                dotlock_release(path);
}
