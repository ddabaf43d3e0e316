/* smtpd-check.c: the minimal relay safety of postern-smtpd until the
 * restriction engine exists: a recipient is accepted when its domain is one
 * of ours (mydestination, virtual alias and mailbox domains), one we relay
 * for (relay_domains), or when the client is in mynetworks or authenticated;
 * otherwise "554 5.7.1 <addr>: Relay access denied", Postfix's
 * permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination.
 * Entry point: smtpd_check_recipient(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "smtpd.h"

bool smtpd_client_in_mynetworks(Smtpd *d, const InetAddr *client) {
        InetAddr v4;
        const InetAddr *a = client;

        if (!client)
                return false;
        /* A v4 client on a dual-stack socket appears as ::ffff:a.b.c.d. */
        if (inet_addr_unmap_v4(client, &v4))
                a = &v4;
        for (size_t i = 0; i < d->settings.n_mynetworks; i++)
                if (inet_prefix_contains(&d->settings.mynetworks[i], a))
                        return true;
        return false;
}

/* Whether domain matches an entry of list: exactly (case-insensitively), or
 * as a subdomain of ".example.com", or of "example.com" when subdomains is
 * set (Postfix's parent_domain_matches_subdomains for relay_domains). */
static bool domain_in_list(char **list, const char *domain, bool subdomains) {
        size_t dlen = strlen(domain);

        STRV_FOREACH(e, list) {
                const char *entry = *e;
                size_t elen;
                if (strchr(entry, ':') || entry[0] == '/')
                        continue;       /* tables: see domain_maps */
                if (strcaseeq(entry, domain))
                        return true;
                if (entry[0] == '.') {
                        entry++;
                        subdomains = true;
                } else if (!subdomains)
                        continue;
                elen = strlen(entry);
                if (dlen > elen + 1 && domain[dlen - elen - 1] == '.' &&
                    strcaseeq(domain + dlen - elen, entry))
                        return true;
        }
        return false;
}

int smtpd_check_recipient(Smtpd *d, const InetAddr *client, const char *sasl_username,
                          const char *rcpt, char **ret_reply) {
        SmtpdSettings *s = &d->settings;
        _cleanup_free_ char *domain = NULL;
        const char *dom;
        int r;

        dom = addr_domain(rcpt);
        /* A bare local part ("<postmaster>") is ours (RFC 5321 4.5.1). */
        if (!dom)
                return 1;
        domain = strdup(dom);
        if (!domain)
                return -ENOMEM;
        if (domain[0] != '[') {
                if (domain_in_list(s->mydestination, domain, false) ||
                    domain_in_list(s->virtual_domains, domain, false) ||
                    domain_in_list(s->relay_domains, domain, true))
                        return 1;
                if (s->domain_maps) {
                        _cleanup_free_ char *v = NULL;
                        ascii_strlower(domain);
                        r = map_list_lookup(s->domain_maps, domain, &v);
                        if (r < 0)
                                return r;       /* never read a failed lookup as "no" */
                        if (r > 0)
                                return 1;
                }
        }
        if (smtpd_client_in_mynetworks(d, client))
                return 1;
        /* permit_sasl_authenticated */
        if (sasl_username)
                return 1;
        *ret_reply = strdup_printf("554 5.7.1 <%s>: Relay access denied", rcpt);
        return *ret_reply ? 0 : -ENOMEM;
}
