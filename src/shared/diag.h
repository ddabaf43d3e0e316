/* diag.h: diagnostics lists. Parsers of configuration, map and queue files
 * report problems here with their location (file, line) instead of logging;
 * the caller owns the list and decides: postconf and posternctl print it,
 * daemons log it. */
#pragma once

#include <stdio.h>

#include "macro.h"

typedef enum DiagLevel {
        DIAG_WARNING,
        DIAG_ERROR,
} DiagLevel;

typedef struct DiagEntry {
        DiagLevel level;
        char *file;             /* may be NULL */
        unsigned line;          /* 0 when not line-bound */
        char *text;
} DiagEntry;

typedef struct Diag {
        DiagEntry *entries;
        size_t n;
        size_t n_errors;
} Diag;

/* Adds an entry; file may be NULL and line 0. A NULL Diag ignores the call,
 * so callers that do not care may pass NULL. Out of memory drops the text
 * but still counts the error. */
void diag_add(Diag *d, DiagLevel level, const char *file, unsigned line, const char *fmt, ...)
        _printf_(5, 6);
#define diag_error(d, file, line, ...) diag_add(d, DIAG_ERROR, file, line, __VA_ARGS__)
#define diag_warning(d, file, line, ...) diag_add(d, DIAG_WARNING, file, line, __VA_ARGS__)

/* Formats one entry as "FILE:LINE: error: TEXT" (Postfix and compiler
 * style). Caller frees; NULL on out of memory. */
char *diag_entry_format(const DiagEntry *e);
/* Writes every entry to f, each prefixed with "prefix: " when prefix is set. */
void diag_print(const Diag *d, FILE *f, const char *prefix);
void diag_done(Diag *d);
/* Moves all entries of src to the end of dst. */
void diag_move(Diag *dst, Diag *src);
