/* test-map.c: unit tests for map.c and the small table types: "type:name"
 * parsing, the type table, key folding, the Postfix logical-line reader
 * and "key whitespace value" parser (golden), aliases(5) lines, inline:,
 * static:, texthash: (golden), unix:, MapList and header_checks actions. */
#include <errno.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

#include "map-internal.h"
#include "strutil.h"
#include "test-map-golden.h"
#include "tests.h"

static char *free_str(char *p) {
        free(p);
        return NULL;
}

static char *lookup(Map *m, const char *key) {
        char *v = NULL;
        int r = map_lookup(m, key, &v);
        if (r == 0)
                return strdup("(not found)");
        if (r < 0)
                return strdup_printf("(error %d)", r);
        return v;
}

#define CHECK_LOOKUP(m, key, want)                              \
        do {                                                    \
                _cleanup_free_ char *_v = lookup((m), (key));   \
                CHECK_STR(_v, (want));                          \
        } while (0)

static void test_types(void) {
        const char *known[] = {"hash", "btree", "regexp", "pcre", "cidr", "inline", "static",
                               "texthash", "unix", "proxy"};

        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                CHECK(map_type_known(known[i]));
        CHECK(!map_type_known("ldap"));
        CHECK(!map_type_known(""));
        CHECK(!map_type_known(NULL));
}

static void test_open_errors(void) {
        Map *m = NULL;
        Diag d = {0};

        CHECK_INT(map_open("/etc/postern/virtual", 0, &d, &m), -EINVAL);
        CHECK_INT(d.n_errors, 1);
        CHECK_STR(d.entries[0].text,
                  "open dictionary: expecting \"type:name\" form instead of \"/etc/postern/virtual\"");
        diag_done(&d);
        CHECK_INT(map_open(":x", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open("ldap:/etc/postern/ldap.cf", 0, &d, &m), -EPROTONOSUPPORT);
        CHECK_STR(d.entries[0].text, "unsupported dictionary type: ldap");
        diag_done(&d);
        CHECK_INT(map_open("static:", 0, &d, &m), -EINVAL);
        CHECK_STR(d.entries[0].text, "open dictionary: expecting \"type:name\" form instead of \"static:\"");
        diag_done(&d);
        CHECK_INT(map_open("unix:shadow.byname", 0, &d, &m), -EINVAL);
        CHECK_STR(d.entries[0].text, "unknown table: unix:shadow.byname");
        diag_done(&d);
        CHECK(m == NULL);
}

static void test_source_golden(void) {
        _cleanup_free_ char *buf = NULL;
        StrBuf out = {0}, line = {0};
        MapSource src;
        Diag d = {0};
        size_t len = 0;
        unsigned lineno;

        buf = golden_read("postmap-source.txt", &len);
        if (!buf)
                return;
        map_source_init(&src, "postmap-source.txt", buf, len);
        while (map_source_next(&src, &line, &lineno, &d) > 0) {
                _cleanup_free_ char *e = str_escape_log(line.data, 1000);
                (void) strbuf_printf(&out, "%u: %s\n", lineno, strempty(e));
        }
        golden_append_diags(&out, &d);
        golden_check("source-lines.expected", strempty(out.data));
        strbuf_done(&out);
        strbuf_done(&line);
        diag_done(&d);
}

static void check_kv(const char *line, int ret, const char *key, const char *value,
                     const char *diag) {
        _cleanup_free_ char *copy = strdup(line);
        char *k = NULL, *v = NULL;
        Diag d = {0};

        CHECK_INT(map_parse_key_value(copy, "f", 3, &d, &k, &v), ret);
        if (ret > 0) {
                CHECK_STR(k, key);
                CHECK_STR(v, value);
        }
        if (diag) {
                CHECK_INT(d.n, 1);
                CHECK(d.n == 1 && d.entries[0].line == 3 && streq_ptr(d.entries[0].text, diag));
        } else
                CHECK_INT(d.n, 0);
        diag_done(&d);
}

static void test_key_value(void) {
        check_kv("key value", 1, "key", "value", NULL);
        check_kv("key \t  value with  spaces \t ", 1, "key", "value with  spaces", NULL);
        check_kv("\"quoted key\" v", 1, "\"quoted key\"", "v", NULL);
        check_kv("back\\ slash v", 1, "back\\ slash", "v", NULL);
        check_kv("onlykey", 0, NULL, NULL, "expected format: key whitespace value");
        check_kv("onlykey   ", 0, NULL, NULL, "expected format: key whitespace value");
        check_kv("\"open v", 0, NULL, NULL, "unbalanced '\"' in '\"open v' -- ignoring this line");
        check_kv("key: value", 1, "key:", "value",
                 "record is in \"key: value\" format; is this an alias file?");
        check_kv("trailing\\", 0, NULL, NULL, "expected format: key whitespace value");
}

static void check_alias(const char *line, int ret, const char *key, const char *value,
                        const char *diag) {
        _cleanup_free_ char *k = NULL, *v = NULL;
        Diag d = {0};

        CHECK_INT(map_parse_alias(line, "aliases", 7, &d, &k, &v), ret);
        CHECK_STR(k, key);
        CHECK_STR(v, value);
        if (diag)
                CHECK(d.n == 1 && streq_ptr(d.entries[0].text, diag));
        else
                CHECK_INT(d.n, 0);
        diag_done(&d);
}

static void test_alias_lines(void) {
        check_alias("root: admin, Other", 1, "root", "admin, Other", NULL);
        check_alias("Root:admin,other", 1, "Root", "admin, other", NULL);
        check_alias("\"Quoted Name\": x", 1, "Quoted Name", "x", NULL);
        check_alias("A\\:b: c", 1, "A:b", "c", NULL);
        check_alias("pipe: \"|/bin/cmd  arg\", user", 1, "pipe", "\"|/bin/cmd  arg\", user", NULL);
        check_alias("inc: :include:/etc/list", 1, "inc", ":include:/etc/list", NULL);
        check_alias("f: \\\\x", 1, "f", "\"\\\\x\"", NULL);
        check_alias("c: Joe  (the boss)  <joe@x>", 1, "c", "Joe (the boss) <joe@x>", NULL);
        check_alias("dom: user@[192.0.2.1]", 1, "dom", "user@[192.0.2.1]", NULL);
        check_alias("tab:\tx\t,\ty", 1, "tab", "x, y", NULL);
        check_alias("no colon here", 0, NULL, NULL, "need name:value pair");
        check_alias(": no name", 0, NULL, NULL, "need name:value pair");
        check_alias("novalue:", 0, NULL, NULL, "need name:value pair");
        check_alias("a, b: c", 0, NULL, NULL, "need name:value pair");
        check_alias("user@example.com: x", 0, NULL, NULL, "name must be local");
        check_alias("user%host: x", 0, NULL, NULL, "name must be local");
        check_alias("trail: x\\", 1, "trail", "x", NULL);
        check_alias("comment: (unclosed", 1, "comment", "(unclosed", NULL);
        check_alias("q: \"unclosed", 1, "q", "\"unclosed\"", NULL);
}

static void test_inline(void) {
        _cleanup_(map_freep) Map *m = NULL;
        Diag d = {0};

        CHECK_INT(map_open("inline:{ Foo=Bar, {x = y z}, a=b=c, FOO=last }", MAP_FLAG_FOLD_KEYS,
                           &d, &m),
                  0);
        CHECK_INT(d.n, 0);
        CHECK_LOOKUP(m, "foo", "last");
        CHECK_LOOKUP(m, "FOO", "last");
        CHECK_LOOKUP(m, "x", "y z");
        CHECK_LOOKUP(m, "a", "b=c");
        CHECK_LOOKUP(m, "y", "(not found)");
        m = map_free(m);

        /* Without folding, keys keep their case. */
        CHECK_INT(map_open("inline:{Foo=Bar}", 0, &d, &m), 0);
        CHECK_LOOKUP(m, "Foo", "Bar");
        CHECK_LOOKUP(m, "foo", "(not found)");
        m = map_free(m);

        /* Beyond Postfix: "key = value" between commas is one entry. */
        CHECK_INT(map_open("inline:{ key = value, a=1 b=2, c = d e,, {f = g} }", 0, &d, &m), 0);
        CHECK_LOOKUP(m, "key", "value");
        CHECK_LOOKUP(m, "a", "1");
        CHECK_LOOKUP(m, "b", "2");
        CHECK_LOOKUP(m, "c", "d e");
        CHECK_LOOKUP(m, "f", "g");
        m = map_free(m);

        CHECK_INT(map_open("inline:{ {empty = } }", 0, &d, &m), 0);
        CHECK_LOOKUP(m, "empty", "");
        m = map_free(m);

        CHECK_INT(map_open("inline:{a=b", 0, &d, &m), -EINVAL);
        CHECK_STR(d.entries[0].text, "bad syntax: \"inline:{a=b\"; need \"inline:{name=value...}\"");
        diag_done(&d);
        CHECK_INT(map_open("inline:{}", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open("inline:{a=b}x", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open("inline:{ Foo }", 0, &d, &m), -EINVAL);
        CHECK_STR(d.entries[0].text, "missing '=' after attribute name: \"inline:{ Foo }\"; "
                                     "need \"inline:{name=value...}\"");
        diag_done(&d);
        CHECK_INT(map_open("inline:{ a=1, b }", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open("inline:{ =x }", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open("inline:{ {a=b }", 0, &d, &m), -EINVAL);
        diag_done(&d);
        CHECK_INT(map_open("inline:{ a=b} }", 0, &d, &m), -EINVAL);
        diag_done(&d);
}

static int count_entries(const char *key, const char *value, void *userdata) {
        (*(int *) userdata)++;
        return 0;
}

static int stop_walk(const char *key, const char *value, void *userdata) {
        return -ECANCELED;
}

static void test_static(void) {
        _cleanup_(map_freep) Map *m = NULL;
        Diag d = {0};
        int n = 0;

        CHECK_INT(map_open("static:OK", MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        CHECK_LOOKUP(m, "anything", "OK");
        CHECK_LOOKUP(m, "", "OK");
        CHECK_INT(map_walk(m, count_entries, &n), -EOPNOTSUPP);
        m = map_free(m);
        CHECK_INT(map_open("static:{ value with spaces }", 0, &d, &m), 0);
        CHECK_LOOKUP(m, "x", "value with spaces");
        m = map_free(m);
        CHECK_INT(map_open("static:{}", 0, &d, &m), 0);
        CHECK_LOOKUP(m, "x", "");
        m = map_free(m);
        CHECK_INT(map_open("static:{a}{b}", 0, &d, &m), -EINVAL);
        CHECK_STR(d.entries[0].text, "bad static:name syntax: syntax error after '}' in \"{a}{b}\"");
        diag_done(&d);
        CHECK_INT(map_open("static:{a", 0, &d, &m), -EINVAL);
        diag_done(&d);

        /* proxy: opens the table behind it. */
        CHECK_INT(map_open("proxy:static:ok", 0, &d, &m), 0);
        CHECK_STR(map_spec(m), "proxy:static:ok");
        CHECK_STR(map_type(m), "static");
        CHECK_LOOKUP(m, "x", "ok");
        diag_done(&d);
}

static void test_texthash_golden(void) {
        _cleanup_free_ char *path = golden_path("postmap-source.txt");
        _cleanup_free_ char *spec = strdup_printf("texthash:%s", path);
        _cleanup_(map_freep) Map *m = NULL;
        _cleanup_free_ char *dir = NULL;
        StrBuf out = {0};
        Diag d = {0};
        int n = 0;

        CHECK_INT(map_open(spec, MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        if (!m)
                return;
        /* Diagnostics name the file as given; print it relative for the golden file. */
        for (size_t i = 0; i < d.n; i++) {
                CHECK_STR(d.entries[i].file, path);
                free(d.entries[i].file);
                d.entries[i].file = strdup("postmap-source.txt");
        }
        golden_append_diags(&out, &d);
        golden_append_queries(&out, m, "postmap-source.queries");
        golden_check("texthash.expected", strempty(out.data));
        strbuf_done(&out);
        diag_done(&d);

        CHECK_INT(map_walk(m, count_entries, &n), 0);
        CHECK_INT(n, 9);
        CHECK_INT(map_walk(m, stop_walk, NULL), -ECANCELED);

        CHECK_INT(map_open("texthash:/nonexistent", 0, &d, &m), -ENOENT);
        diag_done(&d);
}

static void test_unix(void) {
        _cleanup_(map_freep) Map *m = NULL;
        _cleanup_free_ char *want = NULL;
        struct passwd *pw = getpwuid(0);
        Diag d = {0};

        CHECK_INT(map_open("unix:passwd.byname", MAP_FLAG_FOLD_KEYS, &d, &m), 0);
        if (pw) {
                _cleanup_free_ char *upper = strdup(pw->pw_name);
                want = strdup_printf("%s:%s:0:%ld:%s:%s:%s", pw->pw_name, pw->pw_passwd,
                                     (long) pw->pw_gid, pw->pw_gecos, pw->pw_dir, pw->pw_shell);
                CHECK_LOOKUP(m, pw->pw_name, want);
                for (char *p = upper; p && *p; p++)
                        if (*p >= 'a' && *p <= 'z')
                                *p = (char) (*p - 'a' + 'A');
                /* Folded like Postfix: ROOT finds root. */
                CHECK_LOOKUP(m, upper, want);
        }
        CHECK_LOOKUP(m, "no-such-user-xyzzy", "(not found)");
        CHECK_LOOKUP(m, "", "(not found)");
        m = map_free(m);
        CHECK_INT(map_open("unix:group.byname", 0, &d, &m), 0);
        {
                _cleanup_free_ char *v = NULL;
                CHECK_INT(map_lookup(m, "root", &v), 1);
                CHECK(v && startswith(v, "root:") != NULL);
        }
        CHECK_INT(map_walk(m, count_entries, NULL), -EOPNOTSUPP);
        diag_done(&d);
}

static void test_list(void) {
        _cleanup_(map_list_freep) MapList *l = NULL;
        _cleanup_free_ char *v = NULL;
        char *specs[] = {"inline:{a=first}", "inline:{a=second, b=second}", "static:fallback",
                         NULL};
        char *bad[] = {"inline:{a=1}", "nosuch:x", NULL};
        char *empty[] = {NULL};
        Diag d = {0};

        CHECK_INT(map_list_open(specs, MAP_FLAG_FOLD_KEYS, &d, &l), 0);
        CHECK_INT(map_list_lookup(l, "A", &v), 1);
        CHECK_STR(v, "first");
        v = free_str(v);
        CHECK_INT(map_list_lookup(l, "b", &v), 1);
        CHECK_STR(v, "second");
        v = free_str(v);
        CHECK_INT(map_list_lookup(l, "zzz", &v), 1);
        CHECK_STR(v, "fallback");
        l = map_list_free(l);

        CHECK_INT(map_list_open(bad, 0, &d, &l), -EPROTONOSUPPORT);
        CHECK(l == NULL);
        diag_done(&d);
        CHECK_INT(map_list_open(empty, 0, &d, &l), 0);
        CHECK_INT(map_list_lookup(l, "x", NULL), 0);
}

static void test_check_action(void) {
        const char *text = NULL;

        CHECK_INT(map_check_action("REJECT 554 5.7.0 no thanks", &text), MAP_CHECK_REJECT);
        CHECK_STR(text, "554 5.7.0 no thanks");
        CHECK_INT(map_check_action("reject", &text), MAP_CHECK_REJECT);
        CHECK_STR(text, "");
        CHECK_INT(map_check_action("Prepend \tX-Seen: yes", &text), MAP_CHECK_PREPEND);
        CHECK_STR(text, "X-Seen: yes");
        /* PREPEND and REPLACE without text are not actions. */
        CHECK_INT(map_check_action("PREPEND", NULL), MAP_CHECK_UNKNOWN);
        CHECK_INT(map_check_action("REPLACE  ", NULL), MAP_CHECK_UNKNOWN);
        CHECK_INT(map_check_action("REPLACE X-New: 1", NULL), MAP_CHECK_REPLACE);
        CHECK_INT(map_check_action("ok", NULL), MAP_CHECK_DUNNO);
        CHECK_INT(map_check_action("DUNNO", NULL), MAP_CHECK_DUNNO);
        CHECK_INT(map_check_action("DISCARD spam", NULL), MAP_CHECK_DISCARD);
        CHECK_INT(map_check_action("HOLD", NULL), MAP_CHECK_HOLD);
        CHECK_INT(map_check_action("WARN x", NULL), MAP_CHECK_WARN);
        CHECK_INT(map_check_action("INFO", NULL), MAP_CHECK_INFO);
        CHECK_INT(map_check_action("IGNORE", NULL), MAP_CHECK_IGNORE);
        CHECK_INT(map_check_action("REDIRECT a@example.org", &text), MAP_CHECK_REDIRECT);
        CHECK_STR(text, "a@example.org");
        /* A prefix of a word is not the word. */
        CHECK_INT(map_check_action("REJECTED", NULL), MAP_CHECK_UNKNOWN);
        CHECK_INT(map_check_action("FILTER smtp:x", NULL), MAP_CHECK_UNKNOWN);
        CHECK_INT(map_check_action("", &text), MAP_CHECK_UNKNOWN);
        CHECK_STR(text, "");
}

static int yes(const char *domain, void *userdata) {
        return streq(domain, userdata);
}

static void test_list_lookup_addr(void) {
        _cleanup_(map_list_freep) MapList *l = NULL;
        char *specs[] = {"inline:{a+x@d.example=full, b@d.example=noext, c+y=local, "
                         "e=localnoext, @d.example=domain}", NULL};
        Diag d = {0};
        MapAddrKey k;

#define CHECK_ADDR(addr, value, key) do {                                               \
                _cleanup_free_ char *v = NULL;                                           \
                CHECK_INT(map_list_lookup_addr(l, addr, "+", yes, "d.example", &v, &k), 1); \
                CHECK_STR(v, value);                                                     \
                CHECK_INT(k, key);                                                       \
        } while (0)
        CHECK_INT(map_list_open(specs, MAP_FLAG_FOLD_KEYS, &d, &l), 0);
        CHECK_ADDR("a+x@d.example", "full", MAP_ADDR_FULL);
        CHECK_ADDR("b+z@d.example", "noext", MAP_ADDR_NOEXT);
        CHECK_ADDR("c+y@d.example", "local", MAP_ADDR_LOCAL);
        CHECK_ADDR("e+q@d.example", "localnoext", MAP_ADDR_LOCAL_NOEXT);
        CHECK_ADDR("zz@d.example", "domain", MAP_ADDR_DOMAIN);
        /* A delimiter first is no extension; a remote domain has no local keys. */
        CHECK_ADDR("+b@d.example", "domain", MAP_ADDR_DOMAIN);
        CHECK_INT(map_list_lookup_addr(l, "e@other.example", "+", yes, "d.example", NULL, NULL), 0);
        CHECK_INT(map_list_lookup_addr(l, "e", "+", yes, "d.example", NULL, NULL), 1);
#undef CHECK_ADDR
}

TEST_MAIN(test_types, test_open_errors, test_source_golden, test_key_value, test_alias_lines,
          test_inline, test_static, test_texthash_golden, test_unix, test_list, test_check_action,
          test_list_lookup_addr)
