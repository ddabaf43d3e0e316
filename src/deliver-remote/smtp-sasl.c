/* smtp-sasl.c: the protocol pieces of the SMTP client's AUTH (RFC 4954):
 * the announced mechanisms, the filter and security options, the
 * credentials and the PLAIN and LOGIN encodings. The conversation itself
 * is in smtp-client.c. See smtp-sasl.h. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "smtp-sasl.h"
#include "strutil.h"

int smtp_sasl_options_parse(char * const *words, unsigned *ret, const char **ret_bad) {
        static const struct {
                const char *name;
                unsigned flag;
        } table[] = {
                {"noplaintext", SMTP_SASL_NOPLAINTEXT},
                {"noactive", SMTP_SASL_NOACTIVE},
                {"nodictionary", SMTP_SASL_NODICTIONARY},
                {"noanonymous", SMTP_SASL_NOANONYMOUS},
                {"mutual_auth", SMTP_SASL_MUTUAL_AUTH},
        };
        unsigned flags = 0;

        STRV_FOREACH(w, words) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(table); i++)
                        if (strcaseeq(*w, table[i].name))
                                break;
                if (i == ELEMENTSOF(table)) {
                        if (ret_bad)
                                *ret_bad = *w;
                        return -EINVAL;
                }
                flags |= table[i].flag;
        }
        *ret = flags;
        return 0;
}

int smtp_sasl_offered(const SmtpReply *r, char **ret) {
        StrBuf b = {0};
        bool found = false;

        /* The first line is the greeting, the keywords follow. */
        for (size_t i = 1; i < r->n_lines; i++) {
                const char *l = r->lines[i];
                if (strncasecmp(l, "AUTH", 4) != 0 || (l[4] != ' ' && l[4] != '=' && l[4] != 0))
                        continue;
                found = true;
                for (const char *p = l + 4 + (l[4] != 0); *p;) {
                        size_t n;
                        p += strspn(p, " \t");
                        n = strcspn(p, " \t");
                        if (n == 0)
                                break;
                        if ((b.len > 0 && strbuf_puts(&b, " ") < 0) || strbuf_append(&b, p, n) < 0) {
                                strbuf_done(&b);
                                return -ENOMEM;
                        }
                        p += n;
                }
        }
        if (!found)
                return 0;
        *ret = b.data ? b.data : strdup("");
        return *ret ? 1 : -ENOMEM;
}

/* Whether the filter lets mech through (the first matching item decides). */
static bool filter_match(const char *mech, size_t n, char * const *filter) {
        STRV_FOREACH(f, filter) {
                const char *name = *f;
                bool neg = name[0] == '!';
                if (neg)
                        name++;
                if (strlen(name) == n && strncasecmp(name, mech, n) == 0)
                        return !neg;
        }
        return false;
}

char *smtp_sasl_filter(const char *offered, char * const *filter) {
        StrBuf b = {0};
        const char *p = offered;

        if (!filter || !filter[0])
                return strdup(offered);
        while (*p) {
                size_t n;
                p += strspn(p, " ");
                n = strcspn(p, " ");
                if (n == 0)
                        break;
                if (filter_match(p, n, filter) &&
                    ((b.len > 0 && strbuf_puts(&b, " ") < 0) || strbuf_append(&b, p, n) < 0)) {
                        strbuf_done(&b);
                        return NULL;
                }
                p += n;
        }
        return b.data ? b.data : strdup("");
}

static bool offers(const char *mechs, const char *name) {
        size_t len = strlen(name);

        for (const char *p = mechs; *p;) {
                size_t n;
                p += strspn(p, " ");
                n = strcspn(p, " ");
                if (n == len && strncasecmp(p, name, n) == 0)
                        return true;
                p += n;
        }
        return false;
}

SmtpSaslMech smtp_sasl_choose(const char *mechs, unsigned options) {
        /* PLAIN and LOGIN send the password as it is: open to eavesdropping,
         * active attacks and dictionary attacks, without mutual
         * authentication. Anonymous they are not. */
        if (options & (SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOACTIVE | SMTP_SASL_NODICTIONARY |
                       SMTP_SASL_MUTUAL_AUTH))
                return SMTP_SASL_MECH_NONE;
        if (offers(mechs, "PLAIN"))
                return SMTP_SASL_MECH_PLAIN;
        if (offers(mechs, "LOGIN"))
                return SMTP_SASL_MECH_LOGIN;
        return SMTP_SASL_MECH_NONE;
}

const char *smtp_sasl_mech_name(SmtpSaslMech m) {
        switch (m) {
        case SMTP_SASL_MECH_PLAIN:
                return "PLAIN";
        case SMTP_SASL_MECH_LOGIN:
                return "LOGIN";
        case SMTP_SASL_MECH_NONE:
                break;
        }
        return "none";
}

int smtp_sasl_credentials(const char *value, char **ret_user, char **ret_pass) {
        const char *colon = strchr(value, ':');
        char *user, *pass;

        user = colon ? strndup(value, (size_t) (colon - value)) : strdup(value);
        pass = strdup(colon ? colon + 1 : "");
        if (!user || !pass) {
                free(user);
                smtp_sasl_free_secret(pass);
                return -ENOMEM;
        }
        *ret_user = user;
        *ret_pass = pass;
        return 0;
}

char *smtp_sasl_base64(const void *data, size_t n) {
        static const char alphabet[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *p = data;
        char *out, *o;

        if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
                return NULL;
        out = malloc((n + 2) / 3 * 4 + 1);
        if (!out)
                return NULL;
        o = out;
        for (size_t i = 0; i < n; i += 3) {
                unsigned v = (unsigned) p[i] << 16;
                if (i + 1 < n)
                        v |= (unsigned) p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                *o++ = alphabet[(v >> 18) & 63];
                *o++ = alphabet[(v >> 12) & 63];
                *o++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
                *o++ = i + 2 < n ? alphabet[v & 63] : '=';
        }
        *o = 0;
        return out;
}

char *smtp_sasl_plain_response(const char *user, const char *pass) {
        size_t ul = strlen(user), pl = strlen(pass), n = ul + pl + 2;
        char *buf, *out;

        buf = malloc(n);
        if (!buf)
                return NULL;
        buf[0] = 0;
        memcpy(buf + 1, user, ul);
        buf[1 + ul] = 0;
        memcpy(buf + 2 + ul, pass, pl);
        out = smtp_sasl_base64(buf, n);
        explicit_bzero(buf, n);
        free(buf);
        return out;
}

char *smtp_sasl_free_secret(char *s) {
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
        return NULL;
}
