/* qmgr-header.c: header_checks for requeued mail. "postsuper -r" sends a
 * message through the header processing again, as Postfix's requeue
 * passes it through cleanup: when a message with QUEUE_FLAG_REQUEUE
 * leaves incoming/, each header (unfolded) is looked up in header_checks
 * as smtpd does at reception. PREPEND, REPLACE and IGNORE change the
 * header section (the file is written anew under its queue ID and opened
 * again); REJECT, DISCARD and HOLD are returned for the caller to apply to
 * the whole message; WARN and INFO are logged; OK and DUNNO do nothing.
 * REDIRECT and the other actions are logged as not applied on requeue.
 * body_checks are not run again. Entry point: qmgr_header_requeue(). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "log.h"
#include "qmgr.h"

/* Headers longer than this are looked up by their first part only. */
#define HEADER_SECTION_MAX (4u * 1024 * 1024)

void qmgr_header_verdict_done(QmgrHeaderVerdict *v) {
        v->text = mfree_str(v->text);
        v->action = QMGR_HEADER_NONE;
}

static void set_verdict(QmgrHeaderVerdict *v, QmgrHeaderAction action, const char *text) {
        /* The first of REJECT, DISCARD, HOLD wins, as in cleanup. */
        if (v->action != QMGR_HEADER_NONE)
                return;
        v->action = action;
        v->text = strdup(text);
}

static void log_check(const char *id, const char *action, const char *line, const char *text) {
        _cleanup_free_ char *esc = str_escape_log(line, 200);
        log_mail(LOG_INFO, NULL, id, LOG_NO_FIELDS, "%s: header %s (requeue)%s%s", action,
                 strempty(esc), *text ? ": " : "", text);
}

/* Applies one lookup result to a header; appends what replaces it to out.
 * Returns 0 or -ENOMEM. */
static int apply(const char *id, const char *raw, size_t raw_len, const char *line,
                 const char *result, StrBuf *out, bool *changed, QmgrHeaderVerdict *v) {
        const char *text;

        switch (map_check_action(result, &text)) {
        case MAP_CHECK_PREPEND:
                *changed = true;
                if (strbuf_puts(out, text) < 0 || strbuf_putc(out, '\n') < 0)
                        return -ENOMEM;
                break;
        case MAP_CHECK_REPLACE:
                *changed = true;
                return strbuf_puts(out, text) < 0 || strbuf_putc(out, '\n') < 0 ? -ENOMEM : 0;
        case MAP_CHECK_IGNORE:
                *changed = true;
                return 0;
        case MAP_CHECK_REJECT:
                log_check(id, "reject", line, text);
                set_verdict(v, QMGR_HEADER_REJECT, *text ? text : "Message content rejected");
                break;
        case MAP_CHECK_DISCARD:
                log_check(id, "discard", line, text);
                set_verdict(v, QMGR_HEADER_DISCARD, text);
                break;
        case MAP_CHECK_HOLD:
                log_check(id, "hold", line, text);
                set_verdict(v, QMGR_HEADER_HOLD, text);
                break;
        case MAP_CHECK_WARN:
                log_check(id, "warning", line, text);
                break;
        case MAP_CHECK_INFO:
                log_check(id, "info", line, text);
                break;
        case MAP_CHECK_DUNNO:
                break;
        case MAP_CHECK_REDIRECT:
        case MAP_CHECK_UNKNOWN:
                log_warning("%s: header_checks action \"%.*s\" is not applied on requeue", id,
                            (int) strcspn(result, " \t"), result);
                break;
        }
        if (strbuf_append(out, raw, raw_len) < 0 || strbuf_putc(out, '\n') < 0)
                return -ENOMEM;
        return 0;
}

/* Runs the checks over one header (raw: its lines, LF-separated, without
 * the last LF). */
static int check_header(Qmgr *q, const char *id, const char *raw, size_t len, StrBuf *out,
                        bool *changed, QmgrHeaderVerdict *v) {
        _cleanup_free_ char *line = malloc(len + 1), *result = NULL;
        size_t j = 0;
        int r;

        if (!line)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++)
                if (raw[i] != '\n' && raw[i] != '\r')
                        line[j++] = raw[i];
        line[j] = '\0';
        r = map_list_lookup(q->settings.header_checks, line, &result);
        if (r < 0)
                return r;
        if (r == 0 || !result)
                return strbuf_append(out, raw, len) < 0 || strbuf_putc(out, '\n') < 0 ? -ENOMEM
                                                                                      : 0;
        return apply(id, raw, len, line, result, out, changed, v);
}

/* Writes header + the rest of the content (from src_fd after the old
 * header section) with env as a new file under the same ID in incoming/. */
static int rewrite(Qmgr *q, const char *id, int src_fd, const QueueEnvelope *env,
                   const StrBuf *header, size_t old_len) {
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        uint64_t off = env->content_offset + old_len, end = env->content_offset + env->content_size;
        char buf[65536];
        int r;

        r = queue_writer_new(q->incoming_fd, id, &w);
        if (r == -EEXIST) {
                /* A leftover of a crash between write and rename. */
                char tmp[QUEUE_ID_SIZE + 1];
                snprintf(tmp, sizeof(tmp), ".%s", id);
                (void) unlinkat(q->incoming_fd, tmp, 0);
                r = queue_writer_new(q->incoming_fd, id, &w);
        }
        if (r < 0)
                return r;
        r = queue_writer_append(w, header->data, header->len);
        while (r >= 0 && off < end) {
                ssize_t k = pread(src_fd, buf, MIN(sizeof(buf), (size_t) (end - off)), (off_t) off);
                if (k <= 0)
                        return k < 0 ? -errno : -EBADMSG;
                r = queue_writer_append(w, buf, (size_t) k);
                off += (uint64_t) k;
        }
        if (r >= 0)
                r = queue_writer_finish(w, env);
        if (r >= 0)
                r = queue_writer_sync(w);
        if (r >= 0)
                r = queue_writer_commit(w, q->incoming_fd);
        if (r >= 0 && fsync(q->incoming_fd) < 0)
                r = -errno;
        return r;
}

int qmgr_header_section(int fd, const QueueEnvelope *env, char **ret_content,
                        size_t *ret_hdr_len) {
        _cleanup_free_ char *content = NULL;
        size_t max = (size_t) MIN(env->content_size, (uint64_t) HEADER_SECTION_MAX);
        size_t len = 0, cap = 0, hdr_len = SIZE_MAX;

        /* The header section: up to the first empty line (none when the
         * content starts with one), read in pieces so that the body of a
         * large message is not. */
        while (len < max && hdr_len == SIZE_MAX) {
                size_t want = MIN(max - len, (size_t) 65536);
                char *n;
                ssize_t k;

                if (cap < len + want + 1) {
                        n = realloc(content, len + want + 1);
                        if (!n)
                                return -ENOMEM;
                        content = n;
                        cap = len + want + 1;
                }
                k = pread(fd, content + len, want, (off_t) (env->content_offset + len));
                if (k < 0)
                        return -errno;
                if ((size_t) k != want)
                        return -EBADMSG;
                if (len == 0 && content[0] == '\n')
                        hdr_len = 0;
                for (size_t i = len > 0 ? len - 1 : 0; i < len + want && hdr_len == SIZE_MAX; i++)
                        if (content[i] == '\n' && i + 1 < len + want && content[i + 1] == '\n')
                                hdr_len = i + 1;
                len += want;
        }
        if (!content && !(content = malloc(1)))
                return -ENOMEM;
        content[len] = '\0';
        if (hdr_len == SIZE_MAX)
                hdr_len = len;          /* no empty line: all of it (up to the cap) */
        *ret_content = steal_ptr(content);
        *ret_hdr_len = hdr_len;
        return 0;
}

size_t qmgr_header_next(const char *content, size_t hdr_len, size_t start) {
        /* A header ends before a line that does not start with white space
         * (RFC 5322 2.2.3). */
        for (size_t i = start; i < hdr_len; i++)
                if (content[i] == '\n' && (i + 1 >= hdr_len ||
                                            (content[i + 1] != ' ' && content[i + 1] != '\t')))
                        return i;
        return hdr_len;
}

int qmgr_header_replace(Qmgr *q, const char *id, int *fd, QueueEnvelope *env,
                        const StrBuf *header, size_t old_len) {
        int nfd, r;

        r = rewrite(q, id, *fd, env, header, old_len);
        if (r < 0)
                return r;
        /* The new file replaced the old one under its name. */
        nfd = openat(q->incoming_fd, id, O_RDWR | O_CLOEXEC);
        if (nfd < 0 || flock(nfd, LOCK_EX | LOCK_NB) < 0) {
                r = -errno;
                safe_close_fd(nfd);
                return r;
        }
        safe_close_fd(*fd);
        *fd = nfd;
        queue_envelope_done(env);
        return queue_file_read(nfd, env);
}

int qmgr_header_requeue(Qmgr *q, const char *id, int *fd, QueueEnvelope *env,
                        QmgrHeaderVerdict *ret) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        _cleanup_free_ char *content = NULL;
        size_t hdr_len, start = 0;
        bool changed = false;
        int r;

        *ret = (QmgrHeaderVerdict) {0};
        if (!q->settings.header_checks)
                return 0;
        r = qmgr_header_section(*fd, env, &content, &hdr_len);
        if (r < 0)
                return r;
        while (start < hdr_len) {
                size_t i = qmgr_header_next(content, hdr_len, start);
                if (i > start) {
                        r = check_header(q, id, content + start, i - start, &out, &changed, ret);
                        if (r < 0) {
                                qmgr_header_verdict_done(ret);
                                return r;
                        }
                }
                start = i + 1;
        }
        if (!changed)
                return 0;
        r = qmgr_header_replace(q, id, fd, env, &out, hdr_len);
        if (r < 0)
                qmgr_header_verdict_done(ret);
        return r < 0 ? r : 1;
}
