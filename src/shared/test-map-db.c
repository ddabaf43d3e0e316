/* test-map-db.c: unit tests for map-build.c and map-db.c. Builds hash and
 * btree tables from testdata/map/postmap-source.txt and aliases.txt in a
 * temporary directory and checks the exact diagnostics, every record
 * (sorted) and the answer to every query against golden files (checked
 * against Postfix's postmap and postalias on the same sources); then the
 * on-disk format Postfix relies on (NUL bytes, the "@" record), reading
 * tables written without NUL bytes, permissions, atomic replacement and the
 * error paths. */
#include <db.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "map-internal.h"
#include "strutil.h"
#include "test-map-golden.h"
#include "tests.h"

static char *tmpdir;

static char *mfree_str(char *p) {
        free(p);
        return NULL;
}

static void copy_testdata(const char *name, const char *dest) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;

        buf = golden_read(name, &len);
        CHECK(buf != NULL);
        if (buf)
                CHECK_INT(file_write_atomic(dest, buf, len, 0644), 0);
}

static int collect(const char *key, const char *value, void *userdata) {
        char ***lines = userdata;
        if (startswith(key, "YP_"))     /* time and host dependent */
                return 0;
        return strv_consume(lines, strdup_printf("%s\t%s", key, value));
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

/* Diagnostics of the build, then every record sorted, then the queries. */
static char *dump(const char *spec, unsigned flags, const Diag *build_diags, const char *queries) {
        _cleanup_strv_free_ char **lines = NULL;
        _cleanup_(map_freep) Map *m = NULL;
        StrBuf out = {0};
        Diag d = {0};

        golden_append_diags(&out, build_diags);
        CHECK_INT(map_open(spec, flags, &d, &m), 0);
        CHECK_INT(d.n, 0);
        diag_done(&d);
        if (!m)
                return strbuf_steal(&out);
        CHECK_INT(map_walk(m, collect, &lines), 0);
        if (lines)
                qsort(lines, strv_length(lines), sizeof(char *), cmp_str);
        (void) strbuf_puts(&out, "-- records\n");
        STRV_FOREACH(l, lines)
                (void) strbuf_printf(&out, "%s\n", *l);
        (void) strbuf_puts(&out, "-- queries\n");
        golden_append_queries(&out, m, queries);
        return strbuf_steal(&out);
}

static void test_postmap_golden(void) {
        _cleanup_free_ char *hash = NULL, *btree = NULL;
        Diag d = {0};

        copy_testdata("postmap-source.txt", "postmap-source.txt");
        CHECK_INT(map_build("postmap-source.txt", NULL, MAP_FLAG_FOLD_KEYS, &d), 9);
        hash = dump("hash:postmap-source.txt", MAP_FLAG_FOLD_KEYS, &d, "postmap-source.queries");
        golden_check("postmap-source.expected", strempty(hash));
        diag_done(&d);

        /* btree: the same records, the same answers. */
        CHECK_INT(map_build("btree:postmap-source.txt", "hash", MAP_FLAG_FOLD_KEYS, &d), 9);
        btree = dump("btree:postmap-source.txt", MAP_FLAG_FOLD_KEYS, &d, "postmap-source.queries");
        CHECK_STR(btree, hash);
        diag_done(&d);
}

static void test_alias_golden(void) {
        _cleanup_free_ char *out = NULL;
        Diag d = {0};

        copy_testdata("aliases.txt", "aliases.txt");
        CHECK_INT(map_build("hash:aliases.txt", NULL, MAP_FLAG_FOLD_KEYS | MAP_FLAG_ALIAS, &d), 24);
        out = dump("hash:aliases.txt", MAP_FLAG_FOLD_KEYS, &d, "aliases.queries");
        golden_check("aliases.expected", strempty(out));
        diag_done(&d);
}

/* Reads one record with the raw DB API: the exact bytes Postfix sees. */
static int raw_get(const char *path, const void *key, size_t klen, char **ret, size_t *ret_len) {
        DB *db = NULL;
        DBT k = {0}, v = {0};
        int r;

        if (db_create(&db, NULL, 0) != 0)
                return -ENOMEM;
        r = db->open(db, NULL, path, NULL, DB_UNKNOWN, DB_RDONLY, 0);
        if (r == 0) {
                k.data = (void *) key;
                k.size = (u_int32_t) klen;
                r = db->get(db, NULL, &k, &v, 0);
                if (r == 0) {
                        *ret = malloc(v.size + 1);
                        memcpy(*ret, v.data, v.size);
                        (*ret)[v.size] = 0;
                        *ret_len = v.size;
                }
        }
        (void) db->close(db, 0);
        return r == 0 ? 1 : r == DB_NOTFOUND ? 0 : -EIO;
}

static void test_format(void) {
        _cleanup_free_ char *v = NULL;
        size_t len = 0;

        /* Keys and values carry their NUL byte; keys are folded. */
        CHECK_INT(raw_get("postmap-source.txt.db", "foo", 4, &v, &len), 1);
        CHECK_INT(len, 4);
        CHECK(v && memcmp(v, "bar", 4) == 0);
        v = mfree_str(v);
        CHECK_INT(raw_get("postmap-source.txt.db", "foo", 3, &v, &len), 0);
        CHECK_INT(raw_get("postmap-source.txt.db", "Foo", 4, &v, &len), 0);

        /* postalias adds the "@" record, and NIS records without NUL bytes. */
        CHECK_INT(raw_get("aliases.txt.db", "@", 2, &v, &len), 1);
        CHECK_INT(len, 2);
        v = mfree_str(v);
        CHECK_INT(raw_get("aliases.txt.db", "YP_LAST_MODIFIED", 16, &v, &len), 1);
        CHECK_INT(len, 10);
        v = mfree_str(v);
}

static void test_no_fold(void) {
        _cleanup_(map_freep) Map *m = NULL;
        _cleanup_free_ char *v = NULL;
        Diag d = {0};

        CHECK_INT(file_write_atomic("mixed", "MixedCase Value\n", 16, 0644), 0);
        CHECK_INT(map_build("hash:mixed", NULL, 0, &d), 1);
        CHECK_INT(map_open("hash:mixed", 0, &d, &m), 0);
        CHECK_INT(map_lookup(m, "MixedCase", &v), 1);
        CHECK_STR(v, "Value");
        CHECK_INT(map_lookup(m, "mixedcase", NULL), 0);
        m = map_free(m);
        /* A folding reader lower-cases the query and misses the key. */
        CHECK_INT(map_open("hash:mixed", MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        CHECK_INT(map_lookup(m, "MixedCase", NULL), 0);
        CHECK_INT(d.n, 0);
        diag_done(&d);
}

static void test_read_without_nul(void) {
        _cleanup_(map_freep) Map *m = NULL;
        _cleanup_free_ char *v = NULL;
        DB *db = NULL;
        DBT k = {0}, val = {0};
        Diag d = {0};

        /* Tables written by other tools may store keys and values without NUL. */
        CHECK_INT(db_create(&db, NULL, 0), 0);
        CHECK_INT(db->open(db, NULL, "nonul.db", NULL, DB_HASH, DB_CREATE | DB_TRUNCATE, 0644), 0);
        k.data = "plain";
        k.size = 5;
        val.data = "value";
        val.size = 5;
        CHECK_INT(db->put(db, NULL, &k, &val, 0), 0);
        CHECK_INT(db->close(db, 0), 0);

        CHECK_INT(map_open("hash:nonul", MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        CHECK_INT(map_lookup(m, "PLAIN", &v), 1);
        CHECK_STR(v, "value");
        CHECK_INT(map_lookup(m, "plai", NULL), 0);
        diag_done(&d);
}

static void check_mode(mode_t source, mode_t want) {
        struct stat st;
        Diag d = {0};

        CHECK_INT(file_write_atomic("modes", "a b\n", 4, 0644), 0);
        CHECK_INT(chmod("modes", source), 0);
        CHECK_INT(map_build("hash:modes", NULL, MAP_FLAG_FOLD_KEYS, &d), 1);
        CHECK_INT(stat("modes.db", &st), 0);
        CHECK_INT(st.st_mode & 07777, want);
        diag_done(&d);
}

static bool temp_files_left(void) {
        DIR *dir = opendir(".");
        struct dirent *de;
        bool found = false;

        if (!dir)
                return true;
        while ((de = readdir(dir)))
                if (strstr(de->d_name, ".tmp."))
                        found = true;
        closedir(dir);
        return found;
}

static void test_atomic_and_modes(void) {
        _cleanup_(map_freep) Map *old = NULL, *new = NULL;
        _cleanup_free_ char *v1 = NULL, *v2 = NULL;
        Diag d = {0};

        check_mode(0644, 0644);
        check_mode(0640, 0640);
        check_mode(0600, 0600);
        check_mode(0666, 0644);

        CHECK_INT(file_write_atomic("swap", "key old\n", 8, 0644), 0);
        CHECK_INT(map_build("hash:swap", NULL, MAP_FLAG_FOLD_KEYS, &d), 1);
        CHECK_INT(map_open("hash:swap", MAP_FLAG_FOLD_KEYS, &d, &old), 0);
        CHECK_INT(file_write_atomic("swap", "key new\n", 8, 0644), 0);
        CHECK_INT(map_build("hash:swap", NULL, MAP_FLAG_FOLD_KEYS, &d), 1);
        /* A reader that opened the old table keeps reading it, whole. */
        CHECK_INT(map_lookup(old, "key", &v1), 1);
        CHECK_STR(v1, "old");
        CHECK_INT(map_open("hash:swap", MAP_FLAG_FOLD_KEYS, &d, &new), 0);
        CHECK_INT(map_lookup(new, "key", &v2), 1);
        CHECK_STR(v2, "new");
        CHECK(!temp_files_left());
        CHECK_INT(d.n, 0);
        diag_done(&d);

        /* An empty source gives an empty table. */
        CHECK_INT(file_write_atomic("empty", "", 0, 0644), 0);
        CHECK_INT(map_build("empty", "btree", MAP_FLAG_FOLD_KEYS, &d), 0);
        new = map_free(new);
        CHECK_INT(map_open("btree:empty", MAP_FLAG_FOLD_KEYS, &d, &new), 0);
        CHECK_INT(map_lookup(new, "x", NULL), 0);
        diag_done(&d);
}

static void test_errors(void) {
        _cleanup_(map_freep) Map *m = NULL;
        _cleanup_free_ char *src = NULL, *idx = NULL;
        Diag d = {0};

        CHECK_INT(map_build("hash:missing", NULL, MAP_FLAG_FOLD_KEYS, &d), -ENOENT);
        CHECK_INT(d.n_errors, 1);
        CHECK_STR(d.entries[0].text, "open missing: No such file or directory");
        diag_done(&d);
        CHECK(!temp_files_left());

        CHECK_INT(map_build("regexp:mixed", NULL, 0, &d), -EOPNOTSUPP);
        CHECK_STR(d.entries[0].text, "unsupported map type for this operation: regexp");
        diag_done(&d);
        CHECK_INT(map_build("bogus:mixed", NULL, 0, &d), -EPROTONOSUPPORT);
        diag_done(&d);
        CHECK_INT(map_build("hash:", NULL, 0, &d), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_build("mixed", "cidr", 0, &d), -EOPNOTSUPP);
        diag_done(&d);

        CHECK_INT(map_open("hash:missing", 0, &d, &m), -ENOENT);
        CHECK_STR(d.entries[0].text, "open database missing.db: No such file or directory");
        diag_done(&d);
        /* A btree file is no hash table. */
        CHECK(map_open("hash:empty", 0, &d, &m) < 0);
        CHECK_INT(d.n_errors, 1);
        diag_done(&d);
        /* Garbage is no table either. */
        CHECK_INT(file_write_atomic("garbage.db", "this is not a database at all\n", 30, 0644), 0);
        CHECK(map_open("btree:garbage", 0, &d, &m) < 0);
        diag_done(&d);

        CHECK_INT(map_files("hash:/etc/postern/virtual", &src, &idx), 0);
        CHECK_STR(src, "/etc/postern/virtual");
        CHECK_STR(idx, "/etc/postern/virtual.db");
        CHECK_INT(map_files("proxy:btree:/x", NULL, NULL), 0);
        CHECK_INT(map_files("regexp:/x", NULL, NULL), -EOPNOTSUPP);
        CHECK_INT(map_files("/x", NULL, NULL), -EINVAL);
}

static void cleanup_tmpdir(void) {
        DIR *dir = opendir(".");
        struct dirent *de;

        if (dir) {
                while ((de = readdir(dir)))
                        if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                                (void) unlink(de->d_name);
                closedir(dir);
        }
        if (chdir("/") == 0)
                (void) rmdir(tmpdir);
}

static void setup(void) {
        char templ[] = "/tmp/test-map-db.XXXXXX";
        const char *t = getenv("TMPDIR");

        tmpdir = t ? strdup_printf("%s/test-map-db.XXXXXX", t) : strdup(templ);
        CHECK(tmpdir && mkdtemp(tmpdir));
        CHECK_INT(chdir(tmpdir), 0);
        umask(022);
}

TEST_MAIN(setup, test_postmap_golden, test_alias_golden, test_format, test_no_fold,
          test_read_without_nul, test_atomic_and_modes, test_errors, cleanup_tmpdir)
