/* op_norm.c - 2-D batch normalisation (Ioffe & Szegedy), PyTorch semantics:
 * biased variance to normalise, unbiased variance into the running estimate.
 * Every loop is parallel over channels, so each channel's sums run in one
 * fixed order whatever the thread count. */
#include <math.h>

#include "internal.h"

/* Saved: x (N x C x H x W), weight (C) or NULL, mean (C), invstd (C).
 * ints[0]: training (batch statistics, so gradients flow through them). */
static kd_status batch_norm_backward(kd_node *node, const kd_tensor *grad_output,
                                     kd_tensor *const *grad_inputs) {
    const kd_tensor *x = node->saved[0], *w = node->saved[1];
    const float *mean = kd_f32(node->saved[2]), *invstd = kd_f32(node->saved[3]);
    bool training = node->ints[0];
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3], M = (size_t)N * HW;
    const float *g = kd_f32(grad_output), *in = kd_f32(x);
    float *gx = grad_inputs[0] ? kd_f32(grad_inputs[0]) : NULL;
    float *gw = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
    float *gb = grad_inputs[2] ? kd_f32(grad_inputs[2]) : NULL;
#pragma omp parallel for schedule(static) if (M * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        double sum_dy = 0, sum_dy_xhat = 0;
        float mu = mean[c], is = invstd[c];
        for (int n = 0; n < N; n++) {
            size_t base = ((size_t)n * C + c) * HW;
            for (size_t i = base; i < base + HW; i++) {
                sum_dy += g[i];
                sum_dy_xhat += (double)g[i] * (in[i] - mu) * is;
            }
        }
        if (gw) gw[c] += (float)sum_dy_xhat;
        if (gb) gb[c] += (float)sum_dy;
        if (!gx) continue;
        float scale = (w ? kd_f32(w)[c] : 1.0f) * is;
        float mean_dy = (float)(sum_dy / (double)M), mean_dy_xhat = (float)(sum_dy_xhat / (double)M);
        for (int n = 0; n < N; n++) {
            size_t base = ((size_t)n * C + c) * HW;
            for (size_t i = base; i < base + HW; i++) {
                if (training)
                    gx[i] += scale * (g[i] - mean_dy - (in[i] - mu) * is * mean_dy_xhat);
                else
                    gx[i] += scale * g[i];
            }
        }
    }
    return KD_OK;
}

static kd_status check_vector(const char *what, const kd_tensor *v, const kd_tensor *x) {
    if (!v) return KD_OK;
    kd_status s = kd_check_f32("batch_norm2d", what, v);
    if (s) return s;
    if (v->ndim != 1 || v->shape[0] != x->shape[1])
        return kd_fail(KD_ERR_SHAPE, "batch_norm2d: %s %s does not match the channels of input %s",
                       what, kd_shape_str(v), kd_shape_str(x));
    return KD_OK;
}

kd_status kd_batch_norm2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                          kd_tensor *running_mean, kd_tensor *running_var, bool training,
                          float momentum, float eps, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("batch_norm2d", "input", x)) ||
        (s = kd_check_ndim("batch_norm2d", "input", x, 4)) ||
        (s = check_vector("weight", weight, x)) || (s = check_vector("bias", bias, x)) ||
        (s = check_vector("running_mean", running_mean, x)) ||
        (s = check_vector("running_var", running_var, x)))
        return s;
    if (!training && (!running_mean || !running_var))
        return kd_fail(KD_ERR_STATE, "batch_norm2d: evaluation mode needs running statistics");
    if ((running_mean == NULL) != (running_var == NULL))
        return kd_fail(KD_ERR_ARG, "batch_norm2d: running_mean and running_var go together");
    if (!(eps > 0) || !(momentum >= 0 && momentum <= 1))
        return kd_fail(KD_ERR_ARG, "batch_norm2d: eps %g must be > 0 and momentum %g in [0, 1]",
                       eps, momentum);
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3], M = (size_t)N * HW;
    if (training && M < 2)
        return kd_fail(KD_ERR_SHAPE, "batch_norm2d: training needs more than one value per "
                       "channel, input is %s", kd_shape_str(x));
    kd_tensor *mean, *invstd;
    int cshape[1] = {C};
    if ((s = kd_tensor_new(KD_F32, 1, cshape, &mean))) return s;
    if ((s = kd_tensor_new(KD_F32, 1, cshape, &invstd)) || (s = kd_tensor_new_like(x, out))) {
        kd_tensor_release(mean);
        kd_tensor_release(invstd);
        return s;
    }
    const float *in = kd_f32(x);
    float *y = kd_f32(*out), *mu = kd_f32(mean), *is = kd_f32(invstd);
#pragma omp parallel for schedule(static) if (M * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        if (training) { /* two passes: the one-pass formula loses digits */
            double sum = 0, sq = 0;
            for (int n = 0; n < N; n++)
                for (size_t i = ((size_t)n * C + c) * HW, e = i + HW; i < e; i++) sum += in[i];
            double m = sum / (double)M;
            for (int n = 0; n < N; n++)
                for (size_t i = ((size_t)n * C + c) * HW, e = i + HW; i < e; i++)
                    sq += (in[i] - m) * (in[i] - m);
            double var = sq / (double)M;
            mu[c] = (float)m;
            is[c] = (float)(1.0 / sqrt(var + eps));
            if (running_mean) {
                float *rm = kd_f32(running_mean), *rv = kd_f32(running_var);
                rm[c] = (float)((1 - momentum) * rm[c] + momentum * m);
                rv[c] = (float)((1 - momentum) * rv[c] + momentum * var * (double)M / (double)(M - 1));
            }
        } else {
            mu[c] = kd_f32(running_mean)[c];
            is[c] = (float)(1.0 / sqrt((double)kd_f32(running_var)[c] + eps));
        }
        float scale = (weight ? kd_f32(weight)[c] : 1.0f) * is[c];
        float shift = (bias ? kd_f32(bias)[c] : 0.0f) - mu[c] * scale;
        for (int n = 0; n < N; n++)
            for (size_t i = ((size_t)n * C + c) * HW, e = i + HW; i < e; i++)
                y[i] = in[i] * scale + shift;
    }
    kd_tensor *inputs[3] = {x, weight, bias}, *saved[4] = {x, weight, mean, invstd};
    kd_node *node;
    s = kd_finish_op("batch_norm2d", batch_norm_backward, out, 3, inputs, 4, saved, &node);
    if (node) node->ints[0] = training;
    kd_tensor_release(mean);
    kd_tensor_release(invstd);
    return s;
}
