/* picture.c - label maps as colour images (the rest of the pictures -
 * overlays, error maps, grids - are composed in Lua from these). */
#include <string.h>

#include "internal.h"

kd_status kd_colorize(const kd_tensor *labels, const uint8_t *palette, int count, const uint8_t *other,
                      kd_tensor **out) {
    if (labels->dtype != KD_I32 && labels->dtype != KD_U8)
        return kd_fail(KD_ERR_DTYPE, "colorize: labels must be int32 or uint8, got %s", kd_dtype_name(labels->dtype));
    if (labels->ndim < 2)
        return kd_fail(KD_ERR_SHAPE, "colorize: labels %s must be H x W", kd_shape_str(labels));
    int h = labels->shape[labels->ndim - 2], w = labels->shape[labels->ndim - 1];
    if (kd_numel(labels) != (size_t)h * w)
        return kd_fail(KD_ERR_SHAPE, "colorize: labels %s must be one H x W map", kd_shape_str(labels));
    int shape[3] = {3, h, w};
    kd_status s = kd_tensor_new(KD_U8, 3, shape, out);
    if (s) return s;
    size_t n = (size_t)h * w;
    uint8_t *rgb = kd_u8(*out);
    for (size_t i = 0; i < n; i++) {
        int v = (int)kd_get(labels, i);
        const uint8_t *c = v >= 0 && v < count ? palette + 3 * v : other;
        rgb[i] = c[0], rgb[n + i] = c[1], rgb[2 * n + i] = c[2];
    }
    return KD_OK;
}

kd_status kd_paste(kd_tensor *canvas, const kd_tensor *image, int top, int left) {
    if (canvas->dtype != image->dtype || canvas->ndim != 3 || image->ndim != 3 || canvas->shape[0] != image->shape[0])
        return kd_fail(KD_ERR_SHAPE, "paste: image %s %s does not fit canvas %s %s (C x H x W, same type)",
                       kd_dtype_name(image->dtype), kd_shape_str(image), kd_dtype_name(canvas->dtype), kd_shape_str(canvas));
    int C = canvas->shape[0], H = canvas->shape[1], W = canvas->shape[2], h = image->shape[1], w = image->shape[2];
    size_t elem = kd_dtype_size(image->dtype);
    char *dst = kd_data(canvas);
    const char *src = kd_data(image);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < h; y++) {
            int yy = top + y;
            if (yy < 0 || yy >= H) continue;
            for (int x = 0; x < w; x++) {
                int xx = left + x;
                if (xx < 0 || xx >= W) continue;
                memcpy(dst + (((size_t)c * H + yy) * W + xx) * elem, src + (((size_t)c * h + y) * w + x) * elem, elem);
            }
        }
    kd_modified(canvas);
    return KD_OK;
}
