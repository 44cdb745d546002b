/* op_reduce.c - sums and means (over everything or over chosen dims), and the
 * max/argmax over channels used for predictions and confidence maps. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* Shapes padded with trailing 1s to 4 dims, and the reduced extent per dim. */
typedef struct {
    int in[4], out[4];
    bool reduced[4];
} reduce_shape;

static reduce_shape make_reduce_shape(int ndim, const int *shape, unsigned mask) {
    reduce_shape r;
    for (int d = 0; d < 4; d++) {
        r.in[d] = d < ndim ? shape[d] : 1;
        r.reduced[d] = d < ndim && (mask >> d & 1u);
        r.out[d] = r.reduced[d] ? 1 : r.in[d];
    }
    return r;
}

static size_t out_index_of(const reduce_shape *r, size_t i) {
    int idx[4];
    for (int d = 3; d >= 0; d--) {
        idx[d] = (int)(i % (size_t)r->in[d]);
        i /= (size_t)r->in[d];
    }
    size_t o = 0;
    for (int d = 0; d < 4; d++) o = o * (size_t)r->out[d] + (size_t)(r->reduced[d] ? 0 : idx[d]);
    return o;
}

/* grad x (input shape) += grad out (reduced shape) broadcast, times scale. */
static kd_status reduce_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    const kd_edge *e = &node->inputs[0];
    reduce_shape r = make_reduce_shape(e->ndim, e->shape, (unsigned)node->ints[0]);
    float scale = node->floats[0];
    const float *g = kd_f32(grad_output);
    float *gx = kd_f32(grad_inputs[0]);
    size_t n = kd_shape_numel(e->ndim, e->shape);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] += g[out_index_of(&r, i)] * scale;
    return KD_OK;
}

static kd_status reduce(const char *op, kd_tensor *x, unsigned mask, bool keepdim, bool mean,
                        kd_tensor **out) {
    kd_status s = kd_check_f32(op, "input", x);
    if (s) return s;
    if (mask == 0 || mask >> x->ndim)
        return kd_fail(KD_ERR_ARG, "%s: dims mask 0x%x is empty or names dims beyond the %d of %s",
                       op, mask, x->ndim, kd_shape_str(x));
    reduce_shape r = make_reduce_shape(x->ndim, x->shape, mask);
    int out_shape[4], out_ndim = 0;
    size_t count = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (r.reduced[d]) count *= (size_t)x->shape[d];
        if (!r.reduced[d] || keepdim) out_shape[out_ndim++] = r.out[d];
    }
    if (out_ndim == 0) out_shape[out_ndim++] = 1;
    if ((s = kd_tensor_new(KD_F32, out_ndim, out_shape, out))) return s;
    float scale = mean ? (count ? 1.0f / (float)count : NAN) : 1.0f;
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
    size_t n_out = kd_numel(*out);
    if (n_out == 1) {
        y[0] = (float)(kd_sum_f32(in, kd_numel(x)) * scale);
    } else {
        /* one output element per iteration: each sum in a fixed order */
#pragma omp parallel for schedule(static) if (kd_numel(x) > KD_PARALLEL_MIN)
        for (size_t o = 0; o < n_out; o++) {
            int idx[4];
            size_t rest = o;
            for (int d = 3; d >= 0; d--) {
                idx[d] = (int)(rest % (size_t)r.out[d]);
                rest /= (size_t)r.out[d];
            }
            double acc = 0;
            int lo[4], hi[4], k[4];
            for (int d = 0; d < 4; d++) {
                lo[d] = r.reduced[d] ? 0 : idx[d];
                hi[d] = r.reduced[d] ? r.in[d] : idx[d] + 1;
            }
            for (k[0] = lo[0]; k[0] < hi[0]; k[0]++)
                for (k[1] = lo[1]; k[1] < hi[1]; k[1]++)
                    for (k[2] = lo[2]; k[2] < hi[2]; k[2]++) {
                        size_t base = (((size_t)k[0] * (size_t)r.in[1] + (size_t)k[1]) *
                                           (size_t)r.in[2] + (size_t)k[2]) * (size_t)r.in[3];
                        for (k[3] = lo[3]; k[3] < hi[3]; k[3]++) acc += in[base + (size_t)k[3]];
                    }
            y[o] = (float)(acc * scale);
        }
    }
    kd_node *node;
    s = kd_finish_op(op, reduce_backward, out, 1, &x, 0, NULL, &node);
    if (node) {
        node->ints[0] = (int)mask;
        node->floats[0] = scale;
    }
    return s;
}

static unsigned all_dims(const kd_tensor *x) { return (1u << x->ndim) - 1u; }

kd_status kd_sum(kd_tensor *x, kd_tensor **out) {
    return reduce("sum", x, all_dims(x), false, false, out);
}
kd_status kd_mean(kd_tensor *x, kd_tensor **out) {
    return reduce("mean", x, all_dims(x), false, true, out);
}
kd_status kd_sum_dims(kd_tensor *x, unsigned mask, bool keepdim, kd_tensor **out) {
    return reduce("sum", x, mask, keepdim, false, out);
}
kd_status kd_mean_dims(kd_tensor *x, unsigned mask, bool keepdim, kd_tensor **out) {
    return reduce("mean", x, mask, keepdim, true, out);
}

/* x N x C x H x W -> values N x H x W (float), indices N x H x W (int32). */
kd_status kd_max_channels(const kd_tensor *x, kd_tensor **values, kd_tensor **indices) {
    kd_status s;
    if ((s = kd_check_f32("max_channels", "input", x)) ||
        (s = kd_check_ndim("max_channels", "input", x, 4)))
        return s;
    if (x->shape[1] < 1)
        return kd_fail(KD_ERR_SHAPE, "max_channels: input %s has no channels", kd_shape_str(x));
    int shape[3] = {x->shape[0], x->shape[2], x->shape[3]};
    kd_tensor *v = NULL, *ix = NULL;
    if (values && (s = kd_tensor_new(KD_F32, 3, shape, &v))) return s;
    if (indices && (s = kd_tensor_new(KD_I32, 3, shape, &ix))) {
        kd_tensor_release(v);
        return s;
    }
    size_t C = (size_t)x->shape[1];
    size_t HW = (size_t)x->shape[2] * (size_t)x->shape[3];
    const float *in = kd_f32(x);
    float *vd = v ? kd_f32(v) : NULL;
    int32_t *id = ix ? kd_i32(ix) : NULL;
    /* A block of pixels at a time, the channels outside: the inner loop runs
     * over adjacent pixels and vectorises (a channel's values sit HW apart).
     * Each pixel still meets its channels in order, so the first largest
     * wins as before. */
    FOR_PIXEL_BLOCKS(x, n, p0, p1, {
        const float *plane = in + n * C * HW;
        float best[KD_PIXEL_BLOCK];
        int32_t arg[KD_PIXEL_BLOCK];
        size_t m = p1 - p0;
        for (size_t q = 0; q < m; q++) best[q] = plane[p0 + q], arg[q] = 0;
        for (size_t c = 1; c < C; c++) {
            const float *row = plane + c * HW + p0;
            for (size_t q = 0; q < m; q++) {
                bool larger = row[q] > best[q];
                best[q] = larger ? row[q] : best[q];
                arg[q] = larger ? (int32_t)c : arg[q];
            }
        }
        if (vd) memcpy(vd + n * HW + p0, best, m * sizeof(float));
        if (id) memcpy(id + n * HW + p0, arg, m * sizeof(int32_t));
    });
    if (values) *values = v;
    if (indices) *indices = ix;
    return KD_OK;
}
