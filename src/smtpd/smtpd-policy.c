/* smtpd-policy.c: asynchronous policy delegation queries (see
 * smtpd-policy.h). Entry points: policy_query_start(),
 * policy_query_cancel(). The reply is capped (POLICY_REPLY_MAX): a server
 * that talks more is treated as broken. */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "smtpd-policy.h"
#include "strutil.h"

#define POLICY_REPLY_MAX (64 * 1024)

struct PolicyQuery {
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        StrBuf out;
        size_t out_pos;
        StrBuf in;
        PolicyDoneFunc done;
        void *userdata;
};

static PolicyQuery *query_free(PolicyQuery *q) {
        if (!q)
                return NULL;
        sd_event_source_disable_unref(q->io);
        sd_event_source_disable_unref(q->timer);
        if (q->fd >= 0)
                close(q->fd);
        strbuf_done(&q->out);
        strbuf_done(&q->in);
        free(q);
        return NULL;
}

PolicyQuery *policy_query_cancel(PolicyQuery *q) {
        return query_free(q);
}

static void finish(PolicyQuery *q, int r, const char *action) {
        PolicyDoneFunc done = q->done;
        void *ud = q->userdata;
        /* Stop the sources before the callback, which may start a new query. */
        q->io = sd_event_source_disable_unref(q->io);
        q->timer = sd_event_source_disable_unref(q->timer);
        done(q, r, action, ud);
        query_free(q);
}

/* Parses the reply once it ends in an empty line. Returns 1 with *ret_action
 * pointing into q->in, 0 when incomplete, -EPROTO without an action. */
static int parse_reply(PolicyQuery *q, const char **ret_action) {
        char *end = strstr(q->in.data, "\n\n");
        const char *action = NULL;

        if (!end)
                return 0;
        end[1] = 0;
        for (char *line = q->in.data, *nl; line < end + 1; line = nl + 1) {
                nl = strchr(line, '\n');
                *nl = 0;
                if (!action && startswith(line, "action="))
                        action = line + strlen("action=");
        }
        if (isempty(action))
                return -EPROTO;
        *ret_action = action;
        return 1;
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        PolicyQuery *q = userdata;

        if (q->out_pos < q->out.len) {
                ssize_t k;
                if (revents & (EPOLLERR | EPOLLHUP) && !(revents & EPOLLOUT)) {
                        finish(q, -ECONNREFUSED, NULL);
                        return 0;
                }
                k = send(q->fd, q->out.data + q->out_pos, q->out.len - q->out_pos, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        finish(q, -errno, NULL);
                        return 0;
                }
                q->out_pos += (size_t) k;
                if (q->out_pos == q->out.len)
                        (void) sd_event_source_set_io_events(q->io, EPOLLIN);
                return 0;
        }
        for (;;) {
                const char *action = NULL;
                ssize_t k;
                int r;
                if (strbuf_reserve(&q->in, 4096 + 1) < 0) {
                        finish(q, -ENOMEM, NULL);
                        return 0;
                }
                k = recv(q->fd, q->in.data + q->in.len, 4096, 0);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        finish(q, -errno, NULL);
                        return 0;
                }
                if (k == 0) {
                        finish(q, -ECONNRESET, NULL);
                        return 0;
                }
                q->in.len += (size_t) k;
                q->in.data[q->in.len] = 0;
                if (memchr(q->in.data, 0, q->in.len)) {
                        finish(q, -EPROTO, NULL);
                        return 0;
                }
                r = parse_reply(q, &action);
                if (r != 0) {
                        finish(q, r, action);
                        return 0;
                }
                if (q->in.len > POLICY_REPLY_MAX) {
                        finish(q, -EPROTO, NULL);
                        return 0;
                }
        }
}

static int on_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        finish(userdata, -ETIMEDOUT, NULL);
        return 0;
}

/* Host names of inet: endpoints ("inet:localhost:10023", as Postfix
 * allows) are resolved with getaddrinfo(), which blocks: the answer is kept
 * for NAME_TTL_SEC so that only the first query in a while waits (names of
 * policy servers are normally in /etc/hosts). Process-wide, one entry per
 * endpoint; few endpoints exist. */
#define NAME_TTL_SEC 300
#define NAME_CACHE_MAX 8

static struct {
        char *host, *port;
        struct sockaddr_storage sa;
        socklen_t len;
        int family;
        time_t when;
} name_cache[NAME_CACHE_MAX];

static int resolve_inet(const char *host, const char *port, struct sockaddr_storage *ret_sa,
                        socklen_t *ret_len, int *ret_family) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        time_t now = time(NULL);
        size_t slot = 0;

        if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
                for (size_t i = 0; i < NAME_CACHE_MAX; i++) {
                        if (name_cache[i].host && streq(name_cache[i].host, host) &&
                            streq(name_cache[i].port, port) &&
                            now - name_cache[i].when < NAME_TTL_SEC) {
                                *ret_sa = name_cache[i].sa;
                                *ret_len = name_cache[i].len;
                                *ret_family = name_cache[i].family;
                                return 0;
                        }
                        if (name_cache[i].when < name_cache[slot].when)
                                slot = i;
                }
                hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
                ai = NULL;
                if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
                        return -EINVAL;
                free(name_cache[slot].host);
                free(name_cache[slot].port);
                name_cache[slot].host = strdup(host);
                name_cache[slot].port = strdup(port);
                if (name_cache[slot].host && name_cache[slot].port &&
                    ai->ai_addrlen <= sizeof(name_cache[slot].sa)) {
                        memcpy(&name_cache[slot].sa, ai->ai_addr, ai->ai_addrlen);
                        name_cache[slot].len = ai->ai_addrlen;
                        name_cache[slot].family = ai->ai_family;
                        name_cache[slot].when = now;
                } else
                        name_cache[slot].when = 0;
        }
        if (ai->ai_addrlen > sizeof(*ret_sa)) {
                freeaddrinfo(ai);
                return -EINVAL;
        }
        memcpy(ret_sa, ai->ai_addr, ai->ai_addrlen);
        *ret_len = ai->ai_addrlen;
        *ret_family = ai->ai_family;
        freeaddrinfo(ai);
        return 0;
}

/* Opens a non-blocking socket and starts connecting to endpoint. */
static int endpoint_connect(const char *endpoint, int *ret_fd) {
        const char *path = startswith(endpoint, "unix:");
        const char *inet = startswith(endpoint, "inet:");
        int fd, r;

        if (!path && endpoint[0] == '/')
                path = endpoint;
        if (path) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                if (strlen(path) >= sizeof(sa.sun_path) || !*path)
                        return -EINVAL;
                strcpy(sa.sun_path, path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return -errno;
                r = connect(fd, (struct sockaddr *) &sa, sizeof(sa));
        } else if (inet) {
                _cleanup_free_ char *host = NULL;
                const char *colon = strrchr(inet, ':');
                struct sockaddr_storage sa;
                socklen_t len;
                int family;
                if (!colon || colon == inet || !colon[1])
                        return -EINVAL;
                host = inet[0] == '[' && colon[-1] == ']' ? strndup(inet + 1, (size_t) (colon - inet - 2))
                                                           : strndup(inet, (size_t) (colon - inet));
                if (!host)
                        return -ENOMEM;
                r = resolve_inet(host, colon + 1, &sa, &len, &family);
                if (r < 0)
                        return r;
                fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return -errno;
                r = connect(fd, (struct sockaddr *) &sa, len);
        } else
                return -EINVAL;
        if (r < 0 && errno != EINPROGRESS && errno != EAGAIN) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

int policy_query_start(sd_event *event, const char *endpoint, uint64_t timeout_usec,
                       const char *request, PolicyDoneFunc done, void *userdata,
                       PolicyQuery **ret) {
        PolicyQuery *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->fd = -1;
        q->done = done;
        q->userdata = userdata;
        r = endpoint_connect(endpoint, &q->fd);
        if (r < 0)
                goto fail;
        if (strbuf_puts(&q->out, request) < 0 || strbuf_puts(&q->out, "\n") < 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = sd_event_add_io(event, &q->io, q->fd, EPOLLOUT, on_io, q);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(event, &q->timer, CLOCK_MONOTONIC, timeout_usec, 0,
                                       on_timeout, q);
        if (r < 0)
                goto fail;
        *ret = q;
        return 0;
fail:
        query_free(q);
        return r;
}
