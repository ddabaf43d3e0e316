/* bounce-notify.c: what one Notify call produces. Entry point
 * bounce_notify(): reads the original queue file, filters the recipients
 * by their DSN NOTIFY, decides between a report to the sender, a double
 * bounce to the postmaster and discarding (never a bounce for a bounce),
 * adds the postmaster copies that notify_classes asks for, writes each
 * report into incoming/ (temporary file, fdatasync, rename, directory
 * fsync), announces it to the queue manager and logs it under both queue
 * IDs. The text itself comes from bounce-report.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "addr.h"
#include "bounce.h"
#include "log.h"
#include "queue-file.h"
#include "queue-id.h"

/* Attempts at a free queue ID before giving up (a collision needs the same
 * microsecond and 36 random bits). */
#define QUEUE_ID_ATTEMPTS 8

static bool notify_wants(BounceKind kind, unsigned notify) {
        if (notify & QUEUE_NOTIFY_NEVER)
                return false;
        switch (kind) {
        case BOUNCE_KIND_FAILURE:
                /* RFC 3461 4.1: without NOTIFY, failures are reported. */
                return notify == 0 || (notify & QUEUE_NOTIFY_FAILURE);
        case BOUNCE_KIND_DELAY:
                /* Without NOTIFY, delays may be reported (delay_warning_time). */
                return notify == 0 || (notify & QUEUE_NOTIFY_DELAY);
        default:
                return notify & QUEUE_NOTIFY_SUCCESS;
        }
}

/* The notify class a failed recipient's status falls into (RFC 3463
 * subjects), 0 for none. */
static unsigned error_class(const char *dsn) {
        if (!dsn || strlen(dsn) < 5 || dsn[1] != '.')
                return 0;
        if (dsn[2] == '7' && dsn[3] == '.')
                return BOUNCE_CLASS_POLICY;
        if (dsn[2] == '5' && dsn[3] == '.')
                return BOUNCE_CLASS_PROTOCOL;
        if (streq(dsn + 2, "3.1") || streq(dsn + 2, "4.5"))
                return BOUNCE_CLASS_RESOURCE;
        if (streq(dsn + 2, "3.0") || streq(dsn + 2, "3.5"))
                return BOUNCE_CLASS_SOFTWARE;
        return 0;
}

static bool is_double_bounce_sender(const BounceSettings *s, const char *sender) {
        return strcaseeq(sender, s->double_bounce_sender) ||
               strcaseeq(sender, s->double_bounce_local);
}

typedef struct Lookup {
        Bounce *bounce;
        char buf[32];
} Lookup;

/* $name in templates: main.cf parameters, and NAME_seconds, _minutes,
 * _hours, _days, _weeks for time parameters (Postfix bounce(5)). */
static const char *template_lookup(const char *name, void *userdata) {
        static const struct {
                const char *suffix;
                uint64_t seconds;
        } units[] = {
                {"_seconds", 1}, {"_minutes", 60}, {"_hours", 3600},
                {"_days", 86400}, {"_weeks", 604800},
        };
        Lookup *l = userdata;
        Config *c = l->bounce->config;

        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                _cleanup_free_ char *base = NULL;
                int p;
                if (!endswith(name, units[i].suffix))
                        continue;
                base = strndup_safe(name, strlen(name) - strlen(units[i].suffix));
                if (!base)
                        return NULL;
                p = conf_param_lookup(base);
                if (p < 0 || conf_params[p].type != CONF_TYPE_TIME)
                        continue;
                snprintf(l->buf, sizeof(l->buf), "%" PRIu64,
                         conf_get_time(c, (ConfParam) p) / units[i].seconds);
                return l->buf;
        }
        return conf_get_by_name(c, name, true);
}

static int read_content(int fd, const QueueEnvelope *env, uint64_t want, char **ret,
                        size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t n = (size_t) MIN(env->content_size, want), got = 0;

        buf = malloc(n + 1);
        if (!buf)
                return -ENOMEM;
        while (got < n) {
                ssize_t k = pread(fd, buf + got, n - got, (off_t) (env->content_offset + got));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EBADMSG;        /* shorter than its header said */
                got += (size_t) k;
        }
        buf[n] = 0;
        *ret = steal_ptr(buf);
        *ret_len = n;
        return 0;
}

/* Replaces every occurrence of the queue ID old in the report text with
 * new (the same length): Received:, Message-Id and the boundary. */
static void replace_id(StrBuf *text, const char *old, const char *new) {
        char *p = text->data;
        while ((p = memmem(p, text->len - (size_t) (p - text->data), old, QUEUE_ID_LEN))) {
                memcpy(p, new, QUEUE_ID_LEN);
                p += QUEUE_ID_LEN;
        }
}

typedef struct Job {
        BounceKind kind;
        BounceAudience audience;
        const char *sender;             /* of the report */
        const char *to;
        const char *label;              /* "sender non-delivery notification" */
        const BounceReportRcpt *rcpts;
        size_t n_rcpts;
} Job;

/* Builds, queues, announces and logs one report. */
static int send_report(Bounce *b, const BounceNotifyRequest *req, const QueueEnvelope *orig,
                       const char *content, size_t content_len, const Job *job,
                       char ret_id[static QUEUE_ID_SIZE]) {
        const BounceSettings *s = &b->settings;
        BounceTemplateKind tk = job->kind == BOUNCE_KIND_FAILURE ? BOUNCE_TEMPLATE_FAILURE
                                : job->kind == BOUNCE_KIND_DELAY ? BOUNCE_TEMPLATE_DELAY
                                                                 : BOUNCE_TEMPLATE_SUCCESS;
        const BounceTemplate *t = &b->templates->t[tk];
        _cleanup_free_ char *from = NULL, *subject = NULL, *text = NULL;
        _cleanup_(strbuf_done) StrBuf out = {0};
        _cleanup_free_ char *esc_to = NULL, *esc_sender = NULL;
        char id[QUEUE_ID_SIZE], placeholder[QUEUE_ID_SIZE], size[32];
        BounceReportInfo info;
        QueueEnvelope env = {0};
        Lookup lookup = {.bounce = b};
        struct timeval now;
        uint64_t lifetime;
        int r;

        if ((r = bounce_template_expand(t->from, template_lookup, &lookup, &from, NULL)) < 0 ||
            (r = bounce_template_expand(job->audience == BOUNCE_AUDIENCE_SENDER
                                                ? t->subject
                                                : t->postmaster_subject,
                                        template_lookup, &lookup, &subject, NULL)) < 0 ||
            (r = bounce_template_expand(t->text, template_lookup, &lookup, &text, NULL)) < 0)
                return r;

        /* The report's queue ID goes into its text (Received:, Message-Id),
         * but the ID is chosen when the file is created: build with a
         * placeholder of the same length, then patch it in. */
        gettimeofday(&now, NULL);
        queue_id_new(&now, placeholder);
        lifetime = *orig->sender ? s->maximal_queue_lifetime_usec : s->bounce_queue_lifetime_usec;
        BounceReport rep = {
                .kind = job->kind,
                .audience = job->audience,
                .myhostname = s->myhostname,
                .mail_name = s->mail_name,
                .queue_id = placeholder,
                .orig_queue_id = orig->queue_id,
                .orig_sender = orig->sender,
                .to = job->to,
                .envid = orig->envid,
                .arrival = orig->arrival,
                .now_usec = (uint64_t) now.tv_sec * 1000000 + (uint64_t) now.tv_usec,
                .last_attempt_usec = req->last_attempt_usec,
                .retry_until_usec = (uint64_t) orig->arrival.tv_sec * 1000000 +
                                    (uint64_t) orig->arrival.tv_usec + lifetime,
                .rcpts = job->rcpts,
                .n_rcpts = job->n_rcpts,
                .content = content,
                .content_size = content_len,
                .message_size = orig->content_size,
                .ret = orig->ret,
                .size_limit = s->size_limit,
                .charset = t->charset,
                .from = from,
                .subject = subject,
                .text = text,
        };
        r = bounce_report_build(&rep, &out, &info);
        if (r < 0)
                return r;

        env.sender = (char *) job->sender;
        env.ret = QUEUE_RET_NONE;
        env.body_8bitmime = info.eight_bit;
        env.smtputf8 = addr_has_8bit(job->to) || addr_has_8bit(orig->sender);
        env.service = (char *) "bounce";
        env.protocol = (char *) "local";
        memcpy(env.queue_id, placeholder, QUEUE_ID_SIZE);
        {
                QueueRecipient rc = {.address = (char *) job->to, .status = QUEUE_RCPT_PENDING};
                env.rcpts = &rc;
                env.n_rcpts = 1;
                /* The placeholder becomes the ID when its file name is free
                 * (the usual case); otherwise a fresh ID replaces it in the
                 * text, which has the same length. */
                r = -EEXIST;
                for (int i = 0; i < QUEUE_ID_ATTEMPTS && r == -EEXIST; i++) {
                        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
                        if (i > 0) {
                                char fresh[QUEUE_ID_SIZE];
                                queue_id_new(&now, fresh);
                                replace_id(&out, env.queue_id, fresh);
                                memcpy(env.queue_id, fresh, QUEUE_ID_SIZE);
                        }
                        r = queue_writer_new(b->incoming_fd, env.queue_id, &w);
                        if (r == -EEXIST)
                                continue;
                        if (r < 0)
                                break;
                        env.arrival = now;
                        if ((r = queue_writer_append(w, out.data, out.len)) < 0 ||
                            (r = queue_writer_finish(w, &env)) < 0 ||
                            (r = queue_writer_sync(w)) < 0 ||
                            (r = queue_writer_commit(w, b->incoming_fd)) < 0)
                                break;
                        if (fsync(b->incoming_fd) < 0)
                                r = -errno;
                }
                env.rcpts = NULL;
                env.n_rcpts = 0;
        }
        if (r < 0)
                return r;
        memcpy(id, env.queue_id, QUEUE_ID_SIZE);

        bounce_qmgr_notify(b, id);

        /* journalctl POSTERN_QUEUE_ID=ORIG shows the report it caused; the
         * report's own line points back with POSTERN_ORIG_QUEUE_ID. */
        esc_to = str_escape_log(job->to, 300);
        esc_sender = str_escape_log(job->sender, 300);
        snprintf(size, sizeof(size), "%zu", out.len);
        log_mail(LOG_INFO, MSGID_BOUNCE_NOTIFICATION, orig->queue_id,
                 LOG_FIELDS("POSTERN_REPORT_QUEUE_ID", id, "POSTERN_RECIPIENT", esc_to),
                 "%s: %s", job->label, id);
        log_mail(LOG_INFO, MSGID_QUEUED, id,
                 LOG_FIELDS("POSTERN_ORIG_QUEUE_ID", orig->queue_id, "POSTERN_SENDER", esc_sender,
                            "POSTERN_RECIPIENT", esc_to),
                 "from=<%s>, to=<%s>, size=%s, nrcpt=1 (%s for %s)", strempty(esc_sender),
                 strempty(esc_to), size, job->label, orig->queue_id);
        memcpy(ret_id, id, QUEUE_ID_SIZE);
        return 0;
}

static void log_discard(const QueueEnvelope *orig, const char *why) {
        log_mail(LOG_WARNING, MSGID_BOUNCE_DISCARDED, orig->queue_id,
                 LOG_FIELDS("POSTERN_SENDER", orig->sender), "%s", why);
}

int bounce_notify(Bounce *b, const BounceNotifyRequest *req, char **ret_report_id) {
        const BounceSettings *s = &b->settings;
        _cleanup_(queue_envelope_done) QueueEnvelope orig = {0};
        _cleanup_free_ BounceReportRcpt *all = NULL, *wanted = NULL, *errors = NULL;
        _cleanup_free_ char *content = NULL;
        size_t n_wanted = 0, n_errors = 0, content_len = 0;
        char main_id[QUEUE_ID_SIZE] = "", copy_id[QUEUE_ID_SIZE];
        uint64_t want;
        bool null_sender, double_sender;
        int r;

        r = queue_file_read(req->fd, &orig);
        if (r < 0)
                return r;
        if (!streq(orig.queue_id, req->queue_id))
                return -EINVAL;

        all = calloc(req->n_rcpts, sizeof(BounceReportRcpt));
        wanted = calloc(req->n_rcpts, sizeof(BounceReportRcpt));
        errors = calloc(req->n_rcpts, sizeof(BounceReportRcpt));
        if (!all || !wanted || !errors)
                return -ENOMEM;
        for (size_t i = 0; i < req->n_rcpts; i++) {
                const BounceNotifyRcpt *nr = &req->rcpts[i];
                const QueueRecipient *qr;
                unsigned cls;

                if (nr->index >= orig.n_rcpts)
                        return -EINVAL;
                qr = &orig.rcpts[nr->index];
                all[i] = (BounceReportRcpt) {
                        .address = nr->address,
                        .orig = *nr->orig ? nr->orig : qr->orig,
                        .orcpt = qr->orcpt,
                        .dsn = nr->dsn,
                        .diagnostic = nr->diagnostic,
                        .relay = nr->relay,
                };
                if (notify_wants(req->kind, qr->notify))
                        wanted[n_wanted++] = all[i];
                cls = req->kind == BOUNCE_KIND_FAILURE ? error_class(nr->dsn) : 0;
                if (cls & s->notify_classes)
                        errors[n_errors++] = all[i];
        }

        /* Only the headers are needed when the whole message cannot go
         * back; read no more than that from a large message. */
        want = s->size_limit > 0 && orig.content_size > s->size_limit ? 1024 * 1024 + 1
                                                                        : orig.content_size;
        r = read_content(req->fd, &orig, want, &content, &content_len);
        if (r < 0)
                return r;

        null_sender = !*orig.sender;
        double_sender = !null_sender && is_double_bounce_sender(s, orig.sender);

        if (req->kind == BOUNCE_KIND_FAILURE) {
                if (double_sender) {
                        /* Never a triple bounce. */
                        log_discard(&orig, "undeliverable postmaster notification discarded");
                        goto done;
                }
                if (null_sender) {
                        if (!(s->notify_classes & BOUNCE_CLASS_2BOUNCE)) {
                                log_discard(&orig, "undeliverable bounce discarded (notify_classes "
                                                   "has no 2bounce)");
                                goto done;
                        }
                        Job job = {
                                .kind = BOUNCE_KIND_FAILURE,
                                .audience = BOUNCE_AUDIENCE_DOUBLE,
                                .sender = s->double_bounce_sender,
                                .to = s->double_bounce_notice_recipient,
                                .label = "postmaster non-delivery notification",
                                .rcpts = all,
                                .n_rcpts = req->n_rcpts,
                        };
                        r = send_report(b, req, &orig, content, content_len, &job, main_id);
                        if (r < 0)
                                return r;
                        goto done;
                }
                if (n_wanted > 0) {
                        Job job = {
                                .kind = BOUNCE_KIND_FAILURE,
                                .audience = BOUNCE_AUDIENCE_SENDER,
                                .sender = "",
                                .to = orig.sender,
                                .label = "sender non-delivery notification",
                                .rcpts = wanted,
                                .n_rcpts = n_wanted,
                        };
                        r = send_report(b, req, &orig, content, content_len, &job, main_id);
                        if (r < 0)
                                return r;
                }
                if (s->notify_classes & BOUNCE_CLASS_BOUNCE) {
                        Job job = {
                                .kind = BOUNCE_KIND_FAILURE,
                                .audience = BOUNCE_AUDIENCE_POSTMASTER,
                                .sender = s->double_bounce_sender,
                                .to = s->bounce_notice_recipient,
                                .label = "postmaster non-delivery notification",
                                .rcpts = all,
                                .n_rcpts = req->n_rcpts,
                        };
                        r = send_report(b, req, &orig, content, content_len, &job, copy_id);
                        if (r < 0)
                                log_mail(LOG_WARNING, NULL, orig.queue_id, LOG_NO_FIELDS,
                                         "cannot queue the postmaster copy, skipping it: %s",
                                         strerror(-r));
                }
                if (n_errors > 0) {
                        Job job = {
                                .kind = BOUNCE_KIND_FAILURE,
                                .audience = BOUNCE_AUDIENCE_POSTMASTER,
                                .sender = s->double_bounce_sender,
                                .to = s->error_notice_recipient,
                                .label = "postmaster error notification",
                                .rcpts = errors,
                                .n_rcpts = n_errors,
                        };
                        r = send_report(b, req, &orig, content, content_len, &job, copy_id);
                        if (r < 0)
                                log_mail(LOG_WARNING, NULL, orig.queue_id, LOG_NO_FIELDS,
                                         "cannot queue the postmaster error copy, skipping "
                                         "it: %s", strerror(-r));
                }
                goto done;
        }

        /* Delay and success reports go to real senders only: a bounce has
         * nobody to warn. */
        if (null_sender || double_sender)
                goto done;
        if (n_wanted > 0) {
                Job job = {
                        .kind = req->kind,
                        .audience = BOUNCE_AUDIENCE_SENDER,
                        .sender = "",
                        .to = orig.sender,
                        .label = req->kind == BOUNCE_KIND_DELAY
                                         ? "sender delay notification"
                                         : "sender delivery status notification",
                        .rcpts = wanted,
                        .n_rcpts = n_wanted,
                };
                r = send_report(b, req, &orig, content, content_len, &job, main_id);
                if (r < 0)
                        return r;
        }
        if (req->kind == BOUNCE_KIND_DELAY && (s->notify_classes & BOUNCE_CLASS_DELAY)) {
                Job job = {
                        .kind = BOUNCE_KIND_DELAY,
                        .audience = BOUNCE_AUDIENCE_POSTMASTER,
                        .sender = s->double_bounce_sender,
                        .to = s->delay_notice_recipient,
                        .label = "postmaster delay notification",
                        .rcpts = all,
                        .n_rcpts = req->n_rcpts,
                };
                r = send_report(b, req, &orig, content, content_len, &job, copy_id);
                if (r < 0)
                        log_mail(LOG_WARNING, NULL, orig.queue_id, LOG_NO_FIELDS,
                                 "cannot queue the postmaster delay copy, skipping it: %s",
                                 strerror(-r));
        }
done:
        *ret_report_id = strdup(main_id);
        return *ret_report_id ? 0 : -ENOMEM;
}
