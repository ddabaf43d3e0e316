/* smtp-proto.h: the pure protocol pieces of the SMTP and LMTP clients, kept
 * apart from sockets so that unit tests and the fuzz target reach them:
 * reading server replies (multi-line, enhanced status codes), the EHLO
 * keywords, next-hop syntax ("[host]:port", "unix:path", "inet:host:port"),
 * a scan of the message headers (Received: count, MIME facts, 8-bit) and the
 * content encoder that turns queue-file content (LF line ends) into SMTP
 * DATA (CRLF, dot-stuffed, long lines folded, optionally downgraded to
 * quoted-printable for a peer without 8BITMIME). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strutil.h"

/* A reply longer than this (all lines) is a protocol error. */
#define SMTP_REPLY_MAX 16384
#define SMTP_REPLY_LINES_MAX 100

typedef struct SmtpReply {
        unsigned code;          /* 200..599 */
        char dsn[16];           /* enhanced status code of the first line, "" when none */
        char *text;             /* "550 5.1.1 <a@b>: Recipient address rejected", the
                                 * lines joined with a space, their codes dropped */
        char **lines;           /* each line's text after "NNN-" / "NNN " */
        size_t n_lines;
} SmtpReply;

void smtp_reply_done(SmtpReply *r);

/* Feeds one reply line (without CRLF). Returns 1 when the reply is complete
 * (the caller reads *r and calls smtp_reply_done() before the next), 0 when
 * more lines follow, -EBADMSG for a line that is not "NNN", "NNN text" or
 * "NNN-text", a code that changes between lines, or a reply over the
 * limits; -ENOMEM. */
int smtp_reply_feed(SmtpReply *r, const char *line, size_t len);

/* The enhanced status code at the start of text ("5.1.1 ..." -> "5.1.1")
 * into buf; class must agree with the reply code's first digit. Returns
 * true when found. */
bool smtp_parse_dsn(const char *text, unsigned code, char buf[static 16]);

/* The ESMTP extensions a server announced. */
typedef struct SmtpFeatures {
        bool esmtp;             /* EHLO/LHLO succeeded */
        bool pipelining;
        bool size;
        unsigned long long size_limit;  /* 0: none announced */
        bool eightbitmime;
        bool dsn;
        bool smtputf8;
        bool starttls;
        bool enhancedstatuscodes;
} SmtpFeatures;

/* Reads the keywords of an EHLO/LHLO reply (lines after the first). */
void smtp_features_parse(const SmtpReply *r, SmtpFeatures *ret);

typedef enum NexthopKind {
        NEXTHOP_INET,
        NEXTHOP_UNIX,
} NexthopKind;

typedef struct Nexthop {
        NexthopKind kind;
        char *host;             /* domain, host name or address (brackets removed) */
        bool mx;                /* look MX records up for host */
        bool literal;           /* host is a numeric address */
        unsigned port;
        char *path;             /* NEXTHOP_UNIX */
} Nexthop;

void nexthop_done(Nexthop *n);

/* Parses a next hop. SMTP: "domain", "domain:port", "[host]", "[host]:port"
 * ("[...]" suppresses the MX lookup; "[192.0.2.1]" and "[ipv6:2001:db8::1]"
 * are addresses); default port 25. LMTP: "unix:PATH", "inet:host:port",
 * "host:port", "[host]:port", "host"; never MX; default port 24. A port may
 * be a number or one of smtp, submission, submissions, smtps, lmtp.
 * Returns 0 or -EINVAL; -ENOMEM. */
int nexthop_parse(const char *s, bool lmtp, Nexthop *ret);

/* What the headers of a message say. */
typedef struct SmtpHeaderInfo {
        unsigned received;      /* number of Received: headers */
        bool headers_8bit;      /* 8-bit bytes in the header section */
        bool mime_version;
        bool content_type_text; /* Content-Type absent or text/... */
        bool content_type_composite; /* multipart/... or message/... */
        bool cte_identity;      /* Content-Transfer-Encoding absent, 7bit, 8bit or binary */
        size_t header_size;     /* bytes up to and including the empty line (or all) */
} SmtpHeaderInfo;

/* Scans the header section at the start of content (LF line ends). Only
 * the first n bytes are looked at. */
void smtp_headers_scan(const char *content, size_t n, SmtpHeaderInfo *ret);

/* Whether p holds a byte >= 0x80. */
bool smtp_has_8bit(const char *p, size_t n);

typedef struct SmtpEncoder {
        size_t line_limit;      /* fold lines longer than this; 0: never */
        bool downgrade;         /* quoted-printable body, replaced CTE header */
        bool add_mime_version;  /* with downgrade: add MIME-Version: 1.0 */
        bool in_headers;
        bool skipping_header;   /* inside a dropped Content-Transfer-Encoding header */
        StrBuf line;            /* the incomplete line so far */
} SmtpEncoder;

/* Sets up an encoder for a message starting with its headers. */
void smtp_encoder_init(SmtpEncoder *e, size_t line_limit, bool downgrade, bool add_mime_version);
void smtp_encoder_done(SmtpEncoder *e);
/* Encodes n content bytes, appending SMTP DATA bytes to out. Returns 0 or
 * -ENOMEM. */
int smtp_encoder_feed(SmtpEncoder *e, const char *p, size_t n, StrBuf *out);
/* Ends the content (a last line without LF gets CRLF) and appends the
 * ".\r\n" terminator. */
int smtp_encoder_finish(SmtpEncoder *e, StrBuf *out);

/* Appends the RFC 3461 xtext form of s to out. */
int smtp_xtext_append(StrBuf *out, const char *s);
