/* dns.c: c-ares on sd-event. The channel tells us through its socket state
 * callback which sockets to watch for reading and writing; each becomes an
 * sd-event I/O source, and one timer source follows ares_timeout(). Queries
 * are built with ares_create_query() (so that the AD bit can be set in the
 * header for DNSSEC) and sent with ares_send(); answers come back raw, the
 * rcode and AD bit are read from the header here, and the records are
 * parsed with the ares_parse_*_reply() functions, TLSA by our own reader,
 * into DnsRecords. A
 * cancelled query stays known to c-ares (it cannot drop one query) and is
 * freed silently when its answer arrives. Entry points: dns_resolver_new(),
 * dns_query(), dns_query_cancel(), dns_reverse_name(), and the hosts file
 * readers dns_hosts_name() and dns_hosts_addrs(). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <ares.h>

#include "dns.h"
#include "macro.h"
#include "strutil.h"

/* RFC 1035 3.2.4; arpa/nameser.h would bring a clashing MIN/MAX. */
#define DNS_CLASS_IN 1
/* RFC 1035 4.1.1: the header; the AD bit is RFC 4035 3.2.3. */
#define DNS_HEADER_SIZE 12
#define DNS_FLAG_AD 0x20            /* in the fourth header byte */
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_NXDOMAIN 3

typedef struct DnsSocket {
        struct DnsSocket *next;
        int fd;
        sd_event_source *source;
} DnsSocket;

struct DnsResolver {
        sd_event *event;
        ares_channel channel;
        bool channel_ok;
        sd_event_source *timer;
        DnsSocket *sockets;
        unsigned n_pending;
        bool destroying;
        bool dnssec;
};

struct DnsQuery {
        DnsResolver *resolver;
        char *name;
        DnsType type;
        DnsCallback cb;
        void *userdata;
        bool cancelled;
};

static void resolver_schedule(DnsResolver *r);

const char *dns_type_to_string(DnsType t) {
        switch (t) {
        case DNS_TYPE_A:
                return "A";
        case DNS_TYPE_AAAA:
                return "AAAA";
        case DNS_TYPE_MX:
                return "MX";
        case DNS_TYPE_TXT:
                return "TXT";
        case DNS_TYPE_PTR:
                return "PTR";
        case DNS_TYPE_TLSA:
                return "TLSA";
        }
        return "?";
}

static int on_socket_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        DnsResolver *r = userdata;
        ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

        if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP))
                rfd = fd;
        if (revents & EPOLLOUT)
                wfd = fd;
        ares_process_fd(r->channel, rfd, wfd);
        resolver_schedule(r);
        return 0;
}

static int on_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        DnsResolver *r = userdata;
        ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        resolver_schedule(r);
        return 0;
}

/* Re-arms the timer for c-ares' next deadline (retransmission, timeout). */
static void resolver_schedule(DnsResolver *r) {
        struct timeval tv, *t;

        if (r->destroying)
                return;
        if (r->n_pending == 0) {
                (void) sd_event_source_set_enabled(r->timer, SD_EVENT_OFF);
                return;
        }
        t = ares_timeout(r->channel, NULL, &tv);
        if (!t) {
                (void) sd_event_source_set_enabled(r->timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time_relative(r->timer,
                                                 (uint64_t) t->tv_sec * 1000000ULL +
                                                         (uint64_t) t->tv_usec + 1);
        (void) sd_event_source_set_enabled(r->timer, SD_EVENT_ONESHOT);
}

static void on_socket_state(void *data, ares_socket_t fd, int readable, int writable) {
        DnsResolver *r = data;
        DnsSocket **pp, *s;
        uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);

        for (pp = &r->sockets; *pp && (*pp)->fd != fd; pp = &(*pp)->next)
                ;
        s = *pp;
        if (events == 0) {
                if (s) {
                        *pp = s->next;
                        sd_event_source_disable_unref(s->source);
                        free(s);
                }
                return;
        }
        if (s) {
                (void) sd_event_source_set_io_events(s->source, events);
                return;
        }
        if (r->destroying)
                return;
        s = calloc(1, sizeof(*s));
        if (!s)
                return;         /* the query times out: c-ares gets no event */
        s->fd = fd;
        if (sd_event_add_io(r->event, &s->source, fd, events, on_socket_io, r) < 0) {
                free(s);
                return;
        }
        s->next = r->sockets;
        r->sockets = s;
}

static int on_socket_configure(ares_socket_t fd, int type, void *data) {
        /* c-ares leaves close-on-exec to us. */
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return -1;
        return 0;
}

int dns_resolver_new(sd_event *event, const char *servers, unsigned timeout_ms, unsigned tries,
                     DnsResolver **ret) {
        static bool library_ready;
        struct ares_options opts = {0};
        int optmask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS;
        DnsResolver *r;
        int s;

        if (!library_ready) {
                if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
                        return -EIO;
                library_ready = true;
        }
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->event = sd_event_ref(event);

        opts.sock_state_cb = on_socket_state;
        opts.sock_state_cb_data = r;
        /* No search list: mail domains are absolute. */
        opts.flags = ARES_FLAG_NOSEARCH;
        if (timeout_ms > 0) {
                opts.timeout = (int) timeout_ms;
                optmask |= ARES_OPT_TIMEOUTMS;
        }
        if (tries > 0) {
                opts.tries = (int) tries;
                optmask |= ARES_OPT_TRIES;
        }
        s = ares_init_options(&r->channel, &opts, optmask);
        if (s != ARES_SUCCESS) {
                dns_resolver_free(r);
                return s == ARES_ENOMEM ? -ENOMEM : -EIO;
        }
        r->channel_ok = true;
        ares_set_socket_configure_callback(r->channel, on_socket_configure, r);
        if (!isempty(servers)) {
                s = ares_set_servers_ports_csv(r->channel, servers);
                if (s != ARES_SUCCESS) {
                        dns_resolver_free(r);
                        return s == ARES_ENOMEM ? -ENOMEM : -EINVAL;
                }
        }
        s = sd_event_add_time_relative(event, &r->timer, CLOCK_MONOTONIC, 1000000, 0, on_timer, r);
        if (s < 0) {
                dns_resolver_free(r);
                return s;
        }
        (void) sd_event_source_set_enabled(r->timer, SD_EVENT_OFF);
        *ret = r;
        return 0;
}

DnsResolver *dns_resolver_free(DnsResolver *r) {
        if (!r)
                return NULL;
        r->destroying = true;
        /* Calls every outstanding callback with ARES_EDESTRUCTION: the queries
         * free themselves without calling their owners. */
        if (r->channel_ok)
                ares_destroy(r->channel);
        while (r->sockets) {
                DnsSocket *s = r->sockets;
                r->sockets = s->next;
                sd_event_source_disable_unref(s->source);
                free(s);
        }
        sd_event_source_disable_unref(r->timer);
        sd_event_unref(r->event);
        free(r);
        return NULL;
}

void dns_resolver_set_dnssec(DnsResolver *r, bool on) {
        r->dnssec = on;
}

unsigned dns_resolver_pending(const DnsResolver *r) {
        return r->n_pending;
}

void dns_answer_done(DnsAnswer *a) {
        for (size_t i = 0; i < a->n_records; i++) {
                free(a->records[i].name);
                free(a->records[i].text);
                free(a->records[i].data);
        }
        free(a->records);
        a->records = NULL;
        a->n_records = 0;
}

static DnsRecord *answer_add(DnsAnswer *a) {
        DnsRecord *n = reallocarray(a->records, a->n_records + 1, sizeof(DnsRecord));
        if (!n)
                return NULL;
        a->records = n;
        n = &a->records[a->n_records++];
        *n = (DnsRecord) {.type = a->type};
        return n;
}

static int parse_addresses(DnsAnswer *a, const unsigned char *buf, int len) {
        int n = 64, s;

        if (a->type == DNS_TYPE_A) {
                struct ares_addrttl ttls[64];
                s = ares_parse_a_reply(buf, len, NULL, ttls, &n);
                if (s != ARES_SUCCESS)
                        return s;
                for (int i = 0; i < n; i++) {
                        DnsRecord *rec = answer_add(a);
                        if (!rec)
                                return ARES_ENOMEM;
                        rec->addr.family = AF_INET;
                        memcpy(rec->addr.bytes, &ttls[i].ipaddr, 4);
                        rec->ttl = (uint32_t) MAX(ttls[i].ttl, 0);
                }
        } else {
                struct ares_addr6ttl ttls[64];
                s = ares_parse_aaaa_reply(buf, len, NULL, ttls, &n);
                if (s != ARES_SUCCESS)
                        return s;
                for (int i = 0; i < n; i++) {
                        DnsRecord *rec = answer_add(a);
                        if (!rec)
                                return ARES_ENOMEM;
                        rec->addr.family = AF_INET6;
                        memcpy(rec->addr.bytes, &ttls[i].ip6addr, 16);
                        rec->ttl = (uint32_t) MAX(ttls[i].ttl, 0);
                }
        }
        return ARES_SUCCESS;
}

static int parse_mx(DnsAnswer *a, const unsigned char *buf, int len) {
        struct ares_mx_reply *mx = NULL;
        int s = ares_parse_mx_reply(buf, len, &mx);
        if (s != ARES_SUCCESS)
                return s;
        for (struct ares_mx_reply *m = mx; m; m = m->next) {
                DnsRecord *rec = answer_add(a);
                if (!rec || !(rec->name = strdup(m->host))) {
                        ares_free_data(mx);
                        return ARES_ENOMEM;
                }
                rec->preference = m->priority;
        }
        ares_free_data(mx);
        return ARES_SUCCESS;
}

static int parse_txt(DnsAnswer *a, const unsigned char *buf, int len) {
        struct ares_txt_ext *txt = NULL;
        DnsRecord *rec = NULL;
        StrBuf b = {0};
        int s = ares_parse_txt_reply_ext(buf, len, &txt);
        if (s != ARES_SUCCESS)
                return s;
        /* A record of several strings comes as one entry with
         * record_start set followed by its continuations. */
        for (struct ares_txt_ext *t = txt; t; t = t->next) {
                if (t->record_start || !rec) {
                        if (rec && !(rec->text = strbuf_steal(&b)))
                                goto oom;
                        rec = answer_add(a);
                        if (!rec)
                                goto oom;
                }
                if (strbuf_append(&b, t->txt, t->length) < 0)
                        goto oom;
        }
        if (rec && !(rec->text = strbuf_steal(&b)))
                goto oom;
        ares_free_data(txt);
        return ARES_SUCCESS;
oom:
        strbuf_done(&b);
        ares_free_data(txt);
        return ARES_ENOMEM;
}

static int answer_add_name(DnsAnswer *a, const char *name) {
        DnsRecord *rec;

        for (size_t i = 0; i < a->n_records; i++)
                if (streq(a->records[i].name, name))
                        return ARES_SUCCESS;
        rec = answer_add(a);
        if (!rec || !(rec->name = strdup(name)))
                return ARES_ENOMEM;
        return ARES_SUCCESS;
}

static int parse_ptr(DnsAnswer *a, const unsigned char *buf, int len) {
        unsigned char dummy[4] = {0};
        struct hostent *h = NULL;
        /* The address only fills h_addr_list, which is not used here. */
        int s = ares_parse_ptr_reply(buf, len, dummy, sizeof(dummy), AF_INET, &h);
        if (s != ARES_SUCCESS)
                return s;
        if (h->h_name)
                s = answer_add_name(a, h->h_name);
        for (char **n = h->h_aliases; s == ARES_SUCCESS && n && *n; n++)
                s = answer_add_name(a, *n);
        ares_free_hostent(h);
        return s;
}

/* Skips a possibly compressed name at *off (RFC 1035 4.1.4). */
static int skip_name(const uint8_t *buf, size_t len, size_t *off) {
        size_t o = *off;

        for (unsigned n = 0; n < 128; n++) {
                uint8_t l;
                if (o >= len)
                        return -EBADMSG;
                l = buf[o];
                if (l == 0) {
                        *off = o + 1;
                        return 0;
                }
                if ((l & 0xc0) == 0xc0) {
                        if (o + 2 > len)
                                return -EBADMSG;
                        *off = o + 2;
                        return 0;
                }
                if (l & 0xc0)
                        return -EBADMSG;
                o += 1 + (size_t) l;
        }
        return -EBADMSG;
}

static unsigned get16(const uint8_t *p) {
        return (unsigned) p[0] << 8 | p[1];
}

/* TLSA records (RFC 6698 2.1) of the answer section; other types (a CNAME
 * the resolver followed, RRSIGs) are skipped. */
static int parse_tlsa(DnsAnswer *a, const uint8_t *buf, size_t len) {
        unsigned qd = get16(buf + 4), an = get16(buf + 6);
        size_t off = DNS_HEADER_SIZE;

        for (unsigned i = 0; i < qd; i++) {
                if (skip_name(buf, len, &off) < 0 || off + 4 > len)
                        return -EBADMSG;
                off += 4;
        }
        for (unsigned i = 0; i < an; i++) {
                unsigned type, class, rdlen;
                uint32_t ttl;
                if (skip_name(buf, len, &off) < 0 || off + 10 > len)
                        return -EBADMSG;
                type = get16(buf + off);
                class = get16(buf + off + 2);
                ttl = (uint32_t) get16(buf + off + 4) << 16 | get16(buf + off + 6);
                rdlen = get16(buf + off + 8);
                off += 10;
                if (off + rdlen > len)
                        return -EBADMSG;
                if (type == DNS_TYPE_TLSA && class == DNS_CLASS_IN) {
                        DnsRecord *rec;
                        if (rdlen < 3)
                                return -EBADMSG;
                        rec = answer_add(a);
                        if (!rec)
                                return -ENOMEM;
                        rec->ttl = ttl;
                        rec->usage = buf[off];
                        rec->selector = buf[off + 1];
                        rec->mtype = buf[off + 2];
                        rec->data_len = rdlen - 3;
                        rec->data = malloc(MAX(rec->data_len, (size_t) 1));
                        if (!rec->data)
                                return -ENOMEM;
                        memcpy(rec->data, buf + off + 3, rec->data_len);
                }
                off += rdlen;
        }
        return 0;
}

int dns_answer_parse(const uint8_t *buf, size_t len, DnsAnswer *a) {
        unsigned rcode;
        int s, ilen = (int) MIN(len, (size_t) 65535);

        if (len < DNS_HEADER_SIZE)
                return -EBADMSG;
        a->secure = buf[3] & DNS_FLAG_AD;
        rcode = buf[3] & 0x0f;
        if (rcode == DNS_RCODE_NXDOMAIN) {
                a->nxdomain = true;
                return 0;
        }
        if (rcode == DNS_RCODE_FORMERR)
                return -EBADMSG;
        if (rcode != DNS_RCODE_NOERROR)
                return -EAGAIN;         /* SERVFAIL (also "bogus"), REFUSED, ... */
        if (get16(buf + 6) == 0)
                return 0;               /* NODATA */
        switch (a->type) {
        case DNS_TYPE_A:
        case DNS_TYPE_AAAA:
                s = parse_addresses(a, buf, ilen);
                break;
        case DNS_TYPE_MX:
                s = parse_mx(a, buf, ilen);
                break;
        case DNS_TYPE_TXT:
                s = parse_txt(a, buf, ilen);
                break;
        case DNS_TYPE_PTR:
                s = parse_ptr(a, buf, ilen);
                break;
        case DNS_TYPE_TLSA: {
                int r = parse_tlsa(a, buf, len);
                if (r < 0) {
                        dns_answer_done(a);
                        return r;
                }
                return (int) MIN(a->n_records, (size_t) 1000000);
        }
        default:
                return -EINVAL;
        }
        switch (s) {
        case ARES_SUCCESS:
                return (int) MIN(a->n_records, (size_t) 1000000);
        case ARES_ENODATA:
                /* E.g. only a CNAME without the records it leads to. */
                dns_answer_done(a);
                return 0;
        case ARES_ENOMEM:
                dns_answer_done(a);
                return -ENOMEM;
        default:
                dns_answer_done(a);
                return -EBADMSG;
        }
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *buf, int len) {
        DnsQuery *q = arg;
        DnsResolver *r = q->resolver;
        DnsAnswer a = {.name = q->name, .type = q->type};
        int ret;

        r->n_pending--;
        if (q->cancelled || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
                free(q->name);
                free(q);
                return;
        }
        if (status == ARES_SUCCESS && buf && len > 0) {
                ret = dns_answer_parse(buf, (size_t) len, &a);
                /* Only an answer to a query that asked is believed. */
                if (!r->dnssec)
                        a.secure = false;
                if (ret == -EAGAIN)
                        a.error = "Server failure";
                else if (ret == -EBADMSG)
                        a.error = ares_strerror(ARES_EBADRESP);
                else if (ret < 0)
                        a.error = ares_strerror(ARES_ENOMEM);
        } else {
                switch (status) {
                case ARES_SUCCESS:
                case ARES_EBADRESP:
                case ARES_EFORMERR:
                        ret = -EBADMSG;
                        break;
                case ARES_ENOMEM:
                        ret = -ENOMEM;
                        break;
                case ARES_EBADNAME:
                        ret = -EINVAL;
                        break;
                default:
                        /* SERVFAIL, REFUSED, timeouts, connection failures. */
                        ret = -EAGAIN;
                        break;
                }
                a.error = ares_strerror(status);
        }
        q->cb(q, ret, &a, q->userdata);
        dns_answer_done(&a);
        free(q->name);
        free(q);
}

int dns_query(DnsResolver *r, const char *name, DnsType type, DnsCallback cb, void *userdata,
              DnsQuery **ret) {
        unsigned char *qbuf = NULL;
        unsigned short id;
        int qlen = 0, s;
        DnsQuery *q;
        size_t n;

        if (isempty(name) || (n = strlen(name)) > 254)
                return -EINVAL;
        if (getrandom(&id, sizeof(id), 0) != sizeof(id))
                return -errno;
        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        /* The query name is absolute either way. */
        q->name = strndup_safe(name, name[n - 1] == '.' && n > 1 ? n - 1 : n);
        if (!q->name) {
                free(q);
                return -ENOMEM;
        }
        q->resolver = r;
        q->type = type;
        q->cb = cb;
        q->userdata = userdata;
        r->n_pending++;
        if (ret)
                *ret = q;
        /* What ares_query() does, with the header in our hands: a random ID
         * (ares_send() sends the one in the buffer), recursion desired, no
         * EDNS, and with dnssec the AD bit (RFC 6840 5.7). */
        s = ares_create_query(q->name, DNS_CLASS_IN, (int) type, id, 1, &qbuf, &qlen, 0);
        if (s != ARES_SUCCESS) {
                /* Reported as an answer (a bad name), as c-ares would. */
                on_answer(q, s, 0, NULL, 0);
                return 0;
        }
        if (r->dnssec && qlen > 3)
                qbuf[3] |= DNS_FLAG_AD;
        /* May call back at once (no servers): the caller sees it as an
         * answer, which is what it expects anyway. */
        ares_send(r->channel, qbuf, qlen, on_answer, q);
        ares_free_string(qbuf);
        resolver_schedule(r);
        return 0;
}

DnsQuery *dns_query_cancel(DnsQuery *q) {
        if (q) {
                q->cancelled = true;
                q->cb = NULL;
        }
        return NULL;
}

char *dns_reverse_name(const InetAddr *a, const char *suffix) {
        StrBuf b = {0};
        int r = 0;

        if (a->family == AF_INET) {
                r = strbuf_printf(&b, "%u.%u.%u.%u.%s", a->bytes[3], a->bytes[2], a->bytes[1],
                                  a->bytes[0], suffix ? suffix : "in-addr.arpa");
        } else if (a->family == AF_INET6) {
                static const char hex[] = "0123456789abcdef";
                for (int i = 15; i >= 0 && r >= 0; i--) {
                        char nib[4] = {hex[a->bytes[i] & 0xf], '.', hex[a->bytes[i] >> 4], '.'};
                        r = strbuf_append(&b, nib, 4);
                }
                if (r >= 0)
                        r = strbuf_puts(&b, suffix ? suffix : "ip6.arpa");
        } else
                return NULL;
        if (r < 0) {
                strbuf_done(&b);
                return NULL;
        }
        return strbuf_steal(&b);
}

/* ---- the hosts file ---- */

#define HOSTS_PATH "/etc/hosts"

/* Calls fn for each line of the hosts file with its address and its names
 * (NULL-terminated, pointing into the line); fn returns non-zero to stop,
 * which is returned. Lines without a valid address are skipped. A missing
 * or unreadable file is an empty one. */
static int hosts_foreach(const char *path,
                         int (*fn)(const InetAddr *a, char **names, void *userdata),
                         void *userdata) {
        _cleanup_fclose_ FILE *f = fopen(path ? path : HOSTS_PATH, "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        int r = 0;

        if (!f)
                return 0;
        while (r == 0 && getline(&line, &size, f) >= 0) {
                char *names[64], *tok, *save = NULL, *hash = strchr(line, '#');
                size_t n = 0;
                InetAddr a;

                if (hash)
                        *hash = 0;
                tok = strtok_r(line, " \t\r\n", &save);
                if (!tok || inet_addr_parse(tok, &a) < 0)
                        continue;
                while (n < ELEMENTSOF(names) - 1 && (tok = strtok_r(NULL, " \t\r\n", &save)))
                        names[n++] = tok;
                names[n] = NULL;
                if (n > 0)
                        r = fn(&a, names, userdata);
        }
        return r;
}

static bool addr_equal(const InetAddr *a, const InetAddr *b) {
        InetAddr ua, ub;
        if (inet_addr_unmap_v4(a, &ua))
                a = &ua;
        if (inet_addr_unmap_v4(b, &ub))
                b = &ub;
        return a->family == b->family &&
               memcmp(a->bytes, b->bytes, inet_family_bits(a->family) / 8) == 0;
}

typedef struct HostsName {
        const InetAddr *addr;
        char *name;
} HostsName;

static int hosts_name_fn(const InetAddr *a, char **names, void *userdata) {
        HostsName *h = userdata;
        if (!addr_equal(a, h->addr))
                return 0;
        h->name = strdup(names[0]);
        return h->name ? 1 : -ENOMEM;
}

int dns_hosts_name(const char *path, const InetAddr *a, char **ret) {
        HostsName h = {.addr = a};
        int r = hosts_foreach(path, hosts_name_fn, &h);
        if (r <= 0)
                return r;
        *ret = h.name;
        return 1;
}

typedef struct HostsAddrs {
        const char *name;
        size_t len;
        int family;
        InetAddr *addrs;
        size_t n;
} HostsAddrs;

static int hosts_addrs_fn(const InetAddr *a, char **names, void *userdata) {
        HostsAddrs *h = userdata;
        InetAddr u;

        if (inet_addr_unmap_v4(a, &u))
                a = &u;
        if (a->family != h->family)
                return 0;
        for (char **n = names; *n; n++) {
                size_t len = strlen(*n);
                if (len > 1 && (*n)[len - 1] == '.')
                        len--;
                if (len == h->len && strncasecmp(*n, h->name, len) == 0) {
                        InetAddr *m = reallocarray(h->addrs, h->n + 1, sizeof(InetAddr));
                        if (!m)
                                return -ENOMEM;
                        h->addrs = m;
                        h->addrs[h->n++] = *a;
                        break;
                }
        }
        return 0;
}

int dns_hosts_addrs(const char *path, const char *name, int family, InetAddr **ret) {
        HostsAddrs h = {.name = name, .len = strlen(name), .family = family};
        int r;

        if (h.len > 1 && name[h.len - 1] == '.')
                h.len--;
        r = hosts_foreach(path, hosts_addrs_fn, &h);
        if (r < 0) {
                free(h.addrs);
                return r;
        }
        *ret = h.addrs;
        return (int) MIN(h.n, (size_t) 1000000);
}
