/* diag.c: diagnostics lists (see diag.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "strutil.h"

void diag_add(Diag *d, DiagLevel level, const char *file, unsigned line, const char *fmt, ...) {
        va_list ap;
        DiagEntry *t;

        if (!d)
                return;
        if (level == DIAG_ERROR)
                d->n_errors++;
        t = realloc(d->entries, (d->n + 1) * sizeof(DiagEntry));
        if (!t)
                return;
        d->entries = t;
        va_start(ap, fmt);
        t[d->n] = (DiagEntry) {
                .level = level,
                .file = file ? strdup(file) : NULL,
                .line = line,
                .text = strdup_vprintf(fmt, ap),
        };
        va_end(ap);
        d->n++;
}

char *diag_entry_format(const DiagEntry *e) {
        const char *lvl = e->level == DIAG_ERROR ? "error" : "warning";
        if (e->file && e->line > 0)
                return strdup_printf("%s:%u: %s: %s", e->file, e->line, lvl, strempty(e->text));
        if (e->file)
                return strdup_printf("%s: %s: %s", e->file, lvl, strempty(e->text));
        return strdup_printf("%s: %s", lvl, strempty(e->text));
}

void diag_print(const Diag *d, FILE *f, const char *prefix) {
        for (size_t i = 0; i < d->n; i++) {
                _cleanup_free_ char *s = diag_entry_format(&d->entries[i]);
                fprintf(f, "%s%s%s\n", prefix ? prefix : "", prefix ? ": " : "",
                        s ? s : "(out of memory)");
        }
}

void diag_done(Diag *d) {
        for (size_t i = 0; i < d->n; i++) {
                free(d->entries[i].file);
                free(d->entries[i].text);
        }
        free(d->entries);
        *d = (Diag) {0};
}

void diag_move(Diag *dst, Diag *src) {
        DiagEntry *t;
        if (!dst) {
                diag_done(src);
                return;
        }
        if (src->n == 0) {
                diag_done(src);
                return;
        }
        t = realloc(dst->entries, (dst->n + src->n) * sizeof(DiagEntry) + 1);
        if (!t) {
                dst->n_errors += src->n_errors;
                diag_done(src);
                return;
        }
        memcpy(t + dst->n, src->entries, src->n * sizeof(DiagEntry));
        dst->entries = t;
        dst->n += src->n;
        dst->n_errors += src->n_errors;
        free(src->entries);
        *src = (Diag) {0};
}
