/* tls.c: OpenSSL helpers shared by postern's TLS server and clients:
 * Postfix protocol-list and cipher-grade parsing, the systemd credential
 * rule for key files, OpenSSL error text, and the reference-counted server
 * context (certificate chain, private key, protocols, ciphers, stateless
 * session tickets). See tls.h. Handshakes and I/O belong to the programs,
 * which drive non-blocking SSL objects from their own event loops. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "macro.h"
#include "strutil.h"
#include "tls.h"

static const struct {
        const char *name;
        unsigned bit;
        int version;            /* OpenSSL constant; 0 for the SSL versions */
} protocol_table[] = {
        {"SSLv2", TLS_PROTO_SSLv2, 0},
        {"SSLv3", TLS_PROTO_SSLv3, 0},
        {"TLSv1", TLS_PROTO_TLSv1, TLS1_VERSION},
        {"TLSv1.1", TLS_PROTO_TLSv1_1, TLS1_1_VERSION},
        {"TLSv1.2", TLS_PROTO_TLSv1_2, TLS1_2_VERSION},
        {"TLSv1.3", TLS_PROTO_TLSv1_3, TLS1_3_VERSION},
};

static int protocol_index(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(protocol_table); i++)
                if (strcaseeq(protocol_table[i].name, name))
                        return (int) i;
        return -1;
}

int tls_protocols_parse(char * const *items, unsigned *ret, const char **ret_bad) {
        unsigned include = 0, exclude = 0, set;
        int lo = 0, hi = (int) ELEMENTSOF(protocol_table) - 1;

        STRV_FOREACH(i, items) {
                const char *p = *i;
                int idx;

                if (startswith(p, ">=") || startswith(p, "<=")) {
                        idx = protocol_index(p + 2);
                        if (idx < 0)
                                goto bad;
                        if (p[0] == '>')
                                lo = MAX(lo, idx);
                        else
                                hi = MIN(hi, idx);
                        continue;
                }
                if (p[0] == '!') {
                        idx = protocol_index(p + 1);
                        if (idx < 0)
                                goto bad;
                        exclude |= protocol_table[idx].bit;
                        continue;
                }
                idx = protocol_index(p);
                if (idx < 0)
                        goto bad;
                include |= protocol_table[idx].bit;
                continue;
bad:
                if (ret_bad)
                        *ret_bad = p;
                return -EINVAL;
        }
        set = include ? include : TLS_PROTO_ALL;
        set &= ~exclude;
        for (int idx = 0; idx < (int) ELEMENTSOF(protocol_table); idx++)
                if (idx < lo || idx > hi)
                        set &= ~protocol_table[idx].bit;
        /* OpenSSL 3 has no SSLv2 and no SSLv3 (without a special build). */
        set &= ~(unsigned) (TLS_PROTO_SSLv2 | TLS_PROTO_SSLv3);
        if (set == 0) {
                if (ret_bad)
                        *ret_bad = items && items[0] ? items[0] : "";
                return -EINVAL;
        }
        *ret = set;
        return 0;
}

int tls_protocols_apply(SSL_CTX *ctx, unsigned protocols) {
        static const struct {
                unsigned bit;
                uint64_t op;
        } no_ops[] = {
                {TLS_PROTO_TLSv1, SSL_OP_NO_TLSv1},
                {TLS_PROTO_TLSv1_1, SSL_OP_NO_TLSv1_1},
                {TLS_PROTO_TLSv1_2, SSL_OP_NO_TLSv1_2},
                {TLS_PROTO_TLSv1_3, SSL_OP_NO_TLSv1_3},
        };
        int min = 0, max = 0;

        for (size_t i = 0; i < ELEMENTSOF(protocol_table); i++) {
                if (!protocol_table[i].version || !(protocols & protocol_table[i].bit))
                        continue;
                if (!min)
                        min = protocol_table[i].version;
                max = protocol_table[i].version;
        }
        if (!min)
                return -EINVAL;
        if (!SSL_CTX_set_min_proto_version(ctx, min) || !SSL_CTX_set_max_proto_version(ctx, max))
                return -EINVAL;
        /* A hole ("TLSv1, TLSv1.2") needs the per-version switches. */
        for (size_t i = 0; i < ELEMENTSOF(no_ops); i++)
                if (!(protocols & no_ops[i].bit))
                        SSL_CTX_set_options(ctx, no_ops[i].op);
        return 0;
}

char *tls_protocols_to_string(unsigned protocols) {
        _cleanup_(strbuf_done) StrBuf b = {0};

        for (size_t i = 0; i < ELEMENTSOF(protocol_table); i++)
                if (protocols & protocol_table[i].bit)
                        if (strbuf_printf(&b, "%s%s", b.len ? " " : "", protocol_table[i].name) < 0)
                                return NULL;
        return strbuf_steal(&b);
}

static const char *const grade_names[_TLS_CIPHER_MAX] = {
        [TLS_CIPHER_EXPORT] = "export",
        [TLS_CIPHER_LOW] = "low",
        [TLS_CIPHER_MEDIUM] = "medium",
        [TLS_CIPHER_HIGH] = "high",
        [TLS_CIPHER_NULL] = "null",
};

int tls_cipher_grade_parse(const char *name, TlsCipherGrade *ret) {
        for (TlsCipherGrade g = 0; g < _TLS_CIPHER_MAX; g++)
                if (strcaseeq(grade_names[g], name)) {
                        *ret = g;
                        return 0;
                }
        return -EINVAL;
}

const char *tls_cipher_grade_default_list(TlsCipherGrade g) {
        /* Postfix's defaults of tls_<grade>_cipherlist. */
        switch (g) {
        case TLS_CIPHER_EXPORT:
                return "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH";
        case TLS_CIPHER_LOW:
                return "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH";
        case TLS_CIPHER_HIGH:
                return "aNULL:-aNULL:HIGH:@STRENGTH";
        case TLS_CIPHER_NULL:
                return "eNULL:!aNULL";
        case TLS_CIPHER_MEDIUM:
        default:
                return "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH";
        }
}

int tls_credential_path(const char *param_name, const char *path, char **ret) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        const char *base;
        char *p;

        if (isempty(dir))
                return 0;
        p = strdup_printf("%s/%s", dir, param_name);
        if (!p)
                return -ENOMEM;
        if (access(p, F_OK) == 0) {
                *ret = p;
                return 1;
        }
        free(p);
        if (isempty(path))
                return 0;
        base = strrchr(path, '/');
        base = base ? base + 1 : path;
        /* "..", "." or an empty base name would leave the directory. */
        if (!*base || streq(base, ".") || streq(base, ".."))
                return 0;
        p = strdup_printf("%s/%s", dir, base);
        if (!p)
                return -ENOMEM;
        if (access(p, F_OK) == 0) {
                *ret = p;
                return 1;
        }
        free(p);
        return 0;
}

char *tls_error_string(const char *fallback) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        unsigned long e;
        char buf[256];

        while ((e = ERR_get_error()) != 0) {
                const char *reason = ERR_reason_error_string(e);
                if (reason)
                        snprintf(buf, sizeof(buf), "%s", reason);
                else
                        ERR_error_string_n(e, buf, sizeof(buf));
                if (strbuf_printf(&b, "%s%s", b.len ? "; " : "", buf) < 0)
                        return NULL;
        }
        if (b.len == 0)
                return strdup(strempty(fallback));
        return strbuf_steal(&b);
}

struct TlsContext {
        unsigned n_ref;
        SSL_CTX *ctx;
};

/* Describes a file error: errno from the open attempt when there is one,
 * else OpenSSL's reason. */
static int file_error(const char *what, const char *file, char **ret_error) {
        int r = access(file, R_OK) < 0 ? -errno : -EINVAL;
        _cleanup_free_ char *ssl = NULL;

        if (r != -EINVAL) {
                ERR_clear_error();
                *ret_error = strdup_printf("cannot read %s %s: %s", what, file, strerror(-r));
        } else {
                ssl = tls_error_string("unknown error");
                *ret_error = strdup_printf("cannot load %s %s: %s", what, file, strempty(ssl));
        }
        return r;
}

static int load_key(SSL_CTX *ctx, const char *file, const char *shown, char **ret_error) {
        _cleanup_fclose_ FILE *f = NULL;
        EVP_PKEY *key;
        int r;

        f = fopen(file, "re");
        if (!f)
                return file_error("private key", shown, ret_error);
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        if (!key)
                return file_error("private key", shown, ret_error);
        r = SSL_CTX_use_PrivateKey(ctx, key);
        EVP_PKEY_free(key);
        if (r != 1)
                return file_error("private key", shown, ret_error);
        return 0;
}

int tls_server_context_new(const TlsServerConfig *cfg, const TlsContext *previous,
                           TlsContext **ret, char **ret_error) {
        _cleanup_free_ char *ciphers = NULL, *err = NULL;
        TlsContext *c;
        SSL_CTX *ctx;
        int r;

        *ret_error = NULL;
        ERR_clear_error();
        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx) {
                err = tls_error_string("out of memory");
                *ret_error = strdup_printf("cannot create an SSL context: %s", strempty(err));
                return -ENOMEM;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                SSL_CTX_free(ctx);
                return -ENOMEM;
        }
        c->n_ref = 1;
        c->ctx = ctx;

        if (cfg->chain_files && cfg->chain_files[0]) {
                STRV_FOREACH(f, cfg->chain_files) {
                        /* Each file: a private key and its certificate chain. */
                        if (SSL_CTX_use_certificate_chain_file(ctx, *f) != 1) {
                                r = file_error("certificate chain", *f, ret_error);
                                goto fail;
                        }
                        r = load_key(ctx, *f, *f, ret_error);
                        if (r < 0)
                                goto fail;
                }
        } else {
                const char *key = !isempty(cfg->key_file) ? cfg->key_file : cfg->cert_file;
                if (isempty(cfg->cert_file)) {
                        *ret_error = strdup("no certificate file configured");
                        r = -ENOENT;
                        goto fail;
                }
                if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
                        r = file_error("certificate", cfg->cert_file, ret_error);
                        goto fail;
                }
                r = cfg->key_credential ? load_key(ctx, cfg->key_credential, cfg->key_credential,
                                                   ret_error)
                                        : load_key(ctx, key, key, ret_error);
                if (r < 0)
                        goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
                err = tls_error_string("key does not match");
                *ret_error = strdup_printf("private key does not match the certificate %s: %s",
                                           strempty(cfg->cert_file ? cfg->cert_file
                                                                   : cfg->chain_files[0]),
                                           strempty(err));
                r = -EINVAL;
                goto fail;
        }

        if (tls_protocols_apply(ctx, cfg->protocols) < 0) {
                *ret_error = strdup("no usable TLS protocol version enabled");
                r = -EINVAL;
                goto fail;
        }
        ciphers = strdup(cfg->ciphers ? cfg->ciphers : tls_cipher_grade_default_list(TLS_CIPHER_MEDIUM));
        if (!ciphers) {
                r = -ENOMEM;
                goto fail;
        }
        if (!isempty(cfg->exclude_ciphers)) {
                _cleanup_strv_free_ char **ex = NULL;
                r = str_split_list(cfg->exclude_ciphers, false, &ex);
                if (r < 0)
                        goto fail;
                STRV_FOREACH(x, ex) {
                        char *n = strdup_printf("%s:!%s", ciphers, *x);
                        if (!n) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        free(ciphers);
                        ciphers = n;
                }
        }
        if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
                err = tls_error_string("no cipher matches");
                *ret_error = strdup_printf("bad cipher list \"%s\": %s", ciphers, strempty(err));
                r = -EINVAL;
                goto fail;
        }

        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        if (cfg->prefer_server_ciphers)
                SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
        /* Partial writes and moving buffers: the session's output buffer
         * moves between retries of SSL_write(). */
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                      SSL_MODE_RELEASE_BUFFERS);
        /* Resumption by stateless tickets only: no cache in this process to
         * grow with every client, none shared between processes. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        if (cfg->ticket_lifetime_sec > 0) {
                SSL_CTX_set_timeout(ctx, (long) MIN(cfg->ticket_lifetime_sec, 86400 * 7));
                if (previous) {
                        unsigned char keys[80];
                        if (SSL_CTX_get_tlsext_ticket_keys(previous->ctx, keys, sizeof(keys)) == 1)
                                (void) SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof(keys));
                        OPENSSL_cleanse(keys, sizeof(keys));
                }
        } else {
                SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
                SSL_CTX_set_num_tickets(ctx, 0);
        }
        if (cfg->session_id_context)
                (void) SSL_CTX_set_session_id_context(
                        ctx, (const unsigned char *) cfg->session_id_context,
                        (unsigned) MIN(strlen(cfg->session_id_context), SSL_MAX_SID_CTX_LENGTH));
        *ret = c;
        return 0;
fail:
        if (!*ret_error && r == -ENOMEM)
                *ret_error = strdup("out of memory");
        tls_context_unref(c);
        return r;
}

TlsContext *tls_context_ref(TlsContext *c) {
        if (c)
                c->n_ref++;
        return c;
}

TlsContext *tls_context_unref(TlsContext *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        SSL_CTX_free(c->ctx);
        free(c);
        return NULL;
}

SSL_CTX *tls_context_ssl_ctx(const TlsContext *c) {
        return c->ctx;
}

char *tls_session_describe(SSL *ssl) {
        const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
        int alg = 0, bits = cipher ? SSL_CIPHER_get_bits(cipher, &alg) : 0;

        return strdup_printf("%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
                             cipher ? SSL_CIPHER_get_name(cipher) : "unknown", bits, alg);
}
