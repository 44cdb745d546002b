/* augment.h - one sample in flight between the file and the batch, and its
 * augmentation (augment.c); the loader (loader.c) owns samples. */
#ifndef KD_AUGMENT_H
#define KD_AUGMENT_H

#include "kd.h"

typedef struct {
    int h, w;
    uint8_t *rgb;   /* 3 x h x w */
    uint8_t *label; /* h x w label values, or NULL for an unlabeled image */
    float *weight;  /* h x w per-pixel weights, or NULL (then 1 where valid) */
    uint8_t *valid; /* h x w: 1 where the pixel comes from the image, 0 on padding */
} kd_sample;

void kd_sample_free(kd_sample *s);
kd_status kd_augment_sample(kd_sample *s, const kd_augment_params *p, kd_rng *rng);
/* Whether a rescale followed by a crop computes the crop's window alone (on
 * by default) or rescales the whole sample first, then crops (the naive
 * twin the tests compare it with); returns the previous setting. */
bool kd_augment_fuse_rescale_crop(bool on);

#endif
