/* conf-internal.h: what the files of the conf module share and nobody else
 * uses: the logical-line parser of main.cf syntax (conf-parse.c) and the
 * $name expander (conf-expand.c). conf.c builds a Config from both;
 * conf-edit.c reuses the line classification. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"
#include "diag.h"

/* Expansions nested deeper than this fail with -ELOOP (Postfix's limit). */
#define CONF_EXPAND_MAX_DEPTH 100
/* An expanded value longer than this fails with -E2BIG, so that a few
 * lines of "a = $b$b$b$b" cannot make us build gigabytes. */
#define CONF_EXPAND_MAX_LEN (1024 * 1024)
/* Larger main.cf or services.d files are refused. */
#define CONF_FILE_MAX (16 * 1024 * 1024)

/* One "name = value" logical line. */
typedef struct ConfEntry {
        char *name;
        char *value;            /* trimmed; continuation lines joined */
        unsigned line;          /* line of the name */
} ConfEntry;

typedef struct ConfFile {
        char *path;             /* as named in diagnostics */
        ConfEntry *entries;     /* file order; a name may repeat */
        size_t n;
} ConfFile;

/* Splits text in main.cf syntax into entries. Syntax problems go into diags
 * with path:line; lines with errors are skipped and counted as errors.
 * Returns 0 or -ENOMEM. */
int conf_file_parse(const char *text, const char *path, Diag *diags, ConfFile **ret);
ConfFile *conf_file_free(ConfFile *f);
DEFINE_CLEANUP_FUNC(ConfFile, conf_file_free);

/* Whether a line (up to its newline) is blank or a comment, and whether it
 * continues the previous logical line (starts with white space). */
bool conf_line_is_comment(const char *line, size_t len);
bool conf_line_is_continuation(const char *line, size_t len);

/* Splits one "name = value" text (a logical line, or a postconf -e
 * argument) at the first "=", trimming both sides. Returns 0, or -EINVAL
 * with *ret_error (caller frees) saying what is wrong; -ENOMEM. */
int conf_split_assignment(const char *text, char **ret_name, char **ret_value, char **ret_error);

/* Whether s is a valid parameter name: letters, digits and "_". */
bool conf_name_valid(const char *s, size_t len);

/* The expander calls this for each $name. With expanded set it wants the
 * expanded value, otherwise the raw one (the ${name?...} tests look at the
 * raw value, as Postfix does). Returns > 0 with *ret (borrowed) when name is
 * defined, 0 when it is not, < 0 on failure (passed on). depth is that of
 * the reference, for the lookup's own nested expansion. */
typedef int (*ConfLookupFunc)(void *userdata, const char *name, bool expanded, unsigned depth,
                              const char **ret);

/* Expands text. Returns 0 with *ret (caller frees); -EINVAL for a syntax
 * error, with *ret_error (caller frees) describing it; -ELOOP when nested
 * deeper than CONF_EXPAND_MAX_DEPTH; -E2BIG when the result would exceed
 * CONF_EXPAND_MAX_LEN; -ENOMEM; or the lookup's error. undefined (may be
 * NULL) receives the names of plain $name references that were undefined. */
int conf_expand_text(const char *text, ConfLookupFunc lookup, void *userdata, unsigned depth,
                     char ***undefined, char **ret, char **ret_error);

/* Calls f for every name that text refers to, including both branches of
 * conditionals, without expanding anything. conditional tells whether the
 * reference only tests the name (${name?...}). Returns 0, or -EINVAL with
 * *ret_error for a syntax error. */
typedef void (*ConfRefFunc)(void *userdata, const char *name, bool conditional);
int conf_scan_refs(const char *text, ConfRefFunc f, void *userdata, char **ret_error);
