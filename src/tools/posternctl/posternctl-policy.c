/* posternctl-policy.c: "posternctl policy explain" evaluates the configured
 * SMTP access policy for a hypothetical client without sending mail, with
 * the engine postern-smtpd runs (smtpd-restrict.c), and prints every step
 * and the verdict; and policy_check_relay(), the open-relay warnings of
 * "posternctl check".
 *
 * DNS-based restrictions are evaluated for real, with the resolver
 * postern-smtpd uses (dns_resolver_servers, else /etc/resolv.conf);
 * --no-dns reports them as "skipped (needs DNS)" instead, and
 * --client-name gives the client's host name without a PTR lookup. Policy
 * servers are asked as the SMTP server would ask them. */
#include <errno.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "conf.h"
#include "diag.h"
#include "dns.h"
#include "fileio.h"
#include "inet.h"
#include "postconf-lib.h"
#include "posternctl.h"
#include "smtpd-restrict.h"
#include "strutil.h"

typedef struct Explain {
        sd_event *event;
        bool json;
        size_t n_steps;
        char *stage;
} Explain;

static void on_trace(void *userdata, const char *list, const char *step, const char *outcome) {
        Explain *x = userdata;
        if (x->json) {
                fputs(x->n_steps ? ",\n    {\"stage\": " : "\n    {\"stage\": ", stdout);
                json_write_string(stdout, x->stage);
                fputs(", \"list\": ", stdout);
                json_write_string(stdout, list);
                fputs(", \"step\": ", stdout);
                json_write_string(stdout, step);
                fputs(", \"outcome\": ", stdout);
                json_write_string(stdout, outcome);
                fputs("}", stdout);
        } else if (*step)
                printf("%s: %s: %s\n", list, step, outcome);
        else
                printf("%s: %s\n", list, outcome);
        x->n_steps++;
}

static void on_done(RestrictEval *e, void *userdata) {
        Explain *x = userdata;
        (void) sd_event_exit(x->event, 0);
}

/* Runs one stage to its end, driving the loop while it waits. */
static int run_stage(RestrictEngine *en, RestrictSession *sess, sd_event *event,
                     DnsResolver *dns, RestrictStage stage, const RestrictRequest *req,
                     Explain *x, RestrictEval **ret) {
        RestrictEval *e = NULL;
        int r;

        r = restrict_eval_start(en, sess, event, dns, stage, req, on_trace, on_done, x, &e);
        if (r < 0)
                return r;
        if (r == 0) {
                r = sd_event_loop(event);
                if (r < 0) {
                        restrict_eval_free(e);
                        return r;
                }
        }
        *ret = e;
        return 0;
}

static void help(void) {
        printf("posternctl policy explain [OPTIONS]\n\n"
               "Evaluate the SMTP access policy (smtpd_*_restrictions, relay control,\n"
               "recipient validation) for a client without sending mail, step by step.\n\n"
               "  --client=IP          client address (required)\n"
               "  --client-name=NAME   client host name (default: looked up in DNS)\n"
               "  --helo=NAME          HELO/EHLO name\n"
               "  --from=ADDR          envelope sender (\"\" for the null sender)\n"
               "  --to=ADDR            recipient\n"
               "  --sasl=USER          the client authenticated as USER\n"
               "  --service=NAME       smtpd (default), submission or smtps\n"
               "  --tls                the session uses TLS\n"
               "  --no-dns             skip DNS-based restrictions\n"
               "  -c, --config-dir=DIR configuration directory\n"
               "  --json               machine-readable output\n");
}

static int policy_explain(int argc, char **argv) {
        enum { ARG_JSON = 0x100, ARG_HELP, ARG_CLIENT, ARG_CLIENT_NAME, ARG_HELO, ARG_FROM,
               ARG_TO, ARG_SASL, ARG_SERVICE, ARG_TLS, ARG_NO_DNS };
        static const struct option options[] = {
                {"config-dir", required_argument, NULL, 'c'},
                {"json", no_argument, NULL, ARG_JSON},
                {"help", no_argument, NULL, ARG_HELP},
                {"client", required_argument, NULL, ARG_CLIENT},
                {"client-name", required_argument, NULL, ARG_CLIENT_NAME},
                {"helo", required_argument, NULL, ARG_HELO},
                {"from", required_argument, NULL, ARG_FROM},
                {"to", required_argument, NULL, ARG_TO},
                {"sasl", required_argument, NULL, ARG_SASL},
                {"service", required_argument, NULL, ARG_SERVICE},
                {"tls", no_argument, NULL, ARG_TLS},
                {"no-dns", no_argument, NULL, ARG_NO_DNS},
                {},
        };
        _cleanup_(conf_unrefp) Config *c = NULL;
        _cleanup_(restrict_engine_unrefp) RestrictEngine *en = NULL;
        _cleanup_(restrict_session_freep) RestrictSession *sess = NULL;
        _cleanup_(dns_resolver_freep) DnsResolver *dns = NULL;
        sd_event *event = NULL;
        const char *dir = NULL, *client = NULL, *client_name = NULL, *helo = NULL, *from = NULL,
                   *to = NULL, *sasl = NULL, *service = "smtpd";
        bool tls = false, no_dns = false;
        RestrictEval *e = NULL;
        RestrictRequest req;
        InetAddr addr;
        Explain x = {0};
        Diag diags = {0};
        const char *verdict = "accept", *reply = NULL;
        _cleanup_free_ char *reply_copy = NULL;
        int opt, r;

        optind = 0;
        while ((opt = getopt_long(argc, argv, "c:", options, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        dir = optarg;
                        break;
                case ARG_JSON:
                        x.json = true;
                        break;
                case ARG_HELP:
                        help();
                        return 0;
                case ARG_CLIENT:
                        client = optarg;
                        break;
                case ARG_CLIENT_NAME:
                        client_name = optarg;
                        break;
                case ARG_HELO:
                        helo = optarg;
                        break;
                case ARG_FROM:
                        from = optarg;
                        break;
                case ARG_TO:
                        to = optarg;
                        break;
                case ARG_SASL:
                        sasl = optarg;
                        break;
                case ARG_SERVICE:
                        service = optarg;
                        break;
                case ARG_TLS:
                        tls = true;
                        break;
                case ARG_NO_DNS:
                        no_dns = true;
                        break;
                default:
                        fprintf(stderr, "posternctl: error: see posternctl policy explain --help\n");
                        return 1;
                }
        }
        if (optind < argc || !client) {
                fprintf(stderr, "posternctl: error: policy explain needs --client=IP and no "
                        "other arguments\n");
                return 1;
        }
        if (inet_addr_parse_bracketed(client, &addr) < 0) {
                fprintf(stderr, "posternctl: error: --client: \"%s\" is not an IP address\n",
                        client);
                return 1;
        }
        if (!conf_service_type(service)) {
                fprintf(stderr, "posternctl: error: --service: unknown service \"%s\"\n", service);
                return 1;
        }
        r = conf_load(dir, service, &diags, &c);
        if (r < 0) {
                diag_print(&diags, stderr, "posternctl");
                diag_done(&diags);
                fprintf(stderr, "posternctl: error: cannot load the configuration: %s\n",
                        strerror(-r));
                return 1;
        }
        diag_done(&diags);
        r = restrict_engine_new(c, &diags, &en);
        if (r < 0) {
                diag_done(&diags);
                return 1;
        }
        diag_print(&diags, stderr, "posternctl");
        diag_done(&diags);
        if (restrict_session_new(client_name, &sess) < 0 || sd_event_new(&event) < 0)
                return 1;
        x.event = event;
        if (!no_dns) {
                _cleanup_free_ char *servers = strv_join((char **) conf_get_list(c, P_DNS_RESOLVER_SERVERS), ",");
                r = dns_resolver_new(event, servers, 0, 0, &dns);
                if (r < 0)
                        fprintf(stderr, "posternctl: warning: no DNS resolver (%s); DNS-based "
                                "restrictions are skipped\n", strerror(-r));
        }

        req = (RestrictRequest) {
                .service = service,
                .client_addr = &addr,
                .helo = helo,
                .sasl_username = sasl,
                .sasl_method = sasl ? "PLAIN" : NULL,
                .protocol = "ESMTP",
                .tls = tls,
        };
        if (x.json)
                fputs("{\"steps\": [", stdout);
        {
                struct {
                        RestrictStage stage;
                        const char *name;
                        bool run;
                } stages[] = {
                        {RESTRICT_STAGE_CONNECT, "CONNECT", true},
                        {RESTRICT_STAGE_HELO, "HELO", helo != NULL},
                        {RESTRICT_STAGE_MAIL, "MAIL", from != NULL},
                        {RESTRICT_STAGE_RCPT, "RCPT", to != NULL},
                        {RESTRICT_STAGE_DATA, "DATA", to != NULL},
                };
                for (size_t i = 0; i < ELEMENTSOF(stages); i++) {
                        const RestrictResult *res;
                        if (!stages[i].run)
                                continue;
                        if (stages[i].stage >= RESTRICT_STAGE_MAIL)
                                req.sender = from;
                        if (stages[i].stage == RESTRICT_STAGE_RCPT)
                                req.recipient = to;
                        if (stages[i].stage == RESTRICT_STAGE_DATA) {
                                req.recipient = NULL;
                                req.rcpt_count = 1;
                        }
                        x.stage = (char *) stages[i].name;
                        r = run_stage(en, sess, event, dns, stages[i].stage, &req, &x, &e);
                        if (r < 0) {
                                fprintf(stderr, "posternctl: error: %s\n", strerror(-r));
                                sd_event_unref(event);
                                return 1;
                        }
                        res = restrict_eval_result(e);
                        for (size_t n = 0; n < res->n_notes; n++)
                                on_trace(&x, stages[i].name, res->notes[n].action,
                                         res->notes[n].text);
                        if (res->reject) {
                                verdict = "reject";
                                reply_copy = strdup(strempty(res->reply));
                                reply = reply_copy;
                        } else if (res->discard)
                                verdict = "discard";
                        else if (res->hold && !streq(verdict, "discard"))
                                verdict = "hold";
                        e = restrict_eval_free(e);
                        if (reply)
                                break;
                }
        }
        if (x.json) {
                fputs(x.n_steps ? "\n  ],\n  \"verdict\": " : "],\n  \"verdict\": ", stdout);
                json_write_string(stdout, verdict);
                fputs(", \"reply\": ", stdout);
                if (reply)
                        json_write_string(stdout, reply);
                else
                        fputs("null", stdout);
                fputs("}\n", stdout);
        } else if (reply)
                printf("verdict: %s (%s)\n", verdict, reply);
        else
                printf("verdict: %s\n", verdict);
        dns = dns_resolver_free(dns);
        sd_event_unref(event);
        return 0;
}

int verb_policy(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                help();
                return argc < 2 ? 1 : 0;
        }
        if (streq(argv[1], "explain"))
                return policy_explain(argc - 1, argv + 1);
        fprintf(stderr, "posternctl: error: unknown policy command \"%s\"; see posternctl policy "
                "--help\n", argv[1]);
        return 1;
}

/* ---- posternctl check: open relay warnings ---- */

typedef struct Problem {
        char *file;
        unsigned line;
        char *text;
        char **services;
        DiagLevel level;
        bool policy;            /* a problem of the restriction engine, not an open relay */
} Problem;

static int problem_add_full(Problem **list, size_t *n, const char *file, unsigned line,
                            const char *text, const char *service, DiagLevel level, bool policy) {
        Problem *p;
        for (size_t i = 0; i < *n; i++)
                if (streq_ptr((*list)[i].file, file) && (*list)[i].line == line &&
                    streq((*list)[i].text, text))
                        return strv_extend(&(*list)[i].services, service);
        p = realloc(*list, (*n + 1) * sizeof(Problem));
        if (!p)
                return -ENOMEM;
        *list = p;
        p[*n] = (Problem) {.file = file ? strdup(file) : NULL, .line = line,
                           .text = strdup(text), .level = level, .policy = policy};
        if (!p[*n].text || strv_extend(&p[*n].services, service) < 0)
                return -ENOMEM;
        (*n)++;
        return 0;
}

static int problem_add(Problem **list, size_t *n, const char *file, unsigned line,
                       const char *text, const char *service) {
        return problem_add_full(list, n, file, line, text, service, DIAG_WARNING, false);
}

/* Where name was set (file, line), or main.cf without a line. */
static void locate(Config *c, const char *main_path, const char *name, const char **ret_file,
                   unsigned *ret_line) {
        if (conf_get_location(c, name, ret_file, ret_line) <= 0) {
                *ret_file = main_path;
                *ret_line = 0;
        }
}

static int check_service(Config *c, const char *service, const char *main_path, Problem **list,
                         size_t *n) {
        _cleanup_(restrict_engine_unrefp) RestrictEngine *en = NULL;
        _cleanup_strv_free_ char **problems = NULL;
        Diag ediags = {0};
        const char *file;
        unsigned line;
        int r;

        r = restrict_engine_new(c, &ediags, &en);
        /* The engine's own problems (unknown restrictions, bad mynetworks
         * entries, ...), located at the parameter their text names. Those
         * of lookup tables that do not open are left to the table checks
         * of posternctl check, which name the table. */
        for (size_t i = 0; r >= 0 && i < ediags.n; i++) {
                const DiagEntry *d = &ediags.entries[i];
                const char *text = strempty(d->text);
                _cleanup_free_ char *param = strndup(text, strcspn(text, ": "));
                if (!param) {
                        r = -ENOMEM;
                        break;
                }
                if (conf_param_lookup(param) < 0 &&
                    !strv_contains(conf_get_list(c, P_SMTPD_RESTRICTION_CLASSES), param))
                        continue;
                if (d->file) {
                        file = d->file;
                        line = d->line;
                } else
                        locate(c, main_path, param, &file, &line);
                r = problem_add_full(list, n, file, line, text, service, d->level, true);
        }
        diag_done(&ediags);
        if (r < 0)
                return r;
        r = restrict_engine_relay_problems(en, &problems);
        if (r < 0)
                return r;
        STRV_FOREACH(p, problems) {
                const char *param = strstr(*p, "smtpd_recipient_restrictions") == *p
                                            ? "smtpd_recipient_restrictions"
                                            : "smtpd_relay_restrictions";
                locate(c, main_path, param, &file, &line);
                if (problem_add(list, n, file, line, *p, service) < 0)
                        return -ENOMEM;
        }
        /* Networks that are everyone. */
        {
                bool uses_mynetworks = false;
                static const ConfParam lists[] = {P_SMTPD_RELAY_RESTRICTIONS,
                                                  P_SMTPD_RECIPIENT_RESTRICTIONS};
                for (size_t i = 0; i < ELEMENTSOF(lists); i++)
                        if (strv_contains_case(conf_get_list(c, lists[i]), "permit_mynetworks"))
                                uses_mynetworks = true;
                STRV_FOREACH(m, conf_get_list(c, P_MYNETWORKS)) {
                        InetPrefix pfx;
                        InetPrefixError pe;
                        _cleanup_free_ char *t = NULL;
                        if (inet_prefix_parse(*m, true, &pfx, &pe) < 0)
                                continue;
                        if (pfx.prefixlen >= (pfx.addr.family == AF_INET ? 8u : 16u))
                                continue;
                        t = strdup_printf("mynetworks: \"%s\" is %s: with permit_mynetworks "
                                          "almost anyone can relay", *m,
                                          pfx.prefixlen == 0 ? "the whole Internet"
                                                             : "an over-broad network");
                        locate(c, main_path, "mynetworks", &file, &line);
                        if (!t || problem_add(list, n, file, line, t, service) < 0)
                                return -ENOMEM;
                }
                ConfSource src = CONF_SOURCE_DEFAULT;
                (void) conf_get_raw(c, "mynetworks", &src);
                if (uses_mynetworks && src == CONF_SOURCE_DEFAULT &&
                    strcaseeq(strempty(conf_get_str(c, P_MYNETWORKS_STYLE)), "class")) {
                        locate(c, main_path, "mynetworks_style", &file, &line);
                        if (problem_add(list, n, file, line,
                                        "mynetworks_style = class: permit_mynetworks trusts "
                                        "whole class A/B/C networks around this host's addresses; "
                                        "set mynetworks explicitly", service) < 0)
                                return -ENOMEM;
                }
        }
        /* relay_domains that match everything. */
        STRV_FOREACH(d, conf_get_list(c, P_RELAY_DOMAINS)) {
                if (streq(*d, "*") || streq(*d, ".") || startswith(*d, "static:") ||
                    (strchr(*d, '*') && !strchr(*d, ':'))) {
                        _cleanup_free_ char *t = strdup_printf(
                                "relay_domains: \"%s\" matches every domain: anyone can relay",
                                *d);
                        locate(c, main_path, "relay_domains", &file, &line);
                        if (!t || problem_add(list, n, file, line, t, service) < 0)
                                return -ENOMEM;
                }
        }
        return 0;
}

int policy_check_relay(const char *dir, Config *main_config, Diag *diags) {
        static const char *const services[] = {"smtpd", "submission", "smtps"};
        _cleanup_free_ char *main_path = path_join(dir, "main.cf");
        Problem *list = NULL;
        size_t n = 0;
        int r = 0;

        if (!main_path)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(services) && r >= 0; i++) {
                _cleanup_(conf_unrefp) Config *sc = NULL;
                Diag ignore = {0};
                /* Load problems were reported by the caller's conf_load(). */
                if (conf_load(dir, services[i], &ignore, &sc) < 0) {
                        diag_done(&ignore);
                        continue;
                }
                diag_done(&ignore);
                r = check_service(sc, services[i], main_path, &list, &n);
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *svc = strv_join(list[i].services, ", ");
                diag_add(diags, list[i].level, list[i].file, list[i].line, "%s%s (service%s %s)",
                         list[i].policy ? "" : "open relay: ", list[i].text,
                         strv_length(list[i].services) > 1 ? "s" : "", strempty(svc));
                free(list[i].file);
                free(list[i].text);
                strv_free(list[i].services);
        }
        free(list);
        (void) main_config;
        return r;
}
