/* test_winograd.c - kdseg's own Winograd F(4x4, 3x3) (core/ops/conv_winograd.c)
 * against its naive twins, whatever the CPU: the seven-loop convolution for
 * the forward, and the portable im2col path for both gradients, on odd
 * sizes, channels that fill no vector, paddings 0 to 2, batch 1, blocked
 * inputs and outputs, and a dilated layer through the sub-images; the
 * same bits from run to run. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "conv_dnnl.h"
#include "conv_winograd.h"

/* The worst difference of a from b, over the largest |b|. */
static double relative_error(const kd_tensor *a, const kd_tensor *b) {
    double largest = 0, worst = 0;
    const float *x = kd_f32(a), *y = kd_f32(b);
    for (size_t i = 0; i < kd_numel(b); i++) {
        largest = fmax(largest, fabs(y[i]));
        worst = fmax(worst, fabs(x[i] - y[i]));
    }
    return largest > 0 ? worst / largest : worst;
}

/* Winograd's rounding: transforms in float32, about 1e-6 relative per
 * value; a wrong tile, tap or channel is off by O(1). */
#define TOLERANCE 2e-5

typedef struct {
    int n, cin, h, w, cout, pad;
} geometry;

static kd_conv_geometry geometry_of(const geometry *s) {
    return (kd_conv_geometry){.channels = s->cin, .height = s->h, .width = s->w, .kernel_h = 3, .kernel_w = 3,
                              .stride_h = 1, .stride_w = 1, .pad_h = s->pad, .pad_w = s->pad, .dilation_h = 1,
                              .dilation_w = 1, .out_h = s->h + 2 * s->pad - 2, .out_w = s->w + 2 * s->pad - 2};
}

/* The kernel called directly: forward with bias and ReLU against the
 * seven-loop convolution, gradients against the portable path's. */
static void check_direct(const geometry *s, uint64_t seed) {
    kd_conv_geometry g = geometry_of(s);
    kd_tensor *x = check_randn4(s->n, s->cin, s->h, s->w, seed), *w = check_randn4(s->cout, s->cin, 3, 3, seed + 1);
    kd_tensor *go = check_randn4(s->n, s->cout, g.out_h, g.out_w, seed + 2), *bias, *y, *want;
    int shape[4] = {s->n, s->cout, g.out_h, g.out_w}, c[1] = {s->cout};
    CHECK_OK(kd_tensor_new(KD_F32, 1, c, &bias));
    for (int i = 0; i < s->cout; i++) kd_f32(bias)[i] = 0.1f * (float)(i % 5) - 0.2f;
    CHECK_OK(kd_tensor_new(KD_F32, 4, shape, &y));
    kd_conv_epilogue e = {bias, NULL, true};
    CHECK(kd_conv_winograd_forward(&g, s->n, s->cout, x, kd_f32(w), &e, y, false), "forward ran");
    kd_conv_params p = {1, 1, s->pad, s->pad, 1, 1, 1};
    CHECK_OK(kd_conv2d_reference(x, w, bias, &p, &want));
    for (size_t i = 0; i < kd_numel(want); i++) kd_f32(want)[i] = fmaxf(kd_f32(want)[i], 0.0f);
    double err = relative_error(y, want);
    CHECK(err < TOLERANCE, "%dx%dx%dx%d -> %d, pad %d: forward off by %g", s->n, s->cin, s->h, s->w, s->cout, s->pad,
          err);

    /* gradients: the portable path's, from the same output gradient */
    int xshape[4] = {s->n, s->cin, s->h, s->w}, wshape[4] = {s->cout, s->cin, 3, 3};
    kd_tensor *dx, *dw, *dx_want, *dw_want;
    CHECK_OK(kd_tensor_new(KD_F32, 4, xshape, &dx));
    CHECK_OK(kd_tensor_new(KD_F32, 4, wshape, &dw));
    for (size_t i = 0; i < kd_numel(dx); i++) kd_f32(dx)[i] = 0.5f; /* added into */
    for (size_t i = 0; i < kd_numel(dw); i++) kd_f32(dw)[i] = -0.25f;
    unsigned ran = kd_conv_winograd_backward(&g, kd_f32(w), kd_stored_of(x), kd_stored_of(go), NULL, kd_f32(dx), false,
                                             kd_f32(dw));
    CHECK(ran == (KD_DNNL_INPUT_GRAD | KD_DNNL_WEIGHT_GRAD), "both gradients ran (%u)", ran);
    bool was = kd_conv_use_dnnl(false);
    kd_tensor *xr = check_randn4(s->n, s->cin, s->h, s->w, seed), *wr = check_randn4(s->cout, s->cin, 3, 3, seed + 1);
    kd_tensor *yr, *prod, *loss;
    xr->requires_grad = wr->requires_grad = true;
    CHECK_OK(kd_conv2d(xr, wr, NULL, &p, &yr));
    CHECK_OK(kd_mul(yr, go, &prod));
    CHECK_OK(kd_sum(prod, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    kd_conv_use_dnnl(was);
    dx_want = xr->grad, dw_want = wr->grad;
    for (size_t i = 0; i < kd_numel(dx_want); i++) kd_f32(dx_want)[i] += 0.5f;
    for (size_t i = 0; i < kd_numel(dw_want); i++) kd_f32(dw_want)[i] += -0.25f;
    double dx_err = relative_error(dx, dx_want), dw_err = relative_error(dw, dw_want);
    CHECK(dx_err < TOLERANCE, "%dx%dx%dx%d -> %d, pad %d: input gradient off by %g", s->n, s->cin, s->h, s->w, s->cout,
          s->pad, dx_err);
    CHECK(dw_err < TOLERANCE, "%dx%dx%dx%d -> %d, pad %d: weight gradient off by %g", s->n, s->cin, s->h, s->w,
          s->cout, s->pad, dw_err);
    kd_tensor *all[] = {x, w, go, bias, y, want, dx, dw, xr, wr, yr, prod, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

static void test_against_naive_twins(void) {
    geometry geo[] = {
        {2, 16, 9, 11, 16, 1},  /* partial tiles on both sides */
        {1, 5, 7, 13, 3, 1},    /* channels that fill no vector, batch 1 */
        {2, 8, 12, 8, 24, 0},   /* no padding: 10 x 6 outputs */
        {1, 12, 6, 9, 20, 2},   /* padding 2: the input gradient's padding 0 */
        {3, 32, 16, 20, 40, 1}, /* several chunks per thread */
        {1, 3, 3, 3, 2, 1},     /* one tile, fewer than the micro-kernel's rows */
    };
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) check_direct(&geo[i], 100 + 10 * i);
}

/* Two convolutions in a row through kd_conv2d with kdseg's Winograd forced
 * on, the layout on: the first writes its output blocked, the second reads
 * it so, and the gradients flow back blocked. Everything as the portable
 * path gives, and the same bits on a second run. */
static void chain_step(int d, kd_tensor *out[4]) {
    kd_tensor *x = check_randn4(2, 16, 13, 18, 7), *w1 = check_randn4(24, 16, 3, 3, 8);
    kd_tensor *w2 = check_randn4(16, 24, 3, 3, 9), *r = check_randn4(2, 16, 13, 18, 10), *y1, *y2, *prod, *loss;
    x->requires_grad = w1->requires_grad = w2->requires_grad = true;
    kd_conv_params same = {1, 1, 1, 1, 1, 1, 1}, dilated = {1, 1, d, d, d, d, 1};
    CHECK_OK(kd_conv2d(x, w1, NULL, &same, &y1));
    CHECK_OK(kd_conv2d(y1, w2, NULL, d > 1 ? &dilated : &same, &y2));
    CHECK_OK(kd_mul(y2, r, &prod));
    CHECK_OK(kd_sum(prod, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    out[0] = kd_tensor_retain(y2), out[1] = kd_tensor_retain(x->grad);
    out[2] = kd_tensor_retain(w1->grad), out[3] = kd_tensor_retain(w2->grad);
    kd_tensor *all[] = {x, w1, w2, r, y1, y2, prod, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

static void check_chain(int d) {
    const char *names[4] = {"output", "input gradient", "first weight gradient", "second weight gradient"};
    kd_tensor *portable[4], *own[4], *again[4];
    bool was = kd_conv_use_dnnl(false);
    chain_step(d, portable);
    kd_conv_use_dnnl(true);
    bool layout = kd_blocked_layout_use(true), winograd = kd_conv_set_winograd(true), bf16 = kd_conv_set_bf16(false);
    int forced = kd_conv_own_winograd_force(1);
    chain_step(d, own);
    chain_step(d, again);
    kd_conv_own_winograd_force(forced);
    kd_conv_set_bf16(bf16), kd_conv_set_winograd(winograd), kd_blocked_layout_use(layout), kd_conv_use_dnnl(was);
    for (int i = 0; i < 4; i++) {
        double err = relative_error(own[i], portable[i]);
        CHECK(err < TOLERANCE, "two convolutions (dilation %d), blocked: the %s is off the portable path's by %g", d,
              names[i], err);
        CHECK(check_same_bits(own[i], again[i]), "dilation %d: the %s differs from run to run", d, names[i]);
        kd_tensor_release(portable[i]), kd_tensor_release(own[i]), kd_tensor_release(again[i]);
    }
}

static void test_blocked_chain(void) {
    if (!kd_conv_dnnl_active()) return; /* the hooks are in oneDNN's entry points: KDSEG_CONV=im2col turns it off */
    check_chain(1);
    check_chain(2);
}

/* The switches: KDSEG_CONV_ALGORITHM=direct and bfloat16 turn it off; it
 * takes only 3x3 stride-1 undilated ungrouped geometries padded at most 2. */
static void test_what_it_takes(void) {
    geometry s = {1, 8, 8, 8, 8, 1};
    kd_conv_geometry g = geometry_of(&s);
    int forced = kd_conv_own_winograd_force(1);
    bool winograd = kd_conv_set_winograd(true);
    CHECK(kd_conv_own_winograd_takes(&g, 1), "forced on, a 3x3 stride-1 layer is taken");
    CHECK(!kd_conv_own_winograd_takes(&g, 2), "grouped layers are not");
    kd_conv_geometry other = g;
    other.stride_h = other.stride_w = 2;
    CHECK(!kd_conv_own_winograd_takes(&other, 1), "stride 2 is not");
    other = g, other.dilation_h = other.dilation_w = 2, other.pad_h = other.pad_w = 2;
    CHECK(!kd_conv_own_winograd_takes(&other, 1), "dilation 2 is not (it goes to sub-images first)");
    other = g, other.pad_h = 3;
    CHECK(!kd_conv_own_winograd_takes(&other, 1), "padding 3 is not");
    kd_conv_set_winograd(false);
    CHECK(!kd_conv_own_winograd_takes(&g, 1), "direct convolution asked for: not taken");
    kd_conv_set_winograd(true);
    kd_conv_own_winograd_force(0);
    CHECK(!kd_conv_own_winograd_takes(&g, 1), "forced off: not taken");
    kd_conv_own_winograd_force(-1); /* unforced: the environment decides, and by default (auto)... */
    if (kd_environment_choice("KDSEG_OWN_WINOGRAD") == 0)
        CHECK(kd_conv_own_winograd_takes(&g, 1) == !kd_conv_winograd_available(),
              "by default, taken exactly where oneDNN has no Winograd kernels");
    kd_conv_own_winograd_force(forced), kd_conv_set_winograd(winograd);
}

int main(void) {
    kd_set_threads(2);
    test_against_naive_twins();
    kd_set_threads(1);
    test_against_naive_twins();
    kd_set_threads(3);
    test_against_naive_twins();
    kd_set_threads(2);
    test_blocked_chain();
    test_what_it_takes();
    return check_done("test_winograd");
}
