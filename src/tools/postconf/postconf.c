/* postconf.c: the postconf command, Postfix's configuration utility for
 * postern: shows main.cf parameters and services.d overrides and edits
 * them. All of the work is in postconf-lib.c, which "posternctl conf"
 * shares. */
#include "postconf-lib.h"

int main(int argc, char **argv) {
        return postconf_main(argc, argv, "postconf");
}
