/* smtpd-check.h: what smtpd-session.c calls for access policy: the
 * restriction engine (smtpd-restrict.h) with this process's DNS resolver,
 * and the per-client limits counted in the shared anvil table (anvil.h).
 * A SmtpdCheck belongs to one session; it keeps the engine of the
 * configuration the session started with, so a reload never changes the
 * rules in the middle of a session. */
#pragma once

#include <stdbool.h>

#include "anvil.h"
#include "smtpd-restrict.h"
#include "smtpd.h"

typedef struct SmtpdCheck SmtpdCheck;
typedef void (*SmtpdCheckDone)(void *userdata);

/* Sets up the session's check state and counts the connection. Returns 1
 * when the client may go on, 0 when a connection limit refuses it
 * (*ret_reply, caller frees, is the 421 to send before closing), < 0 on
 * out of memory. client_desc is "name[addr]" for the log. */
int smtpd_check_session_new(Smtpd *d, const InetAddr *client, const char *client_desc,
                            SmtpdCheck **ret, char **ret_reply);
SmtpdCheck *smtpd_check_session_free(SmtpdCheck *c);

/* Counts one event of kind rate (message, recipient, new TLS session,
 * AUTH). Returns 1 within the limit, 0 over it with *ret_reply (caller
 * frees) and a journal warning naming the client and the limit. */
int smtpd_check_rate(SmtpdCheck *c, AnvilRate rate, char **ret_reply);

/* Evaluates stage for req. Returns 1 when done at once, 0 when waiting
 * (done(userdata) follows from the loop), < 0 on out of memory. Read the
 * result with smtpd_check_result(), then call smtpd_check_release(). */
int smtpd_check_start(SmtpdCheck *c, RestrictStage stage, const RestrictRequest *req,
                      SmtpdCheckDone done, void *userdata);
const RestrictResult *smtpd_check_result(SmtpdCheck *c);
/* The restriction, as written, that rejected in the last evaluation
 * ("reject_unauth_destination"), NULL when none did. Valid until the next
 * smtpd_check_start(). */
const char *smtpd_check_restriction(SmtpdCheck *c);
void smtpd_check_release(SmtpdCheck *c);

/* Whether the stage has restrictions to evaluate. */
bool smtpd_check_stage_empty(SmtpdCheck *c, RestrictStage stage);
/* smtpd_helo_required of the session's configuration. */
bool smtpd_check_helo_required(SmtpdCheck *c);

/* Frees the process-wide state (engine, resolver, anvil mapping). */
void smtpd_check_shutdown(void);
