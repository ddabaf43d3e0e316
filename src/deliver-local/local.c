/* local.c: the local transport, with Postfix local(8) semantics. Runs in a
 * recipient child (as root) for one recipient of a local domain:
 *
 *   1. alias_maps: the full local part (user+ext), then the bare user name;
 *      an alias expands to addresses, "\user", :include:/file, /file and
 *      |command destinations (aliases(5)). An address found in its own
 *      expansion goes to the user instead.
 *   2. the UNIX user (getpwnam of the folded local part without extension);
 *      unknown users go to luser_relay or bounce 5.1.1 "unknown user".
 *   3. the first readable file of forward_path, read with the user's rights,
 *      same syntax as an alias; the user listed in it means the mailbox.
 *   4. the mailbox: mailbox_command, or home_mailbox (Maildir with a trailing
 *      "/", else an mbox file), or mail_spool_directory/USER.
 *
 * Local addresses in an expansion are delivered here, recursively; others
 * are forwarded as one new queue file per envelope sender (owner-LIST when
 * that alias exists). Files and commands run with the rights of the user
 * whose .forward named them, else of the alias table or :include: file
 * owner; default_privs stands in for root. Every write to a mailbox, a file
 * or a command runs in a child that dropped to the destination's uid first
 * (priv_run()); mailboxes of root are not written at all (alias root to a
 * real user). Spool mailboxes are created and dot-locked as root, since the
 * spool directory is usually writable only by root and group mail, and then
 * written by a child running as the user, as Postfix does.
 *
 * Left out: mailbox_transport, fallback_transport, the *_maps variants of
 * mailbox_command and mailbox_transport, biff, and "expand_owner_alias". */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deliver-local.h"
#include "fileio.h"

/* Largest .forward or :include: file read. */
#define INCLUDE_FILE_MAX (1024 * 1024)

enum {
        ADDR_NO_ALIAS = 1 << 0,
        ADDR_NO_FORWARD = 1 << 1,
};

typedef struct LocalState {
        const DeliverMsg *m;
        const DeliverSettings *s;
        DeliverResult acc;
        char **seen;        /* duplicate filter: "kind:value" */
        char **fwd_rcpts;   /* remote addresses of the expansion */
        char **fwd_senders; /* their envelope senders, in step */
        bool last_step;     /* the mailbox delivery of the recipient itself, nothing after it */
} LocalState;

/* Where a destination came from, and with whose rights it runs. */
typedef struct LocalCtx {
        unsigned from;           /* 0 for the recipient itself, else DELIVER_FROM_* */
        const DeliverUser *user; /* rights for files and commands; NULL: default_privs */
        const char *address;     /* the address being expanded (Delivered-To) */
        const char *extension;
        const char *sender; /* envelope sender of forwarded copies */
        char **ancestors;   /* "a:local" and "f:user" entries, borrowed */
} LocalCtx;

static void deliver_address(LocalState *st, const char *addr, const LocalCtx *ctx, unsigned depth,
                            unsigned flags);

static void add_result(LocalState *st, DeliverResult *r) {
        deliver_result_merge(&st->acc, r);
        deliver_result_done(r);
}

_printf_(4, 5) static void add_error(LocalState *st, DeliverStatus status, const char *dsn,
                                     const char *fmt, ...) {
        _cleanup_free_ char *text = NULL;
        DeliverResult r = {0};
        va_list ap;

        va_start(ap, fmt);
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        deliver_result_set(&r, status, dsn, "%s", text ? text : "out of memory");
        add_result(st, &r);
}

/* Whether kind:value was handled already; records it otherwise. */
static bool seen_before(LocalState *st, const char *kind, const char *value) {
        _cleanup_free_ char *k = strdup_printf("%s:%s", kind, value);
        if (!k)
                return false;
        if (strv_contains(st->seen, k))
                return true;
        (void)strv_consume(&st->seen, steal_ptr(k));
        return false;
}

/* Rights for a file or command: the context's user unless that is root,
 * else default_privs. Returns 0 or fills *err. */
static int rights(LocalState *st, const LocalCtx *ctx, DeliverUser *ret, char **buf) {
        int r;

        if (ctx->user && ctx->user->uid != 0) {
                *ret = *ctx->user;
                return 0;
        }
        r = deliver_user_by_name(st->s->default_privs, ret, buf);
        if (r <= 0 || ret->uid == 0) {
                add_error(st, DELIVER_DEFERRED, "4.3.0",
                          "default_privs: unknown or privileged user \"%s\"", st->s->default_privs);
                return -EINVAL;
        }
        return 0;
}

static bool domain_is_local(LocalState *st, const char *domain) {
        const DeliverSettings *s = st->s;
        if (!domain)
                return true;
        return strcaseeq(domain, s->myhostname) || strcaseeq(domain, "localhost") ||
               strv_contains_case(s->mydestination, domain) ||
               (st->m->nexthop && strcaseeq(domain, st->m->nexthop));
}

/* Splits an alias value or .forward/:include: text into destinations:
 * separated by commas and new lines outside double quotes, blanks trimmed,
 * quotes removed, "#" lines skipped. */
static int split_tokens(const char *text, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_(strbuf_done) StrBuf b = {0};
        bool quoted = false, bol = true;

        for (const char *p = text;; p++) {
                if (bol && !quoted) {
                        while (*p == ' ' || *p == '\t')
                                p++;
                        if (*p == '#') {
                                while (*p && *p != '\n')
                                        p++;
                        }
                        bol = false;
                }
                if (*p == 0 || (!quoted && (*p == ',' || *p == '\n'))) {
                        char empty[1] = "";
                        char *t = strstrip(b.data ? b.data : empty);
                        size_t n = strlen(t);
                        if (n >= 2 && t[0] == '"' && t[n - 1] == '"') {
                                t[n - 1] = 0;
                                t++;
                        } else if (n >= 2 && t[0] == '<' && t[n - 1] == '>') {
                                t[n - 1] = 0;
                                t++;
                        }
                        if (*t && strv_extend(&l, t) < 0)
                                return -ENOMEM;
                        strbuf_clear(&b);
                        if (*p == 0)
                                break;
                        bol = *p == '\n';
                        continue;
                }
                if (*p == '"')
                        quoted = !quoted;
                if (strbuf_putc(&b, *p) < 0)
                        return -ENOMEM;
        }
        *ret = steal_ptr(l);
        return 0;
}

/* Reads path with user's rights in a child. Returns > 0 with the text and
 * the file owner, 0 when the file does not exist, < 0 on errors. */
static int read_file_as(const DeliverUser *user, const char *path, char **ret, uid_t *ret_owner) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = INCLUDE_FILE_MAX + 64;
        int p[2], status, err;
        unsigned owner;
        pid_t pid;
        char *nl;

        /* Not there even for us (root): the user would get ENOENT too, or
         * EACCES for a directory on the way, and Postfix skips a forward
         * file on either; :include: treats both as an error. No child for
         * the common case of a user without a .forward. */
        if (stat(path, &(struct stat) {0}) < 0 && errno == ENOENT)
                return 0;
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                err = -errno;
                close(p[0]);
                close(p[1]);
                return err;
        }
        if (pid == 0) {
                _cleanup_free_ char *text = NULL;
                _cleanup_(strbuf_done) StrBuf out = {0};
                struct stat st;
                size_t n = 0;
                int r = user->uid == 0 ? 0 : priv_drop(user->uid, user->gid);
                if (r >= 0) {
                        _cleanup_close_ int fd =
                                open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
                        if (fd < 0 || fstat(fd, &st) < 0)
                                r = -errno;
                        else if (!S_ISREG(st.st_mode))
                                r = -EINVAL;
                        else {
                                text = malloc(INCLUDE_FILE_MAX + 1);
                                if (!text)
                                        r = -ENOMEM;
                                while (r >= 0 && n < INCLUDE_FILE_MAX) {
                                        ssize_t k = read(fd, text + n, INCLUDE_FILE_MAX - n);
                                        if (k < 0) {
                                                r = -errno;
                                                break;
                                        }
                                        if (k == 0)
                                                break;
                                        n += (size_t)k;
                                }
                        }
                }
                if (r < 0)
                        (void)strbuf_printf(&out, "E%d\n", -r);
                else {
                        (void)strbuf_printf(&out, "O%u\n", (unsigned)st.st_uid);
                        (void)strbuf_append(&out, text, n);
                }
                _exit(write_all(p[1], out.data, out.len) < 0 ? 1 : 0);
        }
        close(p[1]);
        buf = malloc(cap + 1);
        if (buf)
                for (;;) {
                        ssize_t k = read(p[0], buf + len, cap - len);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0 || (len += (size_t)k) == cap)
                                break;
                }
        close(p[0]);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (!buf)
                return -ENOMEM;
        buf[len] = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !(nl = strchr(buf, '\n')))
                return -EIO;
        if (buf[0] == 'E') {
                err = atoi(buf + 1);
                return err == ENOENT ? 0 : -(err > 0 ? err : EIO);
        }
        if (sscanf(buf, "O%u", &owner) != 1)
                return -EIO;
        *ret_owner = (uid_t)owner;
        *ret = strdup(nl + 1);
        return *ret ? 1 : -ENOMEM;
}

typedef struct FileArgs {
        const DeliverMsg *m;
        const char *path;
        const char *delivered_to;
} FileArgs;

static void file_priv(void *userdata, DeliverResult *ret) {
        FileArgs *a = userdata;
        const DeliverSettings *s = a->m->settings;
        if (endswith(a->path, "/"))
                maildir_deliver(a->m, a->path, a->delivered_to, s->mailbox_size_limit, ret);
        else
                mbox_deliver(a->m, a->path, a->delivered_to, s->mailbox_lock, s->mailbox_size_limit,
                             COPY_MBOX, "file", ret);
}

static void expand_text(LocalState *st, const char *text, const LocalCtx *ctx, unsigned depth);

static void deliver_include(LocalState *st, const char *path, const LocalCtx *ctx, unsigned depth) {
        _cleanup_free_ char *text = NULL, *ubuf = NULL, *obuf = NULL;
        DeliverUser reader, owner;
        LocalCtx child = *ctx;
        uid_t owner_uid = 0;
        int r;

        if (*path != '/') {
                add_error(st, DELIVER_BOUNCED, "5.3.5",
                          ":include:%s: the file name must be absolute", path);
                return;
        }
        if (seen_before(st, "i", path))
                return;
        if (rights(st, ctx, &reader, &ubuf) < 0)
                return;
        r = read_file_as(&reader, path, &text, &owner_uid);
        if (r <= 0) {
                /* Postfix defers: the list may come back. */
                add_error(st, DELIVER_DEFERRED, "4.3.0", "cannot open include file %s", path);
                return;
        }
        /* Destinations in the file run with its owner's rights. */
        child.from = DELIVER_FROM_INCLUDE;
        child.user = NULL;
        if (owner_uid != 0 && deliver_user_by_uid(owner_uid, &owner, &obuf) > 0)
                child.user = &owner;
        expand_text(st, text, &child, depth + 1);
}

static void deliver_token(LocalState *st, const char *tok, const LocalCtx *ctx, unsigned depth) {
        const DeliverSettings *s = st->s;
        const char *rest;

        if (tok[0] == '|') {
                _cleanup_free_ char *ubuf = NULL;
                DeliverResult r = {0};
                DeliverUser u;
                const char *cmd = tok + 1;
                while (*cmd == ' ' || *cmd == '\t')
                        cmd++;
                if (!(s->allow_commands & ctx->from)) {
                        add_error(st, DELIVER_BOUNCED, "5.7.1", "mail to command is restricted: %s",
                                  cmd);
                        return;
                }
                if (seen_before(st, "c", cmd) || rights(st, ctx, &u, &ubuf) < 0)
                        return;
                command_deliver(st->m, cmd, &u, ctx->address, ctx->extension, &r);
                add_result(st, &r);
        } else if ((rest = startswith_no_case(tok, ":include:"))) {
                while (*rest == ' ')
                        rest++;
                deliver_include(st, rest, ctx, depth);
        } else if (tok[0] == '/') {
                _cleanup_free_ char *ubuf = NULL;
                DeliverResult r = {0};
                DeliverUser u;
                FileArgs a = {st->m, tok, ctx->address};
                if (!(s->allow_files & ctx->from)) {
                        add_error(st, DELIVER_BOUNCED, "5.7.1", "mail to file is restricted: %s",
                                  tok);
                        return;
                }
                if (seen_before(st, "f", tok) || rights(st, ctx, &u, &ubuf) < 0)
                        return;
                priv_run(&u, file_priv, &a, &r);
                add_result(st, &r);
        } else if (tok[0] == '\\')
                deliver_address(st, tok + 1, ctx, depth + 1, ADDR_NO_ALIAS | ADDR_NO_FORWARD);
        else {
                const char *at = strrchr(tok, '@');
                if (domain_is_local(st, at ? at + 1 : NULL))
                        deliver_address(st, tok, ctx, depth + 1, 0);
                else if (!seen_before(st, "r", tok)) {
                        (void)strv_extend(&st->fwd_rcpts, tok);
                        (void)strv_extend(&st->fwd_senders, ctx->sender);
                }
        }
}

static void expand_text(LocalState *st, const char *text, const LocalCtx *ctx, unsigned depth) {
        _cleanup_strv_free_ char **tokens = NULL;

        if (depth > DELIVER_RECURSION_MAX) {
                add_error(st, DELIVER_BOUNCED, "5.4.6", "mail forwarding loop for %s",
                          st->m->recipient);
                return;
        }
        if (split_tokens(text, &tokens) < 0) {
                add_error(st, DELIVER_DEFERRED, "4.3.0", "out of memory");
                return;
        }
        if (strv_length(st->seen) + strv_length(tokens) > DELIVER_EXPANSION_MAX) {
                add_error(st, DELIVER_BOUNCED, "5.3.4",
                          "too many destinations in the expansion of %s", st->m->recipient);
                return;
        }
        STRV_FOREACH(t, tokens)
        deliver_token(st, *t, ctx, depth);
}

typedef struct MailboxArgs {
        const DeliverMsg *m;
        const char *path;
        const char *delivered_to;
        int fd;
} MailboxArgs;

static void home_mailbox_priv(void *userdata, DeliverResult *ret) {
        MailboxArgs *a = userdata;
        const DeliverSettings *s = a->m->settings;
        if (endswith(a->path, "/"))
                maildir_deliver(a->m, a->path, a->delivered_to, s->mailbox_size_limit, ret);
        else
                mbox_deliver(a->m, a->path, a->delivered_to, s->mailbox_lock, s->mailbox_size_limit,
                             COPY_MBOX, NULL, ret);
}

static void spool_fd_priv(void *userdata, DeliverResult *ret) {
        MailboxArgs *a = userdata;
        const DeliverSettings *s = a->m->settings;
        mbox_deliver_fd(a->m, a->fd, a->path, a->delivered_to,
                        s->mailbox_lock & ~DELIVER_LOCK_DOTLOCK, s->mailbox_size_limit, COPY_MBOX,
                        NULL, ret);
}

/* The spool directory is root's (and group mail's): create, dot-lock and
 * open the mailbox as root, check that it is the user's own plain file,
 * then write it as the user. */
static void deliver_spool_mbox(LocalState *st, const DeliverUser *pw, const char *path,
                               const char *delivered_to, DeliverResult *ret) {
        const DeliverSettings *s = st->s;
        MailboxArgs a = {st->m, path, delivered_to, -1};
        bool dotlocked = false;
        struct stat sb;
        int r;

        if (geteuid() != 0) {
                /* An unprivileged instance (tests): do it all as ourselves. */
                MailboxArgs h = {st->m, path, delivered_to, -1};
                priv_run(pw, home_mailbox_priv, &h, ret);
                return;
        }
        if (s->mailbox_lock & DELIVER_LOCK_DOTLOCK) {
                r = dotlock_acquire(path, s);
                if (r < 0) {
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0",
                                           "cannot update mailbox %s for user %s: unable to "
                                           "create lock file %s.lock: %s",
                                           path, pw->name, path,
                                           r == -EAGAIN ? "file exists" : strerror(-r));
                        return;
                }
                dotlocked = true;
        }
        a.fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
        if (a.fd < 0 && errno == ENOENT) {
                a.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                            0600);
                if (a.fd >= 0 && fchown(a.fd, pw->uid, pw->gid) < 0) {
                        r = -errno;
                        (void)unlink(path);
                        close(a.fd);
                        a.fd = -1;
                        errno = -r;
                }
        }
        if (a.fd < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0",
                                   "cannot open mailbox %s for user %s: %m", path, pw->name);
                goto out;
        }
        /* A link planted in a shared spool must not redirect the write. */
        if (fstat(a.fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 1 ||
            sb.st_uid != pw->uid) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.2.0",
                                   "cannot update mailbox %s for user %s: bad file type, link "
                                   "count or ownership",
                                   path, pw->name);
                goto out;
        }
        priv_run(pw, spool_fd_priv, &a, ret);
out:
        if (a.fd >= 0)
                close(a.fd);
        if (dotlocked)
                dotlock_release(path);
}

static char **user_vars(const DeliverUser *pw, const char *address, const char *extension,
                        const DeliverSettings *s, char *local_buf) {
        const char *at = strrchr(address, '@');
        char **v;
        const char *pairs[] = {
                "user",
                pw ? pw->name : NULL,
                "home",
                pw ? pw->home : NULL,
                "shell",
                pw ? pw->shell : NULL,
                "extension",
                extension,
                "recipient_delimiter",
                extension ? s->recipient_delimiter : NULL,
                "domain",
                at ? at + 1 : NULL,
                "local",
                local_buf,
                "recipient",
                address,
        };
        /* Undefined names are "" (deliver_expand() treats "" as undefined). */
        v = calloc(ELEMENTSOF(pairs) + 1, sizeof(char *));
        if (!v)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(pairs); i++)
                if (!(v[i] = strdup(pairs[i] ? pairs[i] : "")))
                        return strv_free(v);
        return v;
}

static void deliver_mailbox(LocalState *st, const DeliverUser *pw, const char *address,
                            const char *extension, const char *local) {
        const DeliverSettings *s = st->s;
        DeliverResult r = {0};

        if (seen_before(st, "m", pw->name))
                return;
        if (!isempty(s->mailbox_command)) {
                _cleanup_strv_free_ char **vars =
                        user_vars(pw, address, extension, s, (char *)local);
                _cleanup_free_ char *cmd =
                        vars ? deliver_expand(s->mailbox_command, vars, true, NULL) : NULL;
                _cleanup_free_ char *ubuf = NULL;
                LocalCtx c = {.user = pw};
                DeliverUser u;
                if (!cmd) {
                        add_error(st, DELIVER_DEFERRED, "4.3.0", "out of memory");
                        return;
                }
                /* Postfix runs mailbox_command for root as default_privs. */
                if (rights(st, &c, &u, &ubuf) < 0)
                        return;
                command_deliver(st->m, cmd, &u, address, extension, &r);
                add_result(st, &r);
                return;
        }
        if (pw->uid == 0) {
                add_error(st, DELIVER_DEFERRED, "4.3.0",
                          "mail for %s must be aliased to a real user: postern does not write "
                          "mailboxes as root",
                          pw->name);
                return;
        }
        if (!isempty(s->home_mailbox)) {
                _cleanup_free_ char *path = strdup_printf("%s/%s", pw->home, s->home_mailbox);
                MailboxArgs a = {st->m, path, address, -1};
                if (!path) {
                        add_error(st, DELIVER_DEFERRED, "4.3.0", "out of memory");
                        return;
                }
                if (st->last_step)
                        priv_run_next_in_place();
                priv_run(pw, home_mailbox_priv, &a, &r);
        } else if (endswith(s->mail_spool_directory, "/")) {
                /* Maildir in the spool: the directory is made (as root) and
                 * handed to the user, the rest is ordinary maildir. */
                _cleanup_free_ char *path =
                        strdup_printf("%s%s/", s->mail_spool_directory, pw->name);
                MailboxArgs a = {st->m, path, address, -1};
                if (!path) {
                        add_error(st, DELIVER_DEFERRED, "4.3.0", "out of memory");
                        return;
                }
                if (geteuid() == 0 && mkdir(path, 0700) >= 0 && chown(path, pw->uid, pw->gid) < 0) {
                        add_error(st, DELIVER_DEFERRED, "4.2.0", "cannot set owner of %s", path);
                        return;
                }
                priv_run(pw, home_mailbox_priv, &a, &r);
        } else {
                _cleanup_free_ char *path =
                        strdup_printf("%s/%s", s->mail_spool_directory, pw->name);
                if (!path) {
                        add_error(st, DELIVER_DEFERRED, "4.3.0", "out of memory");
                        return;
                }
                deliver_spool_mbox(st, pw, path, address, &r);
        }
        add_result(st, &r);
}

/* Tries the forward_path files. Returns true when a .forward took over. */
static bool deliver_dot_forward(LocalState *st, const DeliverUser *pw, const char *address,
                                const char *extension, const char *local, const LocalCtx *ctx,
                                unsigned depth) {
        const DeliverSettings *s = st->s;
        _cleanup_strv_free_ char **vars = user_vars(pw, address, extension, s, (char *)local);
        _cleanup_free_ char *fkey = strdup_printf("f:%s", pw->name);
        char **anc = NULL;

        if (!vars || !fkey)
                return false;
        STRV_FOREACH(f, s->forward_path) {
                _cleanup_free_ char *path = NULL, *text = NULL;
                LocalCtx child = *ctx;
                bool undef = false;
                uid_t owner;
                int r;

                path = deliver_expand(*f, vars, true, &undef);
                /* Postfix skips entries that use an undefined name, e.g.
                 * .forward+$extension without an extension. */
                if (!path || undef || *path != '/')
                        continue;
                r = read_file_as(pw, path, &text, &owner);
                /* As Postfix: a forward file the user cannot reach (a home
                 * directory closed to them, or to this sandbox, as /root
                 * is) does not exist for delivery; other errors defer. */
                if (r == 0 || r == -ENOENT || r == -EACCES || r == -ENOTDIR)
                        continue;
                if (r < 0) {
                        add_error(st, DELIVER_DEFERRED, "4.3.0", "cannot read forward file %s",
                                  path);
                        return true;
                }
                /* Only the user's own (or root's) file counts. */
                if (owner != pw->uid && owner != 0)
                        continue;
                if (isempty(strstrip(text)))
                        return false; /* empty: no forwarding */
                STRV_FOREACH(a, ctx->ancestors)
                (void)strv_extend(&anc, *a);
                (void)strv_extend(&anc, fkey);
                child.from = DELIVER_FROM_FORWARD;
                child.user = pw;
                child.address = address;
                child.extension = extension;
                child.ancestors = anc;
                expand_text(st, text, &child, depth + 1);
                strv_free(anc);
                return true;
        }
        return false;
}

static int alias_lookup(LocalState *st, const char *key, char **ret) {
        if (!st->s->alias_maps)
                return 0;
        return map_list_lookup(st->s->alias_maps, key, ret);
}

static void deliver_address(LocalState *st, const char *addr, const LocalCtx *ctx, unsigned depth,
                            unsigned flags) {
        const DeliverSettings *s = st->s;
        _cleanup_free_ char *local = NULL, *user = NULL, *address = NULL, *value = NULL;
        _cleanup_free_ char *akey = NULL, *pwbuf = NULL, *alias_key = NULL;
        const char *at = strrchr(addr, '@'), *extension = NULL;
        DeliverUser pw;
        int r;

        if (depth > DELIVER_RECURSION_MAX) {
                add_error(st, DELIVER_BOUNCED, "5.4.6", "mail forwarding loop for %s", addr);
                return;
        }
        local = at ? strndup_safe(addr, (size_t)(at - addr)) : strdup(addr);
        address = at ? strdup(addr) : strdup_printf("%s@%s", addr, s->myorigin);
        if (!local || !address)
                goto oom;
        ascii_strlower(local);
        if (!*local) {
                add_error(st, DELIVER_BOUNCED, "5.1.3", "bad address syntax: \"%s\"", addr);
                return;
        }
        /* local(8): mail for an address already in a Delivered-To header
         * is a forwarding loop. */
        if (deliver_msg_has_delivered_to(st->m, address)) {
                add_error(st, DELIVER_BOUNCED, "5.4.6", "mail forwarding loop for %s", address);
                return;
        }

        /* user+ext; owner-list and list-request keep their "-" when the
         * delimiter is "-" and owner_request_special is on. */
        user = strdup(local);
        if (!user)
                goto oom;
        if (!isempty(s->recipient_delimiter) &&
            !(s->owner_request_special &&
              (startswith(local, "owner-") || endswith(local, "-request")))) {
                char *d = strpbrk(user, s->recipient_delimiter);
                if (d && d != user) {
                        *d = 0;
                        extension = local + (d - user) + 1;
                }
        }

        akey = strdup_printf("a:%s", local);
        if (!akey)
                goto oom;
        if (!(flags & ADDR_NO_ALIAS) && !strv_contains(ctx->ancestors, akey)) {
                r = alias_lookup(st, local, &value);
                if (r == 0 && extension) {
                        r = alias_lookup(st, user, &value);
                        alias_key = strdup(user);
                } else
                        alias_key = strdup(local);
                if (r < 0) {
                        add_error(st, DELIVER_DEFERRED, "4.3.0",
                                  "alias database unavailable while looking up %s", local);
                        return;
                }
                if (r > 0) {
                        _cleanup_free_ char *owner = NULL, *obuf = NULL, *sender = NULL;
                        _cleanup_strv_free_ char **anc = NULL;
                        DeliverUser ou;
                        LocalCtx child = {
                                .from = DELIVER_FROM_ALIAS,
                                .address = address,
                                .extension = extension,
                                .sender = ctx->sender,
                        };
                        if (!alias_key)
                                goto oom;
                        /* The list owner gets the bounces of the list. */
                        if (s->owner_request_special && !startswith(alias_key, "owner-")) {
                                _cleanup_free_ char *okey = strdup_printf("owner-%s", alias_key);
                                if (okey && alias_lookup(st, okey, &owner) > 0) {
                                        sender = strdup_printf("%s@%s", okey, s->myorigin);
                                        if (sender)
                                                child.sender = sender;
                                }
                        }
                        if (s->alias_map_owner && s->alias_map_owner[0] != (uid_t)-1 &&
                            s->alias_map_owner[0] != 0 &&
                            deliver_user_by_uid(s->alias_map_owner[0], &ou, &obuf) > 0)
                                child.user = &ou;
                        STRV_FOREACH(a, ctx->ancestors)
                        (void)strv_extend(&anc, *a);
                        (void)strv_extend(&anc, akey);
                        child.ancestors = anc;
                        expand_text(st, value, &child, depth + 1);
                        return;
                }
        }

        r = deliver_user_by_name(user, &pw, &pwbuf);
        if (r < 0) {
                add_error(st, DELIVER_DEFERRED, "4.3.0", "user lookup failure for %s", user);
                return;
        }
        if (r == 0) {
                if (!isempty(s->luser_relay) && !seen_before(st, "l", local)) {
                        _cleanup_strv_free_ char **vars =
                                user_vars(NULL, address, extension, s, local);
                        _cleanup_free_ char *dest =
                                vars ? deliver_expand(s->luser_relay, vars, true, NULL) : NULL;
                        if (!dest)
                                goto oom;
                        deliver_token(st, dest, ctx, depth + 1);
                        return;
                }
                add_error(st, DELIVER_BOUNCED, "5.1.1", "unknown user: \"%s\"", local);
                return;
        }

        if (!(flags & ADDR_NO_FORWARD)) {
                _cleanup_free_ char *fkey = strdup_printf("f:%s", pw.name);
                if (fkey && !strv_contains(ctx->ancestors, fkey) &&
                    deliver_dot_forward(st, &pw, address, extension, local, ctx, depth))
                        return;
        }
        /* The recipient itself, not reached through an alias or a
         * .forward: its mailbox is the only destination, and what
         * local_deliver() does after it needs no privileges. */
        st->last_step = depth == 0 && !st->fwd_rcpts;
        deliver_mailbox(st, &pw, address, extension, local);
        st->last_step = false;
        return;
oom:
        add_error(st, DELIVER_DEFERRED, "4.3.0", "out of memory");
}

static void flush_forwards(LocalState *st) {
        _cleanup_strv_free_ char **done = NULL;

        /* One new queue file per envelope sender. */
        for (size_t i = 0; st->fwd_rcpts && st->fwd_rcpts[i]; i++) {
                _cleanup_strv_free_ char **rcpts = NULL;
                const char *sender = st->fwd_senders[i];
                DeliverResult r = {0};
                if (strv_contains(done, sender))
                        continue;
                for (size_t k = i; st->fwd_rcpts[k]; k++)
                        if (streq(st->fwd_senders[k], sender))
                                (void)strv_extend(&rcpts, st->fwd_rcpts[k]);
                (void)strv_extend(&done, sender);
                (void)deliver_forward(st->m, sender, rcpts, st->m->recipient, &r);
                add_result(st, &r);
        }
}

void local_deliver(const DeliverMsg *m, DeliverResult *ret) {
        LocalState st = {.m = m, .s = m->settings};
        LocalCtx top = {.sender = m->env->sender};

        deliver_address(&st, m->recipient, &top, 0, 0);
        if (strv_length(st.fwd_rcpts) == strv_length(st.fwd_senders))
                flush_forwards(&st);
        else
                add_error(&st, DELIVER_DEFERRED, "4.3.0", "out of memory");
        if (!st.acc.text)
                deliver_result_set(&st.acc, DELIVER_SENT, "2.0.0",
                                   "delivered (all destinations were duplicates)");
        strv_free(st.seen);
        strv_free(st.fwd_rcpts);
        strv_free(st.fwd_senders);
        *ret = st.acc;
}
