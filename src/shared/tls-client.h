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
 * unverified peer and log what it was.
 *
 * DANE (RFC 6698, RFC 7672): a TlsDane holds the usable TLSA records of one
 * server (DANE-TA(2) and DANE-EE(3); PKIX-TA(0) and PKIX-EE(1) are not
 * used with SMTP and are left out when added) and its TLSA base domain;
 * tls_client_dane_enable() hands them to OpenSSL's DANE verifier for one
 * connection, and tls_client_check_peer() then reports a match as
 * verified. Finding the records (DNSSEC-validated TLSA lookups) is the
 * caller's part. */
#pragma once

#include <stdbool.h>

#include <openssl/ssl.h>

#include "cleanup.h"
#include "tls.h"

typedef enum TlsLevel {
        TLS_LEVEL_NONE,
        TLS_LEVEL_MAY,
        TLS_LEVEL_ENCRYPT,
        TLS_LEVEL_DANE,                 /* opportunistic DANE (RFC 7672) */
        TLS_LEVEL_DANE_ONLY,            /* mandatory DANE */
        TLS_LEVEL_VERIFY,
        TLS_LEVEL_SECURE,
        _TLS_LEVEL_MAX,
} TlsLevel;

/* Parses a level name (case-insensitive): none, may, encrypt, dane,
 * dane-only, verify, secure. "fingerprint" gives -EOPNOTSUPP, anything else
 * -EINVAL. */
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

typedef struct TlsDaneRecord {
        uint8_t usage, selector, mtype;
        uint8_t *data;
        size_t len;
} TlsDaneRecord;

typedef struct TlsDane {
        unsigned n_ref;
        char *base;                     /* the TLSA base domain: SNI and the name to match */
        TlsDaneRecord *records;
        size_t n_records;
} TlsDane;

/* An empty record set for base. Returns 0 or -ENOMEM. */
int tls_dane_new(const char *base, TlsDane **ret);
TlsDane *tls_dane_ref(TlsDane *d);
TlsDane *tls_dane_unref(TlsDane *d);
DEFINE_CLEANUP_FUNC(TlsDane, tls_dane_unref);
/* Adds a TLSA record when it is usable for SMTP: usage DANE-TA(2) or
 * DANE-EE(3), selector 0 or 1, matching type 0 (full), 1 (SHA2-256, 32
 * bytes) or 2 (SHA2-512, 64 bytes). Returns 1 when added, 0 when unusable,
 * -ENOMEM. */
int tls_dane_add(TlsDane *d, uint8_t usage, uint8_t selector, uint8_t mtype, const uint8_t *data,
                 size_t len);

/* Makes ssl (from tls_client_ssl_new(), before the handshake) verify the
 * server with d: SNI and the first reference name become d->base, and the
 * names of more_names (NULL for none) are accepted too; they apply to
 * DANE-TA(2) matches, where the server certificate must name one of them
 * (RFC 7672 3.2.2: the TLSA base domain, the MX host name and, when the MX
 * lookup was DNSSEC-validated, the next-hop domain), while DANE-EE(3)
 * matches ignore names (RFC 7672 3.1.1). Returns 0, or -EIO when OpenSSL
 * refused (no record was accepted). */
int tls_client_dane_enable(SSL *ssl, const TlsDane *d, char * const *more_names);

/* Overrides, for one connection, what a per-destination TLS policy says
 * (each only when given): the protocol versions (TLS_PROTO_* set, 0: keep
 * the context's), the cipher list for TLS <= 1.2 (NULL: keep) and ciphers
 * to exclude from it ("A:B", NULL: none). Returns 0, or -EINVAL with a
 * description in *ret_error (caller frees). */
int tls_client_ssl_override(SSL *ssl, unsigned protocols, const char *ciphers,
                            const char *exclude, char **ret_error);

/* "Anonymous", "Untrusted", "Trusted", "Verified": the word Postfix puts
 * before "TLS connection established". */
const char *tls_trust_to_string(TlsTrust t);
