/* fuzz-smtpd-proto.c: libFuzzer target for the SMTP protocol parser. The
 * first byte selects what the rest is: command lines (framed by
 * smtp_line_find() and parsed as MAIL, RCPT, BDAT and verbs), a DATA body or
 * a BDAT body fed in pieces of varying size through the decoder and the
 * header/body splitter. Checks that the decoder consumes consistently and
 * never ends a message without CR LF "." CR LF. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd-proto.h"

static int on_header(void *u, const char *raw, size_t len, const char *unfolded, bool truncated) {
        assert(strlen(unfolded) <= len);
        return 0;
}
static int on_eoh(void *u) {
        return 0;
}
static int on_body(void *u, const char *text, size_t len, bool first, bool eol) {
        assert(!memchr(text, '\n', len));
        return 0;
}
static const SmtpContentOps ops = {on_header, on_eoh, on_body};

static void fuzz_commands(const char *data, size_t size) {
        size_t pos = 0;
        while (pos < size) {
                size_t len, consumed;
                bool bare;
                int r = smtp_line_find(data + pos, size - pos, 2048, &len, &consumed, &bare);
                if (r <= 0)
                        break;
                char *line = strndup(data + pos, len);
                const char *args, *reply;
                SmtpVerb v = smtp_verb_parse(line, &args);
                SmtpMailArgs m = {0};
                SmtpRcptArgs rc = {0};
                uint64_t n;
                bool last;
                if (v == SMTP_VERB_MAIL && smtp_mail_parse(args, SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_DSN, &m, &reply) == 0)
                        smtp_mail_args_done(&m);
                if (v == SMTP_VERB_RCPT && smtp_rcpt_parse(args, SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_DSN | SMTP_PARSE_UTF8_SESSION, &rc, &reply) == 0)
                        smtp_rcpt_args_done(&rc);
                if (v == SMTP_VERB_BDAT)
                        (void) smtp_bdat_parse(args, &n, &last, &reply);
                free(line);
                pos += consumed;
        }
}

static void fuzz_data(const char *data, size_t size, bool bdat, uint8_t step_seed) {
        SmtpDataDecoder d;
        SmtpContent c;
        StrBuf out = {0};
        size_t pos = 0, step = (step_seed % 17) + 1;

        smtp_data_decoder_init(&d, bdat);
        smtp_content_init(&c, &ops, NULL, 300, 100);
        while (pos < size && d.state != SMTP_DATA_END) {
                size_t n = step < size - pos ? step : size - pos;
                strbuf_clear(&out);
                int k = smtp_data_decode(&d, data + pos, n, &out);
                assert(k >= 0 && (size_t) k <= n);
                assert(d.state == SMTP_DATA_END || (size_t) k == n);
                pos += (size_t) k;
                (void) smtp_content_feed(&c, out.data, out.len);
                step = step * 3 % 29 + 1;
        }
        if (d.state == SMTP_DATA_END) {
                /* The only way to end: the last five bytes were CR LF . CR LF,
                 * or the body was just ". CR LF". */
                assert(!bdat);
                assert(pos >= 3 && memcmp(data + pos - 3, ".\r\n", 3) == 0);
                assert(pos == 3 || (pos >= 5 && memcmp(data + pos - 5, "\r\n.\r\n", 5) == 0));
        }
        if (bdat) {
                strbuf_clear(&out);
                (void) smtp_data_decoder_finish(&d, &out);
                (void) smtp_content_feed(&c, out.data, out.len);
        }
        (void) smtp_content_finish(&c);
        smtp_content_done(&c);
        strbuf_done(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 2)
                return 0;
        switch (data[0] % 3) {
        case 0:
                fuzz_commands((const char *) data + 2, size - 2);
                break;
        case 1:
                fuzz_data((const char *) data + 2, size - 2, false, data[1]);
                break;
        default:
                fuzz_data((const char *) data + 2, size - 2, true, data[1]);
                break;
        }
        return 0;
}
