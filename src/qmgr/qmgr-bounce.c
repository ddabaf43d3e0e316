/* qmgr-bounce.c: the call site of the bounce service. When recipients
 * bounce (or expire), are delivered with NOTIFY=SUCCESS, or a delay warning
 * is due, the queue manager asks postern-bounce over org.postern.Bounce1
 * (see bus-names.h) to queue a delivery status notification:
 *
 *   Notify(h queue_file, s queue_id, s kind "failure"|"delay"|"success"|"relayed",
 *          a(usssss) recipients: (index, address, original address, dsn, text, relay),
 *          t last_attempt_usec) -> (s report_queue_id)
 *
 * Results first only note which notice a recipient needs
 * (qmgr_bounce_want()); qmgr_message_done() sends them once nothing else
 * of the message is in flight, one call per kind with each recipient's
 * own relay (its Remote-MTA), so that the sender gets one report per
 * attempt for the whole message, as from Postfix. While a call is in flight the recipients are "bouncing" in
 * memory only: on disk they stay pending, and the message stays in the
 * active queue. The reply (also "" when no report was due) makes them
 * bounced or delivered on disk; a failed call (the service is down, or
 * could not write the report) defers them, so that the next attempt
 * delivers or bounces them again and no notice is ever lost, as Postfix
 * does when its bounce daemon fails.
 *
 * A setup without a bounce service at all (its socket does not exist)
 * keeps working: the event is logged and the recipients are marked done at
 * once, without a notice. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus-names.h"
#include "log.h"
#include "qmgr.h"

/* Writing a report is quick; a bounce service that takes longer is stuck. */
#define NOTICE_TIMEOUT_USEC (300ull * 1000000u)

typedef struct QmgrNoticeCall {
        Qmgr *qmgr;
        QmgrMessage *message;
        sd_bus *bus;
        sd_bus_slot *slot;
        QmgrNotice kind;
        size_t *idx;
        size_t n;
        struct QmgrNoticeCall *prev, *next;
} QmgrNoticeCall;

static const char *const kind_name[] = {
        [QMGR_NOTICE_FAILURE] = "failure",
        [QMGR_NOTICE_DELAY] = "delay",
        [QMGR_NOTICE_SUCCESS] = "success",
        [QMGR_NOTICE_RELAYED] = "relayed",
};

static const char *kind_text(QmgrNotice kind) {
        switch (kind) {
        case QMGR_NOTICE_FAILURE:
                return "non-delivery";
        case QMGR_NOTICE_DELAY:
                return "delay";
        default:
                return "delivery status";
        }
}

void qmgr_bounce_want(QmgrMessage *m, size_t i, QmgrNotice kind) {
        m->rcpts[i].notice = (int) kind + 1;
}

static void call_free(QmgrNoticeCall *c) {
        Qmgr *q = c->qmgr;
        if (c->prev)
                c->prev->next = c->next;
        else if (q->notices == c)
                q->notices = c->next;
        if (c->next)
                c->next->prev = c->prev;
        sd_bus_slot_unref(c->slot);
        sd_bus_flush_close_unref(c->bus);
        free(c->idx);
        free(c);
}

void qmgr_bounce_done(Qmgr *q) {
        while (q->notices)
                call_free(q->notices);
}

/* The notice is queued (or not due): the recipients are done. Status bytes
 * are written, not synced; the caller syncs. */
static void mark_done(QmgrMessage *m, QmgrNotice kind, const size_t *idx, size_t n) {
        char byte = kind == QMGR_NOTICE_FAILURE ? QUEUE_RCPT_BOUNCED : QUEUE_RCPT_DELIVERED;
        int r;

        if (kind == QMGR_NOTICE_DELAY) {
                m->env.flags |= QUEUE_FLAG_DELAY_WARNED;
                r = queue_file_set_flags(m->fd, m->env.flags);
                if (r < 0)
                        log_warning("%s: cannot record the delay warning: %s", m->id,
                                    strerror(-r));
                return;
        }
        for (size_t k = 0; k < n; k++) {
                QueueRecipient *rc = &m->env.rcpts[idx[k]];
                if (rc->status != QUEUE_RCPT_PENDING)
                        continue;
                r = queue_file_put_status(m->fd, rc, byte);
                if (r < 0)
                        /* Stays pending: tried again, never lost. */
                        log_error_errno(r, "%s: cannot record the status of <%s>: %m", m->id,
                                        rc->address);
                else
                        rc->status = byte;
        }
}

/* The notice could not be queued: defer the recipients (their delivery or
 * bounce is repeated at the next attempt, and with it the notice). */
static void mark_failed(QmgrMessage *m, QmgrNotice kind, const size_t *idx, size_t n,
                        const char *why) {
        _cleanup_free_ char *esc = str_escape_log(strempty(why), 500);

        if (kind == QMGR_NOTICE_DELAY) {
                m->delay_notice_failed = true;
                log_warning("%s: cannot queue the delay notification: %s; trying again later",
                            m->id, strempty(esc));
                return;
        }
        for (size_t k = 0; k < n; k++) {
                QmgrRcpt *st = &m->rcpts[idx[k]];
                QueueRecipient *rc = &m->env.rcpts[idx[k]];
                st->notice_failed = true;
                free(st->dsn);
                free(st->reason);
                st->dsn = strdup("4.3.0");
                st->reason = strdup_printf("cannot queue the %s notification: %s",
                                           kind_text(kind), strempty(esc));
                log_mail(LOG_WARNING, MSGID_DEFERRED, m->id,
                         LOG_FIELDS("POSTERN_RECIPIENT", rc->address, "POSTERN_DSN", "4.3.0",
                                    "POSTERN_STATUS", "deferred"),
                         "to=<%s>, relay=none, dsn=4.3.0, status=deferred (bounce or trace "
                         "service failure: %s)", rc->address, strempty(esc));
        }
}

static void call_finished(QmgrNoticeCall *c, const char *error, const char *report_id) {
        QmgrMessage *m = c->message;

        for (size_t k = 0; k < c->n; k++)
                m->rcpts[c->idx[k]].notifying = false;
        if (error)
                mark_failed(m, c->kind, c->idx, c->n, error);
        else {
                if (!isempty(report_id))
                        log_debug("%s: %s notification queued as %s", m->id, kind_name[c->kind],
                                  report_id);
                mark_done(m, c->kind, c->idx, c->n);
                (void) qmgr_message_sync(m);
        }
        m->n_notices--;
        call_free(c);
        if (m->n_notices == 0 && m->n_scheduled == 0 && m->n_jobs == 0)
                qmgr_message_done(m);
}

static int on_notify_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        QmgrNoticeCall *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *id = NULL;

        if (e) {
                call_finished(c, e->message ? e->message : e->name, NULL);
                return 0;
        }
        if (sd_bus_message_read(reply, "s", &id) < 0) {
                call_finished(c, "invalid reply from the bounce service", NULL);
                return 0;
        }
        call_finished(c, NULL, id);
        return 0;
}

/* The relay a report names as Remote-MTA: "host[addr]:port" of a remote
 * server, "" for the local agents ("local", "virtual", "none"). */
static const char *remote_relay(const char *relay) {
        return relay && strchr(relay, '[') ? relay : "";
}

/* Starts one Notify call. Returns 1 when it is in flight, 0 when it was
 * settled at once (no bounce service, nothing due, or a failure). */
static int notify_start(Qmgr *q, QmgrMessage *m, QmgrNotice kind, size_t *idx, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        _cleanup_free_ char *path = NULL, *address = NULL;
        QmgrNoticeCall *c = NULL;
        sd_bus *bus = NULL;
        int r;

        /* No delay warnings about reports; success notices about a report
         * would go nowhere (RFC 3461 5.2). */
        if (!m->env.sender[0] && kind != QMGR_NOTICE_FAILURE) {
                mark_done(m, kind, idx, n);
                return 0;
        }
        path = strdup_printf("%s/%s", postern_runtime_dir(), BOUNCE_BUS_SOCKET);
        if (!path) {
                mark_failed(m, kind, idx, n, strerror(ENOMEM));
                return 0;
        }
        if (access(path, F_OK) < 0) {
                log_mail(LOG_INFO, kind == QMGR_NOTICE_FAILURE ? MSGID_BOUNCED : MSGID_DEFERRED,
                         m->id, LOG_FIELDS("POSTERN_SENDER", m->env.sender),
                         "sender %s notification not sent: no bounce service (%s missing)",
                         kind_text(kind), path);
                mark_done(m, kind, idx, n);
                return 0;
        }
        address = strdup_printf("unix:path=%s", path);
        if (!address) {
                mark_failed(m, kind, idx, n, strerror(ENOMEM));
                return 0;
        }
        /* One short connection per notification: notices are rare. The
         * queue file travels as an fd, which needs fd passing negotiated. */
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_attach_event(bus, q->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_message_new_method_call(bus, &msg, NULL, BOUNCE_BUS_OBJECT,
                                                   BOUNCE_BUS_INTERFACE, "Notify");
        if (r >= 0)
                r = sd_bus_message_append(msg, "hss", m->fd, m->id, kind_name[kind]);
        if (r >= 0)
                r = sd_bus_message_open_container(msg, 'a', "(usssss)");
        for (size_t k = 0; r >= 0 && k < n; k++) {
                QueueRecipient *rc = &m->env.rcpts[idx[k]];
                QmgrRcpt *st = &m->rcpts[idx[k]];
                const char *dsn = st->dsn ? st->dsn
                                  : kind == QMGR_NOTICE_FAILURE ? "5.0.0"
                                  : kind == QMGR_NOTICE_DELAY   ? "4.0.0"
                                                                : "2.0.0";
                r = sd_bus_message_append(msg, "(usssss)", (uint32_t) idx[k], rc->address,
                                          queue_rcpt_original(rc), dsn,
                                          strempty(st->reason), remote_relay(st->relay));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(msg);
        if (r >= 0)
                r = sd_bus_message_append(msg, "t", now_realtime());
        if (r >= 0 && !(c = calloc(1, sizeof(*c))))
                r = -ENOMEM;
        if (r >= 0 && !(c->idx = calloc(n, sizeof(size_t))))
                r = -ENOMEM;
        if (r >= 0) {
                c->qmgr = q;
                c->message = m;
                c->bus = bus;
                c->kind = kind;
                c->n = n;
                memcpy(c->idx, idx, n * sizeof(size_t));
                r = sd_bus_call_async(bus, &c->slot, msg, on_notify_reply, c, NOTICE_TIMEOUT_USEC);
        }
        if (r < 0) {
                if (c)
                        free(c->idx);
                free(c);
                sd_bus_flush_close_unref(bus);
                mark_failed(m, kind, idx, n, strerror(-r));
                return 0;
        }
        c->next = q->notices;
        if (c->next)
                c->next->prev = c;
        q->notices = c;
        for (size_t k = 0; k < n; k++)
                m->rcpts[idx[k]].notifying = true;
        m->n_notices++;
        return 1;
}

unsigned qmgr_bounce_flush(QmgrMessage *m) {
        _cleanup_free_ size_t *idx = NULL;
        unsigned started = 0;

        for (size_t i = 0; i < m->env.n_rcpts; i++) {
                QmgrRcpt *first = &m->rcpts[i];
                QmgrNotice kind;
                size_t n = 0;

                if (!first->notice)
                        continue;
                if (!idx && !(idx = calloc(m->env.n_rcpts, sizeof(size_t)))) {
                        log_oom();
                        return started;
                }
                kind = (QmgrNotice) (first->notice - 1);
                /* One report per kind for the whole message, as Postfix's
                 * bounce daemon writes one per message; each recipient
                 * carries its own Remote-MTA. */
                for (size_t j = i; j < m->env.n_rcpts; j++)
                        if (m->rcpts[j].notice == first->notice)
                                idx[n++] = j;
                for (size_t k = 0; k < n; k++)
                        m->rcpts[idx[k]].notice = 0;
                if (notify_start(m->qmgr, m, kind, idx, n) > 0)
                        started++;
        }
        return started;
}
