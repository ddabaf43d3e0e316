/* anvil.h: per-client connection and rate counters shared by every
 * postern-smtpd process (the smtpd, submission and smtps services and their
 * worker processes), the job Postfix's anvil(8) server does.
 *
 * The table is a file, $POSTERN_RUNTIME_DIR/anvil, that every process maps
 * with MAP_SHARED: a header and a fixed number of slots, an open-addressed
 * hash of client addresses (linear probing, a bounded number of probes).
 * A slot holds the client's simultaneous connections, per process id (so
 * that the connections of a process that died, found with kill(pid, 0),
 * stop counting; processes beyond the few a slot holds inline go to a
 * shared pool of owner records), and one fixed time window per rate (connections,
 * messages, recipients, new TLS sessions, AUTH commands): the window starts
 * with the first event and resets when the time unit has passed, as
 * anvil_rate_time_unit describes. Every update holds an exclusive flock()
 * on the file for a few memory operations; the kernel drops the lock of a
 * process that crashes, so a crash never wedges the table. A slot is
 * reused once it has no live connections and its windows are over; when
 * every probe position is busy, the event is not counted (limits fail open
 * rather than refusing mail).
 *
 * Entry points: anvil_open(), anvil_connect(), anvil_disconnect(),
 * anvil_rate(). Nothing here logs. */
#pragma once

#include <stdint.h>

#include "cleanup.h"
#include "inet.h"

typedef enum AnvilRate {
        ANVIL_RATE_CONNECT,
        ANVIL_RATE_MESSAGE,
        ANVIL_RATE_RECIPIENT,
        ANVIL_RATE_NEW_TLS,
        ANVIL_RATE_AUTH,
        _ANVIL_RATE_MAX,
} AnvilRate;

typedef struct Anvil Anvil;

/* Maps the table at path, creating (mode 0600) or re-initializing it when
 * missing, short or of another layout. Returns 0 or a negative errno. */
int anvil_open(const char *path, Anvil **ret);
Anvil *anvil_close(Anvil *a);
DEFINE_CLEANUP_FUNC(Anvil, anvil_close);

/* Counts a new connection of this process from client: the simultaneous
 * connections (*ret_count, all processes) and the connection rate in the
 * current window of window_ms milliseconds (*ret_rate). Returns 0, -ENOSPC
 * when the table has no room (nothing counted), -EUSERS when the client's
 * slot and the owner pool have no room for this process's connection
 * (nothing counted: the caller refuses the connection under a count limit
 * rather than let it pass uncounted), other negative errnos. */
int anvil_connect(Anvil *a, const InetAddr *client, uint64_t window_ms, unsigned *ret_count,
                  unsigned *ret_rate);
/* Ends a connection counted by anvil_connect() in this process. */
int anvil_disconnect(Anvil *a, const InetAddr *client);
/* Adds n events of kind rate for client and returns the count in the
 * current window in *ret_rate. Returns 0, -ENOSPC, or a negative errno. */
int anvil_rate(Anvil *a, const InetAddr *client, AnvilRate rate, unsigned n, uint64_t window_ms,
               unsigned *ret_rate);
