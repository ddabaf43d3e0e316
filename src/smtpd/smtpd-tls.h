/* smtpd-tls.h: TLS in postern-smtpd. The session I/O layer (SmtpIo: plain
 * socket operations in smtpd-session.c, TLS operations here on a
 * non-blocking SSL object), the server context built from the smtpd_tls_*
 * parameters (rebuilt on reload; sessions keep the SSL_CTX they started
 * with, OpenSSL counts the references), and the handshake step the session
 * state machine drives. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "tls.h"

typedef enum SmtpdTlsLevel {
        SMTPD_TLS_NONE,
        SMTPD_TLS_MAY,          /* offer STARTTLS */
        SMTPD_TLS_ENCRYPT,      /* require it before mail and AUTH */
} SmtpdTlsLevel;

/* The session I/O layer. */
typedef struct SmtpIo SmtpIo;
typedef struct SmtpIoOps {
        const char *name;
        /* Returns bytes read, 0 at EOF, -EAGAIN when nothing is there,
         * another negative errno on failure. */
        ssize_t (*read)(SmtpIo *io, void *buf, size_t n);
        /* Returns bytes written or -EAGAIN. */
        ssize_t (*write)(SmtpIo *io, const void *buf, size_t n);
        /* Bytes already decrypted and waiting (TLS), 0 for plain sockets. */
        size_t (*pending)(SmtpIo *io);
        void (*close)(SmtpIo *io);
} SmtpIoOps;

struct SmtpIo {
        const SmtpIoOps *ops;
        int fd;
        SSL *ssl;               /* TLS only */
        bool handshake_done;
        bool read_wants_write;  /* SSL_read() needs the socket writable */
        uint32_t want;          /* EPOLLIN/EPOLLOUT the TLS layer waits for */
};

/* Reads the TLS settings of the service from c. *ret_level gets the
 * effective security level (smtpd_tls_security_level, or the obsolete
 * smtpd_enforce_tls / smtpd_use_tls when it is empty); *ret is the context,
 * or NULL when TLS is off (level none without wrapper mode, or level may
 * without a certificate: *ret_error then says so for a warning). Returns 0,
 * or a negative errno with *ret_error (caller frees) for a startup error: a
 * certificate or key that cannot be loaded, bad protocols or ciphers,
 * encrypt or wrapper mode without a certificate. previous passes its ticket
 * keys on (reload). */
int smtpd_tls_context_load(Config *c, const TlsContext *previous, SmtpdTlsLevel *ret_level,
                           TlsContext **ret, char **ret_error);

/* Switches io to TLS over its socket with a new SSL object from ctx.
 * Returns 0 or -ENOMEM (io unchanged). */
int smtpd_tls_io_start(SmtpIo *io, TlsContext *ctx);

/* One step of the server handshake. Returns 1 when it completed, 0 when it
 * waits for the socket (io->want says which way), or a negative errno with
 * the reason in *ret_error (caller frees) for the log. */
int smtpd_tls_io_handshake(SmtpIo *io, char **ret_error);
