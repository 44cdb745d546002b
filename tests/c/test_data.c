/* test_data.c - PNG round trips of every supported kind and errors on bad
 * files; SynthCity determinism and the coarse-label contract; augmentation
 * keeping image and label aligned under every geometric transform. */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <jpeglib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment.h"
#include "check.h"

static char dir[256];

static const char *path_of(const char *name) {
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

static kd_tensor *pattern(int c, int h, int w) {
    int shape[3] = {c, h, w};
    kd_tensor *t;
    kd_tensor_new(KD_U8, 3, shape, &t);
    for (size_t i = 0; i < kd_numel(t); i++) kd_u8(t)[i] = (uint8_t)(i * 37 + i / 7);
    return t;
}

static void test_round_trips(void) {
    for (int channels = 1; channels <= 4; channels++) {
        kd_tensor *t = pattern(channels, 5, 7), *back = NULL;
        const char *p = path_of("round.png");
        CHECK_OK(kd_png_write(p, t, NULL, 0));
        CHECK_OK(kd_png_read(p, false, &back));
        CHECK(back && kd_same_shape(t, back) && memcmp(kd_u8(t), kd_u8(back), kd_numel(t)) == 0,
              "%d-channel PNG round trip", channels);
        kd_tensor_release(t), kd_tensor_release(back);
    }
    /* palette: indices come back as indices, or as colours when expanded */
    uint8_t palette[3 * 3] = {10, 20, 30, 200, 100, 0, 1, 2, 3};
    int shape[2] = {3, 4};
    kd_tensor *idx, *back = NULL, *rgb = NULL;
    kd_tensor_new(KD_U8, 2, shape, &idx);
    for (int i = 0; i < 12; i++) kd_u8(idx)[i] = (uint8_t)(i % 3);
    const char *p = path_of("palette.png");
    CHECK_OK(kd_png_write(p, idx, palette, 3));
    CHECK_OK(kd_png_read(p, false, &back));
    CHECK(back && back->shape[0] == 1 && memcmp(kd_u8(back), kd_u8(idx), 12) == 0, "palette indices read as stored");
    CHECK_OK(kd_png_read(p, true, &rgb));
    CHECK(rgb && rgb->shape[0] == 3 && kd_u8(rgb)[1] == 200 && kd_u8(rgb)[12 + 1] == 100 && kd_u8(rgb)[24 + 2] == 3,
          "palette expanded to colours");
    kd_tensor_release(idx), kd_tensor_release(back), kd_tensor_release(rgb);
}

static void write_bytes(const char *p, const void *data, size_t n) {
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_bad_files(void) {
    kd_tensor *t = pattern(3, 20, 30), *out = NULL;
    const char *good = path_of("good.png");
    kd_png_write(good, t, NULL, 0);
    FILE *f = fopen(good, "rb");
    unsigned char bytes[8192];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    const char *p = path_of("bad.png");
    write_bytes(p, bytes, n / 2);
    CHECK_FAILS(kd_png_read(p, false, &out), KD_ERR_FORMAT, "bad.png", "corrupt or truncated");
    for (size_t i = 40; i < n; i += 3) bytes[i] ^= 0x5A; /* corrupt everything after the header */
    write_bytes(p, bytes, n);
    CHECK_FAILS(kd_png_read(p, false, &out), KD_ERR_FORMAT, "bad.png");
    write_bytes(p, "not a png at all", 16);
    CHECK_FAILS(kd_png_read(p, false, &out), KD_ERR_FORMAT, "bad.png is not a PNG file");
    write_bytes(p, "", 0);
    CHECK_FAILS(kd_png_read(p, false, &out), KD_ERR_FORMAT, "not a PNG file");
    CHECK_FAILS(kd_png_read(path_of("missing.png"), false, &out), KD_ERR_IO, "missing.png", "No such file");
    CHECK_FAILS(kd_png_write(path_of("no/such/dir.png"), t, NULL, 0), KD_ERR_IO, "dir.png");
    kd_tensor *floats;
    int fshape[3] = {3, 2, 2};
    kd_tensor_zeros(KD_F32, 3, fshape, &floats);
    CHECK_FAILS(kd_png_write(p, floats, NULL, 0), KD_ERR_DTYPE, "png_write", "uint8");
    /* a 16-bit PNG, written with libpng directly */
    FILE *g = fopen(path_of("deep.png"), "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_init_io(png, g);
    png_set_IHDR(png, info, 2, 2, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_byte row[4] = {1, 2, 3, 4};
    png_write_row(png, row);
    png_write_row(png, row);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(g);
    CHECK_FAILS(kd_png_read(path_of("deep.png"), false, &out), KD_ERR_FORMAT, "deep.png is a 16-bit PNG");
    CHECK(out == NULL, "no failed read produced a tensor");
    kd_tensor_release(t), kd_tensor_release(floats);
}

/* JPEG: colour and gray round trips within JPEG's loss, every read path
 * telling PNG and JPEG apart, clear errors for truncated and CMYK files and
 * for a JPEG given where a label map (PNG only) goes; a loader batch from a
 * JPEG image and a PNG label. */
static void test_jpeg(void) {
    int shape[3] = {3, 24, 40};
    kd_tensor *t, *back = NULL, *gray = NULL;
    kd_tensor_new(KD_U8, 3, shape, &t);
    for (int c = 0; c < 3; c++) /* smooth: JPEG keeps it within a few levels */
        for (int y = 0; y < 24; y++)
            for (int x = 0; x < 40; x++) kd_u8(t)[(c * 24 + y) * 40 + x] = (uint8_t)(60 + 40 * c + 2 * x + y);
    CHECK_OK(kd_jpeg_write(path_of("colour.jpg"), t, 95));
    CHECK_OK(kd_image_read(path_of("colour.jpg"), true, &back));
    CHECK(back && kd_same_shape(t, back), "a colour JPEG reads as 3 x H x W");
    double err = 0;
    for (size_t i = 0; back && i < kd_numel(t); i++) err += fabs((double)kd_u8(t)[i] - kd_u8(back)[i]);
    CHECK(err / (double)kd_numel(t) < 3, "JPEG round trip within 3 levels on average, got %.2f", err / (double)kd_numel(t));
    kd_tensor_release(back);
    int gshape[2] = {24, 40};
    kd_tensor_new(KD_U8, 2, gshape, &gray);
    memcpy(kd_u8(gray), kd_u8(t), 24 * 40);
    CHECK_OK(kd_jpeg_write(path_of("gray.jpg"), gray, 90));
    CHECK_OK(kd_image_read(path_of("gray.jpg"), false, &back));
    CHECK(back && back->ndim == 3 && back->shape[0] == 1 && back->shape[1] == 24, "a gray JPEG reads as 1 x H x W");
    kd_tensor_release(back), back = NULL;
    CHECK_OK(kd_png_write(path_of("also.png"), t, NULL, 0));
    CHECK_OK(kd_image_read(path_of("also.png"), false, &back));
    CHECK(back && memcmp(kd_u8(back), kd_u8(t), kd_numel(t)) == 0, "kd_image_read reads PNG exactly");
    kd_tensor_release(back), back = NULL;
    CHECK_FAILS(kd_png_read(path_of("colour.jpg"), false, &back), KD_ERR_FORMAT, "colour.jpg is a JPEG",
                "must be PNG");
    FILE *f = fopen(path_of("colour.jpg"), "rb");
    unsigned char bytes[16384];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    write_bytes(path_of("cut.jpg"), bytes, n / 3);
    CHECK_FAILS(kd_image_read(path_of("cut.jpg"), true, &back), KD_ERR_FORMAT, "cut.jpg is corrupt or truncated");
    write_bytes(path_of("junk.jpg"), "GIF89a........", 14);
    CHECK_FAILS(kd_image_read(path_of("junk.jpg"), true, &back), KD_ERR_FORMAT, "junk.jpg is neither a PNG nor a JPEG");
    CHECK_FAILS(kd_jpeg_write(path_of("x.jpg"), t, 0), KD_ERR_ARG, "quality 0");
    /* more pixels than allowed: refused before decoding (a small file can declare a huge image) */
    kd_image_set_max_pixels(24 * 40 - 1);
    CHECK_FAILS(kd_image_read(path_of("colour.jpg"), true, &back), KD_ERR_FORMAT, "colour.jpg has unsupported size 40x24");
    CHECK_FAILS(kd_image_read(path_of("also.png"), true, &back), KD_ERR_FORMAT, "also.png has unsupported size 40x24");
    kd_image_set_max_pixels(0);
    /* CMYK, written with libjpeg directly */
    FILE *g = fopen(path_of("cmyk.jpg"), "wb");
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, g);
    ci.image_width = 4, ci.image_height = 2, ci.input_components = 4, ci.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_start_compress(&ci, TRUE);
    unsigned char row[16] = {0};
    JSAMPROW rows[1] = {row};
    for (int y = 0; y < 2; y++) jpeg_write_scanlines(&ci, rows, 1);
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(g);
    CHECK_FAILS(kd_image_read(path_of("cmyk.jpg"), true, &back), KD_ERR_FORMAT, "cmyk.jpg is a CMYK JPEG");
    CHECK(back == NULL, "no failed read produced a tensor");
    /* the loader: a JPEG image with a PNG label */
    int lshape[3] = {1, 24, 40};
    kd_tensor *label;
    kd_tensor_zeros(KD_U8, 3, lshape, &label);
    CHECK_OK(kd_png_write(path_of("label.png"), label, NULL, 0));
    char image_path[512], label_path[512];
    snprintf(image_path, sizeof image_path, "%s", path_of("colour.jpg"));
    snprintf(label_path, sizeof label_path, "%s", path_of("label.png"));
    const char *images[1] = {image_path}, *labels[1] = {label_path};
    kd_loader_config c = {.count = 1, .images = images, .labels = labels, .batch_size = 1, .prefetch = 1};
    c.augment.scale_min = c.augment.scale_max = 1;
    for (int k = 0; k < 3; k++) c.augment.std[k] = 1;
    c.augment.pad_label = 255;
    kd_loader *l = NULL;
    CHECK_OK(kd_loader_new(&c, &l));
    kd_batch batch;
    bool done = false;
    CHECK_OK(kd_loader_next(l, &batch, &done));
    CHECK(batch.images && batch.images->shape[1] == 3 && batch.images->shape[2] == 24, "a batch from a JPEG image");
    kd_batch_release(&batch);
    kd_loader_free(l);
    /* a JPEG label is refused by name */
    labels[0] = image_path;
    CHECK_OK(kd_loader_new(&c, &l));
    CHECK_FAILS(kd_loader_next(l, &batch, &done), KD_ERR_FORMAT, "colour.jpg is a JPEG", "must be PNG");
    kd_loader_free(l);
    kd_tensor_release(t), kd_tensor_release(gray), kd_tensor_release(label);
}

/* Fills the stack below the caller with non-zero bytes, so that a struct a
 * callee forgets to initialise holds garbage instead of lucky zeros. */
static __attribute__((noinline)) void scribble_stack(void) {
    volatile unsigned char junk[1 << 16];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = 0x5A;
}

/* A dataset naming a missing, a truncated and a 16-bit image (written by
 * test_bad_files): every way of loading fails with the file's name, never
 * a crash, with and without worker threads. */
static void test_loader_bad_images(void) {
    kd_tensor *t = pattern(3, 6, 8);
    kd_png_write(path_of("fine.png"), t, NULL, 0);
    kd_tensor_release(t);
    FILE *f = fopen(path_of("fine.png"), "rb");
    unsigned char bytes[4096];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    write_bytes(path_of("cut.png"), bytes, n / 2);
    const char *bad[3] = {"missing.png", "cut.png", "deep.png"};
    for (int b = 0; b < 3; b++) {
        for (int workers = 0; workers <= 2; workers += 2) {
            char fine[512], other[512];
            snprintf(fine, sizeof fine, "%s", path_of("fine.png"));
            snprintf(other, sizeof other, "%s", path_of(bad[b]));
            const char *images[3] = {other, fine, fine}; /* first: nothing before it zeroed the sample */
            kd_loader_config c = {.count = 3, .images = images, .batch_size = 3, .workers = workers, .prefetch = 2};
            c.augment.scale_min = c.augment.scale_max = 1;
            for (int k = 0; k < 3; k++) c.augment.std[k] = 1;
            c.augment.pad_label = 255;
            kd_loader *l = NULL;
            CHECK_OK(kd_loader_new(&c, &l));
            if (!l) continue;
            kd_batch batch;
            bool done = false;
            scribble_stack();
            CHECK_FAILS(kd_loader_next(l, &batch, &done), b == 0 ? KD_ERR_IO : KD_ERR_FORMAT, bad[b]);
            scribble_stack();
            CHECK_FAILS(kd_loader_sample(l, 0, 0, 0, &batch), b == 0 ? KD_ERR_IO : KD_ERR_FORMAT, bad[b]);
            kd_loader_free(l);
        }
    }
}

/* Batches of several epochs (shuffled, augmented, 2 workers). */
static bool loader_batches(const kd_loader_config *c, int count, kd_batch *out) {
    kd_loader *l = NULL;
    CHECK_OK(kd_loader_new(c, &l));
    if (!l) return false;
    bool done = false, ok = true;
    for (int i = 0; i < count && ok; i++) ok = !kd_loader_next(l, &out[i], &done);
    kd_loader_free(l);
    return ok;
}

static bool same_tensor(const kd_tensor *a, const kd_tensor *b) {
    return kd_numel(a) == kd_numel(b) && a->dtype == b->dtype &&
           !memcmp(kd_data((kd_tensor *)a), kd_data((kd_tensor *)b), kd_numel(a) * kd_dtype_size(a->dtype));
}

/* Decoded samples kept in memory (cache_bytes) give the batches of a loader
 * that decodes every time, with a budget for all samples and for two; and
 * the kept ones are not read again (their files deleted after the first
 * epoch, the batches go on the same). */
static void test_loader_cache(void) {
    enum { N = 6, BATCHES = 6 };
    char image_paths[N][512], label_paths[N][512];
    const char *images[N], *labels[N];
    for (int i = 0; i < N; i++) {
        kd_tensor *img, *lab;
        CHECK_OK(kd_synth_scene(48, 96, 9, (uint64_t)i, &img, &lab));
        char name[64];
        snprintf(name, sizeof name, "cache_%d.png", i);
        snprintf(image_paths[i], sizeof image_paths[i], "%s", path_of(name));
        snprintf(name, sizeof name, "cache_%d_label.png", i);
        snprintf(label_paths[i], sizeof label_paths[i], "%s", path_of(name));
        CHECK_OK(kd_png_write(image_paths[i], img, NULL, 0));
        CHECK_OK(kd_png_write(label_paths[i], lab, NULL, 0));
        images[i] = image_paths[i], labels[i] = label_paths[i];
        kd_tensor_release(img), kd_tensor_release(lab);
    }
    kd_loader_config c = {.count = N, .images = images, .labels = labels, .batch_size = 3, .shuffle = true,
                          .infinite = true, .seed = 5, .workers = 2, .prefetch = 2};
    c.augment = (kd_augment_params){.crop_h = 24, .crop_w = 40, .scale_min = 0.5f, .scale_max = 2.0f, .hflip = true,
                                    .brightness = 0.3f, .jitter_p = 0.8f, .std = {1, 1, 1}, .pad_label = 255};
    size_t one_sample = (size_t)48 * 96 * 5;
    size_t budgets[3] = {0, 64u << 20, 2 * one_sample};
    kd_batch runs[3][BATCHES];
    for (int r = 0; r < 3; r++) {
        c.cache_bytes = budgets[r];
        CHECK(loader_batches(&c, BATCHES, runs[r]), "loader with a budget of %zu bytes", budgets[r]);
    }
    for (int r = 1; r < 3; r++)
        for (int b = 0; b < BATCHES; b++) {
            kd_batch *x = &runs[0][b], *y = &runs[r][b];
            CHECK(same_tensor(x->images, y->images) && same_tensor(x->labels, y->labels) &&
                      same_tensor(x->weights, y->weights) && same_tensor(x->valid, y->valid) &&
                      same_tensor(x->ids, y->ids),
                  "batch %d with a budget of %zu bytes differs from decoding every time", b, budgets[r]);
        }
    /* every sample kept: the first epoch (2 batches) reads the files, the rest do not */
    c.cache_bytes = 64u << 20;
    kd_loader *l = NULL;
    CHECK_OK(kd_loader_new(&c, &l));
    kd_batch later[BATCHES];
    bool done = false;
    for (int b = 0; b < BATCHES && l; b++) {
        if (b == 2) /* batches 0 and 1, the first epoch, decoded and kept every sample */
            for (int i = 0; i < N; i++) remove(image_paths[i]), remove(label_paths[i]);
        memset(&later[b], 0, sizeof later[b]);
        kd_status st = kd_loader_next(l, &later[b], &done);
        CHECK(st == KD_OK, "batch %d after the files were deleted: %s", b, kd_error_message());
        if (st) break;
        if (b >= 2) CHECK(same_tensor(later[b].images, runs[0][b].images), "batch %d from kept samples", b);
        kd_batch_release(&later[b]);
    }
    kd_loader_free(l);
    for (int r = 0; r < 3; r++)
        for (int b = 0; b < BATCHES; b++) kd_batch_release(&runs[r][b]);
}

static void test_synth(void) {
    kd_tensor *a, *la, *b, *lb, *c, *lc, *coarse;
    CHECK_OK(kd_synth_scene(64, 128, 5, 17, &a, &la));
    CHECK_OK(kd_synth_scene(64, 128, 5, 17, &b, &lb));
    CHECK_OK(kd_synth_scene(64, 128, 5, 18, &c, &lc));
    CHECK(memcmp(kd_u8(a), kd_u8(b), kd_numel(a)) == 0 && memcmp(kd_u8(la), kd_u8(lb), kd_numel(la)) == 0,
          "the same (seed, index) draws the same scene");
    CHECK(memcmp(kd_u8(a), kd_u8(c), kd_numel(a)) != 0, "another index draws another scene");
    kd_tensor_release(lc);
    CHECK_OK(kd_synth_coarse(la, 3, &coarse));
    size_t fine_labeled = 0, coarse_labeled = 0, disagree = 0;
    for (size_t i = 0; i < kd_numel(la); i++) {
        fine_labeled += kd_u8(la)[i] > 1;
        coarse_labeled += kd_u8(coarse)[i] != 0;
        disagree += kd_u8(coarse)[i] != 0 && kd_u8(coarse)[i] != kd_u8(la)[i];
    }
    CHECK(disagree == 0, "coarse labels never disagree with fine ones (%zu pixels do)", disagree);
    CHECK(coarse_labeled < fine_labeled * 0.85 && coarse_labeled > fine_labeled * 0.2,
          "coarse covers %zu of %zu finely labelled pixels", coarse_labeled, fine_labeled);
    CHECK_FAILS(kd_synth_scene(8, 128, 1, 1, &a, &la), KD_ERR_ARG, "synth_scene: size 8x128");
    kd_tensor *wrong;
    CHECK_FAILS(kd_synth_coarse(a, 1, &wrong), KD_ERR_SHAPE, "synth_coarse");
    kd_tensor_release(a), kd_tensor_release(la), kd_tensor_release(b), kd_tensor_release(lb);
    kd_tensor_release(c), kd_tensor_release(coarse);
}

/* Pixels encode their own coordinates (R = x, G = y) and the label is a
 * checkerboard of 8-pixel blocks of those coordinates: after any geometric
 * transform, the label must equal the checkerboard of the coordinates read
 * back from the image, except within a pixel of a block edge (bilinear
 * image, nearest label). */
static void test_augment_alignment(void) {
    kd_rng rng;
    kd_rng_seed(&rng, 99);
    struct { float smin, smax; int ch, cw; bool flip; } cases[] = {
        {1, 1, 48, 80, true}, {0.5f, 0.8f, 40, 60, true}, {1.3f, 2.0f, 64, 64, true},
        {0.7f, 1.4f, 120, 200, false}, {1, 1, 0, 0, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int trial = 0; trial < 6; trial++) {
            int h = 100, w = 160;
            kd_sample s = {h, w, malloc(3 * (size_t)h * w), malloc((size_t)h * w), malloc(sizeof(float) * h * w),
                           malloc((size_t)h * w)};
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    size_t i = (size_t)y * w + x;
                    s.rgb[i] = (uint8_t)x, s.rgb[(size_t)h * w + i] = (uint8_t)y, s.rgb[2 * (size_t)h * w + i] = 0;
                    s.label[i] = (uint8_t)((x / 8 + y / 8) % 2);
                    s.weight[i] = (float)x;
                    s.valid[i] = 1;
                }
            kd_augment_params p = {.crop_h = cases[k].ch, .crop_w = cases[k].cw, .scale_min = cases[k].smin,
                                   .scale_max = cases[k].smax, .hflip = cases[k].flip, .std = {1, 1, 1},
                                   .pad_label = 254};
            CHECK_OK(kd_augment_sample(&s, &p, &rng));
            int bad = 0, checked = 0, padded = 0;
            for (int y = 0; y < s.h; y++)
                for (int x = 0; x < s.w; x++) {
                    size_t i = (size_t)y * s.w + x, n = (size_t)s.h * s.w;
                    if (!s.valid[i]) {
                        padded++;
                        bad += s.label[i] != 254 || s.weight[i] != 0;
                        continue;
                    }
                    int sx = s.rgb[i], sy = s.rgb[n + i];
                    if (sx % 8 <= 1 || sx % 8 >= 7 || sy % 8 <= 1 || sy % 8 >= 7) continue; /* near an edge */
                    checked++;
                    bad += s.label[i] != (uint8_t)((sx / 8 + sy / 8) % 2);
                    bad += fabsf(s.weight[i] - sx) > 1.5f; /* the weight map moves with the image */
                }
            CHECK(bad == 0 && checked > 100, "augment case %zu trial %d: %d misaligned of %d checked (%d padded)",
                  k, trial, bad, checked, padded);
            if (cases[k].ch) CHECK(s.h == cases[k].ch && s.w == cases[k].cw, "crop size %dx%d", s.h, s.w);
            kd_sample_free(&s);
        }
}

/* A random sample of h x w: noise in every plane (weights, and a valid
 * mask with holes, as a sample padded earlier would have). */
static kd_sample noise_sample(int h, int w, kd_rng *rng) {
    size_t n = (size_t)h * w;
    kd_sample s = {h, w, malloc(3 * n), malloc(n), malloc(sizeof(float) * n), malloc(n)};
    for (size_t i = 0; i < 3 * n; i++) s.rgb[i] = (uint8_t)kd_rng_u32(rng);
    for (size_t i = 0; i < n; i++) {
        s.label[i] = (uint8_t)(kd_rng_u32(rng) % 20);
        s.weight[i] = kd_rng_uniform(rng);
        s.valid[i] = kd_rng_u32(rng) % 7 != 0;
    }
    return s;
}

static bool same_sample(const kd_sample *a, const kd_sample *b) {
    size_t n = (size_t)a->h * a->w;
    return a->h == b->h && a->w == b->w && !memcmp(a->rgb, b->rgb, 3 * n) && !memcmp(a->label, b->label, n) &&
           !memcmp(a->weight, b->weight, n * sizeof(float)) && !memcmp(a->valid, b->valid, n);
}

/* A rescale and a crop computed for the window alone give the bytes of the
 * naive twin (the whole sample rescaled, then cropped), drawing the same
 * numbers: crops inside and larger than the rescaled image, scales up and
 * down, a rescale that lands on the crop size, flips and colour jitter. */
static void test_augment_fused_crop(void) {
    struct { float smin, smax; int ch, cw; } cases[] = {
        {0.5f, 2.0f, 64, 128}, {0.5f, 2.0f, 128, 256}, {1.5f, 2.0f, 200, 300}, {0.25f, 0.5f, 40, 60},
        {1.0f, 1.0f, 64, 128}, {0.5f, 0.5f, 64, 128},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int trial = 0; trial < 20; trial++) {
            kd_rng data;
            kd_rng_seed(&data, 1000 + 31 * k + (uint64_t)trial);
            kd_sample one = noise_sample(128, 256, &data), two = noise_sample(128, 256, &data);
            memcpy(two.rgb, one.rgb, 3 * (size_t)128 * 256), memcpy(two.label, one.label, (size_t)128 * 256);
            memcpy(two.weight, one.weight, sizeof(float) * 128 * 256), memcpy(two.valid, one.valid, (size_t)128 * 256);
            kd_augment_params p = {.crop_h = cases[k].ch, .crop_w = cases[k].cw, .scale_min = cases[k].smin,
                                   .scale_max = cases[k].smax, .hflip = true, .brightness = 0.25f,
                                   .contrast = 0.25f, .saturation = 0.25f, .jitter_p = 0.8f, .std = {1, 1, 1},
                                   .mean = {0.4f, 0.5f, 0.6f}, .pad_label = 255};
            kd_rng r1, r2;
            kd_rng_seed(&r1, 7 + (uint64_t)trial), kd_rng_seed(&r2, 7 + (uint64_t)trial);
            CHECK_OK(kd_augment_sample(&one, &p, &r1));
            bool was = kd_augment_fuse_rescale_crop(false);
            CHECK_OK(kd_augment_sample(&two, &p, &r2));
            kd_augment_fuse_rescale_crop(was);
            CHECK(same_sample(&one, &two) && kd_rng_u32(&r1) == kd_rng_u32(&r2),
                  "case %zu trial %d: rescale and crop in one step differ from the two steps", k, trial);
            kd_sample_free(&one), kd_sample_free(&two);
        }
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/kdseg-test-data-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    test_round_trips();
    test_bad_files();
    test_loader_bad_images();
    test_jpeg();
    test_synth();
    test_augment_alignment();
    test_augment_fused_crop();
    test_loader_cache();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes, m.live_tensors);
    return check_done("test_data");
}
