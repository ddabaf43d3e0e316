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

/* The client's host name, looked up before the greeting as Postfix's
 * smtpd does (smtpd_peer.c): the address's name from the hosts file or a
 * DNS PTR query (reverse_name), then that name's addresses of the same
 * family from the hosts file or DNS; only when they include the client
 * address is the name verified (name), else "unknown" with a warning
 * "hostname NAME does not resolve to address ADDR". Temporary failures
 * and the time limit (SMTPD_PEER_LOOKUP_TIMEOUT_USEC for both lookups)
 * give "unknown" with RESTRICT_NAME_TEMP. smtpd_peer_lookup = no gives
 * "unknown" without any lookup. Nothing blocks the loop (the hosts file
 * is a small local read). */
#define SMTPD_PEER_LOOKUP_TIMEOUT_USEC (10 * 1000000ULL)

typedef struct SmtpdPeerLookup SmtpdPeerLookup;
/* Called from the loop, never from inside smtpd_peer_lookup_start(); names
 * are borrowed for the call. The lookup is freed after done() returns:
 * forget the handle in it and do not free it there. */
typedef void (*SmtpdPeerLookupDone)(void *userdata, const RestrictClientNames *names);

/* Starts the lookup for client. Returns 0 when done() follows, 1 when the
 * answer is known at once (smtpd_peername_lookup = no, no client address:
 * *ret_now gets "unknown" names, static), < 0 on out of memory. */
int smtpd_peer_lookup_start(Smtpd *d, const InetAddr *client, SmtpdPeerLookupDone done,
                            void *userdata, SmtpdPeerLookup **ret, RestrictClientNames *ret_now);
/* Cancels a lookup in progress (done() is not called) and frees. */
SmtpdPeerLookup *smtpd_peer_lookup_free(SmtpdPeerLookup *l);

/* Sets up the session's check state and counts the connection. Returns 1
 * when the client may go on, 0 when a connection limit refuses it
 * (*ret_reply, caller frees, is the 421 to send before closing), < 0 on
 * out of memory. client_desc is "name[addr]" for the log; names (NULL:
 * "unknown") are the client's host names from smtpd_peer_lookup_start(),
 * which the restrictions use without looking them up again. */
int smtpd_check_session_new(Smtpd *d, const InetAddr *client, const char *client_desc,
                            const RestrictClientNames *names, SmtpdCheck **ret,
                            char **ret_reply);
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
/* Whether EHLO hides AUTH from this client
 * (smtpd_sasl_exceptions_networks). A failing table is logged and
 * counts as no. */
bool smtpd_check_sasl_exception(SmtpdCheck *c);
/* smtpd_helo_required of the session's configuration. */
bool smtpd_check_helo_required(SmtpdCheck *c);

/* Frees the process-wide state (engine, resolver, anvil mapping). */
void smtpd_check_shutdown(void);
