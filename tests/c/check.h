/* check.h - the C tests' harness: CHECK records a failure with its place and
 * goes on; check_done() prints "N passed, N failed" and gives the exit code,
 * non-zero on any failure. Each test file is one program. */
#ifndef KD_CHECK_H
#define KD_CHECK_H

#include <stdio.h>
#include <string.h>

#include "kd.h"

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (cond) {                                                                       \
            check_passed++;                                                               \
        } else {                                                                          \
            check_failed++;                                                               \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            printf(__VA_ARGS__);                                                          \
            printf("\n");                                                                 \
        }                                                                                 \
    } while (0)

/* A call that must succeed; on failure the core's message is printed. */
#define CHECK_OK(call)                                                                    \
    do {                                                                                  \
        kd_status s_ = (call);                                                            \
        CHECK(s_ == KD_OK, "%s -> %s: %s", #call, kd_status_name(s_), kd_error_message()); \
    } while (0)

/* A call that must fail with code and a message containing every fragment. */
#define CHECK_FAILS(call, code, ...)                                                      \
    do {                                                                                  \
        kd_status s_ = (call);                                                            \
        const char *frags_[] = {__VA_ARGS__, NULL};                                       \
        int ok_ = s_ == (code);                                                           \
        for (int i_ = 0; ok_ && frags_[i_]; i_++)                                         \
            ok_ = strstr(kd_error_message(), frags_[i_]) != NULL;                         \
        CHECK(ok_, "%s -> %s \"%s\", expected %s with the given fragments", #call,        \
              kd_status_name(s_), kd_error_message(), kd_status_name(code));              \
    } while (0)

static inline int check_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
