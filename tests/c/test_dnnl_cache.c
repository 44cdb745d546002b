/* test_dnnl_cache.c - oneDNN primitives made once (core/ops/dnnl_cache.c):
 * a convolution run again makes no primitive and gives the same bits; a
 * new geometry, algorithm or thread count makes its own; a reorder is found again under
 * an equal layout; past the bound everything is freed, and convolutions
 * go on with the same bits. */
#include <stdlib.h>

#include "check.h"
#include "dnnl_cache.h"

static const kd_conv_params same3 = {1, 1, 1, 1, 1, 1, 1};

/* One training step of a convolution on a c-channel h x w input: its
 * output, input gradient and weight gradient (retained, in out[3]). */
static void conv_step(int c, int h, int w, kd_tensor *out[3]) {
    kd_tensor *x = check_randn4(2, c, h, w, 1), *weights = check_randn4(16, c, 3, 3, 2), *y, *sq, *loss;
    x->requires_grad = weights->requires_grad = true;
    CHECK_OK(kd_conv2d(x, weights, NULL, &same3, &y));
    CHECK_OK(kd_mul(y, y, &sq));
    CHECK_OK(kd_sum(sq, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    out[0] = kd_tensor_retain(y), out[1] = kd_tensor_retain(x->grad), out[2] = kd_tensor_retain(weights->grad);
    kd_tensor *all[] = {x, weights, y, sq, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

static void release3(kd_tensor *t[3]) {
    for (int i = 0; i < 3; i++) kd_tensor_release(t[i]);
}

static void check_same(kd_tensor *a[3], kd_tensor *b[3], const char *what) {
    const char *names[3] = {"output", "input gradient", "weight gradient"};
    for (int i = 0; i < 3; i++) CHECK(check_same_bits(a[i], b[i]), "%s: the %s differs", what, names[i]);
}

static void test_made_once(void) {
    /* direct float32 first, whatever KDSEG_CONV_ALGORITHM and KDSEG_CONV_PRECISION say */
    bool was = kd_conv_set_winograd(false), was_bf16 = kd_conv_set_bf16(false);
    kd_tensor *first[3], *again[3], *other[3];
    conv_step(16, 9, 11, first);
    size_t made = kd_dnnl_cache_made();
    CHECK(made >= 3, "a training step made its primitives (%zu)", made);
    conv_step(16, 9, 11, again);
    CHECK(kd_dnnl_cache_made() == made, "the same step again made %zu more", kd_dnnl_cache_made() - made);
    check_same(first, again, "the step from kept primitives");
    conv_step(16, 9, 12, other);
    CHECK(kd_dnnl_cache_made() > made, "another geometry makes its own primitives");
    if (kd_conv_winograd_available()) {
        made = kd_dnnl_cache_made();
        kd_conv_set_winograd(true);
        kd_tensor *winograd[3];
        conv_step(16, 9, 11, winograd);
        CHECK(kd_dnnl_cache_made() > made, "Winograd makes its own primitives");
        CHECK(!check_same_bits(winograd[0], first[0]), "Winograd ran (its output has other bits than direct's)");
        release3(winograd);
    }
    kd_conv_set_winograd(was), kd_conv_set_bf16(was_bf16);
    release3(first), release3(again), release3(other);
}

/* A primitive keeps the thread count it was made at, so another count
 * must make its own (before, kd_set_threads(1) after a step at 2 threads
 * left its convolutions on 2), and going back finds the first ones.
 * Direct convolutions: where oneDNN has no Winograd kernels, Winograd
 * runs on kdseg's own (conv_winograd.c), which make no primitives. */
static void test_thread_count_is_part_of_the_key(void) {
    bool was = kd_conv_set_winograd(false);
    kd_tensor *two[3], *one[3], *two_again[3];
    conv_step(16, 9, 11, two);
    size_t made = kd_dnnl_cache_made();
    kd_set_threads(1);
    conv_step(16, 9, 11, one);
    CHECK(kd_dnnl_cache_made() >= made + 3, "1 thread made its own primitives (%zu more)", kd_dnnl_cache_made() - made);
    made = kd_dnnl_cache_made();
    kd_set_threads(2);
    conv_step(16, 9, 11, two_again);
    CHECK(kd_dnnl_cache_made() == made, "back at 2 threads, the step made %zu more", kd_dnnl_cache_made() - made);
    check_same(two, two_again, "the 2-thread step after a 1-thread one");
    release3(two), release3(one), release3(two_again);
    kd_conv_set_winograd(was);
}

static void test_reorders_and_bound(void) {
    dnnl_engine_t engine;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return;
    kd_tensor *before[3], *after[3];
    conv_step(16, 9, 11, before);
    dnnl_dims_t dims = {2, 16, 4, 4};
    dnnl_memory_desc_t nchw, blocked, nchw_again;
    dnnl_memory_desc_init_by_tag(&nchw, 4, dims, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&blocked, 4, dims, dnnl_f32, dnnl_nChw16c);
    dnnl_memory_desc_init_by_strides(&nchw_again, 4, dims, dnnl_f32, nchw.format_desc.blocking.strides);
    const kd_dnnl_made *r = kd_dnnl_reorder(engine, &nchw, &blocked, false);
    CHECK(r != NULL, "a reorder to the blocked layout is made");
    CHECK(kd_dnnl_reorder(engine, &nchw_again, &blocked, false) == r, "an equal layout finds the same reorder");
    CHECK(kd_dnnl_reorder(engine, &nchw, &blocked, true) != r, "accumulating is another reorder");
    /* distinct layouts past the bound: all freed at the next entry point */
    for (int k = 1; kd_dnnl_cache_count() <= KD_DNNL_CACHE_BOUND; k++) {
        dnnl_dims_t row = {1, k};
        dnnl_memory_desc_t a, b;
        dnnl_memory_desc_init_by_tag(&a, 2, row, dnnl_f32, dnnl_ab);
        dnnl_memory_desc_init_by_tag(&b, 2, row, dnnl_f32, dnnl_ba);
        if (!kd_dnnl_reorder(engine, &a, &b, false)) {
            CHECK(false, "reorder %d could not be made", k);
            break;
        }
    }
    kd_dnnl_cache_trim();
    CHECK(kd_dnnl_cache_count() == 0, "past the bound, everything is freed (%zu kept)", kd_dnnl_cache_count());
    conv_step(16, 9, 11, after);
    check_same(before, after, "the step after the cache was freed");
    release3(before), release3(after);
    dnnl_engine_destroy(engine);
}

int main(void) {
    kd_set_threads(2);
    if (!kd_conv_dnnl_active()) {
        printf("test_dnnl_cache: oneDNN does not run here (KDSEG_CONV=im2col?); nothing to test\n");
        return check_done("test_dnnl_cache");
    }
    test_made_once();
    test_thread_count_is_part_of_the_key();
    test_reorders_and_bound();
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes,
          m.live_tensors);
    return check_done("test_dnnl_cache");
}
