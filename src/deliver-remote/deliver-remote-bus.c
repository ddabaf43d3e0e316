/* deliver-remote-bus.c: org.postern.Delivery1 on postern-deliver-remote's
 * socket. Each accepted connection becomes a peer-to-peer sd-bus server
 * connection; Deliver() starts a DeliveryJob and the reply goes out when the
 * job has a result for every recipient, so one connection may have many
 * calls in flight. Only root and postern-deliver-remote's own user may call.
 * Errors map to bus errors in one place, bus_error_from_errno(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus-names.h"
#include "deliver-remote.h"
#include "log.h"

struct BusConn {
        BusConn *next, *prev;
        Deliver *d;
        sd_bus *bus;
        sd_bus_slot *disconnect_slot;
};

static int bus_error_from_errno(sd_bus_error *e, int r, const char *text) {
        if (r == -EINVAL)
                return sd_bus_error_set(e, SD_BUS_ERROR_INVALID_ARGS, text ? text : "Invalid arguments");
        if (r == -EPERM || r == -EACCES)
                return sd_bus_error_set(e, SD_BUS_ERROR_ACCESS_DENIED, "Access denied");
        if (r == -ENOMEM)
                return sd_bus_error_set(e, SD_BUS_ERROR_NO_MEMORY, "Out of memory");
        return sd_bus_error_set_errnof(e, -r, "%s", text ? text : "Delivery failed to start");
}

static int method_deliver(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        BusConn *c = userdata;
        _cleanup_free_ char *err = NULL;
        const char *qid, *transport, *nexthop;
        int fd, r;

        r = sd_bus_message_read(m, "hsss", &fd, &qid, &transport, &nexthop);
        if (r < 0)
                return r;
        r = delivery_job_start(c->d, m, fd, qid, transport, nexthop, &err);
        if (r < 0)
                return bus_error_from_errno(ret_error, r, err);
        /* The reply follows when the job finishes. */
        return 1;
}

static const sd_bus_vtable delivery_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Deliver",
                SD_BUS_ARGS("h", queue_file, "s", queue_id, "s", transport, "s", nexthop,
                            "a(uss)", recipients),
                SD_BUS_RESULT("a(usss)", results, "s", relay, "t", setup_usec, "s", tls),
                method_deliver, 0),
        SD_BUS_VTABLE_END,
};

void deliver_bus_reply(DeliveryJob *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        static const char * const status[] = {
                [RCPT_PENDING] = "deferred",
                [RCPT_SENT] = "sent",
                [RCPT_RELAYED] = "relayed",
                [RCPT_DEFERRED] = "deferred",
                [RCPT_BOUNCED] = "bounced",
        };
        int r;

        if (!j->call)
                return;
        r = sd_bus_message_new_method_return(j->call, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(usss)");
        for (size_t i = 0; r >= 0 && i < j->n_rcpts; i++) {
                DeliveryRcpt *rc = &j->rcpts[i];
                r = sd_bus_message_append(reply, "(usss)", rc->index, status[rc->state],
                                          rc->dsn[0] ? rc->dsn : "4.0.0", strempty(rc->diag));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", strempty(j->relay));
        if (r >= 0)
                r = sd_bus_message_append(reply, "t", j->setup_usec);
        /* "TLSv1.3 TLS_AES_256_GCM_SHA384 Verified" for the relay's
         * connection, empty for plaintext: qmgr logs it as tls=. */
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", strempty(j->tls));
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        if (r < 0)
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS,
                         "cannot send the delivery results to the queue manager: %s",
                         strerror(-r));
        j->call = sd_bus_message_unref(j->call);
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        BusConn *c = userdata;
        bus_conn_free(c);
        return 0;
}

BusConn *bus_conn_free(BusConn *c) {
        if (!c)
                return NULL;
        if (c->prev)
                c->prev->next = c->next;
        else if (c->d->conns == c)
                c->d->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        sd_bus_slot_unref(c->disconnect_slot);
        sd_bus_flush_close_unref(c->bus);
        free(c);
        return NULL;
}

int deliver_bus_add_connection(Deliver *d, int fd) {
        _cleanup_close_ int cfd = fd;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        sd_id128_t id;
        BusConn *c;
        int r;

        /* The queue manager runs as the postern user, like this service; root
         * may call for administration and tests. */
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        if (cred.uid != 0 && cred.uid != geteuid()) {
                log_warning("Refusing a Delivery1 connection from uid %u", (unsigned) cred.uid);
                return -EPERM;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->d = d;
        r = sd_bus_new(&c->bus);
        if (r >= 0)
                r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r >= 0) {
                cfd = -1;
                r = sd_id128_randomize(&id);
        }
        if (r >= 0)
                r = sd_bus_set_server(c->bus, 1, id);
        if (r >= 0)
                r = sd_bus_negotiate_fds(c->bus, 1);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, DELIVERY_BUS_OBJECT,
                                             DELIVERY_BUS_INTERFACE, delivery_vtable, c);
        if (r >= 0)
                r = sd_bus_match_signal(c->bus, &c->disconnect_slot, "org.freedesktop.DBus.Local",
                                        "/org/freedesktop/DBus/Local",
                                        "org.freedesktop.DBus.Local", "Disconnected",
                                        on_disconnected, c);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, d->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                sd_bus_slot_unref(c->disconnect_slot);
                sd_bus_flush_close_unref(c->bus);
                free(c);
                return r;
        }
        c->next = d->conns;
        if (c->next)
                c->next->prev = c;
        d->conns = c;
        return 0;
}
