/* fuzz_loader.c - libFuzzer harness: any bytes as an image file and as its
 * label file in a one-sample dataset, loaded and augmented by the data
 * loader (crop, rescale, flip, colour jitter, blur) as training does, in the
 * caller's thread and by a worker. A file it cannot read must be an error
 * naming the file; a crash, a leak or undefined behaviour is a finding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd.h"

static char image_path[256], label_path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(image_path, sizeof image_path, "%s/kdseg-fuzz-loader-%d.png", dir, (int)getpid());
    snprintf(label_path, sizeof label_path, "%s/kdseg-fuzz-loader-%d-label.png", dir, (int)getpid());
    kd_set_threads(1);
    kd_image_set_max_pixels((size_t)1 << 18); /* as fuzz_image: keep each input fast */
    return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(image_path, data, size);
    write_file(label_path, data, size);
    const char *images[1] = {image_path}, *labels[1] = {label_path};
    for (int workers = 0; workers <= 1; workers++) {
        kd_loader_config c = {.count = 1, .images = images, .labels = workers ? labels : NULL, .batch_size = 1,
                              .workers = workers, .prefetch = 1, .seed = size};
        kd_augment_params *a = &c.augment;
        a->crop_h = 8, a->crop_w = 12, a->scale_min = 0.5f, a->scale_max = 2.0f, a->hflip = true;
        a->brightness = a->contrast = a->saturation = 0.3f, a->hue = 0.1f, a->jitter_p = 1;
        a->grayscale_p = 0.5f, a->blur_p = 0.5f, a->blur_sigma_min = 0.1f, a->blur_sigma_max = 2.0f;
        for (int k = 0; k < 3; k++) a->mean[k] = 0.5f, a->std[k] = 0.25f;
        a->pad_label = 255;
        kd_loader *l = NULL;
        if (kd_loader_new(&c, &l)) abort(); /* the config is valid: only loading may fail */
        kd_batch batch;
        bool done = false;
        kd_status s = kd_loader_next(l, &batch, &done);
        if (s) {
            if (!strstr(kd_error_message(), "kdseg-fuzz-loader")) abort(); /* the error names the file */
        } else {
            kd_batch_release(&batch);
        }
        kd_loader_free(l);
    }
    return 0;
}
