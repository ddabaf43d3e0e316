/* test-conf-edit.c: unit tests of conf-edit.c. The golden tests apply
 * testdata/conf/edit/NAME.args (first line the mode: set, remove or
 * comment; then one argument per line) to NAME.cf and compare the new text
 * and the diagnostics with NAME.out (TEST_GOLDEN_UPDATE=1 rewrites them).
 * The file tests check atomic replacement, kept file modes, creation and
 * that an edited file loads with the new value. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "fileio.h"
#include "strutil.h"
#include "tests.h"

static char *edit_report(const char *text, const char *file, const char *args_text) {
        _cleanup_strv_free_ char **args = NULL;
        _cleanup_free_ char *copy = strdup(args_text), *result = NULL;
        ConfEditMode mode = CONF_EDIT_SET;
        StrBuf out = {0};
        Diag d = {0};
        char *line, *save = NULL;
        int r, i = 0;

        for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
                if (i > 0) {
                        (void) strv_extend(&args, line);
                        continue;
                }
                mode = streq(line, "remove")    ? CONF_EDIT_REMOVE
                       : streq(line, "comment") ? CONF_EDIT_COMMENT
                                                : CONF_EDIT_SET;
        }
        r = conf_edit_text(text, file, args, mode, &d, &result);
        if (r >= 0)
                (void) strbuf_puts(&out, result);
        (void) strbuf_puts(&out, "--- diagnostics\n");
        for (size_t k = 0; k < d.n; k++) {
                _cleanup_free_ char *s = diag_entry_format(&d.entries[k]);
                (void) strbuf_printf(&out, "%s\n", s);
        }
        (void) strbuf_printf(&out, "--- result: %s\n", r < 0 ? strerror(-r) : "edited");
        diag_done(&d);
        return strbuf_steal(&out);
}

static void test_golden(void) {
        const char *testdata = getenv("TESTDATA");
        _cleanup_free_ char *dir = NULL;
        bool update = getenv("TEST_GOLDEN_UPDATE") != NULL;
        struct dirent *de;
        DIR *d;
        int count = 0;

        CHECK(testdata != NULL);
        if (!testdata)
                return;
        dir = path_join(testdata, "conf/edit");
        d = opendir(dir);
        CHECK(d != NULL);
        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *base = NULL, *in = NULL, *args_path = NULL, *out = NULL,
                                    *text = NULL, *args = NULL, *expected = NULL, *actual = NULL;
                if (!endswith(de->d_name, ".cf"))
                        continue;
                count++;
                base = strndup(de->d_name, strlen(de->d_name) - 3);
                in = path_join(dir, de->d_name);
                args_path = strdup_printf("%s/%s.args", dir, base);
                out = strdup_printf("%s/%s.out", dir, base);
                CHECK_INT(file_read_all(in, 1 << 20, &text, NULL), 0);
                CHECK_INT(file_read_all(args_path, 1 << 20, &args, NULL), 0);
                if (!text || !args)
                        continue;
                actual = edit_report(text, de->d_name, args);
                if (update) {
                        CHECK_INT(file_write_atomic(out, actual, strlen(actual), 0644), 0);
                        continue;
                }
                CHECK_INT(file_read_all(out, 1 << 20, &expected, NULL), 0);
                if (expected && !streq(expected, actual))
                        fprintf(stderr, "golden test %s failed:\n--- expected\n%s--- actual\n%s",
                                de->d_name, expected, actual);
                CHECK_STR(actual, expected);
        }
        closedir(d);
        CHECK(count >= 6);
}

static void test_text(void) {
        _cleanup_free_ char *r1 = NULL, *r2 = NULL, *r3 = NULL;
        char *set_nl[] = {(char *) "relayhost = a\nb = c", NULL};
        char *set[] = {(char *) "relayhost = x", NULL};
        Diag d = {0};

        /* A value with a newline would add an entry: refused. */
        CHECK_INT(conf_edit_text("", "main.cf", set_nl, CONF_EDIT_SET, &d, &r1), -EINVAL);
        CHECK_INT(d.n_errors, 1);
        diag_done(&d);
        /* The text is kept byte for byte, including CRLF and no final newline. */
        CHECK_INT(conf_edit_text("a = b\r\nrelayhost = y\r\n# c", "main.cf", set, CONF_EDIT_SET,
                                 &d, &r2),
                  0);
        CHECK_STR(r2, "a = b\r\nrelayhost = x\n# c");
        CHECK_INT(conf_edit_text("# c", "main.cf", set, CONF_EDIT_SET, &d, &r3), 0);
        CHECK_STR(r3, "# c\nrelayhost = x\n");
        CHECK_INT(d.n, 0);
        diag_done(&d);
}

static void test_file(void) {
        const char *tmpdir = getenv("TMPDIR");
        _cleanup_free_ char *tmpl = strdup_printf("%s/test-conf-edit-XXXXXX",
                                                  isempty(tmpdir) ? "/tmp" : tmpdir);
        _cleanup_free_ char *path = NULL, *text = NULL, *other = NULL, *listing = NULL;
        _cleanup_(conf_unrefp) Config *c = NULL;
        char *set[] = {(char *) "myorigin = $mydomain", (char *) "mydomain=example.com", NULL};
        char *remove[] = {(char *) "myorigin", NULL};
        struct stat st;
        char *dir;
        Diag d = {0};

        dir = tmpl ? mkdtemp(tmpl) : NULL;
        CHECK(dir != NULL);
        if (!dir)
                return;
        path = path_join(dir, "main.cf");
        other = path_join(dir, "other.cf");

        /* -X on a missing file changes nothing; -e creates it. */
        CHECK_INT(conf_edit(path, remove, CONF_EDIT_REMOVE, &d), 0);
        CHECK_INT(access(path, F_OK), -1);
        CHECK_INT(conf_edit(path, set, CONF_EDIT_SET, &d), 0);
        CHECK_INT(file_read_all(path, 1 << 20, &text, NULL), 0);
        CHECK_STR(text, "myorigin = $mydomain\nmydomain = example.com\n");
        CHECK_INT(d.n, 0);

        CHECK_INT(conf_load(dir, NULL, &d, &c), 0);
        if (c)
                CHECK_STR(conf_get_str(c, P_MYORIGIN), "example.com");

        /* The mode of an existing file is kept. */
        CHECK_INT(chmod(path, 0640), 0);
        CHECK_INT(conf_edit_file(path, remove, true, &d), 0);
        CHECK_INT(stat(path, &st), 0);
        CHECK_INT(st.st_mode & 07777, 0640);
        free(text);
        text = NULL;
        CHECK_INT(file_read_all(path, 1 << 20, &text, NULL), 0);
        CHECK_STR(text, "mydomain = example.com\n");

        /* No temporary file is left behind. */
        {
                _cleanup_free_ char *cmd = strdup_printf("ls -A '%s'", dir);
                FILE *f = popen(cmd, "re");
                char buf[256] = "";
                CHECK(f != NULL);
                if (f) {
                        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                        buf[n] = 0;
                        pclose(f);
                }
                CHECK_STR(buf, "main.cf\n");
        }

        /* A directory that does not exist is an error. */
        {
                _cleanup_free_ char *bad = path_join(dir, "nosuch/main.cf");
                CHECK(conf_edit(bad, set, CONF_EDIT_SET, &d) < 0);
        }
        diag_done(&d);
        {
                _cleanup_free_ char *cmd = strdup_printf("rm -rf '%s'", dir);
                CHECK_INT(system(cmd), 0);
        }
}

TEST_MAIN(test_golden, test_text, test_file)
