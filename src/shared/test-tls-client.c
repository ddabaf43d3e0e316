/* test-tls-client.c: unit tests of tls-client.c: the security level names,
 * which TLSA records tls_dane_add() keeps (only DANE-TA and DANE-EE with a
 * known selector and a digest of the right length), and whole handshakes
 * over a socket pair between an OpenSSL server with a certificate made
 * here and a client from tls_client_context_new() with DANE records that
 * match it or not, judged by tls_client_check_peer(); and the per-connection
 * overrides of a TLS policy (tls_client_ssl_override()). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "strutil.h"
#include "tests.h"
#include "tls-client.h"

static void test_levels(void) {
        TlsLevel l;

        CHECK_INT(tls_level_parse("dane", &l), 0);
        CHECK_INT(l, TLS_LEVEL_DANE);
        CHECK_INT(tls_level_parse("DANE-Only", &l), 0);
        CHECK_INT(l, TLS_LEVEL_DANE_ONLY);
        CHECK_INT(tls_level_parse("may", &l), 0);
        CHECK_INT(l, TLS_LEVEL_MAY);
        CHECK_INT(tls_level_parse("fingerprint", &l), -EOPNOTSUPP);
        CHECK_INT(tls_level_parse("danger", &l), -EINVAL);
        for (TlsLevel k = 0; k < _TLS_LEVEL_MAX; k++) {
                CHECK_INT(tls_level_parse(tls_level_to_string(k), &l), 0);
                CHECK_INT(l, k);
        }
        /* Mandatory TLS and the name checks go by order. */
        CHECK(TLS_LEVEL_DANE > TLS_LEVEL_ENCRYPT && TLS_LEVEL_DANE_ONLY < TLS_LEVEL_VERIFY);
}

static void test_dane_records(void) {
        uint8_t d32[32] = {1}, d64[64] = {2}, full[100] = {3};
        TlsDane *d = NULL;

        CHECK_INT(tls_dane_new("mx.example", &d), 0);
        CHECK_STR(d->base, "mx.example");
        /* RFC 7672 3.1: PKIX-TA(0) and PKIX-EE(1) are not for SMTP. */
        CHECK_INT(tls_dane_add(d, 0, 0, 1, d32, sizeof(d32)), 0);
        CHECK_INT(tls_dane_add(d, 1, 1, 1, d32, sizeof(d32)), 0);
        CHECK_INT(tls_dane_add(d, 4, 1, 1, d32, sizeof(d32)), 0);
        /* Unknown selector or matching type, wrong digest lengths. */
        CHECK_INT(tls_dane_add(d, 3, 2, 1, d32, sizeof(d32)), 0);
        CHECK_INT(tls_dane_add(d, 3, 1, 3, d32, sizeof(d32)), 0);
        CHECK_INT(tls_dane_add(d, 3, 1, 1, d32, 31), 0);
        CHECK_INT(tls_dane_add(d, 3, 1, 2, d32, sizeof(d32)), 0);
        CHECK_INT(tls_dane_add(d, 3, 0, 0, full, 0), 0);
        CHECK_INT((int) d->n_records, 0);
        CHECK_INT(tls_dane_add(d, 3, 1, 1, d32, sizeof(d32)), 1);
        CHECK_INT(tls_dane_add(d, 2, 0, 2, d64, sizeof(d64)), 1);
        CHECK_INT(tls_dane_add(d, 3, 0, 0, full, sizeof(full)), 1);
        CHECK_INT((int) d->n_records, 3);
        CHECK_INT(d->records[1].usage, 2);
        CHECK_INT((int) d->records[1].len, 64);
        CHECK(memcmp(d->records[2].data, full, sizeof(full)) == 0);
        CHECK(tls_dane_ref(d) == d);
        CHECK_INT((int) d->n_ref, 2);
        CHECK(tls_dane_unref(d) == NULL);
        CHECK_INT((int) d->n_ref, 1);
        d = tls_dane_unref(d);
        CHECK(tls_dane_unref(NULL) == NULL);
}

/* A self-signed P-256 certificate for name and its key. */
static void make_cert(const char *name, X509 **ret_cert, EVP_PKEY **ret_key) {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509 *x = X509_new();

        CHECK(key && x);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400);
        X509_set_pubkey(x, key);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *) name, -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        CHECK(X509_sign(x, key, EVP_sha256()) > 0);
        *ret_cert = x;
        *ret_key = key;
}

/* SHA2-256 of the certificate's SubjectPublicKeyInfo: TLSA "3 1 1". */
static void spki_sha256(X509 *x, uint8_t out[32]) {
        unsigned char *der = NULL;
        unsigned len = 0;
        int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);

        CHECK(n > 0);
        CHECK(EVP_Digest(der, (size_t) n, out, &len, EVP_sha256(), NULL) == 1);
        CHECK_INT((int) len, 32);
        OPENSSL_free(der);
}

/* Runs a handshake between a server with cert/key and a client with the
 * DANE records d (NULL: none); returns the client's verdict. */
static TlsTrust handshake(X509 *cert, EVP_PKEY *key, const TlsDane *d, char **ret_reason) {
        TlsClientConfig cfg = {.protocols = TLS_PROTO_TLSv1_2 | TLS_PROTO_TLSv1_3};
        SSL_CTX *cctx = NULL, *sctx = SSL_CTX_new(TLS_server_method());
        SSL *c = NULL, *s;
        char *err = NULL;
        TlsTrust trust = TLS_TRUST_ANONYMOUS;
        int sv[2];
        bool cdone = false, sdone = false;

        CHECK(sctx);
        CHECK(SSL_CTX_use_certificate(sctx, cert) == 1);
        CHECK(SSL_CTX_use_PrivateKey(sctx, key) == 1);
        CHECK_INT(tls_client_context_new(&cfg, &cctx, &err), 0);
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        CHECK_INT(tls_client_ssl_new(cctx, sv[0], d ? d->base : NULL, &c), 0);
        if (d)
                CHECK_INT(tls_client_dane_enable(c, d, NULL), 0);
        s = SSL_new(sctx);
        CHECK(s && SSL_set_fd(s, sv[1]) == 1);
        SSL_set_accept_state(s);
        for (int i = 0; i < 1000 && !(cdone && sdone); i++) {
                int k;
                if (!cdone) {
                        k = SSL_do_handshake(c);
                        cdone = k == 1;
                        CHECK(cdone || SSL_get_error(c, k) == SSL_ERROR_WANT_READ ||
                              SSL_get_error(c, k) == SSL_ERROR_WANT_WRITE);
                }
                if (!sdone) {
                        k = SSL_do_handshake(s);
                        sdone = k == 1;
                        CHECK(sdone || SSL_get_error(s, k) == SSL_ERROR_WANT_READ ||
                              SSL_get_error(s, k) == SSL_ERROR_WANT_WRITE);
                }
        }
        CHECK(cdone && sdone);
        CHECK_INT(tls_client_check_peer(c, (char *[]) {NULL}, &trust, ret_reason), 0);
        SSL_free(c);
        SSL_free(s);
        SSL_CTX_free(cctx);
        SSL_CTX_free(sctx);
        close(sv[0]);
        close(sv[1]);
        return trust;
}

static void test_dane_handshake(void) {
        X509 *cert, *other;
        EVP_PKEY *key, *okey;
        uint8_t h[32], oh[32];
        TlsDane *d = NULL;
        char *reason = NULL;

        make_cert("mx.example", &cert, &key);
        make_cert("other.example", &other, &okey);
        spki_sha256(cert, h);
        spki_sha256(other, oh);

        /* Without DANE an unknown self-signed certificate is untrusted. */
        CHECK_INT(handshake(cert, key, NULL, &reason), TLS_TRUST_UNTRUSTED);
        free(reason);
        reason = NULL;

        /* DANE-EE(3) SPKI SHA2-256 of the server's key: verified, whatever
         * the names (RFC 7672 3.1.1); with the base domain as SNI. */
        CHECK_INT(tls_dane_new("elsewhere.example", &d), 0);
        CHECK_INT(tls_dane_add(d, 3, 1, 1, oh, sizeof(oh)), 1);
        CHECK_INT(tls_dane_add(d, 3, 1, 1, h, sizeof(h)), 1);
        CHECK_INT(handshake(cert, key, d, &reason), TLS_TRUST_VERIFIED);
        CHECK(reason == NULL);
        d = tls_dane_unref(d);

        /* Only another key's digest: not verified, and said why. */
        CHECK_INT(tls_dane_new("mx.example", &d), 0);
        CHECK_INT(tls_dane_add(d, 3, 1, 1, oh, sizeof(oh)), 1);
        CHECK_INT(handshake(cert, key, d, &reason), TLS_TRUST_UNTRUSTED);
        CHECK(reason && strstr(reason, "TLSA"));
        free(reason);
        reason = NULL;
        d = tls_dane_unref(d);

        /* No record OpenSSL accepts: refused before the handshake. */
        {
                SSL_CTX *ctx = NULL;
                SSL *ssl = NULL;
                char *err = NULL;
                TlsClientConfig cfg = {.protocols = TLS_PROTO_TLSv1_2 | TLS_PROTO_TLSv1_3};
                CHECK_INT(tls_client_context_new(&cfg, &ctx, &err), 0);
                CHECK_INT(tls_client_ssl_new(ctx, 0, NULL, &ssl), 0);
                CHECK_INT(tls_dane_new("mx.example", &d), 0);
                CHECK_INT(tls_client_dane_enable(ssl, d, NULL), -EIO);
                d = tls_dane_unref(d);
                SSL_free(ssl);
                SSL_CTX_free(ctx);
        }

        X509_free(cert);
        X509_free(other);
        EVP_PKEY_free(key);
        EVP_PKEY_free(okey);
}

/* A per-destination policy's protocols, ciphers and exclusions on one
 * connection, over what the context says. */
static void test_ssl_override(void) {
        TlsClientConfig cfg = {.protocols = TLS_PROTO_TLSv1_2 | TLS_PROTO_TLSv1_3};
        SSL_CTX *ctx = NULL;
        SSL *ssl = NULL;
        char *err = NULL;
        STACK_OF(SSL_CIPHER) *sk;
        bool aes256 = false;
        TlsDane *d = NULL;
        uint8_t h[32] = {1};

        CHECK_INT(tls_client_context_new(&cfg, &ctx, &err), 0);
        CHECK_INT(tls_client_ssl_new(ctx, 0, NULL, &ssl), 0);
        /* Nothing given: the context's settings stay. */
        CHECK_INT(tls_client_ssl_override(ssl, 0, NULL, NULL, &err), 0);
        CHECK_INT(SSL_get_min_proto_version(ssl), TLS1_2_VERSION);
        CHECK_INT(tls_client_ssl_override(ssl, TLS_PROTO_TLSv1_3, NULL, NULL, &err), 0);
        CHECK_INT(SSL_get_min_proto_version(ssl), TLS1_3_VERSION);
        CHECK_INT(SSL_get_max_proto_version(ssl), TLS1_3_VERSION);
        CHECK_INT(tls_client_ssl_override(ssl, TLS_PROTO_TLSv1 | TLS_PROTO_TLSv1_2, NULL, NULL,
                                          &err), 0);
        CHECK_INT(SSL_get_min_proto_version(ssl), TLS1_VERSION);
        CHECK_INT(SSL_get_max_proto_version(ssl), TLS1_2_VERSION);
        CHECK((SSL_get_options(ssl) & SSL_OP_NO_TLSv1_1) != 0);
        CHECK((SSL_get_options(ssl) & SSL_OP_NO_TLSv1_2) == 0);
        /* Exclusions alone apply to the context's list. */
        CHECK_INT(tls_client_ssl_override(ssl, 0, NULL, "AES256:CHACHA20", &err), 0);
        sk = SSL_get_ciphers(ssl);
        CHECK(sk && sk_SSL_CIPHER_num(sk) > 0);
        for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
                const char *n = SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i));
                if (SSL_CIPHER_get_protocol_id(sk_SSL_CIPHER_value(sk, i)) >> 8 == 0x13)
                        continue;       /* TLS 1.3 suites are not in the list */
                if (strstr(n, "AES256") || strstr(n, "CHACHA20"))
                        aes256 = true;
        }
        CHECK(!aes256);
        CHECK_INT(tls_client_ssl_override(ssl, 0, "NO-SUCH-CIPHER", NULL, &err), -EINVAL);
        CHECK(err && strstr(err, "NO-SUCH-CIPHER"));
        free(err);
        err = NULL;
        SSL_free(ssl);

        /* DANE with more reference names: accepted by OpenSSL. */
        CHECK_INT(tls_client_ssl_new(ctx, 0, NULL, &ssl), 0);
        CHECK_INT(tls_dane_new("mx.example", &d), 0);
        CHECK_INT(tls_dane_add(d, 2, 0, 1, h, sizeof(h)), 1);
        CHECK_INT(tls_client_dane_enable(ssl, d, (char *[]) {(char *) "mx.example",
                                                             (char *) "example", NULL}), 0);
        d = tls_dane_unref(d);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
}

TEST_MAIN(test_levels, test_dane_records, test_dane_handshake, test_ssl_override)
