/* smtpd-check.c: the glue between SMTP sessions and the access policy
 * (see smtpd-check.h): one RestrictEngine per loaded Config, one c-ares
 * resolver and one anvil mapping per process, and per session a
 * RestrictSession cache plus the evaluation in progress. Also the old
 * entry points smtpd_client_in_mynetworks() and smtpd_check_recipient()
 * (smtpd.h), now answered by the engine.
 *
 * Limits: the connection count and rate are checked when a session
 * starts, the message rate at MAIL, the recipient rate at RCPT, the new
 * TLS session rate at STARTTLS (454, the session goes on in plaintext) and
 * at connect in wrapper mode (the connection is dropped), the AUTH rate at
 * AUTH; clients in smtpd_client_event_limit_exceptions are exempt.
 * Replies and warnings follow Postfix's smtpd. When the anvil table cannot
 * be opened the limits are off (with one warning), mail keeps flowing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "bus-names.h"
#include "log.h"
#include "smtpd-check.h"

/* Process-wide: postern-smtpd runs one Smtpd per process, and every
 * session of it shares the engine, resolver and anvil mapping. */
static struct {
        Config *config;
        RestrictEngine *engine;
        sd_event *event;
        DnsResolver *dns;
        Anvil *anvil;
        bool anvil_tried;
} checker;

struct SmtpdCheck {
        Smtpd *smtpd;
        RestrictEngine *engine;
        RestrictSession *sess;
        RestrictEval *eval;
        InetAddr addr;
        bool have_addr;
        bool counted;           /* anvil_connect() succeeded */
        bool exempt;
        char *client;
        char *addr_str;
        SmtpdCheckDone done;
        void *userdata;
        char *restriction;      /* the step that rejected in the last evaluation */
};

static RestrictEngine *checker_engine(Smtpd *d) {
        if (checker.engine && checker.config == d->config)
                return checker.engine;
        {
                RestrictEngine *en = NULL;
                Diag diags = {0};
                int r = restrict_engine_new(d->config, &diags, &en);
                log_diags(&diags, true);
                if (r < 0) {
                        log_oom();
                        return checker.engine;  /* keep the old rules */
                }
                if (!restrict_engine_ok(en))
                        log_error("The access policy has errors: RCPT TO is answered with \"451 "
                                  "4.3.5 Server configuration error\" until they are fixed "
                                  "(see posternctl check)");
                restrict_engine_unref(checker.engine);
                conf_unref(checker.config);
                checker.engine = en;
                checker.config = conf_ref(d->config);
        }
        return checker.engine;
}

static DnsResolver *checker_dns(Smtpd *d) {
        if (checker.dns && checker.event == d->event)
                return checker.dns;
        if (!d->event)
                return NULL;
        checker.dns = dns_resolver_free(checker.dns);
        {
                _cleanup_free_ char *servers = NULL;
                int r;
                servers = strv_join((char **) conf_get_list(d->config, P_DNS_RESOLVER_SERVERS), ",");
                r = dns_resolver_new(d->event, servers, 0, 0, &checker.dns);
                if (r < 0) {
                        log_warning_errno(r, "Cannot set up the DNS resolver: %m; DNS-based "
                                          "restrictions defer");
                        return NULL;
                }
                checker.event = d->event;
        }
        return checker.dns;
}

static Anvil *checker_anvil(void) {
        if (!checker.anvil && !checker.anvil_tried) {
                _cleanup_free_ char *path = strdup_printf("%s/anvil", postern_runtime_dir());
                int r = path ? anvil_open(path, &checker.anvil) : -ENOMEM;
                checker.anvil_tried = true;
                if (r < 0)
                        log_warning_errno(r, "Cannot open the client rate table %s: %m; "
                                          "per-client limits are off", strempty(path));
        }
        return checker.anvil;
}

void smtpd_check_shutdown(void) {
        checker.engine = restrict_engine_unref(checker.engine);
        checker.config = conf_unref(checker.config);
        checker.dns = dns_resolver_free(checker.dns);
        checker.anvil = anvil_close(checker.anvil);
        checker.event = NULL;
        checker.anvil_tried = false;
}

static uint64_t window_ms(SmtpdCheck *c) {
        uint64_t s = conf_get_time(restrict_engine_config(c->engine), P_ANVIL_RATE_TIME_UNIT);
        return (s ? s : 1) * 1000;
}

static void log_limit(SmtpdCheck *c, const char *what, const char *param, unsigned n) {
        log_mail(LOG_WARNING, MSGID_REJECT, NULL,
                 LOG_FIELDS("POSTERN_CLIENT", c->client, "POSTERN_LIMIT", param),
                 "%s limit exceeded: %u from %s for service %s (%s)", what, n, c->client,
                 c->smtpd->settings.service, param);
}

int smtpd_check_session_new(Smtpd *d, const InetAddr *client, const char *client_desc,
                            SmtpdCheck **ret, char **ret_reply) {
        SmtpdCheck *c;
        Anvil *anvil;
        Config *cfg;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->smtpd = d;
        c->engine = restrict_engine_ref(checker_engine(d));
        c->client = strdup(strempty(client_desc));
        if (!c->engine || !c->client || restrict_session_new(NULL, &c->sess) < 0) {
                smtpd_check_session_free(c);
                return -ENOMEM;
        }
        *ret = c;
        if (!client)
                return 1;
        c->addr = *client;
        c->have_addr = true;
        c->addr_str = inet_addr_to_string(client);
        r = restrict_engine_limit_exempt(c->engine, client);
        /* A failed exceptions table counts the client like any other. */
        c->exempt = r > 0;
        anvil = checker_anvil();
        if (!anvil || c->exempt)
                return 1;
        cfg = restrict_engine_config(c->engine);
        {
                unsigned count = 0, rate = 0;
                long long count_limit = conf_get_int(cfg, P_SMTPD_CLIENT_CONNECTION_COUNT_LIMIT);
                long long rate_limit = conf_get_int(cfg, P_SMTPD_CLIENT_CONNECTION_RATE_LIMIT);
                r = anvil_connect(anvil, client, window_ms(c), &count, &rate);
                if (r == -EUSERS && count_limit > 0) {
                        /* This client's connections in so many processes
                         * that this one cannot be recorded: refuse rather
                         * than let it bypass the count limit. */
                        log_limit(c, "Connection concurrency (client table full)",
                                  "smtpd_client_connection_count_limit", 0);
                        *ret_reply = strdup_printf("421 4.7.0 %s Error: too many connections from %s",
                                                   d->settings.myhostname, strempty(c->addr_str));
                        return *ret_reply ? 0 : -ENOMEM;
                }
                if (r < 0)
                        return 1;
                c->counted = true;
                if (count_limit > 0 && count > (unsigned long long) count_limit) {
                        log_limit(c, "Connection concurrency", "smtpd_client_connection_count_limit",
                                  count);
                        *ret_reply = strdup_printf("421 4.7.0 %s Error: too many connections from %s",
                                                   d->settings.myhostname, strempty(c->addr_str));
                        return *ret_reply ? 0 : -ENOMEM;
                }
                if (rate_limit > 0 && rate > (unsigned long long) rate_limit) {
                        log_limit(c, "Connection rate", "smtpd_client_connection_rate_limit", rate);
                        *ret_reply = strdup_printf("421 4.7.0 %s Error: too many connections from %s",
                                                   d->settings.myhostname, strempty(c->addr_str));
                        return *ret_reply ? 0 : -ENOMEM;
                }
        }
        return 1;
}

SmtpdCheck *smtpd_check_session_free(SmtpdCheck *c) {
        if (!c)
                return NULL;
        if (c->counted && checker.anvil)
                (void) anvil_disconnect(checker.anvil, &c->addr);
        restrict_eval_free(c->eval);
        restrict_session_free(c->sess);
        restrict_engine_unref(c->engine);
        free(c->client);
        free(c->addr_str);
        free(c->restriction);
        free(c);
        return NULL;
}

int smtpd_check_rate(SmtpdCheck *c, AnvilRate rate, char **ret_reply) {
        static const struct {
                ConfParam param;
                const char *name, *what, *reply;
        } limits[_ANVIL_RATE_MAX] = {
                [ANVIL_RATE_MESSAGE] = {P_SMTPD_CLIENT_MESSAGE_RATE_LIMIT,
                                        "smtpd_client_message_rate_limit",
                                        "Message delivery request rate",
                                        "450 4.7.1 Error: too much mail from "},
                [ANVIL_RATE_RECIPIENT] = {P_SMTPD_CLIENT_RECIPIENT_RATE_LIMIT,
                                          "smtpd_client_recipient_rate_limit",
                                          "Recipient address rate",
                                          "450 4.7.1 Error: too many recipients from "},
                [ANVIL_RATE_NEW_TLS] = {P_SMTPD_CLIENT_NEW_TLS_SESSION_RATE_LIMIT,
                                        "smtpd_client_new_tls_session_rate_limit",
                                        "New TLS session rate",
                                        "454 4.7.0 Error: too many new TLS sessions from "},
                [ANVIL_RATE_AUTH] = {P_SMTPD_CLIENT_AUTH_RATE_LIMIT,
                                     "smtpd_client_auth_rate_limit", "AUTH command rate",
                                     "450 4.7.1 Error: too many AUTH commands from "},
        };
        unsigned n = 0;
        long long limit;
        int r;

        if (!c || !c->have_addr || c->exempt || rate <= ANVIL_RATE_CONNECT ||
            rate >= _ANVIL_RATE_MAX || !checker_anvil())
                return 1;
        limit = conf_get_int(restrict_engine_config(c->engine), limits[rate].param);
        if (limit <= 0)
                return 1;
        r = anvil_rate(checker.anvil, &c->addr, rate, 1, window_ms(c), &n);
        if (r < 0 || n <= (unsigned long long) limit)
                return 1;
        log_limit(c, limits[rate].what, limits[rate].name, n);
        *ret_reply = strdup_printf("%s%s", limits[rate].reply, strempty(c->addr_str));
        return *ret_reply ? 0 : -ENOMEM;
}

static void on_eval_done(RestrictEval *e, void *userdata) {
        SmtpdCheck *c = userdata;
        if (c->done)
                c->done(c->userdata);
}

/* Remembers the restriction that rejected, for the reject log line. */
static void on_eval_trace(void *userdata, const char *list, const char *step,
                          const char *outcome) {
        SmtpdCheck *c = userdata;
        if (!startswith(outcome, "reject:"))
                return;
        free(c->restriction);
        c->restriction = strdup(*step ? step : list);
}

int smtpd_check_start(SmtpdCheck *c, RestrictStage stage, const RestrictRequest *req,
                      SmtpdCheckDone done, void *userdata) {
        c->eval = restrict_eval_free(c->eval);
        free(c->restriction);
        c->restriction = NULL;
        c->done = done;
        c->userdata = userdata;
        return restrict_eval_start(c->engine, c->sess, c->smtpd->event, checker_dns(c->smtpd),
                                   stage, req, on_eval_trace, on_eval_done, c, &c->eval);
}

const char *smtpd_check_restriction(SmtpdCheck *c) {
        return c ? c->restriction : NULL;
}

const RestrictResult *smtpd_check_result(SmtpdCheck *c) {
        return restrict_eval_result(c->eval);
}

void smtpd_check_release(SmtpdCheck *c) {
        c->eval = restrict_eval_free(c->eval);
}

bool smtpd_check_stage_empty(SmtpdCheck *c, RestrictStage stage) {
        return restrict_engine_stage_empty(c->engine, stage);
}

bool smtpd_check_helo_required(SmtpdCheck *c) {
        return conf_get_bool(restrict_engine_config(c->engine), P_SMTPD_HELO_REQUIRED);
}

bool smtpd_client_in_mynetworks(Smtpd *d, const InetAddr *client) {
        RestrictEngine *en = checker_engine(d);
        return en && client && restrict_engine_mynetworks(en, client) > 0;
}

/* The pre-engine relay check, kept for callers outside the session code:
 * a synchronous RCPT-stage evaluation without DNS. */
int smtpd_check_recipient(Smtpd *d, const InetAddr *client, const char *sasl_username,
                          const char *rcpt, char **ret_reply) {
        _cleanup_(restrict_session_freep) RestrictSession *sess = NULL;
        _cleanup_(restrict_eval_freep) RestrictEval *e = NULL;
        RestrictEngine *en = checker_engine(d);
        const RestrictResult *res;
        RestrictRequest req = {
                .service = d->settings.service,
                .client_addr = client,
                .sender = "",
                .recipient = rcpt,
                .sasl_username = sasl_username,
        };
        int r;

        if (!en)
                return -ENOMEM;
        r = restrict_session_new(NULL, &sess);
        if (r < 0)
                return r;
        r = restrict_eval_start(en, sess, NULL, NULL, RESTRICT_STAGE_RCPT, &req, NULL, NULL, NULL,
                                &e);
        if (r < 0)
                return r;
        res = restrict_eval_result(e);
        if (!res->reject)
                return 1;
        *ret_reply = strdup(res->reply);
        return *ret_reply ? 0 : -ENOMEM;
}
