/* deliver-local-util.c: the pieces every delivery path shares: delivery
 * results (and their transport through a pipe), running a function as
 * another user in a child process (priv_run()), passwd lookups, and the
 * $name expansion of forward_path, mailbox_command and luser_relay. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deliver-local.h"
#include "fileio.h"

/* Caps on what a result carries through its pipe. */
#define RESULT_TEXT_MAX 1000
#define RESULT_BYTES_MAX 16384
#define MERGED_TEXT_MAX 400

void deliver_result_done(DeliverResult *r) {
        free(r->text);
        strv_free(r->queue_ids);
        *r = (DeliverResult){0};
}

DeliverStatus deliver_result_set(DeliverResult *r, DeliverStatus status, const char *dsn,
                                 const char *fmt, ...) {
        va_list ap;

        r->status = status;
        snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
        free(r->text);
        va_start(ap, fmt);
        r->text = strdup_vprintf(fmt, ap);
        va_end(ap);
        return status;
}

static int status_rank(DeliverStatus s) {
        return s == DELIVER_DEFERRED ? 2 : s == DELIVER_BOUNCED ? 1 : 0;
}

void deliver_result_merge(DeliverResult *acc, DeliverResult *sub) {
        STRV_FOREACH(q, sub->queue_ids)
        (void)strv_extend(&acc->queue_ids, *q);
        if (!acc->text || status_rank(sub->status) > status_rank(acc->status)) {
                acc->status = sub->status;
                memcpy(acc->dsn, sub->dsn, sizeof(acc->dsn));
                free(acc->text);
                acc->text = steal_ptr(sub->text);
        } else if (sub->status == acc->status && sub->text && !strstr(acc->text, sub->text) &&
                   strlen(acc->text) + strlen(sub->text) < MERGED_TEXT_MAX) {
                /* Several destinations of one recipient: say what happened
                 * to each kind ("delivered to maildir; forwarded as ID"). */
                char *t = strdup_printf("%s; %s", acc->text, sub->text);
                if (t) {
                        free(acc->text);
                        acc->text = t;
                }
        }
}

const char *deliver_status_to_string(DeliverStatus s) {
        return s == DELIVER_SENT ? "sent" : s == DELIVER_DEFERRED ? "deferred" : "bounced";
}

const char *deliver_errno_dsn(int error, DeliverStatus *ret_status) {
        error = abs(error);
        if (error == ENOSPC) {
                *ret_status = DELIVER_DEFERRED;
                return "4.3.0";
        }
        if (error == EDQUOT || error == EFBIG) {
                *ret_status = DELIVER_BOUNCED;
                return "5.2.2";
        }
        *ret_status = DELIVER_DEFERRED;
        return "4.2.0";
}

/* Wire format: "S<status> <dsn> <text>\n" then "Q<queue id>\n" lines. */
int deliver_result_write(int fd, const DeliverResult *r) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        size_t n = strlen(strempty(r->text));

        if (n > RESULT_TEXT_MAX)
                n = RESULT_TEXT_MAX;
        if (strbuf_printf(&b, "S%d %s ", (int)r->status, r->dsn[0] ? r->dsn : "4.3.0") < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (strbuf_putc(&b, r->text[i] == '\n' ? ' ' : r->text[i]) < 0)
                        return -ENOMEM;
        if (strbuf_putc(&b, '\n') < 0)
                return -ENOMEM;
        STRV_FOREACH(q, r->queue_ids)
        if (strbuf_printf(&b, "Q%s\n", *q) < 0)
                return -ENOMEM;
        return write_all(fd, b.data, MIN(b.len, (size_t)RESULT_BYTES_MAX));
}

int deliver_result_read(int fd, DeliverResult *ret) {
        _cleanup_free_ char *buf = malloc(RESULT_BYTES_MAX + 1);
        size_t len = 0;
        char *line, *save = NULL;
        bool have = false;

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = read(fd, buf + len, RESULT_BYTES_MAX - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                if (k == 0 || (len += (size_t)k) == RESULT_BYTES_MAX)
                        break;
        }
        buf[len] = 0;
        for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (line[0] == 'S' && !have) {
                        char dsn[16] = "";
                        int st, off = 0;
                        if (sscanf(line + 1, "%d %15s %n", &st, dsn, &off) < 2 || st < 0 ||
                            st > DELIVER_BOUNCED)
                                return -EBADMSG;
                        deliver_result_set(ret, (DeliverStatus)st, dsn, "%s", line + 1 + off);
                        have = true;
                } else if (line[0] == 'Q')
                        (void)strv_extend(&ret->queue_ids, line + 1);
        }
        return have ? 0 : -EBADMSG;
}

int priv_drop(uid_t uid, gid_t gid) {
        if (geteuid() != 0) {
                if (uid != geteuid())
                        return -EPERM;
                return 0;
        }
        /* Postfix enables no secondary groups for deliveries. */
        if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                return -errno;
        /* Paranoia: make sure there is no way back. */
        if (uid != 0 && (setuid(0) == 0 || geteuid() == 0))
                return -EPERM;
        return 0;
}

static bool next_in_place;

void priv_run_next_in_place(void) {
        next_in_place = true;
}

void priv_run(const DeliverUser *user, PrivFunc f, void *userdata, DeliverResult *ret) {
        bool in_place = next_in_place;
        int p[2], status, r;
        pid_t pid;

        next_in_place = false;

        if (user->uid == 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "refusing to deliver as root");
                return;
        }
        if (geteuid() != 0 && user->uid != geteuid()) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                   "cannot deliver as uid %u: delivery agent is not running "
                                   "as root",
                                   (unsigned)user->uid);
                return;
        }
        if (in_place) {
                /* The same as the child below, without the fork: nothing
                 * runs as root in this process after it. */
                r = priv_drop(user->uid, user->gid);
                if (r < 0)
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                           "cannot change to uid %u gid %u: %s",
                                           (unsigned)user->uid, (unsigned)user->gid, strerror(-r));
                else
                        f(userdata, ret);
                if (!ret->text)
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "internal error");
                return;
        }
        if (pipe2(p, O_CLOEXEC) < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "cannot create a pipe: %m");
                return;
        }
        pid = fork();
        if (pid < 0) {
                close(p[0]);
                close(p[1]);
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "cannot fork: %m");
                return;
        }
        if (pid == 0) {
                DeliverResult res = {0};
                close(p[0]);
                r = priv_drop(user->uid, user->gid);
                if (r < 0)
                        deliver_result_set(&res, DELIVER_DEFERRED, "4.3.0",
                                           "cannot change to uid %u gid %u: %s",
                                           (unsigned)user->uid, (unsigned)user->gid, strerror(-r));
                else
                        f(userdata, &res);
                if (!res.text)
                        deliver_result_set(&res, DELIVER_DEFERRED, "4.3.0", "internal error");
                _exit(deliver_result_write(p[1], &res) < 0 ? 1 : 0);
        }
        close(p[1]);
        r = deliver_result_read(p[0], ret);
        close(p[0]);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                if (WIFSIGNALED(status))
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                           "delivery process died with signal %s",
                                           strsignal(WTERMSIG(status)));
                else
                        deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                           "delivery process failed");
        }
}

static int user_fill(struct passwd *pw, DeliverUser *ret, char **buf) {
        size_t a = strlen(pw->pw_name) + 1, b = strlen(pw->pw_dir) + 1,
               c = strlen(pw->pw_shell) + 1;
        char *s = malloc(a + b + c);
        if (!s)
                return -ENOMEM;
        memcpy(s, pw->pw_name, a);
        memcpy(s + a, pw->pw_dir, b);
        memcpy(s + a + b, pw->pw_shell, c);
        *ret = (DeliverUser){
                .uid = pw->pw_uid,
                .gid = pw->pw_gid,
                .name = s,
                .home = s + a,
                .shell = s + a + b,
        };
        free(*buf);
        *buf = s;
        return 1;
}

int deliver_user_by_name(const char *name, DeliverUser *ret, char **buf) {
        struct passwd *pw;

        errno = 0;
        pw = getpwnam(name);
        if (!pw)
                return errno == 0 || errno == ENOENT || errno == ESRCH ? 0 : -errno;
        return user_fill(pw, ret, buf);
}

int deliver_user_by_uid(uid_t uid, DeliverUser *ret, char **buf) {
        struct passwd *pw;

        errno = 0;
        pw = getpwuid(uid);
        if (!pw)
                return errno == 0 || errno == ENOENT || errno == ESRCH ? 0 : -errno;
        return user_fill(pw, ret, buf);
}

static const char *var_get(char *const *vars, const char *name, size_t n) {
        for (char *const *v = vars; v && v[0]; v += 2)
                if (strlen(v[0]) == n && strncmp(v[0], name, n) == 0)
                        return v[1] && *v[1] ? v[1] : NULL;
        return NULL;
}

/* Postfix's default command_expansion_filter and forward_expansion_filter:
 * letters, digits and these. Anything else in a value becomes "_", so an
 * address extension cannot smuggle shell or path syntax in. */
static bool filter_ok(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("!@%-_=+:,./", c);
}

static int put_value(StrBuf *b, const char *v, bool filter) {
        for (; *v; v++)
                if (strbuf_putc(b, filter && !filter_ok(*v) ? '_' : *v) < 0)
                        return -ENOMEM;
        return 0;
}

char *deliver_expand(const char *s, char *const *vars, bool filter, bool *ret_undef) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        bool undef = false;

        while (*s) {
                const char *name, *v;
                size_t n;

                if (*s != '$') {
                        if (strbuf_putc(&b, *s++) < 0)
                                return NULL;
                        continue;
                }
                s++;
                if (*s == '{') {
                        const char *end, *cond;
                        int depth = 1;
                        name = ++s;
                        for (end = s; *end && depth > 0; end++)
                                depth += *end == '{' ? 1 : *end == '}' ? -1 : 0;
                        if (depth > 0) {
                                /* Unbalanced: copy as is. */
                                if (strbuf_puts(&b, "${") < 0)
                                        return NULL;
                                continue;
                        }
                        end--; /* at the closing brace */
                        for (cond = name; cond < end && *cond != '?' && *cond != ':'; cond++)
                                ;
                        n = (size_t)(cond - name);
                        v = var_get(vars, name, n);
                        if (cond < end) {
                                const char *val = cond + 1;
                                size_t vlen = (size_t)(end - val);
                                bool take = (*cond == '?') == (v != NULL);
                                /* ${name?{value}} and ${name:{value}} */
                                if (vlen >= 2 && val[0] == '{' && val[vlen - 1] == '}') {
                                        val++;
                                        vlen -= 2;
                                }
                                if (take) {
                                        _cleanup_free_ char *inner = strndup_safe(val, vlen);
                                        _cleanup_free_ char *x = NULL;
                                        bool u = false;
                                        if (!inner)
                                                return NULL;
                                        x = deliver_expand(inner, vars, filter, &u);
                                        if (!x || strbuf_puts(&b, x) < 0)
                                                return NULL;
                                        undef = undef || u;
                                }
                        } else if (v) {
                                if (put_value(&b, v, filter) < 0)
                                        return NULL;
                        } else
                                undef = true;
                        s = end + 1;
                } else {
                        name = s;
                        while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                               (*s >= '0' && *s <= '9') || *s == '_')
                                s++;
                        n = (size_t)(s - name);
                        if (n == 0) {
                                if (strbuf_putc(&b, '$') < 0)
                                        return NULL;
                                continue;
                        }
                        v = var_get(vars, name, n);
                        if (v) {
                                if (put_value(&b, v, filter) < 0)
                                        return NULL;
                        } else
                                undef = true;
                }
        }
        if (ret_undef)
                *ret_undef = undef;
        return strbuf_steal(&b);
}
