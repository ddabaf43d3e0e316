/* postconf-lib.h: the logic of postconf(1), shared by the postconf command
 * and "posternctl conf": listing main.cf parameters (all, -n, -d, by name,
 * -h, -x, -f, -H, --json), per-service overrides (-P) and editing (-e, -X,
 * -#). Output matches Postfix's postconf byte for byte where both have the
 * feature. Also the JSON string writer that posternctl's --json uses. */
#pragma once

#include <stdio.h>

/* Runs postconf with its command line; argv[0] is skipped like a program
 * name. Messages go to stderr prefixed with "program: ". Returns the exit
 * status: 0, or 1 after an error. */
int postconf_main(int argc, char **argv, const char *program);

/* Writes s as a JSON string literal (quotes, escapes; bytes that are not
 * UTF-8 become U+FFFD). */
void json_write_string(FILE *f, const char *s);
