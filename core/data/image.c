/* image.c - PNG files through libpng: 8-bit gray, gray+alpha, RGB, RGBA and
 * palette images in, uint8 tensors C x H x W out, and back. Label maps are
 * read as stored (gray values or palette indices), never converted or
 * interpolated. libpng reports errors by longjmp: every allocation made
 * before the jump point is freed on that path, and the message names the file. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "internal.h"

typedef struct {
    char message[256];
} png_error_state;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_error_state *state = png_get_error_ptr(png);
    snprintf(state->message, sizeof state->message, "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

/* Reads a PNG from f (named path in messages); the caller closes f. */
kd_status kd_png_read_stream(FILE *f, const char *path, bool expand_palette, kd_tensor **out) {
    *out = NULL;
    unsigned char signature[8];
    size_t got = fread(signature, 1, 8, f);
    if (got >= 3 && signature[0] == 0xFF && signature[1] == 0xD8 && signature[2] == 0xFF)
        return kd_fail(KD_ERR_FORMAT, "png: %s is a JPEG; label and weight maps must be PNG (JPEG's loss changes "
                       "label values)", path);
    if (got != 8 || png_sig_cmp(signature, 0, 8)) {
        return kd_fail(KD_ERR_FORMAT, "png: %s is not a PNG file (bad signature)", path);
    }
    png_error_state state = {{0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    kd_tensor *volatile t = NULL;
    png_bytep *volatile rows = NULL;
    unsigned char *volatile interleaved = NULL;
    if (!png || !info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        return kd_fail(KD_ERR_MEMORY, "png: cannot allocate a reader for %s", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(interleaved);
        kd_tensor_release(t);
        return kd_fail(KD_ERR_FORMAT, "png: %s is corrupt or truncated: %s", path, state.message);
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    if (depth == 16) {
        png_destroy_read_struct(&png, &info, NULL);
        return kd_fail(KD_ERR_FORMAT, "png: %s is a 16-bit PNG; only 8-bit images are supported", path);
    }
    kd_status size_error = kd_image_check_size(path, width, height);
    if (size_error) {
        png_destroy_read_struct(&png, &info, NULL);
        return size_error;
    }
    if (depth < 8) { /* 1, 2, 4-bit gray or palette: one byte per value */
        if (color == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(png);
        else png_set_packing(png);
    }
    if (color == PNG_COLOR_TYPE_PALETTE && expand_palette) {
        png_set_palette_to_rgb(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    int shape[3] = {channels, (int)height, (int)width};
    kd_tensor *img;
    kd_status s = kd_tensor_new(KD_U8, 3, shape, &img);
    if (s) {
        png_destroy_read_struct(&png, &info, NULL);
        return s;
    }
    t = img;
    size_t row_bytes = png_get_rowbytes(png, info);
    interleaved = malloc(row_bytes * height);
    rows = malloc(sizeof(png_bytep) * height);
    if (!interleaved || !rows) {
        free(interleaved);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        kd_tensor_release(img);
        return kd_fail(KD_ERR_MEMORY, "png: cannot allocate %zu bytes for %s", row_bytes * height, path);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = interleaved + y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    uint8_t *dst = kd_u8(img); /* H x W x C -> C x H x W */
    size_t plane = (size_t)width * height;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < channels; c++) dst[(size_t)c * plane + p] = interleaved[p * channels + c];
    free(interleaved);
    free(rows);
    *out = img;
    return KD_OK;
}

/* A few hundred bytes of PNG or JPEG can declare 32768 x 32768 pixels and
 * ask for gigabytes: images above this many pixels are refused (128 M by
 * default, 64 times a Cityscapes image). */
static size_t max_pixels = (size_t)1 << 27;

void kd_image_set_max_pixels(size_t pixels) { max_pixels = pixels ? pixels : (size_t)1 << 27; }

kd_status kd_image_check_size(const char *name, size_t width, size_t height) {
    if (width == 0 || height == 0 || width > 32768 || height > 32768 || width * height > max_pixels)
        return kd_fail(KD_ERR_FORMAT, "image: %s has unsupported size %zux%zu (at most 32768 on a side and %zu pixels)",
                       name, width, height, max_pixels);
    return KD_OK;
}

kd_status kd_image_read_stream(FILE *f, const char *name, bool expand_palette, kd_tensor **out) {
    *out = NULL;
    unsigned char head[3] = {0};
    size_t got = fread(head, 1, 3, f);
    if (fseek(f, 0, SEEK_SET) != 0) return kd_fail(KD_ERR_IO, "image: cannot read %s from its start", name);
    if (got == 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return kd_jpeg_read_stream(f, name, out);
    if (got == 3 && head[0] == 0x89 && head[1] == 'P' && head[2] == 'N') return kd_png_read_stream(f, name, expand_palette, out);
    return kd_fail(KD_ERR_FORMAT, "image: %s is neither a PNG nor a JPEG file", name);
}

typedef kd_status (*stream_reader)(FILE *f, const char *name, bool expand_palette, kd_tensor **out);

/* Opens path and reads it with decode; what names the reader in messages. */
static kd_status read_file(const char *path, const char *what, stream_reader decode, bool expand_palette,
                           kd_tensor **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot open %s: %s", what, path, strerror(errno));
    kd_status s = decode(f, path, expand_palette, out);
    fclose(f);
    return s;
}

kd_status kd_image_read(const char *path, bool expand_palette, kd_tensor **out) {
    return read_file(path, "image", kd_image_read_stream, expand_palette, out);
}

kd_status kd_png_read(const char *path, bool expand_palette, kd_tensor **out) {
    return read_file(path, "png", kd_png_read_stream, expand_palette, out);
}

kd_status kd_png_write(const char *path, const kd_tensor *image, const uint8_t *palette, int palette_size) {
    kd_status s = kd_check_dtype("png_write", "image", image, KD_U8);
    if (s) return s;
    int channels = image->ndim == 3 ? image->shape[0] : 1;
    if ((image->ndim != 2 && image->ndim != 3) || channels < 1 || channels > 4 ||
        (palette && channels != 1) || palette_size < 0 || palette_size > 256)
        return kd_fail(KD_ERR_SHAPE, "png_write: %s: image %s must be H x W or C x H x W with C 1 to 4 "
                       "(1 with a palette of at most 256 colours)", path, kd_shape_str(image));
    int height = image->shape[image->ndim - 2], width = image->shape[image->ndim - 1];
    if (height < 1 || width < 1) return kd_fail(KD_ERR_SHAPE, "png_write: %s: empty image %s", path, kd_shape_str(image));
    size_t plane = (size_t)width * height;
    unsigned char *interleaved = malloc(plane * channels);
    png_bytep *rows = malloc(sizeof(png_bytep) * height);
    if (!interleaved || !rows) {
        free(interleaved), free(rows);
        return kd_fail(KD_ERR_MEMORY, "png_write: cannot allocate a buffer for %s", path);
    }
    const uint8_t *src = kd_u8(image);
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < channels; c++) interleaved[p * channels + c] = src[(size_t)c * plane + p];
    for (int y = 0; y < height; y++) rows[y] = interleaved + (size_t)y * width * channels;
    /* written to a temporary name and renamed: a reader never sees half a file */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(interleaved), free(rows);
        return kd_fail(KD_ERR_IO, "png_write: cannot create %s: %s", path, strerror(errno));
    }
    png_error_state state = {{0}};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
        fclose(f);
        unlink(tmp);
        free(interleaved), free(rows);
        return kd_fail(KD_ERR_IO, "png_write: cannot write %s: %s", path, state.message);
    }
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                       PNG_COLOR_TYPE_RGBA};
    png_init_io(png, f);
    png_set_compression_level(png, 3); /* datasets are written often; level 3 is ~as small, far faster */
    png_set_IHDR(png, info, width, height, 8, palette ? PNG_COLOR_TYPE_PALETTE : color_types[channels],
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) {
        png_color colors[256];
        for (int i = 0; i < palette_size; i++)
            colors[i] = (png_color){palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]};
        png_set_PLTE(png, info, colors, palette_size);
    }
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(interleaved), free(rows);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "png_write: cannot write %s: %s", path, strerror(e));
    }
    return KD_OK;
}
