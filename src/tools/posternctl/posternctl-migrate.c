/* posternctl-migrate.c: "posternctl migrate", the import of a Postfix
 * configuration directory. main.cf is read with a small reader of its
 * syntax (logical lines, comments) and written back line for line: the
 * parameters postern knows stay as they are, the others are commented out
 * with the reason. master.cf's smtpd services become services.d/NAME.cf
 * files (smtp -> smtpd, submission -> submission, smtps/submissions ->
 * smtps) and their listening addresses systemd socket drop-ins under
 * TO/systemd/. Files that values name inside the Postfix directory (lookup
 * table sources and their .db indexes, certificates) are copied and the
 * paths rewritten. Everything else is reported with its file:line: notes
 * for what needs no equivalent, "not carried over" for what is lost, which
 * makes the exit status 2. Entry point: verb_migrate(). Nothing is started,
 * installed into /etc/systemd or rebuilt here; the report says what to run. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <netdb.h>
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
#include "inet.h"
#include "postconf-lib.h"
#include "posternctl.h"
#include "strutil.h"

#define CONF_FILE_MAX (16U * 1024U * 1024U)
#define COPY_FILE_MAX (1024U * 1024U * 1024U)

/* One logical line of main.cf. */
typedef struct MainEntry {
        char *name;             /* NULL for a line that is not "name = value" */
        char *value;            /* as in the file, continuation lines joined */
        char *new_value;        /* rewritten value, NULL when unchanged */
        unsigned first, last;   /* line range, 1-based, comments in between included */
        bool drop;
        bool unknown;           /* a name postern's table lacks: kept only when referenced */
        char *reason;           /* why it was dropped */
} MainEntry;

/* One service of master.cf. */
typedef struct MasterEntry {
        unsigned line;
        char *name, *type, *chroot, *maxproc;
        char **argv;            /* command and arguments, "{ ... }" groups unwrapped */
        char **opt_names;       /* the -o options, in order */
        char **opt_values;
        char *text;             /* the first eight fields, for comments */
} MasterEntry;

/* A postern smtpd-family service that master.cf maps to. */
typedef struct Service {
        const char *name;       /* smtpd, submission, smtps */
        unsigned port;          /* of the shipped socket unit */
        const MasterEntry *from;
        char **opt_names;       /* the overrides, after filtering */
        char **opt_values;
        char **listen;          /* ListenStream= values */
        bool listen_changed;    /* differs from the shipped socket unit */
} Service;

typedef struct OutFile {
        char *rel;              /* relative to the target directory */
        char *data;             /* contents to write, or NULL for a copy */
        char *copy_from;        /* source of a copy */
        mode_t mode;
        bool postern_group;     /* read by a daemon running as postern: group postern, g+r */
        unsigned count;         /* parameters, overrides or listen addresses */
} OutFile;

typedef struct Migrate {
        const char *from, *to;  /* absolute */
        char *from_real;        /* from with symbolic links resolved */
        char *main_text;
        char **lines;           /* main.cf split into lines */
        size_t n_lines;
        MainEntry *main;
        size_t n_main;
        MasterEntry *master;
        size_t n_master;
        Service services[3];
        OutFile *files;
        size_t n_files;
        char **corpus;          /* texts searched for references to master.cf services */
        char **next_steps;
        Diag notes, lost;
        bool chroot_seen;
        bool oom;
} Migrate;

/* Postfix installation settings: postern has its own and keeps them. */
static const char *const install_params[] = {
        "command_directory", "config_directory", "daemon_directory", "data_directory",
        "html_directory", "mail_owner", "mailq_path", "manpage_directory", "meta_directory",
        "newaliases_path", "process_id_directory", "queue_directory", "readme_directory",
        "sample_directory", "sendmail_path", "setgid_group", "shlib_directory",
};

/* Debugging and logging settings that the journal and systemd replace. */
static const char *const obsolete_params[] = {
        "debug_peer_level", "debug_peer_list", "debugger_command", "maillog_file",
        "maillog_file_prefixes", "maillog_file_rotate_suffix", "postlog_service_name",
        "syslog_name",
};

/* master.cf services that postern's own roles take over, by command. */
static const struct {
        const char *service, *command;
} builtin_services[] = {
        {"pickup", "pickup"},     {"cleanup", "cleanup"},        {"qmgr", "qmgr"},
        {"qmgr", "oqmgr"},        {"tlsmgr", "tlsmgr"},          {"rewrite", "trivial-rewrite"},
        {"bounce", "bounce"},     {"defer", "bounce"},           {"trace", "bounce"},
        {"verify", "verify"},     {"flush", "flush"},            {"proxymap", "proxymap"},
        {"proxywrite", "proxymap"}, {"smtp", "smtp"},            {"relay", "smtp"},
        {"showq", "showq"},       {"error", "error"},            {"retry", "error"},
        {"discard", "discard"},   {"local", "local"},            {"virtual", "virtual"},
        {"lmtp", "lmtp"},         {"anvil", "anvil"},            {"scache", "scache"},
        {"postlog", "postlogd"},  {"dnsblog", "dnsblog"},        {"tlsproxy", "tlsproxy"},
};

/* Lookup table types postern reads (postern-maps(5)). */
static const char *const map_types[] = {
        "btree", "cidr", "hash", "inline", "pcre", "regexp", "static", "texthash", "unix",
};

/* Table types of Postfix that postern lacks. */
static const char *const foreign_map_types[] = {
        "cdb", "dbm", "environ", "fail", "ldap", "lmdb", "memcache", "mongodb", "mysql",
        "netinfo", "nis", "nisplus", "pgsql", "pipemap", "randmap", "sdbm", "socketmap",
        "sqlite", "tcp", "unionmap",
};

static bool strv_has(const char *const *l, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (streq(l[i], s))
                        return true;
        return false;
}

static char *m_strdup(Migrate *m, const char *s) {
        char *c = strdup(s);
        if (!c)
                m->oom = true;
        return c;
}

static char *m_printf(Migrate *m, const char *fmt, ...) _printf_(2, 3);
static char *m_printf(Migrate *m, const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        s = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!s)
                m->oom = true;
        return s;
}

static void m_strv_add(Migrate *m, char ***l, const char *s) {
        if (strv_extend(l, s) < 0)
                m->oom = true;
}

/* Trims white space at both ends, moving the text to the start of s. */
static char *strip(char *s) {
        char *t = strstrip(s);
        memmove(s, t, strlen(t) + 1);
        return s;
}

static bool is_blank_or_comment(const char *line) {
        while (*line == ' ' || *line == '\t')
                line++;
        return *line == '\0' || *line == '#' || *line == '\r';
}

/* Splits text into lines (without their newlines). */
static int split_lines(char *text, char ***ret, size_t *ret_n) {
        char **lines = NULL;
        size_t n = 0;

        for (char *p = text; *p;) {
                char *nl = strchr(p, '\n');
                char **l = realloc(lines, (n + 2) * sizeof(char *));
                if (!l) {
                        free(lines);
                        return -ENOMEM;
                }
                lines = l;
                lines[n++] = p;
                if (!nl)
                        break;
                *nl = '\0';
                p = nl + 1;
        }
        if (lines)
                lines[n] = NULL;
        *ret = lines;
        *ret_n = n;
        return 0;
}

/* --- main.cf ----------------------------------------------------------- */

/* Reads main.cf into logical entries: a line starting with white space
 * continues the entry before it; blank and comment lines are skipped. */
static int main_parse(Migrate *m) {
        for (size_t i = 0; i < m->n_lines; i++) {
                const char *line = m->lines[i];
                MainEntry *e;

                if (is_blank_or_comment(line))
                        continue;
                if ((line[0] == ' ' || line[0] == '\t') && m->n_main > 0) {
                        _cleanup_free_ char *part = strdup(line);
                        e = &m->main[m->n_main - 1];
                        if (!part)
                                return -ENOMEM;
                        char *joined = strdup_printf("%s%s%s", strempty(e->value),
                                                     isempty(e->value) ? "" : " ",
                                                     strip(part));
                        if (!joined)
                                return -ENOMEM;
                        free(e->value);
                        e->value = joined;
                        e->last = (unsigned) i + 1;
                        continue;
                }
                e = realloc(m->main, (m->n_main + 1) * sizeof(MainEntry));
                if (!e)
                        return -ENOMEM;
                m->main = e;
                e = &m->main[m->n_main++];
                *e = (MainEntry) {.first = (unsigned) i + 1, .last = (unsigned) i + 1};

                const char *eq = strchr(line, '=');
                if (!eq) {
                        e->drop = true;
                        e->reason = strdup("not a \"name = value\" line");
                        if (!e->reason)
                                return -ENOMEM;
                        diag_error(&m->lost, "main.cf", e->first,
                                   "not a \"name = value\" line; dropped");
                        continue;
                }
                e->name = strndup_safe(line, (size_t) (eq - line));
                e->value = strdup(eq + 1);
                if (!e->name || !e->value)
                        return -ENOMEM;
                strip(e->name);
                strip(e->value);
        }
        return 0;
}

static MainEntry *main_find(Migrate *m, const char *name) {
        /* The last assignment wins, as in Postfix. */
        for (size_t i = m->n_main; i > 0; i--)
                if (m->main[i - 1].name && !m->main[i - 1].drop &&
                    streq(m->main[i - 1].name, name))
                        return &m->main[i - 1];
        return NULL;
}

static const char *entry_value(const MainEntry *e) {
        return e->new_value ? e->new_value : e->value;
}

/* Marks e dropped. lost selects the report: "not carried over" (true) or
 * a note (nothing is lost). */
static void main_drop(Migrate *m, MainEntry *e, bool lost, const char *fmt, ...) _printf_(4, 5);
static void main_drop(Migrate *m, MainEntry *e, bool lost, const char *fmt, ...) {
        _cleanup_free_ char *why = NULL;
        va_list ap;

        va_start(ap, fmt);
        why = strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!why) {
                m->oom = true;
                return;
        }
        e->drop = true;
        free(e->reason);
        e->reason = m_strdup(m, why);
        diag_add(lost ? &m->lost : &m->notes, lost ? DIAG_ERROR : DIAG_WARNING, "main.cf",
                 e->first, "parameter \"%s\": %s; dropped", e->name, why);
}

/* Why postern lacks a Postfix parameter, where a hint helps. */
static const char *unsupported_hint(const char *name) {
        if (strstr(name, "milter"))
                return "milters are not supported by postern";
        if (startswith(name, "postscreen_"))
                return "postern has no postscreen";
        if (streq(name, "content_filter") || streq(name, "smtpd_proxy_filter"))
                return "content filters are not supported by postern";
        if (startswith(name, "smtp_sasl_") || startswith(name, "lmtp_sasl_"))
                return "postern's SMTP and LMTP clients take only the SASL parameters "
                       "postern.conf(5) lists (PLAIN and LOGIN, no Cyrus SASL)";
        return "not supported by postern";
}

/* Settings whose meaning belongs to the Postfix installation. */
static void main_classify(Migrate *m) {
        for (size_t i = 0; i < m->n_main; i++) {
                MainEntry *e = &m->main[i];
                int p;

                if (!e->name || e->drop)
                        continue;
                p = conf_param_lookup(e->name);
                if (strv_has(install_params, ELEMENTSOF(install_params), e->name)) {
                        if (p >= 0 && streq(e->value, conf_params[p].def))
                                continue;
                        main_drop(m, e, false, "Postfix installation setting; postern uses "
                                  "its own%s%s%s", p >= 0 ? " (" : "",
                                  p >= 0 ? conf_params[p].def : "", p >= 0 ? ")" : "");
                        continue;
                }
                if (strv_has(obsolete_params, ELEMENTSOF(obsolete_params), e->name)) {
                        main_drop(m, e, false, "postern logs to the journal with the "
                                  "identifier postern/SERVICE");
                        continue;
                }
                if (p < 0) {
                        e->unknown = true;
                        continue;
                }
                /* Debian's Postfix reads myorigin from a file; postern
                 * takes the value literally, so the file's name is
                 * replaced by its content. */
                if (streq(e->name, "myorigin") && e->value[0] == '/') {
                        _cleanup_free_ char *text = NULL;
                        int r = file_read_all(e->value, 4096, &text, NULL);
                        if (r < 0) {
                                main_drop(m, e, true, "cannot read %s: %s", e->value,
                                          strerror(-r));
                                continue;
                        }
                        text[strcspn(text, "\n")] = '\0';
                        strip(text);
                        if (isempty(text)) {
                                main_drop(m, e, true, "%s is empty", e->value);
                                continue;
                        }
                        e->new_value = m_strdup(m, text);
                        diag_warning(&m->notes, "main.cf", e->first,
                                     "myorigin = %s: replaced by the file's content \"%s\"",
                                     e->value, text);
                }
        }
}

/* Whether value refers to $name or ${name...}. */
static bool refers_to(const char *value, const char *name) {
        size_t n = strlen(name);

        for (const char *p = strchr(value, '$'); p; p = strchr(p + 1, '$')) {
                const char *s = p + 1;
                bool brace = *s == '{' || *s == '(';
                if (brace)
                        s++;
                if (strncmp(s, name, n) != 0)
                        continue;
                s += n;
                if (brace ? (*s == '}' || *s == ')' || *s == '?' || *s == ':')
                          : !(isalnum((unsigned char) *s) || *s == '_'))
                        return true;
        }
        return false;
}

static bool name_listed(const char *list, const char *name) {
        _cleanup_strv_free_ char **items = NULL;

        if (str_split_list(list, true, &items) < 0)
                return false;
        return strv_contains(items, name);
}

/* Keeps the names postern lacks that a kept value uses as $name (user
 * parameters such as Postfix's mua_client_restrictions) or that
 * smtpd_restriction_classes lists; drops the rest. */
static void main_resolve_unknown(Migrate *m) {
        bool changed = true;

        for (size_t i = 0; i < m->n_main; i++)
                if (m->main[i].unknown)
                        m->main[i].drop = true;
        while (changed) {
                changed = false;
                for (size_t i = 0; i < m->n_main; i++) {
                        MainEntry *u = &m->main[i];
                        bool used = false;

                        if (!u->unknown || !u->drop)
                                continue;
                        for (size_t j = 0; j < m->n_main && !used; j++) {
                                const MainEntry *e = &m->main[j];
                                if (j == i || !e->name || e->drop)
                                        continue;
                                used = refers_to(entry_value(e), u->name) ||
                                       (streq(e->name, "smtpd_restriction_classes") &&
                                        name_listed(entry_value(e), u->name));
                        }
                        for (size_t j = 0; j < m->n_master && !used; j++)
                                STRV_FOREACH(v, m->master[j].opt_values)
                                        if (refers_to(*v, u->name))
                                                used = true;
                        if (used) {
                                u->drop = false;
                                changed = true;
                        }
                }
        }
        for (size_t i = 0; i < m->n_main; i++)
                if (m->main[i].unknown && m->main[i].drop)
                        main_drop(m, &m->main[i], true, "%s", unsupported_hint(m->main[i].name));
}

static size_t main_kept(const Migrate *m) {
        size_t n = 0;
        for (size_t i = 0; i < m->n_main; i++)
                if (m->main[i].name && !m->main[i].drop)
                        n++;
        return n;
}

/* Builds the new main.cf. ret_entry_of (optional) maps each output line
 * (1-based) to the index of the entry it belongs to, or -1. */
static char *main_render(Migrate *m, long **ret_entry_of) {
        _cleanup_free_ long *entry_of = NULL;
        size_t n_out = 0, cap = 0;
        StrBuf b = {0};
        size_t e = 0;
        int r = 0;

#define EMIT(idx, ...)                                                          \
        do {                                                                    \
                if (n_out + 2 > cap) {                                          \
                        cap = cap ? cap * 2 : 64;                               \
                        long *t = realloc(entry_of, cap * sizeof(long));        \
                        if (!t)                                                 \
                                goto oom;                                       \
                        entry_of = t;                                           \
                }                                                               \
                entry_of[++n_out] = (idx);                                      \
                r |= strbuf_printf(&b, __VA_ARGS__);                            \
        } while (0)

        EMIT(-1, "# main.cf for postern, migrated by \"posternctl migrate\" from\n");
        EMIT(-1, "# %s/main.cf.\n", m->from);
        EMIT(-1, "# Parameters that postern does not support are commented out below,\n");
        EMIT(-1, "# each after a line that says why.\n");
        for (size_t i = 0; i < m->n_lines; i++) {
                while (e < m->n_main && m->main[e].last < i + 1)
                        e++;
                MainEntry *me = e < m->n_main && m->main[e].first <= i + 1 ? &m->main[e] : NULL;

                if (!me) {
                        EMIT(-1, "%s\n", m->lines[i]);
                        continue;
                }
                if (me->drop) {
                        if (me->first == i + 1)
                                EMIT((long) e, "# posternctl migrate: %s:\n", strempty(me->reason));
                        EMIT((long) e, "#%s\n", m->lines[i]);
                        continue;
                }
                if (me->new_value) {
                        if (me->first == i + 1)
                                EMIT((long) e, "%s = %s\n", me->name, me->new_value);
                        continue;
                }
                EMIT((long) e, "%s\n", m->lines[i]);
        }
#undef EMIT
        if (r < 0)
                goto oom;
        if (ret_entry_of) {
                entry_of[0] = (long) n_out;
                *ret_entry_of = steal_ptr(entry_of);
        }
        return strbuf_steal(&b);
oom:
        strbuf_done(&b);
        m->oom = true;
        return NULL;
}

/* Loads the new main.cf as postern will and drops what it rejects, until it
 * loads; returns the Config (NULL after an unexpected failure). */
static Config *main_validate(Migrate *m) {
        for (size_t round = 0; round <= m->n_main; round++) {
                _cleanup_free_ long *entry_of = NULL;
                _cleanup_free_ char *text = main_render(m, &entry_of);
                Config *c = NULL;
                Diag d = {0};
                bool dropped = false;
                int r;

                if (!text)
                        return NULL;
                r = conf_load_string(text, "main.cf", &d, &c);
                if (r >= 0) {
                        diag_done(&d);
                        return c;
                }
                for (size_t i = 0; i < d.n; i++) {
                        const DiagEntry *de = &d.entries[i];
                        long idx;
                        if (de->level != DIAG_ERROR || de->line == 0 ||
                            de->line > (unsigned long) entry_of[0])
                                continue;
                        idx = entry_of[de->line];
                        if (idx < 0 || m->main[idx].drop || !m->main[idx].name)
                                continue;
                        /* The text repeats "main.cf:LINE:" of the new file. */
                        main_drop(m, &m->main[idx], true, "postern rejects the value: %s",
                                  strempty(de->text));
                        dropped = true;
                }
                if (!dropped)
                        for (size_t i = 0; i < d.n; i++)
                                if (d.entries[i].level == DIAG_ERROR)
                                        diag_error(&m->lost, "main.cf", 0, "%s",
                                                   strempty(d.entries[i].text));
                diag_done(&d);
                if (!dropped)
                        return NULL;
        }
        return NULL;
}

/* --- master.cf --------------------------------------------------------- */

/* Splits a master.cf command line into words; "{ ... }" is one word with
 * the braces and the white space inside them removed. */
static int split_words(const char *s, char ***ret) {
        _cleanup_strv_free_ char **words = NULL;

        for (const char *p = s;;) {
                const char *start;
                char *w;

                p += strspn(p, " \t\r");
                if (!*p)
                        break;
                if (*p == '{') {
                        int depth = 0;
                        start = p + 1;
                        for (; *p; p++) {
                                if (*p == '{')
                                        depth++;
                                else if (*p == '}' && --depth == 0)
                                        break;
                        }
                        w = strndup_safe(start, (size_t) (p - start));
                        if (*p)
                                p++;
                        if (w)
                                strip(w);
                } else {
                        start = p;
                        p += strcspn(p, " \t\r");
                        w = strndup_safe(start, (size_t) (p - start));
                }
                if (!w || strv_consume(&words, w) < 0)
                        return -ENOMEM;
        }
        *ret = steal_ptr(words);
        return 0;
}

static int master_add(Migrate *m, unsigned line, const char *text) {
        _cleanup_strv_free_ char **w = NULL;
        MasterEntry *e;
        int r;

        r = split_words(text, &w);
        if (r < 0)
                return r;
        if (strv_length(w) < 8) {
                diag_error(&m->lost, "master.cf", line,
                           "fewer than 8 fields (service type private unpriv chroot wakeup "
                           "maxproc command); not migrated");
                return 0;
        }
        e = realloc(m->master, (m->n_master + 1) * sizeof(MasterEntry));
        if (!e)
                return -ENOMEM;
        m->master = e;
        e = &m->master[m->n_master++];
        *e = (MasterEntry) {
                .line = line,
                .name = strdup(w[0]),
                .type = strdup(w[1]),
                .chroot = strdup(w[4]),
                .maxproc = strdup(w[6]),
                .text = strdup_printf("%s %s %s %s %s %s %s %s", w[0], w[1], w[2], w[3], w[4],
                                      w[5], w[6], w[7]),
        };
        if (!e->name || !e->type || !e->chroot || !e->maxproc || !e->text)
                return -ENOMEM;
        for (size_t i = 7; w[i]; i++)
                if (strv_extend(&e->argv, w[i]) < 0)
                        return -ENOMEM;
        /* Options come first, as for getopt(); "flags=... argv=..." of
         * pipe(8) and what follows belong to the command. */
        for (size_t i = 8; w[i] && w[i][0] == '-'; i++) {
                const char *opt = NULL;

                if (streq(w[i], "-o") && w[i + 1])
                        opt = w[++i];
                else if (startswith(w[i], "-o") && w[i][2])
                        opt = w[i] + 2;
                if (!opt)
                        continue;
                const char *eq = strchr(opt, '=');
                _cleanup_free_ char *n = eq ? strndup_safe(opt, (size_t) (eq - opt)) : NULL;
                _cleanup_free_ char *v = eq ? strdup(eq + 1) : NULL;
                if (!eq) {
                        diag_error(&m->lost, "master.cf", line,
                                   "service \"%s\": option \"-o %s\" is not name=value; ignored",
                                   e->name, opt);
                        continue;
                }
                if (!n || !v)
                        return -ENOMEM;
                if (strv_extend(&e->opt_names, strip(n)) < 0 ||
                    strv_extend(&e->opt_values, strip(v)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* Reads master.cf: a service per logical line; lines starting with white
 * space continue it; comment and blank lines are skipped anywhere. */
static int master_parse(Migrate *m, char *text) {
        _cleanup_free_ char **lines = NULL;
        StrBuf cur = {0};
        unsigned cur_line = 0;
        size_t n;
        int r;

        r = split_lines(text, &lines, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i <= n; i++) {
                const char *l = i < n ? lines[i] : NULL;

                if (l && is_blank_or_comment(l))
                        continue;
                if (l && (l[0] == ' ' || l[0] == '\t') && cur_line) {
                        if (strbuf_putc(&cur, ' ') < 0 || strbuf_puts(&cur, l) < 0)
                                goto oom;
                        continue;
                }
                if (cur_line) {
                        r = master_add(m, cur_line, cur.data ? cur.data : "");
                        if (r < 0) {
                                strbuf_done(&cur);
                                return r;
                        }
                }
                strbuf_clear(&cur);
                cur_line = 0;
                if (!l)
                        break;
                if (strbuf_puts(&cur, l) < 0)
                        goto oom;
                cur_line = (unsigned) i + 1;
        }
        strbuf_done(&cur);
        return 0;
oom:
        strbuf_done(&cur);
        return -ENOMEM;
}

static const char *master_command(const MasterEntry *e) {
        return e->argv && e->argv[0] ? e->argv[0] : "";
}

/* The port of a master.cf inet service name ("smtp", "2525",
 * "127.0.0.1:smtp", "[::1]:submission"); 0 when unknown. *ret_host gets
 * the host part or NULL. */
static unsigned service_port(Migrate *m, const char *name, char **ret_host) {
        static const struct {
                const char *name;
                unsigned port;
        } ports[] = {
                {"smtp", 25}, {"submission", 587}, {"smtps", 465}, {"submissions", 465},
        };
        const char *port = name, *colon;
        long long n;

        *ret_host = NULL;
        if (name[0] == '[') {
                const char *close = strchr(name, ']');
                if (close) {
                        *ret_host = strndup_safe(name + 1, (size_t) (close - name - 1));
                        port = close[1] == ':' ? close + 2 : "";
                }
        } else if ((colon = strrchr(name, ':'))) {
                *ret_host = strndup_safe(name, (size_t) (colon - name));
                port = colon + 1;
        }
        if (name[0] == '[' || strchr(name, ':'))
                if (!*ret_host)
                        m->oom = true;
        for (size_t i = 0; i < ELEMENTSOF(ports); i++)
                if (streq(port, ports[i].name))
                        return ports[i].port;
        if (str_is_ascii_digits(port) && conf_parse_int(port, &n) >= 0 && n > 0 && n < 65536)
                return (unsigned) n;
        struct servent *se = getservbyname(port, "tcp");
        return se ? ntohs((uint16_t) se->s_port) : 0;
}

/* Appends s (taken) to l unless it is there. */
static void listen_push(Migrate *m, char ***l, char *s) {
        if (!s)
                return;
        if (strv_contains(*l, s)) {
                free(s);
                return;
        }
        if (strv_consume(l, s) < 0)
                m->oom = true;
}

/* Adds the ListenStream= values of host:port to l. The host comes from the
 * service name or, without one, from main.cf's inet_interfaces. */
static void listen_add(Migrate *m, const MasterEntry *e, const char *host, unsigned port,
                       char ***l) {
        _cleanup_strv_free_ char **hosts = NULL;
        const MainEntry *ii = main_find(m, "inet_interfaces");
        const MainEntry *ip = main_find(m, "inet_protocols");
        const char *protos = ip ? entry_value(ip) : "all";
        bool v4 = strstr(protos, "all") || strstr(protos, "ipv4");
        bool v6 = strstr(protos, "all") || strstr(protos, "ipv6");

        if (host) {
                if (strv_extend(&hosts, host) < 0)
                        goto oom;
        } else if (ii && str_split_list(entry_value(ii), true, &hosts) < 0)
                goto oom;

        if (!hosts || strv_contains(hosts, "all")) {
                /* The port alone binds every address, IPv4 and IPv6. */
                listen_push(m, l, m_printf(m, "%u", port));
                return;
        }
        STRV_FOREACH(h, hosts) {
                InetAddr a;
                char *s = NULL;

                if (streq(*h, "loopback-only") || streq(*h, "localhost")) {
                        if (v4)
                                listen_push(m, l, m_printf(m, "127.0.0.1:%u", port));
                        if (v6)
                                listen_push(m, l, m_printf(m, "[::1]:%u", port));
                        continue;
                }
                if (inet_addr_parse(*h, &a) >= 0)
                        s = m_printf(m, strchr(*h, ':') ? "[%s]:%u" : "%s:%u", *h, port);
                if (!s) {
                        diag_error(&m->lost, host ? "master.cf" : "main.cf",
                                   host ? e->line : (ii ? ii->first : 0),
                                   "listen address \"%s\" of service \"%s\" is not an IP "
                                   "address; systemd needs one; the socket listens on every "
                                   "address instead", *h, e->name);
                        s = m_printf(m, "%u", port);
                }
                listen_push(m, l, s);
        }
        return;
oom:
        m->oom = true;
}

static bool strv_equal(char * const *a, char * const *b) {
        size_t n = strv_length(a);

        if (n != strv_length(b))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return true;
}

/* The -o options of an smtpd service that postern can use: syslog_name
 * goes (a note), names postern lacks are reported. */
static void filter_options(Migrate *m, const MasterEntry *e, char ***ret_names,
                           char ***ret_values) {
        for (size_t i = 0; e->opt_names && e->opt_names[i]; i++) {
                const char *n = e->opt_names[i], *v = e->opt_values[i];

                if (streq(n, "syslog_name")) {
                        diag_warning(&m->notes, "master.cf", e->line,
                                     "service \"%s\": option \"syslog_name=%s\" dropped: the "
                                     "journal identifier is postern/SERVICE", e->name, v);
                        continue;
                }
                if (conf_param_lookup(n) < 0) {
                        diag_error(&m->lost, "master.cf", e->line,
                                   "service \"%s\": option \"%s=%s\": %s; dropped", e->name, n,
                                   v, unsupported_hint(n));
                        continue;
                }
                m_strv_add(m, ret_names, n);
                m_strv_add(m, ret_values, v);
        }
}

static Service *service_by_name(Migrate *m, const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++)
                if (streq(m->services[i].name, name))
                        return &m->services[i];
        return NULL;
}

static bool option_is(char * const *names, char * const *values, const char *n, const char *v) {
        for (size_t i = 0; names && names[i]; i++)
                if (streq(names[i], n) && strcaseeq(values[i], v))
                        return true;
        return false;
}

/* Maps one smtpd (or postscreen) inet service to a postern service. pass
 * selects standard ports (1) or the others (2). */
static void map_smtpd(Migrate *m, const MasterEntry *e, int pass) {
        _cleanup_strv_free_ char **names = NULL, **values = NULL;
        _cleanup_free_ char *host = NULL;
        unsigned port = service_port(m, e->name, &host);
        bool postscreen = streq(master_command(e), "postscreen");
        Service *s = NULL;

        if (port == 0) {
                if (pass == 1)
                        diag_error(&m->lost, "master.cf", e->line,
                                   "service \"%s\": unknown port; not migrated", e->name);
                return;
        }
        if ((port == 25 || port == 587 || port == 465) != (pass == 1))
                return;
        if (!postscreen)
                filter_options(m, e, &names, &values);
        if (m->oom)
                return;
        if (port == 25)
                s = service_by_name(m, "smtpd");
        else if (port == 587)
                s = service_by_name(m, "submission");
        else if (port == 465)
                s = service_by_name(m, "smtps");
        else {
                /* Another port: it joins the service whose options it
                 * shares, or smtpd when it has none. */
                for (size_t i = 0; i < ELEMENTSOF(m->services) && !s; i++)
                        if (m->services[i].from && strv_equal(m->services[i].opt_names, names) &&
                            strv_equal(m->services[i].opt_values, values))
                                s = &m->services[i];
                if (!s && !names)
                        s = service_by_name(m, "smtpd");
                if (!s && option_is(names, values, "smtpd_tls_wrappermode", "yes") &&
                    !service_by_name(m, "smtps")->from)
                        s = service_by_name(m, "smtps");
                if (!s) {
                        diag_error(&m->lost, "master.cf", e->line,
                                   "service \"%s\" (smtpd): postern has one service each for "
                                   "smtpd, submission and smtps; a further smtpd with options "
                                   "of its own has no equivalent; not migrated", e->name);
                        return;
                }
        }
        if (postscreen) {
                diag_error(&m->lost, "master.cf", e->line,
                           "service \"%s\" (postscreen): postern has no postscreen; "
                           "postern-smtpd takes the connections on its address; not migrated",
                           e->name);
        } else if (s->from && !strv_equal(s->opt_names, names)) {
                diag_error(&m->lost, "master.cf", e->line,
                           "service \"%s\": its options differ from those of master.cf:%u, "
                           "which postern's %s service takes; not migrated", e->name,
                           s->from->line, s->name);
                return;
        } else if (s->from && !strv_equal(s->opt_values, values)) {
                diag_error(&m->lost, "master.cf", e->line,
                           "service \"%s\": its options differ from those of master.cf:%u, "
                           "which postern's %s service takes; not migrated", e->name,
                           s->from->line, s->name);
                return;
        } else if (!s->from) {
                s->from = e;
                s->opt_names = steal_ptr(names);
                s->opt_values = steal_ptr(values);
        }
        listen_add(m, e, host, port, &s->listen);
        if (e->maxproc && !streq(e->maxproc, "-"))
                diag_warning(&m->notes, "master.cf", e->line,
                             "service \"%s\": process limit %s dropped: one postern-%s process "
                             "serves all connections (LimitNOFILE= in a drop-in for the "
                             "service caps them)", e->name, e->maxproc, s->name);
}

/* The smtpd that Postfix's postscreen hands connections to ("smtpd pass
 * ... smtpd"): its options are those of the port 25 service. */
static void map_pass(Migrate *m, const MasterEntry *e) {
        _cleanup_strv_free_ char **names = NULL, **values = NULL;
        Service *s = service_by_name(m, "smtpd");

        filter_options(m, e, &names, &values);
        if (s->from && streq(master_command(s->from), "smtpd")) {
                diag_error(&m->lost, "master.cf", e->line,
                           "service \"%s\" (pass): master.cf:%u already gives postern's smtpd "
                           "service its options; not migrated", e->name, s->from->line);
                return;
        }
        s->from = e;
        strv_free(s->opt_names);
        strv_free(s->opt_values);
        s->opt_names = steal_ptr(names);
        s->opt_values = steal_ptr(values);
}

static bool is_name_char(char c) {
        return c && (isalnum((unsigned char) c) || strchr("_-.", c));
}

/* Whether main.cf, master.cf options or a transport table use master.cf
 * service name as a transport ("name:", "name" in a *_transport or
 * *_filter value) or a socket ("private/name"). */
static bool service_used(Migrate *m, const char *name) {
        size_t n = strlen(name);

        STRV_FOREACH(t, m->corpus) {
                for (const char *p = strstr(*t, name); p; p = strstr(p + 1, name)) {
                        char before = p == *t ? ' ' : p[-1];
                        char after = p[n];
                        if (is_name_char(before) || before == '$')
                                continue;
                        if (after == ':' || (before == '/' && p - *t >= 8 &&
                                             startswith(p - 8, "private/") &&
                                             !is_name_char(after)))
                                return true;
                        /* "content_filter = name", "-o content_filter=name" */
                        if ((before == '=' || before == ' ' || before == '\t') &&
                            (after == '\0' || after == ' ' || after == ',' || after == '\n' ||
                             after == '\t')) {
                                const char *line = p;
                                while (line > *t && line[-1] != '\n')
                                        line--;
                                const char *eq = strchr(line, '=');
                                _cleanup_free_ char *key = eq && eq < p
                                        ? strndup_safe(line, (size_t) (eq - line)) : NULL;
                                if (key && (endswith(strip(key), "transport") ||
                                            endswith(key, "filter")))
                                        return true;
                        }
                }
        }
        return false;
}

static void corpus_build(Migrate *m) {
        for (size_t i = 0; i < m->n_main; i++) {
                const MainEntry *e = &m->main[i];
                if (!e->name)
                        continue;
                char *line = m_printf(m, "%s = %s", e->name, e->value);
                if (line && strv_consume(&m->corpus, line) < 0)
                        m->oom = true;
                if (!streq(e->name, "transport_maps"))
                        continue;
                /* The tables' text, for "domain transport:nexthop" lines. */
                _cleanup_strv_free_ char **items = NULL;
                if (str_split_list(e->value, true, &items) < 0) {
                        m->oom = true;
                        continue;
                }
                STRV_FOREACH(it, items) {
                        const char *path = strchr(*it, ':');
                        char *text = NULL;
                        if (path && path[1] == '/' &&
                            file_read_all(path + 1, CONF_FILE_MAX, &text, NULL) >= 0)
                                if (strv_consume(&m->corpus, text) < 0)
                                        m->oom = true;
                }
        }
        for (size_t i = 0; i < m->n_master; i++)
                for (size_t j = 0; m->master[i].opt_names && m->master[i].opt_names[j]; j++) {
                        char *s = m_printf(m, "%s=%s", m->master[i].opt_names[j],
                                           m->master[i].opt_values[j]);
                        if (s && strv_consume(&m->corpus, s) < 0)
                                m->oom = true;
                }
}

static void map_other(Migrate *m, const MasterEntry *e) {
        const char *cmd = master_command(e);
        bool builtin_cmd = false, builtin = false;

        for (size_t i = 0; i < ELEMENTSOF(builtin_services); i++) {
                if (!streq(builtin_services[i].command, cmd))
                        continue;
                builtin_cmd = true;
                if (streq(builtin_services[i].service, e->name))
                        builtin = true;
        }
        if (builtin) {
                for (size_t i = 0; e->opt_names && e->opt_names[i]; i++) {
                        if (streq(e->opt_names[i], "syslog_name"))
                                diag_warning(&m->notes, "master.cf", e->line,
                                             "service \"%s\": option \"syslog_name=%s\" dropped: "
                                             "the journal identifier is postern/SERVICE", e->name,
                                             e->opt_values[i]);
                        else
                                diag_error(&m->lost, "master.cf", e->line,
                                           "service \"%s\" (%s): option \"%s=%s\": postern has no "
                                           "per-transport overrides (set it in main.cf to apply "
                                           "it to all); not migrated", e->name, cmd,
                                           e->opt_names[i], e->opt_values[i]);
                }
                return;
        }
        if (!service_used(m, e->name)) {
                diag_warning(&m->notes, "master.cf", e->line,
                             "service \"%s\" (%s): not used by main.cf, master.cf or "
                             "transport_maps; skipped", e->name, cmd);
                return;
        }
        if (builtin_cmd && (streq(cmd, "smtp") || streq(cmd, "lmtp")))
                diag_error(&m->lost, "master.cf", e->line,
                           "service \"%s\" (%s): postern's transports are smtp, relay, lmtp, "
                           "local and virtual; use \"%s:\" where \"%s:\" is used; not migrated",
                           e->name, cmd, cmd, e->name);
        else
                diag_error(&m->lost, "master.cf", e->line,
                           "service \"%s\" (%s): no postern equivalent; not migrated", e->name,
                           cmd);
}

static void master_map(Migrate *m) {
        for (int pass = 1; pass <= 2; pass++)
                for (size_t i = 0; i < m->n_master; i++) {
                        const MasterEntry *e = &m->master[i];
                        const char *cmd = master_command(e);
                        if (streq(e->type, "inet") &&
                            (streq(cmd, "smtpd") || streq(cmd, "postscreen")))
                                map_smtpd(m, e, pass);
                }
        for (size_t i = 0; i < m->n_master; i++) {
                const MasterEntry *e = &m->master[i];
                const char *cmd = master_command(e);

                if (streq(e->chroot, "y") || streq(e->chroot, "-"))
                        m->chroot_seen = m->chroot_seen || streq(e->chroot, "y");
                if (streq(e->type, "inet") && (streq(cmd, "smtpd") || streq(cmd, "postscreen")))
                        continue;
                if (streq(e->type, "pass") && streq(cmd, "smtpd"))
                        map_pass(m, e);
                else if (streq(e->type, "inet"))
                        diag_error(&m->lost, "master.cf", e->line,
                                   "service \"%s\" (%s): no postern equivalent; not migrated",
                                   e->name, cmd);
                else
                        map_other(m, e);
        }
        if (m->chroot_seen)
                diag_warning(&m->notes, "master.cf", 0,
                             "chroot (column 5) dropped: postern's units run sandboxed by systemd");
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++) {
                Service *s = &m->services[i];
                _cleanup_free_ char *def = NULL;

                if (!s->from) {
                        diag_warning(&m->notes, "master.cf", 0,
                                     "no service for postern's %s (port %u); leave "
                                     "postern-%s.socket disabled", s->name, s->port, s->name);
                        continue;
                }
                def = m_printf(m, "%u", s->port);
                /* A postscreen-only port 25 still listens where it did. */
                s->listen_changed = s->listen && def &&
                                    !(strv_length(s->listen) == 1 && streq(s->listen[0], def));
        }
}

/* Checks the overrides as postern will load them: expanded against the
 * new main.cf, against the type of each parameter. */
static void services_validate(Migrate *m, Config *c) {
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++) {
                Service *s = &m->services[i];
                _cleanup_strv_free_ char **names = NULL, **values = NULL;

                for (size_t j = 0; s->opt_names && s->opt_names[j]; j++) {
                        _cleanup_free_ char *exp = NULL, *expected = NULL;
                        int p = conf_param_lookup(s->opt_names[j]);

                        if (c && p >= 0 && conf_expand(c, s->opt_values[j], &exp) >= 0 &&
                            conf_param_check_value((ConfParam) p, exp, &expected) == -EINVAL) {
                                diag_error(&m->lost, "master.cf", s->from->line,
                                           "service \"%s\": option \"%s=%s\": postern wants %s; "
                                           "dropped", s->from->name, s->opt_names[j],
                                           s->opt_values[j], strempty(expected));
                                continue;
                        }
                        m_strv_add(m, &names, s->opt_names[j]);
                        m_strv_add(m, &values, s->opt_values[j]);
                }
                strv_free(s->opt_names);
                strv_free(s->opt_values);
                s->opt_names = steal_ptr(names);
                s->opt_values = steal_ptr(values);
        }
}

/* --- files named in values --------------------------------------------- */

static OutFile *out_add(Migrate *m, const char *rel) {
        OutFile *f;

        for (size_t i = 0; i < m->n_files; i++)
                if (streq(m->files[i].rel, rel))
                        return &m->files[i];
        f = realloc(m->files, (m->n_files + 1) * sizeof(OutFile));
        if (!f) {
                m->oom = true;
                return NULL;
        }
        m->files = f;
        f = &m->files[m->n_files++];
        *f = (OutFile) {.rel = m_strdup(m, rel), .mode = 0644};
        return f;
}

static void step_add(Migrate *m, char *s) {
        if (!s)
                return;
        if (strv_contains(m->next_steps, s)) {
                free(s);
                return;
        }
        if (strv_consume(&m->next_steps, s) < 0)
                m->oom = true;
}

/* Postfix reads the SASL password tables as root; postern-deliver-remote
 * reads them as user postern. A copy others may not read gets the group
 * postern and group read permission (0640 for Postfix's usual 0600), or,
 * without that group, a next step saying so. */
static void secret_for_postern(Migrate *m, OutFile *f, const char *param) {
        if (!streq(param, "smtp_sasl_password_maps") && !streq(param, "lmtp_sasl_password_maps"))
                return;
        if (f->mode & S_IROTH)
                return;
        f->mode = (f->mode & ~(mode_t) (S_IWGRP | S_IXGRP)) | S_IRGRP;
        if (getgrnam("postern"))
                f->postern_group = true;
        else
                step_add(m, m_printf(m, "chgrp postern %s/%s  # read by postern-deliver-remote "
                                        "as user postern", m->to, f->rel));
}

/* Queues the copy of FROM/rel (and its .db index for indexed tables).
 * Returns 1 when queued, 0 when the file is not there, < 0 when it cannot
 * be read. */
static int copy_add(Migrate *m, const char *rel, const char *type, const char *param) {
        _cleanup_free_ char *src = path_join(m->from, rel);
        bool indexed = type && (streq(type, "hash") || streq(type, "btree"));
        struct stat st;
        OutFile *f;

        if (!src)
                return -ENOMEM;
        int sr = stat(src, &st) < 0 ? -errno : 0;
        bool have_source = sr >= 0 && S_ISREG(st.st_mode);
        if (!have_source) {
                /* Directories (a CApath) and missing files are noted. */
                if (!indexed)
                        return sr == -ENOENT || sr >= 0 ? 0 : sr;
        } else {
                if (access(src, R_OK) < 0)
                        return -errno;
                f = out_add(m, rel);
                if (!f)
                        return -ENOMEM;
                free(f->copy_from);
                f->copy_from = m_strdup(m, src);
                f->mode = st.st_mode & 07777;
                secret_for_postern(m, f, param);
        }
        if (!indexed)
                return 1;

        _cleanup_free_ char *db_rel = m_printf(m, "%s.db", rel);
        _cleanup_free_ char *db = db_rel ? path_join(m->from, db_rel) : NULL;
        const char *tool = streq(param, "alias_maps") || streq(param, "alias_database")
                                   ? "postalias" : "postmap";
        if (!db)
                return -ENOMEM;
        if (stat(db, &st) >= 0 && S_ISREG(st.st_mode) && access(db, R_OK) >= 0) {
                f = out_add(m, db_rel);
                if (!f)
                        return -ENOMEM;
                free(f->copy_from);
                f->copy_from = m_strdup(m, db);
                f->mode = st.st_mode & 07777;
                secret_for_postern(m, f, param);
        } else if (have_source)
                step_add(m, m_printf(m, "%s %s:%s/%s", tool, type, m->to, rel));
        else
                return 0;
        return 1;
}

/* The path of a value item inside the Postfix directory, relative to it,
 * or NULL. */
static const char *rel_path(Migrate *m, const char *path, bool *ret_literal) {
        const char *prefixes[] = {m->from, strempty(m->from_real), "/etc/postfix"};
        const char *r;

        *ret_literal = true;
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (!isempty(prefixes[i]) && (r = startswith(path, prefixes[i])) &&
                    r[0] == '/' && r[1])
                        return r + 1;
        *ret_literal = false;
        if ((r = startswith(path, "$config_directory/")) ||
            (r = startswith(path, "${config_directory}/")))
                return *r ? r : NULL;
        return NULL;
}

static char *str_replace_all(const char *s, const char *old, const char *new) {
        StrBuf b = {0};
        size_t n = strlen(old);
        int r = 0;

        for (const char *p; (p = strstr(s, old)); s = p + n) {
                r |= strbuf_append(&b, s, (size_t) (p - s));
                r |= strbuf_puts(&b, new);
        }
        r |= strbuf_puts(&b, s);
        if (r < 0) {
                strbuf_done(&b);
                return NULL;
        }
        return strbuf_steal(&b);
}

/* Copies the files that a value names inside the Postfix directory and
 * returns the value with their new paths (caller frees), or NULL when
 * nothing changes. Table types postern lacks are reported through
 * *ret_bad_type (borrowed from the value's item, caller frees). */
static char *value_files(Migrate *m, const char *file, unsigned line, const char *param,
                         const char *value, char **ret_bad_type) {
        _cleanup_strv_free_ char **items = NULL;
        _cleanup_free_ char *out = strdup(value);
        bool changed = false;
        int p = conf_param_lookup(param);
        bool maps = p >= 0 && (conf_params[p].type == CONF_TYPE_MAPLIST ||
                               endswith(param, "_restrictions"));

        if (!out || str_split_list(value, true, &items) < 0) {
                m->oom = true;
                return NULL;
        }
        STRV_FOREACH(it, items) {
                _cleanup_free_ char *type = NULL;
                const char *path = *it;
                bool literal;

                /* "proxy:" only moves a lookup out of Postfix's chroot. */
                if (startswith(path, "proxy:") && maps) {
                        char *t = str_replace_all(out, "proxy:", "");
                        if (!t) {
                                m->oom = true;
                                return NULL;
                        }
                        free(out);
                        out = t;
                        changed = true;
                        diag_warning(&m->notes, file, line,
                                     "%s: \"proxy:\" removed from %s: postern needs no proxy",
                                     param, *it);
                        path += strlen("proxy:");
                }
                const char *colon = strchr(path, ':');
                if (colon && path[0] != '/' && path[0] != '$') {
                        type = strndup_safe(path, (size_t) (colon - path));
                        if (!type) {
                                m->oom = true;
                                return NULL;
                        }
                        if (maps && !ret_bad_type[0] &&
                            strv_has(foreign_map_types, ELEMENTSOF(foreign_map_types), type) &&
                            !strv_has(map_types, ELEMENTSOF(map_types), type)) {
                                *ret_bad_type = m_strdup(m, type);
                                continue;
                        }
                        path = colon + 1;
                }
                const char *rel = rel_path(m, path, &literal);
                if (!rel)
                        continue;
                int r = copy_add(m, rel, type, param);
                if (r < 0) {
                        diag_error(&m->lost, file, line, "%s: cannot copy %s/%s: %s; the value "
                                   "still names the Postfix file", param, m->from, rel,
                                   strerror(-r));
                        continue;
                }
                if (r == 0) {
                        diag_warning(&m->notes, file, line, "%s: %s is not a file in %s; not "
                                     "copied", param, path, m->from);
                        continue;
                }
                if (!literal)
                        continue;       /* $config_directory follows the new directory */
                _cleanup_free_ char *np = m_printf(m, "%s/%s", m->to, rel);
                char *t = np ? str_replace_all(out, path, np) : NULL;
                if (!t) {
                        m->oom = true;
                        return NULL;
                }
                free(out);
                out = t;
                changed = true;
        }
        return changed ? steal_ptr(out) : NULL;
}

static void files_scan(Migrate *m) {
        for (size_t i = 0; i < m->n_main; i++) {
                MainEntry *e = &m->main[i];
                _cleanup_free_ char *bad = NULL;
                char *nv;

                if (!e->name || e->drop)
                        continue;
                nv = value_files(m, "main.cf", e->first, e->name, entry_value(e), &bad);
                if (bad) {
                        free(nv);
                        main_drop(m, e, true, "table type \"%s:\" is not supported by postern "
                                  "(convert the table to hash: or texthash:)", bad);
                        continue;
                }
                if (nv) {
                        free(e->new_value);
                        e->new_value = nv;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++) {
                Service *s = &m->services[i];
                for (size_t j = 0; s->opt_names && s->opt_names[j]; j++) {
                        _cleanup_free_ char *bad = NULL;
                        char *nv = value_files(m, "master.cf", s->from->line, s->opt_names[j],
                                               s->opt_values[j], &bad);
                        if (bad)
                                diag_error(&m->lost, "master.cf", s->from->line,
                                           "service \"%s\": option \"%s\": table type \"%s:\" is "
                                           "not supported by postern", s->from->name,
                                           s->opt_names[j], bad);
                        if (nv) {
                                free(s->opt_values[j]);
                                s->opt_values[j] = nv;
                        }
                }
        }
}

/* Relative socket paths mean the queue directory, which is postern's now. */
static void socket_notes(Migrate *m, Config *c) {
        const char *spool = c ? conf_get_str(c, P_QUEUE_DIRECTORY) : NULL;

        if (!spool)
                return;
        for (size_t i = 0; i < m->n_main; i++) {
                const MainEntry *e = &m->main[i];
                const char *v, *rel = NULL;

                if (!e->name || e->drop)
                        continue;
                v = entry_value(e);
                if (streq(e->name, "smtpd_sasl_path") && v[0] != '/' && !startswith(v, "inet:"))
                        rel = v;
                else if (endswith(e->name, "transport") && (rel = strstr(v, ":unix:")))
                        rel = rel[6] == '/' ? NULL : rel + 6;
                if (rel)
                        diag_warning(&m->notes, "main.cf", e->first,
                                     "%s: \"%s\" is now %s/%s: Dovecot must listen there", e->name,
                                     rel, spool, rel);
        }
}

/* --- output ------------------------------------------------------------ */

static void render_services(Migrate *m) {
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++) {
                Service *s = &m->services[i];
                StrBuf b = {0};
                int r = 0;

                if (!s->from)
                        continue;
                if (s->opt_names) {
                        OutFile *f;
                        _cleanup_free_ char *rel = m_printf(m, "services.d/%s.cf", s->name);
                        r |= strbuf_printf(&b, "# services.d/%s.cf: overrides of main.cf for "
                                           "postern's %s service,\n# migrated from master.cf "
                                           "line %u (%s).\n", s->name, s->name, s->from->line,
                                           s->from->text);
                        for (size_t j = 0; s->opt_names[j]; j++)
                                r |= strbuf_printf(&b, "%s =%s%s\n", s->opt_names[j],
                                                   isempty(s->opt_values[j]) ? "" : " ",
                                                   s->opt_values[j]);
                        f = rel && r >= 0 ? out_add(m, rel) : NULL;
                        if (!f) {
                                strbuf_done(&b);
                                m->oom = true;
                                continue;
                        }
                        f->data = strbuf_steal(&b);
                        f->count = (unsigned) strv_length(s->opt_names);
                }
                if (s->listen_changed) {
                        OutFile *f;
                        _cleanup_free_ char *rel = m_printf(m, "systemd/postern-%s.socket.d/"
                                                            "50-migrated.conf", s->name);
                        bool specific = false;
                        r |= strbuf_printf(&b, "# Listening addresses of postern-%s.socket, "
                                           "migrated from master.cf line %u.\n"
                                           "# Install: cp -r systemd/postern-%s.socket.d "
                                           "/etc/systemd/system/ &&\n#   systemctl "
                                           "daemon-reload && systemctl restart postern-%s.socket\n"
                                           "[Socket]\nListenStream=\n", s->name, s->from->line,
                                           s->name, s->name);
                        STRV_FOREACH(l, s->listen) {
                                r |= strbuf_printf(&b, "ListenStream=%s\n", *l);
                                if (!str_is_ascii_digits(*l) && !startswith(*l, "127.") &&
                                    !startswith(*l, "[::1]"))
                                        specific = true;
                        }
                        /* Addresses of interfaces that come up after the
                         * socket would otherwise fail to bind at boot. */
                        if (specific)
                                r |= strbuf_puts(&b, "FreeBind=yes\n");
                        f = rel && r >= 0 ? out_add(m, rel) : NULL;
                        if (!f) {
                                strbuf_done(&b);
                                m->oom = true;
                                continue;
                        }
                        f->data = strbuf_steal(&b);
                        f->count = (unsigned) strv_length(s->listen);
                        step_add(m, m_printf(m, "cp -r %s/systemd/postern-%s.socket.d "
                                             "/etc/systemd/system/", m->to, s->name));
                }
        }
}

static int mkdir_parents(const char *path) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
                *s = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        return 0;
}

static int copy_file(const char *src, const char *dst, mode_t mode) {
        _cleanup_free_ char *data = NULL;
        struct stat st;
        size_t len;
        int r;

        r = file_read_all(src, COPY_FILE_MAX, &data, &len);
        if (r < 0)
                return r;
        if (stat(src, &st) < 0)
                return -errno;
        (void) unlink(dst);     /* an existing file would keep its old mode */
        r = file_write_atomic(dst, data, len, mode);
        if (r < 0)
                return r;
        /* The index must stay newer than its source, as posternctl check
         * verifies. */
        const struct timespec times[2] = {st.st_atim, st.st_mtim};
        if (utimensat(AT_FDCWD, dst, times, 0) < 0)
                return -errno;
        return 0;
}

static int write_files(Migrate *m) {
        /* Sources first, then the .db indexes, so that each index keeps
         * its (later) time stamp. */
        for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < m->n_files; i++) {
                        const OutFile *f = &m->files[i];
                        _cleanup_free_ char *dst = path_join(m->to, f->rel);
                        int r;

                        if ((f->copy_from && endswith(f->rel, ".db")) != (pass == 1))
                                continue;
                        if (!dst)
                                return -ENOMEM;
                        r = mkdir_parents(dst);
                        if (r >= 0)
                                r = f->copy_from ? copy_file(f->copy_from, dst, f->mode)
                                                 : file_write_atomic(dst, f->data,
                                                                     strlen(f->data), f->mode);
                        if (r >= 0 && f->postern_group) {
                                struct group *g = getgrnam("postern");
                                if (!g || chown(dst, (uid_t) -1, g->gr_gid) < 0)
                                        r = g ? -errno : -ENOENT;
                        }
                        if (r < 0) {
                                fprintf(stderr, "posternctl: error: cannot write %s: %s\n", dst,
                                        strerror(-r));
                                return r;
                        }
                }
        return 0;
}

static unsigned item_rank(const DiagEntry *e) {
        return (streq_ptr(e->file, "main.cf") ? 0 : 1) * 2 + (e->line == 0);
}

/* Orders report items by file, then line (items of a whole file last),
 * keeping the order of items on the same line: an insertion sort. */
static void items_sort(Diag *d) {
        for (size_t i = 1; i < d->n; i++) {
                DiagEntry x = d->entries[i];
                size_t j = i;
                while (j > 0) {
                        const DiagEntry *p = &d->entries[j - 1];
                        if (item_rank(p) < item_rank(&x) ||
                            (item_rank(p) == item_rank(&x) && p->line <= x.line))
                                break;
                        d->entries[j] = *p;
                        j--;
                }
                d->entries[j] = x;
        }
}

static void print_items(const Diag *d, const char *title) {
        if (d->n == 0)
                return;
        printf("%s:\n", title);
        for (size_t i = 0; i < d->n; i++) {
                const DiagEntry *e = &d->entries[i];
                if (e->line)
                        printf("  %s:%u: %s\n", e->file, e->line, e->text);
                else
                        printf("  %s: %s\n", e->file, e->text);
        }
}

static void print_json_items(const Diag *d) {
        fputs("[", stdout);
        for (size_t i = 0; i < d->n; i++) {
                const DiagEntry *e = &d->entries[i];
                fputs(i ? ", " : "", stdout);
                fputs("{\"file\": ", stdout);
                json_write_string(stdout, strempty(e->file));
                printf(", \"line\": %u, \"message\": ", e->line);
                json_write_string(stdout, strempty(e->text));
                fputs("}", stdout);
        }
        fputs("]", stdout);
}

static void print_report(Migrate *m, bool json, bool dry_run, size_t n_params) {
        if (json) {
                fputs("{\"from\": ", stdout);
                json_write_string(stdout, m->from);
                fputs(", \"to\": ", stdout);
                json_write_string(stdout, m->to);
                printf(", \"dry_run\": %s, \"parameters\": %zu, \"files\": [",
                       dry_run ? "true" : "false", n_params);
                for (size_t i = 0; i < m->n_files; i++) {
                        const OutFile *f = &m->files[i];
                        fputs(i ? ", " : "", stdout);
                        fputs("{\"path\": ", stdout);
                        json_write_string(stdout, f->rel);
                        if (f->copy_from) {
                                fputs(", \"copied_from\": ", stdout);
                                json_write_string(stdout, f->copy_from);
                        } else
                                printf(", \"count\": %u", f->count);
                        fputs("}", stdout);
                }
                fputs("], \"notes\": ", stdout);
                print_json_items(&m->notes);
                fputs(", \"not_carried_over\": ", stdout);
                print_json_items(&m->lost);
                fputs(", \"next_steps\": [", stdout);
                STRV_FOREACH(s, m->next_steps) {
                        fputs(s == m->next_steps ? "" : ", ", stdout);
                        json_write_string(stdout, *s);
                }
                fputs("]}\n", stdout);
                return;
        }
        printf("%s %s to %s\n", dry_run ? "would migrate" : "migrated", m->from, m->to);
        printf("carried over: %zu parameters\n", n_params);
        for (size_t i = 0; i < m->n_files; i++) {
                const OutFile *f = &m->files[i];
                if (f->copy_from || streq(f->rel, "main.cf"))
                        continue;
                printf("%s: %u %s\n", f->rel, f->count,
                       startswith(f->rel, "systemd/") ? (f->count == 1 ? "listen address"
                                                                        : "listen addresses")
                                                      : (f->count == 1 ? "override"
                                                                       : "overrides"));
        }
        for (size_t i = 0; i < m->n_files; i++)
                if (m->files[i].copy_from)
                        printf("copied: %s\n", m->files[i].rel);
        print_items(&m->notes, "notes");
        print_items(&m->lost, "not carried over");
        if (m->next_steps) {
                printf("next steps:\n");
                STRV_FOREACH(s, m->next_steps)
                        printf("  %s\n", *s);
        }
}

static void migrate_done(Migrate *m) {
        for (size_t i = 0; i < m->n_main; i++) {
                free(m->main[i].name);
                free(m->main[i].value);
                free(m->main[i].new_value);
                free(m->main[i].reason);
        }
        free(m->main);
        for (size_t i = 0; i < m->n_master; i++) {
                MasterEntry *e = &m->master[i];
                free(e->name);
                free(e->type);
                free(e->chroot);
                free(e->maxproc);
                free(e->text);
                strv_free(e->argv);
                strv_free(e->opt_names);
                strv_free(e->opt_values);
        }
        free(m->master);
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++) {
                strv_free(m->services[i].opt_names);
                strv_free(m->services[i].opt_values);
                strv_free(m->services[i].listen);
        }
        for (size_t i = 0; i < m->n_files; i++) {
                free(m->files[i].rel);
                free(m->files[i].data);
                free(m->files[i].copy_from);
        }
        free(m->files);
        free(m->lines);
        free(m->main_text);
        free(m->from_real);
        strv_free(m->corpus);
        strv_free(m->next_steps);
        diag_done(&m->notes);
        diag_done(&m->lost);
}

static void help(void) {
        printf("Usage: posternctl migrate [--from DIR] [--to DIR] [--dry-run] [--force] [--json]\n"
               "\n"
               "Imports a Postfix configuration: main.cf parameters that postern knows,\n"
               "master.cf options of the smtpd services as services.d files, listening\n"
               "addresses as systemd socket drop-ins, and the files that values name inside\n"
               "the Postfix directory. Reports what it could not carry over; exits 2 then.\n"
               "\n"
               "  --from=DIR            the Postfix configuration (default /etc/postfix)\n"
               "  -c, --to=DIR          the postern configuration directory to write\n"
               "  -n, --dry-run         print what would be written; write nothing\n"
               "  -f, --force           replace an existing main.cf in the target\n"
               "  --json                print the report as a JSON object\n");
}

static char *absolute(const char *path) {
        char cwd[4096];

        if (path[0] == '/')
                return strdup(path);
        if (!getcwd(cwd, sizeof(cwd)))
                return NULL;
        return strdup_printf("%s/%s", cwd, path);
}

static int run_migrate(Migrate *m, bool dry_run, bool force, bool json) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        _cleanup_free_ char *main_path = path_join(m->from, "main.cf");
        _cleanup_free_ char *master_path = path_join(m->from, "master.cf");
        _cleanup_free_ char *master_text = NULL, *target = path_join(m->to, "main.cf");
        size_t n_params;
        int r;

        if (!main_path || !master_path || !target)
                return -ENOMEM;
        r = file_read_all(main_path, CONF_FILE_MAX, &m->main_text, NULL);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: cannot read %s: %s\n", main_path,
                        strerror(-r));
                return 1;
        }
        r = file_read_all(master_path, CONF_FILE_MAX, &master_text, NULL);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: cannot read %s: %s\n", master_path,
                        strerror(-r));
                return 1;
        }
        if (!dry_run && !force && access(target, F_OK) >= 0) {
                fprintf(stderr, "posternctl: error: %s exists; nothing written (--force "
                        "replaces it)\n", target);
                return 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(m->services); i++)
                m->services[i] = (Service) {
                        .name = (const char *[]) {"smtpd", "submission", "smtps"}[i],
                        .port = (unsigned[]) {25, 587, 465}[i],
                };

        if (split_lines(m->main_text, &m->lines, &m->n_lines) < 0 || main_parse(m) < 0 ||
            master_parse(m, master_text) < 0)
                return -ENOMEM;
        corpus_build(m);
        main_classify(m);
        main_resolve_unknown(m);
        master_map(m);
        files_scan(m);
        c = main_validate(m);
        if (!c && !m->oom) {
                fprintf(stderr, "posternctl: error: the migrated main.cf does not load\n");
                print_items(&m->lost, "not carried over");
                return 1;
        }
        services_validate(m, c);
        socket_notes(m, c);
        if (m->oom)
                return -ENOMEM;

        OutFile *f = out_add(m, "main.cf");
        if (!f)
                return -ENOMEM;
        n_params = main_kept(m);
        f->data = main_render(m, NULL);
        f->count = (unsigned) n_params;
        if (!f->data)
                return -ENOMEM;
        f = NULL;               /* render_services() may move m->files */
        render_services(m);
        {
                _cleanup_free_ char *units = NULL;
                for (size_t i = 0; i < ELEMENTSOF(m->services); i++)
                        if (m->services[i].listen_changed)
                                step_add(m, m_strdup(m, "systemctl daemon-reload"));
                step_add(m, m_printf(m, "posternctl -c %s check", m->to));
                for (size_t i = 0; i < ELEMENTSOF(m->services); i++)
                        if (m->services[i].from) {
                                char *u = m_printf(m, "%s postern-%s.socket", strempty(units),
                                                   m->services[i].name);
                                free(units);
                                units = u;
                        }
                if (units)
                        step_add(m, m_printf(m, "systemctl enable --now%s", units));
        }
        if (m->oom)
                return -ENOMEM;

        if (dry_run) {
                if (!json)
                        for (size_t i = 0; i < m->n_files; i++) {
                                const OutFile *o = &m->files[i];
                                if (o->copy_from)
                                        printf("--- would copy %s to %s/%s\n", o->copy_from,
                                               m->to, o->rel);
                                else
                                        printf("--- would write %s/%s\n%s", m->to, o->rel,
                                               o->data);
                        }
        } else {
                r = write_files(m);
                if (r < 0)
                        return 1;
        }
        items_sort(&m->notes);
        items_sort(&m->lost);
        print_report(m, json, dry_run, n_params);
        return m->lost.n > 0 ? 2 : 0;
}

int verb_migrate(int argc, char **argv) {
        enum { ARG_FROM = 0x100, ARG_JSON, ARG_HELP };
        static const struct option options[] = {
                {"from", required_argument, NULL, ARG_FROM},
                {"to", required_argument, NULL, 'c'},
                {"config-dir", required_argument, NULL, 'c'},
                {"dry-run", no_argument, NULL, 'n'},
                {"force", no_argument, NULL, 'f'},
                {"json", no_argument, NULL, ARG_JSON},
                {"help", no_argument, NULL, ARG_HELP},
                {},
        };
        _cleanup_free_ char *to = NULL, *from = NULL;
        const char *from_arg = "/etc/postfix", *to_arg = NULL;
        bool dry_run = false, force = false, json = false;
        Migrate m = {0};
        int opt, r;

        optind = 0;
        while ((opt = getopt_long(argc, argv, "c:nf", options, NULL)) >= 0) {
                switch (opt) {
                case ARG_FROM:
                        from_arg = optarg;
                        break;
                case 'c':
                        to_arg = optarg;
                        break;
                case 'n':
                        dry_run = true;
                        break;
                case 'f':
                        force = true;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_HELP:
                        help();
                        return 0;
                default:
                        fprintf(stderr, "posternctl: error: see posternctl migrate --help\n");
                        return 1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "posternctl: error: migrate takes no arguments\n");
                return 1;
        }
        to = absolute(to_arg ? to_arg : conf_default_dir());
        from = absolute(from_arg);
        if (!to || !from) {
                fprintf(stderr, "posternctl: error: cannot resolve the directories: %m\n");
                return 1;
        }
        /* Trailing slashes would double in the rewritten paths. */
        for (size_t n = strlen(to); n > 1 && to[n - 1] == '/'; n--)
                to[n - 1] = '\0';
        for (size_t n = strlen(from); n > 1 && from[n - 1] == '/'; n--)
                from[n - 1] = '\0';
        m.from = from;
        m.from_real = realpath(from, NULL);
        m.to = to;
        r = run_migrate(&m, dry_run, force, json);
        if (r < 0) {
                fprintf(stderr, "posternctl: error: migrate: %s\n", strerror(-r));
                r = 1;
        }
        migrate_done(&m);
        return r;
}
