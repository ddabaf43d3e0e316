/* postconf-lib.c: postconf's options and output (see postconf-lib.h).
 * Listing loads the configuration with conf_load() and prints its
 * diagnostics first; editing (-e, -X, -#) does not need a loadable
 * configuration, so that a broken main.cf can be repaired with postconf
 * itself, but refuses values that do not fit their parameter. Values are
 * shown with runs of white space folded into one blank, as Postfix does. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "conf.h"
#include "diag.h"
#include "fileio.h"
#include "postconf-lib.h"
#include "strutil.h"

/* Postfix's postconf -f line width and continuation indent. */
#define FOLD_WIDTH 80
#define FOLD_INDENT "    "

typedef enum Mode {
        MODE_LIST,
        MODE_EDIT,
        MODE_REMOVE,
        MODE_COMMENT,
} Mode;

typedef struct Options {
        const char *program;
        const char *dir;
        Mode mode;
        bool defaults;          /* -d */
        bool non_default;       /* -n */
        bool value_only;        /* -h */
        bool name_only;         /* -H */
        bool expand;            /* -x */
        bool fold;              /* -f */
        bool services;          /* -P */
        bool json;
        char **args;            /* borrowed from argv */
        int n_args;
} Options;

/* Output: either "name = value" lines or one JSON object. */
typedef struct Printer {
        const Options *o;
        bool first;
} Printer;

void json_write_string(FILE *f, const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        fputc('"', f);
        while (*p) {
                unsigned c = *p;
                size_t n = 0;

                if (c == '"' || c == '\\') {
                        fprintf(f, "\\%c", c);
                        p++;
                        continue;
                }
                if (c < 0x20) {
                        switch (c) {
                        case '\n':
                                fputs("\\n", f);
                                break;
                        case '\t':
                                fputs("\\t", f);
                                break;
                        case '\r':
                                fputs("\\r", f);
                                break;
                        default:
                                fprintf(f, "\\u%04x", c);
                        }
                        p++;
                        continue;
                }
                if (c < 0x80) {
                        fputc((int) c, f);
                        p++;
                        continue;
                }
                /* Copies a well-formed UTF-8 sequence, replaces anything else. */
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1;
                else if (c >= 0xe0 && c <= 0xef)
                        n = 2;
                else if (c >= 0xf0 && c <= 0xf4)
                        n = 3;
                for (size_t i = 1; n && i <= n; i++)
                        if ((p[i] & 0xc0) != 0x80)
                                n = 0;
                if (n == 0) {
                        fputs("\\ufffd", f);
                        p++;
                        continue;
                }
                fwrite(p, 1, n + 1, f);
                p += n + 1;
        }
        fputc('"', f);
}

/* Folds runs of white space into one blank and trims both ends. */
static char *normalize(const char *value) {
        StrBuf b = {0};
        bool blank = false;

        for (const char *p = value; *p; p++) {
                if (strchr(" \t\n\r\v\f", *p)) {
                        blank = b.len > 0;
                        continue;
                }
                if ((blank && strbuf_putc(&b, ' ') < 0) || strbuf_putc(&b, *p) < 0) {
                        strbuf_done(&b);
                        return NULL;
                }
                blank = false;
        }
        return strbuf_steal(&b);
}

/* Prints "name = value" (or the value alone), folded with -f. */
static void print_line(const Options *o, const char *name, const char *value) {
        _cleanup_free_ char *v = normalize(value);
        size_t col;

        if (!v) {
                fprintf(stderr, "%s: error: out of memory\n", o->program);
                return;
        }
        if (o->name_only) {
                printf("%s\n", name);
                return;
        }
        if (o->value_only && !o->fold) {
                printf("%s\n", v);
                return;
        }
        if (o->value_only)
                col = 0;
        else {
                printf("%s =", name);
                col = strlen(name) + 2;
        }
        if (!o->fold) {
                printf("%s%s\n", *v ? " " : "", v);
                return;
        }
        for (char *w = strtok(v, " "); w; w = strtok(NULL, " ")) {
                size_t n = strlen(w);
                if (col > 0 && col + 1 + n > FOLD_WIDTH) {
                        printf("\n" FOLD_INDENT "%s", w);
                        col = strlen(FOLD_INDENT) + n;
                } else {
                        printf("%s%s", col > 0 ? " " : "", w);
                        col += (col > 0 ? 1 : 0) + n;
                }
        }
        putchar('\n');
}

static void printer_begin(Printer *p) {
        p->first = true;
        if (p->o->json)
                fputs("{", stdout);
}

static void printer_item(Printer *p, const char *name, const char *value) {
        if (!p->o->json) {
                print_line(p->o, name, value);
                return;
        }
        _cleanup_free_ char *v = normalize(value);
        fputs(p->first ? "\n  " : ",\n  ", stdout);
        json_write_string(stdout, name);
        fputs(": ", stdout);
        json_write_string(stdout, v ? v : value);
        p->first = false;
}

static void printer_end(Printer *p) {
        if (p->o->json)
                fputs(p->first ? "}\n" : "\n}\n", stdout);
}

static void print_diags(const Options *o, Diag *d) {
        diag_print(d, stderr, o->program);
}

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

/* The value postconf shows for name, or NULL when it has none. */
static const char *shown_value(const Options *o, Config *c, const char *name) {
        ConfSource src;
        const char *raw;

        if (o->non_default) {
                raw = conf_get_raw(c, name, &src);
                if (!raw || src == CONF_SOURCE_DEFAULT)
                        return NULL;
        }
        return conf_get_by_name(c, name, o->expand);
}

static int list_main(const Options *o) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        _cleanup_strv_free_ char **names = NULL;
        Diag d = {0};
        Printer pr = {.o = o};
        int r;

        if (o->defaults) {
                /* Defaults need no main.cf: a configuration of nothing but defaults. */
                r = conf_load_string("", "main.cf", &d, &c);
        } else
                r = conf_load(o->dir, NULL, &d, &c);
        print_diags(o, &d);
        diag_done(&d);
        if (r < 0) {
                if (r != -EINVAL && r != -ENOENT)
                        fprintf(stderr, "%s: error: cannot load the configuration: %s\n",
                                o->program, strerror(-r));
                return 1;
        }

        printer_begin(&pr);
        if (o->n_args > 0) {
                for (int i = 0; i < o->n_args; i++) {
                        const char *name = o->args[i], *v;
                        bool known = o->defaults ? conf_param_lookup(name) >= 0
                                                 : conf_name_known(c, name);
                        if (!known) {
                                fprintf(stderr, "%s: warning: %s: unknown parameter\n", o->program,
                                        name);
                                continue;
                        }
                        v = shown_value(o, c, name);
                        if (v)
                                printer_item(&pr, name, v);
                }
                printer_end(&pr);
                return 0;
        }

        if (o->non_default) {
                STRV_FOREACH(n, conf_main_names(c))
                        if (conf_name_known(c, *n) && strv_extend(&names, *n) < 0)
                                goto oom;
        } else {
                for (size_t p = 0; p < _P_MAX; p++)
                        if (strv_extend(&names, conf_params[p].name) < 0)
                                goto oom;
                if (!o->defaults)
                        STRV_FOREACH(n, conf_user_names(c))
                                if (strv_extend(&names, *n) < 0)
                                        goto oom;
        }
        if (names)
                qsort(names, strv_length(names), sizeof(char *), strcmp_ptr);
        STRV_FOREACH(n, names) {
                const char *v = shown_value(o, c, *n);
                if (v)
                        printer_item(&pr, *n, v);
        }
        printer_end(&pr);
        return 0;
oom:
        fprintf(stderr, "%s: error: out of memory\n", o->program);
        return 1;
}

/* Splits "service[/type[/name]]"; the parts are pointers into buf. */
static void split_service_spec(char *buf, char **ret_service, char **ret_type, char **ret_name) {
        char *slash;

        *ret_service = buf;
        *ret_type = *ret_name = NULL;
        slash = strchr(buf, '/');
        if (!slash)
                return;
        *slash = 0;
        *ret_type = slash + 1;
        slash = strchr(*ret_type, '/');
        if (!slash)
                return;
        *slash = 0;
        *ret_name = slash + 1;
}

static const char *service_type(const char *service) {
        const char *t = conf_service_type(service);
        return t ? t : "unix";
}

/* qsort() has no context argument: the names being sorted, for
 * order_compare() only. */
static char * const *sort_names;

static int order_compare(const void *a, const void *b) {
        size_t x = *(const size_t *) a, y = *(const size_t *) b;
        int r = strcmp(sort_names[x], sort_names[y]);
        return r != 0 ? r : x < y ? -1 : x > y;
}

static int list_services(const Options *o) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        _cleanup_free_ bool *matched = NULL;
        _cleanup_free_ size_t *order = NULL;
        size_t n;
        Diag d = {0};
        Printer pr = {.o = o};
        int r, status = 0;

        if (o->defaults || o->non_default) {
                fprintf(stderr, "%s: error: -P cannot be combined with -d or -n\n", o->program);
                return 1;
        }
        r = conf_load(o->dir, NULL, &d, &c);
        print_diags(o, &d);
        diag_done(&d);
        if (r < 0) {
                if (r != -EINVAL && r != -ENOENT)
                        fprintf(stderr, "%s: error: cannot load the configuration: %s\n",
                                o->program, strerror(-r));
                return 1;
        }
        matched = calloc(o->n_args + 1, sizeof(bool));
        if (!matched)
                return 1;

        printer_begin(&pr);
        STRV_FOREACH(s, conf_service_names(c)) {
                _cleanup_(conf_unrefp) Config *sc = NULL;
                char * const *names, * const *values;
                const char *type = service_type(*s);

                if (conf_service_overrides(c, *s, &names, &values) < 0)
                        continue;
                if (o->expand) {
                        Diag ignore = {0};
                        r = conf_load(o->dir, *s, &ignore, &sc);
                        diag_done(&ignore);
                        if (r < 0)
                                sc = NULL;
                }
                /* Postfix prints a service's overrides sorted by name; for a
                 * name given twice the last value counts. */
                n = strv_length(names);
                {
                        size_t *t = realloc(order, (n ? n : 1) * sizeof(size_t));
                        if (!t)
                                return 1;
                        order = t;
                }
                for (size_t i = 0; i < n; i++)
                        order[i] = i;
                sort_names = names;
                qsort(order, n, sizeof(size_t), order_compare);
                for (size_t k = 0; k < n; k++) {
                        size_t i = order[k];
                        _cleanup_free_ char *label = NULL;
                        const char *v;
                        bool want = o->n_args == 0;

                        if (k + 1 < n && streq(names[order[k + 1]], names[i]))
                                continue;
                        label = strdup_printf("%s/%s/%s", *s, type, names[i]);
                        if (!label)
                                return 1;
                        v = values[i];
                        for (int a = 0; a < o->n_args; a++) {
                                _cleanup_free_ char *buf = strdup(o->args[a]);
                                char *svc, *typ, *name;
                                if (!buf)
                                        return 1;
                                split_service_spec(buf, &svc, &typ, &name);
                                if (streq(svc, *s) && (!typ || streq(typ, type)) &&
                                    (!name || streq(name, names[i]))) {
                                        want = true;
                                        matched[a] = true;
                                }
                        }
                        if (!want)
                                continue;
                        if (o->expand && sc) {
                                const char *x = conf_get_by_name(sc, names[i], true);
                                if (x)
                                        v = x;
                        }
                        printer_item(&pr, label, v);
                }
        }
        printer_end(&pr);
        for (int a = 0; a < o->n_args; a++)
                if (!matched[a])
                        fprintf(stderr, "%s: warning: unmatched request: \"%s\"\n", o->program,
                                o->args[a]);
        return status;
}

/* Refuses "name = value" assignments whose value does not fit the table's
 * type (unless it refers to other parameters, which only loading can
 * check). Returns the number of refused assignments. */
static int check_assignments(const Options *o, char * const *args, const char *context) {
        int bad = 0;

        for (char * const *a = args; *a; a++) {
                _cleanup_free_ char *copy = strdup(*a), *expected = NULL;
                char *eq, *name, *value;
                int p;

                if (!copy)
                        return bad + 1;
                eq = strchr(copy, '=');
                if (!eq)
                        continue;       /* conf_edit() reports it */
                *eq = 0;
                name = strstrip(copy);
                value = strstrip(eq + 1);
                p = conf_param_lookup(name);
                if (p < 0 || strchr(value, '$'))
                        continue;
                if (conf_param_check_value((ConfParam) p, value, &expected) == -EINVAL) {
                        fprintf(stderr, "%s: error: %s%s = %s: expected %s\n", o->program,
                                strempty(context), name, value, strempty(expected));
                        bad++;
                }
        }
        return bad;
}

static int edit_main(const Options *o) {
        _cleanup_free_ char *path = NULL;
        ConfEditMode mode = o->mode == MODE_EDIT     ? CONF_EDIT_SET
                            : o->mode == MODE_REMOVE ? CONF_EDIT_REMOVE
                                                     : CONF_EDIT_COMMENT;
        _cleanup_strv_free_ char **args = NULL;
        Diag d = {0};
        int r;

        if (o->n_args == 0) {
                fprintf(stderr, "%s: error: %s\n", o->program,
                        o->mode == MODE_EDIT ? "-e requires name=value arguments"
                                             : "-X and -# require parameter names");
                return 1;
        }
        for (int i = 0; i < o->n_args; i++)
                if (strv_extend(&args, o->args[i]) < 0)
                        return 1;
        if (mode == CONF_EDIT_SET && check_assignments(o, args, NULL) > 0)
                return 1;
        path = path_join(o->dir ? o->dir : conf_default_dir(), "main.cf");
        if (!path)
                return 1;
        r = conf_edit(path, args, mode, &d);
        print_diags(o, &d);
        diag_done(&d);
        if (r < 0 && r != -EINVAL && d.n == 0)
                fprintf(stderr, "%s: error: %s: %s\n", o->program, path, strerror(-r));
        return r < 0 ? 1 : 0;
}

/* -P with -e, -X or -#: edits services.d/SERVICE.cf; each argument is
 * "service/type/name=value" (or without "=value"). */
static int edit_services(const Options *o) {
        _cleanup_free_ char *sdir = NULL;
        int status = 0;

        if (o->n_args == 0) {
                fprintf(stderr, "%s: error: -Pe, -PX and -P# require service/type/parameter "
                                "arguments\n",
                        o->program);
                return 1;
        }
        sdir = path_join(o->dir ? o->dir : conf_default_dir(), "services.d");
        if (!sdir)
                return 1;
        for (int i = 0; i < o->n_args; i++) {
                _cleanup_free_ char *buf = strdup(o->args[i]), *path = NULL, *file = NULL,
                                    *context = NULL;
                _cleanup_strv_free_ char **args = NULL;
                char *svc, *typ, *name, *eq;
                ConfEditMode mode = o->mode == MODE_EDIT     ? CONF_EDIT_SET
                                    : o->mode == MODE_REMOVE ? CONF_EDIT_REMOVE
                                                             : CONF_EDIT_COMMENT;
                Diag d = {0};
                int r;

                if (!buf)
                        return 1;
                eq = strchr(buf, '=');
                if (eq)
                        *eq = 0;
                split_service_spec(buf, &svc, &typ, &name);
                if (!typ || !name || !*name || (mode == CONF_EDIT_SET) != !!eq) {
                        fprintf(stderr, "%s: error: expected %s, got \"%s\"\n", o->program,
                                mode == CONF_EDIT_SET ? "service/type/parameter=value"
                                                      : "service/type/parameter",
                                o->args[i]);
                        status = 1;
                        continue;
                }
                if (!conf_service_type(svc)) {
                        fprintf(stderr, "%s: error: %s: unknown service\n", o->program, svc);
                        status = 1;
                        continue;
                }
                if (!streq(typ, service_type(svc))) {
                        fprintf(stderr, "%s: error: %s is a service of type %s, not %s\n",
                                o->program, svc, service_type(svc), typ);
                        status = 1;
                        continue;
                }
                if (eq) {
                        *eq = '=';
                        if (strv_extend(&args, name) < 0)
                                return 1;
                        context = strdup_printf("%s/%s/", svc, typ);
                        if (!context)
                                return 1;
                        if (check_assignments(o, args, context) > 0) {
                                status = 1;
                                continue;
                        }
                } else if (strv_extend(&args, name) < 0)
                        return 1;
                if (mode == CONF_EDIT_SET && mkdir(sdir, 0755) < 0 && errno != EEXIST) {
                        fprintf(stderr, "%s: error: %s: %s\n", o->program, sdir, strerror(errno));
                        return 1;
                }
                file = strdup_printf("%s.cf", svc);
                path = file ? path_join(sdir, file) : NULL;
                if (!path)
                        return 1;
                r = conf_edit(path, args, mode, &d);
                print_diags(o, &d);
                diag_done(&d);
                if (r < 0) {
                        if (r != -EINVAL && d.n == 0)
                                fprintf(stderr, "%s: error: %s: %s\n", o->program, path,
                                        strerror(-r));
                        status = 1;
                }
        }
        return status;
}

static void help(const char *program) {
        printf("Usage: %s [options] [name ...]\n"
               "       %s -e [-c dir] name=value ...\n"
               "       %s -X|-# [-c dir] name ...\n"
               "       %s -P [-e|-X|-#] [-c dir] [service[/type[/name[=value]]] ...]\n"
               "\n"
               "Shows or edits the postern configuration (main.cf and services.d/NAME.cf).\n"
               "\n"
               "  -c DIR     use the configuration in DIR\n"
               "  -d         show default values\n"
               "  -n         show only parameters set in main.cf\n"
               "  -h         show values without \"name = \"\n"
               "  -H         show names only\n"
               "  -x         expand $name references\n"
               "  -f         fold long lines\n"
               "  -e         set parameters (name=value)\n"
               "  -X         remove parameters\n"
               "  -#         comment parameters out\n"
               "  -P         per-service overrides (services.d)\n"
               "  --json     print a JSON object of names and values\n"
               "  --help     show this help\n"
               "  --version  show the version\n",
               program, program, program, program);
}

int postconf_main(int argc, char **argv, const char *program) {
        enum { ARG_JSON = 0x100, ARG_HELP, ARG_VERSION };
        static const struct option long_options[] = {
                {"json", no_argument, NULL, ARG_JSON},
                {"help", no_argument, NULL, ARG_HELP},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        Options o = {.program = program, .mode = MODE_LIST};
        int c;

        optind = 0;     /* also resets getopt's state for a second call */
        while ((c = getopt_long(argc, argv, "c:dehnxPXfHv#", long_options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        o.dir = optarg;
                        break;
                case 'd':
                        o.defaults = true;
                        break;
                case 'e':
                        o.mode = MODE_EDIT;
                        break;
                case 'X':
                        o.mode = MODE_REMOVE;
                        break;
                case '#':
                        o.mode = MODE_COMMENT;
                        break;
                case 'h':
                        o.value_only = true;
                        break;
                case 'H':
                        o.name_only = true;
                        break;
                case 'n':
                        o.non_default = true;
                        break;
                case 'x':
                        o.expand = true;
                        break;
                case 'f':
                        o.fold = true;
                        break;
                case 'P':
                        o.services = true;
                        break;
                case 'v':
                        break;
                case ARG_JSON:
                        o.json = true;
                        break;
                case ARG_HELP:
                        help(program);
                        return 0;
                case ARG_VERSION:
                        printf("%s %s\n", program, POSTERN_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "%s: error: see --help for the options\n", program);
                        return 1;
                }
        }
        o.args = argv + optind;
        o.n_args = argc - optind;

        if (o.defaults && o.non_default) {
                fprintf(stderr, "%s: error: specify one of -d and -n\n", program);
                return 1;
        }
        if (o.mode != MODE_LIST)
                return o.services ? edit_services(&o) : edit_main(&o);
        return o.services ? list_services(&o) : list_main(&o);
}
