/* addr-class.h: address classes and recipient validation, the part of
 * Postfix's trivial-rewrite resolver that both the SMTP server (relay
 * control, unknown recipients) and the queue manager (transport choice)
 * need. An AddrClassifier, built from a Config, answers for a recipient:
 *
 *   - its resolved form: user%remote@local becomes user@remote when
 *     allow_percent_hack is on, site!user@local becomes user@site when
 *     swap_bangpath is on, and a quoted "user@remote"@local is resolved by
 *     its dequoted local part (resolve_dequoted_address); the rewriting only
 *     happens below a local domain, as in Postfix;
 *   - its class: local (mydestination, or a [literal] of inet_interfaces or
 *     proxy_interfaces), virtual alias domain, virtual mailbox domain, relay
 *     domain (relay_domains) or default (everything else);
 *   - whether it is "routed": a non-local destination whose local part still
 *     holds '@', '!' or '%' (relaying through us to a third host), which
 *     relay control never authorizes;
 *   - whether the recipient is listed (local_recipient_maps,
 *     virtual_alias_maps, virtual_mailbox_maps, relay_recipient_maps).
 *
 * DomainList is the matcher behind mydestination, relay_domains and the
 * virtual domain lists: names, ".parent" patterns, parent-domain matching
 * where parent_domain_matches_subdomains says so, type:table entries and
 * /file/name entries.
 *
 * Lookups follow the three outcomes: > 0 yes, 0 no, < 0 a table failed (the
 * caller defers; never read as "no"). Left out: canonical and virtual
 * alias expansion (address rewriting belongs to the cleanup step), and
 * transport_maps. */
#pragma once

#include <stdbool.h>

#include "cleanup.h"
#include "conf.h"
#include "diag.h"
#include "inet.h"

typedef enum AddrClass {
        ADDR_CLASS_LOCAL,
        ADDR_CLASS_VIRTUAL_ALIAS,
        ADDR_CLASS_VIRTUAL_MAILBOX,
        ADDR_CLASS_RELAY,
        ADDR_CLASS_DEFAULT,
        _ADDR_CLASS_MAX,
} AddrClass;

/* "local", "virtual alias", "virtual mailbox", "relay", "default" (static). */
const char *addr_class_to_string(AddrClass c);

typedef struct DomainList DomainList;

/* Builds a matcher from list entries (borrowed). parent_match selects
 * Postfix's parent_domain_matches_subdomains behaviour ("example.com" also
 * matches "sub.example.com"); ".example.com" always matches subdomains.
 * Tables open with MAP_FLAG_FOLD_KEYS; problems go into diags. Returns 0 or
 * a negative errno (-ENOENT for a missing /file/name). */
int domain_list_new(char * const *entries, bool parent_match, Diag *diags, DomainList **ret);
/* > 0 domain matches, 0 not, < 0 a table failed. */
int domain_list_match(DomainList *l, const char *domain);
/* Whether the list is empty. */
bool domain_list_empty(const DomainList *l);
DomainList *domain_list_free(DomainList *l);
DEFINE_CLEANUP_FUNC(DomainList, domain_list_free);

typedef struct AddrClassifier AddrClassifier;

/* Builds a classifier from the configuration (kept referenced). Returns 0,
 * -EINVAL when a table could not be opened (reported in diags), -ENOMEM. */
int addr_classifier_new(Config *c, Diag *diags, AddrClassifier **ret);
AddrClassifier *addr_classifier_free(AddrClassifier *a);
DEFINE_CLEANUP_FUNC(AddrClassifier, addr_classifier_free);

typedef struct AddrResolved {
        char *address;          /* resolved address, "user@domain" or "user" */
        char *localpart;        /* unquoted local part */
        char *domain;           /* lower-cased, trailing dot removed; "" for none */
        AddrClass klass;
        bool routed;            /* non-local with '@', '!' or '%' left in the local part */
        bool rewritten;         /* percent hack, bang path or dequoting changed it */
} AddrResolved;

void addr_resolved_done(AddrResolved *r);

/* Resolves addr (canonical form as addr_parse_path() returns it). A bare
 * local part gets @$myorigin first. Returns 0 with *ret filled (free it
 * with addr_resolved_done()), < 0 when a domain table failed or out of
 * memory. */
int addr_resolve(AddrClassifier *a, const char *addr, AddrResolved *ret);

/* The class of a domain (lower case, no trailing dot, or "[literal]").
 * Returns 0 with *ret set, < 0 when a table failed. */
int addr_domain_class(AddrClassifier *a, const char *domain, AddrClass *ret);

/* Whether this host receives mail for the [literal] of addr (an address of
 * inet_interfaces or proxy_interfaces). */
bool addr_is_own_address(AddrClassifier *a, const InetAddr *addr);

/* Whether the resolved recipient is listed for its class. > 0 listed (or
 * the class has no table to check: validation is off), 0 unknown with
 * *ret_table (static, may be NULL) naming the table kind for the reply
 * ("local recipient", "virtual alias", "virtual mailbox", "relay
 * recipient") and *ret_code the configured reject code, < 0 a table failed. */
int addr_recipient_listed(AddrClassifier *a, const AddrResolved *r, const char **ret_table,
                          int *ret_code);
