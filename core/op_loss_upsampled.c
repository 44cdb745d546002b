/* op_loss_upsampled.c - the gradient of cross_entropy(resize_bilinear(z))
 * with respect to z, in one pass. A segmentation network's logits are
 * upsampled (x8 for the benchmark networks) to the labels' size just before
 * the loss. Taken op by op, the loss writes a gradient as large as the
 * upsampled logits (20 MB for a batch of 8 at 128 x 256, into a buffer zeroed
 * first), which the resize's backward reads back and folds. Here each row of
 * that gradient lives in a small buffer in the cache and is folded straight
 * into z's gradient: same values, same order of additions, a third of the
 * memory traffic. kd_cross_entropy takes this path when its logits come from
 * kd_resize_bilinear (kd_take_bilinear_input). */
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
    const kd_fold_table *fold;
    int h, w, bands, band;
    float *gz;
} plan;

/* The transpose of the interpolation runs down the columns first: each
 * upsampled row's gradient is added, weighted, into the (at most two)
 * low-resolution rows it came from, kept at full width in `acc`; a low row,
 * once complete, is folded across once. Folding across is the expensive half
 * (an indexed gather), and this does it h times per image instead of H.
 * Rows arrive in order, so two full-width rows are all that is kept: row r
 * lives in slot r % 2 and is complete when row r + 2 arrives. */
typedef struct {
    float *acc;   /* 2 slots of C x W */
    int row[2];   /* the low row each slot holds, -1: none */
    float *folded; /* C x w */
} columns_first;

static void flush(const plan *p, int n, columns_first *cf, int slot) {
    const kd_ce_grad *a = p->a;
    int r = cf->row[slot];
    if (r < 0) return;
    const float *acc = cf->acc + (size_t)slot * a->C * a->W;
    for (int c = 0; c < a->C; c++) {
        kd_fold_row(p->fold, acc + (size_t)c * a->W, p->w, cf->folded);
        float *dst = p->gz + (((size_t)n * a->C + c) * p->h + r) * p->w;
        for (int x = 0; x < p->w; x++) dst[x] += cf->folded[x];
    }
    cf->row[slot] = -1;
}

static void add_to_row(const plan *p, int n, columns_first *cf, int r, float weight, const float *g_row) {
    size_t size = (size_t)p->a->C * p->a->W;
    int slot = r & 1;
    float *acc = cf->acc + (size_t)slot * size;
    if (cf->row[slot] != r) {
        flush(p, n, cf, slot);
        for (size_t i = 0; i < size; i++) acc[i] = 0;
        cf->row[slot] = r;
    }
    for (size_t i = 0; i < size; i++) acc[i] += weight * g_row[i];
}

static void run_unit(const plan *p, int unit, float *coef, float *g_row, columns_first *cf) {
    const kd_ce_grad *a = p->a;
    int n = unit / p->bands, r0 = unit % p->bands * p->band, r1 = r0 + p->band < p->h ? r0 + p->band : p->h;
    cf->row[0] = cf->row[1] = -1;
    for (int oh = 0; oh < a->H; oh++) {
        kd_bilinear_tap t = p->th[oh];
        bool lo = t.lo >= r0 && t.lo < r1, hi = t.hi >= r0 && t.hi < r1;
        if (!lo && !hi) continue;
        row_gradient(a, n, oh, coef, g_row);
        if (lo) add_to_row(p, n, cf, t.lo, 1 - t.frac, g_row);
        if (hi) add_to_row(p, n, cf, t.hi, t.frac, g_row);
    }
    int first = cf->row[0] >= 0 && (cf->row[1] < 0 || cf->row[0] < cf->row[1]) ? 0 : 1;
    flush(p, n, cf, first);
    flush(p, n, cf, 1 - first);
}

kd_status kd_cross_entropy_upsampled_backward(const kd_ce_grad *a, int h, int w, bool align_corners, float *gz) {
    kd_bilinear_tap *th = malloc(sizeof *th * (size_t)a->H), *tw = malloc(sizeof *tw * (size_t)a->W);
    kd_fold_table fold = {0};
    bool ok = th && tw;
    if (ok) {
        kd_bilinear_taps(h, a->H, align_corners, th);
        kd_bilinear_taps(w, a->W, align_corners, tw);
        ok = kd_fold_table_new(tw, w, a->W, &fold);
    }
    /* Enough units for every thread; each extra band per image costs the
     * upsampled rows on its borders twice. */
    int threads = kd_get_threads();
    int bands = (2 * threads + a->N - 1) / a->N;
    if (bands > h) bands = h;
    if (bands < 1) bands = 1;
    int band = (h + bands - 1) / bands;
    plan p = {.a = a, .th = th, .fold = &fold, .h = h, .w = w, .bands = (h + band - 1) / band, .band = band, .gz = gz};
    int units = a->N * p.bands;
    bool failed = !ok;
    size_t per_thread = (size_t)a->W + 3 * (size_t)a->C * a->W + (size_t)a->C * w;
#pragma omp parallel if (ok && units > 1 && (size_t)a->N * a->C * a->H * a->W > KD_PARALLEL_MIN)
    {
        float *buffer = ok ? malloc(sizeof(float) * per_thread) : NULL;
        if (!buffer) {
#pragma omp atomic write
            failed = true;
        }
        float *coef = buffer, *g_row = buffer + a->W;
        columns_first cf = {.acc = g_row + (size_t)a->C * a->W, .folded = g_row + 3 * (size_t)a->C * a->W};
#pragma omp for schedule(static)
        for (int u = 0; u < units; u++)
            if (buffer) run_unit(&p, u, coef, g_row, &cf);
        free(buffer);
    }
    kd_fold_table_free(&fold);
    free(th);
    free(tw);
    if (failed)
        return kd_fail(KD_ERR_MEMORY, "cross_entropy backward: cannot allocate row buffers for logits upsampled "
                       "from %dx%d to %dx%d", h, w, a->H, a->W);
    return KD_OK;
}
