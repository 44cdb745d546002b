/* im2col.c - unfolding an image into the column matrix a convolution is a GEMM
 * over, and folding gradients back. Row r = (c * kh + ki) * kw + kj of the
 * column matrix holds, for every output position, the input pixel that kernel
 * tap (ki, kj) of channel c reads (0 where it falls in the padding). */
#include <stdbool.h>
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

/* Whether the convolution keeps the image's size with stride 1 (a "same"
 * convolution, as in every residual block): then one tap's matrix row is the
 * image plane shifted by a constant offset, a single contiguous copy but for
 * the padding columns at either end of each row. */
static bool is_shifted_plane(const kd_conv_geometry *g) {
    return g->stride_h == 1 && g->stride_w == 1 && g->out_w == g->width;
}

/* One matrix row of a "same" convolution (see is_shifted_plane): output rows
 * [oh0, oh1) of the tap (ki, kj) from plane. The output rows whose input row
 * is padding are zeroed whole; the others are copied in one run from the
 * first valid pixel to the last, then the lo columns before and the W - hi
 * after each row (which the copy filled from the neighbouring rows) are
 * zeroed. Rows of the feature maps here are 32 to 128 floats, each copied on
 * its own before. The run is copied with vector moves, not memcpy: glibc's
 * "rep movsb" for copies this size was slower than the row by row copy on this
 * machine's Zen 5, the source being 4 bytes off the destination's alignment. */
static void shifted_plane_row(const float *plane, const kd_conv_geometry *g, int ki, int kj, int oh0, int oh1,
                              float *dst) {
    int W = g->width, col_start = kj * g->dilation_w - g->pad_w, lo, hi;
    int shift = ki * g->dilation_h - g->pad_h; /* input row = output row + shift */
    valid_range(W, W, 1, col_start, &lo, &hi);
    int first = oh0 > -shift ? oh0 : -shift, end = oh1 < g->height - shift ? oh1 : g->height - shift;
    if (lo >= hi || first >= end) {
        memset(dst, 0, sizeof(float) * (size_t)(oh1 - oh0) * W);
        return;
    }
    float *out = dst + (size_t)(first - oh0) * W;
    memset(dst, 0, sizeof(float) * (size_t)(first - oh0) * W);
    copy_floats(out + lo, plane + (size_t)(first + shift) * W + col_start + lo,
                (end - first - 1) * W + hi - lo);
    for (int r = 0; r < end - first; r++) {
        zero_floats(out + (size_t)r * W, lo);
        zero_floats(out + (size_t)r * W + hi, W - hi);
    }
    memset(out + (size_t)(end - first) * W, 0, sizeof(float) * (size_t)(oh1 - end) * W);
}

/* image C x H x W -> col (C*kh*kw) x ((oh1-oh0)*OW): output rows [oh0, oh1),
 * matrix rows ld apart */
void kd_im2col(const float *image, const kd_conv_geometry *g, int oh0, int oh1, float *col, size_t ld) {
    int taps = g->kernel_h * g->kernel_w;
    size_t out_plane = (size_t)(oh1 - oh0) * (size_t)g->out_w;
    bool shifted = is_shifted_plane(g);
#pragma omp parallel for schedule(static) if ((size_t)g->channels * taps * out_plane > KD_PARALLEL_MIN)
    for (int row = 0; row < g->channels * taps; row++) {
        int c = row / taps, ki = row % taps / g->kernel_w, kj = row % g->kernel_w;
        const float *plane = image + (size_t)c * g->height * g->width;
        float *dst = col + (size_t)row * ld;
        if (shifted) {
            shifted_plane_row(plane, g, ki, kj, oh0, oh1, dst);
            continue;
        }
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
