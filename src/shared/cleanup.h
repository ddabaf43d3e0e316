/* cleanup.h: scope-bound ownership helpers built on the compiler's cleanup
 * attribute. Entry points: _cleanup_free_, _cleanup_close_, _cleanup_fclose_,
 * _cleanup_strv_free_, DEFINE_CLEANUP_FUNC() for any foo_free(), steal_ptr()
 * and steal_fd() to hand ownership on. Nothing here allocates. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void freep(void *p) {
        free(*(void **) p);
}

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                (void) close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Declares TYPE_freep() for a "TYPE *type_free(TYPE *)" destructor, so that
 * "_cleanup_(foo_freep) Foo *f = NULL;" frees f at the end of its scope. */
#define DEFINE_CLEANUP_FUNC(type, func)                          \
        static inline void func##p(type **p) {                   \
                if (*p)                                          \
                        (void) func(*p);                         \
        }

/* Returns *p and sets *p to NULL: the caller takes ownership. */
#define steal_ptr(p)                                             \
        ({                                                       \
                __typeof__(p) *_pp = &(p);                       \
                __typeof__(p) _tmp = *_pp;                       \
                *_pp = NULL;                                     \
                _tmp;                                            \
        })

static inline int steal_fd_impl(int *fd) {
        int r = *fd;
        *fd = -1;
        return r;
}
#define steal_fd(fd) steal_fd_impl(&(fd))
