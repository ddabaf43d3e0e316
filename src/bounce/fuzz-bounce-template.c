/* fuzz-bounce-template.c: libFuzzer target for the bounce_template_file
 * parser. Parses the input as a template file, dumps what was accepted and
 * expands every part of every template with a lookup that knows a few
 * names. Any crash, leak or sanitizer report is a bug; diagnostics are
 * expected. */
#include <stdint.h>
#include <stdlib.h>

#include "bounce-template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *lookup(const char *name, void *userdata) {
        if (streq(name, "myhostname"))
                return "fuzz.example";
        if (streq(name, "empty"))
                return "";
        return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(bounce_templates_freep) BounceTemplates *t = NULL;
        _cleanup_(strbuf_done) StrBuf out = {0};
        Diag d = {0};

        if (bounce_templates_parse((const char *) data, size, "bounce.cf", &d, &t) >= 0) {
                (void) bounce_templates_dump(t, &out);
                for (size_t k = 0; k < _BOUNCE_TEMPLATE_MAX; k++) {
                        const char *parts[] = {t->t[k].from, t->t[k].subject,
                                               t->t[k].postmaster_subject, t->t[k].text};
                        for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
                                _cleanup_free_ char *x = NULL;
                                unsigned unknown;
                                (void) bounce_template_expand(parts[i], lookup, NULL, &x,
                                                              &unknown);
                        }
                }
        }
        for (size_t i = 0; i < d.n; i++)
                free(diag_entry_format(&d.entries[i]));
        diag_done(&d);
        return 0;
}
