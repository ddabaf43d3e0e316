/* smtpd-restrict.c: the restriction engine (see smtpd-restrict.h). The
 * configuration side parses restriction lists into arrays of Elem, opens
 * access tables once per spec, and builds the mynetworks matcher; the
 * evaluation side is RestrictEval, a small interpreter with a stack of
 * list frames. A step returns DUNNO, OK, REJECT, PENDING (waiting for DNS
 * or a policy server: the same step runs again when the answer is in the
 * session cache) or PUSHED (a restriction class or an access-table result
 * naming restrictions was entered).
 *
 * Entry points: restrict_engine_new(), restrict_session_new(),
 * restrict_eval_start(). Replies, DSN codes and texts follow Postfix's
 * smtpd_check.c. Left out: permit_mx_backup, reject_unverified_*,
 * permit_tls_clientcerts and check_*_{mx,ns}_access (configurations naming
 * them get a configuration error rather than silent acceptance).
 *
 * The sender login checks (reject_*sender_login_mismatch) look the MAIL
 * FROM address up in smtpd_sender_login_maps as Postfix's mail_addr_find()
 * does: user@domain, user@domain without the address extension, the local
 * part alone when the domain is $myorigin or a local domain, then
 * @domain. The value lists the SASL login names that own the address. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "addr-class.h"
#include "addr.h"
#include "fileio.h"
#include "log.h"
#include "map.h"
#include "smtpd-policy.h"
#include "smtpd-restrict.h"
#include "strutil.h"

#define EVAL_DEPTH_MAX 16
#define SESSION_DNS_CACHE_MAX 64

typedef enum Kind {
        K_PERMIT,
        K_REJECT,
        K_DEFER,
        K_DEFER_IF_PERMIT,
        K_DEFER_IF_REJECT,
        K_WARN_IF_REJECT,
        K_PERMIT_MYNETWORKS,
        K_PERMIT_SASL,
        K_PERMIT_INET_INTERFACES,
        K_REJECT_UNAUTH_DEST,
        K_DEFER_UNAUTH_DEST,
        K_PERMIT_AUTH_DEST,
        K_REJECT_UNAUTH_PIPELINING,
        K_REJECT_PLAINTEXT,
        K_REJECT_INVALID_HELO,
        K_REJECT_NON_FQDN_HELO,
        K_REJECT_UNKNOWN_HELO,
        K_REJECT_NON_FQDN_SENDER,
        K_REJECT_NON_FQDN_RCPT,
        K_REJECT_UNKNOWN_SENDER_DOMAIN,
        K_REJECT_UNKNOWN_RCPT_DOMAIN,
        K_REJECT_UNKNOWN_CLIENT,
        K_REJECT_UNKNOWN_REVERSE_CLIENT,
        K_REJECT_RBL_CLIENT,
        K_REJECT_RHSBL_CLIENT,
        K_REJECT_RHSBL_SENDER,
        K_REJECT_RHSBL_HELO,
        K_REJECT_RHSBL_RCPT,
        K_PERMIT_DNSWL_CLIENT,
        K_REJECT_UNLISTED_RCPT,
        K_REJECT_UNLISTED_SENDER,
        K_CHECK_CLIENT_ACCESS,
        K_CHECK_HELO_ACCESS,
        K_CHECK_SENDER_ACCESS,
        K_CHECK_RCPT_ACCESS,
        K_CHECK_POLICY,
        K_REJECT_SENDER_LOGIN_MISMATCH,
        K_REJECT_AUTH_SENDER_LOGIN_MISMATCH,
        K_REJECT_KNOWN_SENDER_LOGIN_MISMATCH,
        K_REJECT_UNAUTH_SENDER_LOGIN_MISMATCH,
        K_CLASS,
} Kind;

static const struct {
        const char *name;
        Kind kind;
        bool arg;
} kind_table[] = {
        {"permit", K_PERMIT, false},
        {"reject", K_REJECT, false},
        {"defer", K_DEFER, false},
        {"defer_if_permit", K_DEFER_IF_PERMIT, false},
        {"defer_if_reject", K_DEFER_IF_REJECT, false},
        {"warn_if_reject", K_WARN_IF_REJECT, false},
        {"permit_mynetworks", K_PERMIT_MYNETWORKS, false},
        {"permit_sasl_authenticated", K_PERMIT_SASL, false},
        {"permit_inet_interfaces", K_PERMIT_INET_INTERFACES, false},
        {"reject_unauth_destination", K_REJECT_UNAUTH_DEST, false},
        {"defer_unauth_destination", K_DEFER_UNAUTH_DEST, false},
        {"permit_auth_destination", K_PERMIT_AUTH_DEST, false},
        {"reject_unauth_pipelining", K_REJECT_UNAUTH_PIPELINING, false},
        {"reject_plaintext_session", K_REJECT_PLAINTEXT, false},
        {"reject_invalid_helo_hostname", K_REJECT_INVALID_HELO, false},
        {"reject_invalid_hostname", K_REJECT_INVALID_HELO, false},
        {"reject_non_fqdn_helo_hostname", K_REJECT_NON_FQDN_HELO, false},
        {"reject_non_fqdn_hostname", K_REJECT_NON_FQDN_HELO, false},
        {"reject_unknown_helo_hostname", K_REJECT_UNKNOWN_HELO, false},
        {"reject_unknown_hostname", K_REJECT_UNKNOWN_HELO, false},
        {"reject_non_fqdn_sender", K_REJECT_NON_FQDN_SENDER, false},
        {"reject_non_fqdn_recipient", K_REJECT_NON_FQDN_RCPT, false},
        {"reject_unknown_sender_domain", K_REJECT_UNKNOWN_SENDER_DOMAIN, false},
        {"reject_unknown_recipient_domain", K_REJECT_UNKNOWN_RCPT_DOMAIN, false},
        {"reject_unknown_client_hostname", K_REJECT_UNKNOWN_CLIENT, false},
        {"reject_unknown_client", K_REJECT_UNKNOWN_CLIENT, false},
        {"reject_unknown_reverse_client_hostname", K_REJECT_UNKNOWN_REVERSE_CLIENT, false},
        {"reject_rbl_client", K_REJECT_RBL_CLIENT, true},
        {"reject_rhsbl_client", K_REJECT_RHSBL_CLIENT, true},
        {"reject_rhsbl_sender", K_REJECT_RHSBL_SENDER, true},
        {"reject_rhsbl_helo", K_REJECT_RHSBL_HELO, true},
        {"reject_rhsbl_recipient", K_REJECT_RHSBL_RCPT, true},
        {"permit_dnswl_client", K_PERMIT_DNSWL_CLIENT, true},
        {"reject_unlisted_recipient", K_REJECT_UNLISTED_RCPT, false},
        {"check_recipient_maps", K_REJECT_UNLISTED_RCPT, false},
        {"reject_unlisted_sender", K_REJECT_UNLISTED_SENDER, false},
        {"check_client_access", K_CHECK_CLIENT_ACCESS, true},
        {"check_helo_access", K_CHECK_HELO_ACCESS, true},
        {"check_sender_access", K_CHECK_SENDER_ACCESS, true},
        {"check_recipient_access", K_CHECK_RCPT_ACCESS, true},
        {"check_policy_service", K_CHECK_POLICY, true},
        {"reject_sender_login_mismatch", K_REJECT_SENDER_LOGIN_MISMATCH, false},
        {"reject_authenticated_sender_login_mismatch", K_REJECT_AUTH_SENDER_LOGIN_MISMATCH,
         false},
        {"reject_known_sender_login_mismatch", K_REJECT_KNOWN_SENDER_LOGIN_MISMATCH, false},
        {"reject_unauthenticated_sender_login_mismatch", K_REJECT_UNAUTH_SENDER_LOGIN_MISMATCH,
         false},
};

typedef struct Elem {
        Kind kind;
        char *text;             /* as written, with its argument */
        char *arg;
        size_t table;           /* access tables: index into RestrictEngine.tables */
        size_t cls;             /* K_CLASS: index into RestrictEngine.classes */
        char *rbl_domain;
        char *rbl_filter;       /* "127.0.0.2" or "127.0.0.[2..4]"; NULL: any 127.x */
} Elem;

typedef struct List {
        char *name;
        Elem *elems;
        size_t n;
} List;

typedef struct Table {
        char *spec;
        MapList *maps;
        int error;
} Table;

typedef enum NetKind { NET_PREFIX, NET_TABLE, NET_NAME } NetKind;

typedef struct NetEntry {
        NetKind kind;
        bool negate;
        InetPrefix prefix;
        char *text;
        size_t table;
} NetEntry;

typedef struct NetList {
        NetEntry *e;
        size_t n;
        bool has_names;         /* host or .domain entries: needs the client name */
} NetList;

struct RestrictEngine {
        unsigned n_ref;
        Config *config;
        AddrClassifier *ac;
        int ac_error;
        List lists[_RESTRICT_LIST_MAX];
        List *classes;
        size_t n_classes;
        Table *tables;
        size_t n_tables;
        NetList mynetworks, exceptions, sasl_exceptions;
        bool broken;
        bool relay_safe;
        bool delay_reject;
        bool reject_unlisted_rcpt, reject_unlisted_sender;
        bool soft_bounce;
        bool access_parent;
        int reject_code, defer_code, map_reject_code, map_defer_code, relay_code,
                non_fqdn_code, bad_name_code, unk_addr_code, unk_client_code, unk_name_code,
                rbl_code;
        char *rbl_reply;
        size_t rbl_reply_table;
        bool have_rbl_reply_maps;
        MapList *login_maps;    /* smtpd_sender_login_maps, NULL when empty */
        int login_maps_error;
        char *myorigin;
        char *delimiter;
        char *null_key;
        uint64_t policy_timeout;
        char *policy_default;
        char *policy_context;
        Diag *diags;            /* during construction only */
};

typedef struct DnsEntry {
        char *name;
        DnsType type;
        int r;
        bool nxdomain;
        InetAddr *addrs;
        size_t n_addrs;
        char **texts;           /* TXT strings, PTR and MX names */
} DnsEntry;

struct RestrictSession {
        /* The client's names when known without DNS (restrict_session_set_names()). */
        bool have_names;
        char *name, *reverse_name;
        RestrictNameStatus name_status, reverse_status;
        DnsEntry cache[SESSION_DNS_CACHE_MAX];
        size_t n_cache, next;
};

typedef struct Frame {
        List *list;
        size_t idx;
        List *owned;            /* a list parsed from an access-table result */
} Frame;

enum {
        STEP_DUNNO,
        STEP_OK,
        STEP_REJECT,
        STEP_PENDING,
        STEP_PUSHED,
};

struct RestrictEval {
        RestrictEngine *en;
        RestrictSession *sess;
        sd_event *event;
        DnsResolver *dns;
        RestrictStage stage;
        char *service, *helo, *sender, *recipient, *sasl_username, *sasl_method, *queue_id,
                *protocol;
        InetAddr addr;
        bool have_addr;
        char *addr_str;
        bool tls, smtputf8, ill_pipelining;
        unsigned rcpt_count;
        uint64_t size;
        RestrictListId seq[_RESTRICT_LIST_MAX];
        size_t n_seq, seq_idx;
        Frame stack[EVAL_DEPTH_MAX];
        size_t depth;
        const char *top_name;   /* parameter name of the current top-level list */
        bool warn_if_reject;
        char *defer_if_permit;
        char *defer_if_reject;
        bool post_done;
        bool rcpt_checked, sender_checked;
        RestrictResult result;
        bool finished;
        DnsQuery *query;
        bool starting_query, sync_answer;
        PolicyQuery *policy;
        const Elem *policy_elem;
        int policy_r;
        char *policy_action;
        bool policy_have;
        RestrictTraceFunc trace;
        RestrictDoneFunc done;
        void *userdata;
        bool running;
};

static const char *const list_params[_RESTRICT_LIST_MAX] = {
        [RESTRICT_LIST_CLIENT] = "smtpd_client_restrictions",
        [RESTRICT_LIST_HELO] = "smtpd_helo_restrictions",
        [RESTRICT_LIST_SENDER] = "smtpd_sender_restrictions",
        [RESTRICT_LIST_RELAY] = "smtpd_relay_restrictions",
        [RESTRICT_LIST_RECIPIENT] = "smtpd_recipient_restrictions",
        [RESTRICT_LIST_DATA] = "smtpd_data_restrictions",
        [RESTRICT_LIST_EOD] = "smtpd_end_of_data_restrictions",
};

static const ConfParam list_conf[_RESTRICT_LIST_MAX] = {
        [RESTRICT_LIST_CLIENT] = P_SMTPD_CLIENT_RESTRICTIONS,
        [RESTRICT_LIST_HELO] = P_SMTPD_HELO_RESTRICTIONS,
        [RESTRICT_LIST_SENDER] = P_SMTPD_SENDER_RESTRICTIONS,
        [RESTRICT_LIST_RELAY] = P_SMTPD_RELAY_RESTRICTIONS,
        [RESTRICT_LIST_RECIPIENT] = P_SMTPD_RECIPIENT_RESTRICTIONS,
        [RESTRICT_LIST_DATA] = P_SMTPD_DATA_RESTRICTIONS,
        [RESTRICT_LIST_EOD] = P_SMTPD_END_OF_DATA_RESTRICTIONS,
};

const char *restrict_list_param(RestrictListId id) {
        return id >= 0 && id < _RESTRICT_LIST_MAX ? list_params[id] : NULL;
}

/* ---- configuration ---- */

static void list_done(List *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->elems[i].text);
                free(l->elems[i].arg);
                free(l->elems[i].rbl_domain);
                free(l->elems[i].rbl_filter);
        }
        free(l->elems);
        free(l->name);
        *l = (List) {0};
}

static List *list_free(List *l) {
        if (l) {
                list_done(l);
                free(l);
        }
        return NULL;
}

/* Opens (once) the table spec and returns its index. A table that does not
 * open is kept with its error: lookups in it fail, and the check defers. */
static int engine_table(RestrictEngine *en, const char *spec, size_t *ret) {
        Table *n;
        char *specs[2] = {(char *) spec, NULL};
        int r;

        for (size_t i = 0; i < en->n_tables; i++)
                if (streq(en->tables[i].spec, spec)) {
                        *ret = i;
                        return 0;
                }
        n = realloc(en->tables, (en->n_tables + 1) * sizeof(Table));
        if (!n)
                return -ENOMEM;
        en->tables = n;
        n = &en->tables[en->n_tables];
        *n = (Table) {.spec = strdup(spec)};
        if (!n->spec)
                return -ENOMEM;
        r = map_list_open(specs, MAP_FLAG_FOLD_KEYS, en->diags, &n->maps);
        if (r == -ENOMEM) {
                free(n->spec);
                return r;
        }
        if (r < 0) {
                diag_error(en->diags, NULL, 0, "cannot open table %s: %s", spec, strerror(-r));
                n->error = -EIO;
        }
        *ret = en->n_tables++;
        return 0;
}

static int table_lookup(RestrictEngine *en, size_t t, const char *key, char **ret) {
        Table *tb = &en->tables[t];
        if (tb->error)
                return tb->error;
        return map_list_lookup(tb->maps, key, ret);
}

static Kind kind_lookup(const char *name, bool *ret_arg, bool *ret_found) {
        for (size_t i = 0; i < ELEMENTSOF(kind_table); i++)
                if (strcaseeq(kind_table[i].name, name)) {
                        *ret_arg = kind_table[i].arg;
                        *ret_found = true;
                        return kind_table[i].kind;
                }
        *ret_found = false;
        return K_PERMIT;
}

static int class_index(RestrictEngine *en, const char *name, size_t *ret) {
        for (size_t i = 0; i < en->n_classes; i++)
                if (streq(en->classes[i].name, name)) {
                        *ret = i;
                        return 1;
                }
        return 0;
}

/* Parses list items into l. where names the list in diagnostics. Returns 0,
 * -EINVAL (reported), -ENOMEM. */
static int list_parse(RestrictEngine *en, char * const *items, const char *where, List *l) {
        size_t n = strv_length(items);
        int ret = 0, r;

        l->elems = calloc(n ? n : 1, sizeof(Elem));
        if (!l->elems)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                Elem *e = &l->elems[l->n];
                bool arg, found;
                Kind k = kind_lookup(items[i], &arg, &found);
                size_t cls;

                *e = (Elem) {0};
                if (!found) {
                        if (class_index(en, items[i], &cls)) {
                                e->kind = K_CLASS;
                                e->cls = cls;
                                e->text = strdup(items[i]);
                                if (!e->text)
                                        return -ENOMEM;
                                l->n++;
                                continue;
                        }
                        diag_error(en->diags, NULL, 0, "%s: unknown restriction \"%s\"", where,
                                   items[i]);
                        ret = -EINVAL;
                        continue;
                }
                e->kind = k;
                if (arg) {
                        if (i + 1 >= n) {
                                diag_error(en->diags, NULL, 0, "%s: restriction \"%s\" needs an "
                                           "argument", where, items[i]);
                                ret = -EINVAL;
                                continue;
                        }
                        e->arg = strdup(items[++i]);
                        e->text = strdup_printf("%s %s", items[i - 1], items[i]);
                } else
                        e->text = strdup(items[i]);
                if (!e->text || (arg && !e->arg))
                        return -ENOMEM;
                ascii_strlower(e->text + 0);
                if (arg)
                        memcpy(e->text + strlen(items[i - 1]) + 1, e->arg, strlen(e->arg));
                switch (k) {
                case K_CHECK_CLIENT_ACCESS:
                case K_CHECK_HELO_ACCESS:
                case K_CHECK_SENDER_ACCESS:
                case K_CHECK_RCPT_ACCESS:
                        if (!strchr(e->arg, ':')) {
                                diag_error(en->diags, NULL, 0, "%s: \"%s\" needs a type:table "
                                           "argument", where, e->text);
                                free(e->text);
                                free(e->arg);
                                ret = -EINVAL;
                                continue;
                        }
                        r = engine_table(en, e->arg, &e->table);
                        if (r < 0)
                                return r;
                        break;
                case K_REJECT_RBL_CLIENT:
                case K_REJECT_RHSBL_CLIENT:
                case K_REJECT_RHSBL_SENDER:
                case K_REJECT_RHSBL_HELO:
                case K_REJECT_RHSBL_RCPT:
                case K_PERMIT_DNSWL_CLIENT: {
                        const char *eq = strchr(e->arg, '=');
                        e->rbl_domain = eq ? strndup(e->arg, (size_t) (eq - e->arg)) : strdup(e->arg);
                        if (!e->rbl_domain)
                                return -ENOMEM;
                        if (eq && !(e->rbl_filter = strdup(eq + 1)))
                                return -ENOMEM;
                        break;
                }
                default:
                        break;
                }
                l->n++;
        }
        return ret;
}

/* mynetworks-style lists: addresses and prefixes, [IPv6] forms, type:table
 * entries (looked up with the client address), /file/name entries, host
 * and .domain names (matched against the verified client name, as
 * Postfix's namadr lists do). smtpd_client_event_limit_exceptions is
 * matched when the connection arrives, before the client's name is looked
 * up: a name there could never match, so it is ignored with a warning. */
static int net_list_add(RestrictEngine *en, NetList *l, const char *param, const char *item,
                        unsigned depth) {
        NetEntry *n, e = {0};
        InetPrefixError pe;
        int r;

        if (item[0] == '!') {
                e.negate = true;
                item++;
        }
        if (item[0] == '/' && depth == 0) {
                _cleanup_free_ char *text = NULL;
                _cleanup_strv_free_ char **words = NULL;
                r = file_read_all(item, 4 * 1024 * 1024, &text, NULL);
                if (r < 0) {
                        diag_error(en->diags, NULL, 0, "%s: cannot read %s: %s", param, item,
                                   strerror(-r));
                        return -EINVAL;
                }
                for (char *p = text; (p = strchr(p, '#'));)
                        while (*p && *p != '\n')
                                *p++ = ' ';
                if (str_split_list(text, false, &words) < 0)
                        return -ENOMEM;
                STRV_FOREACH(w, words) {
                        r = net_list_add(en, l, param, *w, depth + 1);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        if (inet_prefix_parse(item, false, &e.prefix, &pe) == 0)
                e.kind = NET_PREFIX;
        else if (pe == INET_PREFIX_HOST_BITS) {
                _cleanup_free_ char *net = inet_prefix_to_string(&e.prefix);
                diag_warning(en->diags, NULL, 0, "%s: %s has host bits set; using %s", param,
                             item, strempty(net));
                e.kind = NET_PREFIX;
        } else if (item[0] != '[' && strchr(item, ':') && strcspn(item, ":") < 32) {
                char type[32];
                size_t tl = strcspn(item, ":");
                memcpy(type, item, tl);
                type[tl] = 0;
                if (!map_type_known(type)) {
                        diag_error(en->diags, NULL, 0, "%s: bad entry \"%s\": %s", param, item,
                                   inet_prefix_error_to_string(pe));
                        return -EINVAL;
                }
                e.kind = NET_TABLE;
                r = engine_table(en, item, &e.table);
                if (r < 0)
                        return r;
        } else if (strchr(item, ':') || strchr(item, '[') || strchr(item, '/') ||
                   strspn(item, "0123456789.") == strlen(item)) {
                diag_error(en->diags, NULL, 0, "%s: bad entry \"%s\": %s", param, item,
                           inet_prefix_error_to_string(pe));
                return -EINVAL;
        } else if (streq(param, "smtpd_client_event_limit_exceptions")) {
                diag_warning(en->diags, NULL, 0, "%s: host name \"%s\" is ignored: the limits "
                             "apply before the client's name is known; specify its address or "
                             "network", param, item);
                return 0;
        } else {
                e.kind = NET_NAME;
                l->has_names = true;
        }
        e.text = strdup(item);
        if (!e.text)
                return -ENOMEM;
        n = realloc(l->e, (l->n + 1) * sizeof(NetEntry));
        if (!n) {
                free(e.text);
                return -ENOMEM;
        }
        l->e = n;
        l->e[l->n++] = e;
        return 0;
}

static int net_list_build(RestrictEngine *en, char * const *items, const char *param, NetList *l) {
        int ret = 0;
        STRV_FOREACH(i, items) {
                int r = net_list_add(en, l, param, *i, 0);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        ret = r;
        }
        return ret;
}

static void net_list_done(NetList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->e[i].text);
        free(l->e);
        *l = (NetList) {0};
}

static bool name_matches(const char *pattern, const char *name) {
        size_t nl = strlen(name), pl;
        if (strcaseeq(pattern, name))
                return true;
        if (pattern[0] != '.')
                return false;
        pl = strlen(pattern);
        return nl > pl && strcaseeq(name + nl - pl, pattern);
}

/* > 0 match (*ret_entry, borrowed, names the entry), 0 no match, < 0 a
 * table failed. name may be NULL (not known). */
static int net_list_match(RestrictEngine *en, NetList *l, const InetAddr *a, const char *name,
                          const char **ret_entry) {
        _cleanup_free_ char *astr = NULL;
        InetAddr v4;

        if (!a)
                return 0;
        if (inet_addr_unmap_v4(a, &v4))
                a = &v4;
        for (size_t i = 0; i < l->n; i++) {
                NetEntry *e = &l->e[i];
                bool m = false;
                int r;
                switch (e->kind) {
                case NET_PREFIX:
                        m = inet_prefix_contains(&e->prefix, a);
                        break;
                case NET_TABLE:
                        if (!astr && !(astr = inet_addr_to_string(a)))
                                return -ENOMEM;
                        r = table_lookup(en, e->table, astr, NULL);
                        if (r < 0)
                                return r;
                        m = r > 0;
                        break;
                case NET_NAME:
                        m = name && !streq(name, "unknown") && name_matches(e->text, name);
                        break;
                }
                if (m) {
                        if (e->negate)
                                return 0;
                        if (ret_entry)
                                *ret_entry = e->text;
                        return 1;
                }
        }
        return 0;
}

static bool list_has(const List *l, Kind k) {
        for (size_t i = 0; i < l->n; i++)
                if (l->elems[i].kind == k)
                        return true;
        return false;
}

/* Postfix refuses to run without a restriction that can say no to
 * relaying in the relay or recipient lists. */
static bool relay_list_safe(const List *l) {
        return list_has(l, K_REJECT_UNAUTH_DEST) || list_has(l, K_DEFER_UNAUTH_DEST) ||
               list_has(l, K_REJECT) || list_has(l, K_DEFER) || list_has(l, K_DEFER_IF_PERMIT);
}

int restrict_engine_new(Config *c, Diag *diags, RestrictEngine **ret) {
        _cleanup_(restrict_engine_unrefp) RestrictEngine *en = NULL;
        char * const *classes = conf_get_list(c, P_SMTPD_RESTRICTION_CLASSES);
        Diag local = {0};
        int r;

        en = calloc(1, sizeof(*en));
        if (!en)
                return -ENOMEM;
        en->n_ref = 1;
        en->config = conf_ref(c);
        en->diags = diags ? diags : &local;
        r = addr_classifier_new(c, en->diags, &en->ac);
        if (r == -ENOMEM)
                goto fail;
        if (r < 0)
                en->ac_error = -EIO;
        /* Classes first (by name), then their contents: a class may name
         * another class. */
        en->classes = calloc(strv_length(classes) + 1, sizeof(List));
        if (!en->classes) {
                r = -ENOMEM;
                goto fail;
        }
        STRV_FOREACH(cl, classes) {
                if (!(en->classes[en->n_classes].name = strdup(*cl))) {
                        r = -ENOMEM;
                        goto fail;
                }
                en->n_classes++;
        }
        for (size_t i = 0; i < en->n_classes; i++) {
                const char *v = conf_get_by_name(c, en->classes[i].name, true);
                _cleanup_strv_free_ char **items = NULL;
                if (!v) {
                        diag_error(en->diags, NULL, 0, "smtpd_restriction_classes: class \"%s\" "
                                   "is not defined", en->classes[i].name);
                        en->broken = true;
                        continue;
                }
                if (str_split_list(v, true, &items) < 0) {
                        r = -ENOMEM;
                        goto fail;
                }
                r = list_parse(en, items, en->classes[i].name, &en->classes[i]);
                if (r == -ENOMEM)
                        goto fail;
                if (r < 0)
                        en->broken = true;
        }
        for (RestrictListId id = 0; id < _RESTRICT_LIST_MAX; id++) {
                r = list_parse(en, conf_get_list(c, list_conf[id]), list_params[id],
                               &en->lists[id]);
                if (r == -ENOMEM)
                        goto fail;
                if (r < 0)
                        en->broken = true;
                en->lists[id].name = strdup(list_params[id]);
                if (!en->lists[id].name) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        r = net_list_build(en, conf_get_list(c, P_MYNETWORKS), "mynetworks", &en->mynetworks);
        if (r == -ENOMEM)
                goto fail;
        if (r < 0)
                en->broken = true;
        r = net_list_build(en, conf_get_list(c, P_SMTPD_CLIENT_EVENT_LIMIT_EXCEPTIONS),
                           "smtpd_client_event_limit_exceptions", &en->exceptions);
        if (r == -ENOMEM)
                goto fail;
        /* A bad entry is reported and skipped: it only hides AUTH. */
        r = net_list_build(en, conf_get_list(c, P_SMTPD_SASL_EXCEPTIONS_NETWORKS),
                           "smtpd_sasl_exceptions_networks", &en->sasl_exceptions);
        if (r == -ENOMEM)
                goto fail;
        en->relay_safe = relay_list_safe(&en->lists[RESTRICT_LIST_RELAY]) ||
                         relay_list_safe(&en->lists[RESTRICT_LIST_RECIPIENT]);
        if (!en->relay_safe)
                diag_error(en->diags, NULL, 0, "smtpd_relay_restrictions and "
                           "smtpd_recipient_restrictions: specify at least one working instance "
                           "of: reject_unauth_destination, defer_unauth_destination, reject, "
                           "defer, defer_if_permit");
        en->delay_reject = conf_get_bool(c, P_SMTPD_DELAY_REJECT);
        en->reject_unlisted_rcpt = conf_get_bool(c, P_SMTPD_REJECT_UNLISTED_RECIPIENT);
        en->reject_unlisted_sender = conf_get_bool(c, P_SMTPD_REJECT_UNLISTED_SENDER);
        en->soft_bounce = conf_get_bool(c, P_SOFT_BOUNCE);
        en->access_parent = strv_contains(conf_get_list(c, P_PARENT_DOMAIN_MATCHES_SUBDOMAINS),
                                          "smtpd_access_maps");
        en->reject_code = (int) conf_get_int(c, P_REJECT_CODE);
        en->defer_code = (int) conf_get_int(c, P_DEFER_CODE);
        en->map_reject_code = (int) conf_get_int(c, P_ACCESS_MAP_REJECT_CODE);
        en->map_defer_code = (int) conf_get_int(c, P_ACCESS_MAP_DEFER_CODE);
        en->relay_code = (int) conf_get_int(c, P_RELAY_DOMAINS_REJECT_CODE);
        en->non_fqdn_code = (int) conf_get_int(c, P_NON_FQDN_REJECT_CODE);
        en->bad_name_code = (int) conf_get_int(c, P_INVALID_HOSTNAME_REJECT_CODE);
        en->unk_addr_code = (int) conf_get_int(c, P_UNKNOWN_ADDRESS_REJECT_CODE);
        en->unk_client_code = (int) conf_get_int(c, P_UNKNOWN_CLIENT_REJECT_CODE);
        en->unk_name_code = (int) conf_get_int(c, P_UNKNOWN_HOSTNAME_REJECT_CODE);
        en->rbl_code = (int) conf_get_int(c, P_MAPS_RBL_REJECT_CODE);
        en->rbl_reply = strdup(strempty(conf_get_str(c, P_DEFAULT_RBL_REPLY)));
        en->delimiter = strdup(strempty(conf_get_str(c, P_RECIPIENT_DELIMITER)));
        en->null_key = strdup(strempty(conf_get_str(c, P_SMTPD_NULL_ACCESS_LOOKUP_KEY)));
        en->policy_default = strdup(strempty(conf_get_str(c, P_SMTPD_POLICY_SERVICE_DEFAULT_ACTION)));
        en->policy_context = strdup(strempty(conf_get_str(c, P_SMTPD_POLICY_SERVICE_POLICY_CONTEXT)));
        en->policy_timeout = conf_get_time(c, P_SMTPD_POLICY_SERVICE_TIMEOUT);
        if (!en->rbl_reply || !en->delimiter || !en->null_key || !en->policy_default ||
            !en->policy_context) {
                r = -ENOMEM;
                goto fail;
        }
        {
                char * const *specs = conf_get_list(c, P_RBL_REPLY_MAPS);
                if (specs && specs[0]) {
                        _cleanup_free_ char *joined = strv_join(specs, ", ");
                        if (!joined) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        r = engine_table(en, joined, &en->rbl_reply_table);
                        if (r < 0)
                                goto fail;
                        en->have_rbl_reply_maps = true;
                }
        }
        {
                char * const *specs = conf_get_list(c, P_SMTPD_SENDER_LOGIN_MAPS);
                if (specs && specs[0]) {
                        r = map_list_open(specs, MAP_FLAG_FOLD_KEYS, en->diags, &en->login_maps);
                        if (r == -ENOMEM)
                                goto fail;
                        if (r < 0) {
                                /* Lookups defer until the tables open. */
                                diag_error(en->diags, NULL, 0, "smtpd_sender_login_maps: cannot "
                                           "open the tables: %s", strerror(-r));
                                en->login_maps_error = -EIO;
                        }
                }
                en->myorigin = strdup(strempty(conf_get_str(c, P_MYORIGIN)));
                if (!en->myorigin) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        en->diags = NULL;
        diag_done(&local);
        *ret = steal_ptr(en);
        return 0;
fail:
        diag_done(&local);
        return r;
}

RestrictEngine *restrict_engine_ref(RestrictEngine *en) {
        if (en)
                en->n_ref++;
        return en;
}

RestrictEngine *restrict_engine_unref(RestrictEngine *en) {
        if (!en || --en->n_ref > 0)
                return NULL;
        for (size_t i = 0; i < _RESTRICT_LIST_MAX; i++)
                list_done(&en->lists[i]);
        for (size_t i = 0; i < en->n_classes; i++)
                list_done(&en->classes[i]);
        free(en->classes);
        for (size_t i = 0; i < en->n_tables; i++) {
                free(en->tables[i].spec);
                map_list_free(en->tables[i].maps);
        }
        free(en->tables);
        net_list_done(&en->mynetworks);
        net_list_done(&en->exceptions);
        net_list_done(&en->sasl_exceptions);
        addr_classifier_free(en->ac);
        free(en->rbl_reply);
        free(en->delimiter);
        free(en->null_key);
        free(en->policy_default);
        free(en->policy_context);
        map_list_free(en->login_maps);
        free(en->myorigin);
        conf_unref(en->config);
        free(en);
        return NULL;
}

Config *restrict_engine_config(RestrictEngine *en) {
        return en->config;
}

bool restrict_engine_ok(RestrictEngine *en) {
        return !en->broken && en->relay_safe;
}

int restrict_engine_mynetworks(RestrictEngine *en, const InetAddr *client) {
        return net_list_match(en, &en->mynetworks, client, NULL, NULL);
}

int restrict_engine_limit_exempt(RestrictEngine *en, const InetAddr *client) {
        return net_list_match(en, &en->exceptions, client, NULL, NULL);
}

int restrict_engine_sasl_exception(RestrictEngine *en, const InetAddr *client, const char *name) {
        return net_list_match(en, &en->sasl_exceptions, client, name, NULL);
}

/* The lists a stage evaluates, in order. */
static size_t stage_lists(RestrictEngine *en, RestrictStage stage, RestrictListId *seq) {
        size_t n = 0;
        switch (stage) {
        /* smtpd_delay_reject = no: each list at its own command, as
         * Postfix's smtpd_check_client(), _helo() and _mail() run. */
        case RESTRICT_STAGE_CONNECT:
                if (!en->delay_reject)
                        seq[n++] = RESTRICT_LIST_CLIENT;
                break;
        case RESTRICT_STAGE_HELO:
                if (!en->delay_reject)
                        seq[n++] = RESTRICT_LIST_HELO;
                break;
        case RESTRICT_STAGE_MAIL:
                if (!en->delay_reject)
                        seq[n++] = RESTRICT_LIST_SENDER;
                break;
        case RESTRICT_STAGE_RCPT:
                if (en->delay_reject) {
                        seq[n++] = RESTRICT_LIST_CLIENT;
                        seq[n++] = RESTRICT_LIST_HELO;
                        seq[n++] = RESTRICT_LIST_SENDER;
                }
                seq[n++] = RESTRICT_LIST_RELAY;
                seq[n++] = RESTRICT_LIST_RECIPIENT;
                break;
        case RESTRICT_STAGE_DATA:
                seq[n++] = RESTRICT_LIST_DATA;
                break;
        case RESTRICT_STAGE_EOD:
                seq[n++] = RESTRICT_LIST_EOD;
                break;
        default:
                break;
        }
        return n;
}

bool restrict_engine_stage_empty(RestrictEngine *en, RestrictStage stage) {
        RestrictListId seq[_RESTRICT_LIST_MAX];
        size_t n = stage_lists(en, stage, seq);

        if (stage == RESTRICT_STAGE_RCPT)
                return false;   /* relay control and recipient validation always run */
        if (stage == RESTRICT_STAGE_MAIL && !en->delay_reject && en->reject_unlisted_sender)
                return false;
        for (size_t i = 0; i < n; i++)
                if (en->lists[seq[i]].n > 0)
                        return false;
        return true;
}

static bool kind_ends_relay(Kind k) {
        return k == K_REJECT_UNAUTH_DEST || k == K_DEFER_UNAUTH_DEST || k == K_REJECT ||
               k == K_DEFER;
}

static bool list_could_permit(RestrictEngine *en, const List *l, unsigned depth);

/* Whether el can answer "permit" for a client outside mynetworks that did
 * not authenticate: permit itself, an access table (OK), a policy server
 * (OK, DUNNO is not known in advance), a DNS allow list, or a restriction
 * class that could. */
static bool elem_could_permit(RestrictEngine *en, const Elem *el, unsigned depth) {
        switch (el->kind) {
        case K_PERMIT:
        case K_CHECK_CLIENT_ACCESS:
        case K_CHECK_HELO_ACCESS:
        case K_CHECK_SENDER_ACCESS:
        case K_CHECK_POLICY:
        case K_PERMIT_DNSWL_CLIENT:
                return true;
        case K_CLASS:
                return el->cls < en->n_classes && depth < 8 &&
                       list_could_permit(en, &en->classes[el->cls], depth + 1);
        default:
                return false;
        }
}

static bool list_could_permit(RestrictEngine *en, const List *l, unsigned depth) {
        for (size_t i = 0; i < l->n; i++) {
                if (kind_ends_relay(l->elems[i].kind))
                        return false;
                if (elem_could_permit(en, &l->elems[i], depth))
                        return true;
        }
        return false;
}

int restrict_engine_relay_problems(RestrictEngine *en, char ***ret) {
        static const RestrictListId ids[] = {RESTRICT_LIST_RELAY, RESTRICT_LIST_RECIPIENT};
        int n = 0;

        for (size_t k = 0; k < ELEMENTSOF(ids); k++) {
                List *l = &en->lists[ids[k]];
                bool problem = false, controlled = false;
                for (size_t i = 0; i < l->n; i++) {
                        const Elem *el = &l->elems[i];
                        Kind kd = el->kind;
                        if (kind_ends_relay(kd)) {
                                controlled = true;
                                break;
                        }
                        if (kd == K_PERMIT_AUTH_DEST)
                                break;  /* only our own destinations */
                        /* An unconditional permit, or anything that may
                         * answer OK for anyone, before relay control. */
                        if (elem_could_permit(en, el, 0)) {
                                bool later = false;
                                for (size_t j = i + 1; j < l->n; j++)
                                        if (l->elems[j].kind == K_REJECT_UNAUTH_DEST ||
                                            l->elems[j].kind == K_DEFER_UNAUTH_DEST)
                                                later = true;
                                if (kd != K_PERMIT && !later)
                                        break;
                                char *t = strdup_printf(
                                        "%s: \"%s\" comes before %s: a client outside mynetworks "
                                        "%s relay to any destination",
                                        list_params[ids[k]], el->text,
                                        later ? "reject_unauth_destination"
                                              : "any relay control",
                                        kd == K_PERMIT ? "can"
                                        : kd == K_CHECK_POLICY ? "that the policy server permits can"
                                        : kd == K_CLASS ? "that the restriction class permits can"
                                                        : "that the table permits can");
                                if (!t || strv_consume(ret, t) < 0)
                                        return -ENOMEM;
                                n++;
                                problem = true;
                                break;
                        }
                }
                /* Relay restrictions come first (Postfix >= 2.10): when they
                 * end relaying safely, a permit in the recipient list only
                 * reaches mail for our own destinations. */
                if (ids[k] == RESTRICT_LIST_RELAY && controlled && !problem)
                        break;
        }
        return n;
}

/* ---- sessions and DNS ---- */

int restrict_session_new(const char *client_name, RestrictSession **ret) {
        RestrictSession *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        if (client_name) {
                RestrictClientNames n = {
                        .name = client_name,
                        .name_status = RESTRICT_NAME_OK,
                        .reverse_name = client_name,
                        .reverse_status = RESTRICT_NAME_OK,
                };
                if (restrict_session_set_names(s, &n) < 0) {
                        free(s);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

int restrict_session_set_names(RestrictSession *s, const RestrictClientNames *names) {
        char *n = strdup(names->name ? names->name : "unknown"),
             *rn = strdup(names->reverse_name ? names->reverse_name : "unknown");
        if (!n || !rn) {
                free(n);
                free(rn);
                return -ENOMEM;
        }
        free(s->name);
        free(s->reverse_name);
        s->name = n;
        s->reverse_name = rn;
        s->name_status = names->name_status;
        s->reverse_status = names->reverse_status;
        s->have_names = true;
        return 0;
}

static void dns_entry_done(DnsEntry *d) {
        free(d->name);
        free(d->addrs);
        strv_free(d->texts);
        *d = (DnsEntry) {0};
}

RestrictSession *restrict_session_free(RestrictSession *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_cache; i++)
                dns_entry_done(&s->cache[i]);
        free(s->name);
        free(s->reverse_name);
        free(s);
        return NULL;
}

static DnsEntry *cache_find(RestrictSession *s, const char *name, DnsType type) {
        for (size_t i = 0; i < s->n_cache; i++)
                if (s->cache[i].type == type && strcaseeq(s->cache[i].name, name))
                        return &s->cache[i];
        return NULL;
}

static int cache_add(RestrictSession *s, const char *name, int r, const DnsAnswer *a,
                     DnsType type) {
        DnsEntry *d;

        if (s->n_cache < SESSION_DNS_CACHE_MAX)
                d = &s->cache[s->n_cache++];
        else {
                d = &s->cache[s->next];
                s->next = (s->next + 1) % SESSION_DNS_CACHE_MAX;
                dns_entry_done(d);
        }
        *d = (DnsEntry) {.type = type, .r = r, .nxdomain = a && a->nxdomain};
        d->name = strdup(name);
        if (!d->name)
                return -ENOMEM;
        if (r > 0 && a) {
                d->addrs = calloc(a->n_records + 1, sizeof(InetAddr));
                if (!d->addrs)
                        return -ENOMEM;
                for (size_t i = 0; i < a->n_records; i++) {
                        const DnsRecord *rec = &a->records[i];
                        if (rec->type == DNS_TYPE_A || rec->type == DNS_TYPE_AAAA)
                                d->addrs[d->n_addrs++] = rec->addr;
                        else if (rec->type == DNS_TYPE_TXT && rec->text &&
                                 strv_extend(&d->texts, rec->text) < 0)
                                return -ENOMEM;
                        else if ((rec->type == DNS_TYPE_PTR || rec->type == DNS_TYPE_MX) &&
                                 rec->name && strv_extend(&d->texts, rec->name) < 0)
                                return -ENOMEM;
                }
        }
        return 0;
}

static void eval_run(RestrictEval *e);

static void on_dns(DnsQuery *q, int r, const DnsAnswer *answer, void *userdata) {
        RestrictEval *e = userdata;

        e->query = NULL;
        if (cache_add(e->sess, answer && answer->name ? answer->name : "", r, answer,
                      answer ? answer->type : DNS_TYPE_A) < 0)
                log_oom();
        if (e->starting_query) {
                e->sync_answer = true;
                return;
        }
        eval_run(e);
}

/* The cached answer for name/type: 1 with *ret, 0 when a lookup started
 * (the step returns PENDING), -ENOTCONN without a resolver, -ENOMEM. */
static int dns_get(RestrictEval *e, const char *name, DnsType type, DnsEntry **ret) {
        DnsEntry *d;
        int r;

        d = cache_find(e->sess, name, type);
        if (d) {
                *ret = d;
                return 1;
        }
        if (!e->dns)
                return -ENOTCONN;
        e->starting_query = true;
        e->sync_answer = false;
        r = dns_query(e->dns, name, type, on_dns, e, &e->query);
        e->starting_query = false;
        if (r < 0) {
                /* A name the resolver refuses (too long): treat as a failed
                 * lookup so that the step decides what that means. */
                if (r == -ENOMEM)
                        return r;
                if (cache_add(e->sess, name, -EINVAL, NULL, type) < 0)
                        return -ENOMEM;
        }
        if (r < 0 || e->sync_answer) {
                e->query = NULL;
                d = cache_find(e->sess, name, type);
                if (!d)
                        return -ENOMEM;
                *ret = d;
                return 1;
        }
        return 0;
}

/* ---- replies ---- */

static void trace(RestrictEval *e, const Elem *el, const char *fmt, ...) _printf_(3, 4);
static void trace(RestrictEval *e, const Elem *el, const char *fmt, ...) {
        va_list ap;
        _cleanup_free_ char *t = NULL;

        if (!e->trace)
                return;
        va_start(ap, fmt);
        t = strdup_vprintf(fmt, ap);
        va_end(ap);
        e->trace(e->userdata, e->top_name ? e->top_name : "", el ? el->text : "",
                 t ? t : "(out of memory)");
}

static int note_add(RestrictEval *e, const char *action, const char *text) {
        RestrictNote *n = realloc(e->result.notes, (e->result.n_notes + 1) * sizeof(RestrictNote));
        if (!n)
                return -ENOMEM;
        e->result.notes = n;
        n[e->result.n_notes] = (RestrictNote) {.action = strdup(action), .text = strdup(text)};
        if (!n[e->result.n_notes].action || !n[e->result.n_notes].text) {
                free(n[e->result.n_notes].action);
                free(n[e->result.n_notes].text);
                return -ENOMEM;
        }
        e->result.n_notes++;
        return 0;
}

/* Formats "CODE D.S.N text": the DSN's class follows the code, and
 * soft_bounce turns 5xx into 4xx. */
static char *format_reply(RestrictEngine *en, int code, const char *dsn, const char *text) {
        char d[16];
        if (en->soft_bounce && code / 100 == 5)
                code -= 100;
        snprintf(d, sizeof(d), "%s", dsn);
        d[0] = (char) ('0' + code / 100);
        return strdup_printf("%d %s %s", code, d, text);
}

/* Splits "d.d.d rest" into a DSN and text; *ret_dsn is NULL when text has
 * no DSN. */
static const char *text_dsn(const char *text, char *buf, size_t size, const char **ret_dsn) {
        const char *p = text;
        size_t n;
        *ret_dsn = NULL;
        if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
                n = strspn(p, "0123456789.");
                if (n >= 5 && n < size && (p[n] == ' ' || p[n] == 0)) {
                        memcpy(buf, p, n);
                        buf[n] = 0;
                        *ret_dsn = buf;
                        p += n;
                        while (*p == ' ')
                                p++;
                }
        }
        return p;
}

/* A rejection: ends the stage with reply, unless warn_if_reject is in
 * force (logged only) or an earlier defer_if_reject turns it into a
 * deferral. */
static int reject_reply(RestrictEval *e, const Elem *el, int code, const char *dsn,
                        const char *fmt, ...) _printf_(5, 6);
static int reject_reply(RestrictEval *e, const Elem *el, int code, const char *dsn,
                        const char *fmt, ...) {
        _cleanup_free_ char *text = NULL, *reply = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!text)
                return -ENOMEM;
        reply = format_reply(e->en, code, dsn, text);
        if (!reply)
                return -ENOMEM;
        if (e->warn_if_reject) {
                trace(e, el, "warn: %s (warn_if_reject)", reply);
                if (note_add(e, "reject_warning", reply) < 0)
                        return -ENOMEM;
                return STEP_DUNNO;
        }
        if (e->defer_if_reject && code / 100 == 5) {
                trace(e, el, "reject: %s (deferred by defer_if_reject)", e->defer_if_reject);
                free(e->result.reply);
                e->result.reply = steal_ptr(e->defer_if_reject);
        } else {
                trace(e, el, "reject: %s", reply);
                free(e->result.reply);
                e->result.reply = steal_ptr(reply);
        }
        e->result.reject = true;
        return STEP_REJECT;
}

/* A temporary failure where a lookup might have rejected: the request is
 * deferred unless something else rejects it (Postfix's defer_if_permit). */
static int defer_if_permit(RestrictEval *e, const Elem *el, int code, const char *dsn,
                           const char *fmt, ...) _printf_(5, 6);
static int defer_if_permit(RestrictEval *e, const Elem *el, int code, const char *dsn,
                           const char *fmt, ...) {
        _cleanup_free_ char *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!text)
                return -ENOMEM;
        if (!e->defer_if_permit && !(e->defer_if_permit = format_reply(e->en, code, dsn, text)))
                return -ENOMEM;
        trace(e, el, "no match (temporary failure: %s, deferring if permitted)",
              e->defer_if_permit);
        return STEP_DUNNO;
}

/* The stage ends with "451 4.3.0 <name>: Temporary lookup failure" when a
 * table fails (Postfix's reject_dict_retry): never a silent pass. */
static int lookup_failure(RestrictEval *e, const Elem *el, const char *name) {
        _cleanup_free_ char *reply = strdup_printf("451 4.3.0 <%s>: Temporary lookup failure",
                                                   name);
        if (!reply)
                return -ENOMEM;
        log_warning("%s: %s: table lookup failed for %s; deferring", e->top_name,
                    el ? el->text : "", name);
        trace(e, el, "reject: %s (lookup failed)", reply);
        free(e->result.reply);
        e->result.reply = steal_ptr(reply);
        e->result.reject = true;
        return STEP_REJECT;
}

static int server_config_error(RestrictEval *e, const Elem *el, const char *why) {
        log_warning("%s%s%s: %s", strempty(e->top_name), el ? ": " : "", el ? el->text : "", why);
        trace(e, el, "reject: 451 4.3.5 Server configuration error (%s)", why);
        free(e->result.reply);
        e->result.reply = strdup("451 4.3.5 Server configuration error");
        if (!e->result.reply)
                return -ENOMEM;
        e->result.reject = true;
        return STEP_REJECT;
}

/* ---- client names ---- */

typedef RestrictNameStatus NameStatus;

/* The reverse (PTR) and verified (PTR whose forward lookup has the client
 * address) names. STEP_PENDING while DNS works, STEP_DUNNO when known,
 * -ENOTCONN without DNS. Names are borrowed from the cache. */
static int client_names(RestrictEval *e, const char **ret_name, NameStatus *ret_status,
                        const char **ret_rev, NameStatus *ret_rev_status) {
        _cleanup_free_ char *ptr = NULL;
        DnsEntry *d, *f;
        int r;

        if (e->sess->have_names) {
                *ret_name = e->sess->name;
                *ret_rev = e->sess->reverse_name;
                *ret_status = e->sess->name_status;
                *ret_rev_status = e->sess->reverse_status;
                return STEP_DUNNO;
        }
        *ret_name = *ret_rev = "unknown";
        *ret_status = *ret_rev_status = RESTRICT_NAME_PERM;
        if (!e->have_addr)
                return STEP_DUNNO;
        ptr = dns_reverse_name(&e->addr, NULL);
        if (!ptr)
                return -ENOMEM;
        r = dns_get(e, ptr, DNS_TYPE_PTR, &d);
        if (r <= 0)
                return r == 0 ? STEP_PENDING : r;
        if (d->r < 0) {
                *ret_status = *ret_rev_status = RESTRICT_NAME_TEMP;
                return STEP_DUNNO;
        }
        if (d->r == 0 || !d->texts || !d->texts[0])
                return STEP_DUNNO;
        *ret_rev = d->texts[0];
        *ret_rev_status = RESTRICT_NAME_OK;
        *ret_status = RESTRICT_NAME_FORGED;     /* until the forward lookup has the address */
        r = dns_get(e, d->texts[0], e->addr.family == AF_INET6 ? DNS_TYPE_AAAA : DNS_TYPE_A, &f);
        if (r <= 0)
                return r == 0 ? STEP_PENDING : r;
        /* The cache may have moved entries: look the PTR answer up again. */
        d = cache_find(e->sess, ptr, DNS_TYPE_PTR);
        if (!d || !d->texts) {
                *ret_rev = "unknown";
                *ret_status = *ret_rev_status = RESTRICT_NAME_TEMP;
                return STEP_DUNNO;
        }
        *ret_rev = d->texts[0];
        if (f->r < 0) {
                *ret_status = RESTRICT_NAME_TEMP;
                return STEP_DUNNO;
        }
        for (size_t i = 0; i < f->n_addrs; i++)
                if (f->addrs[i].family == e->addr.family &&
                    memcmp(f->addrs[i].bytes, e->addr.bytes, inet_family_bits(e->addr.family) / 8) == 0) {
                        *ret_name = d->texts[0];
                        *ret_status = RESTRICT_NAME_OK;
                        return STEP_DUNNO;
                }
        return STEP_DUNNO;
}

static bool kind_needs_names(Kind k) {
        return k == K_CHECK_CLIENT_ACCESS || k == K_REJECT_UNKNOWN_CLIENT ||
               k == K_REJECT_UNKNOWN_REVERSE_CLIENT || k == K_REJECT_RHSBL_CLIENT;
}

/* "name[addr]" for replies. */
static char *namaddr(RestrictEval *e, const char *name) {
        return strdup_printf("%s[%s]", name ? name : "unknown", strempty(e->addr_str));
}

/* ---- access tables ---- */

typedef enum AccessWhat { ACCESS_CLIENT, ACCESS_HELO, ACCESS_SENDER, ACCESS_RCPT } AccessWhat;

static const char *access_class(AccessWhat w) {
        static const char *const c[] = {"Client host", "Helo command", "Sender address",
                                        "Recipient address"};
        return c[w];
}

static int parse_dynamic_list(RestrictEval *e, const Elem *el, const char *value, List **ret) {
        _cleanup_strv_free_ char **items = NULL;
        List *l;
        Diag d = {0};
        int r;

        if (str_split_list(value, true, &items) < 0)
                return -ENOMEM;
        l = calloc(1, sizeof(List));
        if (!l)
                return -ENOMEM;
        e->en->diags = &d;
        r = list_parse(e->en, items, el->text, l);
        e->en->diags = NULL;
        if (r < 0 || d.n_errors > 0) {
                for (size_t i = 0; i < d.n; i++)
                        log_warning("%s", d.entries[i].text ? d.entries[i].text : "");
                diag_done(&d);
                list_free(l);
                return r == -ENOMEM ? r : -EINVAL;
        }
        diag_done(&d);
        l->name = strdup(el->text);
        *ret = l;
        return 0;
}

static int push_list(RestrictEval *e, List *l, List *owned) {
        if (e->depth >= EVAL_DEPTH_MAX) {
                list_free(owned);
                return -ELOOP;
        }
        e->stack[e->depth++] = (Frame) {.list = l, .owned = owned};
        return 0;
}

/* Acts on an access table (or policy server) result. reply_name and
 * reply_class build the texts. */
static int access_action(RestrictEval *e, const Elem *el, const char *value,
                         const char *reply_name, const char *reply_class, bool from_policy) {
        _cleanup_free_ char *action = NULL;
        const char *rest, *dsn;
        char dsnbuf[16];
        size_t n;
        int code;

        while (*value == ' ' || *value == '\t')
                value++;
        n = strcspn(value, " \t");
        action = strndup(value, n);
        if (!action)
                return -ENOMEM;
        rest = value + n;
        while (*rest == ' ' || *rest == '\t')
                rest++;

        if (strcaseeq(action, "OK") || (str_is_ascii_digits(action) && action[0] == '2') ||
            (str_is_ascii_digits(action) && !*rest && !from_policy && action[0] != '4' &&
             action[0] != '5')) {
                trace(e, el, "permit (%s)", value);
                return STEP_OK;
        }
        if (strcaseeq(action, "DUNNO")) {
                trace(e, el, "no match (DUNNO)");
                return STEP_DUNNO;
        }
        if (strcaseeq(action, "REJECT") || strcaseeq(action, "DEFER") ||
            strcaseeq(action, "DEFER_IF_PERMIT") || strcaseeq(action, "DEFER_IF_REJECT")) {
                bool defer = !strcaseeq(action, "REJECT");
                const char *text = text_dsn(rest, dsnbuf, sizeof(dsnbuf), &dsn);
                code = defer ? (strcaseeq(action, "DEFER") ? e->en->map_defer_code : 450)
                             : e->en->map_reject_code;
                if (!dsn)
                        dsn = defer ? "4.7.1" : "5.7.1";
                if (strcaseeq(action, "DEFER_IF_PERMIT"))
                        return defer_if_permit(e, el, code, dsn, "<%s>: %s rejected: %s",
                                               reply_name, reply_class,
                                               *text ? text : "Service unavailable");
                if (strcaseeq(action, "DEFER_IF_REJECT")) {
                        if (!e->defer_if_reject) {
                                _cleanup_free_ char *t = strdup_printf(
                                        "<%s>: %s rejected: %s", reply_name, reply_class,
                                        *text ? text : "Service unavailable");
                                e->defer_if_reject = t ? format_reply(e->en, code, dsn, t) : NULL;
                                if (!e->defer_if_reject)
                                        return -ENOMEM;
                        }
                        trace(e, el, "no match (defer if rejected)");
                        return STEP_DUNNO;
                }
                return reject_reply(e, el, code, dsn, "<%s>: %s rejected: %s", reply_name,
                                    reply_class, *text ? text : "Access denied");
        }
        if (strlen(action) == 3 && str_is_ascii_digits(action) &&
            (action[0] == '4' || action[0] == '5')) {
                const char *text = text_dsn(rest, dsnbuf, sizeof(dsnbuf), &dsn);
                code = atoi(action);
                return reject_reply(e, el, code, dsn ? dsn : action[0] == '4' ? "4.7.1" : "5.7.1",
                                    "<%s>: %s rejected: %s", reply_name, reply_class,
                                    *text ? text : "Access denied");
        }
        if (strcaseeq(action, "HOLD") || strcaseeq(action, "DISCARD")) {
                bool hold = strcaseeq(action, "HOLD");
                _cleanup_free_ char *t = strdup_printf("<%s>: %s %s; %s", reply_name, reply_class,
                                                       hold ? "triggers HOLD action"
                                                            : "triggers DISCARD action",
                                                       *rest ? rest : "");
                if (!t || note_add(e, hold ? "hold" : "discard", t) < 0)
                        return -ENOMEM;
                if (hold) {
                        e->result.hold = true;
                        trace(e, el, "hold (the message goes to the hold queue)");
                        return STEP_DUNNO;
                }
                e->result.discard = true;
                trace(e, el, "permit (discard: the message is accepted and dropped)");
                return STEP_OK;
        }
        if (strcaseeq(action, "PREPEND")) {
                if (!*rest)
                        return server_config_error(e, el, "PREPEND without a header");
                if (strv_extend(&e->result.prepend, rest) < 0)
                        return -ENOMEM;
                trace(e, el, "no match (prepend \"%s\")", rest);
                return STEP_DUNNO;
        }
        if (strcaseeq(action, "WARN")) {
                _cleanup_free_ char *t = strdup_printf("<%s>: %s %s", reply_name, reply_class,
                                                       *rest ? rest : "triggers WARN action");
                if (!t || note_add(e, "warn", t) < 0)
                        return -ENOMEM;
                trace(e, el, "no match (warn: %s)", rest);
                return STEP_DUNNO;
        }
        if (strcaseeq(action, "REDIRECT") || strcaseeq(action, "FILTER") ||
            strcaseeq(action, "BCC")) {
                _cleanup_free_ char *t = strdup_printf("%s %s action is not supported by postern; "
                                                       "ignored", reply_class, action);
                log_warning("%s: %s: %s action is not supported; ignoring it", e->top_name,
                            el->text, action);
                if (!t || note_add(e, "warn", t) < 0)
                        return -ENOMEM;
                trace(e, el, "no match (%s ignored: not supported)", action);
                return STEP_DUNNO;
        }
        /* Anything else names restrictions to apply (Postfix evaluates the
         * result as a restriction list). */
        {
                List *l = NULL;
                int r = parse_dynamic_list(e, el, value, &l);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        _cleanup_free_ char *why = strdup_printf("unknown action \"%s\"", value);
                        return server_config_error(e, el, why ? why : "unknown action");
                }
                trace(e, el, "apply \"%s\"", value);
                r = push_list(e, l, l);
                if (r < 0)
                        return server_config_error(e, el, "restrictions nested too deeply");
                return STEP_PUSHED;
        }
}

/* Looks key up; > 0: the step's result is in *ret_step, 0 not found. */
static int access_try(RestrictEval *e, const Elem *el, const char *key, const char *reply_name,
                      const char *reply_class, int *ret_step) {
        _cleanup_free_ char *value = NULL;
        int r = table_lookup(e->en, el->table, key, &value);
        if (r < 0) {
                *ret_step = lookup_failure(e, el, reply_name);
                return 1;
        }
        if (r == 0)
                return 0;
        *ret_step = access_action(e, el, value ? value : "", reply_name, reply_class, false);
        return 1;
}

/* Domain and its parents: "sub.example.com", then "example.com" (with
 * parent_domain_matches_subdomains) or ".example.com". */
static int access_domain(RestrictEval *e, const Elem *el, const char *domain,
                         const char *reply_name, const char *reply_class, int *ret_step) {
        int r = access_try(e, el, domain, reply_name, reply_class, ret_step);
        if (r != 0 || domain[0] == '[')
                return r;
        for (const char *p = strchr(domain, '.'); p; p = strchr(p + 1, '.')) {
                if (e->en->access_parent) {
                        r = access_try(e, el, p + 1, reply_name, reply_class, ret_step);
                        if (r != 0)
                                return r;
                }
                r = access_try(e, el, p, reply_name, reply_class, ret_step);
                if (r != 0)
                        return r;
        }
        return 0;
}

static int check_mail_access(RestrictEval *e, const Elem *el, const char *addr,
                             AccessWhat what) {
        _cleanup_free_ char *lower = NULL, *stripped = NULL, *user = NULL;
        const char *reply_class = access_class(what);
        const char *dom;
        int step, r;

        if (!addr)
                return STEP_DUNNO;
        if (!*addr) {
                r = access_try(e, el, e->en->null_key, "", reply_class, &step);
                if (r != 0)
                        return step;
                trace(e, el, "no match (null sender: %s not listed)", e->en->null_key);
                return STEP_DUNNO;
        }
        lower = strdup(addr);
        if (!lower)
                return -ENOMEM;
        ascii_strlower(lower);
        dom = addr_domain(lower);
        if (dom && dom[0] && dom[strlen(dom) - 1] == '.')
                lower[strlen(lower) - 1] = 0;
        r = access_try(e, el, lower, addr, reply_class, &step);
        if (r != 0)
                return step;
        /* user+ext@domain also as user@domain. */
        if (!isempty(e->en->delimiter) && dom) {
                size_t ll = (size_t) (dom - 1 - lower);
                size_t n = strcspn(lower, e->en->delimiter);
                if (n > 0 && n < ll) {
                        stripped = strdup_printf("%.*s@%s", (int) n, lower, dom);
                        if (!stripped)
                                return -ENOMEM;
                        r = access_try(e, el, stripped, addr, reply_class, &step);
                        if (r != 0)
                                return step;
                }
        }
        if (dom) {
                r = access_domain(e, el, dom, addr, reply_class, &step);
                if (r != 0)
                        return step;
                user = strndup(lower, (size_t) (dom - lower));  /* "user@" */
                if (!user)
                        return -ENOMEM;
                r = access_try(e, el, user, addr, reply_class, &step);
                if (r != 0)
                        return step;
        }
        trace(e, el, "no match (%s not listed)", addr);
        return STEP_DUNNO;
}

static int check_client_access(RestrictEval *e, const Elem *el, const char *name) {
        _cleanup_free_ char *na = namaddr(e, name), *a = NULL;
        int step, r;

        if (!na)
                return -ENOMEM;
        if (name && !streq(name, "unknown")) {
                _cleanup_free_ char *lower = strdup(name);
                if (!lower)
                        return -ENOMEM;
                ascii_strlower(lower);
                r = access_domain(e, el, lower, na, "Client host", &step);
                if (r != 0)
                        return step;
        }
        if (e->have_addr) {
                a = strdup(e->addr_str);
                if (!a)
                        return -ENOMEM;
                /* 192.0.2.10, 192.0.2, 192.0, 192; IPv6 likewise at ':'. */
                for (;;) {
                        char *cut;
                        r = access_try(e, el, a, na, "Client host", &step);
                        if (r != 0)
                                return step;
                        cut = strrchr(a, e->addr.family == AF_INET6 ? ':' : '.');
                        if (!cut || cut == a)
                                break;
                        *cut = 0;
                        if (e->addr.family == AF_INET6 && cut[-1] == ':')
                                cut[-1] = 0;
                }
        }
        trace(e, el, "no match (%s not listed)", na);
        return STEP_DUNNO;
}

/* ---- DNS-based checks ---- */

static bool rbl_filter_match(const char *filter, const InetAddr *a) {
        char buf[64];
        const char *p = filter;

        if (a->family != AF_INET)
                return false;
        if (!filter)
                /* Any 127.0.0.0/8 answer lists (RFC 5782 2.1). */
                return a->bytes[0] == 127;
        for (int octet = 0; octet < 4; octet++) {
                unsigned v = a->bytes[octet];
                /* "[2..4]" and "[2;5]" hold dots of their own. */
                size_t n = *p == '[' ? strcspn(p, "]") + (strchr(p, ']') ? 1 : 0)
                                     : strcspn(p, ".");
                bool ok = false;
                if (n >= sizeof(buf))
                        return false;
                memcpy(buf, p, n);
                buf[n] = 0;
                if (buf[0] == '[' && buf[n - 1] == ']') {
                        buf[n - 1] = 0;
                        for (char *tok = strtok(buf + 1, ";"); tok; tok = strtok(NULL, ";")) {
                                char *dots = strstr(tok, "..");
                                unsigned lo = (unsigned) atoi(tok), hi = dots ? (unsigned) atoi(dots + 2) : lo;
                                if (v >= lo && v <= hi)
                                        ok = true;
                        }
                } else
                        ok = (unsigned) atoi(buf) == v && str_is_ascii_digits(buf);
                if (!ok)
                        return false;
                p += n;
                if (octet < 3) {
                        if (*p != '.')
                                return false;
                        p++;
                }
        }
        return true;
}

static int rbl_reject(RestrictEval *e, const Elem *el, const char *what, const char *klass,
                      const char *reason, const char *name) {
        _cleanup_free_ char *tmpl = NULL, *text = NULL, *code = NULL;
        const char *t = e->en->rbl_reply, *dsn, *rest;
        char dsnbuf[16];
        int c, r;

        if (e->en->have_rbl_reply_maps) {
                r = table_lookup(e->en, e->en->rbl_reply_table, el->rbl_domain, &tmpl);
                if (r < 0)
                        return lookup_failure(e, el, what);
                if (r > 0 && tmpl)
                        t = tmpl;
        }
        code = strdup_printf("%d", e->en->rbl_code);
        if (!code)
                return -ENOMEM;
        {
                const char *const vars[] = {
                        "rbl_code", code, "rbl_class", klass, "rbl_what", what,
                        "rbl_domain", el->rbl_domain, "rbl_reason", reason, "rbl_txt", reason,
                        "client_address", strempty(e->addr_str), "client_name", name,
                        "helo_name", strempty(e->helo), "sender", strempty(e->sender),
                        "recipient", strempty(e->recipient), NULL,
                };
                /* $rbl_code, $rbl_class, ... with ${name?text} and ${name:text}. */
                text = str_expand_vars(t, vars);
        }
        if (!text)
                return -ENOMEM;
        c = atoi(text);
        if (c < 400 || c > 599 || strspn(text, "0123456789") != 3) {
                _cleanup_free_ char *why = strdup_printf("bad reply template for %s: \"%s\"",
                                                         el->rbl_domain, text);
                return server_config_error(e, el, why ? why : "bad reply template");
        }
        rest = text + 3;
        while (*rest == ' ')
                rest++;
        rest = text_dsn(rest, dsnbuf, sizeof(dsnbuf), &dsn);
        return reject_reply(e, el, c, dsn ? dsn : "5.7.1", "%s", rest);
}

/* Looks name up in a DNS list: STEP_OK when listed (with *ret_reason),
 * STEP_DUNNO when not, STEP_PENDING. */
static int dnsxl_lookup(RestrictEval *e, const Elem *el, const char *query, bool want_txt,
                        const char **ret_reason) {
        DnsEntry *d, *t;
        bool listed = false;
        int r;

        *ret_reason = NULL;
        r = dns_get(e, query, DNS_TYPE_A, &d);
        if (r == 0)
                return STEP_PENDING;
        if (r < 0)
                return r;
        if (d->r < 0) {
                log_warning("%s: %s: lookup of %s failed; treating it as not listed",
                            e->top_name, el->text, query);
                trace(e, el, "no match (lookup of %s failed)", query);
                return STEP_DUNNO;
        }
        for (size_t i = 0; i < d->n_addrs; i++)
                if (rbl_filter_match(el->rbl_filter, &d->addrs[i]))
                        listed = true;
        if (!listed)
                return STEP_DUNNO;
        if (want_txt) {
                r = dns_get(e, query, DNS_TYPE_TXT, &t);
                if (r == 0)
                        return STEP_PENDING;
                if (r < 0)
                        return r;
                if (t->r > 0 && t->texts)
                        *ret_reason = t->texts[0];
        }
        return STEP_OK;
}

static int check_dnsxl(RestrictEval *e, const Elem *el, const char *cname) {
        _cleanup_free_ char *query = NULL;
        const char *what = NULL, *klass = "Client host", *reason = NULL;
        int r;

        switch (el->kind) {
        case K_REJECT_RBL_CLIENT:
        case K_PERMIT_DNSWL_CLIENT:
                if (!e->have_addr) {
                        trace(e, el, "no match (no client address)");
                        return STEP_DUNNO;
                }
                what = e->addr_str;
                query = dns_reverse_name(&e->addr, el->rbl_domain);
                break;
        case K_REJECT_RHSBL_CLIENT:
                what = cname;
                klass = "Client host";
                break;
        case K_REJECT_RHSBL_SENDER:
                what = e->sender ? addr_domain(e->sender) : NULL;
                klass = "Sender address";
                break;
        case K_REJECT_RHSBL_HELO:
                what = e->helo;
                klass = "Helo command";
                break;
        case K_REJECT_RHSBL_RCPT:
                what = e->recipient ? addr_domain(e->recipient) : NULL;
                klass = "Recipient address";
                break;
        default:
                return STEP_DUNNO;
        }
        if (!query) {
                if (isempty(what) || streq(what, "unknown") || what[0] == '[') {
                        trace(e, el, "no match (no domain to look up)");
                        return STEP_DUNNO;
                }
                query = strdup_printf("%s.%s", what, el->rbl_domain);
        }
        if (!query)
                return -ENOMEM;
        if (!e->dns) {
                trace(e, el, "skipped (needs DNS)");
                return STEP_DUNNO;
        }
        r = dnsxl_lookup(e, el, query, el->kind != K_PERMIT_DNSWL_CLIENT, &reason);
        if (r != STEP_OK) {
                if (r == STEP_DUNNO)
                        trace(e, el, "no match (%s not listed in %s)", what, el->rbl_domain);
                return r;
        }
        if (el->kind == K_PERMIT_DNSWL_CLIENT) {
                trace(e, el, "permit (%s listed in %s)", what, el->rbl_domain);
                return STEP_OK;
        }
        return rbl_reject(e, el, what, klass, reason, cname ? cname : "unknown");
}

/* reject_unknown_*_domain: MX, then A, then AAAA (Postfix's
 * reject_unknown_mailhost). */
static int check_unknown_domain(RestrictEval *e, const Elem *el, const char *addr, bool sender) {
        static const DnsType types[] = {DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_AAAA};
        const char *klass = sender ? "Sender address" : "Recipient address";
        const char *dsn = sender ? "4.1.8" : "4.1.2";
        AddrResolved res = {0};
        bool temp = false, nx = false;
        int r;

        if (isempty(addr) || !addr_domain(addr)) {
                trace(e, el, "no match (no domain)");
                return STEP_DUNNO;
        }
        if (e->en->ac_error)
                return lookup_failure(e, el, addr);
        r = addr_resolve(e->en->ac, addr, &res);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return lookup_failure(e, el, addr);
        if (res.klass != ADDR_CLASS_DEFAULT || res.domain[0] == '[' || !res.domain[0]) {
                trace(e, el, "no match (%s is a %s destination)", res.domain,
                      addr_class_to_string(res.klass));
                addr_resolved_done(&res);
                return STEP_DUNNO;
        }
        if (!e->dns) {
                trace(e, el, "skipped (needs DNS)");
                addr_resolved_done(&res);
                return STEP_DUNNO;
        }
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                DnsEntry *d;
                r = dns_get(e, res.domain, types[i], &d);
                if (r <= 0) {
                        addr_resolved_done(&res);
                        return r == 0 ? STEP_PENDING : r;
                }
                if (d->r > 0) {
                        trace(e, el, "no match (%s has %s records)", res.domain,
                              dns_type_to_string(types[i]));
                        addr_resolved_done(&res);
                        return STEP_DUNNO;
                }
                if (d->r < 0)
                        temp = true;
                if (d->r == 0 && d->nxdomain) {
                        nx = true;
                        break;
                }
        }
        addr_resolved_done(&res);
        if (temp && !nx)
                return defer_if_permit(e, el, 450, dsn, "<%s>: %s rejected: Domain not found",
                                       addr, klass);
        return reject_reply(e, el, e->en->unk_addr_code, dsn,
                            "<%s>: %s rejected: Domain not found", addr, klass);
}

static int check_unknown_helo(RestrictEval *e, const Elem *el) {
        static const DnsType types[] = {DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX};
        _cleanup_free_ char *name = NULL;
        bool temp = false;
        size_t len;
        int r;

        if (isempty(e->helo) || e->helo[0] == '[') {
                trace(e, el, "no match");
                return STEP_DUNNO;
        }
        if (!e->dns) {
                trace(e, el, "skipped (needs DNS)");
                return STEP_DUNNO;
        }
        name = strdup(e->helo);
        if (!name)
                return -ENOMEM;
        len = strlen(name);
        if (len > 1 && name[len - 1] == '.')
                name[len - 1] = 0;
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                DnsEntry *d;
                r = dns_get(e, name, types[i], &d);
                if (r <= 0)
                        return r == 0 ? STEP_PENDING : r;
                if (d->r > 0) {
                        trace(e, el, "no match (%s has %s records)", name,
                              dns_type_to_string(types[i]));
                        return STEP_DUNNO;
                }
                if (d->r < 0)
                        temp = true;
                if (d->r == 0 && d->nxdomain)
                        break;
        }
        if (temp)
                return defer_if_permit(e, el, 450, "4.7.1", "<%s>: Helo command rejected: Host "
                                       "not found", e->helo);
        return reject_reply(e, el, e->en->unk_name_code, "4.7.1",
                            "<%s>: Helo command rejected: Host not found", e->helo);
}

/* ---- simple checks ---- */

static bool hostname_valid(const char *name) {
        size_t len = strlen(name);
        _cleanup_free_ char *t = NULL;
        InetAddr a;

        if (len > 1 && name[len - 1] == '.' && name[len - 2] != '.')
                len--;
        if (len == 0 || len > 255)
                return false;
        t = strndup(name, len);
        if (!t)
                return false;
        if (inet_addr_parse_bracketed(t, &a) == 0)
                return true;
        return addr_domain_valid(t, len, false) && t[0] != '[';
}

static bool fqdn_domain(const char *domain, bool allow_8bit) {
        size_t len;
        if (isempty(domain))
                return false;
        if (domain[0] == '[')
                return true;
        len = strlen(domain);
        if (len > 1 && domain[len - 1] == '.' && domain[len - 2] != '.')
                len--;
        return addr_domain_valid(domain, len, allow_8bit) && memchr(domain, '.', len);
}

/* permit_auth_destination: > 0 ours or relayed for, 0 not, < 0 failed. */
static int auth_destination(RestrictEval *e, const char *rcpt, char **ret_why) {
        AddrResolved res = {0};
        int r;

        if (e->en->ac_error)
                return e->en->ac_error;
        r = addr_resolve(e->en->ac, rcpt, &res);
        if (r < 0)
                return r;
        if (res.routed)
                *ret_why = strdup_printf("%s is routed through %s", res.address, res.domain);
        else if (res.klass == ADDR_CLASS_DEFAULT)
                *ret_why = strdup_printf("%s is not a local, virtual or relay domain",
                                         *res.domain ? res.domain : res.address);
        else
                *ret_why = strdup_printf("%s is a %s domain", res.domain,
                                         addr_class_to_string(res.klass));
        r = !res.routed && res.klass != ADDR_CLASS_DEFAULT;
        addr_resolved_done(&res);
        if (!*ret_why)
                return -ENOMEM;
        return r;
}

/* Unknown recipients (and senders) in our domains. */
static int check_unlisted(RestrictEval *e, const Elem *el, const char *addr, bool sender) {
        AddrResolved res = {0};
        const char *table = NULL;
        int code = 550, r;

        if (isempty(addr)) {
                trace(e, el, "no match (null address)");
                return STEP_DUNNO;
        }
        if (e->en->ac_error)
                return lookup_failure(e, el, addr);
        r = addr_resolve(e->en->ac, addr, &res);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return lookup_failure(e, el, addr);
        r = addr_recipient_listed(e->en->ac, &res, &table, &code);
        if (r == -ENOMEM) {
                addr_resolved_done(&res);
                return r;
        }
        if (r < 0) {
                addr_resolved_done(&res);
                return lookup_failure(e, el, addr);
        }
        if (r > 0) {
                if (res.klass == ADDR_CLASS_DEFAULT)
                        trace(e, el, "no match (%s is not a local, virtual or relay domain)",
                              *res.domain ? res.domain : res.address);
                else
                        trace(e, el, "no match (%s is a valid %s address)", res.address,
                              addr_class_to_string(res.klass));
                addr_resolved_done(&res);
                return STEP_DUNNO;
        }
        addr_resolved_done(&res);
        return reject_reply(e, el, code, sender ? "5.1.0" : "5.1.1",
                            "<%s>: %s address rejected: User unknown%s%s%s", addr,
                            sender ? "Sender" : "Recipient", table ? " in " : "",
                            strempty(table), table ? " table" : "");
}

/* ---- sender address ownership (smtpd_sender_login_maps) ---- */

static int bool_is_local(const char *domain, void *userdata) {
        return *(const bool *) userdata;
}

/* The SASL login names that own sender: > 0 with *ret (the table value,
 * caller frees), 0 when no key is listed, < 0 when a table failed. */
static int login_owners(RestrictEval *e, const char *sender, char **ret) {
        RestrictEngine *en = e->en;
        _cleanup_free_ char *key = NULL;
        AddrResolved res = {0};
        bool is_local;
        int r;

        if (en->login_maps_error)
                return en->login_maps_error;
        if (en->ac_error)
                return en->ac_error;
        /* As Postfix, the address as trivial-rewrite resolves it: a bare
         * local part gets @$myorigin. */
        r = addr_resolve(en->ac, sender, &res);
        if (r < 0)
                return r;
        key = strdup(res.address);
        is_local = res.klass == ADDR_CLASS_LOCAL ||
                   (res.domain[0] && strcaseeq(res.domain, en->myorigin));
        addr_resolved_done(&res);
        if (!key)
                return -ENOMEM;
        ascii_strlower(key);
        r = map_list_lookup_addr(en->login_maps, key, en->delimiter, bool_is_local, &is_local, ret,
                                 NULL);
        if (r > 0 && !*ret && !(*ret = strdup("")))
                return -ENOMEM;
        return r;
}

/* Whether login is one of the names in owners (separated by commas and
 * blanks), compared without case as Postfix does. */
static bool login_listed(const char *owners, const char *login) {
        for (const char *p = owners; *p;) {
                size_t n;
                p += strspn(p, ", \t\r\n");
                n = strcspn(p, ", \t\r\n");
                if (n > 0 && strlen(login) == n && strncasecmp(p, login, n) == 0)
                        return true;
                p += n;
        }
        return false;
}

/* reject_sender_login_mismatch and its three variants (Postfix 2.1 and
 * 2.11): an authenticated client must own the sender address (the
 * authenticated check; "known" only when the address has an owner at
 * all), an unauthenticated client must not use an address that has an
 * owner. */
static int check_login_mismatch(RestrictEval *e, const Elem *el) {
        _cleanup_free_ char *owners = NULL;
        bool auth_check, unauth_check, allow_unknown = false;
        int r;

        switch (el->kind) {
        case K_REJECT_SENDER_LOGIN_MISMATCH:
                auth_check = unauth_check = true;
                break;
        case K_REJECT_AUTH_SENDER_LOGIN_MISMATCH:
                auth_check = true;
                unauth_check = false;
                break;
        case K_REJECT_KNOWN_SENDER_LOGIN_MISMATCH:
                auth_check = unauth_check = allow_unknown = true;
                break;
        default:
                auth_check = false;
                unauth_check = true;
                break;
        }
        if (isempty(e->sender)) {
                trace(e, el, e->sender ? "no match (null sender)" : "no match (no sender yet)");
                return STEP_DUNNO;
        }
        if (!e->en->login_maps && !e->en->login_maps_error) {
                trace(e, el, "no match (smtpd_sender_login_maps is empty)");
                return STEP_DUNNO;
        }
        if (e->sasl_username ? !auth_check : !unauth_check) {
                trace(e, el, e->sasl_username ? "no match (authenticated as %s)"
                                              : "no match (not authenticated)%s",
                      strempty(e->sasl_username));
                return STEP_DUNNO;
        }
        r = login_owners(e, e->sender, &owners);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return lookup_failure(e, el, e->sender);
        if (e->sasl_username) {
                if (r == 0 && allow_unknown) {
                        trace(e, el, "no match (%s has no owner)", e->sender);
                        return STEP_DUNNO;
                }
                if (r > 0 && login_listed(owners, e->sasl_username)) {
                        trace(e, el, "no match (%s is owned by %s)", e->sender, e->sasl_username);
                        return STEP_DUNNO;
                }
                return reject_reply(e, el, 553, "5.7.1",
                                    "<%s>: Sender address rejected: not owned by user %s",
                                    e->sender, e->sasl_username);
        }
        if (r > 0)
                return reject_reply(e, el, 553, "5.7.1",
                                    "<%s>: Sender address rejected: not logged in", e->sender);
        trace(e, el, "no match (%s has no owner)", e->sender);
        return STEP_DUNNO;
}

/* ---- policy delegation ---- */

static void on_policy(PolicyQuery *q, int r, const char *action, void *userdata) {
        RestrictEval *e = userdata;

        e->policy = NULL;
        e->policy_have = true;
        e->policy_r = r;
        free(e->policy_action);
        e->policy_action = action ? strdup(action) : NULL;
        if (r > 0 && !e->policy_action)
                e->policy_r = -ENOMEM;
        eval_run(e);
}

static int policy_request(RestrictEval *e, const char *cname, const char *rname, char **ret) {
        static const char *const stages[] = {"CONNECT", "EHLO", "MAIL", "RCPT", "DATA",
                                             "END-OF-MESSAGE"};
        _cleanup_(strbuf_done) StrBuf b = {0};
        const char *const attrs[] = {
                "request", "smtpd_access_policy",
                "protocol_state", stages[e->stage],
                "protocol_name", e->protocol ? e->protocol : "SMTP",
                "helo_name", e->helo,
                "queue_id", e->queue_id,
                "sender", e->sender,
                "recipient", e->recipient,
                "client_address", e->addr_str,
                "client_name", cname,
                "reverse_client_name", rname,
                "instance", e->queue_id,
                "sasl_method", e->sasl_method,
                "sasl_username", e->sasl_username,
                "encryption_protocol", e->tls ? "TLS" : NULL,
                "policy_context", e->en->policy_context,
                "server_port", NULL,
                NULL,
        };

        for (size_t i = 0; attrs[i]; i += 2) {
                const char *v = attrs[i + 1];
                /* The protocol is line based: no line breaks in values. */
                if (strbuf_printf(&b, "%s=", attrs[i]) < 0)
                        return -ENOMEM;
                for (const char *p = strempty(v); *p; p++)
                        if (strbuf_putc(&b, *p == '\n' || *p == '\r' ? ' ' : *p) < 0)
                                return -ENOMEM;
                if (strbuf_putc(&b, '\n') < 0)
                        return -ENOMEM;
        }
        if (strbuf_printf(&b, "recipient_count=%u\nsize=%llu\n", e->rcpt_count,
                          (unsigned long long) e->size) < 0)
                return -ENOMEM;
        *ret = strbuf_steal(&b);
        return *ret ? 0 : -ENOMEM;
}

static int check_policy(RestrictEval *e, const Elem *el, const char *cname, const char *rname) {
        _cleanup_free_ char *req = NULL, *endpoint = NULL;
        const char *reply_name, *reply_class;
        int r;

        if (e->policy_have && e->policy_elem == el) {
                _cleanup_free_ char *action = steal_ptr(e->policy_action);
                int pr = e->policy_r;
                e->policy_have = false;
                e->policy_elem = NULL;
                switch (e->stage) {
                case RESTRICT_STAGE_RCPT:
                        reply_name = strempty(e->recipient);
                        reply_class = "Recipient address";
                        break;
                case RESTRICT_STAGE_MAIL:
                        reply_name = strempty(e->sender);
                        reply_class = "Sender address";
                        break;
                default:
                        reply_name = strempty(e->addr_str);
                        reply_class = "Client host";
                }
                if (pr < 0) {
                        log_warning("problem talking to policy server %s: %s; using \"%s\"",
                                    el->arg, strerror(-pr), e->en->policy_default);
                        trace(e, el, "policy server failed (%s)", strerror(-pr));
                        return access_action(e, el, e->en->policy_default, reply_name,
                                             reply_class, true);
                }
                return access_action(e, el, action, reply_name, reply_class, true);
        }
        if (!e->event) {
                trace(e, el, "skipped (needs the policy server)");
                return STEP_DUNNO;
        }
        r = policy_request(e, cname, rname, &req);
        if (r < 0)
                return r;
        endpoint = strdup(el->arg);
        if (!endpoint)
                return -ENOMEM;
        /* "{ inet:host:port, timeout=10s }": the endpoint comes first. */
        endpoint[strcspn(endpoint, ", \t")] = 0;
        e->policy_elem = el;
        e->policy_have = false;
        r = policy_query_start(e->event, endpoint, e->en->policy_timeout * 1000000ULL, req,
                               on_policy, e, &e->policy);
        if (r < 0) {
                e->policy_have = true;
                e->policy_r = r;
                return check_policy(e, el, cname, rname);
        }
        return STEP_PENDING;
}

/* ---- the interpreter ---- */

static int step(RestrictEval *e, const Elem *el) {
        const char *cname = NULL, *rname = NULL;
        NameStatus cstat = RESTRICT_NAME_PERM, rstat = RESTRICT_NAME_PERM;
        _cleanup_free_ char *why = NULL;
        const char *entry = NULL;
        int r;

        if (kind_needs_names(el->kind) || el->kind == K_CHECK_POLICY ||
            (el->kind == K_PERMIT_MYNETWORKS && e->en->mynetworks.has_names) ||
            ((el->kind == K_REJECT || el->kind == K_DEFER) &&
             streq_ptr(e->top_name, list_params[RESTRICT_LIST_CLIENT]))) {
                if (!e->dns && !e->sess->have_names && e->have_addr &&
                    (el->kind == K_REJECT_UNKNOWN_CLIENT ||
                     el->kind == K_REJECT_UNKNOWN_REVERSE_CLIENT)) {
                        trace(e, el, "skipped (needs DNS)");
                        return STEP_DUNNO;
                }
                r = e->dns || e->sess->have_names ? client_names(e, &cname, &cstat, &rname, &rstat)
                                                  : STEP_DUNNO;
                if (r != STEP_DUNNO)
                        return r;
                if (!cname)
                        cname = rname = "unknown";
        }

        switch (el->kind) {
        case K_PERMIT:
                trace(e, el, "permit");
                return STEP_OK;
        case K_REJECT:
        case K_DEFER: {
                _cleanup_free_ char *na = NULL;
                const char *name, *klass;
                bool defer = el->kind == K_DEFER;
                const char *top = strempty(e->top_name);
                if (streq(top, list_params[RESTRICT_LIST_HELO])) {
                        name = strempty(e->helo);
                        klass = "Helo command";
                } else if (streq(top, list_params[RESTRICT_LIST_SENDER])) {
                        name = strempty(e->sender);
                        klass = "Sender address";
                } else if (streq(top, list_params[RESTRICT_LIST_RELAY]) ||
                           streq(top, list_params[RESTRICT_LIST_RECIPIENT])) {
                        name = strempty(e->recipient);
                        klass = "Recipient address";
                } else if (streq(top, list_params[RESTRICT_LIST_DATA])) {
                        name = "DATA";
                        klass = "Data command";
                } else if (streq(top, list_params[RESTRICT_LIST_EOD])) {
                        name = "END-OF-MESSAGE";
                        klass = "End-of-data";
                } else {
                        na = namaddr(e, cname);
                        if (!na)
                                return -ENOMEM;
                        name = na;
                        klass = "Client host";
                }
                return reject_reply(e, el, defer ? e->en->defer_code : e->en->reject_code,
                                    defer ? "4.7.1" : "5.7.1", "<%s>: %s rejected: %s", name,
                                    klass, defer ? "Try again later" : "Access denied");
        }
        case K_DEFER_IF_PERMIT:
                return defer_if_permit(e, el, e->en->defer_code, "4.7.1",
                                       "<%s>: Recipient address rejected: Try again later",
                                       strempty(e->recipient));
        case K_DEFER_IF_REJECT:
                if (!e->defer_if_reject) {
                        _cleanup_free_ char *t = strdup_printf(
                                "<%s>: Recipient address rejected: Try again later",
                                strempty(e->recipient));
                        if (!t || !(e->defer_if_reject = format_reply(e->en, e->en->defer_code,
                                                                      "4.7.1", t)))
                                return -ENOMEM;
                }
                trace(e, el, "no match (later rejections defer)");
                return STEP_DUNNO;
        case K_WARN_IF_REJECT:
                trace(e, el, "the next restriction only warns");
                return STEP_DUNNO;
        case K_PERMIT_MYNETWORKS:
                r = net_list_match(e->en, &e->en->mynetworks, e->have_addr ? &e->addr : NULL,
                                   cname, &entry);
                if (r < 0)
                        return lookup_failure(e, el, strempty(e->addr_str));
                if (r > 0) {
                        trace(e, el, "permit (%s in mynetworks: %s)", e->addr_str, entry);
                        return STEP_OK;
                }
                trace(e, el, "no match (%s not in mynetworks)", strempty(e->addr_str));
                return STEP_DUNNO;
        case K_PERMIT_SASL:
                if (e->sasl_username) {
                        trace(e, el, "permit (authenticated as %s)", e->sasl_username);
                        return STEP_OK;
                }
                trace(e, el, "no match");
                return STEP_DUNNO;
        case K_PERMIT_INET_INTERFACES:
                if (e->have_addr && !e->en->ac_error && addr_is_own_address(e->en->ac, &e->addr)) {
                        trace(e, el, "permit (%s is this host)", e->addr_str);
                        return STEP_OK;
                }
                trace(e, el, "no match");
                return STEP_DUNNO;
        case K_PERMIT_AUTH_DEST:
        case K_REJECT_UNAUTH_DEST:
        case K_DEFER_UNAUTH_DEST:
                if (!e->recipient) {
                        trace(e, el, "no match (no recipient yet)");
                        return STEP_DUNNO;
                }
                r = auth_destination(e, e->recipient, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return lookup_failure(e, el, e->recipient);
                if (el->kind == K_PERMIT_AUTH_DEST) {
                        trace(e, el, r > 0 ? "permit (%s)" : "no match (%s)", why);
                        return r > 0 ? STEP_OK : STEP_DUNNO;
                }
                if (r > 0) {
                        trace(e, el, "no match (%s)", why);
                        return STEP_DUNNO;
                }
                return reject_reply(e, el,
                                    el->kind == K_DEFER_UNAUTH_DEST ? e->en->relay_code - 100
                                                                    : e->en->relay_code,
                                    el->kind == K_DEFER_UNAUTH_DEST ? "4.7.1" : "5.7.1",
                                    "<%s>: Relay access denied", e->recipient);
        case K_REJECT_UNAUTH_PIPELINING:
                if (e->ill_pipelining) {
                        const char *n = e->stage == RESTRICT_STAGE_DATA ? "DATA"
                                        : e->stage == RESTRICT_STAGE_RCPT ? strempty(e->recipient)
                                        : e->stage == RESTRICT_STAGE_MAIL ? strempty(e->sender)
                                                                          : strempty(e->helo);
                        const char *k = e->stage == RESTRICT_STAGE_DATA ? "Data command"
                                        : e->stage == RESTRICT_STAGE_RCPT ? "Recipient address"
                                        : e->stage == RESTRICT_STAGE_MAIL ? "Sender address"
                                                                          : "Helo command";
                        return reject_reply(e, el, 503, "5.5.0",
                                            "<%s>: %s rejected: Improper use of SMTP command "
                                            "pipelining", n, k);
                }
                trace(e, el, "no match");
                return STEP_DUNNO;
        case K_REJECT_PLAINTEXT:
                if (!e->tls)
                        return reject_reply(e, el, 450, "4.7.1", "Session encryption is required");
                trace(e, el, "no match (TLS)");
                return STEP_DUNNO;
        case K_REJECT_INVALID_HELO:
                if (e->helo && !hostname_valid(e->helo))
                        return reject_reply(e, el, e->en->bad_name_code, "5.5.2",
                                            "<%s>: Helo command rejected: Invalid name", e->helo);
                trace(e, el, e->helo ? "no match (%s is valid)" : "no match (no HELO)",
                      strempty(e->helo));
                return STEP_DUNNO;
        case K_REJECT_NON_FQDN_HELO:
                if (e->helo && (!hostname_valid(e->helo) ||
                                (e->helo[0] != '[' && !strchr(e->helo, '.'))))
                        return reject_reply(e, el, e->en->non_fqdn_code, "5.5.2",
                                            "<%s>: Helo command rejected: need fully-qualified "
                                            "hostname", e->helo);
                trace(e, el, "no match");
                return STEP_DUNNO;
        case K_REJECT_UNKNOWN_HELO:
                return check_unknown_helo(e, el);
        case K_REJECT_NON_FQDN_SENDER:
        case K_REJECT_NON_FQDN_RCPT: {
                bool snd = el->kind == K_REJECT_NON_FQDN_SENDER;
                const char *a = snd ? e->sender : e->recipient;
                if (isempty(a) || fqdn_domain(addr_domain(a), e->smtputf8)) {
                        trace(e, el, "no match");
                        return STEP_DUNNO;
                }
                return reject_reply(e, el, e->en->non_fqdn_code, "4.5.2",
                                    "<%s>: %s address rejected: need fully-qualified address", a,
                                    snd ? "Sender" : "Recipient");
        }
        case K_REJECT_UNKNOWN_SENDER_DOMAIN:
                return check_unknown_domain(e, el, e->sender, true);
        case K_REJECT_UNKNOWN_RCPT_DOMAIN:
                return check_unknown_domain(e, el, e->recipient, false);
        case K_REJECT_UNKNOWN_CLIENT:
                if (cstat != RESTRICT_NAME_OK)
                        return reject_reply(e, el,
                                            cstat == RESTRICT_NAME_TEMP ? 450 : e->en->unk_client_code,
                                            "4.7.25", "Client host rejected: cannot find your "
                                            "hostname, [%s]", strempty(e->addr_str));
                trace(e, el, "no match (%s)", cname);
                return STEP_DUNNO;
        case K_REJECT_UNKNOWN_REVERSE_CLIENT:
                if (rstat != RESTRICT_NAME_OK)
                        return reject_reply(e, el,
                                            rstat == RESTRICT_NAME_TEMP ? 450 : e->en->unk_client_code,
                                            "4.7.1", "Client host rejected: cannot find your "
                                            "reverse hostname, [%s]", strempty(e->addr_str));
                trace(e, el, "no match (%s)", rname);
                return STEP_DUNNO;
        case K_REJECT_RBL_CLIENT:
        case K_REJECT_RHSBL_CLIENT:
        case K_REJECT_RHSBL_SENDER:
        case K_REJECT_RHSBL_HELO:
        case K_REJECT_RHSBL_RCPT:
        case K_PERMIT_DNSWL_CLIENT:
                return check_dnsxl(e, el, cstat == RESTRICT_NAME_OK ? cname : NULL);
        case K_REJECT_UNLISTED_RCPT:
                if (!e->recipient) {
                        trace(e, el, "no match (no recipient yet)");
                        return STEP_DUNNO;
                }
                e->rcpt_checked = true;
                return check_unlisted(e, el, e->recipient, false);
        case K_REJECT_UNLISTED_SENDER:
                if (!e->sender) {
                        trace(e, el, "no match (no sender yet)");
                        return STEP_DUNNO;
                }
                e->sender_checked = true;
                return check_unlisted(e, el, e->sender, true);
        case K_CHECK_CLIENT_ACCESS:
                return check_client_access(e, el, cstat == RESTRICT_NAME_OK ? cname : NULL);
        case K_CHECK_HELO_ACCESS: {
                _cleanup_free_ char *h = NULL;
                int st;
                if (!e->helo) {
                        trace(e, el, "no match (no HELO)");
                        return STEP_DUNNO;
                }
                h = strdup(e->helo);
                if (!h)
                        return -ENOMEM;
                ascii_strlower(h);
                r = access_domain(e, el, h, e->helo, "Helo command", &st);
                if (r != 0)
                        return st;
                trace(e, el, "no match (%s not listed)", e->helo);
                return STEP_DUNNO;
        }
        case K_CHECK_SENDER_ACCESS:
                return check_mail_access(e, el, e->sender, ACCESS_SENDER);
        case K_CHECK_RCPT_ACCESS:
                return check_mail_access(e, el, e->recipient, ACCESS_RCPT);
        case K_CHECK_POLICY:
                return check_policy(e, el, cstat == RESTRICT_NAME_OK ? cname : "unknown",
                                    rstat == RESTRICT_NAME_OK ? rname : "unknown");
        case K_REJECT_SENDER_LOGIN_MISMATCH:
        case K_REJECT_AUTH_SENDER_LOGIN_MISMATCH:
        case K_REJECT_KNOWN_SENDER_LOGIN_MISMATCH:
        case K_REJECT_UNAUTH_SENDER_LOGIN_MISMATCH:
                return check_login_mismatch(e, el);
        case K_CLASS:
                trace(e, el, "apply restriction class %s", el->text);
                r = push_list(e, &e->en->classes[el->cls], NULL);
                if (r < 0)
                        return server_config_error(e, el, "restriction classes nested too deeply");
                return STEP_PUSHED;
        }
        return STEP_DUNNO;
}

static void eval_finish(RestrictEval *e) {
        while (e->depth > 0) {
                e->depth--;
                list_free(e->stack[e->depth].owned);
                e->stack[e->depth].owned = NULL;
        }
        e->finished = true;
}

static void eval_fail(RestrictEval *e, int r) {
        free(e->result.reply);
        e->result.reply = strdup(r == -ENOMEM ? "451 4.3.0 Error: out of memory"
                                              : "451 4.3.5 Server configuration error");
        e->result.reject = true;
        eval_finish(e);
}

/* After the lists of a stage: deferrals and the implicit recipient and
 * sender validation. Returns a step result. */
static int eval_post(RestrictEval *e) {
        static const Elem unlisted_rcpt = {.kind = K_REJECT_UNLISTED_RCPT,
                                           .text = (char *) "reject_unlisted_recipient"};
        static const Elem unlisted_sender = {.kind = K_REJECT_UNLISTED_SENDER,
                                             .text = (char *) "reject_unlisted_sender"};
        int r;

        if (e->defer_if_permit) {
                e->top_name = "defer_if_permit";
                trace(e, NULL, "reject: %s", e->defer_if_permit);
                e->result.reply = steal_ptr(e->defer_if_permit);
                e->result.reject = true;
                return STEP_REJECT;
        }
        if (e->stage == RESTRICT_STAGE_RCPT && e->en->reject_unlisted_rcpt && !e->rcpt_checked) {
                e->top_name = "smtpd_reject_unlisted_recipient";
                r = step(e, &unlisted_rcpt);
                if (r != STEP_DUNNO)
                        return r;
        }
        if (((e->stage == RESTRICT_STAGE_RCPT && e->en->delay_reject) ||
             (e->stage == RESTRICT_STAGE_MAIL && !e->en->delay_reject)) &&
            e->en->reject_unlisted_sender && !e->sender_checked && !isempty(e->sender)) {
                e->top_name = "smtpd_reject_unlisted_sender";
                r = step(e, &unlisted_sender);
                if (r != STEP_DUNNO)
                        return r;
        }
        return STEP_DUNNO;
}

static void eval_run(RestrictEval *e) {
        if (e->running || e->finished)
                return;
        e->running = true;
        while (!e->finished) {
                Frame *f;
                int r;

                if (e->depth == 0) {
                        if (e->seq_idx < e->n_seq) {
                                List *l = &e->en->lists[e->seq[e->seq_idx++]];
                                if (l->n == 0)
                                        continue;
                                e->top_name = l->name;
                                (void) push_list(e, l, NULL);
                                continue;
                        }
                        if (e->post_done) {
                                eval_finish(e);
                                break;
                        }
                        r = eval_post(e);
                        if (r == STEP_PENDING)
                                break;
                        e->post_done = true;
                        if (r < 0) {
                                eval_fail(e, r);
                                break;
                        }
                        eval_finish(e);
                        break;
                }
                f = &e->stack[e->depth - 1];
                if (f->idx >= f->list->n) {
                        list_free(f->owned);
                        f->owned = NULL;
                        e->depth--;
                        continue;
                }
                {
                        const Elem *el = &f->list->elems[f->idx];
                        r = step(e, el);
                        if (r == STEP_PENDING)
                                break;
                        /* The frame array is stable, but a push moved the top. */
                        f = &e->stack[e->depth - (r == STEP_PUSHED ? 2 : 1)];
                        f->idx++;
                        /* warn_if_reject covers the next restriction only. */
                        if (r != STEP_PUSHED)
                                e->warn_if_reject = el->kind == K_WARN_IF_REJECT;
                }
                if (r < 0) {
                        eval_fail(e, r);
                        break;
                }
                if (r == STEP_OK) {
                        /* A permit ends the top-level list it is in. */
                        while (e->depth > 0) {
                                e->depth--;
                                list_free(e->stack[e->depth].owned);
                                e->stack[e->depth].owned = NULL;
                        }
                } else if (r == STEP_REJECT)
                        eval_finish(e);
        }
        e->running = false;
        if (e->finished && e->done && !e->starting_query) {
                RestrictDoneFunc done = e->done;
                e->done = NULL;
                done(e, e->userdata);
        }
}

int restrict_eval_start(RestrictEngine *en, RestrictSession *sess, sd_event *event,
                        DnsResolver *dns, RestrictStage stage, const RestrictRequest *req,
                        RestrictTraceFunc tr, RestrictDoneFunc done, void *userdata,
                        RestrictEval **ret) {
        _cleanup_(restrict_eval_freep) RestrictEval *e = NULL;
        RestrictDoneFunc saved;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->en = restrict_engine_ref(en);
        e->sess = sess;
        e->event = event;
        e->dns = dns;
        e->stage = stage;
        e->trace = tr;
        e->userdata = userdata;
#define COPY(field)                                                             \
        do {                                                                    \
                if (req->field && !(e->field = strdup(req->field)))             \
                        return -ENOMEM;                                         \
        } while (0)
        COPY(service);
        COPY(helo);
        COPY(sender);
        COPY(recipient);
        COPY(sasl_username);
        COPY(sasl_method);
        COPY(queue_id);
        COPY(protocol);
#undef COPY
        if (req->client_addr) {
                InetAddr v4;
                e->addr = inet_addr_unmap_v4(req->client_addr, &v4) ? v4 : *req->client_addr;
                e->have_addr = true;
                e->addr_str = inet_addr_to_string(&e->addr);
        } else
                e->addr_str = strdup("unknown");
        if (!e->addr_str)
                return -ENOMEM;
        e->tls = req->tls;
        e->smtputf8 = req->smtputf8;
        e->ill_pipelining = req->ill_pipelining;
        e->rcpt_count = req->rcpt_count;
        e->size = req->size;

        if (!restrict_engine_stage_empty(en, stage) &&
            (en->broken || (!en->relay_safe && stage == RESTRICT_STAGE_RCPT))) {
                /* Never accept mail under a policy that did not load. */
                e->top_name = en->broken ? "configuration" : "smtpd_relay_restrictions";
                (void) server_config_error(e, NULL, en->broken
                                                            ? "errors in the restriction lists"
                                                            : "no relay control: see posternctl check");
                eval_finish(e);
        } else {
                e->n_seq = stage_lists(en, stage, e->seq);
                /* No done callback while running synchronously. */
                eval_run(e);
        }
        if (e->finished) {
                *ret = steal_ptr(e);
                return 1;
        }
        saved = done;
        e->done = saved;
        *ret = steal_ptr(e);
        return 0;
}

const RestrictResult *restrict_eval_result(RestrictEval *e) {
        return &e->result;
}

RestrictEval *restrict_eval_free(RestrictEval *e) {
        if (!e)
                return NULL;
        dns_query_cancel(e->query);
        policy_query_cancel(e->policy);
        eval_finish(e);
        free(e->service);
        free(e->helo);
        free(e->sender);
        free(e->recipient);
        free(e->sasl_username);
        free(e->sasl_method);
        free(e->queue_id);
        free(e->protocol);
        free(e->addr_str);
        free(e->defer_if_permit);
        free(e->defer_if_reject);
        free(e->policy_action);
        free(e->result.reply);
        strv_free(e->result.prepend);
        for (size_t i = 0; i < e->result.n_notes; i++) {
                free(e->result.notes[i].action);
                free(e->result.notes[i].text);
        }
        free(e->result.notes);
        restrict_engine_unref(e->en);
        free(e);
        return NULL;
}
