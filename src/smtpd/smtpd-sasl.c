/* smtpd-sasl.c: the Dovecot authentication protocol (version 1.x) as an
 * asynchronous client on the sd-event loop, one multiplexed connection per
 * process. Connection states: DOWN (no socket; the next request or kick
 * connects), CONNECTING (non-blocking connect in progress), HANDSHAKE
 * (VERSION and CPID sent, reading VERSION, MECH, SPID, CUID, COOKIE until
 * DONE), READY. Requests written before READY wait in the output buffer;
 * Dovecot reads them after our handshake lines. When the connection drops,
 * every request in flight ends with TEMPFAIL (the client hears 454) and the
 * next request reconnects: a restarted Dovecot is picked up without a
 * restart of postern.
 *
 * Entry points: smtpd_sasl_new(), smtpd_sasl_start(), smtpd_sasl_continue(),
 * smtpd_sasl_cancel(), smtpd_sasl_mechanisms(). Only unix sockets: an
 * "inet:" smtpd_sasl_path is refused by the caller. Nothing of an exchange
 * (responses, challenges) is ever logged. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "smtpd-sasl.h"
#include "strutil.h"

#define SASL_LINE_MAX (64 * 1024)       /* Dovecot's own cap on a line is lower */
#define SASL_OUT_MAX (1024 * 1024)      /* pending output before we give up */

typedef enum SaslState {
        SASL_DOWN,
        SASL_CONNECTING,
        SASL_HANDSHAKE,
        SASL_READY,
} SaslState;

typedef struct SaslMech {
        char *name;
        unsigned flags;
} SaslMech;

struct SmtpdSaslRequest {
        SmtpdSasl *sasl;
        SmtpdSaslRequest *prev, *next;
        unsigned id;
        SmtpdSaslCallback cb;
        void *userdata;
};

struct SmtpdSasl {
        sd_event *event;
        char *path;
        char *service;
        SaslState state;
        int fd;
        sd_event_source *io;
        uint32_t io_events;
        StrBuf in, out;
        SaslMech *mechs;                /* of the last completed handshake */
        size_t n_mechs;
        bool have_mechs;
        SaslMech *new_mechs;            /* being collected */
        size_t n_new_mechs;
        unsigned next_id;
        SmtpdSaslRequest *requests;
};

static const struct {
        const char *name;
        unsigned flag;
} mech_flags[] = {
        {"anonymous", SMTPD_SASL_ANONYMOUS},
        {"plaintext", SMTPD_SASL_PLAINTEXT},
        {"dictionary", SMTPD_SASL_DICTIONARY},
        {"active", SMTPD_SASL_ACTIVE},
        {"mutual-auth", SMTPD_SASL_MUTUAL_AUTH},
        {"private", SMTPD_SASL_PRIVATE},
};

unsigned smtpd_sasl_security_parse(char * const *options, const char **ret_unknown) {
        static const struct {
                const char *name;
                unsigned flag;
        } opts[] = {
                {"noanonymous", SMTPD_SASL_ANONYMOUS},
                {"noplaintext", SMTPD_SASL_PLAINTEXT},
                {"nodictionary", SMTPD_SASL_DICTIONARY},
                {"noactive", SMTPD_SASL_ACTIVE},
                {"mutual_auth", SMTPD_SASL_MUTUAL_AUTH},
                {"forward_secrecy", 0},
        };
        unsigned set = 0;

        STRV_FOREACH(o, options) {
                bool found = false;
                for (size_t i = 0; i < ELEMENTSOF(opts); i++)
                        if (strcaseeq(*o, opts[i].name)) {
                                set |= opts[i].flag;
                                found = true;
                        }
                if (!found && ret_unknown)
                        *ret_unknown = *o;
        }
        return set;
}

static void mechs_free(SaslMech *m, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(m[i].name);
        free(m);
}

static bool mech_allowed(const SaslMech *m, unsigned forbid) {
        if (m->flags & SMTPD_SASL_PRIVATE)
                return false;
        if ((forbid & SMTPD_SASL_MUTUAL_AUTH) && !(m->flags & SMTPD_SASL_MUTUAL_AUTH))
                return false;
        return !(m->flags & forbid & ~(unsigned) SMTPD_SASL_MUTUAL_AUTH);
}

char *smtpd_sasl_mechanisms(SmtpdSasl *sasl, unsigned forbid) {
        static const SaslMech fallback[] = {
                {(char *) "PLAIN", SMTPD_SASL_PLAINTEXT},
                {(char *) "LOGIN", SMTPD_SASL_PLAINTEXT},
        };
        const SaslMech *m = sasl->have_mechs ? sasl->mechs : fallback;
        size_t n = sasl->have_mechs ? sasl->n_mechs : ELEMENTSOF(fallback);
        _cleanup_(strbuf_done) StrBuf b = {0};

        for (size_t i = 0; i < n; i++)
                if (mech_allowed(&m[i], forbid) &&
                    strbuf_printf(&b, "%s%s", b.len ? " " : "", m[i].name) < 0)
                        return NULL;
        return strbuf_steal(&b);
}

int smtpd_sasl_mechanism_check(SmtpdSasl *sasl, const char *mech, unsigned forbid) {
        if (!sasl->have_mechs)
                /* Never talked to the server: let it decide. */
                return 1;
        for (size_t i = 0; i < sasl->n_mechs; i++)
                if (strcaseeq(sasl->mechs[i].name, mech)) {
                        if (sasl->mechs[i].flags & SMTPD_SASL_PRIVATE)
                                return 0;
                        return mech_allowed(&sasl->mechs[i], forbid) ? 1 : -EPERM;
                }
        return 0;
}

static void update_events(SmtpdSasl *sasl) {
        uint32_t want;

        if (!sasl->io)
                return;
        want = sasl->state == SASL_CONNECTING ? EPOLLOUT
                                              : EPOLLIN | (sasl->out.len ? EPOLLOUT : 0);
        if (want != sasl->io_events && sd_event_source_set_io_events(sasl->io, want) >= 0)
                sasl->io_events = want;
}

static void request_unlink(SmtpdSaslRequest *req) {
        SmtpdSasl *sasl = req->sasl;

        if (req->prev)
                req->prev->next = req->next;
        else if (sasl->requests == req)
                sasl->requests = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->prev = req->next = NULL;
}

/* Ends a request: unlinks and frees it, then tells its owner. */
static void request_finish(SmtpdSaslRequest *req, SmtpdSaslResult result, const char *data) {
        SmtpdSaslCallback cb = req->cb;
        void *userdata = req->userdata;

        request_unlink(req);
        free(req);
        cb(userdata, result, data);
}

/* Drops the connection; every request in flight fails temporarily. */
static void disconnect(SmtpdSasl *sasl, const char *why) {
        if (sasl->state != SASL_DOWN)
                log_warning("SASL: connection to the Dovecot auth service %s %s; "
                            "authentications fail temporarily until it is back",
                            sasl->path, why);
        sasl->io = sd_event_source_disable_unref(sasl->io);
        if (sasl->fd >= 0)
                (void) close(sasl->fd);
        sasl->fd = -1;
        sasl->state = SASL_DOWN;
        sasl->io_events = 0;
        strbuf_clear(&sasl->in);
        strbuf_clear(&sasl->out);
        mechs_free(sasl->new_mechs, sasl->n_new_mechs);
        sasl->new_mechs = NULL;
        sasl->n_new_mechs = 0;
        /* A callback may cancel other requests: always take the first. */
        while (sasl->requests)
                request_finish(sasl->requests, SMTPD_SASL_TEMPFAIL, why);
}

static int flush_out(SmtpdSasl *sasl) {
        while (sasl->out.len > 0) {
                ssize_t k = send(sasl->fd, sasl->out.data, sasl->out.len, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return -errno;
                }
                memmove(sasl->out.data, sasl->out.data + k, sasl->out.len - (size_t) k);
                sasl->out.len -= (size_t) k;
                sasl->out.data[sasl->out.len] = 0;
        }
        return 0;
}

/* Undoes Dovecot's tab escaping (\001 followed by 1, t, r, n or 0) in place. */
static void tab_unescape(char *s) {
        char *w = s;
        for (char *p = s; *p; p++) {
                if (*p == '\001' && p[1]) {
                        p++;
                        *w++ = *p == 't' ? '\t' : *p == 'r' ? '\r' : *p == 'n' ? '\n'
                              : *p == '1' ? '\001' : '?';
                } else
                        *w++ = *p;
        }
        *w = 0;
}

static SmtpdSaslRequest *request_find(SmtpdSasl *sasl, const char *id) {
        char *end;
        unsigned long v = strtoul(id, &end, 10);
        if (*end || end == id)
                return NULL;
        for (SmtpdSaslRequest *r = sasl->requests; r; r = r->next)
                if (r->id == v)
                        return r;
        return NULL;
}

/* One line from the server, split at tabs. Returns 0 or a negative errno
 * (protocol error: disconnect). */
static int handle_line(SmtpdSasl *sasl, char *line) {
        _cleanup_strv_free_ char **f = NULL;
        char *p = line, *tab;
        SmtpdSaslRequest *req;
        size_t n;

        for (;;) {
                tab = strchr(p, '\t');
                if (tab)
                        *tab = 0;
                if (strv_extend(&f, p) < 0)
                        return -ENOMEM;
                if (!tab)
                        break;
                p = tab + 1;
        }
        n = strv_length(f);

        if (streq(f[0], "VERSION")) {
                /* Major 1 is what we speak; minor versions add fields. */
                if (n < 2 || !streq(f[1], "1"))
                        return -EPROTONOSUPPORT;
                return 0;
        }
        if (streq(f[0], "MECH") && sasl->state == SASL_HANDSHAKE) {
                SaslMech *m;
                unsigned flags = 0;
                if (n < 2)
                        return 0;
                for (size_t i = 2; i < n; i++)
                        for (size_t j = 0; j < ELEMENTSOF(mech_flags); j++)
                                if (streq(f[i], mech_flags[j].name))
                                        flags |= mech_flags[j].flag;
                m = realloc(sasl->new_mechs, (sasl->n_new_mechs + 1) * sizeof(SaslMech));
                if (!m)
                        return -ENOMEM;
                sasl->new_mechs = m;
                m[sasl->n_new_mechs].name = strdup(f[1]);
                if (!m[sasl->n_new_mechs].name)
                        return -ENOMEM;
                m[sasl->n_new_mechs++].flags = flags;
                return 0;
        }
        if (streq(f[0], "DONE") && sasl->state == SASL_HANDSHAKE) {
                mechs_free(sasl->mechs, sasl->n_mechs);
                sasl->mechs = steal_ptr(sasl->new_mechs);
                sasl->n_mechs = sasl->n_new_mechs;
                sasl->n_new_mechs = 0;
                sasl->have_mechs = true;
                sasl->state = SASL_READY;
                log_debug("SASL: connected to %s, %zu mechanisms", sasl->path, sasl->n_mechs);
                return 0;
        }
        if (n < 2 || !(streq(f[0], "OK") || streq(f[0], "FAIL") || streq(f[0], "CONT")))
                return 0;       /* SPID, CUID, COOKIE and what later versions add */
        req = request_find(sasl, f[1]);
        if (!req)
                return 0;       /* cancelled meanwhile */
        if (streq(f[0], "CONT")) {
                req->cb(req->userdata, SMTPD_SASL_CONTINUE, n > 2 ? f[2] : "");
                return 0;
        }
        if (streq(f[0], "OK")) {
                const char *user = NULL;
                for (size_t i = 2; i < n; i++)
                        if (startswith(f[i], "user=")) {
                                tab_unescape(f[i]);
                                user = f[i] + 5;
                        }
                if (isempty(user))
                        request_finish(req, SMTPD_SASL_TEMPFAIL, "no user name in the reply");
                else
                        request_finish(req, SMTPD_SASL_OK, user);
                return 0;
        }
        /* FAIL: "temp" marks a server-side problem. */
        {
                const char *reason = NULL;
                bool temp = false;
                for (size_t i = 2; i < n; i++) {
                        if (startswith(f[i], "reason=")) {
                                tab_unescape(f[i]);
                                reason = f[i] + 7;
                        } else if (streq(f[i], "temp"))
                                temp = true;
                }
                request_finish(req, temp ? SMTPD_SASL_TEMPFAIL : SMTPD_SASL_FAIL,
                               isempty(reason) ? NULL : reason);
        }
        return 0;
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        SmtpdSasl *sasl = userdata;
        int r;

        if (sasl->state == SASL_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof(err);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err) {
                        disconnect(sasl, strerror(err));
                        return 0;
                }
                sasl->state = SASL_HANDSHAKE;
        }
        if (revents & EPOLLOUT) {
                r = flush_out(sasl);
                if (r < 0) {
                        disconnect(sasl, "failed (write error)");
                        return 0;
                }
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t k;
                char *nl;

                if (strbuf_reserve(&sasl->in, 4096) < 0) {
                        disconnect(sasl, "failed (out of memory)");
                        return 0;
                }
                k = recv(fd, sasl->in.data + sasl->in.len, sasl->in.cap - sasl->in.len - 1, 0);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        goto out;
                if (k <= 0) {
                        disconnect(sasl, "was closed");
                        return 0;
                }
                sasl->in.len += (size_t) k;
                sasl->in.data[sasl->in.len] = 0;
                /* A callback may free the whole client only at shutdown,
                 * which never happens from here. */
                while (sasl->state != SASL_DOWN &&
                       (nl = memchr(sasl->in.data, '\n', sasl->in.len))) {
                        size_t used = (size_t) (nl - sasl->in.data) + 1;
                        _cleanup_free_ char *line = strndup(sasl->in.data, used - 1);
                        if (!line) {
                                disconnect(sasl, "failed (out of memory)");
                                return 0;
                        }
                        memmove(sasl->in.data, sasl->in.data + used, sasl->in.len - used);
                        sasl->in.len -= used;
                        sasl->in.data[sasl->in.len] = 0;
                        r = handle_line(sasl, line);
                        if (r < 0) {
                                disconnect(sasl, r == -EPROTONOSUPPORT
                                                         ? "speaks an unsupported protocol version"
                                                         : "sent a bad reply");
                                return 0;
                        }
                }
                if (sasl->in.len > SASL_LINE_MAX) {
                        disconnect(sasl, "sent an overlong line");
                        return 0;
                }
        }
out:
        update_events(sasl);
        return 0;
}

static int sasl_connect(SmtpdSasl *sasl) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd, r;

        if (sasl->state != SASL_DOWN)
                return 0;
        if (strlen(sasl->path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, sasl->path, strlen(sasl->path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EINPROGRESS &&
            errno != EAGAIN) {
                r = -errno;
                (void) close(fd);
                return r;
        }
        r = sd_event_add_io(sasl->event, &sasl->io, fd, EPOLLOUT, on_io, sasl);
        if (r < 0) {
                (void) close(fd);
                return r;
        }
        sasl->fd = fd;
        sasl->io_events = EPOLLOUT;
        sasl->state = SASL_CONNECTING;
        strbuf_clear(&sasl->in);
        strbuf_clear(&sasl->out);
        r = strbuf_printf(&sasl->out, "VERSION\t1\t2\nCPID\t%d\n", (int) getpid());
        if (r < 0) {
                disconnect(sasl, "failed (out of memory)");
                return r;
        }
        return 0;
}

void smtpd_sasl_kick(SmtpdSasl *sasl) {
        int r = sasl_connect(sasl);
        if (r < 0)
                log_debug("SASL: cannot connect to %s: %s", sasl->path, strerror(-r));
}

int smtpd_sasl_new(sd_event *event, const char *path, const char *service, SmtpdSasl **ret) {
        SmtpdSasl *sasl = calloc(1, sizeof(*sasl));

        if (!sasl)
                return -ENOMEM;
        sasl->fd = -1;
        sasl->event = sd_event_ref(event);
        sasl->path = strdup(path);
        sasl->service = strdup(service);
        if (!sasl->path || !sasl->service) {
                smtpd_sasl_free(sasl);
                return -ENOMEM;
        }
        smtpd_sasl_kick(sasl);
        *ret = sasl;
        return 0;
}

SmtpdSasl *smtpd_sasl_free(SmtpdSasl *sasl) {
        if (!sasl)
                return NULL;
        /* Owners cancel their requests first; free what is left silently. */
        while (sasl->requests) {
                SmtpdSaslRequest *req = sasl->requests;
                request_unlink(req);
                free(req);
        }
        sd_event_source_disable_unref(sasl->io);
        if (sasl->fd >= 0)
                (void) close(sasl->fd);
        strbuf_done(&sasl->in);
        strbuf_done(&sasl->out);
        mechs_free(sasl->mechs, sasl->n_mechs);
        mechs_free(sasl->new_mechs, sasl->n_new_mechs);
        sd_event_unref(sasl->event);
        free(sasl->path);
        free(sasl->service);
        free(sasl);
        return NULL;
}

static bool is_base64(const char *s) {
        /* Also the protocol's safety: no tab or newline reaches the server. */
        for (; *s; s++)
                if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
                      (*s >= '0' && *s <= '9') || *s == '+' || *s == '/' || *s == '='))
                        return false;
        return true;
}

static bool is_mech_name(const char *s) {
        /* RFC 4422 3.1: upper-case letters, digits, "-" and "_", 1-20 chars. */
        size_t n = strlen(s);
        if (n == 0 || n > 20)
                return false;
        for (; *s; s++)
                if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
                      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
                        return false;
        return true;
}

static int queue_line(SmtpdSasl *sasl, const char *line) {
        int r;

        if (sasl->out.len + strlen(line) > SASL_OUT_MAX)
                return -ENOBUFS;
        r = strbuf_puts(&sasl->out, line);
        if (r < 0)
                return r;
        if (sasl->state == SASL_HANDSHAKE || sasl->state == SASL_READY) {
                r = flush_out(sasl);
                if (r < 0) {
                        /* Reported through the callbacks, from the loop. */
                        (void) sd_event_source_set_io_events(sasl->io, EPOLLIN | EPOLLOUT);
                        sasl->io_events = EPOLLIN | EPOLLOUT;
                        return 0;
                }
        }
        update_events(sasl);
        return 0;
}

int smtpd_sasl_start(SmtpdSasl *sasl, const char *mech, const char *initial,
                     const SmtpdSaslClient *client, SmtpdSaslCallback cb, void *userdata,
                     SmtpdSaslRequest **ret) {
        _cleanup_free_ char *line = NULL, *upper = NULL;
        SmtpdSaslRequest *req;
        int r;

        if (!is_mech_name(mech) || (initial && !is_base64(initial)))
                return -EINVAL;
        r = sasl_connect(sasl);
        if (r < 0)
                return -ENOTCONN;
        upper = strdup(mech);
        if (!upper)
                return -ENOMEM;
        for (char *p = upper; *p; p++)
                if (*p >= 'a' && *p <= 'z')
                        *p = (char) (*p - 'a' + 'A');
        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->sasl = sasl;
        req->id = ++sasl->next_id;
        if (req->id == 0)
                req->id = ++sasl->next_id;
        req->cb = cb;
        req->userdata = userdata;
        /* Postfix's fields: nologin (only check the credentials), secured
         * over TLS, the addresses for Dovecot's logs and checks. */
        line = strdup_printf("AUTH\t%u\t%s\tservice=%s\tnologin%s%s%s%s%s\tlport=%u\trport=%u%s%s\n",
                             req->id, upper, sasl->service, client->secured ? "\tsecured" : "",
                             client->local_ip ? "\tlip=" : "", strempty(client->local_ip),
                             client->remote_ip ? "\trip=" : "", strempty(client->remote_ip),
                             client->local_port, client->remote_port, initial ? "\tresp=" : "",
                             strempty(initial));
        if (!line) {
                free(req);
                return -ENOMEM;
        }
        r = queue_line(sasl, line);
        if (r < 0) {
                free(req);
                return r == -ENOMEM ? r : -ENOTCONN;
        }
        req->next = sasl->requests;
        if (sasl->requests)
                sasl->requests->prev = req;
        sasl->requests = req;
        *ret = req;
        return 0;
}

int smtpd_sasl_continue(SmtpdSaslRequest *req, const char *response) {
        _cleanup_free_ char *line = NULL;
        int r;

        if (!is_base64(response))
                return -EINVAL;
        if (req->sasl->state == SASL_DOWN)
                return -ENOTCONN;
        line = strdup_printf("CONT\t%u\t%s\n", req->id, response);
        if (!line)
                return -ENOMEM;
        r = queue_line(req->sasl, line);
        return r == -ENOBUFS ? -ENOTCONN : r;
}

SmtpdSaslRequest *smtpd_sasl_cancel(SmtpdSaslRequest *req) {
        if (!req)
                return NULL;
        /* Dovecot times the request out on its side; a late answer finds no
         * id and is dropped. */
        request_unlink(req);
        free(req);
        return NULL;
}
