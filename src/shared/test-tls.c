/* test-tls.c: unit tests of tls.c: both Postfix protocol-list syntaxes,
 * cipher grades, the credential rule, and a server context built from a
 * key and certificate generated here (with its errors for missing files). */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "strutil.h"
#include "tests.h"
#include "tls.h"

static unsigned parse(const char *list) {
        _cleanup_strv_free_ char **items = NULL;
        unsigned set = 0;
        const char *bad = NULL;

        if (str_split_list(list, false, &items) < 0)
                return 0xffff;
        if (tls_protocols_parse(items, &set, &bad) < 0)
                return 0;
        return set;
}

static void test_protocols(void) {
        const unsigned t12 = TLS_PROTO_TLSv1_2 | TLS_PROTO_TLSv1_3;
        const unsigned all = TLS_PROTO_TLSv1 | TLS_PROTO_TLSv1_1 | t12;
        _cleanup_strv_free_ char **items = NULL;
        _cleanup_free_ char *text = NULL;
        const char *bad = NULL;
        unsigned set;

        CHECK_INT(parse(">=TLSv1.2"), t12);
        CHECK_INT(parse("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"), t12);
        CHECK_INT(parse("!SSLv2 !SSLv3"), all);
        CHECK_INT(parse(">=TLSv1"), all);
        CHECK_INT(parse(""), all);
        CHECK_INT(parse("TLSv1.2, TLSv1.3"), t12);
        CHECK_INT(parse("tlsv1.3"), TLS_PROTO_TLSv1_3);
        CHECK_INT(parse(">=TLSv1.1 <=TLSv1.2"), TLS_PROTO_TLSv1_1 | TLS_PROTO_TLSv1_2);
        CHECK_INT(parse("TLSv1, TLSv1.2"), TLS_PROTO_TLSv1 | TLS_PROTO_TLSv1_2);
        /* Nothing left, or an unknown name. */
        CHECK_INT(parse(">=TLSv1.3 <=TLSv1.2"), 0);
        CHECK_INT(parse("SSLv3"), 0);
        CHECK_INT(parse("!TLSv1.4"), 0);
        CHECK_INT(str_split_list(">=TLSv1.2 =TLSv1", false, &items), 0);
        CHECK_INT(tls_protocols_parse(items, &set, &bad), -EINVAL);
        CHECK_STR(bad, "=TLSv1");

        text = tls_protocols_to_string(t12);
        CHECK_STR(text, "TLSv1.2 TLSv1.3");
}

static void test_apply(void) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

        CHECK(ctx);
        CHECK_INT(tls_protocols_apply(ctx, TLS_PROTO_TLSv1_2 | TLS_PROTO_TLSv1_3), 0);
        CHECK_INT(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
        CHECK_INT(SSL_CTX_get_max_proto_version(ctx), TLS1_3_VERSION);
        CHECK_INT(tls_protocols_apply(ctx, TLS_PROTO_TLSv1 | TLS_PROTO_TLSv1_2), 0);
        CHECK_INT(SSL_CTX_get_min_proto_version(ctx), TLS1_VERSION);
        CHECK_INT(SSL_CTX_get_max_proto_version(ctx), TLS1_2_VERSION);
        CHECK(SSL_CTX_get_options(ctx) & SSL_OP_NO_TLSv1_1);
        CHECK_INT(tls_protocols_apply(ctx, TLS_PROTO_SSLv3), -EINVAL);
        SSL_CTX_free(ctx);
}

static void test_grades(void) {
        TlsCipherGrade g = _TLS_CIPHER_MAX;

        CHECK_INT(tls_cipher_grade_parse("MEDIUM", &g), 0);
        CHECK_INT(g, TLS_CIPHER_MEDIUM);
        CHECK_INT(tls_cipher_grade_parse("high", &g), 0);
        CHECK_STR(tls_cipher_grade_default_list(g), "aNULL:-aNULL:HIGH:@STRENGTH");
        CHECK_INT(tls_cipher_grade_parse("strong", &g), -EINVAL);
}

static char tmpdir[] = "/tmp/test-tls.XXXXXX";

static char *tmp_path(const char *name) {
        return strdup_printf("%s/%s", tmpdir, name);
}

static void touch(const char *path) {
        FILE *f = fopen(path, "we");
        CHECK(f);
        if (f)
                fclose(f);
}

static void test_credential(void) {
        _cleanup_free_ char *creds = tmp_path("creds"), *by_param = NULL, *by_base = NULL;
        _cleanup_free_ char *p = NULL;

        CHECK_INT(mkdir(creds, 0700), 0);
        unsetenv("CREDENTIALS_DIRECTORY");
        CHECK_INT(tls_credential_path("smtpd_tls_key_file", "/etc/ssl/private/mail.key", &p), 0);
        setenv("CREDENTIALS_DIRECTORY", creds, 1);
        CHECK_INT(tls_credential_path("smtpd_tls_key_file", "/etc/ssl/private/mail.key", &p), 0);

        by_base = strdup_printf("%s/mail.key", creds);
        touch(by_base);
        CHECK_INT(tls_credential_path("smtpd_tls_key_file", "/etc/ssl/private/mail.key", &p), 1);
        CHECK_STR(p, by_base);
        free(p);
        p = NULL;
        /* A base name that would leave the directory is never used. */
        CHECK_INT(tls_credential_path("smtpd_tls_key_file", "/etc/ssl/..", &p), 0);

        by_param = strdup_printf("%s/smtpd_tls_key_file", creds);
        touch(by_param);
        CHECK_INT(tls_credential_path("smtpd_tls_key_file", "/etc/ssl/private/mail.key", &p), 1);
        CHECK_STR(p, by_param);
        free(p);
        p = NULL;
        unlink(by_param);
        unlink(by_base);
        rmdir(creds);
        unsetenv("CREDENTIALS_DIRECTORY");
}

/* Writes a self-signed P-256 certificate and its key. */
static void make_cert(const char *cert_path, const char *key_path) {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509 *x = X509_new();
        FILE *f;

        CHECK(key && x);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400);
        X509_set_pubkey(x, key);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *) "mail.example.com", -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        CHECK(X509_sign(x, key, EVP_sha256()) > 0);
        f = fopen(cert_path, "we");
        CHECK(f && PEM_write_X509(f, x));
        fclose(f);
        f = fopen(key_path, "we");
        CHECK(f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
        fclose(f);
        X509_free(x);
        EVP_PKEY_free(key);
}

static void test_context(void) {
        _cleanup_free_ char *cert = tmp_path("cert.pem"), *key = tmp_path("key.pem"),
                            *other = tmp_path("other.pem"), *okey = tmp_path("okey.pem"),
                            *missing = tmp_path("missing.pem");
        TlsServerConfig cfg = {
                .cert_file = cert,
                .key_file = key,
                .protocols = TLS_PROTO_TLSv1_2 | TLS_PROTO_TLSv1_3,
                .ticket_lifetime_sec = 3600,
                .session_id_context = "smtpd",
        };
        TlsContext *c = NULL, *c2 = NULL;
        char *err = NULL;
        unsigned char k1[80], k2[80];

        make_cert(cert, key);
        make_cert(other, okey);
        CHECK_INT(tls_server_context_new(&cfg, NULL, &c, &err), 0);
        CHECK(c && !err);
        /* A reload keeps the ticket keys. */
        CHECK_INT(tls_server_context_new(&cfg, c, &c2, &err), 0);
        CHECK_INT(SSL_CTX_get_tlsext_ticket_keys(tls_context_ssl_ctx(c), k1, sizeof(k1)), 1);
        CHECK_INT(SSL_CTX_get_tlsext_ticket_keys(tls_context_ssl_ctx(c2), k2, sizeof(k2)), 1);
        CHECK(memcmp(k1, k2, sizeof(k1)) == 0);
        CHECK_INT(SSL_CTX_get_min_proto_version(tls_context_ssl_ctx(c)), TLS1_2_VERSION);
        CHECK(tls_context_ref(c) == c);
        tls_context_unref(c);
        c = tls_context_unref(c);
        c2 = tls_context_unref(c2);

        /* Missing certificate: named, with errno's text. */
        cfg.cert_file = missing;
        CHECK_INT(tls_server_context_new(&cfg, NULL, &c, &err), -ENOENT);
        CHECK(err && strstr(err, "missing.pem") && strstr(err, "No such file"));
        free(err);
        err = NULL;

        /* Key of another certificate. */
        cfg.cert_file = cert;
        cfg.key_file = okey;
        CHECK_INT(tls_server_context_new(&cfg, NULL, &c, &err), -EINVAL);
        CHECK(err && strstr(err, "okey.pem"));
        free(err);
        err = NULL;

        /* The credential replaces the key file. */
        cfg.key_file = missing;
        cfg.key_credential = key;
        CHECK_INT(tls_server_context_new(&cfg, NULL, &c, &err), 0);
        c = tls_context_unref(c);

        /* A bad cipher list. */
        cfg.ciphers = "NOSUCHCIPHER";
        cfg.protocols = TLS_PROTO_TLSv1_2;
        CHECK_INT(tls_server_context_new(&cfg, NULL, &c, &err), -EINVAL);
        CHECK(err && strstr(err, "cipher"));
        free(err);

        unlink(cert);
        unlink(key);
        unlink(other);
        unlink(okey);
}

static void setup(void) {
        CHECK(mkdtemp(tmpdir));
}

static void teardown(void) {
        rmdir(tmpdir);
}

TEST_MAIN(setup, test_protocols, test_apply, test_grades, test_credential, test_context, teardown)
