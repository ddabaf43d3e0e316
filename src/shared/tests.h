/* tests.h: check macros for the unit tests beside each module. A failed
 * check prints file:line, the expression and the expected and actual values,
 * and the test binary exits non-zero at the end (see TEST_MAIN). */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tests_failed _unused_;
static int tests_run _unused_;

#define CHECK(expr)                                                                     \
        do {                                                                            \
                tests_run++;                                                            \
                if (!(expr)) {                                                          \
                        tests_failed++;                                                 \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expr); \
                }                                                                       \
        } while (0)

#define CHECK_INT(a, b)                                                                 \
        do {                                                                            \
                long long _a = (long long) (a), _b = (long long) (b);                   \
                tests_run++;                                                            \
                if (_a != _b) {                                                         \
                        tests_failed++;                                                 \
                        fprintf(stderr, "%s:%d: %s: expected %lld, got %lld\n", __FILE__, \
                                __LINE__, #a, _b, _a);                                  \
                }                                                                       \
        } while (0)

#define CHECK_STR(a, b)                                                                 \
        do {                                                                            \
                const char *_a = (a), *_b = (b);                                        \
                tests_run++;                                                            \
                if (!_a || !_b ? _a != _b : strcmp(_a, _b) != 0) {                      \
                        tests_failed++;                                                 \
                        fprintf(stderr, "%s:%d: %s: expected \"%s\", got \"%s\"\n", __FILE__, \
                                __LINE__, #a, _b ? _b : "(null)", _a ? _a : "(null)");  \
                }                                                                       \
        } while (0)

/* Defines main() running the listed test functions, printing a summary and
 * returning non-zero when any check failed. */
#define TEST_MAIN(...)                                                                  \
        int main(void) {                                                                \
                void (*fns[])(void) = {__VA_ARGS__};                                    \
                for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)               \
                        fns[i]();                                                       \
                printf("%d checks, %d failed\n", tests_run, tests_failed);             \
                return tests_failed ? EXIT_FAILURE : EXIT_SUCCESS;                      \
        }
