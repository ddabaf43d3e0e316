/* conf.h: the configuration plane. Loads main.cf (Postfix syntax) and the
 * per-service overrides services.d/NAME.cf from the configuration directory
 * (-c DIR, else $POSTERN_CONFIG_DIR, else the built-in default), checks every
 * value against the parameter table (conf-params.tab, generated into
 * conf-params.h/.c) and answers typed, expanded values.
 *
 * Expansion of $name, ${name}, ${name?value}, ${name:value} (and the
 * ${name?{value}} / ${name:{value}} forms) happens at use time, so that
 * "myorigin = $mydomain" follows a later change of mydomain. A loaded Config
 * is immutable; a reload builds a new one. Editing main.cf in place
 * (postconf -e) lives in conf-edit.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cleanup.h"
#include "diag.h"

typedef enum ConfType {
        CONF_TYPE_STRING,
        CONF_TYPE_BOOL,         /* yes / no */
        CONF_TYPE_INT,
        CONF_TYPE_TIME,         /* number with unit s, m, h, d, w; bare numbers use the default unit */
        CONF_TYPE_SIZE,         /* bytes; k, m, g suffixes accepted */
        CONF_TYPE_LIST,         /* comma and/or white space separated */
        CONF_TYPE_MAPLIST,      /* list of type:name lookup tables */
        _CONF_TYPE_MAX,
} ConfType;

/* Flags of a parameter in the table. */
enum {
        CONF_FLAG_COMPUTED = 1 << 0,    /* default computed at run time (host name, ...) */
        CONF_FLAG_READONLY = 1 << 1,    /* compatibility / informational */
        CONF_FLAG_RAW = 1 << 2,         /* not $-expanded at load: its reader expands its own $names */
        CONF_FLAG_UNIMPLEMENTED = 1 << 3,/* a feature postern lacks: a value other than the
                                          * default draws a warning at load time */
};

typedef struct ConfParamInfo {
        const char *name;
        ConfType type;
        const char *def;                /* default value, unexpanded, as postconf -d prints it */
        char time_unit;                 /* for CONF_TYPE_TIME: default unit of a bare number */
        unsigned flags;
        const char *services;           /* which roles read it, e.g. "smtpd submission smtps" */
        const char *description;        /* one line */
        const char * const *choices;    /* CONF_TYPE_STRING enumerations: allowed values
                                         * (compared without case), NULL-terminated; "" allows
                                         * the empty value. NULL for free text. */
} ConfParamInfo;

#include "conf-params.h"                /* generated: enum ConfParam { P_MYHOSTNAME, ..., _P_MAX } */

extern const ConfParamInfo conf_params[_P_MAX];

/* Returns the table index of a parameter name, or -ENOENT. */
int conf_param_lookup(const char *name);
const char *conf_type_to_string(ConfType t);

/* Checks an (expanded) value against the type of parameter p, as the loader
 * does. Returns 0, or -EINVAL with *ret_expected (optional, caller frees)
 * set to what the type wants, e.g. "a size (bytes, optionally with k/m/g
 * suffix)"; -ENOMEM. */
int conf_param_check_value(ConfParam p, const char *value, char **ret_expected);

/* Services that may have a services.d/NAME.cf file, and the Postfix-style
 * service type postconf -P shows for them: "inet" for smtpd, submission and
 * smtps, "unix" for the others. NULL for an unknown service. */
const char *conf_service_type(const char *service);

typedef struct Config Config;

/* Loads the configuration of dir (NULL: $POSTERN_CONFIG_DIR or the default)
 * for service (NULL: main.cf only). Problems go into diags with file:line:
 * unknown parameters and unimplemented parameters (CONF_FLAG_UNIMPLEMENTED)
 * set to a value other than their default are warnings, bad values and
 * syntax errors are errors.
 * Returns 0 on success, -EINVAL when there were errors (nothing is returned
 * then: a broken file never half-applies), -ENOENT when main.cf is missing
 * (an empty main.cf is fine), other negative errnos for I/O failures. */
int conf_load(const char *dir, const char *service, Diag *diags, Config **ret);

/* Builds a Config from main.cf text held in memory (file names the text in
 * diagnostics). Used by tests and the fuzz target. */
int conf_load_string(const char *text, const char *file, Diag *diags, Config **ret);

Config *conf_ref(Config *c);
Config *conf_unref(Config *c);
DEFINE_CLEANUP_FUNC(Config, conf_unref);

/* The directory the configuration came from (borrowed) and the service name
 * (borrowed, NULL for none). */
const char *conf_dir(const Config *c);
const char *conf_service(const Config *c);
/* Returns the configuration directory selected by $POSTERN_CONFIG_DIR or the
 * built-in default (borrowed, static). */
const char *conf_default_dir(void);

/* Typed, expanded values. Strings and lists are borrowed and valid while the
 * Config lives. Values were checked at load time, so these cannot fail. */
const char *conf_get_str(Config *c, ConfParam p);
bool conf_get_bool(Config *c, ConfParam p);
long long conf_get_int(Config *c, ConfParam p);
uint64_t conf_get_time(Config *c, ConfParam p);          /* seconds */
uint64_t conf_get_size(Config *c, ConfParam p);          /* bytes */
char * const *conf_get_list(Config *c, ConfParam p);     /* NULL-terminated */

/* Default value of p as postconf -d prints it: the table default, or for a
 * computed default (myhostname, mydomain, mynetworks) the value computed for
 * this host without regard to main.cf. Borrowed. */
const char *conf_get_default(Config *c, ConfParam p);

/* Value of any parameter by name, including names not in the table that
 * main.cf defines (user-defined parameters usable as $name). expanded
 * selects the expanded value. Returns NULL when the name is unknown and not
 * set. Borrowed. */
const char *conf_get_by_name(Config *c, const char *name, bool expanded);

/* Where a value comes from. */
typedef enum ConfSource {
        CONF_SOURCE_DEFAULT,
        CONF_SOURCE_MAIN,       /* main.cf */
        CONF_SOURCE_SERVICE,    /* services.d/NAME.cf */
} ConfSource;

/* Raw (unexpanded) value and its source; NULL when neither set nor known. */
const char *conf_get_raw(Config *c, const char *name, ConfSource *ret_source);

/* Where name was set: the file (borrowed) and line. Returns > 0 when set in
 * main.cf or services.d, 0 when it has its default or is unknown. */
int conf_get_location(Config *c, const char *name, const char **ret_file, unsigned *ret_line);

/* Whether name is a parameter: in the table, or user-defined and referenced
 * as $name by some value or listed in smtpd_restriction_classes. Names set
 * in main.cf that are neither draw the "unknown parameter" warning. */
bool conf_name_known(const Config *c, const char *name);

/* The user-defined parameters that conf_name_known() accepts, sorted
 * (borrowed). */
char * const *conf_user_names(const Config *c);

/* Expands $name references in value against c. Returns 0 or a negative
 * errno (-ELOOP on recursion deeper than 100 levels); caller frees *ret. */
int conf_expand(Config *c, const char *value, char **ret);

/* Names set in main.cf, in file order (borrowed). */
char * const *conf_main_names(const Config *c);

/* Per-service overrides: the names of services with a services.d/NAME.cf
 * file, sorted, and the parameters each sets in file order. Borrowed. */
char * const *conf_service_names(const Config *c);
int conf_service_overrides(const Config *c, const char *service, char * const **ret_names,
                           char * const **ret_values);

/* Parses a value of the given type, as the loader does. Returns 0 or
 * -EINVAL; the out parameters may be NULL. */
int conf_parse_bool(const char *s, bool *ret);
int conf_parse_time(const char *s, char default_unit, uint64_t *ret);
int conf_parse_size(const char *s, uint64_t *ret);
int conf_parse_int(const char *s, long long *ret);

/* Rewrites main.cf (path) with the given "name = value" assignments
 * (postconf -e) or removals (postconf -X: names only), keeping comments,
 * order and continuation lines of everything else, atomically. New names
 * are appended at the end. Returns 0 or a negative errno; syntax errors in
 * an assignment go into diags and give -EINVAL. */
int conf_edit_file(const char *path, char * const *assignments, bool remove, Diag *diags);

typedef enum ConfEditMode {
        CONF_EDIT_SET,          /* postconf -e: args are "name = value" or "name=value" */
        CONF_EDIT_REMOVE,       /* postconf -X: args are names */
        CONF_EDIT_COMMENT,      /* postconf -#: args are names; their lines get a leading "#" */
} ConfEditMode;

/* Applies the edit to the text of a main.cf-syntax file and returns the new
 * text (caller frees). Every logical line that sets a named parameter is
 * replaced (its continuation lines included, with a warning when there are
 * several); comments, blank lines and other entries are kept byte for byte.
 * Returns 0, -EINVAL for a malformed argument (reported in diags), -ENOMEM. */
int conf_edit_text(const char *text, const char *file, char * const *args, ConfEditMode mode,
                   Diag *diags, char **ret);

/* conf_edit_text() on a file, written back with file_write_atomic(). A
 * missing file counts as empty and is created (mode 0644) when something is
 * set. Returns 0 or a negative errno. */
int conf_edit(const char *path, char * const *args, ConfEditMode mode, Diag *diags);
