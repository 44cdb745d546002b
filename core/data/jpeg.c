/* jpeg.c - JPEG images through libjpeg (Debian's libjpeg-turbo): 8-bit gray
 * and colour (YCbCr or RGB) in, uint8 tensors C x H x W out (1 or 3
 * channels), and back. CMYK and 12-bit files are refused by name. Like
 * libpng, libjpeg reports errors by longjmp: every allocation made before
 * the jump point is freed on that path, and the message names the file.
 * JPEG is lossy: images may be JPEG, label maps may not (see image.c). */
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE and size_t without including them */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>

#include "image.h"
#include "internal.h"

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} jpeg_errors;

static void on_jpeg_error(j_common_ptr cinfo) {
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    e->base.format_message(cinfo, e->message);
    longjmp(e->jump, 1);
}

static void on_jpeg_message(j_common_ptr cinfo, int level) { (void)cinfo, (void)level; } /* warnings: quiet */

/* libjpeg's error manager with errors jumping back and warnings quiet. */
static struct jpeg_error_mgr *errors_init(jpeg_errors *e) {
    struct jpeg_error_mgr *m = jpeg_std_error(&e->base);
    m->error_exit = on_jpeg_error;
    m->emit_message = on_jpeg_message;
    return m;
}

kd_status kd_jpeg_read_stream(FILE *f, const char *name, kd_tensor **out) {
    *out = NULL;
    struct jpeg_decompress_struct cinfo;
    jpeg_errors errors;
    kd_tensor *volatile img = NULL;
    unsigned char *volatile row = NULL;
    cinfo.err = errors_init(&errors);
    if (setjmp(errors.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(row);
        kd_tensor_release(img);
        return kd_fail(KD_ERR_FORMAT, "jpeg: %s is corrupt or truncated: %s", name, errors.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, f);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return kd_fail(KD_ERR_FORMAT, "jpeg: %s is a CMYK JPEG; only gray and colour (RGB) images are supported", name);
    }
    kd_status size_error = kd_image_check_size(name, cinfo.image_width, cinfo.image_height);
    if (size_error) {
        jpeg_destroy_decompress(&cinfo);
        return size_error;
    }
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int channels = cinfo.output_components, width = (int)cinfo.output_width, height = (int)cinfo.output_height;
    int shape[3] = {channels, height, width};
    kd_tensor *t;
    kd_status s = kd_tensor_new(KD_U8, 3, shape, &t);
    if (s) {
        jpeg_destroy_decompress(&cinfo);
        return s;
    }
    img = t;
    row = malloc((size_t)width * channels);
    if (!row) {
        jpeg_destroy_decompress(&cinfo);
        kd_tensor_release(t);
        return kd_fail(KD_ERR_MEMORY, "jpeg: cannot allocate a row of %s", name);
    }
    size_t plane = (size_t)width * height;
    uint8_t *dst = kd_u8(t);
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        jpeg_read_scanlines(&cinfo, rows, 1);
        for (int x = 0; x < width; x++) /* interleaved -> C x H x W */
            for (int c = 0; c < channels; c++) dst[(size_t)c * plane + y * width + x] = row[x * channels + c];
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    *out = t;
    return KD_OK;
}

kd_status kd_jpeg_write(const char *path, const kd_tensor *image, int quality) {
    kd_status s = kd_check_dtype("jpeg_write", "image", image, KD_U8);
    if (s) return s;
    int channels = image->ndim == 3 ? image->shape[0] : 1;
    if ((image->ndim != 2 && image->ndim != 3) || (channels != 1 && channels != 3))
        return kd_fail(KD_ERR_SHAPE, "jpeg_write: %s: image %s must be H x W or C x H x W with C 1 or 3", path,
                       kd_shape_str(image));
    if (quality < 1 || quality > 100) return kd_fail(KD_ERR_ARG, "jpeg_write: quality %d must be 1 to 100", quality);
    int height = image->shape[image->ndim - 2], width = image->shape[image->ndim - 1];
    if (height < 1 || width < 1) return kd_fail(KD_ERR_SHAPE, "jpeg_write: %s: empty image %s", path, kd_shape_str(image));
    /* written to a temporary name and renamed: a reader never sees half a file */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return kd_fail(KD_ERR_IO, "jpeg_write: cannot write %s", path);
    unsigned char *row = malloc((size_t)width * channels);
    if (!row) {
        fclose(f), unlink(tmp);
        return kd_fail(KD_ERR_MEMORY, "jpeg_write: cannot allocate a row for %s", path);
    }
    struct jpeg_compress_struct cinfo;
    jpeg_errors errors;
    cinfo.err = errors_init(&errors);
    if (setjmp(errors.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(row);
        fclose(f), unlink(tmp);
        return kd_fail(KD_ERR_IO, "jpeg_write: cannot write %s: %s", path, errors.message);
    }
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, f);
    cinfo.image_width = (JDIMENSION)width, cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    const uint8_t *src = kd_u8(image);
    size_t plane = (size_t)width * height;
    for (int y = 0; y < height; y++) {
        for (int x = 0; x < width; x++)
            for (int c = 0; c < channels; c++) row[x * channels + c] = src[(size_t)c * plane + (size_t)y * width + x];
        JSAMPROW rows[1] = {row};
        jpeg_write_scanlines(&cinfo, rows, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    free(row);
    int failed = fflush(f) != 0;
    failed |= fsync(fileno(f)) != 0;
    failed |= fclose(f) != 0;
    if (failed) {
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "jpeg_write: cannot write %s", path);
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "jpeg_write: cannot rename %s to %s", tmp, path);
    }
    return KD_OK;
}
