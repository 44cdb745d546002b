/* conv_subimages.h - dilated 3x3 convolutions as undilated ones on
 * sub-images, for Winograd's kernels (conv_subimages.c). conv_dnnl.c's entry
 * points hand such convolutions over; these call them back on the
 * sub-images' undilated geometry. */
#ifndef KD_CONV_SUBIMAGES_H
#define KD_CONV_SUBIMAGES_H

#include <stdbool.h>

#include "im2col.h"
#include "internal.h"

/* Whether g (N images, cout output channels) runs on sub-images: 3x3,
 * stride 1, dilation d > 1 and padding d on both sides, ungrouped, and
 * either with Winograd asked for, in float32, on a CPU that has its
 * kernels, where that is expected to be faster than oneDNN's direct
 * kernel; or, on a CPU without Winograd kernels, where oneDNN would run the
 * dilated layer on its GEMM fallback: its forward, or with weight_grad (a
 * forward whose weight gradient will be taken, and that gradient) its
 * weight gradient. */
bool kd_conv_by_subimages(const kd_conv_geometry *g, int N, int cout, int groups, bool weight_grad);
/* As kd_conv_dnnl_forward, _inference and _backward (groups 1). A source
 * kept by the forward holds the sub-images (d * d * N of them). */
bool kd_conv_subimages_forward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                               kd_tensor *y, bool blocked_out, kd_tensor **keep_src);
bool kd_conv_subimages_inference(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                                 const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out);
unsigned kd_conv_subimages_backward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x,
                                    const kd_tensor *kept_src, const float *w, const float *grad_out, float *grad_x,
                                    bool grad_x_zeros, float *grad_w);
/* The N images x (NCHW) of g's input from their sub-images sub_x (NCHW). */
void kd_conv_subimages_to_full(const kd_conv_geometry *g, int N, const float *sub_x, float *x);

#endif
