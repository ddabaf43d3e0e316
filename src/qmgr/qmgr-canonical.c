/* qmgr-canonical.c: canonical address mapping (canonical(5)), done once
 * when a message first leaves incoming/, before virtual alias expansion,
 * as Postfix's cleanup does it on the way into the queue. A message that
 * postsuper -r requeued is mapped again.
 *
 * Tables: sender_canonical_maps for senders, recipient_canonical_maps for
 * recipients, then canonical_maps for both, each for the classes its
 * *_canonical_classes parameter names (envelope_sender,
 * envelope_recipient, header_sender, header_recipient). A result is looked
 * up again until it maps to itself or no table has it (at most
 * CANON_MAX_ROUNDS rounds).
 *
 * Lookup order per address: "user+ext@domain", "user@domain" (when
 * recipient_delimiter splits off an extension), then "user+ext" and "user"
 * when the domain is local ($myorigin, $myhostname, $mydestination), then
 * "@domain". A result "@other" keeps the local part (user+ext@other); a
 * result without a domain gets @$myorigin. A match found without the
 * extension gets it back when propagate_unmatched_extensions names
 * canonical.
 *
 * Envelope: the sender (not the null sender) and every pending recipient
 * that is not the result of an alias expansion. A recipient that changes
 * keeps the address as received ("canon=", logged as orig_to= and passed
 * on as the original recipient, X-Original-To:); when it came without
 * ORCPT it gets "rfc822;ORIGINAL" as its ORCPT, so delivery status
 * notifications and the next hop still see the address as sent.
 *
 * Headers: From, Sender, Reply-To, Errors-To, Return-Receipt-To,
 * Resent-From, Resent-Sender, Resent-Reply-To (header_sender); To, Cc, Bcc,
 * Apparently-To, Resent-To, Resent-Cc, Resent-Bcc (header_recipient). Each
 * is parsed as an address list (addr_header_parse()) and only the
 * addr-specs change; a header that does not parse is left alone. An
 * address without a domain gets @$myorigin first. Mail whose client did
 * not match local_header_rewrite_clients (QUEUE_FLAG_REMOTE_HEADERS) keeps
 * its headers unless remote_header_rewrite_domain is set; then that
 * domain completes addresses without one. Other headers (Received:) are
 * never touched.
 *
 * A failed lookup fails the whole pass: the message stays in incoming/
 * and is tried again later, never passed on unmapped. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "log.h"
#include "qmgr.h"

#define CANON_MAX_ROUNDS 10

static int domain_is_local(const char *domain, void *userdata) {
        return qmgr_domain_is_local(userdata, domain);
}

/* One lookup of addr in maps in canonical(5) order. Returns 1 with the
 * new address in *ret, 0 when no key matched, < 0 on a table failure. */
static int canon_lookup(Qmgr *q, MapList *maps, const char *addr, char **ret) {
        const char *at = strrchr(addr, '@');
        size_t local_len = at ? (size_t) (at - addr) : strlen(addr);
        /* Where the extension starts, for a key that matched without it. */
        size_t ext = strcspn(addr, q->settings.recipient_delimiter);
        _cleanup_free_ char *value = NULL;
        _cleanup_strv_free_ char **items = NULL;
        _cleanup_(strbuf_done) StrBuf out = {0};
        MapAddrKey key;
        bool stripped;
        const char *res, *res_at;
        int r;

        *ret = NULL;
        r = map_list_lookup_addr(maps, addr, q->settings.recipient_delimiter, domain_is_local, q,
                                 &value, &key);
        if (r <= 0 || !value)
                return r < 0 ? r : 0;
        stripped = key == MAP_ADDR_NOEXT || key == MAP_ADDR_LOCAL_NOEXT;

        /* Canonical mapping is one to one: the first address counts. */
        r = str_split_list(value, false, &items);
        if (r < 0)
                return r;
        if (!items || !items[0])
                return 0;
        if (items[1])
                log_warning("canonical mapping of %s: \"%s\" has more than one address; "
                            "using the first", addr, value);
        res = items[0];
        if (*res == '@') {
                /* "@other": the user (with any extension) at another domain. */
                r = strbuf_printf(&out, "%.*s%s", (int) local_len, addr, res);
        } else {
                res_at = strrchr(res, '@');
                size_t res_local = res_at ? (size_t) (res_at - res) : strlen(res);
                if (stripped && q->settings.propagate_canonical)
                        r = strbuf_printf(&out, "%.*s%.*s", (int) res_local, res,
                                          (int) (local_len - ext), addr + ext);
                else
                        r = strbuf_append(&out, res, res_local);
                if (r >= 0)
                        r = strbuf_printf(&out, "@%s", res_at ? res_at + 1 : q->settings.myorigin);
        }
        if (r < 0)
                return -ENOMEM;
        *ret = strbuf_steal(&out);
        return *ret ? 1 : -ENOMEM;
}

/* Maps *addr through maps until it stays the same. Returns 1 when it
 * changed, 0 when not, < 0 on failure. */
static int canon_map(Qmgr *q, MapList *maps, char **addr) {
        bool changed = false;

        for (unsigned round = 0; round < CANON_MAX_ROUNDS; round++) {
                _cleanup_free_ char *n = NULL;
                int r = canon_lookup(q, maps, *addr, &n);
                if (r < 0)
                        return r;
                if (r == 0)
                        return changed;
                if (streq(n, *addr))
                        return changed;
                changed = true;
                if (strcaseeq(n, *addr)) {
                        free(*addr);
                        *addr = steal_ptr(n);
                        return 1;
                }
                free(*addr);
                *addr = steal_ptr(n);
        }
        log_warning("canonical mapping of %s: loop after %u rounds; using the last result",
                    *addr, CANON_MAX_ROUNDS);
        return changed;
}

/* Applies the tables that cover class (one QMGR_CANON_* bit) to *addr. */
static int canon_address(Qmgr *q, unsigned class, char **addr) {
        const QmgrSettings *s = &q->settings;
        bool sender = class & (QMGR_CANON_ENV_FROM | QMGR_CANON_HDR_FROM);
        MapList *own = sender ? s->sender_canonical_maps : s->recipient_canonical_maps;
        unsigned own_classes = sender ? s->sender_canonical_classes : s->recipient_canonical_classes;
        int r, changed = 0;

        if (own && (own_classes & class)) {
                r = canon_map(q, own, addr);
                if (r < 0)
                        return r;
                changed |= r;
        }
        if (s->canonical_maps && (s->canonical_classes & class)) {
                r = canon_map(q, s->canonical_maps, addr);
                if (r < 0)
                        return r;
                changed |= r;
        }
        return changed;
}

static unsigned active_classes(Qmgr *q) {
        const QmgrSettings *s = &q->settings;
        return (s->canonical_maps ? s->canonical_classes : 0) |
               (s->sender_canonical_maps ? s->sender_canonical_classes : 0) |
               (s->recipient_canonical_maps ? s->recipient_canonical_classes : 0);
}

static const struct {
        const char *name;
        unsigned class;
} address_headers[] = {
        {"From", QMGR_CANON_HDR_FROM},         {"Sender", QMGR_CANON_HDR_FROM},
        {"Reply-To", QMGR_CANON_HDR_FROM},     {"Errors-To", QMGR_CANON_HDR_FROM},
        {"Return-Receipt-To", QMGR_CANON_HDR_FROM},
        {"Resent-From", QMGR_CANON_HDR_FROM},  {"Resent-Sender", QMGR_CANON_HDR_FROM},
        {"Resent-Reply-To", QMGR_CANON_HDR_FROM},
        {"To", QMGR_CANON_HDR_RCPT},           {"Cc", QMGR_CANON_HDR_RCPT},
        {"Bcc", QMGR_CANON_HDR_RCPT},          {"Apparently-To", QMGR_CANON_HDR_RCPT},
        {"Resent-To", QMGR_CANON_HDR_RCPT},    {"Resent-Cc", QMGR_CANON_HDR_RCPT},
        {"Resent-Bcc", QMGR_CANON_HDR_RCPT},
};

/* The class of the header raw[0..len) when it is an address header whose
 * class is in classes; *ret_value is the offset of its value. */
static unsigned header_class(const char *raw, size_t len, unsigned classes, size_t *ret_value) {
        const char *colon = memchr(raw, ':', len);
        size_t n;

        if (!colon)
                return 0;
        n = (size_t) (colon - raw);
        while (n > 0 && (raw[n - 1] == ' ' || raw[n - 1] == '\t'))
                n--;
        for (size_t i = 0; i < ELEMENTSOF(address_headers); i++)
                if ((address_headers[i].class & classes) &&
                    strlen(address_headers[i].name) == n &&
                    strncasecmp(raw, address_headers[i].name, n) == 0) {
                        *ret_value = (size_t) (colon + 1 - raw);
                        return address_headers[i].class;
                }
        return 0;
}

/* Rewrites one header raw[0..len) (without its last LF) into out. */
static int canon_header(Qmgr *q, const char *raw, size_t len, unsigned classes,
                        const char *complete, StrBuf *out, bool *changed) {
        AddrHeaderItem *items = NULL;
        size_t n = 0, value, pos = 0;
        unsigned class = header_class(raw, len, classes, &value);
        int r = 0;

        if (class)
                r = addr_header_parse(raw + value, len - value, &items, &n);
        if (!class || r == -EINVAL) {
                if (class)
                        log_debug("canonical mapping: header \"%.*s\" is not an address list; "
                                  "left alone", (int) MIN(len, (size_t) 200), raw);
                return strbuf_append(out, raw, len) < 0 || strbuf_putc(out, '\n') < 0 ? -ENOMEM
                                                                                      : 0;
        }
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *addr = NULL, *ext = NULL;
                AddrHeaderItem *it = &items[i];
                size_t start = value + it->start;

                addr = strchr(it->addr, '@') ? strdup(it->addr)
                                             : strdup_printf("%s@%s", it->addr, complete);
                if (!addr) {
                        r = -ENOMEM;
                        break;
                }
                r = canon_address(q, class, &addr);
                if (r < 0)
                        break;
                ext = addr_quote_local(addr);
                if (!ext) {
                        r = -ENOMEM;
                        break;
                }
                if (strlen(ext) == it->len && memcmp(ext, raw + start, it->len) == 0)
                        continue;
                *changed = true;
                if (strbuf_append(out, raw + pos, start - pos) < 0 || strbuf_puts(out, ext) < 0) {
                        r = -ENOMEM;
                        break;
                }
                pos = start + it->len;
        }
        addr_header_items_free(items, n);
        if (r < 0)
                return r;
        return strbuf_append(out, raw + pos, len - pos) < 0 || strbuf_putc(out, '\n') < 0 ? -ENOMEM
                                                                                          : 0;
}

static int canon_headers(Qmgr *q, const char *id, int *fd, QueueEnvelope *env, unsigned classes,
                         bool *written) {
        const QmgrSettings *s = &q->settings;
        _cleanup_(strbuf_done) StrBuf out = {0};
        _cleanup_free_ char *content = NULL;
        const char *complete = s->myorigin;
        size_t hdr_len, start = 0;
        bool changed = false;
        int r;

        *written = false;
        if (env->flags & QUEUE_FLAG_REMOTE_HEADERS) {
                if (!*s->remote_header_rewrite_domain)
                        return 0;
                complete = s->remote_header_rewrite_domain;
        }
        r = qmgr_header_section(*fd, env, &content, &hdr_len);
        if (r < 0)
                return r;
        while (start < hdr_len) {
                size_t i = qmgr_header_next(content, hdr_len, start);
                if (i > start) {
                        r = canon_header(q, content + start, i - start, classes, complete, &out,
                                         &changed);
                        if (r < 0)
                                return r;
                }
                start = i + 1;
        }
        if (!changed)
                return 0;
        r = qmgr_header_replace(q, id, fd, env, &out, hdr_len);
        if (r < 0)
                return r;
        log_debug("%s: canonical mapping rewrote the headers", id);
        *written = true;
        return 0;
}

int qmgr_canonical(Qmgr *q, const char *id, int *fd, QueueEnvelope *env) {
        unsigned classes = active_classes(q);
        bool changed = false, written = false;
        int r;

        if (!classes || ((env->flags & QUEUE_FLAG_CANONICAL) && !(env->flags & QUEUE_FLAG_REQUEUE)))
                return 0;

        if (*env->sender && (classes & QMGR_CANON_ENV_FROM)) {
                _cleanup_free_ char *a = strdup(env->sender);
                if (!a)
                        return -ENOMEM;
                r = canon_address(q, QMGR_CANON_ENV_FROM, &a);
                if (r < 0)
                        return r;
                if (r > 0) {
                        free(env->sender);
                        env->sender = steal_ptr(a);
                        changed = true;
                }
        }
        for (size_t i = 0; i < env->n_rcpts && (classes & QMGR_CANON_ENV_RCPT); i++) {
                QueueRecipient *rc = &env->rcpts[i];
                _cleanup_free_ char *a = NULL, *x = NULL;

                if (rc->status != QUEUE_RCPT_PENDING || rc->orig)
                        continue;
                a = strdup(rc->address);
                if (!a)
                        return -ENOMEM;
                r = canon_address(q, QMGR_CANON_ENV_RCPT, &a);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (!rc->orcpt) {
                        _cleanup_free_ char *enc = NULL;
                        r = addr_xtext_encode(rc->address, &enc);
                        if (r < 0)
                                return r;
                        rc->orcpt = strdup_printf("rfc822;%s", enc);
                        if (!rc->orcpt)
                                return -ENOMEM;
                }
                if (!rc->canon && !(rc->canon = strdup(rc->address)))
                        return -ENOMEM;
                free(rc->address);
                rc->address = steal_ptr(a);
                changed = true;
        }

        /* Whatever writes the envelope next records that this was done. */
        env->flags |= QUEUE_FLAG_CANONICAL;
        if (classes & (QMGR_CANON_HDR_FROM | QMGR_CANON_HDR_RCPT)) {
                r = canon_headers(q, id, fd, env, classes, &written);
                if (r < 0)
                        return r;
        }
        /* A new file has the envelope as changed here. */
        return changed && !written;
}
