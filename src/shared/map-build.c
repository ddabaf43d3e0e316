/* map-build.c: map_build() for postmap and postalias. Reads a source file
 * in postmap(1) ("key whitespace value") or aliases(5) ("name: value, ...")
 * syntax and writes NAME.db as a Berkeley DB hash or btree file the way
 * Postfix does: keys and values carry their trailing NUL byte, keys are
 * lower-cased unless folding is off, the first of duplicate keys wins with
 * a warning, and alias databases end with the "@" = "@" record and the
 * YP_LAST_MODIFIED / YP_MASTER_NAME records (stored without NUL) that
 * Sendmail and NIS clients look for.
 *
 * The table is written to NAME.db.tmp.PID beside the target (DB_CREATE |
 * DB_EXCL), closed, given the source file's owner and permissions, fsynced,
 * renamed over NAME.db and the directory fsynced: readers see the old
 * table or the new one, never a half-written one. Also here: the aliases(5)
 * line parser, a small RFC 822 tokenizer modelled on the behaviour of
 * Postfix's postalias. Incremental updates (postmap -i) are not supported. */
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "map-internal.h"
#include "strutil.h"

/* ---- aliases(5) lines ---- */

enum {
        TOK_ATOM = 256,
        TOK_QSTRING,
        TOK_COMMENT,
        TOK_DOMLIT,
};

typedef struct Tok {
        int type;               /* TOK_* or an operator character */
        char *text;             /* NULL for operators */
} Tok;

typedef struct TokList {
        Tok *t;
        size_t n;
} TokList;

static void tok_list_done(TokList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->t[i].text);
        free(l->t);
        *l = (TokList) {0};
}

/* Operators of RFC 822 plus the ones Postfix adds for aliases ("|%!"). */
static bool tok_is_op(int c) {
        return c != 0 && strchr("|%!()<>@,;:\\\".[]", c) != NULL;
}

static bool tok_is_space(int c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int tok_push(TokList *l, int type, StrBuf *text) {
        Tok *t = realloc(l->t, (l->n + 1) * sizeof(Tok));
        if (!t)
                return -ENOMEM;
        l->t = t;
        t[l->n].type = type;
        t[l->n].text = NULL;
        if (text) {
                t[l->n].text = strbuf_steal(text);
                if (!t[l->n].text)
                        return -ENOMEM;
        }
        l->n++;
        return 0;
}

/* Collects characters while stop (or, for stop == 0, an atom character)
 * does not end the token; a backslash takes the next character as is. */
static int tok_collect(const char **sp, StrBuf *b, int stop) {
        const char *s = *sp;
        int r;

        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '\\') {
                        if (!s[1]) {
                                s++;            /* a trailing backslash escapes nothing */
                                break;
                        }
                        c = (unsigned char) *++s;
                } else if (stop ? c == stop : (tok_is_space(c) || tok_is_op(c)))
                        break;
                r = strbuf_putc(b, tok_is_space(c) ? ' ' : (char) c);
                if (r < 0)
                        return r;
        }
        *sp = s;
        return 0;
}

static int tok_scan(const char *s, TokList *ret) {
        TokList l = {0};
        int r = 0;

        while (*s && r >= 0) {
                StrBuf b = {0};
                unsigned char c = (unsigned char) *s;

                if (tok_is_space(c)) {
                        s++;
                        continue;
                }
                if (c == '(') {
                        /* Comments nest and keep their parentheses and escapes. */
                        int level = 0;
                        for (; *s; s++) {
                                r = strbuf_putc(&b, *s);
                                if (r < 0)
                                        break;
                                if (*s == '(')
                                        level++;
                                else if (*s == ')' && --level == 0) {
                                        s++;
                                        break;
                                } else if (*s == '\\' && s[1]) {
                                        r = strbuf_putc(&b, *++s);
                                        if (r < 0)
                                                break;
                                }
                        }
                        if (r >= 0)
                                r = tok_push(&l, TOK_COMMENT, &b);
                } else if (c == '[' || c == '"') {
                        int type = c == '[' ? TOK_DOMLIT : TOK_QSTRING;
                        s++;
                        r = tok_collect(&s, &b, c == '[' ? ']' : '"');
                        if (*s)
                                s++;
                        if (r >= 0)
                                r = tok_push(&l, type, &b);
                } else if (c != '\\' && tok_is_op(c)) {
                        s++;
                        r = tok_push(&l, c, NULL);
                } else {
                        int type = TOK_ATOM;
                        r = tok_collect(&s, &b, 0);
                        /* An atom that needs quotes is a quoted string. */
                        for (size_t i = 0; r >= 0 && i < b.len; i++) {
                                unsigned char x = (unsigned char) b.data[i];
                                if (x == ' ' || x < 0x20 || x == 0x7f || tok_is_op(x))
                                        type = TOK_QSTRING;
                        }
                        if (r >= 0)
                                r = tok_push(&l, type, &b);
                }
                strbuf_done(&b);
        }
        if (r < 0) {
                tok_list_done(&l);
                return r;
        }
        *ret = l;
        return 0;
}

static bool tok_is_word(const Tok *t) {
        return t->type == TOK_ATOM || t->type == TOK_QSTRING || t->type == TOK_COMMENT ||
               t->type == TOK_DOMLIT;
}

static int tok_put_quoted(StrBuf *b, const char *s, const char *specials) {
        for (; *s; s++) {
                if (strchr(specials, *s) && strbuf_putc(b, '\\') < 0)
                        return -ENOMEM;
                if (strbuf_putc(b, *s) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* Turns tokens [from, to) back into text, quoted (external) or not. */
static char *tok_join(const TokList *l, size_t from, size_t to, bool external) {
        StrBuf b = {0};

        for (size_t i = from; i < to; i++) {
                const Tok *t = &l->t[i];
                int r;

                switch (t->type) {
                case TOK_ATOM:
                case TOK_COMMENT:
                        r = strbuf_puts(&b, t->text);
                        break;
                case TOK_QSTRING:
                        if (!external)
                                r = strbuf_puts(&b, t->text);
                        else if ((r = strbuf_putc(&b, '"')) >= 0 &&
                                 (r = tok_put_quoted(&b, t->text, "\"\\\r\n")) >= 0)
                                r = strbuf_putc(&b, '"');
                        break;
                case TOK_DOMLIT:
                        if ((r = strbuf_putc(&b, '[')) < 0)
                                break;
                        r = external ? tok_put_quoted(&b, t->text, "\\\r\n") :
                                       strbuf_puts(&b, t->text);
                        if (r >= 0)
                                r = strbuf_putc(&b, ']');
                        break;
                default:
                        r = strbuf_putc(&b, (char) t->type);
                }
                /* Spacing as Postfix externalizes a token list: after a comma,
                 * before "<", and between two words. */
                if (r >= 0 && i + 1 < to &&
                    (t->type == ',' || l->t[i + 1].type == '<' ||
                     (tok_is_word(t) && tok_is_word(&l->t[i + 1]))))
                        r = strbuf_putc(&b, ' ');
                if (r < 0) {
                        strbuf_done(&b);
                        return NULL;
                }
        }
        return strbuf_steal(&b);
}

int map_parse_alias(const char *line, const char *file, unsigned lineno, Diag *diags,
                    char **ret_key, char **ret_value) {
        _cleanup_free_ char *key = NULL, *value = NULL;
        TokList l = {0};
        size_t colon;
        int r;

        r = tok_scan(line, &l);
        if (r < 0)
                return r;
        for (colon = 0; colon < l.n; colon++)
                if (l.t[colon].type == ':')
                        break;
        r = 1;
        if (colon == l.n || colon == 0 || colon + 1 == l.n)
                r = 0;
        for (size_t i = 0; r > 0 && i < colon; i++)
                if (l.t[i].type == ',')
                        r = 0;
        if (r == 0) {
                diag_warning(diags, file, lineno, "need name:value pair");
                tok_list_done(&l);
                return 0;
        }
        for (size_t i = 0; i < colon; i++)
                if (l.t[i].type == '@' || l.t[i].type == '%') {
                        diag_warning(diags, file, lineno, "name must be local");
                        tok_list_done(&l);
                        return 0;
                }
        key = tok_join(&l, 0, colon, false);
        value = tok_join(&l, colon + 1, l.n, true);
        tok_list_done(&l);
        if (!key || !value)
                return -ENOMEM;
        *ret_key = steal_ptr(key);
        *ret_value = steal_ptr(value);
        return 1;
}

/* ---- writing the table ---- */

typedef struct Builder {
        DB *db;
        const char *source;
        Diag *diags;
        size_t count;
} Builder;

static void map_build_discard_error(const DB_ENV *env, const char *prefix, const char *msg) {
        (void) env;
        (void) prefix;
        (void) msg;
}

static int db_errno(int r) {
        return r > 0 ? -r : -EIO;
}

/* Stores key and value (with their NUL bytes when with_nul). Returns 1
 * when stored, 0 for a duplicate (the first one stays), or an error. */
static int builder_put(Builder *b, const char *key, const char *value, bool with_nul) {
        DBT k = {0}, v = {0};
        size_t kl = strlen(key) + (with_nul ? 1 : 0), vl = strlen(value) + (with_nul ? 1 : 0);
        int r;

        if (kl > UINT32_MAX || vl > UINT32_MAX)
                return -E2BIG;
        k.data = (void *) key;
        k.size = (u_int32_t) kl;
        v.data = (void *) value;
        v.size = (u_int32_t) vl;
        r = b->db->put(b->db, NULL, &k, &v, DB_NOOVERWRITE);
        if (r == DB_KEYEXIST)
                return 0;
        if (r != 0)
                return db_errno(r);
        return 1;
}

static int builder_add(Builder *b, const char *key, const char *value, unsigned lineno) {
        int r = builder_put(b, key, value, true);
        if (r == 0) {
                _cleanup_free_ char *e = str_escape_log(key, 100);
                diag_warning(b->diags, b->source, lineno, "duplicate entry: \"%s\"", strempty(e));
        } else if (r > 0)
                b->count++;
        return r;
}

static int builder_load(Builder *b, const char *buf, size_t len, unsigned flags) {
        StrBuf line = {0};
        MapSource src;
        int r;

        map_source_init(&src, b->source, buf, len);
        for (;;) {
                _cleanup_free_ char *akey = NULL, *avalue = NULL;
                char *key, *value;
                unsigned lineno;

                r = map_source_next(&src, &line, &lineno, b->diags);
                if (r <= 0)
                        break;
                if (flags & MAP_FLAG_ALIAS) {
                        r = map_parse_alias(line.data, b->source, lineno, b->diags, &akey, &avalue);
                        if (r < 0)
                                break;
                        key = akey;
                        value = avalue;
                } else
                        r = map_parse_key_value(line.data, b->source, lineno, b->diags, &key,
                                                &value);
                if (r == 0)
                        continue;
                if (flags & MAP_FLAG_FOLD_KEYS)
                        ascii_strlower(key);
                r = builder_add(b, key, value, lineno);
                if (r < 0)
                        break;
        }
        strbuf_done(&line);
        if (r < 0)
                return r;

        if (flags & MAP_FLAG_ALIAS) {
                char stamp[32], host[HOST_NAME_MAX + 1] = "";

                /* Sendmail's "the database is complete" record. */
                r = builder_put(b, "@", "@", true);
                if (r < 0)
                        return r;
                /* NIS records, stored without NUL bytes as Postfix does. */
                (void) snprintf(stamp, sizeof(stamp), "%010lld", (long long) time(NULL));
                r = builder_put(b, "YP_LAST_MODIFIED", stamp, false);
                if (r < 0)
                        return r;
                if (gethostname(host, sizeof(host) - 1) == 0 && host[0]) {
                        r = builder_put(b, "YP_MASTER_NAME", host, false);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int fsync_path(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

static int map_build_db(const char *source, DBTYPE type, unsigned flags, Diag *diags) {
        _cleanup_free_ char *buf = NULL, *index = NULL, *tmp = NULL;
        Builder b = {.source = source, .diags = diags};
        struct stat st;
        size_t len;
        mode_t mode;
        int r;

        if (stat(source, &st) < 0) {
                r = -errno;
                map_diag_errno(diags, r, "open", source);
                return r;
        }
        r = map_read_source(source, diags, &buf, &len);
        if (r < 0)
                return r;
        index = strdup_printf("%s.db", source);
        tmp = strdup_printf("%s.db.tmp.%ld", source, (long) getpid());
        if (!index || !tmp)
                return -ENOMEM;
        /* Group and other get no more access to the table than to its source. */
        mode = 0644 & (st.st_mode | 0700);

        r = db_create(&b.db, NULL, 0);
        if (r != 0) {
                b.db = NULL;
                r = db_errno(r);
                map_diag_errno(diags, r, "create database", tmp);
                return r;
        }
        b.db->set_errcall(b.db, map_build_discard_error);
        /* A large cache keeps building big hash tables fast. */
        (void) b.db->set_cachesize(b.db, 0, 16 * 1024 * 1024, 0);
        for (int attempt = 0;; attempt++) {
                r = b.db->open(b.db, NULL, tmp, NULL, type, DB_CREATE | DB_EXCL, 0600);
                if (r == EEXIST && attempt == 0) {
                        /* Left behind by a crashed run with our PID: not a table anyone reads. */
                        (void) b.db->close(b.db, 0);
                        (void) unlink(tmp);
                        r = db_create(&b.db, NULL, 0);
                        if (r != 0) {
                                b.db = NULL;
                                break;
                        }
                        b.db->set_errcall(b.db, map_build_discard_error);
                        (void) b.db->set_cachesize(b.db, 0, 16 * 1024 * 1024, 0);
                        continue;
                }
                break;
        }
        if (r != 0) {
                r = db_errno(r);
                map_diag_errno(diags, r, "create database", tmp);
                if (b.db)
                        (void) b.db->close(b.db, 0);
                (void) unlink(tmp);
                return r;
        }

        {
                int fd = -1;
                /* Berkeley DB sets close-on-exec on Linux itself; make sure. */
                if (b.db->fd(b.db, &fd) == 0 && fd >= 0) {
                        int fl = fcntl(fd, F_GETFD);
                        if (fl >= 0 && !(fl & FD_CLOEXEC))
                                (void) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
                }
        }

        r = builder_load(&b, buf, len, flags);
        if (r < 0) {
                diag_error(diags, NULL, 0, "write database %s: %s", tmp, strerror(-r));
                (void) b.db->close(b.db, 0);
                (void) unlink(tmp);
                return r;
        }
        r = b.db->close(b.db, 0);
        b.db = NULL;
        if (r != 0) {
                r = db_errno(r);
                map_diag_errno(diags, r, "write database", tmp);
                (void) unlink(tmp);
                return r;
        }
        if (chmod(tmp, mode) < 0)
                r = -errno;
        /* Built by root: the table belongs to whoever owns the source. */
        if (r >= 0 && geteuid() == 0 && (st.st_uid != 0 || st.st_gid != 0) &&
            chown(tmp, st.st_uid, st.st_gid) < 0)
                r = -errno;
        if (r >= 0)
                r = fsync_path(tmp);
        if (r >= 0 && rename(tmp, index) < 0)
                r = -errno;
        if (r < 0) {
                map_diag_errno(diags, r, "install database", index);
                (void) unlink(tmp);
                return r;
        }
        r = fsync_parent_dir(index);
        if (r < 0) {
                map_diag_errno(diags, r, "sync directory of", index);
                return r;
        }
        return (int) MIN(b.count, (size_t) INT_MAX);
}

int map_build(const char *spec, const char *default_type, unsigned flags, Diag *diags) {
        _cleanup_free_ char *type = NULL;
        const char *name, *colon = strchr(spec, ':');

        if (colon) {
                type = strndup(spec, (size_t) (colon - spec));
                name = colon + 1;
        } else {
                type = strdup(default_type ? default_type : "hash");
                name = spec;
        }
        if (!type)
                return -ENOMEM;
        if (isempty(name)) {
                diag_error(diags, NULL, 0,
                           "open dictionary: expecting \"type:name\" form instead of \"%s\"", spec);
                return -EINVAL;
        }
        if (streq(type, "hash"))
                return map_build_db(name, DB_HASH, flags, diags);
        if (streq(type, "btree"))
                return map_build_db(name, DB_BTREE, flags, diags);
        if (!map_type_known(type)) {
                diag_error(diags, NULL, 0, "unsupported dictionary type: %s", type);
                return -EPROTONOSUPPORT;
        }
        diag_error(diags, NULL, 0, "unsupported map type for this operation: %s", type);
        return -EOPNOTSUPP;
}
