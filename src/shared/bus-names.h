/* bus-names.h: names of postern's peer-to-peer sd-bus interfaces and the
 * AF_UNIX sockets they listen on. Each role owns a .socket unit (Accept=no)
 * for its socket under the runtime directory, so the first call starts the
 * service. Tests and private instances move the whole set with
 * $POSTERN_RUNTIME_DIR.
 *
 * org.postern.Queue1 (qmgr, object /org/postern/Queue1):
 *   Enqueue(s queue_id)             new mail in incoming/
 *   Flush()                         retry all deferred mail now
 *   FlushSite(s domain)             retry deferred mail for one destination
 *   FlushId(s queue_id)             retry one message
 *   Status() -> (a{sv})             queue sizes, deliveries in flight
 *   List(s format) -> (h listing)   the mailq listing, "text" or "json", on a pipe
 *
 * org.postern.Delivery1 (deliver-remote, deliver-local; /org/postern/Delivery1):
 *   Deliver(h queue_file, s queue_id, s transport, s nexthop,
 *           a(uss) recipients: (index in the queue file, address, original address))
 *     -> (a(usss) results: (index, status "sent"|"relayed"|"deferred"|"bounced",
 *                           dsn "X.Y.Z", diagnostic text), s relay[, t setup_usec])
 *   setup_usec, sent by deliver-remote, is the time from the call to a
 *   session ready for MAIL FROM (DNS, connect, greeting, EHLO, TLS); qmgr
 *   logs it as the c of delays=a/b/c/d and takes it as 0 when absent.
 *   "relayed" is "sent" to an SMTP server that did not announce DSN, so
 *   that a NOTIFY=SUCCESS request ends here (RFC 3461 5.2.2).
 *   The queue file arrives as an open read-only fd, so that delivery agents
 *   need no access to the queue directory.
 *
 * org.postern.Bounce1 (bounce; /org/postern/Bounce1):
 *   Notify(h queue_file, s queue_id,
 *          s kind "failure"|"delay"|"success"|"relayed"|"expanded",
 *          a(usssss) recipients: (index in the queue file, address, original address,
 *                                 dsn "X.Y.Z", diagnostic text,
 *                                 relay "host[addr]:port" for Remote-MTA, "" none),
 *          t last_attempt_usec)
 *     -> (s report_queue_id: "" when no report was due, e.g. NOTIFY=NEVER)
 *   The bounce service writes the report (RFC 3464) into incoming/, fsyncs
 *   it, announces it with Queue1.Enqueue and only then replies; the caller
 *   marks the recipients done after the reply (also when no report was
 *   due). A failed report (null sender) goes to 2bounce_notice_recipient
 *   when notify_classes has 2bounce, and is discarded with a log line
 *   otherwise, as in Postfix. */
#pragma once

#include <stdlib.h>

#define POSTERN_RUNTIME_DIR_DEFAULT "/run/postern"

#define QUEUE_BUS_SOCKET "qmgr"
#define QUEUE_BUS_OBJECT "/org/postern/Queue1"
#define QUEUE_BUS_INTERFACE "org.postern.Queue1"

#define DELIVERY_BUS_SOCKET_REMOTE "deliver-remote"
#define DELIVERY_BUS_SOCKET_LOCAL "deliver-local"
#define DELIVERY_BUS_OBJECT "/org/postern/Delivery1"
#define DELIVERY_BUS_INTERFACE "org.postern.Delivery1"

#define BOUNCE_BUS_SOCKET "bounce"
#define BOUNCE_BUS_OBJECT "/org/postern/Bounce1"
#define BOUNCE_BUS_INTERFACE "org.postern.Bounce1"

/* Returns the runtime directory: $POSTERN_RUNTIME_DIR or /run/postern.
 * Borrowed, static. */
static inline const char *postern_runtime_dir(void) {
        const char *e = secure_getenv("POSTERN_RUNTIME_DIR");
        return e && *e ? e : POSTERN_RUNTIME_DIR_DEFAULT;
}
