/* conv_dnnl.h - convolutions on oneDNN (conv_dnnl.c). Each returns false
 * when it did not run, and the caller runs its portable path. */
#ifndef KD_CONV_DNNL_H
#define KD_CONV_DNNL_H

#include <stdbool.h>

#include "im2col.h"

/* Whether oneDNN runs convolutions in this process (KDSEG_CONV=im2col: no). */
bool kd_conv_dnnl_active(void);
/* y (N x cout x OH x OW) = conv(x, w), without bias; y is overwritten. */
bool kd_conv_dnnl_forward(const kd_conv_geometry *g, int N, int cout, int groups, const float *x, const float *w,
                          float *y);
/* grad_x += the input gradient. */
bool kd_conv_dnnl_backward_data(const kd_conv_geometry *g, int N, int cout, int groups, const float *w,
                                const float *grad_out, float *grad_x);
/* grad_w += the weight gradient. */
bool kd_conv_dnnl_backward_weights(const kd_conv_geometry *g, int N, int cout, int groups, const float *x,
                                   const float *grad_out, float *grad_w);

#endif
