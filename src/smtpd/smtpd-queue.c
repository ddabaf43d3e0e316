/* smtpd-queue.c: group commit of queue files. Sessions that finished
 * writing a message hand their QueueWriter over. A small pool of sync
 * threads fdatasync()s the files concurrently (ext4 folds concurrent syncs
 * into one journal commit); a directory thread takes everything synced so
 * far as a batch, renames each file into its queue directory and fsyncs each
 * directory once, then wakes the event loop through an eventfd, which
 * answers the sessions. So N concurrent messages share their journal
 * commits, and the loop keeps serving other clients while the disk works.
 * syncfs() would batch as well but flushes everything else on the file
 * system too. Entry points: smtpd_queue_new(), smtpd_queue_commit(),
 * smtpd_commit_detach(). Nothing here talks SMTP. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "queue-file.h"
#include "smtpd.h"

#define SYNC_THREADS 8

bool smtpd_queue_space_ok(Smtpd *d, uint64_t size) {
        uint64_t limit = d->settings.message_size_limit, minfree = d->settings.queue_minfree;
        uint64_t avail, need = limit + limit / 2;
        struct statvfs st;

        if (fstatvfs(d->incoming_fd, &st) < 0)
                return true;
        avail = (uint64_t) st.f_bavail * st.f_frsize;
        if (avail <= MAX(minfree, need)) {
                log_warning("not enough free space in mail queue: %" PRIu64 " bytes < "
                            "queue_minfree (%" PRIu64 ") or 1.5*message_size_limit (%" PRIu64 ")",
                            avail, minfree, need);
                return false;
        }
        if (size > 0 && size + size / 2 > avail - minfree) {
                log_warning("not enough free space in mail queue for a message of %" PRIu64
                            " bytes: %" PRIu64 " bytes free, queue_minfree %" PRIu64,
                            size, avail, minfree);
                return false;
        }
        return true;
}

struct SmtpdCommit {
        SmtpdCommit *next;
        QueueWriter *writer;
        int dir_fd;
        int result;
        SmtpdCommitDone done;           /* NULL once detached */
        void *userdata;
};

typedef struct CommitList {
        SmtpdCommit *head, **tail;
} CommitList;

static void list_init(CommitList *l) {
        l->head = NULL;
        l->tail = &l->head;
}

static void list_push(CommitList *l, SmtpdCommit *c) {
        c->next = NULL;
        *l->tail = c;
        l->tail = &c->next;
}

static SmtpdCommit *list_take(CommitList *l) {
        SmtpdCommit *h = l->head;
        list_init(l);
        return h;
}

struct SmtpdQueue {
        Smtpd *smtpd;
        pthread_t sync_threads[SYNC_THREADS];
        unsigned n_sync_threads;
        pthread_t dir_thread;
        bool dir_thread_started;
        pthread_mutex_t lock;
        pthread_cond_t pending_cond;
        pthread_cond_t synced_cond;
        /* Guarded by lock: */
        bool stop_sync, stop_dir;
        CommitList pending, synced, finished;
        /* Loop thread only: */
        unsigned n_outstanding;
        int event_fd;
        sd_event_source *event_source;
};

static void *sync_worker(void *arg) {
        SmtpdQueue *q = arg;

        pthread_mutex_lock(&q->lock);
        for (;;) {
                SmtpdCommit *c;
                while (!q->pending.head && !q->stop_sync)
                        pthread_cond_wait(&q->pending_cond, &q->lock);
                if (!q->pending.head)
                        break;
                c = q->pending.head;
                q->pending.head = c->next;
                if (!q->pending.head)
                        q->pending.tail = &q->pending.head;
                pthread_mutex_unlock(&q->lock);

                c->result = queue_writer_sync(c->writer);

                pthread_mutex_lock(&q->lock);
                list_push(&q->synced, c);
                pthread_cond_signal(&q->synced_cond);
        }
        pthread_mutex_unlock(&q->lock);
        return NULL;
}

/* Renames a batch of synced files into place and makes the directories
 * durable, each once. */
static void batch_commit(SmtpdCommit *batch) {
        int dirs[8], n_dirs = 0, r;

        for (SmtpdCommit *c = batch; c; c = c->next) {
                bool seen = false;
                if (c->result < 0)
                        continue;
                c->result = queue_writer_commit(c->writer, c->dir_fd);
                if (c->result < 0)
                        continue;
                for (int i = 0; i < n_dirs; i++)
                        seen |= dirs[i] == c->dir_fd;
                if (!seen && n_dirs < (int) ELEMENTSOF(dirs))
                        dirs[n_dirs++] = c->dir_fd;
        }
        for (int i = 0; i < n_dirs; i++)
                if (fsync(dirs[i]) < 0) {
                        r = -errno;
                        for (SmtpdCommit *c = batch; c; c = c->next)
                                if (c->dir_fd == dirs[i] && c->result == 0)
                                        c->result = r;
                }
}

static void *dir_worker(void *arg) {
        SmtpdQueue *q = arg;
        uint64_t one = 1;

        pthread_mutex_lock(&q->lock);
        for (;;) {
                SmtpdCommit *batch;
                while (!q->synced.head && !q->stop_dir)
                        pthread_cond_wait(&q->synced_cond, &q->lock);
                if (!q->synced.head)
                        break;
                batch = list_take(&q->synced);
                pthread_mutex_unlock(&q->lock);

                batch_commit(batch);

                pthread_mutex_lock(&q->lock);
                while (batch) {
                        SmtpdCommit *n = batch->next;
                        list_push(&q->finished, batch);
                        batch = n;
                }
                pthread_mutex_unlock(&q->lock);
                (void) write(q->event_fd, &one, sizeof(one));
                pthread_mutex_lock(&q->lock);
        }
        pthread_mutex_unlock(&q->lock);
        return NULL;
}

static int on_finished(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        SmtpdQueue *q = userdata;
        SmtpdCommit *list;
        uint64_t v;

        (void) read(fd, &v, sizeof(v));
        pthread_mutex_lock(&q->lock);
        list = list_take(&q->finished);
        pthread_mutex_unlock(&q->lock);

        while (list) {
                SmtpdCommit *c = list;
                list = c->next;
                /* Freeing a committed writer keeps the file; a failed one
                 * unlinks its temporary file: nothing half-written stays. */
                c->writer = queue_writer_free(c->writer);
                q->n_outstanding--;
                if (c->result == 0)
                        q->smtpd->n_queued++;
                if (c->done)
                        c->done(c->userdata, c->result);
                free(c);
        }
        smtpd_session_count_changed(q->smtpd);
        return 0;
}

int smtpd_queue_new(Smtpd *d, SmtpdQueue **ret) {
        SmtpdQueue *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->smtpd = d;
        list_init(&q->pending);
        list_init(&q->synced);
        list_init(&q->finished);
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->pending_cond, NULL);
        pthread_cond_init(&q->synced_cond, NULL);
        q->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (q->event_fd < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(d->event, &q->event_source, q->event_fd, EPOLLIN, on_finished, q);
        if (r < 0)
                goto fail;
        r = -pthread_create(&q->dir_thread, NULL, dir_worker, q);
        if (r < 0)
                goto fail;
        q->dir_thread_started = true;
        for (; q->n_sync_threads < SYNC_THREADS; q->n_sync_threads++) {
                r = -pthread_create(&q->sync_threads[q->n_sync_threads], NULL, sync_worker, q);
                if (r < 0)
                        goto fail;
        }
        *ret = q;
        return 0;
fail:
        smtpd_queue_free(q);
        return r;
}

SmtpdQueue *smtpd_queue_free(SmtpdQueue *q) {
        if (!q)
                return NULL;
        /* Finish what was handed over: accepted data is never dropped on
         * the floor at exit. First the syncs, then the last renames. */
        pthread_mutex_lock(&q->lock);
        q->stop_sync = true;
        pthread_cond_broadcast(&q->pending_cond);
        pthread_mutex_unlock(&q->lock);
        for (unsigned i = 0; i < q->n_sync_threads; i++)
                pthread_join(q->sync_threads[i], NULL);
        if (q->dir_thread_started) {
                pthread_mutex_lock(&q->lock);
                q->stop_dir = true;
                pthread_cond_signal(&q->synced_cond);
                pthread_mutex_unlock(&q->lock);
                pthread_join(q->dir_thread, NULL);
        }
        if (q->event_fd >= 0 && q->finished.head)
                (void) on_finished(NULL, q->event_fd, 0, q);
        sd_event_source_disable_unref(q->event_source);
        if (q->event_fd >= 0)
                close(q->event_fd);
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->pending_cond);
        pthread_cond_destroy(&q->synced_cond);
        free(q);
        return NULL;
}

int smtpd_queue_commit(SmtpdQueue *q, QueueWriter *w, int target_dir_fd, SmtpdCommitDone done,
                       void *userdata, SmtpdCommit **ret) {
        SmtpdCommit *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (SmtpdCommit) {
                .writer = w,
                .dir_fd = target_dir_fd,
                .done = done,
                .userdata = userdata,
        };
        q->n_outstanding++;
        pthread_mutex_lock(&q->lock);
        list_push(&q->pending, c);
        pthread_cond_signal(&q->pending_cond);
        pthread_mutex_unlock(&q->lock);
        if (ret)
                *ret = c;
        return 0;
}

void smtpd_commit_detach(SmtpdCommit *c) {
        /* Only the loop thread reads done/userdata, so no lock is needed. */
        if (c) {
                c->done = NULL;
                c->userdata = NULL;
        }
}

unsigned smtpd_queue_pending(SmtpdQueue *q) {
        return q ? q->n_outstanding : 0;
}

/* One announcement in flight; retried once on a new connection when the
 * queue manager went away under the old one (it was restarted), so that
 * mail is not left waiting for the next queue run. */
typedef struct Announcement {
        Smtpd *smtpd;
        bool retried;
        char queue_id[];
} Announcement;

static int announce(Smtpd *d, const char *queue_id, bool retried);

static bool connection_lost(sd_bus_message *m, const sd_bus_error *e) {
        return sd_bus_is_open(sd_bus_message_get_bus(m)) <= 0 ||
               sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY) ||
               sd_bus_error_has_name(e, SD_BUS_ERROR_DISCONNECTED);
}

static int on_enqueue_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Announcement *a = userdata;     /* freed with the slot */
        const sd_bus_error *e = sd_bus_message_get_error(m);
        Smtpd *d = a->smtpd;

        if (!e)
                return 0;
        if (!a->retried && connection_lost(m, e)) {
                if (d->qmgr_bus == sd_bus_message_get_bus(m))
                        d->qmgr_bus = sd_bus_flush_close_unref(d->qmgr_bus);
                d->qmgr_retry_after = 0;
                if (announce(d, a->queue_id, true) >= 0)
                        return 0;
        }
        /* Safe on disk all the same: the queue manager's next run finds it. */
        log_debug("Queue manager did not take the announcement of %s: %s", a->queue_id,
                  e->message);
        return 0;
}

static int announce(Smtpd *d, const char *queue_id, bool retried) {
        _cleanup_free_ Announcement *a = NULL;
        sd_bus_slot *slot = NULL;
        uint64_t now = 0;
        size_t n = strlen(queue_id);
        int r;

        if (d->qmgr_bus && sd_bus_is_open(d->qmgr_bus) <= 0) {
                /* The queue manager hung up (idle exit or restart): the
                 * next call starts it again through its socket. */
                d->qmgr_bus = sd_bus_flush_close_unref(d->qmgr_bus);
                d->qmgr_retry_after = 0;
        }
        if (!d->qmgr_bus) {
                _cleanup_free_ char *address = NULL;
                sd_bus *bus = NULL;

                (void) sd_event_now(d->event, CLOCK_MONOTONIC, &now);
                if (now < d->qmgr_retry_after)
                        return -EAGAIN;
                /* Do not hammer a queue manager that is not there. */
                d->qmgr_retry_after = now + 1000000;
                address = strdup_printf("unix:path=%s", d->settings.qmgr_socket);
                if (!address)
                        return -ENOMEM;
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r >= 0)
                        r = sd_bus_attach_event(bus, d->event, SD_EVENT_PRIORITY_NORMAL);
                if (r < 0) {
                        log_debug("Cannot connect to the queue manager at %s: %s",
                                  d->settings.qmgr_socket, strerror(-r));
                        sd_bus_flush_close_unref(bus);
                        return r;
                }
                d->qmgr_bus = bus;
        }
        a = malloc(sizeof(*a) + n + 1);
        if (!a)
                return -ENOMEM;
        a->smtpd = d;
        a->retried = retried;
        memcpy(a->queue_id, queue_id, n + 1);
        r = sd_bus_call_method_async(d->qmgr_bus, &slot, NULL, QMGR_BUS_OBJECT,
                                     QMGR_BUS_INTERFACE, "Enqueue", on_enqueue_reply, a, "s",
                                     queue_id);
        if (r < 0) {
                log_debug("Cannot announce %s to the queue manager: %s", queue_id, strerror(-r));
                d->qmgr_bus = sd_bus_flush_close_unref(d->qmgr_bus);
                return r;
        }
        /* The slot owns the announcement from here on, also when the
         * connection is closed before a reply comes. */
        (void) sd_bus_slot_set_destroy_callback(slot, free);
        a = NULL;
        (void) sd_bus_slot_set_floating(slot, 1);
        sd_bus_slot_unref(slot);
        return 0;
}

void smtpd_qmgr_notify(Smtpd *d, const char *queue_id) {
        (void) announce(d, queue_id, false);
}
