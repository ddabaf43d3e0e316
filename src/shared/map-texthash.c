/* map-texthash.c: the texthash: table type. Reads a postmap(1) source file
 * ("key whitespace value", # comments, continuation lines) straight into
 * memory, as if "postmap hash:FILE" had been run, without a .db file.
 * Opened with MAP_FLAG_ALIAS it reads aliases(5) syntax instead. Keys are
 * folded when the map folds; the first of duplicate keys wins with a
 * warning; bad lines are reported with file:line and skipped. Entries are
 * listed in file order. Entry point: map_ops_texthash. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"

typedef struct TextEntry {
        char *key;
        char *value;
} TextEntry;

typedef struct MapText {
        TextEntry *entries;
        size_t n, cap;
        size_t *slots;          /* open addressing: entry index + 1, 0 = empty */
        size_t n_slots;         /* a power of two, more than twice n */
} MapText;

static void map_text_free_data(void *data) {
        MapText *t = data;
        for (size_t i = 0; i < t->n; i++) {
                free(t->entries[i].key);
                free(t->entries[i].value);
        }
        free(t->entries);
        free(t->slots);
        free(t);
}

/* FNV-1a: keys come from a file the administrator controls, not a peer. */
static size_t text_hash(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 1099511628211ULL;
        }
        return (size_t) h;
}

static size_t *text_find_slot(const MapText *t, const char *key) {
        size_t mask = t->n_slots - 1, i = text_hash(key) & mask;

        for (;;) {
                size_t *slot = &t->slots[i];
                if (*slot == 0 || streq(t->entries[*slot - 1].key, key))
                        return slot;
                i = (i + 1) & mask;
        }
}

static int text_grow(MapText *t) {
        size_t n_slots = t->n_slots ? t->n_slots * 2 : 64;
        size_t *old = t->slots, old_n = t->n_slots;

        if (n_slots > SIZE_MAX / sizeof(size_t) / 2)
                return -ENOMEM;
        t->slots = calloc(n_slots, sizeof(size_t));
        if (!t->slots) {
                t->slots = old;
                return -ENOMEM;
        }
        t->n_slots = n_slots;
        for (size_t i = 0; i < old_n; i++)
                if (old[i])
                        *text_find_slot(t, t->entries[old[i] - 1].key) = old[i];
        free(old);
        return 0;
}

/* Returns 1 when added, 0 for a duplicate key, or -ENOMEM. */
static int text_add(MapText *t, const char *key, const char *value) {
        size_t *slot;
        int r;

        if ((t->n + 1) * 2 >= t->n_slots) {
                r = text_grow(t);
                if (r < 0)
                        return r;
        }
        slot = text_find_slot(t, key);
        if (*slot)
                return 0;
        if (t->n == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 32;
                TextEntry *e = realloc(t->entries, cap * sizeof(TextEntry));
                if (!e)
                        return -ENOMEM;
                t->entries = e;
                t->cap = cap;
        }
        t->entries[t->n].key = strdup(key);
        t->entries[t->n].value = strdup(value);
        if (!t->entries[t->n].key || !t->entries[t->n].value) {
                free(t->entries[t->n].key);
                free(t->entries[t->n].value);
                return -ENOMEM;
        }
        t->n++;
        *slot = t->n;
        return 1;
}

static int map_text_load(Map *m, MapText *t, const char *buf, size_t len, Diag *diags) {
        StrBuf line = {0};
        MapSource src;
        int r;

        map_source_init(&src, m->name, buf, len);
        for (;;) {
                _cleanup_free_ char *akey = NULL, *avalue = NULL;
                char *key, *value;
                unsigned lineno;

                r = map_source_next(&src, &line, &lineno, diags);
                if (r <= 0)
                        break;
                if (m->flags & MAP_FLAG_ALIAS) {
                        r = map_parse_alias(line.data, m->name, lineno, diags, &akey, &avalue);
                        if (r < 0)
                                break;
                        key = akey;
                        value = avalue;
                } else
                        r = map_parse_key_value(line.data, m->name, lineno, diags, &key, &value);
                if (r == 0)
                        continue;
                if (m->flags & MAP_FLAG_FOLD_KEYS)
                        ascii_strlower(key);
                r = text_add(t, key, value);
                if (r < 0)
                        break;
                if (r == 0) {
                        _cleanup_free_ char *e = str_escape_log(key, 100);
                        diag_warning(diags, m->name, lineno, "duplicate entry: \"%s\"",
                                     strempty(e));
                }
        }
        strbuf_done(&line);
        if (r < 0)
                diag_error(diags, m->name, 0, "out of memory while loading the texthash table");
        return r < 0 ? r : 0;
}

static int map_text_open(Map *m, Diag *diags) {
        _cleanup_free_ char *buf = NULL;
        MapText *t;
        size_t len;
        int r;

        r = map_read_source(m->name, diags, &buf, &len);
        if (r < 0)
                return r;
        t = calloc(1, sizeof(MapText));
        if (!t)
                return -ENOMEM;
        m->data = t;
        r = text_grow(t);
        if (r < 0)
                return r;
        return map_text_load(m, t, buf, len, diags);
}

static int map_text_lookup(Map *m, const char *key, char **ret_value) {
        MapText *t = m->data;
        size_t *slot = text_find_slot(t, key);

        if (*slot == 0)
                return 0;
        if (ret_value) {
                *ret_value = strdup(t->entries[*slot - 1].value);
                if (!*ret_value)
                        return -ENOMEM;
        }
        return 1;
}

static int map_text_walk(Map *m, MapWalkFunc f, void *userdata) {
        MapText *t = m->data;

        for (size_t i = 0; i < t->n; i++) {
                int r = f(t->entries[i].key, t->entries[i].value, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

const MapOps map_ops_texthash = {
        .type = "texthash",
        .flags = MAP_OPS_FOLD | MAP_OPS_NEEDS_NAME,
        .open = map_text_open,
        .lookup = map_text_lookup,
        .walk = map_text_walk,
        .free_data = map_text_free_data,
};
