/* postqueue: the Postfix-compatible queue front end for users. -p (and
 * mailq) lists the queue in Postfix's showq format, -j as one JSON object
 * per message (Postfix 3.1+), -f, -s SITE and -i ID ask the queue manager
 * over org.postern.Queue1 to retry deferred mail now (its socket starts it
 * when it is not running). Listing reads queue_directory directly when it
 * can (root, the mail owner) and otherwise asks the queue manager for the
 * listing (Queue1.List), so that every user can list the queue as with
 * Postfix; it never reports an unreadable queue as empty. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bus-names.h"
#include "conf.h"
#include "queue-scan.h"
#include "queue-show.h"
#include "strutil.h"

static const char *arg_config_dir;

/* Asks the queue manager for the listing (Queue1.List) and copies it to
 * standard output. A NUL byte in the stream starts the error text of a
 * listing that failed part way. */
static int list_via_qmgr(bool json) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_close_ int fd = -1;
        char buf[65536], err[512];
        size_t n_err = 0;
        bool failed = false;
        int lfd, r;

        r = queue_qmgr_connect(&bus);
        if (r >= 0)
                r = sd_bus_call_method(bus, NULL, QUEUE_BUS_OBJECT, QUEUE_BUS_INTERFACE, "List",
                                       &error, &reply, "s", json ? "json" : "text");
        if (r >= 0)
                r = sd_bus_message_read(reply, "h", &lfd);
        if (r >= 0) {
                fd = fcntl(lfd, F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        r = -errno;
        }
        if (r < 0) {
                fprintf(stderr, "postqueue: fatal: the queue manager cannot list the queue: %s\n",
                        error.message ? error.message : strerror(-r));
                return r;
        }
        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        fprintf(stderr, "postqueue: fatal: cannot read the listing: %m\n");
                        return r;
                }
                if (k == 0)
                        break;
                for (ssize_t i = 0; i < k; i++) {
                        if (failed) {
                                if (n_err < sizeof(err) - 1)
                                        err[n_err++] = buf[i];
                        } else if (buf[i] == '\0')
                                failed = true;
                        else
                                putchar(buf[i]);
                }
        }
        if (failed) {
                err[n_err] = '\0';
                fprintf(stderr, "postqueue: fatal: %s\n", err);
                return -EIO;
        }
        return 0;
}

static int list_queue(bool json) {
        _cleanup_(conf_unrefp) Config *cfg = NULL;
        _cleanup_close_ int qfd = -1;
        const char *dir;
        Diag diags = {0};
        int r;

        r = conf_load(arg_config_dir, NULL, &diags, &cfg);
        diag_print(&diags, stderr, "postqueue");
        diag_done(&diags);
        if (r < 0) {
                fprintf(stderr, "postqueue: fatal: cannot load the configuration: %s\n",
                        strerror(-r));
                return r;
        }
        dir = conf_get_str(cfg, P_QUEUE_DIRECTORY);
        qfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = qfd < 0 ? -errno : queue_show(qfd, json, stdout);
        /* The queue directories are the mail owner's: other users get the
         * listing from the queue manager, as Postfix's showq gives it. */
        if (r == -EACCES || r == -EPERM)
                return list_via_qmgr(json);
        if (r < 0)
                fprintf(stderr, "postqueue: fatal: cannot list queue_directory %s: %s\n", dir,
                        strerror(-r));
        return r;
}

static int request(const char *method, const char *arg) {
        _cleanup_free_ char *error = NULL;
        int r = queue_qmgr_call(method, arg, &error);
        if (r < 0)
                fprintf(stderr, "postqueue: fatal: %s request failed: %s\n", method,
                        strempty(error));
        return r;
}

static void help(void) {
        printf("Usage: postqueue [-c DIR] -p | -j | -f | -s SITE | -i QUEUE_ID\n\n"
               "  -p           list the queue (like mailq)\n"
               "  -j           list the queue as JSON, one object per message\n"
               "  -f           retry all deferred mail now\n"
               "  -s SITE      retry deferred mail for SITE now\n"
               "  -i QUEUE_ID  retry one message now\n"
               "  -c DIR       configuration directory\n");
}

int main(int argc, char **argv) {
        enum { NONE, LIST, JSON, FLUSH, SITE, ID } action = NONE;
        const char *arg = NULL;
        int c, r;

        if (strstr(argv[0], "mailq"))
                action = LIST;
        while ((c = getopt(argc, argv, "c:pjfs:i:vh")) >= 0)
                switch (c) {
                case 'c':
                        arg_config_dir = optarg;
                        break;
                case 'p':
                        action = LIST;
                        break;
                case 'j':
                        action = JSON;
                        break;
                case 'f':
                        action = FLUSH;
                        break;
                case 's':
                        action = SITE;
                        arg = optarg;
                        break;
                case 'i':
                        action = ID;
                        arg = optarg;
                        break;
                case 'v':
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                default:
                        help();
                        return EXIT_FAILURE;
                }
        if (arg_config_dir && setenv("POSTERN_CONFIG_DIR", arg_config_dir, 1) < 0)
                return EXIT_FAILURE;
        switch (action) {
        case LIST:
        case JSON:
                r = list_queue(action == JSON);
                break;
        case FLUSH:
                r = request("Flush", NULL);
                break;
        case SITE:
                r = request("FlushSite", arg);
                break;
        case ID:
                r = request("FlushId", arg);
                break;
        default:
                help();
                return EXIT_FAILURE;
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
