/* map-internal.h: what the map type files share with map.c and with the
 * unit tests and fuzz targets, but no other module: the Map object and the
 * MapOps each type fills, the Postfix source-file line reader
 * (MapSource), the "key whitespace value" and aliases(5) line parsers, and
 * entry points that parse table text from memory. Programs use map.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "diag.h"
#include "map.h"
#include "strutil.h"

/* Cap on the size of a table source file read into memory (regexp, pcre,
 * cidr, texthash, and postmap/postalias sources). */
#define MAP_SOURCE_MAX ((size_t) 1024 * 1024 * 1024)

enum {
        MAP_OPS_FOLD = 1 << 0,          /* keys are case-folded (MAP_FLAG_FOLD_KEYS applies) */
        MAP_OPS_INDEXED = 1 << 1,       /* NAME.db built from NAME by postmap */
        MAP_OPS_NEEDS_NAME = 1 << 2,    /* "type:" with an empty name is an error */
};

typedef struct MapOps {
        const char *type;
        unsigned flags;
        /* Fills m->data from m->name. Returns 0 or a negative errno, with a
         * DIAG_ERROR in diags saying why; warnings for skipped lines. */
        int (*open)(Map *m, Diag *diags);
        /* key is already folded when the type folds. Same contract as
         * map_lookup(). */
        int (*lookup)(Map *m, const char *key, char **ret_value);
        /* NULL when the type cannot list its entries. */
        int (*walk)(Map *m, MapWalkFunc f, void *userdata);
        void (*free_data)(void *data);
} MapOps;

struct Map {
        const MapOps *ops;
        char *spec;             /* "type:name" as given */
        char *type;
        char *name;
        unsigned flags;         /* MAP_FLAG_* */
        void *data;             /* owned by the type */
};

extern const MapOps map_ops_hash;
extern const MapOps map_ops_btree;
extern const MapOps map_ops_regexp;
extern const MapOps map_ops_pcre;
extern const MapOps map_ops_cidr;
extern const MapOps map_ops_inline;
extern const MapOps map_ops_static;
extern const MapOps map_ops_texthash;
extern const MapOps map_ops_unix;

/* Looks a type up in the table of map.c; NULL when unknown. */
const MapOps *map_ops_find(const char *type);

/* Builds a Map shell (spec, type, name, flags; no data) for ops. Returns 0
 * or -ENOMEM. */
int map_new_shell(const MapOps *ops, const char *type, const char *name, unsigned flags,
                  Map **ret);

/* MapSource: Postfix's logical lines over a buffer. Lines whose first
 * non-blank character is '#' and blank lines are dropped; a line that
 * starts with white space continues the logical line before it (the
 * newline is dropped, the white space kept); a logical line that starts
 * with white space is reported and dropped. A NUL byte ends the text of
 * the logical line it is in. The line number of a logical line is that of its first line. */
typedef struct MapSource {
        const char *file;       /* for diagnostics */
        const char *buf;
        size_t len;
        size_t pos;
        unsigned lineno;        /* physical lines consumed */
} MapSource;

void map_source_init(MapSource *src, const char *file, const char *buf, size_t len);
/* Stores the next logical line in *line (reset first) and its number in
 * *ret_lineno. Returns 1, 0 at the end, or -ENOMEM. */
int map_source_next(MapSource *src, StrBuf *line, unsigned *ret_lineno, Diag *diags);

/* Splits a logical line of a postmap(1) source in place: the key ends at
 * the first white space outside double quotes (a backslash escapes the
 * next character; the key keeps its quotes), the value is the rest with
 * white space trimmed. Returns 1 with *ret_key and *ret_value pointing into
 * line, or 0 when the line is bad (reported with file:line and skipped). */
int map_parse_key_value(char *line, const char *file, unsigned lineno, Diag *diags,
                        char **ret_key, char **ret_value);

/* Parses a logical line of an aliases(5) source: "name: value, value".
 * The name is unquoted (RFC 822 internal form), the value is re-quoted
 * (external form) with Postfix's spacing. Returns 1 with new strings (the
 * caller frees both), 0 when the line is bad (reported and skipped), or
 * -ENOMEM. */
int map_parse_alias(const char *line, const char *file, unsigned lineno, Diag *diags,
                    char **ret_key, char **ret_value);

/* Parses regexp_table(5) (type "regexp") or pcre_table(5) (type "pcre")
 * text held in memory; file names it in diagnostics. Returns 0 with a Map
 * that map_lookup() accepts, or a negative errno. Bad rules are reported
 * and skipped as when opening a file. */
int map_regexp_parse_buffer(const char *type, const char *file, const char *buf, size_t len,
                            Diag *diags, Map **ret);

/* Parses cidr_table(5) text held in memory; as above. */
int map_cidr_parse_buffer(const char *file, const char *buf, size_t len, Diag *diags, Map **ret);

/* Reads a table source file for the open functions: the whole file,
 * NUL-terminated. Failures are reported in diags. */
int map_read_source(const char *path, Diag *diags, char **ret, size_t *ret_len);

/* Adds "open PATH: strerror" (or with what in front of PATH) as an error. */
void map_diag_errno(Diag *diags, int error, const char *what, const char *path);

/* Lower-cases ASCII letters of a copy of key; NULL when out of memory. */
char *map_fold_key(const char *key);
