/* sendmail: the Sendmail-compatible submission command that cron, mail(1)
 * and scripts use. Reads a message from standard input (LF or CRLF line
 * ends; a line with a single "." ends it unless -i/-oi), takes the
 * recipients from the command line and, with -t, from To:, Cc: and Bcc:
 * (Bcc: is removed), and hands the message to the set-gid postdrop helper,
 * which writes it into maildrop/ for postern-pickup.
 *
 * Other modes: -bp (and the name mailq) lists the queue (postqueue -p),
 * -q flushes it (postqueue -f), -bi (and the name newaliases) rebuilds the
 * aliases (newaliases), -bs speaks SMTP on standard input and output, one
 * postdrop per message. Options sendmail knows and postern does not need
 * (-oX, -B, -N, -R, -L, -v, -odi, ...) are accepted and ignored. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "strutil.h"

static const char *arg_sender;
static const char *arg_fullname;
static const char *arg_config_dir;
static bool arg_extract, arg_ignore_dots;

static const char *tool_path(const char *env, const char *name, char buf[static 512]) {
        const char *e = getenv(env);
        if (e && *e)
                return e;
        snprintf(buf, 512, "%s/%s", POSTERN_SBINDIR, name);
        return buf;
}

static int exec_tool(const char *env, const char *name, char *const *args) {
        char buf[512];
        const char *path = tool_path(env, name, buf);
        execv(path, args);
        fprintf(stderr, "sendmail: fatal: cannot run %s: %m\n", path);
        return EXIT_FAILURE;
}

/* Runs postdrop with the envelope and feeds it the message. */
static int drop(const char *sender, char * const *rcpts, const char *data, size_t len) {
        _cleanup_strv_free_ char **args = NULL;
        char buf[512];
        const char *path = tool_path("POSTERN_POSTDROP", "postdrop", buf);
        int pipefd[2], status;
        pid_t pid;

        if (strv_extend(&args, "postdrop") < 0)
                return -ENOMEM;
        if (arg_config_dir && (strv_extend(&args, "-c") < 0 || strv_extend(&args, arg_config_dir) < 0))
                return -ENOMEM;
        if (sender && (strv_extend(&args, "-f") < 0 || strv_extend(&args, sender) < 0))
                return -ENOMEM;
        if (arg_fullname && (strv_extend(&args, "-F") < 0 || strv_extend(&args, arg_fullname) < 0))
                return -ENOMEM;
        if (strv_extend(&args, "--") < 0)
                return -ENOMEM;
        STRV_FOREACH(r, rcpts)
                if (strv_extend(&args, *r) < 0)
                        return -ENOMEM;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                if (dup2(pipefd[0], STDIN_FILENO) < 0)
                        _exit(EXIT_FAILURE);
                execv(path, args);
                fprintf(stderr, "sendmail: fatal: cannot run %s: %m\n", path);
                _exit(EXIT_FAILURE);
        }
        close(pipefd[0]);
        (void) signal(SIGPIPE, SIG_IGN);
        for (size_t off = 0; off < len;) {
                ssize_t n = write(pipefd[1], data + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                off += (size_t) n;
        }
        close(pipefd[1]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* Appends the addresses of a header value to rcpts: "a@b, Name <c@d>". */
static int extract_addresses(const char *value, char ***rcpts) {
        const char *p = value;
        while (*p) {
                size_t n = 0;
                int depth = 0;
                bool quoted = false;
                _cleanup_free_ char *item = NULL;
                char *lt, *gt, *a;
                while (p[n] && (quoted || depth > 0 || (p[n] != ',' && p[n] != ';'))) {
                        if (p[n] == '"')
                                quoted = !quoted;
                        else if (!quoted && p[n] == '(')
                                depth++;
                        else if (!quoted && p[n] == ')' && depth > 0)
                                depth--;
                        n++;
                }
                item = strndup_safe(p, n);
                if (!item)
                        return -ENOMEM;
                p += n;
                if (*p)
                        p++;
                a = item;
                if ((lt = strrchr(item, '<')) && (gt = strchr(lt, '>'))) {
                        *gt = 0;
                        a = lt + 1;
                } else {
                        /* Drop (comments), then a "group:" prefix. */
                        char *dst = item, *c;
                        int level = 0;
                        for (char *src = item; *src; src++) {
                                if (*src == '(')
                                        level++;
                                else if (*src == ')' && level > 0)
                                        level--;
                                else if (level == 0)
                                        *dst++ = *src;
                        }
                        *dst = 0;
                        if ((c = strchr(item, ':')))
                                a = c + 1;
                }
                a = strstrip(a);
                if (*a && strv_extend(rcpts, a) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* -t: takes recipients from the header and removes Bcc:. */
static int extract_recipients(StrBuf *msg, char ***rcpts) {
        StrBuf out = {0};
        const char *p = msg->data ? msg->data : "";
        bool in_header = true, skipping = false;
        _cleanup_free_ char *pending = NULL;
        int r = 0;

        while (*p) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t) (nl - p + 1) : strlen(p);
                if (in_header && (n == 1 || (p[0] != ' ' && p[0] != '\t' && !memchr(p, ':', n))))
                        in_header = false;
                if (in_header) {
                        bool cont = p[0] == ' ' || p[0] == '\t';
                        if (!cont) {
                                if (pending && (r = extract_addresses(pending, rcpts)) < 0)
                                        break;
                                free(pending);
                                pending = NULL;
                                skipping = strncasecmp(p, "bcc:", 4) == 0;
                                if (strncasecmp(p, "to:", 3) == 0 || strncasecmp(p, "cc:", 3) == 0 ||
                                    skipping)
                                        pending = strndup_safe(strchr(p, ':') + 1,
                                                               n - (size_t) (strchr(p, ':') + 1 - p));
                        } else if (pending) {
                                _cleanup_free_ char *more = strndup_safe(p, n);
                                char *j = more ? strdup_printf("%s %s", pending, more) : NULL;
                                free(pending);
                                pending = j;
                        }
                        if (pending)
                                for (char *c = pending; *c; c++)
                                        if (*c == '\n' || *c == '\r')
                                                *c = ' ';
                        if (skipping) {
                                p += n;
                                continue;
                        }
                }
                if ((r = strbuf_append(&out, p, n)) < 0)
                        break;
                p += n;
        }
        if (r >= 0 && pending)
                r = extract_addresses(pending, rcpts);
        if (r < 0) {
                strbuf_done(&out);
                return r;
        }
        strbuf_done(msg);
        *msg = out;
        return 0;
}

/* Reads the message: CRLF to LF, the "." line ends it unless -i. */
static int read_message(FILE *in, bool smtp, StrBuf *msg) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int r = 0;

        while ((n = getline(&line, &cap, in)) > 0) {
                if (n > 0 && line[n - 1] == '\n') {
                        line[--n] = 0;
                        if (n > 0 && line[n - 1] == '\r')
                                line[--n] = 0;
                }
                if ((smtp || !arg_ignore_dots) && streq(line, "."))
                        break;
                if (smtp && line[0] == '.') {
                        memmove(line, line + 1, (size_t) n);    /* RFC 5321 4.5.2 */
                        n--;
                }
                if ((r = strbuf_append(msg, line, (size_t) n)) < 0 || (r = strbuf_putc(msg, '\n')) < 0)
                        break;
        }
        free(line);
        return r;
}

static int smtp_session(void) {
        _cleanup_free_ char *sender = NULL;
        _cleanup_strv_free_ char **rcpts = NULL;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        bool have_mail = false;

        printf("220 %s ESMTP postern (sendmail -bs)\r\n", "localhost");
        fflush(stdout);
        while ((n = getline(&line, &cap, stdin)) > 0) {
                const char *arg;
                line[strcspn(line, "\r\n")] = 0;
                if (startswith_no_case(line, "HELO") || startswith_no_case(line, "EHLO")) {
                        printf(strncasecmp(line, "EHLO", 4) == 0 ? "250-localhost\r\n250 8BITMIME\r\n"
                                                                 : "250 localhost\r\n");
                } else if ((arg = startswith_no_case(line, "MAIL FROM:"))) {
                        free(sender);
                        sender = NULL;
                        if (addr_parse_path(arg, ADDR_PARSE_ALLOW_EMPTY | ADDR_PARSE_ALLOW_8BIT, &sender,
                                            NULL, NULL) < 0)
                                printf("501 5.1.7 Bad sender address syntax\r\n");
                        else {
                                have_mail = true;
                                rcpts = strv_free(rcpts);
                                printf("250 2.1.0 Ok\r\n");
                        }
                } else if ((arg = startswith_no_case(line, "RCPT TO:"))) {
                        _cleanup_free_ char *a = NULL;
                        if (!have_mail)
                                printf("503 5.5.1 Error: need MAIL command\r\n");
                        else if (addr_parse_path(arg, ADDR_PARSE_ALLOW_8BIT, &a, NULL, NULL) < 0)
                                printf("501 5.1.3 Bad recipient address syntax\r\n");
                        else if (strv_extend(&rcpts, a) < 0)
                                printf("452 4.3.0 Insufficient system resources\r\n");
                        else
                                printf("250 2.1.5 Ok\r\n");
                } else if (strcaseeq(line, "DATA")) {
                        StrBuf msg = {0};
                        if (!rcpts) {
                                printf("554 5.5.1 Error: no valid recipients\r\n");
                                fflush(stdout);
                                continue;
                        }
                        printf("354 End data with <CR><LF>.<CR><LF>\r\n");
                        fflush(stdout);
                        if (read_message(stdin, true, &msg) < 0 ||
                            drop(sender, rcpts, msg.data ? msg.data : "", msg.len) < 0)
                                printf("451 4.3.0 Error: queue file write error\r\n");
                        else
                                printf("250 2.0.0 Ok: queued\r\n");
                        strbuf_done(&msg);
                        have_mail = false;
                        rcpts = strv_free(rcpts);
                } else if (strcaseeq(line, "RSET")) {
                        have_mail = false;
                        rcpts = strv_free(rcpts);
                        printf("250 2.0.0 Ok\r\n");
                } else if (strcaseeq(line, "NOOP")) {
                        printf("250 2.0.0 Ok\r\n");
                } else if (strcaseeq(line, "QUIT")) {
                        printf("221 2.0.0 Bye\r\n");
                        break;
                } else
                        printf("502 5.5.2 Error: command not recognized\r\n");
                fflush(stdout);
        }
        fflush(stdout);
        free(line);
        return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
        const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        _cleanup_strv_free_ char **rcpts = NULL;
        enum { MODE_DELIVER, MODE_LIST, MODE_FLUSH, MODE_ALIASES, MODE_SMTP } mode = MODE_DELIVER;
        StrBuf msg = {0};
        int c, r;

        if (streq(name, "mailq"))
                mode = MODE_LIST;
        else if (streq(name, "newaliases"))
                mode = MODE_ALIASES;
        opterr = 0;
        while ((c = getopt(argc, argv, "+tif:r:F:b:o:q::vB:N:R:C:L:X:V:h:")) >= 0)
                switch (c) {
                case 't':
                        arg_extract = true;
                        break;
                case 'i':
                        arg_ignore_dots = true;
                        break;
                case 'f':
                case 'r':
                        arg_sender = optarg;
                        break;
                case 'F':
                        arg_fullname = optarg;
                        break;
                case 'C':
                        arg_config_dir = optarg;
                        break;
                case 'o':
                        if (streq(optarg, "i"))
                                arg_ignore_dots = true;
                        break;
                case 'b':
                        if (streq(optarg, "p"))
                                mode = MODE_LIST;
                        else if (streq(optarg, "i"))
                                mode = MODE_ALIASES;
                        else if (streq(optarg, "s"))
                                mode = MODE_SMTP;
                        else if (streq(optarg, "m") || streq(optarg, "d"))
                                mode = MODE_DELIVER;
                        else {
                                fprintf(stderr, "sendmail: fatal: unsupported: -b%s\n", optarg);
                                return EXIT_FAILURE;
                        }
                        break;
                case 'q':
                        mode = MODE_FLUSH;
                        break;
                case '?':
                        fprintf(stderr, "sendmail: fatal: unknown option -%c\n", optopt);
                        return EXIT_FAILURE;
                default:
                        break;          /* accepted for compatibility */
                }
        if (arg_config_dir)
                (void) setenv("POSTERN_CONFIG_DIR", arg_config_dir, 1);
        switch (mode) {
        case MODE_LIST: {
                char *args[] = {(char *) "postqueue", (char *) "-p", NULL};
                return exec_tool("POSTERN_POSTQUEUE", "postqueue", args);
        }
        case MODE_FLUSH: {
                char *args[] = {(char *) "postqueue", (char *) "-f", NULL};
                return exec_tool("POSTERN_POSTQUEUE", "postqueue", args);
        }
        case MODE_ALIASES: {
                char *args[] = {(char *) "newaliases", NULL};
                return exec_tool("POSTERN_NEWALIASES", "newaliases", args);
        }
        case MODE_SMTP:
                return smtp_session();
        default:
                break;
        }
        for (int i = optind; i < argc; i++)
                if (strv_extend(&rcpts, argv[i]) < 0)
                        return EXIT_FAILURE;
        r = read_message(stdin, false, &msg);
        if (r >= 0 && arg_extract)
                r = extract_recipients(&msg, &rcpts);
        if (r < 0) {
                fprintf(stderr, "sendmail: fatal: %s\n", strerror(-r));
                strbuf_done(&msg);
                return EXIT_FAILURE;
        }
        if (!rcpts) {
                fprintf(stderr, "sendmail: fatal: no recipient addresses found in message header\n");
                strbuf_done(&msg);
                return EXIT_FAILURE;
        }
        r = drop(arg_sender, rcpts, msg.data ? msg.data : "", msg.len);
        strbuf_done(&msg);
        if (r < 0) {
                fprintf(stderr, "sendmail: fatal: the message was not queued\n");
                return 75;      /* EX_TEMPFAIL */
        }
        return EXIT_SUCCESS;
}
