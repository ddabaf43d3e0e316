/* test-strutil.c: list splitting (Postfix list syntax), escaping for logs,
 * string vectors and buffers. */
#include "strutil.h"
#include "tests.h"

static void test_split(void) {
        _cleanup_strv_free_ char **l = NULL, **m = NULL, **e = NULL;
        CHECK_INT(str_split_list(" a, b\tc ,,d\n e", false, &l), 0);
        CHECK_INT(strv_length(l), 5);
        CHECK_STR(l[0], "a");
        CHECK_STR(l[4], "e");
        CHECK_INT(str_split_list("inline:{ a=b, c=d }, static:{ x y }, hash:/z", true, &m), 0);
        CHECK_INT(strv_length(m), 3);
        CHECK_STR(m[0], "inline:{ a=b, c=d }");
        CHECK_STR(m[1], "static:{ x y }");
        CHECK_STR(m[2], "hash:/z");
        CHECK_INT(str_split_list("", false, &e), 0);
        CHECK(e && !e[0]);
}

static void test_split_braces(void) {
        _cleanup_strv_free_ char **l = NULL;
        CHECK_INT(str_split_list("{ permit with spaces }, reject", true, &l), 0);
        CHECK_STR(l[0], "permit with spaces");
        CHECK_STR(l[1], "reject");
}

static void test_escape(void) {
        _cleanup_free_ char *a = str_escape_log("ok\r\n\x01\xff", 100), *b = str_escape_log("abcdef", 3);
        CHECK_STR(a, "ok\\x0d\\x0a\\x01\\xff");
        CHECK_STR(b, "abc...");
}

static void test_strv(void) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *j = NULL;
        CHECK_INT(strv_extend(&l, "a"), 0);
        CHECK_INT(strv_extend(&l, "B"), 0);
        CHECK(strv_contains(l, "a"));
        CHECK(!strv_contains(l, "b"));
        CHECK(strv_contains_case(l, "b"));
        j = strv_join(l, ", ");
        CHECK_STR(j, "a, B");
}

static void test_strbuf(void) {
        StrBuf b = {0};
        _cleanup_free_ char *s = NULL;
        for (int i = 0; i < 1000; i++)
                CHECK(strbuf_printf(&b, "%d,", i) == 0);
        CHECK(b.len == 3890);
        s = strbuf_steal(&b);
        CHECK(strncmp(s, "0,1,2,", 6) == 0);
        CHECK(b.data == NULL);
}

static void test_misc(void) {
        char s[] = "  Hello World \t";
        CHECK_STR(ascii_strlower(strstrip(s)), "hello world");
        CHECK(endswith("foo.db", ".db"));
        CHECK(!endswith("db", "foo.db"));
        CHECK(str_is_ascii_digits("0123"));
        CHECK(!str_is_ascii_digits("12a"));
        CHECK(!str_is_ascii_digits(""));
}

static void test_expand_vars(void) {
        const char *const vars[] = {"code", "554", "reason", "listed", "empty", "", NULL};
#define CHECK_EXPAND(tmpl, want) do {                           \
                _cleanup_free_ char *x = str_expand_vars(tmpl, vars); \
                CHECK_STR(x, want);                             \
        } while (0)
        CHECK_EXPAND("$code x ${code} $(code).", "554 x 554 554.");
        CHECK_EXPAND("a${reason?; $reason}b", "a; listedb");
        CHECK_EXPAND("a${empty?; $reason}b", "ab");
        CHECK_EXPAND("${empty:none} ${reason:none}", "none listed");
        CHECK_EXPAND("${empty:{$code}} $(empty:$code)", "554 554");
        CHECK_EXPAND("$$code costs $ 5 $unknown.", "$code costs $ 5 .");
        CHECK_EXPAND("", "");
#undef CHECK_EXPAND
}

TEST_MAIN(test_split, test_split_braces, test_escape, test_strv, test_strbuf, test_misc,
          test_expand_vars)
