/* conf.c: Config, the loaded configuration (see conf.h). conf_load() reads
 * main.cf and every services.d/NAME.cf of the configuration directory,
 * applies the selected service's overrides, computes the host-dependent
 * defaults (myhostname, mydomain, mynetworks), then expands and checks every
 * value once, so that a Config that loaded is complete and immutable: the
 * typed getters cannot fail. Problems go into the caller's Diag with
 * file:line; a file with errors gives no Config at all. The parameter table
 * itself is generated (conf-params.c).
 *
 * Syntax lives in conf-parse.c, $name expansion in conf-expand.c, editing
 * files in conf-edit.c. */
#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf-internal.h"
#include "conf.h"
#include "fileio.h"
#include "strutil.h"

/* All expanded values of one Config together may not exceed this. */
#define CONF_EXPAND_TOTAL_MAX (16 * 1024 * 1024)
/* Longest value quoted in a diagnostic. */
#define QUOTE_MAX 200

/* A growable list of names; appending is amortized O(1), unlike strv. */
typedef struct NameList {
        char **v;               /* NULL-terminated when n > 0 */
        size_t n, cap;
} NameList;

static int name_list_add(NameList *l, const char *s, size_t len) {
        char *copy;

        if (l->n + 2 > l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 16;
                char **t = realloc(l->v, cap * sizeof(char *));
                if (!t)
                        return -ENOMEM;
                l->v = t;
                l->cap = cap;
        }
        copy = strndup(s, len);
        if (!copy)
                return -ENOMEM;
        l->v[l->n++] = copy;
        l->v[l->n] = NULL;
        return 0;
}

static int strv_compare(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

/* Sorts the list and drops duplicates; returns a NULL-terminated strv
 * (never NULL unless out of memory) and empties l. */
static char **name_list_finish_sorted(NameList *l) {
        size_t k = 0;
        char **v;

        if (l->n == 0) {
                free(l->v);
                *l = (NameList) {0};
                return calloc(1, sizeof(char *));
        }
        qsort(l->v, l->n, sizeof(char *), strv_compare);
        for (size_t i = 0; i < l->n; i++) {
                if (k > 0 && streq(l->v[k - 1], l->v[i]))
                        free(l->v[i]);
                else
                        l->v[k++] = l->v[i];
        }
        l->v[k] = NULL;
        v = l->v;
        *l = (NameList) {0};
        return v;
}

static void name_list_done(NameList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
        free(l->v);
        *l = (NameList) {0};
}

static bool sorted_contains(char * const *v, size_t n, const char *s) {
        return n > 0 && bsearch(&s, v, n, sizeof(char *), strv_compare);
}

/* Splits a list value (items separated by commas and/or white space,
 * "{...}" kept whole). Returns a NULL-terminated strv or NULL. */
static char **split_list(const char *value) {
        char **l = NULL;
        if (str_split_list(value, false, &l) < 0)
                return NULL;
        return l;
}

static char *mfree_str(char *s) {
        free(s);
        return NULL;
}

enum {
        STATE_NONE,
        STATE_BUSY,     /* being expanded: meeting it again is a loop */
        STATE_DONE,
};

enum {
        VALUE_IN_MAIN_NAMES = 1 << 0,
        VALUE_WARNED_MAIN = 1 << 1,
        VALUE_WARNED_SERVICE = 1 << 2,
};

typedef struct Value {
        char *name;             /* owned for user-defined names; NULL for table entries */
        char *raw;              /* set value, NULL: default */
        ConfSource source;
        const char *file;       /* borrowed from the Config */
        unsigned line;
        unsigned flags;         /* VALUE_* */
        char *expanded;
        int state;              /* STATE_* or a negative errno */
} Value;

typedef struct Service {
        char *name;
        char *path;
        ConfFile *file;         /* NULL when it could not be read */
        char **names;           /* its entries in file order, for postconf -P */
        char **values;
} Service;

typedef union Typed {
        bool b;
        long long i;
        uint64_t u;
} Typed;

struct Config {
        unsigned n_ref;
        char *dir;              /* NULL for conf_load_string() */
        char *service;
        char *main_path;

        Value known[_P_MAX];
        char *computed_default[_P_MAX]; /* postconf -d values of computed defaults */
        char *effective_default[_P_MAX];/* their values in this configuration */
        const char *enum_value[_P_MAX]; /* canonical spelling of enumerated values */
        Typed typed[_P_MAX];
        char **lists[_P_MAX];

        Value *user;            /* user-defined names, sorted by name */
        size_t n_user;
        char **user_known;      /* the referenced ones, sorted */
        char **referenced;      /* every name some value refers to, sorted */
        size_t n_referenced;

        char **main_names;
        Service *services;      /* sorted by name */
        size_t n_services;
        char **service_names;

        size_t expanded_total;
        bool sealed;            /* loaded: nothing changes any more */
};

static const struct {
        const char *name;
        const char *type;
} known_services[] = {
        {"bounce", "unix"},
        {"deliver-local", "unix"},
        {"deliver-remote", "unix"},
        {"pickup", "unix"},
        {"qmgr", "unix"},
        {"smtpd", "inet"},
        {"smtps", "inet"},
        {"submission", "inet"},
};

const char *conf_service_type(const char *service) {
        for (size_t i = 0; i < ELEMENTSOF(known_services); i++)
                if (streq(known_services[i].name, service))
                        return known_services[i].type;
        return NULL;
}

static int param_compare(const void *key, const void *elem) {
        return strcmp(key, ((const ConfParamInfo *) elem)->name);
}

int conf_param_lookup(const char *name) {
        const ConfParamInfo *i = bsearch(name, conf_params, _P_MAX, sizeof(ConfParamInfo),
                                         param_compare);
        return i ? (int) (i - conf_params) : -ENOENT;
}

const char *conf_type_to_string(ConfType t) {
        static const char *const names[_CONF_TYPE_MAX] = {
                [CONF_TYPE_STRING] = "string",
                [CONF_TYPE_BOOL] = "bool",
                [CONF_TYPE_INT] = "int",
                [CONF_TYPE_TIME] = "time",
                [CONF_TYPE_SIZE] = "size",
                [CONF_TYPE_LIST] = "list",
                [CONF_TYPE_MAPLIST] = "maplist",
        };
        return t < _CONF_TYPE_MAX ? names[t] : NULL;
}

const char *conf_default_dir(void) {
        /* secure_getenv(): a set-gid program (sendmail) must not be pointed at
         * a configuration of the caller's choosing. */
        const char *e = secure_getenv("POSTERN_CONFIG_DIR");
        return !isempty(e) ? e : POSTERN_CONFIG_DIR;
}

/* Value checks. */

static bool maplist_item_valid(const char *item) {
        const char *colon = strchr(item, ':');
        if (!colon || colon == item || !colon[1])
                return false;
        for (const char *p = item; p < colon; p++)
                if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
                    !(*p >= '0' && *p <= '9') && *p != '_' && *p != '-')
                        return false;
        return true;
}

static char *describe_expected(const ConfParamInfo *info) {
        switch (info->type) {
        case CONF_TYPE_BOOL:
                return strdup("a boolean (yes or no)");
        case CONF_TYPE_INT:
                return strdup("an integer");
        case CONF_TYPE_TIME:
                return strdup_printf("a time (a number with optional unit s, m, h, d or w; "
                                     "default unit %c)",
                                     info->time_unit ? info->time_unit : 's');
        case CONF_TYPE_SIZE:
                return strdup("a size (bytes, optionally with k/m/g suffix)");
        case CONF_TYPE_MAPLIST:
                return strdup("a list of lookup tables (type:name)");
        default:
                break;
        }
        if (info->choices) {
                StrBuf b = {0};
                bool empty = false;
                int r = strbuf_puts(&b, "one of: ");
                for (const char * const *ch = info->choices; r >= 0 && *ch; ch++) {
                        if (!**ch) {
                                empty = true;
                                continue;
                        }
                        if (b.len > strlen("one of: "))
                                r = strbuf_puts(&b, ", ");
                        if (r >= 0)
                                r = strbuf_puts(&b, *ch);
                }
                if (r >= 0 && empty)
                        r = strbuf_puts(&b, " (or empty)");
                if (r < 0) {
                        strbuf_done(&b);
                        return NULL;
                }
                return strbuf_steal(&b);
        }
        return strdup("text");
}

/* Checks value (expanded) against info; on success fills *typed, *ret_list
 * (for list-like use) and *ret_enum when not NULL. */
static int check_value(const ConfParamInfo *info, const char *value, Typed *typed,
                       const char **ret_enum) {
        _cleanup_free_ char *copy = strdup(value);
        _cleanup_strv_free_ char **items = NULL;
        const char *v;
        Typed t = {0};
        int r = 0;

        if (!copy)
                return -ENOMEM;
        v = strstrip(copy);
        switch (info->type) {
        case CONF_TYPE_BOOL:
                r = conf_parse_bool(v, &t.b);
                break;
        case CONF_TYPE_INT:
                r = conf_parse_int(v, &t.i);
                break;
        case CONF_TYPE_TIME:
                r = conf_parse_time(v, info->time_unit, &t.u);
                break;
        case CONF_TYPE_SIZE:
                r = conf_parse_size(v, &t.u);
                break;
        case CONF_TYPE_MAPLIST:
                items = split_list(v);
                if (!items)
                        return -ENOMEM;
                STRV_FOREACH(i, items)
                        if (!maplist_item_valid(*i))
                                return -EINVAL;
                break;
        case CONF_TYPE_STRING:
                if (info->choices) {
                        r = -EINVAL;
                        for (const char * const *ch = info->choices; *ch; ch++)
                                if (strcaseeq(*ch, v)) {
                                        if (ret_enum)
                                                *ret_enum = *ch;
                                        r = 0;
                                        break;
                                }
                }
                break;
        default:
                break;
        }
        if (r < 0)
                return -EINVAL;
        if (typed)
                *typed = t;
        return 0;
}

int conf_param_check_value(ConfParam p, const char *value, char **ret_expected) {
        int r;

        assert(p < _P_MAX);
        r = check_value(&conf_params[p], value, NULL, NULL);
        if (r == -EINVAL && ret_expected) {
                *ret_expected = describe_expected(&conf_params[p]);
                if (!*ret_expected)
                        return -ENOMEM;
        }
        return r;
}

/* Config life cycle. */

static void value_done(Value *v) {
        free(v->name);
        free(v->raw);
        free(v->expanded);
}

static Config *conf_free(Config *c) {
        if (!c)
                return NULL;
        for (size_t p = 0; p < _P_MAX; p++) {
                value_done(&c->known[p]);
                free(c->computed_default[p]);
                free(c->effective_default[p]);
                strv_free(c->lists[p]);
        }
        for (size_t i = 0; i < c->n_user; i++)
                value_done(&c->user[i]);
        free(c->user);
        strv_free(c->user_known);
        strv_free(c->referenced);
        strv_free(c->main_names);
        for (size_t i = 0; i < c->n_services; i++) {
                free(c->services[i].name);
                free(c->services[i].path);
                conf_file_free(c->services[i].file);
                strv_free(c->services[i].names);
                strv_free(c->services[i].values);
        }
        free(c->services);
        strv_free(c->service_names);
        free(c->dir);
        free(c->service);
        free(c->main_path);
        free(c);
        return NULL;
}
DEFINE_CLEANUP_FUNC(Config, conf_free);

Config *conf_ref(Config *c) {
        if (c)
                c->n_ref++;
        return c;
}

Config *conf_unref(Config *c) {
        if (!c)
                return NULL;
        assert(c->n_ref > 0);
        if (--c->n_ref == 0)
                conf_free(c);
        return NULL;
}

static int value_compare(const void *a, const void *b) {
        return strcmp(((const Value *) a)->name, ((const Value *) b)->name);
}

static Value *find_user(const Config *c, const char *name) {
        Value key = {.name = (char *) name};
        return c->n_user ? bsearch(&key, c->user, c->n_user, sizeof(Value), value_compare) : NULL;
}

/* Finds the Value of name; *ret_param is the table index or -1. */
static Value *find_value(Config *c, const char *name, int *ret_param) {
        int p = conf_param_lookup(name);

        if (ret_param)
                *ret_param = p >= 0 ? p : -1;
        if (p >= 0)
                return &c->known[p];
        return find_user(c, name);
}

static const char *default_of(const Config *c, ConfParam p) {
        if (c->effective_default[p])
                return c->effective_default[p];
        return conf_params[p].def;
}

static const char *raw_of(const Config *c, const Value *v, int p) {
        if (v->raw)
                return v->raw;
        return p >= 0 ? default_of(c, (ConfParam) p) : NULL;
}

/* Expansion with memoizing. Every value is expanded at most once per load;
 * meeting a value that is being expanded is a loop. */
static int lookup_cb(void *userdata, const char *name, bool expanded, unsigned depth,
                     const char **ret) {
        Config *c = userdata;
        _cleanup_free_ char *result = NULL;
        const char *raw;
        Value *v;
        int p, r;

        v = find_value(c, name, &p);
        if (!v)
                return 0;
        raw = raw_of(c, v, p);
        if (!raw)
                return 0;
        if (!expanded || (p >= 0 && (conf_params[p].flags & CONF_FLAG_RAW))) {
                *ret = raw;
                return 1;
        }
        if (v->state == STATE_DONE) {
                *ret = v->expanded;
                return 1;
        }
        if (c->sealed && v->state == STATE_NONE) {
                /* Only unused unknown names are left unexpanded; a loaded
                 * Config is not changed, so they count as their text. */
                *ret = raw;
                return 1;
        }
        if (v->state == STATE_BUSY)
                return -ELOOP;
        if (v->state < 0)
                return v->state;
        v->state = STATE_BUSY;
        r = conf_expand_text(raw, lookup_cb, c, depth, NULL, &result, NULL);
        if (r >= 0 && c->expanded_total + strlen(result) > CONF_EXPAND_TOTAL_MAX)
                r = -E2BIG;
        if (r < 0) {
                v->state = r;
                return r;
        }
        c->expanded_total += strlen(result);
        v->expanded = steal_ptr(result);
        v->state = STATE_DONE;
        *ret = v->expanded;
        return 1;
}

static void flush_expansions(Config *c) {
        for (size_t p = 0; p < _P_MAX; p++) {
                c->known[p].expanded = mfree_str(c->known[p].expanded);
                c->known[p].state = STATE_NONE;
        }
        for (size_t i = 0; i < c->n_user; i++) {
                c->user[i].expanded = mfree_str(c->user[i].expanded);
                c->user[i].state = STATE_NONE;
        }
        c->expanded_total = 0;
}

/* Expands parameter p for computing a default; errors give NULL. */
static char *expand_param_copy(Config *c, ConfParam p) {
        const char *v;
        if (lookup_cb(c, conf_params[p].name, true, 0, &v) <= 0)
                return NULL;
        return strdup(v);
}

/* Computed defaults. */

static char *host_name(void) {
        char buf[HOST_NAME_MAX + 1] = "";
        size_t n;

        if (gethostname(buf, sizeof(buf) - 1) < 0 || !buf[0])
                return strdup("localhost");
        buf[sizeof(buf) - 1] = 0;
        n = strlen(buf);
        while (n > 1 && buf[n - 1] == '.')
                buf[--n] = 0;
        return strdup(buf);
}

static char *domain_of(const char *host) {
        const char *dot = strchr(host, '.');
        return strdup(dot && dot[1] ? dot + 1 : "localdomain");
}

static int network_add(char ***l, int family, const void *addr, unsigned prefix) {
        char text[INET6_ADDRSTRLEN];
        char *item;

        if (!inet_ntop(family, addr, text, sizeof(text)))
                return 0;
        item = family == AF_INET6 ? strdup_printf("[%s]/%u", text, prefix)
                                  : strdup_printf("%s/%u", text, prefix);
        if (!item)
                return -ENOMEM;
        if (strv_contains(*l, item)) {
                free(item);
                return 0;
        }
        return strv_consume(l, item);
}

static unsigned mask_prefix(const unsigned char *mask, size_t n) {
        unsigned bits = 0;
        for (size_t i = 0; i < n; i++)
                for (int b = 7; b >= 0 && (mask[i] >> b) & 1; b--)
                        bits++;
        return bits;
}

static void apply_prefix(unsigned char *addr, size_t n, unsigned prefix) {
        for (size_t i = 0; i < n; i++) {
                unsigned keep = prefix >= 8 ? 8 : prefix;
                addr[i] &= (unsigned char) (0xff00u >> keep);
                prefix -= keep;
        }
}

/* The mynetworks default: the local interface addresses (style host), their
 * networks (subnet), or their class A/B/C networks (class; IPv6 as subnet),
 * IPv4 first, as Postfix lists them. NULL when nothing could be found. */
static char *compute_mynetworks(const char *style, const char *protocols) {
        _cleanup_strv_free_ char **v4 = NULL, **v6 = NULL, **protos = NULL;
        struct ifaddrs *ifa_list = NULL;
        bool want4, want6;
        char *result = NULL;

        protos = split_list(protocols);
        if (!protos)
                return NULL;
        want4 = strv_contains_case(protos, "all") || strv_contains_case(protos, "ipv4");
        want6 = strv_contains_case(protos, "all") || strv_contains_case(protos, "ipv6");
        if (getifaddrs(&ifa_list) < 0)
                return NULL;
        for (struct ifaddrs *ifa = ifa_list; ifa; ifa = ifa->ifa_next) {
                int r = 0;

                if (!ifa->ifa_addr || !(ifa->ifa_flags & IFF_UP))
                        continue;
                if (ifa->ifa_addr->sa_family == AF_INET && want4) {
                        struct in_addr a = ((struct sockaddr_in *) ifa->ifa_addr)->sin_addr;
                        unsigned prefix = 32;
                        if (strcaseeq(style, "subnet") && ifa->ifa_netmask) {
                                const struct sockaddr_in *m = (const void *) ifa->ifa_netmask;
                                prefix = mask_prefix((const unsigned char *) &m->sin_addr, 4);
                        }
                        else if (strcaseeq(style, "class")) {
                                unsigned first = ((const unsigned char *) &a)[0];
                                prefix = first < 128 ? 8 : first < 192 ? 16 : first < 224 ? 24 : 32;
                        }
                        apply_prefix((unsigned char *) &a, 4, prefix);
                        r = network_add(&v4, AF_INET, &a, prefix);
                } else if (ifa->ifa_addr->sa_family == AF_INET6 && want6) {
                        struct in6_addr a = ((struct sockaddr_in6 *) ifa->ifa_addr)->sin6_addr;
                        unsigned prefix = 128;
                        if (!strcaseeq(style, "host") && ifa->ifa_netmask) {
                                const struct sockaddr_in6 *m = (const void *) ifa->ifa_netmask;
                                prefix = mask_prefix((const unsigned char *) &m->sin6_addr, 16);
                        }
                        apply_prefix((unsigned char *) &a, 16, prefix);
                        r = network_add(&v6, AF_INET6, &a, prefix);
                }
                if (r < 0) {
                        freeifaddrs(ifa_list);
                        return NULL;
                }
        }
        freeifaddrs(ifa_list);
        STRV_FOREACH(i, v6)
                if (strv_extend(&v4, *i) < 0)
                        return NULL;
        if (v4)
                result = strv_join(v4, " ");
        return result;
}

static int compute_defaults(Config *c) {
        _cleanup_free_ char *host = host_name(), *expanded = NULL, *style = NULL,
                            *protocols = NULL;

        if (!host)
                return -ENOMEM;

        /* postconf -d: the values for this host, whatever main.cf says. */
        c->computed_default[P_MYHOSTNAME] = strchr(host, '.')
                                                    ? strdup(host)
                                                    : strdup_printf("%s.localdomain", host);
        if (!c->computed_default[P_MYHOSTNAME])
                return -ENOMEM;
        c->computed_default[P_MYDOMAIN] = domain_of(c->computed_default[P_MYHOSTNAME]);
        if (!c->computed_default[P_MYDOMAIN])
                return -ENOMEM;
        c->computed_default[P_MYNETWORKS] = compute_mynetworks(conf_params[P_MYNETWORKS_STYLE].def,
                                                               conf_params[P_INET_PROTOCOLS].def);

        /* The defaults in this configuration, as Postfix's check_myhostname()
         * and check_mydomainname() derive them: a host name without a dot gets
         * .$mydomain when mydomain is set. Expanding here may meet the other
         * name, so each step uses a provisional value and throws away what it
         * expanded. */
        if (!c->known[P_MYHOSTNAME].raw) {
                if (strchr(host, '.'))
                        c->effective_default[P_MYHOSTNAME] = strdup(host);
                else if (c->known[P_MYDOMAIN].raw) {
                        c->effective_default[P_MYHOSTNAME] = strdup_printf("%s.localdomain", host);
                        if (!c->effective_default[P_MYHOSTNAME])
                                return -ENOMEM;
                        expanded = expand_param_copy(c, P_MYDOMAIN);
                        flush_expansions(c);
                        free(c->effective_default[P_MYHOSTNAME]);
                        c->effective_default[P_MYHOSTNAME] = strdup_printf(
                                "%s.%s", host, !isempty(expanded) ? expanded : "localdomain");
                } else
                        c->effective_default[P_MYHOSTNAME] = strdup_printf("%s.localdomain", host);
                if (!c->effective_default[P_MYHOSTNAME])
                        return -ENOMEM;
        }
        if (!c->known[P_MYDOMAIN].raw) {
                c->effective_default[P_MYDOMAIN] = strdup("localdomain");
                if (!c->effective_default[P_MYDOMAIN])
                        return -ENOMEM;
                expanded = mfree_str(expanded);
                expanded = expand_param_copy(c, P_MYHOSTNAME);
                flush_expansions(c);
                free(c->effective_default[P_MYDOMAIN]);
                c->effective_default[P_MYDOMAIN] = domain_of(strempty(expanded));
                if (!c->effective_default[P_MYDOMAIN])
                        return -ENOMEM;
        }
        if (!c->known[P_MYNETWORKS].raw) {
                style = expand_param_copy(c, P_MYNETWORKS_STYLE);
                protocols = expand_param_copy(c, P_INET_PROTOCOLS);
                flush_expansions(c);
                if (style && protocols &&
                    streq(strstrip(style), conf_params[P_MYNETWORKS_STYLE].def) &&
                    streq(protocols, conf_params[P_INET_PROTOCOLS].def)) {
                        /* The common case: the same as for postconf -d. */
                        if (c->computed_default[P_MYNETWORKS] &&
                            !(c->effective_default[P_MYNETWORKS] =
                                      strdup(c->computed_default[P_MYNETWORKS])))
                                return -ENOMEM;
                } else
                        c->effective_default[P_MYNETWORKS] = compute_mynetworks(
                                style ? strstrip(style) : "host", strempty(protocols));
        }
        return 0;
}

/* Building a Config from parsed files. */

static Value *value_for_entry(Config *c, const char *name) {
        int p = conf_param_lookup(name);
        return p >= 0 ? &c->known[p] : find_user(c, name);
}

/* Creates the Values of the user-defined names set in the given files,
 * sorted so that find_user() can bisect. */
static int create_user_values(Config *c, const ConfFile *const *files, size_t n_files) {
        NameList names = {0};
        char **sorted;
        size_t n;

        for (size_t k = 0; k < n_files; k++)
                for (size_t i = 0; files[k] && i < files[k]->n; i++) {
                        const char *name = files[k]->entries[i].name;
                        if (conf_param_lookup(name) < 0 &&
                            name_list_add(&names, name, strlen(name)) < 0) {
                                name_list_done(&names);
                                return -ENOMEM;
                        }
                }
        sorted = name_list_finish_sorted(&names);
        if (!sorted)
                return -ENOMEM;
        n = strv_length(sorted);
        c->user = calloc(n ? n : 1, sizeof(Value));
        if (!c->user) {
                strv_free(sorted);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                c->user[i].name = sorted[i];
        c->n_user = n;
        free(sorted);   /* the strings now belong to the Values */
        return 0;
}

/* Applies the entries of a file as the given source; a name set twice in the
 * same file draws a warning. path is the file's name owned by the Config. */
static int apply_file(Config *c, const ConfFile *f, const char *path, ConfSource source,
                      NameList *main_names, Diag *diags) {
        for (size_t i = 0; i < f->n; i++) {
                const ConfEntry *e = &f->entries[i];
                Value *v = value_for_entry(c, e->name);

                assert(v);
                if (v->raw && v->source == source) {
                        _cleanup_free_ char *old = str_escape_log(v->raw, QUOTE_MAX);
                        if (!old)
                                return -ENOMEM;
                        diag_warning(diags, f->path, e->line,
                                     "overriding earlier entry at line %u: %s = %s", v->line,
                                     e->name, old);
                }
                free(v->raw);
                v->raw = strdup(e->value);
                if (!v->raw)
                        return -ENOMEM;
                v->source = source;
                v->file = path;
                v->line = e->line;
                if (main_names && !(v->flags & VALUE_IN_MAIN_NAMES)) {
                        v->flags |= VALUE_IN_MAIN_NAMES;
                        if (name_list_add(main_names, e->name, strlen(e->name)) < 0)
                                return -ENOMEM;
                }
        }
        return 0;
}

typedef struct RefCollector {
        NameList *names;
        bool plain_only;        /* skip ${name?...} tests */
        int error;
} RefCollector;

static void reference_cb(void *userdata, const char *name, bool conditional) {
        RefCollector *rc = userdata;
        if (rc->plain_only && conditional)
                return;
        if (name_list_add(rc->names, name, strlen(name)) < 0)
                rc->error = -ENOMEM;
}

/* Every name that some value refers to, so that user-defined parameters in
 * use draw no "unknown parameter" warning. */
static int collect_references(Config *c) {
        NameList names = {0};
        RefCollector rc = {.names = &names};
        _cleanup_strv_free_ char **classes = NULL;

        for (size_t p = 0; p < _P_MAX; p++) {
                const char *raw = raw_of(c, &c->known[p], (int) p);
                if (raw)
                        (void) conf_scan_refs(raw, reference_cb, &rc, NULL);
        }
        for (size_t i = 0; i < c->n_user; i++)
                if (c->user[i].raw)
                        (void) conf_scan_refs(c->user[i].raw, reference_cb, &rc, NULL);
        /* Postfix also counts references from master.cf: here, every
         * services.d file, whichever service is being loaded. */
        for (size_t s = 0; s < c->n_services; s++) {
                const ConfFile *f = c->services[s].file;
                for (size_t i = 0; f && i < f->n; i++)
                        (void) conf_scan_refs(f->entries[i].value, reference_cb, &rc, NULL);
        }
        /* Restriction class names are parameters too. */
        classes = split_list(raw_of(c, &c->known[P_SMTPD_RESTRICTION_CLASSES],
                                    P_SMTPD_RESTRICTION_CLASSES));
        if (!classes)
                rc.error = -ENOMEM;
        STRV_FOREACH(i, classes)
                if (name_list_add(&names, *i, strlen(*i)) < 0)
                        rc.error = -ENOMEM;
        if (rc.error < 0) {
                name_list_done(&names);
                return rc.error;
        }
        c->referenced = name_list_finish_sorted(&names);
        if (!c->referenced)
                return -ENOMEM;
        c->n_referenced = strv_length(c->referenced);
        return 0;
}

/* Warns about names set in f that are neither in the table nor used, once
 * per name. */
static void warn_unknown(Config *c, const ConfFile *f, unsigned flag, Diag *diags) {
        for (size_t i = 0; i < f->n; i++) {
                const char *name = f->entries[i].name;
                Value *v;

                if (conf_param_lookup(name) >= 0)
                        continue;
                v = find_user(c, name);
                if (!v || (v->flags & flag))
                        continue;
                v->flags |= flag;
                if (!conf_name_known(c, name))
                        diag_warning(diags, f->path, f->entries[i].line, "unknown parameter: %s",
                                     name);
        }
}

/* "name = value" for diagnostics; NULL on out of memory. */
static char *quote_assignment(const char *name, const char *raw) {
        _cleanup_free_ char *q = str_escape_log(raw, QUOTE_MAX);
        return q ? strdup_printf("%s = %s", name, q) : NULL;
}

static void report_expand_error(Config *c, Diag *diags, const Value *v, const char *what, int r,
                                const char *error) {
        const char *file = v->raw ? v->file : c->main_path;
        unsigned line = v->raw ? v->line : 0;

        if (r == -EINVAL && error)
                diag_error(diags, file, line, "%s: %s", what, error);
        else if (r == -EINVAL)
                diag_error(diags, file, line, "%s: refers to a parameter whose value has errors",
                           what);
        else if (r == -ELOOP)
                diag_error(diags, file, line,
                           "%s: $name expansion loops or nests more than %d levels deep", what,
                           CONF_EXPAND_MAX_DEPTH);
        else if (r == -E2BIG)
                diag_error(diags, file, line, "%s: expands to too much text", what);
        else
                diag_error(diags, file, line, "%s: cannot expand: %s", what, strerror(-r));
}

static bool name_defined(Config *c, const char *name) {
        int p;
        Value *v = find_value(c, name, &p);
        return v && raw_of(c, v, p);
}

/* Checks the $ syntax of a set value, warns about plain references to
 * undefined names, and expands it (memoized). Returns 0 or the negative
 * errno, reported when report is set. */
static int validate_expansion(Config *c, Value *v, const char *name, int p, Diag *diags,
                              bool report) {
        _cleanup_free_ char *what = NULL, *error = NULL;
        const char *raw = raw_of(c, v, p), *result;
        int r;

        what = quote_assignment(name, raw);
        if (!what)
                return -ENOMEM;
        if (v->raw) {
                NameList refs = {0};
                RefCollector rc = {.names = &refs, .plain_only = true};
                _cleanup_strv_free_ char **sorted = NULL;

                r = conf_scan_refs(raw, reference_cb, &rc, &error);
                if (r >= 0 && rc.error < 0)
                        r = rc.error;
                if (r < 0) {
                        name_list_done(&refs);
                        if (r == -ENOMEM)
                                return r;
                        if (report)
                                report_expand_error(c, diags, v, what, r, error);
                        v->state = r;
                        return r;
                }
                sorted = name_list_finish_sorted(&refs);
                if (!sorted)
                        return -ENOMEM;
                /* A raw value's $names belong to the program that expands it. */
                if (report && !(p >= 0 && (conf_params[p].flags & CONF_FLAG_RAW)))
                        STRV_FOREACH(u, sorted)
                                if (!name_defined(c, *u))
                                        diag_warning(diags, v->file, v->line,
                                                     "%s: undefined parameter: %s", what, *u);
        }
        if (p >= 0 && (conf_params[p].flags & CONF_FLAG_RAW)) {
                v->state = STATE_DONE;
                return 0;
        }
        r = lookup_cb(c, name, true, 0, &result);
        if (r < 0) {
                if (r == -ENOMEM)
                        return r;
                if (report)
                        report_expand_error(c, diags, v, what, r, NULL);
                return r;
        }
        return 0;
}

/* Expands every value and checks the table parameters' types. A default
 * fails only through a value it refers to, which has its own error; so
 * problems with defaults are reported only when nothing else was. */
static int validate(Config *c, Diag *diags) {
        size_t errors_before = diags->n_errors;
        Diag defaults = {0};
        int r;

        for (size_t p = 0; p < _P_MAX; p++) {
                Value *v = &c->known[p];
                r = validate_expansion(c, v, conf_params[p].name, (int) p,
                                       v->raw ? diags : &defaults, true);
                if (r == -ENOMEM) {
                        diag_done(&defaults);
                        return r;
                }
        }
        for (size_t i = 0; i < c->n_user; i++) {
                Value *v = &c->user[i];
                /* An unused unknown name is ignored (and warned about), as in
                 * Postfix: its value may be anything, and it is not expanded. */
                if (!conf_name_known(c, v->name))
                        continue;
                r = validate_expansion(c, v, v->name, -1, diags, true);
                if (r == -ENOMEM) {
                        diag_done(&defaults);
                        return r;
                }
        }

        for (size_t p = 0; p < _P_MAX; p++) {
                const ConfParamInfo *info = &conf_params[p];
                Value *v = &c->known[p];
                _cleanup_free_ char *what = NULL, *expected = NULL, *shown = NULL;
                const char *raw = raw_of(c, v, (int) p);

                if (info->flags & CONF_FLAG_RAW) {
                        /* Raw values are expanded by their reader at use
                         * time ($home, $user); lists still split now. */
                        if (raw && !(c->lists[p] = split_list(raw))) {
                                r = -ENOMEM;
                                break;
                        }
                        continue;
                }
                if (v->state != STATE_DONE)
                        continue;
                r = check_value(info, v->expanded, &c->typed[p], &c->enum_value[p]);
                if (r >= 0 && !(c->lists[p] = split_list(v->expanded)))
                        r = -ENOMEM;
                if (r == -ENOMEM)
                        break;
                if (r >= 0)
                        continue;
                what = quote_assignment(info->name, raw);
                expected = describe_expected(info);
                if (!what || !expected) {
                        r = -ENOMEM;
                        break;
                }
                if (!streq(raw, v->expanded)) {
                        _cleanup_free_ char *q = str_escape_log(v->expanded, QUOTE_MAX);
                        shown = q ? strdup_printf(" (expands to \"%s\")", q) : NULL;
                        if (!shown) {
                                r = -ENOMEM;
                                break;
                        }
                }
                if (v->raw)
                        diag_error(diags, v->file, v->line, "%s: expected %s%s", what, expected,
                                   strempty(shown));
                else
                        diag_error(&defaults, c->main_path, 0, "%s (default): expected %s%s", what,
                                   expected, strempty(shown));
        }
        if (r != -ENOMEM && diags->n_errors == errors_before)
                diag_move(diags, &defaults);
        diag_done(&defaults);
        return r == -ENOMEM ? r : 0;
}

typedef struct SortItem {
        DiagEntry entry;
        int rank;
        size_t index;
} SortItem;

/* Whether the value set for parameter p means something other than its
 * default: typed values compare by what they mean ("5m" is "300s", "true"
 * is "yes"), lists item by item, enumerations without case, other strings
 * as expanded. */
static int differs_from_default(Config *c, ConfParam p, bool *ret) {
        const ConfParamInfo *info = &conf_params[p];
        const Value *v = &c->known[p];
        const char *def = default_of(c, p), *enum_def = NULL;
        _cleanup_free_ char *expanded = NULL;
        _cleanup_strv_free_ char **items = NULL;
        Typed t = {0};
        size_t i;
        int r;

        if (streq(v->raw, def) || (info->flags & CONF_FLAG_RAW)) {
                *ret = !streq(v->raw, def);
                return 0;
        }
        r = conf_expand_text(def, lookup_cb, c, 0, NULL, &expanded, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || check_value(info, expanded, &t, &enum_def) < 0) {
                *ret = true;    /* a default that does not work is no match */
                return 0;
        }
        switch (info->type) {
        case CONF_TYPE_BOOL:
                *ret = t.b != c->typed[p].b;
                break;
        case CONF_TYPE_INT:
                *ret = t.i != c->typed[p].i;
                break;
        case CONF_TYPE_TIME:
        case CONF_TYPE_SIZE:
                *ret = t.u != c->typed[p].u;
                break;
        case CONF_TYPE_LIST:
        case CONF_TYPE_MAPLIST:
                items = split_list(expanded);
                if (!items)
                        return -ENOMEM;
                for (i = 0; items[i] && c->lists[p][i]; i++)
                        if (!streq(items[i], c->lists[p][i]))
                                break;
                *ret = items[i] || c->lists[p][i];
                break;
        default:
                if (info->choices)
                        *ret = !enum_def || !c->enum_value[p] || !streq(enum_def, c->enum_value[p]);
                else
                        *ret = !streq(strstrip(expanded), strempty(v->expanded));
                break;
        }
        return 0;
}

/* Warns, at the place where it is set, about every parameter postern does
 * not implement that is set to a value other than its default; values with
 * errors were reported already. */
static int warn_unimplemented(Config *c, Diag *diags) {
        for (size_t p = 0; p < _P_MAX; p++) {
                const Value *v = &c->known[p];
                bool differs;
                int r;

                if (!(conf_params[p].flags & CONF_FLAG_UNIMPLEMENTED) || !v->raw || !c->lists[p])
                        continue;
                r = differs_from_default(c, (ConfParam) p, &differs);
                if (r < 0)
                        return r;
                if (differs)
                        diag_warning(diags, v->file, v->line,
                                     "%s is not implemented by postern; the setting has no effect",
                                     conf_params[p].name);
        }
        return 0;
}

static int sort_item_compare(const void *a, const void *b) {
        const SortItem *x = a, *y = b;
        if (x->rank != y->rank)
                return x->rank < y->rank ? -1 : 1;
        if (x->entry.line != y->entry.line) {
                if (x->entry.line == 0 || y->entry.line == 0)
                        return x->entry.line == 0 ? 1 : -1;
                return x->entry.line < y->entry.line ? -1 : 1;
        }
        return x->index < y->index ? -1 : x->index > y->index;
}

/* Puts the diagnostics from index start on in file and line order: main.cf
 * first, then the service file; entries without a line last. */
static void sort_diagnostics(Diag *d, size_t start, const char *main_path) {
        size_t n = d->n - start;
        SortItem *items;

        if (n < 2)
                return;
        items = calloc(n, sizeof(SortItem));
        if (!items)
                return;         /* unsorted is still correct */
        for (size_t i = 0; i < n; i++) {
                const DiagEntry *e = &d->entries[start + i];
                items[i] = (SortItem) {
                        .entry = *e,
                        .rank = !e->file ? 2 : streq(e->file, main_path) ? 0 : 1,
                        .index = i,
                };
        }
        qsort(items, n, sizeof(SortItem), sort_item_compare);
        for (size_t i = 0; i < n; i++)
                d->entries[start + i] = items[i].entry;
        free(items);
}

static int service_compare(const void *a, const void *b) {
        return strcmp(((const Service *) a)->name, ((const Service *) b)->name);
}

static void services_free(Service *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(s[i].name);
                free(s[i].path);
                conf_file_free(s[i].file);
                strv_free(s[i].names);
                strv_free(s[i].values);
        }
        free(s);
}

/* Fills the postconf -P view of a service file. */
static int service_overrides_build(Service *s) {
        NameList names = {0}, values = {0};

        for (size_t i = 0; s->file && i < s->file->n; i++) {
                const ConfEntry *e = &s->file->entries[i];
                if (name_list_add(&names, e->name, strlen(e->name)) < 0 ||
                    name_list_add(&values, e->value, strlen(e->value)) < 0) {
                        name_list_done(&names);
                        name_list_done(&values);
                        return -ENOMEM;
                }
        }
        s->names = names.v ? names.v : calloc(1, sizeof(char *));
        s->values = values.v ? values.v : calloc(1, sizeof(char *));
        return s->names && s->values ? 0 : -ENOMEM;
}

/* Builds a Config from main (borrowed) and services (taken over, also on
 * failure). Diagnostics go to diags, which must not be NULL. */
static int config_build(const char *dir, const char *service, const char *main_path,
                        const ConfFile *main, Service *services, size_t n_services, Diag *diags,
                        Config **ret) {
        _cleanup_(conf_freep) Config *c = NULL;
        const ConfFile *service_file = NULL, *files[2];
        const char *service_path = NULL;
        NameList main_names = {0}, service_names = {0};
        size_t errors_before = diags->n_errors, diags_before = diags->n;
        int r;

        c = calloc(1, sizeof(Config));
        if (!c) {
                services_free(services, n_services);
                return -ENOMEM;
        }
        c->n_ref = 1;
        c->services = services;
        c->n_services = n_services;
        if ((dir && !(c->dir = strdup(dir))) || (service && !(c->service = strdup(service))) ||
            !(c->main_path = strdup(main_path)))
                return -ENOMEM;
        for (size_t i = 0; i < n_services; i++) {
                if (service && streq(c->services[i].name, service)) {
                        service_file = c->services[i].file;
                        service_path = c->services[i].path;
                }
                r = service_overrides_build(&c->services[i]);
                if (r >= 0)
                        r = name_list_add(&service_names, c->services[i].name,
                                          strlen(c->services[i].name));
                if (r < 0) {
                        name_list_done(&service_names);
                        return r;
                }
        }
        c->service_names = service_names.v ? service_names.v : calloc(1, sizeof(char *));
        if (!c->service_names)
                return -ENOMEM;

        files[0] = main;
        files[1] = service_file;
        r = create_user_values(c, files, 2);
        if (r >= 0)
                r = apply_file(c, main, c->main_path, CONF_SOURCE_MAIN, &main_names, diags);
        /* config_directory is always the directory in use; like Postfix's -c,
         * a directory other than the default shows as set in main.cf. */
        if (r >= 0 && dir) {
                Value *v = &c->known[P_CONFIG_DIRECTORY];
                if (v->raw || !streq(dir, POSTERN_CONFIG_DIR)) {
                        free(v->raw);
                        v->raw = strdup(dir);
                        if (!v->raw)
                                r = -ENOMEM;
                        v->source = CONF_SOURCE_MAIN;
                        v->file = c->main_path;
                        if (r >= 0 && !(v->flags & VALUE_IN_MAIN_NAMES)) {
                                v->flags |= VALUE_IN_MAIN_NAMES;
                                r = name_list_add(&main_names, "config_directory",
                                                  strlen("config_directory"));
                        }
                }
        }
        if (r >= 0 && service_file)
                r = apply_file(c, service_file, service_path, CONF_SOURCE_SERVICE, NULL, diags);
        c->main_names = main_names.v ? main_names.v : calloc(1, sizeof(char *));
        if (!c->main_names)
                r = -ENOMEM;
        if (r < 0) {
                if (!main_names.v || c->main_names != main_names.v)
                        name_list_done(&main_names);
                return r;
        }

        r = compute_defaults(c);
        if (r >= 0)
                r = collect_references(c);
        if (r < 0)
                return r;
        {
                NameList known = {0};
                for (size_t i = 0; i < c->n_user; i++)
                        if (conf_name_known(c, c->user[i].name) &&
                            name_list_add(&known, c->user[i].name, strlen(c->user[i].name)) < 0) {
                                name_list_done(&known);
                                return -ENOMEM;
                        }
                c->user_known = name_list_finish_sorted(&known);
                if (!c->user_known)
                        return -ENOMEM;
        }
        warn_unknown(c, main, VALUE_WARNED_MAIN, diags);
        if (service_file)
                warn_unknown(c, service_file, VALUE_WARNED_SERVICE, diags);
        r = validate(c, diags);
        if (r >= 0)
                r = warn_unimplemented(c, diags);
        if (r < 0)
                return r;
        sort_diagnostics(diags, diags_before, c->main_path);
        if (diags->n_errors > errors_before)
                return -EINVAL;
        c->sealed = true;
        *ret = steal_ptr(c);
        return 0;
}

/* Reads and parses one file; problems are reported in diags except a
 * missing file (-ENOENT), which the caller judges. */
static int read_conf_file(const char *path, Diag *diags, ConfFile **ret) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        r = file_read_all(path, CONF_FILE_MAX, &text, &len);
        if (r == -EFBIG) {
                diag_error(diags, path, 0, "file is larger than %d bytes", CONF_FILE_MAX);
                return -EINVAL;
        }
        if (r < 0) {
                if (r != -ENOENT)
                        diag_error(diags, path, 0, "cannot read: %s", strerror(-r));
                return r;
        }
        if (strlen(text) != len) {
                unsigned line = 1;
                for (const char *p = text; *p; p++)
                        if (*p == '\n')
                                line++;
                diag_error(diags, path, line, "file contains a NUL byte");
                return -EINVAL;
        }
        return conf_file_parse(text, path, diags, ret);
}

static ConfFile *conf_file_copy(const ConfFile *f) {
        _cleanup_(conf_file_freep) ConfFile *copy = calloc(1, sizeof(ConfFile));

        if (!copy || !(copy->path = strdup(f->path)))
                return NULL;
        copy->entries = calloc(f->n ? f->n : 1, sizeof(ConfEntry));
        if (!copy->entries)
                return NULL;
        for (; copy->n < f->n; copy->n++) {
                ConfEntry *e = &copy->entries[copy->n];
                e->name = strdup(f->entries[copy->n].name);
                e->value = strdup(f->entries[copy->n].value);
                e->line = f->entries[copy->n].line;
                if (!e->name || !e->value) {
                        copy->n++;
                        return NULL;
                }
        }
        return steal_ptr(copy);
}

static int services_copy(const Service *from, size_t n, Service **ret) {
        Service *s = calloc(n ? n : 1, sizeof(Service));

        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                s[i].name = strdup(from[i].name);
                s[i].path = strdup(from[i].path);
                if (from[i].file)
                        s[i].file = conf_file_copy(from[i].file);
                if (!s[i].name || !s[i].path || (from[i].file && !s[i].file)) {
                        services_free(s, n);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

/* Reads services.d: every NAME.cf file, sorted by name. Diagnostics about
 * files other than want's (every file's when want is NULL) are dropped. */
static int read_services(const char *dir, const char *want, Diag *diags, Service **ret,
                         size_t *ret_n) {
        _cleanup_free_ char *sdir = path_join(dir, "services.d");
        Service *s = NULL;
        size_t n = 0;
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (!sdir)
                return -ENOMEM;
        d = opendir(sdir);      /* glibc opens directories with O_CLOEXEC */
        if (!d) {
                if (errno == ENOENT || errno == ENOTDIR) {
                        *ret = NULL;
                        *ret_n = 0;
                        return 0;
                }
                r = -errno;
                diag_error(diags, sdir, 0, "cannot read directory: %s", strerror(-r));
                return r;
        }
        while ((errno = 0, de = readdir(d))) {
                Diag local = {0};
                Service *t, *cur;
                size_t len = strlen(de->d_name);
                bool report;

                /* Skips hidden files, editor backups and our own temporary files. */
                if (de->d_name[0] == '.' || len <= 3 || !endswith(de->d_name, ".cf"))
                        continue;
                t = realloc(s, (n + 1) * sizeof(Service));
                if (!t) {
                        r = -ENOMEM;
                        break;
                }
                s = t;
                cur = &s[n++];
                *cur = (Service) {
                        .name = strndup(de->d_name, len - 3),
                        .path = path_join(sdir, de->d_name),
                };
                if (!cur->name || !cur->path) {
                        r = -ENOMEM;
                        break;
                }
                report = !want || streq(want, cur->name);
                r = read_conf_file(cur->path, &local, &cur->file);
                if (report && r >= 0 && !conf_service_type(cur->name))
                        diag_warning(&local, cur->path, 0,
                                     "unknown service \"%s\": no postern service reads this file",
                                     cur->name);
                if (report)
                        diag_move(diags, &local);
                else
                        diag_done(&local);
                if (r == -ENOMEM)
                        break;
                r = 0;
        }
        if (r >= 0 && errno != 0)
                r = -errno;
        closedir(d);
        if (r < 0) {
                services_free(s, n);
                return r;
        }
        if (n > 0)
                qsort(s, n, sizeof(Service), service_compare);
        *ret = s;
        *ret_n = n;
        return 0;
}

/* Checks every service file in the context of its service, keeping only
 * the diagnostics about that file. */
static int validate_services(const char *dir, const ConfFile *main, const Config *c,
                             Diag *diags) {
        for (size_t i = 0; i < c->n_services; i++) {
                _cleanup_(conf_unrefp) Config *sc = NULL;
                Service *copy;
                Diag local = {0};
                int r;

                if (!c->services[i].file)
                        continue;
                r = services_copy(c->services, c->n_services, &copy);
                if (r < 0)
                        return r;
                r = config_build(dir, c->services[i].name, c->main_path, main, copy,
                                 c->n_services, &local, &sc);
                if (r == -ENOMEM) {
                        diag_done(&local);
                        return r;
                }
                for (size_t k = 0; k < local.n; k++) {
                        const DiagEntry *e = &local.entries[k];
                        if (e->file && streq(e->file, c->services[i].path))
                                diag_add(diags, e->level, e->file, e->line, "%s",
                                         strempty(e->text));
                }
                diag_done(&local);
        }
        return 0;
}

static int load(const char *dir, const char *service, Diag *diags, Config **ret) {
        _cleanup_(conf_file_freep) ConfFile *main = NULL;
        _cleanup_free_ char *main_path = NULL;
        _cleanup_(conf_unrefp) Config *c = NULL;
        Service *services = NULL;
        size_t n_services = 0, errors_before = diags->n_errors;
        int r;

        if (!dir)
                dir = conf_default_dir();
        main_path = path_join(dir, "main.cf");
        if (!main_path)
                return -ENOMEM;
        r = read_conf_file(main_path, diags, &main);
        if (r == -ENOENT)
                diag_error(diags, main_path, 0, "cannot read: %s", strerror(ENOENT));
        if (r < 0)
                return r;
        r = read_services(dir, service, diags, &services, &n_services);
        if (r < 0)
                return r;
        r = config_build(dir, service, main_path, main, services, n_services, diags, &c);
        if (r < 0 && r != -EINVAL)
                return r;
        if (r >= 0 && !service) {
                r = validate_services(dir, main, c, diags);
                if (r < 0)
                        return r;
        }
        if (diags->n_errors > errors_before)
                return -EINVAL;
        *ret = steal_ptr(c);
        return 0;
}

int conf_load(const char *dir, const char *service, Diag *diags, Config **ret) {
        Diag local = {0};
        int r;

        r = load(dir, service, diags ? diags : &local, ret);
        diag_done(&local);
        return r;
}

int conf_load_string(const char *text, const char *file, Diag *diags, Config **ret) {
        _cleanup_(conf_file_freep) ConfFile *main = NULL;
        _cleanup_(conf_unrefp) Config *c = NULL;
        Diag local = {0};
        Diag *d = diags ? diags : &local;
        size_t errors_before = d->n_errors;
        int r;

        if (!file)
                file = "main.cf";
        r = conf_file_parse(text, file, d, &main);
        if (r >= 0)
                r = config_build(NULL, NULL, file, main, NULL, 0, d, &c);
        if (r >= 0 && d->n_errors > errors_before)
                r = -EINVAL;
        diag_done(&local);
        if (r < 0)
                return r;
        *ret = steal_ptr(c);
        return 0;
}

/* Accessors. */

const char *conf_dir(const Config *c) {
        return c->dir ? c->dir : conf_default_dir();
}

const char *conf_service(const Config *c) {
        return c->service;
}

const char *conf_get_str(Config *c, ConfParam p) {
        assert(p < _P_MAX);
        if (c->enum_value[p])
                return c->enum_value[p];
        if (conf_params[p].flags & CONF_FLAG_RAW)
                return raw_of(c, &c->known[p], (int) p);
        return strempty(c->known[p].expanded);
}

bool conf_get_bool(Config *c, ConfParam p) {
        assert(p < _P_MAX && conf_params[p].type == CONF_TYPE_BOOL);
        return c->typed[p].b;
}

long long conf_get_int(Config *c, ConfParam p) {
        assert(p < _P_MAX && conf_params[p].type == CONF_TYPE_INT);
        return c->typed[p].i;
}

uint64_t conf_get_time(Config *c, ConfParam p) {
        assert(p < _P_MAX && conf_params[p].type == CONF_TYPE_TIME);
        return c->typed[p].u;
}

uint64_t conf_get_size(Config *c, ConfParam p) {
        assert(p < _P_MAX && conf_params[p].type == CONF_TYPE_SIZE);
        return c->typed[p].u;
}

char * const *conf_get_list(Config *c, ConfParam p) {
        static char *const empty[] = {NULL};
        assert(p < _P_MAX);
        return c->lists[p] ? c->lists[p] : empty;
}

const char *conf_get_default(Config *c, ConfParam p) {
        assert(p < _P_MAX);
        if (c->computed_default[p])
                return c->computed_default[p];
        return conf_params[p].def;
}

const char *conf_get_by_name(Config *c, const char *name, bool expanded) {
        int p;
        Value *v = find_value(c, name, &p);

        if (!v)
                return NULL;
        if (p < 0 && !v->raw)
                return NULL;
        if (expanded && v->state == STATE_DONE && v->expanded &&
            !(p >= 0 && (conf_params[p].flags & CONF_FLAG_RAW)))
                return v->expanded;
        return raw_of(c, v, p);
}

const char *conf_get_raw(Config *c, const char *name, ConfSource *ret_source) {
        int p;
        Value *v = find_value(c, name, &p);
        const char *raw;

        if (!v)
                return NULL;
        raw = raw_of(c, v, p);
        if (raw && ret_source)
                *ret_source = v->raw ? v->source : CONF_SOURCE_DEFAULT;
        return raw;
}

int conf_get_location(Config *c, const char *name, const char **ret_file, unsigned *ret_line) {
        Value *v = find_value(c, name, NULL);

        if (!v || !v->raw)
                return 0;
        if (ret_file)
                *ret_file = v->file;
        if (ret_line)
                *ret_line = v->line;
        return 1;
}

bool conf_name_known(const Config *c, const char *name) {
        return conf_param_lookup(name) >= 0 ||
               sorted_contains(c->referenced, c->n_referenced, name);
}

char * const *conf_user_names(const Config *c) {
        return c->user_known;
}

int conf_expand(Config *c, const char *value, char **ret) {
        return conf_expand_text(value, lookup_cb, c, 0, NULL, ret, NULL);
}

char * const *conf_main_names(const Config *c) {
        return c->main_names;
}

char * const *conf_service_names(const Config *c) {
        return c->service_names;
}

int conf_service_overrides(const Config *c, const char *service, char * const **ret_names,
                           char * const **ret_values) {
        for (size_t i = 0; i < c->n_services; i++)
                if (streq(c->services[i].name, service)) {
                        if (ret_names)
                                *ret_names = c->services[i].names;
                        if (ret_values)
                                *ret_values = c->services[i].values;
                        return 0;
                }
        return -ENOENT;
}
