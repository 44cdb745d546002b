/* test_dist_reducers.c - the core's parts of data-parallel training, checked
 * in one process with a reducer that stands for a second, identical process
 * (it doubles every sum): synchronised batch norm on x must then be plain
 * batch norm on the batch [x; x] (outputs, running statistics with the
 * global count, and gradients), and a cross-entropy mean over [x; x]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static kd_status twin_process(double *values, int count, void *ctx) {
    int *calls = ctx;
    (*calls)++;
    for (int i = 0; i < count; i++) values[i] *= 2;
    return KD_OK;
}

static kd_status failing_reducer(double *values, int count, void *ctx) {
    return kd_fail(KD_ERR_STATE, "rank 1 is gone");
}

static kd_tensor *filled(int ndim, const int *shape, kd_rng *rng, bool grad) {
    kd_tensor *t;
    kd_tensor_new(KD_F32, ndim, shape, &t);
    kd_fill_normal(t, 0.5f, 2.0f, rng);
    t->requires_grad = grad;
    return t;
}

/* [t; t] along the batch */
static kd_tensor *twice(const kd_tensor *t, bool grad) {
    int shape[4] = {2 * t->shape[0], t->shape[1], t->shape[2], t->shape[3]};
    kd_tensor *out;
    kd_tensor_new(t->dtype, t->ndim, shape, &out);
    size_t bytes = kd_numel(t) * kd_dtype_size(t->dtype);
    memcpy(kd_data(out), kd_data(t), bytes);
    memcpy((char *)kd_data(out) + bytes, kd_data(t), bytes);
    out->requires_grad = grad;
    return out;
}

static float max_diff(const float *a, const float *b, size_t n) {
    float worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmaxf(worst, fabsf(a[i] - b[i]));
    return worst;
}

static void test_synced_batch_norm(void) {
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    int xs[4] = {2, 3, 4, 5}, cs[1] = {3};
    kd_tensor *x = filled(4, xs, &rng, true), *g = filled(4, xs, &rng, false);
    kd_tensor *w = filled(1, cs, &rng, true), *b = filled(1, cs, &rng, true);
    kd_tensor *xx = twice(x, true), *gg = twice(g, false);
    kd_tensor *w2 = filled(1, cs, &rng, true), *b2 = filled(1, cs, &rng, true);
    memcpy(kd_f32(w2), kd_f32(w), 3 * sizeof(float)), memcpy(kd_f32(b2), kd_f32(b), 3 * sizeof(float));
    kd_tensor *rm, *rv, *rm2, *rv2;
    kd_tensor_zeros(KD_F32, 1, cs, &rm), kd_tensor_full(KD_F32, 1, cs, 1.0, &rv);
    kd_tensor_zeros(KD_F32, 1, cs, &rm2), kd_tensor_full(KD_F32, 1, cs, 1.0, &rv2);

    int calls = 0;
    kd_set_batch_norm_reducer(twin_process, &calls);
    kd_tensor *y, *yg, *loss;
    CHECK_OK(kd_batch_norm2d_synced(x, w, b, rm, rv, 0.1f, 1e-5f, &y));
    CHECK(calls == 2, "forward: two reductions (sums, then centred squares), got %d", calls);
    CHECK_OK(kd_mul(y, g, &yg));
    CHECK_OK(kd_sum(yg, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    CHECK(calls == 3, "backward: one reduction, got %d", calls);
    kd_set_batch_norm_reducer(NULL, NULL);

    kd_tensor *y2, *yg2, *loss2;
    CHECK_OK(kd_batch_norm2d(xx, w2, b2, rm2, rv2, true, 0.1f, 1e-5f, &y2));
    CHECK_OK(kd_mul(y2, gg, &yg2));
    CHECK_OK(kd_sum(yg2, &loss2));
    CHECK_OK(kd_backward(loss2, NULL));
    size_t n = kd_numel(x);
    CHECK(max_diff(kd_f32(y), kd_f32(y2), n) < 1e-5f, "outputs: synced on x = plain on [x; x] (%g)",
          max_diff(kd_f32(y), kd_f32(y2), n));
    CHECK(max_diff(kd_f32(rm), kd_f32(rm2), 3) < 1e-6f && max_diff(kd_f32(rv), kd_f32(rv2), 3) < 1e-6f,
          "running statistics with the global count (unbiased over 2 x 40 values)");
    CHECK(max_diff(kd_f32(x->grad), kd_f32(xx->grad), n) < 1e-5f, "input gradient: synced = plain's first half (%g)",
          max_diff(kd_f32(x->grad), kd_f32(xx->grad), n));
    /* weight and bias: this process's share, half of the plain gradient over [x; x] */
    for (int c = 0; c < 3; c++) {
        CHECK(fabsf(2 * kd_f32(w->grad)[c] - kd_f32(w2->grad)[c]) < 1e-4f, "weight gradient %d is half of [x; x]'s", c);
        CHECK(fabsf(2 * kd_f32(b->grad)[c] - kd_f32(b2->grad)[c]) < 1e-4f, "bias gradient %d is half of [x; x]'s", c);
    }
    /* no reducer: the plain batch norm; a failing reducer: a clear error */
    kd_tensor *plain, *synced_alone;
    CHECK_OK(kd_batch_norm2d(x, w, b, NULL, NULL, true, 0.1f, 1e-5f, &plain));
    CHECK_OK(kd_batch_norm2d_synced(x, w, b, NULL, NULL, 0.1f, 1e-5f, &synced_alone));
    CHECK(max_diff(kd_f32(plain), kd_f32(synced_alone), n) == 0, "without a reducer it is the plain batch norm");
    kd_tensor *none = NULL;
    kd_set_batch_norm_reducer(failing_reducer, NULL);
    CHECK_FAILS(kd_batch_norm2d_synced(x, w, b, NULL, NULL, 0.1f, 1e-5f, &none), KD_ERR_STATE, "rank 1 is gone");
    CHECK(none == NULL, "nothing made on failure");
    kd_set_batch_norm_reducer(NULL, NULL);
    kd_tensor *list[] = {x, g, w, b, xx, gg, w2, b2, rm, rv, rm2, rv2, y, yg, loss, y2, yg2, loss2, plain, synced_alone};
    for (size_t i = 0; i < sizeof list / sizeof *list; i++) kd_tensor_release(list[i]);
}

static void test_global_cross_entropy_mean(void) {
    kd_rng rng;
    kd_rng_seed(&rng, 6);
    int ls[4] = {2, 4, 3, 5}, ts[3] = {2, 3, 5};
    kd_tensor *logits = filled(4, ls, &rng, true), *target;
    kd_tensor_new(KD_I32, 3, ts, &target);
    for (size_t i = 0; i < kd_numel(target); i++) kd_i32(target)[i] = i % 7 == 0 ? 255 : (int)(i % 4);
    kd_cross_entropy_params p = {.ignore_index = 255, .reduction = KD_REDUCE_MEAN};
    kd_tensor *plain, *global;
    CHECK_OK(kd_cross_entropy(logits, target, &p, &plain));
    CHECK_OK(kd_backward(plain, NULL));
    float plain_grad0 = kd_f32(logits->grad)[0];
    kd_fill(logits->grad, 0);
    int calls = 0;
    kd_set_loss_mean_reducer(twin_process, &calls);
    CHECK_OK(kd_cross_entropy(logits, target, &p, &global));
    CHECK_OK(kd_backward(global, NULL));
    kd_set_loss_mean_reducer(NULL, NULL);
    /* two identical processes: (2 / 2W) sum = the plain mean, whose gradient it keeps */
    CHECK(calls == 1, "one reduction per cross-entropy, got %d", calls);
    CHECK(fabsf(kd_f32(global)[0] - kd_f32(plain)[0]) < 1e-6f, "global mean %g = plain mean %g", kd_f32(global)[0],
          kd_f32(plain)[0]);
    CHECK(fabsf(kd_f32(logits->grad)[0] - plain_grad0) < 1e-7f, "same gradient");
    kd_tensor *none = NULL;
    kd_set_loss_mean_reducer(failing_reducer, NULL);
    CHECK_FAILS(kd_cross_entropy(logits, target, &p, &none), KD_ERR_STATE, "rank 1 is gone");
    kd_set_loss_mean_reducer(NULL, NULL);
    kd_tensor_release(logits), kd_tensor_release(target), kd_tensor_release(plain), kd_tensor_release(global);
}

int main(void) {
    kd_set_threads(2);
    test_synced_batch_norm();
    test_global_cross_entropy_mean();
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes, m.live_tensors);
    return check_done("test_dist_reducers");
}
