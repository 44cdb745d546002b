/* test_errors.c - every kind of wrong call returns an error naming the op and
 * the shapes, allocates nothing, and crashes nothing; an allocation failure
 * (forced through the memory cap) is an error too. */
#include "check.h"

static kd_tensor *make(kd_dtype dtype, int ndim, int a, int b, int c, int d) {
    int shape[4] = {a, b, c, d};
    kd_tensor *t;
    kd_tensor_zeros(dtype, ndim, shape, &t);
    return t;
}

int main(void) {
    kd_tensor *out = NULL;
    kd_tensor *x = make(KD_F32, 4, 8, 16, 64, 128);
    kd_tensor *small = make(KD_F32, 4, 2, 3, 5, 5);
    kd_tensor *w = make(KD_F32, 4, 64, 32, 3, 3);
    kd_tensor *labels = make(KD_I32, 3, 2, 5, 5, 1);
    kd_tensor *vec3 = make(KD_F32, 1, 3, 1, 1, 1), *vec4 = make(KD_F32, 1, 4, 1, 1, 1);
    kd_tensor *three_d = make(KD_F32, 3, 2, 3, 5, 1);
    kd_memory_stats base = kd_memory();

    /* conv2d */
    kd_conv_params p = {1, 1, 1, 1, 1, 1, 1};
    CHECK_FAILS(kd_conv2d(x, w, NULL, &p, &out), KD_ERR_SHAPE, "conv2d", "64x32x3x3", "8x16x64x128");
    kd_tensor *w3 = make(KD_F32, 4, 4, 3, 3, 3), *w7 = make(KD_F32, 4, 4, 3, 7, 7);
    kd_conv_params bad = {0, 1, 1, 1, 1, 1, 1};
    CHECK_FAILS(kd_conv2d(small, w3, NULL, &bad, &out), KD_ERR_ARG, "conv2d", "stride 0x1");
    kd_conv_params groups = {1, 1, 1, 1, 1, 1, 2};
    CHECK_FAILS(kd_conv2d(small, w3, NULL, &groups, &out), KD_ERR_SHAPE, "conv2d", "groups 2");
    CHECK_FAILS(kd_conv2d(small, w3, vec3, &p, &out), KD_ERR_SHAPE, "conv2d: bias 3");
    kd_conv_params nopad = {1, 1, 0, 0, 1, 1, 1};
    CHECK_FAILS(kd_conv2d(small, w7, NULL, &nopad, &out), KD_ERR_SHAPE, "larger than input 2x3x5x5");
    CHECK_FAILS(kd_conv2d(labels, w3, NULL, &p, &out), KD_ERR_DTYPE, "conv2d: input must be float32", "int32");
    CHECK_FAILS(kd_conv2d(three_d, w3, NULL, &p, &out), KD_ERR_SHAPE, "conv2d: input must be 4-D", "2x3x5");
    CHECK_FAILS(kd_conv2d(NULL, w3, NULL, &p, &out), KD_ERR_ARG, "conv2d: input is missing");

    /* pointwise, shape, reductions */
    CHECK_FAILS(kd_add(x, small, &out), KD_ERR_SHAPE, "add: shapes 8x16x64x128 and 2x3x5x5 differ");
    CHECK_FAILS(kd_mul(small, labels, &out), KD_ERR_DTYPE, "mul: second operand must be float32");
    CHECK_FAILS(kd_channel_mul(small, vec4, &out), KD_ERR_SHAPE, "channel_mul: vector 4", "2x3x5x5");
    CHECK_FAILS(kd_dropout2d(small, 1.0f, NULL, &out), KD_ERR_ARG, "dropout2d: probability 1");
    int wrong[2] = {7, 7};
    CHECK_FAILS(kd_reshape(small, 2, wrong, &out), KD_ERR_SHAPE, "reshape: cannot view 2x3x5x5", "7x7");
    CHECK_FAILS(kd_narrow_batch(small, 1, 2, &out), KD_ERR_SHAPE, "narrow_batch", "2x3x5x5");
    kd_tensor *pair[2] = {small, x};
    CHECK_FAILS(kd_concat_channels(2, pair, &out), KD_ERR_SHAPE, "concat_channels", "8x16x64x128");
    CHECK_FAILS(kd_slice_channels(small, 2, 2, &out), KD_ERR_SHAPE, "slice_channels: channels 2..3");
    CHECK_FAILS(kd_sum_dims(small, 0x10, false, &out), KD_ERR_ARG, "sum: dims mask 0x10");
    CHECK_FAILS(kd_max_channels(three_d, &out, NULL), KD_ERR_SHAPE, "max_channels: input must be 4-D");

    /* norm, pool, resize, softmax */
    CHECK_FAILS(kd_batch_norm2d(small, vec4, NULL, NULL, NULL, true, 0.1f, 1e-5f, &out), KD_ERR_SHAPE,
                "batch_norm2d: weight 4 does not match the channels of input 2x3x5x5");
    CHECK_FAILS(kd_batch_norm2d(small, NULL, NULL, NULL, NULL, false, 0.1f, 1e-5f, &out), KD_ERR_STATE,
                "batch_norm2d: evaluation mode needs running statistics");
    kd_tensor *one_pixel = make(KD_F32, 4, 1, 3, 1, 1);
    CHECK_FAILS(kd_batch_norm2d(one_pixel, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f, &out), KD_ERR_SHAPE,
                "more than one value per channel");
    kd_pool_params pool = {3, 3, 1, 1, 2, 2, false, false};
    CHECK_FAILS(kd_max_pool2d(small, &pool, &out), KD_ERR_ARG, "max_pool2d", "padding 2x2");
    kd_pool_params huge = {9, 9, 1, 1, 0, 0, false, false};
    CHECK_FAILS(kd_avg_pool2d(small, &huge, &out), KD_ERR_SHAPE, "avg_pool2d: kernel 9x9 is larger");
    CHECK_FAILS(kd_adaptive_avg_pool2d(small, 0, 2, &out), KD_ERR_SHAPE, "adaptive_avg_pool2d: grid 0x2");
    CHECK_FAILS(kd_resize_bilinear(small, 0, 4, false, &out), KD_ERR_SHAPE, "resize_bilinear: cannot resize 2x3x5x5 to 0x4");
    CHECK_FAILS(kd_resize_nearest(vec3, 2, 2, &out), KD_ERR_SHAPE, "resize_nearest");
    CHECK_FAILS(kd_softmax(small, 0.0f, &out), KD_ERR_ARG, "softmax: temperature 0");
    kd_tensor *no_channels = make(KD_F32, 4, 1, 0, 2, 2);
    CHECK_FAILS(kd_softmax(no_channels, 1.0f, &out), KD_ERR_SHAPE, "softmax: input 1x0x2x2 has no channels");
    CHECK_FAILS(kd_kl_div(no_channels, no_channels, 1.0f, true, KD_REDUCE_MEAN, &out), KD_ERR_SHAPE, "kl_div", "no classes");
    kd_tensor_release(no_channels);

    /* losses */
    kd_cross_entropy_params ce = {255, NULL, NULL, KD_REDUCE_MEAN};
    kd_tensor *target = make(KD_I32, 3, 2, 5, 5, 1);
    kd_i32(target)[3] = 7;
    CHECK_FAILS(kd_cross_entropy(small, target, &ce, &out), KD_ERR_ARG,
                "cross_entropy: target value 7 at pixel 3 is not a class of 0..2 nor the ignore index 255");
    kd_i32(target)[3] = -1;
    CHECK_FAILS(kd_cross_entropy(small, target, &ce, &out), KD_ERR_ARG, "target value -1");
    kd_tensor *float_target = make(KD_F32, 3, 2, 5, 5, 1);
    CHECK_FAILS(kd_cross_entropy(small, float_target, &ce, &out), KD_ERR_DTYPE, "cross_entropy: target must be int32");
    kd_tensor *short_target = make(KD_I32, 3, 2, 4, 5, 1);
    CHECK_FAILS(kd_cross_entropy(small, short_target, &ce, &out), KD_ERR_SHAPE,
                "cross_entropy: target 2x4x5 does not match logits 2x3x5x5");
    kd_i32(target)[3] = 0;
    ce.class_weight = vec4;
    CHECK_FAILS(kd_cross_entropy(small, target, &ce, &out), KD_ERR_SHAPE, "class_weight 4", "3 classes");
    ce.class_weight = NULL;
    ce.reduction = (kd_reduction)9;
    CHECK_FAILS(kd_cross_entropy(small, target, &ce, &out), KD_ERR_ARG, "unknown reduction 9");
    kd_tensor *other = make(KD_F32, 4, 2, 4, 5, 5);
    CHECK_FAILS(kd_kl_div(small, other, 1.0f, true, KD_REDUCE_MEAN, &out), KD_ERR_SHAPE,
                "kl_div: shapes 2x3x5x5 and 2x4x5x5 differ");
    CHECK_FAILS(kd_kl_div(small, small, -2.0f, true, KD_REDUCE_MEAN, &out), KD_ERR_ARG, "kl_div: temperature -2");
    CHECK_FAILS(kd_mse(small, other, KD_REDUCE_MEAN, &out), KD_ERR_SHAPE, "mse: shapes");
    kd_tensor *batch3 = make(KD_F32, 4, 3, 3, 5, 5);
    CHECK_FAILS(kd_pairwise_distill(small, batch3, 2, 2, &out), KD_ERR_SHAPE, "pairwise_distill", "same batch");
    CHECK_FAILS(kd_pairwise_distill(small, other, 9, 2, &out), KD_ERR_SHAPE, "pairwise_distill: grid 9x2");
    kd_tensor *wide = make(KD_F32, 4, 1, 1, 80, 80);
    CHECK_FAILS(kd_pairwise_similarity(wide, wide, false, &out), KD_ERR_SHAPE, "80 x 80 = 6400 nodes, at most 4096");
    CHECK_FAILS(kd_pairwise_similarity(small, batch3, true, &out), KD_ERR_SHAPE, "pairwise_similarity", "same batch and grid");
    kd_tensor_release(wide);

    /* tensors, optimizer steps */
    int negative[2] = {2, -3}, five[5] = {1, 1, 1, 1, 1};
    CHECK_FAILS(kd_tensor_new(KD_F32, 2, negative, &out), KD_ERR_SHAPE, "negative size -3");
    CHECK_FAILS(kd_tensor_new(KD_F32, 5, five, &out), KD_ERR_SHAPE, "5 dimensions");
    CHECK_FAILS(kd_copy(small, other), KD_ERR_SHAPE, "copy: destination float32 2x3x5x5");
    CHECK_FAILS(kd_sgd_step(small, other, NULL, 0.1f, 0, 0, 0, false, true), KD_ERR_SHAPE, "sgd_step");
    CHECK_FAILS(kd_sgd_step(small, small, NULL, 0.1f, 0.9f, 0, 0, false, true), KD_ERR_ARG, "momentum buffer");
    CHECK_FAILS(kd_adamw_step(small, small, small, small, 0.1f, 0.9f, 0.99f, 1e-8f, 0, 0), KD_ERR_ARG, "count from 1");
    CHECK_FAILS(kd_fill_kaiming_normal(vec3, NULL), KD_ERR_SHAPE, "at least 2 dims");

    /* allocation failures, forced by the cap */
    CHECK(out == NULL, "no failing call produced a tensor");
    kd_tensor *cw = make(KD_F32, 4, 16, 16, 3, 3);
    base = kd_memory();
    kd_memory_set_limit(base.live_bytes + 1024);
    int big[1] = {1 << 20};
    CHECK_FAILS(kd_tensor_new(KD_F32, 1, big, &out), KD_ERR_MEMORY, "cannot allocate 4194304 bytes");
    kd_memory_set_limit(kd_memory().live_bytes + (size_t)8 * 16 * 64 * 128 * 4 + 4096);
    CHECK_FAILS(kd_conv2d(x, cw, NULL, &p, &out), KD_ERR_MEMORY, "conv2d: cannot allocate the column buffer");
    kd_memory_set_limit(0);
    CHECK(kd_memory().live_bytes == base.live_bytes && kd_memory().live_tensors == base.live_tensors,
          "failed calls left nothing allocated");

    kd_tensor *all[] = {x, small, w, labels, vec3, vec4, three_d, w3, w7, one_pixel, target,
                        float_target, short_target, other, batch3, cw};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes,
          m.live_tensors);
    return check_done("test_errors");
}
