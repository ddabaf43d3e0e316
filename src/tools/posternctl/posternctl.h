/* posternctl.h: what the verbs of posternctl share. Each verb is one
 * function taking its own arguments (argv[0] is the verb) and returning the
 * exit status; posternctl.c holds the table of verbs and dispatches. */
#pragma once

#include <stdio.h>

#include "diag.h"

/* posternctl check: validates the whole configuration. */
int verb_check(int argc, char **argv);
/* posternctl queue: the queue tools under their native name (posternctl-queue.c). */
int verb_queue(int argc, char **argv);

/* posternctl migrate: imports a Postfix configuration directory. */
int verb_migrate(int argc, char **argv);

/* Prints diagnostics as a JSON array of {"level", "file", "line",
 * "message"} objects, one per line. */
void diag_print_json(const Diag *d, FILE *f);
