/* map-unix.c: the unix: table type. unix:passwd.byname looks a user up
 * with getpwnam_r() and answers the passwd(5) line
 * "name:passwd:uid:gid:gecos:dir:shell"; unix:group.byname uses
 * getgrnam_r() and answers "name:passwd:gid:member,member". Keys are
 * case-folded when the map folds, as Postfix does. A failing name service
 * is a failed lookup, never "not found". Entry point: map_ops_unix. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "map-internal.h"
#include "strutil.h"

/* getpwnam_r() buffers grow up to this size before we give up. */
#define UNIX_BUF_MAX ((size_t) 1024 * 1024)

typedef enum UnixTable {
        UNIX_PASSWD,
        UNIX_GROUP,
} UnixTable;

static void map_unix_free_data(void *data) {
        free(data);
}

static int map_unix_open(Map *m, Diag *diags) {
        UnixTable *t;

        t = malloc(sizeof(UnixTable));
        if (!t)
                return -ENOMEM;
        m->data = t;
        if (streq(m->name, "passwd.byname"))
                *t = UNIX_PASSWD;
        else if (streq(m->name, "group.byname"))
                *t = UNIX_GROUP;
        else {
                _cleanup_free_ char *e = str_escape_log(m->name, 100);
                diag_error(diags, NULL, 0, "unknown table: unix:%s", strempty(e));
                return -EINVAL;
        }
        return 0;
}

/* POSIX allows these for "no such entry". */
static bool unix_not_found(int e) {
        return e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM;
}

static int unix_passwd(const char *key, char **ret_value) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 1024;
        struct passwd pw, *res = NULL;
        long hint = sysconf(_SC_GETPW_R_SIZE_MAX);

        if (hint > 0 && (size_t) hint > size)
                size = (size_t) hint;
        for (;;) {
                int e;

                free(buf);
                buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                e = getpwnam_r(key, &pw, buf, size, &res);
                if (e == ERANGE && size < UNIX_BUF_MAX) {
                        size *= 2;
                        continue;
                }
                if (!res) {
                        if (unix_not_found(e))
                                return 0;
                        return -e;
                }
                break;
        }
        if (ret_value) {
                *ret_value = strdup_printf("%s:%s:%ld:%ld:%s:%s:%s", pw.pw_name,
                                           strempty(pw.pw_passwd), (long) pw.pw_uid,
                                           (long) pw.pw_gid, strempty(pw.pw_gecos),
                                           strempty(pw.pw_dir), strempty(pw.pw_shell));
                if (!*ret_value)
                        return -ENOMEM;
        }
        return 1;
}

static int unix_group(const char *key, char **ret_value) {
        _cleanup_free_ char *buf = NULL, *members = NULL;
        size_t size = 1024;
        struct group gr, *res = NULL;
        long hint = sysconf(_SC_GETGR_R_SIZE_MAX);

        if (hint > 0 && (size_t) hint > size)
                size = (size_t) hint;
        for (;;) {
                int e;

                free(buf);
                buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                e = getgrnam_r(key, &gr, buf, size, &res);
                if (e == ERANGE && size < UNIX_BUF_MAX) {
                        size *= 2;
                        continue;
                }
                if (!res) {
                        if (unix_not_found(e))
                                return 0;
                        return -e;
                }
                break;
        }
        if (ret_value) {
                members = strv_join(gr.gr_mem, ",");
                if (!members)
                        return -ENOMEM;
                *ret_value = strdup_printf("%s:%s:%ld:%s", gr.gr_name, strempty(gr.gr_passwd),
                                           (long) gr.gr_gid, members);
                if (!*ret_value)
                        return -ENOMEM;
        }
        return 1;
}

static int map_unix_lookup(Map *m, const char *key, char **ret_value) {
        const UnixTable *t = m->data;

        if (*key == 0)
                return 0;
        return *t == UNIX_PASSWD ? unix_passwd(key, ret_value) : unix_group(key, ret_value);
}

const MapOps map_ops_unix = {
        .type = "unix",
        .flags = MAP_OPS_FOLD | MAP_OPS_NEEDS_NAME,
        .open = map_unix_open,
        .lookup = map_unix_lookup,
        .free_data = map_unix_free_data,
};
