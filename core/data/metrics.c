/* metrics.c - the confusion matrix of segmentation, over a whole set: rows
 * are ground-truth classes, columns predictions. Pixels whose ground truth is
 * the ignore label (or any value outside 0..K-1) count nowhere, as in the
 * Cityscapes evaluation; a prediction outside 0..K-1 is an error. */
#include "internal.h"

kd_status kd_confusion_update(kd_tensor *matrix, const kd_tensor *prediction, const kd_tensor *target) {
    kd_status s;
    if ((s = kd_check_dtype("confusion", "matrix", matrix, KD_I64))) return s;
    if (matrix->ndim != 2 || matrix->shape[0] != matrix->shape[1])
        return kd_fail(KD_ERR_SHAPE, "confusion: matrix %s must be K x K", kd_shape_str(matrix));
    if (prediction->dtype != KD_I32 && prediction->dtype != KD_U8)
        return kd_fail(KD_ERR_DTYPE, "confusion: prediction must be int32 or uint8, got %s", kd_dtype_name(prediction->dtype));
    if (target->dtype != KD_I32 && target->dtype != KD_U8)
        return kd_fail(KD_ERR_DTYPE, "confusion: target must be int32 or uint8, got %s", kd_dtype_name(target->dtype));
    if (kd_numel(prediction) != kd_numel(target))
        return kd_fail(KD_ERR_SHAPE, "confusion: prediction %s and target %s differ", kd_shape_str(prediction),
                       kd_shape_str(target));
    int k = matrix->shape[0];
    size_t n = kd_numel(target);
    for (size_t i = 0; i < n; i++) {
        double p = kd_get(prediction, i);
        if (p < 0 || p >= k) return kd_fail(KD_ERR_ARG, "confusion: prediction %g at pixel %zu is not a class of 0..%d", p, i, k - 1);
    }
    int64_t *m = (int64_t *)kd_data(matrix);
    for (size_t i = 0; i < n; i++) {
        int t = (int)kd_get(target, i);
        if (t < 0 || t >= k) continue;
        m[(size_t)t * k + (size_t)kd_get(prediction, i)]++;
    }
    return KD_OK;
}
