/* fuzz-smtp-reply.c: libFuzzer target for what a hostile SMTP or LMTP server
 * controls: the reply reader and the EHLO keyword parser, fed line by line,
 * plus the next-hop parser and the DATA encoder on the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data, *end = p + size;
        SmtpReply r = {0};
        SmtpFeatures f;
        SmtpEncoder e;
        StrBuf out = {0};
        char *s;
        Nexthop n;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t len = nl ? (size_t) (nl - p) : (size_t) (end - p);
                int k = smtp_reply_feed(&r, p, len);
                if (k > 0)
                        smtp_features_parse(&r, &f);
                if (k != 0)
                        smtp_reply_done(&r);
                p += len + 1;
        }
        smtp_reply_done(&r);

        s = strndup((const char *) data, size);
        if (s) {
                if (nexthop_parse(s, size & 1, &n) == 0)
                        nexthop_done(&n);
                free(s);
        }
        smtp_encoder_init(&e, size % 100, size & 2, true);
        (void) smtp_encoder_feed(&e, (const char *) data, size, &out);
        (void) smtp_encoder_finish(&e, &out);
        smtp_encoder_done(&e);
        strbuf_done(&out);
        return 0;
}
