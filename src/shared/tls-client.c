/* tls-client.c: client SSL_CTX construction, Postfix security level names and
 * the post-handshake trust check for the SMTP and LMTP clients. Protocol
 * lists and cipher grades come from tls.c. Entry points are described in
 * tls-client.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "strutil.h"
#include "tls-client.h"

static const char * const level_names[_TLS_LEVEL_MAX] = {
        [TLS_LEVEL_NONE] = "none",
        [TLS_LEVEL_MAY] = "may",
        [TLS_LEVEL_ENCRYPT] = "encrypt",
        [TLS_LEVEL_DANE] = "dane",
        [TLS_LEVEL_DANE_ONLY] = "dane-only",
        [TLS_LEVEL_VERIFY] = "verify",
        [TLS_LEVEL_SECURE] = "secure",
};

int tls_level_parse(const char *s, TlsLevel *ret) {
        for (TlsLevel l = 0; l < _TLS_LEVEL_MAX; l++)
                if (strcaseeq(level_names[l], s)) {
                        *ret = l;
                        return 0;
                }
        if (strcaseeq(s, "fingerprint"))
                return -EOPNOTSUPP;
        return -EINVAL;
}

const char *tls_level_to_string(TlsLevel l) {
        return l < _TLS_LEVEL_MAX ? level_names[l] : "?";
}

const char *tls_trust_to_string(TlsTrust t) {
        switch (t) {
        case TLS_TRUST_ANONYMOUS:
                return "Anonymous";
        case TLS_TRUST_UNTRUSTED:
                return "Untrusted";
        case TLS_TRUST_TRUSTED:
                return "Trusted";
        case TLS_TRUST_VERIFIED:
                return "Verified";
        }
        return "Untrusted";
}

static int set_error(char **ret_error, int r, const char *what, const char *file) {
        _cleanup_free_ char *ssl = tls_error_string("unknown error");
        if (file && access(file, R_OK) < 0)
                *ret_error = strdup_printf("cannot read %s %s: %s", what, file, strerror(errno));
        else
                *ret_error = strdup_printf("cannot load %s%s%s: %s", what, file ? " " : "",
                                           strempty(file), strempty(ssl));
        return r;
}

int tls_client_context_new(const TlsClientConfig *cfg, SSL_CTX **ret, char **ret_error) {
        _cleanup_free_ char *ciphers = NULL;
        const char *ca_file = isempty(cfg->ca_file) ? NULL : cfg->ca_file;
        const char *ca_path = isempty(cfg->ca_path) ? NULL : cfg->ca_path;
        SSL_CTX *ctx;

        ERR_clear_error();
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                return set_error(ret_error, -ENOMEM, "TLS client context", NULL);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* Judged after the handshake; see tls_client_check_peer(). */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        /* Lets a connection use DANE (tls_client_dane_enable()); costs
         * nothing for the others. */
        if (SSL_CTX_dane_enable(ctx) <= 0) {
                SSL_CTX_free(ctx);
                return set_error(ret_error, -EIO, "DANE support", NULL);
        }
        if ((ca_file || ca_path) && SSL_CTX_load_verify_locations(ctx, ca_file, ca_path) != 1) {
                int r = set_error(ret_error, -EINVAL, "CA certificates", ca_file ? ca_file : ca_path);
                SSL_CTX_free(ctx);
                return r;
        }
        if (tls_protocols_apply(ctx, cfg->protocols) < 0) {
                SSL_CTX_free(ctx);
                *ret_error = strdup("no TLS protocol version left by the protocol settings");
                return -EINVAL;
        }
        if (!isempty(cfg->ciphers)) {
                if (!isempty(cfg->exclude_ciphers)) {
                        _cleanup_strv_free_ char **ex = NULL;
                        StrBuf b = {0};
                        if (str_split_list(cfg->exclude_ciphers, false, &ex) < 0 ||
                            strbuf_puts(&b, cfg->ciphers) < 0) {
                                strbuf_done(&b);
                                SSL_CTX_free(ctx);
                                return -ENOMEM;
                        }
                        STRV_FOREACH(e, ex)
                                if (strbuf_printf(&b, ":!%s", *e) < 0) {
                                        strbuf_done(&b);
                                        SSL_CTX_free(ctx);
                                        return -ENOMEM;
                                }
                        ciphers = strbuf_steal(&b);
                }
                if (SSL_CTX_set_cipher_list(ctx, ciphers ? ciphers : cfg->ciphers) != 1) {
                        int r = set_error(ret_error, -EINVAL, "cipher list", NULL);
                        SSL_CTX_free(ctx);
                        return r;
                }
        }
        if (!isempty(cfg->cert_file)) {
                const char *key = isempty(cfg->key_file) ? cfg->cert_file : cfg->key_file;
                if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
                        int r = set_error(ret_error, -EINVAL, "client certificate", cfg->cert_file);
                        SSL_CTX_free(ctx);
                        return r;
                }
                if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(ctx) != 1) {
                        int r = set_error(ret_error, -EINVAL, "client private key", key);
                        SSL_CTX_free(ctx);
                        return r;
                }
        }
        *ret = ctx;
        return 0;
}

int tls_client_ssl_new(SSL_CTX *ctx, int fd, const char *sni, SSL **ret) {
        SSL *ssl = SSL_new(ctx);
        if (!ssl)
                return -ENOMEM;
        if (SSL_set_fd(ssl, fd) != 1 ||
            (!isempty(sni) && SSL_set_tlsext_host_name(ssl, sni) != 1)) {
                SSL_free(ssl);
                return -EIO;
        }
        SSL_set_connect_state(ssl);
        *ret = ssl;
        return 0;
}

int tls_dane_new(const char *base, TlsDane **ret) {
        TlsDane *d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->n_ref = 1;
        d->base = strdup(base);
        if (!d->base) {
                free(d);
                return -ENOMEM;
        }
        *ret = d;
        return 0;
}

TlsDane *tls_dane_ref(TlsDane *d) {
        if (d)
                d->n_ref++;
        return d;
}

TlsDane *tls_dane_unref(TlsDane *d) {
        if (!d || --d->n_ref > 0)
                return NULL;
        for (size_t i = 0; i < d->n_records; i++)
                free(d->records[i].data);
        free(d->records);
        free(d->base);
        free(d);
        return NULL;
}

int tls_dane_add(TlsDane *d, uint8_t usage, uint8_t selector, uint8_t mtype, const uint8_t *data,
                 size_t len) {
        TlsDaneRecord *n;

        /* RFC 7672 3.1: PKIX-TA(0) and PKIX-EE(1) are not for SMTP. */
        if (usage != 2 && usage != 3)
                return 0;
        if (selector > 1)
                return 0;
        if (!(mtype == 0 && len > 0) && !(mtype == 1 && len == 32) && !(mtype == 2 && len == 64))
                return 0;
        n = reallocarray(d->records, d->n_records + 1, sizeof(TlsDaneRecord));
        if (!n)
                return -ENOMEM;
        d->records = n;
        n = &d->records[d->n_records];
        *n = (TlsDaneRecord) {.usage = usage, .selector = selector, .mtype = mtype, .len = len};
        n->data = malloc(len);
        if (!n->data)
                return -ENOMEM;
        memcpy(n->data, data, len);
        d->n_records++;
        return 1;
}

int tls_client_dane_enable(SSL *ssl, const TlsDane *d, char * const *more_names) {
        int added = 0;

        /* SSL_dane_enable() makes the base domain the SNI and the first
         * reference identifier of the name check. */
        if (SSL_dane_enable(ssl, d->base) <= 0)
                return -EIO;
        STRV_FOREACH(n, more_names)
                if (!strcaseeq(*n, d->base) && SSL_add1_host(ssl, *n) != 1)
                        return -EIO;
        (void) SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
        for (size_t i = 0; i < d->n_records; i++) {
                const TlsDaneRecord *t = &d->records[i];
                int k = SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype, t->data, t->len);
                if (k > 0)
                        added++;
                else if (k < 0)
                        ERR_clear_error();
        }
        return added > 0 ? 0 : -EIO;
}

int tls_client_ssl_override(SSL *ssl, unsigned protocols, const char *ciphers,
                            const char *exclude, char **ret_error) {
        static const struct {
                unsigned bit;
                int version;
                uint64_t op;
        } versions[] = {
                {TLS_PROTO_TLSv1, TLS1_VERSION, SSL_OP_NO_TLSv1},
                {TLS_PROTO_TLSv1_1, TLS1_1_VERSION, SSL_OP_NO_TLSv1_1},
                {TLS_PROTO_TLSv1_2, TLS1_2_VERSION, SSL_OP_NO_TLSv1_2},
                {TLS_PROTO_TLSv1_3, TLS1_3_VERSION, SSL_OP_NO_TLSv1_3},
        };

        if (protocols != 0) {
                int min = 0, max = 0;
                for (size_t i = 0; i < ELEMENTSOF(versions); i++)
                        if (protocols & versions[i].bit) {
                                if (!min)
                                        min = versions[i].version;
                                max = versions[i].version;
                        }
                if (!min || SSL_set_min_proto_version(ssl, min) != 1 ||
                    SSL_set_max_proto_version(ssl, max) != 1) {
                        *ret_error = strdup("no TLS protocol version left by the policy");
                        return -EINVAL;
                }
                for (size_t i = 0; i < ELEMENTSOF(versions); i++) {
                        if (protocols & versions[i].bit)
                                SSL_clear_options(ssl, versions[i].op);
                        else
                                SSL_set_options(ssl, versions[i].op);
                }
        }
        if (ciphers || exclude) {
                _cleanup_free_ char *list = NULL;
                StrBuf b = {0};
                const char *base = ciphers;

                if (!base) {
                        /* Exclusions alone apply to the context's list. */
                        STACK_OF(SSL_CIPHER) *sk = SSL_get_ciphers(ssl);
                        for (int i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++)
                                if (strbuf_printf(&b, "%s%s", b.len ? ":" : "",
                                                  SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i))) < 0) {
                                        strbuf_done(&b);
                                        return -ENOMEM;
                                }
                } else if (strbuf_puts(&b, base) < 0) {
                        strbuf_done(&b);
                        return -ENOMEM;
                }
                if (!isempty(exclude)) {
                        _cleanup_free_ char *ex = strdup(exclude);
                        char *save = NULL;
                        if (!ex) {
                                strbuf_done(&b);
                                return -ENOMEM;
                        }
                        for (char *t = strtok_r(ex, ":, \t", &save); t;
                             t = strtok_r(NULL, ":, \t", &save))
                                if (strbuf_printf(&b, ":!%s", t) < 0) {
                                        strbuf_done(&b);
                                        return -ENOMEM;
                                }
                }
                list = strbuf_steal(&b);
                if (!list)
                        return -ENOMEM;
                ERR_clear_error();
                if (SSL_set_cipher_list(ssl, list) != 1) {
                        _cleanup_free_ char *ssl_err = tls_error_string("no usable cipher");
                        *ret_error = strdup_printf("bad cipher list \"%s\": %s", list,
                                                   strempty(ssl_err));
                        return -EINVAL;
                }
        }
        return 0;
}

int tls_client_check_peer(SSL *ssl, char * const *names, TlsTrust *ret, char **ret_reason) {
        X509 *cert = SSL_get1_peer_certificate(ssl);
        long v;

        if (!cert) {
                *ret = TLS_TRUST_ANONYMOUS;
                if (ret_reason && !(*ret_reason = strdup("no server certificate")))
                        return -ENOMEM;
                return 0;
        }
        v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK) {
                X509_free(cert);
                *ret = TLS_TRUST_UNTRUSTED;
                if (ret_reason &&
                    !(*ret_reason = strdup_printf("certificate verification failed: %s",
                                                  X509_verify_cert_error_string(v))))
                        return -ENOMEM;
                return 0;
        }
        /* A DANE match (the records of tls_client_dane_enable()) is
         * authentication in itself, names included. */
        if (SSL_get0_dane_authority(ssl, NULL, NULL) >= 0) {
                X509_free(cert);
                *ret = TLS_TRUST_VERIFIED;
                return 0;
        }
        STRV_FOREACH(n, names) {
                const char *name = *n;
                /* X509_check_host() takes a leading dot as "any subdomain". */
                if (X509_check_host(cert, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) ==
                    1) {
                        X509_free(cert);
                        *ret = TLS_TRUST_VERIFIED;
                        return 0;
                }
        }
        X509_free(cert);
        *ret = TLS_TRUST_TRUSTED;
        if (ret_reason) {
                _cleanup_free_ char *list = strv_join(names, ", ");
                if (!list || !(*ret_reason = strdup_printf("subject name does not match %s",
                                                            isempty(list) ? "(nothing)" : list)))
                        return -ENOMEM;
        }
        return 0;
}
