/* op_depthwise.c - depthwise convolution (groups = in = out channels), the
 * layer of MobileNet-style blocks. As GEMMs it would be one tiny product per
 * channel; as direct loops over each (image, channel) plane it runs at memory
 * speed. kd_conv2d sends such convolutions here; the tests hold both to the
 * naive reference. */
#include <string.h>

#include "im2col.h"
#include "internal.h"

/* x N x C x H x W, w C x 1 x kh x kw, b C or NULL -> y N x C x OH x OW */
static void depthwise_forward(const float *x, const float *w, const float *b, float *y, int N,
                              const kd_conv_geometry *g) {
    int C = g->channels, H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    int kh = g->kernel_h, kw = g->kernel_w;
#pragma omp parallel for schedule(static) if ((size_t)N * C * OH * OW * kh * kw > KD_PARALLEL_MIN)
    for (int plane = 0; plane < N * C; plane++) {
        int c = plane % C;
        const float *src = x + (size_t)plane * H * W, *k = w + (size_t)c * kh * kw;
        float *dst = y + (size_t)plane * OH * OW, bias = b ? b[c] : 0.0f;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float acc = bias;
                for (int ki = 0; ki < kh; ki++) {
                    int ih = oh * g->stride_h - g->pad_h + ki * g->dilation_h;
                    if (ih < 0 || ih >= H) continue;
                    for (int kj = 0; kj < kw; kj++) {
                        int iw = ow * g->stride_w - g->pad_w + kj * g->dilation_w;
                        if (iw >= 0 && iw < W) acc += src[ih * W + iw] * k[ki * kw + kj];
                    }
                }
                dst[oh * OW + ow] = acc;
            }
    }
}

/* Saved x, w; ints: geometry (13) and N. grads x, w, b (each may be NULL).
 * Parallel over channels: each channel's weight gradient sums in one order. */
static kd_status depthwise_backward(kd_node *node, const kd_tensor *grad_output, kd_tensor *const *grad_inputs) {
    kd_conv_geometry g;
    memcpy(&g, node->ints, sizeof g);
    const float *x = kd_f32(node->saved[0]), *w = kd_f32(node->saved[1]), *go = kd_f32(grad_output);
    float *gx = grad_inputs[0] ? kd_f32(grad_inputs[0]) : NULL;
    float *gw = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
    float *gb = grad_inputs[2] ? kd_f32(grad_inputs[2]) : NULL;
    int N = grad_output->shape[0], C = g.channels, H = g.height, W = g.width, OH = g.out_h, OW = g.out_w;
    int kh = g.kernel_h, kw = g.kernel_w;
#pragma omp parallel for schedule(static) if ((size_t)N * C * OH * OW * kh * kw > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        const float *k = w + (size_t)c * kh * kw;
        double bias_acc = 0, w_acc[64] = {0}; /* kernels up to 8x8 */
        for (int n = 0; n < N; n++) {
            size_t plane = (size_t)n * C + c;
            const float *src = x + plane * H * W, *gy = go + plane * OH * OW;
            float *dx = gx ? gx + plane * H * W : NULL;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    float d = gy[oh * OW + ow];
                    bias_acc += d;
                    for (int ki = 0; ki < kh; ki++) {
                        int ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
                        if (ih < 0 || ih >= H) continue;
                        for (int kj = 0; kj < kw; kj++) {
                            int iw = ow * g.stride_w - g.pad_w + kj * g.dilation_w;
                            if (iw < 0 || iw >= W) continue;
                            if (dx) dx[ih * W + iw] += d * k[ki * kw + kj];
                            w_acc[ki * kw + kj] += (double)d * src[ih * W + iw];
                        }
                    }
                }
        }
        if (gb) gb[c] += (float)bias_acc;
        if (gw)
            for (int t = 0; t < kh * kw; t++) gw[(size_t)c * kh * kw + t] += (float)w_acc[t];
    }
    return KD_OK;
}

bool kd_is_depthwise(const kd_conv_geometry *g, int groups, int out_channels) {
    return groups > 1 && groups == g->channels && out_channels == g->channels && g->kernel_h * g->kernel_w <= 64;
}

kd_status kd_conv2d_depthwise(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_conv_geometry *g, kd_tensor **out) {
    int shape[4] = {x->shape[0], g->channels, g->out_h, g->out_w};
    kd_status s = kd_tensor_new(KD_F32, 4, shape, out);
    if (s) return s;
    depthwise_forward(kd_f32(x), kd_f32(w), b ? kd_f32(b) : NULL, kd_f32(*out), x->shape[0], g);
    kd_tensor *inputs[3] = {x, w, b}, *saved[2] = {x, w};
    kd_node *node;
    s = kd_finish_op("conv2d (depthwise)", depthwise_backward, out, 3, inputs, 2, saved, &node);
    if (node) memcpy(node->ints, g, sizeof *g);
    return s;
}
