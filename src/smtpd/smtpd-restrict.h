/* smtpd-restrict.h: the SMTP access policy engine, Postfix's smtpd_check.
 * A library of its own so that postern-smtpd and "posternctl policy
 * explain" evaluate exactly the same code.
 *
 * RestrictEngine is built once per loaded Config: it parses the restriction
 * lists (smtpd_client_, _helo_, _sender_, _relay_, _recipient_, _data_ and
 * _end_of_data_restrictions, and the classes of smtpd_restriction_classes),
 * opens the access tables, mynetworks and the address classifier.
 * Configuration problems go into a Diag; an engine with errors still exists
 * and answers every check with "451 4.3.5 Server configuration error", as
 * Postfix does, so that no mail is accepted under a broken policy.
 *
 * RestrictSession holds what a check learns about one SMTP session and may
 * reuse: the client's reverse and verified host names and the DNS answers
 * of earlier checks. RestrictEval evaluates one stage (connect, HELO, MAIL,
 * RCPT, DATA, end of data) for a RestrictRequest and is resumable: a step
 * that needs DNS (client names, unknown domains, DNS block and allow lists)
 * or a policy server starts the lookup on the sd-event loop and suspends;
 * the answer resumes the evaluation at the same list position. Other
 * sessions keep running meanwhile.
 *
 * Semantics follow Postfix: the lists of a stage are evaluated in order;
 * the first permit or reject ends a list; a permit ends only its own list,
 * a reject ends the stage. With smtpd_delay_reject = yes the client, HELO
 * and sender lists run at RCPT time before the relay and recipient lists;
 * with "no" the client list runs at connect (RESTRICT_STAGE_CONNECT), the
 * HELO list at HELO/EHLO and the sender list at MAIL.
 * Lookup failures of access tables end the stage with "451 4.3.0
 * <name>: Temporary lookup failure"; they are never read as "not found".
 * DNS block lists that do not answer count as "not listed" (as in Postfix;
 * a warning is logged). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "cleanup.h"
#include "conf.h"
#include "diag.h"
#include "dns.h"
#include "inet.h"

typedef enum RestrictStage {
        RESTRICT_STAGE_CONNECT,
        RESTRICT_STAGE_HELO,
        RESTRICT_STAGE_MAIL,
        RESTRICT_STAGE_RCPT,
        RESTRICT_STAGE_DATA,
        RESTRICT_STAGE_EOD,
        _RESTRICT_STAGE_MAX,
} RestrictStage;

typedef enum RestrictListId {
        RESTRICT_LIST_CLIENT,
        RESTRICT_LIST_HELO,
        RESTRICT_LIST_SENDER,
        RESTRICT_LIST_RELAY,
        RESTRICT_LIST_RECIPIENT,
        RESTRICT_LIST_DATA,
        RESTRICT_LIST_EOD,
        _RESTRICT_LIST_MAX,
} RestrictListId;

/* "smtpd_client_restrictions", ... (static). */
const char *restrict_list_param(RestrictListId id);

typedef struct RestrictEngine RestrictEngine;

/* Builds the engine for config (referenced). Errors in the restriction
 * lists go into diags and leave the engine "broken" (see above); the
 * return value is 0 then too. Returns < 0 only for out of memory. */
int restrict_engine_new(Config *config, Diag *diags, RestrictEngine **ret);
RestrictEngine *restrict_engine_ref(RestrictEngine *e);
RestrictEngine *restrict_engine_unref(RestrictEngine *e);
DEFINE_CLEANUP_FUNC(RestrictEngine, restrict_engine_unref);

/* The Config the engine was built from (borrowed). */
Config *restrict_engine_config(RestrictEngine *e);
/* Whether the client address is in mynetworks: > 0 yes, 0 no, < 0 a
 * mynetworks table failed. Host name entries need DNS and are not matched
 * here; permit_mynetworks in a restriction list matches them. */
int restrict_engine_mynetworks(RestrictEngine *e, const InetAddr *client);
/* Whether the client is exempt from the per-client limits
 * (smtpd_client_event_limit_exceptions): > 0, 0, < 0 as above. */
int restrict_engine_limit_exempt(RestrictEngine *e, const InetAddr *client);
/* Whether the client is one to which AUTH is not offered
 * (smtpd_sasl_exceptions_networks; name is its verified host name or
 * NULL): > 0, 0, < 0 as above. */
int restrict_engine_sasl_exception(RestrictEngine *e, const InetAddr *client, const char *name);
/* Whether the configuration is usable (no errors in the lists). */
bool restrict_engine_ok(RestrictEngine *e);
/* Whether a stage has anything to evaluate. */
bool restrict_engine_stage_empty(RestrictEngine *e, RestrictStage stage);

typedef struct RestrictSession RestrictSession;

/* Per-session cache. client_name, when not NULL, is taken as the verified
 * and reverse host name without asking DNS (posternctl policy explain
 * --client-name). */
int restrict_session_new(const char *client_name, RestrictSession **ret);

/* How a client host name lookup ended (Postfix's name_status and
 * reverse_name_status): the name is known, the lookup failed temporarily,
 * it failed for good (no PTR record, or lookups turned off), or the PTR
 * name does not resolve back to the client address (verified name only). */
typedef enum RestrictNameStatus {
        RESTRICT_NAME_OK,
        RESTRICT_NAME_TEMP,
        RESTRICT_NAME_PERM,
        RESTRICT_NAME_FORGED,
} RestrictNameStatus;

/* The client's host names as the SMTP server found them at connect: name
 * is the verified name (PTR confirmed by a forward lookup) or "unknown",
 * reverse_name the PTR name even when not confirmed, or "unknown". */
typedef struct RestrictClientNames {
        const char *name;
        RestrictNameStatus name_status;
        const char *reverse_name;
        RestrictNameStatus reverse_status;
} RestrictClientNames;

/* Makes the session use names (copied) for every check that needs the
 * client's host name (check_client_access, permit_mynetworks host name
 * entries, reject_unknown_client_hostname, ...) instead of looking them up
 * again. Returns 0 or -ENOMEM. */
int restrict_session_set_names(RestrictSession *s, const RestrictClientNames *names);
RestrictSession *restrict_session_free(RestrictSession *s);
DEFINE_CLEANUP_FUNC(RestrictSession, restrict_session_free);

/* What the client said so far. Strings are copied by restrict_eval_start(). */
typedef struct RestrictRequest {
        const char *service;            /* "smtpd", "submission", ... */
        const InetAddr *client_addr;    /* NULL when unknown */
        const char *helo;               /* NULL before HELO/EHLO */
        const char *sender;             /* NULL before MAIL; "" for the null sender */
        const char *recipient;          /* RCPT stage */
        const char *sasl_username;      /* NULL when not authenticated */
        const char *sasl_method;
        const char *queue_id;
        const char *protocol;           /* "ESMTP" */
        bool tls;
        bool smtputf8;
        bool ill_pipelining;            /* commands arrived ahead of time without PIPELINING */
        unsigned rcpt_count;
        uint64_t size;
} RestrictRequest;

/* One step, for "posternctl policy explain": list is the parameter name
 * (or "smtpd_reject_unlisted_recipient"), step the restriction as written,
 * outcome "no match (why)", "permit", "reject: REPLY", "skipped (why)". */
typedef void (*RestrictTraceFunc)(void *userdata, const char *list, const char *step,
                                  const char *outcome);

/* A side effect to log: action is "warn", "reject_warning", "hold",
 * "discard", "filter", "redirect", "prepend"; text the reason. */
typedef struct RestrictNote {
        char *action;
        char *text;
} RestrictNote;

typedef struct RestrictResult {
        bool reject;            /* reply is the rejection (4xx or 5xx) */
        char *reply;
        bool hold;
        bool discard;
        char **prepend;         /* header lines to add */
        RestrictNote *notes;
        size_t n_notes;
} RestrictResult;

typedef struct RestrictEval RestrictEval;
typedef void (*RestrictDoneFunc)(RestrictEval *e, void *userdata);

/* Starts the evaluation of stage. event and dns may be NULL: DNS steps then
 * answer "skipped (needs DNS)". Returns 1 when the evaluation completed at
 * once (read the result, then free), 0 when it waits for DNS or a policy
 * server (done is called from the loop later; free it there or after),
 * < 0 on out of memory. */
int restrict_eval_start(RestrictEngine *en, RestrictSession *sess, sd_event *event,
                        DnsResolver *dns, RestrictStage stage, const RestrictRequest *req,
                        RestrictTraceFunc trace, RestrictDoneFunc done, void *userdata,
                        RestrictEval **ret);
/* The result of a completed evaluation (borrowed). */
const RestrictResult *restrict_eval_result(RestrictEval *e);
/* Frees; a pending evaluation is cancelled (done is not called). */
RestrictEval *restrict_eval_free(RestrictEval *e);
DEFINE_CLEANUP_FUNC(RestrictEval, restrict_eval_free);

/* The relay-safety problems of the configuration for posternctl check:
 * each is a text naming the parameter ("smtpd_relay_restrictions ...").
 * Returns the number of problems added to *ret (a strv, caller frees) or
 * a negative errno. */
int restrict_engine_relay_problems(RestrictEngine *e, char ***ret);
