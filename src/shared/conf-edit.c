/* conf-edit.c: editing main.cf-syntax files in place, as postconf -e, -X
 * and -# do. conf_edit_text() rewrites the entries of the named parameters
 * (a logical line with its continuation lines) and copies every other byte
 * unchanged, so comments, order and layout survive; new parameters are
 * appended. conf_edit() does that to a file, replacing it atomically.
 * Checking that a new value fits its parameter is the caller's business. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conf-internal.h"
#include "conf.h"
#include "fileio.h"
#include "strutil.h"

typedef struct EditArg {
        char *name;
        char *value;            /* CONF_EDIT_SET only */
        unsigned seen;          /* entries met in the file */
} EditArg;

static void edit_args_free(EditArg *a, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(a[i].name);
                free(a[i].value);
        }
        free(a);
}

/* Parses the postconf arguments; a name given twice takes the later value.
 * Every malformed argument is reported before -EINVAL is returned. */
static int parse_args(char * const *args, ConfEditMode mode, Diag *diags, EditArg **ret,
                      size_t *ret_n) {
        size_t n = strv_length(args), k = 0;
        bool bad = false;
        EditArg *a;

        a = calloc(n ? n : 1, sizeof(EditArg));
        if (!a)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *name = NULL, *value = NULL, *error = NULL, *q = NULL;
                size_t j;
                int r;

                if (mode == CONF_EDIT_SET) {
                        r = conf_split_assignment(args[i], &name, &value, &error);
                        if (r == -EINVAL) {
                                diag_error(diags, NULL, 0, "%s", error);
                                bad = true;
                                continue;
                        }
                } else {
                        _cleanup_free_ char *copy = strdup(args[i]);
                        r = copy && (name = strdup(strstrip(copy))) ? 0 : -ENOMEM;
                }
                if (r < 0) {
                        edit_args_free(a, k);
                        return r;
                }
                if (!conf_name_valid(name, strlen(name))) {
                        q = str_escape_log(name, 100);
                        diag_error(diags, NULL, 0,
                                   "bad parameter name \"%s\": only letters, digits and \"_\" are "
                                   "allowed",
                                   strempty(q));
                        bad = true;
                        continue;
                }
                /* A newline followed by text would start another entry. */
                if (value && strchr(value, '\n')) {
                        diag_error(diags, NULL, 0, "%s: the value must not contain a newline",
                                   name);
                        bad = true;
                        continue;
                }
                for (j = 0; j < k; j++)
                        if (streq(a[j].name, name))
                                break;
                if (j == k)
                        a[k++].name = steal_ptr(name);
                free(a[j].value);
                a[j].value = steal_ptr(value);
        }
        if (bad) {
                edit_args_free(a, k);
                return -EINVAL;
        }
        *ret = a;
        *ret_n = k;
        return 0;
}

static EditArg *find_arg(EditArg *a, size_t n, const char *name, size_t len) {
        for (size_t i = 0; i < n; i++)
                if (strlen(a[i].name) == len && memcmp(a[i].name, name, len) == 0)
                        return &a[i];
        return NULL;
}

static int put_assignment(StrBuf *out, const EditArg *a) {
        /* Postfix writes "name = value", with the blank also for an empty value. */
        return strbuf_printf(out, "%s = %s\n", a->name, a->value);
}

int conf_edit_text(const char *text, const char *file, char * const *args, ConfEditMode mode,
                   Diag *diags, char **ret) {
        _cleanup_(strbuf_done) StrBuf out = {0};
        EditArg *a = NULL, *editing = NULL;
        size_t n = 0;
        bool have_logical = false;
        unsigned lineno = 0;
        const char *p = text;
        int r;

        r = parse_args(args, mode, diags, &a, &n);
        if (r < 0)
                return r;

        while (*p) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t) (nl - p) + 1 : strlen(p);
                bool continuation = conf_line_is_continuation(p, len) && have_logical;

                lineno++;
                if (conf_line_is_comment(p, len)) {
                        /* Comments stay, also between an entry's continuation lines. */
                        r = strbuf_append(&out, p, len);
                } else if (continuation && editing) {
                        /* Replaced or removed with its entry, or commented out too. */
                        r = 0;
                        if (mode == CONF_EDIT_COMMENT) {
                                r = strbuf_putc(&out, '#');
                                if (r >= 0)
                                        r = strbuf_append(&out, p, len);
                        }
                } else if (continuation) {
                        r = strbuf_append(&out, p, len);
                } else {
                        /* A new logical line: its name runs up to "=" or white space. */
                        size_t i = 0, start;

                        while (i < len && (p[i] == ' ' || p[i] == '\t'))
                                i++;
                        start = i;
                        while (i < len && p[i] != '=' && p[i] != ' ' && p[i] != '\t' &&
                               p[i] != '\n' && p[i] != '\r')
                                i++;
                        have_logical = true;
                        editing = find_arg(a, n, p + start, i - start);
                        if (!editing)
                                r = strbuf_append(&out, p, len);
                        else {
                                if (editing->seen++ == 1)
                                        diag_warning(diags, file, lineno,
                                                     "multiple entries for \"%s\"",
                                                     editing->name);
                                if (mode == CONF_EDIT_SET)
                                        r = put_assignment(&out, editing);
                                else if (mode == CONF_EDIT_COMMENT) {
                                        r = strbuf_putc(&out, '#');
                                        if (r >= 0)
                                                r = strbuf_append(&out, p, len);
                                } else
                                        r = 0;
                        }
                }
                if (r < 0)
                        goto finish;
                p += len;
        }
        if (mode == CONF_EDIT_SET)
                for (size_t i = 0; i < n; i++) {
                        if (a[i].seen)
                                continue;
                        /* A last line without newline gets one before the new entry. */
                        if (out.len > 0 && out.data[out.len - 1] != '\n') {
                                r = strbuf_putc(&out, '\n');
                                if (r < 0)
                                        goto finish;
                        }
                        r = put_assignment(&out, &a[i]);
                        if (r < 0)
                                goto finish;
                }
        *ret = strbuf_steal(&out);
        r = *ret ? 0 : -ENOMEM;
finish:
        edit_args_free(a, n);
        return r;
}

int conf_edit(const char *path, char * const *args, ConfEditMode mode, Diag *diags) {
        _cleanup_free_ char *text = NULL, *result = NULL;
        size_t len;
        int r;

        r = file_read_all(path, CONF_FILE_MAX, &text, &len);
        if (r == -ENOENT) {
                if (mode != CONF_EDIT_SET)
                        return 0;
                text = strdup("");
                if (!text)
                        return -ENOMEM;
                len = 0;
        } else if (r < 0) {
                diag_error(diags, path, 0, "cannot read: %s", strerror(-r));
                return r;
        }
        if (strlen(text) != len) {
                diag_error(diags, path, 0, "file contains a NUL byte; not editing it");
                return -EINVAL;
        }
        r = conf_edit_text(text, path, args, mode, diags, &result);
        if (r < 0)
                return r;
        if (streq(result, text) && len > 0)
                return 0;
        r = file_write_atomic(path, result, strlen(result), 0644);
        if (r < 0) {
                diag_error(diags, path, 0, "cannot write: %s", strerror(-r));
                return r;
        }
        return 0;
}

int conf_edit_file(const char *path, char * const *assignments, bool remove, Diag *diags) {
        return conf_edit(path, assignments, remove ? CONF_EDIT_REMOVE : CONF_EDIT_SET, diags);
}
