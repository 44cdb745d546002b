/* op_conv_bn.c - inference's convolution, batch norm, residual sum and ReLU
 * as one convolution, which PyTorch's eager mode runs as three or four ops.
 * A batch norm on its running statistics is an affine map per channel,
 *   bn(y) = y * scale + shift,  scale = gamma / sqrt(var + eps),
 *   shift = beta - mean * scale,
 * so it folds into the convolution before it: weights w * scale (per output
 * channel) and bias b * scale + shift. The sum and the ReLU then run in the
 * convolution's epilogue (oneDNN's post-ops; on the portable path, one pass
 * after it). Folding rounds the weights once more, so the values are those
 * of the ops one by one up to float rounding, not bit for bit. No gradient
 * goes through it: training runs the ops one by one. */
#include "internal.h"

static kd_status check_vector(const char *what, const kd_tensor *v, int channels) {
    if (!v) return KD_OK;
    kd_status s = kd_check_f32("conv2d_bn", what, v);
    if (s) return s;
    if (v->ndim != 1 || v->shape[0] != channels)
        return kd_fail(KD_ERR_SHAPE, "conv2d_bn: %s %s does not match the %d output channels", what, kd_shape_str(v),
                       channels);
    return KD_OK;
}

static kd_status check_arguments(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_folded_bn *bn,
                                 kd_tensor *residual) {
    kd_status s;
    if ((s = kd_check_f32("conv2d_bn", "weight", w)) || (s = kd_check_ndim("conv2d_bn", "weight", w, 4))) return s;
    int cout = w->shape[0];
    if (!bn->running_mean || !bn->running_var)
        return kd_fail(KD_ERR_ARG, "conv2d_bn: the batch norm needs its running statistics (running_mean, running_var)");
    if ((s = check_vector("batch norm weight", bn->weight, cout)) || (s = check_vector("batch norm bias", bn->bias, cout)) ||
        (s = check_vector("running_mean", bn->running_mean, cout)) ||
        (s = check_vector("running_var", bn->running_var, cout)) || (s = check_vector("bias", b, cout)))
        return s;
    if (!(bn->eps > 0)) return kd_fail(KD_ERR_ARG, "conv2d_bn: eps %g must be > 0", bn->eps);
    kd_tensor *all[] = {x, w, b, bn->weight, bn->bias, residual};
    if (kd_grad_enabled())
        for (int i = 0; i < 6; i++)
            if (kd_needs_grad(all[i]))
                return kd_fail(KD_ERR_STATE, "conv2d_bn: inference only, and an input needs a gradient "
                               "(run conv2d and batch_norm, or turn grad mode off)");
    return KD_OK;
}

kd_status kd_conv2d_bn(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_folded_bn *bn, kd_tensor *residual,
                       bool relu, const kd_conv_params *p, kd_tensor **out) {
    kd_status s = check_arguments(x, w, b, bn, residual);
    if (s) return s;
    int cout = w->shape[0];
    size_t per_channel = kd_numel(w) / (size_t)cout;
    kd_tensor *folded_w, *folded_b;
    if ((s = kd_tensor_new_like(w, &folded_w))) return s;
    if ((s = kd_tensor_new(KD_F32, 1, &cout, &folded_b))) {
        kd_tensor_release(folded_w);
        return s;
    }
    const float *gamma = bn->weight ? kd_f32(bn->weight) : NULL, *beta = bn->bias ? kd_f32(bn->bias) : NULL;
    const float *mean = kd_f32(bn->running_mean), *var = kd_f32(bn->running_var), *wi = kd_f32(w);
    const float *bi = b ? kd_f32(b) : NULL;
    float *wo = kd_f32(folded_w), *bo = kd_f32(folded_b);
    /* in parallel: a frozen teacher folds all its weights at every forward
     * (the method's deeplabv3plus teacher, twice a step of its students) */
#pragma omp parallel for schedule(static) if (kd_numel(w) > KD_PARALLEL_MIN)
    for (int c = 0; c < cout; c++) {
        float scale = kd_bn_scale(gamma, c, kd_bn_invstd(var[c], bn->eps));
        float shift = kd_bn_shift(beta, c, mean[c], scale);
        for (size_t i = 0; i < per_channel; i++) wo[c * per_channel + i] = wi[c * per_channel + i] * scale;
        bo[c] = (bi ? bi[c] * scale : 0.0f) + shift;
    }
    kd_conv_epilogue e = {.bias = folded_b, .residual = residual, .relu = relu};
    s = kd_conv2d_with_epilogue(x, folded_w, p, &e, out);
    kd_tensor_release(folded_w);
    kd_tensor_release(folded_b);
    return s;
}
