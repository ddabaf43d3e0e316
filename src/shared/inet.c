/* inet.c: numeric IPv4/IPv6 addresses and CIDR prefixes (see inet.h).
 * Parsing leans on inet_pton(), which takes only the canonical dotted quad
 * for IPv4 (no "10.1", no octal) and RFC 4291 text for IPv6. Prefix text
 * follows Postfix's cidr_table(5): optional brackets, a decimal length,
 * and no host bits past the length unless the caller allows them. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "inet.h"
#include "strutil.h"

unsigned inet_family_bits(int family) {
        switch (family) {
        case AF_INET:
                return 32;
        case AF_INET6:
                return 128;
        default:
                return 0;
        }
}

static int addr_parse_n(const char *s, size_t n, InetAddr *ret) {
        _cleanup_free_ char *copy = NULL;
        InetAddr a = {0};

        /* The longest IPv6 text (with an embedded IPv4 tail) is 45 bytes;
         * anything longer is not an address, whatever inet_pton thinks. */
        if (n == 0 || n > 64)
                return -EINVAL;
        copy = strndup(s, n);
        if (!copy)
                return -ENOMEM;
        if (strlen(copy) != n)          /* embedded NUL */
                return -EINVAL;
        a.family = strchr(copy, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(a.family, copy, a.bytes) != 1)
                return -EINVAL;
        *ret = a;
        return 0;
}

int inet_addr_parse(const char *s, InetAddr *ret) {
        return addr_parse_n(s, strlen(s), ret);
}

int inet_addr_parse_bracketed(const char *s, InetAddr *ret) {
        size_t n = strlen(s);

        if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
                return addr_parse_n(s + 1, n - 2, ret);
        return addr_parse_n(s, n, ret);
}

void inet_addr_mask(InetAddr *a, unsigned prefixlen) {
        unsigned bits = inet_family_bits(a->family);

        for (unsigned i = 0; i < bits / 8; i++) {
                unsigned first = i * 8;
                if (first >= prefixlen)
                        a->bytes[i] = 0;
                else if (prefixlen - first < 8)
                        a->bytes[i] &= (uint8_t) (0xffu << (8 - (prefixlen - first)));
        }
}

static int prefix_fail(InetPrefixError e, InetPrefixError *ret_error) {
        if (ret_error)
                *ret_error = e;
        return -EINVAL;
}

int inet_prefix_parse(const char *s, bool allow_host_bits, InetPrefix *ret,
                      InetPrefixError *ret_error) {
        const char *net, *mask = NULL;
        size_t net_len, mask_len = 0;
        InetPrefix p = {0};
        int r;

        if (!s || !*s)
                return prefix_fail(INET_PREFIX_EMPTY, ret_error);

        if (*s == '[') {
                const char *close = strchr(s + 1, ']');
                if (!close)
                        return prefix_fail(INET_PREFIX_MISSING_BRACKET, ret_error);
                if (close[1] != 0 && close[1] != '/')
                        return prefix_fail(INET_PREFIX_AFTER_BRACKET, ret_error);
                net = s + 1;
                if (close[1] == '/') {
                        /* "[addr]/len" */
                        net_len = (size_t) (close - net);
                        mask = close + 2;
                        mask_len = strlen(mask);
                } else {
                        /* "[addr]" or "[addr/len]" */
                        const char *slash = memchr(net, '/', (size_t) (close - net));
                        if (slash) {
                                net_len = (size_t) (slash - net);
                                mask = slash + 1;
                                mask_len = (size_t) (close - mask);
                        } else
                                net_len = (size_t) (close - net);
                }
        } else {
                const char *slash = strchr(s, '/');
                net = s;
                if (slash) {
                        net_len = (size_t) (slash - s);
                        mask = slash + 1;
                        mask_len = strlen(mask);
                } else
                        net_len = strlen(s);
        }

        if (!mask) {
                r = addr_parse_n(net, net_len, &p.addr);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return prefix_fail(INET_PREFIX_BAD_ADDRESS, ret_error);
                p.prefixlen = inet_family_bits(p.addr.family);
        } else {
                unsigned long len = 0;

                if (mask_len == 0)
                        return prefix_fail(INET_PREFIX_BAD_MASK, ret_error);
                for (size_t i = 0; i < mask_len; i++) {
                        if (mask[i] < '0' || mask[i] > '9')
                                return prefix_fail(INET_PREFIX_BAD_MASK, ret_error);
                        if (len <= 1000)        /* saturate: anything this big is too long */
                                len = len * 10 + (unsigned long) (mask[i] - '0');
                }
                r = addr_parse_n(net, net_len, &p.addr);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return prefix_fail(INET_PREFIX_BAD_NETWORK, ret_error);
                if (len > inet_family_bits(p.addr.family))
                        return prefix_fail(INET_PREFIX_BAD_LENGTH, ret_error);
                p.prefixlen = (unsigned) len;
        }
        {
                InetAddr masked = p.addr;
                inet_addr_mask(&masked, p.prefixlen);
                if (memcmp(masked.bytes, p.addr.bytes, sizeof(masked.bytes)) != 0) {
                        p.addr = masked;
                        if (!allow_host_bits) {
                                *ret = p;
                                return prefix_fail(INET_PREFIX_HOST_BITS, ret_error);
                        }
                }
        }
        *ret = p;
        if (ret_error)
                *ret_error = INET_PREFIX_OK;
        return 0;
}

const char *inet_prefix_error_to_string(InetPrefixError e) {
        static const char *const table[_INET_PREFIX_ERROR_MAX] = {
                [INET_PREFIX_OK] = "no error",
                [INET_PREFIX_EMPTY] = "no address pattern",
                [INET_PREFIX_BAD_ADDRESS] = "bad address pattern",
                [INET_PREFIX_BAD_NETWORK] = "bad network value",
                [INET_PREFIX_BAD_MASK] = "bad mask value",
                [INET_PREFIX_BAD_LENGTH] = "bad mask length",
                [INET_PREFIX_HOST_BITS] = "non-null host address bits",
                [INET_PREFIX_MISSING_BRACKET] = "missing ']' character",
                [INET_PREFIX_AFTER_BRACKET] = "garbage after ']'",
        };
        if ((unsigned) e >= _INET_PREFIX_ERROR_MAX)
                return "unknown error";
        return table[e];
}

bool inet_prefix_contains(const InetPrefix *p, const InetAddr *a) {
        unsigned full, rest;

        if (p->addr.family != a->family)
                return false;
        full = p->prefixlen / 8;
        rest = p->prefixlen % 8;
        if (memcmp(p->addr.bytes, a->bytes, full) != 0)
                return false;
        if (rest) {
                uint8_t m = (uint8_t) (0xffu << (8 - rest));
                if ((a->bytes[full] & m) != p->addr.bytes[full])
                        return false;
        }
        return true;
}

bool inet_addr_unmap_v4(const InetAddr *a, InetAddr *ret) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

        if (a->family != AF_INET6 || memcmp(a->bytes, mapped, sizeof(mapped)) != 0)
                return false;
        if (ret) {
                InetAddr v4 = {.family = AF_INET};
                memcpy(v4.bytes, a->bytes + 12, 4);
                *ret = v4;
        }
        return true;
}

char *inet_addr_to_string(const InetAddr *a) {
        char buf[INET6_ADDRSTRLEN];

        if (inet_family_bits(a->family) == 0)
                return NULL;
        if (!inet_ntop(a->family, a->bytes, buf, sizeof(buf)))
                return NULL;
        return strdup(buf);
}

char *inet_prefix_to_string(const InetPrefix *p) {
        _cleanup_free_ char *a = inet_addr_to_string(&p->addr);
        if (!a)
                return NULL;
        return strdup_printf("%s/%u", a, p->prefixlen);
}
