/* op_resize.c - bilinear resize (differentiable) and nearest resize (for label
 * maps and masks, any dtype, no grad). Source coordinates follow PyTorch's
 * interpolate with an explicit output size:
 *   align_corners true:  src = dst * (in - 1) / (out - 1)
 *   align_corners false: src = (dst + 0.5) * in / out - 0.5, clamped at 0
 *   nearest:             src = floor(dst * in / out) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#include "internal.h"

typedef kd_bilinear_tap tap;

/* d[i] = top[i] + (bottom[i] - top[i]) * frac, one output row of the
 * upsampling. Its output is written once and read later by another op,
 * and at the sizes that matter (logits to the image's size) is larger than
 * the caches: with AVX it is streamed past them (non-temporal stores),
 * which saves reading each line in before it is overwritten. The
 * arithmetic is the compiler's for the plain loop: one FMA where the
 * target has it. */
static void blend_row(const float *top, const float *bottom, float frac, float *d, int n) {
    int i = 0;
#ifdef __AVX__
    for (; i < n && ((uintptr_t)(d + i) & 31); i++) d[i] = top[i] + (bottom[i] - top[i]) * frac;
    __m256 f = _mm256_set1_ps(frac);
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_loadu_ps(top + i), diff = _mm256_sub_ps(_mm256_loadu_ps(bottom + i), t);
#ifdef __FMA__
        _mm256_stream_ps(d + i, _mm256_fmadd_ps(diff, f, t));
#else
        _mm256_stream_ps(d + i, _mm256_add_ps(t, _mm256_mul_ps(diff, f)));
#endif
    }
#endif
    for (; i < n; i++) d[i] = top[i] + (bottom[i] - top[i]) * frac;
}

/* Orders blend_row's streamed stores before whatever this thread does
 * next (they are weakly ordered), so that other threads see them. */
static void streamed_rows_done(void) {
#ifdef __AVX__
    _mm_sfence();
#endif
}

void kd_bilinear_taps(int in, int out, bool align_corners, kd_bilinear_tap *taps) {
    for (int d = 0; d < out; d++) {
        float src;
        if (align_corners) src = out > 1 ? (float)d * (float)(in - 1) / (float)(out - 1) : 0.0f;
        else {
            src = ((float)d + 0.5f) * (float)in / (float)out - 0.5f;
            if (src < 0) src = 0;
        }
        int lo = (int)src;
        if (lo > in - 1) lo = in - 1;
        taps[d].lo = lo;
        taps[d].hi = lo + 1 < in ? lo + 1 : in - 1;
        taps[d].frac = src - (float)lo;
    }
}

static kd_status alloc_taps(int in_h, int in_w, int out_h, int out_w, bool align, tap **th, tap **tw) {
    *th = malloc(sizeof(tap) * (size_t)out_h);
    *tw = malloc(sizeof(tap) * (size_t)out_w);
    if (!*th || !*tw) {
        free(*th);
        free(*tw);
        return kd_fail(KD_ERR_MEMORY, "resize_bilinear: cannot allocate coordinate tables");
    }
    kd_bilinear_taps(in_h, out_h, align, *th);
    kd_bilinear_taps(in_w, out_w, align, *tw);
    return KD_OK;
}

static bool fold_table_new(const tap *taps, int in, int out, kd_fold_table *t) {
    t->first = calloc((size_t)in + 1, sizeof(int));
    t->index = malloc(sizeof(int) * 2 * (size_t)out);
    t->weight = malloc(sizeof(float) * 2 * (size_t)out);
    if (!t->first || !t->index || !t->weight) return false;
    for (int d = 0; d < out; d++) t->first[taps[d].lo + 1]++, t->first[taps[d].hi + 1]++;
    for (int x = 0; x < in; x++) t->first[x + 1] += t->first[x];
    int *fill = malloc(sizeof(int) * (size_t)in);
    if (!fill) return false;
    memcpy(fill, t->first, sizeof(int) * (size_t)in);
    for (int d = 0; d < out; d++) {
        int k = fill[taps[d].lo]++;
        t->index[k] = d, t->weight[k] = 1 - taps[d].frac;
        k = fill[taps[d].hi]++;
        t->index[k] = d, t->weight[k] = taps[d].frac;
    }
    free(fill);
    return true;
}

static void fold_table_free(kd_fold_table *t) {
    free(t->first);
    free(t->index);
    free(t->weight);
}

/* One output row's gradient go folded onto the `in` input columns. */
static void fold_row(const kd_fold_table *t, const float *go, int in, float *row) {
    for (int x = 0; x < in; x++) {
        float acc = 0;
        for (int k = t->first[x]; k < t->first[x + 1]; k++) acc += go[t->index[k]] * t->weight[k];
        row[x] = acc;
    }
}

kd_status kd_bilinear_transpose_new(int in_h, int in_w, int out_h, int out_w, bool align_corners,
                                    kd_bilinear_transpose *t) {
    *t = (kd_bilinear_transpose){0};
    tap *columns = malloc(sizeof(tap) * (size_t)out_w);
    t->rows = malloc(sizeof(tap) * (size_t)out_h);
    bool ok = columns && t->rows;
    if (ok) {
        kd_bilinear_taps(in_h, out_h, align_corners, t->rows);
        kd_bilinear_taps(in_w, out_w, align_corners, columns);
        ok = fold_table_new(columns, in_w, out_w, &t->columns);
    }
    free(columns);
    if (ok) return KD_OK;
    kd_bilinear_transpose_free(t);
    return kd_fail(KD_ERR_MEMORY, "resize_bilinear backward: cannot allocate the folding tables for %dx%d -> %dx%d",
                   out_h, out_w, in_h, in_w);
}

void kd_bilinear_transpose_free(kd_bilinear_transpose *t) {
    free(t->rows);
    fold_table_free(&t->columns);
    *t = (kd_bilinear_transpose){0};
}

void kd_column_fold_start(kd_column_fold *cf, float *dst) {
    cf->dst = dst;
    cf->row[0] = cf->row[1] = -1;
}

static void column_fold_flush(kd_column_fold *cf, int slot) {
    int r = cf->row[slot];
    if (r < 0) return;
    size_t size = (size_t)cf->channels * cf->width;
    for (int c = 0; c < cf->channels; c++) {
        fold_row(cf->fold, cf->acc + slot * size + (size_t)c * cf->width, cf->in_width, cf->folded);
        float *d = cf->dst + ((size_t)c * cf->in_height + r) * cf->in_width;
        for (int x = 0; x < cf->in_width; x++) d[x] += cf->folded[x];
    }
    cf->row[slot] = -1;
}

void kd_column_fold_add(kd_column_fold *cf, int row, float weight, const float *g_row) {
    size_t size = (size_t)cf->channels * cf->width;
    int slot = row & 1;
    float *acc = cf->acc + slot * size;
    if (cf->row[slot] != row) { /* the row's first contribution */
        column_fold_flush(cf, slot);
        cf->row[slot] = row;
        for (size_t i = 0; i < size; i++) acc[i] = weight * g_row[i];
        return;
    }
    for (size_t i = 0; i < size; i++) acc[i] += weight * g_row[i];
}

void kd_column_fold_finish(kd_column_fold *cf) {
    int first = cf->row[0] >= 0 && (cf->row[1] < 0 || cf->row[0] < cf->row[1]) ? 0 : 1;
    column_fold_flush(cf, first);
    column_fold_flush(cf, 1 - first);
}

/* grad out N x C x OH x OW into grad x N x C x H x W; ints[0] = align.
 * The interpolation is separable, so its transpose is too: down the columns,
 * then across (kd_column_fold). */
static kd_status bilinear_backward(kd_node *node, const kd_tensor *grad_output,
                                   kd_tensor *const *grad_inputs) {
    const kd_edge *e = &node->inputs[0];
    int H = e->shape[2], W = e->shape[3], OH = grad_output->shape[2], OW = grad_output->shape[3];
    kd_bilinear_transpose t;
    kd_status s = kd_bilinear_transpose_new(H, W, OH, OW, node->ints[0], &t);
    if (s) return s;
    size_t planes = (size_t)e->shape[0] * e->shape[1];
    const float *g = kd_f32(grad_output);
    float *gx = kd_f32(grad_inputs[0]);
    bool failed = false;
#pragma omp parallel if (planes * OH * OW > KD_PARALLEL_MIN)
    {
        float *buffer = malloc(sizeof(float) * (2 * (size_t)OW + (size_t)W)); /* 2 full-width rows, 1 folded */
        if (!buffer) {
#pragma omp atomic write
            failed = true;
        }
        kd_column_fold cf = {.fold = &t.columns, .channels = 1, .width = OW, .in_height = H, .in_width = W,
                             .acc = buffer, .folded = buffer ? buffer + 2 * (size_t)OW : NULL};
#pragma omp for schedule(static)
        for (size_t q = 0; q < planes; q++) {
            if (!buffer) continue;
            const float *src = g + q * OH * OW;
            kd_column_fold_start(&cf, gx + q * H * W);
            for (int oh = 0; oh < OH; oh++) {
                tap a = t.rows[oh];
                kd_column_fold_add(&cf, a.lo, 1 - a.frac, src + (size_t)oh * OW);
                kd_column_fold_add(&cf, a.hi, a.frac, src + (size_t)oh * OW);
            }
            kd_column_fold_finish(&cf);
        }
        free(buffer);
    }
    kd_bilinear_transpose_free(&t);
    if (failed)
        return kd_fail(KD_ERR_MEMORY, "resize_bilinear backward: cannot allocate row buffers of %d floats", 2 * OW + W);
    return KD_OK;
}

kd_status kd_resize_bilinear(kd_tensor *x, int out_h, int out_w, bool align_corners,
                             kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("resize_bilinear", "input", x)) ||
        (s = kd_check_ndim("resize_bilinear", "input", x, 4)))
        return s;
    int H = x->shape[2], W = x->shape[3];
    if (out_h < 1 || out_w < 1 || H < 1 || W < 1)
        return kd_fail(KD_ERR_SHAPE, "resize_bilinear: cannot resize %s to %dx%d", kd_shape_str(x),
                       out_h, out_w);
    tap *th, *tw;
    if ((s = alloc_taps(H, W, out_h, out_w, align_corners, &th, &tw))) return s;
    int shape[4] = {x->shape[0], x->shape[1], out_h, out_w};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) {
        free(th);
        free(tw);
        return s;
    }
    size_t planes = (size_t)shape[0] * shape[1];
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
    /* Separable: each input row is interpolated along the width once (H rows
     * of out_w values, on the heap), then output rows blend two of those -
     * for an x8 upsampling a third of the work of interpolating per output
     * pixel. Without the buffer, per pixel. */
#pragma omp parallel for schedule(static) if (planes * out_h * out_w > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++) {
        const float *src = in + q * H * W;
        float *dst = y + q * out_h * out_w;
        float *rows = malloc(sizeof(float) * (size_t)H * out_w);
        if (rows) {
            for (int r = 0; r < H; r++)
                for (int ow = 0; ow < out_w; ow++) {
                    tap b = tw[ow];
                    const float *row = src + (size_t)r * W;
                    rows[(size_t)r * out_w + ow] = row[b.lo] + (row[b.hi] - row[b.lo]) * b.frac;
                }
            for (int oh = 0; oh < out_h; oh++) {
                tap a = th[oh];
                blend_row(rows + (size_t)a.lo * out_w, rows + (size_t)a.hi * out_w, a.frac, dst + (size_t)oh * out_w,
                          out_w);
            }
            streamed_rows_done();
            free(rows);
            continue;
        }
        for (int oh = 0; oh < out_h; oh++) {
            tap a = th[oh];
            const float *r0 = src + (size_t)a.lo * W, *r1 = src + (size_t)a.hi * W;
            for (int ow = 0; ow < out_w; ow++) {
                tap b = tw[ow];
                float top = r0[b.lo] + (r0[b.hi] - r0[b.lo]) * b.frac;
                float bottom = r1[b.lo] + (r1[b.hi] - r1[b.lo]) * b.frac;
                dst[(size_t)oh * out_w + ow] = top + (bottom - top) * a.frac;
            }
        }
    }
    free(th);
    free(tw);
    kd_node *node;
    s = kd_finish_op("resize_bilinear", bilinear_backward, out, 1, &x, 0, NULL, &node);
    if (node) node->ints[0] = align_corners;
    return s;
}

kd_status kd_resize_nearest(const kd_tensor *x, int out_h, int out_w, kd_tensor **out) {
    if (x->ndim < 2)
        return kd_fail(KD_ERR_SHAPE, "resize_nearest: input %s needs height and width",
                       kd_shape_str(x));
    int H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
    if (out_h < 1 || out_w < 1 || H < 1 || W < 1)
        return kd_fail(KD_ERR_SHAPE, "resize_nearest: cannot resize %s to %dx%d", kd_shape_str(x),
                       out_h, out_w);
    int shape[KD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 2] = out_h;
    shape[x->ndim - 1] = out_w;
    kd_status s = kd_tensor_new(x->dtype, x->ndim, shape, out);
    if (s) return s;
    size_t planes = kd_numel(x) / ((size_t)H * W), elem = kd_dtype_size(x->dtype);
    const char *in = kd_data(x);
    char *y = kd_data(*out);
#pragma omp parallel for schedule(static) if (planes * out_h * out_w > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (int oh = 0; oh < out_h; oh++) {
            int ih = (int)((long)oh * H / out_h);
            for (int ow = 0; ow < out_w; ow++) {
                int iw = (int)((long)ow * W / out_w);
                memcpy(y + ((q * out_h + oh) * out_w + ow) * elem,
                       in + ((q * H + ih) * W + iw) * elem, elem);
            }
        }
    return KD_OK;
}

bool kd_take_bilinear_input(kd_node *node, bool *align_corners) {
    kd_node *resize = node->n_inputs == 1 ? node->inputs[0].node : NULL;
    if (!resize || resize->backward != bilinear_backward || resize->released) return false;
    *align_corners = resize->ints[0];
    kd_node_take_inputs(node, 1);
    return true;
}
