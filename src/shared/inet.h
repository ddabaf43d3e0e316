/* inet.h: numeric IPv4 and IPv6 addresses and CIDR prefixes. Parses
 * addresses ("192.0.2.1", "2001:db8::1") and prefixes ("192.0.2.0/24",
 * "[2001:db8::]/32", "[2001:db8::/32]", a bare address meaning all bits),
 * formats them back, and matches an address against a prefix. Used by the
 * cidr: lookup table and by mynetworks-style address lists. Host names,
 * interface zones ("fe80::1%eth0") and the old shorthand forms inet_aton()
 * accepts ("10.1") are not addresses here. Nothing here allocates except
 * the formatting helpers. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct InetAddr {
        int family;             /* AF_INET or AF_INET6 */
        uint8_t bytes[16];      /* network byte order; IPv4 uses the first 4 */
} InetAddr;

typedef struct InetPrefix {
        InetAddr addr;          /* the network: bits past prefixlen are zero */
        unsigned prefixlen;     /* 0..32 or 0..128 */
} InetPrefix;

/* Why a prefix did not parse; see inet_prefix_error_to_string(). */
typedef enum InetPrefixError {
        INET_PREFIX_OK,
        INET_PREFIX_EMPTY,              /* nothing to parse */
        INET_PREFIX_BAD_ADDRESS,        /* no "/len" and not an address */
        INET_PREFIX_BAD_NETWORK,        /* the part before "/" is not an address */
        INET_PREFIX_BAD_MASK,           /* the part after "/" is not decimal digits */
        INET_PREFIX_BAD_LENGTH,         /* longer than the address */
        INET_PREFIX_HOST_BITS,          /* bits set past the prefix length */
        INET_PREFIX_MISSING_BRACKET,    /* "[" without "]" */
        INET_PREFIX_AFTER_BRACKET,      /* text other than "/len" after "]" */
        _INET_PREFIX_ERROR_MAX,
} InetPrefixError;

/* Returns the number of address bits of family: 32, 128, or 0. */
unsigned inet_family_bits(int family);

/* Parses a numeric address without brackets. The family follows from the
 * text: a ':' means IPv6. Returns 0, or -EINVAL when s is not an address. */
int inet_addr_parse(const char *s, InetAddr *ret);

/* Like inet_addr_parse() but also accepts "[address]". */
int inet_addr_parse_bracketed(const char *s, InetAddr *ret);

/* Parses "addr", "addr/len", "[addr]", "[addr]/len" or "[addr/len]". A bare
 * address is a prefix of all its bits. With allow_host_bits, bits past the
 * prefix length are cleared; without, they are an error
 * (INET_PREFIX_HOST_BITS) and *ret still receives the cleared network so
 * that the caller can suggest it. Returns 0, or -EINVAL with *ret_error
 * (may be NULL) saying why. */
int inet_prefix_parse(const char *s, bool allow_host_bits, InetPrefix *ret,
                      InetPrefixError *ret_error);

/* A short English description of e ("bad mask length"). Static string. */
const char *inet_prefix_error_to_string(InetPrefixError e);

/* Whether a lies in p. Addresses of another family never match. */
bool inet_prefix_contains(const InetPrefix *p, const InetAddr *a);

/* Clears all bits of a past the first prefixlen. */
void inet_addr_mask(InetAddr *a, unsigned prefixlen);

/* Whether a is an IPv4-mapped IPv6 address (::ffff:192.0.2.1); when it is
 * and ret is not NULL, *ret receives the IPv4 address. */
bool inet_addr_unmap_v4(const InetAddr *a, InetAddr *ret);

/* Formats a as text ("192.0.2.1", "2001:db8::1") or p as "net/len".
 * Caller frees; NULL when out of memory or the family is unknown. */
char *inet_addr_to_string(const InetAddr *a);
char *inet_prefix_to_string(const InetPrefix *p);
