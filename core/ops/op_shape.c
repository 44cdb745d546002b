/* op_shape.c - ops that move elements without computing on them: reshape and
 * batch slices (zero-copy views), clone, the horizontal flip, and concat/slice
 * along channels. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* grad x += grad out, over the same number of elements (reshape, clone). */
static kd_status same_elements_backward(kd_node *node, const kd_tensor *grad_output,
                                        kd_tensor *const *grad_inputs) {
    (void)node;
    kd_tensor *gx = grad_inputs[0];
    size_t n = kd_numel(grad_output);
    const float *g = kd_f32(grad_output);
    float *dst = kd_f32(gx);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) dst[i] += g[i];
    return KD_OK;
}

kd_status kd_reshape(kd_tensor *x, int ndim, const int *shape, kd_tensor **out) {
    if (ndim < 1 || ndim > KD_MAX_DIMS)
        return kd_fail(KD_ERR_SHAPE, "reshape: %d dimensions, must be 1 to %d", ndim, KD_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return kd_fail(KD_ERR_SHAPE, "reshape: dimension %d has negative size %d", i, shape[i]);
    if (kd_shape_numel(ndim, shape) != kd_numel(x)) {
        char want[64];
        int len = 0;
        for (int i = 0; i < ndim; i++) len += snprintf(want + len, 64 - (size_t)len, i ? "x%d" : "%d", shape[i]);
        return kd_fail(KD_ERR_SHAPE, "reshape: cannot view %s (%zu elements) as %s", kd_shape_str(x),
                       kd_numel(x), want);
    }
    kd_status s = kd_detach(x, out);
    if (s) return s;
    (*out)->ndim = ndim;
    memset((*out)->shape, 0, sizeof (*out)->shape);
    memcpy((*out)->shape, shape, sizeof(int) * (size_t)ndim);
    if (x->dtype != KD_F32) return KD_OK; /* integer views carry no gradient */
    return kd_finish_op("reshape", same_elements_backward, out, 1, &x, 0, NULL, NULL);
}

/* grad x[start : start+length] += grad out; ints[0] = start * inner. */
static kd_status narrow_batch_backward(kd_node *node, const kd_tensor *grad_output,
                                       kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    const float *g = kd_f32(grad_output);
    float *dst = kd_f32(grad_inputs[0]) + (size_t)node->ints[0] * (size_t)node->ints[1];
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) dst[i] += g[i];
    return KD_OK;
}

kd_status kd_narrow_batch(kd_tensor *x, int start, int length, kd_tensor **out) {
    if (start < 0 || length < 0 || start + length > x->shape[0])
        return kd_fail(KD_ERR_SHAPE, "narrow_batch: rows %d..%d are outside the batch of %s",
                       start, start + length - 1, kd_shape_str(x));
    size_t inner = x->shape[0] ? kd_numel(x) / (size_t)x->shape[0] : 0;
    kd_status s = kd_detach(x, out);
    if (s) return s;
    (*out)->offset += (size_t)start * inner;
    (*out)->shape[0] = length;
    if (x->dtype != KD_F32) return KD_OK;
    kd_node *node;
    s = kd_finish_op("narrow_batch", narrow_batch_backward, out, 1, &x, 0, NULL, &node);
    if (node) {
        node->ints[0] = start; /* element offset = start * inner; inner fits an int */
        node->ints[1] = (int)inner;
    }
    return s;
}

kd_status kd_clone(kd_tensor *x, kd_tensor **out) {
    kd_status s = kd_tensor_new_like(x, out);
    if (s) return s;
    memcpy(kd_data(*out), kd_data(x), kd_numel(x) * kd_dtype_size(x->dtype));
    if (x->dtype != KD_F32) return KD_OK;
    return kd_finish_op("clone", same_elements_backward, out, 1, &x, 0, NULL, NULL);
}

/* ---- horizontal flip -------------------------------------------------------
 * out[..., w] = x[..., W-1-w] along the last dimension: the mirror image, for
 * test-time augmentation (a prediction averaged with its mirror's). */

static void flip_rows(float *dst, const float *src, size_t rows, int width, bool add) {
#pragma omp parallel for schedule(static) if (rows * (size_t)width > KD_PARALLEL_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *s = src + r * (size_t)width;
        float *d = dst + r * (size_t)width;
        if (add)
            for (int w = 0; w < width; w++) d[w] += s[width - 1 - w];
        else
            for (int w = 0; w < width; w++) d[w] = s[width - 1 - w];
    }
}

/* The flip is its own transpose: grad x += flip(grad out). */
static kd_status flip_width_backward(kd_node *node, const kd_tensor *grad_output,
                                     kd_tensor *const *grad_inputs) {
    (void)node;
    int width = grad_output->shape[grad_output->ndim - 1];
    size_t rows = width ? kd_numel(grad_output) / (size_t)width : 0;
    flip_rows(kd_f32(grad_inputs[0]), kd_f32(grad_output), rows, width, true);
    return KD_OK;
}

kd_status kd_flip_width(kd_tensor *x, kd_tensor **out) {
    kd_status s = kd_check_f32("flip_width", "input", x);
    if (s) return s;
    if ((s = kd_tensor_new_like(x, out))) return s;
    int width = x->shape[x->ndim - 1];
    size_t rows = width ? kd_numel(x) / (size_t)width : 0;
    flip_rows(kd_f32(*out), kd_f32(x), rows, width, false);
    return kd_finish_op("flip_width", flip_width_backward, out, 1, &x, 0, NULL, NULL);
}

/* ---- channels -----------------------------------------------------------------
 * Each image's channels are contiguous blocks of H*W: a concat or slice copies
 * whole blocks per image. */

static void copy_channel_block(float *dst, int dst_channels, int dst_start, const float *src,
                               int src_channels, int src_start, int channels, int batch,
                               size_t plane, bool add) {
    for (int n = 0; n < batch; n++) {
        float *d = dst + ((size_t)n * (size_t)dst_channels + (size_t)dst_start) * plane;
        const float *s = src + ((size_t)n * (size_t)src_channels + (size_t)src_start) * plane;
        size_t count = (size_t)channels * plane;
        if (add) {
#pragma omp parallel for schedule(static) if (count > KD_PARALLEL_MIN)
            for (size_t i = 0; i < count; i++) d[i] += s[i];
        } else {
            memcpy(d, s, count * sizeof(float));
        }
    }
}

/* grad out N x sum(C_i) x H x W; grad input i += its channel block. */
static kd_status concat_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    int total = grad_output->shape[1], start = 0;
    size_t plane = (size_t)grad_output->shape[2] * (size_t)grad_output->shape[3];
    for (int i = 0; i < node->n_inputs; i++) {
        int channels = node->inputs[i].shape[1];
        if (grad_inputs[i])
            copy_channel_block(kd_f32(grad_inputs[i]), channels, 0, kd_f32(grad_output), total,
                               start, channels, grad_output->shape[0], plane, true);
        start += channels;
    }
    return KD_OK;
}

kd_status kd_concat_channels(int count, kd_tensor *const *xs, kd_tensor **out) {
    if (count < 1 || count > KD_MAX_INPUTS)
        return kd_fail(KD_ERR_ARG, "concat_channels: %d tensors, must be 1 to %d", count,
                       KD_MAX_INPUTS);
    kd_status s;
    int total = 0;
    for (int i = 0; i < count; i++) {
        if ((s = kd_check_f32("concat_channels", "input", xs[i])) ||
            (s = kd_check_ndim("concat_channels", "input", xs[i], 4)))
            return s;
        if (xs[i]->shape[0] != xs[0]->shape[0] || xs[i]->shape[2] != xs[0]->shape[2] ||
            xs[i]->shape[3] != xs[0]->shape[3])
            return kd_fail(KD_ERR_SHAPE, "concat_channels: input %d is %s, input 1 is %s; "
                           "only channels may differ", i + 1, kd_shape_str(xs[i]),
                           kd_shape_str(xs[0]));
        total += xs[i]->shape[1];
    }
    int shape[4] = {xs[0]->shape[0], total, xs[0]->shape[2], xs[0]->shape[3]};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    size_t plane = (size_t)shape[2] * (size_t)shape[3];
    for (int i = 0, start = 0; i < count; start += xs[i]->shape[1], i++)
        copy_channel_block(kd_f32(*out), total, start, kd_f32(xs[i]), xs[i]->shape[1], 0,
                           xs[i]->shape[1], shape[0], plane, false);
    return kd_finish_op("concat_channels", concat_backward, out, count, xs, 0, NULL, NULL);
}

/* grad x[:, start : start+length] += grad out. */
static kd_status slice_backward(kd_node *node, const kd_tensor *grad_output,
                                kd_tensor *const *grad_inputs) {
    const kd_edge *e = &node->inputs[0];
    size_t plane = (size_t)e->shape[2] * (size_t)e->shape[3];
    copy_channel_block(kd_f32(grad_inputs[0]), e->shape[1], node->ints[0], kd_f32(grad_output),
                       grad_output->shape[1], 0, grad_output->shape[1], e->shape[0], plane, true);
    return KD_OK;
}

kd_status kd_slice_channels(kd_tensor *x, int start, int length, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("slice_channels", "input", x)) ||
        (s = kd_check_ndim("slice_channels", "input", x, 4)))
        return s;
    if (start < 0 || length < 1 || start + length > x->shape[1])
        return kd_fail(KD_ERR_SHAPE, "slice_channels: channels %d..%d are outside input %s",
                       start, start + length - 1, kd_shape_str(x));
    int shape[4] = {x->shape[0], length, x->shape[2], x->shape[3]};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    size_t plane = (size_t)shape[2] * (size_t)shape[3];
    copy_channel_block(kd_f32(*out), length, 0, kd_f32(x), x->shape[1], start, length, shape[0],
                       plane, false);
    kd_node *node;
    s = kd_finish_op("slice_channels", slice_backward, out, 1, &x, 0, NULL, &node);
    if (node) node->ints[0] = start;
    return s;
}

/* ---- spatial windows (no grad) ------------------------------------------------ */

kd_status kd_crop2d(const kd_tensor *x, int top, int left, int h, int w, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("crop2d", "input", x)) || (s = kd_check_ndim("crop2d", "input", x, 4))) return s;
    if (h < 1 || w < 1) return kd_fail(KD_ERR_SHAPE, "crop2d: window %dx%d is empty", h, w);
    int shape[4] = {x->shape[0], x->shape[1], h, w};
    if ((s = kd_tensor_zeros(KD_F32, 4, shape, out))) return s;
    int H = x->shape[2], W = x->shape[3];
    size_t planes = (size_t)shape[0] * shape[1];
    const float *src = kd_f32(x);
    float *dst = kd_f32(*out);
    int x0 = left < 0 ? -left : 0, x1 = left + w > W ? W - left : w;
    for (size_t q = 0; q < planes && x1 > x0; q++)
        for (int y = 0; y < h; y++) {
            int sy = top + y;
            if (sy < 0 || sy >= H) continue;
            memcpy(dst + (q * h + y) * w + x0, src + (q * H + sy) * W + left + x0, sizeof(float) * (size_t)(x1 - x0));
        }
    return KD_OK;
}

kd_status kd_add_window(kd_tensor *dst, const kd_tensor *src, int top, int left) {
    kd_status s;
    if ((s = kd_check_f32("add_window", "destination", dst)) || (s = kd_check_f32("add_window", "window", src)) ||
        (s = kd_check_ndim("add_window", "destination", dst, 4)) || (s = kd_check_ndim("add_window", "window", src, 4)))
        return s;
    if (dst->shape[0] != src->shape[0] || dst->shape[1] != src->shape[1])
        return kd_fail(KD_ERR_SHAPE, "add_window: window %s and destination %s differ in batch or channels",
                       kd_shape_str(src), kd_shape_str(dst));
    int H = dst->shape[2], W = dst->shape[3], h = src->shape[2], w = src->shape[3];
    size_t planes = (size_t)src->shape[0] * src->shape[1];
    float *d = kd_f32(dst);
    const float *sr = kd_f32(src);
    for (size_t q = 0; q < planes; q++)
        for (int y = 0; y < h; y++) {
            int dy = top + y;
            if (dy < 0 || dy >= H) continue;
            for (int xx = 0; xx < w; xx++) {
                int dx = left + xx;
                if (dx >= 0 && dx < W) d[(q * H + dy) * W + dx] += sr[(q * h + y) * w + xx];
            }
        }
    kd_modified(dst);
    return KD_OK;
}
