/* deliver-local-copy.c: writing a message out of the queue file. Entry
 * points: deliver_copy() (mailbox, maildir and command formats: the
 * "From sender date" line, Return-Path, X-Original-To and Delivered-To
 * headers, ">From " quoting, the trailing empty line), the Delivered-To loop
 * check, and deliver_forward(), which writes a copy for forwarded addresses
 * into incoming/ as a new queue file, as Postfix's local(8) re-submits
 * forwarded mail. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "deliver-local.h"
#include "fileio.h"
#include "queue-id.h"

#define COPY_CHUNK (64 * 1024)

typedef struct CopyOut {
        int fd;
        StrBuf buf;
        uint64_t written;
        uint64_t limit;
} CopyOut;

static int out_flush(CopyOut *o) {
        int r;
        if (o->buf.len == 0)
                return 0;
        if (o->limit > 0 && o->written + o->buf.len > o->limit)
                return -EFBIG;
        r = write_all(o->fd, o->buf.data, o->buf.len);
        if (r < 0)
                return r;
        o->written += o->buf.len;
        strbuf_clear(&o->buf);
        return 0;
}

static int out_put(CopyOut *o, const void *p, size_t n) {
        if (strbuf_append(&o->buf, p, n) < 0)
                return -ENOMEM;
        return o->buf.len >= COPY_CHUNK ? out_flush(o) : 0;
}

static int put_prefix(const DeliverMsg *m, CopyOut *o, const char *delivered_to, unsigned flags) {
        const char *sender = m->env->sender;
        int r = 0;

        if (flags & COPY_FROM_LINE) {
                char date[64];
                time_t now = time(NULL);
                struct tm tm;
                /* RFC 4155: "From " sender SP asctime-style date. */
                strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", localtime_r(&now, &tm));
                r = strbuf_printf(&o->buf, "From %s %s\n", *sender ? sender : "MAILER-DAEMON",
                                  date);
        }
        if (r >= 0 && (flags & COPY_RETURN_PATH))
                r = strbuf_printf(&o->buf, "Return-Path: <%s>\n", sender);
        if (r >= 0 && (flags & COPY_ORIG_RCPT))
                r = strbuf_printf(&o->buf, "X-Original-To: %s\n",
                                  !isempty(m->orig_recipient) ? m->orig_recipient : m->recipient);
        if (r >= 0 && (flags & COPY_DELIVERED) && delivered_to)
                r = strbuf_printf(&o->buf, "Delivered-To: %s\n", delivered_to);
        return r < 0 ? -ENOMEM : 0;
}

int64_t deliver_copy(const DeliverMsg *m, int fd, const char *delivered_to, unsigned flags,
                     uint64_t limit) {
        _cleanup_free_ char *in = malloc(COPY_CHUNK + 8);
        CopyOut o = {.fd = fd, .limit = limit};
        uint64_t off = m->env->content_offset, left = m->env->content_size;
        size_t have = 0;
        bool bol = true, last_nl = true;
        int r;

        if (!in)
                return -ENOMEM;
        r = put_prefix(m, &o, delivered_to, flags);
        if (r < 0)
                goto out;
        while (left > 0 || have > 0) {
                size_t want = (size_t)MIN(left, (uint64_t)COPY_CHUNK - have), i = 0, start;
                if (want > 0) {
                        ssize_t n = pread(m->queue_fd, in + have, want, (off_t)off);
                        if (n <= 0) {
                                r = n < 0 ? -errno : -EIO;
                                goto out;
                        }
                        off += (uint64_t)n;
                        left -= (uint64_t)n;
                        have += (size_t)n;
                }
                start = 0;
                while (i < have) {
                        if (bol && (flags & COPY_QUOTE_FROM)) {
                                /* Need five bytes to decide; wait for more
                                 * unless the content ends here. */
                                if (have - i < 5 && left > 0)
                                        break;
                                if (have - i >= 5 && memcmp(in + i, "From ", 5) == 0) {
                                        if ((r = out_put(&o, in + start, i - start)) < 0 ||
                                            (r = out_put(&o, ">", 1)) < 0)
                                                goto out;
                                        start = i;
                                }
                        }
                        bol = in[i] == '\n';
                        i++;
                }
                if ((r = out_put(&o, in + start, i - start)) < 0)
                        goto out;
                if (i > 0)
                        last_nl = in[i - 1] == '\n';
                memmove(in, in + i, have - i);
                have -= i;
                if (want == 0 && left == 0 && have > 0 && i == 0) {
                        /* Cannot happen (left == 0 never waits), but never spin. */
                        r = -EIO;
                        goto out;
                }
        }
        if (!last_nl && (r = out_put(&o, "\n", 1)) < 0)
                goto out;
        if ((flags & COPY_BLANK_LINE) && (r = out_put(&o, "\n", 1)) < 0)
                goto out;
        r = out_flush(&o);
out:
        strbuf_done(&o.buf);
        return r < 0 ? r : (int64_t)o.written;
}

bool deliver_msg_has_delivered_to(const DeliverMsg *m, const char *addr) {
        const char *p = m->headers, *end = m->headers + m->headers_len;
        size_t alen = strlen(addr);

        while (p && p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *le = nl ? nl : end, *v = startswith_no_case(p, "Delivered-To:");
                if (v && v < le) {
                        while (v < le && (*v == ' ' || *v == '\t'))
                                v++;
                        const char *ve = le;
                        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
                                ve--;
                        if ((size_t)(ve - v) == alen && strncasecmp(v, addr, alen) == 0)
                                return true;
                }
                p = nl ? nl + 1 : NULL;
        }
        return false;
}

static int write_forward(const DeliverMsg *m, const char *sender, char *const *rcpts,
                         const char *delivered_to, char *ret_id) {
        const DeliverSettings *s = m->settings;
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_close_ int qfd = -1, dfd = -1;
        _cleanup_free_ char *buf = NULL, *hdr = NULL;
        QueueEnvelope env = {0};
        uint64_t off = m->env->content_offset, left = m->env->content_size;
        int r;

        qfd = open(s->queue_directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (qfd < 0)
                return -errno;
        dfd = openat(qfd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        for (int tries = 0;; tries++) {
                gettimeofday(&env.arrival, NULL);
                queue_id_new(&env.arrival, env.queue_id);
                r = queue_writer_new(dfd, env.queue_id, &w);
                if (r != -EEXIST || tries > 10)
                        break;
        }
        if (r < 0)
                return r;
        /* The Delivered-To header stops forwarding loops (local(8)). */
        hdr = strdup_printf("Delivered-To: %s\n", delivered_to);
        buf = malloc(COPY_CHUNK);
        if (!hdr || !buf)
                return -ENOMEM;
        r = queue_writer_append(w, hdr, strlen(hdr));
        while (r >= 0 && left > 0) {
                size_t n = (size_t)MIN(left, (uint64_t)COPY_CHUNK);
                ssize_t k = pread(m->queue_fd, buf, n, (off_t)off);
                if (k <= 0)
                        return k < 0 ? -errno : -EIO;
                r = queue_writer_append(w, buf, (size_t)k);
                off += (uint64_t)k;
                left -= (uint64_t)k;
        }
        if (r < 0)
                return r;

        env.sender = (char *)sender;
        env.ret = m->env->ret;
        env.envid = m->env->envid;
        env.smtputf8 = m->env->smtputf8;
        env.body_8bitmime = m->env->body_8bitmime;
        env.protocol = (char *)"local";
        STRV_FOREACH(a, rcpts)
        if ((r = queue_envelope_add_rcpt(&env, *a, 0, NULL)) < 0)
                goto out;
        r = queue_writer_finish(w, &env);
        if (r >= 0)
                r = queue_writer_sync(w);
        if (r >= 0)
                r = queue_writer_commit(w, dfd);
        if (r >= 0 && fsync(dfd) < 0)
                r = -errno;
        if (r >= 0)
                memcpy(ret_id, env.queue_id, QUEUE_ID_SIZE);
out:
        /* Only the recipients are ours. */
        env.sender = NULL;
        env.envid = NULL;
        env.protocol = NULL;
        queue_envelope_done(&env);
        return r;
}

typedef struct ForwardArgs {
        const DeliverMsg *m;
        const char *sender;
        char *const *rcpts;
        const char *delivered_to;
} ForwardArgs;

static void forward_priv(void *userdata, DeliverResult *ret) {
        ForwardArgs *a = userdata;
        char id[QUEUE_ID_SIZE];
        int r = write_forward(a->m, a->sender, a->rcpts, a->delivered_to, id);
        if (r < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                   "cannot write the forwarded copy: %s", strerror(-r));
                return;
        }
        (void)strv_extend(&ret->queue_ids, id);
        deliver_result_set(ret, DELIVER_SENT, "2.0.0", "forwarded as %s", id);
}

int deliver_forward(const DeliverMsg *m, const char *sender, char *const *rcpts,
                    const char *delivered_to, DeliverResult *ret) {
        const DeliverSettings *s = m->settings;
        ForwardArgs a = {m, sender, rcpts, delivered_to};
        _cleanup_free_ char *buf = NULL;
        DeliverUser u;

        /* The queue file must belong to the queue's owner, so write it as
         * mail_owner; an instance whose mail_owner is root (tests) writes
         * it directly. */
        if (s->mail_owner_uid != (uid_t)-1 && s->mail_owner_uid != 0 &&
            s->mail_owner_uid != geteuid() && deliver_user_by_uid(s->mail_owner_uid, &u, &buf) > 0)
                priv_run(&u, forward_priv, &a, ret);
        else
                forward_priv(&a, ret);
        return ret->status == DELIVER_SENT ? 0 : -EIO;
}
