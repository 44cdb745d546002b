/* op_loss_upsampled.c - the gradient of cross_entropy(resize_bilinear(z))
 * with respect to z, in one pass. A segmentation network's logits are
 * upsampled (x8 for the benchmark networks) to the labels' size just before
 * the loss. Taken op by op, the loss writes a gradient as large as the
 * upsampled logits (20 MB for a batch of 8 at 128 x 256, into a buffer zeroed
 * first), which the resize's backward reads back and folds. Here each row of
 * that gradient lives in a small buffer in the cache and goes straight into
 * z's gradient through kd_column_fold (down the columns, then across), a
 * third of the memory traffic. kd_cross_entropy takes this path when its
 * logits come from kd_resize_bilinear (kd_take_bilinear_input). */
#include <omp.h>
#include <stdlib.h>

#include "loss.h"

/* The gradient of one upsampled row oh of image n: coef * (softmax - onehot),
 * C x W, into g_row. */
static void row_gradient(const kd_ce_grad *a, int n, int oh, float *coef, float *g_row) {
    size_t plane = (size_t)a->H * a->W, pix0 = n * plane + (size_t)oh * a->W;
    const float *lse = a->lse + pix0;
    for (int ow = 0; ow < a->W; ow++) coef[ow] = kd_ce_pixel_coef(a, pix0 + ow);
    for (int c = 0; c < a->C; c++) {
        const float *x = a->x + ((size_t)n * a->C + c) * plane + (size_t)oh * a->W;
        float *g = g_row + (size_t)c * a->W;
        for (int ow = 0; ow < a->W; ow++) g[ow] = coef[ow] * kd_fast_exp(x[ow] - lse[ow]);
    }
    for (int ow = 0; ow < a->W; ow++) {
        int t = a->y[pix0 + ow];
        if (t != a->ignore) g_row[(size_t)t * a->W + ow] -= coef[ow];
    }
}

/* A unit of work: low-resolution rows [r0, r1) of image n. It computes every
 * upsampled row that touches them (rows touching two units are computed by
 * both, so that no two threads add into one row). */
typedef struct {
    const kd_ce_grad *a;
    const kd_bilinear_tap *th;
    int h, w, bands, band;
    float *gz;
} plan;

static void run_unit(const plan *p, int unit, float *coef, float *g_row, kd_column_fold *cf) {
    const kd_ce_grad *a = p->a;
    int n = unit / p->bands, r0 = unit % p->bands * p->band, r1 = r0 + p->band < p->h ? r0 + p->band : p->h;
    kd_column_fold_start(cf, p->gz + (size_t)n * a->C * p->h * p->w);
    for (int oh = 0; oh < a->H; oh++) {
        kd_bilinear_tap t = p->th[oh];
        bool lo = t.lo >= r0 && t.lo < r1, hi = t.hi >= r0 && t.hi < r1;
        if (!lo && !hi) continue;
        row_gradient(a, n, oh, coef, g_row);
        if (lo) kd_column_fold_add(cf, t.lo, 1 - t.frac, g_row);
        if (hi) kd_column_fold_add(cf, t.hi, t.frac, g_row);
    }
    kd_column_fold_finish(cf);
}

kd_status kd_cross_entropy_upsampled_backward(const kd_ce_grad *a, int h, int w, bool align_corners, float *gz) {
    kd_bilinear_transpose t;
    kd_status s = kd_bilinear_transpose_new(h, w, a->H, a->W, align_corners, &t);
    if (s) return s;
    /* Enough units for every thread; each extra band per image costs the
     * upsampled rows on its borders twice. */
    int threads = kd_get_threads();
    int bands = (2 * threads + a->N - 1) / a->N;
    if (bands > h) bands = h;
    if (bands < 1) bands = 1;
    int band = (h + bands - 1) / bands;
    plan p = {.a = a, .th = t.rows, .h = h, .w = w, .bands = (h + band - 1) / band, .band = band, .gz = gz};
    int units = a->N * p.bands;
    bool failed = false;
    size_t per_thread = (size_t)a->W + 3 * (size_t)a->C * a->W + (size_t)w; /* coef, g_row, 2 accumulated rows, folded */
#pragma omp parallel if (units > 1 && (size_t)a->N * a->C * a->H * a->W > KD_PARALLEL_MIN)
    {
        float *buffer = malloc(sizeof(float) * per_thread);
        if (!buffer) {
#pragma omp atomic write
            failed = true;
        }
        float *coef = buffer, *g_row = buffer ? buffer + a->W : NULL;
        kd_column_fold cf = {.fold = &t.columns, .channels = a->C, .width = a->W, .in_height = h, .in_width = w,
                             .acc = g_row ? g_row + (size_t)a->C * a->W : NULL,
                             .folded = g_row ? g_row + 3 * (size_t)a->C * a->W : NULL};
#pragma omp for schedule(static)
        for (int u = 0; u < units; u++)
            if (buffer) run_unit(&p, u, coef, g_row, &cf);
        free(buffer);
    }
    kd_bilinear_transpose_free(&t);
    if (failed)
        return kd_fail(KD_ERR_MEMORY, "cross_entropy backward: cannot allocate row buffers for logits upsampled "
                       "from %dx%d to %dx%d", h, w, a->H, a->W);
    return KD_OK;
}
