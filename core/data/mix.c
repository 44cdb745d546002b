/* mix.c - box masks for the strong view of unlabeled images: CutMix pastes a
 * box of another image (and its pseudo-label) in; cutout blanks a box. One
 * box per image with probability p, its area a fraction of the image drawn
 * from [area_min, area_max] and its aspect ratio from [ratio_min, ratio_max]
 * (on a log scale), as in UniMatch's obtain_cutmix_box. */
#include <math.h>

#include "internal.h"

kd_status kd_box_masks(int batch, int h, int w, float p, float area_min, float area_max, float ratio_min,
                       float ratio_max, kd_rng *rng, kd_tensor **out) {
    if (batch < 1 || h < 1 || w < 1) return kd_fail(KD_ERR_SHAPE, "box_masks: %dx%dx%d is empty", batch, h, w);
    if (p < 0 || p > 1 || area_min <= 0 || area_max < area_min || area_max > 1 || ratio_min <= 0 || ratio_max < ratio_min)
        return kd_fail(KD_ERR_ARG, "box_masks: p %g in [0,1], area [%g, %g] within (0, 1], ratio [%g, %g] positive",
                       p, area_min, area_max, ratio_min, ratio_max);
    int shape[3] = {batch, h, w};
    kd_status s = kd_tensor_zeros(KD_U8, 3, shape, out);
    if (s) return s;
    for (int b = 0; b < batch; b++) {
        if (kd_rng_uniform(rng) >= p) continue;
        float area = (area_min + (area_max - area_min) * kd_rng_uniform(rng)) * h * w;
        float ratio = expf(logf(ratio_min) + (logf(ratio_max) - logf(ratio_min)) * kd_rng_uniform(rng));
        int bw = (int)fminf(w, sqrtf(area * ratio) + 0.5f), bh = (int)fminf(h, sqrtf(area / ratio) + 0.5f);
        if (bw < 1) bw = 1;
        if (bh < 1) bh = 1;
        int x0 = (int)(kd_rng_u32(rng) % (uint32_t)(w - bw + 1)), y0 = (int)(kd_rng_u32(rng) % (uint32_t)(h - bh + 1));
        uint8_t *m = kd_u8(*out) + (size_t)b * h * w;
        for (int y = y0; y < y0 + bh; y++)
            for (int x = x0; x < x0 + bw; x++) m[(size_t)y * w + x] = 1;
    }
    return KD_OK;
}

kd_status kd_mix_where(kd_tensor *dst, const kd_tensor *src, const kd_tensor *mask, double fill) {
    if (mask->dtype != KD_U8 || mask->ndim != 3)
        return kd_fail(KD_ERR_ARG, "mix: mask must be uint8 B x H x W, got %s %s", kd_dtype_name(mask->dtype), kd_shape_str(mask));
    if (src && (src->dtype != dst->dtype || !kd_same_shape(src, dst)))
        return kd_fail(KD_ERR_SHAPE, "mix: source %s %s and destination %s %s differ", kd_dtype_name(src->dtype),
                       kd_shape_str(src), kd_dtype_name(dst->dtype), kd_shape_str(dst));
    size_t plane = (size_t)mask->shape[1] * mask->shape[2], B = (size_t)mask->shape[0];
    if (dst->shape[0] != (int)B || kd_numel(dst) % (B * plane) != 0 ||
        dst->shape[dst->ndim - 1] != mask->shape[2] || dst->shape[dst->ndim - 2] != mask->shape[1])
        return kd_fail(KD_ERR_SHAPE, "mix: destination %s does not match mask %s", kd_shape_str(dst), kd_shape_str(mask));
    size_t channels = kd_numel(dst) / (B * plane);
    const uint8_t *m = kd_u8(mask);
    for (size_t b = 0; b < B; b++)
        for (size_t c = 0; c < channels; c++)
            for (size_t p = 0; p < plane; p++) {
                if (!m[b * plane + p]) continue;
                size_t i = (b * channels + c) * plane + p;
                kd_set(dst, i, src ? kd_get(src, i) : fill);
            }
    kd_modified(dst);
    return KD_OK;
}
