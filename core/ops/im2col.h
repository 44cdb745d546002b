/* im2col.h - the geometry of one convolution and the unfold/fold kernels. */
#ifndef KD_IM2COL_H
#define KD_IM2COL_H

typedef struct {
    int channels, height, width; /* of the input image (one group's channels) */
    int kernel_h, kernel_w;
    int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int out_h, out_w;
} kd_conv_geometry;

#include <stddef.h>

/* Both work on the output rows [oh0, oh1) (a band of the column matrix, so
 * that it can stay small enough for the cache). Row r of the column matrix
 * starts at col + r * ld (ld >= (oh1 - oh0) * OW), so that several images can
 * sit side by side in one wide matrix. */
void kd_im2col(const float *image, const kd_conv_geometry *g, int oh0, int oh1, float *col, size_t ld);
void kd_col2im_add(const float *col, const kd_conv_geometry *g, int oh0, int oh1, float *image, size_t ld);

#endif
