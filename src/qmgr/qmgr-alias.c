/* qmgr-alias.c: virtual_alias_maps expansion of new mail, done once when a
 * message leaves incoming/. Lookup order per address as virtual(5): the
 * full address "user@domain", then "user" when the domain is local
 * ($myorigin, $myhostname, $mydestination), then the catch-all "@domain".
 * A result is a list of addresses (a bare name gets @$myorigin) that are
 * expanded again, up to virtual_alias_recursion_limit levels deep and
 * virtual_alias_expansion_limit addresses in all; an address that maps to
 * itself is final. Duplicates are dropped.
 *
 * The expanded recipient keeps its line with status X (EXPANDED) and the
 * results are appended as new recipients whose "orig=" names it, so the
 * log shows orig_to= and a requeue (postsuper -r sets QUEUE_FLAG_REQUEUE)
 * can undo the expansion: X recipients become pending again and their
 * results that were not delivered yet are dropped; results already
 * delivered stay done and are not added twice. Address extensions
 * (recipient_delimiter) are not handled yet.
 *
 * A recipient whose expansion fails (recursion or expansion limit) stays
 * pending on disk with QUEUE_FLAG_ALIAS_ERROR on the message, until the
 * queue manager has its bounce queued; a message with the flag is expanded
 * again whenever it is taken up, so a crash or a bounce service failure
 * before that never loses the bounce. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "qmgr.h"

#define ALIAS_ERR_RECURSION (-10001)
#define ALIAS_ERR_EXPANSION (-10002)

static int alias_lookup(Qmgr *q, const char *addr, char **ret_value) {
        const char *domain = addr_domain(addr);
        int r;

        r = map_list_lookup(q->settings.virtual_alias_maps, addr, ret_value);
        if (r != 0 || !domain)
                return r;
        r = qmgr_domain_is_local(q, domain);
        if (r < 0)
                return r;
        if (r > 0) {
                _cleanup_free_ char *user = strndup_safe(addr, (size_t) (domain - 1 - addr));
                if (!user)
                        return -ENOMEM;
                r = map_list_lookup(q->settings.virtual_alias_maps, user, ret_value);
                if (r != 0)
                        return r;
        }
        {
                _cleanup_free_ char *at = strdup_printf("@%s", domain);
                if (!at)
                        return -ENOMEM;
                return map_list_lookup(q->settings.virtual_alias_maps, at, ret_value);
        }
}

static int add_leaf(Qmgr *q, char ***leaves, const char *addr) {
        if (strv_contains_case(*leaves, addr))
                return 0;
        if (strv_length(*leaves) >= q->settings.alias_expansion_limit)
                return ALIAS_ERR_EXPANSION;
        return strv_extend(leaves, addr);
}

/* Returns 0 when addr is not an alias (it is the only leaf), 1 when it was
 * expanded, or a negative code. */
static int expand(Qmgr *q, const char *addr, unsigned depth, char ***leaves) {
        _cleanup_free_ char *value = NULL;
        _cleanup_strv_free_ char **items = NULL;
        int r;

        if (depth > q->settings.alias_recursion_limit)
                return ALIAS_ERR_RECURSION;
        r = alias_lookup(q, addr, &value);
        if (r < 0)
                return r;
        if (r == 0) {
                r = add_leaf(q, leaves, addr);
                return r < 0 ? r : 0;
        }
        r = str_split_list(value, false, &items);
        if (r < 0)
                return r;
        STRV_FOREACH(i, items) {
                _cleanup_free_ char *full = NULL;
                const char *a = *i;
                if (!strchr(a, '@')) {
                        full = strdup_printf("%s@%s", a, q->settings.myorigin);
                        if (!full)
                                return -ENOMEM;
                        a = full;
                }
                if (strcaseeq(a, addr))
                        r = add_leaf(q, leaves, a);     /* "a@x  a@x, b@y": keep a copy */
                else
                        r = expand(q, a, depth + 1, leaves);
                if (r < 0)
                        return r;
        }
        return 1;
}

/* Undoes a previous expansion for a requeued message. */
static int undo_expansion(QueueEnvelope *env) {
        QueueEnvelope fresh = {0};
        int r;

        for (size_t i = 0; i < env->n_rcpts; i++) {
                QueueRecipient *rc = &env->rcpts[i];
                bool child_of_x = false;
                if (rc->orig && rc->status == QUEUE_RCPT_PENDING)
                        for (size_t k = 0; k < env->n_rcpts && !child_of_x; k++)
                                child_of_x = env->rcpts[k].status == QUEUE_RCPT_EXPANDED &&
                                             strcaseeq(env->rcpts[k].address, rc->orig);
                if (child_of_x)
                        continue;
                r = queue_envelope_add_rcpt(&fresh, rc->address, rc->notify, rc->orcpt);
                if (r >= 0)
                        r = queue_envelope_set_orig(&fresh, fresh.n_rcpts - 1, rc->orig);
                if (r >= 0)
                        r = queue_envelope_set_canon(&fresh, fresh.n_rcpts - 1, rc->canon);
                if (r < 0) {
                        queue_envelope_clear_rcpts(&fresh);
                        return r;
                }
                fresh.rcpts[fresh.n_rcpts - 1].status =
                        rc->status == QUEUE_RCPT_EXPANDED ? QUEUE_RCPT_PENDING : rc->status;
        }
        queue_envelope_clear_rcpts(env);
        env->rcpts = fresh.rcpts;
        env->n_rcpts = fresh.n_rcpts;
        return 0;
}

static bool already_present(const QueueEnvelope *env, const char *addr, const char *orig) {
        for (size_t i = 0; i < env->n_rcpts; i++) {
                const QueueRecipient *rc = &env->rcpts[i];
                if (!strcaseeq(rc->address, addr) || rc->status == QUEUE_RCPT_EXPANDED)
                        continue;
                /* The same address from the same original, or given as is. */
                if (!rc->orig || strcaseeq(rc->orig, orig))
                        return true;
        }
        return false;
}

int qmgr_alias_expand(Qmgr *q, QueueEnvelope *env, char ***ret_errors) {
        _cleanup_strv_free_ char **err_text = NULL;
        _cleanup_free_ size_t *err_idx = NULL;
        size_t n_err = 0, n0;
        char **errors;
        bool changed = false, had_error = env->flags & QUEUE_FLAG_ALIAS_ERROR;
        int r;

        *ret_errors = NULL;
        env->flags &= ~(unsigned) QUEUE_FLAG_ALIAS_ERROR;
        if (env->flags & QUEUE_FLAG_REQUEUE) {
                r = undo_expansion(env);
                if (r < 0)
                        return r;
                changed = true;
        }
        if (!q->settings.virtual_alias_maps)
                return changed || had_error;

        n0 = env->n_rcpts;
        for (size_t i = 0; i < n0; i++) {
                _cleanup_strv_free_ char **leaves = NULL;
                _cleanup_free_ char *parent = NULL, *canon = NULL;
                unsigned notify;
                _cleanup_free_ char *orcpt = NULL;

                if (env->rcpts[i].status != QUEUE_RCPT_PENDING || env->rcpts[i].orig)
                        continue;
                parent = strdup(env->rcpts[i].address);
                if (!parent)
                        return -ENOMEM;
                r = expand(q, parent, 0, &leaves);
                if (r == ALIAS_ERR_RECURSION || r == ALIAS_ERR_EXPANSION) {
                        size_t *ni = reallocarray(err_idx, n_err + 1, sizeof(size_t));
                        if (!ni)
                                return -ENOMEM;
                        err_idx = ni;
                        err_idx[n_err++] = i;
                        if (strv_extend(&err_text, r == ALIAS_ERR_RECURSION
                                                           ? "5.4.6 virtual alias table recursion limit exceeded"
                                                           : "5.4.6 virtual alias table expansion limit exceeded") < 0)
                                return -ENOMEM;
                        /* Pending until the bounce is queued: see the top. */
                        env->flags |= QUEUE_FLAG_ALIAS_ERROR;
                        continue;
                }
                if (r < 0)
                        return r;
                if (r == 0 || (strv_length(leaves) == 1 && strcaseeq(leaves[0], parent)))
                        continue;
                notify = env->rcpts[i].notify;
                if (env->rcpts[i].orcpt && !(orcpt = strdup(env->rcpts[i].orcpt)))
                        return -ENOMEM;
                /* The address as received, before canonical mapping. */
                if (env->rcpts[i].canon && !(canon = strdup(env->rcpts[i].canon)))
                        return -ENOMEM;
                env->rcpts[i].status = QUEUE_RCPT_EXPANDED;
                changed = true;
                STRV_FOREACH(l, leaves) {
                        if (already_present(env, *l, parent))
                                continue;
                        r = queue_envelope_add_rcpt(env, *l, notify, orcpt);
                        if (r >= 0)
                                r = queue_envelope_set_orig(env, env->n_rcpts - 1, parent);
                        if (r >= 0)
                                r = queue_envelope_set_canon(env, env->n_rcpts - 1, canon);
                        if (r < 0)
                                return r;
                }
        }
        if (had_error != (n_err > 0))
                changed = true;         /* the flag changes */
        if (n_err > 0) {
                errors = calloc(env->n_rcpts, sizeof(char *));
                if (!errors)
                        return -ENOMEM;
                for (size_t k = 0; k < n_err; k++)
                        errors[err_idx[k]] = steal_ptr(err_text[k]);
                *ret_errors = errors;
        }
        return changed;
}
