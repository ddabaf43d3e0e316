/* posternctl-check.c: "posternctl check", the whole-configuration check
 * an administrator runs before a reload. It loads main.cf and every
 * services.d file (syntax, types, unknown names, settings of parameters
 * postern does not implement), then, for main.cf and for
 * each service's overrides, checks every lookup table that a map-list
 * parameter or a check_*_access restriction names (indexed tables exist and
 * are not older than their source; other tables are parsed and their
 * diagnostics shown), and the TLS files (certificate and key readable and
 * matching, CA files readable, a certificate where TLS is required).
 * Errors make the exit status 1, warnings do not. DNS and network services are not tried. */
#include <errno.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "conf.h"
#include "diag.h"
#include "fileio.h"
#include "map.h"
#include "postconf-lib.h"
#include "posternctl-check-units.h"
#include "posternctl.h"
#include "strutil.h"
#include "tls.h"

typedef struct Check {
        Diag diags;
        char *main_path;        /* where defaults are reported */
        char **seen_maps;       /* specs already checked */
        unsigned n_maps;
        unsigned n_certs;
} Check;

void diag_print_json(const Diag *d, FILE *f) {
        fputs("[", f);
        for (size_t i = 0; i < d->n; i++) {
                const DiagEntry *e = &d->entries[i];
                fputs(i ? ",\n  " : "\n  ", f);
                fputs("{\"level\": ", f);
                json_write_string(f, e->level == DIAG_ERROR ? "error" : "warning");
                fputs(", \"file\": ", f);
                if (e->file)
                        json_write_string(f, e->file);
                else
                        fputs("null", f);
                fprintf(f, ", \"line\": %u, \"message\": ", e->line);
                json_write_string(f, strempty(e->text));
                fputs("}", f);
        }
        fputs(d->n ? "\n]\n" : "]\n", f);
}

/* Where parameter name was set, for diagnostics: its file and line, or
 * main.cf without a line for a default. *ret_default tells which. */
static void locate(const Check *k, Config *c, const char *name, const char **ret_file,
                   unsigned *ret_line, bool *ret_default) {
        const char *file = NULL;
        unsigned line = 0;

        if (conf_get_location(c, name, &file, &line) > 0) {
                *ret_file = file;
                *ret_line = line;
                *ret_default = false;
                return;
        }
        *ret_file = k->main_path;
        *ret_line = 0;
        *ret_default = true;
}

static const char *rebuild_command(const char *param) {
        return streq(param, "alias_maps") || streq(param, "alias_database") ? "postalias"
                                                                              : "postmap";
}

static void check_map(Check *k, Config *c, const char *param, const char *spec) {
        _cleanup_free_ char *source = NULL, *index = NULL;
        _cleanup_(map_freep) Map *m = NULL;
        const char *file;
        unsigned line;
        bool is_default;
        Diag md = {0};
        struct stat ss, is;
        int r;

        if (strv_contains(k->seen_maps, spec))
                return;
        (void) strv_extend(&k->seen_maps, spec);
        k->n_maps++;
        locate(k, c, param, &file, &line, &is_default);

        r = map_files(spec, &source, &index);
        if (r >= 0) {
                if (stat(index, &is) < 0) {
                        diag_error(&k->diags, file, line,
                                   "%s%s: %s: cannot use %s: %s (run \"%s %s\")", param,
                                   is_default ? " (default)" : "", spec, index, strerror(errno),
                                   rebuild_command(param), spec);
                        return;
                }
                if (stat(source, &ss) >= 0 &&
                    (ss.st_mtim.tv_sec > is.st_mtim.tv_sec ||
                     (ss.st_mtim.tv_sec == is.st_mtim.tv_sec &&
                      ss.st_mtim.tv_nsec > is.st_mtim.tv_nsec)))
                        diag_warning(&k->diags, file, line,
                                     "%s: %s: %s is older than %s (run \"%s %s\")", param, spec,
                                     index, source, rebuild_command(param), spec);
                return;
        }
        /* Tables without an index: parse them, as a daemon would. */
        r = map_open(spec, MAP_FLAG_FOLD_KEYS, &md, &m);
        for (size_t i = 0; i < md.n; i++) {
                const DiagEntry *e = &md.entries[i];
                if (e->file)
                        diag_add(&k->diags, e->level, e->file, e->line, "%s", strempty(e->text));
                else
                        diag_add(&k->diags, e->level, file, line, "%s: %s", param,
                                 strempty(e->text));
        }
        if (r < 0 && md.n_errors == 0)
                diag_error(&k->diags, file, line, "%s: cannot open %s: %s", param, spec,
                           strerror(-r));
        diag_done(&md);
}

/* The tables named by p's value: every item of a map list, or the argument
 * of each check_*_access restriction in a restriction list. */
static void check_maps_of(Check *k, Config *c, ConfParam p) {
        const ConfParamInfo *info = &conf_params[p];
        char * const *items = conf_get_list(c, p);

        /* alias_database only tells newaliases what to build; nothing opens
         * the tables of a parameter postern does not implement (a value
         * there drew a warning from conf_load()). */
        if (p == P_ALIAS_DATABASE || (info->flags & CONF_FLAG_UNIMPLEMENTED))
                return;
        if (info->type == CONF_TYPE_MAPLIST) {
                for (size_t i = 0; items[i]; i++)
                        check_map(k, c, info->name, items[i]);
                return;
        }
        if (info->type != CONF_TYPE_LIST || !endswith(info->name, "_restrictions"))
                return;
        for (size_t i = 0; items[i] && items[i + 1]; i++)
                if (startswith(items[i], "check_") && endswith(items[i], "_access"))
                        check_map(k, c, info->name, items[i + 1]);
}

static char *openssl_error(void) {
        unsigned long e = ERR_get_error();
        char buf[256];

        if (e == 0)
                return strdup("unknown OpenSSL error");
        ERR_error_string_n(e, buf, sizeof(buf));
        ERR_clear_error();
        return strdup(buf);
}

/* Whether path can be read; reports why not. */
static bool check_readable(Check *k, const char *file, unsigned line, const char *param,
                           const char *path) {
        FILE *f = fopen(path, "re");

        if (!f) {
                diag_error(&k->diags, file, line, "%s: cannot read %s: %s", param, path,
                           strerror(errno));
                return false;
        }
        fclose(f);
        return true;
}

/* Loads a certificate chain and its key the way the daemons will: a key
 * file parameter may be replaced by a systemd credential of the same name
 * or of the file's base name in $CREDENTIALS_DIRECTORY (LoadCredential=),
 * which is what a check run by the unit (ExecReload=) sees. */
static void check_cert_key(Check *k, Config *c, bool server, const char *cert_param,
                           const char *cert, const char *key_param, const char *key) {
        _cleanup_free_ char *credential = NULL;
        SSL_CTX *ctx;
        const char *file;
        unsigned line;
        bool is_default;
        char *err;

        locate(k, c, cert_param, &file, &line, &is_default);
        k->n_certs++;
        if (!check_readable(k, file, line, cert_param, cert))
                return;
        if (endswith(key_param, "_tls_key_file") &&
            tls_credential_path(key_param, key, &credential) > 0)
                key = credential;
        if (!streq(key, cert)) {
                const char *kfile;
                unsigned kline;
                locate(k, c, key_param, &kfile, &kline, &is_default);
                if (!check_readable(k, kfile, kline, key_param, key))
                        return;
        }
        ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
        if (!ctx) {
                err = openssl_error();
                diag_error(&k->diags, NULL, 0, "cannot create a TLS context: %s", strempty(err));
                free(err);
                return;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
                err = openssl_error();
                diag_error(&k->diags, file, line,
                           "%s: cannot load the certificate chain from %s: %s", cert_param, cert,
                           strempty(err));
                free(err);
        } else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
                err = openssl_error();
                locate(k, c, key_param, &file, &line, &is_default);
                diag_error(&k->diags, file, line, "%s: cannot load the private key from %s: %s",
                           key_param, key, strempty(err));
                free(err);
        } else if (SSL_CTX_check_private_key(ctx) != 1) {
                err = openssl_error();
                diag_error(&k->diags, file, line,
                           "%s: the private key in %s does not match the certificate in %s: %s",
                           key_param, key, cert, strempty(err));
                free(err);
        }
        SSL_CTX_free(ctx);
        ERR_clear_error();
}

static void check_ca(Check *k, Config *c, ConfParam file_param, ConfParam path_param) {
        const char *cafile = conf_get_str(c, file_param), *capath = conf_get_str(c, path_param);
        const char *file;
        unsigned line;
        bool is_default;
        struct stat st;

        if (!isempty(cafile)) {
                locate(k, c, conf_params[file_param].name, &file, &line, &is_default);
                (void) check_readable(k, file, line, conf_params[file_param].name, cafile);
        }
        if (!isempty(capath)) {
                locate(k, c, conf_params[path_param].name, &file, &line, &is_default);
                if (stat(capath, &st) < 0)
                        diag_error(&k->diags, file, line, "%s: %s: %s",
                                   conf_params[path_param].name, capath, strerror(errno));
                else if (!S_ISDIR(st.st_mode))
                        diag_error(&k->diags, file, line, "%s: %s is not a directory",
                                   conf_params[path_param].name, capath);
        }
}

static void check_tls(Check *k, Config *c) {
        const char *cert = conf_get_str(c, P_SMTPD_TLS_CERT_FILE);
        const char *key = conf_get_str(c, P_SMTPD_TLS_KEY_FILE);
        const char *level = conf_get_str(c, P_SMTPD_TLS_SECURITY_LEVEL);
        char * const *chain = conf_get_list(c, P_SMTPD_TLS_CHAIN_FILES);
        bool have_server_cert = !isempty(cert) || chain[0];
        const char *file;
        unsigned line;
        bool is_default;

        /* The server: chain files (key and certificates in each) win. */
        for (size_t i = 0; chain[i]; i++)
                check_cert_key(k, c, true, "smtpd_tls_chain_files", chain[i],
                               "smtpd_tls_chain_files", chain[i]);
        if (!chain[0] && !isempty(cert))
                check_cert_key(k, c, true, "smtpd_tls_cert_file", cert, "smtpd_tls_key_file",
                               isempty(key) ? cert : key);

        if (!have_server_cert) {
                if (conf_get_bool(c, P_SMTPD_TLS_WRAPPERMODE)) {
                        locate(k, c, "smtpd_tls_wrappermode", &file, &line, &is_default);
                        diag_error(&k->diags, file, line,
                                   "smtpd_tls_wrappermode = yes needs smtpd_tls_cert_file or "
                                   "smtpd_tls_chain_files");
                } else if (streq(level, "encrypt")) {
                        locate(k, c, "smtpd_tls_security_level", &file, &line, &is_default);
                        diag_error(&k->diags, file, line,
                                   "smtpd_tls_security_level = encrypt needs smtpd_tls_cert_file "
                                   "or smtpd_tls_chain_files");
                } else if (streq(level, "may")) {
                        locate(k, c, "smtpd_tls_security_level", &file, &line, &is_default);
                        diag_warning(&k->diags, file, line,
                                     "smtpd_tls_security_level = may, but STARTTLS will not "
                                     "be offered without smtpd_tls_cert_file or "
                                     "smtpd_tls_chain_files");
                }
        }

        /* The clients' certificates, presented when a server asks. */
        cert = conf_get_str(c, P_SMTP_TLS_CERT_FILE);
        key = conf_get_str(c, P_SMTP_TLS_KEY_FILE);
        if (!isempty(cert))
                check_cert_key(k, c, false, "smtp_tls_cert_file", cert, "smtp_tls_key_file",
                               isempty(key) ? cert : key);
        cert = conf_get_str(c, P_LMTP_TLS_CERT_FILE);
        key = conf_get_str(c, P_LMTP_TLS_KEY_FILE);
        if (!isempty(cert))
                check_cert_key(k, c, false, "lmtp_tls_cert_file", cert, "lmtp_tls_key_file",
                               isempty(key) ? cert : key);
        check_ca(k, c, P_SMTPD_TLS_CAFILE, P_SMTPD_TLS_CAPATH);
        check_ca(k, c, P_SMTP_TLS_CAFILE, P_SMTP_TLS_CAPATH);
        check_ca(k, c, P_LMTP_TLS_CAFILE, P_LMTP_TLS_CAPATH);
}

/* Whether the service's overrides touch TLS, so that its TLS needs a look of
 * its own. */
static bool overrides_tls(char * const *names) {
        STRV_FOREACH(n, names)
                if (strstr(*n, "_tls_"))
                        return true;
        return false;
}

/* Drops repeated entries: a service that shares main.cf's certificate would
 * report its problem again. */
static void diag_dedup(Diag *d) {
        size_t k = 0;

        for (size_t i = 0; i < d->n; i++) {
                DiagEntry *e = &d->entries[i];
                bool dup = false;

                for (size_t j = 0; j < k && !dup; j++) {
                        const DiagEntry *o = &d->entries[j];
                        dup = o->level == e->level && o->line == e->line &&
                              streq_ptr(o->file, e->file) && streq_ptr(o->text, e->text);
                }
                if (dup) {
                        free(e->file);
                        free(e->text);
                        continue;
                }
                d->entries[k++] = *e;
        }
        d->n = k;
}

static void help(void) {
        printf("Usage: posternctl check [-c DIR] [--json]\n"
               "\n"
               "Validates main.cf and services.d (syntax, value types, unknown names,\n"
               "settings of parameters postern does not implement), the lookup tables they\n"
               "name and the TLS certificates and keys. Exits 1 when there are errors;\n"
               "warnings alone do not change the exit status.\n"
               "\n"
               "  -c, --config-dir=DIR  check the configuration in DIR\n"
               "  --json                print the diagnostics as a JSON array\n"
               "  --unit-dir=DIR        read the socket units from DIR only\n"
               "  -q, --quiet           print nothing when all is well\n");
}

int verb_check(int argc, char **argv) {
        enum { ARG_JSON = 0x100, ARG_HELP, ARG_UNIT_DIR };
        static const struct option options[] = {
                {"config-dir", required_argument, NULL, 'c'},
                {"json", no_argument, NULL, ARG_JSON},
                {"unit-dir", required_argument, NULL, ARG_UNIT_DIR},
                {"quiet", no_argument, NULL, 'q'},
                {"help", no_argument, NULL, ARG_HELP},
                {},
        };
        _cleanup_(conf_unrefp) Config *c = NULL;
        const char *dir = NULL, *unit_dir = NULL;
        bool json = false, quiet = false;
        Check k = {0};
        size_t n_set = 0, n_services = 0;
        int opt, r, status;

        optind = 0;
        while ((opt = getopt_long(argc, argv, "c:q", options, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        dir = optarg;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_UNIT_DIR:
                        unit_dir = optarg;
                        break;
                case ARG_HELP:
                        help();
                        return 0;
                default:
                        fprintf(stderr, "posternctl: error: see posternctl check --help\n");
                        return 1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "posternctl: error: check takes no arguments\n");
                return 1;
        }
        if (!dir)
                dir = conf_default_dir();
        k.main_path = path_join(dir, "main.cf");
        if (!k.main_path)
                return 1;

        r = conf_load(dir, NULL, &k.diags, &c);
        if (r < 0 && r != -EINVAL && r != -ENOENT)
                diag_error(&k.diags, NULL, 0, "cannot load the configuration in %s: %s", dir,
                           strerror(-r));
        if (c) {
                for (size_t p = 0; p < _P_MAX; p++)
                        check_maps_of(&k, c, (ConfParam) p);
                check_tls(&k, c);
                n_set = strv_length(conf_main_names(c));
                n_services = strv_length(conf_service_names(c));

                /* Each service's own tables and TLS files. */
                STRV_FOREACH(s, conf_service_names(c)) {
                        _cleanup_(conf_unrefp) Config *sc = NULL;
                        char * const *names;
                        Diag ignore = {0};

                        /* Its problems were reported by conf_load() above. */
                        r = conf_load(dir, *s, &ignore, &sc);
                        diag_done(&ignore);
                        if (r < 0 || conf_service_overrides(c, *s, &names, NULL) < 0)
                                continue;
                        STRV_FOREACH(n, names) {
                                int p = conf_param_lookup(*n);
                                if (p >= 0)
                                        check_maps_of(&k, sc, (ConfParam) p);
                        }
                        if (overrides_tls(names))
                                check_tls(&k, sc);
                }

                /* Listening sockets against inet_interfaces/inet_protocols. */
                (void) check_socket_units(&k.diags, dir, unit_dir);
        }

        /* Relay control of the SMTP services (posternctl-policy.c). */
        if (c && policy_check_relay(dir, c, &k.diags) < 0)
                diag_error(&k.diags, NULL, 0, "out of memory");
        status = k.diags.n_errors > 0 ? 1 : 0;
        diag_dedup(&k.diags);
        if (json)
                diag_print_json(&k.diags, stdout);
        else {
                diag_print(&k.diags, stderr, "posternctl");
                if (status == 0 && !quiet)
                        printf("posternctl: configuration OK: %s (%zu parameters set, %zu service "
                               "files, %u lookup tables, %u TLS certificates checked%s)\n",
                               dir, n_set, n_services, k.n_maps, k.n_certs,
                               k.diags.n ? "; see the warnings above" : "");
        }
        diag_done(&k.diags);
        strv_free(k.seen_maps);
        free(k.main_path);
        return status;
}
