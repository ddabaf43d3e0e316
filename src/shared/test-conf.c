/* test-conf.c: unit tests of conf.c, conf-parse.c and conf-expand.c. The
 * golden tests load each testdata/conf/load/NAME.cf and compare the
 * diagnostics, the result and the raw and expanded values of every name set
 * with NAME.out (TEST_GOLDEN_UPDATE=1 rewrites the .out files). The other
 * tests cover the parameter table, the value parsers, computed defaults,
 * services.d overrides and the configuration directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "fileio.h"
#include "strutil.h"
#include "tests.h"

static char *load_report(const char *text, const char *file) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        StrBuf out = {0};
        Diag d = {0};
        int r;

        r = conf_load_string(text, file, &d, &c);
        for (size_t i = 0; i < d.n; i++) {
                _cleanup_free_ char *s = diag_entry_format(&d.entries[i]);
                (void) strbuf_printf(&out, "%s\n", s);
        }
        diag_done(&d);
        (void) strbuf_printf(&out, "result: %s\n", r < 0 ? strerror(-r) : "loaded");
        if (r >= 0) {
                _cleanup_strv_free_ char **names = NULL;
                STRV_FOREACH(n, conf_main_names(c))
                        (void) strv_extend(&names, *n);
                for (size_t i = 0; names && names[i]; i++)
                        for (size_t j = i + 1; names[j]; j++)
                                if (strcmp(names[i], names[j]) > 0) {
                                        char *t = names[i];
                                        names[i] = names[j];
                                        names[j] = t;
                                }
                STRV_FOREACH(n, names) {
                        const char *raw = conf_get_by_name(c, *n, false);
                        const char *x = conf_get_by_name(c, *n, true);
                        (void) strbuf_printf(&out, "%s = %s\n", *n, strempty(raw));
                        if (!streq_ptr(raw, x))
                                (void) strbuf_printf(&out, "  -> %s\n", strempty(x));
                }
        }
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
        dir = path_join(testdata, "conf/load");
        d = opendir(dir);
        CHECK(d != NULL);
        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *in = NULL, *text = NULL, *expected = NULL, *actual = NULL,
                                    *out = NULL, *base = NULL;
                if (!endswith(de->d_name, ".cf"))
                        continue;
                count++;
                base = strndup(de->d_name, strlen(de->d_name) - 3);
                in = path_join(dir, de->d_name);
                out = strdup_printf("%s/%s.out", dir, base);
                CHECK_INT(file_read_all(in, 1 << 20, &text, NULL), 0);
                if (!text)
                        continue;
                actual = load_report(text, de->d_name);
                if (update) {
                        CHECK_INT(file_write_atomic(out, actual, strlen(actual), 0644), 0);
                        continue;
                }
                CHECK_INT(file_read_all(out, 1 << 20, &expected, NULL), 0);
                if (!expected)
                        continue;
                if (!streq(expected, actual))
                        fprintf(stderr, "golden test %s failed:\n--- expected\n%s--- actual\n%s",
                                de->d_name, expected, actual);
                CHECK_STR(actual, expected);
        }
        closedir(d);
        CHECK(count >= 6);
}

static void test_table(void) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        Diag d = {0};

        for (size_t p = 0; p < _P_MAX; p++) {
                CHECK_INT(conf_param_lookup(conf_params[p].name), (long long) p);
                if (p > 0)
                        CHECK(strcmp(conf_params[p - 1].name, conf_params[p].name) < 0);
                CHECK(conf_params[p].description && *conf_params[p].description);
                CHECK(conf_params[p].services && *conf_params[p].services);
                CHECK(conf_type_to_string(conf_params[p].type) != NULL);
                if (conf_params[p].type == CONF_TYPE_TIME)
                        CHECK(strchr("smhdw", conf_params[p].time_unit) != NULL);
        }
        CHECK_INT(conf_param_lookup("no_such_parameter"), -ENOENT);
        CHECK_INT(conf_param_lookup(""), -ENOENT);
        CHECK_STR(conf_params[P_MYORIGIN].name, "myorigin");
        CHECK_STR(conf_params[P_2BOUNCE_NOTICE_RECIPIENT].name, "2bounce_notice_recipient");

        /* Every default fits its type, without warnings: an empty main.cf loads clean. */
        CHECK_INT(conf_load_string("", "main.cf", &d, &c), 0);
        CHECK_INT(d.n, 0);
        diag_print(&d, stderr, "test-conf");
        diag_done(&d);
        if (!c)
                return;
        CHECK_INT(conf_get_size(c, P_MESSAGE_SIZE_LIMIT), 10240000);
        CHECK_INT(conf_get_time(c, P_SMTPD_TIMEOUT), 300);
        CHECK_INT(conf_get_time(c, P_MAXIMAL_QUEUE_LIFETIME), 5 * 86400);
        CHECK_INT(conf_get_time(c, P_DELAY_WARNING_TIME), 0);
        CHECK_INT(conf_get_int(c, P_SMTPD_RECIPIENT_LIMIT), 1000);
        CHECK_INT(conf_get_int(c, P_SMTP_DESTINATION_CONCURRENCY_LIMIT), 20);
        CHECK(conf_get_bool(c, P_SMTPD_DELAY_REJECT));
        CHECK(!conf_get_bool(c, P_APPEND_DOT_MYDOMAIN));
        CHECK_STR(conf_get_str(c, P_SMTPD_SASL_TYPE), "dovecot");
        CHECK_STR(conf_get_str(c, P_QUEUE_DIRECTORY), POSTERN_SPOOL_DIR);
        CHECK_STR(conf_get_str(c, P_MAIL_VERSION), POSTERN_VERSION);
        CHECK_STR(conf_get_str(c, P_SMTPD_TLS_SECURITY_LEVEL), "");
        CHECK_STR(conf_get_str(c, P_DEFAULT_RBL_REPLY), conf_params[P_DEFAULT_RBL_REPLY].def);
        CHECK_INT(strv_length(conf_get_list(c, P_SMTPD_RELAY_RESTRICTIONS)), 3);
        CHECK_STR(conf_get_list(c, P_SMTPD_RELAY_RESTRICTIONS)[2], "defer_unauth_destination");
        CHECK_INT(strv_length(conf_get_list(c, P_LOCAL_RECIPIENT_MAPS)), 2);
        CHECK_STR(conf_get_list(c, P_LOCAL_RECIPIENT_MAPS)[1], "hash:/etc/aliases");
        CHECK_INT(strv_length(conf_get_list(c, P_RELAY_DOMAINS)), 0);
        CHECK_STR(conf_dir(c), conf_default_dir());
        CHECK(conf_service(c) == NULL);
        CHECK_INT(strv_length(conf_main_names(c)), 0);
        CHECK_INT(strv_length(conf_service_names(c)), 0);
}

static void test_parsers(void) {
        uint64_t u;
        long long i;
        bool b;

        CHECK_INT(conf_parse_bool("yes", &b), 0);
        CHECK(b);
        CHECK_INT(conf_parse_bool("FALSE", &b), 0);
        CHECK(!b);
        CHECK_INT(conf_parse_bool("", NULL), -EINVAL);
        CHECK_INT(conf_parse_bool("1", NULL), -EINVAL);

        CHECK_INT(conf_parse_time("10", 's', &u), 0);
        CHECK_INT(u, 10);
        CHECK_INT(conf_parse_time("10", 'd', &u), 0);
        CHECK_INT(u, 864000);
        CHECK_INT(conf_parse_time("3m", 's', &u), 0);
        CHECK_INT(u, 180);
        CHECK_INT(conf_parse_time("2h", 's', &u), 0);
        CHECK_INT(u, 7200);
        CHECK_INT(conf_parse_time("1w", 's', &u), 0);
        CHECK_INT(u, 604800);
        CHECK_INT(conf_parse_time("0", 0, &u), 0);
        CHECK_INT(u, 0);
        CHECK_INT(conf_parse_time("3M", 's', NULL), -EINVAL);
        CHECK_INT(conf_parse_time("3ms", 's', NULL), -EINVAL);
        CHECK_INT(conf_parse_time("-3", 's', NULL), -EINVAL);
        CHECK_INT(conf_parse_time("s", 's', NULL), -EINVAL);
        CHECK_INT(conf_parse_time("", 's', NULL), -EINVAL);
        CHECK_INT(conf_parse_time("30500000000000000w", 's', NULL), -EINVAL);

        CHECK_INT(conf_parse_size("10240000", &u), 0);
        CHECK_INT(u, 10240000);
        CHECK_INT(conf_parse_size("10k", &u), 0);
        CHECK_INT(u, 10240);
        CHECK_INT(conf_parse_size("5M", &u), 0);
        CHECK_INT(u, 5 * 1024 * 1024);
        CHECK_INT(conf_parse_size("2g", &u), 0);
        CHECK_INT(u, 2LL * 1024 * 1024 * 1024);
        CHECK_INT(conf_parse_size("lots", NULL), -EINVAL);
        CHECK_INT(conf_parse_size("1kb", NULL), -EINVAL);
        CHECK_INT(conf_parse_size("18446744073709551615", &u), 0);
        CHECK_INT(conf_parse_size("18446744073709551616", NULL), -EINVAL);
        CHECK_INT(conf_parse_size("18014398509481984k", NULL), -EINVAL);

        CHECK_INT(conf_parse_int("-12", &i), 0);
        CHECK_INT(i, -12);
        CHECK_INT(conf_parse_int("+7", &i), 0);
        CHECK_INT(i, 7);
        CHECK_INT(conf_parse_int("9223372036854775807", &i), 0);
        CHECK_INT(conf_parse_int("-9223372036854775808", &i), 0);
        CHECK(i < 0);
        CHECK_INT(conf_parse_int("9223372036854775808", NULL), -EINVAL);
        CHECK_INT(conf_parse_int("1k", NULL), -EINVAL);
        CHECK_INT(conf_parse_int("-", NULL), -EINVAL);
}

static void test_check_value(void) {
        _cleanup_free_ char *expected = NULL, *e2 = NULL, *e3 = NULL;

        CHECK_INT(conf_param_check_value(P_MESSAGE_SIZE_LIMIT, "lots", &expected), -EINVAL);
        CHECK_STR(expected, "a size (bytes, optionally with k/m/g suffix)");
        CHECK_INT(conf_param_check_value(P_MESSAGE_SIZE_LIMIT, " 20m ", NULL), 0);
        CHECK_INT(conf_param_check_value(P_SMTPD_TLS_SECURITY_LEVEL, "must", &e2), -EINVAL);
        CHECK_STR(e2, "one of: none, may, encrypt (or empty)");
        CHECK_INT(conf_param_check_value(P_SMTPD_TLS_SECURITY_LEVEL, "", NULL), 0);
        CHECK_INT(conf_param_check_value(P_SMTPD_TIMEOUT, "1y", &e3), -EINVAL);
        CHECK_STR(e3, "a time (a number with optional unit s, m, h, d or w; default unit s)");
        CHECK_INT(conf_param_check_value(P_ALIAS_MAPS, "hash:/a, inline:{ a=b, c=d }", NULL), 0);
        CHECK_INT(conf_param_check_value(P_ALIAS_MAPS, "hash:", NULL), -EINVAL);
        CHECK_INT(conf_param_check_value(P_ALIAS_MAPS, ":x", NULL), -EINVAL);
        CHECK_INT(conf_param_check_value(P_MYHOSTNAME, "anything at all", NULL), 0);
}

static void test_enum_and_raw(void) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        _cleanup_free_ char *x = NULL;

        CHECK_INT(conf_load_string("smtpd_tls_security_level = ENCRYPT\n"
                                   "default_rbl_reply = $rbl_code no ${rbl_reason}\n"
                                   "mydomain = example.org\n",
                                   "main.cf", NULL, &c),
                  0);
        if (!c)
                return;
        /* Enumerations come back in the table's spelling. */
        CHECK_STR(conf_get_str(c, P_SMTPD_TLS_SECURITY_LEVEL), "encrypt");
        CHECK_STR(conf_get_by_name(c, "smtpd_tls_security_level", false), "ENCRYPT");
        /* Raw parameters are not expanded. */
        CHECK_STR(conf_get_str(c, P_DEFAULT_RBL_REPLY), "$rbl_code no ${rbl_reason}");
        CHECK_STR(conf_get_by_name(c, "default_rbl_reply", true), "$rbl_code no ${rbl_reason}");
        CHECK_INT(conf_expand(c, "postmaster@$mydomain${nosuch}", &x), 0);
        CHECK_STR(x, "postmaster@example.org");
        CHECK(conf_get_by_name(c, "nosuch", false) == NULL);
        /* Raw lists split without expansion. */
        CHECK_INT(strv_length(conf_get_list(c, P_FORWARD_PATH)), 2);
        CHECK_STR(conf_get_list(c, P_FORWARD_PATH)[1], "$home/.forward");
}

static void test_computed(void) {
        _cleanup_(conf_unrefp) Config *c = NULL, *c2 = NULL, *c3 = NULL;
        char host[256] = "";
        _cleanup_free_ char *want_host = NULL, *want_domain = NULL;
        const char *dot;
        ConfSource src = CONF_SOURCE_MAIN;

        CHECK_INT(gethostname(host, sizeof(host) - 1), 0);
        dot = strchr(host, '.');
        want_host = dot ? strdup(host) : strdup_printf("%s.localdomain", host);
        dot = strchr(want_host, '.');
        want_domain = strdup(dot + 1);

        CHECK_INT(conf_load_string("", "main.cf", NULL, &c), 0);
        if (!c)
                return;
        CHECK_STR(conf_get_str(c, P_MYHOSTNAME), want_host);
        CHECK_STR(conf_get_str(c, P_MYDOMAIN), want_domain);
        CHECK_STR(conf_get_default(c, P_MYHOSTNAME), want_host);
        CHECK_STR(conf_get_str(c, P_MYORIGIN), want_host);
        CHECK_STR(conf_get_raw(c, "myorigin", &src), "$myhostname");
        CHECK_INT(src, CONF_SOURCE_DEFAULT);
        CHECK(strstr(conf_get_str(c, P_MYNETWORKS), "127.0.0.1/32") != NULL);
        CHECK(strv_length(conf_get_list(c, P_MYNETWORKS)) >= 1);

        /* A host name without a dot takes mydomain from main.cf. */
        CHECK_INT(conf_load_string("mydomain = example.net\n", "main.cf", NULL, &c2), 0);
        if (c2 && !strchr(host, '.')) {
                _cleanup_free_ char *h = strdup_printf("%s.example.net", host);
                CHECK_STR(conf_get_str(c2, P_MYHOSTNAME), h);
                CHECK_STR(conf_get_default(c2, P_MYHOSTNAME), want_host);
        }
        /* mydomain follows myhostname; subnet style gives networks. */
        CHECK_INT(conf_load_string("myhostname = mx.sub.example.com\nmynetworks_style = subnet\n",
                                   "main.cf", NULL, &c3),
                  0);
        if (c3) {
                CHECK_STR(conf_get_str(c3, P_MYDOMAIN), "sub.example.com");
                CHECK(strstr(conf_get_str(c3, P_MYNETWORKS), "127.0.0.0/8") != NULL);
        }
}

static void test_limits(void) {
        _cleanup_(conf_unrefp) Config *c = NULL;
        StrBuf b = {0};
        Diag d = {0};

        /* 200 parameters, each twice the one before: refused, not built. */
        (void) strbuf_puts(&b, "myorigin = $p0\n");
        for (int i = 0; i < 200; i++)
                (void) strbuf_printf(&b, "p%d = $p%d$p%d\n", i, i + 1, i + 1);
        (void) strbuf_puts(&b, "p200 = x\n");
        CHECK_INT(conf_load_string(b.data, "main.cf", &d, &c), -EINVAL);
        CHECK(c == NULL);
        CHECK(d.n_errors >= 1);
        diag_done(&d);
        strbuf_done(&b);

        /* Nesting deeper than 100 levels. */
        (void) strbuf_puts(&b, "myorigin = $q0\n");
        for (int i = 0; i < 150; i++)
                (void) strbuf_printf(&b, "q%d = $q%d\n", i, i + 1);
        (void) strbuf_puts(&b, "q150 = end\n");
        CHECK_INT(conf_load_string(b.data, "main.cf", &d, &c), -EINVAL);
        CHECK(d.n_errors >= 1);
        diag_done(&d);
        strbuf_done(&b);

        /* Deep brace nesting in one value does not exhaust the stack. */
        for (int i = 0; i < 100000; i++)
                (void) strbuf_puts(&b, "${a?");
        CHECK_INT(conf_load_string(b.data, "main.cf", &d, &c), -EINVAL);
        diag_done(&d);
        strbuf_done(&b);
        (void) strbuf_puts(&b, "myorigin = ");
        for (int i = 0; i < 100000; i++)
                (void) strbuf_puts(&b, "${myhostname?");
        for (int i = 0; i < 100000; i++)
                (void) strbuf_puts(&b, "}");
        (void) strbuf_puts(&b, "\n");
        CHECK_INT(conf_load_string(b.data, "main.cf", &d, &c), -EINVAL);
        diag_done(&d);
        strbuf_done(&b);
}

static int write_file(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *p = path_join(dir, name);
        return p ? file_write_atomic(p, text, strlen(text), 0644) : -ENOMEM;
}

static void test_directory(void) {
        const char *tmpdir = getenv("TMPDIR");
        _cleanup_free_ char *tmpl = strdup_printf("%s/test-conf-XXXXXX",
                                                  isempty(tmpdir) ? "/tmp" : tmpdir);
        _cleanup_(conf_unrefp) Config *c = NULL, *sub = NULL, *smtps = NULL;
        _cleanup_free_ char *sdir = NULL, *main_path = NULL;
        char * const *names, * const *values;
        const char *file = NULL;
        unsigned line = 0;
        ConfSource src;
        char *dir;
        Diag d = {0};

        dir = tmpl ? mkdtemp(tmpl) : NULL;
        CHECK(dir != NULL);
        if (!dir)
                return;
        sdir = path_join(dir, "services.d");
        main_path = path_join(dir, "main.cf");

        /* No main.cf. */
        CHECK_INT(conf_load(dir, NULL, &d, &c), -ENOENT);
        CHECK_INT(d.n_errors, 1);
        diag_done(&d);

        CHECK_INT(write_file(dir, "main.cf",
                             "myhostname = mail.example.com\n"
                             "smtpd_tls_security_level = may\n"
                             "mua_client_restrictions = permit_sasl_authenticated, reject\n"),
                  0);
        CHECK_INT(mkdir(sdir, 0755), 0);
        CHECK_INT(write_file(sdir, "submission.cf",
                             "smtpd_tls_security_level = encrypt\n"
                             "smtpd_client_restrictions = $mua_client_restrictions\n"
                             "myhostname = submit.example.com\n"),
                  0);
        CHECK_INT(write_file(sdir, "smtps.cf", "smtpd_tls_wrappermode = yes\n"), 0);
        CHECK_INT(write_file(sdir, "README", "not a configuration file\n"), 0);

        CHECK_INT(conf_load(dir, NULL, &d, &c), 0);
        CHECK_INT(d.n, 0);
        diag_print(&d, stderr, "test-conf");
        diag_done(&d);
        if (c) {
                CHECK_STR(conf_dir(c), dir);
                CHECK_STR(conf_get_str(c, P_CONFIG_DIRECTORY), dir);
                CHECK_STR(conf_get_str(c, P_SMTPD_TLS_SECURITY_LEVEL), "may");
                CHECK_INT(strv_length(conf_service_names(c)), 2);
                CHECK_STR(conf_service_names(c)[0], "smtps");
                CHECK_STR(conf_service_names(c)[1], "submission");
                CHECK_INT(conf_service_overrides(c, "submission", &names, &values), 0);
                CHECK_INT(strv_length(names), 3);
                CHECK_STR(names[1], "smtpd_client_restrictions");
                CHECK_STR(values[1], "$mua_client_restrictions");
                CHECK_INT(conf_service_overrides(c, "qmgr", NULL, NULL), -ENOENT);
                CHECK(conf_name_known(c, "mua_client_restrictions"));
                CHECK_INT(conf_get_location(c, "myhostname", &file, &line), 1);
                CHECK_STR(file, main_path);
                CHECK_INT(line, 1);
        }

        CHECK_INT(conf_load(dir, "submission", &d, &sub), 0);
        CHECK_INT(d.n, 0);
        diag_done(&d);
        if (sub) {
                CHECK_STR(conf_service(sub), "submission");
                CHECK_STR(conf_get_str(sub, P_SMTPD_TLS_SECURITY_LEVEL), "encrypt");
                CHECK_STR(conf_get_str(sub, P_SMTPD_CLIENT_RESTRICTIONS),
                          "permit_sasl_authenticated, reject");
                /* Values in main.cf see the override. */
                CHECK_STR(conf_get_str(sub, P_SMTP_HELO_NAME), "submit.example.com");
                CHECK_STR(conf_get_raw(sub, "smtpd_tls_security_level", &src), "encrypt");
                CHECK_INT(src, CONF_SOURCE_SERVICE);
                CHECK(!conf_get_bool(sub, P_SMTPD_TLS_WRAPPERMODE));
        }
        CHECK_INT(conf_load(dir, "smtps", NULL, &smtps), 0);
        if (smtps)
                CHECK(conf_get_bool(smtps, P_SMTPD_TLS_WRAPPERMODE));

        /* A bad override breaks loading that service and the whole check,
         * but not the other services. */
        CHECK_INT(write_file(sdir, "smtps.cf", "smtpd_tls_wrappermode = sometimes\nnosuch = 1\n"),
                  0);
        c = conf_unref(c);
        CHECK_INT(conf_load(dir, NULL, &d, &c), -EINVAL);
        CHECK_INT(d.n, 2);
        if (d.n == 2) {
                _cleanup_free_ char *e0 = diag_entry_format(&d.entries[0]);
                _cleanup_free_ char *e1 = diag_entry_format(&d.entries[1]);
                _cleanup_free_ char *w0 = strdup_printf(
                        "%s/smtps.cf:2: warning: unknown parameter: nosuch", sdir);
                _cleanup_free_ char *w1 = strdup_printf(
                        "%s/smtps.cf:1: error: smtpd_tls_wrappermode = sometimes: expected a "
                        "boolean (yes or no)",
                        sdir);
                /* In line order. */
                CHECK_STR(e0, w1);
                CHECK_STR(e1, w0);
        }
        diag_done(&d);
        sub = conf_unref(sub);
        CHECK_INT(conf_load(dir, "submission", &d, &sub), 0);
        CHECK_INT(d.n, 0);
        diag_done(&d);
        smtps = conf_unref(smtps);
        CHECK_INT(conf_load(dir, "smtps", &d, &smtps), -EINVAL);
        CHECK(smtps == NULL);
        diag_done(&d);

        /* POSTERN_CONFIG_DIR selects the directory. */
        CHECK_INT(setenv("POSTERN_CONFIG_DIR", dir, 1), 0);
        CHECK_STR(conf_default_dir(), dir);
        sub = conf_unref(sub);
        CHECK_INT(conf_load(NULL, "submission", NULL, &sub), 0);
        if (sub)
                CHECK_STR(conf_dir(sub), dir);
        CHECK_INT(unsetenv("POSTERN_CONFIG_DIR"), 0);
        CHECK_STR(conf_default_dir(), POSTERN_CONFIG_DIR);

        /* A NUL byte is an error with its line. */
        {
                _cleanup_free_ char *p = path_join(dir, "main.cf");
                int fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
                CHECK(fd >= 0);
                if (fd >= 0) {
                        CHECK_INT(write(fd, "a = b\nc = d\0e\n", 14), 14);
                        close(fd);
                }
        }
        c = conf_unref(c);
        CHECK_INT(conf_load(dir, NULL, &d, &c), -EINVAL);
        CHECK_INT(d.n_errors, 1);
        if (d.n > 0)
                CHECK_INT(d.entries[0].line, 2);
        diag_done(&d);

        {
                _cleanup_free_ char *cmd = strdup_printf("rm -rf '%s'", dir);
                CHECK_INT(system(cmd), 0);
        }
}

/* Parameters postern does not implement draw one warning each, at the line
 * that sets them, when their value means something other than the default;
 * implemented and readonly parameters draw none. */
static void test_unimplemented(void) {
        const char *tmpdir = getenv("TMPDIR");
        _cleanup_free_ char *r = NULL, *tmpl = NULL, *sdir = NULL, *w = NULL;
        _cleanup_(conf_unrefp) Config *c = NULL;
        Diag d = {0};
        char *dir;

        r = load_report("myhostname = mail.example.com\n"
                        "nested_header_checks = hash:/etc/postern/nested\n"
                        "smtpd_policy_service_retry_delay = $smtpd_timeout\n"
                        "smtpd_tls_eecdh_grade = strong\n"
                        "smtpd_policy_service_try_limit = 1000\n"
                        "nested_header_checks = hash:/etc/postern/nested2\n",
                        "main.cf");
        CHECK(startswith(r, "main.cf:3: warning: smtpd_policy_service_retry_delay is not "
                            "implemented by postern; the setting has no effect\n"
                            "main.cf:4: warning: smtpd_tls_eecdh_grade is not implemented by "
                            "postern; the setting has no effect\n"
                            "main.cf:5: warning: smtpd_policy_service_try_limit is not "
                            "implemented by postern; the setting has no effect\n"
                            "main.cf:6: warning: overriding earlier entry at line 2: "
                            "nested_header_checks = hash:/etc/postern/nested\n"
                            "main.cf:6: warning: nested_header_checks is not implemented by "
                            "postern; the setting has no effect\n"
                            "result: loaded\n"));
        if (!startswith(r, "main.cf:3:"))
                fprintf(stderr, "%s", r);
        free(r);
        r = NULL;

        /* The default, however spelled: no warning. */
        r = load_report("canonical_maps =\n"
                        "smtpd_policy_service_retry_delay = 1\n"
                        "smtpd_policy_service_try_limit = 2\n"
                        "in_flow_delay = 1\n"
                        "default_destination_rate_delay = 0m\n"
                        "body_checks_size_limit = 50k\n"
                        "smtpd_tls_ask_ccert = false\n"
                        "smtpd_tls_eecdh_grade = AUTO\n"
                        "mime_header_checks = $header_checks\n"
                        "propagate_unmatched_extensions = canonical,virtual\n"
                        "smtpd_forbid_bare_newline_exclusions = $mynetworks\n",
                        "main.cf");
        CHECK(startswith(r, "result: loaded\n"));
        if (!startswith(r, "result: loaded\n"))
                fprintf(stderr, "%s", r);
        free(r);
        r = NULL;

        /* Implemented and readonly parameters: no warning, also not for an
         * unimplemented default that follows them. */
        r = load_report("smtpd_banner = $myhostname hello\n"
                        "header_checks = regexp:/etc/postern/header_checks\n"
                        "body_checks = regexp:/etc/postern/body_checks\n"
                        "smtpd_recipient_limit = 10\n"
                        "biff = yes\n"
                        "smtpd_sasl_local_domain = example.com\n"
                        "syslog_name = postfix/submission\n",
                        "main.cf");
        CHECK(startswith(r, "result: loaded\n"));
        if (!startswith(r, "result: loaded\n"))
                fprintf(stderr, "%s", r);

        /* A services.d override: the services that read it warn at its
         * line, once; the check of main.cf reports it too. */
        tmpl = strdup_printf("%s/test-conf-XXXXXX", isempty(tmpdir) ? "/tmp" : tmpdir);
        dir = tmpl ? mkdtemp(tmpl) : NULL;
        CHECK(dir != NULL);
        if (!dir)
                return;
        sdir = path_join(dir, "services.d");
        CHECK_INT(write_file(dir, "main.cf", "myhostname = mail.example.com\n"), 0);
        CHECK_INT(mkdir(sdir, 0755), 0);
        CHECK_INT(write_file(sdir, "submission.cf",
                             "smtpd_tls_security_level = may\n"
                             "smtpd_forbid_bare_newline_exclusions = 192.0.2.0/24\n"),
                  0);
        w = strdup_printf("%s/submission.cf:2: warning: smtpd_forbid_bare_newline_exclusions is "
                          "not implemented by postern; the setting has no effect",
                          sdir);
        for (size_t i = 0; i < 2; i++) {
                /* The submission service, and the whole configuration. */
                CHECK_INT(conf_load(dir, i == 0 ? "submission" : NULL, &d, &c), 0);
                CHECK_INT(d.n, 1);
                if (d.n == 1) {
                        _cleanup_free_ char *e = diag_entry_format(&d.entries[0]);
                        CHECK_STR(e, w);
                }
                diag_done(&d);
                c = conf_unref(c);
        }
        CHECK_INT(conf_load(dir, "smtpd", &d, &c), 0);
        CHECK_INT(d.n, 0);
        diag_done(&d);
        c = conf_unref(c);

        {
                _cleanup_free_ char *cmd = strdup_printf("rm -rf '%s'", dir);
                CHECK_INT(system(cmd), 0);
        }
}

TEST_MAIN(test_golden, test_table, test_parsers, test_check_value, test_enum_and_raw,
          test_computed, test_limits, test_directory, test_unimplemented)
