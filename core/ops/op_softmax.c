/* op_softmax.c - softmax and log-softmax over channels with a temperature.
 * Channels of a pixel sit HW apart, so the kernel works on a block of pixels
 * at a time with the channel loop outside: the inner loops run over adjacent
 * pixels and vectorise. */
#include <math.h>

#include "internal.h"

void kd_logsumexp_pixels(const float *x, int channels, size_t plane, size_t p0, size_t p1,
                         float inv_t, float *lse) {
    float sum[KD_PIXEL_BLOCK];
    size_t n = p1 - p0;
    for (size_t i = 0; i < n; i++) lse[i] = x[p0 + i] * inv_t, sum[i] = 0;
    for (int c = 1; c < channels; c++) {
        const float *row = x + (size_t)c * plane + p0;
        for (size_t i = 0; i < n; i++) lse[i] = kd_max(lse[i], row[i] * inv_t);
    }
    for (int c = 0; c < channels; c++) {
        const float *row = x + (size_t)c * plane + p0;
        for (size_t i = 0; i < n; i++) sum[i] += kd_fast_exp(row[i] * inv_t - lse[i]);
    }
    for (size_t i = 0; i < n; i++) lse[i] += logf(sum[i]);
}

void kd_log_softmax_pixels(const float *x, int channels, size_t plane, size_t p0, size_t p1,
                           float inv_t, float *out) {
    float lse[KD_PIXEL_BLOCK];
    kd_logsumexp_pixels(x, channels, plane, p0, p1, inv_t, lse);
    for (int c = 0; c < channels; c++) {
        const float *row = x + (size_t)c * plane + p0;
        float *dst = out + (size_t)c * plane + p0;
        for (size_t i = 0; i < p1 - p0; i++) dst[i] = row[i] * inv_t - lse[i];
    }
}

/* Saved: y = the output (probabilities, or log-probabilities when ints[0]).
 * softmax:     dx = y (dy - sum_c dy y) / T
 * log-softmax: dx = (dy - exp(y) sum_c dy) / T */
static kd_status softmax_backward(kd_node *node, const kd_tensor *grad_output,
                                  kd_tensor *const *grad_inputs) {
    const kd_tensor *y = node->saved[0];
    bool is_log = node->ints[0];
    float inv_t = node->floats[0];
    int C = y->shape[1];
    const float *yd = kd_f32(y), *g = kd_f32(grad_output);
    float *gx = kd_f32(grad_inputs[0]);
    FOR_PIXEL_BLOCKS(y, n, p0, p1, {
        size_t base = n * (size_t)C * plane_;
        float dot[KD_PIXEL_BLOCK] = {0};
        for (int c = 0; c < C; c++)
            for (size_t p = p0; p < p1; p++) {
                size_t i = base + (size_t)c * plane_ + p;
                dot[p - p0] += is_log ? g[i] : g[i] * yd[i];
            }
        for (int c = 0; c < C; c++)
            for (size_t p = p0; p < p1; p++) {
                size_t i = base + (size_t)c * plane_ + p;
                float d = is_log ? g[i] - kd_fast_exp(yd[i]) * dot[p - p0] : yd[i] * (g[i] - dot[p - p0]);
                gx[i] += d * inv_t;
            }
    });
    return KD_OK;
}

static kd_status softmax_any(const char *op, bool is_log, kd_tensor *x, float temperature,
                             kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32(op, "input", x)) || (s = kd_check_ndim(op, "input", x, 4))) return s;
    if (!(temperature > 0))
        return kd_fail(KD_ERR_ARG, "%s: temperature %g must be > 0", op, temperature);
    if (x->shape[1] < 1) return kd_fail(KD_ERR_SHAPE, "%s: input %s has no channels", op, kd_shape_str(x));
    if ((s = kd_tensor_new_like(x, out))) return s;
    int C = x->shape[1];
    float inv_t = 1.0f / temperature;
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
    FOR_PIXEL_BLOCKS(x, n, p0, p1, {
        size_t base = n * (size_t)C * plane_;
        kd_log_softmax_pixels(in + base, C, plane_, p0, p1, inv_t, y + base);
        if (!is_log)
            for (int c = 0; c < C; c++)
                for (size_t p = p0; p < p1; p++) {
                    float *v = y + base + (size_t)c * plane_ + p;
                    *v = kd_fast_exp(*v);
                }
    });
    kd_node *node;
    s = kd_finish_op(op, softmax_backward, out, 1, &x, 1, out, &node);
    if (node) {
        node->ints[0] = is_log;
        node->floats[0] = inv_t;
    }
    return s;
}

kd_status kd_softmax(kd_tensor *x, float temperature, kd_tensor **out) {
    return softmax_any("softmax", false, x, temperature, out);
}

kd_status kd_log_softmax(kd_tensor *x, float temperature, kd_tensor **out) {
    return softmax_any("log_softmax", true, x, temperature, out);
}
