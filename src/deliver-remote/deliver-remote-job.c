/* deliver-remote-job.c: one Deliver call from start to reply. Reads the
 * envelope and headers from the queue file fd, applies hopcount_limit,
 * parses the next hop, tries a cached connection, resolves the next hop
 * into routes (MX lookup with preference order and random order among
 * equals, A/AAAA fallback when there is no MX, RFC 7505 null MX, "loops back
 * to myself" when the best MX is this host), walks the routes with
 * SmtpSessions (smtp-client.c) and collects a result per recipient:
 * 2xx sent, 5xx bounced, 4xx and connection trouble deferred, where a soft
 * failure leaves the recipient for the next MX host as Postfix does.
 *
 * With the dane TLS levels (RFC 7672) each MX host whose MX and address
 * records were DNSSEC-validated gets a TLSA lookup at _PORT._tcp.HOST
 * before the first connection: validated usable records make TLS with DANE
 * authentication mandatory for its routes, validated records none of which
 * is usable make TLS mandatory (encrypt), no records or an unvalidated
 * chain leave opportunistic TLS (may; dane-only defers instead), and a
 * failed TLSA lookup (a bogus answer comes as SERVFAIL) takes the host out
 * with a 4.7.5 deferral. An MX host found through an unvalidated MX
 * lookup gets its TLSA lookup too unless smtp_tls_dane_insecure_mx_policy
 * is may (RFC 7672 2.2.1 allows it; Postfix does it by default), and its
 * usable records mean what that policy says; dane-only always looks. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "fileio.h"
#include "deliver-remote.h"
#include "log.h"

/* What we read of the content for the header scan; longer header sections
 * count only the Received: headers within this. */
#define HEADER_SCAN_MAX (256u * 1024)

typedef struct MxHost {
        char *name;
        unsigned preference;
        InetAddr *addrs;
        size_t n_addrs;
        int error;              /* worst lookup result: < 0 failed, 0 fine */
        bool nxdomain;
        bool self;
        const char *error_text;
        DnsType error_type;
        bool addr_insecure;     /* an address answer was not DNSSEC-validated */
        /* DANE: the TLSA lookup's outcome (> 0 usable records in dane, 0
         * none or not validated, < 0 failed) and whether any records were
         * validated at all. */
        int tlsa;
        bool tlsa_secure;
        TlsDane *dane;
} MxHost;

typedef struct JobLookup {
        DeliveryJob *job;
        size_t mx_index;
        DnsType type;
        DnsQuery *query;
} JobLookup;

static void job_next_route(DeliveryJob *j);
static void job_finish(DeliveryJob *j);
static void job_routes_start(DeliveryJob *j);

static void route_drop(Route *rt) {
        free(rt->host);
        free(rt->path);
        tls_dane_unref(rt->dane);
}

static void routes_free(DeliveryJob *j) {
        for (size_t i = 0; i < j->n_routes; i++)
                route_drop(&j->routes[i]);
        free(j->routes);
        j->routes = NULL;
        j->n_routes = j->next_route = 0;
}

static void lookups_cancel(DeliveryJob *j) {
        for (size_t i = 0; i < j->n_lookups; i++)
                j->lookups[i].query = dns_query_cancel(j->lookups[i].query);
        free(j->lookups);
        j->lookups = NULL;
        j->n_lookups = 0;
        j->lookups_pending = 0;
        for (size_t i = 0; i < j->n_mx; i++) {
                free(j->mx[i].name);
                free(j->mx[i].addrs);
                tls_dane_unref(j->mx[i].dane);
        }
        free(j->mx);
        j->mx = NULL;
        j->n_mx = 0;
}

DeliveryJob *delivery_job_free(DeliveryJob *j) {
        if (!j)
                return NULL;
        if (j->prev)
                j->prev->next = j->next;
        else if (j->d->jobs == j)
                j->d->jobs = j->next;
        if (j->next)
                j->next->prev = j->prev;
        lookups_cancel(j);
        routes_free(j);
        if (j->session)
                j->session = smtp_session_free(j->session);
        for (size_t i = 0; i < j->n_rcpts; i++) {
                free(j->rcpts[i].address);
                free(j->rcpts[i].original);
                free(j->rcpts[i].diag);
        }
        free(j->rcpts);
        queue_envelope_done(&j->env);
        nexthop_done(&j->nexthop);
        sd_bus_message_unref(j->call);
        if (j->fd >= 0)
                close(j->fd);
        free(j->qid);
        free(j->nexthop_text);
        free(j->cache_key);
        free(j->relay);
        free(j->tls);
        free(j->last_diag);
        strv_free(j->tls_policy.match);
        free(j->tls_policy.ciphers);
        free(j->tls_policy.exclude);
        free(j->tls_policy.servername);
        free(j);
        return NULL;
}

static unsigned pending_count(DeliveryJob *j) {
        unsigned n = 0;
        for (size_t i = 0; i < j->n_rcpts; i++)
                if (j->rcpts[i].state == RCPT_PENDING)
                        n++;
        return n;
}

static void set_rcpt(DeliveryRcpt *r, RcptState state, const char *dsn, const char *diag) {
        char *t = strdup(strempty(diag));
        if (t) {
                free(r->diag);
                r->diag = t;
        }
        snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
        r->state = state;
}

void delivery_rcpt_result(DeliveryJob *j, DeliveryRcpt *r, int code, const char *dsn,
                          const char *diag) {
        if (r->state != RCPT_PENDING)
                return;
        if (code >= 200 && code < 300)
                set_rcpt(r, RCPT_SENT, dsn, diag);
        else if (code >= 500)
                set_rcpt(r, RCPT_BOUNCED, dsn, diag);
        else
                set_rcpt(r, RCPT_PENDING, dsn, diag);
}

void delivery_job_soft_fail(DeliveryJob *j, const char *dsn, const char *diag) {
        char *t = strdup(diag);
        if (t) {
                free(j->last_diag);
                j->last_diag = t;
        }
        snprintf(j->last_dsn, sizeof(j->last_dsn), "%s", dsn);
        for (size_t i = 0; i < j->n_rcpts; i++)
                if (j->rcpts[i].state == RCPT_PENDING)
                        set_rcpt(&j->rcpts[i], RCPT_PENDING, dsn, diag);
}

void delivery_job_fail_all(DeliveryJob *j, bool hard, const char *dsn, const char *diag) {
        for (size_t i = 0; i < j->n_rcpts; i++)
                if (j->rcpts[i].state == RCPT_PENDING)
                        set_rcpt(&j->rcpts[i], hard ? RCPT_BOUNCED : RCPT_DEFERRED, dsn, diag);
}

static void job_finish(DeliveryJob *j) {
        Deliver *d = j->d;

        lookups_cancel(j);
        /* Recipients never reached keep the last soft failure. */
        for (size_t i = 0; i < j->n_rcpts; i++) {
                DeliveryRcpt *r = &j->rcpts[i];
                if (r->state != RCPT_PENDING)
                        continue;
                if (!r->diag)
                        set_rcpt(r, RCPT_DEFERRED, j->last_dsn[0] ? j->last_dsn : "4.4.1",
                                 j->last_diag ? j->last_diag : "delivery temporarily suspended");
                else
                        r->state = RCPT_DEFERRED;
                /* A soft failure is a 4.X.X whatever the reply said. */
                r->dsn[0] = '4';
        }
        deliver_bus_reply(j);
        delivery_job_free(j);
        d->n_jobs--;
        deliver_jobs_changed(d);
}

void delivery_job_session_done(DeliveryJob *j, SmtpSession *s, bool reusable) {
        if (j->session == s)
                j->session = NULL;
        if (pending_count(j) == 0) {
                job_finish(j);
                return;
        }
        if (!j->plain_retry)
                j->next_route++;
        job_next_route(j);
}

static void job_next_route(DeliveryJob *j) {
        Deliver *d = j->d;

        for (;;) {
                bool plain = j->plain_retry;

                if (pending_count(j) == 0 || j->next_route >= j->n_routes ||
                    (d->settings.mx_session_limit > 0 && j->sessions >= d->settings.mx_session_limit)) {
                        job_finish(j);
                        return;
                }
                j->plain_retry = false;
                if (smtp_session_connect(j, &j->routes[j->next_route], plain) >= 0)
                        return;
                j->next_route++;
        }
}

/* Whether an address belongs to this host (inet_interfaces and
 * proxy_interfaces): mail sent there would loop. */
static bool addr_is_local(Deliver *d, const InetAddr *a) {
        for (size_t i = 0; i < d->settings.n_local_addrs; i++) {
                const InetAddr *l = &d->settings.local_addrs[i];
                if (l->family == a->family && memcmp(l->bytes, a->bytes, inet_family_bits(a->family) / 8) == 0)
                        return true;
        }
        return false;
}

static int route_add(DeliveryJob *j, size_t mx, const char *host, const InetAddr *a,
                     unsigned port) {
        Route *n;

        n = reallocarray(j->routes, j->n_routes + 1, sizeof(Route));
        if (!n)
                return -ENOMEM;
        j->routes = n;
        n = &j->routes[j->n_routes];
        *n = (Route) {.addr = *a, .port = port, .mx = mx, .tls_level = j->tls_level};
        n->host = strdup(host);
        if (!n->host)
                return -ENOMEM;
        j->n_routes++;
        return 0;
}

static void shuffle_equal_preferences(MxHost *mx, size_t n) {
        /* Insertion sort by preference, then a shuffle within runs of equal
         * preference (RFC 5321 5.1: spread the load). */
        for (size_t i = 1; i < n; i++)
                for (size_t k = i; k > 0 && mx[k - 1].preference > mx[k].preference; k--) {
                        MxHost t = mx[k];
                        mx[k] = mx[k - 1];
                        mx[k - 1] = t;
                }
        for (size_t i = 0; i < n;) {
                size_t e = i + 1;
                while (e < n && mx[e].preference == mx[i].preference)
                        e++;
                for (size_t k = e - 1; k > i; k--) {
                        size_t r = i + (size_t) random() % (k - i + 1);
                        MxHost t = mx[k];
                        mx[k] = mx[r];
                        mx[r] = t;
                }
                i = e;
        }
}

static bool job_is_dane(const DeliveryJob *j) {
        return j->tls_level == TLS_LEVEL_DANE || j->tls_level == TLS_LEVEL_DANE_ONLY;
}

/* The routes are known (and with DANE their TLSA records): settle each
 * route's TLS level, drop the routes that cannot be used, and connect. */
static void job_routes_start(DeliveryJob *j) {
        size_t k = 0;

        for (size_t i = 0; i < j->n_routes; i++) {
                Route *rt = &j->routes[i];
                const MxHost *m = rt->mx < j->n_mx ? &j->mx[rt->mx] : NULL;
                _cleanup_free_ char *t = NULL;

                if (job_is_dane(j)) {
                        if (m && m->tlsa < 0) {
                                t = strdup_printf("TLSA lookup error for %s:%u", rt->host, rt->port);
                                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s",
                                         strempty(t));
                                delivery_job_soft_fail(j, "4.7.5", strempty(t));
                        } else if (m && m->tlsa > 0 && j->tls_level == TLS_LEVEL_DANE &&
                                   !j->mx_secure &&
                                   j->cs->tls_dane_insecure_mx == TLS_LEVEL_ENCRYPT) {
                                rt->tls_level = TLS_LEVEL_ENCRYPT;
                        } else if (m && m->tlsa > 0) {
                                rt->tls_level = TLS_LEVEL_DANE;
                                rt->dane = tls_dane_ref(m->dane);
                        } else if (m && m->tlsa_secure) {
                                /* RFC 7672 2.2: validated records, none usable:
                                 * TLS is still mandatory, unauthenticated. */
                                rt->tls_level = TLS_LEVEL_ENCRYPT;
                        } else if (j->tls_level == TLS_LEVEL_DANE_ONLY) {
                                t = strdup_printf("TLS is required, but no DNSSEC-validated TLSA "
                                                  "records were found for %s:%u", rt->host,
                                                  rt->port);
                                delivery_job_soft_fail(j, "4.7.5", strempty(t));
                        } else
                                rt->tls_level = TLS_LEVEL_MAY;
                }
                if (t) {
                        route_drop(rt);
                        continue;
                }
                j->routes[k++] = *rt;
        }
        j->n_routes = k;
        lookups_cancel(j);
        job_next_route(j);
}

static void on_tlsa(DnsQuery *q, int r, const DnsAnswer *a, void *userdata) {
        JobLookup *l = userdata;
        DeliveryJob *j = l->job;
        MxHost *m = &j->mx[l->mx_index];

        l->query = NULL;
        j->lookups_pending--;
        if (r < 0)
                m->tlsa = r;
        else if (r > 0 && a->secure) {
                m->tlsa_secure = true;
                if (tls_dane_new(m->name, &m->dane) < 0)
                        m->tlsa = -ENOMEM;
                for (size_t i = 0; i < a->n_records && m->dane; i++) {
                        const DnsRecord *t = &a->records[i];
                        int k = tls_dane_add(m->dane, t->usage, t->selector, t->mtype, t->data,
                                             t->data_len);
                        if (k < 0) {
                                m->tlsa = k;
                                break;
                        }
                }
                if (m->tlsa == 0 && m->dane && m->dane->n_records > 0)
                        m->tlsa = (int) MIN(m->dane->n_records, (size_t) INT_MAX);
        }
        if (j->lookups_pending == 0)
                job_routes_start(j);
}

/* TLSA lookups (RFC 7672 2.2) for the MX hosts that have routes and whose
 * address records (and MX records, as the policy asks) were validated;
 * the routes start when all are answered. */
static int lookup_tlsa(DeliveryJob *j) {
        Deliver *d = j->d;
        int r;

        free(j->lookups);
        j->n_lookups = 0;
        j->lookups = calloc(MAX(j->n_mx, (size_t) 1), sizeof(JobLookup));
        if (!j->lookups)
                return -ENOMEM;
        j->lookups_pending = 1;
        for (size_t i = 0; i < j->n_mx; i++) {
                MxHost *m = &j->mx[i];
                _cleanup_free_ char *name = NULL;
                JobLookup *l;
                bool routed = false;

                for (size_t k = 0; k < j->n_routes && !routed; k++)
                        routed = j->routes[k].mx == i;
                if (!routed || m->addr_insecure)
                        continue;
                if (!j->mx_secure && j->tls_level == TLS_LEVEL_DANE &&
                    j->cs->tls_dane_insecure_mx == TLS_LEVEL_MAY)
                        continue;
                name = strdup_printf("_%u._tcp.%s", j->nexthop.port, m->name);
                if (!name)
                        return -ENOMEM;
                l = &j->lookups[j->n_lookups++];
                *l = (JobLookup) {.job = j, .mx_index = i, .type = DNS_TYPE_TLSA};
                j->lookups_pending++;
                r = dns_query(d->dns, name, DNS_TYPE_TLSA, on_tlsa, l, &l->query);
                if (r < 0) {
                        j->lookups_pending--;
                        m->tlsa = r;
                }
        }
        if (--j->lookups_pending == 0)
                job_routes_start(j);
        return 0;
}

/* smtp_address_preference: within each run of routes whose MX hosts have
 * the same preference, the preferred family first (a stable partition:
 * the random order of hosts and addresses stays within each family). */
static void routes_prefer_family(DeliveryJob *j) {
        int fam = j->cs->address_preference;

        if (fam == 0)
                return;
        for (size_t i = 0; i < j->n_routes;) {
                size_t e = i + 1, k = i;
                unsigned pref = j->routes[i].mx < j->n_mx ? j->mx[j->routes[i].mx].preference : 0;

                while (e < j->n_routes &&
                       (j->routes[e].mx < j->n_mx ? j->mx[j->routes[e].mx].preference : 0) == pref)
                        e++;
                /* Insertion by family: O(n^2) on a handful of addresses. */
                for (size_t x = i; x < e; x++)
                        if (j->routes[x].addr.family == fam) {
                                Route t = j->routes[x];
                                memmove(&j->routes[k + 1], &j->routes[k], (x - k) * sizeof(Route));
                                j->routes[k++] = t;
                        }
                i = e;
        }
}

/* smtp_mx_address_limit, and with smtp_balance_inet_protocols both address
 * families within it when the routes have both (Postfix 3.3): the family of
 * the first route keeps the larger share, the other at least half of the
 * limit (rounded down) or all it has; the order stays. */
static void routes_limit(DeliveryJob *j) {
        size_t limit = j->d->settings.mx_address_limit, n4 = 0, n6 = 0, k = 0;
        size_t quota4, quota6, used4 = 0, used6 = 0;

        if (limit == 0 || j->n_routes <= limit)
                return;
        for (size_t i = 0; i < j->n_routes; i++) {
                if (j->routes[i].addr.family == AF_INET6)
                        n6++;
                else
                        n4++;
        }
        if (j->cs->balance_inet_protocols && n4 > 0 && n6 > 0) {
                bool first6 = j->routes[0].addr.family == AF_INET6;
                size_t n_first = first6 ? n6 : n4, n_other = first6 ? n4 : n6;
                size_t q_first = MIN(n_first, limit - MIN(n_other, limit / 2));
                size_t q_other = MIN(n_other, limit - q_first);
                quota6 = first6 ? q_first : q_other;
                quota4 = first6 ? q_other : q_first;
        } else
                quota4 = quota6 = limit;
        for (size_t i = 0; i < j->n_routes; i++) {
                Route *rt = &j->routes[i];
                bool v6 = rt->addr.family == AF_INET6;
                if (k >= limit || (v6 ? used6 >= quota6 : used4 >= quota4)) {
                        route_drop(rt);
                        continue;
                }
                if (v6)
                        used6++;
                else
                        used4++;
                j->routes[k++] = *rt;
        }
        j->n_routes = k;
}

/* All address lookups are done: build the routes, or fail. */
static void job_routes_ready(DeliveryJob *j) {
        Deliver *d = j->d;
        const char *domain = j->nexthop.host;
        bool have_self = false, any_temp = false;
        unsigned self_pref = 0;
        const MxHost *failed = NULL;

        for (size_t i = 0; i < j->n_mx; i++) {
                MxHost *m = &j->mx[i];
                if (strcaseeq(m->name, d->settings.myhostname))
                        m->self = true;
                for (size_t k = 0; k < m->n_addrs && !m->self; k++)
                        if (addr_is_local(d, &m->addrs[k]))
                                m->self = true;
                if (m->self && j->nexthop.mx && (!have_self || m->preference < self_pref)) {
                        have_self = true;
                        self_pref = m->preference;
                }
        }
        for (size_t i = 0; i < j->n_mx; i++) {
                MxHost *m = &j->mx[i];
                if (have_self && m->preference >= self_pref)
                        continue;
                if (m->n_addrs == 0) {
                        if (m->error < 0)
                                any_temp = true;
                        if (!failed || m->error < 0)
                                failed = m;
                }
                for (size_t k = 0; k < m->n_addrs; k++)
                        if (route_add(j, i, m->name, &m->addrs[k], j->nexthop.port) < 0) {
                                delivery_job_fail_all(j, false, "4.3.0", "out of memory");
                                job_finish(j);
                                return;
                        }
        }
        if (j->n_routes == 0) {
                _cleanup_free_ char *text = NULL;
                if (have_self) {
                        /* Postfix: the best MX host is this machine. */
                        text = strdup_printf("mail for %s loops back to myself", domain);
                        delivery_job_fail_all(j, true, "5.4.6", strempty(text));
                } else if (failed && (failed->error < 0 || any_temp)) {
                        text = strdup_printf("Host or domain name not found. Name service error "
                                             "for name=%s type=%s: Host not found, try again",
                                             failed->name, dns_type_to_string(failed->error_type));
                        delivery_job_fail_all(j, false, "4.4.3", strempty(text));
                } else {
                        text = strdup_printf("Host or domain name not found. Name service error "
                                             "for name=%s type=%s: Host not found",
                                             failed ? failed->name : domain,
                                             dns_type_to_string(failed ? failed->error_type
                                                                       : DNS_TYPE_A));
                        delivery_job_fail_all(j, true, "5.4.4", strempty(text));
                }
                job_finish(j);
                return;
        }
        routes_prefer_family(j);
        routes_limit(j);
        if (job_is_dane(j)) {
                int r = lookup_tlsa(j);
                if (r < 0) {
                        delivery_job_fail_all(j, false, "4.3.0", "out of memory");
                        job_finish(j);
                }
                return;
        }
        job_routes_start(j);
}

static void on_address(DnsQuery *q, int r, const DnsAnswer *a, void *userdata) {
        JobLookup *l = userdata;
        DeliveryJob *j = l->job;
        MxHost *m = &j->mx[l->mx_index];

        l->query = NULL;
        j->lookups_pending--;
        if (r > 0) {
                InetAddr *n = reallocarray(m->addrs, m->n_addrs + a->n_records, sizeof(InetAddr));
                if (!a->secure)
                        m->addr_insecure = true;
                if (n) {
                        m->addrs = n;
                        for (size_t i = 0; i < a->n_records; i++)
                                m->addrs[m->n_addrs + i] = a->records[i].addr;
                        m->n_addrs += a->n_records;
                        /* The host's IPv4 and IPv6 addresses in random
                         * order (Postfix's smtp_address_preference = any),
                         * so that an outage of one family delays mail but
                         * does not stop it, and A records share the load;
                         * routes_prefer_family() then puts a preferred
                         * family first. */
                        for (size_t k = m->n_addrs - 1; k > 0; k--) {
                                size_t x = (size_t) random() % (k + 1);
                                InetAddr t = m->addrs[k];
                                m->addrs[k] = m->addrs[x];
                                m->addrs[x] = t;
                        }
                }
        } else if (r < 0) {
                m->error = r;
                m->error_type = l->type;
        } else if (m->error == 0) {
                m->error_type = l->type;
                m->nxdomain = a->nxdomain;
        }
        if (j->lookups_pending == 0)
                job_routes_ready(j);
}

static int lookup_addresses(DeliveryJob *j) {
        Deliver *d = j->d;
        size_t per = (d->settings.ipv4 ? 1 : 0) + (d->settings.ipv6 ? 1 : 0);
        int r;

        j->lookups = calloc(j->n_mx * per, sizeof(JobLookup));
        if (!j->lookups)
                return -ENOMEM;
        j->n_lookups = j->n_mx * per;
        /* One extra count holds the answers back until every query is out:
         * c-ares may answer a query before dns_query() returns. */
        j->lookups_pending = 1;
        for (size_t i = 0, n = 0; i < j->n_mx; i++) {
                DnsType types[2];
                size_t nt = 0;
                if (d->settings.ipv6)
                        types[nt++] = DNS_TYPE_AAAA;
                if (d->settings.ipv4)
                        types[nt++] = DNS_TYPE_A;
                for (size_t t = 0; t < nt; t++, n++) {
                        JobLookup *l = &j->lookups[n];
                        *l = (JobLookup) {.job = j, .mx_index = i, .type = types[t]};
                        j->lookups_pending++;
                        r = dns_query(d->dns, j->mx[i].name, types[t], on_address, l, &l->query);
                        if (r < 0) {
                                j->lookups_pending--;
                                j->mx[i].error = r;
                                j->mx[i].error_type = types[t];
                        }
                }
        }
        if (--j->lookups_pending == 0)
                job_routes_ready(j);
        return 0;
}

static int mx_add(DeliveryJob *j, const char *name, unsigned pref) {
        MxHost *n = reallocarray(j->mx, j->n_mx + 1, sizeof(MxHost));
        if (!n)
                return -ENOMEM;
        j->mx = n;
        n = &j->mx[j->n_mx];
        *n = (MxHost) {.preference = pref, .name = strdup(name)};
        if (!n->name)
                return -ENOMEM;
        j->n_mx++;
        return 0;
}

static void on_mx(DnsQuery *q, int r, const DnsAnswer *a, void *userdata) {
        JobLookup *l = userdata;
        DeliveryJob *j = l->job;
        const char *domain = j->nexthop.host;
        _cleanup_free_ char *text = NULL;

        l->query = NULL;
        free(j->lookups);
        j->lookups = NULL;
        j->n_lookups = 0;
        j->lookups_pending = 0;

        if (r < 0) {
                text = strdup_printf("Host or domain name not found. Name service error for "
                                     "name=%s type=MX: Host not found, try again", domain);
                delivery_job_fail_all(j, false, "4.4.3", strempty(text));
                job_finish(j);
                return;
        }
        if (r == 0 && a->nxdomain) {
                text = strdup_printf("Host or domain name not found. Name service error for "
                                     "name=%s type=MX: Host not found", domain);
                delivery_job_fail_all(j, true, "5.4.4", strempty(text));
                job_finish(j);
                return;
        }
        j->mx_secure = a->secure;
        if (r == 0) {
                /* RFC 5321 5.1: no MX, the domain itself is the implicit MX. */
                if (mx_add(j, domain, 0) < 0)
                        goto oom;
        } else {
                for (size_t i = 0; i < a->n_records; i++) {
                        /* RFC 7505: "MX 0 ." - the domain accepts no mail. */
                        if (a->records[i].name[0] == 0 ||
                            streq(a->records[i].name, ".")) {
                                text = strdup_printf("Domain %s does not accept mail (nullMX)",
                                                     domain);
                                delivery_job_fail_all(j, true, "5.1.10", strempty(text));
                                job_finish(j);
                                return;
                        }
                        if (mx_add(j, a->records[i].name, a->records[i].preference) < 0)
                                goto oom;
                }
                shuffle_equal_preferences(j->mx, j->n_mx);
        }
        if (lookup_addresses(j) < 0)
                goto oom;
        return;
oom:
        delivery_job_fail_all(j, false, "4.3.0", "out of memory");
        job_finish(j);
}

/* Resolves the next hop into routes; calls job_next_route() (maybe at once). */
static int job_resolve(DeliveryJob *j) {
        Nexthop *nh = &j->nexthop;
        int r;

        if (nh->kind == NEXTHOP_UNIX) {
                Route *rt = calloc(1, sizeof(Route));
                if (!rt)
                        return -ENOMEM;
                j->routes = rt;
                j->n_routes = 1;
                rt->mx = SIZE_MAX;
                rt->tls_level = j->tls_level;
                rt->host = strdup(j->d->settings.myhostname);
                rt->path = path_join(j->d->settings.queue_directory, nh->path);
                if (!rt->host || !rt->path)
                        return -ENOMEM;
                job_next_route(j);
                return 0;
        }
        if (nh->literal) {
                InetAddr a;
                if (inet_addr_parse(nh->host, &a) < 0)
                        return -EINVAL;
                if (route_add(j, SIZE_MAX, nh->host, &a, nh->port) < 0)
                        return -ENOMEM;
                job_routes_start(j);
                return 0;
        }
        if (nh->mx) {
                j->lookups = calloc(1, sizeof(JobLookup));
                if (!j->lookups)
                        return -ENOMEM;
                j->n_lookups = 1;
                j->lookups[0] = (JobLookup) {.job = j, .type = DNS_TYPE_MX};
                j->lookups_pending = 1;
                r = dns_query(j->d->dns, nh->host, DNS_TYPE_MX, on_mx, &j->lookups[0],
                              &j->lookups[0].query);
                return r;
        }
        /* [host]: no MX lookup, only the host's own records count. */
        j->mx_secure = true;
        if (mx_add(j, nh->host, 0) < 0)
                return -ENOMEM;
        return lookup_addresses(j);
}

/* Appends the non-empty items of a colon-separated attribute value to
 * *list. Returns 0 or -ENOMEM. */
static int split_colons(const char *v, char ***list) {
        for (const char *a = v; *a;) {
                size_t n = strcspn(a, ":");
                if (n > 0) {
                        char *item = strndup_safe(a, n);
                        if (!item || strv_consume(list, item) < 0)
                                return -ENOMEM;
                }
                a += n + (a[n] == ':');
        }
        return 0;
}

/* Parses a TLS policy table value: a level and name=value attributes,
 * separated by white space and/or commas; multiple values inside an
 * attribute are separated by colons. Returns 0, -EINVAL with the reason in
 * *ret_error (caller frees), or -ENOMEM. */
static int tls_policy_parse(const char *value, const ClientSettings *cs, TlsLevel *ret_level,
                            TlsPolicy *p, char **ret_error, const char **ret_note) {
        _cleanup_strv_free_ char **words = NULL;
        TlsLevel level;
        int r;

        if (str_split_list(value, false, &words) < 0)
                return -ENOMEM;
        if (!words || !words[0]) {
                *ret_error = strdup("empty policy");
                return -EINVAL;
        }
        r = tls_level_parse(words[0], &level);
        if (r == -EOPNOTSUPP) {
                *ret_error = strdup_printf("security level \"%s\" is not supported by postern",
                                           words[0]);
                return -EINVAL;
        }
        if (r < 0) {
                *ret_error = strdup_printf("unknown security level \"%s\"", words[0]);
                return -EINVAL;
        }
        /* As for the main.cf level: DANE needs DNSSEC and is not used for
         * LMTP; opportunistic DANE falls back to may, dane-only cannot. */
        if ((level == TLS_LEVEL_DANE || level == TLS_LEVEL_DANE_ONLY) && (cs->lmtp || !cs->dnssec)) {
                if (level == TLS_LEVEL_DANE_ONLY) {
                        *ret_error = strdup(cs->lmtp ? "dane-only: DANE is not used for LMTP"
                                                     : "dane-only needs smtp_dns_support_level = "
                                                       "dnssec");
                        return -EINVAL;
                }
                level = TLS_LEVEL_MAY;
                *ret_note = cs->lmtp ? "DANE is not used for LMTP"
                                     : "dane needs smtp_dns_support_level = dnssec";
        }
        STRV_FOREACH(w, words + 1) {
                const char *eq = strchr(*w, '=');
                _cleanup_free_ char *name = NULL;
                const char *v;

                if (!eq || eq == *w) {
                        *ret_error = strdup_printf("attribute \"%s\" is not a name=value pair", *w);
                        return -EINVAL;
                }
                name = strndup_safe(*w, (size_t) (eq - *w));
                if (!name)
                        return -ENOMEM;
                v = eq + 1;
                if (isempty(v)) {
                        *ret_error = strdup_printf("empty \"%s\" attribute", name);
                        return -EINVAL;
                }
                if (strcaseeq(name, "match")) {
                        if (p->match) {
                                *ret_error = strdup("more than one \"match\" attribute");
                                return -EINVAL;
                        }
                        if (split_colons(v, &p->match) < 0)
                                return -ENOMEM;
                        if (!p->match) {
                                *ret_error = strdup("empty \"match\" attribute");
                                return -EINVAL;
                        }
                } else if (strcaseeq(name, "protocols")) {
                        _cleanup_strv_free_ char **items = NULL;
                        const char *bad = NULL;
                        if (p->protocols) {
                                *ret_error = strdup("more than one \"protocols\" attribute");
                                return -EINVAL;
                        }
                        if (split_colons(v, &items) < 0)
                                return -ENOMEM;
                        if (tls_protocols_parse(items, &p->protocols, &bad) < 0) {
                                *ret_error = strdup_printf("bad \"protocols\" attribute \"%s\"%s%s",
                                                           v, bad ? ": " : "", strempty(bad));
                                return -EINVAL;
                        }
                } else if (strcaseeq(name, "ciphers")) {
                        TlsCipherGrade g;
                        if (p->ciphers) {
                                *ret_error = strdup("more than one \"ciphers\" attribute");
                                return -EINVAL;
                        }
                        if (tls_cipher_grade_parse(v, &g) < 0) {
                                *ret_error = strdup_printf("bad \"ciphers\" attribute \"%s\" (export, "
                                                           "low, medium, high or null)", v);
                                return -EINVAL;
                        }
                        p->ciphers = strdup(tls_cipher_grade_default_list(g));
                        if (!p->ciphers)
                                return -ENOMEM;
                } else if (strcaseeq(name, "exclude") || strcaseeq(name, "servername")) {
                        char **slot = strcaseeq(name, "exclude") ? &p->exclude : &p->servername;
                        if (*slot) {
                                *ret_error = strdup_printf("more than one \"%s\" attribute", name);
                                return -EINVAL;
                        }
                        *slot = strdup(v);
                        if (!*slot)
                                return -ENOMEM;
                } else {
                        *ret_error = strdup_printf("unknown attribute \"%s\"", name);
                        return -EINVAL;
                }
        }
        *ret_level = level;
        return 0;
}

/* smtp_tls_policy_maps (lmtp_tls_policy_maps): looks the next hop up as
 * given (without LMTP's inet: prefix); a plain domain (no brackets, no
 * port) then as each of its parent domains with a leading dot, nearest
 * first, as Postfix does. Sets the job's level and policy. Returns 0 (found
 * or not), or -EINVAL / -EIO with the job's recipients deferred. */
static int job_tls_policy(DeliveryJob *j) {
        ClientSettings *cs = j->cs;
        const char *table = cs->lmtp ? "lmtp_tls_policy_maps" : "smtp_tls_policy_maps";
        _cleanup_free_ char *value = NULL, *why = NULL, *text = NULL;
        const char *key = j->nexthop_text, *found = NULL, *note = NULL;
        bool domain;
        TlsLevel level;
        int r = 0;

        if (cs->tls_policy_error) {
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s", cs->tls_policy_error);
                delivery_job_fail_all(j, false, "4.3.0", cs->tls_policy_error);
                return -EIO;
        }
        if (!cs->tls_policy)
                return 0;
        if (startswith_no_case(key, "inet:"))
                key += 5;
        domain = !strpbrk(key, "[]:/");
        for (const char *k = key; k;) {
                r = map_list_lookup(cs->tls_policy, k, &value);
                if (r != 0) {
                        found = k;
                        break;
                }
                if (!domain)
                        break;
                k = strchr(k + 1, '.');
        }
        if (r < 0) {
                text = strdup_printf("TLS policy lookup for %s in %s failed: %s", key, table,
                                     strerror(-r));
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s", strempty(text));
                delivery_job_fail_all(j, false, "4.3.0", strempty(text));
                return -EIO;
        }
        if (r == 0)
                return 0;
        r = tls_policy_parse(value, cs, &level, &j->tls_policy, &why, &note);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                /* Postfix: "client TLS configuration problem". */
                text = strdup_printf("client TLS configuration problem: invalid TLS policy "
                                     "\"%s\" for %s in %s: %s", value, found, table,
                                     strempty(why));
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s", strempty(text));
                delivery_job_fail_all(j, false, "4.7.0", strempty(text));
                return -EINVAL;
        }
        if (note)
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS,
                         "TLS policy \"%s\" for %s in %s: %s; using may instead", value, found,
                         table, note);
        log_mail(LOG_DEBUG, NULL, j->qid, LOG_NO_FIELDS, "TLS policy for %s from %s (key %s): %s",
                 key, table, found, value);
        j->tls_level = level;
        return 0;
}

static int read_recipients(DeliveryJob *j, sd_bus_message *m, char **ret_error) {
        uint32_t index;
        const char *address, *original;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "(uss)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(m, "(uss)", &index, &address, &original)) > 0) {
                DeliveryRcpt *n;
                if (index >= j->env.n_rcpts) {
                        *ret_error = strdup_printf("recipient index %u out of range (%zu in the "
                                                   "queue file)", index, j->env.n_rcpts);
                        return -EINVAL;
                }
                if (isempty(address) || strchr(address, '\n') || strchr(address, '\r') ||
                    strlen(address) > ADDR_PATH_MAX) {
                        *ret_error = strdup("invalid recipient address");
                        return -EINVAL;
                }
                if (j->n_rcpts >= 100000)
                        return -E2BIG;
                n = reallocarray(j->rcpts, j->n_rcpts + 1, sizeof(DeliveryRcpt));
                if (!n)
                        return -ENOMEM;
                j->rcpts = n;
                n = &j->rcpts[j->n_rcpts];
                *n = (DeliveryRcpt) {.index = index};
                j->n_rcpts++;
                n->address = strdup(address);
                n->original = strdup(isempty(original) ? address : original);
                if (!n->address || !n->original)
                        return -ENOMEM;
                n->orcpt = j->env.rcpts[index].orcpt;
                n->notify = j->env.rcpts[index].notify;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (j->n_rcpts == 0) {
                *ret_error = strdup("no recipients");
                return -EINVAL;
        }
        return 0;
}

static int scan_content(DeliveryJob *j) {
        size_t n = (size_t) MIN(j->env.content_size, (uint64_t) HEADER_SCAN_MAX);
        _cleanup_free_ char *buf = malloc(n + 1);
        ssize_t k;

        if (!buf)
                return -ENOMEM;
        k = pread(j->fd, buf, n, (off_t) j->env.content_offset);
        if (k < 0)
                return -errno;
        smtp_headers_scan(buf, (size_t) k, &j->headers);
        return 0;
}

int delivery_job_start(Deliver *d, sd_bus_message *m, int fd, const char *qid,
                       const char *transport, const char *nexthop, char **ret_error_text) {
        DeliveryJob *j;
        bool lmtp;
        const char *hop;
        int r;

        if (!queue_id_valid(qid)) {
                *ret_error_text = strdup("invalid queue ID");
                return -EINVAL;
        }
        if (streq(transport, "lmtp"))
                lmtp = true;
        else if (streq(transport, "smtp") || streq(transport, "relay"))
                lmtp = false;
        else {
                *ret_error_text = strdup_printf("unknown transport \"%s\" (smtp, relay or lmtp)",
                                                transport);
                return -EINVAL;
        }
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->d = d;
        j->body_8bit = -1;
        (void) sd_event_now(d->event, CLOCK_MONOTONIC, &j->started_usec);
        j->cs = lmtp ? &d->settings.lmtp : &d->settings.smtp;
        j->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        j->qid = strdup(qid);
        if (j->fd < 0 || !j->qid) {
                r = j->fd < 0 ? -errno : -ENOMEM;
                delivery_job_free(j);
                return r;
        }
        r = queue_file_read(j->fd, &j->env);
        if (r < 0) {
                *ret_error_text = strdup_printf("cannot read the queue file: %s", strerror(-r));
                delivery_job_free(j);
                return r == -EBADMSG ? -EINVAL : r;
        }
        r = read_recipients(j, m, ret_error_text);
        if (r < 0) {
                delivery_job_free(j);
                return r;
        }
        r = scan_content(j);
        if (r < 0) {
                *ret_error_text = strdup_printf("cannot read the queue file: %s", strerror(-r));
                delivery_job_free(j);
                return r;
        }

        /* Link in now: from here on the job always answers, through job_finish(). */
        j->call = sd_bus_message_ref(m);
        j->next = d->jobs;
        if (j->next)
                j->next->prev = j;
        d->jobs = j;
        d->n_jobs++;
        deliver_jobs_changed(d);

        if (d->settings.hopcount_limit > 0 && j->headers.received >= d->settings.hopcount_limit) {
                _cleanup_free_ char *t = strdup_printf(
                        "mail forwarding loop: %u Received: headers, hopcount_limit is %u",
                        j->headers.received, d->settings.hopcount_limit);
                delivery_job_fail_all(j, true, "5.4.6", strempty(t));
                job_finish(j);
                return 0;
        }

        /* The next hop: as given; for smtp without one the relayhost, else
         * the recipients' domain (the queue manager groups by it). */
        hop = nexthop;
        if (isempty(hop) && !lmtp && !isempty(d->settings.relayhost))
                hop = d->settings.relayhost;
        if (isempty(hop) && !lmtp)
                hop = addr_domain(j->rcpts[0].address);
        j->nexthop_text = strdup(strempty(hop));
        if (!j->nexthop_text) {
                delivery_job_fail_all(j, false, "4.3.0", "out of memory");
                job_finish(j);
                return 0;
        }
        r = nexthop_parse(j->nexthop_text, lmtp, &j->nexthop);
        if (r < 0) {
                _cleanup_free_ char *t = strdup_printf("bad %s next hop \"%s\"", j->cs->name,
                                                       j->nexthop_text);
                log_mail(LOG_WARNING, NULL, j->qid, LOG_NO_FIELDS, "%s, deferring", strempty(t));
                delivery_job_fail_all(j, false, "4.3.5", strempty(t));
                job_finish(j);
                return 0;
        }

        j->tls_level = j->nexthop.kind == NEXTHOP_UNIX ? TLS_LEVEL_NONE : j->cs->tls_level;
        if (j->nexthop.kind != NEXTHOP_UNIX) {
                r = job_tls_policy(j);
                if (r < 0) {
                        if (r == -ENOMEM)
                                delivery_job_fail_all(j, false, "4.3.0", "out of memory");
                        job_finish(j);
                        return 0;
                }
        }
        j->needs_smtputf8 = j->env.smtputf8 &&
                            (addr_has_8bit(j->env.sender) || j->headers.headers_8bit);
        for (size_t i = 0; i < j->n_rcpts && j->env.smtputf8; i++)
                if (addr_has_8bit(j->rcpts[i].address))
                        j->needs_smtputf8 = true;

        j->cache_key = strdup_printf("%s:%s:%s", j->cs->name, j->nexthop_text,
                                     tls_level_to_string(j->tls_level));
        if (!j->cache_key) {
                delivery_job_fail_all(j, false, "4.3.0", "out of memory");
                job_finish(j);
                return 0;
        }
        if (smtp_session_reuse(j) > 0)
                return 0;
        r = job_resolve(j);
        if (r < 0) {
                delivery_job_fail_all(j, false, "4.3.0", strerror(-r));
                job_finish(j);
        }
        return 0;
}

/* A cached session failed its RSET test: resolve as if there had been
 * none. */
void delivery_job_reuse_failed(DeliveryJob *j) {
        int r;
        if (j->session)
                j->session = NULL;
        r = job_resolve(j);
        if (r < 0) {
                delivery_job_fail_all(j, false, "4.3.0", strerror(-r));
                job_finish(j);
        }
}
