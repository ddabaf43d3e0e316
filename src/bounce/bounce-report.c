/* bounce-report.c: RFC 3464 delivery status notifications as text. Entry
 * point bounce_report_build(): a multipart/report (report-type=
 * delivery-status) with a readable first part (the template text and one
 * line per recipient), the message/delivery-status part (RFC 3464 2.2 and
 * 2.3 fields) and the original message (message/rfc822) or only its headers
 * (text/rfc822-headers, RFC 6522) according to RET, the kind of report and
 * bounce_size_limit. Addresses with 8-bit bytes switch the report part to
 * message/global-delivery-status with the utf-8 address type (RFC 6533).
 * No I/O: the caller supplies every fact, including the times, so that
 * golden tests see exact output. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addr.h"
#include "bounce-report.h"

/* Headers of the original beyond this are cut at a line end: a queue file
 * from a local submitter has no header_size_limit in front of it. */
#define HEADERS_MAX (1024u * 1024)
/* Width of the readable part's lines. */
#define WRAP_WIDTH 76

static const char *const kind_names[_BOUNCE_KIND_MAX] = {
        [BOUNCE_KIND_FAILURE] = "failure",
        [BOUNCE_KIND_DELAY] = "delay",
        [BOUNCE_KIND_SUCCESS] = "success",
        [BOUNCE_KIND_RELAYED] = "relayed",
        [BOUNCE_KIND_EXPANDED] = "expanded",
};

static const char *const kind_actions[_BOUNCE_KIND_MAX] = {
        [BOUNCE_KIND_FAILURE] = "failed",
        [BOUNCE_KIND_DELAY] = "delayed",
        [BOUNCE_KIND_SUCCESS] = "delivered",
        [BOUNCE_KIND_RELAYED] = "relayed",
        [BOUNCE_KIND_EXPANDED] = "expanded",
};

const char *bounce_kind_to_string(BounceKind k) {
        return k >= 0 && k < _BOUNCE_KIND_MAX ? kind_names[k] : NULL;
}

int bounce_kind_from_string(const char *s) {
        for (size_t i = 0; i < _BOUNCE_KIND_MAX; i++)
                if (streq(kind_names[i], s))
                        return (int) i;
        return -EINVAL;
}

const char *bounce_kind_action(BounceKind k) {
        return k >= 0 && k < _BOUNCE_KIND_MAX ? kind_actions[k] : NULL;
}

const char *bounce_format_date(uint64_t usec, char buf[static 64]) {
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;

        if (!localtime_r(&t, &tm) || strftime(buf, 64, "%a, %-d %b %Y %H:%M:%S %z", &tm) == 0)
                strcpy(buf, "Thu, 1 Jan 1970 00:00:00 +0000");
        return buf;
}

size_t bounce_header_length(const char *content, size_t size) {
        const char *p = content, *end = content + size;

        /* The header section ends at the first empty line (RFC 5322 2.1). */
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                if (!nl)
                        return size;
                if (nl == p || (nl == p + 1 && *p == '\r'))
                        return (size_t) (nl + 1 - content);
                p = nl + 1;
        }
        return size;
}

static bool has_8bit(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] >= 0x80)
                        return true;
        return false;
}

/* Appends s as one header field value: control characters become blanks
 * (no header injection through a peer's reply), 8-bit bytes become "?"
 * unless allow_8bit, and the value is cut at max bytes. */
static int put_clean(StrBuf *b, const char *s, size_t max, bool allow_8bit) {
        size_t n = 0;
        for (; *s && n < max; s++, n++) {
                unsigned char c = (unsigned char) *s;
                char o = c < 0x20 || c == 0x7f ? ' ' : c >= 0x80 && !allow_8bit ? '?' : (char) c;
                if (strbuf_putc(b, o) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static bool is_smtp_reply(const char *s) {
        return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
               s[2] <= '9' && (s[3] == ' ' || s[3] == '-' || s[3] == '\0');
}

/* The SMTP reply inside a delivery agent's text "host H[A] said: 550 ...
 * (in reply to RCPT TO command)", as Postfix puts it into Diagnostic-Code:
 * a copy of the reply alone, or NULL when the text holds none (or no
 * memory; the caller then uses the text as it is). */
static char *smtp_reply_of(const char *s) {
        const char *said = startswith(s, "host ") ? strstr(s, " said: ") : NULL;
        const char *end, *inreply;

        if (!said || !is_smtp_reply(said + 7))
                return NULL;
        said += 7;
        end = said + strlen(said);
        inreply = strstr(said, " (in reply to ");
        if (inreply && end[-1] == ')' && !strchr(inreply + 1, '('))
                end = inreply;
        return strndup_safe(said, (size_t) (end - said));
}

static bool dsn_valid(const char *s) {
        /* RFC 3463 2: class "." subject "." detail; 1-3 digits each. */
        int n;
        if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
                return false;
        s += 2;
        for (int part = 0; part < 2; part++) {
                for (n = 0; s[n] >= '0' && s[n] <= '9'; n++)
                        ;
                if (n < 1 || n > 3)
                        return false;
                s += n;
                if (part == 0 && *s++ != '.')
                        return false;
        }
        return *s == '\0';
}

static const char *status_of(const BounceReport *r, const BounceReportRcpt *rc) {
        if (dsn_valid(rc->dsn))
                return rc->dsn;
        switch (r->kind) {
        case BOUNCE_KIND_FAILURE:
                return "5.0.0";
        case BOUNCE_KIND_DELAY:
                return "4.0.0";
        default:
                return "2.0.0";
        }
}

/* The host name of a relay "host[addr]:port", or the address when the
 * name is unknown; NULL when the relay is not a remote host ("local"). */
static char *relay_host(const char *relay) {
        const char *br = relay ? strchr(relay, '[') : NULL, *close;
        if (!br)
                return NULL;
        if (br > relay && !(br - relay == 7 && strncmp(relay, "unknown", 7) == 0))
                return strndup_safe(relay, (size_t) (br - relay));
        close = strchr(br, ']');
        if (!close || close == br + 1)
                return NULL;
        return strndup_safe(br + 1, (size_t) (close - br - 1));
}

/* Appends text wrapped at WRAP_WIDTH columns on blanks; continuation lines
 * are indented by four blanks. Words longer than a line stay whole. */
static int put_wrapped(StrBuf *b, const char *text) {
        size_t col = 0;
        const char *p = text;

        while (*p) {
                const char *w = p;
                size_t n;
                while (*w == ' ')
                        w++;
                for (n = 0; w[n] && w[n] != ' '; n++)
                        ;
                if (n == 0)
                        break;
                if (col > 0 && col + 1 + n > WRAP_WIDTH) {
                        if (strbuf_puts(b, "\n    ") < 0)
                                return -ENOMEM;
                        col = 4;
                } else if (col > 0) {
                        if (strbuf_putc(b, ' ') < 0)
                                return -ENOMEM;
                        col++;
                }
                if (strbuf_append(b, w, n) < 0)
                        return -ENOMEM;
                col += n;
                p = w + n;
        }
        return strbuf_putc(b, '\n');
}

static int put_rcpt_line(StrBuf *b, const BounceReport *r, const BounceReportRcpt *rc) {
        _cleanup_(strbuf_done) StrBuf line = {0}, diag = {0};
        _cleanup_free_ char *remote = relay_host(rc->relay);
        const char *relay = strempty(rc->relay);
        int q;

        if (put_clean(&diag, strempty(rc->diagnostic), BOUNCE_DIAGNOSTIC_MAX, false) < 0)
                return -ENOMEM;
        if (strbuf_putc(&line, '<') < 0 || put_clean(&line, rc->address, 512, true) < 0 ||
            strbuf_putc(&line, '>') < 0)
                return -ENOMEM;
        if (rc->orig && *rc->orig && !strcaseeq(rc->orig, rc->address) &&
            (strbuf_puts(&line, " (expanded from <") < 0 ||
             put_clean(&line, rc->orig, 512, true) < 0 || strbuf_puts(&line, ">)") < 0))
                return -ENOMEM;
        if (strbuf_putc(&line, ':') < 0)
                return -ENOMEM;
        if (r->kind == BOUNCE_KIND_FAILURE || r->kind == BOUNCE_KIND_DELAY) {
                if (remote && is_smtp_reply(diag.data ? diag.data : ""))
                        q = strbuf_puts(&line, " host ") < 0 ||
                            put_clean(&line, relay, 300, false) < 0 ||
                            strbuf_puts(&line, " said:") < 0;
                else
                        q = 0;
        } else
                q = !isempty(relay) && (strbuf_puts(&line, " delivery via ") < 0 ||
                                        put_clean(&line, relay, 300, false) < 0 ||
                                        strbuf_putc(&line, ':') < 0);
        if (q)
                return -ENOMEM;
        if (diag.len > 0 && (strbuf_putc(&line, ' ') < 0 || strbuf_puts(&line, diag.data) < 0))
                return -ENOMEM;
        if (diag.len == 0 && strbuf_printf(&line, " %s (%s)", bounce_kind_action(r->kind),
                                           status_of(r, rc)) < 0)
                return -ENOMEM;
        return put_wrapped(b, line.data);
}

/* "rfc822; a@b" for an address, "utf-8; ..." when it is 8-bit (RFC 6533 3). */
static int put_address_field(StrBuf *b, const char *name, const char *addr) {
        if (strbuf_printf(b, "%s: %s; ", name, addr_has_8bit(addr) ? "utf-8" : "rfc822") < 0 ||
            put_clean(b, addr, 1000, true) < 0 || strbuf_putc(b, '\n') < 0)
                return -ENOMEM;
        return 0;
}

/* Original-Recipient from ORCPT: "type;xtext" decoded (RFC 3461 4.2, RFC
 * 3464 2.3.1), or the pre-expansion address when there was no ORCPT. */
static int put_original_recipient(StrBuf *b, const BounceReportRcpt *rc) {
        if (rc->orcpt && *rc->orcpt) {
                const char *semi = strchr(rc->orcpt, ';');
                _cleanup_free_ char *type = NULL, *decoded = NULL;
                const char *value = semi ? semi + 1 : rc->orcpt;

                type = semi ? strndup_safe(rc->orcpt, (size_t) (semi - rc->orcpt))
                            : strdup("rfc822");
                if (!type)
                        return -ENOMEM;
                if (addr_xtext_decode(value, &decoded) == -ENOMEM)
                        return -ENOMEM;
                if (strbuf_puts(b, "Original-Recipient: ") < 0 ||
                    put_clean(b, type, 64, false) < 0 ||
                    strbuf_puts(b, "; ") < 0 ||
                    put_clean(b, decoded ? decoded : value, 1000, true) < 0 ||
                    strbuf_putc(b, '\n') < 0)
                        return -ENOMEM;
                return 0;
        }
        if (rc->orig && *rc->orig && !strcaseeq(rc->orig, rc->address))
                return put_address_field(b, "Original-Recipient", rc->orig);
        return 0;
}

static int put_delivery_status(StrBuf *b, const BounceReport *r) {
        char date[64];

        /* RFC 3464 2.2: per-message fields. The ENVID is xtext on the wire
         * (RFC 3461 4.4); the report carries it decoded (RFC 3464 2.2.1). */
        if (r->envid && *r->envid) {
                _cleanup_free_ char *decoded = NULL;
                if (addr_xtext_decode(r->envid, &decoded) == -ENOMEM)
                        return -ENOMEM;
                if (strbuf_puts(b, "Original-Envelope-Id: ") < 0 ||
                    put_clean(b, decoded ? decoded : r->envid, 100, false) < 0 ||
                    strbuf_putc(b, '\n') < 0)
                        return -ENOMEM;
        }
        if (strbuf_puts(b, "Reporting-MTA: dns; ") < 0 ||
            put_clean(b, r->myhostname, 255, false) < 0 ||
            strbuf_printf(b, "\nX-Postern-Queue-ID: %s\n", r->orig_queue_id) < 0)
                return -ENOMEM;
        if (*r->orig_sender && put_address_field(b, "X-Postern-Sender", r->orig_sender) < 0)
                return -ENOMEM;
        if (strbuf_printf(b, "Arrival-Date: %s\n",
                          bounce_format_date((uint64_t) r->arrival.tv_sec * 1000000 +
                                                     (uint64_t) r->arrival.tv_usec,
                                             date)) < 0)
                return -ENOMEM;

        /* RFC 3464 2.3: one group of per-recipient fields each. */
        for (size_t i = 0; i < r->n_rcpts; i++) {
                const BounceReportRcpt *rc = &r->rcpts[i];
                _cleanup_free_ char *remote = relay_host(rc->relay);
                if (strbuf_putc(b, '\n') < 0 || put_original_recipient(b, rc) < 0 ||
                    put_address_field(b, "Final-Recipient", rc->address) < 0 ||
                    strbuf_printf(b, "Action: %s\nStatus: %s\n", bounce_kind_action(r->kind),
                                  status_of(r, rc)) < 0)
                        return -ENOMEM;
                if (remote && (strbuf_puts(b, "Remote-MTA: dns; ") < 0 ||
                               put_clean(b, remote, 255, false) < 0 || strbuf_putc(b, '\n') < 0))
                        return -ENOMEM;
                _cleanup_free_ char *reply = isempty(rc->diagnostic)
                                                     ? NULL : smtp_reply_of(rc->diagnostic);
                const char *diag = reply ? reply : rc->diagnostic;
                if (!isempty(diag) &&
                    (strbuf_printf(b, "Diagnostic-Code: %s; ",
                                   is_smtp_reply(diag) ? "smtp" : "X-Postern") < 0 ||
                     put_clean(b, diag, BOUNCE_DIAGNOSTIC_MAX, false) < 0 ||
                     strbuf_putc(b, '\n') < 0))
                        return -ENOMEM;
                if (r->last_attempt_usec &&
                    strbuf_printf(b, "Last-Attempt-Date: %s\n",
                                  bounce_format_date(r->last_attempt_usec, date)) < 0)
                        return -ENOMEM;
                if (r->kind == BOUNCE_KIND_DELAY && r->retry_until_usec &&
                    strbuf_printf(b, "Will-Retry-Until: %s\n",
                                  bounce_format_date(r->retry_until_usec, date)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static const char *attachment_description(BounceKind k, bool full) {
        switch (k) {
        case BOUNCE_KIND_FAILURE:
                return full ? "Undelivered Message" : "Undelivered Message Headers";
        case BOUNCE_KIND_DELAY:
                return full ? "Delayed Message" : "Delayed Message Headers";
        default:
                return full ? "Delivered Message" : "Delivered Message Headers";
        }
}

int bounce_report_build(const BounceReport *r, StrBuf *out, BounceReportInfo *ret_info) {
        _cleanup_free_ char *boundary = NULL;
        BounceReportInfo info = {0};
        const char *attach;
        size_t attach_len, hdr_len;
        uint64_t message_size;
        bool want_full, global = false, text_8bit;
        char date[64], stamp[32];
        time_t now;
        struct tm tm;
        int q;

        if (!r || r->kind < 0 || r->kind >= _BOUNCE_KIND_MAX || !r->myhostname || !r->mail_name ||
            !queue_id_valid(r->queue_id) || !queue_id_valid(r->orig_queue_id) ||
            !r->orig_sender || !r->to || !*r->to || r->n_rcpts == 0 || !r->rcpts ||
            (!r->content && r->content_size > 0) || !r->charset || !r->from || !r->subject ||
            !r->text)
                return -EINVAL;
        for (size_t i = 0; i < r->n_rcpts; i++) {
                if (!r->rcpts[i].address || !*r->rcpts[i].address)
                        return -EINVAL;
                global |= addr_has_8bit(r->rcpts[i].address) ||
                          (r->rcpts[i].orig && addr_has_8bit(r->rcpts[i].orig));
        }
        global |= addr_has_8bit(r->orig_sender);

        /* Which part of the original goes back: RFC 3461 4.3 makes RET a
         * matter of failed DSNs; delay and success reports carry only the
         * headers (RFC 3461 6.2). Postmaster copies of bounces hold only the
         * headers; a double bounce returns the whole failed bounce. Like
         * Postfix, a message over bounce_size_limit comes back as headers
         * only rather than cut in the middle of its MIME structure. */
        want_full = r->audience == BOUNCE_AUDIENCE_DOUBLE ||
                    (r->audience == BOUNCE_AUDIENCE_SENDER && r->kind == BOUNCE_KIND_FAILURE &&
                     r->ret != QUEUE_RET_HDRS);
        hdr_len = bounce_header_length(r->content ? r->content : "", r->content_size);
        message_size = r->message_size ? r->message_size : r->content_size;
        if (want_full && ((r->size_limit > 0 && message_size > r->size_limit) ||
                          message_size > r->content_size)) {
                want_full = false;
                info.truncated = true;
        }
        attach = r->content ? r->content : "";
        if (want_full)
                attach_len = r->content_size;
        else {
                attach_len = hdr_len;
                /* text/rfc822-headers holds the header section without the
                 * empty line that ends it. */
                if (attach_len > 0 && attach[attach_len - 1] == '\n' &&
                    (attach_len == 1 || attach[attach_len - 2] == '\n'))
                        attach_len--;
                if (attach_len > HEADERS_MAX) {
                        const char *cut = memrchr(attach, '\n', HEADERS_MAX);
                        attach_len = cut ? (size_t) (cut - attach + 1) : 0;
                }
        }
        info.full_message = want_full;
        text_8bit = !strcaseeq(r->charset, "us-ascii") && has_8bit(r->text, strlen(r->text));
        info.eight_bit = has_8bit(attach, attach_len) || text_8bit || global;

        /* The boundary must not occur in the enclosed message; the queue ID
         * is random, but the original is the peer's text. */
        boundary = strdup_printf("%s.%" PRIu64 "/%s", r->queue_id, r->now_usec / 1000000,
                                 r->myhostname);
        if (!boundary)
                return -ENOMEM;
        while (memmem(attach, attach_len, boundary, strlen(boundary))) {
                char *longer = strdup_printf("%s=", boundary);
                if (!longer)
                        return -ENOMEM;
                free(boundary);
                boundary = longer;
        }

        now = (time_t) (r->now_usec / 1000000);
        if (!gmtime_r(&now, &tm) || strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm) == 0)
                strcpy(stamp, "19700101000000");
        bounce_format_date(r->now_usec, date);

        q = strbuf_printf(out, "Received: by %s (%s)\n\tid %s; %s\n", r->myhostname, r->mail_name,
                           r->queue_id, date);
        if (q >= 0)
                q = strbuf_printf(out, "Date: %s\nFrom: ", date);
        if (q >= 0)
                q = put_clean(out, r->from, 500, false);
        if (q >= 0)
                q = strbuf_puts(out, "\nSubject: ");
        if (q >= 0)
                q = put_clean(out, r->subject, 500, false);
        if (q >= 0)
                q = strbuf_puts(out, "\nTo: ");
        if (q >= 0)
                q = put_clean(out, r->to, 500, true);
        if (q >= 0)
                q = strbuf_printf(out,
                                   "\nAuto-Submitted: auto-replied\n"
                                   "MIME-Version: 1.0\n"
                                   "Content-Type: multipart/report; report-type=delivery-status;\n"
                                   "\tboundary=\"%s\"\n"
                                   "%s"
                                   "Message-Id: <%s.%s@%s>\n"
                                   "\n"
                                   "This is a MIME-encapsulated message.\n"
                                   "\n"
                                   "--%s\n"
                                   "Content-Description: Notification\n"
                                   "Content-Type: text/plain; charset=%s\n"
                                   "%s"
                                   "\n",
                                   boundary,
                                   info.eight_bit ? "Content-Transfer-Encoding: 8bit\n" : "",
                                   stamp, r->queue_id, r->myhostname, boundary, r->charset,
                                   text_8bit ? "Content-Transfer-Encoding: 8bit\n" : "");
        if (q < 0)
                return q;

        /* The readable part: the template text, then one line per recipient. */
        if (strbuf_puts(out, r->text) < 0 ||
            (*r->text && r->text[strlen(r->text) - 1] != '\n' && strbuf_putc(out, '\n') < 0))
                return -ENOMEM;
        if (strbuf_putc(out, '\n') < 0)
                return -ENOMEM;
        for (size_t i = 0; i < r->n_rcpts; i++)
                if (put_rcpt_line(out, r, &r->rcpts[i]) < 0)
                        return -ENOMEM;

        if (strbuf_printf(out,
                          "\n--%s\n"
                          "Content-Description: Delivery report\n"
                          "Content-Type: message/%sdelivery-status\n"
                          "%s"
                          "\n",
                          boundary, global ? "global-" : "",
                          global ? "Content-Transfer-Encoding: 8bit\n" : "") < 0)
                return -ENOMEM;
        q = put_delivery_status(out, r);
        if (q < 0)
                return q;

        if (strbuf_printf(out,
                          "\n--%s\n"
                          "Content-Description: %s\n"
                          "Content-Type: %s\n"
                          "%s"
                          "\n",
                          boundary, attachment_description(r->kind, want_full),
                          want_full ? "message/rfc822" : "text/rfc822-headers",
                          has_8bit(attach, attach_len) ? "Content-Transfer-Encoding: 8bit\n" : "") <
            0)
                return -ENOMEM;
        if (strbuf_append(out, attach, attach_len) < 0)
                return -ENOMEM;
        /* The line end before a boundary belongs to the boundary (RFC 2046
         * 5.1.1); add one when the enclosed text lacks its own. */
        if (attach_len > 0 && attach[attach_len - 1] != '\n' && strbuf_putc(out, '\n') < 0)
                return -ENOMEM;
        if (strbuf_printf(out, "\n--%s--\n", boundary) < 0)
                return -ENOMEM;
        if (ret_info)
                *ret_info = info;
        return 0;
}
