/* test-queue-file.c: queue IDs (sorting, validity, time) and the queue file
 * format: a golden file for the exact bytes, round trips, in-place status
 * updates, and rejection of damaged files. Set UPDATE_GOLDEN=1 to rewrite
 * the golden file after a deliberate format change. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "queue-file.h"
#include "queue-id.h"
#include "tests.h"

static void test_queue_id(void) {
        char a[QUEUE_ID_SIZE], b[QUEUE_ID_SIZE], c[QUEUE_ID_SIZE];
        struct timeval t1 = {.tv_sec = 1700000000, .tv_usec = 5}, t2 = {.tv_sec = 1700000000, .tv_usec = 6},
                       t3 = {.tv_sec = 1700000001, .tv_usec = 0}, back;

        queue_id_new(&t1, a);
        queue_id_new(&t2, b);
        queue_id_new(&t3, c);
        CHECK_INT(strlen(a), QUEUE_ID_LEN);
        CHECK(queue_id_valid(a));
        CHECK(strcmp(a, b) < 0);
        CHECK(strcmp(b, c) < 0);
        CHECK_INT(queue_id_time(b, &back), 0);
        CHECK_INT(back.tv_sec, 1700000000);
        CHECK_INT(back.tv_usec, 6);
        CHECK(!queue_id_valid(".tmp"));
        CHECK(!queue_id_valid("0123456789abcdef0"));
        CHECK(!queue_id_valid("0123456789abcde/"));

        /* Same microsecond: the random part keeps them apart. */
        int dup = 0;
        for (int i = 0; i < 1000; i++) {
                queue_id_new(&t1, b);
                if (streq(a, b))
                        dup++;
        }
        CHECK_INT(dup, 0);
}

static void fill_envelope(QueueEnvelope *e) {
        *e = (QueueEnvelope) {0};
        strcpy(e->queue_id, "1aBcDe0001xyzXYZ");
        e->arrival = (struct timeval) {.tv_sec = 1700000000, .tv_usec = 123456};
        e->sender = strdup("sender@example.org");
        e->envid = strdup("QQ314159");
        e->ret = QUEUE_RET_HDRS;
        e->body_8bitmime = true;
        e->client_name = strdup("mail.example.org");
        e->client_addr = strdup("192.0.2.1");
        e->client_port = 40000;
        e->helo = strdup("mail.example.org");
        e->protocol = strdup("ESMTP");
        e->service = strdup("smtpd");
        CHECK_INT(queue_envelope_add_rcpt(e, "one@example.com", 0, NULL), 0);
        CHECK_INT(queue_envelope_add_rcpt(e, "\"two words\"@example.com",
                                          QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE,
                                          "rfc822;two+20words@example.com"), 0);
}

static char tmpdir[] = "/tmp/test-queue-file.XXXXXX";

static void test_write_golden(void) {
        static const char content[] = "Received: from x\nSubject: hi\n\nbody\n";
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_free_ char *data = NULL, *golden = NULL, *gpath = NULL, *path = NULL;
        _cleanup_close_ int dfd = -1, fd = -1;
        QueueEnvelope e, back;
        size_t len, glen;
        struct stat st;

        dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(dfd >= 0);
        fill_envelope(&e);
        CHECK_INT(queue_writer_new(dfd, e.queue_id, &w), 0);
        CHECK_INT(queue_writer_new(dfd, e.queue_id, &(QueueWriter *) {NULL}), -EEXIST);
        CHECK_INT(queue_writer_append(w, content, 20), 0);
        CHECK_INT(queue_writer_append(w, content + 20, sizeof(content) - 1 - 20), 0);
        CHECK_INT(queue_writer_size(w), sizeof(content) - 1);
        CHECK_INT(queue_writer_finish(w, &e), 0);
        CHECK_INT(queue_writer_sync(w), 0);
        /* Before the commit only the hidden temporary file exists. */
        CHECK(fstatat(dfd, "1aBcDe0001xyzXYZ", &st, 0) < 0);
        CHECK(fstatat(dfd, ".1aBcDe0001xyzXYZ", &st, 0) == 0);
        CHECK_INT(queue_writer_commit(w, dfd), 0);
        w = queue_writer_free(w);
        CHECK(fstatat(dfd, "1aBcDe0001xyzXYZ", &st, 0) == 0);

        path = path_join(tmpdir, "1aBcDe0001xyzXYZ");
        CHECK_INT(file_read_all(path, 1 << 20, &data, &len), 0);
        gpath = path_join(getenv("TESTDATA") ? getenv("TESTDATA") : "testdata", "queue/basic.queue");
        if (getenv("UPDATE_GOLDEN"))
                CHECK_INT(file_write_atomic(gpath, data, len, 0644), 0);
        CHECK_INT(file_read_all(gpath, 1 << 20, &golden, &glen), 0);
        CHECK_INT(len, glen);
        CHECK(golden && len == glen && memcmp(data, golden, len) == 0);

        fd = open(path, O_RDWR | O_CLOEXEC);
        CHECK_INT(queue_file_read(fd, &back), 0);
        CHECK_STR(back.queue_id, "1aBcDe0001xyzXYZ");
        CHECK_STR(back.sender, "sender@example.org");
        CHECK_STR(back.envid, "QQ314159");
        CHECK_INT(back.ret, QUEUE_RET_HDRS);
        CHECK(back.body_8bitmime);
        CHECK_INT(back.client_port, 40000);
        CHECK_INT(back.content_offset, QUEUE_FILE_HEADER_SIZE);
        CHECK_INT(back.content_size, sizeof(content) - 1);
        CHECK_INT(back.n_rcpts, 2);
        CHECK_STR(back.rcpts[1].address, "\"two words\"@example.com");
        CHECK_STR(back.rcpts[1].orcpt, "rfc822;two+20words@example.com");
        CHECK_INT(back.rcpts[1].notify, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE);
        CHECK(back.rcpts[0].orcpt == NULL);
        CHECK_INT(back.rcpts[0].status, QUEUE_RCPT_PENDING);
        CHECK(data[back.rcpts[1].status_offset] == '-');

        /* In-place status update survives a re-read. */
        CHECK_INT(queue_file_set_status(fd, &back.rcpts[1], QUEUE_RCPT_DELIVERED), 0);
        queue_envelope_done(&back);
        CHECK_INT(queue_file_read(fd, &back), 0);
        CHECK_INT(back.rcpts[0].status, QUEUE_RCPT_PENDING);
        CHECK_INT(back.rcpts[1].status, QUEUE_RCPT_DELIVERED);
        queue_envelope_done(&back);
        queue_envelope_done(&e);
}

static void test_abort_unlinks(void) {
        _cleanup_close_ int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        QueueWriter *w = NULL;
        struct stat st;
        CHECK_INT(queue_writer_new(dfd, "1aBcDe0002xyzXYZ", &w), 0);
        CHECK_INT(queue_writer_append(w, "x\n", 2), 0);
        w = queue_writer_free(w);
        CHECK(fstatat(dfd, ".1aBcDe0002xyzXYZ", &st, 0) < 0);
}

static void test_big_content(void) {
        _cleanup_close_ int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd = -1;
        _cleanup_(queue_writer_freep) QueueWriter *w = NULL;
        _cleanup_free_ char *chunk = malloc(100000);
        QueueEnvelope e, back;

        fill_envelope(&e);
        memset(chunk, 'x', 100000);
        CHECK_INT(queue_writer_new(dfd, "1aBcDe0003xyzXYZ", &w), 0);
        for (int i = 0; i < 5; i++)
                CHECK_INT(queue_writer_append(w, chunk, 30000 + i * 10000), 0);
        CHECK_INT(queue_writer_finish(w, &e), 0);
        CHECK_INT(queue_writer_commit(w, dfd), 0);
        fd = openat(dfd, "1aBcDe0003xyzXYZ", O_RDONLY | O_CLOEXEC);
        CHECK_INT(queue_file_read(fd, &back), 0);
        CHECK_INT(back.content_size, 250000);
        CHECK_STR(back.queue_id, "1aBcDe0003xyzXYZ");
        queue_envelope_done(&back);
        queue_envelope_done(&e);
}

static int read_text(const char *text, size_t len) {
        _cleanup_close_ int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd = -1;
        QueueEnvelope e;
        int r;
        fd = openat(dfd, "damaged", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK_INT(write_all(fd, text, len), 0);
        r = queue_file_read(fd, &e);
        if (r == 0)
                queue_envelope_done(&e);
        return r;
}

static void test_damaged(void) {
        _cleanup_free_ char *gpath = NULL, *golden = NULL, *copy = NULL;
        size_t glen;
        gpath = path_join(getenv("TESTDATA") ? getenv("TESTDATA") : "testdata", "queue/basic.queue");
        CHECK_INT(file_read_all(gpath, 1 << 20, &golden, &glen), 0);
        if (!golden)
                return;
        CHECK_INT(read_text(golden, glen), 0);
        /* Truncated anywhere. */
        for (size_t n = 0; n < glen; n += 7)
                CHECK_INT(read_text(golden, n), -EBADMSG);
        copy = malloc(glen);
        /* Bad magic, bad version, wrong sizes, damaged envelope. */
        memcpy(copy, golden, glen);
        copy[0] = 'X';
        CHECK_INT(read_text(copy, glen), -EBADMSG);
        memcpy(copy, golden, glen);
        copy[12] = '2';
        CHECK_INT(read_text(copy, glen), -EBADMSG);
        memcpy(copy, golden, glen);
        copy[29] = '0';
        CHECK_INT(read_text(copy, glen), -EBADMSG);
        memcpy(copy, golden, glen);
        copy[glen - 2] = 'x';   /* "end=" line damaged */
        CHECK_INT(read_text(copy, glen), -EBADMSG);
}

static void test_notify(void) {
        char buf[32];
        CHECK_INT(queue_notify_from_string("success,delay"), QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY);
        CHECK_INT(queue_notify_from_string("NEVER"), QUEUE_NOTIFY_NEVER);
        CHECK_INT(queue_notify_from_string("NEVER,SUCCESS"), -EINVAL);
        CHECK_INT(queue_notify_from_string("SUCCESS,"), -EINVAL);
        CHECK_INT(queue_notify_from_string("SUCCESS,SUCCESS"), -EINVAL);
        CHECK_INT(queue_notify_from_string("bogus"), -EINVAL);
        CHECK_STR(queue_notify_to_string(QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY, buf), "FAILURE,DELAY");
        CHECK_STR(queue_notify_to_string(0, buf), "-");
}

static void test_bad_values(void) {
        QueueEnvelope e;
        StrBuf b = {0};
        fill_envelope(&e);
        free(e.helo);
        e.helo = strdup("evil\nrcpt=- - - x@y");
        CHECK_INT(queue_envelope_format(&e, &b), -EINVAL);
        strbuf_done(&b);
        queue_envelope_done(&e);
}

static void setup(void) {
        CHECK(mkdtemp(tmpdir) != NULL);
}

static void teardown(void) {
        _cleanup_free_ char *cmd = strdup_printf("rm -rf '%s'", tmpdir);
        CHECK_INT(system(cmd), 0);
}

/* orig=, canon=, fullname= and uid= survive a round trip; orig= without a
 * recipient before it and a second canon= are malformed. */
static void test_extensions(void) {
        QueueEnvelope e = {0}, back = {0};
        StrBuf b = {0};

        memcpy(e.queue_id, "1xW3yE3ZfVKf3Ms9", QUEUE_ID_SIZE);
        e.sender = strdup("a@example.org");
        e.fullname = strdup("A User");
        e.submit_uid = strdup("1000");
        CHECK_INT(queue_envelope_add_rcpt(&e, "list@example.org", 0, NULL), 0);
        CHECK_INT(queue_envelope_add_rcpt(&e, "b@example.com", 0, NULL), 0);
        CHECK_INT(queue_envelope_set_orig(&e, 1, "list@example.org"), 0);
        CHECK_INT(queue_envelope_set_canon(&e, 1, "old-list@example.org"), 0);
        CHECK_INT(queue_envelope_format(&e, &b), 0);
        CHECK_INT(queue_envelope_parse(b.data, b.len, 100, &back), 0);
        CHECK_STR(back.rcpts[0].orig, NULL);
        CHECK_STR(back.rcpts[1].orig, "list@example.org");
        CHECK_STR(back.rcpts[0].canon, NULL);
        CHECK_STR(back.rcpts[1].canon, "old-list@example.org");
        CHECK_STR(queue_rcpt_original(&back.rcpts[0]), "list@example.org");
        CHECK_STR(queue_rcpt_original(&back.rcpts[1]), "old-list@example.org");
        CHECK_STR(back.fullname, "A User");
        CHECK_STR(back.submit_uid, "1000");
        queue_envelope_done(&back);
        {
                static const char bad[] = "id=1xW3yE3ZfVKf3Ms9\ntime=1.000000\nsender=\norig=x@y\n"
                                          "rcpt=- - - a@b\nend=\n";
                CHECK_INT(queue_envelope_parse(bad, sizeof(bad) - 1, 0, &back), -EBADMSG);
        }
        {
                static const char bad[] = "id=1xW3yE3ZfVKf3Ms9\ntime=1.000000\nsender=\n"
                                          "rcpt=- - - a@b\ncanon=x@y\ncanon=z@y\nend=\n";
                CHECK_INT(queue_envelope_parse(bad, sizeof(bad) - 1, 0, &back), -EBADMSG);
        }
        strbuf_done(&b);
        queue_envelope_done(&e);
}

TEST_MAIN(setup, test_queue_id, test_extensions, test_write_golden, test_abort_unlinks, test_big_content,
          test_damaged, test_notify, test_bad_values, teardown)
