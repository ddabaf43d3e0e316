/* smtpd-tls.c: the TLS server side of postern-smtpd: the context built from
 * the smtpd_tls_* parameters (certificate and key files, or a key from a
 * systemd credential; protocols and cipher grades, opportunistic or
 * mandatory) and the non-blocking TLS operations of the session I/O layer.
 * Entry points: smtpd_tls_context_load(), smtpd_tls_io_start(),
 * smtpd_tls_io_handshake(). Client certificates (smtpd_tls_ask_ccert) are
 * not requested; DH parameter files and tls_ssl_options are not read. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "smtpd-tls.h"
#include "strutil.h"

static SmtpdTlsLevel tls_level(Config *c) {
        const char *l = conf_get_str(c, P_SMTPD_TLS_SECURITY_LEVEL);

        if (strcaseeq(l, "encrypt"))
                return SMTPD_TLS_ENCRYPT;
        if (strcaseeq(l, "may"))
                return SMTPD_TLS_MAY;
        if (strcaseeq(l, "none"))
                return SMTPD_TLS_NONE;
        /* Empty: the obsolete switches decide, as in Postfix. */
        if (conf_get_bool(c, P_SMTPD_ENFORCE_TLS))
                return SMTPD_TLS_ENCRYPT;
        if (conf_get_bool(c, P_SMTPD_USE_TLS))
                return SMTPD_TLS_MAY;
        return SMTPD_TLS_NONE;
}

static const char *grade_list(Config *c, const char *grade) {
        TlsCipherGrade g = TLS_CIPHER_MEDIUM;

        (void) tls_cipher_grade_parse(grade, &g);
        if (g == TLS_CIPHER_HIGH)
                return conf_get_str(c, P_TLS_HIGH_CIPHERLIST);
        if (g == TLS_CIPHER_MEDIUM)
                return conf_get_str(c, P_TLS_MEDIUM_CIPHERLIST);
        return tls_cipher_grade_default_list(g);
}

int smtpd_tls_context_load(Config *c, const TlsContext *previous, SmtpdTlsLevel *ret_level,
                           TlsContext **ret, char **ret_error) {
        SmtpdTlsLevel level = tls_level(c);
        bool wrapper = conf_get_bool(c, P_SMTPD_TLS_WRAPPERMODE);
        bool mandatory = level == SMTPD_TLS_ENCRYPT;
        char * const *chain = conf_get_list(c, P_SMTPD_TLS_CHAIN_FILES);
        const char *cert = conf_get_str(c, P_SMTPD_TLS_CERT_FILE);
        const char *key = conf_get_str(c, P_SMTPD_TLS_KEY_FILE);
        _cleanup_free_ char *credential = NULL, *exclude = NULL;
        char * const *protos;
        const char *bad = NULL;
        TlsServerConfig cfg = {0};
        TlsContext *ctx = NULL;
        unsigned set;
        int r;

        *ret_error = NULL;
        if (level == SMTPD_TLS_NONE && !wrapper) {
                *ret_level = level;
                *ret = NULL;
                return 0;
        }
        if (isempty(cert) && !(chain && chain[0])) {
                if (level == SMTPD_TLS_MAY && !wrapper) {
                        /* Postfix: STARTTLS is simply not offered. */
                        *ret_error = strdup("smtpd_tls_security_level = may but no "
                                            "smtpd_tls_cert_file or smtpd_tls_chain_files: "
                                            "STARTTLS is not offered");
                        *ret_level = SMTPD_TLS_NONE;
                        *ret = NULL;
                        return 0;
                }
                *ret_error = strdup_printf("%s needs a certificate: set smtpd_tls_cert_file "
                                           "and smtpd_tls_key_file, or smtpd_tls_chain_files",
                                           wrapper ? "smtpd_tls_wrappermode = yes"
                                                   : "smtpd_tls_security_level = encrypt");
                return -ENOENT;
        }

        protos = conf_get_list(c, mandatory ? P_SMTPD_TLS_MANDATORY_PROTOCOLS
                                            : P_SMTPD_TLS_PROTOCOLS);
        r = tls_protocols_parse(protos, &set, &bad);
        if (r < 0) {
                *ret_error = strdup_printf("%s: bad or empty protocol list at \"%s\"",
                                           mandatory ? "smtpd_tls_mandatory_protocols"
                                                     : "smtpd_tls_protocols",
                                           strempty(bad));
                return r;
        }
        /* The key may come from a systemd credential (LoadCredential=), so
         * that the service never reads the key directory itself. */
        r = tls_credential_path("smtpd_tls_key_file", isempty(key) ? cert : key, &credential);
        if (r < 0)
                return r;
        exclude = strv_join(conf_get_list(c, P_SMTPD_TLS_EXCLUDE_CIPHERS), " ");
        if (mandatory) {
                _cleanup_free_ char *more = strv_join(
                        conf_get_list(c, P_SMTPD_TLS_MANDATORY_EXCLUDE_CIPHERS), " ");
                char *both = more ? strdup_printf("%s %s", strempty(exclude), more) : NULL;
                if (!both)
                        return -ENOMEM;
                free(exclude);
                exclude = both;
        }
        cfg = (TlsServerConfig) {
                .chain_files = chain && chain[0] ? chain : NULL,
                .cert_file = cert,
                .key_file = key,
                .key_credential = credential,
                .protocols = set,
                .ciphers = grade_list(c, conf_get_str(c, mandatory ? P_SMTPD_TLS_MANDATORY_CIPHERS
                                                                   : P_SMTPD_TLS_CIPHERS)),
                .exclude_ciphers = exclude,
                .prefer_server_ciphers = conf_get_bool(c, P_TLS_PREEMPT_CIPHERLIST),
                .ticket_lifetime_sec = conf_get_time(c, P_SMTPD_TLS_SESSION_CACHE_TIMEOUT),
                .session_id_context = "postern-smtpd",
        };
        r = tls_server_context_new(&cfg, previous, &ctx, ret_error);
        if (r < 0)
                return r;
        *ret_level = level;
        *ret = ctx;
        return 0;
}

static ssize_t tls_read(SmtpIo *io, void *buf, size_t n) {
        size_t total = 0;

        io->read_wants_write = false;
        /* Drain whole records: what OpenSSL decrypted is invisible to epoll. */
        while (total < n) {
                size_t k = 0;
                int r, e;

                ERR_clear_error();
                r = SSL_read_ex(io->ssl, (char *) buf + total, n - total, &k);
                if (r == 1) {
                        total += k;
                        continue;
                }
                e = SSL_get_error(io->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                        break;
                if (e == SSL_ERROR_WANT_WRITE) {
                        io->read_wants_write = true;
                        break;
                }
                if (total > 0)
                        break;          /* report the end on the next call */
                if (e == SSL_ERROR_ZERO_RETURN)
                        return 0;
                ERR_clear_error();
                return e == SSL_ERROR_SYSCALL ? -ECONNRESET : -EIO;
        }
        return total > 0 ? (ssize_t) total : -EAGAIN;
}

static ssize_t tls_write(SmtpIo *io, const void *buf, size_t n) {
        size_t k = 0;
        int r, e;

        ERR_clear_error();
        r = SSL_write_ex(io->ssl, buf, n, &k);
        if (r == 1)
                return (ssize_t) k;
        e = SSL_get_error(io->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                return -EAGAIN;
        ERR_clear_error();
        return -EPIPE;
}

static size_t tls_pending(SmtpIo *io) {
        int n = SSL_pending(io->ssl);
        return n > 0 ? (size_t) n : 0;
}

static void tls_close(SmtpIo *io) {
        if (io->ssl) {
                /* One attempt at close_notify; a client that went away does
                 * not get to hold the session. */
                if (io->handshake_done)
                        (void) SSL_shutdown(io->ssl);
                ERR_clear_error();
                SSL_free(io->ssl);
                io->ssl = NULL;
        }
        if (io->fd >= 0)
                (void) close(io->fd);
        io->fd = -1;
}

static const SmtpIoOps tls_io_ops = {
        .name = "tls",
        .read = tls_read,
        .write = tls_write,
        .pending = tls_pending,
        .close = tls_close,
};

int smtpd_tls_io_start(SmtpIo *io, TlsContext *ctx) {
        SSL *ssl;

        ssl = SSL_new(tls_context_ssl_ctx(ctx));
        if (!ssl)
                return -ENOMEM;
        if (SSL_set_fd(ssl, io->fd) != 1) {
                SSL_free(ssl);
                return -ENOMEM;
        }
        SSL_set_accept_state(ssl);
        io->ssl = ssl;
        io->ops = &tls_io_ops;
        io->handshake_done = false;
        io->want = EPOLLIN;
        return 0;
}

int smtpd_tls_io_handshake(SmtpIo *io, char **ret_error) {
        int r, e;

        ERR_clear_error();
        errno = 0;
        r = SSL_do_handshake(io->ssl);
        if (r == 1) {
                io->handshake_done = true;
                io->want = 0;
                return 1;
        }
        e = SSL_get_error(io->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
                io->want = EPOLLIN;
                return 0;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
                io->want = EPOLLOUT;
                return 0;
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
                *ret_error = strdup(errno ? strerror(errno) : "lost connection");
        else if (e == SSL_ERROR_ZERO_RETURN)
                *ret_error = strdup("connection closed by the client");
        else
                *ret_error = tls_error_string("handshake failed");
        return -EPROTO;
}
