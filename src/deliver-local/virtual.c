/* virtual.c: the virtual transport, with Postfix virtual(8) semantics.
 * Runs in a recipient child for one address of a virtual_mailbox_domains
 * domain: virtual_mailbox_maps, virtual_uid_maps and virtual_gid_maps are
 * searched for "user+ext@domain", then "user@domain" (recipient_delimiter),
 * then "@domain" (catch-all); the mailbox is virtual_mailbox_base/RESULT,
 * a Maildir when RESULT ends in "/", else an mbox file locked with
 * virtual_mailbox_lock. Delivery runs as the uid and gid from the maps,
 * never below virtual_minimum_uid; virtual_mailbox_limit caps the mailbox
 * (mbox) or message (Maildir). Unknown addresses bounce with 5.1.1; map
 * failures and missing ids defer. virtual_alias_maps are the queue
 * manager's business. Entry point: virtual_deliver(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver-local.h"

/* Looks the address up in Postfix virtual(8) order. */
static int virtual_lookup(const DeliverSettings *s, MapList *maps, const char *address,
                          char **ret) {
        _cleanup_free_ char *bare = NULL;
        const char *at = strrchr(address, '@');
        int r;

        if (!maps)
                return 0;
        r = map_list_lookup(maps, address, ret);
        if (r != 0 || !at)
                return r;
        if (!isempty(s->recipient_delimiter)) {
                const char *d = strpbrk(address, s->recipient_delimiter);
                if (d && d < at && d != address) {
                        bare = strdup_printf("%.*s%s", (int)(d - address), address, at);
                        if (!bare)
                                return -ENOMEM;
                        r = map_list_lookup(maps, bare, ret);
                        if (r != 0)
                                return r;
                }
        }
        return map_list_lookup(maps, at, ret);
}

static int id_lookup(const DeliverSettings *s, MapList *maps, const char *address, long long *ret) {
        _cleanup_free_ char *v = NULL;
        char *end;
        long long id;
        int r;

        r = virtual_lookup(s, maps, address, &v);
        if (r <= 0)
                return r;
        errno = 0;
        id = strtoll(strstrip(v), &end, 10);
        if (errno != 0 || *end || end == v || id < 0 || id > (long long)UINT32_MAX - 1)
                return -EINVAL;
        *ret = id;
        return 1;
}

typedef struct VirtualArgs {
        const DeliverMsg *m;
        const char *path;
} VirtualArgs;

static void virtual_priv(void *userdata, DeliverResult *ret) {
        VirtualArgs *a = userdata;
        const DeliverSettings *s = a->m->settings;

        if (endswith(a->path, "/"))
                maildir_deliver(a->m, a->path, a->m->recipient, s->virtual_mailbox_limit, ret);
        else
                mbox_deliver(a->m, a->path, a->m->recipient, s->virtual_lock,
                             s->virtual_mailbox_limit, COPY_MBOX, NULL, ret);
}

void virtual_deliver(const DeliverMsg *m, DeliverResult *ret) {
        const DeliverSettings *s = m->settings;
        _cleanup_free_ char *address = strdup(m->recipient), *mailbox = NULL, *path = NULL;
        long long uid = -1, gid = -1;
        VirtualArgs a = {m, NULL};
        DeliverUser u;
        int r;

        if (!address) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "out of memory");
                return;
        }
        ascii_strlower(address);
        if (deliver_msg_has_delivered_to(m, m->recipient)) {
                deliver_result_set(ret, DELIVER_BOUNCED, "5.4.6", "mail forwarding loop for %s",
                                   m->recipient);
                return;
        }
        r = virtual_lookup(s, s->virtual_mailbox_maps, address, &mailbox);
        if (r < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                   "virtual_mailbox_maps lookup failure");
                return;
        }
        if (r == 0 || isempty(strstrip(mailbox))) {
                deliver_result_set(ret, DELIVER_BOUNCED, "5.1.1", "unknown user: \"%s\"", address);
                return;
        }
        if (isempty(s->virtual_mailbox_base)) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.5",
                                   "virtual_mailbox_base is not set");
                return;
        }
        r = id_lookup(s, s->virtual_uid_maps, address, &uid);
        if (r <= 0 || uid < s->virtual_minimum_uid) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.5",
                                   r < 0    ? "virtual_uid_maps: lookup failure or bad uid for %s"
                                   : r == 0 ? "virtual_uid_maps: no uid for %s"
                                            : "virtual_uid_maps: uid for %s is below "
                                              "virtual_minimum_uid",
                                   address);
                return;
        }
        r = id_lookup(s, s->virtual_gid_maps, address, &gid);
        if (r <= 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.5",
                                   r < 0 ? "virtual_gid_maps: lookup failure or bad gid for %s"
                                         : "virtual_gid_maps: no gid for %s",
                                   address);
                return;
        }
        path = strdup_printf("%s/%s", s->virtual_mailbox_base, mailbox);
        if (!path) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "out of memory");
                return;
        }
        a.path = path;
        u = (DeliverUser){
                .uid = (uid_t)uid,
                .gid = (gid_t)gid,
                .name = address,
                .home = s->virtual_mailbox_base,
                .shell = "/bin/false",
        };
        /* The last step of the recipient's child process. */
        priv_run_next_in_place();
        priv_run(&u, virtual_priv, &a, ret);
}
