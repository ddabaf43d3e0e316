/* smtpd-sasl.h: SMTP AUTH of postern-smtpd against the Dovecot
 * authentication service (the Dovecot auth protocol 1.x, client side). One
 * SmtpdSasl per process holds one multiplexed, non-blocking connection on
 * the sd-event loop: it connects at start and whenever a request finds it
 * down, learns the mechanisms from the server's handshake, and tags each
 * authentication with its own id. Sessions start, continue and cancel
 * requests; results come back through a callback, never from within the
 * call that started or continued the request. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

/* Mechanism properties as Dovecot's MECH lines report them; the same bits
 * name what smtpd_sasl_security_options forbid. */
enum {
        SMTPD_SASL_ANONYMOUS = 1 << 0,
        SMTPD_SASL_PLAINTEXT = 1 << 1,
        SMTPD_SASL_DICTIONARY = 1 << 2,
        SMTPD_SASL_ACTIVE = 1 << 3,
        SMTPD_SASL_MUTUAL_AUTH = 1 << 4,        /* as an option: required */
        SMTPD_SASL_PRIVATE = 1 << 5,            /* never announced */
};

/* Parses smtpd_sasl_security_options (noanonymous, noplaintext, noactive,
 * nodictionary, mutual_auth; unknown words are ignored and named in
 * *ret_unknown, borrowed) into SMTPD_SASL_* bits. */
unsigned smtpd_sasl_security_parse(char * const *options, const char **ret_unknown);

typedef struct SmtpdSasl SmtpdSasl;
typedef struct SmtpdSaslRequest SmtpdSaslRequest;

typedef enum SmtpdSaslResult {
        SMTPD_SASL_OK,          /* data: the user name */
        SMTPD_SASL_CONTINUE,    /* data: the challenge, base64 (may be empty) */
        SMTPD_SASL_FAIL,        /* data: the server's reason, or NULL */
        SMTPD_SASL_TEMPFAIL,    /* data: what went wrong, for the log */
} SmtpdSaslResult;

/* OK, FAIL and TEMPFAIL end the request: it is freed right after the
 * callback returns, and must not be used from the callback on. data is
 * borrowed for the call. */
typedef void (*SmtpdSaslCallback)(void *userdata, SmtpdSaslResult result, const char *data);

/* Creates the client for the auth socket at path (service: the service
 * name passed to Dovecot, smtpd_sasl_service) and starts connecting.
 * Returns 0 or -ENOMEM; an unreachable server is not an error here. */
int smtpd_sasl_new(sd_event *event, const char *path, const char *service, SmtpdSasl **ret);
SmtpdSasl *smtpd_sasl_free(SmtpdSasl *sasl);

/* Connects again when the connection is down (non-blocking; nothing
 * happens when it is up or on its way). */
void smtpd_sasl_kick(SmtpdSasl *sasl);

/* The mechanisms to announce: those the server reported (or "PLAIN LOGIN"
 * before it ever answered) without the properties in forbid, space
 * separated. Caller frees; "" when none is left; NULL on out of memory. */
char *smtpd_sasl_mechanisms(SmtpdSasl *sasl, unsigned forbid);

/* Whether mech may be used under forbid: 1 yes, 0 the server does not
 * have it (504), -EPERM forbidden by the security options (538). Before
 * the server ever answered every mechanism is tried. */
int smtpd_sasl_mechanism_check(SmtpdSasl *sasl, const char *mech, unsigned forbid);

typedef struct SmtpdSaslClient {
        const char *remote_ip;
        const char *local_ip;
        unsigned remote_port;
        unsigned local_port;
        bool secured;           /* TLS is active */
} SmtpdSaslClient;

/* Starts an authentication with mech and an optional initial response
 * (base64 as the client sent it, "" for an empty one, NULL for none).
 * Returns 0 and the request in *ret, -ENOTCONN (with errno's text in the
 * log of the caller) when the server cannot be reached, -EINVAL for a
 * response that is not base64, -ENOMEM. */
int smtpd_sasl_start(SmtpdSasl *sasl, const char *mech, const char *initial,
                     const SmtpdSaslClient *client, SmtpdSaslCallback cb, void *userdata,
                     SmtpdSaslRequest **ret);

/* Sends the client's base64 response to a CONTINUE. Returns 0, -EINVAL
 * for a response that is not base64, -ENOTCONN. */
int smtpd_sasl_continue(SmtpdSaslRequest *req, const char *response);

/* Forgets a request (the client aborted or went away); its callback is not
 * called again. Returns NULL. */
SmtpdSaslRequest *smtpd_sasl_cancel(SmtpdSaslRequest *req);
