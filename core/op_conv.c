/* op_conv.c - 2-D convolution as im2col + GEMM, per image and per group:
 *   out[n, group] (Cout/g x OH*OW) = W[group] (Cout/g x K) @ col[group] (K x OH*OW)
 * with K = Cin/g * kh * kw. A 1x1 stride-1 unpadded convolution reads the
 * input as its own column matrix, with no im2col. The naive seven-loop
 * convolution beside it is the reference the tests hold it to. */
#include <string.h>

#include "blas.h"
#include "im2col.h"
#include "internal.h"

static kd_status check_conv(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                            const kd_conv_params *p, kd_conv_geometry *g) {
    kd_status s;
    if ((s = kd_check_f32("conv2d", "input", x)) || (s = kd_check_f32("conv2d", "weight", w)) ||
        (b && (s = kd_check_f32("conv2d", "bias", b))) ||
        (s = kd_check_ndim("conv2d", "input", x, 4)) || (s = kd_check_ndim("conv2d", "weight", w, 4)))
        return s;
    if (p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 || p->dilation_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0 || p->groups < 1)
        return kd_fail(KD_ERR_ARG, "conv2d: stride %dx%d, dilation %dx%d, padding %dx%d, groups %d: "
                       "strides, dilations and groups must be >= 1, padding >= 0",
                       p->stride_h, p->stride_w, p->dilation_h, p->dilation_w, p->pad_h, p->pad_w,
                       p->groups);
    int cin = x->shape[1], cout = w->shape[0];
    if (cin % p->groups || cout % p->groups)
        return kd_fail(KD_ERR_SHAPE, "conv2d: groups %d do not divide input channels %d and output "
                       "channels %d", p->groups, cin, cout);
    if (w->shape[1] * p->groups != cin)
        return kd_fail(KD_ERR_SHAPE, "conv2d: weight %s does not match input %s with groups %d",
                       kd_shape_str(w), kd_shape_str(x), p->groups);
    if (b && (b->ndim != 1 || b->shape[0] != cout))
        return kd_fail(KD_ERR_SHAPE, "conv2d: bias %s does not match weight %s", kd_shape_str(b),
                       kd_shape_str(w));
    *g = (kd_conv_geometry){
        .channels = cin, .height = x->shape[2], .width = x->shape[3],
        .kernel_h = w->shape[2], .kernel_w = w->shape[3],
        .stride_h = p->stride_h, .stride_w = p->stride_w, .pad_h = p->pad_h, .pad_w = p->pad_w,
        .dilation_h = p->dilation_h, .dilation_w = p->dilation_w,
    };
    int span_h = p->dilation_h * (g->kernel_h - 1) + 1, span_w = p->dilation_w * (g->kernel_w - 1) + 1;
    g->out_h = (g->height + 2 * p->pad_h - span_h) / p->stride_h + 1;
    g->out_w = (g->width + 2 * p->pad_w - span_w) / p->stride_w + 1;
    if (g->height + 2 * p->pad_h < span_h || g->width + 2 * p->pad_w < span_w)
        return kd_fail(KD_ERR_SHAPE, "conv2d: kernel %dx%d (dilation %dx%d) is larger than input %s "
                       "padded by %dx%d", g->kernel_h, g->kernel_w, p->dilation_h, p->dilation_w,
                       kd_shape_str(x), p->pad_h, p->pad_w);
    return KD_OK;
}

static bool is_pointwise(const kd_conv_geometry *g) {
    return g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 &&
           g->pad_h == 0 && g->pad_w == 0;
}

/* Images per GEMM. Small feature maps make narrow products (N = OH * OW),
 * which run far below the GEMM peak; putting G images side by side makes the
 * product G times wider, at the price of copying outputs out of (and output
 * gradients into) a G-wide buffer. Large maps are wide enough alone. */
#define WIDE_ENOUGH 4096
#define COLUMN_BUDGET ((size_t)8 << 20) /* floats per column buffer: 32 MiB */

static int images_per_gemm(const kd_conv_geometry *g, int n_images) {
    size_t rows = (size_t)g->channels * g->kernel_h * g->kernel_w, P = (size_t)g->out_h * g->out_w;
    if (P >= WIDE_ENOUGH) return 1;
    size_t fit = COLUMN_BUDGET / (rows * P > 0 ? rows * P : 1), want = (WIDE_ENOUGH * 4 + P - 1) / P;
    size_t G = fit < want ? fit : want;
    if (G < 1) G = 1;
    if (G > (size_t)n_images) G = (size_t)n_images;
    return (int)G;
}

/* Everything one convolution call works with. */
typedef struct {
    kd_conv_geometry g;
    int N, cout, groups, cout_g, K, P, G;
    size_t in_image;
    bool pointwise;
    float *col, *wide; /* K_total x G*P columns; cout x G*P outputs (G > 1) */
    size_t col_bytes, wide_bytes;
} conv_plan;

static kd_status plan_conv(conv_plan *c, const kd_conv_geometry *g, int N, int cout, int groups, bool need_col) {
    c->g = *g;
    c->N = N, c->cout = cout, c->groups = groups, c->cout_g = cout / groups;
    c->K = g->channels / groups * g->kernel_h * g->kernel_w;
    c->P = g->out_h * g->out_w;
    c->in_image = (size_t)g->channels * g->height * g->width;
    c->pointwise = is_pointwise(g);
    c->G = images_per_gemm(g, N);
    c->col = c->wide = NULL;
    size_t width = (size_t)c->G * c->P;
    if (need_col && (!c->pointwise || c->G > 1)) {
        c->col = kd_cache_alloc((size_t)c->K * groups * width * sizeof(float), &c->col_bytes);
        if (!c->col) return KD_ERR_MEMORY;
    }
    if (c->G > 1) {
        c->wide = kd_cache_alloc((size_t)cout * width * sizeof(float), &c->wide_bytes);
        if (!c->wide) {
            kd_cache_free(c->col, c->col_bytes);
            return KD_ERR_MEMORY;
        }
    }
    return KD_OK;
}

static void free_plan(conv_plan *c) {
    kd_cache_free(c->col, c->col_bytes);
    kd_cache_free(c->wide, c->wide_bytes);
}

/* The column matrix of images [first, first+count), side by side; for an
 * unpadded 1x1 stride-1 convolution of one image, the image itself. */
static const float *columns(const conv_plan *c, const float *x, int first, int count, size_t *ld) {
    if (c->pointwise && count == 1 && c->G == 1) {
        *ld = (size_t)c->P;
        return x + (size_t)first * c->in_image;
    }
    *ld = (size_t)count * c->P;
    for (int j = 0; j < count; j++) kd_im2col(x + (size_t)(first + j) * c->in_image, &c->g, c->col + (size_t)j * c->P, *ld);
    return c->col;
}

/* Between N x C x P tensors and a C x (count * P) wide matrix. */
static void to_wide(const float *t, int channels, int P, int first, int count, float *wide) {
    size_t ld = (size_t)count * P;
#pragma omp parallel for schedule(static) if ((size_t)channels * ld > KD_PARALLEL_MIN)
    for (int ch = 0; ch < channels; ch++)
        for (int j = 0; j < count; j++)
            memcpy(wide + ch * ld + (size_t)j * P, t + ((size_t)(first + j) * channels + ch) * P, sizeof(float) * P);
}

static void from_wide(const float *wide, int channels, int P, int first, int count, float *t) {
    size_t ld = (size_t)count * P;
#pragma omp parallel for schedule(static) if ((size_t)channels * ld > KD_PARALLEL_MIN)
    for (int ch = 0; ch < channels; ch++)
        for (int j = 0; j < count; j++)
            memcpy(t + ((size_t)(first + j) * channels + ch) * P, wide + ch * ld + (size_t)j * P, sizeof(float) * P);
}

static void from_wide_add(const float *wide, int channels, int P, int first, int count, float *t) {
    size_t ld = (size_t)count * P;
#pragma omp parallel for schedule(static) if ((size_t)channels * ld > KD_PARALLEL_MIN)
    for (int ch = 0; ch < channels; ch++)
        for (int j = 0; j < count; j++) {
            float *dst = t + ((size_t)(first + j) * channels + ch) * P;
            const float *src = wide + ch * ld + (size_t)j * P;
            for (int i = 0; i < P; i++) dst[i] += src[i];
        }
}

/* The node keeps the geometry in ints[0..12] and the group count in ints[13]. */
_Static_assert(sizeof(kd_conv_geometry) == 13 * sizeof(int), "geometry fits the node");

static void bias_grad(const float *go, int N, int cout, int P, float *db) {
#pragma omp parallel for schedule(static) if ((size_t)N * cout * P > KD_PARALLEL_MIN)
    for (int ch = 0; ch < cout; ch++) {
        double acc = 0;
        for (int n = 0; n < N; n++) {
            const float *plane = go + ((size_t)n * cout + ch) * P;
            for (int i = 0; i < P; i++) acc += plane[i];
        }
        db[ch] += (float)acc;
    }
}

/* The input gradient of a stride-1 convolution is itself a convolution: of
 * the output gradient, by the weight with its taps flipped and its in/out
 * channels swapped, with padding (k-1)*d - p. Unfolding the output gradient
 * (a gather) and one GEMM with a Cout*kh*kw-deep reduction replaces a GEMM
 * with a Cout-deep one into a Cin*kh*kw-tall column matrix and col2im's
 * scatter-add: less memory traffic, and a product OpenBLAS runs near peak. */
static bool gradient_is_convolution(const kd_conv_geometry *g, int groups) {
    return groups == 1 && g->stride_h == 1 && g->stride_w == 1 && g->kernel_h * g->kernel_w > 1 &&
           g->pad_h <= (g->kernel_h - 1) * g->dilation_h && g->pad_w <= (g->kernel_w - 1) * g->dilation_w;
}

static kd_status input_grad_by_convolution(const kd_conv_geometry *g, const float *w, const float *go, int N,
                                           int cout, float *dx) {
    int taps = g->kernel_h * g->kernel_w, cin = g->channels;
    kd_conv_geometry back = {
        .channels = cout, .height = g->out_h, .width = g->out_w, .kernel_h = g->kernel_h, .kernel_w = g->kernel_w,
        .stride_h = 1, .stride_w = 1, .dilation_h = g->dilation_h, .dilation_w = g->dilation_w,
        .pad_h = (g->kernel_h - 1) * g->dilation_h - g->pad_h, .pad_w = (g->kernel_w - 1) * g->dilation_w - g->pad_w,
        .out_h = g->height, .out_w = g->width,
    };
    conv_plan c;
    size_t flipped_bytes;
    float *flipped = kd_cache_alloc((size_t)cin * cout * taps * sizeof(float), &flipped_bytes);
    if (!flipped || plan_conv(&c, &back, N, cin, 1, true)) {
        kd_cache_free(flipped, flipped_bytes);
        return KD_ERR_MEMORY;
    }
    for (int co = 0; co < cout; co++) /* flipped[ci][co][t] = w[co][ci][taps-1-t] */
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++)
                flipped[((size_t)ci * cout + co) * taps + t] = w[((size_t)co * cin + ci) * taps + taps - 1 - t];
    size_t dx_image = (size_t)cin * c.P; /* c.in_image is one image of the output gradient */
    for (int first = 0; first < N; first += c.G) {
        int count = N - first < c.G ? N - first : c.G;
        size_t width = (size_t)count * c.P;
        for (int j = 0; j < count; j++) kd_im2col(go + (size_t)(first + j) * c.in_image, &back, c.col + (size_t)j * c.P, width);
        bool direct = c.G == 1; /* one image: its gradient is the GEMM's output */
        kd_sgemm(false, false, cin, (int)width, c.K, 1.0f, flipped, c.K, c.col, (int)width, direct ? 1.0f : 0.0f,
                 direct ? dx + (size_t)first * dx_image : c.wide, (int)width);
        if (!direct) from_wide_add(c.wide, cin, c.P, first, count, dx);
    }
    free_plan(&c);
    kd_cache_free(flipped, flipped_bytes);
    return KD_OK;
}

/* Saved: x (N x Cin x H x W), w (Cout x Cin/g x kh x kw). grad_output
 * N x Cout x OH x OW; grads: x, w, bias (Cout). Per block of G images:
 *   dW[group] += dOut[group] (cout_g x G*P) @ col[group]^T
 *   dcol[group] = W[group]^T @ dOut[group], folded back into dx
 * (or dx as a convolution of dOut, see above). */
static kd_status conv2d_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    kd_conv_geometry geometry;
    memcpy(&geometry, node->ints, sizeof geometry);
    const kd_tensor *x = node->saved[0], *w = node->saved[1];
    int N = grad_output->shape[0], cout = grad_output->shape[1], groups = node->ints[13];
    const float *go = kd_f32(grad_output);
    kd_tensor *gx = grad_inputs[0], *gw = grad_inputs[1], *gb = grad_inputs[2];
    int P = geometry.out_h * geometry.out_w;
    if (gb) bias_grad(go, N, cout, P, kd_f32(gb));
    bool gx_by_convolution = gx && gradient_is_convolution(&geometry, groups);
    if (gx_by_convolution) {
        if (input_grad_by_convolution(&geometry, kd_f32(w), go, N, cout, kd_f32(gx)))
            return kd_fail(KD_ERR_MEMORY, "conv2d backward: cannot allocate the column buffer for the gradient of %s",
                           kd_shape_str(x));
        gx = NULL;
    }
    if (!gx && !gw) return KD_OK;
    conv_plan c;
    if (plan_conv(&c, &geometry, N, cout, groups, true))
        return kd_fail(KD_ERR_MEMORY, "conv2d backward: cannot allocate the column buffer for %s", kd_shape_str(x));
    for (int first = 0; first < N; first += c.G) {
        int count = N - first < c.G ? N - first : c.G;
        size_t width = (size_t)count * P;
        const float *dout = go + (size_t)first * cout * P; /* cout x P when count == 1 */
        if (c.G > 1) {
            to_wide(go, cout, P, first, count, c.wide);
            dout = c.wide;
        }
        if (gw) {
            size_t ld;
            const float *cols = columns(&c, kd_f32(x), first, count, &ld);
            for (int gr = 0; gr < c.groups; gr++)
                kd_sgemm(false, true, c.cout_g, c.K, (int)width, 1.0f, dout + (size_t)gr * c.cout_g * width, (int)width,
                         cols + (size_t)gr * c.K * ld, (int)ld, 1.0f, kd_f32(gw) + (size_t)gr * c.cout_g * c.K, c.K);
        }
        if (gx) {
            float *dx = kd_f32(gx) + (size_t)first * c.in_image;
            bool direct = c.pointwise && count == 1 && c.G == 1; /* dcol is dx itself */
            for (int gr = 0; gr < c.groups; gr++)
                kd_sgemm(true, false, c.K, (int)width, c.cout_g, 1.0f, kd_f32(w) + (size_t)gr * c.cout_g * c.K, c.K,
                         dout + (size_t)gr * c.cout_g * width, (int)width, direct ? 1.0f : 0.0f,
                         (direct ? dx : c.col) + (size_t)gr * c.K * width, (int)width);
            if (!direct)
                for (int j = 0; j < count; j++)
                    kd_col2im_add(c.col + (size_t)j * P, &c.g, dx + (size_t)j * c.in_image, width);
        }
    }
    free_plan(&c);
    return KD_OK;
}

kd_status kd_conv2d(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_conv_params *p,
                    kd_tensor **out) {
    kd_conv_geometry g;
    kd_status s = check_conv(x, w, b, p, &g);
    if (s) return s;
    int N = x->shape[0], cout = w->shape[0], groups = p->groups;
    if (kd_is_depthwise(&g, groups, cout)) return kd_conv2d_depthwise(x, w, b, &g, out);
    int shape[4] = {N, cout, g.out_h, g.out_w};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    conv_plan c;
    if (plan_conv(&c, &g, N, cout, groups, true)) {
        kd_tensor_release(*out);
        *out = NULL;
        return kd_fail(KD_ERR_MEMORY, "conv2d: cannot allocate the column buffer for input %s "
                       "and weight %s", kd_shape_str(x), kd_shape_str(w));
    }
    float *y = kd_f32(*out);
    for (int first = 0; first < N; first += c.G) {
        int count = N - first < c.G ? N - first : c.G;
        size_t ld, width = (size_t)count * c.P;
        const float *cols = columns(&c, kd_f32(x), first, count, &ld);
        float *dst = c.G > 1 ? c.wide : y + (size_t)first * cout * c.P;
        for (int gr = 0; gr < groups; gr++)
            kd_sgemm(false, false, c.cout_g, (int)width, c.K, 1.0f, kd_f32(w) + (size_t)gr * c.cout_g * c.K, c.K,
                     cols + (size_t)gr * c.K * ld, (int)ld, 0.0f, dst + (size_t)gr * c.cout_g * width, (int)width);
        if (c.G > 1) from_wide(c.wide, cout, c.P, first, count, y);
    }
    free_plan(&c);
    int P = c.P;
    if (b) {
        const float *bias = kd_f32(b);
#pragma omp parallel for schedule(static) if ((size_t)N * cout * P > KD_PARALLEL_MIN)
        for (int plane = 0; plane < N * cout; plane++) {
            float v = bias[plane % cout];
            float *d = y + (size_t)plane * P;
            for (int i = 0; i < P; i++) d[i] += v;
        }
    }
    kd_tensor *inputs[3] = {x, w, b}, *saved[2] = {x, w};
    kd_node *node;
    s = kd_finish_op("conv2d", conv2d_backward, out, 3, inputs, 2, saved, &node);
    if (node) {
        memcpy(node->ints, &g, sizeof g);
        node->ints[13] = groups;
    }
    return s;
}

kd_status kd_conv2d_reference(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                              const kd_conv_params *p, kd_tensor **out) {
    kd_conv_geometry g;
    kd_status s = check_conv(x, w, b, p, &g);
    if (s) return s;
    int N = x->shape[0], cout = w->shape[0], cin_g = w->shape[1], cout_g = cout / p->groups;
    int shape[4] = {N, cout, g.out_h, g.out_w};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    const float *in = kd_f32(x), *wt = kd_f32(w);
    float *y = kd_f32(*out);
    for (int n = 0; n < N; n++)
        for (int co = 0; co < cout; co++)
            for (int oh = 0; oh < g.out_h; oh++)
                for (int ow = 0; ow < g.out_w; ow++) {
                    double acc = b ? kd_f32(b)[co] : 0.0;
                    int group = co / cout_g;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ki = 0; ki < g.kernel_h; ki++)
                            for (int kj = 0; kj < g.kernel_w; kj++) {
                                int ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
                                int iw = ow * g.stride_w - g.pad_w + kj * g.dilation_w;
                                if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
                                int c = group * cin_g + ci;
                                acc += (double)in[(((size_t)n * g.channels + c) * g.height + ih) * g.width + iw] *
                                       wt[(((size_t)co * cin_g + ci) * g.kernel_h + ki) * g.kernel_w + kj];
                            }
                    y[(((size_t)n * cout + co) * g.out_h + oh) * g.out_w + ow] = (float)acc;
                }
    return KD_OK;
}
