/* posternctl-check-units.c: "posternctl check" for the listening sockets.
 * systemd binds ports 25, 587 and 465 from postern-{smtpd,submission,
 * smtps}.socket, while main.cf still says where mail is received
 * (inet_interfaces) and over which IP versions (inet_protocols), as with
 * Postfix. This reads each socket unit and its drop-ins the way systemd
 * does (the first unit file found in /etc, /run, /usr/local/lib, /usr/lib;
 * drop-in *.conf files of all those directories in file name order, an
 * empty ListenStream= clearing the list) and warns where the two disagree.
 * Entry point: check_socket_units(). Host names in inet_interfaces,
 * interface-bound (%iface) or UNIX listeners and other socket options are
 * not compared. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "conf.h"
#include "diag.h"
#include "fileio.h"
#include "inet.h"
#include "posternctl-check-units.h"
#include "strutil.h"

/* Where systemd looks for system units, highest priority first. */
static const char *const unit_dirs[] = {
        "/etc/systemd/system",
        "/run/systemd/system",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
};

typedef struct Listen {
        char *text;             /* the value as written */
        char *file;             /* where it was written */
        unsigned line;
        bool any;               /* no address: every address of its families */
        InetAddr addr;          /* when !any */
        int family;             /* AF_INET or AF_INET6; AF_INET6 "any" may take IPv4 too */
} Listen;

typedef struct SocketUnit {
        Listen *listens;
        size_t n_listens;
        bool ipv6_only;         /* BindIPv6Only=ipv6-only */
        char *main_file;        /* the unit file itself, for locations */
} SocketUnit;

static void socket_unit_done(SocketUnit *u) {
        for (size_t i = 0; i < u->n_listens; i++) {
                free(u->listens[i].text);
                free(u->listens[i].file);
        }
        free(u->listens);
        free(u->main_file);
        *u = (SocketUnit) {0};
}

static void listens_clear(SocketUnit *u) {
        for (size_t i = 0; i < u->n_listens; i++) {
                free(u->listens[i].text);
                free(u->listens[i].file);
        }
        u->n_listens = 0;
}

/* Parses a ListenStream= value. Returns 1 for an IP listener, 0 for one we
 * do not compare (a UNIX socket, an interface-bound address), -EINVAL for
 * text systemd itself would reject. */
static int listen_parse(const char *value, Listen *ret) {
        _cleanup_free_ char *host = NULL;
        const char *colon, *port;
        char *end;
        unsigned long p;

        if (value[0] == '/' || value[0] == '@' || strchr(value, '%'))
                return 0;
        if (value[0] == '[') {
                const char *close = strchr(value, ']');
                if (!close || close[1] != ':')
                        return -EINVAL;
                host = strndup(value + 1, (size_t) (close - value - 1));
                port = close + 2;
        } else if ((colon = strrchr(value, ':'))) {
                if (strchr(value, ':') != colon)
                        return -EINVAL;         /* IPv6 without brackets */
                host = strndup(value, (size_t) (colon - value));
                port = colon + 1;
        } else
                port = value;
        if (port != value && !host)
                return -ENOMEM;
        errno = 0;
        p = strtoul(port, &end, 10);
        if (errno != 0 || *end || end == port || p == 0 || p > 65535)
                return -EINVAL;

        *ret = (Listen) {0};
        if (!host) {
                ret->any = true;
                ret->family = AF_INET6;         /* dual-stack unless ipv6-only */
                return 1;
        }
        if (inet_addr_parse(host, &ret->addr) < 0)
                return -EINVAL;
        ret->family = ret->addr.family;
        ret->any = true;
        for (unsigned i = 0; i < inet_family_bits(ret->family) / 8; i++)
                if (ret->addr.bytes[i])
                        ret->any = false;
        return 1;
}

/* Reads one unit file or drop-in into u: [Socket] ListenStream= and
 * BindIPv6Only=. A file that cannot be read counts as absent. */
static void read_unit_file(SocketUnit *u, const char *path) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        unsigned line = 0;
        bool in_socket = false;

        f = fopen(path, "re");
        if (!f)
                return;
        while (getline(&buf, &size, f) >= 0) {
                char *l = strstrip(buf), *eq, *key, *value;

                line++;
                if (l[0] == '#' || l[0] == ';' || l[0] == 0)
                        continue;
                if (l[0] == '[') {
                        in_socket = streq(l, "[Socket]");
                        continue;
                }
                eq = strchr(l, '=');
                if (!in_socket || !eq)
                        continue;
                *eq = 0;
                key = strstrip(l);
                value = strstrip(eq + 1);
                if (streq(key, "BindIPv6Only"))
                        u->ipv6_only = streq(value, "ipv6-only");
                else if (streq(key, "ListenStream")) {
                        Listen n, *a;
                        if (isempty(value)) {
                                listens_clear(u);
                                continue;
                        }
                        if (listen_parse(value, &n) <= 0)
                                continue;
                        a = realloc(u->listens, (u->n_listens + 1) * sizeof(Listen));
                        if (!a)
                                return;
                        u->listens = a;
                        n.text = strdup(value);
                        n.file = strdup(path);
                        n.line = line;
                        u->listens[u->n_listens++] = n;
                }
        }
}

static int cmp_basename(const void *a, const void *b) {
        const char *x = strrchr(*(char * const *) a, '/'), *y = strrchr(*(char * const *) b, '/');
        return strcmp(x ? x + 1 : *(char * const *) a, y ? y + 1 : *(char * const *) b);
}

/* Loads unit name from unit_dir, or from the system's directories. Returns
 * 1 when the unit file exists, 0 when not. */
static int socket_unit_load(const char *name, const char *unit_dir, SocketUnit *ret) {
        const char *const *dirs = unit_dir ? &unit_dir : unit_dirs;
        size_t n_dirs = unit_dir ? 1 : ELEMENTSOF(unit_dirs);
        _cleanup_strv_free_ char **dropins = NULL, **seen = NULL;
        _cleanup_free_ char *dname = strdup_printf("%s.d", name);
        SocketUnit u = {0};

        if (!dname)
                return -ENOMEM;
        for (size_t i = 0; i < n_dirs && !u.main_file; i++) {
                _cleanup_free_ char *p = path_join(dirs[i], name);
                if (p && access(p, F_OK) == 0)
                        u.main_file = steal_ptr(p);
        }
        if (!u.main_file)
                return 0;
        /* Drop-ins of all directories by file name; a name in a directory of
         * higher priority hides the same name further down. */
        for (size_t i = 0; i < n_dirs; i++) {
                _cleanup_free_ char *dp = path_join(dirs[i], dname);
                DIR *d = dp ? opendir(dp) : NULL;
                struct dirent *de;
                if (!d)
                        continue;
                while ((de = readdir(d))) {
                        bool dup = false;
                        if (!endswith(de->d_name, ".conf"))
                                continue;
                        STRV_FOREACH(s, seen)
                                if (streq(*s, de->d_name))
                                        dup = true;
                        if (dup)
                                continue;
                        _cleanup_free_ char *fp = path_join(dp, de->d_name);
                        if (!fp || strv_extend(&seen, de->d_name) < 0 ||
                            strv_extend(&dropins, fp) < 0) {
                                closedir(d);
                                socket_unit_done(&u);
                                return -ENOMEM;
                        }
                }
                closedir(d);
        }
        if (dropins)
                qsort(dropins, strv_length(dropins), sizeof(char *), cmp_basename);

        read_unit_file(&u, u.main_file);
        STRV_FOREACH(p, dropins)
                read_unit_file(&u, *p);
        *ret = u;
        return 1;
}

static bool addr_is_loopback(const InetAddr *a) {
        static const uint8_t v6_loopback[16] = {[15] = 1};
        InetAddr v4;
        if (a->family == AF_INET)
                return a->bytes[0] == 127;
        if (inet_addr_unmap_v4(a, &v4))
                return v4.bytes[0] == 127;
        return memcmp(a->bytes, v6_loopback, 16) == 0;
}

static bool addr_eq(const InetAddr *a, const InetAddr *b) {
        return a->family == b->family &&
               memcmp(a->bytes, b->bytes, inet_family_bits(a->family) / 8) == 0;
}

/* Whether the listener takes connections to an address of this family. */
static bool listen_takes(const SocketUnit *u, const Listen *l, int family) {
        if (l->family == family)
                return true;
        /* A wildcard IPv6 socket is dual-stack unless it is ipv6-only. */
        return family == AF_INET && l->family == AF_INET6 && l->any && !u->ipv6_only;
}

static void check_one(Diag *d, Config *c, const char *service, const char *unit,
                      const SocketUnit *u) {
        char * const *ifaces = conf_get_list(c, P_INET_INTERFACES);
        char * const *protos = conf_get_list(c, P_INET_PROTOCOLS);
        const char *if_file = NULL, *pr_file = NULL;
        unsigned if_line = 0, pr_line = 0;
        bool all = false, loopback = false, names = false, v4 = false, v6 = false;
        bool any_listen = false;
        InetAddr *addrs = NULL;
        size_t n_addrs = 0;

        (void) conf_get_location(c, "inet_interfaces", &if_file, &if_line);
        (void) conf_get_location(c, "inet_protocols", &pr_file, &pr_line);

        STRV_FOREACH(p, protos) {
                if (streq(*p, "all"))
                        v4 = v6 = true;
                else if (streq(*p, "ipv4"))
                        v4 = true;
                else if (streq(*p, "ipv6"))
                        v6 = true;
        }
        if (!v4 && !v6)
                v4 = v6 = true;         /* a bad value is conf's to report */

        STRV_FOREACH(i, ifaces) {
                InetAddr a, *n;
                if (streq(*i, "all"))
                        all = true;
                else if (streq(*i, "loopback-only"))
                        loopback = true;
                else if (inet_addr_parse_bracketed(*i, &a) < 0)
                        names = true;   /* a host name: not compared */
                else if ((n = realloc(addrs, (n_addrs + 1) * sizeof(InetAddr)))) {
                        addrs = n;
                        addrs[n_addrs++] = a;
                }
        }

        if (u->n_listens == 0)
                diag_warning(d, u->main_file, 0,
                             "%s has no ListenStream= for an IP address: the %s service "
                             "receives no mail over the network", unit, service);

        for (size_t k = 0; k < u->n_listens; k++) {
                const Listen *l = &u->listens[k];

                if (!v6 && listen_takes(u, l, AF_INET6))
                        diag_warning(d, l->file, l->line,
                                     "%s listens on IPv6 (ListenStream=%s) but inet_protocols "
                                     "excludes it%s", unit, l->text,
                                     l->any && l->family == AF_INET6 ?
                                     "; ListenStream=0.0.0.0:PORT takes IPv4 only" : "");
                if (!v4 && listen_takes(u, l, AF_INET))
                        diag_warning(d, l->file, l->line,
                                     "%s listens on IPv4 (ListenStream=%s) but inet_protocols "
                                     "excludes it%s", unit, l->text,
                                     l->any ? "; add BindIPv6Only=ipv6-only" : "");
                if (l->any)
                        any_listen = true;
                if (all)
                        continue;
                if (loopback) {
                        if (l->any || !addr_is_loopback(&l->addr))
                                diag_warning(d, l->file, l->line,
                                             "%s listens beyond loopback (ListenStream=%s) but "
                                             "inet_interfaces = loopback-only", unit, l->text);
                        continue;
                }
                if (names)
                        continue;
                if (l->any)
                        diag_warning(d, l->file, l->line,
                                     "%s listens on all addresses (ListenStream=%s) but "
                                     "inet_interfaces names only some", unit, l->text);
                else {
                        bool found = false;
                        for (size_t j = 0; j < n_addrs; j++)
                                if (addr_eq(&addrs[j], &l->addr))
                                        found = true;
                        if (!found)
                                diag_warning(d, l->file, l->line,
                                             "%s listens on %s, which inet_interfaces does not "
                                             "name", unit, l->text);
                }
        }

        if (all && !any_listen && u->n_listens > 0)
                diag_warning(d, if_file, if_line,
                             "inet_interfaces = all for %s but %s listens on some addresses "
                             "only (%s line %u)", service, unit, u->listens[0].file,
                             u->listens[0].line);
        if (!all && !loopback && !names)
                for (size_t j = 0; j < n_addrs; j++) {
                        bool served = false;
                        for (size_t k = 0; k < u->n_listens; k++) {
                                const Listen *l = &u->listens[k];
                                if (l->any ? listen_takes(u, l, addrs[j].family)
                                           : addr_eq(&l->addr, &addrs[j]))
                                        served = true;
                        }
                        if (!served) {
                                _cleanup_free_ char *t = inet_addr_to_string(&addrs[j]);
                                diag_warning(d, if_file, if_line,
                                             "inet_interfaces names %s but %s does not listen "
                                             "on it", strempty(t), unit);
                        }
                }
        free(addrs);
}

int check_socket_units(Diag *d, const char *config_dir, const char *unit_dir) {
        static const char *const services[] = {"smtpd", "submission", "smtps"};
        int n = 0;

        if (!config_dir)
                config_dir = conf_default_dir();
        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                _cleanup_(conf_unrefp) Config *c = NULL;
                _cleanup_free_ char *unit = strdup_printf("postern-%s.socket", services[i]);
                SocketUnit u = {0};
                Diag ignore = {0};
                int r;

                if (!unit)
                        return -ENOMEM;
                /* Problems of the configuration itself are reported elsewhere. */
                r = conf_load(config_dir, services[i], &ignore, &c);
                diag_done(&ignore);
                if (r < 0 || !c)
                        continue;
                r = socket_unit_load(unit, unit_dir, &u);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                n++;
                check_one(d, c, services[i], unit, &u);
                socket_unit_done(&u);
        }
        return n;
}
