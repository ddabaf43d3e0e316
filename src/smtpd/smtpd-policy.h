/* smtpd-policy.h: the client side of Postfix's SMTP access policy
 * delegation protocol (check_policy_service). A query connects to the
 * policy server ("unix:/path", "/path" or "inet:host:port"), sends the
 * request attributes ("name=value" lines and an empty line), reads the
 * reply up to its empty line and hands over the value of "action=". All of
 * it runs on the sd-event loop with non-blocking sockets and one time
 * limit for the whole exchange.
 *
 * Left out: keeping connections open between queries (each query uses its
 * own connection; smtpd_policy_service_max_idle, _max_ttl and
 * _request_limit have nothing to limit), and retries (a failed query
 * answers with smtpd_policy_service_default_action). */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct PolicyQuery PolicyQuery;

/* Called once from the loop: r > 0 with the action (borrowed for the
 * call), r < 0 when the server could not be reached, timed out or answered
 * without an action (-ETIMEDOUT, -ECONNREFUSED, -EPROTO, ...). The query is
 * freed after the callback returns. */
typedef void (*PolicyDoneFunc)(PolicyQuery *q, int r, const char *action, void *userdata);

/* Starts a query. request is the attribute block without the final empty
 * line. Returns 0, -EINVAL for a bad endpoint, other negative errnos. */
int policy_query_start(sd_event *event, const char *endpoint, uint64_t timeout_usec,
                       const char *request, PolicyDoneFunc done, void *userdata,
                       PolicyQuery **ret);
/* Cancels a query in progress (its callback is not called). Returns NULL. */
PolicyQuery *policy_query_cancel(PolicyQuery *q);
