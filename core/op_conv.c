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

/* Scratch for one image's column matrix, from the caching allocator. */
static float *col_buffer(const kd_conv_geometry *g, size_t *rounded) {
    size_t rows = (size_t)g->channels * g->kernel_h * g->kernel_w;
    return kd_cache_alloc(rows * g->out_h * g->out_w * sizeof(float), rounded);
}

/* The node keeps the geometry in ints[0..12] and the group count in ints[13]. */
_Static_assert(sizeof(kd_conv_geometry) == 13 * sizeof(int), "geometry fits the node");

/* Saved: x (N x Cin x H x W), w (Cout x Cin/g x kh x kw). grad_output
 * N x Cout x OH x OW; grads: x, w, bias (Cout). */
static kd_status conv2d_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    kd_conv_geometry g;
    memcpy(&g, node->ints, sizeof g);
    int groups = node->ints[13];
    const kd_tensor *x = node->saved[0], *w = node->saved[1];
    int N = grad_output->shape[0], cout = grad_output->shape[1];
    int cout_g = cout / groups, cin_g = g.channels / groups;
    int K = cin_g * g.kernel_h * g.kernel_w, P = g.out_h * g.out_w;
    size_t in_image = (size_t)g.channels * g.height * g.width;
    const float *go = kd_f32(grad_output);
    kd_tensor *gx = grad_inputs[0], *gw = grad_inputs[1], *gb = grad_inputs[2];

    if (gb) {
        float *db = kd_f32(gb);
#pragma omp parallel for schedule(static) if ((size_t)N * cout * P > KD_PARALLEL_MIN)
        for (int c = 0; c < cout; c++) {
            double acc = 0;
            for (int n = 0; n < N; n++) {
                const float *plane = go + ((size_t)n * cout + c) * P;
                for (int i = 0; i < P; i++) acc += plane[i];
            }
            db[c] += (float)acc;
        }
    }
    if (!gx && !gw) return KD_OK;
    bool pointwise = is_pointwise(&g);
    size_t rounded = 0;
    float *col = pointwise ? NULL : col_buffer(&g, &rounded);
    if (!pointwise && !col)
        return kd_fail(KD_ERR_MEMORY, "conv2d backward: cannot allocate the column buffer for %s",
                       kd_shape_str(x));
    for (int n = 0; n < N; n++) {
        const float *go_n = go + (size_t)n * cout * P;
        if (gw) { /* dW[group] += dOut[group] @ col[group]^T */
            const float *cols = kd_f32(x) + (size_t)n * in_image;
            if (!pointwise) {
                kd_im2col(cols, &g, col);
                cols = col;
            }
            for (int gr = 0; gr < groups; gr++)
                kd_sgemm(false, true, cout_g, K, P, 1.0f, go_n + (size_t)gr * cout_g * P, P,
                         cols + (size_t)gr * K * P, P, 1.0f,
                         kd_f32(gw) + (size_t)gr * cout_g * K, K);
        }
        if (gx) { /* dcol[group] = W[group]^T @ dOut[group], folded back into dx */
            float *dx = kd_f32(gx) + (size_t)n * in_image;
            for (int gr = 0; gr < groups; gr++)
                kd_sgemm(true, false, K, P, cout_g, 1.0f, kd_f32(w) + (size_t)gr * cout_g * K, K,
                         go_n + (size_t)gr * cout_g * P, P, pointwise ? 1.0f : 0.0f,
                         pointwise ? dx + (size_t)gr * K * P : col + (size_t)gr * K * P, P);
            if (!pointwise) kd_col2im_add(col, &g, dx);
        }
    }
    kd_cache_free(col, rounded);
    return KD_OK;
}

kd_status kd_conv2d(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_conv_params *p,
                    kd_tensor **out) {
    kd_conv_geometry g;
    kd_status s = check_conv(x, w, b, p, &g);
    if (s) return s;
    int N = x->shape[0], cout = w->shape[0], groups = p->groups;
    if (kd_is_depthwise(&g, groups, cout)) return kd_conv2d_depthwise(x, w, b, &g, out);
    int cout_g = cout / groups, cin_g = g.channels / groups;
    int K = cin_g * g.kernel_h * g.kernel_w, P = g.out_h * g.out_w;
    int shape[4] = {N, cout, g.out_h, g.out_w};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    bool pointwise = is_pointwise(&g);
    size_t rounded = 0;
    float *col = pointwise ? NULL : col_buffer(&g, &rounded);
    if (!pointwise && !col) {
        kd_tensor_release(*out);
        *out = NULL;
        return kd_fail(KD_ERR_MEMORY, "conv2d: cannot allocate the column buffer for input %s "
                       "and weight %s", kd_shape_str(x), kd_shape_str(w));
    }
    size_t in_image = (size_t)g.channels * g.height * g.width;
    float *y = kd_f32(*out);
    for (int n = 0; n < N; n++) {
        const float *cols = kd_f32(x) + (size_t)n * in_image;
        if (!pointwise) {
            kd_im2col(cols, &g, col);
            cols = col;
        }
        for (int gr = 0; gr < groups; gr++)
            kd_sgemm(false, false, cout_g, P, K, 1.0f, kd_f32(w) + (size_t)gr * cout_g * K, K,
                     cols + (size_t)gr * K * P, P, 0.0f, y + ((size_t)n * cout + (size_t)gr * cout_g) * P, P);
    }
    kd_cache_free(col, rounded);
    if (b) {
        const float *bias = kd_f32(b);
#pragma omp parallel for schedule(static) if ((size_t)N * cout * P > KD_PARALLEL_MIN)
        for (int plane = 0; plane < N * cout; plane++) {
            float v = bias[plane % cout];
            float *dst = y + (size_t)plane * P;
            for (int i = 0; i < P; i++) dst[i] += v;
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
