/* map-inline.c: the tables written inside the spec itself.
 * inline:{ key=value, { key = value with spaces } } is a small table:
 * entries are separated by commas or white space, and an entry with white
 * space around "=" or in its value goes in braces, as in Postfix; postern
 * also reads "key = value words" between two commas as one entry. Keys
 * cannot contain white space, a later duplicate replaces an earlier one,
 * and keys are case-folded. static:value (or static:{ value with spaces }) answers
 * every key with the same value. Syntax errors fail map_open(), as in
 * Postfix. Entry points: map_ops_inline, map_ops_static. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"

typedef struct InlineEntry {
        char *key;
        char *value;
} InlineEntry;

typedef struct MapInline {
        InlineEntry *entries;
        size_t n;
} MapInline;

static void map_inline_free_data(void *data) {
        MapInline *t = data;
        for (size_t i = 0; i < t->n; i++) {
                free(t->entries[i].key);
                free(t->entries[i].value);
        }
        free(t->entries);
        free(t);
}

static bool inline_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Whether the braces in s nest properly. */
static bool braces_balanced(const char *s) {
        int depth = 0;
        for (; *s; s++) {
                if (*s == '{')
                        depth++;
                else if (*s == '}' && --depth < 0)
                        return false;
        }
        return depth == 0;
}

/* Whether word is a complete Postfix inline entry: "name=value" (the name
 * not empty) or a braced "{ ... }" group. */
static bool inline_is_entry(const char *word) {
        return word[0] == '{' || (word[0] != '=' && strchr(word, '=') != NULL);
}

/* Splits the text between the outer braces into entries. Postfix separates
 * entries by commas and white space and wants white space in an entry only
 * inside braces. postern reads that the same way, and in addition takes a
 * comma-separated part whose words are not all such entries ("key = value
 * with spaces", which Postfix rejects) as one entry. */
static int inline_split_entries(const char *inner, char ***ret) {
        _cleanup_strv_free_ char **entries = NULL;
        const char *p = inner;
        int r;

        for (;;) {
                _cleanup_strv_free_ char **words = NULL;
                _cleanup_free_ char *part = NULL;
                const char *start = p;
                bool all_entries = true;
                int depth = 0;

                for (; *p && (depth > 0 || *p != ','); p++) {
                        if (*p == '{')
                                depth++;
                        else if (*p == '}' && depth > 0)
                                depth--;
                }
                part = strndup(start, (size_t) (p - start));
                if (!part)
                        return -ENOMEM;
                r = str_split_list(part, false, &words);
                if (r < 0)
                        return r;
                STRV_FOREACH(w, words)
                        if (!inline_is_entry(*w))
                                all_entries = false;
                if (all_entries || strv_length(words) <= 1) {
                        STRV_FOREACH(w, words) {
                                size_t n = strlen(*w);
                                char *e;

                                if (n >= 2 && (*w)[0] == '{' && (*w)[n - 1] == '}') {
                                        char *inside = strndup(*w + 1, n - 2);
                                        if (!inside)
                                                return -ENOMEM;
                                        e = strstrip(inside);
                                        memmove(inside, e, strlen(e) + 1);
                                        e = inside;
                                } else
                                        e = strdup(*w);
                                r = strv_consume(&entries, e);
                                if (r < 0)
                                        return r;
                        }
                } else {
                        r = strv_extend(&entries, strstrip(part));
                        if (r < 0)
                                return r;
                }
                if (*p == 0)
                        break;
                p++;
        }
        *ret = entries ? steal_ptr(entries) : NULL;
        if (!*ret) {
                *ret = calloc(1, sizeof(char *));
                if (!*ret)
                        return -ENOMEM;
        }
        return 0;
}

static void inline_syntax_error(Map *m, Diag *diags, const char *what) {
        _cleanup_free_ char *e = str_escape_log(m->name, 200);
        diag_error(diags, NULL, 0, "%s: \"inline:%s\"; need \"inline:{name=value...}\"", what,
                   strempty(e));
}

static int inline_add(MapInline *t, const char *key, size_t klen, const char *value, bool fold) {
        _cleanup_free_ char *k = strndup(key, klen), *v = strdup(value);
        InlineEntry *n;

        if (!k || !v)
                return -ENOMEM;
        if (fold)
                ascii_strlower(k);
        for (size_t i = 0; i < t->n; i++)
                if (streq(t->entries[i].key, k)) {
                        free(t->entries[i].value);
                        t->entries[i].value = steal_ptr(v);
                        return 0;
                }
        n = realloc(t->entries, (t->n + 1) * sizeof(InlineEntry));
        if (!n)
                return -ENOMEM;
        t->entries = n;
        n[t->n++] = (InlineEntry) {.key = steal_ptr(k), .value = steal_ptr(v)};
        return 0;
}

static int map_inline_open(Map *m, Diag *diags) {
        _cleanup_strv_free_ char **items = NULL;
        _cleanup_free_ char *inner = NULL;
        const char *s = m->name;
        MapInline *t;
        size_t n;
        int r;

        t = calloc(1, sizeof(MapInline));
        if (!t)
                return -ENOMEM;
        m->data = t;

        while (inline_is_space(*s))
                s++;
        n = strlen(s);
        while (n > 0 && inline_is_space(s[n - 1]))
                n--;
        if (n < 2 || s[0] != '{' || s[n - 1] != '}') {
                inline_syntax_error(m, diags, "bad syntax");
                return -EINVAL;
        }
        inner = strndup(s + 1, n - 2);
        if (!inner)
                return -ENOMEM;
        if (!braces_balanced(inner)) {
                inline_syntax_error(m, diags, "bad syntax");
                return -EINVAL;
        }
        r = inline_split_entries(inner, &items);
        if (r < 0)
                return r;
        if (strv_length(items) == 0) {
                inline_syntax_error(m, diags, "bad syntax");
                return -EINVAL;
        }
        STRV_FOREACH(item, items) {
                const char *name = *item, *end, *value;

                while (inline_is_space(*name))
                        name++;
                if (*name == 0 || *name == '=') {
                        inline_syntax_error(m, diags, "missing attribute name");
                        return -EINVAL;
                }
                for (end = name; *end && !inline_is_space(*end) && *end != '='; end++)
                        ;
                for (value = end; inline_is_space(*value); value++)
                        ;
                if (*value != '=') {
                        inline_syntax_error(m, diags, "missing '=' after attribute name");
                        return -EINVAL;
                }
                value++;
                while (inline_is_space(*value))
                        value++;
                r = inline_add(t, name, (size_t) (end - name), value,
                               (m->flags & MAP_FLAG_FOLD_KEYS) != 0);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int map_inline_lookup(Map *m, const char *key, char **ret_value) {
        MapInline *t = m->data;

        for (size_t i = 0; i < t->n; i++)
                if (streq(t->entries[i].key, key)) {
                        if (ret_value) {
                                *ret_value = strdup(t->entries[i].value);
                                if (!*ret_value)
                                        return -ENOMEM;
                        }
                        return 1;
                }
        return 0;
}

static int map_inline_walk(Map *m, MapWalkFunc f, void *userdata) {
        MapInline *t = m->data;

        for (size_t i = 0; i < t->n; i++) {
                int r = f(t->entries[i].key, t->entries[i].value, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

const MapOps map_ops_inline = {
        .type = "inline",
        .flags = MAP_OPS_FOLD | MAP_OPS_NEEDS_NAME,
        .open = map_inline_open,
        .lookup = map_inline_lookup,
        .walk = map_inline_walk,
        .free_data = map_inline_free_data,
};

static void map_static_free_data(void *data) {
        free(data);
}

static int map_static_open(Map *m, Diag *diags) {
        const char *s = m->name;
        char *value;

        if (*s == '{') {
                const char *p;
                int depth = 0;

                for (p = s; *p; p++) {
                        if (*p == '{')
                                depth++;
                        else if (*p == '}' && --depth == 0)
                                break;
                }
                if (*p == 0) {
                        _cleanup_free_ char *e = str_escape_log(s, 200);
                        diag_error(diags, NULL, 0, "bad static:name syntax: missing '}' in \"%s\"",
                                   strempty(e));
                        return -EINVAL;
                }
                for (const char *q = p + 1; *q; q++)
                        if (!inline_is_space(*q)) {
                                _cleanup_free_ char *e = str_escape_log(s, 200);
                                diag_error(diags, NULL, 0,
                                           "bad static:name syntax: "
                                           "syntax error after '}' in \"%s\"",
                                           strempty(e));
                                return -EINVAL;
                        }
                value = strndup(s + 1, (size_t) (p - s - 1));
                if (!value)
                        return -ENOMEM;
                m->data = value;
                {
                        /* strstrip() trims in place but returns a pointer past the
                         * leading blanks: move the text down to the allocation. */
                        char *t = strstrip(value);
                        memmove(value, t, strlen(t) + 1);
                }
                return 0;
        }
        value = strdup(s);
        if (!value)
                return -ENOMEM;
        m->data = value;
        return 0;
}

static int map_static_lookup(Map *m, const char *key, char **ret_value) {
        (void) key;
        if (ret_value) {
                *ret_value = strdup(m->data);
                if (!*ret_value)
                        return -ENOMEM;
        }
        return 1;
}

const MapOps map_ops_static = {
        .type = "static",
        .flags = MAP_OPS_NEEDS_NAME,
        .open = map_static_open,
        .lookup = map_static_lookup,
        .free_data = map_static_free_data,
};
