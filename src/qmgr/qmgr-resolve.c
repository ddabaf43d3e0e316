/* qmgr-resolve.c: trivial-rewrite, the resolution of a recipient address
 * to a transport and next hop, with Postfix's address classes:
 * mydestination (and addresses without a domain) -> local_transport,
 * virtual_alias_domains -> an error (the alias expansion found nothing),
 * virtual_mailbox_domains -> virtual_transport, relay_domains ->
 * relay_transport, everything else -> default_transport with relayhost as
 * next hop. transport_maps override the class result by full address, by
 * domain, by parent domain (".parent", or "parent" itself when
 * parent_domain_matches_subdomains lists transport_maps) and by "*".
 *
 * Transport values are "name:nexthop": "smtp:[host]:port",
 * "lmtp:unix:private/dovecot-lmtp", "local:", "virtual:", and the two the
 * queue manager serves itself, "error:[X.Y.Z ]text" (bounce) and
 * "discard:text"; "retry:text" defers. Which delivery agent socket serves
 * a transport name is qmgr_agent_for_transport(). Domain lists with
 * type:table entries are matched here too. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "bus-names.h"
#include "qmgr.h"

void qmgr_domain_list_done(QmgrDomainList *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].domain);
                map_free(l->items[i].map);
        }
        free(l->items);
        *l = (QmgrDomainList) {0};
}

int qmgr_domain_list_load(char * const *items, bool parent_matches, Diag *diags,
                          QmgrDomainList *ret) {
        QmgrDomainList l = {.parent_matches = parent_matches};
        int r;

        STRV_FOREACH(i, items) {
                const char *s = *i;
                QmgrDomainItem it = {0};
                QmgrDomainItem *n;

                if (*s == '!') {
                        it.negate = true;
                        s++;
                }
                if (strchr(s, ':') && *s != '[') {
                        r = map_open(s, MAP_FLAG_FOLD_KEYS, diags, &it.map);
                        if (r < 0) {
                                qmgr_domain_list_done(&l);
                                return r;
                        }
                } else {
                        it.domain = strdup(s);
                        if (!it.domain) {
                                qmgr_domain_list_done(&l);
                                return -ENOMEM;
                        }
                        ascii_strlower(it.domain);
                        if (endswith(it.domain, "."))
                                it.domain[strlen(it.domain) - 1] = 0;
                }
                n = reallocarray(l.items, l.n + 1, sizeof(QmgrDomainItem));
                if (!n) {
                        free(it.domain);
                        map_free(it.map);
                        qmgr_domain_list_done(&l);
                        return -ENOMEM;
                }
                l.items = n;
                l.items[l.n++] = it;
        }
        *ret = l;
        return 0;
}

static int table_match(Map *map, const char *domain, bool parent_matches) {
        int r = map_lookup(map, domain, NULL);
        if (r != 0)
                return r;
        for (const char *p = strchr(domain, '.'); p; p = strchr(p + 1, '.')) {
                /* Parent style: "example.com" matches "sub.example.com";
                 * otherwise only ".example.com" does. */
                r = map_lookup(map, parent_matches ? p + 1 : p, NULL);
                if (r != 0)
                        return r;
        }
        return 0;
}

int qmgr_domain_list_match(const QmgrDomainList *l, const char *domain) {
        _cleanup_free_ char *d = strdup(domain);
        size_t dl;

        if (!d)
                return -ENOMEM;
        ascii_strlower(d);
        dl = strlen(d);
        if (dl > 0 && d[dl - 1] == '.')
                d[--dl] = 0;
        for (size_t i = 0; i < l->n; i++) {
                const QmgrDomainItem *it = &l->items[i];
                bool match;
                if (it->map) {
                        int r = table_match(it->map, d, l->parent_matches);
                        if (r < 0)
                                return r;
                        match = r > 0;
                } else {
                        const char *p = it->domain;
                        size_t pl = strlen(p);
                        match = streq(d, p) ||
                                (p[0] == '.' && dl > pl && streq(d + dl - pl, p)) ||
                                (l->parent_matches && p[0] != '.' && dl > pl &&
                                 d[dl - pl - 1] == '.' && streq(d + dl - pl, p));
                }
                if (match)
                        return it->negate ? 0 : 1;
        }
        return 0;
}

int qmgr_domain_is_local(Qmgr *q, const char *domain) {
        if (strcaseeq(domain, q->settings.myorigin) || strcaseeq(domain, q->settings.myhostname))
                return 1;
        return qmgr_domain_list_match(&q->settings.mydestination, domain);
}

QmgrAgent *qmgr_agent_for_transport(Qmgr *q, const char *transport) {
        static const char *const remote[] = {"smtp", "lmtp", "relay"};
        static const char *const local[] = {"local", "virtual"};
        int k = -1;

        for (size_t i = 0; i < ELEMENTSOF(remote); i++)
                if (streq(transport, remote[i]))
                        k = 0;
        for (size_t i = 0; i < ELEMENTSOF(local); i++)
                if (streq(transport, local[i]))
                        k = 1;
        if (k < 0)
                return NULL;
        if (!q->agents[k].name) {
                const char *sock = k == 0 ? DELIVERY_BUS_SOCKET_REMOTE : DELIVERY_BUS_SOCKET_LOCAL;
                q->agents[k].name = strdup(sock);
                q->agents[k].path = strdup_printf("%s/%s", postern_runtime_dir(), sock);
                if (!q->agents[k].name || !q->agents[k].path) {
                        q->agents[k].name = mfree_str(q->agents[k].name);
                        q->agents[k].path = mfree_str(q->agents[k].path);
                        return NULL;
                }
        }
        return &q->agents[k];
}

void qmgr_route_done(QmgrRoute *r) {
        free(r->transport);
        free(r->nexthop);
        free(r->dsn);
        free(r->text);
        *r = (QmgrRoute) {0};
}

/* Splits "name:nexthop" (nexthop may be empty or missing). */
static int split_transport(const char *value, char **ret_name, char **ret_nexthop) {
        const char *colon = strchr(value, ':');
        char *name = colon ? strndup_safe(value, (size_t) (colon - value)) : strdup(value);
        char *nh = strdup(colon ? colon + 1 : "");

        if (!name || !nh) {
                free(name);
                free(nh);
                return -ENOMEM;
        }
        *ret_name = strstrip(name);
        *ret_nexthop = strstrip(nh);
        return 0;
}

/* Looks the recipient up in transport_maps. > 0 found (*ret_value). */
static int transport_lookup(Qmgr *q, const char *rcpt, const char *domain, char **ret_value) {
        int r;

        if (!q->settings.transport_maps)
                return 0;
        r = map_list_lookup(q->settings.transport_maps, rcpt, ret_value);
        if (r != 0 || !domain)
                return r;
        r = map_list_lookup(q->settings.transport_maps, domain, ret_value);
        if (r != 0)
                return r;
        for (const char *p = strchr(domain, '.'); p; p = strchr(p + 1, '.')) {
                r = map_list_lookup(q->settings.transport_maps,
                                    q->settings.transport_maps_parent ? p + 1 : p, ret_value);
                if (r != 0)
                        return r;
        }
        return map_list_lookup(q->settings.transport_maps, "*", ret_value);
}

/* Fills a route for the special transports served inside the queue manager
 * ("error", "retry", "discard") and for names without an agent. Returns
 * true when it did. */
static bool special_route(Qmgr *q, const char *name, const char *text, QmgrRoute *ret) {
        const char *t = text;
        char dsn[16] = "";
        int consumed = 0;
        unsigned a, b, c;

        if (streq(name, "error") || streq(name, "retry")) {
                /* An optional leading "X.Y.Z " status, as Postfix's error(8). */
                if (sscanf(text, "%1u.%3u.%3u %n", &a, &b, &c, &consumed) == 3 && consumed > 0 &&
                    (a == 4 || a == 5)) {
                        snprintf(dsn, sizeof(dsn), "%u.%u.%u", a, b, c);
                        t = text + consumed;
                }
                if (streq(name, "retry") && dsn[0] != '4')
                        strcpy(dsn, "4.0.0");
                else if (!dsn[0])
                        strcpy(dsn, "5.0.0");
                ret->kind = streq(name, "error") ? QMGR_ROUTE_ERROR : QMGR_ROUTE_DEFER;
                ret->dsn = strdup(dsn);
                ret->text = strdup(*t ? t : "mail delivery failed");
                return true;
        }
        if (streq(name, "discard")) {
                ret->kind = QMGR_ROUTE_DISCARD;
                ret->text = strdup(*text ? text : "discarded");
                return true;
        }
        if (!qmgr_agent_for_transport(q, name)) {
                ret->kind = QMGR_ROUTE_DEFER;
                ret->dsn = strdup("4.3.5");
                ret->text = strdup_printf("mail transport unavailable: %s", name);
                return true;
        }
        return false;
}

int qmgr_resolve(Qmgr *q, const char *rcpt, QmgrRoute *ret) {
        const char *d = addr_domain(rcpt);
        _cleanup_free_ char *domain = d ? strdup(d) : NULL;
        _cleanup_free_ char *value = NULL, *cname = NULL, *cnh = NULL;
        _cleanup_free_ char *tname = NULL, *tnh = NULL;
        const char *class_transport, *default_nexthop;
        QmgrRoute route = {0};
        bool local = false;
        int r;

        if (d && !domain)
                return -ENOMEM;
        if (domain) {
                size_t n = strlen(ascii_strlower(domain));
                if (n > 0 && domain[n - 1] == '.')
                        domain[n - 1] = 0;
        }

        /* The address class. */
        if (!domain || !*domain)
                local = true;
        else {
                /* Postfix's resolve_local(): the class is mydestination
                 * alone. $myorigin only widens alias lookups (a virtual
                 * domain may well be $myorigin). */
                r = qmgr_domain_list_match(&q->settings.mydestination, domain);
                if (r < 0)
                        return r;
                local = r > 0;
        }
        if (local) {
                class_transport = q->settings.local_transport;
                default_nexthop = q->settings.myhostname;
        } else if ((r = qmgr_domain_list_match(&q->settings.virtual_alias_domains, domain)) != 0) {
                if (r < 0)
                        return r;
                *ret = (QmgrRoute) {
                        .kind = QMGR_ROUTE_ERROR,
                        .dsn = strdup("5.1.1"),
                        .text = strdup("User unknown in virtual alias table"),
                };
                return 0;
        } else if ((r = qmgr_domain_list_match(&q->settings.virtual_mailbox_domains, domain)) != 0) {
                if (r < 0)
                        return r;
                class_transport = q->settings.virtual_transport;
                default_nexthop = domain;
        } else if ((r = qmgr_domain_list_match(&q->settings.relay_domains, domain)) != 0) {
                if (r < 0)
                        return r;
                class_transport = q->settings.relay_transport;
                default_nexthop = *q->settings.relayhost ? q->settings.relayhost : domain;
        } else {
                class_transport = q->settings.default_transport;
                default_nexthop = *q->settings.relayhost ? q->settings.relayhost : domain;
        }
        r = split_transport(class_transport, &cname, &cnh);
        if (r < 0)
                return r;

        /* transport_maps override: empty fields keep the class values. */
        r = transport_lookup(q, rcpt, domain, &value);
        if (r < 0)
                return r;
        if (r > 0) {
                r = split_transport(value, &tname, &tnh);
                if (r < 0)
                        return r;
        }
        route.transport = strdup(tname && *tname ? tname : cname);
        if (!route.transport)
                return -ENOMEM;
        if (tnh && *tnh)
                route.nexthop = strdup(tnh);
        else if (!(tname && *tname) && *cnh)
                route.nexthop = strdup(cnh);
        else if (tname && *tname && !local && domain)
                route.nexthop = strdup(domain);   /* transport(5): empty next hop = the domain */
        else
                route.nexthop = strdup(default_nexthop);
        if (!route.nexthop) {
                qmgr_route_done(&route);
                return -ENOMEM;
        }
        if (special_route(q, route.transport, route.nexthop, &route)) {
                if ((route.kind != QMGR_ROUTE_DISCARD && !route.dsn) || !route.text) {
                        qmgr_route_done(&route);
                        return -ENOMEM;
                }
        } else
                route.kind = QMGR_ROUTE_DELIVER;
        *ret = route;
        return 0;
}
