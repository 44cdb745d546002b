/* tensor.c - tensor headers over reference-counted storage: creation, release,
 * shape helpers and the in-place fills and copies that sit outside autograd. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

size_t kd_dtype_size(kd_dtype dtype) {
    switch (dtype) {
    case KD_F32: return 4;
    case KD_I32: return 4;
    case KD_U8: return 1;
    case KD_I64: return 8;
    }
    return 1;
}

const char *kd_dtype_name(kd_dtype dtype) {
    switch (dtype) {
    case KD_F32: return "float32";
    case KD_I32: return "int32";
    case KD_U8: return "uint8";
    case KD_I64: return "int64";
    }
    return "unknown";
}

size_t kd_shape_numel(int ndim, const int *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

size_t kd_numel(const kd_tensor *t) { return kd_shape_numel(t->ndim, t->shape); }

const char *kd_shape_str(const kd_tensor *t) {
    static _Thread_local char buffers[8][64];
    static _Thread_local int next;
    char *buf = buffers[next];
    next = (next + 1) % 8;
    if (!t) return "(none)";
    int len = 0;
    buf[0] = 0;
    for (int i = 0; i < t->ndim; i++)
        len += snprintf(buf + len, 64 - (size_t)len, i ? "x%d" : "%d", t->shape[i]);
    if (t->ndim == 0) snprintf(buf, 64, "scalar");
    return buf;
}

bool kd_same_shape(const kd_tensor *a, const kd_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

bool kd_needs_grad(const kd_tensor *t) {
    return t && (t->requires_grad || t->grad_fn != NULL);
}

static kd_status check_shape(int ndim, const int *shape) {
    if (ndim < 1 || ndim > KD_MAX_DIMS)
        return kd_fail(KD_ERR_SHAPE, "tensor: %d dimensions, must be 1 to %d", ndim,
                       KD_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return kd_fail(KD_ERR_SHAPE, "tensor: dimension %d has negative size %d", i,
                           shape[i]);
        n *= (size_t)shape[i];
        if (n > ((size_t)1 << 40))
            return kd_fail(KD_ERR_SHAPE, "tensor: more than 2^40 elements requested");
    }
    return KD_OK;
}

kd_status kd_tensor_new(kd_dtype dtype, int ndim, const int *shape, kd_tensor **out) {
    kd_status s = check_shape(ndim, shape);
    if (s) return s;
    size_t bytes = kd_shape_numel(ndim, shape) * kd_dtype_size(dtype);
    kd_tensor *t = calloc(1, sizeof *t);
    kd_storage *storage = calloc(1, sizeof *storage);
    size_t rounded = 0;
    void *data = (t && storage) ? kd_cache_alloc(bytes, &rounded) : NULL;
    if (!data) {
        free(t);
        free(storage);
        return kd_fail(KD_ERR_MEMORY, "tensor: cannot allocate %zu bytes for %s tensor",
                       bytes, kd_dtype_name(dtype));
    }
    storage->data = data;
    storage->bytes = rounded;
    storage->refcount = 1;
    t->storage = storage;
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof(int) * (size_t)ndim);
    t->dtype = dtype;
    t->refcount = 1;
    kd_count_tensor(1);
    *out = t;
    return KD_OK;
}

kd_status kd_tensor_new_like(const kd_tensor *t, kd_tensor **out) {
    return kd_tensor_new(t->dtype, t->ndim, t->shape, out);
}

/* Zeroes bytes [0, n) of p; large buffers (the backward's gradient
 * accumulators are as large as the activations) on every thread, so the
 * other threads do not wait for one. */
void kd_zero_bytes(void *p, size_t n) {
    enum { PIECE = 1 << 18 };
    size_t pieces = (n + PIECE - 1) / PIECE;
#pragma omp parallel for schedule(static) if (pieces >= 8)
    for (size_t i = 0; i < pieces; i++) memset((char *)p + i * PIECE, 0, i + 1 < pieces ? PIECE : n - i * PIECE);
}

kd_status kd_tensor_zeros(kd_dtype dtype, int ndim, const int *shape, kd_tensor **out) {
    kd_status s = kd_tensor_new(dtype, ndim, shape, out);
    if (s) return s;
    kd_zero_bytes(kd_data(*out), kd_numel(*out) * kd_dtype_size(dtype));
    return KD_OK;
}

kd_status kd_tensor_zeros_pending(int ndim, const int *shape, kd_tensor **out) {
    kd_status s = kd_tensor_new(KD_F32, ndim, shape, out);
    if (s) return s;
    kd_storage *storage = (*out)->storage;
    storage->pending_bytes = kd_numel(*out) * sizeof(float);
    __atomic_store_n(&storage->block, KD_ZEROS_PENDING, __ATOMIC_RELEASE);
    return KD_OK;
}

bool kd_take_zeros(kd_tensor *t) {
    kd_storage *s = t->storage;
    int pending = KD_ZEROS_PENDING;
    return t->offset == 0 && kd_numel(t) * kd_dtype_size(t->dtype) == s->pending_bytes &&
           __atomic_compare_exchange_n(&s->block, &pending, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

kd_status kd_tensor_zeros_like(const kd_tensor *t, kd_tensor **out) {
    return kd_tensor_zeros(t->dtype, t->ndim, t->shape, out);
}

kd_status kd_tensor_full(kd_dtype dtype, int ndim, const int *shape, double value,
                         kd_tensor **out) {
    kd_status s = kd_tensor_new(dtype, ndim, shape, out);
    if (s) return s;
    return kd_fill(*out, value);
}

kd_tensor *kd_tensor_retain(kd_tensor *t) {
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

static void storage_release(kd_storage *s) {
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        kd_cache_free(s->data, s->bytes);
        free(s);
    }
}

void kd_tensor_release(kd_tensor *t) {
    if (!t) return;
    if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    storage_release(t->storage);
    kd_tensor_release(t->grad); /* a gradient has no grad of its own: no deep recursion */
    if (t->grad_fn) kd_node_release(t->grad_fn);
    kd_count_tensor(-1);
    free(t);
}

/* A header sharing x's storage, with no history: for views and saved tensors. */
kd_status kd_detach(kd_tensor *x, kd_tensor **out) {
    kd_tensor *t = calloc(1, sizeof *t);
    if (!t) return kd_fail(KD_ERR_MEMORY, "detach: cannot allocate a tensor header");
    t->storage = x->storage;
    __atomic_add_fetch(&x->storage->refcount, 1, __ATOMIC_RELAXED);
    t->offset = x->offset;
    t->ndim = x->ndim;
    memcpy(t->shape, x->shape, sizeof t->shape);
    t->dtype = x->dtype;
    t->refcount = 1;
    kd_count_tensor(1);
    *out = t;
    return KD_OK;
}

double kd_get(const kd_tensor *t, size_t i) {
    switch (t->dtype) {
    case KD_F32: return kd_f32(t)[i];
    case KD_I32: return kd_i32(t)[i];
    case KD_U8: return kd_u8(t)[i];
    case KD_I64: return (double)((int64_t *)kd_data(t))[i];
    }
    return 0;
}

void kd_set(kd_tensor *t, size_t i, double v) {
    switch (t->dtype) {
    case KD_F32: kd_f32(t)[i] = (float)v; break;
    /* integer types saturate instead of wrapping: a pixel of 300 is 255 */
    case KD_I32: kd_i32(t)[i] = v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int32_t)v; break;
    case KD_U8: kd_u8(t)[i] = v >= 255 ? 255 : v <= 0 ? 0 : (uint8_t)v; break;
    case KD_I64: ((int64_t *)kd_data(t))[i] = v >= 9.2e18 ? INT64_MAX : v <= -9.2e18 ? INT64_MIN : (int64_t)v; break;
    }
    kd_modified(t);
}

kd_status kd_fill(kd_tensor *t, double value) {
    size_t n = kd_numel(t);
    if (t->dtype == KD_F32) {
        float *x = kd_f32(t), v = (float)value;
        for (size_t i = 0; i < n; i++) x[i] = v;
    } else {
        for (size_t i = 0; i < n; i++) kd_set(t, i, value);
    }
    kd_modified(t);
    return KD_OK;
}

kd_status kd_copy(kd_tensor *dst, const kd_tensor *src) {
    if (dst->dtype != src->dtype || kd_numel(dst) != kd_numel(src))
        return kd_fail(KD_ERR_SHAPE, "copy: destination %s %s and source %s %s differ",
                       kd_dtype_name(dst->dtype), kd_shape_str(dst),
                       kd_dtype_name(src->dtype), kd_shape_str(src));
    memmove(kd_data(dst), kd_data(src), kd_numel(src) * kd_dtype_size(src->dtype));
    kd_modified(dst);
    return KD_OK;
}

kd_status kd_to_dtype(const kd_tensor *x, kd_dtype dtype, kd_tensor **out) {
    kd_status s = kd_tensor_new(dtype, x->ndim, x->shape, out);
    if (s) return s;
    size_t n = kd_numel(x);
    for (size_t i = 0; i < n; i++) kd_set(*out, i, kd_get(x, i));
    return KD_OK;
}

enum { SUM_BLOCK = 4096 };

/* Block b of blocked_sum's. */
static inline double block_sum(const float *x, const float *y, size_t n, size_t b) {
    size_t end = (b + 1) * SUM_BLOCK < n ? (b + 1) * SUM_BLOCK : n;
    double acc = 0;
    if (y)
        for (size_t i = b * SUM_BLOCK; i < end; i++) acc += (double)(x[i] - y[i]) * (x[i] - y[i]);
    else
        for (size_t i = b * SUM_BLOCK; i < end; i++) acc += x[i];
    return acc;
}

/* The sum of x[i] (y NULL) or of (x[i] - y[i])^2, in double, by fixed
 * blocks added in order: the same result at any thread count. */
static double blocked_sum(const float *x, const float *y, size_t n) {
    size_t blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double stack_partial[64], total = 0;
    double *partial = blocks <= 64 ? stack_partial : malloc(sizeof(double) * blocks);
    if (!partial) { /* no room for the partials: the blocks one after the other, the same sums */
        for (size_t b = 0; b < blocks; b++) total += block_sum(x, y, n, b);
        return total;
    }
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t b = 0; b < blocks; b++) partial[b] = block_sum(x, y, n, b);
    for (size_t b = 0; b < blocks; b++) total += partial[b];
    if (partial != stack_partial) free(partial);
    return total;
}

double kd_sum_f32(const float *x, size_t n) { return blocked_sum(x, NULL, n); }

double kd_sum_squared_difference_f32(const float *x, const float *y, size_t n) { return blocked_sum(x, y, n); }
