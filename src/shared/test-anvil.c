/* test-anvil.c: the shared per-client counter table (anvil.c): counts
 * across two mappings of the same file, windows that reset, connections
 * of a process that is gone, and one client in more processes than a slot
 * holds inline. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anvil.h"
#include "macro.h"
#include "tests.h"

static void test_counts(void) {
        char dir[] = "/tmp/test-anvil.XXXXXX", path[64];
        Anvil *a = NULL, *b = NULL;
        InetAddr x, y;
        unsigned count = 0, rate = 0;
        pid_t pid;

        CHECK(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/anvil", dir);
        CHECK_INT(anvil_open(path, &a), 0);
        CHECK_INT(anvil_open(path, &b), 0);
        CHECK_INT(inet_addr_parse("192.0.2.10", &x), 0);
        CHECK_INT(inet_addr_parse("2001:db8::1", &y), 0);

        CHECK_INT(anvil_connect(a, &x, 60000, &count, &rate), 0);
        CHECK_INT(anvil_connect(b, &x, 60000, &count, &rate), 0);
        CHECK_INT(count, 2);
        CHECK_INT(rate, 2);
        CHECK_INT(anvil_connect(a, &y, 60000, &count, &rate), 0);
        CHECK_INT(count, 1);
        CHECK_INT(anvil_disconnect(a, &x), 0);
        CHECK_INT(anvil_connect(b, &x, 60000, &count, &rate), 0);
        CHECK_INT(count, 2);
        CHECK_INT(rate, 3);

        /* Windows end after their time. */
        CHECK_INT(anvil_rate(a, &x, ANVIL_RATE_RECIPIENT, 5, 50, &rate), 0);
        CHECK_INT(rate, 5);
        CHECK_INT(anvil_rate(b, &x, ANVIL_RATE_RECIPIENT, 1, 50, &rate), 0);
        CHECK_INT(rate, 6);
        usleep(80 * 1000);
        CHECK_INT(anvil_rate(b, &x, ANVIL_RATE_RECIPIENT, 1, 50, &rate), 0);
        CHECK_INT(rate, 1);

        /* A child that dies with open connections stops counting. */
        pid = fork();
        if (pid == 0) {
                Anvil *c = NULL;
                unsigned n, r;
                if (anvil_open(path, &c) < 0 || anvil_connect(c, &y, 60000, &n, &r) < 0)
                        _exit(1);
                _exit(n == 2 ? 0 : 1);
        }
        CHECK(pid > 0);
        {
                int status = 0;
                CHECK_INT(waitpid(pid, &status, 0), pid);
                CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        CHECK_INT(anvil_connect(a, &y, 60000, &count, &rate), 0);
        CHECK_INT(count, 2);    /* ours: two; the child's is gone */

        anvil_close(a);
        anvil_close(b);
        unlink(path);
        rmdir(dir);
}

/* One client's connections in more processes than a slot holds inline
 * (8) all count, and those of processes that exit stop counting. */
static void test_many_processes(void) {
        char dir[] = "/tmp/test-anvil.XXXXXX", path[64];
        enum { N = 20 };
        int go[2], ready[2];
        pid_t kids[N];
        Anvil *a = NULL;
        InetAddr x;
        unsigned count = 0, rate = 0;

        CHECK(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/anvil", dir);
        CHECK_INT(anvil_open(path, &a), 0);
        CHECK_INT(inet_addr_parse("192.0.2.10", &x), 0);
        CHECK_INT(pipe(go), 0);
        CHECK_INT(pipe(ready), 0);
        for (int i = 0; i < N; i++) {
                kids[i] = fork();
                CHECK(kids[i] >= 0);
                if (kids[i] == 0) {
                        Anvil *c = NULL;
                        unsigned n, r;
                        char b;
                        close(go[1]);
                        close(ready[0]);
                        if (anvil_open(path, &c) < 0 || anvil_connect(c, &x, 60000, &n, &r) < 0)
                                _exit(1);
                        /* Each child reports the count it saw, then waits. */
                        b = (char) n;
                        if (write(ready[1], &b, 1) != 1)
                                _exit(1);
                        (void) read(go[0], &b, 1);
                        _exit(0);
                }
                {
                        char b = 0;
                        CHECK_INT(read(ready[0], &b, 1), 1);
                        CHECK_INT(b, i + 1);
                }
        }
        close(go[0]);
        close(ready[1]);
        CHECK_INT(anvil_connect(a, &x, 60000, &count, &rate), 0);
        CHECK_INT(count, N + 1);
        CHECK_INT(rate, N + 1);
        CHECK_INT(anvil_disconnect(a, &x), 0);

        /* Let the children exit: their connections no longer count. */
        close(go[1]);
        for (int i = 0; i < N; i++) {
                int status = 0;
                CHECK_INT(waitpid(kids[i], &status, 0), kids[i]);
                CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        CHECK_INT(anvil_connect(a, &x, 60000, &count, &rate), 0);
        CHECK_INT(count, 1);
        CHECK_INT(anvil_disconnect(a, &x), 0);

        anvil_close(a);
        unlink(path);
        rmdir(dir);
}

TEST_MAIN(test_counts, test_many_processes)
