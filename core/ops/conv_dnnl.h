/* conv_dnnl.h - convolutions on oneDNN (conv_dnnl.c). Each says what did
 * not run, and the caller runs its portable path for that. */
#ifndef KD_CONV_DNNL_H
#define KD_CONV_DNNL_H

#include <stdbool.h>

#include "im2col.h"

/* y (N x cout x OH x OW) = conv(x, w), without bias; y is overwritten. */
bool kd_conv_dnnl_forward(const kd_conv_geometry *g, int N, int cout, int groups, const float *x, const float *w,
                          float *y);
/* grad_x += the input gradient and grad_w += the weight gradient, each when
 * not NULL, sharing one description; returns which ran (KD_DNNL_INPUT_GRAD,
 * KD_DNNL_WEIGHT_GRAD), and the caller computes the others. */
enum { KD_DNNL_INPUT_GRAD = 1, KD_DNNL_WEIGHT_GRAD = 2 };
unsigned kd_conv_dnnl_backward(const kd_conv_geometry *g, int N, int cout, int groups, const float *x,
                               const float *w, const float *grad_out, float *grad_x, float *grad_w);

#endif
