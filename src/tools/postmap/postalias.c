/* postalias.c: main() of postalias(1), which builds and queries alias
 * databases in aliases(5) syntax, and of newaliases(1), installed as a
 * link to it, which rebuilds every alias_database of the configuration.
 * The work is in postmap-common.c. */
#include <string.h>

#include "macro.h"
#include "postmap-common.h"

int main(int argc, char **argv) {
        const char *name = argc > 0 && argv[0] ? strrchr(argv[0], '/') : NULL;

        name = name ? name + 1 : (argc > 0 && argv[0] ? argv[0] : "postalias");
        if (streq(name, "newaliases"))
                return newaliases_run(argc, argv);
        return postmap_run(argc, argv, true);
}
