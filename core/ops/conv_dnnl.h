/* conv_dnnl.h - convolutions on oneDNN (conv_dnnl.c). Each says what did
 * not run, and the caller runs its portable path for that. */
#ifndef KD_CONV_DNNL_H
#define KD_CONV_DNNL_H

#include <stdbool.h>

#include "im2col.h"
#include "internal.h"

/* y (N x cout x OH x OW) = conv(x, w), without bias; y is overwritten,
 * and with blocked_out (the layout on) it may be left in the
 * kernel's blocked layout (kd_blocked(y) says). x may be blocked.
 * With keep_src, *keep_src is x in the kernels' layout when it is not x's
 * own (a new tensor, to keep for the weight gradient instead of x), else NULL. */
bool kd_conv_dnnl_forward(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                          const float *w, kd_tensor *y, bool blocked_out, kd_tensor **keep_src);
/* The same for inference, with the epilogue e (bias, residual sum, ReLU) in
 * the kernel (oneDNN's post-ops); false when it did not run. */
bool kd_conv_dnnl_inference(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                            const float *w, const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out);
/* grad_x += the input gradient and grad_w += the weight gradient, each when
 * not NULL, sharing one description; the source is x or, when not NULL,
 * kept_src (the forward's keep_src). grad_out is read as it is stored (NCHW
 * or blocked). grad_x_zeros: grad_x's zeros were taken pending
 * (internal.h), not to be read: written whole where the input gradient
 * runs (in the kernel's blocked layout where the layout is on, and then
 * marked so), left as it was where not. Returns which ran
 * (KD_DNNL_INPUT_GRAD, KD_DNNL_WEIGHT_GRAD), and the caller computes the
 * others. */
enum { KD_DNNL_INPUT_GRAD = 1, KD_DNNL_WEIGHT_GRAD = 2 };
unsigned kd_conv_dnnl_backward(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                               const kd_tensor *kept_src, const float *w, const kd_tensor *grad_out,
                               kd_tensor *grad_x, bool grad_x_zeros, float *grad_w);
/* The same on plain NCHW buffers (conv_subimages.c's sub-images). */
unsigned kd_conv_dnnl_backward_plain(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                                     const kd_tensor *kept_src, const float *w, const float *grad_out, float *grad_x,
                                     bool grad_x_zeros, float *grad_w);
/* Whether oneDNN runs g's direct forward (groups 1, N images, cout output
 * channels) on its GEMM-based fallback instead of a JIT convolution kernel,
 * as it does for some dilated geometries (conv_subimages.c asks). */
bool kd_conv_dnnl_direct_on_gemm(const kd_conv_geometry *g, int N, int cout);
/* The same for g's weight gradient. */
bool kd_conv_dnnl_weight_grad_on_gemm(const kd_conv_geometry *g, int N, int cout);
/* The source a forward kept (of convolution g on N images) back in NCHW
 * float32 (x: N x C x H x W), for the portable weight gradient; false if it
 * cannot be (bfloat16 sources come back rounded). */
bool kd_conv_dnnl_kept_source(const kd_tensor *kept, const kd_conv_geometry *g, int N, float *x);

#endif
