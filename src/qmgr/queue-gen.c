/* queue-gen.c: writes many queue files straight into a queue directory for
 * bench/queue-bench.sh (built, never installed): N messages of one
 * recipient each into deferred/ (hashed, as the queue manager leaves them),
 * the first --due of them due now, the rest due in a day. Files are not
 * synced: this builds a test queue, it does not accept mail. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "queue-file.h"
#include "queue-scan.h"

int main(int argc, char **argv) {
        unsigned long n = 1000, due = 0;
        const char *queue_dir = NULL, *queue = QUEUE_DEFERRED;
        static const char body[] = "Received: by bench\nSubject: bench\n\nbench body line\n";
        int dirs[256], qfd, c;
        struct timeval now;

        while ((c = getopt(argc, argv, "n:d:q:Q:")) >= 0)
                switch (c) {
                case 'n':
                        n = strtoul(optarg, NULL, 10);
                        break;
                case 'd':
                        due = strtoul(optarg, NULL, 10);
                        break;
                case 'q':
                        queue_dir = optarg;
                        break;
                case 'Q':
                        queue = optarg;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (!queue_dir) {
                fprintf(stderr, "Usage: queue-gen -q QUEUE_DIR [-n COUNT] [-d DUE] [-Q QUEUE]\n");
                return EXIT_FAILURE;
        }
        qfd = open(queue_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (qfd < 0) {
                perror(queue_dir);
                return EXIT_FAILURE;
        }
        for (int i = 0; i < 256; i++)
                dirs[i] = -1;
        gettimeofday(&now, NULL);
        for (unsigned long i = 0; i < n; i++) {
                QueueEnvelope env = {0};
                QueueWriter *w = NULL;
                char id[QUEUE_ID_SIZE], sub[QUEUE_PATH_MAX], rcpt[64];
                struct timeval tv = now;
                struct timespec ts[2];
                int h, dfd, r;

                tv.tv_sec -= 3600;
                tv.tv_usec = (suseconds_t) (i % 1000000);
                tv.tv_sec -= (time_t) (i / 1000000);
                queue_id_new(&tv, id);
                queue_subdir(queue, id, sub);
                h = queue_is_hashed(queue) ? (int) strtol(sub + strlen(queue) + 1, NULL, 16) * 16 +
                                                     (int) strtol(sub + strlen(queue) + 3, NULL, 16)
                                           : 0;
                if (dirs[h] < 0) {
                        if (queue_make_subdir(qfd, queue, id) < 0) {
                                perror("mkdir");
                                return EXIT_FAILURE;
                        }
                        dirs[h] = openat(qfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (dirs[h] < 0) {
                                perror(sub);
                                return EXIT_FAILURE;
                        }
                }
                dfd = dirs[h];
                env.arrival = tv;
                env.sender = strdup("bench@example.org");
                snprintf(rcpt, sizeof(rcpt), "user%lu@bench%lu.example", i, i % 100);
                if (!env.sender || queue_envelope_add_rcpt(&env, rcpt, 0, NULL) < 0)
                        return EXIT_FAILURE;
                r = queue_writer_new(dfd, id, &w);
                if (r >= 0)
                        r = queue_writer_append(w, body, sizeof(body) - 1);
                if (r >= 0)
                        r = queue_writer_finish(w, &env);
                if (r >= 0)
                        r = queue_writer_commit(w, dfd);
                queue_writer_free(w);
                queue_envelope_done(&env);
                if (r < 0) {
                        fprintf(stderr, "queue-gen: %s: %s\n", id, strerror(-r));
                        return EXIT_FAILURE;
                }
                ts[0] = (struct timespec) {.tv_sec = now.tv_sec - 60};
                ts[1] = (struct timespec) {.tv_sec = i < due ? now.tv_sec - 1 : now.tv_sec + 86400};
                if (utimensat(dfd, id, ts, 0) < 0) {
                        perror("utimensat");
                        return EXIT_FAILURE;
                }
        }
        return EXIT_SUCCESS;
}
