/* op_pool.c - max, average and adaptive average pooling over each (n, c)
 * plane; the global average pool is the adaptive pool to 1 x 1. Planes are
 * independent, so every loop is parallel over planes. */
#include <math.h>

#include "internal.h"

/* PyTorch's pooling_output_shape: floor or ceil of the windows that fit;
 * in ceil mode a window that would start in the right padding or past it
 * is dropped. */
static int pooled_size(int size, int kernel, int stride, int pad, bool ceil_mode) {
    int span = size + 2 * pad - kernel;
    int out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
    if (ceil_mode && (out - 1) * stride >= size + pad) out--;
    return out;
}

static kd_status pool_begin(const char *op, const kd_tensor *x, const kd_pool_params *p,
                            kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32(op, "input", x)) || (s = kd_check_ndim(op, "input", x, 4))) return s;
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0 || p->pad_h * 2 > p->kernel_h || p->pad_w * 2 > p->kernel_w)
        return kd_fail(KD_ERR_ARG, "%s: kernel %dx%d, stride %dx%d, padding %dx%d: kernel and stride "
                       "must be >= 1, padding at most half the kernel", op, p->kernel_h,
                       p->kernel_w, p->stride_h, p->stride_w, p->pad_h, p->pad_w);
    int H = x->shape[2], W = x->shape[3];
    if (H + 2 * p->pad_h < p->kernel_h || W + 2 * p->pad_w < p->kernel_w)
        return kd_fail(KD_ERR_SHAPE, "%s: kernel %dx%d is larger than input %s padded by %dx%d", op,
                       p->kernel_h, p->kernel_w, kd_shape_str(x), p->pad_h, p->pad_w);
    int shape[4] = {x->shape[0], x->shape[1], pooled_size(H, p->kernel_h, p->stride_h, p->pad_h, p->ceil_mode),
                    pooled_size(W, p->kernel_w, p->stride_w, p->pad_w, p->ceil_mode)};
    return kd_tensor_new(KD_F32, 4, shape, out);
}

/* ---- max: saved argmax (int32, index within the input plane, same shape as out) */

static kd_status max_pool_backward(kd_node *node, const kd_tensor *grad_output,
                                   kd_tensor *const *grad_inputs) {
    const int32_t *arg = kd_i32(node->saved[0]);
    const float *g = kd_f32(grad_output);
    float *gx = kd_f32(grad_inputs[0]);
    size_t planes = (size_t)grad_output->shape[0] * grad_output->shape[1];
    size_t out_plane = (size_t)grad_output->shape[2] * grad_output->shape[3];
    size_t in_plane = (size_t)node->inputs[0].shape[2] * node->inputs[0].shape[3];
#pragma omp parallel for schedule(static) if (planes * out_plane > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (size_t i = 0; i < out_plane; i++)
            gx[q * in_plane + (size_t)arg[q * out_plane + i]] += g[q * out_plane + i];
    return KD_OK;
}

kd_status kd_max_pool2d(kd_tensor *x, const kd_pool_params *p, kd_tensor **out) {
    kd_status s = pool_begin("max_pool2d", x, p, out);
    if (s) return s;
    kd_tensor *arg;
    if ((s = kd_tensor_new(KD_I32, 4, (*out)->shape, &arg))) {
        kd_tensor_release(*out);
        *out = NULL;
        return s;
    }
    int H = x->shape[2], W = x->shape[3], OH = (*out)->shape[2], OW = (*out)->shape[3];
    size_t planes = (size_t)x->shape[0] * x->shape[1];
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
    int32_t *am = kd_i32(arg);
#pragma omp parallel for schedule(static) if (planes * H * W > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++) {
        const float *plane = in + q * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float best = -INFINITY;
                int32_t best_at = -1;
                for (int ki = 0; ki < p->kernel_h; ki++) {
                    int ih = oh * p->stride_h - p->pad_h + ki;
                    if (ih < 0 || ih >= H) continue;
                    for (int kj = 0; kj < p->kernel_w; kj++) {
                        int iw = ow * p->stride_w - p->pad_w + kj;
                        if (iw < 0 || iw >= W) continue;
                        float v = plane[ih * W + iw];
                        if (v > best || best_at < 0 || isnan(v)) best = v, best_at = ih * W + iw;
                    }
                }
                y[q * OH * OW + (size_t)oh * OW + ow] = best;
                am[q * OH * OW + (size_t)oh * OW + ow] = best_at;
            }
    }
    s = kd_finish_op("max_pool2d", max_pool_backward, out, 1, &x, 1, &arg, NULL);
    kd_tensor_release(arg);
    return s;
}

/* ---- average: ints = kernel h/w, stride h/w, pad h/w, exclude_pad ------- */

/* The divisor of the window at (oh, ow), as PyTorch's: the window clipped
 * to the padded input (it reaches past it only in ceil mode), or to the
 * input itself with exclude_pad. */
static float window_divisor(const int *k, int H, int W, int oh, int ow) {
    int h0 = oh * k[2] - k[4], w0 = ow * k[3] - k[5];
    int h1 = h0 + k[0] < H + k[4] ? h0 + k[0] : H + k[4], w1 = w0 + k[1] < W + k[5] ? w0 + k[1] : W + k[5];
    if (k[6]) {
        h0 = h0 < 0 ? 0 : h0, w0 = w0 < 0 ? 0 : w0;
        h1 = h1 > H ? H : h1, w1 = w1 > W ? W : w1;
    }
    int n = (h1 - h0) * (w1 - w0);
    return (float)(n > 0 ? n : 1);
}

static kd_status avg_pool_backward(kd_node *node, const kd_tensor *grad_output,
                                   kd_tensor *const *grad_inputs) {
    const int *k = node->ints;
    const kd_edge *e = &node->inputs[0];
    int H = e->shape[2], W = e->shape[3], OH = grad_output->shape[2], OW = grad_output->shape[3];
    size_t planes = (size_t)e->shape[0] * e->shape[1];
    const float *g = kd_f32(grad_output);
    float *gx = kd_f32(grad_inputs[0]);
#pragma omp parallel for schedule(static) if (planes * H * W > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float share = g[q * OH * OW + (size_t)oh * OW + ow] * (1.0f / window_divisor(k, H, W, oh, ow));
                for (int ih = oh * k[2] - k[4]; ih < oh * k[2] - k[4] + k[0]; ih++)
                    for (int iw = ow * k[3] - k[5]; iw < ow * k[3] - k[5] + k[1]; iw++)
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) gx[q * H * W + (size_t)ih * W + iw] += share;
            }
    return KD_OK;
}

kd_status kd_avg_pool2d(kd_tensor *x, const kd_pool_params *p, kd_tensor **out) {
    kd_status s = pool_begin("avg_pool2d", x, p, out);
    if (s) return s;
    int H = x->shape[2], W = x->shape[3], OH = (*out)->shape[2], OW = (*out)->shape[3];
    size_t planes = (size_t)x->shape[0] * x->shape[1];
    int k[7] = {p->kernel_h, p->kernel_w, p->stride_h, p->stride_w, p->pad_h, p->pad_w, p->exclude_pad};
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (planes * H * W > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float acc = 0;
                for (int ih = oh * p->stride_h - p->pad_h; ih < oh * p->stride_h - p->pad_h + p->kernel_h; ih++)
                    for (int iw = ow * p->stride_w - p->pad_w; iw < ow * p->stride_w - p->pad_w + p->kernel_w; iw++)
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) acc += in[q * H * W + (size_t)ih * W + iw];
                y[q * OH * OW + (size_t)oh * OW + ow] = acc * (1.0f / window_divisor(k, H, W, oh, ow));
            }
    kd_node *node;
    s = kd_finish_op("avg_pool2d", avg_pool_backward, out, 1, &x, 0, NULL, &node);
    if (node)
        for (int i = 0; i < 7; i++) node->ints[i] = k[i];
    return s;
}

/* ---- adaptive average: cell i of n over a length L spans
 * [floor(i L / n), ceil((i + 1) L / n)), as in PyTorch; never empty, also
 * for n > L. */

static inline int cell_start(int i, int n, int length) { return (int)((long)i * length / n); }
static inline int cell_end(int i, int n, int length) {
    return (int)(((long)(i + 1) * length + n - 1) / n);
}

static kd_status adaptive_backward(kd_node *node, const kd_tensor *grad_output,
                                   kd_tensor *const *grad_inputs) {
    const kd_edge *e = &node->inputs[0];
    int H = e->shape[2], W = e->shape[3], OH = grad_output->shape[2], OW = grad_output->shape[3];
    size_t planes = (size_t)e->shape[0] * e->shape[1];
    const float *g = kd_f32(grad_output);
    float *gx = kd_f32(grad_inputs[0]);
#pragma omp parallel for schedule(static) if (planes * H * W > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (int oh = 0; oh < OH; oh++) {
            int h0 = cell_start(oh, OH, H), h1 = cell_end(oh, OH, H);
            for (int ow = 0; ow < OW; ow++) {
                int w0 = cell_start(ow, OW, W), w1 = cell_end(ow, OW, W);
                float share = g[q * OH * OW + (size_t)oh * OW + ow] / (float)((h1 - h0) * (w1 - w0));
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) gx[q * H * W + (size_t)ih * W + iw] += share;
            }
        }
    return KD_OK;
}

kd_status kd_adaptive_avg_pool2d(kd_tensor *x, int out_h, int out_w, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("adaptive_avg_pool2d", "input", x)) ||
        (s = kd_check_ndim("adaptive_avg_pool2d", "input", x, 4)))
        return s;
    int H = x->shape[2], W = x->shape[3];
    /* a grid finer than the input is allowed, as in PyTorch: its cells
     * overlap (PSPNet's 6x6 bins on the small maps of small crops) */
    if (out_h < 1 || out_w < 1 || out_h > 4096 || out_w > 4096)
        return kd_fail(KD_ERR_SHAPE, "adaptive_avg_pool2d: grid %dx%d must be at least 1x1 and at "
                       "most 4096x4096 (input %s)", out_h, out_w, kd_shape_str(x));
    int shape[4] = {x->shape[0], x->shape[1], out_h, out_w};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    size_t planes = (size_t)x->shape[0] * x->shape[1];
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (planes * H * W > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (int oh = 0; oh < out_h; oh++) {
            int h0 = cell_start(oh, out_h, H), h1 = cell_end(oh, out_h, H);
            for (int ow = 0; ow < out_w; ow++) {
                int w0 = cell_start(ow, out_w, W), w1 = cell_end(ow, out_w, W);
                double acc = 0;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) acc += in[q * H * W + (size_t)ih * W + iw];
                y[q * out_h * out_w + (size_t)oh * out_w + ow] = (float)(acc / ((h1 - h0) * (w1 - w0)));
            }
        }
    return kd_finish_op("adaptive_avg_pool2d", adaptive_backward, out, 1, &x, 0, NULL, NULL);
}
