/* augment.c - augmentation of one sample: the same geometric transform
 * (random scale, pad, crop, horizontal flip) on the image, the label map,
 * the per-pixel weight and the valid mask; photometric changes (colour
 * jitter, grayscale, blur) on the image alone. Labels are resized by nearest
 * neighbour, never interpolated. Everything is drawn from the sample's own
 * generator, so a sample's augmentation does not depend on which thread made it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "internal.h"

void kd_sample_free(kd_sample *s) {
    free(s->rgb), free(s->label), free(s->weight), free(s->valid);
    memset(s, 0, sizeof *s);
}

/* ---- geometry -------------------------------------------------------------- */

/* A window of a resize: rows [y0, y1) and columns [x0, x1) of the source
 * (h x w) resized to oh x ow, written at dst (a row every `stride` values). */
typedef struct {
    int h, w, oh, ow, y0, y1, x0, x1;
    size_t stride;
} window;

/* The window of a plane of bytes (rounded) or of floats, bilinear with
 * half-pixel centres, through the resize op's taps (th, tw: all oh and ow). */
static void resize_bilinear_plane(const void *src, bool bytes, window v, void *dst, const kd_bilinear_tap *th,
                                  const kd_bilinear_tap *tw) {
    int w = v.w;
    for (int y = v.y0; y < v.y1; y++) {
        kd_bilinear_tap a = th[y];
        size_t row = (size_t)(y - v.y0) * v.stride - (size_t)v.x0;
        for (int x = v.x0; x < v.x1; x++) {
            kd_bilinear_tap b = tw[x];
            float v00, v01, v10, v11;
            if (bytes) {
                const uint8_t *p = src;
                v00 = p[a.lo * w + b.lo], v01 = p[a.lo * w + b.hi], v10 = p[a.hi * w + b.lo], v11 = p[a.hi * w + b.hi];
            } else {
                const float *p = src;
                v00 = p[a.lo * w + b.lo], v01 = p[a.lo * w + b.hi], v10 = p[a.hi * w + b.lo], v11 = p[a.hi * w + b.hi];
            }
            float top = v00 + (v01 - v00) * b.frac, bottom = v10 + (v11 - v10) * b.frac;
            float value = top + (bottom - top) * a.frac;
            if (bytes) ((uint8_t *)dst)[row + x] = (uint8_t)(value + 0.5f);
            else ((float *)dst)[row + x] = value;
        }
    }
}

/* nearest: the source pixel whose centre is nearest the output pixel's centre */
static void resize_nearest_u8(const uint8_t *src, window v, uint8_t *dst) {
    for (int y = v.y0; y < v.y1; y++) {
        int sy = (int)((y + 0.5f) * v.h / v.oh);
        if (sy > v.h - 1) sy = v.h - 1;
        size_t row = (size_t)(y - v.y0) * v.stride - (size_t)v.x0;
        for (int x = v.x0; x < v.x1; x++) {
            int sx = (int)((x + 0.5f) * v.w / v.ow);
            if (sx > v.w - 1) sx = v.w - 1;
            dst[row + x] = src[sy * v.w + sx];
        }
    }
}

/* The size of s rescaled by factor. */
static void scaled_size(const kd_sample *s, float factor, int *oh, int *ow) {
    *oh = (int)(s->h * factor + 0.5f), *ow = (int)(s->w * factor + 0.5f);
    if (*oh < 1) *oh = 1;
    if (*ow < 1) *ow = 1;
}

/* A ch x cw sample standing for a window of s, before its pixels are
 * filled in: the image filled with fill_rgb, the label with pad_label, the
 * weight and the valid mask with 0 (what lies outside the image). */
static bool window_sample(const kd_sample *s, int ch, int cw, const uint8_t *fill_rgb, int pad_label, kd_sample *out) {
    size_t n = (size_t)ch * cw;
    *out = (kd_sample){ch, cw, malloc(3 * n), s->label ? malloc(n) : NULL, s->weight ? calloc(n, sizeof(float)) : NULL,
                       calloc(n, 1)};
    if (!out->rgb || !out->valid || (s->label && !out->label) || (s->weight && !out->weight)) {
        kd_sample_free(out);
        return false;
    }
    for (int c = 0; c < 3; c++) memset(out->rgb + c * n, fill_rgb[c], n);
    if (out->label) memset(out->label, pad_label, n);
    return true;
}

/* s becomes `by` (its buffers freed, by's taken). */
static void replace_sample(kd_sample *s, kd_sample by) {
    kd_sample_free(s);
    *s = by;
}

/* A crop_h x crop_w window at (top, left), which may reach outside the image:
 * outside, the image is filled with fill_rgb, the label with pad_label, the
 * weight and the valid mask with 0. */
static bool crop(kd_sample *s, int top, int left, int ch, int cw, const uint8_t *fill_rgb, int pad_label) {
    kd_sample out;
    if (!window_sample(s, ch, cw, fill_rgb, pad_label, &out)) return false;
    size_t n = (size_t)ch * cw;
    for (int y = 0; y < ch; y++) {
        int sy = top + y;
        if (sy < 0 || sy >= s->h) continue;
        int x0 = left < 0 ? -left : 0, x1 = left + cw > s->w ? s->w - left : cw;
        if (x1 <= x0) continue;
        size_t d = (size_t)y * cw + x0, o = (size_t)sy * s->w + left + x0, len = (size_t)(x1 - x0);
        for (int c = 0; c < 3; c++) memcpy(out.rgb + c * n + d, s->rgb + (size_t)c * s->h * s->w + o, len);
        if (out.label) memcpy(out.label + d, s->label + o, len);
        memcpy(out.valid + d, s->valid + o, len);
        if (out.weight) memcpy(out.weight + d, s->weight + o, len * sizeof(float));
    }
    replace_sample(s, out);
    return true;
}

/* rescale to oh x ow, then crop: the same values, computed for the window
 * alone. A scale of up to 2 and a crop a quarter of the image made the
 * two steps resize up to 16 times the pixels they kept (the accuracy
 * benchmark: 128 x 256 images, 64 x 128 crops). */
static bool rescaled_crop(kd_sample *s, int oh, int ow, int top, int left, int ch, int cw, const uint8_t *fill_rgb,
                          int pad_label) {
    kd_sample out;
    kd_bilinear_tap *th = malloc(sizeof *th * (size_t)oh), *tw = malloc(sizeof *tw * (size_t)ow);
    if (!th || !tw || !window_sample(s, ch, cw, fill_rgb, pad_label, &out)) {
        free(th), free(tw);
        return false;
    }
    size_t n = (size_t)ch * cw;
    /* the part of the window inside the rescaled image */
    window v = {s->h, s->w, oh, ow, top > 0 ? top : 0, top + ch < oh ? top + ch : oh,
                left > 0 ? left : 0, left + cw < ow ? left + cw : ow, (size_t)cw};
    if (v.y1 > v.y0 && v.x1 > v.x0) {
        kd_bilinear_taps(s->h, oh, false, th);
        kd_bilinear_taps(s->w, ow, false, tw);
        size_t at = (size_t)(v.y0 - top) * cw + (size_t)(v.x0 - left);
        for (int c = 0; c < 3; c++)
            resize_bilinear_plane(s->rgb + (size_t)c * s->h * s->w, true, v, out.rgb + c * n + at, th, tw);
        if (out.label) resize_nearest_u8(s->label, v, out.label + at);
        resize_nearest_u8(s->valid, v, out.valid + at);
        if (out.weight) resize_bilinear_plane(s->weight, false, v, out.weight + at, th, tw);
    }
    free(th), free(tw);
    replace_sample(s, out);
    return true;
}

/* s rescaled by factor: the window that is the whole rescaled image. */
static bool rescale(kd_sample *s, float factor) {
    int oh, ow;
    scaled_size(s, factor, &oh, &ow);
    if (oh == s->h && ow == s->w) return true;
    const uint8_t no_fill[3] = {0, 0, 0}; /* nothing lies outside */
    return rescaled_crop(s, oh, ow, 0, 0, oh, ow, no_fill, 0);
}

static void flip_rows_u8(uint8_t *p, int h, int w) {
    for (int y = 0; y < h; y++)
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            uint8_t t = p[y * w + a];
            p[y * w + a] = p[y * w + b], p[y * w + b] = t;
        }
}

static void hflip(kd_sample *s) {
    for (int c = 0; c < 3; c++) flip_rows_u8(s->rgb + (size_t)c * s->h * s->w, s->h, s->w);
    if (s->label) flip_rows_u8(s->label, s->h, s->w);
    flip_rows_u8(s->valid, s->h, s->w);
    if (s->weight)
        for (int y = 0; y < s->h; y++)
            for (int a = 0, b = s->w - 1; a < b; a++, b--) {
                float t = s->weight[y * s->w + a];
                s->weight[y * s->w + a] = s->weight[y * s->w + b], s->weight[y * s->w + b] = t;
            }
}

/* ---- photometry (image only) ---------------------------------------------- */

static float clamp255(float v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

static void rgb_to_hsv(float r, float g, float b, float *h, float *s, float *v) {
    float mx = fmaxf(r, fmaxf(g, b)), mn = fminf(r, fminf(g, b)), d = mx - mn;
    *v = mx;
    *s = mx > 0 ? d / mx : 0;
    if (d <= 0) *h = 0;
    else if (mx == r) *h = fmodf((g - b) / d + 6.0f, 6.0f) / 6.0f;
    else if (mx == g) *h = ((b - r) / d + 2.0f) / 6.0f;
    else *h = ((r - g) / d + 4.0f) / 6.0f;
}

static void hsv_to_rgb(float h, float s, float v, float *r, float *g, float *b) {
    float hh = h * 6.0f;
    int i = (int)floorf(hh) % 6;
    float f = hh - floorf(hh), p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    switch (i) {
    case 0: *r = v, *g = t, *b = p; break;
    case 1: *r = q, *g = v, *b = p; break;
    case 2: *r = p, *g = v, *b = t; break;
    case 3: *r = p, *g = q, *b = v; break;
    case 4: *r = t, *g = p, *b = v; break;
    default: *r = v, *g = p, *b = q; break;
    }
}

/* torchvision's ColorJitter factors: brightness, contrast, saturation in
 * [1 - x, 1 + x], hue shift in [-x, x] of a turn. */
static void color_jitter(kd_sample *s, float fb, float fc, float fs, float fh) {
    size_t n = (size_t)s->h * s->w;
    uint8_t *r = s->rgb, *g = s->rgb + n, *b = s->rgb + 2 * n;
    double gray_sum = 0;
    for (size_t i = 0; i < n; i++) gray_sum += 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
    float mean_gray = (float)(gray_sum / (double)n) * fb;
    for (size_t i = 0; i < n; i++) {
        float R = r[i] * fb, G = g[i] * fb, B = b[i] * fb;
        R = mean_gray + (R - mean_gray) * fc, G = mean_gray + (G - mean_gray) * fc, B = mean_gray + (B - mean_gray) * fc;
        float gray = 0.299f * R + 0.587f * G + 0.114f * B;
        R = gray + (R - gray) * fs, G = gray + (G - gray) * fs, B = gray + (B - gray) * fs;
        if (fh != 0) {
            float hh, ss, vv;
            rgb_to_hsv(clamp255(R) / 255, clamp255(G) / 255, clamp255(B) / 255, &hh, &ss, &vv);
            hh = fmodf(hh + fh + 1.0f, 1.0f);
            hsv_to_rgb(hh, ss, vv, &R, &G, &B);
            R *= 255, G *= 255, B *= 255;
        }
        r[i] = (uint8_t)(clamp255(R) + 0.5f), g[i] = (uint8_t)(clamp255(G) + 0.5f), b[i] = (uint8_t)(clamp255(B) + 0.5f);
    }
}

static void grayscale(kd_sample *s) {
    size_t n = (size_t)s->h * s->w;
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)(0.299f * s->rgb[i] + 0.587f * s->rgb[n + i] + 0.114f * s->rgb[2 * n + i] + 0.5f);
        s->rgb[i] = s->rgb[n + i] = s->rgb[2 * n + i] = v;
    }
}

static bool gaussian_blur(kd_sample *s, float sigma) {
    int radius = (int)ceilf(2 * sigma);
    if (radius < 1) return true;
    float kernel[65];
    if (radius > 32) radius = 32;
    float total = 0;
    for (int k = -radius; k <= radius; k++) total += kernel[k + radius] = expf(-0.5f * k * k / (sigma * sigma));
    for (int k = 0; k <= 2 * radius; k++) kernel[k] /= total;
    int h = s->h, w = s->w;
    float *tmp = malloc(sizeof(float) * (size_t)h * w);
    if (!tmp) return false;
    for (int c = 0; c < 3; c++) {
        uint8_t *p = s->rgb + (size_t)c * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float acc = 0;
                for (int k = -radius; k <= radius; k++) {
                    int xx = x + k < 0 ? 0 : x + k >= w ? w - 1 : x + k;
                    acc += kernel[k + radius] * p[y * w + xx];
                }
                tmp[y * w + x] = acc;
            }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float acc = 0;
                for (int k = -radius; k <= radius; k++) {
                    int yy = y + k < 0 ? 0 : y + k >= h ? h - 1 : y + k;
                    acc += kernel[k + radius] * tmp[yy * w + x];
                }
                p[y * w + x] = (uint8_t)(clamp255(acc) + 0.5f);
            }
    }
    free(tmp);
    return true;
}

/* The colour steps of an augmentation (jitter, grayscale, blur), each drawn
 * with its probability, in this order. The draws do not depend on the
 * image, so they are made first (draw_colours), and a batch's images can
 * then be changed in parallel with the draws of one image after another. */
typedef struct {
    bool jitter, gray;
    float brightness, contrast, saturation, hue; /* the jitter's factors */
    float blur_sigma;                            /* 0: no blur */
} colour_steps;

static colour_steps draw_colours(const kd_augment_params *p, kd_rng *rng) {
    colour_steps c = {0};
    if ((p->brightness > 0 || p->contrast > 0 || p->saturation > 0 || p->hue > 0) && kd_rng_uniform(rng) < p->jitter_p) {
        c.jitter = true;
        c.brightness = 1 + p->brightness * (2 * kd_rng_uniform(rng) - 1);
        c.contrast = 1 + p->contrast * (2 * kd_rng_uniform(rng) - 1);
        c.saturation = 1 + p->saturation * (2 * kd_rng_uniform(rng) - 1);
        c.hue = p->hue * (2 * kd_rng_uniform(rng) - 1);
    }
    c.gray = p->grayscale_p > 0 && kd_rng_uniform(rng) < p->grayscale_p;
    if (p->blur_p > 0 && kd_rng_uniform(rng) < p->blur_p)
        c.blur_sigma = p->blur_sigma_min + (p->blur_sigma_max - p->blur_sigma_min) * kd_rng_uniform(rng);
    return c;
}

/* false if the blur's buffer cannot be had */
static bool apply_colours(kd_sample *s, const colour_steps *c) {
    if (c->jitter) color_jitter(s, c->brightness, c->contrast, c->saturation, c->hue);
    if (c->gray) grayscale(s);
    return c->blur_sigma > 0 ? gaussian_blur(s, c->blur_sigma) : true;
}

static bool colours(kd_sample *s, const kd_augment_params *p, kd_rng *rng) {
    colour_steps c = draw_colours(p, rng);
    return apply_colours(s, &c);
}

static bool fused = true; /* rescale and crop in one step (tests turn it off) */

bool kd_augment_fuse_rescale_crop(bool on) {
    bool was = fused;
    fused = on;
    return was;
}

/* A random crop window of an h x w image; where the image is smaller, it
 * sits at a random offset inside the window. */
static void draw_window(int h, int w, const kd_augment_params *p, kd_rng *rng, int *top, int *left) {
    *top = h >= p->crop_h ? (int)(kd_rng_u32(rng) % (uint32_t)(h - p->crop_h + 1))
                          : -(int)(kd_rng_u32(rng) % (uint32_t)(p->crop_h - h + 1));
    *left = w >= p->crop_w ? (int)(kd_rng_u32(rng) % (uint32_t)(w - p->crop_w + 1))
                           : -(int)(kd_rng_u32(rng) % (uint32_t)(p->crop_w - w + 1));
}

kd_status kd_augment_sample(kd_sample *s, const kd_augment_params *p, kd_rng *rng) {
    bool cropping = p->crop_h > 0 && p->crop_w > 0;
    uint8_t fill[3];
    for (int c = 0; c < 3; c++) fill[c] = (uint8_t)clamp255(p->mean[c] * 255 + 0.5f);
    bool cropped = false;
    if (p->scale_max > 0 && (p->scale_min != 1 || p->scale_max != 1)) {
        float factor = p->scale_min + (p->scale_max - p->scale_min) * kd_rng_uniform(rng);
        int oh, ow;
        scaled_size(s, factor, &oh, &ow);
        if (fused && cropping && (oh != s->h || ow != s->w) && (oh != p->crop_h || ow != p->crop_w)) {
            int top, left; /* drawn as the crop below would on the rescaled image */
            draw_window(oh, ow, p, rng, &top, &left);
            if (!rescaled_crop(s, oh, ow, top, left, p->crop_h, p->crop_w, fill, p->pad_label))
                return kd_fail(KD_ERR_MEMORY, "augment: cannot rescale and crop a %dx%d sample", s->h, s->w);
            cropped = true;
        } else if (!rescale(s, factor)) {
            return kd_fail(KD_ERR_MEMORY, "augment: cannot rescale a %dx%d sample", s->h, s->w);
        }
    }
    if (!cropped && cropping && (s->h != p->crop_h || s->w != p->crop_w)) {
        int top, left;
        draw_window(s->h, s->w, p, rng, &top, &left);
        if (!crop(s, top, left, p->crop_h, p->crop_w, fill, p->pad_label))
            return kd_fail(KD_ERR_MEMORY, "augment: cannot crop a %dx%d sample", s->h, s->w);
    }
    if (p->hflip && kd_rng_uniform(rng) < 0.5f) hflip(s);
    if (!colours(s, p, rng)) return kd_fail(KD_ERR_MEMORY, "augment: cannot blur a %dx%d sample", s->h, s->w);
    return KD_OK;
}

kd_status kd_check_augment_params(const kd_augment_params *p) {
    if (p->crop_h < 0 || p->crop_w < 0 || (p->crop_h == 0) != (p->crop_w == 0))
        return kd_fail(KD_ERR_ARG, "augment: crop %dx%d: both sizes positive, or both 0 for none", p->crop_h, p->crop_w);
    if (p->scale_min <= 0 || p->scale_max < p->scale_min || p->scale_max > 8)
        return kd_fail(KD_ERR_ARG, "augment: scale range [%g, %g] must satisfy 0 < min <= max <= 8", p->scale_min, p->scale_max);
    if (p->brightness < 0 || p->contrast < 0 || p->saturation < 0 || p->hue < 0 || p->hue > 0.5f)
        return kd_fail(KD_ERR_ARG, "augment: jitter strengths must be >= 0 and hue at most 0.5");
    float probs[3] = {p->jitter_p, p->grayscale_p, p->blur_p};
    for (int i = 0; i < 3; i++)
        if (probs[i] < 0 || probs[i] > 1) return kd_fail(KD_ERR_ARG, "augment: probability %g outside [0, 1]", probs[i]);
    if (p->blur_p > 0 && (p->blur_sigma_min <= 0 || p->blur_sigma_max < p->blur_sigma_min))
        return kd_fail(KD_ERR_ARG, "augment: blur sigma range [%g, %g] invalid", p->blur_sigma_min, p->blur_sigma_max);
    for (int c = 0; c < 3; c++)
        if (!(p->std[c] > 0)) return kd_fail(KD_ERR_ARG, "augment: std %g of channel %d must be > 0", p->std[c], c + 1);
    if (p->pad_label < 0 || p->pad_label > 255) return kd_fail(KD_ERR_ARG, "augment: pad_label %d outside 0..255", p->pad_label);
    return KD_OK;
}

/* A strong view's colours, made inside a training step: each image of a
 * normalised batch (B x 3 x H x W) back to 8 bits, then the same colour
 * jitter, grayscale and blur as a loaded sample's, with p's strengths and
 * probabilities (its geometry is not used), normalised again. Draws from
 * rng in image order. */
kd_status kd_photometric_batch(const kd_tensor *images, const kd_augment_params *p, kd_rng *rng, kd_tensor **out) {
    kd_status st;
    if ((st = kd_check_f32("photometric", "images", images)) || (st = kd_check_ndim("photometric", "images", images, 4)))
        return st;
    if (images->shape[1] != 3)
        return kd_fail(KD_ERR_SHAPE, "photometric: images %s must have 3 channels", kd_shape_str(images));
    if ((st = kd_check_augment_params(p))) return st;
    int B = images->shape[0], h = images->shape[2], w = images->shape[3];
    size_t n = (size_t)h * w;
    colour_steps *steps = malloc(sizeof *steps * (size_t)(B > 0 ? B : 1));
    if (!steps) return kd_fail(KD_ERR_MEMORY, "photometric: cannot allocate the steps of %d images", B);
    if ((st = kd_tensor_new(KD_F32, 4, images->shape, out))) {
        free(steps);
        return st;
    }
    for (int b = 0; b < B; b++) steps[b] = draw_colours(p, rng); /* image after image, as one at a time would */
    const float *in = kd_f32(images);
    float *o = kd_f32(*out);
    bool failed = false;
#pragma omp parallel if ((size_t)B * 3 * n > KD_PARALLEL_MIN)
    {
        uint8_t *rgb = malloc(3 * n);
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            if (!rgb) continue;
            const float *x = in + (size_t)b * 3 * n;
            for (int c = 0; c < 3; c++)
                for (size_t i = 0; i < n; i++)
                    rgb[c * n + i] = (uint8_t)(clamp255((x[c * n + i] * p->std[c] + p->mean[c]) * 255) + 0.5f);
            kd_sample s = {.h = h, .w = w, .rgb = rgb};
            if (!apply_colours(&s, &steps[b])) {
#pragma omp atomic write
                failed = true;
            }
            float *y = o + (size_t)b * 3 * n;
            for (int c = 0; c < 3; c++) {
                float scale = 1.0f / (255 * p->std[c]), shift = -p->mean[c] / p->std[c];
                for (size_t i = 0; i < n; i++) y[c * n + i] = rgb[c * n + i] * scale + shift;
            }
        }
        if (!rgb) {
#pragma omp atomic write
            failed = true;
        }
        free(rgb);
    }
    free(steps);
    if (failed) {
        kd_tensor_release(*out);
        *out = NULL;
        return kd_fail(KD_ERR_MEMORY, "photometric: cannot allocate the buffers of a %dx%d image", h, w);
    }
    return KD_OK;
}
