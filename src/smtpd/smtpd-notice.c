/* smtpd-notice.c: the session transcript and the postmaster notice of SMTP
 * errors (Postfix's smtpd_chat_notify()). The notice is a plain text
 * message written straight into incoming/ through the group committer of
 * smtpd-queue.c, like accepted mail, and announced to the queue manager.
 * Its envelope sender is double_bounce_sender: the bounce service discards
 * an undeliverable notice instead of bouncing it, so notices cannot loop.
 * Entry points: smtpd_transcript_add(), smtpd_notice_mask(),
 * smtpd_notice_classify(), smtpd_notice_send(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "addr.h"
#include "conf.h"
#include "log.h"
#include "queue-file.h"
#include "queue-id.h"
#include "smtpd-notice.h"
#include "smtpd.h"

#define WRAP_LENGTH 78
#define WRAP_INDENT 4
#define ADDRESS_MAX 1024
#define QUEUE_ID_ATTEMPTS 8

void smtpd_transcript_add(SmtpdTranscript *t, const char *direction, const char *text,
                          size_t len) {
        _cleanup_free_ char *raw = strndup(text, MIN(len, (size_t) SMTPD_TRANSCRIPT_LINE_MAX));
        _cleanup_free_ char *esc = raw ? str_escape_log(raw, SMTPD_TRANSCRIPT_LINE_MAX) : NULL;
        size_t need;

        if (!esc)
                return;
        need = strlen(direction) + strlen(esc) + 1;
        /* Make room: whole lines go, oldest first. */
        while (t->n_lines > 0 && (t->n_lines >= SMTPD_TRANSCRIPT_MAX_LINES ||
                                  t->buf.len + need > SMTPD_TRANSCRIPT_MAX_BYTES)) {
                const char *lf = memchr(t->buf.data, '\n', t->buf.len);
                size_t n = lf ? (size_t) (lf - t->buf.data) + 1 : t->buf.len;
                memmove(t->buf.data, t->buf.data + n, t->buf.len - n);
                t->buf.len -= n;
                t->n_lines--;
                t->n_dropped++;
        }
        if (strbuf_reserve(&t->buf, need + 1) < 0)
                return;
        (void) strbuf_puts(&t->buf, direction);
        (void) strbuf_puts(&t->buf, esc);
        (void) strbuf_putc(&t->buf, '\n');
        t->n_lines++;
}

void smtpd_transcript_done(SmtpdTranscript *t) {
        strbuf_done(&t->buf);
        *t = (SmtpdTranscript) {0};
}

/* The settings, read once per worker process (a reload starts new
 * workers): a worker has one Smtpd and one configuration. */
static struct {
        bool loaded;
        unsigned mask;
        char recipient[ADDRESS_MAX];    /* error_notice_recipient, qualified */
        char sender[ADDRESS_MAX];       /* double_bounce_sender, qualified; "" null sender */
} settings;

static bool qualify(const char *addr, const char *origin, char *buf, size_t size) {
        int n;
        if (!*addr || strchr(addr, '@'))
                n = snprintf(buf, size, "%s", addr);
        else
                n = snprintf(buf, size, "%s@%s", addr, origin);
        return n >= 0 && (size_t) n < size;
}

unsigned smtpd_notice_mask(Smtpd *d) {
        static const struct {
                const char *name;
                unsigned bit;
        } classes[] = {
                {"policy", SMTPD_NOTICE_POLICY},
                {"protocol", SMTPD_NOTICE_PROTOCOL},
                {"resource", SMTPD_NOTICE_RESOURCE},
                {"software", SMTPD_NOTICE_SOFTWARE},
                /* Postfix's smtpd sends transcripts of sessions whose mail
                 * it refused (message size) for the bounce class as well. */
                {"bounce", SMTPD_NOTICE_BOUNCE},
        };

        if (settings.loaded)
                return settings.mask;
        settings.loaded = true;
        if (!d->config)
                return 0;
        /* The other classes (2bounce, delay, data) are the bounce
         * service's; it warns about unknown names. */
        STRV_FOREACH(i, conf_get_list(d->config, P_NOTIFY_CLASSES))
                for (size_t k = 0; k < ELEMENTSOF(classes); k++)
                        if (strcaseeq(*i, classes[k].name))
                                settings.mask |= classes[k].bit;
        if (!qualify(conf_get_str(d->config, P_ERROR_NOTICE_RECIPIENT), d->settings.myorigin,
                     settings.recipient, sizeof(settings.recipient)) ||
            !qualify(conf_get_str(d->config, P_DOUBLE_BOUNCE_SENDER), d->settings.myorigin,
                     settings.sender, sizeof(settings.sender)) ||
            !*settings.recipient)
                /* Nobody to tell: no notices. */
                settings.mask = 0;
        return settings.mask;
}

unsigned smtpd_notice_classify(const char *reply) {
        /* "DDD X.Y.Z text" */
        if (!reply || (reply[0] != '4' && reply[0] != '5') || strlen(reply) < 9 ||
            (reply[3] != ' ' && reply[3] != '-'))
                return 0;
        if (startswith(reply, "452 4.3.1"))
                return SMTPD_NOTICE_RESOURCE;
        /* Postfix counts a table that cannot be read (a restriction's
         * "Temporary lookup failure") and a failed queue file write as
         * resource problems. */
        if (startswith(reply, "451 4.3.0"))
                return strstr(reply, "queue file write error") ||
                                       strstr(reply, "Temporary lookup failure")
                               ? SMTPD_NOTICE_RESOURCE
                               : SMTPD_NOTICE_SOFTWARE;
        if (startswith(reply, "552 5.3.4"))
                return SMTPD_NOTICE_BOUNCE;
        if (reply[5] == '.' && reply[6] == '5' && reply[7] == '.')
                return SMTPD_NOTICE_PROTOCOL;
        return 0;
}

const char *smtpd_notice_class_names(unsigned mask, char *buf, size_t size) {
        static const char *const names[] = {"policy", "protocol", "resource", "software",
                                            "bounce"};
        size_t n = 0;

        if (size == 0)
                return buf;
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (mask & (1u << i)) {
                        int k = snprintf(buf + n, size - n, "%s%s", n ? ", " : "", names[i]);
                        if (k < 0 || (size_t) k >= size - n)
                                break;
                        n += (size_t) k;
                }
        return buf;
}

/* Wraps one transcript line at WRAP_LENGTH, at a blank where there is one,
 * continuation lines indented; every line starts with a blank, as in
 * Postfix (the text came from a peer). */
static int put_wrapped(StrBuf *out, const char *line, size_t len) {
        size_t indent = 0;
        int r;

        while (len > 0) {
                size_t room = WRAP_LENGTH - indent, n = len;
                if (n > room) {
                        n = room;
                        for (size_t k = room; k > room / 2; k--)
                                if (line[k] == ' ') {
                                        n = k;
                                        break;
                                }
                }
                r = strbuf_printf(out, " %*s%.*s\n", (int) indent, "", (int) n, line);
                if (r < 0)
                        return r;
                line += n;
                len -= n;
                while (len > 0 && *line == ' ') {
                        line++;
                        len--;
                }
                indent = WRAP_INDENT;
        }
        return 0;
}

static int build(Smtpd *d, const SmtpdTranscript *t, const char *client, const char *reason,
                 const char *queue_id, StrBuf *out) {
        const SmtpdSettings *s = &d->settings;
        /* The client name came from the DNS: nothing of it may end the
         * Subject line. */
        _cleanup_free_ char *name = str_escape_log(client, 300);
        char date[64], stamp[32];
        time_t now = time(NULL);
        struct tm tm;
        int r;

        if (!name)
                return -ENOMEM;
        if (!localtime_r(&now, &tm) ||
            strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
                strcpy(date, "Thu, 01 Jan 1970 00:00:00 +0000");
        if (!gmtime_r(&now, &tm) || strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm) == 0)
                strcpy(stamp, "19700101000000");
        r = strbuf_printf(out,
                          "Received: by %s (%s)\n\tid %s; %s\n"
                          "Date: %s\n"
                          "From: MAILER-DAEMON@%s (Mail Delivery System)\n"
                          "To: %s (Postmaster)\n"
                          "Subject: %s SMTP server: errors from %s\n"
                          "Auto-Submitted: auto-generated\n"
                          "MIME-Version: 1.0\n"
                          "Content-Type: text/plain; charset=us-ascii\n"
                          "Message-Id: <%s.%s@%s>\n"
                          "\n"
                          "Transcript of session follows.\n"
                          "\n",
                          s->myhostname, s->mail_name, queue_id, date, date, s->myhostname,
                          settings.recipient, s->mail_name, name, stamp, queue_id,
                          s->myhostname);
        if (r < 0)
                return r;
        if (t->n_dropped > 0 &&
            (r = strbuf_printf(out, " (%zu earlier lines not shown)\n", t->n_dropped)) < 0)
                return r;
        for (size_t i = 0; i < t->buf.len;) {
                const char *lf = memchr(t->buf.data + i, '\n', t->buf.len - i);
                size_t n = lf ? (size_t) (lf - (t->buf.data + i)) : t->buf.len - i;
                r = put_wrapped(out, t->buf.data + i, n);
                if (r < 0)
                        return r;
                i += n + 1;
        }
        r = strbuf_puts(out, "\n");
        if (r >= 0 && reason)
                r = strbuf_printf(out, "Session aborted, reason: %s\n", reason);
        if (r >= 0)
                r = strbuf_puts(out, "\nFor other details, see the local mail logfile\n");
        return r;
}

typedef struct Notice {
        Smtpd *smtpd;
        uint64_t size;
        char queue_id[QUEUE_ID_SIZE];
        char classes[64];
        char client[];
} Notice;

static void log_failure(const char *client, int r) {
        log_warning("cannot queue the postmaster notice of SMTP errors from %s: %s", client,
                    strerror(-r));
}

static void on_committed(void *userdata, int r) {
        _cleanup_free_ Notice *n = userdata;
        _cleanup_free_ char *sender = NULL, *to = NULL;
        char size[32];

        if (r < 0) {
                log_failure(n->client, r);
                return;
        }
        sender = str_escape_log(settings.sender, 300);
        to = str_escape_log(settings.recipient, 300);
        snprintf(size, sizeof(size), "%llu", (unsigned long long) n->size);
        log_mail(LOG_INFO, MSGID_SMTPD_NOTICE, n->queue_id,
                 LOG_FIELDS("POSTERN_CLIENT", n->client, "POSTERN_RECIPIENT", to,
                            "POSTERN_NOTIFY_CLASSES", n->classes),
                 "postmaster notice of SMTP errors (%s) from %s: to=<%s>", n->classes,
                 n->client, strempty(to));
        log_mail(LOG_INFO, MSGID_QUEUED, n->queue_id,
                 LOG_FIELDS("POSTERN_SENDER", sender, "POSTERN_RECIPIENT", to),
                 "from=<%s>, size=%s, nrcpt=1 (queue incoming)", strempty(sender), size);
        smtpd_qmgr_notify(n->smtpd, n->queue_id);
}

void smtpd_notice_send(Smtpd *d, const SmtpdTranscript *t, const char *client,
                       unsigned classes, const char *reason) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        _cleanup_free_ Notice *n = NULL;
        QueueWriter *w = NULL;
        QueueEnvelope env = {0};
        QueueRecipient rcpt = {.address = settings.recipient, .status = QUEUE_RCPT_PENDING};
        struct timeval now;
        int r = -EEXIST;

        if (!settings.loaded || !d->queue)
                return;
        n = calloc(1, sizeof(*n) + strlen(client) + 1);
        if (!n) {
                log_failure(client, -ENOMEM);
                return;
        }
        n->smtpd = d;
        strcpy(n->client, client);
        smtpd_notice_class_names(classes, n->classes, sizeof(n->classes));

        gettimeofday(&now, NULL);
        for (int i = 0; i < QUEUE_ID_ATTEMPTS && r == -EEXIST; i++) {
                queue_id_new(&now, n->queue_id);
                r = queue_writer_new(d->incoming_fd, n->queue_id, &w);
        }
        if (r < 0)
                goto fail;
        r = build(d, t, client, reason, n->queue_id, &out);
        if (r < 0)
                goto fail;
        memcpy(env.queue_id, n->queue_id, QUEUE_ID_SIZE);
        env.arrival = now;
        env.sender = settings.sender;
        env.ret = QUEUE_RET_NONE;
        env.smtputf8 = addr_has_8bit(settings.recipient) || addr_has_8bit(settings.sender);
        env.service = d->settings.service;
        env.protocol = (char *) "local";
        env.rcpts = &rcpt;
        env.n_rcpts = 1;
        if ((r = queue_writer_append(w, out.data, out.len)) < 0 ||
            (r = queue_writer_finish(w, &env)) < 0)
                goto fail;
        n->size = queue_writer_size(w);
        r = smtpd_queue_commit(d->queue, w, d->incoming_fd, on_committed, n, NULL);
        if (r < 0)
                goto fail;
        w = NULL;       /* the committer owns it now */
        n = NULL;       /* on_committed() frees it */
        return;
fail:
        /* A writer freed before its commit unlinks its temporary file. */
        queue_writer_free(w);
        log_failure(client, r);
}
