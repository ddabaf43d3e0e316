/* dns.h: asynchronous DNS lookups with c-ares, driven by an sd-event loop.
 * A DnsResolver owns one c-ares channel whose sockets and timeouts become
 * sd-event sources; dns_query() starts a lookup of one name and type and
 * calls back from the loop with the parsed records. Record types: A, AAAA,
 * MX and TLSA (the SMTP client, TLSA for DANE), PTR and TXT (the
 * restriction engine: reverse lookups and DNSBLs, with dns_reverse_name()
 * building the query names).
 *
 * Lookups have the three outcomes of every postern lookup: > 0 records
 * found, 0 the name or the type does not exist (NXDOMAIN or NODATA, told
 * apart by DnsAnswer.nxdomain), < 0 the lookup failed (-EAGAIN for a
 * temporary failure: SERVFAIL, REFUSED, timeout). A failed lookup is never
 * "not found".
 *
 * dns_hosts_name() and dns_hosts_addrs() read the hosts file (/etc/hosts),
 * which the C library consults before DNS ("hosts: files dns"): the
 * SMTP server looks client names up there first, as Postfix does through
 * getnameinfo(). They read a small local file, synchronously.
 *
 * DNSSEC: postern does not validate signatures itself. With
 * dns_resolver_set_dnssec() every query carries the AD bit (RFC 6840 5.7),
 * which asks the resolver in front of us (it must validate, and the path to
 * it must be trusted: loopback) to say whether the answer was validated;
 * DnsAnswer.secure reports that bit. A "bogus" answer comes back from a
 * validating resolver as SERVFAIL, a temporary failure here. This is what
 * DANE (RFC 7672) needs, and what Postfix's smtp_dns_support_level = dnssec
 * does.
 *
 * Left out: search lists (names are absolute), caching beyond what the
 * resolver in front of us does. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "cleanup.h"
#include "inet.h"

typedef enum DnsType {
        DNS_TYPE_A = 1,
        DNS_TYPE_PTR = 12,
        DNS_TYPE_MX = 15,
        DNS_TYPE_TXT = 16,
        DNS_TYPE_AAAA = 28,
        DNS_TYPE_TLSA = 52,
} DnsType;

typedef struct DnsRecord {
        DnsType type;
        uint32_t ttl;           /* A, AAAA and TLSA; 0 where c-ares does not tell */
        unsigned preference;    /* MX */
        char *name;             /* MX exchange ("" for the root: a null MX), PTR target */
        char *text;             /* TXT: the strings of one record, concatenated */
        InetAddr addr;          /* A, AAAA */
        uint8_t usage;          /* TLSA (RFC 6698 2.1): certificate usage, */
        uint8_t selector;       /* selector, */
        uint8_t mtype;          /* matching type, */
        uint8_t *data;          /* and the association data */
        size_t data_len;
} DnsRecord;

typedef struct DnsAnswer {
        const char *name;       /* the name asked for (borrowed) */
        DnsType type;
        DnsRecord *records;
        size_t n_records;
        bool nxdomain;          /* with 0 records: the name does not exist at all */
        bool secure;            /* the resolver validated the answer (AD bit), also of
                                 * NXDOMAIN and NODATA; only with dnssec enabled */
        const char *error;      /* with a failure: the resolver's text ("Timeout while
                                 * contacting DNS servers"), static */
} DnsAnswer;

typedef struct DnsResolver DnsResolver;
typedef struct DnsQuery DnsQuery;

/* Called once per query from the event loop with r as described above; the
 * answer (and its records) is borrowed for the duration of the call. The
 * query is freed after the callback returns. */
typedef void (*DnsCallback)(DnsQuery *q, int r, const DnsAnswer *answer, void *userdata);

/* Creates a resolver on event. servers is a c-ares server list
 * ("127.0.0.1", "127.0.0.1:5353,[::1]:53") or NULL/"" for the servers of
 * /etc/resolv.conf. timeout_ms and tries (0: the c-ares defaults) bound
 * each lookup. Returns 0, -EINVAL for a bad server list, -ENOMEM, -EIO. */
int dns_resolver_new(sd_event *event, const char *servers, unsigned timeout_ms, unsigned tries,
                     DnsResolver **ret);
/* Stops all lookups (their callbacks are not called) and frees. */
DnsResolver *dns_resolver_free(DnsResolver *r);
DEFINE_CLEANUP_FUNC(DnsResolver, dns_resolver_free);

/* With on, later queries ask for DNSSEC validation status (the AD bit); off
 * (the default) never reports an answer as secure. */
void dns_resolver_set_dnssec(DnsResolver *r, bool on);

/* Number of lookups in progress. */
unsigned dns_resolver_pending(const DnsResolver *r);

/* Starts a lookup of name (absolute, without search list; a trailing dot is
 * fine). *ret (may be NULL) receives a handle for dns_query_cancel(), valid
 * until the callback runs. Returns 0, -EINVAL for an empty or overlong
 * name, -ENOMEM. */
int dns_query(DnsResolver *r, const char *name, DnsType type, DnsCallback cb, void *userdata,
              DnsQuery **ret);
/* Cancels a lookup in progress: its callback will not be called. Returns
 * NULL. */
DnsQuery *dns_query_cancel(DnsQuery *q);

/* The reverse name of an address followed by suffix: for 192.0.2.1 and
 * "in-addr.arpa" (or a DNSBL zone) "1.2.0.192.in-addr.arpa", for IPv6 the
 * nibble form. suffix NULL selects in-addr.arpa / ip6.arpa. Caller frees;
 * NULL on out of memory or an unknown family. */
char *dns_reverse_name(const InetAddr *a, const char *suffix);

/* The first host name the hosts file gives for address a (the canonical
 * name of the first line listing a). Returns 1 with *ret (caller frees), 0
 * when a is not listed or the file does not exist, -ENOMEM. path NULL
 * selects /etc/hosts. */
int dns_hosts_name(const char *path, const InetAddr *a, char **ret);
/* The addresses of family (AF_INET or AF_INET6) the hosts file lists for
 * name (compared without case, a trailing dot ignored), in file order.
 * Returns their number (0: none, *ret NULL) with *ret (caller frees),
 * -ENOMEM. */
int dns_hosts_addrs(const char *path, const char *name, int family, InetAddr **ret);

/* Parses a raw DNS response (header, question, answer section) of a
 * lookup of a->type into a (a->type preset, the rest zeroed): the records
 * of that type, nxdomain, and secure from the AD bit. Returns the number of
 * records, 0 for NXDOMAIN or NODATA, -EAGAIN for a server failure rcode,
 * -EBADMSG for a malformed message, -ENOMEM; on failure a holds no records.
 * dns_answer_done() frees the records. */
int dns_answer_parse(const uint8_t *buf, size_t len, DnsAnswer *a);
void dns_answer_done(DnsAnswer *a);

/* "A", "MX", ... (static). */
const char *dns_type_to_string(DnsType t);
