/* conv_subimages.c - a dilated 3x3 convolution run as an undilated one on
 * sub-images, so that Winograd's kernels take it.
 *
 * With dilation d, stride 1 and padding d, output pixel (y, x) reads the
 * input rows y - d, y, y + d and columns x - d, x, x + d: only pixels
 * congruent to (y, x) modulo d. So the d x d sub-images made of every d-th
 * pixel (rows p, p + d, ...; columns q, q + d, ...) convolve independently,
 * each with the same 3x3 kernel undilated and padding 1, and their outputs
 * interleave back into the output ("space to batch", as atrous convolution
 * is often run). oneDNN's Winograd kernels take only undilated 3x3
 * convolutions; on the benchmark networks' 16 x 32 layers of dilation 2 and
 * 4 (tests/bench/bench_dilated.lua, 1 thread) the sub-images take 0.55-0.67
 * of the direct kernels' time at inference and 0.58-0.78 for a forward and
 * backward; on 2 threads the 64-channel layers' step gained nothing, since
 * the gathers and scatters scale worse than the kernels. Where a side is
 * no multiple of d, the sub-images are padded with zeros to ceil(side / d):
 * those are positions past the edge, which the dilated convolution's own
 * padding reads as zeros. Small maps with large dilations make sub-images
 * smaller than Winograd's tiles: those layers stay direct (winograd_pays).
 * Where the CPU has no Winograd kernels, the sub-images still serve the
 * layers oneDNN would run on its slow GEMM fallback (kd_conv_by_subimages).
 *
 * All three passes are linear in what they read, so each goes through the
 * sub-images: the forward on the gathered input; the input gradient from the
 * gathered output gradient, scattered back; the weight gradient from the
 * gathered input (the copy the forward kept) and output gradient. Sub-image
 * (p, q) of image n is batch entry (p * d + q) * N + n. Data keeps the layout
 * it is stored in (NCHW, or nChw16c where a convolution left it so: a pixel's
 * `lanes` channels of one block move together), so the layout machinery of
 * conv_dnnl.c sees ordinary convolutions. Only copies: the same bits at any
 * thread count. */
#include <string.h>

#include "conv_dnnl.h"
#include "conv_subimages.h"
#include "conv_winograd.h"

/* The taps of a 3x3 kernel of dilation d that land inside a side of `size`
 * pixels, summed over the output positions: oneDNN's direct kernels skip
 * the others (a dilation as large as the side leaves only the centre). */
static long taps_inside(int size, int d) { return size + 2L * (size > d ? size - d : 0); }

/* Winograd on the sub-images against the direct kernel, in multiplications
 * per input and output channel: F(4x4, 3x3) makes 36 per 4x4 tile, and a
 * sub-image smaller than a tile pays for the whole tile; direct makes one
 * per tap inside. Winograd's transforms cost about as much again (on 8 x 16
 * and 16 x 32 maps, 64 and 128 channels, d 2 to 9, at inference, its time
 * over direct's was 1.9-2.3x what the counts predict), hence the factor 2.
 * On the accuracy benchmark's 64 x 128 crops (8 x 16 maps) the teacher's
 * dilations of 4 and more made sub-images of 1 x 2 to 2 x 4 pixels, which
 * ran 1.2-5.8x slower than direct in training and up to 22x at inference. */
static bool winograd_pays(const kd_conv_geometry *g) {
    int d = g->dilation_h;
    long sub_h = (g->height + d - 1) / d, sub_w = (g->width + d - 1) / d;
    long winograd = (long)d * d * ((sub_h + 3) / 4) * ((sub_w + 3) / 4) * 36;
    long direct = taps_inside(g->height, d) * taps_inside(g->width, d);
    return 2 * winograd < direct;
}

bool kd_conv_by_subimages(const kd_conv_geometry *g, int N, int cout, int groups, bool weight_grad) {
    int d = g->dilation_h;
    bool possible = d > 1 && g->dilation_w == d && g->kernel_h == 3 && g->kernel_w == 3 && g->stride_h == 1 &&
                    g->stride_w == 1 && g->pad_h == d && g->pad_w == d && groups == 1;
    if (!possible) return false;
    bool onednn_winograd = kd_conv_winograd() && !kd_conv_bf16() && kd_conv_winograd_available();
    /* where oneDNN has no direct JIT kernel for the dilated geometry (its
     * GEMM fallback, 3-5x slower: 16 x 32, dilation 8), sub-images win
     * whatever the counts say; kdseg's own Winograd (conv_winograd.c,
     * where oneDNN has none) takes the sub-images as oneDNN's would */
    if ((onednn_winograd || kd_conv_own_winograd_on()) && (winograd_pays(g) || kd_conv_dnnl_direct_on_gemm(g, N, cout)))
        return true;
    if (onednn_winograd) return false;
    /* Without Winograd kernels (AVX2: oneDNN's are AVX-512 only) the
     * sub-images run on the direct kernels, undilated: worth it only where
     * the dilated layer would run on the GEMM fallback, as more of them do
     * on AVX2 (bench_student's 16 x 32 layers of dilation 4 and the
     * teacher's of 2 and 4), or, in training, where its weight gradient
     * would (there, the layers of dilation 2 too). On an AVX2 Zen 3 (1
     * thread, CPU time) inference took 0.82-0.90 of the time with them
     * (student 40-41 -> 33-36 ms, teacher 217-219 -> 195-200); with the
     * weight gradients' too, bench_student's step 0.90-0.93 (three
     * alternated pairs: 180 -> 168, 154 -> 142, 152 -> 136 ms), the
     * teacher's within the machine's noise (767 -> 785, 861 -> 839). */
    return !kd_conv_winograd_available() &&
           (kd_conv_dnnl_direct_on_gemm(g, N, cout) || (weight_grad && kd_conv_dnnl_weight_grad_on_gemm(g, N, cout)));
}

/* The undilated convolution of one sub-image; returns d. */
static int subimage_geometry(const kd_conv_geometry *g, kd_conv_geometry *sub) {
    int d = g->dilation_h;
    *sub = *g;
    sub->height = sub->out_h = (g->height + d - 1) / d;
    sub->width = sub->out_w = (g->width + d - 1) / d;
    sub->pad_h = sub->pad_w = 1;
    sub->dilation_h = sub->dilation_w = 1;
    return d;
}

/* The sizes of one gather or scatter: N images of CB x H x W pixels of
 * `lanes` floats (CB = C, lanes 1 in NCHW; CB = C / 16, lanes 16 in
 * nChw16c), their d * d * N sub-images of CB x h x w pixels. */
typedef struct {
    int N, CB, H, W, lanes, d, h, w;
} subimages;

typedef enum { GATHER, SCATTER, SCATTER_ADD } direction;

/* One row of a sub-image (`sub`: w pixels) and the full row it is every d-th
 * pixel of (`full`: W pixels, from column q), one way or the other. Inlined
 * with `lanes` a constant, so that a pixel moves as one vector. */
static inline __attribute__((always_inline)) void move_row(float *full, float *sub, int w, int W, int d, int q,
                                                           int lanes, direction dir) {
    int inside = W > q ? (W - q + d - 1) / d : 0; /* the pixels before the edge */
    if (inside > w) inside = w;
    for (int j = 0; j < inside; j++) {
        float *restrict at = full + (size_t)(j * d + q) * lanes, *restrict sub_at = sub + (size_t)j * lanes;
        if (dir == GATHER) {
            memcpy(sub_at, at, (size_t)lanes * sizeof(float)); /* a constant size: vector moves */
        } else if (dir == SCATTER) {
            memcpy(at, sub_at, (size_t)lanes * sizeof(float));
        } else {
            for (int l = 0; l < lanes; l++) at[l] += sub_at[l];
        }
    }
    if (dir == GATHER) memset(sub + (size_t)inside * lanes, 0, (size_t)(w - inside) * lanes * sizeof(float));
}

/* One pixel between a full row and sub-image row `r`, one way or the other. */
static inline __attribute__((always_inline)) void move_pixel(float *at, float *r, direction dir) {
    if (dir == GATHER) *r = *at;
    else if (dir == SCATTER) *at = *r;
    else *at += *r;
}

/* A full NCHW row of W pixels and the D sub-image rows it interleaves
 * (pixel j * D + q is pixel j of row[q]), one way or the other, whole
 * groups of D pixels at a time: the full row is read or written along the
 * memory, which the compiler turns into vector loads, stores and shuffles
 * where the caller makes D a constant (the pixel-by-pixel loop ran scalar,
 * and these moves were 5% of bench_student's step on 1 thread, 9% on 2;
 * hand-written loops for D = 2 and 4 with restrict rows ran no faster, and
 * one loop per sub-image row, strided along the full row, ran 1.5-6x
 * slower; measured alone, 1 thread, rows of 16-128 pixels). The last
 * W % D pixels one by one. */
static inline __attribute__((always_inline)) void interleave_row(float *restrict full, float *const *row, int W, int D,
                                                                 direction dir) {
    int groups = W / D;
    for (int j = 0; j < groups; j++)
        for (int q = 0; q < D; q++) move_pixel(full + j * D + q, row[q] + j, dir);
    for (int x = groups * D; x < W; x++) move_pixel(full + x, row[x - groups * D] + groups, dir);
}

/* Row i of sub-image (p, q) of plane n * CB + c, in NCHW. */
static float *subimage_row(const subimages *s, float *sub, int p, int q, size_t plane, int i) {
    size_t image_rows = (size_t)s->N * s->CB * s->h; /* sub-image rows per (p, q) */
    return sub + ((size_t)(p * s->d + q) * image_rows + plane * s->h + i) * s->w;
}

/* move() in NCHW (lanes 1): full row by full row, each with the d sub-image
 * rows it interleaves; a gather then zero-fills the sub-images' pixels past
 * the edge (columns, then whole rows). */
static void move_plain(const subimages *s, float *full, float *sub, direction dir) {
    int d = s->d, units = s->N * s->CB * s->H;
#pragma omp parallel for schedule(static) if ((size_t)units * s->W > KD_PARALLEL_MIN)
    for (int u = 0; u < units; u++) {
        int y = u % s->H, plane = u / s->H, p = y % d, i = y / d; /* plane: n * CB + c */
        float *row[d];
        for (int q = 0; q < d; q++) row[q] = subimage_row(s, sub, p, q, (size_t)plane, i);
        float *at = full + ((size_t)plane * s->H + y) * s->W;
        if (d == 2) interleave_row(at, row, s->W, 2, dir);
        else if (d == 4) interleave_row(at, row, s->W, 4, dir);
        else interleave_row(at, row, s->W, d, dir);
        if (dir == GATHER)
            for (int q = 0; q < d; q++) {
                int inside = s->W > q ? (s->W - q + d - 1) / d : 0;
                if (inside < s->w) memset(row[q] + inside, 0, (size_t)(s->w - inside) * sizeof(float));
            }
    }
    if (dir != GATHER) return;
    /* sub-image rows i with i * d + p past the last full row */
    for (int p = 0; p < d; p++)
        for (int i = (s->H - p + d - 1) / d; i < s->h; i++)
            for (int q = 0; q < d; q++)
                for (size_t plane = 0; plane < (size_t)s->N * s->CB; plane++)
                    memset(subimage_row(s, sub, p, q, plane, i), 0, (size_t)s->w * sizeof(float));
}

/* Between full images (`full`) and their sub-images (`sub`), one way or
 * the other: a gather zero-fills the sub-images' pixels past the edge, a
 * scatter drops them. */
static void move(const subimages *s, float *full, float *sub, direction dir) {
    if (s->lanes == 1) {
        move_plain(s, full, sub, dir);
        return;
    }
    int rows = s->d * s->d * s->N * s->CB;
    size_t row = (size_t)s->w * s->lanes, lanes = (size_t)s->lanes;
#pragma omp parallel for schedule(static) if ((size_t)rows * s->h * row > KD_PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        int cb = r % s->CB, n = r / s->CB % s->N, part = r / s->CB / s->N, p = part / s->d, q = part % s->d;
        float *image = full + (((size_t)n * s->CB + cb) * s->H) * s->W * lanes;
        float *subimage = sub + (size_t)r * s->h * row;
        for (int i = 0; i < s->h; i++) {
            int y = i * s->d + p;
            float *to = subimage + (size_t)i * row, *from = image + (size_t)y * s->W * lanes;
            if (y >= s->H) {
                if (dir == GATHER) memset(to, 0, row * sizeof(float));
            } else if (s->lanes == 16) {
                move_row(from, to, s->w, s->W, s->d, q, 16, dir);
            } else if (s->lanes == 8) {
                move_row(from, to, s->w, s->W, s->d, q, 8, dir);
            } else {
                move_row(from, to, s->w, s->W, s->d, q, 1, dir);
            }
        }
    }
}

static subimages sizes_of(int N, int C, int H, int W, int block, const kd_conv_geometry *sub, int d) {
    return (subimages){N, block ? C / block : C, H, W, block ? block : 1, d, sub->height, sub->width};
}

/* The floats the sub-images of s take. */
static size_t subimage_floats(const subimages *s) {
    return (size_t)s->d * s->d * s->N * s->CB * s->h * s->w * s->lanes;
}

/* t's sub-images as a new tensor in t's layout, or NULL where there is no
 * memory for it. */
static kd_tensor *gathered(const kd_tensor *t, const kd_conv_geometry *sub, int d) {
    int block = kd_blocked(t), shape[4] = {d * d * t->shape[0], t->shape[1], sub->height, sub->width};
    kd_tensor *out;
    if (kd_tensor_new(KD_F32, 4, shape, &out)) return NULL;
    subimages s = sizes_of(t->shape[0], t->shape[1], t->shape[2], t->shape[3], block, sub, d);
    move(&s, block ? kd_data_as_stored(t) : kd_f32(t), kd_data_as_stored(out), GATHER);
    if (block) kd_set_blocked(out, block);
    return out;
}

/* The sub-images' outputs (ys) interleaved into y, in ys's layout. */
static void scatter(const kd_tensor *ys, int d, const kd_conv_geometry *sub, kd_tensor *y) {
    int block = kd_blocked(ys);
    subimages s = sizes_of(y->shape[0], y->shape[1], y->shape[2], y->shape[3], block, sub, d);
    move(&s, block ? kd_data_as_stored(y) : kd_f32(y), kd_data_as_stored(ys), SCATTER);
    if (block) kd_set_blocked(y, block);
}

/* The forward (e NULL) or inference's fused convolution (e its epilogue,
 * the residual gathered like the input). */
static bool forward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                    const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out, kd_tensor **keep_src) {
    kd_conv_geometry sub;
    int d = subimage_geometry(g, &sub), shape[4] = {d * d * N, cout, sub.out_h, sub.out_w};
    /* (the output, scattered from the sub-images' in their layout, is larger than they are) */
    blocked_out = blocked_out && kd_blocked_layout_can_take(g->out_h, g->out_w, 16);
    kd_tensor *xs = gathered(x, &sub, d), *ys = NULL;
    bool ok = xs && !kd_tensor_new(KD_F32, 4, shape, &ys);
    /* a residual is added to the full output after the scatter, with the
     * ReLU after it, rather than gathered into sub-images for the kernels:
     * one pass instead of a gather and a pass (Winograd's kernels take no
     * residual, kd_conv_dnnl_inference) */
    bool after = e && e->residual;
    if (ok && e) {
        kd_conv_epilogue on_subimages = {e->bias, NULL, e->relu && !after};
        ok = kd_conv_dnnl_inference(&sub, d * d * N, cout, 1, xs, w, &on_subimages, ys, blocked_out);
    } else if (ok) {
        ok = kd_conv_dnnl_forward(&sub, d * d * N, cout, 1, xs, w, ys, blocked_out, keep_src);
    }
    if (ok) scatter(ys, d, &sub, y);
    if (ok && after) kd_conv_residual_relu(y, e);
    if (xs) kd_tensor_release(xs);
    if (ys) kd_tensor_release(ys);
    return ok;
}

bool kd_conv_subimages_forward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                               kd_tensor *y, bool blocked_out, kd_tensor **keep_src) {
    return forward(g, N, cout, x, w, NULL, y, blocked_out, keep_src);
}

bool kd_conv_subimages_inference(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                                 const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out) {
    return forward(g, N, cout, x, w, e, y, blocked_out, NULL);
}

unsigned kd_conv_subimages_backward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x,
                                    const kd_tensor *kept_src, const float *w, const float *grad_out, float *grad_x,
                                    bool grad_x_zeros, float *grad_w) {
    kd_conv_geometry sub;
    int d = subimage_geometry(g, &sub);
    subimages out = sizes_of(N, cout, g->out_h, g->out_w, 0, &sub, d);
    subimages in = sizes_of(N, g->channels, g->height, g->width, 0, &sub, d);
    size_t out_bytes, in_bytes = 0, in_floats = subimage_floats(&in);
    float *gos = kd_cache_alloc(subimage_floats(&out) * sizeof(float), &out_bytes);
    float *gxs = grad_x ? kd_cache_alloc(in_floats * sizeof(float), &in_bytes) : NULL;
    kd_tensor *xs = grad_w && !kept_src ? gathered(x, &sub, d) : NULL;
    unsigned ran = 0;
    if (gos && (gxs || !grad_x) && (xs || !grad_w || kept_src)) {
        move(&out, (float *)grad_out, gos, GATHER);
        /* gxs as pending zeros: written whole by the input gradient */
        ran = kd_conv_dnnl_backward_plain(&sub, d * d * N, cout, 1, xs, kept_src, w, gos, gxs, true, grad_w);
        if (ran & KD_DNNL_INPUT_GRAD) {
            if (grad_x_zeros) kd_zero_bytes(grad_x, (size_t)N * g->channels * g->height * g->width * sizeof(float));
            move(&in, grad_x, gxs, SCATTER_ADD);
        }
    }
    if (xs) kd_tensor_release(xs);
    kd_cache_free(gos, out_bytes);
    kd_cache_free(gxs, in_bytes);
    return ran;
}

void kd_conv_subimages_to_full(const kd_conv_geometry *g, int N, const float *sub_x, float *x) {
    kd_conv_geometry sub;
    int d = subimage_geometry(g, &sub);
    subimages s = sizes_of(N, g->channels, g->height, g->width, 0, &sub, d);
    move(&s, x, (float *)sub_x, SCATTER);
}
