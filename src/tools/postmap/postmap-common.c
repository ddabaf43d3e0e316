/* postmap-common.c: what postmap, postalias and newaliases share (see
 * postmap-common.h). Building goes through map_build(), queries and
 * listings through map_open(), map_lookup() and map_walk(). The
 * configuration is read only for what these commands need from it:
 * default_database_type for file names without "type:", and
 * alias_database for newaliases. Not supported: incremental updates (-i),
 * deletes (-d), and the header/body/MIME query modes of Postfix's postmap. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "map.h"
#include "postmap-common.h"
#include "strutil.h"

typedef struct PostmapArgs {
        const char *program;
        bool alias;
        const char *config_dir;
        const char *query;
        bool sequence;
        bool fold;
} PostmapArgs;

void postmap_print_diags(const char *program, const Diag *d) {
        for (size_t i = 0; i < d->n; i++) {
                const DiagEntry *e = &d->entries[i];
                const char *level = e->level == DIAG_ERROR ? "fatal" : "warning";

                if (e->file && e->line > 0)
                        fprintf(stderr, "%s: %s: %s, line %u: %s\n", program, level, e->file,
                                e->line, strempty(e->text));
                else if (e->file)
                        fprintf(stderr, "%s: %s: %s: %s\n", program, level, e->file,
                                strempty(e->text));
                else
                        fprintf(stderr, "%s: %s: %s\n", program, level, strempty(e->text));
        }
}

static void print_and_clear(const char *program, Diag *d) {
        postmap_print_diags(program, d);
        diag_done(d);
}

static void usage(const PostmapArgs *a) {
        fprintf(stderr, "%s: fatal: usage: %s [-fsv] [-c config_dir] [-q key] [map_type:]file...\n",
                a->program, a->program);
}

/* default_database_type from the configuration; "hash" when there is no
 * usable configuration. Caller frees. */
static char *default_type(const PostmapArgs *a) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        Diag d = {0};
        int r;

        r = conf_load(a->config_dir, NULL, &d, &c);
        if (r < 0) {
                if (r != -ENOENT) {
                        print_and_clear(a->program, &d);
                        fprintf(stderr, "%s: warning: cannot load the configuration (%s); "
                                "using default_database_type = hash\n", a->program, strerror(-r));
                }
                diag_done(&d);
                return strdup("hash");
        }
        diag_done(&d);
        return strdup(isempty(conf_get_str(c, P_DEFAULT_DATABASE_TYPE)) ? "hash" :
                      conf_get_str(c, P_DEFAULT_DATABASE_TYPE));
}

/* "type:name" for arg, with the default type when arg has none. */
static char *full_spec(const PostmapArgs *a, const char *arg, char **cached_type) {
        if (strchr(arg, ':'))
                return strdup(arg);
        if (!*cached_type) {
                *cached_type = default_type(a);
                if (!*cached_type)
                        return NULL;
        }
        return strdup_printf("%s:%s", *cached_type, arg);
}

static unsigned map_flags(const PostmapArgs *a) {
        return (a->fold ? MAP_FLAG_FOLD_KEYS : 0) | (a->alias ? MAP_FLAG_ALIAS : 0);
}

static int open_maps(const PostmapArgs *a, char **args, size_t n, Map ***ret) {
        _cleanup_free_ char *type = NULL;
        Map **maps;

        maps = calloc(n, sizeof(Map *));
        if (!maps) {
                fprintf(stderr, "%s: fatal: out of memory\n", a->program);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *spec = full_spec(a, args[i], &type);
                Diag d = {0};
                int r;

                if (!spec) {
                        r = -ENOMEM;
                        fprintf(stderr, "%s: fatal: out of memory\n", a->program);
                } else {
                        bool said;

                        r = map_open(spec, map_flags(a), &d, &maps[i]);
                        said = d.n_errors > 0;
                        print_and_clear(a->program, &d);
                        if (r < 0 && r != -ENOMEM && !said)
                                fprintf(stderr, "%s: fatal: open %s: %s\n", a->program, spec,
                                        strerror(-r));
                }
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                map_free(maps[j]);
                        free(maps);
                        return r;
                }
        }
        *ret = maps;
        return 0;
}

static void free_maps(Map **maps, size_t n) {
        for (size_t i = 0; i < n; i++)
                map_free(maps[i]);
        free(maps);
}

static void warn_empty(const PostmapArgs *a, const Map *m, const char *key, const char *value) {
        if (*value)
                return;
        fprintf(stderr, "%s: warning: table %s: key %s: empty string result is not allowed\n",
                a->program, map_spec(m), key);
        fprintf(stderr, "%s: warning: table %s should return NO RESULT in case of NOT FOUND\n",
                a->program, map_spec(m));
}

/* Looks key up in each map in turn. Returns 1 with *ret_value and
 * *ret_map, 0, or < 0 after printing the failure. */
static int lookup_all(const PostmapArgs *a, Map **maps, size_t n, const char *key,
                      char **ret_value, Map **ret_map) {
        for (size_t i = 0; i < n; i++) {
                int r = map_lookup(maps[i], key, ret_value);
                if (r < 0) {
                        fprintf(stderr, "%s: fatal: table %s: query error: %s\n", a->program,
                                map_spec(maps[i]), strerror(-r));
                        return r;
                }
                if (r > 0) {
                        *ret_map = maps[i];
                        return 1;
                }
        }
        return 0;
}

static int flush_stdout(const PostmapArgs *a) {
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "%s: fatal: write error on standard output: %s\n", a->program,
                        strerror(errno));
                return -EIO;
        }
        return 0;
}

static int do_query(const PostmapArgs *a, char **args, size_t n) {
        Map **maps = NULL;
        bool found = false;
        int r;

        r = open_maps(a, args, n, &maps);
        if (r < 0)
                return POSTMAP_EXIT_FATAL;

        if (!streq(a->query, "-")) {
                _cleanup_free_ char *value = NULL;
                Map *m = NULL;

                r = lookup_all(a, maps, n, a->query, &value, &m);
                if (r > 0) {
                        warn_empty(a, m, a->query, value);
                        printf("%s\n", value);
                        found = true;
                }
        } else {
                char *line = NULL;
                size_t cap = 0;
                ssize_t len;

                while ((len = getline(&line, &cap, stdin)) >= 0) {
                        _cleanup_free_ char *value = NULL;
                        Map *m = NULL;

                        if (len > 0 && line[len - 1] == '\n')
                                line[len - 1] = 0;
                        r = lookup_all(a, maps, n, line, &value, &m);
                        if (r < 0)
                                break;
                        if (r > 0) {
                                warn_empty(a, m, line, value);
                                printf(a->alias ? "%s:\t%s\n" : "%s\t%s\n", line, value);
                                found = true;
                        }
                        r = 0;
                }
                free(line);
        }
        free_maps(maps, n);
        if (flush_stdout(a) < 0)
                return POSTMAP_EXIT_FATAL;
        if (r < 0)
                return POSTMAP_EXIT_TEMPFAIL;
        return found ? POSTMAP_EXIT_OK : POSTMAP_EXIT_NOTFOUND;
}

static int print_entry(const char *key, const char *value, void *userdata) {
        const PostmapArgs *a = userdata;

        printf(a->alias ? "%s:\t%s\n" : "%s\t%s\n", key, value);
        return 0;
}

static int do_sequence(const PostmapArgs *a, char **args) {
        Map **maps = NULL;
        int r;

        /* Like Postfix: only the first table is listed. */
        r = open_maps(a, args, 1, &maps);
        if (r < 0)
                return POSTMAP_EXIT_FATAL;
        r = map_walk(maps[0], print_entry, (void *) a);
        if (r == -EOPNOTSUPP)
                fprintf(stderr, "%s: fatal: table %s: sequence operation is not supported\n",
                        a->program, map_spec(maps[0]));
        else if (r < 0)
                fprintf(stderr, "%s: fatal: table %s: sequence error: %s\n", a->program,
                        map_spec(maps[0]), strerror(-r));
        free_maps(maps, 1);
        if (flush_stdout(a) < 0)
                return POSTMAP_EXIT_FATAL;
        if (r == -EOPNOTSUPP)
                return POSTMAP_EXIT_FATAL;
        return r < 0 ? POSTMAP_EXIT_TEMPFAIL : POSTMAP_EXIT_OK;
}

static int build_one(const char *program, const char *arg, const char *default_db_type,
                     unsigned flags) {
        Diag d = {0};
        bool said;
        int r;

        r = map_build(arg, default_db_type, flags, &d);
        said = d.n_errors > 0;
        print_and_clear(program, &d);
        if (r == -ENOMEM)
                fprintf(stderr, "%s: fatal: out of memory\n", program);
        else if (r < 0 && !said)
                fprintf(stderr, "%s: fatal: %s: %s\n", program, arg, strerror(-r));
        return r;
}

static int do_build(const PostmapArgs *a, char **args, size_t n) {
        _cleanup_free_ char *type = NULL;

        for (size_t i = 0; i < n; i++) {
                if (!strchr(args[i], ':') && !type) {
                        type = default_type(a);
                        if (!type) {
                                fprintf(stderr, "%s: fatal: out of memory\n", a->program);
                                return POSTMAP_EXIT_FATAL;
                        }
                }
                if (build_one(a->program, args[i], type, map_flags(a)) < 0)
                        return POSTMAP_EXIT_FATAL;
        }
        return POSTMAP_EXIT_OK;
}

int postmap_run(int argc, char **argv, bool alias) {
        PostmapArgs a = {
                .program = alias ? "postalias" : "postmap",
                .alias = alias,
                .fold = true,
        };
        int c;

        /* "+": options end at the first table name, as with Postfix. */
        while ((c = getopt(argc, argv, "+c:fiq:sv")) >= 0) {
                switch (c) {
                case 'c':
                        a.config_dir = optarg;
                        break;
                case 'f':
                        a.fold = false;
                        break;
                case 'i':
                        fprintf(stderr, "%s: fatal: incremental mode (-i) is not supported: "
                                "edit the source file and rebuild the table\n", a.program);
                        return POSTMAP_EXIT_FATAL;
                case 'q':
                        if (a.sequence || a.query) {
                                fprintf(stderr, "%s: fatal: specify only one of -s or -q\n",
                                        a.program);
                                return POSTMAP_EXIT_FATAL;
                        }
                        a.query = optarg;
                        break;
                case 's':
                        if (a.query) {
                                fprintf(stderr, "%s: fatal: specify only one of -s or -q\n",
                                        a.program);
                                return POSTMAP_EXIT_FATAL;
                        }
                        a.sequence = true;
                        break;
                case 'v':
                        /* Accepted for compatibility; there is nothing more to say. */
                        break;
                default:
                        usage(&a);
                        return POSTMAP_EXIT_FATAL;
                }
        }
        if (optind >= argc) {
                usage(&a);
                return POSTMAP_EXIT_FATAL;
        }
        if (a.query)
                return do_query(&a, argv + optind, (size_t) (argc - optind));
        if (a.sequence)
                return do_sequence(&a, argv + optind);
        return do_build(&a, argv + optind, (size_t) (argc - optind));
}

int newaliases_run(int argc, char **argv) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        const char *program = "newaliases", *dir = NULL, *type;
        Diag d = {0};
        int opt, r;

        /* Sendmail's newaliases takes -C FILE; postern's commands take -c DIR. */
        while ((opt = getopt(argc, argv, "+c:C:v")) >= 0) {
                switch (opt) {
                case 'c':
                case 'C':
                        dir = optarg;
                        break;
                case 'v':
                        break;
                default:
                        fprintf(stderr, "%s: fatal: usage: %s [-c config_dir]\n", program, program);
                        return POSTMAP_EXIT_FATAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "%s: fatal: usage: %s [-c config_dir]\n", program, program);
                return POSTMAP_EXIT_FATAL;
        }

        r = conf_load(dir, NULL, &d, &c);
        if (r < 0) {
                bool said = d.n_errors > 0;

                print_and_clear(program, &d);
                if (!said)
                        fprintf(stderr, "%s: fatal: cannot load the configuration from %s: %s\n",
                                program, dir ? dir : conf_default_dir(), strerror(-r));
                return POSTMAP_EXIT_FATAL;
        }
        print_and_clear(program, &d);
        type = conf_get_str(c, P_DEFAULT_DATABASE_TYPE);
        if (isempty(type))
                type = "hash";
        STRV_FOREACH(spec, conf_get_list(c, P_ALIAS_DATABASE))
                if (build_one(program, *spec, type, MAP_FLAG_FOLD_KEYS | MAP_FLAG_ALIAS) < 0)
                        return POSTMAP_EXIT_FATAL;
        return POSTMAP_EXIT_OK;
}
