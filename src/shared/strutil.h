/* strutil.h: string helpers that know nothing about mail: formatting into
 * new strings, trimming, case folding, splitting Postfix-style lists,
 * NULL-terminated string vectors (strv) and a growable byte buffer
 * (StrBuf). Every function returning char * hands ownership to the caller;
 * NULL means out of memory. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"
#include "macro.h"

/* Formats into a new string; NULL when out of memory. Caller frees. */
char *strdup_printf(const char *fmt, ...) _printf_(1, 2);
char *strdup_vprintf(const char *fmt, va_list ap) _printf_(1, 0);
char *strndup_safe(const char *s, size_t n);

/* Trims ASCII white space at both ends, in place; returns s. */
char *strstrip(char *s);
/* Lower-cases ASCII letters in place; returns s. */
char *ascii_strlower(char *s);
bool str_is_ascii_digits(const char *s);

/* Splits a Postfix list value (items separated by commas and/or white
 * space; "{ ... }" groups kept together with the braces removed when
 * strip_braces) into a new strv. Empty items are dropped. Returns 0 or
 * -ENOMEM; *ret is owned by the caller. */
int str_split_list(const char *value, bool strip_braces, char ***ret);

/* Escapes a peer- or file-supplied string for logging: control and non-ASCII
 * bytes become \xNN, the result is capped to max bytes with "..." appended.
 * Caller frees; NULL on out of memory. */
char *str_escape_log(const char *s, size_t max);

/* strv: NULL-terminated vectors of owned strings. */
char **strv_free(char **l);
size_t strv_length(char * const *l);
/* Appends a copy of s (or takes s with strv_consume); -ENOMEM on failure
 * (strv_consume frees s then). */
int strv_extend(char ***l, const char *s);
int strv_consume(char ***l, char *s);
bool strv_contains(char * const *l, const char *s);
bool strv_contains_case(char * const *l, const char *s);
char *strv_join(char * const *l, const char *sep);
static inline void strv_freep(char ***l) {
        strv_free(*l);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)
#define STRV_FOREACH(s, l) for (char * const *s = (l); s && *s; s++)

/* StrBuf: a growable, always NUL-terminated byte buffer. The zero value
 * ({0}) is an empty buffer. Appending returns 0 or -ENOMEM. */
typedef struct StrBuf {
        char *data;
        size_t len;
        size_t cap;
} StrBuf;

int strbuf_reserve(StrBuf *b, size_t extra);
int strbuf_append(StrBuf *b, const void *p, size_t n);
int strbuf_puts(StrBuf *b, const char *s);
int strbuf_putc(StrBuf *b, char c);
int strbuf_printf(StrBuf *b, const char *fmt, ...) _printf_(2, 3);
void strbuf_clear(StrBuf *b);
void strbuf_done(StrBuf *b);
/* Returns the data (NUL-terminated, possibly "" freshly allocated) and
 * resets the buffer; the caller frees. NULL on out of memory. */
char *strbuf_steal(StrBuf *b);

/* Expands a reply template in Postfix's macro syntax from vars, a
 * NULL-terminated list of name, value pairs: $name, ${name}, $(name),
 * ${name?text} (text when name has a non-empty value), ${name:text} (the
 * value, or text when it is empty), "$$" for a "$". Unknown names expand
 * to nothing; a "$" before anything else stays. Caller frees; NULL on out
 * of memory. */
char *str_expand_vars(const char *tmpl, const char *const *vars);
