/* loss.h - what the cross-entropy's two backward paths share (op_loss.c and
 * op_loss_upsampled.c): the saved state and each pixel's gradient scale. */
#ifndef KD_LOSS_H
#define KD_LOSS_H

#include "internal.h"

/* The cross-entropy's backward, read off its node: logits x (N x C x H x W),
 * their per-pixel log-sum-exp, targets, optional class and pixel weights, the
 * incoming gradient g (one value, or one per pixel for reduction none). */
typedef struct {
    const float *x, *lse, *class_weight, *pixel_weight, *g;
    const int32_t *y;
    int ignore, N, C, H, W;
    kd_reduction reduction;
    float scale; /* g[0], divided by the counted weight for the mean */
} kd_ce_grad;

/* d loss / d logit = coef * (softmax - onehot) at pixel pix (n*H*W + p). */
static inline float kd_ce_pixel_coef(const kd_ce_grad *a, size_t pix) {
    int t = a->y[pix];
    if (t == a->ignore) return 0.0f;
    return (a->reduction == KD_REDUCE_NONE ? a->g[pix] : a->scale) * (a->class_weight ? a->class_weight[t] : 1.0f) *
           (a->pixel_weight ? a->pixel_weight[pix] : 1.0f);
}

/* Adds into gz (N x C x h x w) the gradient with respect to z of the
 * cross-entropy of resize_bilinear(z) to H x W, whose logits and log-sum-exps
 * a describes. */
kd_status kd_cross_entropy_upsampled_backward(const kd_ce_grad *a, int h, int w, bool align_corners, float *gz);

#endif
