/* im2col.c - unfolding an image into the column matrix a convolution is a GEMM
 * over, and folding gradients back. Row r = (c * kh + ki) * kw + kj of the
 * column matrix holds, for every output position, the input pixel that kernel
 * tap (ki, kj) of channel c reads (0 where it falls in the padding). */
#include <string.h>

#include "im2col.h"
#include "internal.h"

/* The output columns [lo, hi) whose input column ow*stride - pad + offset lies
 * inside [0, width): the rest read padding. */
static void valid_range(int out_w, int width, int stride, int start, int *lo, int *hi) {
    int a = 0, b = out_w;
    while (a < b && a * stride + start < 0) a++;
    while (b > a && (b - 1) * stride + start >= width) b--;
    *lo = a;
    *hi = b;
}

/* image C x H x W -> col (C*kh*kw) x ((oh1-oh0)*OW): output rows [oh0, oh1),
 * matrix rows ld apart */
void kd_im2col(const float *image, const kd_conv_geometry *g, int oh0, int oh1, float *col, size_t ld) {
    int taps = g->kernel_h * g->kernel_w;
    size_t out_plane = (size_t)(oh1 - oh0) * (size_t)g->out_w;
#pragma omp parallel for schedule(static) if ((size_t)g->channels * taps * out_plane > KD_PARALLEL_MIN)
    for (int row = 0; row < g->channels * taps; row++) {
        int c = row / taps, ki = row % taps / g->kernel_w, kj = row % g->kernel_w;
        const float *plane = image + (size_t)c * g->height * g->width;
        float *dst = col + (size_t)row * ld;
        int col_start = kj * g->dilation_w - g->pad_w, lo, hi;
        valid_range(g->out_w, g->width, g->stride_w, col_start, &lo, &hi);
        for (int oh = oh0; oh < oh1; oh++, dst += g->out_w) {
            int ih = oh * g->stride_h - g->pad_h + ki * g->dilation_h;
            if (ih < 0 || ih >= g->height || lo >= hi) {
                memset(dst, 0, sizeof(float) * (size_t)g->out_w);
                continue;
            }
            const float *src = plane + (size_t)ih * g->width + col_start;
            for (int ow = 0; ow < lo; ow++) dst[ow] = 0;
            if (g->stride_w == 1) {
                memcpy(dst + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
            } else {
                for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * g->stride_w];
            }
            for (int ow = hi; ow < g->out_w; ow++) dst[ow] = 0;
        }
    }
}

/* col (C*kh*kw) x ((oh1-oh0)*OW) of output rows [oh0, oh1), matrix rows ld
 * apart -> image C x H x W, added into. Parallel over channels: the rows of
 * one channel write only to that channel's plane. */
void kd_col2im_add(const float *col, const kd_conv_geometry *g, int oh0, int oh1, float *image, size_t ld) {
    int taps = g->kernel_h * g->kernel_w;
    size_t out_plane = (size_t)(oh1 - oh0) * (size_t)g->out_w;
#pragma omp parallel for schedule(static) if ((size_t)g->channels * taps * out_plane > KD_PARALLEL_MIN)
    for (int c = 0; c < g->channels; c++) {
        float *plane = image + (size_t)c * g->height * g->width;
        for (int tap = 0; tap < taps; tap++) {
            int ki = tap / g->kernel_w, kj = tap % g->kernel_w;
            const float *src = col + ((size_t)c * taps + (size_t)tap) * ld;
            int col_start = kj * g->dilation_w - g->pad_w, lo, hi;
            valid_range(g->out_w, g->width, g->stride_w, col_start, &lo, &hi);
            for (int oh = oh0; oh < oh1; oh++, src += g->out_w) {
                int ih = oh * g->stride_h - g->pad_h + ki * g->dilation_h;
                if (ih < 0 || ih >= g->height) continue;
                float *dst = plane + (size_t)ih * g->width + col_start;
                for (int ow = lo; ow < hi; ow++) dst[ow * g->stride_w] += src[ow];
            }
        }
    }
}
