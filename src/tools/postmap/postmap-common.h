/* postmap-common.h: the command-line front end shared by postmap(1),
 * postalias(1) and newaliases(1): option parsing, building, querying and
 * listing tables, and printing diagnostics in Postfix's
 * "PROGRAM: warning: FILE, line N: text" shape. */
#pragma once

#include <stdbool.h>

#include "diag.h"

/* Exit statuses. Postfix's postmap exits 1 for "not found" and for fatal
 * errors alike; a table that cannot be read at query time gets
 * EX_TEMPFAIL so that scripts can tell a failure from "not found". */
#define POSTMAP_EXIT_OK 0
#define POSTMAP_EXIT_NOTFOUND 1
#define POSTMAP_EXIT_FATAL 1
#define POSTMAP_EXIT_TEMPFAIL 75

/* Runs postmap (alias = false) or postalias (alias = true) with the
 * command line in argv; returns the exit status. */
int postmap_run(int argc, char **argv, bool alias);

/* Runs newaliases: rebuilds every alias_database entry of the
 * configuration; returns the exit status. */
int newaliases_run(int argc, char **argv);

/* Prints every entry of d to stderr as "program: warning: ..." (errors as
 * "program: fatal: ..."). */
void postmap_print_diags(const char *program, const Diag *d);
