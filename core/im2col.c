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

/* Rows of a column matrix are short (32 to 128 floats for the benchmark
 * networks' feature maps), too short for a memcpy call to pay for itself:
 * copied (and zeroed) inline, 8 floats (one AVX2 register) at a time. */
static inline void copy_floats(float *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) __builtin_memcpy(dst + i, src + i, 8 * sizeof(float));
    if (n & 4) __builtin_memcpy(dst + i, src + i, 4 * sizeof(float)), i += 4;
    if (n & 2) __builtin_memcpy(dst + i, src + i, 2 * sizeof(float)), i += 2;
    if (n & 1) dst[i] = src[i];
}

static inline void zero_floats(float *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) __builtin_memset(dst + i, 0, 8 * sizeof(float));
    if (n & 4) __builtin_memset(dst + i, 0, 4 * sizeof(float)), i += 4;
    if (n & 2) __builtin_memset(dst + i, 0, 2 * sizeof(float)), i += 2;
    if (n & 1) dst[i] = 0;
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
                zero_floats(dst, g->out_w);
                continue;
            }
            const float *src = plane + (size_t)ih * g->width + col_start;
            zero_floats(dst, lo);
            if (g->stride_w == 1) {
                copy_floats(dst + lo, src + lo, hi - lo);
            } else if (g->stride_w == 2) { /* a constant stride: the compiler vectorises it with shuffles */
                for (int ow = lo; ow < hi; ow++) dst[ow] = src[2 * ow];
            } else {
                for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * g->stride_w];
            }
            zero_floats(dst + hi, g->out_w - hi);
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
                if (g->stride_w == 1)
                    for (int ow = lo; ow < hi; ow++) dst[ow] += src[ow];
                else if (g->stride_w == 2) /* constant strides vectorise, as in kd_im2col */
                    for (int ow = lo; ow < hi; ow++) dst[2 * ow] += src[ow];
                else
                    for (int ow = lo; ow < hi; ow++) dst[ow * g->stride_w] += src[ow];
            }
        }
    }
}
