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
 * be opened the limits are off (with one warning), mail keeps flowing.
 *
 * The client host name lookup (smtpd_peer_lookup_start()) runs on the same
 * resolver before the session's check state exists; its result becomes
 * the names of the RestrictSession, so the restrictions never look them
 * up a second time. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "inet.h"
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
        char *name;             /* verified client name, NULL when unknown */
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
                            const RestrictClientNames *names, SmtpdCheck **ret,
                            char **ret_reply) {
        static const RestrictClientNames unknown = {
                .name = "unknown",
                .name_status = RESTRICT_NAME_PERM,
                .reverse_name = "unknown",
                .reverse_status = RESTRICT_NAME_PERM,
        };
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
        if (names && names->name && names->name_status == RESTRICT_NAME_OK &&
            !streq(names->name, "unknown") && !(c->name = strdup(names->name))) {
                smtpd_check_session_free(c);
                return -ENOMEM;
        }
        if (!c->engine || !c->client || restrict_session_new(NULL, &c->sess) < 0 ||
            restrict_session_set_names(c->sess, names ? names : &unknown) < 0) {
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
        free(c->name);
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

bool smtpd_check_sasl_exception(SmtpdCheck *c) {
        int r;

        if (!c || !c->have_addr)
                return false;
        r = restrict_engine_sasl_exception(c->engine, &c->addr, c->name);
        if (r < 0)
                log_warning("smtpd_sasl_exceptions_networks: table lookup failed for %s; "
                            "offering AUTH", c->client);
        return r > 0;
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

/* ---- the client's host name ---- */

struct SmtpdPeerLookup {
        Smtpd *smtpd;
        InetAddr addr;
        char *addr_str;
        DnsResolver *dns;
        DnsQuery *query;
        sd_event_source *timer;
        sd_event_source *defer;         /* delivers the result from the loop */
        bool finished;
        char *name;                     /* the PTR name, once known */
        RestrictNameStatus name_status, reverse_status;
        SmtpdPeerLookupDone done;
        void *userdata;
};

SmtpdPeerLookup *smtpd_peer_lookup_free(SmtpdPeerLookup *l) {
        if (!l)
                return NULL;
        dns_query_cancel(l->query);
        sd_event_source_disable_unref(l->timer);
        sd_event_source_disable_unref(l->defer);
        free(l->addr_str);
        free(l->name);
        free(l);
        return NULL;
}

static int on_peer_defer(sd_event_source *es, void *userdata) {
        SmtpdPeerLookup *l = userdata;
        bool verified = l->name_status == RESTRICT_NAME_OK,
             have_reverse = l->reverse_status == RESTRICT_NAME_OK;
        RestrictClientNames n = {
                .name = verified ? l->name : "unknown",
                .name_status = l->name_status,
                .reverse_name = have_reverse ? l->name : "unknown",
                .reverse_status = l->reverse_status,
        };
        l->done(l->userdata, &n);
        smtpd_peer_lookup_free(l);
        return 0;
}

/* Ends the lookup with the statuses set; the result goes out from the
 * loop. */
static void peer_finish(SmtpdPeerLookup *l) {
        l->finished = true;
        l->query = dns_query_cancel(l->query);
        (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(l->defer, SD_EVENT_ONESHOT);
}

static bool peer_addr_listed(SmtpdPeerLookup *l, const InetAddr *addrs, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (addrs[i].family == l->addr.family &&
                    memcmp(addrs[i].bytes, l->addr.bytes, inet_family_bits(l->addr.family) / 8) == 0)
                        return true;
        return false;
}

/* The forward lookup's verdict (Postfix's REJECT_PEER_NAME). */
static void peer_forward_done(SmtpdPeerLookup *l, bool listed, RestrictNameStatus fail,
                              const char *why) {
        if (listed)
                l->name_status = RESTRICT_NAME_OK;
        else {
                l->name_status = fail;
                if (why)
                        log_warning("hostname %s does not resolve to address %s: %s", l->name,
                                    l->addr_str, why);
                else
                        log_warning("hostname %s does not resolve to address %s", l->name,
                                    l->addr_str);
        }
        peer_finish(l);
}

static void on_peer_forward(DnsQuery *q, int r, const DnsAnswer *answer, void *userdata) {
        SmtpdPeerLookup *l = userdata;
        _cleanup_free_ InetAddr *addrs = NULL;
        size_t n = 0;

        l->query = NULL;
        if (l->finished)
                return;
        if (r < 0) {
                peer_forward_done(l, false,
                                  r == -EAGAIN ? RESTRICT_NAME_TEMP : RESTRICT_NAME_FORGED,
                                  answer && answer->error ? answer->error : "lookup failed");
                return;
        }
        if (r == 0) {
                peer_forward_done(l, false, RESTRICT_NAME_FORGED,
                                  answer && answer->nxdomain ? "Name or service not known"
                                                             : "No address associated with hostname");
                return;
        }
        addrs = calloc(answer->n_records, sizeof(InetAddr));
        if (!addrs) {
                log_oom();
                peer_forward_done(l, false, RESTRICT_NAME_TEMP, "out of memory");
                return;
        }
        for (size_t i = 0; i < answer->n_records; i++)
                if (answer->records[i].type == DNS_TYPE_A || answer->records[i].type == DNS_TYPE_AAAA)
                        addrs[n++] = answer->records[i].addr;
        peer_forward_done(l, peer_addr_listed(l, addrs, n), RESTRICT_NAME_FORGED, NULL);
}

/* The reverse name is known (owned by l->name): check it, then look up
 * its addresses, the hosts file first. */
static void peer_have_reverse(SmtpdPeerLookup *l) {
        _cleanup_free_ InetAddr *addrs = NULL;
        size_t len = strlen(l->name);
        InetAddr a;
        int r;

        /* Postfix's sockaddr_to_hostname(): numeric or malformed names are
         * no names at all. */
        if (len > 1 && l->name[len - 1] == '.')
                l->name[--len] = 0;
        if (inet_addr_parse(l->name, &a) == 0) {
                log_warning("numeric hostname: %s", l->name);
                l->name_status = l->reverse_status = RESTRICT_NAME_PERM;
                peer_finish(l);
                return;
        }
        if (len == 0 || len > 255 || l->name[0] == '[' ||
            !addr_domain_valid(l->name, len, false)) {
                _cleanup_free_ char *esc = str_escape_log(l->name, 300);
                log_warning("malformed hostname for address %s: %s", l->addr_str, strempty(esc));
                l->name_status = l->reverse_status = RESTRICT_NAME_PERM;
                peer_finish(l);
                return;
        }
        l->reverse_status = RESTRICT_NAME_OK;
        r = dns_hosts_addrs(NULL, l->name, l->addr.family, &addrs);
        if (r < 0) {
                peer_forward_done(l, false, RESTRICT_NAME_TEMP, "out of memory");
                return;
        }
        if (r > 0) {
                peer_forward_done(l, peer_addr_listed(l, addrs, (size_t) r), RESTRICT_NAME_FORGED,
                                  NULL);
                return;
        }
        if (!l->dns) {
                peer_forward_done(l, false, RESTRICT_NAME_TEMP, "no DNS resolver");
                return;
        }
        r = dns_query(l->dns, l->name, l->addr.family == AF_INET6 ? DNS_TYPE_AAAA : DNS_TYPE_A,
                      on_peer_forward, l, &l->query);
        if (r < 0)
                peer_forward_done(l, false,
                                  r == -ENOMEM ? RESTRICT_NAME_TEMP : RESTRICT_NAME_FORGED,
                                  r == -ENOMEM ? "out of memory" : "Name or service not known");
}

static void on_peer_reverse(DnsQuery *q, int r, const DnsAnswer *answer, void *userdata) {
        SmtpdPeerLookup *l = userdata;

        l->query = NULL;
        if (l->finished)
                return;
        if (r <= 0) {
                /* NXDOMAIN or no PTR: for good; SERVFAIL, timeouts: for now. */
                l->name_status = l->reverse_status =
                        r < 0 && r != -EINVAL && r != -EBADMSG ? RESTRICT_NAME_TEMP
                                                               : RESTRICT_NAME_PERM;
                peer_finish(l);
                return;
        }
        for (size_t i = 0; i < answer->n_records; i++)
                if (answer->records[i].type == DNS_TYPE_PTR && !isempty(answer->records[i].name)) {
                        l->name = strdup(answer->records[i].name);
                        break;
                }
        if (!l->name) {
                l->name_status = l->reverse_status = RESTRICT_NAME_TEMP;
                peer_finish(l);
                return;
        }
        peer_have_reverse(l);
}

static int on_peer_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        SmtpdPeerLookup *l = userdata;

        if (l->finished)
                return 0;
        if (l->reverse_status == RESTRICT_NAME_OK)
                peer_forward_done(l, false, RESTRICT_NAME_TEMP, "Timeout while contacting DNS servers");
        else {
                l->name_status = l->reverse_status = RESTRICT_NAME_TEMP;
                peer_finish(l);
        }
        return 0;
}

int smtpd_peer_lookup_start(Smtpd *d, const InetAddr *client, SmtpdPeerLookupDone done,
                            void *userdata, SmtpdPeerLookup **ret, RestrictClientNames *ret_now) {
        SmtpdPeerLookup *l;
        int r;

        if (!client || !conf_get_bool(d->config, P_SMTPD_PEERNAME_LOOKUP) ||
            (client->family != AF_INET && client->family != AF_INET6)) {
                *ret_now = (RestrictClientNames) {
                        .name = "unknown",
                        .name_status = RESTRICT_NAME_PERM,
                        .reverse_name = "unknown",
                        .reverse_status = RESTRICT_NAME_PERM,
                };
                return 1;
        }
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->smtpd = d;
        l->addr = *client;
        l->done = done;
        l->userdata = userdata;
        l->name_status = l->reverse_status = RESTRICT_NAME_PERM;
        l->addr_str = inet_addr_to_string(client);
        if (!l->addr_str ||
            sd_event_add_defer(d->event, &l->defer, on_peer_defer, l) < 0 ||
            sd_event_source_set_enabled(l->defer, SD_EVENT_OFF) < 0 ||
            sd_event_add_time_relative(d->event, &l->timer, CLOCK_MONOTONIC,
                                       SMTPD_PEER_LOOKUP_TIMEOUT_USEC, 0, on_peer_timeout,
                                       l) < 0) {
                smtpd_peer_lookup_free(l);
                return -ENOMEM;
        }
        l->dns = checker_dns(d);
        *ret = l;

        r = dns_hosts_name(NULL, client, &l->name);
        if (r < 0) {
                l->name_status = l->reverse_status = RESTRICT_NAME_TEMP;
                peer_finish(l);
                return 0;
        }
        if (r > 0) {
                peer_have_reverse(l);
                return 0;
        }
        if (!l->dns) {
                l->name_status = l->reverse_status = RESTRICT_NAME_TEMP;
                peer_finish(l);
                return 0;
        }
        {
                _cleanup_free_ char *ptr = dns_reverse_name(client, NULL);
                r = ptr ? dns_query(l->dns, ptr, DNS_TYPE_PTR, on_peer_reverse, l, &l->query)
                        : -ENOMEM;
        }
        if (r < 0) {
                l->name_status = l->reverse_status = RESTRICT_NAME_TEMP;
                peer_finish(l);
        }
        return 0;
}
