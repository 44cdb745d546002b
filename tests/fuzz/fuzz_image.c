/* fuzz_image.c - libFuzzer harness: any bytes as an image file, decoded
 * from memory every way kdseg reads one: as an image (PNG or JPEG, told
 * apart by their first bytes, palettes expanded), as a label map (PNG only,
 * palette indices kept), and by the JPEG decoder directly. Each must give a
 * uint8 C x H x W tensor with 1 to 4 channels or a clear error; ASan and
 * UBSan catch the rest. */
#include <stdio.h>
#include <stdlib.h>

#include "image.h"

static volatile uint8_t sink; /* keeps the read of every byte */

static void check_result(kd_status s, kd_tensor *t) {
    if (s) {
        if (t || !kd_error_message()[0]) abort(); /* an error must name itself and leave nothing */
        return;
    }
    if (!t || t->dtype != KD_U8 || t->ndim != 3 || t->shape[0] < 1 || t->shape[0] > 4) abort();
    uint8_t sum = 0;
    for (size_t i = 0; i < kd_numel(t); i++) sum += kd_u8(t)[i];
    sink = sum;
    kd_tensor_release(t);
}

/* Images of a quarter megapixel at most: a few hundred bytes can declare a
 * gigapixel (refused at 2^27 pixels by default), and decoding those would
 * make each input take seconds. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    kd_image_set_max_pixels((size_t)1 << 18);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int way = 0; way < 3; way++) {
        FILE *f = fmemopen((void *)data, size ? size : 1, "rb");
        if (!f) return 0;
        if (!size) fgetc(f); /* fmemopen refuses 0 bytes: read the one past the end */
        kd_tensor *t = NULL;
        kd_status s = way == 0   ? kd_image_read_stream(f, "input", true, &t)
                      : way == 1 ? kd_png_read_stream(f, "input.png", false, &t)
                                 : kd_jpeg_read_stream(f, "input.jpg", &t);
        fclose(f);
        check_result(s, t);
    }
    return 0;
}
