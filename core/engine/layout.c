/* layout.c - the blocked layout a convolution can leave its output in.
 *
 * oneDNN's convolution kernels read and write activations as nChw16c (the
 * channels in blocks of 16, innermost; nChw8c on AVX2-only CPUs). Between
 * two convolutions, converting to NCHW and back costs two passes over the
 * activation for nothing. So a convolution whose output needs no gradient
 * (inference, a frozen teacher, an EMA model) writes it blocked and marks
 * its storage (kd_set_blocked); the next convolution reads it as it is, and
 * batch norm and the elementwise ops work on it in place of NCHW (they ask
 * kd_blocked). Every other op reads through kd_data, which converts the
 * storage back to NCHW in place, once: an op that does not know the layout
 * still sees NCHW, so nothing but speed depends on which ops know it.
 *
 * Only whole tensors are blocked (a view at an offset or of another shape
 * reads NCHW), and only where the channels fill the blocks, so the two
 * layouts take the same bytes and the conversion needs no new storage. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int enabled = -1; /* -1: the environment decides at the first call */

bool kd_blocked_layout_on(void) {
    if (enabled < 0) {
        const char *choice = getenv("KDSEG_LAYOUT");
        enabled = !(choice && strcmp(choice, "nchw") == 0);
    }
    return enabled;
}

bool kd_blocked_layout_use(bool use) {
    bool was = kd_blocked_layout_on();
    enabled = use;
    return was;
}

int kd_blocked(const kd_tensor *t) {
    const kd_storage *s = t->storage;
    int block = __atomic_load_n(&s->block, __ATOMIC_ACQUIRE);
    if (block <= 0 || t->offset != 0 || t->ndim != 4) return 0; /* < 0: zeros pending (internal.h) */
    for (int i = 0; i < 4; i++)
        if (t->shape[i] != s->block_dims[i]) return 0;
    return block;
}

void kd_set_blocked(kd_tensor *t, int block) {
    kd_storage *s = t->storage;
    memcpy(s->block_dims, t->shape, sizeof s->block_dims);
    __atomic_store_n(&s->block, block, __ATOMIC_RELEASE);
}

#ifdef __AVX__
#include <immintrin.h>

/* Eight rows of eight floats (at from, from + stride, ...) transposed into
 * out[0..7]: out[j] holds element j of every row. */
static inline __attribute__((always_inline)) void transpose8(const float *from, size_t stride, __m256 out[8]) {
    __m256 r[8], a[8], b[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(from + k * stride);
    for (int k = 0; k < 8; k += 2) {
        a[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        a[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        b[k] = _mm256_shuffle_ps(a[k], a[k + 2], 0x44);
        b[k + 1] = _mm256_shuffle_ps(a[k], a[k + 2], 0xEE);
        b[k + 2] = _mm256_shuffle_ps(a[k + 1], a[k + 3], 0x44);
        b[k + 3] = _mm256_shuffle_ps(a[k + 1], a[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        out[k] = _mm256_permute2f128_ps(b[k], b[k + 4], 0x20);
        out[k + 4] = _mm256_permute2f128_ps(b[k], b[k + 4], 0x31);
    }
}
#endif

/* How image_into_plain writes each value: as it is, added to what is
 * there, or added to zeros that are pending (internal.h): `to` not read,
 * 0.0f + v written, which turns -0 into 0 as adding into zeros does. */
typedef enum { COPY, ADD, ONTO_ZEROS } into_mode;

/* One image's C x HW values from nChw<block>c (from) to NCHW (to): for each
 * block of channels, an HW x block matrix transposed, 8 x 8 at a time in
 * AVX registers, the last HW % 8 positions (all, without AVX) one by one.
 * Inlined with `mode` a constant. */
static inline __attribute__((always_inline)) void image_into_plain(const float *from, float *to, int C, size_t HW,
                                                                   int block, into_mode mode) {
#ifdef __AVX__
    size_t whole = HW / 8 * 8;
#else
    size_t whole = 0; /* built without AVX (the sanitizer builds): one by one */
#endif
    for (int cb = 0; cb < C / block; cb++) {
        const float *src = from + (size_t)cb * HW * block;
        float *dst = to + (size_t)cb * block * HW;
#ifdef __AVX__
        for (size_t h = 0; h < whole; h += 8)
            for (int l0 = 0; l0 < block; l0 += 8) {
                __m256 t[8];
                transpose8(src + h * block + l0, (size_t)block, t);
                for (int j = 0; j < 8; j++) {
                    float *at = dst + (size_t)(l0 + j) * HW + h;
                    __m256 base = mode == ADD ? _mm256_loadu_ps(at) : _mm256_setzero_ps();
                    _mm256_storeu_ps(at, mode == COPY ? t[j] : _mm256_add_ps(base, t[j]));
                }
            }
#endif
        for (size_t h = whole; h < HW; h++)
            for (int lane = 0; lane < block; lane++) {
                float v = src[h * block + lane], *at = dst + (size_t)lane * HW + h;
                *at = mode == COPY ? v : (mode == ADD ? *at : 0.0f) + v;
            }
    }
}

static void image_to_plain(const float *from, float *to, int C, size_t HW, int block) {
    image_into_plain(from, to, C, HW, block, COPY);
}

void kd_blocked_add_to_plain(const float *from, float *to, int N, int C, size_t HW, int block, bool onto_zeros) {
    size_t image = (size_t)C * HW;
#pragma omp parallel for schedule(static) if ((size_t)N * image > KD_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        if (onto_zeros)
            image_into_plain(from + n * image, to + n * image, C, HW, block, ONTO_ZEROS);
        else
            image_into_plain(from + n * image, to + n * image, C, HW, block, ADD);
    }
}

/* Zeroes pending zeros (internal.h). Converts blocked data in place: into
 * a buffer as large as the storage when one can be had (the usual case: the
 * caching allocator has one), else image by image through a buffer of one
 * image. Serialised, so that threads reading the same tensor at once
 * convert it once. */
static pthread_mutex_t converting = PTHREAD_MUTEX_INITIALIZER;

void kd_storage_make_plain(kd_storage *s) {
    pthread_mutex_lock(&converting);
    int block = __atomic_load_n(&s->block, __ATOMIC_ACQUIRE);
    if (block == KD_ZEROS_PENDING) {
        kd_zero_bytes(s->data, s->pending_bytes);
        __atomic_store_n(&s->block, 0, __ATOMIC_RELEASE);
    } else if (block) {
        int N = s->block_dims[0], C = s->block_dims[1];
        size_t HW = (size_t)s->block_dims[2] * s->block_dims[3], image = (size_t)C * HW;
        size_t bytes;
        float *whole = kd_cache_alloc(s->bytes, &bytes);
        if (whole && bytes == s->bytes) {
#pragma omp parallel for schedule(static) if ((size_t)N * image > KD_PARALLEL_MIN)
            for (int n = 0; n < N; n++) image_to_plain((float *)s->data + n * image, whole + n * image, C, HW, block);
            kd_cache_free(s->data, s->bytes);
            s->data = whole;
        } else {
            kd_cache_free(whole, bytes);
            float *one = malloc(image * sizeof(float));
            if (!one) {
                /* kd_data cannot fail: there is no way left to give NCHW */
                fprintf(stderr, "kdseg: out of memory converting a %dx%dx%dx%d tensor from the blocked layout\n", N,
                        C, s->block_dims[2], s->block_dims[3]);
                abort();
            }
            for (int n = 0; n < N; n++) {
                float *at = (float *)s->data + n * image;
                image_to_plain(at, one, C, HW, block);
                memcpy(at, one, image * sizeof(float));
            }
            free(one);
        }
        __atomic_store_n(&s->block, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&converting);
}
