/* test_ops.c - forward values: the fast convolution against the naive one on
 * every geometry, and each other op and loss against values worked out by
 * hand (the arithmetic is written next to each expectation). */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "conv_dnnl.h"
#include "conv_subimages.h"
#include "im2col.h"
#include "internal.h"

#define SEED 7u

static kd_tensor *tensor_from(int ndim, const int *shape, const float *values) {
    kd_tensor *t;
    if (kd_tensor_new(KD_F32, ndim, shape, &t)) return NULL;
    memcpy(kd_f32(t), values, sizeof(float) * kd_numel(t));
    return t;
}

static kd_tensor *random_tensor(int n, int c, int h, int w, kd_rng *rng) {
    int shape[4] = {n, c, h, w};
    kd_tensor *t;
    kd_tensor_new(KD_F32, 4, shape, &t);
    kd_fill_normal(t, 0, 1, rng);
    return t;
}

static bool close_to(float a, double b, double tol) { return fabs(a - b) <= tol * fmax(1, fabs(b)); }

static void check_values(const char *what, const kd_tensor *t, const float *want, size_t n, double tol) {
    CHECK(kd_numel(t) == n, "%s: %zu values, want %zu", what, kd_numel(t), n);
    for (size_t i = 0; i < n && i < kd_numel(t); i++)
        CHECK(close_to(kd_f32(t)[i], want[i], tol), "%s[%zu] = %.7g, want %.7g", what, i, kd_f32(t)[i], want[i]);
}

/* With Winograd (winograd: oneDNN's kernels or kdseg's, where either takes
 * the geometry), whose transforms round in float32: its error follows the
 * size of the inputs a tile reads, not of the output, so it is held to the
 * largest output (2e-5 of it, as tests/c/test_winograd.c); direct
 * convolution, per output, to max(1, |output|). */
static void check_conv_against_reference(bool winograd) {
    bool was = kd_conv_set_winograd(winograd);
    struct { int n, cin, h, w, cout, k, stride, pad, dil, groups; bool bias; } geo[] = {
        {2, 3, 9, 11, 4, 3, 1, 1, 1, 1, true},  {2, 4, 8, 8, 6, 3, 2, 1, 1, 2, false},
        {1, 5, 13, 9, 3, 3, 1, 2, 2, 1, true},  {1, 2, 17, 15, 2, 3, 1, 4, 4, 1, false},
        {2, 6, 7, 7, 6, 3, 1, 1, 1, 6, true},   {2, 8, 6, 10, 5, 1, 1, 0, 1, 1, true},
        {1, 3, 10, 7, 2, 5, 3, 2, 1, 1, false}, {2, 16, 33, 65, 8, 3, 2, 1, 1, 1, true},
        /* bands of output rows (columns over the budget: 40 rows as 20 + 20) and
         * groups of images (8 images of 16 x 32 outputs, cut into equal units) */
        {3, 32, 40, 64, 8, 3, 1, 1, 1, 1, true}, {8, 32, 32, 64, 16, 3, 2, 1, 1, 1, false},
    };
    kd_rng rng;
    kd_rng_seed(&rng, SEED);
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        kd_tensor *x = random_tensor(geo[g].n, geo[g].cin, geo[g].h, geo[g].w, &rng);
        kd_tensor *w = random_tensor(geo[g].cout, geo[g].cin / geo[g].groups, geo[g].k, geo[g].k, &rng);
        kd_tensor *b = NULL, *fast, *slow;
        if (geo[g].bias) {
            int c[1] = {geo[g].cout};
            kd_tensor_new(KD_F32, 1, c, &b);
            kd_fill_normal(b, 0, 1, &rng);
        }
        kd_conv_params p = {geo[g].stride, geo[g].stride, geo[g].pad, geo[g].pad, geo[g].dil,
                            geo[g].dil, geo[g].groups};
        CHECK_OK(kd_conv2d(x, w, b, &p, &fast));
        CHECK_OK(kd_conv2d_reference(x, w, b, &p, &slow));
        double worst = 0, largest = 0;
        for (size_t i = 0; i < kd_numel(slow); i++) largest = fmax(largest, fabs(kd_f32(slow)[i]));
        for (size_t i = 0; i < kd_numel(slow); i++) {
            double scale = winograd ? fmax(1, largest) : fmax(1, fabs(kd_f32(slow)[i]));
            worst = fmax(worst, fabs(kd_f32(fast)[i] - kd_f32(slow)[i]) / scale);
        }
        /* float rounding of a K-term sum grows with K (288 for the band and
         * group geometries); a wrong column or band is off by O(1) */
        int K = geo[g].cin / geo[g].groups * geo[g].k * geo[g].k;
        double tolerance = winograd ? 2e-5 : fmax(1e-5, 2e-7 * K);
        CHECK(kd_same_shape(fast, slow) && worst < tolerance, "conv geometry %zu (%s): shape %s vs %s, "
              "worst difference %g (tolerance %g)", g, winograd ? "Winograd" : "direct", kd_shape_str(fast),
              kd_shape_str(slow), worst, tolerance);
        kd_tensor_release(x), kd_tensor_release(w), kd_tensor_release(b);
        kd_tensor_release(fast), kd_tensor_release(slow);
    }
    kd_conv_set_winograd(was);
}

static void test_conv_against_reference(void) {
    check_conv_against_reference(false);
    check_conv_against_reference(true);
}

/* kd_im2col against its definition, element by element, on bands of output
 * rows and a wider matrix (ld > band): the "same" stride-1 convolutions take
 * a path of their own (one shifted copy per matrix row, padding columns
 * zeroed after), so each padding and dilation is tried there, with taps that
 * fall wholly in the padding, next to strided and shrinking geometries. */
static void test_im2col_against_definition(void) {
    struct { int c, h, w, k, stride, pad, dil, oh0, oh1; } geo[] = {
        {3, 9, 11, 3, 1, 1, 1, 0, 9}, {2, 13, 9, 3, 1, 2, 2, 3, 11}, {2, 7, 6, 3, 1, 4, 4, 0, 7},
        {2, 3, 8, 3, 1, 4, 4, 1, 3}, {1, 10, 7, 5, 1, 2, 1, 6, 10}, {2, 8, 8, 1, 1, 0, 1, 2, 5},
        {2, 9, 12, 3, 2, 1, 1, 0, 5}, {1, 10, 7, 3, 1, 0, 1, 1, 7}, {2, 6, 10, 3, 1, 1, 1, 5, 6},
    };
    kd_rng rng;
    kd_rng_seed(&rng, SEED);
    for (size_t t = 0; t < sizeof geo / sizeof geo[0]; t++) {
        kd_conv_geometry g = {.channels = geo[t].c, .height = geo[t].h, .width = geo[t].w,
                              .kernel_h = geo[t].k, .kernel_w = geo[t].k, .stride_h = geo[t].stride,
                              .stride_w = geo[t].stride, .pad_h = geo[t].pad, .pad_w = geo[t].pad,
                              .dilation_h = geo[t].dil, .dilation_w = geo[t].dil};
        g.out_h = (g.height + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) / g.stride_h + 1;
        g.out_w = (g.width + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) / g.stride_w + 1;
        kd_tensor *x = random_tensor(1, g.channels, g.height, g.width, &rng);
        int rows = g.channels * g.kernel_h * g.kernel_w, band = (geo[t].oh1 - geo[t].oh0) * g.out_w;
        size_t ld = (size_t)band + 5;
        float *col = malloc(sizeof(float) * (size_t)rows * ld);
        for (size_t i = 0; i < (size_t)rows * ld; i++) col[i] = NAN; /* every value must be written */
        kd_im2col(kd_f32(x), &g, geo[t].oh0, geo[t].oh1, col, ld);
        int wrong = 0;
        for (int r = 0; r < rows; r++) {
            int c = r / (g.kernel_h * g.kernel_w), ki = r / g.kernel_w % g.kernel_h, kj = r % g.kernel_w;
            for (int p = 0; p < band; p++) {
                int oh = geo[t].oh0 + p / g.out_w, ow = p % g.out_w;
                int ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h, iw = ow * g.stride_w - g.pad_w + kj * g.dilation_w;
                bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
                float want = inside ? kd_f32(x)[((size_t)c * g.height + ih) * g.width + iw] : 0;
                if (col[(size_t)r * ld + p] != want) wrong++;
            }
        }
        CHECK(wrong == 0, "im2col geometry %zu: %d of %d values wrong", t, wrong, rows * band);
        free(col);
        kd_tensor_release(x);
    }
}

static void test_cross_entropy_by_hand(void) {
    /* logits for 2 pixels (1 x 3 x 1 x 2): pixel a = (1, 2, 3), pixel b = (0, 0, 0) */
    int shape[4] = {1, 3, 1, 2}, tshape[3] = {1, 1, 2}, cshape[1] = {3};
    float values[6] = {1, 0, 2, 0, 3, 0};
    kd_tensor *logits = tensor_from(4, shape, values), *target, *loss, *cw;
    kd_tensor_new(KD_I32, 3, tshape, &target);
    double la = log(exp(1) + exp(2) + exp(3)) - 3; /* target 2: 0.40760596 */
    double lb = log(3);                             /* target 0 of uniform: 1.0986123 */
    kd_i32(target)[0] = 2, kd_i32(target)[1] = 0;
    kd_cross_entropy_params p = {255, NULL, NULL, KD_REDUCE_MEAN};
    CHECK_OK(kd_cross_entropy(logits, target, &p, &loss));
    CHECK(close_to(kd_f32(loss)[0], (la + lb) / 2, 1e-6), "mean CE %g, want %g", kd_f32(loss)[0], (la + lb) / 2);
    kd_tensor_release(loss);

    kd_i32(target)[1] = 255; /* ignored: the mean is over one pixel */
    CHECK_OK(kd_cross_entropy(logits, target, &p, &loss));
    CHECK(close_to(kd_f32(loss)[0], la, 1e-6), "CE with an ignored pixel %g, want %g", kd_f32(loss)[0], la);
    kd_tensor_release(loss);

    kd_i32(target)[1] = 0;
    float weights[3] = {2, 1, 1};
    cw = tensor_from(1, cshape, weights);
    p.class_weight = cw; /* (1 * la + 2 * lb) / (1 + 2) */
    CHECK_OK(kd_cross_entropy(logits, target, &p, &loss));
    CHECK(close_to(kd_f32(loss)[0], (la + 2 * lb) / 3, 1e-6), "class-weighted CE %g", kd_f32(loss)[0]);
    kd_tensor_release(loss);

    int wshape[3] = {1, 1, 2};
    float pix[2] = {0.5f, 0.25f};
    kd_tensor *pw = tensor_from(3, wshape, pix);
    p.pixel_weight = pw; /* (1 * 0.5 * la + 2 * 0.25 * lb) / (1 + 2) */
    p.reduction = KD_REDUCE_SUM;
    CHECK_OK(kd_cross_entropy(logits, target, &p, &loss));
    CHECK(close_to(kd_f32(loss)[0], 0.5 * la + 0.5 * lb, 1e-6), "pixel-weighted CE sum %g", kd_f32(loss)[0]);
    kd_tensor_release(loss);

    p = (kd_cross_entropy_params){255, NULL, NULL, KD_REDUCE_NONE};
    kd_i32(target)[1] = 255;
    CHECK_OK(kd_cross_entropy(logits, target, &p, &loss));
    float none[2] = {(float)la, 0};
    check_values("CE none", loss, none, 2, 1e-6);
    kd_tensor_release(loss);

    kd_i32(target)[0] = 255; /* nothing counted: 0, not NaN */
    p.reduction = KD_REDUCE_MEAN;
    CHECK_OK(kd_cross_entropy(logits, target, &p, &loss));
    CHECK(kd_f32(loss)[0] == 0.0f, "CE over no counted pixel is 0, got %g", kd_f32(loss)[0]);
    kd_tensor_release(loss);
    kd_tensor_release(logits), kd_tensor_release(target), kd_tensor_release(cw), kd_tensor_release(pw);
}

static void test_kl_by_hand(void) {
    /* one pixel, 2 classes: teacher logits (0, 0), student (0, ln 3).
     * T = 1: p_t = (1/2, 1/2), p_s = (1/4, 3/4),
     *        KL = 1/2 ln(2) + 1/2 ln(2/3) = 0.1438410
     * T = 2: p_s = softmax(0, ln(3)/2) = (1, sqrt 3) / (1 + sqrt 3),
     *        KL = 4 [1/2 ln((1 + sqrt 3) / 2) + 1/2 ln((1 + sqrt 3) / (2 sqrt 3))] */
    int shape[4] = {1, 2, 1, 1};
    float s_values[2] = {0, (float)log(3)}, t_values[2] = {0, 0};
    kd_tensor *s = tensor_from(4, shape, s_values), *t = tensor_from(4, shape, t_values), *kl;
    CHECK_OK(kd_kl_div(s, t, 1.0f, true, KD_REDUCE_MEAN, &kl));
    CHECK(close_to(kd_f32(kl)[0], 0.5 * log(2) + 0.5 * log(2.0 / 3), 1e-6), "KL T=1 %g", kd_f32(kl)[0]);
    kd_tensor_release(kl);
    double r3 = sqrt(3);
    double want = 4 * (0.5 * log((1 + r3) / 2) + 0.5 * log((1 + r3) / (2 * r3)));
    CHECK_OK(kd_kl_div(s, t, 2.0f, true, KD_REDUCE_MEAN, &kl));
    CHECK(close_to(kd_f32(kl)[0], want, 1e-5), "KL T=2 %g, want %g", kd_f32(kl)[0], want);
    kd_tensor_release(kl);
    CHECK_OK(kd_kl_div(t, t, 3.0f, true, KD_REDUCE_MEAN, &kl));
    CHECK(fabsf(kd_f32(kl)[0]) < 1e-7, "KL of a distribution with itself is 0");
    kd_tensor_release(kl), kd_tensor_release(s), kd_tensor_release(t);
}

static void test_softmax_and_max(void) {
    int shape[4] = {1, 3, 1, 2};
    float v[6] = {1, 5, 2, 5, 3, -1}; /* pixel 0: (1, 2, 3); pixel 1: (5, 5, -1) */
    kd_tensor *x = tensor_from(4, shape, v), *y, *vals, *idx;
    CHECK_OK(kd_softmax(x, 1.0f, &y));
    double z = exp(1) + exp(2) + exp(3);
    float want[6] = {(float)(exp(1) / z), 0, (float)(exp(2) / z), 0, (float)(exp(3) / z), 0};
    want[1] = want[3] = (float)(exp(5) / (2 * exp(5) + exp(-1)));
    want[5] = (float)(exp(-1) / (2 * exp(5) + exp(-1)));
    check_values("softmax", y, want, 6, 1e-6);
    kd_tensor_release(y);
    CHECK_OK(kd_log_softmax(x, 2.0f, &y)); /* log softmax of (0.5, 1, 1.5) at pixel 0 */
    double z2 = exp(0.5) + exp(1) + exp(1.5);
    CHECK(close_to(kd_f32(y)[4], 1.5 - log(z2), 1e-6), "log_softmax T=2 %g", kd_f32(y)[4]);
    kd_tensor_release(y);
    CHECK_OK(kd_max_channels(x, &vals, &idx));
    CHECK(kd_i32(idx)[0] == 2 && kd_i32(idx)[1] == 0, "argmax (ties to the lowest): %d %d",
          kd_i32(idx)[0], kd_i32(idx)[1]);
    CHECK(kd_f32(vals)[0] == 3 && kd_f32(vals)[1] == 5, "max values");
    kd_tensor_release(vals), kd_tensor_release(idx), kd_tensor_release(x);
}

/* kd_resize_bilinear against its naive twin (each output pixel from its
 * four source pixels) on sizes whose rows start unaligned and end in a
 * tail, and on the logits' x8 upsampling, over several planes. */
static void test_resize_against_naive(void) {
    const int sizes[3][4] = {{5, 7, 37, 61}, {16, 32, 128, 256}, {3, 9, 10, 13}};
    for (int k = 0; k < 3; k++)
        for (int align = 0; align < 2; align++) {
            int H = sizes[k][0], W = sizes[k][1], OH = sizes[k][2], OW = sizes[k][3];
            int shape[4] = {2, 3, H, W};
            kd_tensor *x, *y;
            kd_rng rng;
            kd_rng_seed(&rng, 5 + (uint64_t)k);
            CHECK_OK(kd_tensor_new(KD_F32, 4, shape, &x));
            kd_fill_normal(x, 0, 1, &rng);
            CHECK_OK(kd_resize_bilinear(x, OH, OW, align, &y));
            kd_bilinear_tap th[128], tw[256];
            kd_bilinear_taps(H, OH, align, th);
            kd_bilinear_taps(W, OW, align, tw);
            double worst = 0;
            for (int q = 0; q < 6; q++)
                for (int oh = 0; oh < OH; oh++)
                    for (int ow = 0; ow < OW; ow++) {
                        const float *p = kd_f32(x) + (size_t)q * H * W;
                        kd_bilinear_tap a = th[oh], b = tw[ow];
                        double top = p[a.lo * W + b.lo] + ((double)p[a.lo * W + b.hi] - p[a.lo * W + b.lo]) * b.frac;
                        double bottom = p[a.hi * W + b.lo] + ((double)p[a.hi * W + b.hi] - p[a.hi * W + b.lo]) * b.frac;
                        double want = top + (bottom - top) * a.frac;
                        double got = kd_f32(y)[((size_t)q * OH + oh) * OW + ow];
                        if (fabs(got - want) > worst) worst = fabs(got - want);
                    }
            CHECK(worst < 1e-5, "bilinear %dx%d -> %dx%d (align_corners %d) is %g off its naive twin", H, W, OH, OW,
                  align, worst);
            kd_tensor_release(x), kd_tensor_release(y);
        }
}

/* kd_max_channels against its naive twin (each pixel's channels in order,
 * the first largest wins) on planes of several pixel blocks with a tail,
 * values rounded to halves so that ties are common, and a NaN. */
static void test_max_channels_against_naive(void) {
    const int shapes[2][4] = {{3, 19, 33, 70}, {2, 2, 1, 257}};
    for (int k = 0; k < 2; k++) {
        kd_tensor *x, *vals, *idx;
        kd_rng rng;
        kd_rng_seed(&rng, 11 + (uint64_t)k);
        CHECK_OK(kd_tensor_new(KD_F32, 4, shapes[k], &x));
        kd_fill_normal(x, 0, 1, &rng);
        float *d = kd_f32(x);
        size_t n = kd_numel(x), HW = (size_t)shapes[k][2] * shapes[k][3], C = (size_t)shapes[k][1];
        for (size_t i = 0; i < n; i++) d[i] = floorf(d[i] * 2) / 2;
        d[5 * HW + 7] = NAN;
        CHECK_OK(kd_max_channels(x, &vals, &idx));
        size_t wrong = 0;
        for (size_t p = 0; p < (size_t)shapes[k][0] * HW; p++) {
            const float *at = d + p / HW * C * HW + p % HW;
            float best = at[0];
            int arg = 0;
            for (size_t c = 1; c < C; c++)
                if (at[c * HW] > best) best = at[c * HW], arg = (int)c;
            bool same_value = kd_f32(vals)[p] == best || (isnan(best) && isnan(kd_f32(vals)[p]));
            if (kd_i32(idx)[p] != arg || !same_value) wrong++;
        }
        CHECK(wrong == 0, "max_channels on %dx%dx%dx%d: %zu pixels differ from the naive twin", shapes[k][0],
              shapes[k][1], shapes[k][2], shapes[k][3], wrong);
        kd_tensor_release(x), kd_tensor_release(vals), kd_tensor_release(idx);
    }
}

static void test_resize_by_hand(void) {
    int shape[4] = {1, 1, 2, 2};
    float v[4] = {0, 1, 2, 3};
    kd_tensor *x = tensor_from(4, shape, v), *y;
    CHECK_OK(kd_resize_bilinear(x, 3, 3, true, &y));
    float corners[9] = {0, 0.5f, 1, 1, 1.5f, 2, 2, 2.5f, 3};
    check_values("bilinear align_corners", y, corners, 9, 1e-6);
    kd_tensor_release(y);
    /* align_corners false, 2 -> 4: src = (d + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 */
    CHECK_OK(kd_resize_bilinear(x, 4, 4, false, &y));
    float half[16] = {0, 0.25f, 0.75f, 1, 0.5f, 0.75f, 1.25f, 1.5f,
                      1.5f, 1.75f, 2.25f, 2.5f, 2, 2.25f, 2.75f, 3};
    check_values("bilinear half-pixel", y, half, 16, 1e-6);
    kd_tensor_release(y);

    int lshape[3] = {1, 2, 2};
    kd_tensor *labels, *big;
    kd_tensor_new(KD_U8, 3, lshape, &labels);
    uint8_t lv[4] = {7, 255, 3, 1};
    memcpy(kd_u8(labels), lv, 4);
    CHECK_OK(kd_resize_nearest(labels, 4, 4, &big));
    CHECK(big->dtype == KD_U8 && kd_u8(big)[0] == 7 && kd_u8(big)[3] == 255 && kd_u8(big)[15] == 1 &&
          kd_u8(big)[12] == 3, "nearest keeps label values");
    kd_tensor_release(big), kd_tensor_release(labels), kd_tensor_release(x);
}

static void test_pool_norm_by_hand(void) {
    int shape[4] = {1, 1, 3, 3};
    float v[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    kd_tensor *x = tensor_from(4, shape, v), *y;
    kd_pool_params p = {2, 2, 1, 1, 0, 0, false, false};
    CHECK_OK(kd_max_pool2d(x, &p, &y));
    float maxes[4] = {5, 6, 8, 9};
    check_values("max_pool 2x2 s1", y, maxes, 4, 0);
    kd_tensor_release(y);
    kd_pool_params q = {3, 3, 1, 1, 1, 1, false, false}; /* padding counts: corner = (1+2+4+5)/9 */
    CHECK_OK(kd_avg_pool2d(x, &q, &y));
    CHECK(close_to(kd_f32(y)[0], 12.0 / 9, 1e-6) && close_to(kd_f32(y)[4], 5, 1e-6), "avg_pool");
    kd_tensor_release(y);
    /* ceil mode (PyTorch's values): 2x2 windows, stride 2, over 3x3 give 2x2
     * windows, the last ones hanging over; an average divides by what the
     * window covers of the (unpadded) input */
    kd_pool_params ceil = {2, 2, 2, 2, 0, 0, true, false};
    CHECK_OK(kd_max_pool2d(x, &ceil, &y));
    float ceil_max[4] = {5, 6, 8, 9};
    check_values("max_pool 2x2 s2 ceil_mode", y, ceil_max, 4, 0);
    kd_tensor_release(y);
    CHECK_OK(kd_avg_pool2d(x, &ceil, &y));
    float ceil_avg[4] = {3, 4.5f, 7.5f, 9};
    check_values("avg_pool 2x2 s2 ceil_mode", y, ceil_avg, 4, 1e-6);
    kd_tensor_release(y);
    kd_pool_params floor_mode = {2, 2, 2, 2, 0, 0, false, false};
    CHECK_OK(kd_max_pool2d(x, &floor_mode, &y));
    CHECK(y->shape[2] == 1 && y->shape[3] == 1 && kd_f32(y)[0] == 5, "max_pool 2x2 s2 floors to 1x1");
    kd_tensor_release(y);
    kd_pool_params exclude = {3, 3, 1, 1, 1, 1, false, true}; /* count_include_pad = False */
    CHECK_OK(kd_avg_pool2d(x, &exclude, &y));
    CHECK(close_to(kd_f32(y)[0], 12.0 / 4, 1e-6) && close_to(kd_f32(y)[1], 21.0 / 6, 1e-6) &&
          close_to(kd_f32(y)[4], 5, 1e-6), "avg_pool without padding in the divisor");
    kd_tensor_release(y);
    /* a window that would start in the right padding is dropped: width 5,
     * kernel 2, stride 2, padding 1 gives 3 windows, not 4 */
    int row_shape[4] = {1, 1, 1, 5};
    float row[5] = {1, 2, 3, 4, 5};
    kd_tensor *r = tensor_from(4, row_shape, row);
    kd_pool_params hang = {1, 2, 1, 2, 0, 1, true, false};
    CHECK_OK(kd_max_pool2d(r, &hang, &y));
    float hang_max[3] = {1, 3, 5};
    CHECK(y->shape[3] == 3, "ceil mode drops a window starting in the padding");
    check_values("max_pool ceil with padding", y, hang_max, 3, 0);
    kd_tensor_release(y);
    CHECK_OK(kd_avg_pool2d(r, &hang, &y));
    float hang_avg[3] = {0.5f, 2.5f, 4.5f}; /* the padding counts */
    check_values("avg_pool ceil with padding", y, hang_avg, 3, 1e-6);
    kd_tensor_release(y);
    hang.exclude_pad = true;
    CHECK_OK(kd_avg_pool2d(r, &hang, &y));
    float hang_excl[3] = {1, 2.5f, 4.5f};
    check_values("avg_pool ceil without padding in the divisor", y, hang_excl, 3, 1e-6);
    kd_tensor_release(y);
    kd_tensor_release(r);
    CHECK_OK(kd_adaptive_avg_pool2d(x, 2, 2, &y)); /* cells [0,2) x [0,2) etc: overlapping */
    float cells[4] = {3, 4, 6, 7};
    check_values("adaptive 2x2 of 3x3", y, cells, 4, 1e-6);
    kd_tensor_release(y);

    /* batch norm, 1 channel of 1..9: mean 5, biased var 60/9, unbiased 60/8 */
    int c[1] = {1};
    kd_tensor *rm, *rv;
    kd_tensor_zeros(KD_F32, 1, c, &rm);
    kd_tensor_full(KD_F32, 1, c, 1.0, &rv);
    CHECK_OK(kd_batch_norm2d(x, NULL, NULL, rm, rv, true, 0.1f, 1e-5f, &y));
    CHECK(close_to(kd_f32(y)[8], 4 / sqrt(60.0 / 9 + 1e-5), 1e-5), "bn output %g", kd_f32(y)[8]);
    CHECK(close_to(kd_f32(rm)[0], 0.5, 1e-6) && close_to(kd_f32(rv)[0], 0.9 + 0.1 * 7.5, 1e-6),
          "running stats %g %g", kd_f32(rm)[0], kd_f32(rv)[0]);
    kd_tensor_release(y);
    CHECK_OK(kd_batch_norm2d(x, NULL, NULL, rm, rv, false, 0.1f, 1e-5f, &y));
    CHECK(close_to(kd_f32(y)[0], (1 - 0.5) / sqrt(1.65 + 1e-5), 1e-5), "bn eval uses running stats");
    kd_tensor_release(y), kd_tensor_release(rm), kd_tensor_release(rv), kd_tensor_release(x);
}

static void test_distill_and_mse_by_hand(void) {
    /* grid 1 x 2. Student nodes (1, 0) and (0, 1): S_s = I. Teacher nodes 1 and
     * 2 in one channel: S_t = all ones. Off-diagonals differ by 1: (1 + 1) / 4. */
    int sshape[4] = {1, 2, 1, 2}, tshape[4] = {1, 1, 1, 2};
    float sv[4] = {1, 0, 0, 1}, tv[2] = {1, 2};
    kd_tensor *s = tensor_from(4, sshape, sv), *t = tensor_from(4, tshape, tv), *loss;
    CHECK_OK(kd_pairwise_distill(s, t, 1, 2, &loss));
    CHECK(close_to(kd_f32(loss)[0], 0.5, 1e-6), "pairwise loss %g, want 0.5", kd_f32(loss)[0]);
    kd_tensor_release(loss);
    CHECK_OK(kd_pairwise_distill(t, t, 1, 2, &loss));
    CHECK(fabsf(kd_f32(loss)[0]) < 1e-7, "pairwise loss of identical features is 0");
    kd_tensor_release(loss);
    CHECK_OK(kd_mse(s, s, KD_REDUCE_SUM, &loss));
    CHECK(kd_f32(loss)[0] == 0, "mse of equal tensors");
    kd_tensor_release(loss);
    float uv[4] = {2, 0, 0, -1};
    kd_tensor *u = tensor_from(4, sshape, uv);
    CHECK_OK(kd_mse(s, u, KD_REDUCE_MEAN, &loss)); /* (1 + 0 + 0 + 4) / 4 */
    CHECK(close_to(kd_f32(loss)[0], 1.25, 1e-6), "mse %g", kd_f32(loss)[0]);
    kd_tensor_release(loss), kd_tensor_release(u), kd_tensor_release(s), kd_tensor_release(t);
}

/* Past KD_PARALLEL_MIN the sum runs in blocks across threads: x = -1, 0, 1,
 * -1, ... against y = 0 gives 2 of every 3 squares 1, a sum exact in
 * double; the same bits at 1, 2 and 3 threads. */
static void test_mse_parallel_by_hand(void) {
    int shape[1] = {100003};
    kd_tensor *x, *y, *loss;
    CHECK_OK(kd_tensor_new(KD_F32, 1, shape, &x));
    CHECK_OK(kd_tensor_new(KD_F32, 1, shape, &y));
    size_t ones = 0;
    for (int i = 0; i < shape[0]; i++) {
        kd_f32(x)[i] = (float)(i % 3 - 1), kd_f32(y)[i] = 0;
        ones += i % 3 != 1;
    }
    int threads = kd_get_threads();
    float first = 0;
    for (int t = 1; t <= 3; t++) {
        kd_set_threads(t);
        CHECK_OK(kd_mse(x, y, KD_REDUCE_SUM, &loss));
        CHECK(kd_f32(loss)[0] == (float)ones, "mse sum at %d threads %g, want %zu", t, kd_f32(loss)[0], ones);
        kd_tensor_release(loss);
        CHECK_OK(kd_mse(x, y, KD_REDUCE_MEAN, &loss));
        if (t == 1) first = kd_f32(loss)[0];
        CHECK(close_to(kd_f32(loss)[0], (double)ones / shape[0], 1e-7), "mse mean %g", kd_f32(loss)[0]);
        CHECK(kd_f32(loss)[0] == first, "mse mean at %d threads %.9g, at 1 %.9g", t, kd_f32(loss)[0], first);
        kd_tensor_release(loss);
    }
    kd_set_threads(threads);
    kd_tensor_release(x), kd_tensor_release(y);
}

static void test_reductions_by_hand(void) {
    int shape[3] = {2, 2, 3};
    float v[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    kd_tensor *x = tensor_from(3, shape, v), *y;
    CHECK_OK(kd_sum_dims(x, 0x4, false, &y)); /* over the last dim */
    float rows[4] = {6, 15, 24, 33};
    CHECK(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 2, "sum_dims shape %s", kd_shape_str(y));
    check_values("sum over dim 2", y, rows, 4, 0);
    kd_tensor_release(y);
    CHECK_OK(kd_mean_dims(x, 0x1, true, &y));
    float first[6] = {4, 5, 6, 7, 8, 9};
    CHECK(y->ndim == 3 && y->shape[0] == 1, "keepdim shape %s", kd_shape_str(y));
    check_values("mean over dim 0", y, first, 6, 1e-6);
    kd_tensor_release(y);
    CHECK_OK(kd_mean(x, &y));
    CHECK(kd_f32(y)[0] == 6.5f, "mean %g", kd_f32(y)[0]);
    kd_tensor_release(y), kd_tensor_release(x);
}

/* Spectral normalisation's power iteration on matrices whose largest
 * singular value is known: diag(3, 1) (sigma 3, u = +-e1) and the rank-one
 * a b^T (sigma |a| |b|), seen as out x in x 1 x 1 weights; u v^T comes back
 * in the weight's shape; no iteration keeps u and gives ||W^T u||. */
static void test_spectral_power(void) {
    int ws[4] = {2, 2, 1, 1}, us[1] = {2};
    float diag[4] = {3, 0, 0, 1}, start[2] = {0.6f, 0.8f};
    kd_tensor *w = tensor_from(4, ws, diag), *u = tensor_from(1, us, start), *outer;
    float sigma;
    CHECK_OK(kd_spectral_power(w, u, 0, &outer, &sigma));
    /* W^T u = (1.8, 0.8): sigma = |W^T u| = sqrt(3.24 + 0.64) */
    CHECK(fabsf(sigma - sqrtf(3.88f)) < 1e-5f, "no iteration: sigma = ||W^T u|| = %g, got %g", sqrtf(3.88f), sigma);
    CHECK(kd_f32(u)[0] == 0.6f && kd_f32(u)[1] == 0.8f, "no iteration keeps u");
    kd_tensor_release(outer);
    CHECK_OK(kd_spectral_power(w, u, 30, &outer, &sigma));
    CHECK(fabsf(sigma - 3.0f) < 1e-5f, "diag(3, 1): sigma 3, got %g", sigma);
    CHECK(fabsf(fabsf(kd_f32(u)[0]) - 1.0f) < 1e-5f && fabsf(kd_f32(u)[1]) < 1e-5f, "u -> e1");
    CHECK(fabsf(kd_f32(outer)[0] - 1.0f) < 1e-5f && fabsf(kd_f32(outer)[3]) < 1e-5f, "u v^T = e1 e1^T");
    kd_tensor_release(outer), kd_tensor_release(w), kd_tensor_release(u);
    /* a = (1, 2, 2) (|a| 3), b = (3, 4) (|b| 5): sigma 15 after one step from any u */
    int rs[4] = {3, 2, 1, 1}, r3[1] = {3};
    float ab[6] = {3, 4, 6, 8, 6, 8}, u0[3] = {1, 0, 0};
    w = tensor_from(4, rs, ab), u = tensor_from(1, r3, u0);
    CHECK_OK(kd_spectral_power(w, u, 1, &outer, &sigma));
    CHECK(fabsf(sigma - 15.0f) < 1e-4f, "a b^T: sigma |a||b| = 15, got %g", sigma);
    kd_tensor_release(outer);
    kd_tensor *bad = tensor_from(1, us, start);
    CHECK_FAILS(kd_spectral_power(w, bad, 1, &outer, &sigma), KD_ERR_SHAPE, "rows");
    CHECK_FAILS(kd_spectral_power(w, u, -1, &outer, &sigma), KD_ERR_ARG, "iterations");
    kd_tensor_release(bad), kd_tensor_release(w), kd_tensor_release(u);
}

/* A dilated layer oneDNN runs on its GEMM fallback where it has no direct
 * kernel for it (on AVX2, bench_student's 16 x 32 maps: the forward at
 * dilation 4, the weight gradient at dilation 2 too) goes to sub-images
 * (conv_subimages.c) also without Winograd kernels, and its output and
 * both gradients agree with the portable path. */
static void check_gemm_fallback_dilated_on_subimages(int d) {
    int N = 8, C = 64, H = 16, W = 32;
    kd_conv_geometry g = {.channels = C, .height = H, .width = W, .kernel_h = 3, .kernel_w = 3, .stride_h = 1,
                          .stride_w = 1, .dilation_h = d, .dilation_w = d, .pad_h = d, .pad_w = d, .out_h = H,
                          .out_w = W};
    if (kd_conv_dnnl_active() && !kd_conv_winograd_available()) {
        if (kd_conv_dnnl_direct_on_gemm(&g, N, C))
            CHECK(kd_conv_by_subimages(&g, N, C, 1, false), "dilation %d: a forward on oneDNN's GEMM fallback does "
                  "not go to sub-images", d);
        if (kd_conv_dnnl_weight_grad_on_gemm(&g, N, C))
            CHECK(kd_conv_by_subimages(&g, N, C, 1, true), "dilation %d: a weight gradient on oneDNN's GEMM fallback "
                  "does not go to sub-images", d);
    }
    kd_conv_params p = {1, 1, d, d, d, d, 1};
    kd_tensor *grads[2][3];
    for (int portable = 0; portable < 2; portable++) {
        bool was = kd_conv_use_dnnl(!portable);
        kd_tensor *x = check_randn4(N, C, H, W, 21), *w = check_randn4(C, C, 3, 3, 22), *y, *sq, *loss;
        x->requires_grad = w->requires_grad = true;
        CHECK_OK(kd_conv2d(x, w, NULL, &p, &y));
        CHECK_OK(kd_mul(y, y, &sq));
        CHECK_OK(kd_sum(sq, &loss));
        CHECK_OK(kd_backward(loss, NULL));
        grads[portable][0] = kd_tensor_retain(y), grads[portable][1] = kd_tensor_retain(x->grad);
        grads[portable][2] = kd_tensor_retain(w->grad);
        kd_tensor *all[] = {x, w, y, sq, loss};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
        kd_conv_use_dnnl(was);
    }
    const char *what[3] = {"output", "input gradient", "weight gradient"};
    for (int k = 0; k < 3; k++) {
        const float *a = kd_f32(grads[0][k]), *b = kd_f32(grads[1][k]);
        double largest = 0, worst = 0;
        for (size_t i = 0; i < kd_numel(grads[0][k]); i++) {
            largest = fmax(largest, fabs(b[i]));
            worst = fmax(worst, fabs(a[i] - b[i]));
        }
        CHECK(worst <= 1e-5 * largest, "dilation %d on 16 x 32: the %s is off the portable path's by %g of %g", d,
              what[k], worst, largest);
        kd_tensor_release(grads[0][k]), kd_tensor_release(grads[1][k]);
    }
}

static void test_gemm_fallback_dilated_on_subimages(void) {
    check_gemm_fallback_dilated_on_subimages(2);
    check_gemm_fallback_dilated_on_subimages(4);
}

int main(void) {
    kd_set_threads(2);
    test_spectral_power();
    test_conv_against_reference();
    test_gemm_fallback_dilated_on_subimages();
    test_im2col_against_definition();
    test_cross_entropy_by_hand();
    test_kl_by_hand();
    test_softmax_and_max();
    test_resize_by_hand();
    test_resize_against_naive();
    test_max_channels_against_naive();
    test_pool_norm_by_hand();
    test_distill_and_mse_by_hand();
    test_mse_parallel_by_hand();
    test_reductions_by_hand();
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes,
          m.live_tensors);
    return check_done("test_ops");
}
