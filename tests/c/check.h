/* check.h - the C tests' harness: CHECK records a failure with its place and
 * goes on; check_done() prints "N passed, N failed" and gives the exit code,
 * non-zero on any failure. Each test file is one program. */
#ifndef KD_CHECK_H
#define KD_CHECK_H

#include <stdio.h>
#include <stdlib.h>
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

/* A float32 N x C x H x W tensor of standard normal values drawn from seed
 * (aborts where it cannot be had: the tests' inputs, not what they test). */
static inline kd_tensor *check_randn4(int n, int c, int h, int w, uint64_t seed) {
    int shape[4] = {n, c, h, w};
    kd_tensor *t;
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    if (kd_tensor_new(KD_F32, 4, shape, &t) || kd_fill_normal(t, 0, 1, &rng)) abort();
    return t;
}

/* Whether two float32 tensors hold the same bits. */
static inline bool check_same_bits(const kd_tensor *a, const kd_tensor *b) {
    size_t n = kd_numel(a);
    return n == kd_numel(b) && memcmp(kd_f32(a), kd_f32(b), n * sizeof(float)) == 0;
}

static inline int check_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
