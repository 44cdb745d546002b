/* op_loss.c - the pixel losses: cross-entropy with ignore label, class and
 * pixel weights; KL divergence between softened class distributions; MSE.
 * Probabilities are recomputed in backward from the saved logits rather than
 * kept: one exp per element is cheaper than a second C x H x W buffer (the
 * cross-entropy keeps its per-pixel log-sum-exp, one float per pixel, and
 * the KL divergence both distributions', two).
 * Sums go through per-block partials, added in block order: the result does
 * not depend on the thread count. */
#include <math.h>
#include <stdlib.h>

#include "loss.h"

static kd_status check_reduction(const char *op, kd_reduction r) {
    if (r != KD_REDUCE_MEAN && r != KD_REDUCE_SUM && r != KD_REDUCE_NONE)
        return kd_fail(KD_ERR_ARG, "%s: unknown reduction %d", op, (int)r);
    return KD_OK;
}

/* A per-pixel map (target, weights) may be N x H x W or N x 1 x H x W. */
static kd_status check_pixel_map(const char *op, const char *what, const kd_tensor *m,
                                 const kd_tensor *logits, kd_dtype dtype) {
    kd_status s = kd_check_dtype(op, what, m, dtype);
    if (s) return s;
    const int *ls = logits->shape;
    bool fits = (m->ndim == 3 && m->shape[0] == ls[0] && m->shape[1] == ls[2] && m->shape[2] == ls[3]) ||
                (m->ndim == 4 && m->shape[0] == ls[0] && m->shape[1] == 1 && m->shape[2] == ls[2] &&
                 m->shape[3] == ls[3]);
    if (!fits)
        return kd_fail(KD_ERR_SHAPE, "%s: %s %s does not match logits %s (want %dx%dx%d)", op, what,
                       kd_shape_str(m), kd_shape_str(logits), ls[0], ls[2], ls[3]);
    return KD_OK;
}

/* One pixel per element of N x H x W: the output of reduction none. */
static kd_status new_pixel_tensor(const kd_tensor *logits, kd_reduction r, kd_tensor **out) {
    int shape[3] = {logits->shape[0], logits->shape[2], logits->shape[3]};
    int one[1] = {1};
    return r == KD_REDUCE_NONE ? kd_tensor_zeros(KD_F32, 3, shape, out)
                               : kd_tensor_new(KD_F32, 1, one, out);
}

static size_t pixel_blocks(const kd_tensor *t) {
    size_t plane = (size_t)t->shape[2] * t->shape[3];
    return (size_t)t->shape[0] * ((plane + KD_PIXEL_BLOCK - 1) / KD_PIXEL_BLOCK);
}

/* ---- cross-entropy ------------------------------------------------------------
 * Saved: logits, target, class_weight, pixel_weight, log-sum-exp per pixel
 * (N x H x W). ints: ignore, reduction, whether the node took the input of
 * an upsampling (op_loss_upsampled.c), its align_corners.
 * floats[0]: the mean's divisor inverted (1 / sum of counted class weights). */

static kd_status cross_entropy_backward(kd_node *node, const kd_tensor *grad_output,
                                        kd_tensor *const *grad_inputs) {
    const kd_tensor *logits = node->saved[0];
    kd_ce_grad a = {
        .x = kd_f32(logits), .lse = kd_f32(node->saved[4]), .y = kd_i32(node->saved[1]),
        .class_weight = node->saved[2] ? kd_f32(node->saved[2]) : NULL,
        .pixel_weight = node->saved[3] ? kd_f32(node->saved[3]) : NULL, .g = kd_f32(grad_output),
        .ignore = node->ints[0], .reduction = (kd_reduction)node->ints[1],
        .N = logits->shape[0], .C = logits->shape[1], .H = logits->shape[2], .W = logits->shape[3],
    };
    a.scale = a.reduction == KD_REDUCE_MEAN ? a.g[0] * node->floats[0] : a.g[0];
    float *gx = kd_f32(grad_inputs[0]);
    if (node->ints[2]) {
        const kd_edge *e = &node->inputs[0];
        return kd_cross_entropy_upsampled_backward(&a, e->shape[2], e->shape[3], node->ints[3], gx);
    }
    int C = a.C;
    FOR_PIXEL_BLOCKS(logits, n, p0, p1, {
        float coef[KD_PIXEL_BLOCK];
        size_t base = n * (size_t)C * plane_;
        const float *lse = a.lse + n * plane_ + p0;
        for (size_t p = p0; p < p1; p++) coef[p - p0] = kd_ce_pixel_coef(&a, n * plane_ + p);
        for (int c = 0; c < C; c++)
            for (size_t p = p0; p < p1; p++) {
                size_t i = base + (size_t)c * plane_ + p;
                float target = a.y[n * plane_ + p] == c ? 1.0f : 0.0f;
                gx[i] += coef[p - p0] * (kd_fast_exp(a.x[i] - lse[p - p0]) - target);
            }
    });
    return KD_OK;
}

static kd_sum_reducer mean_reducer;
static void *mean_reducer_ctx;

void kd_set_loss_mean_reducer(kd_sum_reducer fn, void *ctx) {
    mean_reducer = fn;
    mean_reducer_ctx = ctx;
}

kd_status kd_cross_entropy(kd_tensor *logits, const kd_tensor *target,
                           const kd_cross_entropy_params *p, kd_tensor **out) {
    const char *op = "cross_entropy";
    kd_status s;
    if ((s = kd_check_f32(op, "logits", logits)) || (s = kd_check_ndim(op, "logits", logits, 4)) ||
        (s = check_pixel_map(op, "target", target, logits, KD_I32)) ||
        (p->pixel_weight && (s = check_pixel_map(op, "pixel_weight", p->pixel_weight, logits, KD_F32))) ||
        (s = check_reduction(op, p->reduction)))
        return s;
    int C = logits->shape[1];
    if (C < 1) return kd_fail(KD_ERR_SHAPE, "%s: logits %s have no classes", op, kd_shape_str(logits));
    if (p->class_weight) {
        if ((s = kd_check_f32(op, "class_weight", p->class_weight))) return s;
        if (kd_numel(p->class_weight) != (size_t)C)
            return kd_fail(KD_ERR_SHAPE, "%s: class_weight %s does not match the %d classes of logits %s",
                           op, kd_shape_str(p->class_weight), C, kd_shape_str(logits));
    }
    const int32_t *y = kd_i32(target);
    for (size_t i = 0, n = kd_numel(target); i < n; i++)
        if ((y[i] < 0 || y[i] >= C) && y[i] != p->ignore_index)
            return kd_fail(KD_ERR_ARG, "%s: target value %d at pixel %zu is not a class of 0..%d "
                           "nor the ignore index %d", op, y[i], i, C - 1, p->ignore_index);
    if ((s = new_pixel_tensor(logits, p->reduction, out))) return s;
    int pixels[3] = {logits->shape[0], logits->shape[2], logits->shape[3]};
    kd_tensor *lse_t = NULL;
    size_t blocks = pixel_blocks(logits);
    double *partial = calloc(blocks * 2, sizeof(double));
    if (!partial || (s = kd_tensor_new(KD_F32, 3, pixels, &lse_t))) {
        free(partial);
        kd_tensor_release(*out);
        *out = NULL;
        return kd_fail(KD_ERR_MEMORY, "%s: cannot allocate partial sums and log-sum-exps for %s", op,
                       kd_shape_str(logits));
    }
    float *lse_all = kd_f32(lse_t);
    const float *x = kd_f32(logits);
    const float *cw = p->class_weight ? kd_f32(p->class_weight) : NULL;
    const float *pw = p->pixel_weight ? kd_f32(p->pixel_weight) : NULL;
    float *per_pixel = p->reduction == KD_REDUCE_NONE ? kd_f32(*out) : NULL;
    FOR_PIXEL_BLOCKS(logits, n, p0, p1, {
        float *lse = lse_all + n * plane_ + p0;
        size_t base = n * (size_t)C * plane_;
        double loss = 0, weight = 0;
        kd_logsumexp_pixels(x + base, C, plane_, p0, p1, 1.0f, lse);
        for (size_t q = p0; q < p1; q++) {
            size_t pix = n * plane_ + q;
            int t = y[pix];
            if (t == p->ignore_index) continue;
            float w = cw ? cw[t] : 1.0f;
            float l = w * (pw ? pw[pix] : 1.0f) * (lse[q - p0] - x[base + (size_t)t * plane_ + q]);
            if (per_pixel) per_pixel[pix] = l;
            loss += l;
            weight += w;
        }
        partial[2 * b_] = loss;
        partial[2 * b_ + 1] = weight;
    });
    double loss = 0, weight = 0;
    for (size_t b = 0; b < blocks; b++) loss += partial[2 * b], weight += partial[2 * b + 1];
    free(partial);
    double processes = 1;
    if (mean_reducer && p->reduction == KD_REDUCE_MEAN) { /* the divisor over every process */
        double counted[2] = {weight, 1};
        if ((s = mean_reducer(counted, 2, mean_reducer_ctx))) {
            kd_tensor_release(lse_t);
            kd_tensor_release(*out);
            *out = NULL;
            return s;
        }
        weight = counted[0], processes = counted[1];
    }
    float mean_scale = weight > 0 ? (float)(processes / weight) : 0.0f;
    if (p->reduction != KD_REDUCE_NONE)
        kd_f32(*out)[0] = (float)(p->reduction == KD_REDUCE_MEAN ? loss * mean_scale : loss);
    kd_tensor *saved[5] = {logits, (kd_tensor *)target, p->class_weight, p->pixel_weight, lse_t};
    kd_node *node;
    s = kd_finish_op(op, cross_entropy_backward, out, 1, &logits, 5, saved, &node);
    kd_tensor_release(lse_t);
    if (node) {
        node->ints[0] = p->ignore_index;
        node->ints[1] = (int)p->reduction;
        node->floats[0] = mean_scale;
        bool align_corners;
        if (kd_take_bilinear_input(node, &align_corners)) node->ints[2] = 1, node->ints[3] = align_corners;
    }
    return s;
}

/* ---- KL divergence ------------------------------------------------------------
 * Per pixel, with p = softmax(z / T) and l = log p:
 *   kl = T^2 sum_c p_t (l_t - l_s)
 *   d kl / d z_s = T (p_s - p_t)
 *   d kl / d z_t = T p_t (l_t - l_s - kl / T^2)
 * Saved: student and teacher logits, and the forward's log-sum-exps of both
 * (N x 2 x H x W: student's, then teacher's), so that the backward makes two
 * exps per element instead of four (on the accuracy benchmark's students,
 * pixel-wise and mutual distillation were a sixth of the step). ints:
 * reduction; floats: T. */

static kd_status kl_div_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    const kd_tensor *st = node->saved[0];
    const float *zs = kd_f32(st), *zt = kd_f32(node->saved[1]), *lse = kd_f32(node->saved[2]);
    const float *g = kd_f32(grad_output);
    float *gs = grad_inputs[0] ? kd_f32(grad_inputs[0]) : NULL;
    float *gt = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
    kd_reduction r = (kd_reduction)node->ints[0];
    float T = node->floats[0], inv_t = 1.0f / T;
    int C = st->shape[1];
    size_t pixels = (size_t)st->shape[0] * st->shape[2] * st->shape[3];
    float scale = r == KD_REDUCE_MEAN ? g[0] / (float)pixels : g[0];
    FOR_PIXEL_BLOCKS(st, n, p0, p1, {
        size_t base = n * (size_t)C * plane_, m = p1 - p0;
        const float *lse_s = lse + 2 * n * plane_ + p0, *lse_t = lse_s + plane_;
        float gp[KD_PIXEL_BLOCK], kl[KD_PIXEL_BLOCK] = {0};
        for (size_t q = 0; q < m; q++) gp[q] = (r == KD_REDUCE_NONE ? g[n * plane_ + p0 + q] : scale) * T;
        if (gt)
            for (int c = 0; c < C; c++) {
                const float *as = zs + base + (size_t)c * plane_ + p0, *at = zt + base + (size_t)c * plane_ + p0;
                for (size_t q = 0; q < m; q++) {
                    float lt = at[q] * inv_t - lse_t[q], ls = as[q] * inv_t - lse_s[q];
                    kl[q] += kd_fast_exp(lt) * (lt - ls);
                }
            }
        for (int c = 0; c < C; c++) {
            size_t row = base + (size_t)c * plane_ + p0;
            const float *as = zs + row, *at = zt + row;
            if (gs) {
                float *to = gs + row;
                for (size_t q = 0; q < m; q++)
                    to[q] += gp[q] * (kd_fast_exp(as[q] * inv_t - lse_s[q]) - kd_fast_exp(at[q] * inv_t - lse_t[q]));
            }
            if (gt) {
                float *to = gt + row;
                for (size_t q = 0; q < m; q++) {
                    float lt = at[q] * inv_t - lse_t[q], ls = as[q] * inv_t - lse_s[q];
                    to[q] += gp[q] * kd_fast_exp(lt) * (lt - ls - kl[q]);
                }
            }
        }
    });
    return KD_OK;
}

kd_status kd_kl_div(kd_tensor *student, kd_tensor *teacher, float temperature, bool detach_target,
                    kd_reduction reduction, kd_tensor **out) {
    const char *op = "kl_div";
    kd_status s;
    if ((s = kd_check_f32(op, "student logits", student)) ||
        (s = kd_check_f32(op, "teacher logits", teacher)) ||
        (s = kd_check_ndim(op, "student logits", student, 4)) ||
        (s = kd_check_same_shape(op, student, teacher)) || (s = check_reduction(op, reduction)))
        return s;
    if (!(temperature > 0))
        return kd_fail(KD_ERR_ARG, "%s: temperature %g must be > 0", op, temperature);
    if (student->shape[1] < 1) return kd_fail(KD_ERR_SHAPE, "%s: logits %s have no classes", op, kd_shape_str(student));
    if ((s = new_pixel_tensor(student, reduction, out))) return s;
    size_t blocks = pixel_blocks(student);
    double *partial = calloc(blocks, sizeof(double));
    int both[4] = {student->shape[0], 2, student->shape[2], student->shape[3]};
    kd_tensor *lse_both = NULL;
    if (!partial || (s = kd_tensor_new(KD_F32, 4, both, &lse_both))) {
        free(partial);
        kd_tensor_release(*out);
        *out = NULL;
        return kd_fail(KD_ERR_MEMORY, "%s: cannot allocate partial sums and log-sum-exps for %s", op,
                       kd_shape_str(student));
    }
    int C = student->shape[1];
    float T = temperature, inv_t = 1.0f / T;
    const float *zs = kd_f32(student), *zt = kd_f32(teacher);
    float *per_pixel = reduction == KD_REDUCE_NONE ? kd_f32(*out) : NULL, *lse_all = kd_f32(lse_both);
    FOR_PIXEL_BLOCKS(student, n, p0, p1, {
        float *lse_s = lse_all + 2 * n * plane_ + p0, *lse_t = lse_s + plane_, kl[KD_PIXEL_BLOCK] = {0};
        size_t base = n * (size_t)C * plane_;
        kd_logsumexp_pixels(zs + base, C, plane_, p0, p1, inv_t, lse_s);
        kd_logsumexp_pixels(zt + base, C, plane_, p0, p1, inv_t, lse_t);
        for (int c = 0; c < C; c++)
            for (size_t p = p0; p < p1; p++) {
                size_t i = base + (size_t)c * plane_ + p;
                float lt = zt[i] * inv_t - lse_t[p - p0], ls = zs[i] * inv_t - lse_s[p - p0];
                kl[p - p0] += kd_fast_exp(lt) * (lt - ls);
            }
        double acc = 0;
        for (size_t p = p0; p < p1; p++) {
            float v = T * T * kl[p - p0];
            if (per_pixel) per_pixel[n * plane_ + p] = v;
            acc += v;
        }
        partial[b_] = acc;
    });
    double total = 0;
    for (size_t b = 0; b < blocks; b++) total += partial[b];
    free(partial);
    size_t pixels = (size_t)student->shape[0] * student->shape[2] * student->shape[3];
    if (reduction == KD_REDUCE_MEAN) kd_f32(*out)[0] = pixels ? (float)(total / (double)pixels) : 0.0f;
    if (reduction == KD_REDUCE_SUM) kd_f32(*out)[0] = (float)total;
    kd_tensor *inputs[2] = {student, detach_target ? NULL : teacher}, *saved[3] = {student, teacher, lse_both};
    kd_node *node;
    s = kd_finish_op(op, kl_div_backward, out, 2, inputs, 3, saved, &node);
    kd_tensor_release(lse_both);
    if (node) {
        node->ints[0] = (int)reduction;
        node->floats[0] = T;
    }
    return s;
}

/* ---- MSE: saved a, b; ints: reduction -------------------------------------- */

static kd_status mse_backward(kd_node *node, const kd_tensor *grad_output,
                              kd_tensor *const *grad_inputs) {
    const float *a = kd_f32(node->saved[0]), *b = kd_f32(node->saved[1]), *g = kd_f32(grad_output);
    float *ga = grad_inputs[0] ? kd_f32(grad_inputs[0]) : NULL;
    float *gb = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
    kd_reduction r = (kd_reduction)node->ints[0];
    size_t n = kd_numel(node->saved[0]);
    float scale = r == KD_REDUCE_MEAN ? 2.0f * g[0] / (float)n : 2.0f * g[0];
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = (r == KD_REDUCE_NONE ? 2.0f * g[i] : scale) * (a[i] - b[i]);
        if (ga) ga[i] += d;
        if (gb) gb[i] -= d;
    }
    return KD_OK;
}

kd_status kd_mse(kd_tensor *a, kd_tensor *b, kd_reduction reduction, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("mse", "first operand", a)) || (s = kd_check_f32("mse", "second operand", b)) ||
        (s = kd_check_same_shape("mse", a, b)) || (s = check_reduction("mse", reduction)))
        return s;
    int one[1] = {1};
    if ((s = reduction == KD_REDUCE_NONE ? kd_tensor_new_like(a, out) : kd_tensor_new(KD_F32, 1, one, out)))
        return s;
    size_t n = kd_numel(a);
    const float *x = kd_f32(a), *y = kd_f32(b);
    float *o = kd_f32(*out);
    if (reduction == KD_REDUCE_NONE) {
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) o[i] = (x[i] - y[i]) * (x[i] - y[i]);
    } else {
        double total = kd_sum_squared_difference_f32(x, y, n);
        o[0] = (float)(reduction == KD_REDUCE_MEAN ? (n ? total / (double)n : 0.0) : total);
    }
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    s = kd_finish_op("mse", mse_backward, out, 2, inputs, 2, inputs, &node);
    if (node) node->ints[0] = (int)reduction;
    return s;
}
