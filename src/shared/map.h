/* map.h: lookup tables in Postfix's "type:name" syntax. map_open() picks the
 * type from a small table (map.c); each type lives in its own file filling a
 * MapOps struct: hash and btree (map-db.c, Berkeley DB 5.3 files NAME.db
 * built by postmap), regexp and pcre (map-regexp.c, PCRE2), cidr
 * (map-cidr.c), inline:{...} and static: (map-inline.c), texthash:
 * (map-texthash.c), unix:passwd.byname (map-unix.c).
 *
 * Lookups have three outcomes: > 0 found, 0 not found, < 0 failed. A failed
 * lookup must never be read as "not found": callers defer instead.
 *
 * Building indexed tables (postmap, postalias) is map_build() in
 * map-build.c. Source-file syntax errors go into a Diag with file:line. */
#pragma once

#include <stdbool.h>

#include "cleanup.h"
#include "diag.h"

typedef struct Map Map;

enum {
        MAP_FLAG_FOLD_KEYS = 1 << 0,    /* lower-case keys on lookup (the default for most types) */
        MAP_FLAG_ALIAS = 1 << 1,        /* aliases(5) source syntax ("name: value") */
};

/* Opens the table spec ("hash:/etc/postern/virtual", "cidr:/path",
 * "inline:{ a=b, c=d }", "static:OK"). A spec without "type:" is an error
 * (-EINVAL with a diagnostic). Returns 0 or a negative errno (-ENOENT when
 * the file is missing, -EPROTONOSUPPORT for an unknown type); problems in
 * source files go into diags, and bad lines are skipped. *ret is owned by
 * the caller. */
int map_open(const char *spec, unsigned flags, Diag *diags, Map **ret);

/* Looks key up. > 0: found, *ret_value is a new string (caller frees; may
 * be NULL when not wanted). 0: not found. < 0: the table could not be read
 * (-EIO and friends). For regexp/pcre tables, $1..$9 in the result are
 * replaced by the matched groups. */
int map_lookup(Map *m, const char *key, char **ret_value);

/* Iterates over all entries (postmap -s). The callback's negative return
 * stops the walk and is returned. -EOPNOTSUPP for types that cannot list. */
typedef int (*MapWalkFunc)(const char *key, const char *value, void *userdata);
int map_walk(Map *m, MapWalkFunc f, void *userdata);

const char *map_spec(const Map *m);        /* borrowed: "type:name" as opened */
const char *map_type(const Map *m);        /* borrowed: "hash" */
Map *map_free(Map *m);
DEFINE_CLEANUP_FUNC(Map, map_free);

/* Whether a type name is known (for posternctl check). */
bool map_type_known(const char *type);
/* For file-backed indexed types, the source file and the index file names
 * (caller frees). Returns 0, or -EOPNOTSUPP for other types. */
int map_files(const char *spec, char **ret_source, char **ret_index);

/* MapList: the tables of a map-list parameter (e.g. "hash:/a, regexp:/b"),
 * searched in order; the first table that has the key answers. A table that
 * fails makes the whole lookup fail (< 0). */
typedef struct MapList MapList;
int map_list_open(char * const *specs, unsigned flags, Diag *diags, MapList **ret);
int map_list_lookup(MapList *l, const char *key, char **ret_value);
/* Which key of an address answered map_list_lookup_addr(). */
typedef enum MapAddrKey {
        MAP_ADDR_FULL,          /* the address as given: user+ext@domain */
        MAP_ADDR_NOEXT,         /* without the extension: user@domain */
        MAP_ADDR_LOCAL,         /* the local part: user+ext */
        MAP_ADDR_LOCAL_NOEXT,   /* user */
        MAP_ADDR_DOMAIN,        /* @domain */
} MapAddrKey;
/* Looks an address ("local@domain", or a bare local part) up in Postfix's
 * order for address tables (canonical(5), smtpd_sender_login_maps): the
 * address, the address without its extension (the local part cut at the
 * first of delimiters, unless that is its first character), then, when
 * is_local(domain, userdata) says the domain is local (> 0; < 0 fails the
 * lookup; NULL: never), the local part with and without the extension,
 * then "@domain". Returns as map_list_lookup(), with *ret_key (may be
 * NULL) naming the key that answered. */
int map_list_lookup_addr(MapList *l, const char *addr, const char *delimiters,
                         int (*is_local)(const char *domain, void *userdata), void *userdata,
                         char **ret_value, MapAddrKey *ret_key);
MapList *map_list_free(MapList *l);
DEFINE_CLEANUP_FUNC(MapList, map_list_free);

/* Builds the indexed table for spec ("hash:FILE", "btree:FILE" or a bare
 * FILE using default_type) from its source text: FILE.db, written to a
 * temporary file and renamed so that readers never see it half-written.
 * Keys are lower-cased unless MAP_FLAG_FOLD_KEYS is clear; MAP_FLAG_ALIAS
 * selects the aliases(5) syntax. Bad lines go into diags with file:line and
 * are skipped; duplicate keys warn and the first wins as in Postfix.
 * Returns the number of entries or a negative errno. */
int map_build(const char *spec, const char *default_type, unsigned flags, Diag *diags);

/* The action of a header_checks / body_checks result (header_checks(5)):
 * its first word, without case. PREPEND and REPLACE need text; without it
 * they are MAP_CHECK_UNKNOWN like any other word. */
typedef enum MapCheckAction {
        MAP_CHECK_UNKNOWN,
        MAP_CHECK_DUNNO,        /* OK and DUNNO: nothing to do */
        MAP_CHECK_REJECT,
        MAP_CHECK_DISCARD,
        MAP_CHECK_HOLD,
        MAP_CHECK_WARN,
        MAP_CHECK_INFO,
        MAP_CHECK_IGNORE,
        MAP_CHECK_REDIRECT,
        MAP_CHECK_PREPEND,
        MAP_CHECK_REPLACE,
} MapCheckAction;

/* Parses result; *ret_text (may be NULL) points into result after the
 * action word and its blanks ("" when there is no text). */
MapCheckAction map_check_action(const char *result, const char **ret_text);
