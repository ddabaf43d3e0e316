/* smtp-sasl.h: the client side of SMTP AUTH (RFC 4954) for the SMTP and
 * LMTP clients, kept apart from sockets for the unit tests: the mechanisms
 * a server announces in its EHLO reply, the choice among them under
 * smtp_sasl_mechanism_filter and smtp_sasl_security_options, the
 * "username:password" values of smtp_sasl_password_maps and the PLAIN
 * (RFC 4616) and LOGIN responses. postern speaks these two mechanisms
 * itself, without a SASL library; both send the password as it is, so the
 * security options that forbid plaintext (Postfix's default) rule them
 * out, and in practice they are used inside TLS with
 * smtp_sasl_tls_security_options = noanonymous. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "smtp-proto.h"

/* smtp_sasl_security_options, as Cyrus SASL names them. */
enum {
        SMTP_SASL_NOPLAINTEXT = 1 << 0,
        SMTP_SASL_NOACTIVE = 1 << 1,
        SMTP_SASL_NODICTIONARY = 1 << 2,
        SMTP_SASL_NOANONYMOUS = 1 << 3,
        SMTP_SASL_MUTUAL_AUTH = 1 << 4,
};

typedef enum SmtpSaslMech {
        SMTP_SASL_MECH_NONE,
        SMTP_SASL_MECH_PLAIN,
        SMTP_SASL_MECH_LOGIN,
} SmtpSaslMech;

/* Parses a security option list ("noplaintext, noanonymous"; empty: no
 * restriction). Returns 0, or -EINVAL with *ret_bad pointing at the
 * unknown word. */
int smtp_sasl_options_parse(char * const *words, unsigned *ret, const char **ret_bad);

/* The mechanisms of the AUTH keyword(s) of an EHLO/LHLO reply ("AUTH X Y"
 * or the old "AUTH=X Y"), space-separated in the server's order. Returns 1
 * with *ret set (possibly "" for an empty list), 0 when the server does not
 * announce AUTH (*ret untouched), -ENOMEM. */
int smtp_sasl_offered(const SmtpReply *r, char **ret);

/* The offered mechanisms that smtp_sasl_mechanism_filter lets through: the
 * filter is a list of names, "!name" excludes, the first match decides and
 * a name matching nothing is dropped; an empty filter lets all through.
 * Returns a new string (maybe ""), NULL on out of memory. */
char *smtp_sasl_filter(const char *offered, char * const *filter);

/* The mechanism to use among mechs (space-separated) under the security
 * options: PLAIN before LOGIN, SMTP_SASL_MECH_NONE when none fits. */
SmtpSaslMech smtp_sasl_choose(const char *mechs, unsigned options);
const char *smtp_sasl_mech_name(SmtpSaslMech m);

/* Splits a password table value "username:password" at its first colon (a
 * value without one is a user name with an empty password, as Postfix
 * reads it). Returns 0 or -ENOMEM. */
int smtp_sasl_credentials(const char *value, char **ret_user, char **ret_pass);

/* RFC 4648 base64 of n bytes ("" for none). NULL on out of memory. */
char *smtp_sasl_base64(const void *p, size_t n);

/* The PLAIN initial response (RFC 4616: no authorization identity, NUL,
 * user, NUL, password), base64-encoded. NULL on out of memory. */
char *smtp_sasl_plain_response(const char *user, const char *pass);

/* Frees a string that held a secret, wiping it first. Returns NULL. */
char *smtp_sasl_free_secret(char *s);
