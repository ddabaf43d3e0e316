/* posternctl.h: what the verbs of posternctl share. Each verb is one
 * function taking its own arguments (argv[0] is the verb) and returning the
 * exit status; posternctl.c holds the table of verbs and dispatches. */
#pragma once

#include <stdio.h>

#include "conf.h"
#include "diag.h"

/* posternctl check: validates the whole configuration. */
int verb_check(int argc, char **argv);
/* posternctl queue: the queue tools under their native name (posternctl-queue.c). */
int verb_queue(int argc, char **argv);
/* posternctl trace: a message's journal entries across units (posternctl-trace.c). */
int verb_trace(int argc, char **argv);

/* posternctl migrate: imports a Postfix configuration directory. */
int verb_migrate(int argc, char **argv);

/* posternctl policy: "policy explain" evaluates the SMTP access policy for a
 * given client, sender and recipient (posternctl-policy.c). */
int verb_policy(int argc, char **argv);
/* The open-relay warnings of posternctl check: for each SMTP service, a
 * permit before relay control, over-broad mynetworks, mynetworks_style =
 * class, wildcard relay_domains; added to diags as warnings with the
 * file:line of the parameter and the services concerned. Returns 0 or
 * -ENOMEM. */
int policy_check_relay(const char *dir, Config *main_config, Diag *diags);

/* Prints diagnostics as a JSON array of {"level", "file", "line",
 * "message"} objects, one per line. */
void diag_print_json(const Diag *d, FILE *f);
