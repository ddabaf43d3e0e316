/* smtp-client.c: the SMTP and LMTP client sessions, an explicit state
 * machine on the sd-event loop with non-blocking sockets and non-blocking
 * OpenSSL. A session connects to one route (TCP address or UNIX socket),
 * reads the greeting, says EHLO (HELO when EHLO is refused) or LHLO, runs
 * STARTTLS as the TLS security level asks, and carries transactions: MAIL,
 * RCPT..., DATA as one PIPELINING group when the server allows it, then the
 * content (smtp-proto.c encodes it) and the final reply, or for LMTP one
 * reply per accepted recipient. After a transaction the session goes into
 * the connection cache for the next message to the same next hop, where an
 * RSET tests it before reuse (sent ahead of MAIL, RCPT and DATA in the same
 * PIPELINING group when the server allows it, so that reuse costs no round
 * trip); an expired cached session says QUIT.
 *
 * A session is only freed at the top of an event callback (after its
 * handler returned), so handlers may end it with session_close() at any
 * point. Entry points: smtp_session_connect(), smtp_session_reuse(),
 * smtp_session_free(). DANE: a route of level dane carries the TLSA
 * records (deliver-remote-job.c found them); the session makes TLS
 * mandatory and lets OpenSSL match the certificate against them. SASL:
 * after EHLO (inside TLS when TLS is used), a server that announces AUTH
 * gets AUTH PLAIN or LOGIN when smtp_sasl_password_maps has a password for
 * the host or the next hop (smtp-sasl.c has the encodings); a failure ends
 * the session and defers the mail. Left out: BDAT. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

#include "addr.h"
#include "deliver-remote.h"
#include "log.h"
#include "smtp-sasl.h"

/* Longest reply line we accept before calling the server broken. */
#define REPLY_LINE_MAX 4096
/* Content bytes encoded ahead of the socket. */
#define CONTENT_CHUNK (64u * 1024)
/* Idle cached sessions per process. */
#define CACHE_MAX 100

typedef enum SessionState {
        SESSION_CONNECTING,
        SESSION_GREETING,
        SESSION_EHLO,
        SESSION_HELO,
        SESSION_STARTTLS,
        SESSION_HANDSHAKE,
        SESSION_AUTH,
        SESSION_RSET,
        SESSION_REUSE,          /* from the cache, RSET to go with the next transaction */
        SESSION_TRANSACTION,
        SESSION_DATA_XFER,
        SESSION_DATA_DONE,
        SESSION_CACHED,
        SESSION_CLOSED,
} SessionState;

typedef enum SmtpCmd {
        CMD_RSET,               /* a reused session's test, pipelined */
        CMD_MAIL,
        CMD_RCPT,
        CMD_DATA,
} SmtpCmd;

typedef struct PendingCmd {
        SmtpCmd cmd;
        size_t rcpt;            /* CMD_RCPT: index in job->rcpts */
} PendingCmd;

struct SmtpSession {
        Deliver *d;
        DeliveryJob *job;               /* NULL while cached */
        SmtpSession *next, *prev;       /* in d->cache */
        ClientSettings *cs;
        char *cache_key;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        SSL *ssl;
        TlsLevel level;                 /* for this session (none after a "may" fallback) */
        TlsDane *dane;                  /* level dane: the server's TLSA records */
        bool tls_done;                  /* STARTTLS completed */
        bool wrapped;                   /* TLS from the start (smtp_tls_wrappermode) */
        bool hs_want_write;
        bool ssl_want_write;
        bool reusing;                   /* taken from the cache, RSET in flight */
        bool broken;                    /* never cache */
        bool out_secret;                /* out holds an AUTH line: wipe once sent */
        SessionState state;
        const char *doing;              /* "sending RCPT TO", for error texts */
        char *host;
        char *name;                     /* "host[addr]" */
        char *relay;                    /* "host[addr]:port" */
        char *tls_facts;                /* "TLSv1.3 CIPHER Verified" once TLS is up */
        char *auth_mechs;               /* the EHLO reply's AUTH mechanisms, NULL: no AUTH */
        SmtpSaslMech auth_mech;
        unsigned auth_step;             /* LOGIN: 334 replies answered */
        char *auth_user, *auth_pass;    /* while authenticating */
        StrBuf in;
        size_t in_off;
        StrBuf out;
        size_t out_off;
        SmtpReply reply;
        SmtpFeatures features;

        /* Transaction. */
        PendingCmd *cmds;
        size_t n_cmds, n_sent, n_replied;
        bool pipelining;
        bool mail_ok;
        unsigned n_accepted;
        size_t lmtp_next;
        bool discard_data;
        bool downgrade;
        SmtpEncoder enc;
        uint64_t content_pos;
        bool content_done;
};

static void session_close(SmtpSession *s);
static void session_ehlo(SmtpSession *s);
static void session_begin(SmtpSession *s);

static void session_set_timeout(SmtpSession *s, uint64_t usec) {
        if (usec == 0) {
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time_relative(s->timer, usec);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static void session_update_events(SmtpSession *s) {
        uint32_t ev = 0;

        switch (s->state) {
        case SESSION_CLOSED:
                return;
        case SESSION_CONNECTING:
        case SESSION_REUSE:
                ev = EPOLLOUT;
                break;
        case SESSION_HANDSHAKE:
                ev = s->hs_want_write ? EPOLLOUT : EPOLLIN;
                break;
        default:
                ev = EPOLLIN;
                if (s->out.len > s->out_off || s->ssl_want_write ||
                    (s->state == SESSION_DATA_XFER && !s->content_done))
                        ev |= EPOLLOUT;
        }
        (void) sd_event_source_set_io_events(s->io, ev);
}

static void cache_unlink(SmtpSession *s) {
        if (s->state != SESSION_CACHED)
                return;
        if (s->prev)
                s->prev->next = s->next;
        else if (s->d->cache == s)
                s->d->cache = s->next;
        if (s->next)
                s->next->prev = s->prev;
        s->next = s->prev = NULL;
        s->d->n_cached--;
}

SmtpSession *smtp_session_free(SmtpSession *s) {
        if (!s)
                return NULL;
        cache_unlink(s);
        if (s->job && s->job->session == s)
                s->job->session = NULL;
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->timer);
        if (s->ssl)
                SSL_free(s->ssl);
        if (s->fd >= 0)
                close(s->fd);
        smtp_reply_done(&s->reply);
        smtp_encoder_done(&s->enc);
        strbuf_done(&s->in);
        if (s->out_secret && s->out.data)
                explicit_bzero(s->out.data, s->out.cap);
        strbuf_done(&s->out);
        free(s->cmds);
        free(s->cache_key);
        free(s->host);
        free(s->name);
        free(s->relay);
        free(s->tls_facts);
        free(s->auth_mechs);
        free(s->auth_user);
        smtp_sasl_free_secret(s->auth_pass);
        tls_dane_unref(s->dane);
        free(s);
        return NULL;
}

const char *smtp_session_relay(const SmtpSession *s) {
        return s->relay;
}

static void session_close(SmtpSession *s) {
        cache_unlink(s);
        s->state = SESSION_CLOSED;
        (void) sd_event_source_set_enabled(s->io, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
}

/* Ends the session's work for its job without a usable connection: the
 * recipients still pending get the soft failure, the job moves on. */
static void session_fail(SmtpSession *s, bool log, const char *dsn, const char *fmt, ...)
        _printf_(4, 5);
static void session_fail(SmtpSession *s, bool log, const char *dsn, const char *fmt, ...) {
        _cleanup_free_ char *text = NULL;
        DeliveryJob *j = s->job;
        bool reusing = s->reusing;
        va_list ap;

        va_start(ap, fmt);
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        session_close(s);
        if (!j)
                return;
        s->job = NULL;
        if (j->session == s)
                j->session = NULL;
        if (reusing) {
                /* A cached connection that went stale is no failure of the
                 * next hop: start over with DNS. */
                log_mail(LOG_DEBUG, NULL, j->qid, LOG_NO_FIELDS,
                         "cached connection to %s is gone: %s", s->relay, strempty(text));
                delivery_job_reuse_failed(j);
                return;
        }
        if (log)
                log_mail(LOG_INFO, MSGID_SMTP_CONN_FAILED, j->qid,
                         LOG_FIELDS("POSTERN_RELAY", s->relay), "%s", strempty(text));
        delivery_job_soft_fail(j, dsn, strempty(text));
        delivery_job_session_done(j, s, false);
}

static void session_lost(SmtpSession *s) {
        session_fail(s, true, "4.4.2", "lost connection with %s while %s", s->name, s->doing);
}

static int session_send(SmtpSession *s) {
        while (s->out_off < s->out.len) {
                size_t n = s->out.len - s->out_off;
                ssize_t k;

                if (s->ssl) {
                        int e;
                        ERR_clear_error();
                        k = SSL_write(s->ssl, s->out.data + s->out_off, (int) MIN(n, (size_t) INT32_MAX));
                        s->ssl_want_write = false;
                        if (k <= 0) {
                                e = SSL_get_error(s->ssl, (int) k);
                                if (e == SSL_ERROR_WANT_WRITE) {
                                        s->ssl_want_write = true;
                                        return 0;
                                }
                                if (e == SSL_ERROR_WANT_READ)
                                        return 0;
                                return -EIO;
                        }
                } else {
                        k = send(s->fd, s->out.data + s->out_off, n, MSG_NOSIGNAL);
                        if (k < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        return 0;
                                return -errno;
                        }
                }
                s->out_off += (size_t) k;
        }
        if (s->out_secret && s->out.data) {
                explicit_bzero(s->out.data, s->out.cap);
                s->out_secret = false;
        }
        strbuf_clear(&s->out);
        s->out_off = 0;
        return 0;
}

static ssize_t session_recv(SmtpSession *s, char *buf, size_t n) {
        ssize_t k;

        if (s->ssl) {
                int e;
                ERR_clear_error();
                k = SSL_read(s->ssl, buf, (int) n);
                if (k > 0)
                        return k;
                e = SSL_get_error(s->ssl, (int) k);
                if (e == SSL_ERROR_WANT_READ)
                        return -EAGAIN;
                if (e == SSL_ERROR_WANT_WRITE) {
                        s->ssl_want_write = true;
                        return -EAGAIN;
                }
                if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
                        return 0;
                return -EIO;
        }
        k = recv(s->fd, buf, n, 0);
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
        return k;
}

static int session_printf(SmtpSession *s, const char *fmt, ...) _printf_(2, 3);
static int session_printf(SmtpSession *s, const char *fmt, ...) {
        _cleanup_free_ char *t = NULL;
        va_list ap;

        va_start(ap, fmt);
        t = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!t || strbuf_puts(&s->out, t) < 0 || strbuf_puts(&s->out, "\r\n") < 0)
                return -ENOMEM;
        return 0;
}

/* "host X said: 550 ... (in reply to RCPT TO command)". Caller frees. */
static char *said(SmtpSession *s, const char *command) {
        return strdup_printf("host %s said: %s (in reply to %s command)", s->name, s->reply.text,
                             command);
}

static const char *reply_dsn(SmtpSession *s, char buf[static 16]) {
        if (s->reply.dsn[0])
                return s->reply.dsn;
        snprintf(buf, 16, "%u.0.0", s->reply.code / 100);
        return buf;
}

static void rcpt_reply(SmtpSession *s, DeliveryRcpt *r, const char *command) {
        _cleanup_free_ char *text = NULL;
        char dsn[16];

        /* Success keeps the server's words, failures say who said them. */
        if (s->reply.code < 300)
                text = strdup(s->reply.text);
        else
                text = said(s, command);
        delivery_rcpt_result(s->job, r, (int) s->reply.code, reply_dsn(s, dsn), strempty(text));
        /* An SMTP peer without DSN could not be given NOTIFY: the request
         * ends here, and the queue manager owes the "relayed" notice (RFC
         * 3461 5.2.2). LMTP delivers, so the delivery is final. */
        if (r->state == RCPT_SENT && !s->cs->lmtp && !s->features.dsn)
                r->state = RCPT_RELAYED;
}

static void session_cache_or_quit(SmtpSession *s) {
        Deliver *d = s->d;

        if (s->broken || s->cs->cache_time_usec == 0 || d->exiting) {
                /* Best effort; the server sees the QUIT or the close. */
                (void) session_printf(s, "QUIT");
                (void) session_send(s);
                session_close(s);
                return;
        }
        if (d->n_cached >= CACHE_MAX) {
                SmtpSession *old = d->cache;
                while (old && old->next)
                        old = old->next;
                if (old) {
                        (void) session_printf(old, "QUIT");
                        (void) session_send(old);
                        session_close(old);
                        smtp_session_free(old);
                }
        }
        free(s->cache_key);
        s->cache_key = s->job ? strdup(s->job->cache_key) : NULL;
        if (!s->cache_key) {
                session_close(s);
                return;
        }
        s->job = NULL;
        s->reusing = false;
        s->state = SESSION_CACHED;
        s->doing = "waiting in the connection cache";
        s->prev = NULL;
        s->next = d->cache;
        if (s->next)
                s->next->prev = s;
        d->cache = s;
        d->n_cached++;
        session_set_timeout(s, s->cs->cache_time_usec);
}

/* The transaction is over: every recipient it carried has its answer or
 * stays pending for another route. */
static void transaction_done(SmtpSession *s) {
        DeliveryJob *j = s->job;

        free(s->cmds);
        s->cmds = NULL;
        s->n_cmds = s->n_sent = s->n_replied = 0;
        smtp_encoder_done(&s->enc);
        for (size_t i = 0; i < j->n_rcpts; i++)
                j->rcpts[i].accepted = false;
        free(j->relay);
        j->relay = strdup(s->relay);
        /* The TLS facts belong to the relay that answered. */
        free(j->tls);
        j->tls = s->tls_facts ? strdup(s->tls_facts) : NULL;
        if (j->session == s)
                j->session = NULL;
        session_cache_or_quit(s);
        s->job = NULL;
        delivery_job_session_done(j, s, true);
}

static int job_scan_body(DeliveryJob *j) {
        char buf[65536];
        uint64_t pos = 0;

        if (j->body_8bit >= 0)
                return j->body_8bit;
        if (j->headers.headers_8bit) {
                j->body_8bit = 1;
                return 1;
        }
        while (pos < j->env.content_size) {
                size_t n = (size_t) MIN((uint64_t) sizeof(buf), j->env.content_size - pos);
                ssize_t k = pread(j->fd, buf, n, (off_t) (j->env.content_offset + pos));
                if (k <= 0)
                        return k < 0 ? -errno : -EIO;
                if (smtp_has_8bit(buf, (size_t) k)) {
                        j->body_8bit = 1;
                        return 1;
                }
                pos += (uint64_t) k;
        }
        j->body_8bit = 0;
        return 0;
}

static void transaction_fail_all(SmtpSession *s, const char *dsn, const char *text) {
        DeliveryJob *j = s->job;
        for (size_t i = 0; i < j->n_rcpts; i++)
                if (j->rcpts[i].state == RCPT_PENDING)
                        delivery_rcpt_result(j, &j->rcpts[i], dsn[0] == '5' ? 550 : 450, dsn, text);
}

static int append_mail_from(SmtpSession *s) {
        DeliveryJob *j = s->job;
        StrBuf b = {0};
        int r;

        r = strbuf_printf(&b, "MAIL FROM:<%s>", j->env.sender);
        if (r >= 0 && s->features.size)
                r = strbuf_printf(&b, " SIZE=%llu", (unsigned long long) j->env.content_size);
        if (r >= 0 && s->features.eightbitmime && !s->downgrade &&
            (j->env.body_8bitmime || j->body_8bit > 0))
                r = strbuf_puts(&b, " BODY=8BITMIME");
        if (r >= 0 && s->features.smtputf8 && j->env.smtputf8)
                r = strbuf_puts(&b, " SMTPUTF8");
        if (r >= 0 && s->features.dsn) {
                if (j->env.ret == QUEUE_RET_FULL)
                        r = strbuf_puts(&b, " RET=FULL");
                else if (j->env.ret == QUEUE_RET_HDRS)
                        r = strbuf_puts(&b, " RET=HDRS");
                if (r >= 0 && !isempty(j->env.envid))
                        r = strbuf_printf(&b, " ENVID=%s", j->env.envid);
        }
        if (r >= 0)
                r = strbuf_puts(&s->out, b.data);
        if (r >= 0)
                r = strbuf_puts(&s->out, "\r\n");
        strbuf_done(&b);
        return r;
}

static int append_rcpt_to(SmtpSession *s, DeliveryRcpt *rc) {
        StrBuf b = {0};
        int r;

        r = strbuf_printf(&b, "RCPT TO:<%s>", rc->address);
        if (r >= 0 && s->features.dsn) {
                char buf[32];
                if (rc->notify)
                        r = strbuf_printf(&b, " NOTIFY=%s", queue_notify_to_string(rc->notify, buf));
                if (r >= 0 && rc->orcpt)
                        r = strbuf_printf(&b, " ORCPT=%s", rc->orcpt);
                else if (r >= 0 && !streq(rc->original, rc->address) && !addr_has_8bit(rc->original)) {
                        r = strbuf_puts(&b, " ORCPT=rfc822;");
                        if (r >= 0)
                                r = smtp_xtext_append(&b, rc->original);
                }
        }
        if (r >= 0)
                r = strbuf_puts(&s->out, b.data);
        if (r >= 0)
                r = strbuf_puts(&s->out, "\r\n");
        strbuf_done(&b);
        return r;
}

static uint64_t cmd_timeout(SmtpSession *s, SmtpCmd c) {
        switch (c) {
        case CMD_RSET:
        case CMD_MAIL:
                return s->cs->mail_timeout_usec;
        case CMD_RCPT:
                return s->cs->rcpt_timeout_usec;
        case CMD_DATA:
                return s->cs->data_init_timeout_usec;
        }
        return s->cs->mail_timeout_usec;
}

/* Sends the next command(s): all at once with PIPELINING, else one. */
static int transaction_send(SmtpSession *s) {
        DeliveryJob *j = s->job;
        size_t until = s->pipelining ? s->n_cmds : s->n_sent + 1;
        int r = 0;

        for (; s->n_sent < until && s->n_sent < s->n_cmds && r >= 0; s->n_sent++) {
                PendingCmd *c = &s->cmds[s->n_sent];
                switch (c->cmd) {
                case CMD_RSET:
                        r = session_printf(s, "RSET");
                        break;
                case CMD_MAIL:
                        r = append_mail_from(s);
                        break;
                case CMD_RCPT:
                        r = append_rcpt_to(s, &j->rcpts[c->rcpt]);
                        break;
                case CMD_DATA:
                        r = session_printf(s, "DATA");
                        break;
                }
        }
        if (r < 0)
                return r;
        s->doing = s->n_replied < s->n_cmds && s->cmds[s->n_replied].cmd == CMD_RSET ? "sending RSET"
                   : s->n_replied < s->n_cmds && s->cmds[s->n_replied].cmd == CMD_MAIL ? "sending MAIL FROM"
                   : s->cmds[s->n_sent - 1].cmd == CMD_DATA ? "sending DATA command"
                                                            : "sending RCPT TO";
        session_set_timeout(s, cmd_timeout(s, s->cmds[s->n_replied].cmd));
        return session_send(s) < 0 ? -EIO : 0;
}

static void session_start_transaction(SmtpSession *s) {
        DeliveryJob *j = s->job;
        /* A reused session with PIPELINING: its RSET leads the group and
         * the session counts as reused until the RSET's reply. */
        bool rset = s->state == SESSION_REUSE;
        size_t n = 0;
        int r;

        if (!rset)
                s->reusing = false;
        if (j->setup_usec == 0) {
                uint64_t now = 0;
                (void) sd_event_now(j->d->event, CLOCK_MONOTONIC, &now);
                j->setup_usec = MAX(now - MIN(j->started_usec, now), (uint64_t) 1);
        }
        s->mail_ok = false;
        s->n_accepted = 0;
        s->lmtp_next = 0;
        s->discard_data = false;
        s->downgrade = false;
        s->content_pos = 0;
        s->content_done = false;
        for (size_t i = 0; i < j->n_rcpts; i++)
                j->rcpts[i].accepted = false;

        if (s->features.size && s->features.size_limit > 0 &&
            j->env.content_size > s->features.size_limit) {
                _cleanup_free_ char *t = strdup_printf(
                        "message size %llu exceeds size limit %llu of server %s",
                        (unsigned long long) j->env.content_size, s->features.size_limit, s->name);
                transaction_fail_all(s, "5.3.4", strempty(t));
                transaction_done(s);
                return;
        }
        if (j->needs_smtputf8 && !s->features.smtputf8) {
                _cleanup_free_ char *t = strdup_printf(
                        "SMTPUTF8 is required, but was not offered by host %s", s->name);
                transaction_fail_all(s, "5.6.7", strempty(t));
                transaction_done(s);
                return;
        }
        if (!s->features.eightbitmime) {
                r = job_scan_body(j);
                if (r < 0) {
                        transaction_fail_all(s, "4.3.0", "cannot read the queue file");
                        transaction_done(s);
                        return;
                }
                if (r > 0) {
                        /* RFC 6152 3: no 8-bit data to a server without
                         * 8BITMIME; convert simple text bodies as Postfix
                         * does, bounce what cannot be converted. */
                        if (j->headers.headers_8bit || j->headers.content_type_composite ||
                            !j->headers.content_type_text || !j->headers.cte_identity) {
                                _cleanup_free_ char *t = strdup_printf(
                                        "host %s does not support 8BITMIME and the 8-bit "
                                        "message cannot be converted to 7-bit", s->name);
                                transaction_fail_all(s, "5.6.3", strempty(t));
                                transaction_done(s);
                                return;
                        }
                        s->downgrade = true;
                }
        }

        s->cmds = calloc(j->n_rcpts + 3, sizeof(PendingCmd));
        if (!s->cmds) {
                session_fail(s, false, "4.3.0", "out of memory");
                return;
        }
        if (rset)
                s->cmds[n++] = (PendingCmd) {.cmd = CMD_RSET};
        s->cmds[n++] = (PendingCmd) {.cmd = CMD_MAIL};
        for (size_t i = 0; i < j->n_rcpts; i++)
                if (j->rcpts[i].state == RCPT_PENDING)
                        s->cmds[n++] = (PendingCmd) {.cmd = CMD_RCPT, .rcpt = i};
        s->cmds[n++] = (PendingCmd) {.cmd = CMD_DATA};
        s->n_cmds = n;
        s->n_sent = s->n_replied = 0;
        s->pipelining = s->features.pipelining;
        s->state = SESSION_TRANSACTION;
        if (transaction_send(s) < 0)
                session_lost(s);
}

static int content_fill(SmtpSession *s) {
        DeliveryJob *j = s->job;
        char buf[CONTENT_CHUNK];

        while (!s->content_done && s->out.len - s->out_off < CONTENT_CHUNK) {
                size_t n = (size_t) MIN((uint64_t) sizeof(buf), j->env.content_size - s->content_pos);
                ssize_t k = 0;
                int r;

                if (n > 0) {
                        k = pread(j->fd, buf, n, (off_t) (j->env.content_offset + s->content_pos));
                        if (k < 0)
                                return -errno;
                        if (k == 0)
                                return -EIO;    /* truncated behind our back */
                        r = smtp_encoder_feed(&s->enc, buf, (size_t) k, &s->out);
                        if (r < 0)
                                return r;
                        s->content_pos += (uint64_t) k;
                }
                if (s->content_pos >= j->env.content_size) {
                        r = smtp_encoder_finish(&s->enc, &s->out);
                        if (r < 0)
                                return r;
                        s->content_done = true;
                }
        }
        return 0;
}

static void session_data_pump(SmtpSession *s) {
        size_t before;
        int r;

        for (;;) {
                r = content_fill(s);
                if (r < 0) {
                        /* The queue file failed us, not the server. */
                        s->broken = true;
                        session_fail(s, false, "4.3.0", "cannot read the queue file: %s",
                                     strerror(-r));
                        return;
                }
                before = s->out.len - s->out_off;
                if (session_send(s) < 0) {
                        session_lost(s);
                        return;
                }
                if (s->out.len - s->out_off > 0) {
                        if (s->out.len - s->out_off < before)
                                session_set_timeout(s, s->cs->data_xfer_timeout_usec);
                        return;         /* the socket is full */
                }
                session_set_timeout(s, s->cs->data_xfer_timeout_usec);
                if (s->content_done) {
                        s->state = SESSION_DATA_DONE;
                        s->doing = "sending end of data -- message may be sent more than once";
                        session_set_timeout(s, s->cs->data_done_timeout_usec);
                        return;
                }
        }
}

static void on_transaction_reply(SmtpSession *s) {
        DeliveryJob *j = s->job;
        PendingCmd *c;
        unsigned code = s->reply.code;

        if (s->n_replied >= s->n_sent) {
                s->broken = true;
                session_fail(s, false, "4.5.0", "host %s sent an unexpected reply: %s", s->name,
                             s->reply.text);
                return;
        }
        c = &s->cmds[s->n_replied++];
        switch (c->cmd) {
        case CMD_RSET:
                if (code < 200 || code >= 300) {
                        /* Still "reusing": the job starts over elsewhere. */
                        session_fail(s, false, "4.4.2", "host %s said: %s (in reply to RSET "
                                     "command)", s->name, s->reply.text);
                        return;
                }
                s->reusing = false;
                break;
        case CMD_MAIL:
                if (code >= 200 && code < 300)
                        s->mail_ok = true;
                else {
                        for (size_t i = 0; i < s->n_cmds; i++)
                                if (s->cmds[i].cmd == CMD_RCPT)
                                        rcpt_reply(s, &j->rcpts[s->cmds[i].rcpt], "MAIL FROM");
                        if (!s->pipelining) {
                                transaction_done(s);
                                return;
                        }
                }
                break;
        case CMD_RCPT:
                if (!s->mail_ok)
                        break;
                if (code >= 200 && code < 300) {
                        j->rcpts[c->rcpt].accepted = true;
                        s->n_accepted++;
                } else
                        rcpt_reply(s, &j->rcpts[c->rcpt], "RCPT TO");
                /* Without PIPELINING, DATA only when someone was accepted. */
                if (!s->pipelining && s->n_sent < s->n_cmds &&
                    s->cmds[s->n_sent].cmd == CMD_DATA && s->n_accepted == 0) {
                        transaction_done(s);
                        return;
                }
                break;
        case CMD_DATA:
                if (code == 354 && s->mail_ok && s->n_accepted > 0) {
                        s->state = SESSION_DATA_XFER;
                        s->doing = "sending message body";
                        smtp_encoder_init(&s->enc, s->d->settings.line_length_limit, s->downgrade,
                                          s->downgrade && !j->headers.mime_version);
                        session_set_timeout(s, s->cs->data_xfer_timeout_usec);
                        session_data_pump(s);
                        return;
                }
                if (code == 354) {
                        /* A server that wants data nobody was accepted for
                         * gets an empty message, whose reply is ignored. */
                        s->discard_data = true;
                        s->state = SESSION_DATA_DONE;
                        if (session_printf(s, ".") < 0 || session_send(s) < 0) {
                                session_lost(s);
                                return;
                        }
                        session_set_timeout(s, s->cs->data_done_timeout_usec);
                        return;
                }
                if (s->mail_ok && s->n_accepted > 0) {
                        if (code < 400) {
                                s->broken = true;
                                session_fail(s, false, "4.5.0", "host %s said: %s (in reply to "
                                             "DATA command)", s->name, s->reply.text);
                                return;
                        }
                        for (size_t i = 0; i < j->n_rcpts; i++)
                                if (j->rcpts[i].accepted)
                                        rcpt_reply(s, &j->rcpts[i], "DATA");
                }
                transaction_done(s);
                return;
        }
        if (s->n_replied < s->n_cmds) {
                if (s->n_replied == s->n_sent && transaction_send(s) < 0) {
                        session_lost(s);
                        return;
                }
                session_set_timeout(s, cmd_timeout(s, s->cmds[s->n_replied].cmd));
        }
}

static void on_data_done_reply(SmtpSession *s) {
        DeliveryJob *j = s->job;

        if (s->discard_data) {
                transaction_done(s);
                return;
        }
        if (s->state == SESSION_DATA_XFER) {
                /* A reply before the end of the data: the server gave up. */
                s->broken = true;
                s->content_done = true;
        }
        if (!s->cs->lmtp) {
                for (size_t i = 0; i < j->n_rcpts; i++)
                        if (j->rcpts[i].accepted)
                                rcpt_reply(s, &j->rcpts[i], "end of DATA");
                transaction_done(s);
                return;
        }
        /* RFC 2033 4.2: one reply per accepted recipient, in RCPT order. */
        for (; s->lmtp_next < j->n_rcpts; s->lmtp_next++)
                if (j->rcpts[s->lmtp_next].accepted)
                        break;
        if (s->lmtp_next < j->n_rcpts) {
                rcpt_reply(s, &j->rcpts[s->lmtp_next], "end of DATA");
                s->lmtp_next++;
        }
        for (; s->lmtp_next < j->n_rcpts; s->lmtp_next++)
                if (j->rcpts[s->lmtp_next].accepted)
                        break;
        if (s->lmtp_next >= j->n_rcpts || s->broken)
                transaction_done(s);
        else
                session_set_timeout(s, s->cs->data_done_timeout_usec);
}

static char **match_names(SmtpSession *s) {
        DeliveryJob *j = s->job;
        char **l = NULL;
        char * const *spec = j->tls_policy.match ? j->tls_policy.match
                             : s->level == TLS_LEVEL_SECURE ? s->cs->tls_secure_match
                                                            : s->cs->tls_verify_match;

        STRV_FOREACH(m, spec) {
                int r;
                if (strcaseeq(*m, "hostname"))
                        r = strv_extend(&l, s->host);
                else if (strcaseeq(*m, "nexthop"))
                        r = strv_extend(&l, j->nexthop.host ? j->nexthop.host : s->host);
                else if (strcaseeq(*m, "dot-nexthop")) {
                        _cleanup_free_ char *t = strdup_printf(".%s", strempty(j->nexthop.host));
                        r = t ? strv_extend(&l, t) : -ENOMEM;
                } else
                        r = strv_extend(&l, *m);
                if (r < 0)
                        return strv_free(l);
        }
        if (!l)
                l = calloc(1, sizeof(char *));
        return l;
}

static void session_handshake(SmtpSession *s) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ char *reason = NULL, *info = NULL;
        TlsTrust trust;
        int k, e;

        ERR_clear_error();
        k = SSL_do_handshake(s->ssl);
        if (k != 1) {
                _cleanup_free_ char *err = NULL;
                e = SSL_get_error(s->ssl, k);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                        s->hs_want_write = e == SSL_ERROR_WANT_WRITE;
                        return;
                }
                err = tls_error_string(e == SSL_ERROR_SYSCALL ? "connection closed" : "handshake failure");
                if (s->level == TLS_LEVEL_MAY && s->job && !s->wrapped) {
                        /* Postfix's opportunistic TLS: a failed handshake is
                         * retried in plaintext on a new connection. */
                        log_mail(LOG_INFO, MSGID_SMTP_CONN_FAILED, s->job->qid,
                                 LOG_FIELDS("POSTERN_RELAY", s->relay),
                                 "TLS handshake with %s failed: %s; retrying without TLS",
                                 s->relay, strempty(err));
                        s->job->plain_retry = true;
                }
                session_fail(s, false, "4.7.5", "Cannot start TLS: handshake failure with %s: %s",
                             s->name, strempty(err));
                return;
        }
        s->tls_done = true;
        /* Below verify the name is not looked at: the best is "Trusted",
         * as Postfix logs it. */
        names = s->level >= TLS_LEVEL_VERIFY ? match_names(s) : calloc(1, sizeof(char *));
        if (!names || tls_client_check_peer(s->ssl, names, &trust, &reason) < 0) {
                session_fail(s, false, "4.3.0", "out of memory");
                return;
        }
        info = tls_session_describe(s->ssl);
        free(s->tls_facts);
        s->tls_facts = strdup_printf("%s %s %s", SSL_get_version(s->ssl),
                                     SSL_get_cipher_name(s->ssl), tls_trust_to_string(trust));
        if (s->cs->tls_loglevel >= 1 && s->job)
                log_mail(LOG_INFO, MSGID_SMTP_TLS, s->job->qid,
                         LOG_FIELDS("POSTERN_RELAY", s->relay, "POSTERN_TLS", info),
                         "%s TLS connection established to %s: %s", tls_trust_to_string(trust),
                         s->relay, strempty(info));
        if ((s->level >= TLS_LEVEL_VERIFY || s->dane) && trust != TLS_TRUST_VERIFIED) {
                if (s->job)
                        log_mail(LOG_INFO, MSGID_SMTP_CONN_FAILED, s->job->qid,
                                 LOG_FIELDS("POSTERN_RELAY", s->relay),
                                 "server certificate verification failed for %s: %s", s->relay,
                                 strempty(reason));
                s->broken = true;
                session_fail(s, false, "4.7.5", "Server certificate not %s (%s: %s)",
                             trust == TLS_TRUST_TRUSTED || s->dane ? "verified" : "trusted",
                             s->name, strempty(reason));
                return;
        }
        if (s->wrapped) {
                /* RFC 8314 3.3: the greeting comes inside TLS. */
                s->state = SESSION_GREETING;
                s->doing = "receiving the initial server greeting";
                session_set_timeout(s, s->cs->helo_timeout_usec);
                return;
        }
        /* RFC 3207 4.2: forget what the server said before TLS. */
        s->features = (SmtpFeatures) {0};
        session_ehlo(s);
}

static void session_start_tls(SmtpSession *s) {
        SSL_CTX *ctx;
        const char *sni = NULL, *servername;
        DeliveryJob *j = s->job;
        ClientSettings *cs = s->cs;
        const TlsPolicy *pol = &j->tls_policy;
        bool mandatory = s->level >= TLS_LEVEL_ENCRYPT;
        _cleanup_free_ char *err = NULL;
        _cleanup_strv_free_ char **dane_names = NULL;
        int r;

        ctx = mandatory ? cs->ctx_mandatory : cs->ctx_opportunistic;
        if (!ctx) {
                if (mandatory || s->wrapped)
                        session_fail(s, false, "4.7.5",
                                     "TLS is required, but our TLS engine is unavailable");
                else {
                        /* Without a context "may" means plaintext. */
                        session_begin(s);
                }
                return;
        }
        servername = pol->servername ? pol->servername : cs->tls_servername;
        if (!isempty(servername)) {
                if (strcaseeq(servername, "hostname"))
                        sni = s->host;
                else if (strcaseeq(servername, "nexthop"))
                        sni = j->nexthop.host;
                else
                        sni = servername;
                if (sni && inet_addr_parse(sni, &(InetAddr) {0}) == 0)
                        sni = NULL;     /* RFC 6066 3: no literal addresses */
        }
        /* RFC 7672: with DANE the SNI is the TLSA base domain. */
        if (s->dane)
                sni = s->dane->base;
        r = tls_client_ssl_new(ctx, s->fd, sni, &s->ssl);
        if (r >= 0 && s->dane) {
                /* RFC 7672 3.2.2: a DANE-TA(2) match needs the certificate
                 * to name the TLSA base domain or the MX host name, or the
                 * next-hop domain when the MX records were validated. */
                if (strv_extend(&dane_names, s->host) < 0 ||
                    (j->nexthop.mx && j->mx_secure &&
                     strv_extend(&dane_names, j->nexthop.host) < 0))
                        r = -ENOMEM;
                if (r >= 0)
                        r = tls_client_dane_enable(s->ssl, s->dane, dane_names);
        }
        if (r < 0) {
                session_fail(s, false, "4.7.5", "Cannot start TLS: %s", strerror(-r));
                return;
        }
        if (pol->protocols || pol->ciphers || pol->exclude) {
                r = tls_client_ssl_override(s->ssl, pol->protocols, pol->ciphers, pol->exclude,
                                            &err);
                if (r < 0) {
                        s->broken = true;
                        session_fail(s, false, "4.7.0", "Cannot start TLS: TLS policy for %s: %s",
                                     j->nexthop_text, r == -ENOMEM ? "out of memory" : strempty(err));
                        return;
                }
        }
        /* Plaintext the server sent after its 220 would be injected into
         * the TLS session (CVE-2011-0411 class): drop it. */
        strbuf_clear(&s->in);
        s->in_off = 0;
        s->state = SESSION_HANDSHAKE;
        s->doing = "performing the TLS handshake";
        session_set_timeout(s, cs->starttls_timeout_usec);
        session_handshake(s);
}

static void session_ehlo(SmtpSession *s) {
        const char *verb = s->cs->lmtp ? "LHLO" : "EHLO";

        s->state = SESSION_EHLO;
        s->doing = s->cs->lmtp ? "performing the LHLO handshake" : "performing the EHLO handshake";
        if (session_printf(s, "%s %s", verb, s->cs->helo_name) < 0 || session_send(s) < 0) {
                session_lost(s);
                return;
        }
        session_set_timeout(s, s->cs->helo_timeout_usec);
}

/* Forgets the credentials of an AUTH exchange. */
static void auth_done(SmtpSession *s) {
        free(s->auth_user);
        s->auth_user = NULL;
        s->auth_pass = smtp_sasl_free_secret(s->auth_pass);
}

/* smtp_sasl_password_maps, in Postfix's order: the server's host name
 * (an address for a literal next hop), then the next hop as given
 * ("[smtp.example.com]:587"). > 0: found, 0: no password for this
 * server, < 0: the tables failed. */
static int auth_lookup(SmtpSession *s, char **ret_value) {
        const char *keys[] = {s->host, s->job->nexthop_text};

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                int r;
                if (isempty(keys[i]) || (i > 0 && !isempty(keys[0]) && strcaseeq(keys[i], keys[0])))
                        continue;
                r = map_list_lookup(s->cs->sasl_passwords, keys[i], ret_value);
                if (r != 0)
                        return r;
        }
        return 0;
}

/* Ends the session on a failed authentication: as Postfix, the mail is
 * deferred (smtp_sasl_auth_soft_bounce) and the session not reused. */
static void auth_fail(SmtpSession *s, const char *dsn, bool hard, const char *text) {
        auth_done(s);
        s->broken = true;
        if (hard && !s->cs->sasl_soft_bounce)
                delivery_job_fail_all(s->job, true, dsn, text);
        session_fail(s, true, dsn, "%s", text);
}

/* Sends prefix and b64 (a base64 secret, taken and wiped; NULL: out of
 * memory) as one line. */
static int auth_send(SmtpSession *s, const char *prefix, char *b64) {
        int r;

        r = b64 && strbuf_puts(&s->out, prefix) >= 0 && strbuf_puts(&s->out, b64) >= 0 &&
            strbuf_puts(&s->out, "\r\n") >= 0 ? 0 : -ENOMEM;
        smtp_sasl_free_secret(b64);
        s->out_secret = true;
        if (r < 0)
                return r;
        return session_send(s) < 0 ? -EIO : 0;
}

/* After EHLO (and TLS): AUTH when the server announces it and a password
 * is known for it, then the first transaction. */
static void session_begin(SmtpSession *s) {
        ClientSettings *cs = s->cs;
        DeliveryJob *j = s->job;
        _cleanup_free_ char *mechs = NULL, *text = NULL;
        char *value = NULL;
        unsigned options;
        int r;

        if (!cs->sasl_enable || !s->auth_mechs || !j) {
                session_start_transaction(s);
                return;
        }
        if (cs->sasl_passwords_error) {
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s", cs->sasl_passwords_error);
                session_fail(s, false, "4.3.0", "%s", cs->sasl_passwords_error);
                return;
        }
        r = cs->sasl_passwords ? auth_lookup(s, &value) : 0;
        if (r < 0) {
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s lookup error for %s: %s",
                         cs->lmtp ? "lmtp_sasl_password_maps" : "smtp_sasl_password_maps",
                         s->relay, strerror(-r));
                session_fail(s, false, "4.3.0", "%s lookup error for %s",
                             cs->lmtp ? "lmtp_sasl_password_maps" : "smtp_sasl_password_maps",
                             s->name);
                return;
        }
        if (r == 0) {
                /* No password for this server: talk as strangers. */
                session_start_transaction(s);
                return;
        }
        r = smtp_sasl_credentials(strempty(value), &s->auth_user, &s->auth_pass);
        value = smtp_sasl_free_secret(value);
        mechs = r < 0 ? NULL : smtp_sasl_filter(s->auth_mechs, cs->sasl_mech_filter);
        if (!mechs) {
                auth_done(s);
                session_fail(s, false, "4.3.0", "out of memory");
                return;
        }
        if (!mechs[0]) {
                log_mail(LOG_WARNING, NULL, j->qid, LOG_FIELDS("POSTERN_RELAY", s->relay),
                         "%s offered no supported AUTH mechanisms: '%s'", s->relay, s->auth_mechs);
                text = strdup_printf("SASL authentication failed: server %s offered no compatible "
                                     "authentication mechanisms for this type of connection "
                                     "security", s->name);
                auth_fail(s, "4.7.0", false, strempty(text));
                return;
        }
        options = !s->tls_done ? cs->sasl_options
                  : s->level >= TLS_LEVEL_VERIFY || s->dane ? cs->sasl_tls_verified_options
                                                            : cs->sasl_tls_options;
        s->auth_mech = smtp_sasl_choose(mechs, options);
        if (s->auth_mech == SMTP_SASL_MECH_NONE) {
                /* The words of Postfix with Cyrus SASL. */
                text = strdup_printf("SASL authentication failed; cannot authenticate to server "
                                     "%s: no mechanism available", s->name);
                auth_fail(s, "4.7.0", false, strempty(text));
                return;
        }
        log_mail(LOG_DEBUG, NULL, j->qid, LOG_FIELDS("POSTERN_RELAY", s->relay),
                 "authenticating to %s as %s with %s", s->relay, s->auth_user,
                 smtp_sasl_mech_name(s->auth_mech));
        s->state = SESSION_AUTH;
        s->doing = "performing the SASL authentication";
        s->auth_step = 0;
        if (s->auth_mech == SMTP_SASL_MECH_PLAIN)
                /* RFC 4954 4: the initial response saves a round trip. */
                r = auth_send(s, "AUTH PLAIN ", smtp_sasl_plain_response(s->auth_user, s->auth_pass));
        else
                r = session_printf(s, "AUTH LOGIN") < 0 || session_send(s) < 0 ? -EIO : 0;
        if (r < 0) {
                auth_done(s);
                session_lost(s);
                return;
        }
        session_set_timeout(s, cs->helo_timeout_usec);
}

static void on_auth_reply(SmtpSession *s) {
        _cleanup_free_ char *text = NULL;
        unsigned code = s->reply.code;
        char dsn[16];

        if (code >= 200 && code < 300) {
                log_mail(LOG_DEBUG, NULL, s->job->qid, LOG_FIELDS("POSTERN_RELAY", s->relay),
                         "authenticated to %s as %s", s->relay, s->auth_user);
                auth_done(s);
                session_start_transaction(s);
                return;
        }
        if (code == 334 && s->auth_mech == SMTP_SASL_MECH_LOGIN && s->auth_step < 2) {
                /* LOGIN: the user name, then the password, whatever the
                 * prompts say. */
                const char *v = s->auth_step++ == 0 ? s->auth_user : s->auth_pass;
                if (auth_send(s, "", smtp_sasl_base64(v, strlen(v))) < 0) {
                        auth_done(s);
                        session_lost(s);
                        return;
                }
                session_set_timeout(s, s->cs->helo_timeout_usec);
                return;
        }
        /* A failure, or a challenge PLAIN and LOGIN have no answer to. */
        text = strdup_printf("SASL authentication failed; server %s said: %s", s->name,
                             s->reply.text);
        auth_fail(s, code >= 400 ? reply_dsn(s, dsn) : "4.7.0", code >= 500, strempty(text));
}

/* After EHLO/HELO: TLS as the level asks, then the first transaction. */
static void session_ready(SmtpSession *s) {
        if (!s->tls_done && s->level >= TLS_LEVEL_MAY) {
                if (s->features.starttls) {
                        s->state = SESSION_STARTTLS;
                        s->doing = "sending STARTTLS";
                        if (session_printf(s, "STARTTLS") < 0 || session_send(s) < 0) {
                                session_lost(s);
                                return;
                        }
                        session_set_timeout(s, s->cs->starttls_timeout_usec);
                        return;
                }
                if (s->level >= TLS_LEVEL_ENCRYPT) {
                        s->broken = true;
                        session_fail(s, false, "4.7.4",
                                     "TLS is required, but was not offered by host %s", s->name);
                        return;
                }
        } else if (!s->tls_done && s->features.starttls && s->cs->tls_note_starttls_offer &&
                   s->job)
                log_mail(LOG_INFO, NULL, s->job->qid, LOG_FIELDS("POSTERN_RELAY", s->relay),
                         "Host offered STARTTLS: [%s]", s->host);
        session_begin(s);
}

static void session_on_reply(SmtpSession *s) {
        unsigned code = s->reply.code;
        char dsn[16];

        switch (s->state) {
        case SESSION_GREETING:
                if (code != 220) {
                        /* smtp_skip_5xx_greeting: try the next server. */
                        session_fail(s, false, code >= 500 ? "4.0.0" : reply_dsn(s, dsn),
                                     "host %s refused to talk to me: %s", s->name, s->reply.text);
                        return;
                }
                if (s->job)
                        s->job->sessions++;
                session_ehlo(s);
                return;
        case SESSION_EHLO:
                if (code >= 200 && code < 300) {
                        smtp_features_parse(&s->reply, &s->features);
                        free(s->auth_mechs);
                        s->auth_mechs = NULL;
                        if (smtp_sasl_offered(&s->reply, &s->auth_mechs) < 0) {
                                session_fail(s, false, "4.3.0", "out of memory");
                                return;
                        }
                        session_ready(s);
                        return;
                }
                if (!s->cs->lmtp && code >= 500 && !s->tls_done) {
                        s->state = SESSION_HELO;
                        s->doing = "performing the HELO handshake";
                        if (session_printf(s, "HELO %s", s->cs->helo_name) < 0 ||
                            session_send(s) < 0) {
                                session_lost(s);
                                return;
                        }
                        session_set_timeout(s, s->cs->helo_timeout_usec);
                        return;
                }
                session_fail(s, false, reply_dsn(s, dsn), "host %s said: %s (in reply to %s command)",
                             s->name, s->reply.text, s->cs->lmtp ? "LHLO" : "EHLO");
                return;
        case SESSION_HELO:
                if (code >= 200 && code < 300) {
                        s->features = (SmtpFeatures) {0};
                        free(s->auth_mechs);
                        s->auth_mechs = NULL;
                        session_ready(s);
                        return;
                }
                session_fail(s, false, reply_dsn(s, dsn),
                             "host %s said: %s (in reply to HELO command)", s->name, s->reply.text);
                return;
        case SESSION_STARTTLS:
                if (code == 220) {
                        session_start_tls(s);
                        return;
                }
                if (s->level >= TLS_LEVEL_ENCRYPT) {
                        s->broken = true;
                        session_fail(s, false, "4.7.4", "TLS is required, but host %s refused "
                                     "to start TLS: %s", s->name, s->reply.text);
                        return;
                }
                session_begin(s);
                return;
        case SESSION_AUTH:
                on_auth_reply(s);
                return;
        case SESSION_RSET:
                if (code >= 200 && code < 300) {
                        session_start_transaction(s);
                        return;
                }
                session_fail(s, false, "4.4.2", "host %s said: %s (in reply to RSET command)",
                             s->name, s->reply.text);
                return;
        case SESSION_TRANSACTION:
                on_transaction_reply(s);
                return;
        case SESSION_DATA_XFER:
        case SESSION_DATA_DONE:
                on_data_done_reply(s);
                return;
        case SESSION_CACHED:
                /* E.g. a 421 timeout notice: the connection is no good. */
                session_close(s);
                return;
        case SESSION_REUSE:
                /* The same, noticed as the session was taken for a job. */
                session_fail(s, false, "4.4.2", "host %s said: %s while in the connection cache",
                             s->name, s->reply.text);
                return;
        case SESSION_CONNECTING:
        case SESSION_HANDSHAKE:
        case SESSION_CLOSED:
                return;
        }
}

/* Splits the input into lines and feeds them to the reply reader. */
static void session_process_input(SmtpSession *s) {
        while (s->state != SESSION_CLOSED && s->state != SESSION_HANDSHAKE) {
                char *start = s->in.data + s->in_off;
                size_t avail = s->in.len - s->in_off;
                char *nl = avail ? memchr(start, '\n', avail) : NULL;
                size_t len;
                int r;

                if (!nl) {
                        if (avail > REPLY_LINE_MAX) {
                                s->broken = true;
                                session_fail(s, false, "4.5.0",
                                             "host %s sent a reply line longer than %d bytes",
                                             s->name, REPLY_LINE_MAX);
                        }
                        break;
                }
                len = (size_t) (nl - start);
                if (len > 0 && start[len - 1] == '\r')
                        len--;
                s->in_off += (size_t) (nl - start) + 1;
                r = smtp_reply_feed(&s->reply, start, len);
                if (r < 0) {
                        _cleanup_free_ char *esc = NULL;
                        start[len] = 0;
                        esc = str_escape_log(start, 200);
                        s->broken = true;
                        smtp_reply_done(&s->reply);
                        session_fail(s, false, "4.5.0", "host %s sent a malformed reply: %s",
                                     s->name, strempty(esc));
                        break;
                }
                if (r > 0) {
                        session_on_reply(s);
                        smtp_reply_done(&s->reply);
                }
        }
        if (s->in_off > 0 && s->state != SESSION_CLOSED) {
                memmove(s->in.data, s->in.data + s->in_off, s->in.len - s->in_off);
                s->in.len -= s->in_off;
                s->in.data[s->in.len] = 0;
                s->in_off = 0;
        }
}

static void session_dispatch(SmtpSession *s, uint32_t revents) {
        char buf[16384];

        if (s->state == SESSION_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof(err);
                if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err != 0) {
                        session_fail(s, true, "4.4.1", "connect to %s: %s", s->relay,
                                     strerror(err));
                        return;
                }
                if (s->wrapped) {
                        session_start_tls(s);
                        if (s->state == SESSION_HANDSHAKE || s->state == SESSION_CLOSED)
                                return;
                } else {
                        s->state = SESSION_GREETING;
                        s->doing = "receiving the initial server greeting";
                        session_set_timeout(s, s->cs->helo_timeout_usec);
                        return;
                }
        } else if (s->state == SESSION_HANDSHAKE) {
                session_handshake(s);
                if (s->state == SESSION_HANDSHAKE || s->state == SESSION_CLOSED)
                        return;
        }
        if (s->state == SESSION_REUSE) {
                session_start_transaction(s);
                if (s->state == SESSION_CLOSED)
                        return;
        }
        if (s->out.len > s->out_off || s->ssl_want_write) {
                if (session_send(s) < 0) {
                        session_lost(s);
                        return;
                }
        }
        if (s->state == SESSION_DATA_XFER) {
                session_data_pump(s);
                if (s->state == SESSION_CLOSED)
                        return;
        }
        for (;;) {
                ssize_t k = session_recv(s, buf, sizeof(buf));
                if (k == -EAGAIN)
                        break;
                if (k <= 0) {
                        if (s->state == SESSION_CACHED)
                                session_close(s);
                        else
                                session_lost(s);
                        return;
                }
                if (strbuf_append(&s->in, buf, (size_t) k) < 0) {
                        session_fail(s, false, "4.3.0", "out of memory");
                        return;
                }
                session_process_input(s);
                if (s->state == SESSION_CLOSED || s->state == SESSION_HANDSHAKE)
                        return;
        }
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        SmtpSession *s = userdata;

        session_dispatch(s, revents);
        if (s->state == SESSION_CLOSED)
                smtp_session_free(s);
        else
                session_update_events(s);
        return 0;
}

static int on_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        SmtpSession *s = userdata;

        if (s->state == SESSION_CACHED) {
                (void) session_printf(s, "QUIT");
                (void) session_send(s);
                session_close(s);
        } else if (s->state == SESSION_CONNECTING)
                session_fail(s, true, "4.4.1", "connect to %s: Connection timed out", s->relay);
        else {
                s->broken = true;
                session_fail(s, true, "4.4.2", "conversation with %s timed out while %s", s->name,
                             s->doing);
        }
        if (s->state == SESSION_CLOSED)
                smtp_session_free(s);
        else
                session_update_events(s);
        return 0;
}

static int socket_connect(Deliver *d, const Route *rt, int *ret_fd, bool *ret_done) {
        _cleanup_close_ int fd = -1;
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
                struct sockaddr_un un;
        } sa = {0};
        socklen_t len;

        if (rt->path) {
                if (strlen(rt->path) >= sizeof(sa.un.sun_path))
                        return -ENAMETOOLONG;
                sa.un.sun_family = AF_UNIX;
                memcpy(sa.un.sun_path, rt->path, strlen(rt->path));
                len = sizeof(sa.un);
        } else if (rt->addr.family == AF_INET) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons((uint16_t) rt->port);
                memcpy(&sa.in.sin_addr, rt->addr.bytes, 4);
                len = sizeof(sa.in);
        } else {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons((uint16_t) rt->port);
                memcpy(&sa.in6.sin6_addr, rt->addr.bytes, 16);
                len = sizeof(sa.in6);
        }
        fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (!rt->path) {
                const InetAddr *b = rt->addr.family == AF_INET ? &d->settings.bind_address
                                                               : &d->settings.bind_address6;
                if (b->family == rt->addr.family) {
                        union {
                                struct sockaddr sa;
                                struct sockaddr_in in;
                                struct sockaddr_in6 in6;
                        } ba = {0};
                        socklen_t blen;
                        if (b->family == AF_INET) {
                                ba.in.sin_family = AF_INET;
                                memcpy(&ba.in.sin_addr, b->bytes, 4);
                                blen = sizeof(ba.in);
                        } else {
                                ba.in6.sin6_family = AF_INET6;
                                memcpy(&ba.in6.sin6_addr, b->bytes, 16);
                                blen = sizeof(ba.in6);
                        }
                        if (bind(fd, &ba.sa, blen) < 0)
                                return -errno;
                }
        }
        if (connect(fd, &sa.sa, len) < 0) {
                if (errno != EINPROGRESS && errno != EAGAIN)
                        return -errno;
                *ret_done = false;
        } else
                *ret_done = true;
        *ret_fd = steal_fd(fd);
        return 0;
}

static int session_new(Deliver *d, DeliveryJob *j, SmtpSession **ret) {
        SmtpSession *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->d = d;
        s->fd = -1;
        s->cs = j->cs;
        s->doing = "connecting";
        r = sd_event_add_time_relative(d->event, &s->timer, CLOCK_MONOTONIC, 1000000, 0, on_timer, s);
        if (r < 0) {
                smtp_session_free(s);
                return r;
        }
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        *ret = s;
        return 0;
}

int smtp_session_connect(DeliveryJob *j, const Route *rt, bool plain) {
        Deliver *d = j->d;
        _cleanup_free_ char *addr_text = NULL;
        SmtpSession *s = NULL;
        bool done = false;
        int fd = -1, r;

        r = session_new(d, j, &s);
        if (r < 0) {
                delivery_job_soft_fail(j, "4.3.0", "out of memory");
                return r;
        }
        s->level = plain ? TLS_LEVEL_NONE : rt->tls_level;
        /* Wrapper mode: TLS whatever the level, which only says how the
         * server is verified. */
        s->wrapped = s->cs->tls_wrappermode && !rt->path;
        if (s->level == TLS_LEVEL_DANE)
                s->dane = tls_dane_ref(rt->dane);
        s->host = strdup(rt->host);
        addr_text = rt->path ? strdup(rt->path) : inet_addr_to_string(&rt->addr);
        if (!s->host || !addr_text) {
                smtp_session_free(s);
                delivery_job_soft_fail(j, "4.3.0", "out of memory");
                return -ENOMEM;
        }
        s->name = strdup_printf("%s[%s]", rt->host, addr_text);
        s->relay = rt->path ? strdup(s->name) : strdup_printf("%s:%u", s->name, rt->port);
        if (!s->name || !s->relay) {
                smtp_session_free(s);
                delivery_job_soft_fail(j, "4.3.0", "out of memory");
                return -ENOMEM;
        }
        r = socket_connect(d, rt, &fd, &done);
        if (r < 0) {
                _cleanup_free_ char *t = strdup_printf("connect to %s: %s", s->relay, strerror(-r));
                log_mail(LOG_INFO, MSGID_SMTP_CONN_FAILED, j->qid,
                         LOG_FIELDS("POSTERN_RELAY", s->relay), "%s", strempty(t));
                delivery_job_soft_fail(j, "4.4.1", strempty(t));
                smtp_session_free(s);
                return r;
        }
        s->fd = fd;
        r = sd_event_add_io(d->event, &s->io, fd, EPOLLOUT, on_io, s);
        if (r < 0) {
                smtp_session_free(s);
                delivery_job_soft_fail(j, "4.3.0", "cannot watch the connection");
                return r;
        }
        s->job = j;
        j->session = s;
        if (done && !s->wrapped) {
                s->state = SESSION_GREETING;
                s->doing = "receiving the initial server greeting";
                session_set_timeout(s, s->cs->helo_timeout_usec);
        } else {
                s->state = SESSION_CONNECTING;
                /* 0s: the kernel's own limit, with a generous backstop. */
                session_set_timeout(s, s->cs->connect_timeout_usec > 0 ? s->cs->connect_timeout_usec
                                                                        : 300 * 1000000ULL);
        }
        session_update_events(s);
        return 0;
}

int smtp_session_reuse(DeliveryJob *j) {
        Deliver *d = j->d;

        for (SmtpSession *s = d->cache; s; s = s->next) {
                if (!streq_ptr(s->cache_key, j->cache_key))
                        continue;
                cache_unlink(s);
                s->job = j;
                j->session = s;
                s->reusing = true;
                s->broken = false;
                s->doing = "sending RSET";
                log_mail(LOG_DEBUG, NULL, j->qid, LOG_NO_FIELDS, "reusing the connection to %s",
                         s->relay);
                if (s->features.pipelining) {
                        /* The transaction starts from the event loop, with
                         * the RSET in front (session_dispatch()). */
                        s->state = SESSION_REUSE;
                        session_set_timeout(s, s->cs->mail_timeout_usec);
                        session_update_events(s);
                        return 1;
                }
                s->state = SESSION_RSET;
                if (session_printf(s, "RSET") < 0 || session_send(s) < 0) {
                        /* Freed from the next loop iteration's point of view:
                         * the job resolves as if nothing was cached. */
                        s->job = NULL;
                        j->session = NULL;
                        session_close(s);
                        smtp_session_free(s);
                        return 0;
                }
                session_set_timeout(s, s->cs->mail_timeout_usec);
                session_update_events(s);
                return 1;
        }
        return 0;
}

void smtp_session_cache_flush(Deliver *d) {
        while (d->cache) {
                SmtpSession *s = d->cache;
                (void) session_printf(s, "QUIT");
                (void) session_send(s);
                session_close(s);
                smtp_session_free(s);
        }
}
