/* test_gradcheck.c - the one gradient-check table: every differentiable op,
 * with its shapes, finite-difference step and tolerance.
 *
 * For each row the inputs are made from a fixed seed, the op runs, and the
 * analytic gradient of f = sum(out * R) (R a fixed random tensor) is compared
 * with central differences (f(x+h) - f(x-h)) / 2h on up to SAMPLES elements
 * of each float input. Error is relative: |a - n| / max(|a|, |n|, 1e-2).
 * Where the two one-sided differences disagree the point sits on a kink
 * (ReLU at 0, a max-pool tie) and is skipped; a row with no point left fails. */
#include <math.h>
#include <stdlib.h>

#include "check.h"

#define SAMPLES 24
#define SEED 20261124u

typedef enum { RANDN, POSITIVE, LABELS, WEIGHTS, ONES } input_kind;

typedef struct {
    int ndim;
    int shape[4];
    input_kind kind;
    bool differentiable;
} input_spec;

typedef kd_status (*op_fn)(kd_tensor **in, kd_tensor **out);

typedef struct {
    const char *name;
    op_fn run;
    int n_inputs;
    input_spec inputs[4];
    float step, tolerance;
} grad_case;

/* ---- one wrapper per row: the op with its fixed parameters ---------------- */

static kd_status run_add(kd_tensor **in, kd_tensor **o) { return kd_add(in[0], in[1], o); }
static kd_status run_sub(kd_tensor **in, kd_tensor **o) { return kd_sub(in[0], in[1], o); }
static kd_status run_mul(kd_tensor **in, kd_tensor **o) { return kd_mul(in[0], in[1], o); }
static kd_status run_div(kd_tensor **in, kd_tensor **o) { return kd_div(in[0], in[1], o); }
static kd_status run_affine(kd_tensor **in, kd_tensor **o) { return kd_affine_scalar(in[0], -1.5f, 0.25f, o); }
static kd_status run_rdiv(kd_tensor **in, kd_tensor **o) { return kd_rdiv_scalar(in[0], 2.0f, o); }
static kd_status run_cadd(kd_tensor **in, kd_tensor **o) { return kd_channel_add(in[0], in[1], o); }
static kd_status run_csub(kd_tensor **in, kd_tensor **o) { return kd_channel_sub(in[0], in[1], o); }
static kd_status run_cmul(kd_tensor **in, kd_tensor **o) { return kd_channel_mul(in[0], in[1], o); }
static kd_status run_cdiv(kd_tensor **in, kd_tensor **o) { return kd_channel_div(in[0], in[1], o); }
static kd_status run_exp(kd_tensor **in, kd_tensor **o) { return kd_exp(in[0], o); }
static kd_status run_log(kd_tensor **in, kd_tensor **o) { return kd_log(in[0], o); }
static kd_status run_relu(kd_tensor **in, kd_tensor **o) { return kd_relu(in[0], o); }
static kd_status run_relu6(kd_tensor **in, kd_tensor **o) { /* inputs spread over both kinks, 0 and 6 */
    kd_tensor *spread = NULL;
    kd_status s = kd_affine_scalar(in[0], 4.0f, 3.0f, &spread);
    if (!s) s = kd_relu6(spread, o);
    kd_tensor_release(spread);
    return s;
}
static kd_status run_leaky(kd_tensor **in, kd_tensor **o) { return kd_leaky_relu(in[0], 0.1f, o); }
static kd_status run_sigmoid(kd_tensor **in, kd_tensor **o) { return kd_sigmoid(in[0], o); }
static kd_status run_tanh(kd_tensor **in, kd_tensor **o) { return kd_tanh(in[0], o); }
static kd_status run_dropout(kd_tensor **in, kd_tensor **o) {
    kd_rng rng; /* the same mask at every evaluation */
    kd_rng_seed(&rng, 7);
    return kd_dropout2d(in[0], 0.4f, &rng, o);
}
static kd_status run_sum(kd_tensor **in, kd_tensor **o) { return kd_sum(in[0], o); }
static kd_status run_mean(kd_tensor **in, kd_tensor **o) { return kd_mean(in[0], o); }
static kd_status run_sum_dims(kd_tensor **in, kd_tensor **o) { return kd_sum_dims(in[0], 0xA, false, o); }
static kd_status run_mean_dims(kd_tensor **in, kd_tensor **o) { return kd_mean_dims(in[0], 0x5, true, o); }
static kd_status run_reshape(kd_tensor **in, kd_tensor **o) {
    int shape[2] = {6, 10};
    return kd_reshape(in[0], 2, shape, o);
}
static kd_status run_narrow(kd_tensor **in, kd_tensor **o) { return kd_narrow_batch(in[0], 1, 2, o); }
static kd_status run_clone(kd_tensor **in, kd_tensor **o) { return kd_clone(in[0], o); }
static kd_status run_flip_width(kd_tensor **in, kd_tensor **o) { return kd_flip_width(in[0], o); }
static kd_status run_concat(kd_tensor **in, kd_tensor **o) { return kd_concat_channels(3, in, o); }
static kd_status run_slice(kd_tensor **in, kd_tensor **o) { return kd_slice_channels(in[0], 1, 3, o); }

static kd_status conv(kd_tensor **in, bool bias, int stride, int pad, int dilation, int groups,
                      kd_tensor **o) {
    kd_conv_params p = {stride, stride, pad, pad, dilation, dilation, groups};
    return kd_conv2d(in[0], in[1], bias ? in[2] : NULL, &p, o);
}
static kd_status run_conv3(kd_tensor **in, kd_tensor **o) { return conv(in, true, 1, 1, 1, 1, o); }
static kd_status run_conv_s2(kd_tensor **in, kd_tensor **o) { return conv(in, false, 2, 1, 1, 1, o); }
static kd_status run_conv_d2(kd_tensor **in, kd_tensor **o) { return conv(in, true, 1, 2, 2, 1, o); }
static kd_status run_conv_d4(kd_tensor **in, kd_tensor **o) { return conv(in, false, 1, 4, 4, 1, o); }
static kd_status run_conv_g2(kd_tensor **in, kd_tensor **o) { return conv(in, true, 1, 1, 1, 2, o); }
static kd_status run_conv_dw(kd_tensor **in, kd_tensor **o) { return conv(in, false, 2, 1, 1, 4, o); }
static kd_status run_conv_dw_d2(kd_tensor **in, kd_tensor **o) { return conv(in, true, 1, 2, 2, 3, o); }
static kd_status run_conv_1x1(kd_tensor **in, kd_tensor **o) { return conv(in, true, 1, 0, 1, 1, o); }
static kd_status run_conv_1x1_s2(kd_tensor **in, kd_tensor **o) { return conv(in, false, 2, 0, 1, 1, o); }
static kd_status run_conv_rect(kd_tensor **in, kd_tensor **o) {
    kd_conv_params p = {2, 1, 0, 1, 1, 2, 1}; /* 3x1 kernel, stride 2x1, pad 0x1, dilation 1x2 */
    return kd_conv2d(in[0], in[1], NULL, &p, o);
}
/* stride-1 input gradients run as a convolution of the output gradient
 * with padding (k-1)*d - p: no padding, uneven padding, and a map large
 * enough (64 x 64) to take the one-image-per-GEMM path */
static kd_status run_conv_valid(kd_tensor **in, kd_tensor **o) { return conv(in, false, 1, 0, 1, 1, o); }
static kd_status run_conv_5x3_pad(kd_tensor **in, kd_tensor **o) {
    kd_conv_params p = {1, 1, 1, 0, 1, 1, 1}; /* 5x3 kernel, padding 1x0 */
    return kd_conv2d(in[0], in[1], NULL, &p, o);
}
static kd_status run_bn_train(kd_tensor **in, kd_tensor **o) {
    int c[1] = {3};
    kd_tensor *rm, *rv;
    kd_tensor_zeros(KD_F32, 1, c, &rm);
    kd_tensor_full(KD_F32, 1, c, 1.0, &rv);
    kd_status s = kd_batch_norm2d(in[0], in[1], in[2], rm, rv, true, 0.1f, 1e-5f, o);
    kd_tensor_release(rm);
    kd_tensor_release(rv);
    return s;
}
static kd_status run_bn_eval(kd_tensor **in, kd_tensor **o) {
    return kd_batch_norm2d(in[0], in[1], in[2], in[3], in[3], false, 0.1f, 1e-5f, o);
}
static kd_status run_bn_plain(kd_tensor **in, kd_tensor **o) {
    return kd_batch_norm2d(in[0], NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f, o);
}
/* A ReLU right after a batch norm gives both ops' gradients in one pass
 * (kd_take_batch_norm_input): training, evaluation with a leaky slope, and
 * the batch norm's output used by a second term as well. */
static kd_status bn_then(kd_tensor **in, bool training, float slope, bool shared, kd_tensor **o) {
    int c[1] = {in[0]->shape[1]};
    kd_tensor *rm, *rv, *y = NULL, *z = NULL;
    kd_tensor_zeros(KD_F32, 1, c, &rm);
    kd_tensor_full(KD_F32, 1, c, 1.5, &rv);
    kd_status s = kd_batch_norm2d(in[0], in[1], in[2], rm, rv, training, 0.1f, 1e-5f, &y);
    if (!s) s = kd_leaky_relu(y, slope, shared ? &z : o);
    if (!s && shared) s = kd_mul(z, y, o);
    kd_tensor_release(rm);
    kd_tensor_release(rv);
    kd_tensor_release(y);
    kd_tensor_release(z);
    return s;
}
static kd_status run_bn_relu(kd_tensor **in, kd_tensor **o) { return bn_then(in, true, 0.0f, false, o); }
/* The same as one op (kd_batch_norm2d_relu), in training and evaluation, and
 * its output used again. */
static kd_status bn_relu_fused(kd_tensor **in, bool training, bool shared, kd_tensor **o) {
    int c[1] = {in[0]->shape[1]};
    kd_tensor *rm, *rv, *z = NULL;
    kd_tensor_zeros(KD_F32, 1, c, &rm);
    kd_tensor_full(KD_F32, 1, c, 1.5, &rv);
    kd_status s = kd_batch_norm2d_relu(in[0], in[1], in[2], rm, rv, training, 0.1f, 1e-5f, shared ? &z : o);
    if (!s && shared) s = kd_mul(z, z, o);
    kd_tensor_release(rm);
    kd_tensor_release(rv);
    kd_tensor_release(z);
    return s;
}
static kd_status run_bn_relu_fused(kd_tensor **in, kd_tensor **o) { return bn_relu_fused(in, true, false, o); }
static kd_status run_bn_relu_fused_eval(kd_tensor **in, kd_tensor **o) { return bn_relu_fused(in, false, false, o); }
static kd_status run_bn_relu_fused_shared(kd_tensor **in, kd_tensor **o) { return bn_relu_fused(in, true, true, o); }
static kd_status run_bn_leaky_eval(kd_tensor **in, kd_tensor **o) { return bn_then(in, false, 0.2f, false, o); }
static kd_status run_bn_relu_shared(kd_tensor **in, kd_tensor **o) { return bn_then(in, true, 0.0f, true, o); }
/* A ReLU after an addition (a residual block's end), the sum also used again. */
static kd_status run_add_relu(kd_tensor **in, kd_tensor **o) {
    kd_tensor *sum;
    kd_status s = kd_add(in[0], in[1], &sum);
    if (!s) s = kd_relu(sum, o);
    kd_tensor_release(sum);
    return s;
}
static kd_status run_add_leaky_shared(kd_tensor **in, kd_tensor **o) {
    kd_tensor *sum, *z = NULL;
    kd_status s = kd_add(in[0], in[0], &sum);
    if (!s) s = kd_leaky_relu(sum, 0.3f, &z);
    if (!s) s = kd_mul(z, sum, o);
    kd_tensor_release(sum);
    kd_tensor_release(z);
    return s;
}
static kd_status run_maxpool(kd_tensor **in, kd_tensor **o) {
    kd_pool_params p = {3, 3, 2, 2, 1, 1, false, false};
    return kd_max_pool2d(in[0], &p, o);
}
static kd_status run_avgpool(kd_tensor **in, kd_tensor **o) {
    kd_pool_params p = {3, 2, 2, 1, 1, 1, false, false};
    return kd_avg_pool2d(in[0], &p, o);
}
static kd_status run_maxpool_ceil(kd_tensor **in, kd_tensor **o) {
    kd_pool_params p = {3, 2, 2, 2, 1, 0, true, false};
    return kd_max_pool2d(in[0], &p, o);
}
static kd_status run_avgpool_ceil_exclude(kd_tensor **in, kd_tensor **o) {
    kd_pool_params p = {3, 2, 2, 2, 1, 0, true, true};
    return kd_avg_pool2d(in[0], &p, o);
}
static kd_status run_avgpool_ceil(kd_tensor **in, kd_tensor **o) {
    kd_pool_params p = {2, 3, 2, 2, 0, 1, true, false};
    return kd_avg_pool2d(in[0], &p, o);
}
static kd_status run_adaptive(kd_tensor **in, kd_tensor **o) { return kd_adaptive_avg_pool2d(in[0], 3, 5, o); }
static kd_status run_adaptive_up(kd_tensor **in, kd_tensor **o) { return kd_adaptive_avg_pool2d(in[0], 6, 4, o); }
static kd_status run_global(kd_tensor **in, kd_tensor **o) { return kd_adaptive_avg_pool2d(in[0], 1, 1, o); }
static kd_status run_bilinear_ac(kd_tensor **in, kd_tensor **o) { return kd_resize_bilinear(in[0], 7, 9, true, o); }
static kd_status run_bilinear_up8(kd_tensor **in, kd_tensor **o) { return kd_resize_bilinear(in[0], 16, 24, false, o); }
static kd_status run_bilinear_down(kd_tensor **in, kd_tensor **o) { return kd_resize_bilinear(in[0], 3, 4, false, o); }
static kd_status run_softmax(kd_tensor **in, kd_tensor **o) { return kd_softmax(in[0], 1.0f, o); }
static kd_status run_softmax_t(kd_tensor **in, kd_tensor **o) { return kd_softmax(in[0], 2.5f, o); }
static kd_status run_log_softmax(kd_tensor **in, kd_tensor **o) { return kd_log_softmax(in[0], 0.5f, o); }
static kd_status run_ce(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, NULL, NULL, KD_REDUCE_MEAN};
    return kd_cross_entropy(in[0], in[1], &p, o);
}
static kd_status run_ce_weighted(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, in[2], in[3], KD_REDUCE_MEAN};
    return kd_cross_entropy(in[0], in[1], &p, o);
}
static kd_status run_ce_sum(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, NULL, in[2], KD_REDUCE_SUM};
    return kd_cross_entropy(in[0], in[1], &p, o);
}
static kd_status run_ce_none(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, in[2], NULL, KD_REDUCE_NONE};
    return kd_cross_entropy(in[0], in[1], &p, o);
}
/* Logits upsampled just before the loss: the cross-entropy takes the gradient
 * of both ops in one pass (op_loss_upsampled.c); the finite differences run
 * with grad mode off, through the two ops one by one. */
static kd_status upsampled_ce(kd_tensor **in, int h, int w, bool align, kd_cross_entropy_params *p, kd_tensor **o) {
    kd_tensor *up;
    kd_status s = kd_resize_bilinear(in[0], h, w, align, &up);
    if (s) return s;
    s = kd_cross_entropy(up, in[1], p, o);
    kd_tensor_release(up);
    return s;
}
static kd_status run_ce_up8(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, in[2], in[3], KD_REDUCE_MEAN};
    return upsampled_ce(in, 16, 24, false, &p, o);
}
static kd_status run_ce_up_ac_none(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, NULL, NULL, KD_REDUCE_NONE};
    return upsampled_ce(in, 7, 9, true, &p, o);
}
/* The upsampled logits also feed another term: both gradients reach z. */
static kd_status run_ce_up_shared(kd_tensor **in, kd_tensor **o) {
    kd_cross_entropy_params p = {255, NULL, NULL, KD_REDUCE_NONE};
    kd_tensor *up, *ce = NULL, *channels = NULL;
    kd_status s = kd_resize_bilinear(in[0], 9, 10, false, &up);
    if (s) return s;
    if (!(s = kd_cross_entropy(up, in[1], &p, &ce)) && !(s = kd_sum_dims(up, 0x2, false, &channels)))
        s = kd_add(ce, channels, o);
    kd_tensor_release(up);
    kd_tensor_release(ce);
    kd_tensor_release(channels);
    return s;
}
static kd_status run_kl(kd_tensor **in, kd_tensor **o) { return kd_kl_div(in[0], in[1], 1.0f, false, KD_REDUCE_MEAN, o); }
static kd_status run_kl_t4(kd_tensor **in, kd_tensor **o) { return kd_kl_div(in[0], in[1], 4.0f, true, KD_REDUCE_SUM, o); }
static kd_status run_kl_none(kd_tensor **in, kd_tensor **o) { return kd_kl_div(in[0], in[1], 2.0f, false, KD_REDUCE_NONE, o); }
static kd_status run_mse(kd_tensor **in, kd_tensor **o) { return kd_mse(in[0], in[1], KD_REDUCE_MEAN, o); }
static kd_status run_mse_none(kd_tensor **in, kd_tensor **o) { return kd_mse(in[0], in[1], KD_REDUCE_NONE, o); }
static kd_status run_pairwise(kd_tensor **in, kd_tensor **o) { return kd_pairwise_distill(in[0], in[1], 2, 3, o); }
static kd_status run_pairwise_nodes(kd_tensor **in, kd_tensor **o) { return kd_pairwise_similarity(in[0], in[1], false, o); }

#define F(...) {4, {__VA_ARGS__}, RANDN, true}
#define IN(kind, diff, nd, ...) {nd, {__VA_ARGS__}, kind, diff}

static const grad_case cases[] = {
    {"add", run_add, 2, {F(2, 3, 4, 5), F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"sub", run_sub, 2, {F(2, 3, 4, 5), F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"mul", run_mul, 2, {F(2, 3, 4, 5), F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"div", run_div, 2, {F(2, 3, 4, 5), IN(POSITIVE, true, 4, 2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"affine_scalar", run_affine, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"rdiv_scalar", run_rdiv, 1, {IN(POSITIVE, true, 4, 2, 3, 4, 5)}, 1e-3f, 1e-2f},
    {"channel_add", run_cadd, 2, {F(2, 3, 4, 5), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    {"channel_sub", run_csub, 2, {F(2, 3, 4, 5), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    {"channel_mul", run_cmul, 2, {F(2, 3, 4, 5), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    {"channel_div", run_cdiv, 2, {F(2, 3, 4, 5), IN(POSITIVE, true, 1, 3)}, 1e-3f, 1e-2f},
    {"exp", run_exp, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"log", run_log, 1, {IN(POSITIVE, true, 4, 2, 3, 4, 5)}, 1e-3f, 1e-2f},
    {"relu", run_relu, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"relu6", run_relu6, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"leaky_relu", run_leaky, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"sigmoid", run_sigmoid, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"tanh", run_tanh, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"dropout2d", run_dropout, 1, {F(3, 5, 4, 3)}, 1e-2f, 1e-2f},
    {"sum", run_sum, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"mean", run_mean, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"sum_dims 1,3", run_sum_dims, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"mean_dims 0,2 keepdim", run_mean_dims, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"reshape", run_reshape, 1, {F(2, 3, 2, 5)}, 1e-2f, 1e-2f},
    {"narrow_batch", run_narrow, 1, {F(4, 3, 2, 5)}, 1e-2f, 1e-2f},
    {"clone", run_clone, 1, {F(2, 3, 2, 5)}, 1e-2f, 1e-2f},
    {"flip_width", run_flip_width, 1, {F(2, 3, 2, 5)}, 1e-2f, 1e-2f},
    {"concat_channels", run_concat, 3, {F(2, 1, 3, 5), F(2, 3, 3, 5), F(2, 2, 3, 5)}, 1e-2f, 1e-2f},
    {"slice_channels", run_slice, 1, {F(2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"conv2d 3x3 bias", run_conv3, 3, {F(2, 3, 6, 7), F(4, 3, 3, 3), IN(RANDN, true, 1, 4)}, 1e-2f, 1e-2f},
    {"conv2d stride 2, odd 7x9", run_conv_s2, 2, {F(2, 3, 7, 9), F(4, 3, 3, 3)}, 1e-2f, 1e-2f},
    {"conv2d dilation 2", run_conv_d2, 3, {F(1, 2, 8, 6), F(3, 2, 3, 3), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    {"conv2d dilation 4, 11x13", run_conv_d4, 2, {F(1, 2, 11, 13), F(2, 2, 3, 3)}, 1e-2f, 1e-2f},
    {"conv2d groups 2", run_conv_g2, 3, {F(2, 4, 5, 6), F(6, 2, 3, 3), IN(RANDN, true, 1, 6)}, 1e-2f, 1e-2f},
    {"conv2d depthwise stride 2", run_conv_dw, 2, {F(2, 4, 7, 6), F(4, 1, 3, 3)}, 1e-2f, 1e-2f},
    {"conv2d depthwise dilation 2 bias", run_conv_dw_d2, 3, {F(2, 3, 7, 8), F(3, 1, 3, 3), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    {"conv2d 1x1 bias", run_conv_1x1, 3, {F(2, 5, 3, 4), F(3, 5, 1, 1), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    {"conv2d 1x1 stride 2", run_conv_1x1_s2, 2, {F(2, 3, 5, 7), F(4, 3, 1, 1)}, 1e-2f, 1e-2f},
    {"conv2d 3x3 unpadded", run_conv_valid, 2, {F(2, 3, 6, 7), F(4, 3, 3, 3)}, 1e-2f, 1e-2f},
    {"conv2d 5x3 padding 1x0", run_conv_5x3_pad, 2, {F(2, 2, 8, 7), F(3, 2, 5, 3)}, 1e-2f, 1e-2f},
    {"conv2d 3x3 one 64x64 image", run_conv3, 3, {F(1, 2, 64, 64), F(3, 2, 3, 3), IN(RANDN, true, 1, 3)}, 1e-2f, 1e-2f},
    /* column matrices over the cache budget (2 MiB): one image in bands of
     * output rows. Convolutions are linear, so a long step is exact and
     * keeps the float rounding of the big objective out of the check. */
    {"conv2d 3x3 in bands of rows", run_conv3, 3, {F(1, 32, 48, 48), F(32, 32, 3, 3), IN(RANDN, true, 1, 32)}, 0.25f, 1e-2f},
    {"conv2d stride 2 in bands of rows", run_conv_s2, 2, {F(2, 32, 96, 96), F(4, 32, 3, 3)}, 0.25f, 1e-2f},
    {"conv2d groups 2 in bands of rows", run_conv_g2, 3, {F(2, 32, 48, 48), F(8, 16, 3, 3), IN(RANDN, true, 1, 8)}, 0.25f, 1e-2f},
    {"conv2d 3x1 mixed stride/dilation", run_conv_rect, 2, {F(2, 2, 9, 5), F(3, 2, 3, 1)}, 1e-2f, 1e-2f},
    {"batch_norm2d training", run_bn_train, 3, {F(3, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-2f, 2e-2f},
    {"batch_norm2d evaluation", run_bn_eval, 4, {F(2, 3, 4, 5), IN(RANDN, true, 1, 3), IN(RANDN, true, 1, 3), IN(POSITIVE, false, 1, 3)}, 1e-2f, 1e-2f},
    {"batch_norm2d no affine", run_bn_plain, 1, {F(2, 3, 3, 5)}, 1e-2f, 2e-2f},
    /* a bias step moves a whole channel across the ReLU's kink: short steps */
    {"batch_norm2d then relu", run_bn_relu, 3, {F(3, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-3f, 2e-2f},
    {"batch_norm2d evaluation then leaky_relu", run_bn_leaky_eval, 3, {F(2, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-3f, 1e-2f},
    {"batch_norm2d_relu (fused) training", run_bn_relu_fused, 3, {F(3, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-3f, 2e-2f},
    {"batch_norm2d_relu (fused) evaluation", run_bn_relu_fused_eval, 3, {F(2, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-3f, 1e-2f},
    {"batch_norm2d_relu (fused), output squared", run_bn_relu_fused_shared, 3, {F(3, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-2f, 2e-2f},
    {"batch_norm2d then relu, output used twice", run_bn_relu_shared, 3, {F(3, 3, 4, 5), IN(POSITIVE, true, 1, 3), IN(RANDN, true, 1, 3)}, 1e-2f, 2e-2f},
    {"add then relu", run_add_relu, 2, {F(2, 3, 4, 5), F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"x + x then leaky_relu, the sum used twice", run_add_leaky_shared, 1, {F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"max_pool2d 3x3 s2 p1", run_maxpool, 1, {F(2, 3, 7, 9)}, 1e-3f, 1e-2f},
    {"avg_pool2d 3x2 s2x1 p1", run_avgpool, 1, {F(2, 3, 7, 6)}, 1e-2f, 1e-2f},
    {"max_pool2d 3x2 s2 p1x0 ceil_mode", run_maxpool_ceil, 1, {F(2, 3, 8, 7)}, 1e-3f, 1e-2f},
    {"avg_pool2d 3x2 s2 p1x0 ceil_mode, padding not counted", run_avgpool_ceil_exclude, 1, {F(2, 3, 8, 7)}, 1e-2f, 1e-2f},
    {"avg_pool2d 2x3 s2 p0x1 ceil_mode", run_avgpool_ceil, 1, {F(2, 3, 7, 8)}, 1e-2f, 1e-2f},
    {"adaptive_avg_pool2d 3x5", run_adaptive, 1, {F(2, 3, 7, 11)}, 1e-2f, 1e-2f},
    {"adaptive_avg_pool2d 6x4 of 3x2 (overlapping cells)", run_adaptive_up, 1, {F(2, 3, 3, 2)}, 1e-2f, 1e-2f},
    {"global_avg_pool", run_global, 1, {F(2, 3, 5, 4)}, 1e-2f, 1e-2f},
    {"resize_bilinear align_corners", run_bilinear_ac, 1, {F(2, 2, 4, 5)}, 1e-2f, 1e-2f},
    {"resize_bilinear up x8", run_bilinear_up8, 1, {F(1, 2, 2, 3)}, 1e-2f, 1e-2f},
    {"resize_bilinear down, odd", run_bilinear_down, 1, {F(1, 2, 7, 9)}, 1e-2f, 1e-2f},
    {"softmax", run_softmax, 1, {F(2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"softmax T=2.5", run_softmax_t, 1, {F(2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"log_softmax T=0.5", run_log_softmax, 1, {F(2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"cross_entropy ignore", run_ce, 2, {F(2, 5, 3, 4), IN(LABELS, false, 3, 2, 3, 4)}, 1e-2f, 1e-2f},
    {"cross_entropy class+pixel weights", run_ce_weighted, 4, {F(2, 5, 3, 4), IN(LABELS, false, 3, 2, 3, 4), IN(POSITIVE, false, 1, 5), IN(WEIGHTS, false, 3, 2, 3, 4)}, 1e-2f, 1e-2f},
    {"cross_entropy sum", run_ce_sum, 3, {F(2, 5, 3, 4), IN(LABELS, false, 3, 2, 3, 4), IN(WEIGHTS, false, 3, 2, 3, 4)}, 1e-2f, 1e-2f},
    {"cross_entropy none", run_ce_none, 3, {F(2, 5, 3, 4), IN(LABELS, false, 3, 2, 3, 4), IN(POSITIVE, false, 1, 5)}, 1e-2f, 1e-2f},
    {"cross_entropy of logits upsampled x8, weights", run_ce_up8, 4, {F(2, 5, 2, 3), IN(LABELS, false, 3, 2, 16, 24), IN(POSITIVE, false, 1, 5), IN(WEIGHTS, false, 3, 2, 16, 24)}, 1e-2f, 1e-2f},
    {"cross_entropy of upsampled logits, align_corners, none", run_ce_up_ac_none, 2, {F(2, 5, 3, 4), IN(LABELS, false, 3, 2, 7, 9)}, 1e-2f, 1e-2f},
    {"cross_entropy of upsampled logits used twice", run_ce_up_shared, 2, {F(3, 5, 4, 3), IN(LABELS, false, 3, 3, 9, 10)}, 1e-2f, 1e-2f},
    {"kl_div T=1", run_kl, 2, {F(2, 5, 3, 4), F(2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"kl_div T=4 detached, sum", run_kl_t4, 2, {F(2, 5, 3, 4), IN(RANDN, false, 4, 2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"kl_div T=2 none", run_kl_none, 2, {F(2, 5, 3, 4), F(2, 5, 3, 4)}, 1e-2f, 1e-2f},
    {"mse", run_mse, 2, {F(2, 3, 4, 5), F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"mse none", run_mse_none, 2, {F(2, 3, 4, 5), F(2, 3, 4, 5)}, 1e-2f, 1e-2f},
    {"pairwise_distill", run_pairwise, 2, {F(2, 4, 5, 7), F(2, 6, 5, 7)}, 1e-2f, 2e-2f},
    {"pairwise_similarity on given nodes", run_pairwise_nodes, 2, {F(2, 4, 2, 3), F(2, 6, 2, 3)}, 1e-2f, 2e-2f},
};

/* ---- the checker -------------------------------------------------------------- */

static kd_tensor *make_input(const input_spec *spec, kd_rng *rng) {
    kd_tensor *t;
    kd_dtype dtype = spec->kind == LABELS ? KD_I32 : KD_F32;
    if (kd_tensor_new(dtype, spec->ndim, spec->shape, &t)) return NULL;
    size_t n = kd_numel(t);
    for (size_t i = 0; i < n; i++) {
        switch (spec->kind) {
        case RANDN: kd_f32(t)[i] = kd_rng_normal(rng); break;
        case POSITIVE: kd_f32(t)[i] = 0.5f + 1.5f * kd_rng_uniform(rng); break;
        case WEIGHTS: kd_f32(t)[i] = kd_rng_uniform(rng); break;
        case ONES: kd_f32(t)[i] = 1.0f; break;
        case LABELS: /* classes 0..4, one pixel in five ignored */
            kd_i32(t)[i] = kd_rng_uniform(rng) < 0.2f ? 255 : (int32_t)(kd_rng_u32(rng) % 5);
            break;
        }
    }
    t->requires_grad = spec->differentiable;
    return t;
}

/* f = sum(out * R) in double, with grad mode off. */
static double objective(const grad_case *c, kd_tensor **in, const kd_tensor *r, bool *ok) {
    bool was = kd_set_grad_enabled(false);
    kd_tensor *out = NULL;
    kd_status s = c->run(in, &out);
    kd_set_grad_enabled(was);
    if (s) {
        *ok = false;
        return 0;
    }
    double f = 0;
    for (size_t i = 0, n = kd_numel(out); i < n; i++) f += (double)kd_f32(out)[i] * kd_f32(r)[i];
    kd_tensor_release(out);
    return f;
}

static void check_case(const grad_case *c) {
    kd_rng rng;
    kd_rng_seed(&rng, SEED);
    kd_tensor *in[4] = {0};
    for (int i = 0; i < c->n_inputs; i++) in[i] = make_input(&c->inputs[i], &rng);

    kd_tensor *out = NULL;
    kd_status s = c->run(in, &out);
    CHECK(s == KD_OK, "%s: forward failed: %s", c->name, kd_error_message());
    if (s) goto done;
    kd_tensor *r;
    kd_tensor_new(KD_F32, out->ndim, out->shape, &r);
    for (size_t i = 0, n = kd_numel(r); i < n; i++) kd_f32(r)[i] = kd_rng_normal(&rng);
    s = kd_backward(out, r);
    CHECK(s == KD_OK, "%s: backward failed: %s", c->name, kd_error_message());
    kd_tensor_release(out);

    int checked = 0, skipped = 0;
    double worst = 0;
    for (int i = 0; i < c->n_inputs && !s; i++) {
        if (!c->inputs[i].differentiable) continue;
        kd_tensor *x = in[i];
        CHECK(x->grad != NULL, "%s: input %d got no gradient", c->name, i);
        if (!x->grad) continue;
        size_t n = kd_numel(x);
        for (int k = 0; k < SAMPLES && k < (int)n; k++) {
            size_t at = n <= SAMPLES ? (size_t)k : kd_rng_u32(&rng) % n;
            float *v = &kd_f32(x)[at], saved = *v, h = c->step;
            bool ok = true;
            double f0 = objective(c, in, r, &ok);
            *v = saved + h;
            double fp = objective(c, in, r, &ok);
            *v = saved - h;
            double fm = objective(c, in, r, &ok);
            *v = saved;
            CHECK(ok, "%s: forward failed during finite differences", c->name);
            double numeric = (fp - fm) / (2 * h), analytic = kd_f32(x->grad)[at];
            double right = (fp - f0) / h, left = (f0 - fm) / h;
            double scale = fmax(fmax(fabs(right), fabs(left)), 1e-2);
            if (fabs(right - left) / scale > 10 * c->tolerance + 0.05) { /* a kink */
                skipped++;
                continue;
            }
            double err = fabs(analytic - numeric) / fmax(fmax(fabs(analytic), fabs(numeric)), 1e-2);
            if (err > worst) worst = err;
            checked++;
            CHECK(err <= c->tolerance, "%s: input %d element %zu: analytic %.6g, numeric %.6g "
                  "(relative error %.3g > %.3g)", c->name, i, at, analytic, numeric, err, c->tolerance);
        }
    }
    CHECK(checked > 0, "%s: every sampled point was skipped as a kink (%d)", c->name, skipped);
    printf("  %-38s checked %3d skipped %2d worst relative error %.2e\n", c->name, checked,
           skipped, worst);
    kd_tensor_release(r);
done:
    for (int i = 0; i < c->n_inputs; i++) kd_tensor_release(in[i]);
}

int main(void) {
    printf("gradient checks, seed %u\n", SEED);
    kd_set_threads(2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0,
          "gradient checks leaked %zu bytes in %zu tensors", m.live_bytes, m.live_tensors);
    return check_done("test_gradcheck");
}
