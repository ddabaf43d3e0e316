/* qmgr.c: main() of postern-qmgr and the life of a message in the queue
 * manager. New mail arrives in incoming/ (announced by Enqueue or found by
 * a scan); the queue manager expands virtual aliases (rewriting the file
 * when the recipients change), renames it to active/, takes an exclusive
 * flock() on it for as long as it is there, resolves every pending
 * recipient and hands it to the scheduler (qmgr-sched.c). When nothing of
 * a message is scheduled any more it is removed (all recipients done) or
 * moved to deferred/ with its next retry time as the file's mtime and the
 * deferral reasons in its defer log (defer/X/Y/QUEUEID).
 *
 * The deferred queue is scanned in slices (one hashed subdirectory at a
 * time, so that a million deferred files never stall the loop) at start,
 * every queue_run_delay, and on Flush requests. After a crash, files left
 * in active/ are taken up again at start: recipients whose status byte
 * says delivered or bounced are never tried again.
 *
 * The daemon exits after max_idle without work when nothing in the
 * deferred queue is due before the next run of postern-qmgr.timer. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "addr.h"
#include "fileio.h"
#include "log.h"
#include "qmgr.h"
#include "queue-scan.h"

static const char *arg_config_dir;

uint64_t now_realtime(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

uint64_t now_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* --- hash table ----------------------------------------------------------- */

static size_t hash_string(const char *s) {
        size_t h = 5381;
        for (; *s; s++)
                h = h * 33 + (unsigned char) *s;
        return h;
}

QmgrHashNode *qmgr_hash_get(QmgrHash *h, const char *key) {
        if (h->n_buckets == 0)
                return NULL;
        for (QmgrHashNode *n = h->buckets[hash_string(key) % h->n_buckets]; n; n = n->next)
                if (streq(n->key, key))
                        return n;
        return NULL;
}

static int hash_grow(QmgrHash *h) {
        size_t nb = h->n_buckets ? h->n_buckets * 2 : 64;
        QmgrHashNode **b = calloc(nb, sizeof(*b));
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < h->n_buckets; i++)
                for (QmgrHashNode *n = h->buckets[i], *next; n; n = next) {
                        size_t k = hash_string(n->key) % nb;
                        next = n->next;
                        n->next = b[k];
                        b[k] = n;
                }
        free(h->buckets);
        h->buckets = b;
        h->n_buckets = nb;
        return 0;
}

int qmgr_hash_put(QmgrHash *h, QmgrHashNode *node) {
        size_t k;
        if (h->n >= h->n_buckets && hash_grow(h) < 0 && h->n_buckets == 0)
                return -ENOMEM;
        k = hash_string(node->key) % h->n_buckets;
        node->next = h->buckets[k];
        h->buckets[k] = node;
        h->n++;
        return 0;
}

void qmgr_hash_remove(QmgrHash *h, QmgrHashNode *node) {
        QmgrHashNode **p;
        if (h->n_buckets == 0)
                return;
        for (p = &h->buckets[hash_string(node->key) % h->n_buckets]; *p; p = &(*p)->next)
                if (*p == node) {
                        *p = node->next;
                        h->n--;
                        return;
                }
}

void qmgr_hash_done(QmgrHash *h) {
        free(h->buckets);
        *h = (QmgrHash) {0};
}

/* --- settings ------------------------------------------------------------- */

void qmgr_settings_done(QmgrSettings *s) {
        free(s->queue_directory);
        free(s->myhostname);
        free(s->myorigin);
        free(s->local_transport);
        free(s->virtual_transport);
        free(s->relay_transport);
        free(s->default_transport);
        free(s->relayhost);
        qmgr_domain_list_done(&s->mydestination);
        qmgr_domain_list_done(&s->relay_domains);
        qmgr_domain_list_done(&s->virtual_alias_domains);
        qmgr_domain_list_done(&s->virtual_mailbox_domains);
        map_list_free(s->transport_maps);
        map_list_free(s->virtual_alias_maps);
        map_list_free(s->header_checks);
        map_list_free(s->canonical_maps);
        map_list_free(s->sender_canonical_maps);
        map_list_free(s->recipient_canonical_maps);
        free(s->recipient_delimiter);
        free(s->remote_header_rewrite_domain);
        *s = (QmgrSettings) {0};
}

static int open_maps(Config *c, ConfParam p, Diag *diags, MapList **ret) {
        char * const *specs = conf_get_list(c, p);
        if (!specs || !specs[0]) {
                *ret = NULL;
                return 0;
        }
        return map_list_open(specs, MAP_FLAG_FOLD_KEYS, diags, ret);
}

static unsigned canonical_classes(Config *c, ConfParam p, Diag *diags) {
        static const char *const names[] = {
                "envelope_sender", "envelope_recipient", "header_sender", "header_recipient",
        };
        unsigned bits = 0;

        STRV_FOREACH(i, conf_get_list(c, p)) {
                size_t k = 0;
                while (k < ELEMENTSOF(names) && !strcaseeq(*i, names[k]))
                        k++;
                if (k < ELEMENTSOF(names))
                        bits |= 1u << k;
                else
                        diag_warning(diags, NULL, 0, "%s: unknown class \"%s\" ignored",
                                     conf_params[p].name, *i);
        }
        return bits;
}

static unsigned clamp_uint(long long v, unsigned lo) {
        if (v < (long long) lo)
                return lo;
        if (v > 1000000)
                return 1000000;
        return (unsigned) v;
}

static int settings_load(Config *c, Diag *diags, QmgrSettings *s) {
        char * const *parent = conf_get_list(c, P_PARENT_DOMAIN_MATCHES_SUBDOMAINS);
        bool relay_parent = strv_contains(parent, "relay_domains");
        int r;

        s->queue_directory = strdup(conf_get_str(c, P_QUEUE_DIRECTORY));
        s->myhostname = strdup(conf_get_str(c, P_MYHOSTNAME));
        s->myorigin = strdup(conf_get_str(c, P_MYORIGIN));
        s->local_transport = strdup(conf_get_str(c, P_LOCAL_TRANSPORT));
        s->virtual_transport = strdup(conf_get_str(c, P_VIRTUAL_TRANSPORT));
        s->relay_transport = strdup(conf_get_str(c, P_RELAY_TRANSPORT));
        s->default_transport = strdup(conf_get_str(c, P_DEFAULT_TRANSPORT));
        s->relayhost = strdup(conf_get_str(c, P_RELAYHOST));
        if (!s->queue_directory || !s->myhostname || !s->myorigin || !s->local_transport ||
            !s->virtual_transport || !s->relay_transport || !s->default_transport || !s->relayhost)
                return -ENOMEM;
        ascii_strlower(s->myorigin);
        ascii_strlower(s->myhostname);
        if ((r = qmgr_domain_list_load(conf_get_list(c, P_MYDESTINATION), false, diags,
                                       &s->mydestination)) < 0 ||
            (r = qmgr_domain_list_load(conf_get_list(c, P_RELAY_DOMAINS), relay_parent, diags,
                                       &s->relay_domains)) < 0 ||
            (r = qmgr_domain_list_load(conf_get_list(c, P_VIRTUAL_ALIAS_DOMAINS), false, diags,
                                       &s->virtual_alias_domains)) < 0 ||
            (r = qmgr_domain_list_load(conf_get_list(c, P_VIRTUAL_MAILBOX_DOMAINS), false,
                                       diags, &s->virtual_mailbox_domains)) < 0)
                return r;
        if ((r = open_maps(c, P_TRANSPORT_MAPS, diags, &s->transport_maps)) < 0 ||
            (r = open_maps(c, P_VIRTUAL_ALIAS_MAPS, diags, &s->virtual_alias_maps)) < 0)
                return r;
        /* As smtpd opens them (no key folding): for requeued mail. */
        if (conf_get_list(c, P_HEADER_CHECKS) && conf_get_list(c, P_HEADER_CHECKS)[0] &&
            (r = map_list_open(conf_get_list(c, P_HEADER_CHECKS), 0, diags,
                               &s->header_checks)) < 0)
                return r;
        if ((r = open_maps(c, P_CANONICAL_MAPS, diags, &s->canonical_maps)) < 0 ||
            (r = open_maps(c, P_SENDER_CANONICAL_MAPS, diags, &s->sender_canonical_maps)) < 0 ||
            (r = open_maps(c, P_RECIPIENT_CANONICAL_MAPS, diags, &s->recipient_canonical_maps)) < 0)
                return r;
        s->canonical_classes = canonical_classes(c, P_CANONICAL_CLASSES, diags);
        s->sender_canonical_classes = canonical_classes(c, P_SENDER_CANONICAL_CLASSES, diags) &
                                      (QMGR_CANON_ENV_FROM | QMGR_CANON_HDR_FROM);
        s->recipient_canonical_classes =
                canonical_classes(c, P_RECIPIENT_CANONICAL_CLASSES, diags) &
                (QMGR_CANON_ENV_RCPT | QMGR_CANON_HDR_RCPT);
        s->propagate_canonical =
                strv_contains(conf_get_list(c, P_PROPAGATE_UNMATCHED_EXTENSIONS), "canonical");
        s->recipient_delimiter = strdup(strempty(conf_get_str(c, P_RECIPIENT_DELIMITER)));
        s->remote_header_rewrite_domain =
                strdup(strempty(conf_get_str(c, P_REMOTE_HEADER_REWRITE_DOMAIN)));
        if (!s->recipient_delimiter || !s->remote_header_rewrite_domain)
                return -ENOMEM;
        s->transport_maps_parent = strv_contains(parent, "transport_maps");
        s->alias_recursion_limit = clamp_uint(conf_get_int(c, P_VIRTUAL_ALIAS_RECURSION_LIMIT), 1);
        s->alias_expansion_limit = clamp_uint(conf_get_int(c, P_VIRTUAL_ALIAS_EXPANSION_LIMIT), 1);
        s->min_backoff_usec = conf_get_time(c, P_MINIMAL_BACKOFF_TIME) * 1000000u;
        s->max_backoff_usec = conf_get_time(c, P_MAXIMAL_BACKOFF_TIME) * 1000000u;
        if (s->min_backoff_usec == 0)
                s->min_backoff_usec = 1000000u;
        if (s->max_backoff_usec < s->min_backoff_usec)
                s->max_backoff_usec = s->min_backoff_usec;
        s->queue_run_delay_usec = conf_get_time(c, P_QUEUE_RUN_DELAY) * 1000000u;
        if (s->queue_run_delay_usec == 0)
                s->queue_run_delay_usec = 1000000u;
        s->max_lifetime_usec = conf_get_time(c, P_MAXIMAL_QUEUE_LIFETIME) * 1000000u;
        s->bounce_lifetime_usec = conf_get_time(c, P_BOUNCE_QUEUE_LIFETIME) * 1000000u;
        /* Postfix: bounce_queue_lifetime never exceeds maximal_queue_lifetime. */
        if (s->bounce_lifetime_usec > s->max_lifetime_usec)
                s->bounce_lifetime_usec = s->max_lifetime_usec;
        s->delay_warning_usec = conf_get_time(c, P_DELAY_WARNING_TIME) * 1000000u;
        s->max_idle_usec = conf_get_time(c, P_MAX_IDLE) * 1000000u;
        s->initial_concurrency = clamp_uint(conf_get_int(c, P_INITIAL_DESTINATION_CONCURRENCY), 1);
        s->active_limit = clamp_uint(conf_get_int(c, P_QMGR_MESSAGE_ACTIVE_LIMIT), 1);
        s->process_limit = clamp_uint(conf_get_int(c, P_DEFAULT_PROCESS_LIMIT), 1);
        s->soft_bounce = conf_get_bool(c, P_SOFT_BOUNCE);
        return 0;
}

/* --- messages ------------------------------------------------------------- */

static QmgrMessage *message_free(QmgrMessage *m) {
        Qmgr *q;
        if (!m)
                return NULL;
        q = m->qmgr;
        qmgr_hash_remove(&q->messages, &m->node);
        if (m->prev)
                m->prev->next = m->next;
        else if (q->messages_head == m)
                q->messages_head = m->next;
        if (m->next)
                m->next->prev = m->prev;
        q->n_active--;
        for (size_t i = 0; i < m->env.n_rcpts; i++) {
                free(m->rcpts[i].dsn);
                free(m->rcpts[i].reason);
                free(m->rcpts[i].relay);
        }
        free(m->rcpts);
        queue_envelope_done(&m->env);
        (void) qmgr_message_sync_now(m);        /* written to since the last sync pass */
        if (m->fd >= 0)
                close(m->fd);           /* releases the flock */
        free(m);
        return NULL;
}

bool qmgr_message_present(QmgrMessage *m) {
        struct stat st;
        if (m->gone)
                return false;
        if (fstatat(m->qmgr->active_fd, m->id, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            st.st_ino != m->ino || st.st_dev != m->dev) {
                log_mail(LOG_INFO, MSGID_REMOVED, m->id, LOG_NO_FIELDS,
                         "no longer in the active queue (postsuper); dropping it");
                m->gone = true;
                qmgr_sched_forget_message(m->qmgr, m);
                /* It may be back in incoming/ (requeue): look again once it
                 * is unlocked. */
                m->qmgr->incoming_dirty = true;
        }
        return !m->gone;
}

static void move_to_corrupt(Qmgr *q, const char *from, const char *id, int error) {
        int r = queue_move(q->queue_fd, id, from, QUEUE_CORRUPT);
        if (r < 0)
                log_error_errno(r, "%s: cannot move corrupt queue file from %s to %s: %m", id,
                                from, QUEUE_CORRUPT);
        else
                log_mail(LOG_WARNING, MSGID_REMOVED, id, LOG_FIELDS("POSTERN_STATUS", "corrupt"),
                         "corrupt queue file in %s (%s): moved to %s", from, strerror(-error),
                         QUEUE_CORRUPT);
}

/* Opens and locks a queue file. Returns the fd, 0 when somebody else holds
 * it or it is gone, or a negative errno. */
static int open_locked(Qmgr *q, const char *queue, const char *id) {
        _cleanup_close_ int fd = queue_open(q->queue_fd, queue, id, O_RDWR);
        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return fd;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? 0 : -errno;
        return steal_fd(fd);
}

static void log_alias_errors(QmgrMessage *m, char **errors) {
        if (!errors)
                return;
        for (size_t i = 0; i < m->env.n_rcpts; i++)
                if (errors[i]) {
                        const char *text = strchr(errors[i], ' ');
                        char dsn[16];
                        size_t k = text ? (size_t) (text - errors[i]) : 0;
                        snprintf(dsn, sizeof(dsn), "%.*s", (int) MIN(k, sizeof(dsn) - 1),
                                 errors[i]);
                        /* Pending in the file until the bounce is queued. */
                        m->env.rcpts[i].status = QUEUE_RCPT_PENDING;
                        qmgr_record_result(m, i, "bounced", dsn, "none", text ? text + 1 : "",
                                           m->active_usec);
                }
}

static void free_errors(char **errors, size_t n) {
        if (!errors)
                return;
        for (size_t i = 0; i < n; i++)
                free(errors[i]);
        free(errors);
}

/* Takes message id from queue into the active queue. Returns 1 when it is
 * active now, 0 when skipped (gone, locked, corrupt, already active), or a
 * negative errno (try again later). */
static int message_activate(Qmgr *q, const char *from, const char *id) {
        _cleanup_close_ int fd = -1;
        QueueEnvelope env = {0};
        char **errors = NULL;
        size_t n_errors_rcpts = 0;
        _cleanup_(qmgr_header_verdict_done) QmgrHeaderVerdict verdict = {0};
        QmgrMessage *m;
        struct stat st;
        bool canonical_changed = false;
        int r;

        if (qmgr_hash_get(&q->messages, id))
                return 0;
        r = open_locked(q, from, id);
        if (r <= 0) {
                if (r == 0 && streq(from, QUEUE_INCOMING))
                        q->incoming_dirty = true;       /* locked: look again later */
                return r;
        }
        fd = r;
        r = queue_file_read(fd, &env);
        if (r == -EBADMSG) {
                move_to_corrupt(q, from, id, r);
                return 0;
        }
        if (r < 0)
                return log_error_errno(r, "%s: cannot read queue file: %m", id);
        if (!streq(env.queue_id, id)) {
                queue_envelope_done(&env);
                move_to_corrupt(q, from, id, -EBADMSG);
                return 0;
        }
        /* A failed alias expansion whose bounce is not queued yet: expand
         * again, which happens on the way from incoming/ (qmgr-alias.c).
         * Likewise a message put on hold at reception and released since:
         * it never passed incoming/, where canonical mapping and alias
         * expansion happen. */
        if (!streq(from, QUEUE_INCOMING) &&
            (env.flags & (QUEUE_FLAG_ALIAS_ERROR | QUEUE_FLAG_HOLD))) {
                queue_envelope_done(&env);
                fd = safe_close_fd(fd);
                r = queue_move(q->queue_fd, id, from, QUEUE_INCOMING);
                if (r < 0)
                        return r == -ENOENT ? 0 : r;
                return message_activate(q, QUEUE_INCOMING, id);
        }

        if (streq(from, QUEUE_INCOMING)) {
                /* Released from hold: the flag goes once this pass is on disk. */
                bool was_held = env.flags & QUEUE_FLAG_HOLD;

                env.flags &= ~(unsigned) QUEUE_FLAG_HOLD;
                /* postsuper -r: the header processing again (qmgr-header.c). */
                if (env.flags & QUEUE_FLAG_REQUEUE) {
                        r = qmgr_header_requeue(q, id, &fd, &env, &verdict);
                        if (r < 0) {
                                log_warning("%s: header_checks failed: %s; deferring", id,
                                            strerror(-r));
                                queue_envelope_done(&env);
                                return r;
                        }
                }
                /* canonical_maps, then virtual_alias_maps, as cleanup. */
                r = qmgr_canonical(q, id, &fd, &env);
                if (r < 0) {
                        log_warning("%s: canonical mapping failed: %s; deferring", id,
                                    strerror(-r));
                        queue_envelope_done(&env);
                        return r;
                }
                canonical_changed = r > 0;
                r = qmgr_alias_expand(q, &env, &errors);
                n_errors_rcpts = env.n_rcpts;
                if (r < 0) {
                        log_warning("%s: virtual_alias_maps lookup failed: %s; deferring", id,
                                    strerror(-r));
                        queue_envelope_done(&env);
                        return r;
                }
                if (r > 0 || canonical_changed || was_held ||
                    (env.flags & QUEUE_FLAG_REQUEUE)) {
                        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
                        env.flags &= ~(unsigned) QUEUE_FLAG_REQUEUE;
                        r = queue_file_rewrite(fd, &env, q->incoming_fd, &w);
                        if (r >= 0)
                                r = queue_writer_commit(w, q->incoming_fd);
                        queue_envelope_done(&env);
                        if (r < 0) {
                                free_errors(errors, n_errors_rcpts);
                                return log_error_errno(r, "%s: cannot rewrite queue file: %m",
                                                       id);
                        }
                        /* The new file replaced the old one under its name. */
                        fd = safe_close_fd(fd);
                        r = open_locked(q, from, id);
                        if (r <= 0) {
                                free_errors(errors, n_errors_rcpts);
                                return r;
                        }
                        fd = r;
                        r = queue_file_read(fd, &env);
                        if (r < 0) {
                                free_errors(errors, n_errors_rcpts);
                                if (r == -EBADMSG)
                                        move_to_corrupt(q, from, id, r);
                                return r == -EBADMSG ? 0 : r;
                        }
                }
        }
        if (verdict.action == QMGR_HEADER_HOLD) {
                queue_envelope_done(&env);
                free_errors(errors, n_errors_rcpts);
                r = queue_move(q->queue_fd, id, from, QUEUE_HOLD);
                return r == -ENOENT ? 0 : r;
        }
        if (!streq(from, QUEUE_ACTIVE)) {
                r = queue_move(q->queue_fd, id, from, QUEUE_ACTIVE);
                if (r < 0) {
                        queue_envelope_done(&env);
                        free_errors(errors, n_errors_rcpts);
                        return r == -ENOENT ? 0 : r;
                }
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                queue_envelope_done(&env);
                free_errors(errors, n_errors_rcpts);
                return r;
        }

        m = calloc(1, sizeof(*m));
        if (m)
                m->rcpts = calloc(env.n_rcpts, sizeof(QmgrRcpt));
        if (!m || !m->rcpts) {
                if (m)
                        free(m);
                queue_envelope_done(&env);
                free_errors(errors, n_errors_rcpts);
                return log_oom();
        }
        m->qmgr = q;
        memcpy(m->id, id, QUEUE_ID_SIZE);
        m->node.key = m->id;
        m->fd = steal_fd(fd);
        m->dev = st.st_dev;
        m->ino = st.st_ino;
        m->env = env;
        m->active_usec = now_realtime();
        (void) qmgr_hash_put(&q->messages, &m->node);
        m->next = q->messages_head;
        if (m->next)
                m->next->prev = m;
        q->messages_head = m;
        q->n_active++;

        if (errors && n_errors_rcpts == m->env.n_rcpts)
                log_alias_errors(m, errors);
        free_errors(errors, n_errors_rcpts);
        if (verdict.action == QMGR_HEADER_REJECT || verdict.action == QMGR_HEADER_DISCARD) {
                bool reject = verdict.action == QMGR_HEADER_REJECT;
                for (size_t i = 0; i < m->env.n_rcpts; i++)
                        if (m->env.rcpts[i].status == QUEUE_RCPT_PENDING && !m->rcpts[i].notice)
                                qmgr_record_result(m, i, reject ? "bounced" : "sent",
                                                   reject ? "5.7.1" : "2.0.0", "none",
                                                   reject ? strempty(verdict.text) : "discarded",
                                                   m->active_usec);
        }

        for (size_t i = 0; i < m->env.n_rcpts; i++) {
                QueueRecipient *rc = &m->env.rcpts[i];
                QmgrRoute route = {0};
                /* Done, or bounced by the alias expansion (its notice is
                 * noted, the status byte follows the notice). */
                if (rc->status != QUEUE_RCPT_PENDING || m->rcpts[i].notice)
                        continue;
                r = qmgr_resolve(q, rc->address, &route);
                if (r < 0) {
                        log_warning("%s: transport_maps lookup failed for <%s>: %s; deferring",
                                    id, rc->address, strerror(-r));
                        qmgr_record_result(m, i, "deferred", "4.3.0", "none",
                                           "address resolver failure", m->active_usec);
                        continue;
                }
                switch (route.kind) {
                case QMGR_ROUTE_DELIVER:
                        r = qmgr_sched_add(q, m, route.transport, route.nexthop, i);
                        if (r < 0)
                                qmgr_record_result(m, i, "deferred", "4.3.0", "none",
                                                   "queue manager out of memory", m->active_usec);
                        break;
                case QMGR_ROUTE_ERROR:
                        qmgr_record_result(m, i, "bounced", route.dsn, "none", route.text,
                                           m->active_usec);
                        break;
                case QMGR_ROUTE_DISCARD:
                        qmgr_record_result(m, i, "sent", "2.0.0", "none", route.text,
                                           m->active_usec);
                        break;
                case QMGR_ROUTE_DEFER:
                        qmgr_record_result(m, i, "deferred", route.dsn, "none", route.text,
                                           m->active_usec);
                        break;
                }
                qmgr_route_done(&route);
        }
        /* Status bytes written above are synced with the next batch. */
        if (m->n_scheduled == 0)
                qmgr_message_done(m);
        else
                qmgr_sched_kick(q);
        return 1;
}

static uint64_t backoff_for(Qmgr *q, uint64_t age) {
        uint64_t d = age;
        if (d < q->settings.min_backoff_usec)
                d = q->settings.min_backoff_usec;
        if (d > q->settings.max_backoff_usec)
                d = q->settings.max_backoff_usec;
        return d;
}

/* Writes the defer log (defer/X/Y/QUEUEID): "address TAB dsn TAB reason" per
 * deferred recipient, read by mailq. Not synced: it is informational. */
static void write_defer_log(Qmgr *q, QmgrMessage *m) {
        char path[QUEUE_PATH_MAX];
        StrBuf b = {0};
        _cleanup_free_ char *full = NULL;
        int r;

        for (size_t i = 0; i < m->env.n_rcpts; i++) {
                QueueRecipient *rc = &m->env.rcpts[i];
                if (rc->status != QUEUE_RCPT_PENDING || !m->rcpts[i].reason)
                        continue;
                (void) strbuf_printf(&b, "%s\t%s\t%s\n", rc->address,
                                     strempty(m->rcpts[i].dsn), m->rcpts[i].reason);
        }
        queue_subpath(QUEUE_DEFER_LOG, m->id, path);
        r = queue_make_subdir(q->queue_fd, QUEUE_DEFER_LOG, m->id);
        full = path_join(q->settings.queue_directory, path);
        if (r >= 0 && full)
                r = file_write_atomic(full, b.data ? b.data : "", b.len, 0600);
        if (r < 0)
                log_warning("%s: cannot write the defer log: %s", m->id, strerror(-r));
        strbuf_done(&b);
}

void qmgr_message_done(QmgrMessage *m) {
        Qmgr *q = m->qmgr;
        uint64_t now = now_realtime(), arrival, age, lifetime;
        _cleanup_free_ size_t *pending = NULL;
        size_t n_pending = 0;
        int r;

        /* Waiting recipients, deliveries or notices in flight: the last
         * of them to finish calls us again. */
        if (m->n_scheduled > 0 || m->n_jobs > 0 || m->n_notices > 0)
                return;
        if (!qmgr_message_present(m)) {
                message_free(m);
                qmgr_kick_incoming(q);
                qmgr_update_idle(q);
                return;
        }
        /* The notices of this attempt, one report per kind as Postfix's
         * bounce daemon writes them once the message is done. */
        if (qmgr_bounce_flush(m) > 0)
                return;
        arrival = (uint64_t) m->env.arrival.tv_sec * 1000000u + (uint64_t) m->env.arrival.tv_usec;
        age = now > arrival ? now - arrival : 0;
        lifetime = m->env.sender[0] ? q->settings.max_lifetime_usec
                                    : q->settings.bounce_lifetime_usec;

        pending = calloc(m->env.n_rcpts ? m->env.n_rcpts : 1, sizeof(size_t));
        if (!pending) {
                log_oom();
                return;
        }
        for (size_t i = 0; i < m->env.n_rcpts; i++)
                if (m->env.rcpts[i].status == QUEUE_RCPT_PENDING)
                        pending[n_pending++] = i;

        if (n_pending > 0 && age >= lifetime) {
                /* Too old: give up on what is still pending (Postfix: the
                 * attempt that just failed was the last one). A recipient
                 * whose bounce notice just failed waits for the next run. */
                for (size_t k = 0; k < n_pending; k++) {
                        size_t i = pending[k];
                        char dsn[16];
                        _cleanup_free_ char *text = NULL;
                        if (m->rcpts[i].notice_failed)
                                continue;
                        /* The last temporary status stays, as in Postfix's
                         * reports (Action: failed, Status: 4.4.1). */
                        snprintf(dsn, sizeof(dsn), "%s", m->rcpts[i].dsn ? m->rcpts[i].dsn : "4.4.7");
                        text = strdup_printf("message expired after %llu seconds in the queue: %s",
                                             (unsigned long long) (age / 1000000u),
                                             m->rcpts[i].reason ? m->rcpts[i].reason
                                                                : "delivery was not possible");
                        qmgr_record_result(m, i, "bounced", dsn, "none", text ? text : "expired",
                                           now);
                }
                if (qmgr_bounce_flush(m) > 0)
                        return;
        } else if (n_pending > 0 && q->settings.delay_warning_usec > 0 &&
                   age >= q->settings.delay_warning_usec && m->env.sender[0] &&
                   !(m->env.flags & QUEUE_FLAG_DELAY_WARNED) && !m->delay_notice_failed) {
                /* Postfix: delay warnings only with delay_warning_time > 0,
                 * once per message; the bounce service honours NOTIFY. */
                for (size_t k = 0; k < n_pending; k++)
                        qmgr_bounce_want(m, pending[k], QMGR_NOTICE_DELAY);
                if (qmgr_bounce_flush(m) > 0)
                        return;
        }
        n_pending = 0;
        for (size_t i = 0; i < m->env.n_rcpts; i++)
                if (m->env.rcpts[i].status == QUEUE_RCPT_PENDING)
                        pending[n_pending++] = i;

        if (n_pending > 0) {
                uint64_t due = now + backoff_for(q, age);
                struct timespec ts[2] = {
                        {.tv_sec = (time_t) (now / 1000000u), .tv_nsec = (long) (now % 1000000u) * 1000},
                        {.tv_sec = (time_t) (due / 1000000u), .tv_nsec = (long) (due % 1000000u) * 1000},
                };
                write_defer_log(q, m);
                /* The status bytes of this attempt are durable before the
                 * next one can start from the deferred queue. */
                (void) qmgr_message_sync(m);
                (void) qmgr_message_sync_now(m);
                /* The retry time is the file's mtime, as in Postfix. */
                if (futimens(m->fd, ts) < 0)
                        log_warning("%s: cannot set the retry time: %m", m->id);
                r = queue_move(q->queue_fd, m->id, QUEUE_ACTIVE, QUEUE_DEFERRED);
                if (r < 0)
                        log_error_errno(r, "%s: cannot move to the deferred queue: %m", m->id);
                else
                        q->n_deferred++;
                if (q->next_due == 0 || due < q->next_due)
                        q->next_due = due;
        } else {
                r = queue_unlink(q->queue_fd, QUEUE_ACTIVE, m->id);
                if (r < 0 && r != -ENOENT)
                        log_error_errno(r, "%s: cannot remove the queue file: %m", m->id);
                else {
                        /* Gone: its status bytes need no sync, the removal
                         * is made durable with the next sync pass. */
                        qmgr_message_sync_drop(m);
                        (void) queue_unlink(q->queue_fd, QUEUE_DEFER_LOG, m->id);
                        log_mail(LOG_INFO, MSGID_REMOVED, m->id, LOG_NO_FIELDS, "removed");
                }
        }
        message_free(m);
        qmgr_kick_incoming(q);
        if (q->scan && q->scan_event)
                (void) sd_event_source_set_enabled(q->scan_event, SD_EVENT_ONESHOT);
        qmgr_update_idle(q);
}

/* --- incoming ------------------------------------------------------------- */

void qmgr_kick_incoming(Qmgr *q) {
        if ((q->n_enqueued > 0 || q->incoming_dirty) && q->incoming_event)
                (void) sd_event_source_set_enabled(q->incoming_event, SD_EVENT_ONESHOT);
}

int qmgr_enqueue(Qmgr *q, const char *id) {
        if (strlen(id) >= QUEUE_ID_SIZE)
                return -EINVAL;
        if (q->n_enqueued == q->enqueued_cap) {
                /* Grow the ring, its contents from the head on first. */
                size_t cap = q->enqueued_cap ? q->enqueued_cap * 2 : 256;
                char (*ids)[QUEUE_ID_SIZE] = calloc(cap, QUEUE_ID_SIZE);
                if (!ids)
                        return -ENOMEM;
                for (size_t k = 0; k < q->n_enqueued; k++)
                        memcpy(ids[k], q->enqueued[(q->enqueued_head + k) % q->enqueued_cap],
                               QUEUE_ID_SIZE);
                free(q->enqueued);
                q->enqueued = ids;
                q->enqueued_cap = cap;
                q->enqueued_head = 0;
        }
        snprintf(q->enqueued[(q->enqueued_head + q->n_enqueued) % q->enqueued_cap],
                 QUEUE_ID_SIZE, "%s", id);
        q->n_enqueued++;
        qmgr_kick_incoming(q);
        return 0;
}

static int on_incoming_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Qmgr *q = userdata;
        q->incoming_dirty = true;
        qmgr_kick_incoming(q);
        return 0;
}

/* A failed activation (table lookup, I/O) is retried after a pause. */
static void incoming_retry_later(Qmgr *q) {
        if (q->incoming_retry)
                (void) sd_event_source_set_enabled(q->incoming_retry, SD_EVENT_ONESHOT);
        else
                (void) sd_event_add_time_relative(q->event, &q->incoming_retry, CLOCK_MONOTONIC,
                                                  10 * 1000000u, 0, on_incoming_retry, q);
        if (q->incoming_retry)
                (void) sd_event_source_set_time_relative(q->incoming_retry, 10 * 1000000u);
}

static int on_incoming(sd_event_source *s, void *userdata) {
        Qmgr *q = userdata;
        unsigned budget = 1000;         /* per pass, so that replies keep flowing */
        int r;

        /* Oldest first, as they arrived. */
        while (q->n_enqueued > 0 && q->n_active < q->settings.active_limit && budget > 0) {
                char id[QUEUE_ID_SIZE];
                memcpy(id, q->enqueued[q->enqueued_head], QUEUE_ID_SIZE);
                q->enqueued_head = (q->enqueued_head + 1) % q->enqueued_cap;
                q->n_enqueued--;
                budget--;
                r = message_activate(q, QUEUE_INCOMING, id);
                if (r < 0)
                        incoming_retry_later(q);
        }
        if (q->incoming_dirty && q->n_active < q->settings.active_limit && budget > 0) {
                _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
                char id[QUEUE_ID_SIZE];
                bool complete = true;

                q->incoming_dirty = false;
                r = queue_scan_new(q->queue_fd, QUEUE_INCOMING, &scan);
                while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                        if (q->n_active >= q->settings.active_limit || budget == 0) {
                                complete = false;
                                break;
                        }
                        budget--;
                        if (message_activate(q, QUEUE_INCOMING, id) < 0)
                                incoming_retry_later(q);
                }
                if (r < 0)
                        log_error_errno(r, "Cannot scan the incoming queue: %m");
                if (!complete)
                        q->incoming_dirty = true;
        }
        if ((q->n_enqueued > 0 || q->incoming_dirty) && q->n_active < q->settings.active_limit)
                qmgr_kick_incoming(q);
        qmgr_update_idle(q);
        return 0;
}

/* --- deferred queue scans ------------------------------------------------- */

static void scan_start(Qmgr *q) {
        int r;
        if (q->scan)
                return;
        r = queue_scan_new(q->queue_fd, QUEUE_DEFERRED, &q->scan);
        if (r < 0) {
                log_error_errno(r, "Cannot scan the deferred queue: %m");
                return;
        }
        q->scan_next_due = 0;
        q->scan_seen = q->scan_due = 0;
        q->scan_begin_mono = now_monotonic();
        (void) sd_event_source_set_enabled(q->scan_event, SD_EVENT_ONESHOT);
}

void qmgr_flush(Qmgr *q, const char *site) {
        qmgr_sched_reset_dead(q, site);
        if (q->scan) {
                /* Finish this scan, then run a forced one: for the site, or
                 * for everything when several flushes want more. */
                if (!q->scan_again && site)
                        q->again_site = strdup(site);
                else if (!site || !q->again_site || !strcaseeq(q->again_site, site))
                        q->again_site = mfree_str(q->again_site);
                q->scan_again = true;
                return;
        }
        q->scan_force = true;
        free(q->scan_site);
        q->scan_site = site ? strdup(site) : NULL;
        q->scan_started = now_realtime();
        scan_start(q);
}

int qmgr_flush_id(Qmgr *q, const char *id) {
        const char *queue;
        int r = queue_locate(q->queue_fd, id, &queue);
        if (r < 0)
                return r;
        if (streq(queue, QUEUE_DEFERRED) || streq(queue, QUEUE_INCOMING)) {
                r = message_activate(q, queue, id);
                if (r > 0 && streq(queue, QUEUE_DEFERRED) && q->n_deferred > 0)
                        q->n_deferred--;
                return r < 0 ? r : 0;
        }
        return streq(queue, QUEUE_ACTIVE) ? 0 : -ESRCH;
}

/* Whether a deferred message has a pending recipient in site. */
static bool message_for_site(Qmgr *q, const char *id, const char *site) {
        _cleanup_close_ int fd = queue_open(q->queue_fd, QUEUE_DEFERRED, id, O_RDONLY);
        QueueEnvelope env = {0};
        bool found = false;

        if (fd < 0 || queue_file_read(fd, &env) < 0)
                return false;
        for (size_t i = 0; i < env.n_rcpts && !found; i++) {
                const char *d = addr_domain(env.rcpts[i].address);
                found = env.rcpts[i].status == QUEUE_RCPT_PENDING && d && strcaseeq(d, site);
        }
        queue_envelope_done(&env);
        return found;
}

static void scan_finish(Qmgr *q) {
        q->n_deferred = q->scan_seen - q->scan_due;     /* what stayed */
        if (q->scan_seen > 0)
                log_info("Deferred queue run: %u of %u message(s) due, %.3fs", q->scan_due,
                         q->scan_seen, (double) (now_monotonic() - q->scan_begin_mono) / 1e6);
        q->scan = queue_scan_free(q->scan);
        q->next_due = q->scan_next_due;
        q->scan_force = false;
        q->scan_site = mfree_str(q->scan_site);
        if (q->scan_again) {
                q->scan_again = false;
                q->scan_force = true;
                q->scan_site = steal_ptr(q->again_site);
                q->scan_started = now_realtime();
                scan_start(q);
        }
        qmgr_update_idle(q);
}

static int on_scan_slice(sd_event_source *s, void *userdata) {
        Qmgr *q = userdata;
        uint64_t now = now_realtime();
        char id[QUEUE_ID_SIZE];
        struct stat st;
        int r;

        if (!q->scan)
                return 0;
        for (;;) {
                uint64_t due, changed;
                if (q->n_active >= q->settings.active_limit)
                        return 0;       /* resumed by qmgr_message_done() */
                r = queue_scan_next_slice(q->scan, id, &st);
                if (r < 0) {
                        log_error_errno(r, "Cannot scan the deferred queue: %m");
                        scan_finish(q);
                        return 0;
                }
                if (r == 0) {
                        if (queue_scan_done(q->scan))
                                scan_finish(q);
                        else    /* next subdirectory in the next loop iteration */
                                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                        return 0;
                }
                due = (uint64_t) st.st_mtim.tv_sec * 1000000u + (uint64_t) st.st_mtim.tv_nsec / 1000u;
                changed = (uint64_t) st.st_ctim.tv_sec * 1000000u +
                          (uint64_t) st.st_ctim.tv_nsec / 1000u;
                q->scan_seen++;
                /* A forced run takes what was deferred before it started:
                 * the ctime is the deferral (rename), which readers cannot
                 * change, unlike the atime. */
                if ((q->scan_force && changed <= q->scan_started &&
                     (!q->scan_site || message_for_site(q, id, q->scan_site))) ||
                    (!q->scan_force && due <= now)) {
                        q->scan_due++;
                        r = message_activate(q, QUEUE_DEFERRED, id);
                        if (r > 0 && q->n_deferred > 0)
                                q->n_deferred--;
                        if (r < 0)
                                log_warning("%s: cannot activate: %s", id, strerror(-r));
                        continue;
                }
                if (q->scan_next_due == 0 || due < q->scan_next_due)
                        q->scan_next_due = due;
        }
}

static void recover_active(Qmgr *q);

static int on_scan_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Qmgr *q = userdata;
        (void) sd_event_source_set_time_relative(s, q->settings.queue_run_delay_usec);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        /* The queue on disk is the contract: mail whose announcement was
         * lost (a sender that talked to a queue manager that died) waits in
         * incoming/, and a message an agent still held when a previous
         * queue manager died waits in active/. Pick both up on every run. */
        recover_active(q);
        q->incoming_dirty = true;
        qmgr_kick_incoming(q);
        if (!q->scan) {
                q->scan_force = false;
                scan_start(q);
        }
        return 0;
}

/* --- idle exit ------------------------------------------------------------ */

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        Qmgr *q = userdata;
        log_debug("Idle: exiting");
        q->exiting = true;
        return sd_event_exit(q->event, 0);
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Qmgr *q = userdata;
        q->status_sent_usec = usec;
        (void) sd_notifyf(false, "STATUS=Queue: %zu incoming, %u active, %u deferred; "
                          "%u deliveries in flight", q->n_enqueued, q->n_active,
                          q->n_deferred, q->jobs_in_flight);
        return 0;
}

/* Each notification is a datagram to the service manager; under load the
 * counts change thousands of times a second, so STATUS= follows them at
 * most once a second, always ending with the latest. */
static void status_update(Qmgr *q) {
        uint64_t now = 0, at;
        int enabled = SD_EVENT_OFF;

        (void) sd_event_now(q->event, CLOCK_MONOTONIC, &now);
        at = q->status_sent_usec ? q->status_sent_usec + 1000000u : now;
        if (!q->status_timer) {
                if (sd_event_add_time(q->event, &q->status_timer, CLOCK_MONOTONIC, MAX(at, now),
                                      0, on_status_timer, q) < 0)
                        return;
                (void) sd_event_source_set_enabled(q->status_timer, SD_EVENT_ONESHOT);
                return;
        }
        (void) sd_event_source_get_enabled(q->status_timer, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;         /* already due */
        (void) sd_event_source_set_time(q->status_timer, MAX(at, now));
        (void) sd_event_source_set_enabled(q->status_timer, SD_EVENT_ONESHOT);
}

void qmgr_update_idle(Qmgr *q) {
        bool idle = q->n_active == 0 && !q->scan && q->n_enqueued == 0 && !q->incoming_dirty &&
                    q->jobs_in_flight == 0;
        uint64_t now = now_realtime();

        /* Mail due before the timer would start us again keeps us running. */
        if (idle && q->next_due != 0 && q->next_due <= now + q->settings.queue_run_delay_usec)
                idle = false;
        if (!q->idle_timer)
                return;
        if (idle) {
                (void) sd_event_source_set_time_relative(q->idle_timer, q->settings.max_idle_usec);
                (void) sd_event_source_set_enabled(q->idle_timer, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(q->idle_timer, SD_EVENT_OFF);
        status_update(q);
}

/* --- main ----------------------------------------------------------------- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Qmgr *q = userdata;
        q->exiting = true;
        return sd_event_exit(q->event, 0);
}

/* SIGHUP (systemctl reload): loads main.cf, services.d/qmgr.cf and the
 * tables again and switches to them in place; messages, destinations and
 * deliveries in progress stay, new routing and limits apply to what is
 * resolved from now on. A configuration that does not load changes
 * nothing. queue_directory needs a restart: the queue stays open. */
static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Qmgr *q = userdata;
        _cleanup_(conf_unrefp) Config *c = NULL;
        QmgrSettings n = {0};
        Diag diags = {0};
        int r;

        if (q->exiting)
                return 0;
        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration");
        r = conf_load(arg_config_dir, "qmgr", &diags, &c);
        if (r >= 0)
                r = settings_load(c, &diags, &n);
        log_diags(&diags, false);
        if (r < 0) {
                qmgr_settings_done(&n);
                log_mail(LOG_ERR, MSGID_CONFIG_ERROR, NULL, LOG_NO_FIELDS,
                         "Reload failed: cannot load the configuration (%s); keeping the "
                         "running one", strerror(-r));
        } else {
                if (!streq(n.queue_directory, q->settings.queue_directory)) {
                        log_warning("queue_directory changed to %s: it takes effect when the "
                                    "queue manager starts again; still using %s",
                                    n.queue_directory, q->settings.queue_directory);
                        free(n.queue_directory);
                        n.queue_directory = steal_ptr(q->settings.queue_directory);
                }
                qmgr_settings_done(&q->settings);
                q->settings = n;
                conf_unref(q->config);
                q->config = steal_ptr(c);
                log_info("Reloaded the configuration");
        }
        (void) sd_notify(false, "READY=1");
        qmgr_update_idle(q);
        return 0;
}

static int open_queue(Qmgr *q) {
        static const char *const dirs[] = {
                QUEUE_INCOMING, QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, QUEUE_CORRUPT,
                QUEUE_DEFER_LOG,
        };
        const char *dir = q->settings.queue_directory;

        q->queue_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (q->queue_fd < 0)
                return log_error_errno(errno, "Cannot open queue_directory %s: %m", dir);
        /* tmpfiles.d creates them; a private instance may not have all. */
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
                if (mkdirat(q->queue_fd, dirs[i], 0700) < 0 && errno != EEXIST)
                        return log_error_errno(errno, "Cannot create %s/%s: %m", dir, dirs[i]);
        q->incoming_fd = openat(q->queue_fd, QUEUE_INCOMING, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (q->incoming_fd < 0)
                return log_error_errno(errno, "Cannot open %s/incoming: %m", dir);
        q->active_fd = openat(q->queue_fd, QUEUE_ACTIVE, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (q->active_fd < 0)
                return log_error_errno(errno, "Cannot open %s/active: %m", dir);
        return 0;
}

/* Takes up what a previous instance left in active/. */
static void recover_active(Qmgr *q) {
        _cleanup_(queue_scan_freep) QueueScan *scan = NULL;
        char id[QUEUE_ID_SIZE];
        unsigned n = 0;
        int r;

        r = queue_scan_new(q->queue_fd, QUEUE_ACTIVE, &scan);
        while (r >= 0 && (r = queue_scan_next(scan, id, NULL)) > 0) {
                if (qmgr_hash_get(&q->messages, id))
                        continue;       /* ours, in progress */
                if (q->n_active >= q->settings.active_limit) {
                        /* Back to incoming/ for a later pass; nothing in it
                         * is lost or done twice. */
                        (void) queue_move(q->queue_fd, id, QUEUE_ACTIVE, QUEUE_INCOMING);
                        q->incoming_dirty = true;
                        continue;
                }
                if (message_activate(q, QUEUE_ACTIVE, id) > 0)
                        n++;
        }
        if (r < 0)
                log_error_errno(r, "Cannot scan the active queue: %m");
        if (n > 0)
                log_info("Resumed %u message(s) left in the active queue", n);
}

static void qmgr_done(Qmgr *q) {
        qmgr_bus_done(q);
        qmgr_bounce_done(q);
        while (q->messages_head)
                message_free(q->messages_head);
        qmgr_sched_done(q);
        qmgr_hash_done(&q->messages);
        q->scan = queue_scan_free(q->scan);
        free(q->scan_site);
        free(q->again_site);
        free(q->enqueued);
        sd_event_source_disable_unref(q->incoming_event);
        sd_event_source_disable_unref(q->incoming_retry);
        sd_event_source_disable_unref(q->scan_event);
        sd_event_source_disable_unref(q->scan_timer);
        sd_event_source_disable_unref(q->sched_event);
        sd_event_source_disable_unref(q->idle_timer);
        sd_event_source_disable_unref(q->status_timer);
        for (size_t i = 0; i < ELEMENTSOF(q->agents); i++) {
                sd_bus_flush_close_unref(q->agents[i].bus);
                free(q->agents[i].name);
                free(q->agents[i].path);
        }
        if (q->queue_fd >= 0)
                close(q->queue_fd);
        if (q->incoming_fd >= 0)
                close(q->incoming_fd);
        if (q->active_fd >= 0)
                close(q->active_fd);
        qmgr_settings_done(&q->settings);
        conf_unref(q->config);
        sd_event_unref(q->event);
}

static int help(void) {
        printf("Usage: postern-qmgr [-c DIR] [-v]\n\n"
               "The postern queue manager: moves mail from incoming/ to the delivery\n"
               "agents and retries deferred mail. Started by postern-qmgr.socket and\n"
               "postern-qmgr.timer.\n\n"
               "  -c DIR       configuration directory\n"
               "  -v           debug logging\n");
        return 0;
}

static int parse_argv(int argc, char **argv) {
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"verbose", no_argument, NULL, 'v'},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:vh", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_config_dir = optarg;
                        break;
                case 'v':
                        log_set_max_level(LOG_DEBUG);
                        break;
                case 'h':
                        return help();
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "postern-qmgr: unexpected argument: %s\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char **argv) {
        Qmgr q = {.queue_fd = -1, .incoming_fd = -1, .active_fd = -1, .listen_fd = -1};
        Diag diags = {0};
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        log_setup("postern-qmgr", NULL, LOG_TARGET_AUTO);

        r = conf_load(arg_config_dir, "qmgr", &diags, &q.config);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot load the configuration: %m");
                goto out;
        }
        r = settings_load(q.config, &diags, &q.settings);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the queue manager: %m");
                goto out;
        }
        r = open_queue(&q);
        if (r < 0)
                goto out;

        r = sd_event_default(&q.event);
        if (r < 0)
                goto out;
        /* WATCHDOG=1 from the loop when the unit sets WatchdogSec=. */
        r = sd_event_set_watchdog(q.event, true);
        if (r < 0)
                goto out;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(q.event, NULL, SIGTERM, on_signal, &q)) < 0 ||
            (r = sd_event_add_signal(q.event, NULL, SIGINT, on_signal, &q)) < 0 ||
            (r = sd_event_add_signal(q.event, NULL, SIGHUP, on_reload, &q)) < 0)
                goto out;
        if ((r = sd_event_add_defer(q.event, &q.incoming_event, on_incoming, &q)) < 0 ||
            (r = sd_event_add_defer(q.event, &q.scan_event, on_scan_slice, &q)) < 0 ||
            (r = sd_event_add_time_relative(q.event, &q.scan_timer, CLOCK_MONOTONIC,
                                            q.settings.queue_run_delay_usec, 0, on_scan_timer,
                                            &q)) < 0 ||
            (r = sd_event_add_time_relative(q.event, &q.idle_timer, CLOCK_MONOTONIC,
                                            q.settings.max_idle_usec, 0, on_idle, &q)) < 0)
                goto out;
        (void) sd_event_source_set_enabled(q.incoming_event, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(q.scan_event, SD_EVENT_OFF);
        /* Replies from the agents and bus requests come before new work. */
        (void) sd_event_source_set_priority(q.incoming_event, SD_EVENT_PRIORITY_IDLE);
        (void) sd_event_source_set_priority(q.scan_event, SD_EVENT_PRIORITY_IDLE);
        r = qmgr_bus_setup(&q);
        if (r < 0)
                goto out;

        recover_active(&q);
        q.incoming_dirty = true;
        qmgr_kick_incoming(&q);
        q.scan_force = false;
        scan_start(&q);
        qmgr_update_idle(&q);

        (void) sd_notify(false, "READY=1");
        r = sd_event_loop(q.event);
out:
        qmgr_done(&q);
        return r;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
