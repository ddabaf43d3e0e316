/* deliver-remote.c: main() of postern-deliver-remote, the SMTP and LMTP
 * client. Loads main.cf (plus services.d/deliver-remote.cf), resolves the
 * smtp_* and lmtp_* settings, builds the TLS client contexts and the DNS
 * resolver, takes its AF_UNIX socket from systemd (postern-deliver-remote.socket,
 * $POSTERN_RUNTIME_DIR/deliver-remote), serves org.postern.Delivery1 on every
 * connection and exits after max_idle without deliveries. Jobs are in
 * deliver-remote-job.c, sessions in smtp-client.c, the bus in
 * deliver-remote-bus.c; see postern-deliver-remote(8). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "bus-names.h"
#include "deliver-remote.h"
#include "log.h"
#include "smtp-sasl.h"

#define SERVICE_NAME "deliver-remote"

static const char *arg_config_dir;
/* Set by a reload that loaded: exit once the deliveries in progress are
 * done. Process-wide like the signal it comes from (one Deliver per
 * process). */
static bool reload_exit;

static void client_settings_done(ClientSettings *c) {
        free(c->helo_name);
        free(c->tls_servername);
        strv_free(c->tls_verify_match);
        strv_free(c->tls_secure_match);
        free(c->tls_ciphers);
        free(c->tls_mandatory_ciphers);
        free(c->tls_key_credential);
        map_list_free(c->tls_policy);
        free(c->tls_policy_error);
        map_list_free(c->sasl_passwords);
        free(c->sasl_passwords_error);
        strv_free(c->sasl_mech_filter);
        if (c->ctx_opportunistic)
                SSL_CTX_free(c->ctx_opportunistic);
        if (c->ctx_mandatory)
                SSL_CTX_free(c->ctx_mandatory);
        *c = (ClientSettings) {0};
}

static void settings_done(DeliverSettings *s) {
        free(s->myhostname);
        free(s->queue_directory);
        free(s->relayhost);
        free(s->dns_servers);
        free(s->local_addrs);
        client_settings_done(&s->smtp);
        client_settings_done(&s->lmtp);
        *s = (DeliverSettings) {0};
}

static uint64_t usec(Config *c, ConfParam p) {
        return conf_get_time(c, p) * 1000000ULL;
}

static int strv_dup(char * const *l, char ***ret) {
        char **c = NULL;
        STRV_FOREACH(i, l)
                if (strv_extend(&c, *i) < 0) {
                        strv_free(c);
                        return -ENOMEM;
                }
        *ret = c;
        return 0;
}

static int local_addr_add(DeliverSettings *s, const InetAddr *a) {
        InetAddr *n = reallocarray(s->local_addrs, s->n_local_addrs + 1, sizeof(InetAddr));
        if (!n)
                return -ENOMEM;
        s->local_addrs = n;
        s->local_addrs[s->n_local_addrs++] = *a;
        return 0;
}

/* inet_interfaces and proxy_interfaces as addresses, for "loops back to
 * myself": "all" means every address of this host (its interfaces). */
static int load_local_addrs(Config *c, DeliverSettings *s, Diag *diags) {
        ConfParam params[] = {P_INET_INTERFACES, P_PROXY_INTERFACES};
        int r;

        for (size_t p = 0; p < ELEMENTSOF(params); p++)
                STRV_FOREACH(i, conf_get_list(c, params[p])) {
                        InetAddr a;
                        if (strcaseeq(*i, "all")) {
                                struct ifaddrs *ifa = NULL;
                                if (getifaddrs(&ifa) < 0)
                                        return -errno;
                                for (struct ifaddrs *f = ifa; f; f = f->ifa_next) {
                                        if (!f->ifa_addr)
                                                continue;
                                        a = (InetAddr) {.family = f->ifa_addr->sa_family};
                                        if (a.family == AF_INET)
                                                memcpy(a.bytes, &((struct sockaddr_in *) f->ifa_addr)->sin_addr, 4);
                                        else if (a.family == AF_INET6)
                                                memcpy(a.bytes, &((struct sockaddr_in6 *) f->ifa_addr)->sin6_addr, 16);
                                        else
                                                continue;
                                        if ((r = local_addr_add(s, &a)) < 0) {
                                                freeifaddrs(ifa);
                                                return r;
                                        }
                                }
                                freeifaddrs(ifa);
                        } else if (strcaseeq(*i, "loopback-only") || strcaseeq(*i, "localhost")) {
                                (void) inet_addr_parse("127.0.0.1", &a);
                                if ((r = local_addr_add(s, &a)) < 0)
                                        return r;
                                (void) inet_addr_parse("::1", &a);
                                if ((r = local_addr_add(s, &a)) < 0)
                                        return r;
                        } else if (inet_addr_parse_bracketed(*i, &a) == 0) {
                                if ((r = local_addr_add(s, &a)) < 0)
                                        return r;
                        } else
                                diag_warning(diags, NULL, 0, "%s: ignoring \"%s\": not an address",
                                             conf_params[params[p]].name, *i);
                }
        return 0;
}

static int load_tls(Config *c, ClientSettings *cs, bool lmtp, bool dnssec, Diag *diags) {
        ConfParam p_level = lmtp ? P_LMTP_TLS_SECURITY_LEVEL : P_SMTP_TLS_SECURITY_LEVEL;
        ConfParam p_protocols = lmtp ? P_LMTP_TLS_PROTOCOLS : P_SMTP_TLS_PROTOCOLS;
        ConfParam p_mprotocols = lmtp ? P_LMTP_TLS_MANDATORY_PROTOCOLS : P_SMTP_TLS_MANDATORY_PROTOCOLS;
        ConfParam p_ciphers = lmtp ? P_LMTP_TLS_CIPHERS : P_SMTP_TLS_CIPHERS;
        ConfParam p_mciphers = lmtp ? P_LMTP_TLS_MANDATORY_CIPHERS : P_SMTP_TLS_MANDATORY_CIPHERS;
        ConfParam p_wrapper = lmtp ? P_LMTP_TLS_WRAPPERMODE : P_SMTP_TLS_WRAPPERMODE;
        ConfParam p_policy = lmtp ? P_LMTP_TLS_POLICY_MAPS : P_SMTP_TLS_POLICY_MAPS;
        const char *level = conf_get_str(c, p_level), *bad = NULL;
        char * const *policy_specs;
        unsigned protocols, mprotocols;
        TlsCipherGrade grade;
        _cleanup_free_ char *err = NULL;
        int r;

        if (isempty(level)) {
                /* Postfix's obsolete switches, used only without a level. */
                if (!lmtp && conf_get_bool(c, P_SMTP_ENFORCE_TLS))
                        level = "verify";
                else if (!lmtp && conf_get_bool(c, P_SMTP_USE_TLS))
                        level = "may";
                else
                        level = "none";
        }
        r = tls_level_parse(level, &cs->tls_level);
        if (r == -EOPNOTSUPP) {
                diag_error(diags, NULL, 0, "%s = %s: not supported by postern; use dane, verify or "
                           "secure", conf_params[p_level].name, level);
                return -EINVAL;
        }
        if (r < 0) {
                diag_error(diags, NULL, 0, "%s: unknown level \"%s\"", conf_params[p_level].name, level);
                return -EINVAL;
        }
        /* DANE (RFC 7672) rests on DNSSEC-validated MX, address and TLSA
         * records; as Postfix, "dane" without them is "may". Postfix does
         * no DANE for LMTP either. "dane-only" could never deliver: refused. */
        if (cs->tls_level == TLS_LEVEL_DANE_ONLY && (lmtp || !dnssec)) {
                diag_error(diags, NULL, 0, "%s = %s: %s", conf_params[p_level].name, level,
                           lmtp ? "DANE is not used for LMTP"
                                : "needs smtp_dns_support_level = dnssec");
                return -EINVAL;
        }
        if (cs->tls_level == TLS_LEVEL_DANE && (lmtp || !dnssec)) {
                diag_warning(diags, NULL, 0, "%s = %s: %s; using may instead",
                             conf_params[p_level].name, level,
                             lmtp ? "DANE is not used for LMTP"
                                  : "needs smtp_dns_support_level = dnssec");
                cs->tls_level = TLS_LEVEL_MAY;
        }
        cs->tls_dane_insecure_mx = TLS_LEVEL_MAY;
        if (!lmtp) {
                const char *p = conf_get_str(c, P_SMTP_TLS_DANE_INSECURE_MX_POLICY);
                if (strcaseeq(p, "dane"))
                        cs->tls_dane_insecure_mx = TLS_LEVEL_DANE;
                else if (strcaseeq(p, "encrypt"))
                        cs->tls_dane_insecure_mx = TLS_LEVEL_ENCRYPT;
                else if (!strcaseeq(p, "may")) {
                        diag_error(diags, NULL, 0, "smtp_tls_dane_insecure_mx_policy: unknown "
                                   "value \"%s\" (may, encrypt or dane)", p);
                        return -EINVAL;
                }
        }
        cs->tls_loglevel = (int) conf_get_int(c, lmtp ? P_LMTP_TLS_LOGLEVEL : P_SMTP_TLS_LOGLEVEL);
        cs->tls_note_starttls_offer = conf_get_bool(c, lmtp ? P_LMTP_TLS_NOTE_STARTTLS_OFFER
                                                            : P_SMTP_TLS_NOTE_STARTTLS_OFFER);
        cs->tls_servername = strdup(conf_get_str(c, lmtp ? P_LMTP_TLS_SERVERNAME : P_SMTP_TLS_SERVERNAME));
        if (!cs->tls_servername)
                return -ENOMEM;
        if ((r = strv_dup(conf_get_list(c, lmtp ? P_LMTP_TLS_VERIFY_CERT_MATCH
                                                : P_SMTP_TLS_VERIFY_CERT_MATCH),
                          &cs->tls_verify_match)) < 0 ||
            (r = strv_dup(conf_get_list(c, lmtp ? P_LMTP_TLS_SECURE_CERT_MATCH
                                                : P_SMTP_TLS_SECURE_CERT_MATCH),
                          &cs->tls_secure_match)) < 0)
                return r;
        cs->dnssec = dnssec;
        cs->tls_wrappermode = conf_get_bool(c, p_wrapper);
        if (cs->tls_wrappermode && cs->tls_level < TLS_LEVEL_ENCRYPT)
                diag_warning(diags, NULL, 0, "%s requires %s = encrypt or stronger; with %s "
                             "the connection still starts with TLS, without verifying the "
                             "server, and a failed handshake defers the mail",
                             conf_params[p_wrapper].name, conf_params[p_level].name,
                             tls_level_to_string(cs->tls_level));
        /* Per-destination policies. A table that cannot be opened does not
         * stop the service, but no mail goes out without its policy: every
         * delivery defers with the reason. */
        policy_specs = conf_get_list(c, p_policy);
        if (policy_specs && policy_specs[0]) {
                r = map_list_open(policy_specs, MAP_FLAG_FOLD_KEYS, diags, &cs->tls_policy);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        cs->tls_policy_error = strdup_printf("%s is unavailable: %s",
                                                             conf_params[p_policy].name,
                                                             strerror(-r));
                        if (!cs->tls_policy_error)
                                return -ENOMEM;
                        diag_warning(diags, NULL, 0, "%s; %s mail is deferred",
                                     cs->tls_policy_error, cs->name);
                }
        }
        if (cs->tls_level == TLS_LEVEL_NONE && !cs->tls_policy && !cs->tls_wrappermode)
                return 0;

        if (tls_protocols_parse(conf_get_list(c, p_protocols), &protocols, &bad) < 0) {
                diag_error(diags, NULL, 0, "%s: bad protocol \"%s\"", conf_params[p_protocols].name,
                           strempty(bad));
                return -EINVAL;
        }
        if (tls_protocols_parse(conf_get_list(c, p_mprotocols), &mprotocols, &bad) < 0) {
                diag_error(diags, NULL, 0, "%s: bad protocol \"%s\"", conf_params[p_mprotocols].name,
                           strempty(bad));
                return -EINVAL;
        }
        if (tls_cipher_grade_parse(conf_get_str(c, p_ciphers), &grade) < 0)
                grade = TLS_CIPHER_MEDIUM;
        cs->tls_ciphers = strdup(tls_cipher_grade_default_list(grade));
        if (tls_cipher_grade_parse(conf_get_str(c, p_mciphers), &grade) < 0)
                grade = TLS_CIPHER_MEDIUM;
        cs->tls_mandatory_ciphers = strdup(tls_cipher_grade_default_list(grade));
        if (!cs->tls_ciphers || !cs->tls_mandatory_ciphers)
                return -ENOMEM;

        cs->tls_opportunistic = (TlsClientConfig) {
                .ca_file = conf_get_str(c, lmtp ? P_LMTP_TLS_CAFILE : P_SMTP_TLS_CAFILE),
                .ca_path = conf_get_str(c, lmtp ? P_LMTP_TLS_CAPATH : P_SMTP_TLS_CAPATH),
                .cert_file = conf_get_str(c, lmtp ? P_LMTP_TLS_CERT_FILE : P_SMTP_TLS_CERT_FILE),
                .key_file = conf_get_str(c, lmtp ? P_LMTP_TLS_KEY_FILE : P_SMTP_TLS_KEY_FILE),
                .protocols = protocols,
                .ciphers = cs->tls_ciphers,
                .exclude_ciphers = conf_get_str(c, lmtp ? P_LMTP_TLS_EXCLUDE_CIPHERS
                                                        : P_SMTP_TLS_EXCLUDE_CIPHERS),
        };
        /* The client's private key may come as a systemd credential
         * (LoadCredential=smtp_tls_key_file:..., or the key file's base
         * name), as smtpd's does, so that the service never reads the key
         * directory itself. */
        if (!isempty(cs->tls_opportunistic.cert_file)) {
                const char *key = cs->tls_opportunistic.key_file;
                r = tls_credential_path(lmtp ? "lmtp_tls_key_file" : "smtp_tls_key_file",
                                        isempty(key) ? cs->tls_opportunistic.cert_file : key,
                                        &cs->tls_key_credential);
                if (r < 0)
                        return r;
                if (r > 0)
                        cs->tls_opportunistic.key_file = cs->tls_key_credential;
        }
        cs->tls_mandatory = cs->tls_opportunistic;
        cs->tls_mandatory.protocols = mprotocols;
        cs->tls_mandatory.ciphers = cs->tls_mandatory_ciphers;
        cs->tls_mandatory.exclude_ciphers = conf_get_str(c, lmtp ? P_LMTP_TLS_MANDATORY_EXCLUDE_CIPHERS
                                                                 : P_SMTP_TLS_MANDATORY_EXCLUDE_CIPHERS);

        /* A broken TLS setup does not stop the service: "may" goes on in
         * plaintext, mandatory levels defer with a clear reason. */
        if (tls_client_context_new(&cs->tls_opportunistic, &cs->ctx_opportunistic, &err) < 0) {
                diag_warning(diags, NULL, 0, "%s client TLS: %s; opportunistic TLS disabled",
                             cs->name, strempty(err));
                free(err);
                err = NULL;
        }
        if (tls_client_context_new(&cs->tls_mandatory, &cs->ctx_mandatory, &err) < 0)
                diag_warning(diags, NULL, 0, "%s client TLS: %s; mail that needs TLS is deferred",
                             cs->name, strempty(err));
        return 0;
}

/* smtp_sasl_* (lmtp_sasl_*): the SASL client. The password tables are
 * opened here, as the postern user; a table that cannot be opened defers
 * the mail to every server that asks for authentication. */
static int load_sasl(Config *c, ClientSettings *cs, bool lmtp, Diag *diags) {
        ConfParam p_maps = lmtp ? P_LMTP_SASL_PASSWORD_MAPS : P_SMTP_SASL_PASSWORD_MAPS;
        const struct {
                ConfParam p;
                unsigned *flags;
        } opts[] = {
                {lmtp ? P_LMTP_SASL_SECURITY_OPTIONS : P_SMTP_SASL_SECURITY_OPTIONS, &cs->sasl_options},
                {lmtp ? P_LMTP_SASL_TLS_SECURITY_OPTIONS : P_SMTP_SASL_TLS_SECURITY_OPTIONS,
                 &cs->sasl_tls_options},
                {lmtp ? P_LMTP_SASL_TLS_VERIFIED_SECURITY_OPTIONS
                      : P_SMTP_SASL_TLS_VERIFIED_SECURITY_OPTIONS, &cs->sasl_tls_verified_options},
        };
        char * const *specs;
        int r;

        cs->sasl_enable = conf_get_bool(c, lmtp ? P_LMTP_SASL_AUTH_ENABLE : P_SMTP_SASL_AUTH_ENABLE);
        if (!cs->sasl_enable)
                return 0;
        cs->sasl_soft_bounce = conf_get_bool(c, lmtp ? P_LMTP_SASL_AUTH_SOFT_BOUNCE
                                                     : P_SMTP_SASL_AUTH_SOFT_BOUNCE);
        for (size_t i = 0; i < ELEMENTSOF(opts); i++) {
                const char *bad = NULL;
                if (smtp_sasl_options_parse(conf_get_list(c, opts[i].p), opts[i].flags, &bad) < 0) {
                        diag_error(diags, NULL, 0, "%s: unknown option \"%s\" (noplaintext, "
                                   "noactive, nodictionary, noanonymous or mutual_auth)",
                                   conf_params[opts[i].p].name, strempty(bad));
                        return -EINVAL;
                }
        }
        r = strv_dup(conf_get_list(c, lmtp ? P_LMTP_SASL_MECHANISM_FILTER
                                           : P_SMTP_SASL_MECHANISM_FILTER),
                     &cs->sasl_mech_filter);
        if (r < 0)
                return r;
        specs = conf_get_list(c, p_maps);
        if (!specs || !specs[0])
                return 0;
        r = map_list_open(specs, MAP_FLAG_FOLD_KEYS, diags, &cs->sasl_passwords);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                cs->sasl_passwords_error = strdup_printf("%s is unavailable: %s",
                                                         conf_params[p_maps].name, strerror(-r));
                if (!cs->sasl_passwords_error)
                        return -ENOMEM;
                diag_warning(diags, NULL, 0, "%s; %s mail to servers that offer AUTH is deferred",
                             cs->sasl_passwords_error, cs->name);
        }
        return 0;
}

static int load_client(Config *c, ClientSettings *cs, bool lmtp, bool dnssec, Diag *diags) {
        const char *pref;
        int r;

        cs->lmtp = lmtp;
        cs->name = lmtp ? "lmtp" : "smtp";
        cs->helo_name = strdup(conf_get_str(c, lmtp ? P_LMTP_LHLO_NAME : P_SMTP_HELO_NAME));
        if (!cs->helo_name)
                return -ENOMEM;
#define T(smtp, lmtp_) usec(c, lmtp ? lmtp_ : smtp)
        cs->connect_timeout_usec = T(P_SMTP_CONNECT_TIMEOUT, P_LMTP_CONNECT_TIMEOUT);
        cs->helo_timeout_usec = T(P_SMTP_HELO_TIMEOUT, P_LMTP_LHLO_TIMEOUT);
        cs->mail_timeout_usec = T(P_SMTP_MAIL_TIMEOUT, P_LMTP_MAIL_TIMEOUT);
        cs->rcpt_timeout_usec = T(P_SMTP_RCPT_TIMEOUT, P_LMTP_RCPT_TIMEOUT);
        cs->data_init_timeout_usec = T(P_SMTP_DATA_INIT_TIMEOUT, P_LMTP_DATA_INIT_TIMEOUT);
        cs->data_xfer_timeout_usec = T(P_SMTP_DATA_XFER_TIMEOUT, P_LMTP_DATA_XFER_TIMEOUT);
        cs->data_done_timeout_usec = T(P_SMTP_DATA_DONE_TIMEOUT, P_LMTP_DATA_DONE_TIMEOUT);
        cs->quit_timeout_usec = T(P_SMTP_QUIT_TIMEOUT, P_LMTP_QUIT_TIMEOUT);
        cs->starttls_timeout_usec = T(P_SMTP_STARTTLS_TIMEOUT, P_LMTP_STARTTLS_TIMEOUT);
        cs->cache_time_usec = T(P_SMTP_CONNECTION_CACHE_TIME_LIMIT, P_LMTP_CONNECTION_CACHE_TIME_LIMIT);
#undef T
        pref = conf_get_str(c, lmtp ? P_LMTP_ADDRESS_PREFERENCE : P_SMTP_ADDRESS_PREFERENCE);
        cs->address_preference = strcaseeq(pref, "ipv4") ? AF_INET
                                 : strcaseeq(pref, "ipv6") ? AF_INET6 : 0;
        cs->balance_inet_protocols = conf_get_bool(c, lmtp ? P_LMTP_BALANCE_INET_PROTOCOLS
                                                           : P_SMTP_BALANCE_INET_PROTOCOLS);
        r = load_sasl(c, cs, lmtp, diags);
        if (r < 0)
                return r;
        return load_tls(c, cs, lmtp, dnssec, diags);
}

static int settings_load(Config *c, Diag *diags, DeliverSettings *s) {
        _cleanup_free_ char *servers = NULL;
        const char *b;
        int r;

        s->myhostname = strdup(conf_get_str(c, P_MYHOSTNAME));
        s->queue_directory = strdup(conf_get_str(c, P_QUEUE_DIRECTORY));
        s->relayhost = strdup(conf_get_str(c, P_RELAYHOST));
        servers = strv_join(conf_get_list(c, P_DNS_RESOLVER_SERVERS), ",");
        if (!s->myhostname || !s->queue_directory || !s->relayhost || !servers)
                return -ENOMEM;
        s->dns_servers = steal_ptr(servers);
        STRV_FOREACH(p, conf_get_list(c, P_INET_PROTOCOLS)) {
                if (strcaseeq(*p, "all"))
                        s->ipv4 = s->ipv6 = true;
                else if (strcaseeq(*p, "ipv4"))
                        s->ipv4 = true;
                else if (strcaseeq(*p, "ipv6"))
                        s->ipv6 = true;
                else
                        diag_warning(diags, NULL, 0, "inet_protocols: ignoring \"%s\"", *p);
        }
        if (!s->ipv4 && !s->ipv6)
                s->ipv4 = s->ipv6 = true;
        s->hopcount_limit = (unsigned) MAX(conf_get_int(c, P_HOPCOUNT_LIMIT), 0);
        s->line_length_limit = (size_t) MAX(conf_get_int(c, P_SMTP_LINE_LENGTH_LIMIT), 0);
        s->mx_address_limit = (unsigned) MAX(conf_get_int(c, P_SMTP_MX_ADDRESS_LIMIT), 0);
        s->mx_session_limit = (unsigned) MAX(conf_get_int(c, P_SMTP_MX_SESSION_LIMIT), 0);
        s->smtputf8_enable = conf_get_bool(c, P_SMTPUTF8_ENABLE);
        s->max_idle_usec = MAX(conf_get_time(c, P_MAX_IDLE), 1) * 1000000ULL;
        b = conf_get_str(c, P_SMTP_BIND_ADDRESS);
        if (!isempty(b) && (inet_addr_parse(b, &s->bind_address) < 0 ||
                            s->bind_address.family != AF_INET)) {
                diag_error(diags, NULL, 0, "smtp_bind_address: \"%s\" is not an IPv4 address", b);
                return -EINVAL;
        }
        b = conf_get_str(c, P_SMTP_BIND_ADDRESS6);
        if (!isempty(b) && (inet_addr_parse(b, &s->bind_address6) < 0 ||
                            s->bind_address6.family != AF_INET6)) {
                diag_error(diags, NULL, 0, "smtp_bind_address6: \"%s\" is not an IPv6 address", b);
                return -EINVAL;
        }
        /* Postfix: empty means enabled (unless the obsolete
         * disable_dns_lookups, which postern does not have). */
        b = conf_get_str(c, P_SMTP_DNS_SUPPORT_LEVEL);
        if (strcaseeq(b, "disabled")) {
                diag_error(diags, NULL, 0, "smtp_dns_support_level = disabled is not supported: "
                           "postern's SMTP client always looks up MX and address records in "
                           "DNS; use enabled or dnssec");
                return -EINVAL;
        }
        s->dnssec = strcaseeq(b, "dnssec");
        r = load_local_addrs(c, s, diags);
        if (r < 0)
                return r;
        r = load_client(c, &s->smtp, false, s->dnssec, diags);
        if (r < 0)
                return r;
        return load_client(c, &s->lmtp, true, s->dnssec, diags);
}

void deliver_jobs_changed(Deliver *d) {
        if (d->exiting)
                return;
        if (reload_exit && d->n_jobs == 0) {
                /* Reloaded: the next call starts a new process that reads
                 * the new configuration. */
                log_info("Deliveries finished; exiting so that the next one uses the new "
                         "configuration");
                d->exiting = true;
                (void) sd_notify(false, "STOPPING=1\nSTATUS=Exiting for the new configuration");
                (void) sd_event_exit(d->event, 0);
                return;
        }
        (void) sd_notifyf(false, "STATUS=%u deliver%s in progress", d->n_jobs,
                          d->n_jobs == 1 ? "y" : "ies");
        if (d->n_jobs == 0) {
                (void) sd_event_source_set_time_relative(d->idle_timer, d->settings.max_idle_usec);
                (void) sd_event_source_set_enabled(d->idle_timer, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(d->idle_timer, SD_EVENT_OFF);
}

static int on_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Deliver *d = userdata;

        for (int i = 0; i < 16; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                int r;
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(errno, "accept() failed: %m");
                        break;
                }
                r = deliver_bus_add_connection(d, cfd);
                if (r < 0 && r != -EPERM)
                        log_warning_errno(r, "Cannot set up a bus connection: %m");
        }
        return 0;
}

static int on_idle(sd_event_source *es, uint64_t usec, void *userdata) {
        Deliver *d = userdata;
        if (d->n_jobs > 0)
                return 0;
        log_debug("Idle for the max_idle time, exiting");
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Idle, exiting");
        return sd_event_exit(d->event, 0);
}

static int on_signal(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Deliver *d = userdata;
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return sd_event_exit(d->event, 0);
}

/* SIGHUP (systemctl reload): the SMTP sessions, cached connections and TLS
 * contexts of the jobs in progress hold the settings they started with, so
 * the configuration is not swapped in place. The new one is loaded to check
 * it: when it fails, the reason is logged and nothing changes; when it
 * loads, no new connection is accepted (the socket keeps them for the next
 * process), the deliveries in progress finish, and the process exits so
 * that the socket starts a new one with the new configuration. */
static int on_reload(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        Deliver *d = userdata;
        _cleanup_(conf_unrefp) Config *c = NULL;
        DeliverSettings n = {0};
        Diag diags = {0};
        int r;

        if (d->exiting || reload_exit)
                return 0;
        r = conf_load(arg_config_dir, SERVICE_NAME, &diags, &c);
        if (r >= 0)
                r = settings_load(c, &diags, &n);
        settings_done(&n);
        log_diags(&diags, false);
        if (r < 0) {
                log_mail(LOG_ERR, MSGID_CONFIG_ERROR, NULL, LOG_NO_FIELDS,
                         "Reload failed: cannot load the configuration (%s); keeping the "
                         "running one", strerror(-r));
                return 0;
        }
        log_info("Reloading: %u deliver%s in progress finish%s with the previous "
                 "configuration, then the service exits", d->n_jobs,
                 d->n_jobs == 1 ? "y" : "ies", d->n_jobs == 1 ? "es" : "");
        for (size_t i = 0; i < d->n_listeners; i++)
                (void) sd_event_source_set_enabled(d->listeners[i], SD_EVENT_OFF);
        reload_exit = true;
        deliver_jobs_changed(d);
        return 0;
}

static int setup_listeners(Deliver *d) {
        int n, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Cannot get sockets from systemd: %m");
        if (n == 0) {
                log_error("No listening socket: postern-deliver-remote runs under socket activation "
                          "(postern-deliver-remote.socket, %s/%s)", postern_runtime_dir(),
                          DELIVERY_BUS_SOCKET_REMOTE);
                return -EBADF;
        }
        d->listeners = calloc((size_t) n, sizeof(sd_event_source *));
        if (!d->listeners)
                return log_oom();
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                if (sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1) <= 0) {
                        log_error("Socket %d from systemd is not a listening AF_UNIX stream socket", fd);
                        return -EBADF;
                }
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
                    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "Cannot set up socket %d: %m", fd);
                r = sd_event_add_io(d->event, &d->listeners[i], fd, EPOLLIN, on_accept, d);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch socket %d: %m", fd);
                d->n_listeners++;
        }
        return 0;
}

static void help(void) {
        printf("Usage: postern-deliver-remote [-c DIR]\n\n"
               "The postern SMTP and LMTP client (org.postern.Delivery1). Runs under systemd\n"
               "socket activation (postern-deliver-remote.socket); see postern-deliver-remote(8).\n\n"
               "  -c, --config-dir=DIR   configuration directory (default %s)\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n",
               conf_default_dir());
}

static int parse_argv(int argc, char **argv) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                {"config-dir", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_config_dir = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("postern-deliver-remote %s\n", POSTERN_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "postern-deliver-remote: unexpected argument \"%s\"\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static void deliver_done(Deliver *d) {
        d->exiting = true;
        /* Jobs in flight answer nothing: the queue manager sees the
         * connection close and retries them. */
        while (d->jobs) {
                d->jobs->call = sd_bus_message_unref(d->jobs->call);
                delivery_job_free(d->jobs);
        }
        smtp_session_cache_flush(d);
        while (d->conns)
                bus_conn_free(d->conns);
        for (size_t i = 0; i < d->n_listeners; i++)
                sd_event_source_disable_unref(d->listeners[i]);
        free(d->listeners);
        sd_event_source_disable_unref(d->idle_timer);
        d->dns = dns_resolver_free(d->dns);
        settings_done(&d->settings);
        conf_unref(d->config);
        sd_event_unref(d->event);
}

static int run(int argc, char **argv) {
        Deliver d = {0};
        Diag diags = {0};
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        log_setup("postern-deliver-remote", SERVICE_NAME, LOG_TARGET_AUTO);
        srandom((unsigned) time(NULL) ^ (unsigned) getpid());

        r = conf_load(arg_config_dir, SERVICE_NAME, &diags, &d.config);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot load the configuration: %m");
                goto out;
        }
        r = settings_load(d.config, &diags, &d.settings);
        log_diags(&diags, true);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the delivery agent: %m");
                goto out;
        }

        r = sd_event_default(&d.event);
        if (r < 0)
                goto out;
        /* WATCHDOG=1 from the loop when the unit sets WatchdogSec=. */
        r = sd_event_set_watchdog(d.event, true);
        if (r < 0)
                goto out;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(d.event, NULL, SIGTERM, on_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGINT, on_signal, &d)) < 0 ||
            (r = sd_event_add_signal(d.event, NULL, SIGHUP, on_reload, &d)) < 0)
                goto out;
        r = dns_resolver_new(d.event, d.settings.dns_servers, 0, 0, &d.dns);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the DNS resolver (dns_resolver_servers = %s): %m",
                                d.settings.dns_servers);
                goto out;
        }
        dns_resolver_set_dnssec(d.dns, d.settings.dnssec);
        r = setup_listeners(&d);
        if (r < 0)
                goto out;
        r = sd_event_add_time_relative(d.event, &d.idle_timer, CLOCK_MONOTONIC,
                                       d.settings.max_idle_usec, 0, on_idle, &d);
        if (r < 0)
                goto out;
        deliver_jobs_changed(&d);

        (void) sd_notify(false, "READY=1\nSTATUS=Waiting for deliveries");
        r = sd_event_loop(d.event);
out:
        deliver_done(&d);
        return r;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
