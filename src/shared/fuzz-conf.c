/* fuzz-conf.c: libFuzzer target for the configuration plane. Loads the
 * input as main.cf text (parsing, expansion of every value, type checks),
 * expands every set value again through conf_expand(), and runs the
 * postconf -e editor over the same text. Any crash, leak or sanitizer
 * report is a bug; diagnostics are expected. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "strutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        _cleanup_free_ char *text = strndup((const char *) data, size), *edited = NULL;
        char *args[] = {(char *) "myhostname = fuzz.example", (char *) "relayhost=", NULL};
        char *names[] = {(char *) "mydestination", (char *) "myhostname", NULL};
        Diag d = {0};

        if (!text)
                return 0;
        if (conf_load_string(text, "main.cf", &d, &c) >= 0) {
                STRV_FOREACH(n, conf_main_names(c)) {
                        const char *raw = conf_get_by_name(c, *n, false);
                        _cleanup_free_ char *x = NULL;
                        (void) conf_get_by_name(c, *n, true);
                        if (raw)
                                (void) conf_expand(c, raw, &x);
                }
                for (size_t p = 0; p < _P_MAX; p++) {
                        (void) conf_get_str(c, (ConfParam) p);
                        (void) conf_get_list(c, (ConfParam) p);
                }
        }
        diag_done(&d);
        (void) conf_edit_text(text, "main.cf", args, CONF_EDIT_SET, &d, &edited);
        free(edited);
        edited = NULL;
        (void) conf_edit_text(text, "main.cf", names, CONF_EDIT_COMMENT, &d, &edited);
        diag_done(&d);
        return 0;
}
