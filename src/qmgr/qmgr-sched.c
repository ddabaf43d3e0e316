/* qmgr-sched.c: the scheduler. Recipients wait per destination (transport
 * plus next hop) in entries, one per message, in arrival order. A dispatch
 * pass walks the ring of destinations with waiting recipients round-robin,
 * starting one delivery per destination per turn, so that a slow or dead
 * destination never starves the others. Each destination has a
 * concurrency window that starts at initial_destination_concurrency, grows
 * by one with each delivery that succeeds (up to
 * TRANSPORT_destination_concurrency_limit) and shrinks by one with each
 * that is deferred as a whole; at zero the destination is dead: what waits
 * for it is deferred at once ("delivery temporarily suspended") until
 * minimal_backoff_time has passed or a flush resets it, as in Postfix.
 *
 * A delivery is one org.postern.Delivery1.Deliver call carrying the queue
 * file as an fd and up to TRANSPORT_destination_recipient_limit
 * recipients of one message; local deliveries with a recipient limit of 1
 * use the recipient as the destination (Postfix's per-recipient local
 * concurrency). Results are written to the status bytes before they are
 * logged, and synced in batches (qmgr_message_sync()). Entry points:
 * qmgr_sched_add(), qmgr_sched_kick(), qmgr_record_result(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus-names.h"
#include "log.h"
#include "qmgr.h"

/* Remote deliveries may take long (several MX hosts with timeouts each). */
#define DELIVERY_TIMEOUT_USEC (3600ull * 1000000u)

typedef struct QmgrJob {
        Qmgr *qmgr;
        QmgrDest *dest;
        QmgrMessage *message;
        size_t *rcpts;
        size_t n;
        sd_bus_slot *slot;
        uint64_t dispatch_usec;         /* realtime */
} QmgrJob;

void qmgr_format_delay(double v, char buf[static 32]) {
        if (v < 0.005)
                snprintf(buf, 32, "0");
        else if (v < 0.1)
                snprintf(buf, 32, "%.2f", v);
        else if (v < 10)
                snprintf(buf, 32, "%.1f", v);
        else
                snprintf(buf, 32, "%.0f", v);
}

/* --- destinations --------------------------------------------------------- */

static unsigned transport_limit(Qmgr *q, const char *transport, const char *what,
                                ConfParam fallback) {
        char name[128];
        const char *v;
        long long n;

        snprintf(name, sizeof(name), "%s_%s", transport, what);
        v = conf_get_by_name(q->config, name, true);
        if (!v || conf_parse_int(v, &n) < 0)
                n = conf_get_int(q->config, fallback);
        if (n < 1)
                n = 1;
        return n > 100000 ? 100000 : (unsigned) n;
}

static void ring_add(Qmgr *q, QmgrDest *d) {
        if (d->in_ring)
                return;
        if (!q->ring) {
                d->rr_next = d->rr_prev = d;
                q->ring = d;
        } else {
                /* Before the cursor: served last in the current turn. */
                d->rr_next = q->ring;
                d->rr_prev = q->ring->rr_prev;
                d->rr_prev->rr_next = d;
                q->ring->rr_prev = d;
        }
        d->in_ring = true;
}

static void ring_remove(Qmgr *q, QmgrDest *d) {
        if (!d->in_ring)
                return;
        if (d->rr_next == d)
                q->ring = NULL;
        else {
                d->rr_prev->rr_next = d->rr_next;
                d->rr_next->rr_prev = d->rr_prev;
                if (q->ring == d)
                        q->ring = d->rr_next;
        }
        d->rr_next = d->rr_prev = NULL;
        d->in_ring = false;
}

static void dest_free(Qmgr *q, QmgrDest *d) {
        ring_remove(q, d);
        qmgr_hash_remove(&q->dests, &d->node);
        while (d->head) {
                QmgrEntry *e = d->head;
                d->head = e->next;
                free(e->rcpts);
                free(e);
        }
        free(d->key);
        free(d->transport);
        free(d->nexthop);
        free(d->dead_dsn);
        free(d->dead_reason);
        free(d);
}

static void dest_maybe_free(Qmgr *q, QmgrDest *d) {
        if (!d->head && d->in_flight == 0 && !d->dead)
                dest_free(q, d);
}

static QmgrDest *dest_get(Qmgr *q, QmgrAgent *agent, const char *transport, const char *nexthop,
                          const char *rcpt) {
        unsigned rcpt_limit = transport_limit(q, transport, "destination_recipient_limit",
                                              P_DEFAULT_DESTINATION_RECIPIENT_LIMIT);
        _cleanup_free_ char *key = NULL;
        QmgrDest *d;

        /* With one recipient per delivery the recipient is the destination
         * (Postfix: per-recipient concurrency for local delivery). */
        key = rcpt_limit == 1 ? strdup_printf("%s\t%s\t%s", transport, nexthop, rcpt)
                              : strdup_printf("%s\t%s", transport, nexthop);
        if (!key)
                return NULL;
        d = (QmgrDest *) qmgr_hash_get(&q->dests, key);
        if (d)
                return d;
        d = calloc(1, sizeof(*d));
        if (!d)
                return NULL;
        d->qmgr = q;
        d->key = steal_ptr(key);
        d->node.key = d->key;
        d->transport = strdup(transport);
        d->nexthop = strdup(nexthop);
        if (!d->transport || !d->nexthop || qmgr_hash_put(&q->dests, &d->node) < 0) {
                free(d->transport);
                free(d->nexthop);
                free(d->key);
                free(d);
                return NULL;
        }
        d->agent = agent;
        d->rcpt_limit = rcpt_limit;
        d->limit = transport_limit(q, transport, "destination_concurrency_limit",
                                   P_DEFAULT_DESTINATION_CONCURRENCY_LIMIT);
        d->window = MIN(q->settings.initial_concurrency, d->limit);
        return d;
}

static bool dest_is_dead(QmgrDest *d) {
        if (d->dead && now_monotonic() >= d->dead_until) {
                d->dead = false;
                d->window = 1;
        }
        return d->dead;
}

int qmgr_sched_add(Qmgr *q, QmgrMessage *m, const char *transport, const char *nexthop,
                   size_t rcpt) {
        QmgrAgent *agent = qmgr_agent_for_transport(q, transport);
        QmgrDest *d;
        QmgrEntry *e;

        if (!agent) {
                qmgr_record_result(m, rcpt, "deferred", "4.3.5", "none",
                                   "mail transport unavailable", m->active_usec);
                return 0;
        }
        d = dest_get(q, agent, transport, nexthop, m->env.rcpts[rcpt].address);
        if (!d)
                return -ENOMEM;
        if (dest_is_dead(d)) {
                _cleanup_free_ char *text = strdup_printf("delivery temporarily suspended: %s",
                                                          strempty(d->dead_reason));
                qmgr_record_result(m, rcpt, "deferred", d->dead_dsn ? d->dead_dsn : "4.4.1",
                                   "none", text ? text : "delivery temporarily suspended",
                                   m->active_usec);
                return 0;
        }
        e = d->tail;
        if (!e || e->message != m || e->n >= d->rcpt_limit) {
                e = calloc(1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                e->message = m;
                if (d->tail)
                        d->tail->next = e;
                else
                        d->head = e;
                d->tail = e;
        }
        {
                size_t *n = reallocarray(e->rcpts, e->n + 1, sizeof(size_t));
                if (!n)
                        return -ENOMEM;
                e->rcpts = n;
                e->rcpts[e->n++] = rcpt;
        }
        m->rcpts[rcpt].scheduled = true;
        m->n_scheduled++;
        ring_add(q, d);
        return 0;
}

static void unschedule(QmgrMessage *m, size_t i) {
        if (m->rcpts[i].scheduled) {
                m->rcpts[i].scheduled = false;
                m->n_scheduled--;
        }
}

void qmgr_sched_forget_message(Qmgr *q, QmgrMessage *m) {
        QmgrDest *start = q->ring, *d = start;

        if (!d)
                return;
        do {
                QmgrEntry **p = &d->head, *last = NULL;
                while (*p) {
                        QmgrEntry *e = *p;
                        if (e->message == m) {
                                *p = e->next;
                                for (size_t k = 0; k < e->n; k++)
                                        unschedule(m, e->rcpts[k]);
                                free(e->rcpts);
                                free(e);
                        } else {
                                last = e;
                                p = &e->next;
                        }
                }
                d->tail = last;
                d = d->rr_next;
        } while (d && d != start);
}

/* Defers everything waiting for a dead destination. */
static void dest_defer_all(Qmgr *q, QmgrDest *d) {
        _cleanup_free_ char *text = strdup_printf("delivery temporarily suspended: %s",
                                                  strempty(d->dead_reason));
        while (d->head) {
                QmgrEntry *e = d->head;
                QmgrMessage *m = e->message;
                d->head = e->next;
                if (!d->head)
                        d->tail = NULL;
                for (size_t k = 0; k < e->n; k++) {
                        qmgr_record_result(m, e->rcpts[k], "deferred",
                                           d->dead_dsn ? d->dead_dsn : "4.4.1", "none",
                                           text ? text : "delivery temporarily suspended",
                                           now_realtime());
                        unschedule(m, e->rcpts[k]);
                }
                free(e->rcpts);
                free(e);
                if (m->n_scheduled == 0)
                        qmgr_message_done(m);
        }
        ring_remove(q, d);
}

void qmgr_sched_reset_dead(Qmgr *q, const char *site) {
        for (size_t b = 0; b < q->dests.n_buckets; b++)
                for (QmgrHashNode *n = q->dests.buckets[b]; n; n = n->next) {
                        QmgrDest *d = (QmgrDest *) n;
                        if (!d->dead)
                                continue;
                        if (site && !strcaseeq(d->nexthop, site))
                                continue;
                        d->dead = false;
                        d->window = MIN(q->settings.initial_concurrency, d->limit);
                }
}

static void sync_pass(Qmgr *q);

void qmgr_sched_done(Qmgr *q) {
        sync_pass(q);
        q->sync_event = sd_event_source_disable_unref(q->sync_event);
        for (size_t b = 0; b < q->dests.n_buckets; b++)
                while (q->dests.buckets[b])
                        dest_free(q, (QmgrDest *) q->dests.buckets[b]);
        qmgr_hash_done(&q->dests);
}

/* --- results -------------------------------------------------------------- */

/* Batched syncs. A reply from a delivery agent writes status bytes into
 * one queue file; syncing each file at once made the single event loop
 * wait for the disk once per reply (and once more at activation and
 * removal), which capped the whole queue at a few hundred messages per
 * second. Written files now wait in a list that an idle-priority event
 * source works off once nothing more urgent is pending, so a pass covers
 * every reply that arrived meanwhile, and a file removed before then needs
 * no sync at all: one fsync of active/ in the same pass makes its removal
 * durable. Nothing reads a status byte back from disk while qmgr runs; a
 * crash (of the machine: a killed qmgr loses no write) can only lose the
 * marks of the last pass, whose recipients are then delivered again, as
 * in Postfix, which never syncs its done marks. */
#define SYNC_BATCH_MAX 512u     /* sync at once beyond this, so that a busy loop cannot defer it for long */

static void sync_unlink(QmgrMessage *m) {
        Qmgr *q = m->qmgr;
        if (!m->sync_queued)
                return;
        if (m->sync_prev)
                m->sync_prev->sync_next = m->sync_next;
        else
                q->sync_head = m->sync_next;
        if (m->sync_next)
                m->sync_next->sync_prev = m->sync_prev;
        m->sync_prev = m->sync_next = NULL;
        m->sync_queued = false;
        q->n_sync--;
}

int qmgr_message_sync_now(QmgrMessage *m) {
        if (!m->sync_queued)
                return 0;
        sync_unlink(m);
        if (m->fd >= 0 && fdatasync(m->fd) < 0)
                return log_error_errno(errno, "%s: cannot sync the queue file: %m", m->id);
        return 0;
}

static void sync_pass(Qmgr *q) {
        while (q->sync_head)
                (void) qmgr_message_sync_now(q->sync_head);
        if (q->sync_active_dir) {
                q->sync_active_dir = false;
                if (fsync(q->active_fd) < 0)
                        log_error_errno(errno, "Cannot sync the active queue directory: %m");
        }
}

static int on_sync(sd_event_source *s, void *userdata) {
        sync_pass(userdata);
        return 0;
}

/* Runs a sync pass once the loop has nothing more urgent to do; at once
 * when the list is long or the event source cannot be made. */
static void sync_schedule(Qmgr *q) {
        int r = 0;
        if (!q->sync_event) {
                r = sd_event_add_defer(q->event, &q->sync_event, on_sync, q);
                if (r >= 0)
                        r = sd_event_source_set_priority(q->sync_event, SD_EVENT_PRIORITY_IDLE);
                if (r < 0)
                        q->sync_event = sd_event_source_disable_unref(q->sync_event);
        }
        if (r < 0 || q->n_sync >= SYNC_BATCH_MAX)
                sync_pass(q);
        else
                (void) sd_event_source_set_enabled(q->sync_event, SD_EVENT_ONESHOT);
}

void qmgr_message_sync_drop(QmgrMessage *m) {
        sync_unlink(m);
        m->qmgr->sync_active_dir = true;
        sync_schedule(m->qmgr);
}

int qmgr_message_sync(QmgrMessage *m) {
        Qmgr *q = m->qmgr;

        if (m->sync_queued)
                return 0;
        m->sync_queued = true;
        m->sync_prev = NULL;
        m->sync_next = q->sync_head;
        if (q->sync_head)
                q->sync_head->sync_prev = m;
        q->sync_head = m;
        q->n_sync++;
        sync_schedule(q);
        return 0;
}

/* Whether a relay name is one of the final delivery agents (success DSNs
 * say "delivered"), as opposed to a remote server, which took NOTIFY itself
 * when it reports "sent" (it announced DSN); one that did not makes the
 * agent report "relayed" instead. */
static bool relay_is_final(const char *relay) {
        return streq(relay, "local") || streq(relay, "virtual") || streq(relay, "none");
}

void qmgr_record_result(QmgrMessage *m, size_t i, const char *status, const char *dsn,
                        const char *relay, const char *text, uint64_t dispatch_usec) {
        qmgr_record_result_timed(m, i, status, dsn, relay, text, dispatch_usec, 0, NULL);
}

/* "TLSv1.3 TLS_AES_256_GCM_SHA384 Verified" from the agent as
 * "TLSv1.3/TLS_AES_256_GCM_SHA384/Verified": one token, so that the log
 * line still splits at ", "; escaped and capped like any agent text.
 * NULL for no TLS (or no memory: the line goes out without it). */
static char *tls_log_value(const char *tls) {
        char *v;

        if (isempty(tls))
                return NULL;
        v = str_escape_log(tls, 200);
        for (char *p = v; p && *p; p++)
                if (*p == ' ' || *p == ',')
                        *p = '/';
        return v;
}

void qmgr_record_result_timed(QmgrMessage *m, size_t i, const char *status, const char *dsn,
                              const char *relay, const char *text, uint64_t dispatch_usec,
                              uint64_t setup_usec, const char *tls) {
        QueueRecipient *rc = &m->env.rcpts[i];
        QmgrRcpt *st = &m->rcpts[i];
        uint64_t now = now_realtime();
        uint64_t arrival = (uint64_t) m->env.arrival.tv_sec * 1000000u +
                           (uint64_t) m->env.arrival.tv_usec;
        char delay[32], a[32], b[32], c[32], d[32], soft[16];
        _cleanup_free_ char *esc = str_escape_log(strempty(text), 1000);
        _cleanup_free_ char *orig = NULL, *tls_v = tls_log_value(tls), *tls_text = NULL;
        const char *msgid;
        int notice = -1;

        if (rc->status != QUEUE_RCPT_PENDING || st->notifying || st->notice)
                return;
        if (streq(status, "bounced") && m->qmgr->settings.soft_bounce) {
                status = "deferred";
                if (dsn && dsn[0] == '5') {
                        snprintf(soft, sizeof(soft), "4%s", dsn + 1);
                        dsn = soft;
                }
        }
        if (streq(status, "relayed")) {
                /* Logged and recorded as sent, as Postfix does. */
                status = "sent";
                msgid = MSGID_DELIVERED;
                notice = rc->notify & QUEUE_NOTIFY_SUCCESS ? QMGR_NOTICE_RELAYED : -1;
        } else if (streq(status, "sent")) {
                msgid = MSGID_DELIVERED;
                notice = (rc->notify & QUEUE_NOTIFY_SUCCESS) && relay_is_final(relay)
                                 ? QMGR_NOTICE_SUCCESS
                                 : -1;
        } else if (streq(status, "bounced")) {
                msgid = MSGID_BOUNCED;
                notice = QMGR_NOTICE_FAILURE;
        } else
                msgid = MSGID_DEFERRED;
        free(st->dsn);
        free(st->reason);
        free(st->relay);
        st->dsn = strdup(strempty(dsn));
        st->reason = strdup(esc ? esc : "");
        st->relay = strdup(strempty(relay));
        st->notice_failed = false;
        if (streq(status, "sent") && notice < 0) {
                int r = queue_file_put_status(m->fd, rc, QUEUE_RCPT_DELIVERED);
                if (r < 0)
                        /* Not recorded: the recipient stays pending and may
                         * be tried again, which is better than losing it. */
                        log_error_errno(r, "%s: cannot record the status of <%s>: %m", m->id,
                                        rc->address);
                else {
                        rc->status = QUEUE_RCPT_DELIVERED;
                        (void) qmgr_message_sync(m);
                }
        }
        qmgr_format_delay((double) (now - MIN(arrival, now)) / 1e6, delay);
        qmgr_format_delay((double) (m->active_usec - MIN(arrival, m->active_usec)) / 1e6, a);
        qmgr_format_delay((double) (dispatch_usec - MIN(m->active_usec, dispatch_usec)) / 1e6, b);
        /* c: the agent's connection set-up (DNS, connect, greeting, HELO,
         * TLS), part of the time since the dispatch; d: the rest. */
        setup_usec = MIN(setup_usec, now - MIN(dispatch_usec, now));
        qmgr_format_delay((double) setup_usec / 1e6, c);
        qmgr_format_delay((double) (now - MIN(dispatch_usec, now) - setup_usec) / 1e6, d);
        if (!streq(queue_rcpt_original(rc), rc->address))
                orig = strdup_printf(", orig_to=<%s>", queue_rcpt_original(rc));
        /* After dsn=, before status=: parsers of Postfix's line that take
         * "status=" as the last field keep working. */
        if (tls_v)
                tls_text = strdup_printf(", tls=%s", tls_v);
        log_mail(LOG_INFO, msgid, m->id,
                 LOG_FIELDS("POSTERN_RECIPIENT", rc->address, "POSTERN_ORIG_RECIPIENT",
                            rc->canon ? rc->canon : rc->orig,
                            "POSTERN_SENDER", m->env.sender, "POSTERN_RELAY", relay,
                            "POSTERN_DSN", dsn, "POSTERN_STATUS", status, "POSTERN_TLS", tls_v),
                 "to=<%s>%s, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s%s, status=%s (%s)",
                 rc->address, strempty(orig), relay, delay, a, b, c, d, strempty(dsn),
                 strempty(tls_text), status, strempty(esc));
        /* Bounced, or delivered with a success notice: done on disk only
         * once the bounce service has queued the notice (qmgr-bounce.c). */
        if (notice >= 0)
                qmgr_bounce_want(m, i, (QmgrNotice) notice);
}

/* --- agents --------------------------------------------------------------- */

static int agent_connect(Qmgr *q, QmgrAgent *a) {
        _cleanup_free_ char *address = NULL;
        sd_bus *bus = NULL;
        int r;

        if (a->bus && sd_bus_is_open(a->bus) > 0)
                return 0;
        a->bus = sd_bus_flush_close_unref(a->bus);
        if (now_monotonic() < a->retry_after)
                return -ECONNREFUSED;
        address = strdup_printf("unix:path=%s", a->path);
        if (!address)
                return -ENOMEM;
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        /* Deliver() carries the queue file as an fd. */
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_attach_event(bus, q->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                sd_bus_flush_close_unref(bus);
                /* Do not hammer an agent that is not there. */
                a->retry_after = now_monotonic() + 1000000u;
                return r;
        }
        a->bus = bus;
        return 0;
}

static void job_free(QmgrJob *j) {
        sd_bus_slot_unref(j->slot);
        free(j->rcpts);
        free(j);
}

static bool dsn_valid(const char *s) {
        /* X.Y.Z: class 2, 4 or 5, then 1-3 and 1-3 digits (RFC 3463). */
        int cls, consumed = 0;
        unsigned sub, det;
        return sscanf(s, "%1d.%3u.%3u%n", &cls, &sub, &det, &consumed) == 3 && !s[consumed] &&
               (cls == 2 || cls == 4 || cls == 5);
}

/* Applies the results of a finished job; reply is NULL when the call could
 * not be made (error says why). */
static void job_finish(QmgrJob *j, sd_bus_message *reply, const char *error) {
        Qmgr *q = j->qmgr;
        QmgrDest *d = j->dest;
        QmgrMessage *m = j->message;
        bool *seen = calloc(j->n ? j->n : 1, sizeof(bool));
        const char *relay = "none", *tls = NULL;
        uint64_t setup_usec = 0;
        unsigned n_sent = 0, n_deferred = 0;
        _cleanup_free_ char *first_reason = NULL, *first_dsn = NULL;
        int r = 0;

        if (reply && !error) {
                r = sd_bus_message_enter_container(reply, 'a', "(usss)");
                while (r >= 0) {
                        uint32_t idx;
                        const char *status, *dsn, *text;
                        size_t k;
                        r = sd_bus_message_read(reply, "(usss)", &idx, &status, &dsn, &text);
                        if (r <= 0)
                                break;
                        for (k = 0; k < j->n; k++)
                                if (j->rcpts[k] == idx && seen && !seen[k])
                                        break;
                        if (k == j->n || !dsn_valid(dsn) ||
                            !(streq(status, "sent") || streq(status, "relayed") ||
                              streq(status, "deferred") || streq(status, "bounced"))) {
                                log_warning("%s: delivery agent %s sent an invalid result for "
                                            "recipient %u; ignoring it", m->id, d->agent->name,
                                            idx);
                                continue;
                        }
                        /* Recorded below, once the relay (after the array) is known. */
                        seen[k] = true;
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_read(reply, "s", &relay);
                /* Agents that time their connection set-up send it last. */
                if (r >= 0 && sd_bus_message_at_end(reply, false) == 0)
                        r = sd_bus_message_read(reply, "t", &setup_usec);
                /* ... and deliver-remote its TLS facts after that. */
                if (r >= 0 && sd_bus_message_at_end(reply, false) == 0)
                        r = sd_bus_message_read(reply, "s", &tls);
                if (r < 0) {
                        error = "invalid reply from the delivery agent";
                        relay = "none";
                        tls = NULL;
                }
        }
        /* Second pass: with the relay known, record every result. */
        if (reply && !error) {
                (void) sd_bus_message_rewind(reply, true);
                if (sd_bus_message_enter_container(reply, 'a', "(usss)") >= 0) {
                        uint32_t idx;
                        const char *status, *dsn, *text;
                        while (sd_bus_message_read(reply, "(usss)", &idx, &status, &dsn, &text) >
                               0) {
                                size_t k;
                                for (k = 0; k < j->n; k++)
                                        if (j->rcpts[k] == idx)
                                                break;
                                if (k == j->n || !seen || !seen[k] || !dsn_valid(dsn))
                                        continue;
                                if (m->env.rcpts[idx].status != QUEUE_RCPT_PENDING)
                                        continue;
                                /* The class digit decides, whatever the word says. */
                                bool sent = streq(status, "sent") || streq(status, "relayed");
                                if (sent && dsn[0] == '2')
                                        n_sent++;
                                else if (streq(status, "deferred") || dsn[0] == '4') {
                                        status = "deferred";
                                        n_deferred++;
                                        if (!first_reason) {
                                                first_reason = strdup(text);
                                                first_dsn = strdup(dsn);
                                        }
                                } else if (!sent)
                                        status = "bounced";
                                qmgr_record_result_timed(m, idx, status, dsn, relay, text,
                                                         j->dispatch_usec, setup_usec, tls);
                        }
                }
        }
        for (size_t k = 0; k < j->n; k++)
                if (!seen || !seen[k] || error) {
                        if (m->env.rcpts[j->rcpts[k]].status != QUEUE_RCPT_PENDING)
                                continue;
                        qmgr_record_result(m, j->rcpts[k], "deferred", "4.3.0", relay,
                                           error ? error : "no result from the delivery agent",
                                           j->dispatch_usec);
                        n_deferred++;
                        if (!first_reason) {
                                first_reason = strdup(error ? error : "no result");
                                first_dsn = strdup("4.3.0");
                        }
                }
        free(seen);

        /* Concurrency feedback. */
        if (n_sent > 0) {
                if (d->window < d->limit)
                        d->window++;
        } else if (n_deferred > 0 && n_deferred == j->n) {
                if (d->window > 0)
                        d->window--;
                if (d->window == 0) {
                        d->dead = true;
                        d->dead_until = now_monotonic() + q->settings.min_backoff_usec;
                        free(d->dead_reason);
                        free(d->dead_dsn);
                        d->dead_reason = steal_ptr(first_reason);
                        d->dead_dsn = steal_ptr(first_dsn);
                        log_info("%s: destination %s (%s) is not reachable; deferring its mail",
                                 m->id, d->nexthop, d->transport);
                }
        }

        for (size_t k = 0; k < j->n; k++)
                unschedule(m, j->rcpts[k]);
        m->n_jobs--;
        d->in_flight--;
        d->agent->in_flight--;
        q->jobs_in_flight--;
        job_free(j);
        if (d->dead && d->head)
                dest_defer_all(q, d);
        if (!d->in_ring)
                dest_maybe_free(q, d);
        if (m->n_scheduled == 0)
                qmgr_message_done(m);
        qmgr_sched_kick(q);
        qmgr_update_idle(q);
}

static int on_deliver_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        QmgrJob *j = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        _cleanup_free_ char *text = NULL;

        if (e) {
                /* sd-bus answers NoReply both for a timeout and for a
                 * connection that went away (the agent crashed). */
                if (sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY) &&
                    sd_bus_is_open(sd_bus_message_get_bus(reply)) <= 0)
                        text = strdup("lost connection with the delivery agent");
                else if (sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY))
                        text = strdup("delivery agent timed out");
                else
                        text = strdup_printf("delivery agent failure: %s",
                                             e->message ? e->message : e->name);
                job_finish(j, NULL, text ? text : "delivery agent failure");
                return 0;
        }
        job_finish(j, reply, NULL);
        return 0;
}

static int job_start(Qmgr *q, QmgrJob *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        QmgrMessage *m = j->message;
        QmgrDest *d = j->dest;
        int r;

        r = agent_connect(q, d->agent);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(d->agent->bus, &msg, NULL, DELIVERY_BUS_OBJECT,
                                           DELIVERY_BUS_INTERFACE, "Deliver");
        if (r >= 0)
                r = sd_bus_message_append(msg, "hsss", m->fd, m->id, d->transport, d->nexthop);
        if (r >= 0)
                r = sd_bus_message_open_container(msg, 'a', "(uss)");
        for (size_t k = 0; r >= 0 && k < j->n; k++) {
                QueueRecipient *rc = &m->env.rcpts[j->rcpts[k]];
                r = sd_bus_message_append(msg, "(uss)", (uint32_t) j->rcpts[k], rc->address,
                                          queue_rcpt_original(rc));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(msg);
        if (r >= 0)
                r = sd_bus_call_async(d->agent->bus, &j->slot, msg, on_deliver_reply, j,
                                      DELIVERY_TIMEOUT_USEC);
        if (r < 0)
                /* A connection that went away is made again next time. */
                d->agent->bus = sd_bus_flush_close_unref(d->agent->bus);
        return r;
}

/* Starts one delivery for d. Returns true when something changed. */
static bool dispatch_one(Qmgr *q, QmgrDest *d) {
        QmgrEntry *e = d->head;
        QmgrMessage *m;
        QmgrJob *j;
        size_t n;
        int r;

        if (!e)
                return false;
        if (dest_is_dead(d)) {
                dest_defer_all(q, d);
                return true;
        }
        if (d->in_flight >= d->window || d->agent->in_flight >= q->settings.process_limit)
                return false;
        m = e->message;
        if (!qmgr_message_present(m)) {
                /* Its entries are gone now; free it once nothing is in flight. */
                if (m->n_jobs == 0 && m->n_scheduled == 0)
                        qmgr_message_done(m);
                return true;
        }
        n = MIN(e->n, d->rcpt_limit);
        j = calloc(1, sizeof(*j));
        if (j)
                j->rcpts = calloc(n, sizeof(size_t));
        if (!j || !j->rcpts) {
                if (j)
                        free(j);
                log_oom();
                return false;
        }
        j->qmgr = q;
        j->dest = d;
        j->message = m;
        j->n = n;
        memcpy(j->rcpts, e->rcpts, n * sizeof(size_t));
        memmove(e->rcpts, e->rcpts + n, (e->n - n) * sizeof(size_t));
        e->n -= n;
        if (e->n == 0) {
                d->head = e->next;
                if (!d->head)
                        d->tail = NULL;
                free(e->rcpts);
                free(e);
        }
        j->dispatch_usec = now_realtime();
        m->n_jobs++;
        d->in_flight++;
        d->agent->in_flight++;
        q->jobs_in_flight++;
        r = job_start(q, j);
        if (r < 0) {
                _cleanup_free_ char *text = strdup_printf("delivery agent %s unavailable: %s",
                                                          d->agent->name, strerror(-r));
                job_finish(j, NULL, text ? text : "delivery agent unavailable");
        }
        return true;
}

static int on_sched(sd_event_source *s, void *userdata) {
        Qmgr *q = userdata;
        unsigned idle_streak = 0, n_ring = 0;

        if (q->ring) {
                QmgrDest *d = q->ring;
                do {
                        n_ring++;
                        d = d->rr_next;
                } while (d != q->ring);
        }
        while (q->ring && idle_streak < n_ring) {
                QmgrDest *d = q->ring;
                q->ring = d->rr_next;           /* the next one is first next time */
                if (dispatch_one(q, d))
                        idle_streak = 0;
                else
                        idle_streak++;
                if (!d->head && d->in_ring) {
                        ring_remove(q, d);
                        n_ring--;
                        dest_maybe_free(q, d);
                }
        }
        qmgr_update_idle(q);
        return 0;
}

void qmgr_sched_kick(Qmgr *q) {
        if (!q->sched_event) {
                if (sd_event_add_defer(q->event, &q->sched_event, on_sched, q) < 0)
                        return;
        }
        (void) sd_event_source_set_enabled(q->sched_event, SD_EVENT_ONESHOT);
}
