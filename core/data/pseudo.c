/* pseudo.c - the per-pixel kernels of pseudo-label refinement. The rules
 * themselves (which to apply, with which thresholds, over which cycles) are
 * Lua functions in scripts/kd/method/pseudo.lua; these are their loops. Label maps
 * are int32 N x H x W with `ignore` for unlabeled pixels; predictions come as
 * class (int32) and confidence (float) maps of the same shape. */
#include <stdlib.h>

#include "internal.h"

static kd_status check_maps(const char *op, const kd_tensor *a, const kd_tensor *b, kd_dtype tb) {
    kd_status s = kd_check_dtype(op, "map", b, tb);
    if (s) return s;
    if (kd_numel(a) != kd_numel(b))
        return kd_fail(KD_ERR_SHAPE, "%s: maps %s and %s differ", op, kd_shape_str(a), kd_shape_str(b));
    return KD_OK;
}

kd_status kd_pseudo_keep_coarse(const kd_tensor *coarse, const kd_tensor *pred, const kd_tensor *conf, float threshold,
                                int ignore, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_dtype("pseudo_keep_coarse", "coarse labels", coarse, KD_I32)) ||
        (s = check_maps("pseudo_keep_coarse", coarse, pred, KD_I32)) || (s = check_maps("pseudo_keep_coarse", coarse, conf, KD_F32)) ||
        (s = kd_tensor_new(KD_I32, coarse->ndim, coarse->shape, out)))
        return s;
    const int32_t *c = kd_i32(coarse), *p = kd_i32(pred);
    const float *f = kd_f32(conf);
    int32_t *o = kd_i32(*out);
    for (size_t i = 0, n = kd_numel(coarse); i < n; i++)
        o[i] = c[i] == ignore ? ignore : (p[i] != c[i] && f[i] > threshold ? p[i] : c[i]);
    return KD_OK;
}

kd_status kd_pseudo_fill(const kd_tensor *labels, const kd_tensor *pred, const kd_tensor *conf, const float *thresholds,
                         int classes, int ignore, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_dtype("pseudo_fill", "labels", labels, KD_I32)) || (s = check_maps("pseudo_fill", labels, pred, KD_I32)) ||
        (s = check_maps("pseudo_fill", labels, conf, KD_F32)))
        return s;
    const int32_t *l = kd_i32(labels), *p = kd_i32(pred);
    for (size_t i = 0, n = kd_numel(labels); i < n; i++)
        if (p[i] < 0 || p[i] >= classes) return kd_fail(KD_ERR_ARG, "pseudo_fill: predicted class %d outside 0..%d", p[i], classes - 1);
    if ((s = kd_tensor_new(KD_I32, labels->ndim, labels->shape, out))) return s;
    const float *f = kd_f32(conf);
    int32_t *o = kd_i32(*out);
    for (size_t i = 0, n = kd_numel(labels); i < n; i++)
        o[i] = l[i] != ignore ? l[i] : (f[i] > thresholds[p[i]] ? p[i] : ignore);
    return KD_OK;
}

kd_status kd_confident_labels(const kd_tensor *labels, const kd_tensor *conf, double threshold, const kd_tensor *valid,
                              bool zero_weights, int ignore, kd_tensor **out_labels, kd_tensor **out_weights) {
    const char *op = "confident_labels";
    kd_status s;
    *out_labels = NULL;
    if (out_weights) *out_weights = NULL;
    if ((s = kd_check_dtype(op, "labels", labels, KD_I32)) || (s = check_maps(op, labels, conf, KD_F32)) ||
        (valid && (s = check_maps(op, labels, valid, KD_U8))))
        return s;
    if (zero_weights && !out_weights) return kd_fail(KD_ERR_ARG, "%s: zero_weights needs a weights output", op);
    if ((s = kd_tensor_new(KD_I32, labels->ndim, labels->shape, out_labels))) return s;
    if (zero_weights && (s = kd_tensor_new(KD_F32, labels->ndim, labels->shape, out_weights))) {
        kd_tensor_release(*out_labels);
        *out_labels = NULL;
        return s;
    }
    const int32_t *l = kd_i32(labels);
    const float *c = kd_f32(conf);
    const uint8_t *v = valid ? kd_u8(valid) : NULL;
    int32_t *o = kd_i32(*out_labels);
    size_t n = kd_numel(labels);
    if (!zero_weights) {
        for (size_t i = 0; i < n; i++) o[i] = (double)c[i] < threshold ? ignore : l[i];
        return KD_OK;
    }
    float *w = kd_f32(*out_weights);
    for (size_t i = 0; i < n; i++) {
        bool padding = v && v[i] == 0;
        o[i] = padding ? ignore : l[i];
        w[i] = !padding && (double)c[i] >= threshold ? 1.0f : 0.0f;
    }
    return KD_OK;
}

kd_status kd_pseudo_trust_coarse(kd_tensor *weights, const kd_tensor *labels, const kd_tensor *coarse, float weight,
                                 int ignore) {
    kd_status s;
    if ((s = kd_check_f32("pseudo_trust_coarse", "weights", weights)) ||
        (s = kd_check_dtype("pseudo_trust_coarse", "labels", labels, KD_I32)) ||
        (s = kd_check_dtype("pseudo_trust_coarse", "coarse labels", coarse, KD_I32)) ||
        (s = check_maps("pseudo_trust_coarse", labels, coarse, KD_I32)))
        return s;
    if (kd_numel(weights) != kd_numel(labels))
        return kd_fail(KD_ERR_SHAPE, "pseudo_trust_coarse: weights %s do not match labels %s", kd_shape_str(weights),
                       kd_shape_str(labels));
    const int32_t *l = kd_i32(labels), *c = kd_i32(coarse);
    float *w = kd_f32(weights);
    for (size_t i = 0, n = kd_numel(labels); i < n; i++)
        if (c[i] != ignore && l[i] == c[i]) w[i] = weight;
    kd_modified(weights);
    return KD_OK;
}

kd_status kd_label_agreement(const kd_tensor *pred, const kd_tensor *labels, int ignore, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_dtype("label_agreement", "predictions", pred, KD_I32)) ||
        (s = check_maps("label_agreement", pred, labels, KD_I32)) ||
        (s = kd_tensor_new(KD_F32, labels->ndim, labels->shape, out)))
        return s;
    const int32_t *p = kd_i32(pred), *l = kd_i32(labels);
    float *m = kd_f32(*out);
    for (size_t i = 0, n = kd_numel(labels); i < n; i++) m[i] = l[i] == ignore || l[i] == p[i] ? 1.0f : 0.0f;
    return KD_OK;
}

kd_status kd_class_weight_map(const kd_tensor *classes, const kd_tensor *class_weights, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_dtype("class_weight_map", "classes", classes, KD_I32)) ||
        (s = kd_check_f32("class_weight_map", "class weights", class_weights)) ||
        (s = kd_tensor_new(KD_F32, classes->ndim, classes->shape, out)))
        return s;
    const int32_t *c = kd_i32(classes);
    const float *w = kd_f32(class_weights);
    int64_t count = (int64_t)kd_numel(class_weights);
    float *m = kd_f32(*out);
    for (size_t i = 0, n = kd_numel(classes); i < n; i++) m[i] = c[i] >= 0 && c[i] < count ? w[c[i]] : 0.0f;
    return KD_OK;
}

/* For each class, the given percentile (0..100) of the confidences of the
 * pixels predicted as that class; classes never predicted get `fallback`. A
 * 1024-bin histogram per class: exact to 1/1024. */
kd_status kd_class_percentiles(const kd_tensor *pred, const kd_tensor *conf, int classes, float percentile, float fallback,
                               float *thresholds) {
    kd_status s;
    if ((s = kd_check_dtype("class_percentiles", "classes", pred, KD_I32)) || (s = check_maps("class_percentiles", pred, conf, KD_F32)))
        return s;
    if (percentile < 0 || percentile > 100 || classes < 1)
        return kd_fail(KD_ERR_ARG, "class_percentiles: percentile %g outside [0, 100] or %d classes", percentile, classes);
    enum { BINS = 1024 };
    size_t *hist = calloc((size_t)classes * BINS, sizeof(size_t)), *count = calloc((size_t)classes, sizeof(size_t));
    if (!hist || !count) {
        free(hist), free(count);
        return kd_fail(KD_ERR_MEMORY, "class_percentiles: cannot allocate histograms");
    }
    const int32_t *p = kd_i32(pred);
    const float *f = kd_f32(conf);
    for (size_t i = 0, n = kd_numel(pred); i < n; i++) {
        if (p[i] < 0 || p[i] >= classes) continue;
        int bin = (int)(f[i] * BINS);
        bin = bin < 0 ? 0 : bin >= BINS ? BINS - 1 : bin;
        hist[(size_t)p[i] * BINS + bin]++;
        count[p[i]]++;
    }
    for (int c = 0; c < classes; c++) {
        if (!count[c]) {
            thresholds[c] = fallback;
            continue;
        }
        size_t want = (size_t)(percentile / 100.0 * (double)count[c]), seen = 0;
        int bin = 0;
        while (bin < BINS - 1 && seen + hist[(size_t)c * BINS + bin] <= want) seen += hist[(size_t)c * BINS + bin++];
        thresholds[c] = (float)bin / BINS;
    }
    free(hist), free(count);
    return KD_OK;
}

/* weights[i] = probs[labels[i]] at pixel i (the teacher's confidence in the
 * label it keeps), 0 where ignored. probs N x C x H x W, labels N x H x W. */
kd_status kd_pseudo_weights(const kd_tensor *probs, const kd_tensor *labels, int ignore, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("pseudo_weights", "probabilities", probs)) || (s = kd_check_ndim("pseudo_weights", "probabilities", probs, 4)) ||
        (s = kd_check_dtype("pseudo_weights", "labels", labels, KD_I32)))
        return s;
    int N = probs->shape[0], C = probs->shape[1];
    size_t plane = (size_t)probs->shape[2] * probs->shape[3];
    if (kd_numel(labels) != (size_t)N * plane)
        return kd_fail(KD_ERR_SHAPE, "pseudo_weights: labels %s do not match probabilities %s", kd_shape_str(labels), kd_shape_str(probs));
    if ((s = kd_tensor_new(KD_F32, labels->ndim, labels->shape, out))) return s;
    const int32_t *l = kd_i32(labels);
    const float *pr = kd_f32(probs);
    float *w = kd_f32(*out);
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < plane; i++) {
            int32_t c = l[(size_t)n * plane + i];
            w[(size_t)n * plane + i] = (c == ignore || c < 0 || c >= C) ? 0.0f : pr[((size_t)n * C + c) * plane + i];
        }
    return KD_OK;
}
