/* layout.c - the blocked layout a convolution can leave its output in.
 *
 * oneDNN's convolution kernels read and write activations as nChw16c (the
 * channels in blocks of 16, innermost; nChw8c on AVX2-only CPUs). Between
 * two convolutions, converting to NCHW and back costs two passes over the
 * activation for nothing. So a convolution writes its output blocked and
 * marks its storage (kd_set_blocked); the next convolution reads it as it
 * is, and batch norm and the elementwise ops work on it in place of NCHW
 * (they ask kd_blocked). In training the gradients come back the same way:
 * a convolution writes its input gradient blocked into an accumulator that
 * nothing was added to yet, and batch norm's, ReLU's and the sum's
 * backwards work in the layout their operands share (kd_shared_block).
 * Every other op reads through kd_data, which converts the storage back to
 * NCHW in place, once: an op that does not know the layout still sees
 * NCHW, so nothing but speed depends on which ops know it.
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
        enabled = kd_environment_choice("KDSEG_LAYOUT") == 0;
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

/* The conversion back to NCHW cannot fail (kd_data returns the data), so
 * it has a buffer kept for when no other can be had: as large as one block
 * of channels of one image of any tensor marked blocked, the part of the
 * storage that holds those channels in both layouts (kd_storage_make_plain).
 * It is grown before an op writes a new shape blocked
 * (kd_blocked_layout_can_take), where a failure can still be answered by
 * writing NCHW. */
static pthread_mutex_t converting = PTHREAD_MUTEX_INITIALIZER;
static float *reserve;
static size_t reserve_floats;

static bool reserve_grow(size_t floats) {
    if (floats <= reserve_floats) return true;
    float *grown = realloc(reserve, floats * sizeof(float));
    if (!grown) return false;
    reserve = grown, reserve_floats = floats;
    return true;
}

bool kd_blocked_layout_can_take(int height, int width, int block) {
    pthread_mutex_lock(&converting);
    bool ok = reserve_grow((size_t)height * width * block);
    pthread_mutex_unlock(&converting);
    return ok;
}

void kd_set_blocked(kd_tensor *t, int block) {
    kd_storage *s = t->storage;
    if (!kd_blocked_layout_can_take(t->shape[2], t->shape[3], block)) {
        /* every op asks kd_blocked_layout_can_take before it writes a new
         * shape blocked, so this is a bug in the op */
        fprintf(stderr, "kdseg: %s marked blocked without room kept to convert it back\n", kd_shape_str(t));
        abort();
    }
    memcpy(s->block_dims, t->shape, sizeof s->block_dims);
    __atomic_store_n(&s->block, block, __ATOMIC_RELEASE);
}

int kd_shared_block(const kd_tensor *const *reads, int n_reads, kd_tensor *const *writes, int n_writes) {
    if (!kd_blocked_layout_on()) return 0;
    int block = kd_blocked(reads[0]);
    for (int i = 1; block && i < n_reads; i++)
        if (kd_blocked(reads[i]) != block) block = 0;
    for (int i = 0; block && i < n_writes; i++) {
        const kd_tensor *w = writes[i];
        if (!w || kd_blocked(w) == block) continue;
        bool pending = __atomic_load_n(&w->storage->block, __ATOMIC_ACQUIRE) == KD_ZEROS_PENDING && w->offset == 0 &&
                       kd_same_shape(w, reads[0]) && kd_numel(w) * sizeof(float) == w->storage->pending_bytes;
        if (!pending) block = 0;
    }
    return block;
}

float *kd_write_in(kd_tensor *t, int block, bool *zeros) {
    *zeros = false;
    if (!t) return NULL;
    *zeros = kd_take_zeros(t);
    if (!block) return kd_f32(t);
    if (*zeros) kd_set_blocked(t, block);
    return kd_data_as_stored(t);
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
 * caching allocator has one), else a block of channels of an image at a
 * time through the reserve above (those channels take the same bytes in
 * both layouts). Serialised, so that threads reading the same tensor at
 * once convert it once. */
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
            size_t part = HW * (size_t)block; /* kd_set_blocked made sure the reserve holds it */
            for (size_t at = 0; at < (size_t)N * image; at += part) {
                memcpy(reserve, (float *)s->data + at, part * sizeof(float));
                image_to_plain(reserve, (float *)s->data + at, block, HW, block);
            }
        }
        __atomic_store_n(&s->block, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&converting);
}
