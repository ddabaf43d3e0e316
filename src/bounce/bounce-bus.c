/* bounce-bus.c: org.postern.Bounce1 on peer-to-peer sd-bus connections.
 * Entry points: bounce_bus_accept() (one connection per accepted socket,
 * peers limited to root, our own uid and mail_owner), the Notify method
 * (argument checks, then bounce_notify()), bounce_qmgr_notify() (the
 * best-effort Queue1.Enqueue announcement). Errnos become bus errors in
 * one place, map_error(). Documented in postern-bounce(8). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <systemd/sd-id128.h>

#include "bounce.h"
#include "bus-names.h"
#include "log.h"
#include "queue-id.h"

#define BOUNCE_ERROR_BAD_QUEUE_FILE "org.postern.Bounce1.Error.BadQueueFile"

static int map_error(sd_bus_error *error, int r, const char *qid) {
        switch (r) {
        case -EBADMSG:
                return sd_bus_error_setf(error, BOUNCE_ERROR_BAD_QUEUE_FILE,
                                         "Queue file of %s is malformed", qid);
        case -EINVAL:
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Queue file is not message %s, or a recipient index is "
                                         "out of range", qid);
        case -ENOMEM:
                return sd_bus_error_set_const(error, SD_BUS_ERROR_NO_MEMORY, "Out of memory");
        default:
                return sd_bus_error_set_errnof(error, r, "Cannot queue the report for %s: %m",
                                               qid);
        }
}

static bool dsn_ok(const char *s) {
        /* RFC 3463: class.subject.detail, 1-3 digits each. */
        unsigned a, b, c;
        int n = 0;
        return sscanf(s, "%1u.%3u.%3u%n", &a, &b, &c, &n) == 3 && n > 0 && s[n] == '\0' &&
               (a == 2 || a == 4 || a == 5) && strspn(s, "0123456789.") == strlen(s);
}

static bool text_ok(const char *s, size_t max) {
        return strlen(s) <= max && !strpbrk(s, "\r\n");
}

static int method_notify(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        BounceConnection *c = userdata;
        Bounce *b = c->bounce;
        _cleanup_free_ BounceNotifyRcpt *rcpts = NULL;
        _cleanup_free_ char *report_id = NULL;
        const char *qid, *kind;
        size_t n = 0, cap = 0;
        uint64_t last_attempt;
        BounceNotifyRequest req;
        int fd, k, r;

        r = sd_bus_message_read(m, "hss", &fd, &qid, &kind);
        if (r < 0)
                return r;
        if (!queue_id_valid(qid))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid queue ID");
        k = bounce_kind_from_string(kind);
        if (k < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown kind \"%.40s\" (failure, delay, success, "
                                         "relayed, expanded)", kind);

        r = sd_bus_message_enter_container(m, 'a', "(usssss)");
        if (r < 0)
                return r;
        for (;;) {
                BounceNotifyRcpt nr;
                r = sd_bus_message_read(m, "(usssss)", &nr.index, &nr.address, &nr.orig, &nr.dsn,
                                        &nr.diagnostic, &nr.relay);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (n >= BOUNCE_RCPT_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                                 "More than %d recipients", BOUNCE_RCPT_MAX);
                if (!*nr.address || !text_ok(nr.address, 1000) || !text_ok(nr.orig, 1000))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid recipient address");
                if (!dsn_ok(nr.dsn))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid status \"%.20s\" (want X.Y.Z)", nr.dsn);
                if (!text_ok(nr.diagnostic, BOUNCE_DIAG_ARG_MAX))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid diagnostic text");
                if (!text_ok(nr.relay, 1000))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid relay");
                if (n == cap) {
                        size_t nc = cap ? cap * 2 : 16;
                        BounceNotifyRcpt *a = reallocarray(rcpts, nc, sizeof(*a));
                        if (!a)
                                return -ENOMEM;
                        rcpts = a;
                        cap = nc;
                }
                rcpts[n++] = nr;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "t", &last_attempt);
        if (r < 0)
                return r;
        if (n == 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No recipients");
        if (last_attempt == 0) {
                struct timeval now;
                gettimeofday(&now, NULL);
                last_attempt = (uint64_t) now.tv_sec * 1000000 + (uint64_t) now.tv_usec;
        }

        req = (BounceNotifyRequest) {
                .fd = fd,
                .queue_id = qid,
                .kind = (BounceKind) k,
                .rcpts = rcpts,
                .n_rcpts = n,
                .last_attempt_usec = last_attempt,
        };
        r = bounce_notify(b, &req, &report_id);
        if (r < 0) {
                log_mail(LOG_WARNING, NULL, qid, LOG_NO_FIELDS,
                         "cannot create the %s notification: %s", kind, strerror(-r));
                return map_error(error, r, qid);
        }
        return sd_bus_reply_method_return(m, "s", report_id);
}

static const sd_bus_vtable bounce_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Notify",
                SD_BUS_ARGS("h", queue_file, "s", queue_id, "s", kind, "a(usssss)", recipients,
                            "t", last_attempt_usec),
                SD_BUS_RESULT("s", report_queue_id),
                method_notify, 0),
        SD_BUS_VTABLE_END,
};

static int on_reap(sd_event_source *es, void *userdata) {
        Bounce *b = userdata;
        BounceConnection *next;

        for (BounceConnection *c = b->connections; c; c = next) {
                next = c->next;
                if (c->closed)
                        bounce_bus_connection_free(c);
        }
        bounce_activity_changed(b);
        return 0;
}

static int on_filter(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        BounceConnection *c = userdata;
        Bounce *b = c->bounce;

        if (!sd_bus_message_is_signal(m, "org.freedesktop.DBus.Local", "Disconnected"))
                return 0;
        c->closed = true;
        /* A bus must not be freed inside its own callback. */
        if (!b->reaper && sd_event_add_defer(b->event, &b->reaper, on_reap, b) < 0)
                return 0;
        (void) sd_event_source_set_enabled(b->reaper, SD_EVENT_ONESHOT);
        return 0;
}

void bounce_bus_connection_free(BounceConnection *c) {
        if (!c)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else if (c->bounce->connections == c)
                c->bounce->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->bounce->n_connections--;
        sd_bus_flush_close_unref(c->bus);
        free(c);
}

int bounce_bus_accept(Bounce *b, int fd) {
        _cleanup_close_ int cfd = fd;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        BounceConnection *c;
        sd_id128_t id;
        int r;

        /* Whoever calls Notify makes us send mail with the null sender:
         * only the queue manager's account (mail_owner), root and our own
         * uid may. */
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return log_warning_errno(errno, "Cannot get the peer's credentials: %m");
        if (cred.uid != 0 && cred.uid != geteuid() && cred.uid != b->settings.mail_owner_uid) {
                log_warning("Refusing a connection from uid %u (pid %d): only root and the "
                            "mail_owner account may call Bounce1",
                            (unsigned) cred.uid, (int) cred.pid);
                return -EPERM;
        }
        if (b->n_connections >= BOUNCE_CONNECTIONS_MAX) {
                log_warning("Refusing a connection: %d connections open",
                            BOUNCE_CONNECTIONS_MAX);
                return -EBUSY;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return log_oom();
        c->bounce = b;
        c->next = b->connections;
        if (b->connections)
                b->connections->prev = c;
        b->connections = c;
        b->n_connections++;

        r = sd_bus_new(&c->bus);
        if (r >= 0)
                r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r >= 0) {
                cfd = -1;       /* the bus owns it now */
                r = sd_id128_randomize(&id);
        }
        if (r >= 0)
                r = sd_bus_set_server(c->bus, 1, id);
        if (r >= 0)
                r = sd_bus_negotiate_fds(c->bus, 1);
        if (r >= 0)
                r = sd_bus_set_trusted(c->bus, 1);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, BOUNCE_BUS_OBJECT, BOUNCE_BUS_INTERFACE,
                                             bounce_vtable, c);
        if (r >= 0)
                r = sd_bus_add_filter(c->bus, NULL, on_filter, c);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r < 0) {
                log_warning_errno(r, "Cannot set up a bus connection: %m");
                bounce_bus_connection_free(c);
                return r;
        }
        return 0;
}

static int on_enqueue_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const sd_bus_error *e = sd_bus_message_get_error(m);
        if (e)
                log_debug("Queue manager did not take the announcement: %s", e->message);
        return 0;
}

void bounce_qmgr_notify(Bounce *b, const char *queue_id) {
        uint64_t now = 0;
        int r;

        /* Best effort: the queue manager's timer scan finds the file anyway,
         * and the reply to Notify must not wait for a busy queue manager
         * (which may itself be waiting for this reply). A queue manager
         * that exited when idle left a closed connection behind. */
        if (b->qmgr_bus && sd_bus_is_open(b->qmgr_bus) <= 0)
                b->qmgr_bus = sd_bus_flush_close_unref(b->qmgr_bus);
        if (!b->qmgr_bus) {
                _cleanup_free_ char *address = NULL;
                sd_bus *bus = NULL;

                (void) sd_event_now(b->event, CLOCK_MONOTONIC, &now);
                if (now < b->qmgr_retry_after)
                        return;
                b->qmgr_retry_after = now + 1000000;
                address = strdup_printf("unix:path=%s", b->settings.qmgr_socket);
                if (!address)
                        return;
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r >= 0)
                        r = sd_bus_attach_event(bus, b->event, SD_EVENT_PRIORITY_NORMAL);
                if (r < 0) {
                        log_debug("Cannot connect to the queue manager at %s: %s",
                                  b->settings.qmgr_socket, strerror(-r));
                        sd_bus_flush_close_unref(bus);
                        return;
                }
                b->qmgr_bus = bus;
        }
        r = sd_bus_call_method_async(b->qmgr_bus, NULL, NULL, QUEUE_BUS_OBJECT,
                                     QUEUE_BUS_INTERFACE, "Enqueue", on_enqueue_reply, NULL, "s",
                                     queue_id);
        if (r < 0) {
                log_mail(LOG_DEBUG, NULL, queue_id, LOG_NO_FIELDS,
                         "cannot announce it to the queue manager: %s", strerror(-r));
                b->qmgr_bus = sd_bus_flush_close_unref(b->qmgr_bus);
        }
}
