/* deliver-local-bus.c: org.postern.Delivery1 on peer-to-peer sd-bus
 * connections (see bus-names.h and postern-deliver-local(8)).
 *
 * deliver_bus_accept() turns an accepted socket into a bus server
 * connection after checking the peer's uid (root, the mail_owner account or
 * our own). Deliver() validates its arguments, reads the queue file's
 * envelope from the fd it was handed and starts one recipient child per
 * recipient (at most DELIVER_CHILDREN_MAX at a time across all calls). Each
 * child writes its result to a pipe and exits; when the last recipient of a
 * call is done the method returns, so a call never blocks the loop. The
 * results are logged by the caller, postern-qmgr, in Postfix's
 * "to=<...>, relay=..., delays=..., status=..." shape (it knows the delays
 * and the original recipient); logging them here too would double every
 * line of a message's trace. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-id128.h>

#include "bus-names.h"
#include "deliver-local.h"
#include "log.h"
#include "queue-id.h"

struct DeliverConnection {
        DeliverLocal *d;
        DeliverConnection *prev, *next;
        sd_bus *bus;
        bool closed;
};

typedef struct DeliverRcpt {
        DeliverJob *job;
        uint32_t index;
        char *address;
        char *orig;
        pid_t pid;
        int pipe_fd;
        sd_event_source *child_source;
        bool started, done;
        DeliverResult result;
} DeliverRcpt;

struct DeliverJob {
        DeliverLocal *d;
        DeliverJob *prev, *next;
        sd_bus_message *call;
        int queue_fd;
        QueueEnvelope env;
        bool env_ok;
        DeliverTransport transport;
        char *nexthop;
        char *headers;
        size_t headers_len;
        DeliverRcpt *rcpts;
        size_t n_rcpts;
        size_t n_done;
        size_t next_start;
};

static void schedule(DeliverLocal *d);

void deliver_job_free(DeliverJob *j) {
        if (!j)
                return;
        for (size_t i = 0; i < j->n_rcpts; i++) {
                DeliverRcpt *r = &j->rcpts[i];
                if (r->child_source) {
                        /* The loop is going away: leave the child to finish its
                         * delivery on its own. Its result is lost, the caller
                         * sees no reply and retries: a duplicate, never a loss. */
                        sd_event_source_disable_unref(r->child_source);
                        j->d->n_children--;
                }
                if (r->pipe_fd >= 0)
                        close(r->pipe_fd);
                free(r->address);
                free(r->orig);
                deliver_result_done(&r->result);
        }
        free(j->rcpts);
        if (j->prev)
                j->prev->next = j->next;
        else if (j->d->jobs == j)
                j->d->jobs = j->next;
        if (j->next)
                j->next->prev = j->prev;
        j->d->n_jobs--;
        sd_bus_message_unref(j->call);
        if (j->queue_fd >= 0)
                close(j->queue_fd);
        queue_envelope_done(&j->env);
        free(j->nexthop);
        free(j->headers);
        free(j);
}

static const char *relay_name(const DeliverJob *j) {
        return j->transport == DELIVER_TRANSPORT_VIRTUAL ? "virtual" : "local";
}

static void job_reply(DeliverJob *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(j->call, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(usss)");
        for (size_t i = 0; r >= 0 && i < j->n_rcpts; i++) {
                DeliverRcpt *rc = &j->rcpts[i];
                r = sd_bus_message_append(reply, "(usss)", rc->index,
                                          deliver_status_to_string(rc->result.status),
                                          rc->result.dsn, strempty(rc->result.text));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", relay_name(j));
        if (r >= 0)
                r = sd_bus_send(sd_bus_message_get_bus(j->call), reply, NULL);
        if (r < 0)
                log_mail(LOG_WARNING, NULL, j->env_ok ? j->env.queue_id : NULL, LOG_NO_FIELDS,
                         "cannot send the Deliver reply: %s", strerror(-r));
}

static void rcpt_finished(DeliverRcpt *r) {
        DeliverJob *j = r->job;
        DeliverLocal *d = j->d;

        r->done = true;
        STRV_FOREACH(q, r->result.queue_ids)
        deliver_qmgr_notify(d, *q);
        if (++j->n_done == j->n_rcpts) {
                job_reply(j);
                deliver_job_free(j);
                deliver_local_activity_changed(d);
        }
}

static int on_child(sd_event_source *es, const siginfo_t *si, void *userdata) {
        DeliverRcpt *r = userdata;
        DeliverJob *j = r->job;
        DeliverLocal *d = j->d;
        int k;

        r->child_source = sd_event_source_disable_unref(r->child_source);
        d->n_children--;
        k = deliver_result_read(r->pipe_fd, &r->result);
        close(r->pipe_fd);
        r->pipe_fd = -1;
        if (k < 0 || si->si_code != CLD_EXITED || si->si_status != 0) {
                if (si->si_code == CLD_EXITED)
                        deliver_result_set(&r->result, DELIVER_DEFERRED, "4.3.0",
                                           "delivery process failed with exit status %d",
                                           si->si_status);
                else
                        deliver_result_set(&r->result, DELIVER_DEFERRED, "4.3.0",
                                           "delivery process died with signal %s",
                                           strsignal(si->si_status));
        }
        rcpt_finished(r);
        schedule(d);
        return 0;
}

/* The child side: resolve and deliver, write one result, exit. */
_noreturn_ static void rcpt_child(DeliverJob *j, DeliverRcpt *r, int fd) {
        DeliverResult res = {0};
        DeliverMsg m = {
                .settings = &j->d->settings,
                .queue_fd = j->queue_fd,
                .env = &j->env,
                .transport = j->transport,
                .nexthop = j->nexthop,
                .recipient = r->address,
                .orig_recipient = r->orig,
                .headers = j->headers,
                .headers_len = j->headers_len,
        };

        if (j->transport == DELIVER_TRANSPORT_VIRTUAL)
                virtual_deliver(&m, &res);
        else
                local_deliver(&m, &res);
        if (!res.text)
                deliver_result_set(&res, DELIVER_DEFERRED, "4.3.0", "internal error");
        _exit(deliver_result_write(fd, &res) < 0 ? 1 : 0);
}

static int rcpt_start(DeliverRcpt *r) {
        DeliverJob *j = r->job;
        DeliverLocal *d = j->d;
        int p[2], k;
        pid_t pid;

        r->started = true;
        if (pipe2(p, O_CLOEXEC) < 0) {
                deliver_result_set(&r->result, DELIVER_DEFERRED, "4.3.0",
                                   "cannot create a pipe: %s", strerror(errno));
                return -errno;
        }
        pid = fork();
        if (pid < 0) {
                k = -errno;
                close(p[0]);
                close(p[1]);
                deliver_result_set(&r->result, DELIVER_DEFERRED, "4.3.0", "cannot fork: %s",
                                   strerror(-k));
                return k;
        }
        if (pid == 0) {
                close(p[0]);
                rcpt_child(j, r, p[1]);
        }
        close(p[1]);
        r->pid = pid;
        r->pipe_fd = p[0];
        k = sd_event_add_child(d->event, &r->child_source, pid, WEXITED, on_child, r);
        if (k < 0) {
                /* Cannot watch it: wait for it here rather than lose track. */
                int status;
                (void)waitpid(pid, &status, 0);
                if (deliver_result_read(r->pipe_fd, &r->result) < 0)
                        deliver_result_set(&r->result, DELIVER_DEFERRED, "4.3.0",
                                           "delivery process failed");
                close(r->pipe_fd);
                r->pipe_fd = -1;
                return k;
        }
        d->n_children++;
        return 0;
}

static void schedule(DeliverLocal *d) {
        DeliverJob *next;

        for (DeliverJob *j = d->jobs; j; j = next) {
                next = j->next;
                while (j->next_start < j->n_rcpts && d->n_children < DELIVER_CHILDREN_MAX) {
                        DeliverRcpt *r = &j->rcpts[j->next_start++];
                        if (rcpt_start(r) < 0) {
                                /* Finished synchronously; this may free the job. */
                                bool last = j->n_done + 1 == j->n_rcpts;
                                rcpt_finished(r);
                                if (last)
                                        break;
                        }
                }
        }
}

/* Reads the header section (up to the first empty line, capped) for the
 * Delivered-To loop check. */
static int read_headers(DeliverJob *j) {
        size_t cap = (size_t)MIN(j->env.content_size, (uint64_t)DELIVER_HEADER_SCAN_MAX);
        _cleanup_free_ char *buf = malloc(cap + 1);
        ssize_t n;
        char *end;

        if (!buf)
                return -ENOMEM;
        n = pread(j->queue_fd, buf, cap, (off_t)j->env.content_offset);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        end = memmem(buf, (size_t)n, "\n\n", 2);
        j->headers_len = end ? (size_t)(end - buf) + 1 : (size_t)n;
        if (buf[0] == '\n')
                j->headers_len = 0;
        buf[j->headers_len] = 0;
        j->headers = steal_ptr(buf);
        return 0;
}

static bool address_ok(const char *s, bool allow_empty) {
        size_t n = strlen(s);
        if ((!allow_empty && n == 0) || n > 1000)
                return false;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

_printf_(2, 3) static void job_fail_all(DeliverJob *j, const char *fmt, ...) {
        _cleanup_free_ char *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        for (size_t i = 0; i < j->n_rcpts; i++) {
                DeliverRcpt *r = &j->rcpts[i];
                deliver_result_set(&r->result, DELIVER_DEFERRED, "4.3.0", "%s",
                                   text ? text : "out of memory");
                r->started = true;
        }
        j->next_start = j->n_rcpts;
}

static int method_deliver(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DeliverConnection *c = userdata;
        DeliverLocal *d = c->d;
        DeliverJob *j;
        const char *qid, *transport, *nexthop, *addr, *orig;
        uint32_t index;
        size_t n = 0, cap = 0;
        int fd, r;

        r = sd_bus_message_read(m, "hsss", &fd, &qid, &transport, &nexthop);
        if (r < 0)
                return r;
        if (!queue_id_valid(qid))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid queue ID");
        if (!streq(transport, "local") && !streq(transport, "virtual"))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown transport \"%.64s\": postern-deliver-local "
                                         "serves \"local\" and \"virtual\"",
                                         transport);
        if (!address_ok(nexthop, true))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid next hop");

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->d = d;
        j->queue_fd = -1;
        j->next = d->jobs;
        if (d->jobs)
                d->jobs->prev = j;
        d->jobs = j;
        d->n_jobs++;
        j->transport =
                streq(transport, "virtual") ? DELIVER_TRANSPORT_VIRTUAL : DELIVER_TRANSPORT_LOCAL;
        j->nexthop = strdup(nexthop);
        if (!j->nexthop) {
                r = -ENOMEM;
                goto fail;
        }

        r = sd_bus_message_enter_container(m, 'a', "(uss)");
        if (r < 0)
                goto fail;
        while ((r = sd_bus_message_read(m, "(uss)", &index, &addr, &orig)) > 0) {
                DeliverRcpt *rc;
                if (n >= DELIVER_RCPT_MAX) {
                        r = sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                              "More than %d recipients", DELIVER_RCPT_MAX);
                        goto fail;
                }
                /* Addresses end up in headers: no line breaks or controls. */
                if (!address_ok(addr, false) || !address_ok(orig, true)) {
                        r = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                              "Invalid recipient address at position %zu", n);
                        goto fail;
                }
                if (n == cap) {
                        size_t nc = cap ? cap * 2 : 8;
                        DeliverRcpt *a = reallocarray(j->rcpts, nc, sizeof(DeliverRcpt));
                        if (!a) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        j->rcpts = a;
                        cap = nc;
                }
                rc = &j->rcpts[n];
                *rc = (DeliverRcpt){.job = j, .index = index, .pipe_fd = -1};
                j->n_rcpts = ++n;
                rc->address = strdup(addr);
                rc->orig = strdup(orig);
                if (!rc->address || !rc->orig) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        if (r < 0)
                goto fail;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                goto fail;
        if (n == 0) {
                r = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No recipients");
                goto fail;
        }

        j->call = sd_bus_message_ref(m);
        j->queue_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (j->queue_fd < 0)
                job_fail_all(j, "cannot use the queue file: %m");
        else if ((r = queue_file_read(j->queue_fd, &j->env)) < 0)
                job_fail_all(j, "%s the queue file: %s",
                             r == -EBADMSG ? "malformed" : "cannot read", strerror(-r));
        else if (!streq(j->env.queue_id, qid)) {
                j->env_ok = true;
                job_fail_all(j, "the queue file is not %s", qid);
        } else if ((r = read_headers(j)) < 0) {
                j->env_ok = true;
                job_fail_all(j, "cannot read the queue file: %s", strerror(-r));
        } else
                j->env_ok = true;

        if (j->next_start == j->n_rcpts) {
                /* Failed before any child ran: answer now. */
                job_reply(j);
                deliver_job_free(j);
        } else
                schedule(d);
        deliver_local_activity_changed(d);
        return 1;
fail:
        deliver_job_free(j);
        return r;
}

static const sd_bus_vtable delivery_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Deliver",
                                SD_BUS_ARGS("h", queue_file, "s", queue_id, "s", transport, "s",
                                            nexthop, "a(uss)", recipients),
                                SD_BUS_RESULT("a(usss)", results, "s", relay), method_deliver, 0),
        SD_BUS_VTABLE_END,
};

static int on_reap(sd_event_source *es, void *userdata) {
        DeliverLocal *d = userdata;
        DeliverConnection *next;

        for (DeliverConnection *c = d->connections; c; c = next) {
                next = c->next;
                if (c->closed)
                        deliver_bus_connection_free(c);
        }
        deliver_local_activity_changed(d);
        return 0;
}

static int on_filter(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        DeliverConnection *c = userdata;
        DeliverLocal *d = c->d;

        if (!sd_bus_message_is_signal(m, "org.freedesktop.DBus.Local", "Disconnected"))
                return 0;
        c->closed = true;
        /* Freeing a bus inside its own callback is not allowed. */
        if (!d->reaper) {
                if (sd_event_add_defer(d->event, &d->reaper, on_reap, d) >= 0)
                        (void)sd_event_source_set_enabled(d->reaper, SD_EVENT_ONESHOT);
        } else
                (void)sd_event_source_set_enabled(d->reaper, SD_EVENT_ONESHOT);
        return 0;
}

void deliver_bus_connection_free(DeliverConnection *c) {
        if (!c)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else if (c->d->connections == c)
                c->d->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->d->n_connections--;
        sd_bus_flush_close_unref(c->bus);
        free(c);
}

int deliver_bus_accept(DeliverLocal *d, int fd) {
        _cleanup_close_ int cfd = fd;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        DeliverConnection *c;
        sd_id128_t id;
        int r;

        /* Whoever may call Deliver may write into every mailbox: only the
         * queue manager's account (mail_owner), root and our own uid. */
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return log_warning_errno(errno, "Cannot get the peer's credentials: %m");
        if (cred.uid != 0 && cred.uid != geteuid() && cred.uid != d->settings.mail_owner_uid) {
                log_warning("Refusing a delivery connection from uid %u (pid %d): only root "
                            "and the mail_owner account may call Delivery1",
                            (unsigned)cred.uid, (int)cred.pid);
                return -EPERM;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return log_oom();
        c->d = d;
        c->next = d->connections;
        if (d->connections)
                d->connections->prev = c;
        d->connections = c;
        d->n_connections++;

        r = sd_bus_new(&c->bus);
        if (r >= 0)
                r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r >= 0) {
                cfd = -1; /* the bus owns it now */
                r = sd_id128_randomize(&id);
        }
        if (r >= 0)
                r = sd_bus_set_server(c->bus, 1, id);
        if (r >= 0)
                r = sd_bus_negotiate_fds(c->bus, 1);
        if (r >= 0)
                r = sd_bus_set_trusted(c->bus, 1);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, DELIVERY_BUS_OBJECT,
                                             DELIVERY_BUS_INTERFACE, delivery_vtable, c);
        if (r >= 0)
                r = sd_bus_add_filter(c->bus, NULL, on_filter, c);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, d->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r < 0) {
                log_warning_errno(r, "Cannot set up a bus connection: %m");
                deliver_bus_connection_free(c);
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

void deliver_qmgr_notify(DeliverLocal *d, const char *queue_id) {
        uint64_t now = 0;
        int r;

        /* Best effort: the queue manager's timer scan finds the file anyway. */
        if (!d->qmgr_bus) {
                _cleanup_free_ char *address = NULL;
                sd_bus *bus = NULL;

                (void)sd_event_now(d->event, CLOCK_MONOTONIC, &now);
                if (now < d->qmgr_retry_after)
                        return;
                d->qmgr_retry_after = now + 1000000;
                address = strdup_printf("unix:path=%s", d->settings.qmgr_socket);
                if (!address)
                        return;
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
                        return;
                }
                d->qmgr_bus = bus;
        }
        r = sd_bus_call_method_async(d->qmgr_bus, NULL, NULL, QUEUE_BUS_OBJECT, QUEUE_BUS_INTERFACE,
                                     "Enqueue", on_enqueue_reply, NULL, "s", queue_id);
        if (r < 0) {
                log_mail(LOG_DEBUG, NULL, queue_id, LOG_NO_FIELDS,
                         "cannot announce it to the queue manager: %s", strerror(-r));
                d->qmgr_bus = sd_bus_flush_close_unref(d->qmgr_bus);
        }
}
