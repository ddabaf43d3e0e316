/* test-anvil.c: the shared per-client counter table (anvil.c): counts
 * across two mappings of the same file, windows that reset, and
 * connections of a process that is gone. */
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

TEST_MAIN(test_counts)
