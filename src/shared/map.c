/* map.c: the lookup-table abstraction (see map.h). Holds the type table,
 * map_open() with its "type:name" parsing, key folding, map_lookup(),
 * map_walk(), MapList, and the pieces every file-backed type shares: the
 * Postfix logical-line reader and the "key whitespace value" parser. Each
 * table type lives in its own map-TYPE.c; building indexed tables is
 * map-build.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fileio.h"
#include "map-internal.h"
#include "strutil.h"

/* The type table. "proxy:" is not a type of its own: postern opens the
 * table behind it directly (see map_open()). */
static const MapOps *const map_types[] = {
        &map_ops_hash,
        &map_ops_btree,
        &map_ops_regexp,
        &map_ops_pcre,
        &map_ops_cidr,
        &map_ops_inline,
        &map_ops_static,
        &map_ops_texthash,
        &map_ops_unix,
};

const MapOps *map_ops_find(const char *type) {
        for (size_t i = 0; i < ELEMENTSOF(map_types); i++)
                if (streq(map_types[i]->type, type))
                        return map_types[i];
        return NULL;
}

bool map_type_known(const char *type) {
        return type && (map_ops_find(type) || streq(type, "proxy"));
}

static inline bool map_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

char *map_fold_key(const char *key) {
        char *s = strdup(key);
        return s ? ascii_strlower(s) : NULL;
}

void map_diag_errno(Diag *diags, int error, const char *what, const char *path) {
        if (error == -EFBIG)
                diag_error(diags, NULL, 0, "%s %s: file is larger than %zu bytes", what, path,
                           MAP_SOURCE_MAX);
        else
                diag_error(diags, NULL, 0, "%s %s: %s", what, path, strerror(-error));
}

int map_read_source(const char *path, Diag *diags, char **ret, size_t *ret_len) {
        int r = file_read_all(path, MAP_SOURCE_MAX, ret, ret_len);
        if (r < 0)
                map_diag_errno(diags, r, "open", path);
        return r;
}

/* Splits "type:name" (after any "proxy:" prefixes). *ret_type is a new
 * string, *ret_name points into spec. */
static int map_split_spec(const char *spec, Diag *diags, char **ret_type, const char **ret_name) {
        const char *colon;
        char *type;

        for (;;) {
                const char *rest = startswith(spec, "proxy:");
                if (!rest)
                        break;
                spec = rest;
        }
        colon = strchr(spec, ':');
        if (!colon || colon == spec) {
                diag_error(diags, NULL, 0,
                           "open dictionary: expecting \"type:name\" form instead of \"%s\"", spec);
                return -EINVAL;
        }
        type = strndup(spec, (size_t) (colon - spec));
        if (!type)
                return -ENOMEM;
        *ret_type = type;
        *ret_name = colon + 1;
        return 0;
}

int map_new_shell(const MapOps *ops, const char *type, const char *name, unsigned flags,
                  Map **ret) {
        _cleanup_(map_freep) Map *m = NULL;

        m = calloc(1, sizeof(Map));
        if (!m)
                return -ENOMEM;
        m->ops = ops;
        m->flags = flags;
        m->spec = strdup_printf("%s:%s", type, name);
        m->type = strdup(type);
        m->name = strdup(name);
        if (!m->spec || !m->type || !m->name)
                return -ENOMEM;
        *ret = steal_ptr(m);
        return 0;
}

int map_open(const char *spec, unsigned flags, Diag *diags, Map **ret) {
        _cleanup_(map_freep) Map *m = NULL;
        _cleanup_free_ char *type = NULL;
        const MapOps *ops;
        const char *name;
        int r;

        r = map_split_spec(spec, diags, &type, &name);
        if (r < 0)
                return r;
        ops = map_ops_find(type);
        if (!ops) {
                diag_error(diags, NULL, 0, "unsupported dictionary type: %s", type);
                return -EPROTONOSUPPORT;
        }
        if ((ops->flags & MAP_OPS_NEEDS_NAME) && isempty(name)) {
                diag_error(diags, NULL, 0,
                           "open dictionary: expecting \"type:name\" form instead of \"%s\"", spec);
                return -EINVAL;
        }
        r = map_new_shell(ops, type, name, flags, &m);
        if (r < 0)
                return r;
        /* Keep the spec as the administrator wrote it ("proxy:hash:/x"). */
        free(m->spec);
        m->spec = strdup(spec);
        if (!m->spec)
                return -ENOMEM;
        r = ops->open(m, diags);
        if (r < 0)
                return r;
        *ret = steal_ptr(m);
        return 0;
}

int map_lookup(Map *m, const char *key, char **ret_value) {
        _cleanup_free_ char *folded = NULL;

        if ((m->flags & MAP_FLAG_FOLD_KEYS) && (m->ops->flags & MAP_OPS_FOLD)) {
                folded = map_fold_key(key);
                if (!folded)
                        return -ENOMEM;
                key = folded;
        }
        return m->ops->lookup(m, key, ret_value);
}

int map_walk(Map *m, MapWalkFunc f, void *userdata) {
        if (!m->ops->walk)
                return -EOPNOTSUPP;
        return m->ops->walk(m, f, userdata);
}

const char *map_spec(const Map *m) {
        return m->spec;
}

const char *map_type(const Map *m) {
        return m->type;
}

Map *map_free(Map *m) {
        if (!m)
                return NULL;
        if (m->data && m->ops && m->ops->free_data)
                m->ops->free_data(m->data);
        free(m->spec);
        free(m->type);
        free(m->name);
        free(m);
        return NULL;
}

int map_files(const char *spec, char **ret_source, char **ret_index) {
        _cleanup_free_ char *type = NULL, *source = NULL, *index = NULL;
        const MapOps *ops;
        const char *name;
        int r;

        r = map_split_spec(spec, NULL, &type, &name);
        if (r < 0)
                return r;
        ops = map_ops_find(type);
        if (!ops || !(ops->flags & MAP_OPS_INDEXED))
                return -EOPNOTSUPP;
        if (isempty(name))
                return -EINVAL;
        source = strdup(name);
        index = strdup_printf("%s.db", name);
        if (!source || !index)
                return -ENOMEM;
        if (ret_source)
                *ret_source = steal_ptr(source);
        if (ret_index)
                *ret_index = steal_ptr(index);
        return 0;
}

struct MapList {
        Map **maps;
        size_t n;
};

MapList *map_list_free(MapList *l) {
        if (!l)
                return NULL;
        for (size_t i = 0; i < l->n; i++)
                map_free(l->maps[i]);
        free(l->maps);
        free(l);
        return NULL;
}

int map_list_open(char * const *specs, unsigned flags, Diag *diags, MapList **ret) {
        _cleanup_(map_list_freep) MapList *l = NULL;
        size_t n = strv_length(specs);

        l = calloc(1, sizeof(MapList));
        if (!l)
                return -ENOMEM;
        l->maps = calloc(n ? n : 1, sizeof(Map *));
        if (!l->maps)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int r = map_open(specs[i], flags, diags, &l->maps[i]);
                if (r < 0)
                        return r;
                l->n++;
        }
        *ret = steal_ptr(l);
        return 0;
}

int map_list_lookup(MapList *l, const char *key, char **ret_value) {
        for (size_t i = 0; i < l->n; i++) {
                int r = map_lookup(l->maps[i], key, ret_value);
                if (r != 0)
                        return r;
        }
        return 0;
}

/* One key of map_list_lookup_addr(); 0 when not found. */
static int addr_try(MapList *l, const char *key, MapAddrKey which, char **ret_value,
                    MapAddrKey *ret_key) {
        int r = map_list_lookup(l, key, ret_value);
        if (r > 0 && ret_key)
                *ret_key = which;
        return r;
}

int map_list_lookup_addr(MapList *l, const char *addr, const char *delimiters,
                         int (*is_local)(const char *domain, void *userdata), void *userdata,
                         char **ret_value, MapAddrKey *ret_key) {
        const char *at = strrchr(addr, '@'), *domain = at ? at + 1 : NULL;
        size_t local_len = at ? (size_t) (at - addr) : strlen(addr);
        size_t n = strcspn(addr, strempty(delimiters));
        bool ext = n > 0 && n < local_len;
        _cleanup_free_ char *key = NULL;
        int r;

        r = addr_try(l, addr, MAP_ADDR_FULL, ret_value, ret_key);
        if (r != 0)
                return r;
        if (ext) {
                key = strdup_printf("%.*s%s", (int) n, addr, at ? at : "");
                if (!key)
                        return -ENOMEM;
                r = addr_try(l, key, MAP_ADDR_NOEXT, ret_value, ret_key);
                if (r != 0)
                        return r;
                free(steal_ptr(key));
        }
        if (!domain)
                return 0;
        r = is_local ? is_local(domain, userdata) : 0;
        if (r < 0)
                return r;
        if (r > 0) {
                key = strndup_safe(addr, local_len);
                if (!key)
                        return -ENOMEM;
                r = addr_try(l, key, MAP_ADDR_LOCAL, ret_value, ret_key);
                if (r != 0)
                        return r;
                if (ext) {
                        key[n] = '\0';
                        r = addr_try(l, key, MAP_ADDR_LOCAL_NOEXT, ret_value, ret_key);
                        if (r != 0)
                                return r;
                }
                free(steal_ptr(key));
        }
        key = strdup_printf("@%s", domain);
        if (!key)
                return -ENOMEM;
        return addr_try(l, key, MAP_ADDR_DOMAIN, ret_value, ret_key);
}

void map_source_init(MapSource *src, const char *file, const char *buf, size_t len) {
        *src = (MapSource) {.file = file, .buf = buf, .len = len};
}

int map_source_next(MapSource *src, StrBuf *line, unsigned *ret_lineno, Diag *diags) {
        for (;;) {
                bool have = false, leading_space = false, cut = false;
                unsigned start = 0;

                strbuf_clear(line);
                while (src->pos < src->len) {
                        const char *p = src->buf + src->pos;
                        size_t rest = src->len - src->pos;
                        const char *nl = memchr(p, '\n', rest);
                        size_t n = nl ? (size_t) (nl - p) : rest;
                        size_t text = strnlen(p, n), i = 0;

                        while (i < text && map_is_space(p[i]))
                                i++;
                        if (i == text || p[i] == '#') {
                                /* Blank or comment: dropped, even inside a logical line. */
                                src->pos += nl ? n + 1 : n;
                                src->lineno++;
                                continue;
                        }
                        if (i == 0 && have)
                                break;          /* the next logical line starts here */
                        if (!have) {
                                have = true;
                                start = src->lineno + 1;
                                leading_space = i > 0;
                        }
                        /* A NUL byte ends the logical line's text, as it ends a C
                         * string in Postfix: what follows it is dropped. */
                        if (!cut && strbuf_append(line, p, text) < 0)
                                return -ENOMEM;
                        if (text < n)
                                cut = true;
                        src->pos += nl ? n + 1 : n;
                        src->lineno++;
                }
                if (!have)
                        return 0;
                if (leading_space) {
                        _cleanup_free_ char *e = str_escape_log(line->data, 100);
                        diag_warning(diags, src->file, start,
                                     "logical line must not start with whitespace: \"%s\"",
                                     strempty(e));
                        continue;
                }
                *ret_lineno = start;
                return 1;
        }
}

int map_parse_key_value(char *line, const char *file, unsigned lineno, Diag *diags,
                        char **ret_key, char **ret_value) {
        char *v, *e;
        bool quoted = false;

        for (v = line; *v; v++) {
                if (*v == '\\') {
                        if (*++v == 0)
                                break;
                } else if (map_is_space(*v)) {
                        if (!quoted)
                                break;
                } else if (*v == '"')
                        quoted = !quoted;
        }
        if (quoted) {
                _cleanup_free_ char *x = str_escape_log(line, 100);
                diag_warning(diags, file, lineno, "unbalanced '\"' in '%s' -- ignoring this line",
                             strempty(x));
                return 0;
        }
        if (*v)
                *v++ = 0;
        while (map_is_space(*v))
                v++;
        e = v + strlen(v);
        while (e > v && map_is_space(e[-1]))
                e--;
        *e = 0;
        if (*line == 0 || *v == 0) {
                diag_warning(diags, file, lineno, "expected format: key whitespace value");
                return 0;
        }
        if (line[strlen(line) - 1] == ':')
                diag_warning(diags, file, lineno,
                             "record is in \"key: value\" format; is this an alias file?");
        *ret_key = line;
        *ret_value = v;
        return 1;
}

MapCheckAction map_check_action(const char *result, const char **ret_text) {
        static const struct {
                const char *word;
                MapCheckAction action;
        } words[] = {
                { "OK", MAP_CHECK_DUNNO },         { "DUNNO", MAP_CHECK_DUNNO },
                { "REJECT", MAP_CHECK_REJECT },    { "DISCARD", MAP_CHECK_DISCARD },
                { "HOLD", MAP_CHECK_HOLD },        { "WARN", MAP_CHECK_WARN },
                { "INFO", MAP_CHECK_INFO },        { "IGNORE", MAP_CHECK_IGNORE },
                { "REDIRECT", MAP_CHECK_REDIRECT }, { "PREPEND", MAP_CHECK_PREPEND },
                { "REPLACE", MAP_CHECK_REPLACE },
        };
        size_t n = strcspn(result, " \t");
        const char *text = result + n + strspn(result + n, " \t");
        MapCheckAction a = MAP_CHECK_UNKNOWN;

        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                if (strlen(words[i].word) == n && strncasecmp(result, words[i].word, n) == 0) {
                        a = words[i].action;
                        break;
                }
        if ((a == MAP_CHECK_PREPEND || a == MAP_CHECK_REPLACE) && !*text)
                a = MAP_CHECK_UNKNOWN;
        if (ret_text)
                *ret_text = text;
        return a;
}
