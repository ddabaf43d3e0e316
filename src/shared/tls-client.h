/* tls-client.h: the client side of TLS for the SMTP and LMTP clients, on top
 * of tls.h (protocol lists, cipher grades, error text). Builds client
 * SSL_CTXs from the smtp_tls_* / lmtp_tls_* settings, names the Postfix
 * security levels, and judges a finished handshake: was the chain trusted
 * (smtp_tls_CAfile / smtp_tls_CApath) and does the certificate match one of
 * the names the level asks for (verify: the MX host name; secure: the next
 * hop domain and its subdomains, or smtp_tls_secure_cert_match).
 *
 * Verification never fails the handshake itself (SSL_VERIFY_NONE with the
 * result read afterwards), so that "may" and "encrypt" can use an
 * unverified peer and log what it was. DANE is left out: it needs a
 * validating resolver, which dns.h does not offer. */
#pragma once

#include <stdbool.h>

#include <openssl/ssl.h>

#include "tls.h"

typedef enum TlsLevel {
        TLS_LEVEL_NONE,
        TLS_LEVEL_MAY,
        TLS_LEVEL_ENCRYPT,
        TLS_LEVEL_VERIFY,
        TLS_LEVEL_SECURE,
        _TLS_LEVEL_MAX,
} TlsLevel;

/* Parses a level name (case-insensitive): none, may, encrypt, verify,
 * secure. "dane" and "dane-only" give -EOPNOTSUPP, anything else -EINVAL. */
int tls_level_parse(const char *s, TlsLevel *ret);
const char *tls_level_to_string(TlsLevel l);

typedef struct TlsClientConfig {
        const char *ca_file;            /* NULL or "" for none */
        const char *ca_path;
        const char *cert_file;          /* client certificate, NULL for none */
        const char *key_file;
        unsigned protocols;             /* TLS_PROTO_* */
        const char *ciphers;            /* OpenSSL cipher list for TLS <= 1.2 */
        const char *exclude_ciphers;    /* appended as !X, or NULL */
} TlsClientConfig;

/* Builds a client context. Returns 0, or -ENOENT / -EINVAL / -EIO with a
 * description in *ret_error (caller frees). *ret owned by the caller
 * (SSL_CTX_free()). */
int tls_client_context_new(const TlsClientConfig *cfg, SSL_CTX **ret, char **ret_error);

/* A new client SSL on fd (non-blocking, connect state) with SNI sni (NULL
 * or "" for none). Returns 0 or -ENOMEM / -EIO. */
int tls_client_ssl_new(SSL_CTX *ctx, int fd, const char *sni, SSL **ret);

typedef enum TlsTrust {
        TLS_TRUST_ANONYMOUS,            /* no certificate */
        TLS_TRUST_UNTRUSTED,            /* the chain did not verify */
        TLS_TRUST_TRUSTED,              /* the chain verified, the name did not match */
        TLS_TRUST_VERIFIED,             /* chain and name */
} TlsTrust;

/* Judges the peer of a finished handshake against the names (any matches;
 * a name starting with "." matches any subdomain). *ret_reason (optional,
 * caller frees) explains a trust below TLS_TRUST_VERIFIED, e.g. "untrusted
 * issuer /CN=Test CA" or "subject name mismatch". Returns 0 or -ENOMEM. */
int tls_client_check_peer(SSL *ssl, char * const *names, TlsTrust *ret, char **ret_reason);

/* "Anonymous", "Untrusted", "Trusted", "Verified": the word Postfix puts
 * before "TLS connection established". */
const char *tls_trust_to_string(TlsTrust t);
