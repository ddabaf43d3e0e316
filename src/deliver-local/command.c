/* command.c: delivery to a command (|command in aliases, .forward and
 * :include: files, and mailbox_command). Runs in a process that already has
 * the rights of the delivery's user; it starts the shell (local_command_shell
 * or /bin/sh -c) in its own process group with a cleaned environment
 * (SHELL, HOME, USER, LOGNAME, EXTENSION, DOMAIN, LOCAL, RECIPIENT,
 * ORIGINAL_RECIPIENT, SENDER, PATH, and the client facts as Postfix exports
 * them), feeds the message on stdin with a "From " line, Return-Path,
 * X-Original-To and Delivered-To, keeps a little output for the diagnostic
 * and kills the group after command_time_limit. Exit codes follow
 * <sysexits.h> as in Postfix; an enhanced status code at the start of the
 * output takes precedence. Entry point: command_deliver(). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "deliver-local.h"

typedef struct CommandArgs {
        const DeliverMsg *m;
        const char *command;
        const DeliverUser *user;
        const char *delivered_to;
        const char *extension;
} CommandArgs;

static const struct {
        int code;
        const char *dsn;
        const char *text;
} sys_exits[] = {
        {EX_USAGE, "5.3.0", "command line usage error"},
        {EX_DATAERR, "5.6.0", "data format error"},
        {EX_NOINPUT, "5.3.0", "cannot open input"},
        {EX_NOUSER, "5.1.1", "user unknown"},
        {EX_NOHOST, "5.1.2", "host name unknown"},
        {EX_UNAVAILABLE, "5.3.0", "service unavailable"},
        {EX_SOFTWARE, "5.3.0", "internal software error"},
        {EX_OSERR, "4.3.0", "system resource problem"},
        {EX_OSFILE, "5.3.0", "critical OS file missing"},
        {EX_CANTCREAT, "5.2.0", "can't create user output file"},
        {EX_IOERR, "5.3.0", "input/output error"},
        {EX_TEMPFAIL, "4.3.0", "temporary failure"},
        {EX_PROTOCOL, "5.5.0", "remote error in protocol"},
        {EX_NOPERM, "5.7.0", "permission denied"},
        {EX_CONFIG, "5.3.5", "local configuration error"},
};

static int env_add(char ***env, const char *name, const char *value) {
        _cleanup_(strbuf_done) StrBuf b = {0};
        if (!value)
                return 0;
        if (strbuf_printf(&b, "%s=", name) < 0)
                return -ENOMEM;
        /* command_expansion_filter: shell metacharacters become "_". */
        for (const char *p = value; *p; p++) {
                char c = *p;
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || strchr("!@%-_=+:,./", c);
                if (strbuf_putc(&b, ok ? c : '_') < 0)
                        return -ENOMEM;
        }
        return strv_consume(env, strbuf_steal(&b));
}

static char **command_env(const CommandArgs *a) {
        const DeliverMsg *m = a->m;
        const char *rcpt = m->recipient, *at = strrchr(rcpt, '@');
        _cleanup_free_ char *local = at ? strndup_safe(rcpt, (size_t)(at - rcpt)) : strdup(rcpt);
        char **env = NULL;

        if (!local)
                return NULL;
        if (strv_extend(&env, "PATH=/usr/local/bin:/usr/bin:/bin") < 0 ||
            env_add(&env, "SHELL", a->user->shell) < 0 ||
            env_add(&env, "HOME", a->user->home) < 0 || env_add(&env, "USER", a->user->name) < 0 ||
            env_add(&env, "LOGNAME", a->user->name) < 0 ||
            env_add(&env, "EXTENSION", a->extension) < 0 ||
            env_add(&env, "DOMAIN", at ? at + 1 : NULL) < 0 || env_add(&env, "LOCAL", local) < 0 ||
            env_add(&env, "RECIPIENT", rcpt) < 0 ||
            env_add(&env, "ORIGINAL_RECIPIENT",
                    !isempty(m->orig_recipient) ? m->orig_recipient : rcpt) < 0 ||
            env_add(&env, "SENDER", m->env->sender) < 0 ||
            env_add(&env, "CLIENT_ADDRESS", m->env->client_addr) < 0 ||
            env_add(&env, "CLIENT_HOSTNAME", m->env->client_name) < 0 ||
            env_add(&env, "CLIENT_HELO", m->env->helo) < 0 ||
            env_add(&env, "CLIENT_PROTOCOL", m->env->protocol) < 0 ||
            env_add(&env, "SASL_METHOD", m->env->sasl_method) < 0 ||
            env_add(&env, "SASL_USERNAME", m->env->sasl_username) < 0)
                return strv_free(env);
        return env;
}

/* The command's process group, for the time limit's alarm. One command
 * runs per process, so a static is enough. */
static volatile pid_t alarm_pgid;
static volatile sig_atomic_t alarm_fired;

static void on_alarm(int sig) {
        alarm_fired = 1;
        if (alarm_pgid > 0)
                (void)kill(-alarm_pgid, SIGKILL);
}

_noreturn_ static void exec_command(const CommandArgs *a, int in_fd, int out_fd, char **env) {
        const char *shell = isempty(a->m->settings->local_command_shell)
                                    ? "/bin/sh"
                                    : a->m->settings->local_command_shell;
        sigset_t all;

        (void)setsid();
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        (void)signal(SIGPIPE, SIG_DFL);
        if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
            dup2(out_fd, STDERR_FILENO) < 0) {
                dprintf(out_fd, "cannot set up the command's input and output: %m\n");
                _exit(EX_OSERR);
        }
        if (chdir(a->user->home) < 0)
                (void)chdir("/");
        execle(shell, shell, "-c", a->command, (char *)NULL, env);
        dprintf(STDOUT_FILENO, "cannot execute %s: %m\n", shell);
        _exit(EX_OSERR);
}

static void command_priv(void *userdata, DeliverResult *ret) {
        CommandArgs *a = userdata;
        _cleanup_strv_free_ char **env = command_env(a);
        _cleanup_(strbuf_done) StrBuf out = {0};
        int in[2], outp[2], status = 0;
        bool timed_out = false;
        sigset_t unblock;
        time_t deadline;
        int64_t n;
        pid_t pid;

        if (!env || pipe2(in, O_CLOEXEC) < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "cannot run command: %m");
                return;
        }
        if (pipe2(outp, O_CLOEXEC) < 0) {
                close(in[0]);
                close(in[1]);
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "cannot run command: %m");
                return;
        }
        pid = fork();
        if (pid < 0) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0", "cannot fork: %m");
                close(in[0]);
                close(in[1]);
                close(outp[0]);
                close(outp[1]);
                return;
        }
        if (pid == 0)
                exec_command(a, in[0], outp[1], env);
        close(in[0]);
        close(outp[1]);
        deadline = time(NULL) + (time_t)a->m->settings->command_time_limit_sec;

        /* Feeding the message can block on a command that neither reads
         * nor exits: the alarm kills its group at the time limit, which
         * ends our write with EPIPE. */
        alarm_pgid = pid;
        (void)sigaction(SIGALRM, &(struct sigaction){.sa_handler = on_alarm}, NULL);
        sigemptyset(&unblock);
        sigaddset(&unblock, SIGALRM);
        sigprocmask(SIG_UNBLOCK, &unblock, NULL);
        alarm((unsigned)MIN(a->m->settings->command_time_limit_sec, 86400 * 365));
        (void)fcntl(outp[0], F_SETFL, O_NONBLOCK);
        (void)signal(SIGPIPE, SIG_IGN);
        n = deliver_copy(a->m, in[1], a->delivered_to, COPY_COMMAND, 0);
        close(in[1]);
        (void)n; /* a command that does not read its input is its business */
        if (alarm_fired)
                deadline = 0;
        for (;;) {
                struct pollfd pfd = {.fd = outp[0], .events = POLLIN};
                time_t now = time(NULL);
                int k;
                if (now >= deadline) {
                        timed_out = true;
                        break;
                }
                k = poll(&pfd, 1, (int)MIN((deadline - now) * 1000, 1000));
                if (k < 0 && errno != EINTR)
                        break;
                if (k > 0) {
                        char buf[4096];
                        ssize_t r = read(outp[0], buf, sizeof(buf));
                        if (r == 0)
                                break;
                        if (r > 0 && out.len < DELIVER_COMMAND_OUTPUT_MAX)
                                (void)strbuf_append(
                                        &out, buf,
                                        MIN((size_t)r, DELIVER_COMMAND_OUTPUT_MAX - out.len));
                }
        }
        close(outp[0]);
        alarm(0);
        if (alarm_fired)
                timed_out = true;
        if (timed_out)
                (void)kill(-pid, SIGKILL);
        else {
                /* Output closed; give the command the rest of its time to exit. */
                while (waitpid(pid, &status, WNOHANG) == 0) {
                        if (time(NULL) >= deadline) {
                                timed_out = true;
                                (void)kill(-pid, SIGKILL);
                                break;
                        }
                        struct timespec ts = {0, 10 * 1000 * 1000};
                        nanosleep(&ts, NULL);
                }
                if (!timed_out)
                        goto done;
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
done:
        for (size_t i = 0; i < out.len; i++)
                if ((unsigned char)out.data[i] < 0x20)
                        out.data[i] = ' ';
        if (timed_out) {
                deliver_result_set(ret, DELIVER_BOUNCED, "5.3.0",
                                   "Command time limit exceeded: \"%s\"", a->command);
                return;
        }
        if (WIFSIGNALED(status)) {
                deliver_result_set(ret, DELIVER_DEFERRED, "4.3.0",
                                   "Command died with signal %d: \"%s\"", WTERMSIG(status),
                                   a->command);
                return;
        }
        if (WEXITSTATUS(status) == 0) {
                deliver_result_set(ret, DELIVER_SENT, "2.0.0", "delivered to command: %s",
                                   a->command);
                return;
        } else {
                int code = WEXITSTATUS(status);
                char dsn[16] = "5.3.0";
                const char *what = NULL;
                DeliverStatus st = DELIVER_BOUNCED;
                char empty[1] = "";
                char *o = strstrip(out.data ? out.data : empty);
                unsigned c1, c2, c3;
                int len = 0;

                for (size_t i = 0; i < ELEMENTSOF(sys_exits); i++)
                        if (sys_exits[i].code == code) {
                                snprintf(dsn, sizeof(dsn), "%s", sys_exits[i].dsn);
                                what = sys_exits[i].text;
                        }
                /* "4.2.2 mailbox full" at the start of the output wins. */
                if (sscanf(o, "%1u.%3u.%3u%n", &c1, &c2, &c3, &len) == 3 && (c1 == 4 || c1 == 5) &&
                    (o[len] == ' ' || o[len] == 0))
                        snprintf(dsn, sizeof(dsn), "%u.%u.%u", c1, c2, c3);
                st = dsn[0] == '4' ? DELIVER_DEFERRED : DELIVER_BOUNCED;
                if (what)
                        deliver_result_set(ret, st, dsn, "%s. Command output: %s", what,
                                           *o ? o : "(none)");
                else
                        deliver_result_set(ret, st, dsn, "Command died with status %d: \"%s\"%s%s",
                                           code, a->command, *o ? ". Command output: " : "", o);
        }
}

void command_deliver(const DeliverMsg *m, const char *command, const DeliverUser *user,
                     const char *delivered_to, const char *extension, DeliverResult *ret) {
        CommandArgs a = {m, command, user, delivered_to, extension};
        priv_run(user, command_priv, &a, ret);
}
