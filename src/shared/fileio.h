/* fileio.h: whole-file reading and durable writing. file_write_atomic()
 * writes a temporary file beside the target, fsyncs it, renames it over the
 * target and fsyncs the directory, so readers see the old or the new file,
 * never a half-written one. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads the whole file into a NUL-terminated buffer (caller frees); the
 * length excludes the NUL. Returns 0 or a negative errno; files larger than
 * max bytes give -EFBIG. */
int file_read_all(const char *path, size_t max, char **ret, size_t *ret_len);

/* Replaces path with data (mode applies to a new file; an existing file
 * keeps its mode). Returns 0 or a negative errno; on failure the old file
 * is unchanged and no temporary file is left behind. */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* fsyncs the directory that holds path (or path itself when it is a
 * directory and is_dir is set). Returns 0 or a negative errno. */
int fsync_parent_dir(const char *path);
int fsync_dir(const char *dir);

/* Writes all of buf to fd, retrying on EINTR and short writes. */
int write_all(int fd, const void *buf, size_t len);

/* Returns a new string "dir/name", or name itself (copied) when it is
 * absolute or dir is NULL. NULL on out of memory. */
char *path_join(const char *dir, const char *name);
