/* queue-file.c: writing, reading and updating queue files (see
 * queue-file.h and postern-queue(5)). Logs nothing; callers decide. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "queue-file.h"

#define WRITE_BUFFER_SIZE (64 * 1024)

void queue_envelope_clear_rcpts(QueueEnvelope *e) {
        for (size_t i = 0; i < e->n_rcpts; i++) {
                free(e->rcpts[i].address);
                free(e->rcpts[i].orcpt);
                free(e->rcpts[i].orig);
                free(e->rcpts[i].canon);
        }
        free(e->rcpts);
        e->rcpts = NULL;
        e->n_rcpts = 0;
}

void queue_envelope_done(QueueEnvelope *e) {
        queue_envelope_clear_rcpts(e);
        free(e->sender);
        free(e->envid);
        free(e->client_name);
        free(e->client_addr);
        free(e->helo);
        free(e->protocol);
        free(e->service);
        free(e->tls);
        free(e->sasl_method);
        free(e->sasl_username);
        free(e->fullname);
        free(e->submit_uid);
        *e = (QueueEnvelope) {0};
}

int queue_envelope_set_orig(QueueEnvelope *e, size_t i, const char *orig) {
        char *o = NULL;
        if (i >= e->n_rcpts)
                return -EINVAL;
        if (orig && !(o = strdup(orig)))
                return -ENOMEM;
        free(e->rcpts[i].orig);
        e->rcpts[i].orig = o;
        return 0;
}

int queue_envelope_set_canon(QueueEnvelope *e, size_t i, const char *canon) {
        char *o = NULL;
        if (i >= e->n_rcpts)
                return -EINVAL;
        if (canon && !(o = strdup(canon)))
                return -ENOMEM;
        free(e->rcpts[i].canon);
        e->rcpts[i].canon = o;
        return 0;
}

static int dup_field(char **dst, const char *src) {
        *dst = NULL;
        if (src && !(*dst = strdup(src)))
                return -ENOMEM;
        return 0;
}

int queue_envelope_copy(const QueueEnvelope *e, QueueEnvelope *ret) {
        QueueEnvelope c = *e;
        int r = 0;

        c.rcpts = NULL;
        c.n_rcpts = 0;
        if (dup_field(&c.sender, e->sender) < 0 || dup_field(&c.envid, e->envid) < 0 ||
            dup_field(&c.client_name, e->client_name) < 0 ||
            dup_field(&c.client_addr, e->client_addr) < 0 || dup_field(&c.helo, e->helo) < 0 ||
            dup_field(&c.protocol, e->protocol) < 0 || dup_field(&c.service, e->service) < 0 ||
            dup_field(&c.tls, e->tls) < 0 || dup_field(&c.sasl_method, e->sasl_method) < 0 ||
            dup_field(&c.sasl_username, e->sasl_username) < 0 ||
            dup_field(&c.fullname, e->fullname) < 0 || dup_field(&c.submit_uid, e->submit_uid) < 0)
                r = -ENOMEM;
        for (size_t i = 0; r == 0 && i < e->n_rcpts; i++) {
                r = queue_envelope_add_rcpt(&c, e->rcpts[i].address, e->rcpts[i].notify,
                                            e->rcpts[i].orcpt);
                if (r == 0)
                        r = queue_envelope_set_orig(&c, i, e->rcpts[i].orig);
                if (r == 0)
                        r = queue_envelope_set_canon(&c, i, e->rcpts[i].canon);
                if (r == 0) {
                        c.rcpts[i].status = e->rcpts[i].status;
                        c.rcpts[i].status_offset = e->rcpts[i].status_offset;
                }
        }
        if (r < 0) {
                queue_envelope_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

int queue_envelope_add_rcpt(QueueEnvelope *e, const char *address, unsigned notify,
                            const char *orcpt) {
        QueueRecipient *n;
        char *a, *o = NULL;

        a = strdup(address);
        if (!a)
                return -ENOMEM;
        if (orcpt && !(o = strdup(orcpt))) {
                free(a);
                return -ENOMEM;
        }
        n = reallocarray(e->rcpts, e->n_rcpts + 1, sizeof(QueueRecipient));
        if (!n) {
                free(a);
                free(o);
                return -ENOMEM;
        }
        e->rcpts = n;
        e->rcpts[e->n_rcpts++] = (QueueRecipient) {
                .address = a,
                .orcpt = o,
                .notify = notify,
                .status = QUEUE_RCPT_PENDING,
        };
        return 0;
}

static const struct {
        unsigned bit;
        const char *name;
} notify_names[] = {
        {QUEUE_NOTIFY_NEVER, "NEVER"},
        {QUEUE_NOTIFY_SUCCESS, "SUCCESS"},
        {QUEUE_NOTIFY_FAILURE, "FAILURE"},
        {QUEUE_NOTIFY_DELAY, "DELAY"},
};

const char *queue_notify_to_string(unsigned notify, char buf[static 32]) {
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(notify_names); i++)
                if (notify & notify_names[i].bit) {
                        if (buf[0])
                                strcat(buf, ",");
                        strcat(buf, notify_names[i].name);
                }
        if (!buf[0])
                strcpy(buf, "-");
        return buf;
}

int queue_notify_from_string(const char *s) {
        unsigned bits = 0;
        const char *p = s;

        if (!*s)
                return -EINVAL;
        while (*p) {
                size_t n = strcspn(p, ",");
                bool found = false;
                for (size_t i = 0; i < ELEMENTSOF(notify_names); i++)
                        if (strlen(notify_names[i].name) == n &&
                            strncasecmp(p, notify_names[i].name, n) == 0) {
                                if (bits & notify_names[i].bit)
                                        return -EINVAL;
                                bits |= notify_names[i].bit;
                                found = true;
                        }
                if (!found)
                        return -EINVAL;
                p += n;
                if (*p == ',' && !*++p)
                        return -EINVAL;
        }
        /* RFC 3461 4.1: NEVER excludes the others. */
        if ((bits & QUEUE_NOTIFY_NEVER) && bits != QUEUE_NOTIFY_NEVER)
                return -EINVAL;
        return (int) bits;
}

static bool value_ok(const char *v) {
        size_t n = strlen(v);
        return n <= QUEUE_FILE_VALUE_MAX && !memchr(v, '\n', n);
}

static int put(StrBuf *out, const char *key, const char *value) {
        if (!value)
                return 0;
        if (!value_ok(value))
                return -EINVAL;
        return strbuf_printf(out, "%s=%s\n", key, value);
}

static const char *ret_names[] = {
        [QUEUE_RET_NONE] = NULL,
        [QUEUE_RET_FULL] = "FULL",
        [QUEUE_RET_HDRS] = "HDRS",
};

int queue_envelope_format(const QueueEnvelope *e, StrBuf *out) {
        int r;

        if (!queue_id_valid(e->queue_id) || !e->sender)
                return -EINVAL;
        r = strbuf_printf(out, "id=%s\ntime=%lld.%06ld\nsize=%" PRIu64 "\n", e->queue_id,
                          (long long) e->arrival.tv_sec, (long) e->arrival.tv_usec,
                          e->content_size);
        if (r < 0)
                return r;
        if ((r = put(out, "sender", e->sender)) < 0 || (r = put(out, "ret", ret_names[e->ret])) < 0 ||
            (r = put(out, "envid", e->envid)) < 0 ||
            (r = put(out, "body", e->body_8bitmime ? "8BITMIME" : "7BIT")) < 0 ||
            (r = put(out, "smtputf8", e->smtputf8 ? "yes" : NULL)) < 0 ||
            (r = put(out, "client_name", e->client_name)) < 0 ||
            (r = put(out, "client_addr", e->client_addr)) < 0)
                return r;
        if (e->client_port && (r = strbuf_printf(out, "client_port=%u\n", e->client_port)) < 0)
                return r;
        if ((r = put(out, "helo", e->helo)) < 0 || (r = put(out, "protocol", e->protocol)) < 0 ||
            (r = put(out, "service", e->service)) < 0 || (r = put(out, "tls", e->tls)) < 0 ||
            (r = put(out, "sasl_method", e->sasl_method)) < 0 ||
            (r = put(out, "sasl_username", e->sasl_username)) < 0 ||
            (r = put(out, "fullname", e->fullname)) < 0 || (r = put(out, "uid", e->submit_uid)) < 0)
                return r;
        for (size_t i = 0; i < e->n_rcpts; i++) {
                const QueueRecipient *rc = &e->rcpts[i];
                char nbuf[32];
                /* ORCPT is xtext (RFC 3461 4.2): no blanks, so fields stay apart. */
                if (!value_ok(rc->address) || (rc->orcpt && !value_ok(rc->orcpt)) ||
                    (rc->orcpt && (strpbrk(rc->orcpt, " \t") || !*rc->orcpt)) ||
                    !rc->address[0] || rc->status == '\n' || rc->status == 0)
                        return -EINVAL;
                r = strbuf_printf(out, "rcpt=%c %s %s %s\n", rc->status,
                                  queue_notify_to_string(rc->notify, nbuf),
                                  rc->orcpt ? rc->orcpt : "-", rc->address);
                if (r < 0)
                        return r;
                /* The pre-expansion address follows its recipient; readers
                 * that predate it skip the key. */
                if (rc->orig && (!rc->orig[0] || (r = put(out, "orig", rc->orig)) < 0))
                        return rc->orig[0] ? r : -EINVAL;
                if (rc->canon && (!rc->canon[0] || (r = put(out, "canon", rc->canon)) < 0))
                        return rc->canon[0] ? r : -EINVAL;
        }
        return strbuf_puts(out, "end=\n");
}

static int set_str(char **field, const char *v) {
        char *s = strdup(v);
        if (!s)
                return -ENOMEM;
        free(*field);
        *field = s;
        return 0;
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;
        if (!*s || *s < '0' || *s > '9')
                return -EBADMSG;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static int parse_rcpt(const char *v, uint64_t status_offset, QueueEnvelope *e) {
        const char *notify, *orcpt, *addr;
        char nbuf[64], obuf[QUEUE_FILE_VALUE_MAX + 1];
        size_t n;
        int bits = 0, r;

        /* "S NOTIFY ORCPT ADDRESS" */
        if (!v[0] || v[1] != ' ')
                return -EBADMSG;
        notify = v + 2;
        n = strcspn(notify, " ");
        if (notify[n] != ' ' || n == 0 || n >= sizeof(nbuf))
                return -EBADMSG;
        memcpy(nbuf, notify, n);
        nbuf[n] = 0;
        orcpt = notify + n + 1;
        if (!streq(nbuf, "-")) {
                bits = queue_notify_from_string(nbuf);
                if (bits < 0)
                        return -EBADMSG;
        }
        n = strcspn(orcpt, " ");
        if (orcpt[n] != ' ' || n == 0 || n >= sizeof(obuf))
                return -EBADMSG;
        memcpy(obuf, orcpt, n);
        obuf[n] = 0;
        addr = orcpt + n + 1;
        if (!*addr)
                return -EBADMSG;
        r = queue_envelope_add_rcpt(e, addr, (unsigned) bits, streq(obuf, "-") ? NULL : obuf);
        if (r < 0)
                return r;
        e->rcpts[e->n_rcpts - 1].status = v[0];
        e->rcpts[e->n_rcpts - 1].status_offset = status_offset;
        return 0;
}

int queue_envelope_parse(const char *text, size_t len, uint64_t base, QueueEnvelope *ret) {
        QueueEnvelope e = {0};
        bool have_id = false, have_time = false, have_sender = false, have_end = false;
        size_t pos = 0;
        int r = 0;

        while (pos < len) {
                const char *line = text + pos, *nl, *eq;
                char key[32], value[QUEUE_FILE_VALUE_MAX + 1];
                size_t line_len, klen;

                if (have_end) {
                        r = -EBADMSG;           /* nothing may follow "end=" */
                        goto fail;
                }
                nl = memchr(line, '\n', len - pos);
                if (!nl) {
                        r = -EBADMSG;
                        goto fail;
                }
                line_len = (size_t) (nl - line);
                eq = memchr(line, '=', line_len);
                if (!eq || memchr(line, 0, line_len)) {
                        r = -EBADMSG;
                        goto fail;
                }
                klen = (size_t) (eq - line);
                if (klen == 0 || klen >= sizeof(key) || line_len - klen - 1 > QUEUE_FILE_VALUE_MAX) {
                        r = -EBADMSG;
                        goto fail;
                }
                memcpy(key, line, klen);
                key[klen] = 0;
                memcpy(value, eq + 1, line_len - klen - 1);
                value[line_len - klen - 1] = 0;

                if (streq(key, "id")) {
                        if (!queue_id_valid(value)) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        memcpy(e.queue_id, value, QUEUE_ID_SIZE);
                        have_id = true;
                } else if (streq(key, "time")) {
                        long long sec;
                        long usec;
                        int consumed = 0;
                        if (sscanf(value, "%lld.%6ld%n", &sec, &usec, &consumed) != 2 ||
                            value[consumed] || sec < 0 || usec < 0 || usec >= 1000000) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        e.arrival.tv_sec = (time_t) sec;
                        e.arrival.tv_usec = (suseconds_t) usec;
                        have_time = true;
                } else if (streq(key, "size")) {
                        if ((r = parse_u64(value, &e.content_size)) < 0)
                                goto fail;
                } else if (streq(key, "sender")) {
                        if ((r = set_str(&e.sender, value)) < 0)
                                goto fail;
                        have_sender = true;
                } else if (streq(key, "ret")) {
                        if (streq(value, "FULL"))
                                e.ret = QUEUE_RET_FULL;
                        else if (streq(value, "HDRS"))
                                e.ret = QUEUE_RET_HDRS;
                        else {
                                r = -EBADMSG;
                                goto fail;
                        }
                } else if (streq(key, "body")) {
                        e.body_8bitmime = streq(value, "8BITMIME");
                } else if (streq(key, "smtputf8")) {
                        e.smtputf8 = streq(value, "yes");
                } else if (streq(key, "client_port")) {
                        uint64_t p;
                        if ((r = parse_u64(value, &p)) < 0 || p > 65535) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        e.client_port = (unsigned) p;
                } else if (streq(key, "rcpt")) {
                        r = parse_rcpt(value, base + pos + klen + 1, &e);
                        if (r < 0)
                                goto fail;
                } else if (streq(key, "orig")) {
                        /* Belongs to the recipient just before it. */
                        if (e.n_rcpts == 0 || e.rcpts[e.n_rcpts - 1].orig || !value[0]) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        if ((r = queue_envelope_set_orig(&e, e.n_rcpts - 1, value)) < 0)
                                goto fail;
                } else if (streq(key, "canon")) {
                        if (e.n_rcpts == 0 || e.rcpts[e.n_rcpts - 1].canon || !value[0]) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        if ((r = queue_envelope_set_canon(&e, e.n_rcpts - 1, value)) < 0)
                                goto fail;
                } else if (streq(key, "end")) {
                        have_end = true;
                } else {
                        static const struct {
                                const char *key;
                                size_t off;
                        } strs[] = {
                                {"envid", offsetof(QueueEnvelope, envid)},
                                {"client_name", offsetof(QueueEnvelope, client_name)},
                                {"client_addr", offsetof(QueueEnvelope, client_addr)},
                                {"helo", offsetof(QueueEnvelope, helo)},
                                {"protocol", offsetof(QueueEnvelope, protocol)},
                                {"service", offsetof(QueueEnvelope, service)},
                                {"tls", offsetof(QueueEnvelope, tls)},
                                {"sasl_method", offsetof(QueueEnvelope, sasl_method)},
                                {"sasl_username", offsetof(QueueEnvelope, sasl_username)},
                                {"fullname", offsetof(QueueEnvelope, fullname)},
                                {"uid", offsetof(QueueEnvelope, submit_uid)},
                        };
                        /* Unknown keys are skipped: later writers of version 1 may add facts. */
                        for (size_t i = 0; i < ELEMENTSOF(strs); i++)
                                if (streq(key, strs[i].key)) {
                                        r = set_str((char **) ((char *) &e + strs[i].off), value);
                                        if (r < 0)
                                                goto fail;
                                }
                }
                pos += line_len + 1;
        }
        if (!have_id || !have_time || !have_sender || !have_end || e.n_rcpts == 0) {
                r = -EBADMSG;
                goto fail;
        }
        *ret = e;
        return 0;
fail:
        queue_envelope_done(&e);
        return r == -ENOMEM ? r : -EBADMSG;
}

struct QueueWriter {
        int fd;
        int dir_fd;             /* borrowed */
        char queue_id[QUEUE_ID_SIZE];
        char tmp_name[QUEUE_ID_SIZE + 1];
        bool committed;
        int error;
        uint64_t size;          /* content bytes */
        uint64_t written;       /* file bytes written so far */
        StrBuf buf;
};

int queue_writer_new(int dir_fd, const char *queue_id, QueueWriter **ret) {
        QueueWriter *w;
        static const char zeros[QUEUE_FILE_HEADER_SIZE];
        int r;

        if (!queue_id_valid(queue_id))
                return -EINVAL;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->dir_fd = dir_fd;
        memcpy(w->queue_id, queue_id, QUEUE_ID_SIZE);
        w->tmp_name[0] = '.';
        memcpy(w->tmp_name + 1, queue_id, QUEUE_ID_SIZE);
        w->fd = openat(dir_fd, w->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                       0600);
        if (w->fd < 0) {
                r = -errno;
                free(w);
                return r;
        }
        /* The header is rewritten at the end; reserve its space. */
        r = strbuf_append(&w->buf, zeros, sizeof(zeros));
        if (r < 0) {
                queue_writer_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

static int writer_flush(QueueWriter *w) {
        int r;
        if (w->error)
                return w->error;
        if (w->buf.len == 0)
                return 0;
        r = write_all(w->fd, w->buf.data, w->buf.len);
        if (r < 0)
                return (w->error = r);
        w->written += w->buf.len;
        strbuf_clear(&w->buf);
        return 0;
}

int queue_writer_append(QueueWriter *w, const void *p, size_t n) {
        int r;
        if (w->error)
                return w->error;
        w->size += n;
        if (n >= WRITE_BUFFER_SIZE) {
                r = writer_flush(w);
                if (r < 0)
                        return r;
                r = write_all(w->fd, p, n);
                if (r < 0)
                        return (w->error = r);
                w->written += n;
                return 0;
        }
        r = strbuf_append(&w->buf, p, n);
        if (r < 0)
                return (w->error = r);
        if (w->buf.len >= WRITE_BUFFER_SIZE)
                return writer_flush(w);
        return 0;
}

uint64_t queue_writer_size(const QueueWriter *w) {
        return w->size;
}

int queue_writer_finish(QueueWriter *w, const QueueEnvelope *env) {
        char header[QUEUE_FILE_HEADER_SIZE + 1];
        QueueEnvelope copy = *env;
        size_t env_start;
        int r;

        if (w->error)
                return w->error;
        copy.content_size = w->size;
        memcpy(copy.queue_id, w->queue_id, QUEUE_ID_SIZE);
        env_start = w->buf.len;
        r = queue_envelope_format(&copy, &w->buf);
        if (r < 0)
                return (w->error = r);
        snprintf(header, sizeof(header), "%s %04d %016" PRIx64 " %016" PRIx64 " %08x",
                 QUEUE_FILE_MAGIC, QUEUE_FILE_VERSION, w->size,
                 (uint64_t) (w->buf.len - env_start), env->flags);
        memset(header + strlen(header), ' ', QUEUE_FILE_HEADER_SIZE - strlen(header));
        header[QUEUE_FILE_HEADER_SIZE - 1] = '\n';
        if (w->written == 0) {
                /* Small message: the header is still in the buffer. */
                memcpy(w->buf.data, header, QUEUE_FILE_HEADER_SIZE);
                return writer_flush(w);
        }
        r = writer_flush(w);
        if (r < 0)
                return r;
        if (pwrite(w->fd, header, QUEUE_FILE_HEADER_SIZE, 0) != QUEUE_FILE_HEADER_SIZE)
                return (w->error = errno ? -errno : -EIO);
        return 0;
}

int queue_writer_sync(QueueWriter *w) {
        if (w->error)
                return w->error;
        if (fdatasync(w->fd) < 0)
                return (w->error = -errno);
        return 0;
}

int queue_writer_commit(QueueWriter *w, int target_dir_fd) {
        if (w->error)
                return w->error;
        if (renameat(w->dir_fd, w->tmp_name, target_dir_fd, w->queue_id) < 0)
                return (w->error = -errno);
        w->committed = true;
        return 0;
}

QueueWriter *queue_writer_free(QueueWriter *w) {
        if (!w)
                return NULL;
        if (w->fd >= 0) {
                (void) close(w->fd);
                if (!w->committed)
                        (void) unlinkat(w->dir_fd, w->tmp_name, 0);
        }
        strbuf_done(&w->buf);
        free(w);
        return NULL;
}

static int read_exact(int fd, void *buf, size_t n, uint64_t off) {
        size_t done = 0;
        while (done < n) {
                ssize_t k = pread(fd, (char *) buf + done, n - done, (off_t) (off + done));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EBADMSG;
                done += (size_t) k;
        }
        return 0;
}

int queue_file_read(int fd, QueueEnvelope *ret) {
        char header[QUEUE_FILE_HEADER_SIZE + 1];
        unsigned version, flags;
        uint64_t content_size, env_size;
        _cleanup_free_ char *env = NULL;
        QueueEnvelope e;
        struct stat st;
        int consumed = 0, r;

        if (fstat(fd, &st) < 0)
                return -errno;
        r = read_exact(fd, header, QUEUE_FILE_HEADER_SIZE, 0);
        if (r < 0)
                return r;
        header[QUEUE_FILE_HEADER_SIZE] = 0;
        if (memcmp(header, QUEUE_FILE_MAGIC " ", 9) != 0 ||
            header[QUEUE_FILE_HEADER_SIZE - 1] != '\n' ||
            sscanf(header + 9, "%4u %16" SCNx64 " %16" SCNx64 " %8x%n", &version, &content_size,
                   &env_size, &flags, &consumed) != 4 || version != QUEUE_FILE_VERSION)
                return -EBADMSG;
        if (env_size == 0 || env_size > QUEUE_FILE_ENVELOPE_MAX ||
            content_size > (uint64_t) st.st_size ||
            (uint64_t) st.st_size != QUEUE_FILE_HEADER_SIZE + content_size + env_size)
                return -EBADMSG;
        env = malloc(env_size);
        if (!env)
                return -ENOMEM;
        r = read_exact(fd, env, env_size, QUEUE_FILE_HEADER_SIZE + content_size);
        if (r < 0)
                return r;
        r = queue_envelope_parse(env, env_size, QUEUE_FILE_HEADER_SIZE + content_size, &e);
        if (r < 0)
                return r;
        if (e.content_size != content_size) {
                queue_envelope_done(&e);
                return -EBADMSG;
        }
        e.flags = flags;
        e.content_offset = QUEUE_FILE_HEADER_SIZE;
        *ret = e;
        return 0;
}

int queue_file_put_status(int fd, const QueueRecipient *r, char status) {
        if (status == '\n' || status == ' ' || status == 0 || r->status_offset == 0)
                return -EINVAL;
        if (pwrite(fd, &status, 1, (off_t) r->status_offset) != 1)
                return errno ? -errno : -EIO;
        return 0;
}

int queue_file_set_status(int fd, const QueueRecipient *r, char status) {
        int k = queue_file_put_status(fd, r, status);
        if (k < 0)
                return k;
        if (fdatasync(fd) < 0)
                return -errno;
        return 0;
}

int queue_file_set_flags(int fd, unsigned flags) {
        char buf[QUEUE_FILE_FLAGS_WIDTH + 1];

        snprintf(buf, sizeof(buf), "%08x", flags);
        if (pwrite(fd, buf, QUEUE_FILE_FLAGS_WIDTH, QUEUE_FILE_FLAGS_OFFSET) !=
            QUEUE_FILE_FLAGS_WIDTH)
                return errno ? -errno : -EIO;
        if (fdatasync(fd) < 0)
                return -errno;
        return 0;
}

int queue_file_rewrite(int src_fd, const QueueEnvelope *env, int dir_fd, QueueWriter **ret) {
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_free_ char *buf = NULL;
        uint64_t off = env->content_offset, left = env->content_size;
        int r;

        r = queue_writer_new(dir_fd, env->queue_id, &w);
        if (r == -EEXIST) {
                /* A leftover of an interrupted rewrite. */
                char tmp[QUEUE_ID_SIZE + 1] = ".";
                memcpy(tmp + 1, env->queue_id, QUEUE_ID_SIZE);
                (void) unlinkat(dir_fd, tmp, 0);
                r = queue_writer_new(dir_fd, env->queue_id, &w);
        }
        if (r < 0)
                return r;
        buf = malloc(WRITE_BUFFER_SIZE);
        if (!buf)
                return -ENOMEM;
        while (left > 0) {
                size_t n = left < WRITE_BUFFER_SIZE ? (size_t) left : WRITE_BUFFER_SIZE;
                r = read_exact(src_fd, buf, n, off);
                if (r < 0)
                        return r;
                r = queue_writer_append(w, buf, n);
                if (r < 0)
                        return r;
                off += n;
                left -= n;
        }
        r = queue_writer_finish(w, env);
        if (r < 0)
                return r;
        r = queue_writer_sync(w);
        if (r < 0)
                return r;
        *ret = steal_ptr(w);
        return 0;
}
