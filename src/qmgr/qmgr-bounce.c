/* qmgr-bounce.c: the call site of the bounce service. When recipients
 * bounce (or expire), or a delay warning is due, the queue manager asks
 * postern-bounce over org.postern.Bounce1 (see bus-names.h) to queue a
 * delivery status notification:
 *
 *   Notify(h queue_file, s queue_id, s kind "failure"|"delay",
 *          a(ussss) recipients: (index, address, original address, dsn, text),
 *          s relay, t last_attempt_usec) -> (s report_queue_id)
 *
 * The call is not awaited yet: the recipients' status bytes already say
 * bounced when it is made, and a notification that could not be queued is
 * logged (TODO(bounce issue): mark bounced only after the reply). Until the
 * bounce service exists (its socket is missing) the event is only logged,
 * which is what the queue manager of this release does with bounces: no
 * message waits for a notification that nobody sends. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-names.h"
#include "log.h"
#include "qmgr.h"

typedef struct BounceCall {
        sd_bus *bus;
        char id[QUEUE_ID_SIZE];
} BounceCall;

static int on_bounce_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        BounceCall *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        if (e)
                log_warning("%s: the bounce service did not take the notification: %s", c->id,
                            e->message ? e->message : e->name);
        /* sd-bus keeps the connection alive until this callback returns. */
        sd_bus_unref(c->bus);
        free(c);
        return 0;
}

void qmgr_bounce_notify(Qmgr *q, QmgrMessage *m, QmgrNotice kind, const size_t *idx, size_t n,
                        const char *dsn, const char *text, const char *relay) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        _cleanup_free_ char *path = NULL, *address = NULL;
        const char *what = kind == QMGR_NOTICE_BOUNCE ? "failure" : "delay";
        sd_bus *bus = NULL;
        BounceCall *c = NULL;
        int r;

        /* A failed report (null sender) becomes a double bounce in the
         * bounce service; delay warnings about reports are never sent. */
        if (n == 0 || (!m->env.sender[0] && kind == QMGR_NOTICE_DELAY))
                return;
        path = strdup_printf("%s/%s", postern_runtime_dir(), BOUNCE_BUS_SOCKET);
        if (!path)
                return;
        if (access(path, F_OK) < 0) {
                log_mail(LOG_INFO, kind == QMGR_NOTICE_BOUNCE ? MSGID_BOUNCED : MSGID_DEFERRED,
                         m->id, LOG_FIELDS("POSTERN_SENDER", m->env.sender),
                         "sender %s notification not sent: no bounce service (%s missing)",
                         kind == QMGR_NOTICE_BOUNCE ? "non-delivery" : "delay", path);
                return;
        }
        address = strdup_printf("unix:path=%s", path);
        if (!address)
                return;
        /* One short connection per notification: bounces are rare. */
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_attach_event(bus, q->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_message_new_method_call(bus, &msg, NULL, BOUNCE_BUS_OBJECT,
                                                   BOUNCE_BUS_INTERFACE, "Notify");
        if (r >= 0)
                r = sd_bus_message_append(msg, "hss", m->fd, m->id, what);
        if (r >= 0)
                r = sd_bus_message_open_container(msg, 'a', "(ussss)");
        for (size_t k = 0; r >= 0 && k < n; k++) {
                QueueRecipient *rc = &m->env.rcpts[idx[k]];
                QmgrRcpt *st = &m->rcpts[idx[k]];
                r = sd_bus_message_append(msg, "(ussss)", (uint32_t) idx[k], rc->address,
                                          rc->orig ? rc->orig : rc->address,
                                          dsn ? dsn : st->dsn ? st->dsn : "4.0.0",
                                          text ? text : strempty(st->reason));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(msg);
        if (r >= 0)
                r = sd_bus_message_append(msg, "st", relay && !streq(relay, "none") ? relay : "",
                                          now_realtime());
        if (r >= 0 && !(c = calloc(1, sizeof(*c))))
                r = -ENOMEM;
        if (r >= 0) {
                c->bus = bus;
                memcpy(c->id, m->id, QUEUE_ID_SIZE);
                r = sd_bus_call_async(bus, NULL, msg, on_bounce_reply, c, 0);
        }
        if (r < 0) {
                log_warning("%s: cannot ask the bounce service for a %s notification: %s",
                            m->id, what, strerror(-r));
                free(c);
                sd_bus_flush_close_unref(bus);
        }
        /* Otherwise the reply callback drops the connection. */
}
