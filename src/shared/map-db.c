/* map-db.c: the hash: and btree: table types, Berkeley DB 5.3 files
 * NAME.db opened read-only through the plain DB API (no environment), as
 * Postfix does. Files come from postmap/postalias (map-build.c) or from
 * Postfix's own postmap: both store keys and values with their trailing NUL
 * byte, so a lookup tries the key with the NUL first and then without it,
 * and a value loses one trailing NUL. Building lives in map-build.c. */
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "map-internal.h"
#include "strutil.h"

typedef struct MapDb {
        DB *db;
} MapDb;

static void map_db_free_data(void *data) {
        MapDb *d = data;
        if (d->db)
                (void) d->db->close(d->db, 0);
        free(d);
}

/* Berkeley DB returns errno values, or its own negative codes for
 * conditions such as a damaged file. */
static int map_db_errno(int r) {
        if (r > 0)
                return -r;
        return -EIO;
}

static void map_db_discard_error(const DB_ENV *env, const char *prefix, const char *msg) {
        /* Errors come back as return codes; the library's own text would
         * otherwise go to stderr behind the caller's back. */
        (void) env;
        (void) prefix;
        (void) msg;
}

static int map_db_open(Map *m, DBTYPE type, Diag *diags) {
        _cleanup_free_ char *path = NULL;
        MapDb *d;
        int r, fd;

        path = strdup_printf("%s.db", m->name);
        if (!path)
                return -ENOMEM;
        d = calloc(1, sizeof(MapDb));
        if (!d)
                return -ENOMEM;
        m->data = d;
        r = db_create(&d->db, NULL, 0);
        if (r != 0) {
                d->db = NULL;
                r = map_db_errno(r);
                map_diag_errno(diags, r, "open database", path);
                return r;
        }
        d->db->set_errcall(d->db, map_db_discard_error);
        r = d->db->open(d->db, NULL, path, NULL, type, DB_RDONLY, 0);
        if (r != 0) {
                r = map_db_errno(r);
                map_diag_errno(diags, r, "open database", path);
                return r;
        }
        /* The library sets close-on-exec itself on Linux; make sure. */
        if (d->db->fd(d->db, &fd) == 0 && fd >= 0) {
                int fl = fcntl(fd, F_GETFD);
                if (fl >= 0 && !(fl & FD_CLOEXEC))
                        (void) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        }
        return 0;
}

static int map_hash_open(Map *m, Diag *diags) {
        return map_db_open(m, DB_HASH, diags);
}

static int map_btree_open(Map *m, Diag *diags) {
        return map_db_open(m, DB_BTREE, diags);
}

/* Copies a stored string, dropping one trailing NUL. */
static char *map_db_string(const DBT *t) {
        size_t n = t->size;
        if (n > 0 && ((const char *) t->data)[n - 1] == 0)
                n--;
        return strndup(t->data ? t->data : "", n);
}

static int map_db_lookup(Map *m, const char *key, char **ret_value) {
        MapDb *d = m->data;
        size_t klen = strlen(key);

        /* First as Postfix writes keys (with the NUL), then without. */
        for (int with_nul = 1; with_nul >= 0; with_nul--) {
                DBT k = {0}, v = {0};
                int r;

                if (klen + (size_t) with_nul > UINT32_MAX)
                        return 0;
                k.data = (void *) key;
                k.size = (u_int32_t) (klen + (size_t) with_nul);
                r = d->db->get(d->db, NULL, &k, &v, 0);
                if (r == DB_NOTFOUND)
                        continue;
                if (r != 0)
                        return map_db_errno(r);
                if (ret_value) {
                        char *s = map_db_string(&v);
                        if (!s)
                                return -ENOMEM;
                        *ret_value = s;
                }
                return 1;
        }
        return 0;
}

static int map_db_walk(Map *m, MapWalkFunc f, void *userdata) {
        MapDb *d = m->data;
        DBC *c = NULL;
        int r;

        r = d->db->cursor(d->db, NULL, &c, 0);
        if (r != 0)
                return map_db_errno(r);
        for (;;) {
                _cleanup_free_ char *key = NULL, *value = NULL;
                DBT k = {0}, v = {0};

                r = c->get(c, &k, &v, DB_NEXT);
                if (r == DB_NOTFOUND) {
                        r = 0;
                        break;
                }
                if (r != 0) {
                        r = map_db_errno(r);
                        break;
                }
                key = map_db_string(&k);
                value = map_db_string(&v);
                if (!key || !value) {
                        r = -ENOMEM;
                        break;
                }
                r = f(key, value, userdata);
                if (r < 0)
                        break;
        }
        (void) c->close(c);
        return r < 0 ? r : 0;
}

const MapOps map_ops_hash = {
        .type = "hash",
        .flags = MAP_OPS_FOLD | MAP_OPS_INDEXED | MAP_OPS_NEEDS_NAME,
        .open = map_hash_open,
        .lookup = map_db_lookup,
        .walk = map_db_walk,
        .free_data = map_db_free_data,
};

const MapOps map_ops_btree = {
        .type = "btree",
        .flags = MAP_OPS_FOLD | MAP_OPS_INDEXED | MAP_OPS_NEEDS_NAME,
        .open = map_btree_open,
        .lookup = map_db_lookup,
        .walk = map_db_walk,
        .free_data = map_db_free_data,
};
