/* conv_winograd.h - kdseg's own Winograd F(4x4, 3x3) for 3x3 stride-1
 * undilated convolutions on CPUs where oneDNN has no Winograd kernels
 * (conv_winograd.c). conv_dnnl.c's entry points hand such convolutions
 * over; each says whether it ran, and the caller runs oneDNN's direct
 * kernels where it did not. */
#ifndef KD_CONV_WINOGRAD_H
#define KD_CONV_WINOGRAD_H

#include <stdbool.h>

#include "im2col.h"
#include "internal.h"

/* Whether kdseg's Winograd takes g (groups 1, 3x3, stride 1, dilation 1,
 * padding at most 2): where Winograd is asked for (kd_conv_winograd), in
 * float32, and oneDNN has no Winograd kernels of its own for this CPU;
 * KDSEG_OWN_WINOGRAD=always also takes it where oneDNN has them (to test
 * and measure it on such a CPU), =never never. */
bool kd_conv_own_winograd_takes(const kd_conv_geometry *g, int groups);
/* Whether it would take a geometry it fits: the settings above alone. */
bool kd_conv_own_winograd_on(void);
/* The environment's choice overridden: 1 always, 0 never, -1 as above.
 * Returns the previous override. For the tests. */
int kd_conv_own_winograd_force(int mode);

/* An activation as stored: NCHW (block 0) or nChw<block>c (8 or 16, the
 * channels a multiple of it). */
typedef struct {
    float *data;
    int N, C, H, W, block;
} kd_stored;

/* kd_stored for a tensor, as it is stored now. */
kd_stored kd_stored_of(const kd_tensor *t);

/* y = conv(x, w) (+ bias, ReLU where e says; its residual is left to the
 * caller), x read as stored; y written blocked where blocked_out allows
 * (kd_set_blocked then), else NCHW. */
bool kd_conv_winograd_forward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                              const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out);
/* grad_x += the input gradient and grad_w += the weight gradient of
 * conv(x, w), each where not NULL (grad_x a tensor or a plain NCHW
 * buffer), from grad_out (N x cout x OH x OW) and x, read as stored. grad_x_zeros: grad_x's zeros were taken pending, so it is
 * written whole (blocked where layout_out allows, kd_set_blocked then),
 * not read. Returns KD_DNNL_INPUT_GRAD | KD_DNNL_WEIGHT_GRAD, or 0 where
 * it could not run (no memory). */
unsigned kd_conv_winograd_backward(const kd_conv_geometry *g, const float *w, kd_stored x, kd_stored grad_out,
                                   kd_tensor *grad_x_tensor, float *grad_x_plain, bool grad_x_zeros, float *grad_w);

#endif
