/* addr.h: RFC 5321 envelope addresses. addr_parse_path() reads the path of a
 * MAIL FROM or RCPT TO command ("<a@b>", "<>", "<@relay:a@b>", or the bare
 * "a@b" Postfix accepts when strict RFC 821 envelopes are off) and returns
 * the address in its canonical external form: source routes stripped, a
 * needlessly quoted local part unquoted, the trailing dot of the domain
 * removed. Helpers answer the domain part and whether an address is 8-bit.
 * Nothing here looks at DNS or configuration. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.3: a path is at most 256 octets including the brackets. */
#define ADDR_PATH_MAX 256

enum {
        ADDR_PARSE_ALLOW_EMPTY = 1 << 0,        /* "<>" is valid (reverse path) */
        ADDR_PARSE_ALLOW_8BIT = 1 << 1,         /* UTF-8 in local part and domain (SMTPUTF8) */
        ADDR_PARSE_STRICT = 1 << 2,             /* require the angle brackets */
};

enum {
        ADDR_FLAG_8BIT = 1 << 0,                /* the address has non-ASCII bytes */
        ADDR_FLAG_NO_DOMAIN = 1 << 1,           /* local part only ("<postmaster>") */
        ADDR_FLAG_IP_LITERAL = 1 << 2,          /* domain is [addr] or [IPv6:addr] */
};

/* Parses the path at the start of s (leading blanks skipped). On success
 * returns 0, stores the canonical address in *ret_addr (caller frees; "" for
 * the null sender), ADDR_FLAG_* bits in *ret_flags (may be NULL) and in
 * *ret_rest (may be NULL) a pointer just after the path, at the ESMTP
 * parameters. Returns -EINVAL for bad syntax (including 8-bit bytes without
 * ADDR_PARSE_ALLOW_8BIT: use addr_has_8bit() first to tell the cases apart),
 * -E2BIG for a path longer than ADDR_PATH_MAX, -ENOMEM. */
int addr_parse_path(const char *s, unsigned parse_flags, char **ret_addr, unsigned *ret_flags,
                    const char **ret_rest);

/* The domain part of a canonical address (after the last '@' outside
 * quotes), borrowed from addr; NULL when there is none. */
const char *addr_domain(const char *addr);

/* Whether s (up to its NUL) has any byte >= 0x80. */
bool addr_has_8bit(const char *s);

/* Whether s is a valid domain name (LDH labels; UTF-8 labels when
 * allow_8bit) or address literal. A trailing dot is accepted. */
bool addr_domain_valid(const char *s, size_t len, bool allow_8bit);

/* Decodes RFC 3461 xtext ("a+2Bb" -> "a+b") into a new string (caller frees).
 * Returns 0, -EINVAL for bad encoding or bytes outside 33..126, -ENOMEM. */
int addr_xtext_decode(const char *s, char **ret);
/* Whether s is valid xtext. */
bool addr_xtext_valid(const char *s);
/* Encodes s as RFC 3461 xtext ("a+b" -> "a+2Bb") into a new string (caller
 * frees). Returns 0 or -ENOMEM. */
int addr_xtext_encode(const char *s, char **ret);

/* The external form of an internal address (local part unquoted, domain
 * after the last "@"): the local part in double quotes when it is not a
 * dot-atom ("a b"@x). A new string, NULL when out of memory. */
char *addr_quote_local(const char *addr);

/* One address of an RFC 5322 address list in a header (From:, To:, ...):
 * the addr-spec's place in the parsed text and the address in internal
 * form (quotes of the local part removed, comments and blanks dropped;
 * "user" when it has no domain). */
typedef struct AddrHeaderItem {
        size_t start, len;
        char *addr;
} AddrHeaderItem;

/* Parses the header value [s, s+len) (folded lines allowed) as an address
 * list: display names, angle brackets, comments, quoted strings, groups
 * ("name: a, b;"), obsolete source routes. Empty elements and "<>" yield no
 * item; an addr-spec with a comment inside yields none either (it could
 * not be replaced without losing the comment). Returns 0 with the items in
 * *ret (addr_header_items_free()), -EINVAL when the text is not an address
 * list, -ENOMEM. */
int addr_header_parse(const char *s, size_t len, AddrHeaderItem **ret, size_t *ret_n);
void addr_header_items_free(AddrHeaderItem *items, size_t n);
