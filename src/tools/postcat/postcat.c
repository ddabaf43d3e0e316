/* postcat: shows a queue file in Postfix's postcat layout: the envelope
 * records, the message contents and the end marker, each section headed by
 * "*** NAME PATH ***". -q ID finds the message in the queue (otherwise the
 * arguments are file names); -e, -h and -b limit the output to the
 * envelope, the header or the body. Queue files are read, never changed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "queue-file.h"
#include "queue-scan.h"
#include "strutil.h"

static bool arg_envelope, arg_header, arg_body;

static void show_time(const char *label, time_t t) {
        char buf[64];
        struct tm tm;
        if (localtime_r(&t, &tm) && strftime(buf, sizeof(buf), "%a %b %e %H:%M:%S %Y", &tm))
                printf("%s: %s\n", label, buf);
}

static int show(int fd, const char *name) {
        QueueEnvelope env = {0};
        uint64_t off, left;
        bool in_header = true;
        StrBuf line = {0};
        char buf[65536];
        int r;

        r = queue_file_read(fd, &env);
        if (r < 0) {
                fprintf(stderr, "postcat: fatal: %s: %s\n", name,
                        r == -EBADMSG ? "not a valid queue file" : strerror(-r));
                return r;
        }
        if (arg_envelope) {
                printf("*** ENVELOPE RECORDS %s ***\n", name);
                printf("message_size: %16" PRIu64 " %16" PRIu64 " %16zu %16d %16" PRIu64 "\n",
                       env.content_size, env.content_offset, env.n_rcpts, 0, env.content_size);
                show_time("message_arrival_time", env.arrival.tv_sec);
                show_time("create_time", env.arrival.tv_sec);
                if (env.client_name)
                        printf("named_attribute: client_name=%s\n", env.client_name);
                if (env.client_addr)
                        printf("named_attribute: client_address=%s\n", env.client_addr);
                if (env.helo)
                        printf("named_attribute: helo_name=%s\n", env.helo);
                if (env.protocol)
                        printf("named_attribute: protocol_name=%s\n", env.protocol);
                if (env.sasl_username)
                        printf("named_attribute: sasl_username=%s\n", env.sasl_username);
                if (env.submit_uid)
                        printf("named_attribute: uid=%s\n", env.submit_uid);
                if (env.fullname)
                        printf("sender_fullname: %s\n", env.fullname);
                if (env.flags & QUEUE_FLAG_HOLD)
                        printf("named_attribute: hold=yes\n");
                printf("sender: %s\n", env.sender);
                for (size_t i = 0; i < env.n_rcpts; i++) {
                        QueueRecipient *rc = &env.rcpts[i];
                        if (rc->orig)
                                printf("original_recipient: %s\n", rc->orig);
                        printf("%s: %s\n",
                               rc->status == QUEUE_RCPT_PENDING ? "recipient"
                               : rc->status == QUEUE_RCPT_EXPANDED ? "expanded_recipient"
                                                                  : "done_recipient",
                               rc->address);
                }
        }
        if (arg_header || arg_body) {
                printf("*** MESSAGE CONTENTS %s ***\n", name);
                off = env.content_offset;
                left = env.content_size;
                while (left > 0) {
                        size_t n = left < sizeof(buf) ? (size_t) left : sizeof(buf);
                        ssize_t k = pread(fd, buf, n, (off_t) off);
                        if (k <= 0)
                                break;
                        off += (uint64_t) k;
                        left -= (uint64_t) k;
                        for (ssize_t i = 0; i < k; i++) {
                                (void) strbuf_putc(&line, buf[i]);
                                if (buf[i] != '\n')
                                        continue;
                                if ((in_header && arg_header) || (!in_header && arg_body))
                                        fwrite(line.data, 1, line.len, stdout);
                                if (in_header && line.len == 1)
                                        in_header = false;
                                strbuf_clear(&line);
                        }
                }
                if (line.len > 0 && ((in_header && arg_header) || (!in_header && arg_body)))
                        printf("%.*s\n", (int) line.len, line.data);
                strbuf_done(&line);
        }
        if (arg_envelope)
                printf("*** MESSAGE FILE END %s ***\n", name);
        queue_envelope_done(&env);
        return 0;
}

int main(int argc, char **argv) {
        const char *config_dir = NULL;
        bool by_id = false;
        int c, ret = EXIT_SUCCESS;

        while ((c = getopt(argc, argv, "c:qehbov")) >= 0)
                switch (c) {
                case 'c':
                        config_dir = optarg;
                        break;
                case 'q':
                        by_id = true;
                        break;
                case 'e':
                        arg_envelope = true;
                        break;
                case 'h':
                        arg_header = true;
                        break;
                case 'b':
                        arg_body = true;
                        break;
                case 'o':
                case 'v':
                        break;
                default:
                        fprintf(stderr, "Usage: postcat [-c DIR] [-e] [-h] [-b] [-q] FILE|QUEUE_ID...\n");
                        return EXIT_FAILURE;
                }
        if (!arg_envelope && !arg_header && !arg_body)
                arg_envelope = arg_header = arg_body = true;
        if (optind >= argc) {
                fprintf(stderr, "postcat: fatal: no queue ID or file given\n");
                return EXIT_FAILURE;
        }
        if (by_id) {
                _cleanup_(conf_unrefp) Config *cfg = NULL;
                _cleanup_close_ int qfd = -1;
                Diag diags = {0};
                int r = conf_load(config_dir, NULL, &diags, &cfg);
                diag_print(&diags, stderr, "postcat");
                diag_done(&diags);
                if (r < 0) {
                        fprintf(stderr, "postcat: fatal: cannot load the configuration: %s\n",
                                strerror(-r));
                        return EXIT_FAILURE;
                }
                qfd = open(conf_get_str(cfg, P_QUEUE_DIRECTORY), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (qfd < 0) {
                        fprintf(stderr, "postcat: fatal: cannot open queue_directory: %m\n");
                        return EXIT_FAILURE;
                }
                for (int i = optind; i < argc; i++) {
                        const char *queue;
                        char path[QUEUE_PATH_MAX];
                        _cleanup_close_ int fd = -1;
                        if (!queue_id_valid(argv[i]) || queue_locate(qfd, argv[i], &queue) < 0 ||
                            (fd = queue_open(qfd, queue, argv[i], O_RDONLY)) < 0) {
                                fprintf(stderr, "postcat: fatal: open queue file %s: No such file or directory\n",
                                        argv[i]);
                                ret = EXIT_FAILURE;
                                continue;
                        }
                        queue_subpath(queue, argv[i], path);
                        if (show(fd, path) < 0)
                                ret = EXIT_FAILURE;
                }
                return ret;
        }
        for (int i = optind; i < argc; i++) {
                _cleanup_close_ int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        fprintf(stderr, "postcat: fatal: open %s: %m\n", argv[i]);
                        ret = EXIT_FAILURE;
                        continue;
                }
                if (show(fd, argv[i]) < 0)
                        ret = EXIT_FAILURE;
        }
        return ret;
}
