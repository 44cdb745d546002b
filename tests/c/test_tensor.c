/* test_tensor.c - tensors and views, fills and copies, the seeded generator,
 * and the caching allocator's accounting. */
#include <math.h>

#include "check.h"

static void test_create_and_views(void) {
    int shape[4] = {4, 3, 2, 5};
    kd_tensor *t;
    CHECK_OK(kd_tensor_zeros(KD_F32, 4, shape, &t));
    CHECK(kd_numel(t) == 120, "numel %zu", kd_numel(t));
    CHECK(strcmp(kd_shape_str(t), "4x3x2x5") == 0, "shape string %s", kd_shape_str(t));
    for (size_t i = 0; i < 120; i++) kd_f32(t)[i] = (float)i;

    int flat[2] = {12, 10};
    kd_tensor *v;
    CHECK_OK(kd_reshape(t, 2, flat, &v));
    CHECK(v->storage == t->storage && kd_f32(v) == kd_f32(t), "reshape shares storage");
    kd_f32(v)[7] = -1;
    CHECK(kd_f32(t)[7] == -1, "a write through the view shows in the base");

    kd_tensor *rows;
    CHECK_OK(kd_narrow_batch(t, 1, 2, &rows));
    CHECK(rows->shape[0] == 2 && kd_f32(rows)[0] == 30.0f, "batch slice starts at image 1: %g",
          kd_f32(rows)[0]);
    CHECK(rows->storage == t->storage, "batch slice shares storage");
    kd_tensor *rows_flat;
    int one_row[1] = {60};
    CHECK_OK(kd_reshape(rows, 1, one_row, &rows_flat));
    CHECK(kd_f32(rows_flat)[59] == 89.0f, "view of a view keeps its offset");

    kd_tensor *copy;
    CHECK_OK(kd_clone(rows, &copy));
    CHECK(copy->storage != t->storage && kd_f32(copy)[0] == 30.0f, "clone copies");
    kd_f32(copy)[0] = 5;
    CHECK(kd_f32(t)[30] == 30.0f, "clone is independent");

    /* the base outlives its header through the view's reference */
    kd_tensor_release(t);
    CHECK(kd_f32(rows_flat)[0] == 30.0f, "storage lives while a view holds it");
    kd_tensor_release(v);
    kd_tensor_release(rows);
    kd_tensor_release(rows_flat);
    kd_tensor_release(copy);
}

static void test_fill_copy_convert(void) {
    int shape[2] = {3, 4};
    kd_tensor *a, *b, *i32;
    CHECK_OK(kd_tensor_full(KD_F32, 2, shape, 2.5, &a));
    CHECK(kd_f32(a)[11] == 2.5f, "full");
    CHECK_OK(kd_tensor_new(KD_F32, 2, shape, &b));
    CHECK_OK(kd_copy(b, a));
    CHECK(kd_f32(b)[5] == 2.5f, "copy");
    kd_set(a, 3, -7.9);
    CHECK_OK(kd_to_dtype(a, KD_I32, &i32));
    CHECK(i32->dtype == KD_I32 && kd_i32(i32)[3] == -7 && kd_i32(i32)[0] == 2, "to int32 truncates");
    CHECK(kd_get(i32, 3) == -7.0, "get");
    kd_tensor_release(a);
    kd_tensor_release(b);
    kd_tensor_release(i32);
}

static void test_random(void) {
    int shape[1] = {10000};
    kd_tensor *a, *b, *k;
    kd_tensor_new(KD_F32, 1, shape, &a);
    kd_tensor_new(KD_F32, 1, shape, &b);
    kd_rng r1, r2;
    kd_rng_seed(&r1, 42);
    kd_rng_seed(&r2, 42);
    kd_fill_normal(a, 0, 1, &r1);
    kd_fill_normal(b, 0, 1, &r2);
    CHECK(memcmp(kd_f32(a), kd_f32(b), sizeof(float) * 10000) == 0, "same seed, same numbers");
    double mean = 0, var = 0;
    for (int i = 0; i < 10000; i++) mean += kd_f32(a)[i];
    mean /= 10000;
    for (int i = 0; i < 10000; i++) var += (kd_f32(a)[i] - mean) * (kd_f32(a)[i] - mean);
    var /= 9999;
    CHECK(fabs(mean) < 0.05 && fabs(var - 1) < 0.05, "normal: mean %g var %g", mean, var);
    kd_fill_uniform(a, -2, 3, &r1);
    float lo = 9, hi = -9;
    for (int i = 0; i < 10000; i++) lo = fminf(lo, kd_f32(a)[i]), hi = fmaxf(hi, kd_f32(a)[i]);
    CHECK(lo >= -2 && hi < 3 && lo < -1.9 && hi > 2.9, "uniform in [-2, 3): %g..%g", lo, hi);
    kd_rng_seed(&r2, 43);
    kd_fill_normal(b, 0, 1, &r2);
    CHECK(memcmp(kd_f32(a), kd_f32(b), sizeof(float) * 100) != 0, "another seed differs");

    int wshape[4] = {64, 32, 3, 3};
    kd_tensor_new(KD_F32, 4, wshape, &k);
    kd_fill_kaiming_normal(k, &r1);
    double sq = 0;
    for (size_t i = 0; i < kd_numel(k); i++) sq += kd_f32(k)[i] * kd_f32(k)[i];
    double std = sqrt(sq / (double)kd_numel(k)), want = sqrt(2.0 / (32 * 9));
    CHECK(fabs(std - want) / want < 0.03, "kaiming std %g, want %g", std, want);
    kd_tensor_release(a);
    kd_tensor_release(b);
    kd_tensor_release(k);
}

static void test_allocator(void) {
    kd_memory_empty_cache();
    kd_memory_stats before = kd_memory();
    int shape[1] = {1 << 20};
    kd_tensor *t;
    CHECK_OK(kd_tensor_new(KD_F32, 1, shape, &t));
    kd_memory_stats live = kd_memory();
    CHECK(live.live_bytes >= before.live_bytes + (4u << 20), "live bytes count the new 4 MiB");
    CHECK(live.live_tensors == before.live_tensors + 1, "live tensors count");
    void *first = t->storage->data;
    kd_tensor_release(t);
    kd_memory_stats freed = kd_memory();
    CHECK(freed.live_bytes == before.live_bytes, "live bytes back after release");
    CHECK(freed.cached_bytes >= (4u << 20), "the block is cached, not returned");
    CHECK_OK(kd_tensor_new(KD_F32, 1, shape, &t));
    CHECK(t->storage->data == first, "the same size reuses the cached block");
    CHECK(kd_memory().peak_bytes >= (4u << 20), "peak recorded");
    kd_tensor_release(t);
    kd_memory_empty_cache();
    CHECK(kd_memory().cached_bytes == 0, "empty_cache frees cached blocks");
}

int main(void) {
    test_create_and_views();
    test_fill_copy_convert();
    test_random();
    test_allocator();
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes,
          m.live_tensors);
    return check_done("test_tensor");
}
