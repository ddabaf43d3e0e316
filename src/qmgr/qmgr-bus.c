/* qmgr-bus.c: the org.postern.Queue1 server. The listening AF_UNIX socket
 * comes from postern-qmgr.socket (Accept=no; without socket activation the
 * daemon binds $POSTERN_RUNTIME_DIR/qmgr itself); every connection the
 * daemon accept()s becomes its own peer-to-peer sd-bus server connection,
 * so smtpd, pickup and the queue tools can all talk to one queue manager.
 *
 * Methods (object /org/postern/Queue1), each answered as soon as the work
 * is queued, never after delivery:
 *   Enqueue(s queue_id)     new mail in incoming/
 *   Flush()                 retry all deferred mail now, reset dead destinations
 *   FlushSite(s domain)     the same for mail to one destination
 *   FlushId(s queue_id)     retry one message
 *   Status() -> a{sv}       active messages, deliveries in flight, ...
 *   List(s format) -> h     the mailq listing ("text" or "json") on a pipe
 * Errors: org.freedesktop.DBus.Error.InvalidArgs for a malformed queue ID
 * or domain, org.postern.Queue1.Error.NoSuchMessage, and errno-mapped
 * errors otherwise (see postern-qmgr(8)). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>

#include "addr.h"
#include "bus-names.h"
#include "log.h"
#include "qmgr.h"
#include "queue-show.h"

#define CLIENT_LIMIT 256

struct QmgrClient {
        Qmgr *qmgr;
        sd_bus *bus;
        bool dead;
        QmgrClient *next;
};

/* Maps an errno to a bus error, in one place. */
static int reply_errno(sd_bus_error *error, int r, const char *what) {
        if (r == -ENOENT || r == -ESRCH)
                return sd_bus_error_setf(error, QUEUE_BUS_INTERFACE ".Error.NoSuchMessage",
                                         "%s: no such message in the queue", what);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid argument: %s",
                                         what);
        return sd_bus_error_set_errnof(error, -r, "%s: %s", what, strerror(-r));
}

static int method_enqueue(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Qmgr *q = userdata;
        const char *id;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        if (!queue_id_valid(id))
                return reply_errno(error, -EINVAL, "not a queue ID");
        r = qmgr_enqueue(q, id);
        if (r < 0)
                return reply_errno(error, r, id);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_flush(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Qmgr *q = userdata;
        log_debug("Flush requested");
        qmgr_flush(q, NULL);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_flush_site(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Qmgr *q = userdata;
        const char *site;
        int r;

        r = sd_bus_message_read(m, "s", &site);
        if (r < 0)
                return r;
        if (!*site || !addr_domain_valid(site, strlen(site), true))
                return reply_errno(error, -EINVAL, "not a domain name");
        log_debug("Flush of %s requested", site);
        qmgr_flush(q, site);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_flush_id(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Qmgr *q = userdata;
        const char *id;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        if (!queue_id_valid(id))
                return reply_errno(error, -EINVAL, "not a queue ID");
        r = qmgr_flush_id(q, id);
        if (r < 0)
                return reply_errno(error, r, id);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_status(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Qmgr *q = userdata;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "a{sv}", 6,
                                          "active", "u", q->n_active,
                                          "in_flight", "u", q->jobs_in_flight,
                                          "destinations", "u", (uint32_t) q->dests.n,
                                          "enqueued", "u", (uint32_t) q->n_enqueued,
                                          "scanning_deferred", "b", q->scan != NULL,
                                          "next_deferred_due_usec", "t", q->next_due);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* The listing for mailq and postqueue -p/-j of users who cannot read the
 * queue (the directories are 0700 postern), as Postfix's showq serves
 * them. A grandchild writes it to a pipe whose read end is the reply, so
 * that a large queue never stalls the event loop and no child is left to
 * reap. The grandchild keeps only the pipe and a fresh queue directory fd:
 * no inherited bus connection or message lock outlives the reply. A
 * failure after output started ends the stream with a NUL byte and the
 * error text, which postqueue reports. */
static void list_child(const char *queue_dir, int pipe_fd, bool json) {
        _cleanup_close_ int qfd = -1;
        FILE *out;
        int r;

        if (dup2(pipe_fd, STDOUT_FILENO) < 0)
                _exit(EXIT_FAILURE);
        (void) close_range(3, ~0U, 0);
        out = stdout;
        qfd = open(queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = qfd < 0 ? -errno : queue_show(qfd, json, out);
        if (r < 0)
                fprintf(out, "%ccannot list %s: %s", '\0', queue_dir, strerror(-r));
        _exit(fflush(out) == 0 && r >= 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}

static int method_list(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Qmgr *q = userdata;
        _cleanup_close_ int rfd = -1, wfd = -1;
        const char *format;
        int fds[2], status, r;
        pid_t pid;

        r = sd_bus_message_read(m, "s", &format);
        if (r < 0)
                return r;
        if (!streq(format, "text") && !streq(format, "json"))
                return reply_errno(error, -EINVAL, "format must be \"text\" or \"json\"");
        if (pipe2(fds, O_CLOEXEC) < 0)
                return reply_errno(error, -errno, "pipe");
        rfd = fds[0];
        wfd = fds[1];
        pid = fork();
        if (pid < 0)
                return reply_errno(error, -errno, "fork");
        if (pid == 0) {
                pid_t pid2 = fork();
                if (pid2 < 0)
                        _exit(EXIT_FAILURE);
                if (pid2 == 0)
                        list_child(q->settings.queue_directory, wfd, streq(format, "json"));
                _exit(EXIT_SUCCESS);
        }
        do
                r = waitpid(pid, &status, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return reply_errno(error, -ECHILD, "fork");
        wfd = safe_close_fd(wfd);
        log_debug("Queue listing requested");
        return sd_bus_reply_method_return(m, "h", rfd);
}

/* Any local user may list the queue and ask for a flush (Postfix's
 * authorized_mailq_users and authorized_flush_users default to anyone);
 * sd-bus denies methods without SD_BUS_VTABLE_UNPRIVILEGED to peers of
 * another uid. Enqueue stays for the queue's own roles. */
static const sd_bus_vtable queue_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Enqueue", "s", "", method_enqueue, 0),
        SD_BUS_METHOD("Flush", "", "", method_flush, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("FlushSite", "s", "", method_flush_site, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("FlushId", "s", "", method_flush_id, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Status", "", "a{sv}", method_status, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("List", "s", "h", method_list, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static void client_free(QmgrClient *c) {
        sd_bus_flush_close_unref(c->bus);
        free(c);
}

static int on_gc(sd_event_source *s, void *userdata) {
        Qmgr *q = userdata;
        for (QmgrClient **p = &q->clients; *p;) {
                QmgrClient *c = *p;
                if (c->dead) {
                        *p = c->next;
                        client_free(c);
                } else
                        p = &c->next;
        }
        return 0;
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        QmgrClient *c = userdata;
        c->dead = true;
        /* Freed outside the bus's own dispatch. */
        (void) sd_event_source_set_enabled(c->qmgr->gc_event, SD_EVENT_ONESHOT);
        return 0;
}

static int client_new(Qmgr *q, int fd) {
        QmgrClient *c;
        sd_id128_t id;
        unsigned n = 0;
        int r;

        for (QmgrClient *i = q->clients; i; i = i->next)
                n++;
        if (n >= CLIENT_LIMIT) {
                log_warning("Too many queue manager clients; closing a new connection");
                close(fd);
                return 0;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->qmgr = q;
        r = sd_id128_randomize(&id);
        if (r >= 0)
                r = sd_bus_new(&c->bus);
        if (r < 0) {
                close(fd);
                free(c);
                return r;
        }
        r = sd_bus_set_fd(c->bus, fd, fd);
        if (r < 0) {
                close(fd);
                client_free(c);
                return r;
        }
        if ((r = sd_bus_set_server(c->bus, 1, id)) < 0 ||
            (r = sd_bus_add_object_vtable(c->bus, NULL, QUEUE_BUS_OBJECT, QUEUE_BUS_INTERFACE,
                                          queue_vtable, q)) < 0 ||
            (r = sd_bus_match_signal(c->bus, NULL, NULL, "/org/freedesktop/DBus/Local",
                                     "org.freedesktop.DBus.Local", "Disconnected",
                                     on_disconnected, c)) < 0 ||
            (r = sd_bus_attach_event(c->bus, q->event, SD_EVENT_PRIORITY_NORMAL)) < 0 ||
            (r = sd_bus_start(c->bus)) < 0) {
                client_free(c);
                return r;
        }
        c->next = q->clients;
        q->clients = c;
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Qmgr *q = userdata;

        for (int k = 0; k < 64; k++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                int r;
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning("Cannot accept a queue manager connection: %m");
                        break;
                }
                r = client_new(q, cfd);
                /* A peer that connected and left at once (a socket probe)
                 * is not worth a warning. */
                if (r < 0)
                        log_full_errno(r == -ECONNRESET || r == -EPIPE ? LOG_DEBUG : LOG_WARNING,
                                       0, "Cannot set up a queue manager connection: %s",
                                       strerror(-r));
        }
        return 0;
}

/* Without socket activation: bind the socket ourselves. */
static int bind_socket(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_free_ char *path = strdup_printf("%s/%s", postern_runtime_dir(), QUEUE_BUS_SOCKET);
        int fd;

        if (!path)
                return -ENOMEM;
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        (void) chmod(path, 0666);
        return fd;
}

int qmgr_bus_setup(Qmgr *q) {
        int n, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Cannot get sockets from systemd: %m");
        if (n > 1)
                return log_error_errno(EINVAL, "Expected one listening socket, got %d", n);
        if (n == 1) {
                q->listen_fd = SD_LISTEN_FDS_START;
                if (sd_is_socket(q->listen_fd, AF_UNIX, SOCK_STREAM, 1) <= 0)
                        return log_error_errno(EINVAL, "The socket from systemd is not a "
                                               "listening AF_UNIX stream socket");
                if (fcntl(q->listen_fd, F_SETFL, fcntl(q->listen_fd, F_GETFL) | O_NONBLOCK) < 0 ||
                    fcntl(q->listen_fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "Cannot set up the listening socket: %m");
        } else {
                q->listen_fd = bind_socket();
                if (q->listen_fd < 0)
                        return log_error_errno(q->listen_fd, "Cannot listen on %s/%s: %m",
                                               postern_runtime_dir(), QUEUE_BUS_SOCKET);
        }
        r = sd_event_add_io(q->event, &q->listen_event, q->listen_fd, EPOLLIN, on_accept, q);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the listening socket: %m");
        r = sd_event_add_defer(q->event, &q->gc_event, on_gc, q);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(q->gc_event, SD_EVENT_OFF);
        return 0;
}

void qmgr_bus_done(Qmgr *q) {
        while (q->clients) {
                QmgrClient *c = q->clients;
                q->clients = c->next;
                client_free(c);
        }
        q->listen_event = sd_event_source_disable_unref(q->listen_event);
        q->gc_event = sd_event_source_disable_unref(q->gc_event);
        q->listen_fd = safe_close_fd(q->listen_fd);
}
