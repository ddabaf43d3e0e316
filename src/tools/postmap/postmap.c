/* postmap.c: main() of postmap(1), the Postfix-compatible command that
 * builds hash: and btree: tables from their source files and queries or
 * lists any lookup table. The work is in postmap-common.c. */
#include "postmap-common.h"

int main(int argc, char **argv) {
        return postmap_run(argc, argv, false);
}
