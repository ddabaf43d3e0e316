/* smtpd-proto.h: the SMTP protocol of postern-smtpd as pure functions, with
 * no I/O, no clock and no configuration, so that unit tests and the fuzz
 * target drive them directly:
 *
 *   - smtp_line_find(): command line framing (CR LF, tolerated bare LF);
 *   - smtp_verb_parse(), smtp_mail_parse(), smtp_rcpt_parse(),
 *     smtp_bdat_parse(): command and ESMTP parameter syntax, answering the
 *     exact Postfix reply text for each syntax error;
 *   - SmtpDataDecoder: the DATA state machine (end of data only on
 *     CR LF "." CR LF, dot-unstuffing, CR LF and bare LF to LF) and the
 *     BDAT variant without dot handling;
 *   - SmtpContent: splits the decoded message into logical header lines
 *     (unfolded for checks) and body lines, with caps.
 *
 * Replies, the session state machine and the queue live in smtpd-session.c
 * and smtpd-queue.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue-file.h"
#include "strutil.h"

typedef enum SmtpVerb {
        SMTP_VERB_UNKNOWN,
        SMTP_VERB_HELO,
        SMTP_VERB_EHLO,
        SMTP_VERB_MAIL,
        SMTP_VERB_RCPT,
        SMTP_VERB_DATA,
        SMTP_VERB_BDAT,
        SMTP_VERB_RSET,
        SMTP_VERB_NOOP,
        SMTP_VERB_QUIT,
        SMTP_VERB_VRFY,
        SMTP_VERB_EXPN,
        SMTP_VERB_HELP,
        SMTP_VERB_AUTH,
        SMTP_VERB_STARTTLS,
        SMTP_VERB_ETRN,
        _SMTP_VERB_MAX,
} SmtpVerb;

/* Lower-case name of a verb as the disconnect log line counts it ("ehlo");
 * "unknown" for SMTP_VERB_UNKNOWN. */
const char *smtp_verb_name(SmtpVerb v);

/* RFC 2920 3.1: commands that end a pipelined group; a client that sends
 * more after one of them before the reply violates the protocol. */
bool smtp_verb_ends_group(SmtpVerb v);

/* Finds the first line in buf. Returns 1 when a line is complete: its length
 * without CR LF (or bare LF) in *ret_len, the bytes to consume in
 * *ret_consumed, and whether it ended in a bare LF in *ret_bare_lf. Returns
 * 0 when no line end is there yet, and -E2BIG when more than max bytes
 * precede the line end (the caller answers and discards through the next
 * line end). */
int smtp_line_find(const char *buf, size_t len, size_t max, size_t *ret_len, size_t *ret_consumed,
                   bool *ret_bare_lf);

/* Splits a command line (NUL-terminated, no CR LF) into verb and arguments:
 * *ret_args points into line after the blanks following the verb. */
SmtpVerb smtp_verb_parse(const char *line, const char **ret_args);

/* What MAIL FROM carried. */
typedef struct SmtpMailArgs {
        char *sender;           /* canonical, "" for <> */
        unsigned addr_flags;    /* ADDR_FLAG_* */
        uint64_t size;          /* SIZE=, 0 when not declared */
        bool body_8bitmime;
        bool smtputf8;
        QueueRet ret;
        char *envid;            /* xtext as sent, NULL */
        bool auth_seen;         /* AUTH= given (ignored until SASL exists) */
} SmtpMailArgs;

typedef struct SmtpRcptArgs {
        char *address;
        unsigned addr_flags;
        unsigned notify;        /* QUEUE_NOTIFY_* */
        char *orcpt;            /* as sent ("rfc822;..."), NULL */
} SmtpRcptArgs;

void smtp_mail_args_done(SmtpMailArgs *a);
void smtp_rcpt_args_done(SmtpRcptArgs *a);

enum {
        SMTP_PARSE_SMTPUTF8 = 1 << 0,   /* SMTPUTF8 is offered */
        SMTP_PARSE_DSN = 1 << 1,        /* DSN is offered */
        SMTP_PARSE_8BITMIME = 1 << 2,
        SMTP_PARSE_UTF8_SESSION = 1 << 3, /* RCPT: MAIL FROM had SMTPUTF8 */
        SMTP_PARSE_STRICT = 1 << 4,     /* strict_rfc821_envelopes: <address> only */
};

/* Parses the arguments of MAIL ("FROM:<a@b> SIZE=10 ..."). Returns 0 and
 * fills *ret, or a negative errno (-ENOMEM, or -EINVAL with the complete
 * reply for the client in *ret_reply, static). Without SMTP_PARSE_DSN the
 * DSN parameters are refused as Postfix does when DSN is not announced
 * ("501 5.7.1 DSN support is disabled"). */
int smtp_mail_parse(const char *args, unsigned flags, SmtpMailArgs *ret, const char **ret_reply);
/* Same for RCPT ("TO:<a@b> NOTIFY=... ORCPT=..."). */
int smtp_rcpt_parse(const char *args, unsigned flags, SmtpRcptArgs *ret, const char **ret_reply);
/* Parses "SIZE [LAST]" of BDAT (RFC 3030). Returns 0 or -EINVAL with the
 * reply in *ret_reply. */
int smtp_bdat_parse(const char *args, uint64_t *ret_size, bool *ret_last, const char **ret_reply);

typedef enum SmtpDataState {
        SMTP_DATA_SOL,          /* start of a line reached by CR LF (or the first line) */
        SMTP_DATA_SOL_LF,       /* start of a line reached by a bare LF */
        SMTP_DATA_TEXT,         /* inside a line */
        SMTP_DATA_CR,           /* inside a line, after a CR */
        SMTP_DATA_DOT,          /* "." at the start of a CR LF line */
        SMTP_DATA_DOT_CR,       /* "." CR at the start of a CR LF line */
        SMTP_DATA_END,          /* CR LF "." CR LF seen */
} SmtpDataState;

typedef struct SmtpDataDecoder {
        SmtpDataState state;
        bool bdat;              /* no dot handling, no end marker */
        bool bare_lf;           /* a bare LF was seen */
        bool bare_cr;           /* a bare CR was seen */
} SmtpDataDecoder;

/* Starts decoding a DATA body (bdat false) or a BDAT message (bdat true;
 * the chunks of one message share the decoder). */
void smtp_data_decoder_init(SmtpDataDecoder *d, bool bdat);

/* Decodes up to n bytes of in, appending message text with LF line ends to
 * out. Returns the number of bytes consumed; in DATA mode it stops right
 * after the end-of-data line, and d->state is SMTP_DATA_END then. The one
 * way to end the message is CR LF "." CR LF (RFC 5321 4.1.1.4): a bare LF or
 * CR never helps to form it, whatever precedes (SMTP smuggling,
 * CVE-2023-51764). Returns -ENOMEM when out cannot grow. */
int smtp_data_decode(SmtpDataDecoder *d, const char *in, size_t n, StrBuf *out);

/* Ends a BDAT message: a CR left pending at the end of the last chunk goes
 * to out. */
int smtp_data_decoder_finish(SmtpDataDecoder *d, StrBuf *out);

/* Callbacks of SmtpContent. A negative return stops feeding and is
 * returned by smtp_content_feed(). */
typedef struct SmtpContentOps {
        /* One logical header: raw text with its continuation lines joined by
         * LF, no final LF (len bytes, NUL-terminated), and the same unfolded
         * (LF and the CR before it removed) for checks. truncated: the header
         * exceeded the cap and was cut. */
        int (*header)(void *userdata, const char *raw, size_t len, const char *unfolded,
                      bool truncated);
        /* The header section ended (by an empty line or a first non-header
         * line; the separating empty line is not passed on). */
        int (*end_of_headers)(void *userdata);
        /* A body line or a piece of a long one (no LF): first says it starts
         * a line, eol that it ends one. */
        int (*body)(void *userdata, const char *text, size_t len, bool first, bool eol);
} SmtpContentOps;

typedef struct SmtpContent {
        const SmtpContentOps *ops;
        void *userdata;
        size_t header_max;      /* cap of one logical header (header_size_limit) */
        size_t line_max;        /* body pieces are at most this long */
        bool in_body;
        bool in_line;           /* a body line was started and not ended */
        bool header_truncated;
        StrBuf header;          /* current logical header, raw */
        StrBuf line;            /* partial line carried between feeds */
} SmtpContent;

void smtp_content_init(SmtpContent *c, const SmtpContentOps *ops, void *userdata,
                       size_t header_max, size_t line_max);
/* Feeds decoded text (LF line ends). */
int smtp_content_feed(SmtpContent *c, const char *text, size_t len);
/* Flushes what is pending at the end of the message. */
int smtp_content_finish(SmtpContent *c);
void smtp_content_done(SmtpContent *c);

/* Whether the line starts like an RFC 5322 header field ("Name:"). */
bool smtp_is_header(const char *line, size_t len);
