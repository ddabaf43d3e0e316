/* smtpd-session.c: one SMTP session of postern-smtpd as an explicit state
 * machine on the event loop. Input is read into a capped buffer and
 * processed in order as far as it goes (pipelining: replies collect in the
 * output buffer and go out together when the input is exhausted or the
 * session must wait); DATA and BDAT content flows through the decoder and
 * header/body splitter of smtpd-proto.c into a queue file, which the group
 * committer of smtpd-queue.c makes durable before the 250 reply.
 *
 * States: COMMAND (reading command lines), DATA (a DATA body), BDAT (a BDAT
 * chunk), COMMIT (waiting for the queue file to be durable; input is still
 * buffered but not processed), TLS_HANDSHAKE (after STARTTLS or at connect
 * in wrapper mode: no SMTP I/O until the handshake ends), AUTH_SERVER
 * (waiting for the Dovecot auth service; input buffered, not processed),
 * AUTH_CLIENT (after a 334 challenge: the next line is a SASL response, not
 * a command), CLOSING (flushing the last reply). The error-sleep pause and
 * the output high-water mark hold processing without being states of their
 * own. Before all of them the client's host name is looked up
 * (smtpd_peer_lookup_start(), at most 10 s): until session_start() the
 * session has no I/O source or timer, and says nothing.
 *
 * Entry points: smtp_session_new(), smtp_session_free(). All client I/O
 * goes through SmtpIo (smtpd-tls.h): plain socket operations here, TLS in
 * smtpd-tls.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "queue-file.h"
#include "queue-id.h"
#include "smtpd-check.h"
#include "smtpd-notice.h"
#include "smtpd-proto.h"
#include "smtpd.h"

/* Caps on what a client can make us hold. */
#define INPUT_CHUNK (64 * 1024)                 /* one read */
#define OUTPUT_HIGH_WATER (256 * 1024)          /* stop processing commands above this */
#define HELO_MAX 255

typedef enum SmtpState {
        SMTP_STATE_COMMAND,
        SMTP_STATE_DATA,
        SMTP_STATE_BDAT,
        SMTP_STATE_COMMIT,
        SMTP_STATE_CHECK,               /* waiting for the access policy (DNS, policy server) */
        SMTP_STATE_TLS_HANDSHAKE,
        SMTP_STATE_AUTH_SERVER,
        SMTP_STATE_AUTH_CLIENT,
        SMTP_STATE_CLOSING,
} SmtpState;

static ssize_t plain_read(SmtpIo *io, void *buf, size_t n) {
        ssize_t k = recv(io->fd, buf, n, 0);
        if (k < 0)
                return errno == EINTR ? -EAGAIN : -errno;
        return k;
}

static ssize_t plain_write(SmtpIo *io, const void *buf, size_t n) {
        ssize_t k = send(io->fd, buf, n, MSG_NOSIGNAL);
        if (k < 0)
                return errno == EINTR ? -EAGAIN : -errno;
        return k;
}

static void plain_close(SmtpIo *io) {
        if (io->fd >= 0)
                (void) close(io->fd);
        io->fd = -1;
}

static const SmtpIoOps plain_io_ops = {
        .name = "plain",
        .pending = NULL,
        .read = plain_read,
        .write = plain_write,
        .close = plain_close,
};

typedef struct SmtpTransaction {
        SmtpMailArgs mail;
        QueueEnvelope env;
        char queue_id[QUEUE_ID_SIZE];   /* set at the first accepted RCPT */
        QueueWriter *writer;
        bool started;                   /* DATA or the first BDAT began the content */
        SmtpDataDecoder dec;
        SmtpContent content;
        StrBuf decoded;
        uint64_t size;                  /* content bytes, Received header included */
        bool too_big;
        int write_error;
        char *reject;                   /* full reply of a REJECT content check */
        bool discard;
        bool hold;
        char *redirect;
        bool have_date, have_message_id, have_from;
        char *message_id;               /* its value, escaped, for the message-id= log line */
        bool bdat;                      /* content came by BDAT */
        uint64_t chunk_left;
        uint64_t chunk_size;
        bool chunk_last;
        SmtpdCommit *commit;
        char **prepend;                 /* headers from PREPEND access actions */
} SmtpTransaction;

struct SmtpSession {
        Smtpd *smtpd;
        SmtpSession *prev, *next;
        SmtpIo io;
        sd_event_source *io_source;
        sd_event_source *timer;
        sd_event_source *sleep_timer;
        uint32_t io_events;
        SmtpState state;
        bool sleeping;                  /* error sleep: replies held back */
        bool dead;                      /* free at the end of the current callback */
        bool eof;
        bool in_callback;
        StrBuf in;
        size_t in_pos;
        StrBuf out;
        InetAddr addr;
        bool have_addr;
        unsigned port;
        char *addr_str;                 /* "192.0.2.1" */
        char *name;                     /* reverse name, "unknown" */
        char *client;                   /* "name[addr]" for logs */
        char *helo;                     /* escaped for logs and headers */
        bool esmtp;
        unsigned error_count;
        unsigned junk_commands;         /* NOOP, VRFY, ETRN, RSET since the last delivery */
        bool skip_line;                 /* discarding the rest of an overlong line */
        uint64_t bdat_skip;             /* bytes of a refused BDAT chunk to discard */
        SmtpVerb last_verb;
        bool pipelining_logged;
        unsigned cmd_total[_SMTP_VERB_MAX], cmd_ok[_SMTP_VERB_MAX];
        SmtpTransaction *tx;
        char *local_addr;               /* for Dovecot's lip= */
        unsigned local_port;
        char *tls_info;                 /* "TLSv1.3 with cipher ...", NULL before TLS */
        char *sasl_method;              /* set by a successful AUTH */
        char *sasl_username;            /* escaped for logs and the queue file */
        char *sasl_mech;                /* mechanism of the AUTH in progress */
        SmtpdSaslRequest *sasl_req;
        /* Access policy (smtpd-check.c). */
        SmtpdCheck *check;
        SmtpdPeerLookup *peer_lookup;   /* the client's host name, before the greeting */
        bool ill_pipelining;            /* commands sent ahead without PIPELINING */
        bool access_denied;             /* client restrictions refused it at connect */
        void (*check_cont)(SmtpSession *s, const RestrictResult *res);
        SmtpRcptArgs pending_rcpt;      /* RCPT waiting for the policy */
        SmtpVerb pending_verb;
        /* Postmaster notice (smtpd-notice.c): the transcript when
         * notify_classes has a class of ours, the classes of the errors
         * answered, and why the session was cut short. */
        SmtpdTranscript transcript;
        unsigned error_classes;
        bool policy_reply;              /* the next replies come from a restriction */
        const char *abort_reason;
};

static void session_run(SmtpSession *s);
static int session_flush(SmtpSession *s);

static void *mfree(void *p) {
        free(p);
        return NULL;
}

static void ascii_strupper(char *p) {
        for (; *p; p++)
                if (*p >= 'a' && *p <= 'z')
                        *p = (char) (*p - 'a' + 'A');
}

static SmtpdSettings *S(SmtpSession *s) {
        return &s->smtpd->settings;
}

static SmtpTransaction *transaction_free(SmtpTransaction *t) {
        if (!t)
                return NULL;
        /* A detached commit still finishes: the data is safe either way. */
        smtpd_commit_detach(t->commit);
        smtp_mail_args_done(&t->mail);
        queue_envelope_done(&t->env);
        queue_writer_free(t->writer);
        smtp_content_done(&t->content);
        strbuf_done(&t->decoded);
        free(t->reject);
        free(t->redirect);
        strv_free(t->prepend);
        free(t->message_id);
        free(t);
        return NULL;
}

/* Whether the session keeps a transcript for a postmaster notice: only
 * when notify_classes has a class that smtpd reports (Postfix records
 * nothing either then). */
static bool recording(SmtpSession *s) {
        return smtpd_notice_mask(s->smtpd) != 0;
}

/* smtpd_reject_footer text (len bytes) with $client_address, $client_port,
 * $server_name and $localtime (Postfix's smtpd_expand names that make
 * sense for a footer) expanded, appended to out. */
static int footer_expand(SmtpSession *s, const char *text, size_t len, StrBuf *out) {
        _cleanup_free_ char *tmpl = strndup(text, len), *x = NULL;
        char port[16], localtime_buf[64] = "";
        time_t now = time(NULL);
        struct tm tm;

        snprintf(port, sizeof(port), "%u", s->port);
        if (localtime_r(&now, &tm))
                (void) strftime(localtime_buf, sizeof(localtime_buf), "%b %d %H:%M:%S", &tm);
        const char *const vars[] = {
                "client_address", s->addr_str ? s->addr_str : "unknown", "client_port", port,
                "server_name", S(s)->myhostname, "localtime", localtime_buf, NULL,
        };
        if (!tmpl || !(x = str_expand_vars(tmpl, vars)))
                return -ENOMEM;
        return strbuf_puts(out, x);
}

/* smtpd_reject_footer after the last line of a 4xx or 5xx reply, as
 * Postfix's smtp_reply_footer() does: each line of the footer ("\n" in it
 * starts a new one) gets the reply's code and enhanced status code, and
 * the reply's own line becomes a continuation line; "\c" at the start of
 * the footer appends its first line to the reply's line instead. Returns
 * the reply lines joined by CR LF (caller frees), or NULL. */
static char *footer_apply(SmtpSession *s, const char *text) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        const char *footer = S(s)->reject_footer, *p, *nl;
        size_t dsn = 0;
        bool first = true;

        if (text[3] == ' ' && text[4] >= '2' && text[4] <= '5' && text[5] == '.') {
                dsn = strspn(text + 4, "0123456789.");
                if (dsn < 5 || text[4 + dsn] != ' ')
                        dsn = 0;
        }
        if (strbuf_puts(&out, text) < 0)
                return NULL;
        for (p = footer; ; p = nl + 2) {
                size_t len;
                nl = strstr(p, "\\n");
                len = nl ? (size_t) (nl - p) : strlen(p);
                if (first && startswith(p, "\\c")) {
                        p += 2;
                        len -= 2;
                } else {
                        /* The line before becomes a continuation line. */
                        char *last = strrchr(out.data, '\n');
                        last = last ? last + 1 : out.data;
                        if (strlen(last) > 3)
                                last[3] = '-';
                        else if (strbuf_putc(&out, '-') < 0)
                                return NULL;
                        if (strbuf_printf(&out, "\r\n%.3s %.*s%s", text, (int) dsn, text + 4,
                                          dsn ? " " : "") < 0)
                                return NULL;
                }
                first = false;
                if (footer_expand(s, p, len, &out) < 0)
                        return NULL;
                if (!nl)
                        break;
        }
        return strbuf_steal(&out);
}

/* Replies. Every reply line goes through here; 4xx and 5xx count as
 * errors (smtpd_soft_error_limit, smtpd_hard_error_limit) and have a
 * notify_classes class: policy when a restriction answered (policy_reply),
 * else by the reply code (smtpd_notice_classify()). */
_printf_(2, 3) static void reply(SmtpSession *s, const char *fmt, ...) {
        va_list ap;
        size_t start = s->out.len;
        int r;

        va_start(ap, fmt);
        _cleanup_free_ char *text = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!text) {
                s->dead = true;
                return;
        }
        /* The footer follows the last line of a reply ("550 ...", not
         * "550-..."); it is neither logged nor counted as an error. */
        if (S(s)->reject_footer && (text[0] == '4' || text[0] == '5') && strlen(text) >= 3 &&
            (text[3] == ' ' || text[3] == 0)) {
                char *full = footer_apply(s, text);
                if (!full) {
                        s->dead = true;
                        return;
                }
                free(text);
                text = full;
        }
        r = strbuf_puts(&s->out, text);
        if (r >= 0)
                r = strbuf_puts(&s->out, "\r\n");
        if (r < 0) {
                s->dead = true;
                return;
        }
        if (s->out.data[start] == '4' || s->out.data[start] == '5') {
                unsigned cls = smtpd_notice_classify(text);
                s->error_count++;
                /* A restriction's lookup failure keeps its own class. */
                if (s->policy_reply && !(cls & (SMTPD_NOTICE_RESOURCE | SMTPD_NOTICE_SOFTWARE)))
                        cls = SMTPD_NOTICE_POLICY;
                s->error_classes |= cls;
        }
        if (recording(s))
                for (const char *p = text, *e; *p; p = *e ? e + 2 : e) {
                        e = strstr(p, "\r\n");
                        if (!e)
                                e = p + strlen(p);
                        smtpd_transcript_add(&s->transcript, "Out: ", p, (size_t) (e - p));
                }
}

/* A rejection by a restriction, a rate limit or a content check: the
 * policy class of notify_classes. */
static void reply_policy(SmtpSession *s, const char *text) {
        s->policy_reply = true;
        reply(s, "%s", text);
        s->policy_reply = false;
}

/* The transcript line of a command. The initial response of AUTH may hold
 * a password: only the verb and the mechanism are kept. */
static void record_command(SmtpSession *s, const char *line, size_t len) {
        char buf[128];
        size_t i = 4, m;

        if (!recording(s))
                return;
        if (len < 4 || strncasecmp(line, "AUTH", 4) != 0 ||
            (len > 4 && line[4] != ' ' && line[4] != '\t')) {
                smtpd_transcript_add(&s->transcript, "In:  ", line, len);
                return;
        }
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
                i++;
        m = i;
        while (m < len && line[m] != ' ' && line[m] != '\t')
                m++;
        snprintf(buf, sizeof(buf), "AUTH %.*s%s", (int) MIN(m - i, (size_t) 64), line + i,
                 m < len ? " (initial response not shown)" : "");
        smtpd_transcript_add(&s->transcript, "In:  ", buf, strlen(buf));
}

/* The journal fields of a rejection: the client, and where known the
 * restriction that fired (POSTERN_RESTRICTION), the sender and the
 * recipient. fields needs room for 9 entries. */
static const char *const *reject_fields(SmtpSession *s, const char *restriction,
                                        const char *from, const char *to, const char **fields) {
        size_t n = 0;
        fields[n++] = "POSTERN_CLIENT";
        fields[n++] = s->client;
        if (restriction) {
                fields[n++] = "POSTERN_RESTRICTION";
                fields[n++] = restriction;
        }
        if (from) {
                fields[n++] = "POSTERN_SENDER";
                fields[n++] = from;
        }
        if (to) {
                fields[n++] = "POSTERN_RECIPIENT";
                fields[n++] = to;
        }
        fields[n] = NULL;
        return fields;
}

/* restriction: what the access policy named (smtpd_check_restriction()),
 * NULL for rejections outside it. */
static void log_reject_by(SmtpSession *s, const char *verb, const char *text,
                          const char *restriction) {
        _cleanup_free_ char *from = NULL;
        SmtpTransaction *t = s->tx;
        const char *fields[9];

        from = t && t->mail.sender ? str_escape_log(t->mail.sender, 300) : NULL;
        log_mail(LOG_INFO, MSGID_REJECT, t && t->queue_id[0] ? t->queue_id : NULL,
                 reject_fields(s, restriction, from, NULL, fields),
                 "%sreject: %s from %s: %s; from=<%s> proto=%s helo=<%s>",
                 t && t->queue_id[0] ? "" : "NOQUEUE: ", verb, s->client, text, strempty(from),
                 s->esmtp ? "ESMTP" : "SMTP", strempty(s->helo));
}

static void log_reject(SmtpSession *s, const char *verb, const char *text) {
        log_reject_by(s, verb, text, NULL);
}

/* Output and event mask. */
static void session_update_events(SmtpSession *s) {
        uint32_t want = 0;

        if (s->dead || !s->io_source)
                return;
        if (s->state == SMTP_STATE_TLS_HANDSHAKE) {
                /* The handshake decides the direction. Before it the
                 * STARTTLS reply goes out and nothing is read: plaintext
                 * must not be taken for TLS input. */
                want = s->io.ssl ? s->io.want : s->out.len > 0 ? EPOLLOUT : 0;
        } else {
                if (!s->eof && s->state != SMTP_STATE_CLOSING &&
                    s->in.len - s->in_pos < S(s)->line_length_limit + INPUT_CHUNK)
                        want |= EPOLLIN;
                if (s->out.len > 0 && !s->sleeping)
                        want |= EPOLLOUT;
                if (s->io.read_wants_write)
                        want |= EPOLLOUT;
        }
        if (want != s->io_events) {
                if (sd_event_source_set_io_events(s->io_source, want) < 0)
                        s->dead = true;
                s->io_events = want;
        }
}

static int session_flush(SmtpSession *s) {
        size_t done = 0;
        if (s->sleeping)
                return 0;
        while (done < s->out.len) {
                ssize_t k = s->io.ops->write(&s->io, s->out.data + done, s->out.len - done);
                if (k == -EAGAIN)
                        break;
                if (k <= 0) {
                        /* The client is gone: nothing more to say. */
                        s->dead = true;
                        s->out.len = 0;
                        return -EPIPE;
                }
                done += (size_t) k;
        }
        if (done > 0) {
                memmove(s->out.data, s->out.data + done, s->out.len - done);
                s->out.len -= done;
        }
        if (s->out.len == 0 && s->state == SMTP_STATE_CLOSING)
                s->dead = true;
        return 0;
}

/* Ends the session after the pending replies. */
static void session_close(SmtpSession *s) {
        s->state = SMTP_STATE_CLOSING;
        s->sleeping = false;
        (void) session_flush(s);
}

static void session_enter_sleep(SmtpSession *s);

/* After each command: the hard error limit and the error sleep. */
static bool after_error_checks(SmtpSession *s) {
        if (s->error_count >= S(s)->hard_error_limit) {
                log_info("too many errors after %s from %s", smtp_verb_name(s->last_verb),
                         s->client);
                reply(s, "421 4.7.0 %s Error: too many errors", S(s)->myhostname);
                s->abort_reason = "too many errors";
                session_close(s);
                return false;
        }
        return true;
}

static void maybe_error_sleep(SmtpSession *s, unsigned errors_before) {
        /* Postfix 2.1+: delay replies once a client made more than
         * smtpd_soft_error_limit errors without delivering mail. */
        if (s->error_count > errors_before && s->error_count > S(s)->soft_error_limit &&
            S(s)->error_sleep_usec > 0 && s->state != SMTP_STATE_CLOSING)
                session_enter_sleep(s);
}

static int on_sleep_done(sd_event_source *es, uint64_t usec, void *userdata);

static void session_enter_sleep(SmtpSession *s) {
        uint64_t now;
        int r;

        s->sleeping = true;
        (void) sd_event_now(s->smtpd->event, CLOCK_MONOTONIC, &now);
        if (s->sleep_timer) {
                r = sd_event_source_set_time(s->sleep_timer, now + S(s)->error_sleep_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s->sleep_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(s->smtpd->event, &s->sleep_timer, CLOCK_MONOTONIC,
                                      now + S(s)->error_sleep_usec, 0, on_sleep_done, s);
        if (r < 0)
                s->sleeping = false;
}

/* The transaction: MAIL starts it, RSET/HELO/EHLO and the end of the
 * message end it. */
static void transaction_reset(SmtpSession *s) {
        s->tx = transaction_free(s->tx);
}

static const char *protocol_name(SmtpSession *s) {
        /* RFC 3848: S for TLS, A for an authenticated client. */
        static const char *const names[2][2][4] = {
                {{"SMTP", "SMTPA", "SMTPS", "SMTPSA"}, {"ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA"}},
                {{"UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA"},
                 {"UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA"}},
        };
        bool utf8 = s->tx && s->tx->mail.smtputf8;
        return names[utf8][s->esmtp][(s->tls_info ? 2 : 0) + (s->sasl_username ? 1 : 0)];
}

/* Access policy (smtpd-check.c). An evaluation may wait for DNS or a
 * policy server: the session then sits in SMTP_STATE_CHECK (input is
 * buffered, not processed) and the continuation runs when the answer is
 * in, as after a queue commit. */
static void build_request(SmtpSession *s, RestrictRequest *req) {
        SmtpTransaction *t = s->tx;
        *req = (RestrictRequest) {
                .service = S(s)->service,
                .client_addr = s->have_addr ? &s->addr : NULL,
                .helo = s->helo,
                .sender = t ? t->mail.sender : NULL,
                .sasl_username = s->sasl_username,
                .sasl_method = s->sasl_method,
                .queue_id = t && t->queue_id[0] ? t->queue_id : NULL,
                .protocol = s->esmtp ? "ESMTP" : "SMTP",
                .tls = s->tls_info != NULL,
                .smtputf8 = t && t->mail.smtputf8,
                .ill_pipelining = s->ill_pipelining,
                .rcpt_count = t ? (unsigned) t->env.n_rcpts : 0,
                .size = t ? t->mail.size : 0,
        };
}

/* Logs warn, reject_warning, hold and discard events of a check in the
 * shape of Postfix's smtpd ("NOQUEUE: warn: RCPT from ...: text; from=<>
 * to=<> proto=ESMTP helo=<>"). */
static void log_notes(SmtpSession *s, const char *verb, const RestrictResult *res,
                      const char *rcpt) {
        SmtpTransaction *t = s->tx;
        for (size_t i = 0; i < res->n_notes; i++) {
                _cleanup_free_ char *from = t ? str_escape_log(t->mail.sender, 300) : NULL,
                                    *to = rcpt ? str_escape_log(rcpt, 300) : NULL,
                                    *text = str_escape_log(res->notes[i].text, 500);
                log_mail(LOG_INFO, MSGID_REJECT, t && t->queue_id[0] ? t->queue_id : NULL,
                         LOG_FIELDS("POSTERN_CLIENT", s->client, "POSTERN_SENDER", from,
                                    "POSTERN_RECIPIENT", to),
                         "%s%s: %s from %s: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
                         t && t->queue_id[0] ? "" : "NOQUEUE: ", res->notes[i].action, verb,
                         s->client, strempty(text), strempty(from), strempty(to),
                         s->esmtp ? "ESMTP" : "SMTP", strempty(s->helo));
        }
}

/* HOLD, DISCARD and PREPEND apply to the whole transaction. */
static void apply_effects(SmtpSession *s, const RestrictResult *res) {
        SmtpTransaction *t = s->tx;
        if (!t)
                return;
        if (res->hold)
                t->hold = true;
        if (res->discard)
                t->discard = true;
        STRV_FOREACH(h, res->prepend)
                (void) strv_extend(&t->prepend, *h);
}

typedef void (*CheckCont)(SmtpSession *s, const RestrictResult *res);
static void on_check_done(void *userdata);

static void session_check(SmtpSession *s, RestrictStage stage, const RestrictRequest *req,
                          CheckCont cont) {
        static const RestrictResult oom = {.reject = true,
                                           .reply = (char *) "451 4.3.0 Error: out of memory"};
        int r = smtpd_check_start(s->check, stage, req, on_check_done, s);
        if (r < 0) {
                cont(s, &oom);
                return;
        }
        if (r > 0) {
                cont(s, smtpd_check_result(s->check));
                smtpd_check_release(s->check);
                return;
        }
        s->check_cont = cont;
        s->state = SMTP_STATE_CHECK;
        /* Replies to earlier pipelined commands go out while we wait. */
        (void) session_flush(s);
}

/* The greeting. With smtpd_delay_reject = no the client restrictions run
 * first and a rejection takes the place of the 220; every later command
 * but QUIT then gets a 503 (Postfix's smtpd_proto()). */
static void connect_checked(SmtpSession *s, const RestrictResult *res) {
        log_notes(s, "CONNECT", res, NULL);
        if (res->reject) {
                log_reject_by(s, "CONNECT", res->reply,
                              smtpd_check_restriction(s->check));
                reply_policy(s, res->reply);
                s->access_denied = true;
                return;
        }
        reply(s, "220 %s", S(s)->banner);
}

static void session_greet(SmtpSession *s) {
        if (!smtpd_check_stage_empty(s->check, RESTRICT_STAGE_CONNECT)) {
                RestrictRequest req;
                build_request(s, &req);
                session_check(s, RESTRICT_STAGE_CONNECT, &req, connect_checked);
                return;
        }
        reply(s, "220 %s", S(s)->banner);
}

static void rfc5322_date(time_t t, char *buf, size_t size) {
        struct tm tm;
        localtime_r(&t, &tm);
        /* The C locale's names are what RFC 5322 3.3 wants. */
        static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        long off = tm.tm_gmtoff / 60;
        snprintf(buf, size, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld (%s)", days[tm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60,
                 tm.tm_zone ? tm.tm_zone : "UTC");
}

/* Writes content to the queue file, enforcing message_size_limit. Errors
 * are remembered and answered at the end of the message: the client is
 * still sending. */
static void message_write(SmtpSession *s, const void *p, size_t n) {
        SmtpTransaction *t = s->tx;
        int r;

        t->size += n;
        if (S(s)->message_size_limit && t->size > S(s)->message_size_limit)
                t->too_big = true;
        if (t->too_big || t->write_error || t->reject || t->discard)
                return;
        r = queue_writer_append(t->writer, p, n);
        if (r < 0)
                t->write_error = r;
}

static void log_check(SmtpSession *s, const char *action, const char *where, const char *line,
                      const char *text) {
        _cleanup_free_ char *esc = str_escape_log(line, 200);
        SmtpTransaction *t = s->tx;
        log_mail(LOG_INFO, streq(action, "reject") ? MSGID_REJECT : MSGID_QUEUED, t->queue_id,
                 LOG_FIELDS("POSTERN_CLIENT", s->client, "POSTERN_SENDER", t->mail.sender),
                 "%s: %s %s from %s; from=<%s> to=<%s> proto=%s helo=<%s>%s%s", action, where,
                 strempty(esc), s->client, t->mail.sender,
                 t->env.n_rcpts ? t->env.rcpts[0].address : "", protocol_name(s),
                 strempty(s->helo), text ? ": " : "", strempty(text));
}

/* Applies the result of a header_checks or body_checks match (Postfix
 * header_checks(5) actions). Returns true when the line is to be dropped;
 * *ret_replace may receive replacement text (caller frees). */
static bool apply_check(SmtpSession *s, const char *where, const char *line, const char *result,
                        char **ret_prepend, char **ret_replace) {
        SmtpTransaction *t = s->tx;
        const char *text;
        _cleanup_free_ char *addr = NULL;

        switch (map_check_action(result, &text)) {
        case MAP_CHECK_REJECT:
                if (!t->reject) {
                        /* "REJECT 554 5.7.0 text" sets the whole reply. */
                        if (strlen(text) > 4 && (text[0] == '4' || text[0] == '5') &&
                            text[3] == ' ' && str_is_ascii_digits((char[]) {text[1], text[2], 0}))
                                t->reject = strdup(text);
                        else
                                t->reject = strdup_printf("550 5.7.1 %s",
                                                          *text ? text : "Message content rejected");
                        log_check(s, "reject", where, line, t->reject ? t->reject + 4 : NULL);
                }
                return false;
        case MAP_CHECK_DISCARD:
                t->discard = true;
                log_check(s, "discard", where, line, *text ? text : NULL);
                return false;
        case MAP_CHECK_HOLD:
                t->hold = true;
                log_check(s, "hold", where, line, *text ? text : NULL);
                return false;
        case MAP_CHECK_WARN:
                log_check(s, "warning", where, line, *text ? text : NULL);
                return false;
        case MAP_CHECK_INFO:
                log_check(s, "info", where, line, *text ? text : NULL);
                return false;
        case MAP_CHECK_IGNORE:
                return true;
        case MAP_CHECK_REDIRECT:
                if (addr_parse_path(text, ADDR_PARSE_ALLOW_8BIT, &addr, NULL, NULL) == 0 && *addr) {
                        free(t->redirect);
                        t->redirect = steal_ptr(addr);
                        log_check(s, "redirect", where, line, t->redirect);
                } else
                        log_warning("%s: bad REDIRECT address in content check result \"%s\", ignoring",
                                    t->queue_id, result);
                return false;
        case MAP_CHECK_PREPEND:
                *ret_prepend = strdup(text);
                return false;
        case MAP_CHECK_REPLACE:
                *ret_replace = strdup(text);
                return true;
        case MAP_CHECK_DUNNO:
                return false;
        case MAP_CHECK_UNKNOWN:
                break;
        }
        log_warning("%s: unsupported content check action \"%.*s\", ignoring", t->queue_id,
                    (int) strcspn(result, " \t"), result);
        return false;
}

/* Looks a line up in a check list. Returns whether to drop it. */
static bool run_checks(SmtpSession *s, MapList *checks, const char *where, const char *line,
                       const char *raw, size_t raw_len) {
        _cleanup_free_ char *result = NULL, *prepend = NULL, *replace = NULL;
        bool drop = false;
        int r;

        if (!checks)
                return false;
        r = map_list_lookup(checks, line, &result);
        if (r < 0) {
                /* Cannot check: defer rather than let the message pass. */
                log_warning("%s: %s_checks lookup failed: %s; deferring", s->tx->queue_id, where,
                            strerror(-r));
                if (!s->tx->reject)
                        s->tx->reject = strdup("451 4.3.0 Error: content check lookup failed");
                return false;
        }
        if (r == 0 || !result)
                return false;
        drop = apply_check(s, where, line, result, &prepend, &replace);
        if (prepend) {
                message_write(s, prepend, strlen(prepend));
                message_write(s, "\n", 1);
        }
        if (replace) {
                message_write(s, replace, strlen(replace));
                message_write(s, "\n", 1);
        }
        return drop;
}

static int on_header(void *userdata, const char *raw, size_t len, const char *unfolded,
                     bool truncated) {
        SmtpSession *s = userdata;
        SmtpTransaction *t = s->tx;

        if (startswith_no_case(unfolded, "Date:"))
                t->have_date = true;
        else if (startswith_no_case(unfolded, "Message-ID:") && !t->have_message_id) {
                _cleanup_free_ char *v = strdup(unfolded + strlen("Message-ID:"));
                t->have_message_id = true;
                t->message_id = v ? str_escape_log(strstrip(v), 300) : NULL;
        }
        else if (startswith_no_case(unfolded, "From:"))
                t->have_from = true;
        if (run_checks(s, S(s)->header_checks, "header", unfolded, raw, len))
                return 0;
        message_write(s, raw, len);
        message_write(s, "\n", 1);
        return 0;
}

/* The client matches local_header_rewrite_clients. */
static bool header_rewrite_local(SmtpSession *s) {
        unsigned m = S(s)->header_rewrite_clients;

        if (m & SMTPD_REWRITE_ALL)
                return true;
        if ((m & SMTPD_REWRITE_SASL) && s->sasl_username)
                return true;
        if (!s->have_addr)
                return false;
        if ((m & SMTPD_REWRITE_MYNETWORKS) && smtpd_client_in_mynetworks(s->smtpd, &s->addr))
                return true;
        return (m & SMTPD_REWRITE_INET_INTERFACES) && S(s)->own_addresses &&
               addr_is_own_address(S(s)->own_addresses, &s->addr);
}

/* always_add_missing_headers, or the client matches
 * local_header_rewrite_clients. */
static bool add_missing_headers(SmtpSession *s) {
        return S(s)->always_add_missing_headers || header_rewrite_local(s);
}

static int on_end_of_headers(void *userdata) {
        SmtpSession *s = userdata;
        SmtpTransaction *t = s->tx;
        char date[80], stamp[32];
        time_t now = time(NULL);
        struct tm tm;

        /* Postfix cleanup adds what a mail user agent left out, for local
         * submission: Date, Message-ID and From. */
        if (add_missing_headers(s)) {
                _cleanup_free_ char *hdr = NULL;
                if (!t->have_date) {
                        rfc5322_date(now, date, sizeof(date));
                        hdr = strdup_printf("Date: %s\n", date);
                        if (hdr)
                                message_write(s, hdr, strlen(hdr));
                        free(hdr);
                        hdr = NULL;
                }
                if (!t->have_message_id) {
                        gmtime_r(&now, &tm);
                        strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
                        hdr = strdup_printf("Message-ID: <%s.%s@%s>\n", stamp, t->queue_id,
                                            S(s)->myhostname);
                        if (hdr) {
                                message_write(s, hdr, strlen(hdr));
                                t->message_id = strndup(hdr + strlen("Message-ID: "),
                                                        strlen(hdr) - strlen("Message-ID: \n"));
                        }
                        free(hdr);
                        hdr = NULL;
                }
                if (!t->have_from) {
                        hdr = strdup_printf("From: %s\n", *t->env.sender ? t->env.sender
                                                                          : "MAILER-DAEMON");
                        if (hdr)
                                message_write(s, hdr, strlen(hdr));
                }
        }
        message_write(s, "\n", 1);
        return 0;
}

static int on_body(void *userdata, const char *text, size_t len, bool first, bool eol) {
        SmtpSession *s = userdata;
        if (first && S(s)->body_checks) {
                _cleanup_free_ char *line = strndup(text, len);
                if (line && run_checks(s, S(s)->body_checks, "body", line, text, len))
                        return 0;
        }
        message_write(s, text, len);
        if (eol)
                message_write(s, "\n", 1);
        return 0;
}

static const SmtpContentOps content_ops = {
        .header = on_header,
        .end_of_headers = on_end_of_headers,
        .body = on_body,
};

static const char *storage_reply(int r) {
        if (r == -ENOSPC || r == -EDQUOT || r == -EFBIG)
                return "452 4.3.1 Insufficient system storage";
        return "451 4.3.0 Error: queue file write error";
}

/* Creates the queue file and writes the Received header. */
static int message_start(SmtpSession *s, bool bdat) {
        SmtpTransaction *t = s->tx;
        _cleanup_free_ char *received = NULL;
        char date[80];
        int r;

        r = queue_writer_new(s->smtpd->incoming_fd, t->queue_id, &t->writer);
        if (r < 0) {
                log_warning("%s: cannot create queue file: %s", t->queue_id, strerror(-r));
                reply(s, "%s", storage_reply(r));
                return r;
        }
        t->started = true;
        t->bdat = bdat;
        smtp_data_decoder_init(&t->dec, bdat);
        smtp_content_init(&t->content, &content_ops, s, S(s)->header_size_limit, 0);
        rfc5322_date(time(NULL), date, sizeof(date));
        /* RFC 5321 4.4; "for <rcpt>" only for a single recipient, as Postfix.
         * TLS facts (smtpd_tls_received_header) and the authenticated user
         * (smtpd_sasl_authenticated_header) go between "from" and "by". */
        _cleanup_free_ char *tls_line = NULL, *auth_line = NULL;
        if (s->tls_info && S(s)->tls_received_header)
                tls_line = strdup_printf("\t(using %s)\n\t(No client certificate requested)\n",
                                         s->tls_info);
        if (s->sasl_username && S(s)->sasl_authenticated_header)
                auth_line = strdup_printf("\t(Authenticated sender: %s)\n", s->sasl_username);
        received = strdup_printf("Received: from %s (%s [%s])\n%s%s\tby %s (%s) with %s id %s%s%s%s; %s\n",
                                 s->helo ? s->helo : s->name, s->name, s->addr_str,
                                 strempty(tls_line), strempty(auth_line),
                                 S(s)->myhostname, S(s)->mail_name, protocol_name(s), t->queue_id,
                                 t->env.n_rcpts == 1 ? "\n\tfor <" : "",
                                 t->env.n_rcpts == 1 ? t->env.rcpts[0].address : "",
                                 t->env.n_rcpts == 1 ? ">" : "", date);
        if (!received)
                return -ENOMEM;
        message_write(s, received, strlen(received));
        STRV_FOREACH(h, t->prepend) {
                message_write(s, *h, strlen(*h));
                message_write(s, "\n", 1);
        }
        return 0;
}

static void on_commit_done(void *userdata, int r);
static void eod_checked(SmtpSession *s, const RestrictResult *res);
static void message_commit(SmtpSession *s);

/* The end of DATA or of the last BDAT chunk: answer the content checks and
 * limits, finish the queue file and hand it to the committer. */
static void message_end(SmtpSession *s) {
        SmtpTransaction *t = s->tx;
        int r;

        s->state = SMTP_STATE_COMMAND;
        r = smtp_content_finish(&t->content);
        if (r < 0 && !t->write_error)
                t->write_error = r;
        if (t->too_big) {
                log_reject(s, "END-OF-MESSAGE", "552 5.3.4 Message size exceeds fixed limit");
                reply(s, "552 5.3.4 Message size exceeds fixed limit");
                goto done;
        }
        if (t->reject) {
                reply_policy(s, t->reject);
                goto done;
        }
        if (t->write_error) {
                log_warning("%s: queue file write error: %s", t->queue_id, strerror(-t->write_error));
                reply(s, "%s", storage_reply(t->write_error));
                goto done;
        }
        if (!smtpd_check_stage_empty(s->check, RESTRICT_STAGE_EOD)) {
                RestrictRequest req;
                build_request(s, &req);
                req.size = t->size;
                session_check(s, RESTRICT_STAGE_EOD, &req, eod_checked);
                return;
        }
        message_commit(s);
        return;
done:
        transaction_reset(s);
}

static void eod_checked(SmtpSession *s, const RestrictResult *res) {
        log_notes(s, "END-OF-MESSAGE", res, NULL);
        if (res->reject) {
                log_reject_by(s, "END-OF-MESSAGE", res->reply,
                              smtpd_check_restriction(s->check));
                reply_policy(s, res->reply);
                transaction_reset(s);
                return;
        }
        apply_effects(s, res);
        message_commit(s);
}

/* Finishes the queue file and hands it to the committer. */
static void message_commit(SmtpSession *s) {
        SmtpTransaction *t = s->tx;
        int r;

        if (t->discard) {
                /* Accepted and dropped, as Postfix's DISCARD does. */
                reply(s, "250 2.0.0 Ok: queued as %s", t->queue_id);
                s->error_count = 0;
                s->junk_commands = 0;
                goto done;
        }
        if (t->redirect) {
                queue_envelope_clear_rcpts(&t->env);
                r = queue_envelope_add_rcpt(&t->env, t->redirect, 0, NULL);
                if (r < 0) {
                        reply(s, "451 4.3.0 Error: out of memory");
                        goto done;
                }
        }
        t->env.flags = t->hold ? QUEUE_FLAG_HOLD : 0;
        if (!header_rewrite_local(s))
                t->env.flags |= QUEUE_FLAG_REMOTE_HEADERS;     /* for canonical mapping */
        r = queue_writer_finish(t->writer, &t->env);
        if (r < 0) {
                log_warning("%s: queue file write error: %s", t->queue_id, strerror(-r));
                reply(s, "%s", storage_reply(r));
                goto done;
        }
        t->env.content_size = queue_writer_size(t->writer);
        r = smtpd_queue_commit(s->smtpd->queue, t->writer,
                               t->hold ? s->smtpd->hold_fd : s->smtpd->incoming_fd, on_commit_done,
                               s, &t->commit);
        if (r < 0) {
                reply(s, "451 4.3.0 Error: out of memory");
                goto done;
        }
        t->writer = NULL;       /* the committer owns it now */
        s->state = SMTP_STATE_COMMIT;
        (void) session_flush(s);
        return;
done:
        transaction_reset(s);
}

static void on_commit_done(void *userdata, int r) {
        SmtpSession *s = userdata;
        SmtpTransaction *t = s->tx;
        _cleanup_free_ char *sender = NULL;

        t->commit = NULL;
        s->state = SMTP_STATE_COMMAND;
        if (r < 0) {
                log_error_errno(r, "%s: cannot commit queue file: %m", t->queue_id);
                reply(s, "%s", storage_reply(r));
        } else {
                /* Postfix's cleanup logs the Message-ID before the envelope. */
                log_mail(LOG_INFO, MSGID_MESSAGE_ID, t->queue_id,
                         LOG_FIELDS("POSTERN_MESSAGE_ID", t->message_id),
                         "message-id=%s", t->message_id ?: "<>");
                sender = str_escape_log(t->env.sender, 300);
                log_mail(LOG_INFO, MSGID_QUEUED, t->queue_id,
                         LOG_FIELDS("POSTERN_SENDER", sender, "POSTERN_CLIENT", s->client),
                         "from=<%s>, size=%llu, nrcpt=%zu (queue %s)", strempty(sender),
                         (unsigned long long) t->env.content_size, t->env.n_rcpts,
                         t->hold ? "hold" : "incoming");
                reply(s, "250 2.0.0 Ok: queued as %s", t->queue_id);
                s->error_count = 0;
                s->junk_commands = 0;
                /* As Postfix: a client that got its mail through has no
                 * errors worth a notice (smtpd's error_mask = 0). */
                s->error_classes = 0;
                s->cmd_ok[t->bdat ? SMTP_VERB_BDAT : SMTP_VERB_DATA]++;
                if (!t->hold)
                        smtpd_qmgr_notify(s->smtpd, t->queue_id);
        }
        transaction_reset(s);
        if (!s->in_callback) {
                s->in_callback = true;
                session_run(s);
                s->in_callback = false;
                session_update_events(s);
                if (s->dead)
                        smtp_session_free(s);
        }
}

static void on_check_done(void *userdata) {
        SmtpSession *s = userdata;
        unsigned errors_before = s->error_count;
        CheckCont cont = s->check_cont;

        s->check_cont = NULL;
        s->state = SMTP_STATE_COMMAND;
        cont(s, smtpd_check_result(s->check));
        smtpd_check_release(s->check);
        if (!s->dead && s->state == SMTP_STATE_COMMAND && after_error_checks(s))
                maybe_error_sleep(s, errors_before);
        if (!s->in_callback) {
                s->in_callback = true;
                (void) session_flush(s);
                session_run(s);
                s->in_callback = false;
                session_update_events(s);
                if (s->dead)
                        smtp_session_free(s);
        }
}

static bool starttls_offered(SmtpSession *s) {
        return !s->tls_info && s->smtpd->tls && S(s)->tls_level != SMTPD_TLS_NONE &&
               !S(s)->tls_wrappermode;
}

/* Postfix enforces smtpd_tls_auth_only with level encrypt as well. */
static bool auth_needs_tls(SmtpSession *s) {
        return !s->tls_info && (S(s)->tls_auth_only || S(s)->tls_level == SMTPD_TLS_ENCRYPT);
}

/* smtpd_sasl_exceptions_networks only hides AUTH from EHLO, as in
 * Postfix: the command itself still works. */
static bool auth_offered(SmtpSession *s) {
        return S(s)->sasl_enable && s->smtpd->sasl && !s->sasl_username && !auth_needs_tls(s) &&
               !(S(s)->ehlo_discard & SMTPD_EHLO_AUTH) && !smtpd_check_sasl_exception(s->check);
}

/* The names of the keywords in mask, for the log (static buffer). */
static const char *ehlo_discard_names(unsigned mask) {
        static const char *const names[] = {
                "PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "AUTH",
                "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING",
        };
        static char buf[160];
        size_t n = 0;

        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (mask & (1u << i))
                        n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "",
                                               names[i]);
        return buf;
}

/* Commands. Each returns true when the command succeeded (for the
 * disconnect statistics). */
static void helo_checked(SmtpSession *s, const RestrictResult *res);
static bool helo_reply(SmtpSession *s, SmtpVerb verb);
static void mail_checked(SmtpSession *s, const RestrictResult *res);
static void rcpt_checked(SmtpSession *s, const RestrictResult *res);
static void data_checked(SmtpSession *s, const RestrictResult *res);
static bool data_begin(SmtpSession *s);
static bool cmd_helo(SmtpSession *s, SmtpVerb verb, const char *args) {
        if (!*args) {
                reply(s, "501 5.5.4 Syntax: %s hostname", verb == SMTP_VERB_EHLO ? "EHLO" : "HELO");
                return false;
        }
        free(s->helo);
        s->helo = str_escape_log(args, HELO_MAX);
        if (!s->helo) {
                s->dead = true;
                return false;
        }
        /* Keep the Received header and queue file clean of blanks in the name. */
        for (char *p = s->helo; *p; p++)
                if (*p == ' ' || *p == '\t' || *p == '(' || *p == ')')
                        *p = '_';
        transaction_reset(s);
        s->esmtp = verb == SMTP_VERB_EHLO;
        if (!smtpd_check_stage_empty(s->check, RESTRICT_STAGE_HELO)) {
                RestrictRequest req;
                build_request(s, &req);
                s->pending_verb = verb;
                session_check(s, RESTRICT_STAGE_HELO, &req, helo_checked);
                return false;   /* counted by helo_checked() */
        }
        return helo_reply(s, verb);
}

static void helo_checked(SmtpSession *s, const RestrictResult *res) {
        log_notes(s, smtp_verb_name(s->pending_verb), res, NULL);
        if (res->reject) {
                log_reject_by(s, smtp_verb_name(s->pending_verb), res->reply,
                              smtpd_check_restriction(s->check));
                reply_policy(s, res->reply);
                s->helo = mfree(s->helo);
                s->esmtp = false;
                return;
        }
        if (helo_reply(s, s->pending_verb))
                s->cmd_ok[s->pending_verb]++;
}

/* The EHLO reply: one line per keyword, less those that
 * smtpd_discard_ehlo_keywords names (logged, as Postfix does, unless
 * silent-discard is among them). */
static bool helo_reply(SmtpSession *s, SmtpVerb verb) {
        unsigned discard = S(s)->ehlo_discard;
        _cleanup_strv_free_ char **lines = NULL;
        _cleanup_free_ char *mechs = NULL;
        char size[32];

        if (verb == SMTP_VERB_HELO) {
                reply(s, "250 %s", S(s)->myhostname);
                return true;
        }
        if ((discard & ~SMTPD_EHLO_SILENT) && !(discard & SMTPD_EHLO_SILENT))
                log_info("%s: discarding EHLO keywords: %s", s->client, ehlo_discard_names(discard));
        if (S(s)->message_size_limit)
                snprintf(size, sizeof(size), "SIZE %llu",
                         (unsigned long long) S(s)->message_size_limit);
        else
                snprintf(size, sizeof(size), "SIZE");
        if (auth_offered(s)) {
                mechs = smtpd_sasl_mechanisms(s->smtpd->sasl, s->tls_info ? S(s)->sasl_tls_forbid
                                                                          : S(s)->sasl_forbid);
                /* Fresh mechanisms for the AUTH that may follow. */
                smtpd_sasl_kick(s->smtpd->sasl);
        }
#define KEYWORD(cond, ...)                                                      \
        do {                                                                    \
                char *_l;                                                       \
                if (!(cond))                                                    \
                        break;                                                  \
                _l = strdup_printf(__VA_ARGS__);                                \
                if (!_l || strv_consume(&lines, _l) < 0) {                      \
                        s->dead = true;                                         \
                        return false;                                           \
                }                                                               \
        } while (0)
        KEYWORD(true, "%s", S(s)->myhostname);
        KEYWORD(!(discard & SMTPD_EHLO_PIPELINING), "PIPELINING");
        KEYWORD(!(discard & SMTPD_EHLO_SIZE), "%s", size);
        KEYWORD(!(discard & SMTPD_EHLO_VRFY) && !S(s)->disable_vrfy, "VRFY");
        KEYWORD(!(discard & SMTPD_EHLO_STARTTLS) && starttls_offered(s), "STARTTLS");
        KEYWORD(!isempty(mechs), "AUTH %s", mechs);
        KEYWORD(!isempty(mechs) && S(s)->broken_sasl_auth_clients, "AUTH=%s", mechs);
        KEYWORD(!(discard & SMTPD_EHLO_ENHANCEDSTATUSCODES), "ENHANCEDSTATUSCODES");
        KEYWORD(!(discard & SMTPD_EHLO_8BITMIME), "8BITMIME");
        KEYWORD(!(discard & SMTPD_EHLO_DSN), "DSN");
        KEYWORD(!(discard & SMTPD_EHLO_SMTPUTF8) && S(s)->smtputf8_enable, "SMTPUTF8");
        KEYWORD(!(discard & SMTPD_EHLO_CHUNKING), "CHUNKING");
#undef KEYWORD
        STRV_FOREACH(l, lines)
                reply(s, "250%c%s", l[1] ? '-' : ' ', *l);
        return true;
}

/* What MAIL and RCPT accept: DSN and SMTPUTF8 parameters only where
 * EHLO announces them (smtpd_discard_ehlo_keywords), bare addresses
 * unless strict_rfc821_envelopes. */
static unsigned parse_flags(SmtpSession *s) {
        unsigned f = SMTP_PARSE_8BITMIME;
        if (!(S(s)->ehlo_discard & SMTPD_EHLO_DSN))
                f |= SMTP_PARSE_DSN;
        if (S(s)->smtputf8_enable && !(S(s)->ehlo_discard & SMTPD_EHLO_SMTPUTF8))
                f |= SMTP_PARSE_SMTPUTF8;
        if (S(s)->strict_rfc821_envelopes)
                f |= SMTP_PARSE_STRICT;
        if (s->tx && s->tx->mail.smtputf8)
                f |= SMTP_PARSE_UTF8_SESSION;
        return f;
}

static bool cmd_mail(SmtpSession *s, const char *args) {
        SmtpMailArgs m = {0};
        const char *err = NULL;
        SmtpTransaction *t;
        struct timeval now;
        int r;

        if (s->tx) {
                reply(s, "503 5.5.1 Error: nested MAIL command");
                return false;
        }
        if (!s->helo && smtpd_check_helo_required(s->check)) {
                reply(s, "503 5.5.1 Error: send HELO/EHLO first");
                return false;
        }
        r = smtp_mail_parse(args, parse_flags(s), &m, &err);
        if (r == -ENOMEM) {
                reply(s, "451 4.3.0 Error: out of memory");
                return false;
        }
        if (r < 0) {
                log_reject(s, "MAIL", err);
                reply(s, "%s", err);
                return false;
        }
        if (S(s)->message_size_limit && m.size > S(s)->message_size_limit) {
                smtp_mail_args_done(&m);
                /* A declared SIZE is policy (Postfix); the actual size at
                 * the end of the message is the bounce class. */
                reply_policy(s, "552 5.3.4 Message size exceeds fixed limit");
                return false;
        }
        /* queue_minfree and the declared SIZE against the free space. */
        if (!smtpd_queue_space_ok(s->smtpd, m.size)) {
                smtp_mail_args_done(&m);
                log_reject(s, "MAIL", "452 4.3.1 Insufficient system storage");
                reply(s, "452 4.3.1 Insufficient system storage");
                return false;
        }
        {
                _cleanup_free_ char *deny = NULL;
                if (smtpd_check_rate(s->check, ANVIL_RATE_MESSAGE, &deny) == 0) {
                        smtp_mail_args_done(&m);
                        reply_policy(s, deny);
                        return false;
                }
        }
        t = calloc(1, sizeof(*t));
        if (!t) {
                smtp_mail_args_done(&m);
                reply(s, "451 4.3.0 Error: out of memory");
                return false;
        }
        t->mail = m;
        gettimeofday(&now, NULL);
        t->env.arrival = now;
        t->env.sender = strdup(m.sender);
        t->env.envid = m.envid ? strdup(m.envid) : NULL;
        t->env.ret = m.ret;
        t->env.smtputf8 = m.smtputf8;
        t->env.body_8bitmime = m.body_8bitmime;
        t->env.client_name = strdup(s->name);
        t->env.client_addr = strdup(s->addr_str);
        t->env.client_port = s->port;
        t->env.helo = s->helo ? strdup(s->helo) : NULL;
        t->env.service = strdup(S(s)->service);
        t->env.tls = s->tls_info ? strdup(s->tls_info) : NULL;
        t->env.sasl_method = s->sasl_method ? strdup(s->sasl_method) : NULL;
        t->env.sasl_username = s->sasl_username ? strdup(s->sasl_username) : NULL;
        s->tx = t;
        t->env.protocol = strdup(protocol_name(s));
        if (!t->env.sender || !t->env.client_name || !t->env.client_addr || !t->env.service ||
            !t->env.protocol || (m.envid && !t->env.envid) || (s->helo && !t->env.helo) ||
            (s->tls_info && !t->env.tls) || (s->sasl_method && !t->env.sasl_method) ||
            (s->sasl_username && !t->env.sasl_username)) {
                transaction_reset(s);
                reply(s, "451 4.3.0 Error: out of memory");
                return false;
        }
        if (!smtpd_check_stage_empty(s->check, RESTRICT_STAGE_MAIL)) {
                RestrictRequest req;
                build_request(s, &req);
                session_check(s, RESTRICT_STAGE_MAIL, &req, mail_checked);
                return false;   /* counted by mail_checked() */
        }
        reply(s, "250 2.1.0 Ok");
        return true;
}

static void mail_checked(SmtpSession *s, const RestrictResult *res) {
        log_notes(s, "MAIL", res, NULL);
        if (res->reject) {
                log_reject_by(s, "MAIL", res->reply,
                              smtpd_check_restriction(s->check));
                reply_policy(s, res->reply);
                transaction_reset(s);
                return;
        }
        apply_effects(s, res);
        reply(s, "250 2.1.0 Ok");
        s->cmd_ok[SMTP_VERB_MAIL]++;
}

static bool cmd_rcpt(SmtpSession *s, const char *args) {
        SmtpTransaction *t = s->tx;
        SmtpRcptArgs a = {0};
        const char *err = NULL;
        int r;

        if (!t) {
                reply(s, "503 5.5.1 Error: need MAIL command");
                return false;
        }
        if (t->started) {
                reply(s, "503 5.5.1 Error: RCPT after BDAT");
                return false;
        }
        r = smtp_rcpt_parse(args, parse_flags(s), &a, &err);
        if (r == -ENOMEM) {
                reply(s, "451 4.3.0 Error: out of memory");
                return false;
        }
        if (r < 0) {
                log_reject(s, "RCPT", err);
                reply(s, "%s", err);
                return false;
        }
        if (t->env.n_rcpts >= S(s)->recipient_limit) {
                smtp_rcpt_args_done(&a);
                reply_policy(s, "452 4.5.3 Error: too many recipients");
                return false;
        }
        {
                _cleanup_free_ char *deny = NULL;
                if (smtpd_check_rate(s->check, ANVIL_RATE_RECIPIENT, &deny) == 0) {
                        smtp_rcpt_args_done(&a);
                        reply_policy(s, deny);
                        return false;
                }
        }
        {
                RestrictRequest req;
                build_request(s, &req);
                req.recipient = a.address;
                s->pending_rcpt = a;
                session_check(s, RESTRICT_STAGE_RCPT, &req, rcpt_checked);
        }
        return false;   /* counted by rcpt_checked() */
}

static void rcpt_checked(SmtpSession *s, const RestrictResult *res) {
        SmtpTransaction *t = s->tx;
        SmtpRcptArgs a = s->pending_rcpt;
        _cleanup_free_ char *full = NULL;
        int r;

        s->pending_rcpt = (SmtpRcptArgs) {0};
        log_notes(s, "RCPT", res, a.address);
        if (res->reject) {
                _cleanup_free_ char *esc = str_escape_log(a.address, 300),
                                    *from = str_escape_log(t->mail.sender, 300);
                const char *fields[9];
                log_mail(LOG_INFO, MSGID_REJECT, t->queue_id[0] ? t->queue_id : NULL,
                         reject_fields(s, smtpd_check_restriction(s->check), from, esc, fields),
                         "%sreject: RCPT from %s: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
                         t->queue_id[0] ? "" : "NOQUEUE: ", s->client, res->reply, strempty(from),
                         strempty(esc), protocol_name(s), strempty(s->helo));
                reply_policy(s, res->reply);
                smtp_rcpt_args_done(&a);
                return;
        }
        apply_effects(s, res);
        /* Postfix's cleanup appends @$myorigin to a bare local part. */
        if (a.addr_flags & ADDR_FLAG_NO_DOMAIN)
                full = strdup_printf("%s@%s", a.address, S(s)->myorigin);
        r = queue_envelope_add_rcpt(&t->env, full ? full : a.address, a.notify, a.orcpt);
        smtp_rcpt_args_done(&a);
        if (r < 0) {
                reply(s, "451 4.3.0 Error: out of memory");
                return;
        }
        if (!t->queue_id[0]) {
                queue_id_new(&t->env.arrival, t->queue_id);
                memcpy(t->env.queue_id, t->queue_id, QUEUE_ID_SIZE);
                if (s->sasl_username)
                        log_mail(LOG_INFO, MSGID_QUEUED_CLIENT, t->queue_id,
                                 LOG_FIELDS("POSTERN_CLIENT", s->client, "POSTERN_SASL_METHOD",
                                            s->sasl_method, "POSTERN_SASL_USERNAME",
                                            s->sasl_username),
                                 "client=%s, sasl_method=%s, sasl_username=%s", s->client,
                                 s->sasl_method, s->sasl_username);
                else
                        log_mail(LOG_INFO, MSGID_QUEUED_CLIENT, t->queue_id,
                                 LOG_FIELDS("POSTERN_CLIENT", s->client), "client=%s", s->client);
        }
        reply(s, "250 2.1.5 Ok");
        s->cmd_ok[SMTP_VERB_RCPT]++;
}

static bool cmd_data(SmtpSession *s, const char *args) {
        SmtpTransaction *t = s->tx;

        if (*args) {
                reply(s, "501 5.5.4 Syntax: DATA");
                return false;
        }
        if (!t) {
                reply(s, "503 5.5.1 Error: need RCPT command");
                return false;
        }
        if (t->started) {
                reply(s, "503 5.5.1 Error: DATA after BDAT");
                return false;
        }
        if (t->env.n_rcpts == 0) {
                reply(s, "554 5.5.1 Error: no valid recipients");
                return false;
        }
        if (!smtpd_check_stage_empty(s->check, RESTRICT_STAGE_DATA)) {
                RestrictRequest req;
                build_request(s, &req);
                session_check(s, RESTRICT_STAGE_DATA, &req, data_checked);
                return false;
        }
        return data_begin(s);
}

static void data_checked(SmtpSession *s, const RestrictResult *res) {
        log_notes(s, "DATA", res, NULL);
        if (res->reject) {
                log_reject_by(s, "DATA", res->reply,
                              smtpd_check_restriction(s->check));
                reply_policy(s, res->reply);
                return;
        }
        apply_effects(s, res);
        (void) data_begin(s);
}

static bool data_begin(SmtpSession *s) {
        if (message_start(s, false) < 0) {
                transaction_reset(s);
                return false;
        }
        reply(s, "354 End data with <CR><LF>.<CR><LF>");
        s->state = SMTP_STATE_DATA;
        /* Counted as successful once the message is queued. */
        return false;
}

static bool cmd_bdat(SmtpSession *s, const char *args) {
        SmtpTransaction *t = s->tx;
        const char *err = NULL;
        uint64_t size;
        bool last;

        if (S(s)->ehlo_discard & SMTPD_EHLO_CHUNKING) {
                /* Not announced: the chunk that follows cannot be told from
                 * commands, so the session ends (Postfix). */
                reply(s, "521 5.5.1 Error: command not implemented");
                session_close(s);
                return false;
        }
        if (smtp_bdat_parse(args, &size, &last, &err) < 0) {
                /* Without a valid size the chunk cannot be skipped. */
                reply(s, "%s", err);
                return false;
        }
        if (!t || t->env.n_rcpts == 0 || (t->started && !t->bdat)) {
                /* RFC 3030 2: the chunk is read and thrown away. */
                s->bdat_skip = size;
                if (!t)
                        reply(s, "503 5.5.1 Error: need RCPT command");
                else if (t->started)
                        reply(s, "503 5.5.1 Error: BDAT after DATA");
                else
                        reply(s, "554 5.5.1 Error: no valid recipients");
                return false;
        }
        if (!t->started && message_start(s, true) < 0) {
                s->bdat_skip = size;
                transaction_reset(s);
                return false;
        }
        t->chunk_left = size;
        t->chunk_size = size;
        t->chunk_last = last;
        s->state = SMTP_STATE_BDAT;
        return false;
}

static bool cmd_vrfy(SmtpSession *s, const char *args) {
        _cleanup_free_ char *addr = NULL;
        if (S(s)->disable_vrfy) {
                reply(s, "502 5.5.1 VRFY command is disabled");
                return false;
        }
        if (!*args || addr_parse_path(args, ADDR_PARSE_ALLOW_8BIT, &addr, NULL, NULL) < 0) {
                reply(s, "501 5.5.4 Syntax: VRFY address");
                return false;
        }
        /* Postfix answers 252 for any address that passes the checks: it
         * will try, it does not confirm. */
        reply(s, "252 2.0.0 %s", addr);
        return true;
}

/* STARTTLS (RFC 3207). The 220 goes out in plaintext; the handshake
 * starts once it is written (tls_step()). */
static bool cmd_starttls(SmtpSession *s, const char *args) {
        if (s->tls_info) {
                reply(s, "554 5.5.1 Error: TLS already active");
                return false;
        }
        if (S(s)->tls_level == SMTPD_TLS_NONE || S(s)->tls_wrappermode ||
            (S(s)->ehlo_discard & SMTPD_EHLO_STARTTLS)) {
                reply(s, "502 5.5.1 Error: command not implemented");
                return false;
        }
        if (*args) {
                reply(s, "501 5.5.4 Syntax: STARTTLS");
                return false;
        }
        if (!s->smtpd->tls) {
                reply(s, "454 4.7.0 TLS not available due to local problem");
                return false;
        }
        {
                _cleanup_free_ char *deny = NULL;
                /* 454 and the session goes on in plaintext, as in Postfix. */
                if (smtpd_check_rate(s->check, ANVIL_RATE_NEW_TLS, &deny) == 0) {
                        reply_policy(s, deny);
                        return false;
                }
        }
        reply(s, "220 2.0.0 Ready to start TLS");
        /* RFC 3207 5 and CVE-2011-0411: plaintext the client sent after
         * STARTTLS must never be read as if it came over TLS. */
        if (s->in.len > s->in_pos) {
                log_info("improper command pipelining after STARTTLS from %s: discarding %zu "
                         "bytes of plaintext", s->client, s->in.len - s->in_pos);
                s->in_pos = s->in.len;
        }
        s->skip_line = false;
        s->bdat_skip = 0;
        transaction_reset(s);
        s->state = SMTP_STATE_TLS_HANDSHAKE;
        return true;
}

/* Drives the handshake: first the plaintext STARTTLS reply, then the SSL
 * object and its steps. On completion the session starts over (RFC 3207
 * 4.2: forget HELO/EHLO, transactions and AUTH). */
static void tls_step(SmtpSession *s) {
        _cleanup_free_ char *err = NULL;
        int r;

        if (!s->io.ssl) {
                if (s->out.len > 0 && session_flush(s) < 0)
                        return;
                if (s->out.len > 0)
                        return;
                r = smtpd_tls_io_start(&s->io, s->smtpd->tls);
                if (r < 0) {
                        log_warning("cannot set up TLS for %s: %s", s->client, strerror(-r));
                        s->dead = true;
                        return;
                }
                if (S(s)->tls_loglevel >= 2)
                        log_info("setting up TLS connection from %s", s->client);
        }
        r = smtpd_tls_io_handshake(&s->io, &err);
        if (r == 0)
                return;
        if (r < 0) {
                _cleanup_free_ char *esc = str_escape_log(strempty(err), 300);
                log_info("SSL_accept error from %s: %s", s->client, strempty(esc));
                s->dead = true;
                return;
        }
        s->tls_info = tls_session_describe(s->io.ssl);
        if (!s->tls_info) {
                s->dead = true;
                return;
        }
        if (S(s)->tls_loglevel >= 1)
                log_info("Anonymous TLS connection established from %s: %s%s", s->client,
                         s->tls_info, SSL_session_reused(s->io.ssl) ? " (resumed)" : "");
        s->state = SMTP_STATE_COMMAND;
        /* Nothing read before the handshake counts (see cmd_starttls()). */
        s->in.len = s->in_pos = 0;
        transaction_reset(s);
        s->helo = mfree(s->helo);
        s->esmtp = false;
        s->sasl_username = mfree(s->sasl_username);
        s->sasl_method = mfree(s->sasl_method);
        if (S(s)->tls_wrappermode)
                session_greet(s);
}

static void auth_end(SmtpSession *s) {
        s->sasl_req = smtpd_sasl_cancel(s->sasl_req);
        s->sasl_mech = mfree(s->sasl_mech);
        if (s->state == SMTP_STATE_AUTH_CLIENT || s->state == SMTP_STATE_AUTH_SERVER)
                s->state = SMTP_STATE_COMMAND;
}

static void log_auth_failure(SmtpSession *s, const char *why) {
        _cleanup_free_ char *esc = str_escape_log(why, 200);
        /* The client's address makes brute force visible (fail2ban reads
         * the same line from Postfix). */
        log_warning("%s: SASL %s authentication failed: %s", s->client, strempty(s->sasl_mech),
                    strempty(esc));
}

/* Results from the Dovecot auth service. */
static void on_sasl(void *userdata, SmtpdSaslResult result, const char *data) {
        SmtpSession *s = userdata;
        unsigned errors_before = s->error_count;

        switch (result) {
        case SMTPD_SASL_CONTINUE:
                reply(s, "334 %s", strempty(data));
                s->state = SMTP_STATE_AUTH_CLIENT;
                break;
        case SMTPD_SASL_OK:
                s->sasl_req = NULL;
                free(s->sasl_username);
                s->sasl_username = str_escape_log(data, 256);
                s->sasl_method = steal_ptr(s->sasl_mech);
                if (!s->sasl_username) {
                        s->dead = true;
                        break;
                }
                /* No blanks in the names the queue file and headers show. */
                for (char *p = s->sasl_username; *p; p++)
                        if (*p == ' ' || *p == '(' || *p == ')')
                                *p = '_';
                reply(s, "235 2.7.0 Authentication successful");
                s->cmd_ok[SMTP_VERB_AUTH]++;
                auth_end(s);
                break;
        case SMTPD_SASL_FAIL: {
                _cleanup_free_ char *esc = str_escape_log(data ? data : "authentication failure",
                                                          200);
                s->sasl_req = NULL;
                log_auth_failure(s, data ? data : "authentication failure");
                reply(s, "535 5.7.8 Error: authentication failed: %s", strempty(esc));
                auth_end(s);
                break;
        }
        case SMTPD_SASL_TEMPFAIL:
        default:
                s->sasl_req = NULL;
                log_auth_failure(s, data ? data : "temporary failure");
                reply(s, "454 4.7.0 Temporary authentication failure");
                auth_end(s);
                break;
        }
        if (result != SMTPD_SASL_CONTINUE && !s->dead && after_error_checks(s))
                maybe_error_sleep(s, errors_before);
        if (!s->in_callback) {
                s->in_callback = true;
                session_run(s);
                s->in_callback = false;
                session_update_events(s);
                if (s->dead)
                        smtp_session_free(s);
        }
}

static bool cmd_auth(SmtpSession *s, const char *args) {
        _cleanup_free_ char *mech = NULL;
        const char *initial = NULL, *sp;
        SmtpdSaslClient client;
        int r;

        if (!S(s)->sasl_enable || (S(s)->ehlo_discard & SMTPD_EHLO_AUTH)) {
                reply(s, "503 5.5.1 Error: authentication not enabled");
                return false;
        }
        if (auth_needs_tls(s)) {
                reply(s, "530 5.7.0 Must issue a STARTTLS command first");
                return false;
        }
        if (!s->helo) {
                reply(s, "503 5.5.1 Error: send HELO/EHLO first");
                return false;
        }
        if (s->sasl_username) {
                reply(s, "503 5.5.1 Error: already authenticated");
                return false;
        }
        if (s->tx) {
                reply(s, "503 5.5.1 Error: MAIL transaction in progress");
                return false;
        }
        {
                _cleanup_free_ char *deny = NULL;
                if (smtpd_check_rate(s->check, ANVIL_RATE_AUTH, &deny) == 0) {
                        reply_policy(s, deny);
                        return false;
                }
        }
        sp = strchr(args, ' ');
        mech = sp ? strndup(args, (size_t) (sp - args)) : strdup(args);
        if (!mech) {
                reply(s, "451 4.3.0 Error: out of memory");
                return false;
        }
        if (sp) {
                initial = sp + 1;
                while (*initial == ' ')
                        initial++;
                /* RFC 4954 4: "=" is an empty initial response. */
                if (streq(initial, "="))
                        initial = "";
                else if (!*initial)
                        initial = NULL;
        }
        if (!*mech) {
                reply(s, "501 5.5.4 Syntax: AUTH mechanism");
                return false;
        }
        ascii_strupper(mech);
        if (!s->smtpd->sasl) {
                s->sasl_mech = steal_ptr(mech);
                log_auth_failure(s, "no usable smtpd_sasl_path");
                s->sasl_mech = mfree(s->sasl_mech);
                reply(s, "454 4.7.0 Temporary authentication failure");
                return false;
        }
        r = smtpd_sasl_mechanism_check(s->smtpd->sasl, mech,
                                       s->tls_info ? S(s)->sasl_tls_forbid : S(s)->sasl_forbid);
        if (r == -EPERM && !s->tls_info) {
                reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
                return false;
        }
        if (r <= 0) {
                reply(s, "504 5.5.4 Unsupported authentication mechanism");
                return false;
        }
        client = (SmtpdSaslClient) {
                .remote_ip = s->have_addr ? s->addr_str : NULL,
                .local_ip = s->local_addr,
                .remote_port = s->port,
                .local_port = s->local_port,
                .secured = s->tls_info != NULL,
        };
        r = smtpd_sasl_start(s->smtpd->sasl, mech, initial, &client, on_sasl, s, &s->sasl_req);
        if (r == -EINVAL) {
                reply(s, "501 5.5.2 Cannot decode response");
                return false;
        }
        if (r < 0) {
                s->sasl_mech = steal_ptr(mech);
                log_auth_failure(s, "cannot connect to the Dovecot auth service");
                s->sasl_mech = mfree(s->sasl_mech);
                reply(s, "454 4.7.0 Temporary authentication failure");
                return false;
        }
        s->sasl_mech = steal_ptr(mech);
        s->state = SMTP_STATE_AUTH_SERVER;
        /* Counted as successful on 235. */
        return false;
}

/* A line after 334: the client's response, or "*" to abort (RFC 4954 4). */
static void auth_response(SmtpSession *s, const char *line) {
        int r;

        if (streq(line, "*")) {
                auth_end(s);
                reply(s, "501 5.7.0 Authentication aborted");
                return;
        }
        r = smtpd_sasl_continue(s->sasl_req, line);
        if (r == -EINVAL) {
                auth_end(s);
                reply(s, "501 5.5.2 Cannot decode response");
                return;
        }
        if (r < 0) {
                log_auth_failure(s, "lost the connection to the Dovecot auth service");
                auth_end(s);
                reply(s, "454 4.7.0 Temporary authentication failure");
                return;
        }
        s->state = SMTP_STATE_AUTH_SERVER;
}

/* Commands that move no mail (NOOP, VRFY, ETRN, RSET and
 * smtpd_noop_commands): past smtpd_junk_command_limit of them since the
 * last delivered message each one counts as an error (Postfix). */
static void count_junk(SmtpSession *s) {
        if (s->junk_commands++ > S(s)->junk_command_limit)
                s->error_count++;
}

static void handle_command(SmtpSession *s, char *line, size_t len) {
        const char *args;
        SmtpVerb verb;
        bool ok = false;

        if (memchr(line, 0, len) || len == 0) {
                s->cmd_total[SMTP_VERB_UNKNOWN]++;
                s->last_verb = SMTP_VERB_UNKNOWN;
                reply(s, "500 5.5.2 Error: bad syntax");
                return;
        }
        /* smtpd_noop_commands: answered before anything else looks at
         * the command, as Postfix does. */
        if (S(s)->noop_commands) {
                size_t n = strcspn(line, " \t");
                STRV_FOREACH(c, S(s)->noop_commands)
                        if (strlen(*c) == n && strncasecmp(line, *c, n) == 0) {
                                reply(s, "250 2.0.0 Ok");
                                count_junk(s);
                                return;
                        }
        }
        verb = smtp_verb_parse(line, &args);
        s->last_verb = verb;
        s->cmd_total[verb]++;
        /* For reject_unauth_pipelining: input ahead of a command that
         * ends a group, or any input ahead without ESMTP PIPELINING. */
        if (s->in.len > s->in_pos && verb != SMTP_VERB_QUIT &&
            (smtp_verb_ends_group(verb) || !s->esmtp ||
             (S(s)->ehlo_discard & SMTPD_EHLO_PIPELINING)))
                s->ill_pipelining = true;

        /* RFC 2920 3.1: after a command that ends a group the client must
         * wait for the reply. Input already here betrays a client that does
         * not (a spam engine's shortcut, or a smuggling attempt). */
        if (smtp_verb_ends_group(verb) && s->in.len > s->in_pos) {
                if (!s->pipelining_logged) {
                        _cleanup_free_ char *next = NULL;
                        size_t n = MIN(s->in.len - s->in_pos, 100);
                        _cleanup_free_ char *raw = strndup(s->in.data + s->in_pos, n);
                        /* What follows AUTH may be credentials: never logged. */
                        next = raw && verb != SMTP_VERB_AUTH ? str_escape_log(raw, 100)
                                                             : strdup("(not shown)");
                        log_info("improper command pipelining after %s from %s: %s",
                                 smtp_verb_name(verb), s->client, strempty(next));
                        s->pipelining_logged = true;
                }
                if (S(s)->forbid_unauth_pipelining) {
                        reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
                        session_close(s);
                        return;
                }
        }

        /* Refused at connect (session_greet()): nothing but QUIT. */
        if (s->access_denied && verb != SMTP_VERB_QUIT && verb != SMTP_VERB_UNKNOWN) {
                s->policy_reply = true;
                reply(s, "503 5.7.0 Error: access denied for %s", s->client);
                s->policy_reply = false;
                return;
        }

        /* smtpd_tls_security_level = encrypt: nothing but the session
         * basics before TLS (RFC 3207 4). */
        if (S(s)->tls_level == SMTPD_TLS_ENCRYPT && !s->tls_info && verb != SMTP_VERB_HELO &&
            verb != SMTP_VERB_EHLO && verb != SMTP_VERB_STARTTLS && verb != SMTP_VERB_NOOP &&
            verb != SMTP_VERB_RSET && verb != SMTP_VERB_QUIT) {
                reply(s, "530 5.7.0 Must issue a STARTTLS command first");
                return;
        }

        switch (verb) {
        case SMTP_VERB_HELO:
        case SMTP_VERB_EHLO:
                ok = cmd_helo(s, verb, args);
                break;
        case SMTP_VERB_MAIL:
                ok = cmd_mail(s, args);
                break;
        case SMTP_VERB_RCPT:
                ok = cmd_rcpt(s, args);
                break;
        case SMTP_VERB_DATA:
                ok = cmd_data(s, args);
                break;
        case SMTP_VERB_BDAT:
                ok = cmd_bdat(s, args);
                break;
        case SMTP_VERB_RSET:
                if (*args) {
                        reply(s, "501 5.5.4 Syntax: RSET");
                        break;
                }
                transaction_reset(s);
                reply(s, "250 2.0.0 Ok");
                ok = true;
                break;
        case SMTP_VERB_NOOP:
                reply(s, "250 2.0.0 Ok");
                ok = true;
                break;
        case SMTP_VERB_QUIT:
                reply(s, "221 2.0.0 Bye");
                ok = true;
                session_close(s);
                break;
        case SMTP_VERB_VRFY:
                ok = cmd_vrfy(s, args);
                break;
        case SMTP_VERB_HELP:
                reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY");
                ok = true;
                break;
        case SMTP_VERB_AUTH:
                ok = cmd_auth(s, args);
                break;
        case SMTP_VERB_STARTTLS:
                ok = cmd_starttls(s, args);
                break;
        default:
                reply(s, "502 5.5.2 Error: command not recognized");
                break;
        }
        if (ok)
                s->cmd_ok[verb]++;
        if (verb == SMTP_VERB_NOOP || verb == SMTP_VERB_VRFY || verb == SMTP_VERB_ETRN ||
            verb == SMTP_VERB_RSET)
                count_junk(s);
}

/* Feeds buffered input to the DATA or BDAT decoder. Returns false when it
 * needs more input. */
static bool feed_content(SmtpSession *s) {
        SmtpTransaction *t = s->tx;
        size_t avail = s->in.len - s->in_pos;
        int consumed, r;

        if (s->state == SMTP_STATE_BDAT && t->chunk_left < avail)
                avail = (size_t) t->chunk_left;
        if (avail == 0 && !(s->state == SMTP_STATE_BDAT && t->chunk_left == 0))
                return false;
        strbuf_clear(&t->decoded);
        consumed = avail ? smtp_data_decode(&t->dec, s->in.data + s->in_pos, avail, &t->decoded) : 0;
        if (consumed < 0) {
                s->dead = true;
                return false;
        }
        s->in_pos += (size_t) consumed;
        if (s->state == SMTP_STATE_BDAT)
                t->chunk_left -= (uint64_t) consumed;
        if (t->dec.bare_lf && !t->bdat && S(s)->bare_newline == SMTPD_BARE_NEWLINE_REJECT) {
                /* Postfix 3.9 smtpd_forbid_bare_newline = reject. */
                log_info("disconnect: bare <LF> received from %s after %s", s->client,
                         t->bdat ? "BDAT" : "DATA");
                reply(s, "%u 5.5.2 %s Error: bare <LF> received", S(s)->bare_newline_code,
                      S(s)->myhostname);
                transaction_reset(s);
                session_close(s);
                return false;
        }
        r = smtp_content_feed(&t->content, t->decoded.data, t->decoded.len);
        if (r < 0 && !t->write_error)
                t->write_error = r;

        if (s->state == SMTP_STATE_DATA && t->dec.state == SMTP_DATA_END) {
                message_end(s);
                return true;
        }
        if (s->state == SMTP_STATE_BDAT && t->chunk_left == 0) {
                if (t->chunk_last) {
                        strbuf_clear(&t->decoded);
                        r = smtp_data_decoder_finish(&t->dec, &t->decoded);
                        if (r >= 0 && t->decoded.len > 0)
                                r = smtp_content_feed(&t->content, t->decoded.data,
                                                      t->decoded.len);
                        message_end(s);
                } else {
                        s->state = SMTP_STATE_COMMAND;
                        if (t->too_big)
                                /* RFC 3030 2: refuse the chunk, keep reading. */
                                reply(s, "552 5.3.4 Message size exceeds fixed limit");
                        else
                                reply(s, "250 2.0.0 Ok: %llu bytes",
                                      (unsigned long long) t->chunk_size);
                }
                return true;
        }
        return s->in_pos < s->in.len;
}

/* Processes buffered input as far as the state allows. */
static void session_run(SmtpSession *s) {
        while (!s->dead && !s->sleeping && s->state != SMTP_STATE_CLOSING &&
               s->state != SMTP_STATE_COMMIT && s->state != SMTP_STATE_CHECK &&
               s->state != SMTP_STATE_TLS_HANDSHAKE &&
               s->state != SMTP_STATE_AUTH_SERVER && s->out.len < OUTPUT_HIGH_WATER) {
                size_t len = 0, consumed = 0;
                bool bare_lf = false;
                unsigned errors_before = s->error_count;
                int r;

                if (s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT) {
                        if (!feed_content(s))
                                break;
                        if (s->state == SMTP_STATE_COMMAND && !after_error_checks(s))
                                break;
                        continue;
                }
                if (s->bdat_skip > 0) {
                        size_t n = MIN((uint64_t) (s->in.len - s->in_pos), s->bdat_skip);
                        if (n == 0)
                                break;
                        s->in_pos += n;
                        s->bdat_skip -= n;
                        continue;
                }
                if (s->in_pos == s->in.len)
                        break;  /* nothing buffered (in.data may be NULL yet) */
                r = smtp_line_find(s->in.data + s->in_pos, s->in.len - s->in_pos,
                                   S(s)->line_length_limit, &len, &consumed, &bare_lf);
                if (r == 0) {
                        if (s->skip_line) {
                                s->in_pos = s->in.len;  /* still inside the long line */
                        }
                        break;
                }
                if (r == -E2BIG) {
                        /* An overlong command line: answer once, then drop
                         * everything up to its end. */
                        if (!s->skip_line && recording(s))
                                smtpd_transcript_add(&s->transcript, "In:  ",
                                                     "(overlong line not shown)",
                                                     strlen("(overlong line not shown)"));
                        if (s->state == SMTP_STATE_AUTH_CLIENT)
                                auth_end(s);
                        if (!s->skip_line) {
                                s->cmd_total[SMTP_VERB_UNKNOWN]++;
                                reply(s, "500 5.5.2 Error: line too long");
                                s->skip_line = true;
                        }
                        const char *lf = memchr(s->in.data + s->in_pos, '\n', s->in.len - s->in_pos);
                        if (!lf) {
                                s->in_pos = s->in.len;
                                break;
                        }
                        s->in_pos = (size_t) (lf - s->in.data) + 1;
                        s->skip_line = false;
                } else if (s->skip_line) {
                        s->in_pos += consumed;
                        s->skip_line = false;
                } else {
                        char *line = s->in.data + s->in_pos;
                        /* A SASL response is a password or its hash. */
                        if (s->state == SMTP_STATE_AUTH_CLIENT) {
                                if (recording(s))
                                        smtpd_transcript_add(&s->transcript, "In:  ",
                                                             "(AUTH response not shown)",
                                                             strlen("(AUTH response not shown)"));
                        } else
                                record_command(s, line, len);
                        if (bare_lf && S(s)->bare_newline == SMTPD_BARE_NEWLINE_REJECT) {
                                log_info("disconnect: bare <LF> received from %s", s->client);
                                reply(s, "%u 5.5.2 %s Error: bare <LF> received",
                                      S(s)->bare_newline_code, S(s)->myhostname);
                                session_close(s);
                                break;
                        }
                        line[len] = 0;  /* over the CR or LF */
                        s->in_pos += consumed;
                        if (s->state == SMTP_STATE_AUTH_CLIENT)
                                auth_response(s, line);
                        else
                                handle_command(s, line, len);
                }
                if (s->state == SMTP_STATE_CLOSING)
                        break;
                if (!after_error_checks(s))
                        break;
                maybe_error_sleep(s, errors_before);
        }
        if (s->state == SMTP_STATE_TLS_HANDSHAKE && !s->dead) {
                tls_step(s);
                return;
        }
        /* Compact the input buffer. */
        if (s->in_pos > 0 && (s->in_pos == s->in.len || s->in_pos > INPUT_CHUNK)) {
                memmove(s->in.data, s->in.data + s->in_pos, s->in.len - s->in_pos);
                s->in.len -= s->in_pos;
                s->in_pos = 0;
        }
        if (s->eof && !s->dead && s->state != SMTP_STATE_COMMIT &&
            s->state != SMTP_STATE_TLS_HANDSHAKE) {
                if (s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT ||
                    s->in.len > s->in_pos) {
                        log_info("lost connection after %s from %s", smtp_verb_name(s->last_verb),
                                 s->client);
                        s->abort_reason = "lost connection";
                }
                s->dead = true;
        }
        (void) session_flush(s);
}

static void session_touch(SmtpSession *s) {
        uint64_t now;
        (void) sd_event_now(s->smtpd->event, CLOCK_MONOTONIC, &now);
        (void) sd_event_source_set_time(s->timer, now + S(s)->timeout_usec);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        SmtpSession *s = userdata;

        s->in_callback = true;
        if (s->state == SMTP_STATE_TLS_HANDSHAKE) {
                if (revents & (EPOLLHUP | EPOLLERR) && !(revents & EPOLLIN)) {
                        log_info("lost connection after STARTTLS from %s", s->client);
                        s->dead = true;
                        goto out;
                }
                tls_step(s);
                if (s->dead || s->state == SMTP_STATE_TLS_HANDSHAKE)
                        goto out;
                session_touch(s);
                /* The client's first data may have come with the last
                 * handshake flight and sit inside OpenSSL already. */
                revents |= EPOLLIN | EPOLLOUT;
        }
        if (revents & EPOLLOUT)
                (void) session_flush(s);
        if (((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) ||
             (s->io.read_wants_write && (revents & EPOLLOUT))) &&
            !s->dead && s->state != SMTP_STATE_CLOSING) {
                ssize_t k;
                if (strbuf_reserve(&s->in, INPUT_CHUNK + 1) < 0) {
                        s->dead = true;
                        goto out;
                }
                k = s->io.ops->read(&s->io, s->in.data + s->in.len, INPUT_CHUNK);
                if (k > 0) {
                        s->in.len += (size_t) k;
                        session_touch(s);
                        /* Decrypted bytes OpenSSL still holds: epoll cannot
                         * see them. At most one record more. */
                        while (s->io.ops->pending && s->io.ops->pending(&s->io) > 0 &&
                               strbuf_reserve(&s->in, INPUT_CHUNK + 1) >= 0) {
                                ssize_t m = s->io.ops->read(&s->io, s->in.data + s->in.len,
                                                            INPUT_CHUNK);
                                if (m <= 0)
                                        break;
                                s->in.len += (size_t) m;
                        }
                } else if (k == 0 || k != -EAGAIN)
                        s->eof = true;
                session_run(s);
        } else if ((revents & (EPOLLHUP | EPOLLERR)) && s->state == SMTP_STATE_CLOSING)
                s->dead = true;
        if (s->out.len < OUTPUT_HIGH_WATER / 2 && !s->dead && s->in.len > s->in_pos &&
            s->state == SMTP_STATE_COMMAND)
                session_run(s);
out:
        s->in_callback = false;
        session_update_events(s);
        if (s->dead)
                smtp_session_free(s);
        return 0;
}

static int on_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        SmtpSession *s = userdata;

        if (s->state == SMTP_STATE_COMMIT || s->state == SMTP_STATE_CHECK) {
                /* Our own disk (or DNS, bounded by its own timeouts) is
                 * slow, not the client: wait on. */
                session_touch(s);
                return sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        }
        if (s->state == SMTP_STATE_TLS_HANDSHAKE) {
                /* No SMTP reply can go into a half-made TLS session. */
                log_info("SSL_accept error from %s: timed out", s->client);
                smtp_session_free(s);
                return 0;
        }
        log_info("timeout after %s from %s", smtp_verb_name(s->last_verb), s->client);
        s->abort_reason = "timeout exceeded";
        s->sleeping = false;
        if (s->state != SMTP_STATE_CLOSING)
                reply(s, "421 4.4.2 %s Error: timeout exceeded", S(s)->myhostname);
        s->state = SMTP_STATE_CLOSING;
        (void) session_flush(s);
        /* A client that does not read gets no second chance. */
        smtp_session_free(s);
        return 0;
}

static int on_sleep_done(sd_event_source *es, uint64_t usec, void *userdata) {
        SmtpSession *s = userdata;

        s->sleeping = false;
        s->in_callback = true;
        (void) session_flush(s);
        session_run(s);
        s->in_callback = false;
        session_update_events(s);
        if (s->dead)
                smtp_session_free(s);
        return 0;
}

static void log_disconnect(SmtpSession *s) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        unsigned total = 0, ok = 0;

        for (SmtpVerb v = SMTP_VERB_HELO; v < _SMTP_VERB_MAX; v++) {
                if (!s->cmd_total[v])
                        continue;
                if (s->cmd_ok[v] == s->cmd_total[v])
                        (void) strbuf_printf(&b, " %s=%u", smtp_verb_name(v), s->cmd_total[v]);
                else
                        (void) strbuf_printf(&b, " %s=%u/%u", smtp_verb_name(v), s->cmd_ok[v],
                                             s->cmd_total[v]);
                total += s->cmd_total[v];
                ok += s->cmd_ok[v];
        }
        if (s->cmd_total[SMTP_VERB_UNKNOWN]) {
                (void) strbuf_printf(&b, " unknown=0/%u", s->cmd_total[SMTP_VERB_UNKNOWN]);
                total += s->cmd_total[SMTP_VERB_UNKNOWN];
        }
        if (ok == total)
                (void) strbuf_printf(&b, " commands=%u", total);
        else
                (void) strbuf_printf(&b, " commands=%u/%u", ok, total);
        log_mail(LOG_INFO, MSGID_DISCONNECT, NULL, LOG_FIELDS("POSTERN_CLIENT", s->client),
                 "disconnect from %s%s", s->client, b.data ? b.data : "");
}

SmtpSession *smtp_session_free(SmtpSession *s) {
        Smtpd *d;

        if (!s)
                return NULL;
        d = s->smtpd;
        if (s->client)
                log_disconnect(s);
        /* One postmaster notice per session, for the errors of the
         * classes notify_classes lists; its failure is only logged. */
        if (s->client && (s->error_classes & smtpd_notice_mask(d)))
                smtpd_notice_send(d, &s->transcript, s->client,
                                  s->error_classes & smtpd_notice_mask(d), s->abort_reason);
        smtpd_transcript_done(&s->transcript);
        transaction_free(s->tx);
        smtpd_sasl_cancel(s->sasl_req);
        smtpd_check_session_free(s->check);
        smtpd_peer_lookup_free(s->peer_lookup);
        smtp_rcpt_args_done(&s->pending_rcpt);
        sd_event_source_disable_unref(s->io_source);
        sd_event_source_disable_unref(s->timer);
        sd_event_source_disable_unref(s->sleep_timer);
        if (s->io.ops)
                s->io.ops->close(&s->io);
        strbuf_done(&s->in);
        strbuf_done(&s->out);
        free(s->addr_str);
        free(s->name);
        free(s->client);
        free(s->helo);
        free(s->local_addr);
        free(s->tls_info);
        free(s->sasl_method);
        free(s->sasl_username);
        free(s->sasl_mech);
        if (s->prev)
                s->prev->next = s->next;
        else if (d->sessions == s)
                d->sessions = s->next;
        if (s->next)
                s->next->prev = s->prev;
        d->n_sessions--;
        free(s);
        smtpd_session_count_changed(d);
        return NULL;
}

static int peer_setup(SmtpSession *s) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char host[NI_MAXHOST] = "", serv[NI_MAXSERV] = "";

        if (getpeername(s->io.fd, (struct sockaddr *) &ss, &sl) == 0 &&
            getnameinfo((struct sockaddr *) &ss, sl, host, sizeof(host), serv, sizeof(serv),
                        NI_NUMERICHOST | NI_NUMERICSERV) == 0 &&
            inet_addr_parse(host, &s->addr) == 0) {
                InetAddr v4;
                s->have_addr = true;
                s->port = (unsigned) atoi(serv);
                if (inet_addr_unmap_v4(&s->addr, &v4)) {
                        s->addr = v4;
                        s->addr_str = inet_addr_to_string(&v4);
                } else
                        s->addr_str = strdup(host);
        } else
                s->addr_str = strdup("unknown");
        sl = sizeof(ss);
        if (getsockname(s->io.fd, (struct sockaddr *) &ss, &sl) == 0 &&
            getnameinfo((struct sockaddr *) &ss, sl, host, sizeof(host), serv, sizeof(serv),
                        NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
                InetAddr la, v4;
                s->local_port = (unsigned) atoi(serv);
                if (inet_addr_parse(host, &la) == 0 && inet_addr_unmap_v4(&la, &v4))
                        s->local_addr = inet_addr_to_string(&v4);
                else
                        s->local_addr = strdup(host);
        }
        /* The host name follows from smtpd_peer_lookup_start(). */
        return s->addr_str ? 0 : -ENOMEM;
}

/* The session proper, once the client's host name is known (Postfix's
 * smtpd_peer_init() comes first too): the connect line, the connection
 * limits, then the greeting (smtps: the handshake first). */
static int session_start(SmtpSession *s, const RestrictClientNames *names, SmtpSession **ret) {
        Smtpd *d = s->smtpd;
        int fd = s->io.fd;
        uint64_t now;
        int r;

        s->name = strdup(names->name);
        s->client = s->name ? strdup_printf("%s[%s]", s->name, s->addr_str) : NULL;
        if (!s->client) {
                r = -ENOMEM;
                goto fail;
        }
        r = sd_event_add_io(d->event, &s->io_source, fd, EPOLLIN, on_io, s);
        if (r < 0)
                goto fail;
        s->io_events = EPOLLIN;
        (void) sd_event_now(d->event, CLOCK_MONOTONIC, &now);
        r = sd_event_add_time(d->event, &s->timer, CLOCK_MONOTONIC, now + d->settings.timeout_usec,
                              0, on_timeout, s);
        if (r < 0)
                goto fail;
        log_mail(LOG_INFO, MSGID_CONNECT, NULL, LOG_FIELDS("POSTERN_CLIENT", s->client),
                 "connect from %s", s->client);
        {
                /* Connection count and rate limits (anvil). */
                _cleanup_free_ char *deny = NULL;
                r = smtpd_check_session_new(d, s->have_addr ? &s->addr : NULL, s->client, names,
                                            &s->check, &deny);
                if (r < 0)
                        goto fail_logged;
                if (r == 0 && d->settings.tls_wrappermode)
                        goto fail_logged;       /* no plaintext reply on smtps */
                if (r == 0) {
                        /* A connection count or rate limit: policy. */
                        reply_policy(s, deny);
                        session_close(s);
                        session_update_events(s);
                        if (s->dead)
                                smtp_session_free(s);
                        else if (ret)
                                *ret = s;
                        return 0;
                }
                if (d->settings.tls_wrappermode &&
                    smtpd_check_rate(s->check, ANVIL_RATE_NEW_TLS, &deny) == 0)
                        goto fail_logged;
        }
        if (d->settings.tls_wrappermode) {
                /* smtps: TLS first, the greeting after the handshake. */
                if (!d->tls) {
                        log_warning("TLS wrapper mode without a TLS context, dropping %s",
                                    s->client);
                        r = -EIO;
                        goto fail_logged;
                }
                s->state = SMTP_STATE_TLS_HANDSHAKE;
                tls_step(s);
                if (s->dead) {
                        smtp_session_free(s);
                        return 0;
                }
        } else {
                session_greet(s);
                (void) session_flush(s);
        }
        session_update_events(s);
        if (s->dead) {
                smtp_session_free(s);   /* gone before the greeting */
                return 0;
        }
        if (ret)
                *ret = s;
        return 0;
fail:
        free(s->client);
        s->client = NULL;       /* no disconnect line for a session that never was */
fail_logged:
        smtp_session_free(s);
        return r;
}

static void on_peer_name(void *userdata, const RestrictClientNames *names) {
        SmtpSession *s = userdata;
        s->peer_lookup = NULL;          /* freed by the caller */
        if (session_start(s, names, NULL) < 0)
                log_warning("Cannot set up a session, dropping the connection");
}

int smtp_session_new(Smtpd *d, int fd, SmtpSession **ret) {
        RestrictClientNames names;
        SmtpSession *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s) {
                close(fd);
                return -ENOMEM;
        }
        s->smtpd = d;
        s->io = (SmtpIo) {.ops = &plain_io_ops, .fd = fd};
        s->next = d->sessions;
        if (d->sessions)
                d->sessions->prev = s;
        d->sessions = s;
        d->n_sessions++;

        r = peer_setup(s);
        if (r < 0)
                goto fail;
        /* Nothing is read or said before the client's host name is known
         * (at most SMTPD_PEER_LOOKUP_TIMEOUT_USEC): a client that hangs up
         * meanwhile is noticed at the greeting, as with Postfix. */
        r = smtpd_peer_lookup_start(d, s->have_addr ? &s->addr : NULL, on_peer_name, s,
                                    &s->peer_lookup, &names);
        if (r < 0)
                goto fail;
        if (r > 0)
                return session_start(s, &names, ret);
        if (ret)
                *ret = s;
        return 0;
fail:
        smtp_session_free(s);   /* no client yet: no disconnect line */
        return r;
}
