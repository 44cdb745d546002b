/* image.h - PNG decoding from an open stream, for readers that do not start
 * from a path (the fuzzing harness decodes bytes in memory via fmemopen). */
#ifndef KD_IMAGE_H
#define KD_IMAGE_H

#include <stdio.h>

#include "kd.h"

/* As kd_png_read, from f (named `name` in messages); the caller closes f. */
kd_status kd_png_read_stream(FILE *f, const char *name, bool expand_palette, kd_tensor **out);
/* A JPEG from f: uint8 1 x H x W (gray) or 3 x H x W (colour). */
kd_status kd_jpeg_read_stream(FILE *f, const char *name, kd_tensor **out);
/* KD_OK, or the error for an image too large to decode (see image.c). */
kd_status kd_image_check_size(const char *name, size_t width, size_t height);
/* A PNG or a JPEG from f, told apart by their first bytes. */
kd_status kd_image_read_stream(FILE *f, const char *name, bool expand_palette, kd_tensor **out);

#endif
