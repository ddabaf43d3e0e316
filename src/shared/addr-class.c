/* addr-class.c: address classes, the resolver's rewriting of routing
 * operators below local domains, and recipient validation (see
 * addr-class.h). Entry points: domain_list_new()/domain_list_match(),
 * addr_classifier_new(), addr_resolve(), addr_domain_class(),
 * addr_recipient_listed(). Tables that cannot be opened at start make
 * every lookup that needs them fail (-EIO), so that the SMTP server defers
 * instead of accepting unknown recipients. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "addr-class.h"
#include "addr.h"
#include "fileio.h"
#include "map.h"
#include "strutil.h"

#define LIST_FILE_MAX (4 * 1024 * 1024)
#define RESOLVE_DEPTH_MAX 10

static char *mfree_str(char *p) {
        free(p);
        return NULL;
}

const char *addr_class_to_string(AddrClass c) {
        static const char *const names[_ADDR_CLASS_MAX] = {
                [ADDR_CLASS_LOCAL] = "local",
                [ADDR_CLASS_VIRTUAL_ALIAS] = "virtual alias",
                [ADDR_CLASS_VIRTUAL_MAILBOX] = "virtual mailbox",
                [ADDR_CLASS_RELAY] = "relay",
                [ADDR_CLASS_DEFAULT] = "default",
        };
        return c >= 0 && c < _ADDR_CLASS_MAX ? names[c] : "unknown";
}

/* Tables of a map-list parameter. A table that failed to open is kept as
 * an error that every lookup returns. */
typedef struct LazyMaps {
        MapList *maps;
        int error;
        bool empty;
} LazyMaps;

static int lazy_maps_open(char * const *specs, Diag *diags, LazyMaps *ret) {
        int r;

        *ret = (LazyMaps) {.empty = !specs || !specs[0]};
        if (ret->empty)
                return 0;
        r = map_list_open(specs, MAP_FLAG_FOLD_KEYS, diags, &ret->maps);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                ret->error = -EIO;
        return 0;
}

static int lazy_maps_lookup(LazyMaps *m, const char *key) {
        if (m->empty)
                return 0;
        if (m->error)
                return m->error;
        return map_list_lookup(m->maps, key, NULL);
}

static void lazy_maps_done(LazyMaps *m) {
        m->maps = map_list_free(m->maps);
}

struct DomainList {
        char **names;           /* lower case; ".parent" patterns keep the dot */
        LazyMaps tables;
        char **table_specs;
        bool parent_match;
};

static int domain_list_add(DomainList *l, const char *e, Diag *diags) {
        if (e[0] == '/') {
                _cleanup_free_ char *text = NULL;
                _cleanup_strv_free_ char **items = NULL;
                char *line, *save = NULL;
                int r = file_read_all(e, LIST_FILE_MAX, &text, NULL);
                if (r < 0) {
                        diag_error(diags, e, 0, "cannot read list file: %s", strerror(-r));
                        return r;
                }
                for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        char *hash = strchr(line, '#');
                        _cleanup_strv_free_ char **words = NULL;
                        if (hash)
                                *hash = 0;
                        if (str_split_list(line, false, &words) < 0)
                                return -ENOMEM;
                        STRV_FOREACH(w, words) {
                                /* No nesting of files in files. */
                                if ((*w)[0] == '/')
                                        continue;
                                r = domain_list_add(l, *w, diags);
                                if (r < 0)
                                        return r;
                        }
                }
                return 0;
        }
        if (strchr(e, ':') && e[0] != '[')
                return strv_extend(&l->table_specs, e);
        {
                char *n = strdup(e);
                size_t len;
                if (!n)
                        return -ENOMEM;
                ascii_strlower(n);
                len = strlen(n);
                if (len > 1 && n[len - 1] == '.')
                        n[len - 1] = 0;
                return strv_consume(&l->names, n);
        }
}

int domain_list_new(char * const *entries, bool parent_match, Diag *diags, DomainList **ret) {
        _cleanup_(domain_list_freep) DomainList *l = NULL;
        int r;

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->parent_match = parent_match;
        STRV_FOREACH(e, entries) {
                r = domain_list_add(l, *e, diags);
                if (r < 0)
                        return r;
        }
        r = lazy_maps_open(l->table_specs, diags, &l->tables);
        if (r < 0)
                return r;
        *ret = steal_ptr(l);
        return 0;
}

bool domain_list_empty(const DomainList *l) {
        return !l || (!l->names && l->tables.empty);
}

int domain_list_match(DomainList *l, const char *domain) {
        size_t dlen;
        int r;

        if (!l || isempty(domain))
                return 0;
        dlen = strlen(domain);
        STRV_FOREACH(n, l->names) {
                const char *e = *n;
                bool sub = l->parent_match;
                size_t elen;
                if (strcaseeq(e, domain))
                        return 1;
                if (e[0] == '.') {
                        e++;
                        sub = true;
                }
                if (!sub)
                        continue;
                elen = strlen(e);
                if (dlen > elen + 1 && domain[dlen - elen - 1] == '.' &&
                    strcaseeq(domain + dlen - elen, e))
                        return 1;
        }
        if (l->tables.empty)
                return 0;
        {
                _cleanup_free_ char *key = strdup(domain);
                if (!key)
                        return -ENOMEM;
                ascii_strlower(key);
                r = lazy_maps_lookup(&l->tables, key);
                if (r != 0)
                        return r;
                /* Parent domains: "example.com" with parent matching,
                 * ".example.com" otherwise. Literals have no parents. */
                if (key[0] == '[')
                        return 0;
                for (char *p = strchr(key, '.'); p; p = strchr(p + 1, '.')) {
                        r = lazy_maps_lookup(&l->tables, l->parent_match ? p + 1 : p);
                        if (r != 0)
                                return r;
                }
        }
        return 0;
}

DomainList *domain_list_free(DomainList *l) {
        if (!l)
                return NULL;
        strv_free(l->names);
        strv_free(l->table_specs);
        lazy_maps_done(&l->tables);
        free(l);
        return NULL;
}

struct AddrClassifier {
        Config *config;
        DomainList *mydestination, *virtual_alias_domains, *virtual_mailbox_domains,
                *relay_domains;
        InetAddr *own;
        size_t n_own;
        LazyMaps local_rcpt, virtual_alias, virtual_mailbox, relay_rcpt;
        char *myorigin;
        char *delimiter;
        bool percent_hack, swap_bangpath, dequote;
        int code_local, code_alias, code_mailbox, code_relay;
};

static int own_add(AddrClassifier *a, const InetAddr *x) {
        InetAddr *n = realloc(a->own, (a->n_own + 1) * sizeof(InetAddr));
        if (!n)
                return -ENOMEM;
        a->own = n;
        a->own[a->n_own++] = *x;
        return 0;
}

static int own_add_interfaces(AddrClassifier *a) {
        struct ifaddrs *ifs = NULL;
        int r = 0;

        if (getifaddrs(&ifs) < 0)
                return -errno;
        for (struct ifaddrs *i = ifs; i && r >= 0; i = i->ifa_next) {
                InetAddr x = {0};
                if (!i->ifa_addr)
                        continue;
                if (i->ifa_addr->sa_family == AF_INET) {
                        x.family = AF_INET;
                        memcpy(x.bytes, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, 4);
                } else if (i->ifa_addr->sa_family == AF_INET6) {
                        x.family = AF_INET6;
                        memcpy(x.bytes, &((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, 16);
                } else
                        continue;
                r = own_add(a, &x);
        }
        freeifaddrs(ifs);
        return r;
}

static int own_add_list(AddrClassifier *a, char * const *l) {
        int r;
        STRV_FOREACH(i, l) {
                InetAddr x;
                if (strcaseeq(*i, "all")) {
                        r = own_add_interfaces(a);
                        if (r == -ENOMEM)
                                return r;
                } else if (strcaseeq(*i, "loopback-only")) {
                        (void) inet_addr_parse("127.0.0.1", &x);
                        if (own_add(a, &x) < 0)
                                return -ENOMEM;
                        (void) inet_addr_parse("::1", &x);
                        if (own_add(a, &x) < 0)
                                return -ENOMEM;
                } else if (inet_addr_parse_bracketed(*i, &x) == 0) {
                        if (own_add(a, &x) < 0)
                                return -ENOMEM;
                }
                /* Host names in inet_interfaces are resolved by Postfix at
                 * start; postern takes its sockets from systemd and leaves
                 * them out here. */
        }
        return 0;
}

static bool param_parent_match(Config *c, const char *name) {
        return strv_contains(conf_get_list(c, P_PARENT_DOMAIN_MATCHES_SUBDOMAINS), name);
}

int addr_classifier_new(Config *c, Diag *diags, AddrClassifier **ret) {
        _cleanup_(addr_classifier_freep) AddrClassifier *a = NULL;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->config = conf_ref(c);
        if ((r = domain_list_new(conf_get_list(c, P_MYDESTINATION), false, diags,
                                 &a->mydestination)) < 0 ||
            (r = domain_list_new(conf_get_list(c, P_VIRTUAL_ALIAS_DOMAINS), false, diags,
                                 &a->virtual_alias_domains)) < 0 ||
            (r = domain_list_new(conf_get_list(c, P_VIRTUAL_MAILBOX_DOMAINS), false, diags,
                                 &a->virtual_mailbox_domains)) < 0 ||
            (r = domain_list_new(conf_get_list(c, P_RELAY_DOMAINS),
                                 param_parent_match(c, "relay_domains"), diags,
                                 &a->relay_domains)) < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if ((r = own_add_list(a, conf_get_list(c, P_INET_INTERFACES))) < 0 ||
            (r = own_add_list(a, conf_get_list(c, P_PROXY_INTERFACES))) < 0)
                return r;
        if ((r = lazy_maps_open(conf_get_list(c, P_LOCAL_RECIPIENT_MAPS), diags,
                                &a->local_rcpt)) < 0 ||
            (r = lazy_maps_open(conf_get_list(c, P_VIRTUAL_ALIAS_MAPS), diags,
                                &a->virtual_alias)) < 0 ||
            (r = lazy_maps_open(conf_get_list(c, P_VIRTUAL_MAILBOX_MAPS), diags,
                                &a->virtual_mailbox)) < 0 ||
            (r = lazy_maps_open(conf_get_list(c, P_RELAY_RECIPIENT_MAPS), diags,
                                &a->relay_rcpt)) < 0)
                return r;
        a->myorigin = strdup(strempty(conf_get_str(c, P_MYORIGIN)));
        a->delimiter = strdup(strempty(conf_get_str(c, P_RECIPIENT_DELIMITER)));
        if (!a->myorigin || !a->delimiter)
                return -ENOMEM;
        a->percent_hack = conf_get_bool(c, P_ALLOW_PERCENT_HACK);
        a->swap_bangpath = conf_get_bool(c, P_SWAP_BANGPATH);
        a->dequote = conf_get_bool(c, P_RESOLVE_DEQUOTED_ADDRESS);
        a->code_local = (int) conf_get_int(c, P_UNKNOWN_LOCAL_RECIPIENT_REJECT_CODE);
        a->code_alias = (int) conf_get_int(c, P_UNKNOWN_VIRTUAL_ALIAS_REJECT_CODE);
        a->code_mailbox = (int) conf_get_int(c, P_UNKNOWN_VIRTUAL_MAILBOX_REJECT_CODE);
        a->code_relay = (int) conf_get_int(c, P_UNKNOWN_RELAY_RECIPIENT_REJECT_CODE);
        *ret = steal_ptr(a);
        return 0;
}

AddrClassifier *addr_classifier_free(AddrClassifier *a) {
        if (!a)
                return NULL;
        domain_list_free(a->mydestination);
        domain_list_free(a->virtual_alias_domains);
        domain_list_free(a->virtual_mailbox_domains);
        domain_list_free(a->relay_domains);
        lazy_maps_done(&a->local_rcpt);
        lazy_maps_done(&a->virtual_alias);
        lazy_maps_done(&a->virtual_mailbox);
        lazy_maps_done(&a->relay_rcpt);
        free(a->own);
        free(a->myorigin);
        free(a->delimiter);
        conf_unref(a->config);
        free(a);
        return NULL;
}

bool addr_is_own_address(AddrClassifier *a, const InetAddr *x) {
        InetAddr v4;
        if (inet_addr_unmap_v4(x, &v4))
                x = &v4;
        for (size_t i = 0; i < a->n_own; i++)
                if (a->own[i].family == x->family &&
                    memcmp(a->own[i].bytes, x->bytes, inet_family_bits(x->family) / 8) == 0)
                        return true;
        return false;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" to an address. */
static int literal_parse(const char *domain, InetAddr *ret) {
        _cleanup_free_ char *in = NULL;
        size_t len = strlen(domain);
        const char *v6;

        if (len < 3 || domain[0] != '[' || domain[len - 1] != ']')
                return -EINVAL;
        in = strndup(domain + 1, len - 2);
        if (!in)
                return -ENOMEM;
        v6 = startswith_no_case(in, "IPv6:");
        return inet_addr_parse(v6 ? v6 : in, ret);
}

int addr_domain_class(AddrClassifier *a, const char *domain, AddrClass *ret) {
        int r;

        if (domain[0] == '[') {
                InetAddr x;
                /* A literal is ours only when it names our own address;
                 * other literals are relaying like any foreign domain. */
                *ret = literal_parse(domain, &x) == 0 && addr_is_own_address(a, &x)
                               ? ADDR_CLASS_LOCAL
                               : ADDR_CLASS_DEFAULT;
                return 0;
        }
        if ((r = domain_list_match(a->mydestination, domain)) != 0) {
                if (r < 0)
                        return r;
                *ret = ADDR_CLASS_LOCAL;
                return 0;
        }
        if ((r = domain_list_match(a->virtual_alias_domains, domain)) != 0) {
                if (r < 0)
                        return r;
                *ret = ADDR_CLASS_VIRTUAL_ALIAS;
                return 0;
        }
        if ((r = domain_list_match(a->virtual_mailbox_domains, domain)) != 0) {
                if (r < 0)
                        return r;
                *ret = ADDR_CLASS_VIRTUAL_MAILBOX;
                return 0;
        }
        if ((r = domain_list_match(a->relay_domains, domain)) != 0) {
                if (r < 0)
                        return r;
                *ret = ADDR_CLASS_RELAY;
                return 0;
        }
        *ret = ADDR_CLASS_DEFAULT;
        return 0;
}

void addr_resolved_done(AddrResolved *r) {
        free(r->address);
        free(r->localpart);
        free(r->domain);
        *r = (AddrResolved) {0};
}

/* Splits addr at the last '@' outside quotes. The local part is returned
 * unquoted when dequote is set (RFC 5321 4.1.2 quoted-string). */
static int split_address(const char *addr, bool dequote, char **ret_local, char **ret_domain) {
        const char *dom = addr_domain(addr);
        size_t llen = dom ? (size_t) (dom - 1 - addr) : strlen(addr);
        _cleanup_free_ char *local = NULL, *domain = NULL;

        if (dequote) {
                _cleanup_(strbuf_done) StrBuf b = {0};
                bool quoted = false;
                for (size_t i = 0; i < llen; i++) {
                        if (quoted && addr[i] == '\\' && i + 1 < llen) {
                                if (strbuf_putc(&b, addr[++i]) < 0)
                                        return -ENOMEM;
                        } else if (addr[i] == '"')
                                quoted = !quoted;
                        else if (strbuf_putc(&b, addr[i]) < 0)
                                return -ENOMEM;
                }
                local = strbuf_steal(&b);
        } else
                local = strndup(addr, llen);
        domain = strdup(dom ? dom : "");
        if (!local || !domain)
                return -ENOMEM;
        ascii_strlower(domain);
        {
                size_t dl = strlen(domain);
                /* A trailing dot ends a fully qualified name, but not "..". */
                if (dl > 1 && domain[dl - 1] == '.' && domain[dl - 2] != '.')
                        domain[dl - 1] = 0;
        }
        *ret_local = steal_ptr(local);
        *ret_domain = steal_ptr(domain);
        return 0;
}

int addr_resolve(AddrClassifier *a, const char *addr, AddrResolved *ret) {
        _cleanup_free_ char *cur = NULL, *local = NULL, *domain = NULL;
        AddrClass klass = ADDR_CLASS_DEFAULT;
        bool rewritten = false;
        int r;

        if (!addr_domain(addr) && !isempty(a->myorigin))
                cur = strdup_printf("%s@%s", addr, a->myorigin);
        else
                cur = strdup(addr);
        if (!cur)
                return -ENOMEM;
        for (unsigned depth = 0;; depth++) {
                char *p;
                local = mfree_str(local);
                domain = mfree_str(domain);
                r = split_address(cur, a->dequote, &local, &domain);
                if (r < 0)
                        return r;
                if (!*domain) {
                        klass = ADDR_CLASS_LOCAL;
                        break;
                }
                r = addr_domain_class(a, domain, &klass);
                if (r < 0)
                        return r;
                if (klass != ADDR_CLASS_LOCAL || depth >= RESOLVE_DEPTH_MAX)
                        break;
                /* Below a local domain, routing operators in the local part
                 * name the real destination (Postfix's resolve_local loop):
                 * "user@remote"@local, site!user@local, user%remote@local. */
                if (strchr(local, '@')) {
                        if (!a->dequote)
                                break;
                        free(cur);
                        cur = steal_ptr(local);
                } else if (a->swap_bangpath && (p = strchr(local, '!')) && p != local && p[1]) {
                        *p = 0;
                        free(cur);
                        cur = strdup_printf("%s@%s", p + 1, local);
                } else if (a->percent_hack && (p = strrchr(local, '%')) && p != local && p[1]) {
                        *p = '@';
                        free(cur);
                        cur = steal_ptr(local);
                } else
                        break;
                if (!cur)
                        return -ENOMEM;
                rewritten = true;
        }
        *ret = (AddrResolved) {
                .klass = klass,
                .rewritten = rewritten,
                /* Relaying to a third host through a destination we only
                 * forward to is never authorized by the destination. */
                .routed = klass != ADDR_CLASS_LOCAL && strpbrk(local, "@!%") != NULL,
        };
        ret->address = *domain ? strdup_printf("%s@%s", local, domain) : strdup(local);
        if (!ret->address) {
                addr_resolved_done(ret);
                return -ENOMEM;
        }
        ret->localpart = steal_ptr(local);
        ret->domain = steal_ptr(domain);
        return 0;
}

/* Looks key up in m, then with the address extension stripped. */
static int lookup_ext(AddrClassifier *a, LazyMaps *m, const char *local, const char *domain) {
        _cleanup_free_ char *key = NULL, *base = NULL;
        int r;

        key = *domain ? strdup_printf("%s@%s", local, domain) : strdup(local);
        if (!key)
                return -ENOMEM;
        r = lazy_maps_lookup(m, key);
        if (r != 0)
                return r;
        if (!isempty(a->delimiter)) {
                size_t n = strcspn(local, a->delimiter);
                if (n > 0 && local[n]) {
                        base = strndup(local, n);
                        if (!base)
                                return -ENOMEM;
                        return lookup_ext(a, m, base, domain);
                }
        }
        return 0;
}

int addr_recipient_listed(AddrClassifier *a, const AddrResolved *res, const char **ret_table,
                          int *ret_code) {
        _cleanup_free_ char *catchall = NULL;
        int r;

        catchall = strdup_printf("@%s", res->domain);
        if (!catchall)
                return -ENOMEM;
        /* Aliases apply to every domain: a listed alias is valid anywhere. */
        r = lookup_ext(a, &a->virtual_alias, res->localpart, res->domain);
        if (r == 0 && *res->domain)
                r = lazy_maps_lookup(&a->virtual_alias, catchall);
        if (r != 0)
                return r;
        switch (res->klass) {
        case ADDR_CLASS_LOCAL:
                if (a->local_rcpt.empty)
                        return 1;
                r = lookup_ext(a, &a->local_rcpt, res->localpart, res->domain);
                if (r == 0)
                        r = lookup_ext(a, &a->local_rcpt, res->localpart, "");
                if (r != 0)
                        return r;
                *ret_table = "local recipient";
                *ret_code = a->code_local;
                return 0;
        case ADDR_CLASS_VIRTUAL_ALIAS:
                *ret_table = "virtual alias";
                *ret_code = a->code_alias;
                return 0;
        case ADDR_CLASS_VIRTUAL_MAILBOX:
                if (a->virtual_mailbox.empty)
                        return 1;
                r = lookup_ext(a, &a->virtual_mailbox, res->localpart, res->domain);
                if (r == 0)
                        r = lazy_maps_lookup(&a->virtual_mailbox, catchall);
                if (r != 0)
                        return r;
                *ret_table = "virtual mailbox";
                *ret_code = a->code_mailbox;
                return 0;
        case ADDR_CLASS_RELAY:
                if (a->relay_rcpt.empty)
                        return 1;
                r = lookup_ext(a, &a->relay_rcpt, res->localpart, res->domain);
                if (r == 0)
                        r = lazy_maps_lookup(&a->relay_rcpt, catchall);
                if (r != 0)
                        return r;
                *ret_table = "relay recipient";
                *ret_code = a->code_relay;
                return 0;
        default:
                return 1;
        }
}
