/* tls.h: OpenSSL helpers shared by the TLS server (smtpd) and, later, the
 * TLS clients. Pure parsing that needs no context:
 *
 *   - tls_protocols_parse(): Postfix protocol lists in both syntaxes
 *     (">=TLSv1.2", "<=TLSv1.3", "!SSLv2, !SSLv3, !TLSv1", "TLSv1.2 TLSv1.3")
 *     into a set of TLS_PROTO_* bits, and tls_protocols_apply() to put such
 *     a set on an SSL_CTX;
 *   - tls_cipher_grade_parse() and tls_cipher_grade_default_list(): the
 *     Postfix cipher grades (export, low, medium, high, null);
 *   - tls_credential_path(): where a systemd credential replaces a key file.
 *
 * And a reference-counted server context (TlsContext, an SSL_CTX with the
 * certificate, key, protocols and ciphers loaded, session tickets on and the
 * server-side cache off) so that a reload builds a new one while sessions in
 * progress keep theirs. Nothing here logs: errors come back as text for the
 * caller to log with its context. Certificate verification of peers and
 * DANE belong to the client side and are left out. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "cleanup.h"

/* Protocol bits. */
enum {
        TLS_PROTO_SSLv2 = 1 << 0,
        TLS_PROTO_SSLv3 = 1 << 1,
        TLS_PROTO_TLSv1 = 1 << 2,
        TLS_PROTO_TLSv1_1 = 1 << 3,
        TLS_PROTO_TLSv1_2 = 1 << 4,
        TLS_PROTO_TLSv1_3 = 1 << 5,
        TLS_PROTO_ALL = (1 << 6) - 1,
};

/* Parses a Postfix protocol list given as its items (a conf list value).
 * Items are protocol names (SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3,
 * case-insensitive) alone (include), with "!" (exclude), or with ">=" / "<="
 * (bounds, Postfix 3.6 syntax). Without any plain name everything not
 * excluded is in; SSLv2 and SSLv3 are never enabled by OpenSSL 3 and are
 * simply dropped. Returns 0 and the TLS_PROTO_* set in *ret, or -EINVAL
 * (*ret_bad, optional, points at the offending item: borrowed from items)
 * for an unknown name or an empty result. */
int tls_protocols_parse(char * const *items, unsigned *ret, const char **ret_bad);

/* Sets the minimum and maximum version of ctx to the outermost enabled
 * protocols of the set, and SSL_OP_NO_* for disabled ones in between.
 * Returns 0 or -EINVAL when no TLS version is left. */
int tls_protocols_apply(SSL_CTX *ctx, unsigned protocols);

/* Formats a protocol set for messages, e.g. "TLSv1.2 TLSv1.3". Caller
 * frees; NULL on out of memory. */
char *tls_protocols_to_string(unsigned protocols);

typedef enum TlsCipherGrade {
        TLS_CIPHER_EXPORT,
        TLS_CIPHER_LOW,
        TLS_CIPHER_MEDIUM,
        TLS_CIPHER_HIGH,
        TLS_CIPHER_NULL,
        _TLS_CIPHER_MAX,
} TlsCipherGrade;

/* Parses a grade name (case-insensitive). Returns 0 or -EINVAL. */
int tls_cipher_grade_parse(const char *name, TlsCipherGrade *ret);
/* The OpenSSL cipher list of a grade as Postfix's tls_*_cipherlist
 * defaults give it (static). */
const char *tls_cipher_grade_default_list(TlsCipherGrade g);

/* Where a systemd credential replaces the file of a parameter: with
 * $CREDENTIALS_DIRECTORY set, the first of DIR/PARAM_NAME and
 * DIR/BASENAME(path) that exists. Returns 1 with the path in *ret (caller
 * frees), 0 when there is no credential (no directory, or neither file
 * exists), -ENOMEM. */
int tls_credential_path(const char *param_name, const char *path, char **ret);

/* Collects and clears OpenSSL's error queue as one line of text ("error
 * text; error text"), or fallback when it is empty. Caller frees; NULL on out
 * of memory. */
char *tls_error_string(const char *fallback);

typedef struct TlsServerConfig {
        char * const *chain_files;      /* key + chain per file; when set, cert/key unused */
        const char *cert_file;          /* certificate, then its chain */
        const char *key_file;           /* private key (PEM); NULL: from cert_file */
        const char *key_credential;     /* a file replacing key_file, or NULL */
        unsigned protocols;             /* TLS_PROTO_* */
        const char *ciphers;            /* OpenSSL cipher list for TLS <= 1.2 */
        const char *exclude_ciphers;    /* appended as !X:!Y, or NULL */
        bool prefer_server_ciphers;
        uint64_t ticket_lifetime_sec;   /* 0: tickets off */
        const char *session_id_context; /* e.g. the service name */
} TlsServerConfig;

typedef struct TlsContext TlsContext;

/* Builds a server context. previous (optional) passes its session ticket
 * keys on so that tickets issued before a reload stay valid. Returns 0, or
 * -ENOENT / -EACCES / -EINVAL / -EIO with a description in *ret_error
 * (caller frees) naming the file and OpenSSL's reason. */
int tls_server_context_new(const TlsServerConfig *cfg, const TlsContext *previous,
                           TlsContext **ret, char **ret_error);
TlsContext *tls_context_ref(TlsContext *c);
TlsContext *tls_context_unref(TlsContext *c);
DEFINE_CLEANUP_FUNC(TlsContext, tls_context_unref);
/* The SSL_CTX (borrowed; SSL_new() takes its own reference, so an SSL
 * outlives the TlsContext it came from). */
SSL_CTX *tls_context_ssl_ctx(const TlsContext *c);

/* One line describing a finished handshake: "TLSv1.3 with cipher
 * TLS_AES_256_GCM_SHA384 (256/256 bits)". Caller frees. */
char *tls_session_describe(SSL *ssl);
