/* test-smtpd-proto.c: golden tests of the SMTP command syntax and the DATA
 * and BDAT decoders (testdata/proto.txt: one case per line, "KIND<TAB>INPUT
 * <TAB>EXPECTED", C escapes in INPUT and EXPECTED), plus the header/body
 * splitter, line framing and the decoder fed byte by byte. */
#include <errno.h>
#include <stdlib.h>

#include "cleanup.h"
#include "fileio.h"
#include "macro.h"
#include "smtpd-proto.h"
#include "strutil.h"
#include "tests.h"

static char *unescape(const char *s, size_t *ret_len) {
        StrBuf b = {0};
        for (; *s; s++) {
                char c = *s;
                if (c == '\\' && s[1]) {
                        s++;
                        switch (*s) {
                        case 'r': c = '\r'; break;
                        case 'n': c = '\n'; break;
                        case 't': c = '\t'; break;
                        case '\\': c = '\\'; break;
                        case 'x': {
                                char hex[3] = {s[1], s[2], 0};
                                c = (char) strtol(hex, NULL, 16);
                                s += 2;
                                break;
                        }
                        default: c = *s;
                        }
                }
                strbuf_putc(&b, c);
        }
        *ret_len = b.len;
        return b.data ? b.data : strdup("");
}

static char *escape(const char *s, size_t len) {
        StrBuf b = {0};
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '\r')
                        strbuf_puts(&b, "\\r");
                else if (c == '\n')
                        strbuf_puts(&b, "\\n");
                else if (c == '\\')
                        strbuf_puts(&b, "\\\\");
                else if (c < 32 || c >= 127)
                        strbuf_printf(&b, "\\x%02x", c);
                else
                        strbuf_putc(&b, (char) c);
        }
        return b.data ? b.data : strdup("");
}

static char *run_mail(const char *in, unsigned flags) {
        SmtpMailArgs a = {0};
        const char *reply = NULL;
        int r = smtp_mail_parse(in, flags, &a, &reply);
        char *s;
        if (r < 0)
                return strdup(reply);
        s = strdup_printf("ok sender=<%s> size=%llu body=%s utf8=%d ret=%d envid=%s", a.sender,
                          (unsigned long long) a.size, a.body_8bitmime ? "8BITMIME" : "7BIT",
                          a.smtputf8, a.ret, strempty(a.envid));
        smtp_mail_args_done(&a);
        return s;
}

static char *run_rcpt(const char *in, unsigned flags) {
        SmtpRcptArgs a = {0};
        const char *reply = NULL;
        char nbuf[32];
        int r = smtp_rcpt_parse(in, flags, &a, &reply);
        char *s;
        if (r < 0)
                return strdup(reply);
        s = strdup_printf("ok rcpt=<%s> notify=%s orcpt=%s", a.address,
                          queue_notify_to_string(a.notify, nbuf), strempty(a.orcpt));
        smtp_rcpt_args_done(&a);
        return s;
}

static char *run_bdat(const char *in) {
        uint64_t size;
        bool last;
        const char *reply = NULL;
        if (smtp_bdat_parse(in, &size, &last, &reply) < 0)
                return strdup(reply);
        return strdup_printf("ok size=%llu last=%d", (unsigned long long) size, last);
}

static char *run_data(const char *in, size_t len, bool bdat) {
        SmtpDataDecoder d;
        StrBuf out = {0};
        _cleanup_free_ char *o = NULL;
        int consumed;
        smtp_data_decoder_init(&d, bdat);
        consumed = smtp_data_decode(&d, in, len, &out);
        if (bdat)
                smtp_data_decoder_finish(&d, &out);
        o = escape(out.data ? out.data : "", out.len);
        strbuf_done(&out);
        return strdup_printf("consumed=%d end=%d bare_lf=%d out=%s", consumed,
                             d.state == SMTP_DATA_END, d.bare_lf, o);
}

/* The DATA decoder must give the same result whatever the read sizes. */
static void check_split_invariance(const char *in, size_t len) {
        SmtpDataDecoder d1, d2;
        StrBuf a = {0}, b = {0};
        size_t total1, total2 = 0;
        smtp_data_decoder_init(&d1, false);
        smtp_data_decoder_init(&d2, false);
        total1 = (size_t) smtp_data_decode(&d1, in, len, &a);
        for (size_t i = 0; i < len && d2.state != SMTP_DATA_END; i++)
                total2 += (size_t) smtp_data_decode(&d2, in + i, 1, &b);
        CHECK_INT(total1, total2);
        CHECK_INT(d1.state, d2.state);
        CHECK_INT(a.len, b.len);
        CHECK(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
        strbuf_done(&a);
        strbuf_done(&b);
}

static void test_golden(void) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len;
        char *line, *save = NULL;
        int cases = 0;

        path = path_join(getenv("TESTDATA") ? getenv("TESTDATA") : "testdata", "proto.txt");
        CHECK_INT(file_read_all(path, 1 << 20, &text, &len), 0);
        if (!text)
                return;
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *kind = line, *in, *want, *got = NULL;
                _cleanup_free_ char *input = NULL, *expected = NULL;
                size_t in_len, want_len;

                if (line[0] == '#' || !line[0])
                        continue;
                in = strchr(kind, '\t');
                want = in ? strchr(in + 1, '\t') : NULL;
                CHECK(want != NULL);
                if (!want)
                        continue;
                *in++ = 0;
                *want++ = 0;
                input = unescape(in, &in_len);
                expected = unescape(want, &want_len);
                if (streq(kind, "mail"))
                        got = run_mail(input, SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_DSN | SMTP_PARSE_8BITMIME);
                else if (streq(kind, "mail-nodsn"))
                        got = run_mail(input, SMTP_PARSE_8BITMIME);
                else if (streq(kind, "mail-strict"))
                        got = run_mail(input, SMTP_PARSE_DSN | SMTP_PARSE_8BITMIME |
                                                      SMTP_PARSE_STRICT);
                else if (streq(kind, "rcpt-nodsn"))
                        got = run_rcpt(input, 0);
                else if (streq(kind, "rcpt-strict"))
                        got = run_rcpt(input, SMTP_PARSE_DSN | SMTP_PARSE_STRICT);
                else if (streq(kind, "rcpt"))
                        got = run_rcpt(input, SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_DSN);
                else if (streq(kind, "rcpt-utf8"))
                        got = run_rcpt(input, SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_DSN |
                                                      SMTP_PARSE_UTF8_SESSION);
                else if (streq(kind, "bdat"))
                        got = run_bdat(input);
                else if (streq(kind, "data")) {
                        got = run_data(input, in_len, false);
                        check_split_invariance(input, in_len);
                } else if (streq(kind, "bdat-data"))
                        got = run_data(input, in_len, true);
                else if (streq(kind, "verb")) {
                        const char *args;
                        SmtpVerb v = smtp_verb_parse(input, &args);
                        got = strdup_printf("%s [%s] ends_group=%d", smtp_verb_name(v), args,
                                            smtp_verb_ends_group(v));
                }
                /* Decoder output is compared in its escaped form. */
                if (startswith(kind, "data") || startswith(kind, "bdat-data")) {
                        free(expected);
                        expected = strdup(want);
                }
                CHECK(got != NULL);
                CHECK_STR(got, expected);
                if (got && !streq(got, expected))
                        fprintf(stderr, "  case: %s\t%s\n", kind, in);
                free(got);
                cases++;
        }
        CHECK(cases > 50);
}

static void test_line_find(void) {
        size_t len = 0, consumed = 0;
        bool bare = false;
        CHECK_INT(smtp_line_find("NOOP\r\nQUIT\r\n", 12, 100, &len, &consumed, &bare), 1);
        CHECK_INT(len, 4);
        CHECK_INT(consumed, 6);
        CHECK(!bare);
        CHECK_INT(smtp_line_find("NOOP\nQUIT", 9, 100, &len, &consumed, &bare), 1);
        CHECK_INT(len, 4);
        CHECK_INT(consumed, 5);
        CHECK(bare);
        CHECK_INT(smtp_line_find("NOOP", 4, 100, &len, &consumed, &bare), 0);
        CHECK_INT(smtp_line_find("NOOPNOOP", 8, 4, &len, &consumed, &bare), -E2BIG);
        CHECK_INT(smtp_line_find("NOOPNOOP\r\n", 10, 4, &len, &consumed, &bare), -E2BIG);
}

/* Collects SmtpContent callbacks as text for comparison. */
static int on_header(void *u, const char *raw, size_t len, const char *unfolded, bool truncated) {
        StrBuf *b = u;
        return strbuf_printf(b, "H[%s]%s{%zu}\n", unfolded, truncated ? "T" : "", len);
}
static int on_eoh(void *u) {
        return strbuf_puts(u, "EOH\n");
}
static int on_body(void *u, const char *text, size_t len, bool first, bool eol) {
        return strbuf_printf(u, "B%s%s[%.*s]\n", first ? "f" : "", eol ? "e" : "", (int) len, text);
}
static const SmtpContentOps ops = {on_header, on_eoh, on_body};

static char *content(const char *text, size_t step, size_t header_max, size_t line_max) {
        SmtpContent c;
        StrBuf b = {0};
        size_t len = strlen(text);
        smtp_content_init(&c, &ops, &b, header_max, line_max);
        for (size_t i = 0; i < len; i += step)
                CHECK_INT(smtp_content_feed(&c, text + i, MIN(step, len - i)), 0);
        CHECK_INT(smtp_content_finish(&c), 0);
        smtp_content_done(&c);
        return b.data ? b.data : strdup("");
}

static void test_content(void) {
        static const char msg[] = "Subject: hi\nX-Long: a\n\tb\n c\nFrom: x@y\n\nbody 1\nbody 2\n";
        static const char want[] =
                "H[Subject: hi]{11}\nH[X-Long: a\tb c]{15}\nH[From: x@y]{9}\nEOH\n"
                "Bfe[body 1]\nBfe[body 2]\n";
        for (size_t step = 1; step <= sizeof(msg); step++) {
                _cleanup_free_ char *got = content(msg, step, 0, 0);
                CHECK_STR(got, want);
        }
        /* No blank line: the first non-header line ends the headers. */
        _cleanup_free_ char *a = content("Subject: x\nnot a header\nmore", 3, 0, 0);
        CHECK_STR(a, "H[Subject: x]{10}\nEOH\nBfe[not a header]\nBfe[more]\n");
        /* Headers only, no final LF. */
        _cleanup_free_ char *b = content("Subject: x", 4, 0, 0);
        CHECK_STR(b, "H[Subject: x]{10}\nEOH\n");
        /* Long body lines come in pieces. */
        _cleanup_free_ char *c = content("\n0123456789abc\nx\n", 2, 0, 5);
        CHECK_STR(c, "EOH\nBf[01234]\nB[56789]\nBe[abc]\nBfe[x]\n");
        /* A header larger than the cap is cut and flagged. */
        _cleanup_free_ char *d = content("Subject: 0123456789\n continued\n\nb\n", 4, 12, 0);
        CHECK_STR(d, "H[Subject: 012]T{12}\nEOH\nBfe[b]\n");
        /* An empty message. */
        _cleanup_free_ char *e = content("", 1, 0, 0);
        CHECK_STR(e, "EOH\n");
}

TEST_MAIN(test_golden, test_line_find, test_content)
