/* test-addr-class.c: address classes, the rewriting of routing operators
 * below local domains, and recipient validation (addr-class.c). */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr-class.h"
#include "macro.h"
#include "tests.h"

static const char *const main_cf =
        "myhostname = mx.example.test\n"
        "mydomain = example.test\n"
        "mydestination = $myhostname, example.test\n"
        "inet_interfaces = 192.0.2.1\n"
        "relay_domains = relay.example.test, inline:{ tab.example=1 }\n"
        "virtual_alias_domains = valias.example.test\n"
        "virtual_alias_maps = inline:{ info@valias.example.test=alice, @catch.example.test=x }\n"
        "virtual_mailbox_domains = vmbox.example.test\n"
        "virtual_mailbox_maps = inline:{ bob@vmbox.example.test=bob/ }\n"
        "local_recipient_maps = inline:{ alice=1 }\n"
        "recipient_delimiter = +\n";

static AddrClassifier *classifier(const char *extra) {
        char *text = NULL;
        Config *c = NULL;
        AddrClassifier *a = NULL;
        CHECK(asprintf(&text, "%s%s", main_cf, extra) > 0);
        CHECK_INT(conf_load_string(text, "main.cf", NULL, &c), 0);
        CHECK_INT(addr_classifier_new(c, NULL, &a), 0);
        conf_unref(c);
        free(text);
        return a;
}

static void check_resolve(AddrClassifier *a, const char *in, const char *out, AddrClass k,
                          bool routed) {
        AddrResolved r = {0};
        CHECK_INT(addr_resolve(a, in, &r), 0);
        CHECK_STR(r.address, out);
        CHECK_INT(r.klass, k);
        CHECK_INT(r.routed, routed);
        addr_resolved_done(&r);
}

static void test_classes(void) {
        AddrClassifier *a = classifier("");
        check_resolve(a, "alice@example.test", "alice@example.test", ADDR_CLASS_LOCAL, false);
        check_resolve(a, "alice@MX.Example.Test.", "alice@mx.example.test", ADDR_CLASS_LOCAL, false);
        check_resolve(a, "alice@[192.0.2.1]", "alice@[192.0.2.1]", ADDR_CLASS_LOCAL, false);
        check_resolve(a, "alice@[192.0.2.2]", "alice@[192.0.2.2]", ADDR_CLASS_DEFAULT, false);
        check_resolve(a, "x@valias.example.test", "x@valias.example.test",
                      ADDR_CLASS_VIRTUAL_ALIAS, false);
        check_resolve(a, "x@vmbox.example.test", "x@vmbox.example.test",
                      ADDR_CLASS_VIRTUAL_MAILBOX, false);
        check_resolve(a, "x@sub.relay.example.test", "x@sub.relay.example.test", ADDR_CLASS_RELAY,
                      false);
        check_resolve(a, "x@a.tab.example", "x@a.tab.example", ADDR_CLASS_RELAY, false);
        check_resolve(a, "x@elsewhere.example", "x@elsewhere.example", ADDR_CLASS_DEFAULT, false);
        check_resolve(a, "postmaster", "postmaster@mx.example.test", ADDR_CLASS_LOCAL, false);
        addr_classifier_free(a);
}

static void test_routing(void) {
        AddrClassifier *a = classifier("");
        check_resolve(a, "user%remote.example@example.test", "user@remote.example",
                      ADDR_CLASS_DEFAULT, false);
        check_resolve(a, "remote.example!user@example.test", "user@remote.example",
                      ADDR_CLASS_DEFAULT, false);
        check_resolve(a, "\"user@remote.example\"@example.test", "user@remote.example",
                      ADDR_CLASS_DEFAULT, false);
        check_resolve(a, "a%b%remote.example@example.test", "a%b@remote.example",
                      ADDR_CLASS_DEFAULT, true);
        check_resolve(a, "user%remote.example@relay.example.test",
                      "user%remote.example@relay.example.test", ADDR_CLASS_RELAY, true);
        addr_classifier_free(a);

        a = classifier("allow_percent_hack = no\nswap_bangpath = no\n");
        check_resolve(a, "user%remote.example@example.test", "user%remote.example@example.test",
                      ADDR_CLASS_LOCAL, false);
        check_resolve(a, "remote!user@example.test", "remote!user@example.test", ADDR_CLASS_LOCAL,
                      false);
        addr_classifier_free(a);
}

static int listed(AddrClassifier *a, const char *addr, const char **table) {
        AddrResolved r = {0};
        int code = 0, ret;
        *table = NULL;
        CHECK_INT(addr_resolve(a, addr, &r), 0);
        ret = addr_recipient_listed(a, &r, table, &code);
        if (ret == 0)
                CHECK_INT(code, 550);
        addr_resolved_done(&r);
        return ret;
}

static void test_listed(void) {
        AddrClassifier *a = classifier("");
        const char *t;
        CHECK(listed(a, "alice@example.test", &t) > 0);
        CHECK(listed(a, "alice+ext@example.test", &t) > 0);
        CHECK_INT(listed(a, "bob@example.test", &t), 0);
        CHECK_STR(t, "local recipient");
        CHECK(listed(a, "info@valias.example.test", &t) > 0);
        CHECK_INT(listed(a, "x@valias.example.test", &t), 0);
        CHECK_STR(t, "virtual alias");
        CHECK(listed(a, "bob@vmbox.example.test", &t) > 0);
        CHECK_INT(listed(a, "x@vmbox.example.test", &t), 0);
        CHECK_STR(t, "virtual mailbox");
        CHECK(listed(a, "x@catch.example.test", &t) > 0);
        CHECK(listed(a, "x@relay.example.test", &t) > 0);
        CHECK(listed(a, "x@elsewhere.example", &t) > 0);
        addr_classifier_free(a);

        /* A table that cannot be read fails the lookup: never "unknown". */
        a = classifier("local_recipient_maps = hash:/nonexistent/table\n");
        CHECK(listed(a, "alice@example.test", &t) < 0);
        addr_classifier_free(a);
}

TEST_MAIN(test_classes, test_routing, test_listed)
