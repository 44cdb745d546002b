/* op_conv.c - 2-D convolution on oneDNN's kernels where it runs them
 * (conv_dnnl.c), else as im2col + GEMM, per image and per group:
 *   out[n, group] (Cout/g x OH*OW) = W[group] (Cout/g x K) @ col[group] (K x OH*OW)
 * with K = Cin/g * kh * kw. A 1x1 stride-1 unpadded convolution reads the
 * input as its own column matrix, with no im2col. The naive seven-loop
 * convolution beside it is the reference the tests hold it to. */
#include <omp.h>
#include <string.h>

#include "blas.h"
#include "conv_dnnl.h"
#include "im2col.h"
#include "internal.h"

static kd_status check_conv(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                            const kd_conv_params *p, kd_conv_geometry *g) {
    kd_status s;
    if ((s = kd_check_f32("conv2d", "input", x)) || (s = kd_check_f32("conv2d", "weight", w)) ||
        (b && (s = kd_check_f32("conv2d", "bias", b))) ||
        (s = kd_check_ndim("conv2d", "input", x, 4)) || (s = kd_check_ndim("conv2d", "weight", w, 4)))
        return s;
    if (p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 || p->dilation_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0 || p->groups < 1)
        return kd_fail(KD_ERR_ARG, "conv2d: stride %dx%d, dilation %dx%d, padding %dx%d, groups %d: "
                       "strides, dilations and groups must be >= 1, padding >= 0",
                       p->stride_h, p->stride_w, p->dilation_h, p->dilation_w, p->pad_h, p->pad_w,
                       p->groups);
    int cin = x->shape[1], cout = w->shape[0];
    if (cin % p->groups || cout % p->groups)
        return kd_fail(KD_ERR_SHAPE, "conv2d: groups %d do not divide input channels %d and output "
                       "channels %d", p->groups, cin, cout);
    if (w->shape[1] * p->groups != cin)
        return kd_fail(KD_ERR_SHAPE, "conv2d: weight %s does not match input %s with groups %d",
                       kd_shape_str(w), kd_shape_str(x), p->groups);
    if (b && (b->ndim != 1 || b->shape[0] != cout))
        return kd_fail(KD_ERR_SHAPE, "conv2d: bias %s does not match weight %s", kd_shape_str(b),
                       kd_shape_str(w));
    *g = (kd_conv_geometry){
        .channels = cin, .height = x->shape[2], .width = x->shape[3],
        .kernel_h = w->shape[2], .kernel_w = w->shape[3],
        .stride_h = p->stride_h, .stride_w = p->stride_w, .pad_h = p->pad_h, .pad_w = p->pad_w,
        .dilation_h = p->dilation_h, .dilation_w = p->dilation_w,
    };
    int span_h = p->dilation_h * (g->kernel_h - 1) + 1, span_w = p->dilation_w * (g->kernel_w - 1) + 1;
    g->out_h = (g->height + 2 * p->pad_h - span_h) / p->stride_h + 1;
    g->out_w = (g->width + 2 * p->pad_w - span_w) / p->stride_w + 1;
    if (g->height + 2 * p->pad_h < span_h || g->width + 2 * p->pad_w < span_w)
        return kd_fail(KD_ERR_SHAPE, "conv2d: kernel %dx%d (dilation %dx%d) is larger than input %s "
                       "padded by %dx%d", g->kernel_h, g->kernel_w, p->dilation_h, p->dilation_w,
                       kd_shape_str(x), p->pad_h, p->pad_w);
    return KD_OK;
}

/* How the work is cut. The column matrix is kd_im2col's output and the
 * GEMM's input; kept small (COLUMN_BUDGET floats) it is written and read back
 * in the cache instead of through memory, which matters most for layers with
 * few channels, where the GEMM does little work per column value. So a
 * convolution runs in blocks, each one GEMM per group:
 *   - several images side by side (G > 1) when a feature map is small: narrow
 *     products (N = OH * OW) run far below the GEMM peak, and G images make
 *     them G times wider, at the price of copying outputs out of (and output
 *     gradients into) a G-wide buffer;
 *   - otherwise one image, in bands of output rows that fit the budget, the
 *     GEMM reading and writing the band's columns of the image in place.
 * A unit (G images, or one image and all its bands) is what a thread takes:
 * with at least as many units as threads, each thread runs its units with
 * its own buffers and single-threaded GEMMs (no fork and join per GEMM, each
 * column matrix in its own core's cache); otherwise the units run one after
 * the other, each GEMM on every thread. */
#define WIDE_ENOUGH 4096
#define COLUMN_BUDGET ((size_t)1 << 19) /* floats: 2 MiB */

/* Everything one convolution call works with. */
typedef struct {
    kd_conv_geometry g;
    int N, cout, groups, cout_g, K, P, G, band; /* band: output rows per block of one image */
    size_t in_image;
    bool pointwise;
    size_t col_floats, wide_floats; /* per thread: K*groups x (G*P or band*OW); cout x G*P (G > 1) */
} conv_plan;

/* One block: images [first, first+count) whole (count > 1), or output rows
 * [oh0, oh1) of image first; width: its output positions. col and wide: the
 * running thread's buffers. */
typedef struct {
    int first, count, oh0, oh1, thread;
    size_t width;
    float *col, *wide;
} conv_block;

typedef void (*block_fn)(const conv_plan *c, const conv_block *b, void *ctx);

static bool is_pointwise(const kd_conv_geometry *g) {
    return g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 &&
           g->pad_h == 0 && g->pad_w == 0;
}

/* The largest group size up to G that cuts N images into equal units, as
 * many as a multiple of the threads: 8 images in units of 3 on 2 threads
 * leave one thread 6 images and the other 2. G itself when none does, or when
 * there are fewer units than threads (each GEMM then runs on every thread). */
static size_t balanced_group(size_t G, size_t N, size_t threads) {
    if (threads < 2 || (N + G - 1) / G < threads) return G;
    for (size_t g = G; g > 1; g--)
        if (N % g == 0 && (N / g) % threads == 0) return g;
    return N % threads == 0 ? 1 : G;
}

static void cut(conv_plan *c) {
    size_t rows = (size_t)c->K * c->groups, P = (size_t)c->P, per_image = rows * P;
    c->G = 1;
    c->band = c->g.out_h;
    if (per_image > COLUMN_BUDGET) {
        if (c->pointwise) return; /* a 1x1 reads the image as its columns */
        size_t most = COLUMN_BUDGET / (rows * (size_t)c->g.out_w), out_h = (size_t)c->g.out_h;
        if (most < 1) most = 1;
        /* bands of equal height: 32 rows as 28 + 4 would run the last 4 as a
         * narrow GEMM far below the peak */
        size_t bands = (out_h + most - 1) / most;
        c->band = (int)((out_h + bands - 1) / bands);
        return;
    }
    if (P >= WIDE_ENOUGH) return;
    size_t fit = COLUMN_BUDGET / per_image, want = (WIDE_ENOUGH + P - 1) / P;
    size_t G = fit < want ? fit : want;
    if (G > (size_t)c->N) G = (size_t)c->N;
    if (G < 1) G = 1;
    int threads = kd_get_threads();
    c->G = (int)balanced_group(G, (size_t)c->N, threads > KD_MAX_THREADS ? KD_MAX_THREADS : (size_t)threads);
}

static void plan_conv(conv_plan *c, const kd_conv_geometry *g, int N, int cout, int groups) {
    c->g = *g;
    c->N = N, c->cout = cout, c->groups = groups, c->cout_g = cout / groups;
    c->K = g->channels / groups * g->kernel_h * g->kernel_w;
    c->P = g->out_h * g->out_w;
    c->in_image = (size_t)g->channels * g->height * g->width;
    c->pointwise = is_pointwise(g);
    cut(c);
    size_t width = c->G > 1 ? (size_t)c->G * c->P : (size_t)c->band * g->out_w;
    c->col_floats = !c->pointwise || c->G > 1 ? (size_t)c->K * groups * width : 0;
    c->wide_floats = c->G > 1 ? (size_t)cout * width : 0;
}

static int unit_count(const conv_plan *c) { return (c->N + c->G - 1) / c->G; }

/* Whether the units go to threads (see above); the number of buffer sets. */
static int thread_sets(const conv_plan *c) {
    int threads = kd_get_threads(), units = unit_count(c);
    if (threads > KD_MAX_THREADS) threads = KD_MAX_THREADS;
    return threads > 1 && units >= threads ? threads : 1;
}

static void run_unit(const conv_plan *c, int unit, int thread, float *col, float *wide, block_fn fn, void *ctx) {
    conv_block b = {.first = unit * c->G, .thread = thread, .col = col, .wide = wide};
    b.count = c->N - b.first < c->G ? c->N - b.first : c->G;
    if (b.count > 1) {
        b.oh0 = 0, b.oh1 = c->g.out_h, b.width = (size_t)b.count * c->P;
        fn(c, &b, ctx);
        return;
    }
    for (b.oh0 = 0; b.oh0 < c->g.out_h; b.oh0 = b.oh1) {
        b.oh1 = b.oh0 + c->band < c->g.out_h ? b.oh0 + c->band : c->g.out_h;
        b.width = (size_t)(b.oh1 - b.oh0) * c->g.out_w;
        fn(c, &b, ctx);
    }
}

/* Runs fn on every block; false when the buffers cannot be allocated. */
static bool run_blocks(const conv_plan *c, block_fn fn, void *ctx) {
    int sets = thread_sets(c), units = unit_count(c);
    float *col[KD_MAX_THREADS] = {0}, *wide[KD_MAX_THREADS] = {0};
    size_t col_bytes[KD_MAX_THREADS] = {0}, wide_bytes[KD_MAX_THREADS] = {0};
    bool ok = true;
    for (int t = 0; t < sets && ok; t++) {
        if (c->col_floats) ok = (col[t] = kd_cache_alloc(c->col_floats * sizeof(float), &col_bytes[t])) != NULL;
        if (ok && c->wide_floats) ok = (wide[t] = kd_cache_alloc(c->wide_floats * sizeof(float), &wide_bytes[t])) != NULL;
    }
    if (ok && sets > 1) {
#pragma omp parallel for schedule(static) num_threads(sets)
        for (int u = 0; u < units; u++) {
            int t = omp_get_thread_num();
            run_unit(c, u, t, col[t], wide[t], fn, ctx);
        }
    } else if (ok) {
        for (int u = 0; u < units; u++) run_unit(c, u, 0, col[0], wide[0], fn, ctx);
    }
    for (int t = 0; t < sets; t++) {
        kd_cache_free(col[t], col_bytes[t]);
        kd_cache_free(wide[t], wide_bytes[t]);
    }
    return ok;
}

/* The block's column matrix (ld = width); for an unpadded 1x1 stride-1
 * convolution of one image, the image itself (ld = P). */
static const float *columns(const conv_plan *c, const float *x, const conv_block *b, size_t *ld) {
    if (c->pointwise && b->count == 1) {
        *ld = (size_t)c->P;
        return x + (size_t)b->first * c->in_image;
    }
    *ld = b->width;
    if (b->count == 1) kd_im2col(x + (size_t)b->first * c->in_image, &c->g, b->oh0, b->oh1, b->col, b->width);
    else
        for (int j = 0; j < b->count; j++)
            kd_im2col(x + (size_t)(b->first + j) * c->in_image, &c->g, 0, c->g.out_h, b->col + (size_t)j * c->P, b->width);
    return b->col;
}

/* Where a block's outputs (channels x width) are read or written in an
 * N x channels x P tensor: in place for one image (ld = P), else the wide
 * buffer (ld = width). */
static float *block_outputs(const conv_plan *c, float *t, int channels, const conv_block *b, size_t *ld) {
    if (b->count > 1) {
        *ld = b->width;
        return b->wide;
    }
    *ld = (size_t)c->P;
    return t + (size_t)b->first * channels * c->P + (size_t)b->oh0 * c->g.out_w;
}

/* Between N x C x P tensors and a C x (count * P) wide matrix. */
static void to_wide(const float *t, int channels, int P, int first, int count, float *wide) {
    size_t ld = (size_t)count * P;
#pragma omp parallel for schedule(static) if ((size_t)channels * ld > KD_PARALLEL_MIN)
    for (int ch = 0; ch < channels; ch++)
        for (int j = 0; j < count; j++)
            memcpy(wide + ch * ld + (size_t)j * P, t + ((size_t)(first + j) * channels + ch) * P, sizeof(float) * P);
}

static void from_wide(const float *wide, int channels, int P, int first, int count, float *t, bool add) {
    size_t ld = (size_t)count * P;
#pragma omp parallel for schedule(static) if ((size_t)channels * ld > KD_PARALLEL_MIN)
    for (int ch = 0; ch < channels; ch++)
        for (int j = 0; j < count; j++) {
            float *dst = t + ((size_t)(first + j) * channels + ch) * P;
            const float *src = wide + ch * ld + (size_t)j * P;
            if (add)
                for (int i = 0; i < P; i++) dst[i] += src[i];
            else
                memcpy(dst, src, sizeof(float) * P);
        }
}

/* The node keeps the geometry in ints[0..12] and the group count in ints[13]. */
_Static_assert(sizeof(kd_conv_geometry) == 13 * sizeof(int), "geometry fits the node");

/* db += the sum of the output gradient over each channel's planes, read as
 * it is stored: in the blocked layout (layout.c) each channel's sum runs in
 * the same order as in NCHW, so it gives the same bits. */
static void bias_grad(const kd_tensor *grad_output, float *db) {
    int N = grad_output->shape[0], cout = grad_output->shape[1], block = kd_blocked(grad_output);
    size_t P = (size_t)grad_output->shape[2] * grad_output->shape[3];
    bool parallel = (size_t)N * cout * P > KD_PARALLEL_MIN;
    if (block) {
        const float *go = kd_data_as_stored(grad_output);
#pragma omp parallel for schedule(static) if (parallel)
        for (int cb = 0; cb < cout / block; cb++) {
            double acc[16] = {0};
            for (int n = 0; n < N; n++) {
                const float *at = go + ((size_t)n * (cout / block) + cb) * P * block;
                for (size_t i = 0; i < P * block; i += block)
                    for (int lane = 0; lane < block; lane++) acc[lane] += at[i + lane];
            }
            for (int lane = 0; lane < block; lane++) db[cb * block + lane] += (float)acc[lane];
        }
        return;
    }
    const float *go = kd_f32(grad_output);
#pragma omp parallel for schedule(static) if (parallel)
    for (int ch = 0; ch < cout; ch++) {
        double acc = 0;
        for (int n = 0; n < N; n++) {
            const float *plane = go + ((size_t)n * cout + ch) * P;
            for (size_t i = 0; i < P; i++) acc += plane[i];
        }
        db[ch] += (float)acc;
    }
}

typedef struct {
    const float *x, *w, *go;
    float *y, *dx, *dw[KD_MAX_THREADS]; /* dw: one partial sum per thread */
} conv_args;

/* y = W[group] @ col[group] */
static void forward_block(const conv_plan *c, const conv_block *b, void *ctx) {
    conv_args *a = ctx;
    size_t ld_col, ld_out;
    const float *cols = columns(c, a->x, b, &ld_col);
    float *dst = block_outputs(c, a->y, c->cout, b, &ld_out);
    for (int gr = 0; gr < c->groups; gr++)
        kd_sgemm(false, false, c->cout_g, (int)b->width, c->K, 1.0f, a->w + (size_t)gr * c->cout_g * c->K, c->K,
                 cols + (size_t)gr * c->K * ld_col, (int)ld_col, 0.0f, dst + (size_t)gr * c->cout_g * ld_out, (int)ld_out);
    if (b->count > 1) from_wide(b->wide, c->cout, c->P, b->first, b->count, a->y, false);
}

/* dW[group] += dOut[group] (cout_g x width) @ col[group]^T, into the
 * running thread's partial sum */
static void weight_grad_block(const conv_plan *c, const conv_block *b, void *ctx) {
    conv_args *a = ctx;
    size_t ld_col, ld_out;
    const float *cols = columns(c, a->x, b, &ld_col);
    const float *dout = block_outputs(c, (float *)a->go, c->cout, b, &ld_out);
    if (b->count > 1) to_wide(a->go, c->cout, c->P, b->first, b->count, b->wide);
    float *dw = a->dw[b->thread];
    for (int gr = 0; gr < c->groups; gr++)
        kd_sgemm(false, true, c->cout_g, c->K, (int)b->width, 1.0f, dout + (size_t)gr * c->cout_g * ld_out, (int)ld_out,
                 cols + (size_t)gr * c->K * ld_col, (int)ld_col, 1.0f, dw + (size_t)gr * c->cout_g * c->K, c->K);
}

static kd_status weight_grad(const kd_conv_geometry *g, const float *x, const float *go, int N, int cout,
                             int groups, float *dw) {
    conv_plan c;
    plan_conv(&c, g, N, cout, groups);
    conv_args a = {.x = x, .go = go};
    int sets = thread_sets(&c);
    size_t n = (size_t)cout * c.K, bytes[KD_MAX_THREADS] = {0};
    a.dw[0] = dw; /* thread 0 adds into the gradient itself, the others into zeroed partials */
    bool ok = true;
    for (int t = 1; t < sets && ok; t++) {
        ok = (a.dw[t] = kd_cache_alloc(n * sizeof(float), &bytes[t])) != NULL;
        if (ok) memset(a.dw[t], 0, n * sizeof(float));
    }
    ok = ok && run_blocks(&c, weight_grad_block, &a);
    for (int t = 1; t < sets; t++) {
        if (ok)
            for (size_t i = 0; i < n; i++) dw[i] += a.dw[t][i];
        kd_cache_free(a.dw[t], bytes[t]);
    }
    return ok ? KD_OK : KD_ERR_MEMORY;
}

/* The input gradient of a stride-1 convolution is itself a convolution: of
 * the output gradient, by the weight with its taps flipped and its in/out
 * channels swapped, with padding (k-1)*d - p. Unfolding the output gradient
 * (a gather) and one GEMM with a Cout*kh*kw-deep reduction replaces a GEMM
 * with a Cout-deep one into a Cin*kh*kw-tall column matrix and col2im's
 * scatter-add: less memory traffic, and a product OpenBLAS runs near peak. */
static bool gradient_is_convolution(const kd_conv_geometry *g, int groups) {
    return groups == 1 && g->stride_h == 1 && g->stride_w == 1 && g->kernel_h * g->kernel_w > 1 &&
           g->pad_h <= (g->kernel_h - 1) * g->dilation_h && g->pad_w <= (g->kernel_w - 1) * g->dilation_w;
}

/* dx += flipped weight (cin x cout*taps) @ columns of the output gradient;
 * here the plan's "input" is the output gradient and its "output" dx */
static void input_grad_gather_block(const conv_plan *c, const conv_block *b, void *ctx) {
    conv_args *a = ctx;
    size_t ld_col, ld_out;
    const float *cols = columns(c, a->go, b, &ld_col);
    float *out = block_outputs(c, a->dx, c->cout, b, &ld_out);
    bool in_place = b->count == 1; /* adds straight into dx */
    kd_sgemm(false, false, c->cout, (int)b->width, c->K, 1.0f, a->w, c->K, cols, (int)ld_col, in_place ? 1.0f : 0.0f,
             out, (int)ld_out);
    if (!in_place) from_wide(b->wide, c->cout, c->P, b->first, b->count, a->dx, true);
}

static kd_status input_grad_by_convolution(const kd_conv_geometry *g, const float *w, const float *go, int N,
                                           int cout, float *dx) {
    int taps = g->kernel_h * g->kernel_w, cin = g->channels;
    kd_conv_geometry back = {
        .channels = cout, .height = g->out_h, .width = g->out_w, .kernel_h = g->kernel_h, .kernel_w = g->kernel_w,
        .stride_h = 1, .stride_w = 1, .dilation_h = g->dilation_h, .dilation_w = g->dilation_w,
        .pad_h = (g->kernel_h - 1) * g->dilation_h - g->pad_h, .pad_w = (g->kernel_w - 1) * g->dilation_w - g->pad_w,
        .out_h = g->height, .out_w = g->width,
    };
    conv_plan c;
    plan_conv(&c, &back, N, cin, 1);
    size_t flipped_bytes;
    float *flipped = kd_cache_alloc((size_t)cin * cout * taps * sizeof(float), &flipped_bytes);
    if (!flipped) return KD_ERR_MEMORY;
    for (int co = 0; co < cout; co++) /* flipped[ci][co][t] = w[co][ci][taps-1-t] */
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < taps; t++)
                flipped[((size_t)ci * cout + co) * taps + t] = w[((size_t)co * cin + ci) * taps + taps - 1 - t];
    conv_args a = {.w = flipped, .go = go, .dx = dx};
    bool ok = run_blocks(&c, input_grad_gather_block, &a);
    kd_cache_free(flipped, flipped_bytes);
    return ok ? KD_OK : KD_ERR_MEMORY;
}

/* dcol[group] = W[group]^T @ dOut[group], folded back into dx (col2im).
 * Bands of one image fold into overlapping input rows, which is why a
 * thread takes whole images. */
static void input_grad_fold_block(const conv_plan *c, const conv_block *b, void *ctx) {
    conv_args *a = ctx;
    size_t ld_out;
    const float *dout = block_outputs(c, (float *)a->go, c->cout, b, &ld_out);
    if (b->count > 1) to_wide(a->go, c->cout, c->P, b->first, b->count, b->wide);
    bool direct = c->pointwise && b->count == 1; /* dcol is dx itself */
    float *dcol = direct ? a->dx + (size_t)b->first * c->in_image : b->col;
    size_t ld_col = direct ? (size_t)c->P : b->width;
    for (int gr = 0; gr < c->groups; gr++)
        kd_sgemm(true, false, c->K, (int)b->width, c->cout_g, 1.0f, a->w + (size_t)gr * c->cout_g * c->K, c->K,
                 dout + (size_t)gr * c->cout_g * ld_out, (int)ld_out, direct ? 1.0f : 0.0f,
                 dcol + (size_t)gr * c->K * ld_col, (int)ld_col);
    if (direct) return;
    if (b->count == 1) kd_col2im_add(b->col, &c->g, b->oh0, b->oh1, a->dx + (size_t)b->first * c->in_image, b->width);
    else
        for (int j = 0; j < b->count; j++)
            kd_col2im_add(b->col + (size_t)j * c->P, &c->g, 0, c->g.out_h, a->dx + (size_t)(b->first + j) * c->in_image,
                          b->width);
}

/* The portable weight gradient from a source oneDNN kept (the backward
 * could not run there after the forward did): the source back in NCHW. */
static kd_status weight_grad_from_kept(const kd_conv_geometry *g, const kd_tensor *kept, const float *go, int N,
                                       int cout, int groups, float *gw) {
    size_t bytes, n = (size_t)N * g->channels * g->height * g->width;
    float *x = kd_cache_alloc(n * sizeof(float), &bytes);
    kd_status s = !x ? KD_ERR_MEMORY
                     : kd_conv_dnnl_kept_source(kept, g, N, x) ? weight_grad(g, x, go, N, cout, groups, gw)
                                                          : KD_ERR_STATE;
    kd_cache_free(x, bytes);
    return s;
}

/* Saved: x (N x Cin x H x W), or (ints[14]) the copy of it oneDNN's forward
 * kept in its own layout; w (Cout x Cin/g x kh x kw). grad_output N x Cout x
 * OH x OW; grads: x, w, bias (Cout). */
static kd_status conv2d_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    kd_conv_geometry g;
    memcpy(&g, node->ints, sizeof g);
    const kd_tensor *kept = node->ints[14] ? node->saved[0] : NULL, *w = node->saved[1];
    const kd_tensor *x_tensor = kept ? NULL : node->saved[0];
    int N = grad_output->shape[0], cout = grad_output->shape[1], groups = node->ints[13];
    kd_tensor *gx = grad_inputs[0], *gw = grad_inputs[1], *gb = grad_inputs[2];
    if (gb) bias_grad(grad_output, kd_f32(gb));
    kd_status s = KD_OK;
    /* the input gradient's accumulator taken as pending zeros where oneDNN
     * writes it whole, zeroed where it does not run; oneDNN reads the output
     * gradient as it is stored, and may leave the input's blocked */
    bool gx_zeros = gx && kd_take_zeros(gx);
    unsigned ran = kd_conv_dnnl_backward(&g, N, cout, groups, x_tensor, kept, kd_f32(w), grad_output, gx, gx_zeros,
                                         gw ? kd_f32(gw) : NULL);
    if (gx_zeros && !(ran & KD_DNNL_INPUT_GRAD)) kd_zero_bytes(kd_f32(gx), kd_numel(gx) * sizeof(float));
    const float *go = (gw && !(ran & KD_DNNL_WEIGHT_GRAD)) || (gx && !(ran & KD_DNNL_INPUT_GRAD)) ? kd_f32(grad_output)
                                                                                                : NULL;
    const float *x = x_tensor && gw && !(ran & KD_DNNL_WEIGHT_GRAD) ? kd_f32(x_tensor) : NULL;
    if (gw && !(ran & KD_DNNL_WEIGHT_GRAD))
        s = kept ? weight_grad_from_kept(&g, kept, go, N, cout, groups, kd_f32(gw))
                 : weight_grad(&g, x, go, N, cout, groups, kd_f32(gw));
    if (s == KD_ERR_STATE)
        return kd_fail(s, "conv2d backward: the input oneDNN kept cannot be read back for the portable weight gradient");
    if (!s && gx && !(ran & KD_DNNL_INPUT_GRAD)) {
        if (gradient_is_convolution(&g, groups)) {
            s = input_grad_by_convolution(&g, kd_f32(w), go, N, cout, kd_f32(gx));
        } else {
            conv_plan c;
            plan_conv(&c, &g, N, cout, groups);
            conv_args a = {.w = kd_f32(w), .go = go, .dx = kd_f32(gx)};
            if (!run_blocks(&c, input_grad_fold_block, &a)) s = KD_ERR_MEMORY;
        }
    }
    if (s) return kd_fail(KD_ERR_MEMORY, "conv2d backward: cannot allocate the column buffers for output gradient %s",
                          kd_shape_str(grad_output));
    return KD_OK;
}

/* y += bias over every channel's plane, in y's layout (NCHW or blocked). */
static void add_bias(kd_tensor *y, const float *bias) {
    int N = y->shape[0], C = y->shape[1], block = kd_blocked(y);
    size_t P = (size_t)y->shape[2] * y->shape[3];
    float *d = kd_data_as_stored(y);
    if (block) {
#pragma omp parallel for schedule(static) if ((size_t)N * C * P > KD_PARALLEL_MIN)
        for (int nb = 0; nb < N * (C / block); nb++) {
            const float *v = bias + (size_t)(nb % (C / block)) * block;
            float *at = d + (size_t)nb * P * block;
            for (size_t i = 0; i < P; i++)
                for (int lane = 0; lane < block; lane++) at[i * block + lane] += v[lane];
        }
        return;
    }
#pragma omp parallel for schedule(static) if ((size_t)N * C * P > KD_PARALLEL_MIN)
    for (int plane = 0; plane < N * C; plane++) {
        float v = bias[plane % C];
        float *at = d + (size_t)plane * P;
        for (size_t i = 0; i < P; i++) at[i] += v;
    }
}

void kd_conv_residual_relu(kd_tensor *y, const kd_conv_epilogue *e) {
    size_t n = kd_numel(y);
    int block = kd_blocked(y);
    if (e->residual && kd_blocked(e->residual) != block) block = 0;
    float *d = block ? kd_data_as_stored(y) : kd_f32(y);
    const float *r = !e->residual ? NULL : block ? kd_data_as_stored(e->residual) : kd_f32(e->residual);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float v = r ? d[i] + r[i] : d[i];
        d[i] = !e->relu || v > 0 ? v : 0.0f;
    }
}

/* A convolution, with an epilogue (inference: no gradient) or without. */
static kd_status conv2d(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_conv_params *p, const kd_conv_epilogue *e,
                        kd_tensor **out) {
    kd_conv_geometry g;
    kd_status s = check_conv(x, w, b, p, &g);
    if (s) return s;
    int N = x->shape[0], cout = w->shape[0], groups = p->groups;
    int shape[4] = {N, cout, g.out_h, g.out_w};
    if (e && e->residual && (e->residual->ndim != 4 || memcmp(e->residual->shape, shape, sizeof shape)))
        return kd_fail(KD_ERR_SHAPE, "conv2d: residual %s does not match the output %dx%dx%dx%d",
                       kd_shape_str(e->residual), shape[0], shape[1], shape[2], shape[3]);
    if (e && e->residual && (s = kd_check_f32("conv2d", "residual", e->residual))) return s;
    /* depthwise: oneDNN's kernels where they run (1.6x kdseg's own on
     * mobilenetv2's step), else kdseg's direct loops, not im2col */
    if (kd_is_depthwise(&g, groups, cout) && !kd_conv_dnnl_active()) {
        if ((s = kd_conv2d_depthwise(x, w, b, &g, out)) || !e) return s;
        kd_conv_residual_relu(*out, e);
        return KD_OK;
    }
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    /* the output may stay in the kernels' layout (layout.c), for the next
     * op; in training its gradient comes back in it too */
    bool recorded = !e && kd_grad_enabled() && (kd_needs_grad(x) || kd_needs_grad(w) || (b && kd_needs_grad(b)));
    bool blocked_out = kd_blocked_layout_on();
    if (e && kd_conv_dnnl_inference(&g, N, cout, groups, x, kd_f32(w), e, *out, blocked_out)) return KD_OK;
    /* where the weight gradient will be wanted, oneDNN keeps its blocked copy of x for it */
    kd_tensor *kept = NULL;
    bool keep = recorded && kd_needs_grad(w);
    if (!kd_conv_dnnl_forward(&g, N, cout, groups, x, kd_f32(w), *out, blocked_out, keep ? &kept : NULL)) {
        conv_plan c;
        plan_conv(&c, &g, N, cout, groups);
        conv_args a = {.x = kd_f32(x), .w = kd_f32(w), .y = kd_f32(*out)};
        if (!run_blocks(&c, forward_block, &a)) {
            kd_tensor_release(*out);
            *out = NULL;
            return kd_fail(KD_ERR_MEMORY, "conv2d: cannot allocate the column buffer for input %s "
                           "and weight %s", kd_shape_str(x), kd_shape_str(w));
        }
    }
    if (b) add_bias(*out, kd_f32(b));
    if (e) {
        kd_conv_residual_relu(*out, e);
        return KD_OK;
    }
    kd_tensor *inputs[3] = {x, w, b}, *saved[2] = {kept ? kept : x, w};
    kd_node *node;
    s = kd_finish_op("conv2d", conv2d_backward, out, 3, inputs, 2, saved, &node);
    if (node) {
        memcpy(node->ints, &g, sizeof g);
        node->ints[13] = groups;
        node->ints[14] = kept != NULL;
    }
    if (kept) kd_tensor_release(kept); /* the node holds it now, if one was made */
    return s;
}

kd_status kd_conv2d(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_conv_params *p, kd_tensor **out) {
    return conv2d(x, w, b, p, NULL, out);
}

kd_status kd_conv2d_with_epilogue(kd_tensor *x, kd_tensor *w, const kd_conv_params *p, const kd_conv_epilogue *e,
                                  kd_tensor **out) {
    return conv2d(x, w, (kd_tensor *)e->bias, p, e, out);
}

kd_status kd_conv2d_reference(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                              const kd_conv_params *p, kd_tensor **out) {
    kd_conv_geometry g = {0};
    kd_status s = check_conv(x, w, b, p, &g);
    if (s) return s;
    int N = x->shape[0], cout = w->shape[0], cin_g = w->shape[1], cout_g = cout / p->groups;
    int shape[4] = {N, cout, g.out_h, g.out_w};
    if ((s = kd_tensor_new(KD_F32, 4, shape, out))) return s;
    const float *in = kd_f32(x), *wt = kd_f32(w);
    float *y = kd_f32(*out);
    for (int n = 0; n < N; n++)
        for (int co = 0; co < cout; co++)
            for (int oh = 0; oh < g.out_h; oh++)
                for (int ow = 0; ow < g.out_w; ow++) {
                    double acc = b ? kd_f32(b)[co] : 0.0;
                    int group = co / cout_g;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ki = 0; ki < g.kernel_h; ki++)
                            for (int kj = 0; kj < g.kernel_w; kj++) {
                                int ih = oh * g.stride_h - g.pad_h + ki * g.dilation_h;
                                int iw = ow * g.stride_w - g.pad_w + kj * g.dilation_w;
                                if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
                                int c = group * cin_g + ci;
                                acc += (double)in[(((size_t)n * g.channels + c) * g.height + ih) * g.width + iw] *
                                       wt[(((size_t)co * cin_g + ci) * g.kernel_h + ki) * g.kernel_w + kj];
                            }
                    y[(((size_t)n * cout + co) * g.out_h + oh) * g.out_w + ow] = (float)acc;
                }
    return KD_OK;
}
