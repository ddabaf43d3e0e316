/* queue-scan.c: queue directory layout and listing (see queue-scan.h). The
 * hash is FNV-1a over the queue ID: IDs start with the arrival time, so
 * their first characters alone would crowd a few directories. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bus-names.h"
#include "macro.h"
#include "queue-file.h"
#include "queue-scan.h"
#include "strutil.h"

const char *const queue_names[] = {
        QUEUE_MAILDROP, QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, NULL,
};

bool queue_is_hashed(const char *queue) {
        return streq(queue, QUEUE_DEFERRED) || streq(queue, QUEUE_DEFER_LOG);
}

static uint32_t id_hash(const char *id) {
        uint32_t h = 2166136261u;
        for (; *id; id++) {
                h ^= (unsigned char) *id;
                h *= 16777619u;
        }
        return h;
}

void queue_subdir(const char *queue, const char *id, char buf[static QUEUE_PATH_MAX]) {
        static const char hex[] = "0123456789ABCDEF";
        if (queue_is_hashed(queue)) {
                uint32_t h = id_hash(id);
                snprintf(buf, QUEUE_PATH_MAX, "%s/%c/%c", queue, hex[(h >> 28) & 15],
                         hex[(h >> 24) & 15]);
        } else
                snprintf(buf, QUEUE_PATH_MAX, "%s", queue);
}

void queue_subpath(const char *queue, const char *id, char buf[static QUEUE_PATH_MAX]) {
        char dir[QUEUE_PATH_MAX];
        queue_subdir(queue, id, dir);
        snprintf(buf, QUEUE_PATH_MAX, "%.20s/%.16s", dir, id);
}

int queue_make_subdir(int queue_dir_fd, const char *queue, const char *id) {
        char dir[QUEUE_PATH_MAX];

        if (!queue_is_hashed(queue))
                return 0;
        queue_subdir(queue, id, dir);
        /* "queue/X/Y": make "queue/X" first. */
        dir[strlen(queue) + 2] = 0;
        if (mkdirat(queue_dir_fd, dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        queue_subdir(queue, id, dir);
        if (mkdirat(queue_dir_fd, dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Resolves the current location of id in queue: hashed first, then flat. */
static int locate_in(int queue_dir_fd, const char *queue, const char *id,
                     char buf[static QUEUE_PATH_MAX]) {
        struct stat st;

        queue_subpath(queue, id, buf);
        if (fstatat(queue_dir_fd, buf, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return 0;
        if (errno != ENOENT || !queue_is_hashed(queue))
                return -errno;
        snprintf(buf, QUEUE_PATH_MAX, "%s/%s", queue, id);
        if (fstatat(queue_dir_fd, buf, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return 0;
        return -errno;
}

int queue_move(int queue_dir_fd, const char *id, const char *from, const char *to) {
        char src[QUEUE_PATH_MAX], dst[QUEUE_PATH_MAX];
        int r;

        if (!queue_id_valid(id))
                return -EINVAL;
        queue_subpath(from, id, src);
        queue_subpath(to, id, dst);
        if (renameat(queue_dir_fd, src, queue_dir_fd, dst) == 0)
                return 0;
        r = -errno;
        if (r == -ENOENT) {
                /* Either the target subdirectory or the source is missing. */
                r = queue_make_subdir(queue_dir_fd, to, id);
                if (r < 0)
                        return r;
                if (locate_in(queue_dir_fd, from, id, src) < 0)
                        return -ENOENT;
                if (renameat(queue_dir_fd, src, queue_dir_fd, dst) < 0)
                        return -errno;
                return 0;
        }
        return r;
}

int queue_open(int queue_dir_fd, const char *queue, const char *id, int flags) {
        char path[QUEUE_PATH_MAX];
        int fd, r;

        if (!queue_id_valid(id))
                return -EINVAL;
        queue_subpath(queue, id, path);
        fd = openat(queue_dir_fd, path, flags | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 || errno != ENOENT || !queue_is_hashed(queue))
                return fd >= 0 ? fd : -errno;
        r = -errno;
        snprintf(path, sizeof(path), "%s/%s", queue, id);
        fd = openat(queue_dir_fd, path, flags | O_CLOEXEC | O_NOFOLLOW);
        return fd >= 0 ? fd : r;
}

int queue_unlink(int queue_dir_fd, const char *queue, const char *id) {
        char path[QUEUE_PATH_MAX];
        int r;

        if (!queue_id_valid(id))
                return -EINVAL;
        r = locate_in(queue_dir_fd, queue, id, path);
        if (r < 0)
                return r;
        if (unlinkat(queue_dir_fd, path, 0) < 0)
                return -errno;
        return 0;
}

int queue_locate(int queue_dir_fd, const char *id, const char **ret_queue) {
        static const char *const order[] = {
                QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, QUEUE_MAILDROP,
                QUEUE_CORRUPT,
        };
        char path[QUEUE_PATH_MAX];

        if (!queue_id_valid(id))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(order); i++)
                if (locate_in(queue_dir_fd, order[i], id, path) == 0) {
                        *ret_queue = order[i];
                        return 0;
                }
        return -ENOENT;
}

struct QueueScan {
        int queue_dir_fd;               /* borrowed */
        char queue[16];
        bool hashed;
        int level;                      /* hashed: next subdirectory 0..256; 256 = top level */
        DIR *dir;
        char dir_path[QUEUE_PATH_MAX];
        bool done;
};

int queue_scan_new(int queue_dir_fd, const char *queue, QueueScan **ret) {
        QueueScan *s;

        if (strlen(queue) >= sizeof(s->queue))
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->queue_dir_fd = queue_dir_fd;
        strcpy(s->queue, queue);
        s->hashed = queue_is_hashed(queue);
        *ret = s;
        return 0;
}

/* Opens the next directory to list; 0 when there is one, 1 at the end. */
static int open_next_dir(QueueScan *s) {
        static const char hex[] = "0123456789ABCDEF";

        for (;;) {
                int fd;
                if (s->done)
                        return 1;
                if (!s->hashed || s->level == 256) {
                        snprintf(s->dir_path, sizeof(s->dir_path), "%s", s->queue);
                        s->done = true;
                } else {
                        snprintf(s->dir_path, sizeof(s->dir_path), "%s/%c/%c", s->queue,
                                 hex[s->level >> 4], hex[s->level & 15]);
                        s->level++;
                }
                fd = openat(s->queue_dir_fd, s->dir_path,
                            O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0) {
                        if (errno == ENOENT || errno == ENOTDIR)
                                continue;
                        return -errno;
                }
                s->dir = fdopendir(fd);
                if (!s->dir) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                return 0;
        }
}

static int scan_next(QueueScan *s, char ret_id[static QUEUE_ID_SIZE], struct stat *ret_st,
                     bool slice) {
        int r;

        for (;;) {
                struct dirent *de;
                if (!s->dir) {
                        r = open_next_dir(s);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                return 0;
                }
                errno = 0;
                de = readdir(s->dir);
                if (!de) {
                        r = -errno;
                        closedir(s->dir);
                        s->dir = NULL;
                        if (r < 0)
                                return r;
                        if (slice && !s->done)
                                return 0;
                        continue;
                }
                if (!queue_id_valid(de->d_name))
                        continue;
                if (ret_st) {
                        char path[QUEUE_PATH_MAX + QUEUE_ID_SIZE + 1];
                        /* d_name is a valid queue ID here: 16 characters. */
                        snprintf(path, sizeof(path), "%s/%.*s", s->dir_path, QUEUE_ID_LEN,
                                 de->d_name);
                        if (fstatat(s->queue_dir_fd, path, ret_st, AT_SYMLINK_NOFOLLOW) < 0) {
                                if (errno == ENOENT)
                                        continue;
                                return -errno;
                        }
                        if (!S_ISREG(ret_st->st_mode))
                                continue;
                } else if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
                        continue;
                memcpy(ret_id, de->d_name, QUEUE_ID_SIZE);
                return 1;
        }
}

int queue_scan_next(QueueScan *s, char ret_id[static QUEUE_ID_SIZE], struct stat *ret_st) {
        return scan_next(s, ret_id, ret_st, false);
}

int queue_scan_next_slice(QueueScan *s, char ret_id[static QUEUE_ID_SIZE], struct stat *ret_st) {
        return scan_next(s, ret_id, ret_st, true);
}

bool queue_scan_done(const QueueScan *s) {
        return s->done && !s->dir;
}

QueueScan *queue_scan_free(QueueScan *s) {
        if (!s)
                return NULL;
        if (s->dir)
                closedir(s->dir);
        free(s);
        return NULL;
}

/* --- listing ------------------------------------------------------------- */

void queue_list_entry_done(QueueListEntry *e) {
        for (size_t i = 0; i < e->n_rcpts; i++) {
                free(e->rcpts[i].address);
                free(e->rcpts[i].reason);
        }
        free(e->rcpts);
        free(e->sender);
        *e = (QueueListEntry) {0};
}

/* Finds the deferral reason of address in a defer log text. */
static char *defer_reason(const char *log, const char *address) {
        size_t al = strlen(address);
        for (const char *p = log; p && *p;) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t) (nl - p) : strlen(p);
                if (n > al && strncmp(p, address, al) == 0 && p[al] == '\t') {
                        const char *dsn = p + al + 1;
                        const char *tab = memchr(dsn, '\t', n - al - 1);
                        if (tab)
                                return strndup(tab + 1, (size_t) (p + n - tab - 1));
                }
                p = nl ? nl + 1 : NULL;
        }
        return NULL;
}

int queue_list_read(int queue_dir_fd, const char *queue, const char *id, QueueListEntry *ret) {
        _cleanup_close_ int fd = queue_open(queue_dir_fd, queue, id, O_RDONLY);
        _cleanup_free_ char *log = NULL;
        QueueEnvelope env = {0};
        QueueListEntry e = {.queue = queue};
        int r;

        if (fd < 0)
                return fd;
        r = queue_file_read(fd, &env);
        if (r < 0)
                return r;
        {
                _cleanup_close_ int lfd = queue_open(queue_dir_fd, QUEUE_DEFER_LOG, id, O_RDONLY);
                if (lfd >= 0) {
                        struct stat st;
                        if (fstat(lfd, &st) == 0 && st.st_size < 16 * 1024 * 1024 &&
                            (log = calloc(1, (size_t) st.st_size + 1)) &&
                            read(lfd, log, (size_t) st.st_size) < 0)
                                {
                                free(log);
                                log = NULL;
                        }
                }
        }
        memcpy(e.id, env.queue_id, QUEUE_ID_SIZE);
        e.size = env.content_size;
        e.arrival = env.arrival.tv_sec;
        e.hold = streq(queue, QUEUE_HOLD);
        e.sender = steal_ptr(env.sender);
        e.rcpts = calloc(env.n_rcpts, sizeof(QueueListRcpt));
        if (!e.rcpts) {
                queue_envelope_done(&env);
                queue_list_entry_done(&e);
                return -ENOMEM;
        }
        for (size_t i = 0; i < env.n_rcpts; i++) {
                if (env.rcpts[i].status != QUEUE_RCPT_PENDING)
                        continue;
                e.rcpts[e.n_rcpts].address = steal_ptr(env.rcpts[i].address);
                if (log)
                        e.rcpts[e.n_rcpts].reason = defer_reason(log, e.rcpts[e.n_rcpts].address);
                e.n_rcpts++;
        }
        queue_envelope_done(&env);
        *ret = e;
        return 0;
}

/* --- administration ------------------------------------------------------ */

static bool queue_allowed(const char *queue, const char *only_queue,
                          const char *const *applicable) {
        for (size_t i = 0; applicable[i]; i++)
                if (streq(queue, applicable[i]))
                        return !only_queue || streq(only_queue, queue);
        return false;
}

int queue_admin_delete(int queue_dir_fd, const char *id, const char *only_queue) {
        static const char *const from[] = {
                QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, QUEUE_MAILDROP,
                QUEUE_CORRUPT, NULL,
        };
        const char *queue;
        int r = queue_locate(queue_dir_fd, id, &queue);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (!queue_allowed(queue, only_queue, from))
                return 0;
        r = queue_unlink(queue_dir_fd, queue, id);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        (void) queue_unlink(queue_dir_fd, QUEUE_DEFER_LOG, id);
        return 1;
}

int queue_admin_hold(int queue_dir_fd, const char *id, const char *only_queue) {
        static const char *const from[] = {QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, NULL};
        const char *queue;
        int r = queue_locate(queue_dir_fd, id, &queue);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (!queue_allowed(queue, only_queue, from))
                return 0;
        r = queue_move(queue_dir_fd, id, queue, QUEUE_HOLD);
        return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

int queue_admin_release(int queue_dir_fd, const char *id) {
        _cleanup_close_ int fd = -1;
        int r;

        fd = queue_open(queue_dir_fd, QUEUE_HOLD, id, O_RDONLY);
        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return fd;
        /* Due now: the next deferred queue run takes it (Postfix moves
         * released mail to the deferred queue as well). */
        if (futimens(fd, NULL) < 0)
                return -errno;
        r = queue_move(queue_dir_fd, id, QUEUE_HOLD, QUEUE_DEFERRED);
        return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

int queue_admin_requeue(int queue_dir_fd, const char *id, const char *only_queue) {
        static const char *const from[] = {
                QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, NULL,
        };
        _cleanup_close_ int fd = -1;
        QueueEnvelope env = {0};
        const char *queue;
        int r = queue_locate(queue_dir_fd, id, &queue);

        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (!queue_allowed(queue, only_queue, from))
                return 0;
        fd = queue_open(queue_dir_fd, queue, id, O_RDWR);
        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return fd;
        r = queue_file_read(fd, &env);
        if (r < 0)
                return r;
        /* The queue manager resolves and expands it again when it takes it
         * from incoming/. */
        r = queue_file_set_flags(fd, env.flags | QUEUE_FLAG_REQUEUE);
        queue_envelope_done(&env);
        if (r < 0)
                return r;
        if (streq(queue, QUEUE_INCOMING))
                return 1;
        r = queue_move(queue_dir_fd, id, queue, QUEUE_INCOMING);
        return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

/* --- requests to the queue manager ---------------------------------------- */

int queue_qmgr_connect(sd_bus **ret) {
        _cleanup_free_ char *address = NULL;
        sd_bus *bus = NULL;
        int r;

        address = strdup_printf("unix:path=%s/%s", postern_runtime_dir(), QUEUE_BUS_SOCKET);
        if (!address)
                return -ENOMEM;
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                sd_bus_flush_close_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}

int queue_qmgr_call(const char *method, const char *arg, char **ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        sd_bus *bus = NULL;
        int r;

        r = queue_qmgr_connect(&bus);
        if (r >= 0) {
                if (arg)
                        r = sd_bus_call_method(bus, NULL, QUEUE_BUS_OBJECT, QUEUE_BUS_INTERFACE,
                                               method, &error, &reply, "s", arg);
                else
                        r = sd_bus_call_method(bus, NULL, QUEUE_BUS_OBJECT, QUEUE_BUS_INTERFACE,
                                               method, &error, &reply, "");
        }
        if (r < 0 && ret_error)
                *ret_error = strdup(error.message ? error.message : strerror(-r));
        sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return r;
}
