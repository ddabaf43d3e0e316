/* test-queue-scan.c: unit tests of queue-scan.c: hashed paths, moves
 * between flat and hashed queues, listing (also of flat files in a hashed
 * queue), locating and the administrative moves. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue-file.h"
#include "queue-scan.h"
#include "tests.h"

static void write_message(int qfd, const char *queue, const char *id) {
        _cleanup_close_ int dfd = openat(qfd, queue, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        QueueEnvelope env = {0};
        QueueWriter *w = NULL;

        memcpy(env.queue_id, id, QUEUE_ID_SIZE);
        env.sender = strdup("a@example.org");
        CHECK(queue_envelope_add_rcpt(&env, "b@example.com", 0, NULL) == 0);
        CHECK(queue_writer_new(dfd, id, &w) == 0);
        CHECK(queue_writer_append(w, "Subject: x\n\nbody\n", 17) == 0);
        CHECK(queue_writer_finish(w, &env) == 0);
        CHECK(queue_writer_commit(w, dfd) == 0);
        queue_writer_free(w);
        queue_envelope_done(&env);
}

static void test_all(void) {
        char tmpl[] = "/tmp/test-queue-scan.XXXXXX", path[QUEUE_PATH_MAX], id[QUEUE_ID_SIZE];
        char cmd[256];
        const char *where;
        QueueScan *scan = NULL;
        unsigned n = 0;
        int qfd, r;

        CHECK(mkdtemp(tmpl));
        qfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(qfd >= 0);
        for (size_t i = 0; queue_names[i]; i++)
                CHECK(mkdirat(qfd, queue_names[i], 0700) == 0);
        CHECK(mkdirat(qfd, QUEUE_CORRUPT, 0700) == 0);

        queue_subpath(QUEUE_INCOMING, "1xW3yE3ZfVKf3Ms9", path);
        CHECK(streq(path, "incoming/1xW3yE3ZfVKf3Ms9"));
        queue_subpath(QUEUE_DEFERRED, "1xW3yE3ZfVKf3Ms9", path);
        CHECK(strlen(path) == strlen("deferred/X/Y/1xW3yE3ZfVKf3Ms9") && path[10] == '/' &&
                  path[12] == '/' && startswith(path, "deferred/"));

        write_message(qfd, QUEUE_INCOMING, "1xW3yE3ZfVKf3Ms9");
        write_message(qfd, QUEUE_DEFERRED, "1xW3yE3ZfVKf3Ms8");       /* flat in a hashed queue */
        CHECK(queue_move(qfd, "1xW3yE3ZfVKf3Ms9", QUEUE_INCOMING, QUEUE_DEFERRED) == 0);
        CHECK(queue_locate(qfd, "1xW3yE3ZfVKf3Ms9", &where) == 0 && streq(where, QUEUE_DEFERRED));
        CHECK(faccessat(qfd, path, F_OK, 0) == 0);
        CHECK(queue_move(qfd, "1xW3yE3ZfVKf3Ms9", QUEUE_INCOMING, QUEUE_HOLD) == -ENOENT);

        CHECK(queue_scan_new(qfd, QUEUE_DEFERRED, &scan) == 0);
        while ((r = queue_scan_next(scan, id, NULL)) > 0)
                n++;
        CHECK(r == 0 && n == 2);
        scan = queue_scan_free(scan);

        CHECK(queue_admin_hold(qfd, "1xW3yE3ZfVKf3Ms8", NULL) == 1);
        CHECK(queue_locate(qfd, "1xW3yE3ZfVKf3Ms8", &where) == 0 && streq(where, QUEUE_HOLD));
        CHECK(queue_admin_release(qfd, "1xW3yE3ZfVKf3Ms8") == 1);
        CHECK(queue_admin_requeue(qfd, "1xW3yE3ZfVKf3Ms8", NULL) == 1);
        CHECK(queue_locate(qfd, "1xW3yE3ZfVKf3Ms8", &where) == 0 && streq(where, QUEUE_INCOMING));
        {
                _cleanup_close_ int fd = queue_open(qfd, QUEUE_INCOMING, "1xW3yE3ZfVKf3Ms8", O_RDONLY);
                QueueEnvelope env = {0};
                CHECK(fd >= 0 && queue_file_read(fd, &env) == 0);
                CHECK(env.flags & QUEUE_FLAG_REQUEUE);
                queue_envelope_done(&env);
        }
        {
                QueueListEntry e = {0};
                CHECK(queue_list_read(qfd, QUEUE_DEFERRED, "1xW3yE3ZfVKf3Ms9", &e) == 0);
                CHECK(e.n_rcpts == 1 && streq(e.rcpts[0].address, "b@example.com"));
                CHECK(e.size == 17 && streq(e.sender, "a@example.org"));
                queue_list_entry_done(&e);
        }
        CHECK(queue_admin_delete(qfd, "1xW3yE3ZfVKf3Ms9", QUEUE_HOLD) == 0);
        CHECK(queue_admin_delete(qfd, "1xW3yE3ZfVKf3Ms9", NULL) == 1);
        CHECK(queue_locate(qfd, "1xW3yE3ZfVKf3Ms9", &where) == -ENOENT);

        close(qfd);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
        CHECK(system(cmd) == 0);
}

TEST_MAIN(test_all)
