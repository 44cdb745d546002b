/* conv_winograd.c - Winograd F(4x4, 3x3) of kdseg's own, for 3x3 stride-1
 * undilated convolutions (and dilated ones through conv_subimages.c) on
 * CPUs where oneDNN has no Winograd kernels: its are AVX-512 only, and on
 * AVX2 both kdseg and PyTorch ran direct convolution, which put the
 * teacher's step at 0.92 of PyTorch's time where the issue asks for 0.67
 * (README, "Performance"). Lavin and Gray's algorithm: each 4x4 output
 * tile is A^T [(G g G^T) . (B^T d B)] A, where d is the 6x6 input patch
 * under it and g the 3x3 kernel, so that a tile takes 36 multiplications
 * per input and output channel instead of 144.
 *
 * The work is cut into chunks of tiles, each thread taking its own run of
 * them with its own buffers, and a chunk passes through three steps while
 * it is in the cache:
 *   1. the input transform: V[p][tile][cin] = (B^T d B)[p] for each of the
 *      36 points p, channels innermost (8 at a time, one AVX2 vector),
 *      read from the input as it is stored (NCHW or blocked);
 *   2. 36 products M[p] (tiles x cout) = V[p] (tiles x cin) U[p] (cin x
 *      cout), U = G g G^T made once per call, on a 6 x 16 micro-kernel
 *      (12 accumulators, the usual AVX2 register budget);
 *   3. the output transform, A^T M A, written into the output as stored
 *      (blocked where the layout is on) or added into it.
 * The input gradient is the same computation on the output gradient, with
 * the kernel's taps flipped, its channels swapped and padding 2 - p. The
 * weight gradient transforms the output gradient's tiles as A dy A^T,
 * multiplies them point by point with the input's V, summed over the tiles
 * (the same micro-kernel, reading V transposed), and brings the 6x6 sums
 * back to 3x3 by G^T . G; each thread sums its tiles into its own partial,
 * and the partials are added in thread order.
 *
 * Every thread's share and every sum's order depend only on the shapes and
 * the thread count: the same bits from run to run. The transforms round in
 * float32, so results differ from direct convolution's by about 1e-5
 * relative, as oneDNN's Winograd does (tests/c/test_winograd.c holds it to
 * the portable path). */
#if !defined(__AVX2__) || !defined(__FMA__)
#error "conv_winograd.c is AVX2 + FMA code: build with -march=x86-64-v3 (the Makefile's ARCH)"
#endif
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "conv_dnnl.h"
#include "conv_winograd.h"

#define POINTS 36 /* a 6x6 transformed tile */
#define MR 6      /* the micro-kernel's rows */
#define NR 16     /* and columns: two vectors */
/* A chunk's buffers (its V and M) in floats: kept within a core's L2. */
#define CHUNK_FLOATS (1 << 17)
#define MOST_CHUNK 96 /* tiles */

typedef float v8 __attribute__((vector_size(32)));

static int forced = -1;    /* kd_conv_own_winograd_force */
static int from_env = -2;  /* KDSEG_OWN_WINOGRAD: 1 always, 0 never, -1 where oneDNN has none; -2 unread */

int kd_conv_own_winograd_force(int mode) {
    int was = forced;
    forced = mode;
    return was;
}

/* Whether kdseg's kernels are the Winograd ones, asked for or not. */
static bool own_kernels(void) {
    if (from_env == -2) {
        static const int modes[] = {-1, 1, 0}; /* auto, always, never */
        from_env = modes[kd_environment_choice("KDSEG_OWN_WINOGRAD")];
    }
    int mode = forced >= 0 ? forced : from_env;
    return mode == 1 || (mode == -1 && !kd_conv_winograd_available());
}

bool kd_conv_own_winograd_on(void) { return kd_conv_winograd() && !kd_conv_bf16() && own_kernels(); }

const char *kd_conv_winograd_kernels(void) {
    if (!kd_conv_dnnl_active()) return NULL;
    return own_kernels() ? "kdseg" : kd_conv_winograd_available() ? "onednn" : NULL;
}

bool kd_conv_own_winograd_takes(const kd_conv_geometry *g, int groups) {
    return groups == 1 && g->kernel_h == 3 && g->kernel_w == 3 && g->stride_h == 1 && g->stride_w == 1 &&
           g->dilation_h == 1 && g->dilation_w == 1 && g->pad_h <= 2 && g->pad_w <= 2 && kd_conv_own_winograd_on();
}

kd_stored kd_stored_of(const kd_tensor *t) {
    int block = kd_blocked(t); /* where kd_read_in reads it; the pointer writable for an output */
    return (kd_stored){(float *)kd_read_in(t, block), t->shape[0], t->shape[1], t->shape[2], t->shape[3], block};
}

/* ---- 8 channels of one image of an activation as stored ----------------
 * Found once per tile and channel block (the divisions by the block are
 * not cheap at every pixel), then read or written pixel by pixel. */
typedef struct {
    float *at;            /* channel c0 of pixel (0, 0) */
    size_t row, col, lane; /* strides in floats */
    int H, W, lanes;      /* lanes: channels present (8 but at the end of NCHW) */
    bool vector;          /* the 8 channels contiguous (blocked) */
} channels8;

static inline channels8 channels_at(const kd_stored *a, int n, int c0) {
    channels8 v = {.H = a->H, .W = a->W};
    size_t plane = (size_t)a->H * a->W;
    if (a->block) {
        v.at = a->data + ((size_t)n * (a->C / a->block) + c0 / a->block) * plane * a->block + c0 % a->block;
        v.row = (size_t)a->W * a->block, v.col = (size_t)a->block, v.lanes = 8, v.vector = true;
    } else {
        v.at = a->data + ((size_t)n * a->C + c0) * plane;
        v.row = (size_t)a->W, v.col = 1, v.lane = plane, v.lanes = a->C - c0 < 8 ? a->C - c0 : 8;
    }
    return v;
}

/* Pixel (h, w); zeros outside the image and past the last channel. */
static inline v8 load_pixel(const channels8 *v, int h, int w) {
    v8 x = {0};
    if (h < 0 || h >= v->H || w < 0 || w >= v->W) return x;
    const float *at = v->at + h * v->row + w * v->col;
    if (v->vector) return (v8)_mm256_loadu_ps(at);
    for (int l = 0; l < v->lanes; l++) x[l] = at[l * v->lane];
    return x;
}

/* Written (or added, `add`) at pixel (h, w), which the caller checked is inside. */
static inline void store_pixel(const channels8 *v, int h, int w, v8 x, bool add) {
    float *at = v->at + h * v->row + w * v->col;
    if (v->vector) {
        if (add) x += (v8)_mm256_loadu_ps(at);
        _mm256_storeu_ps(at, (__m256)x);
        return;
    }
    for (int l = 0; l < v->lanes; l++) at[l * v->lane] = add ? at[l * v->lane] + x[l] : x[l];
}

/* ---- the transforms, in one dimension ---------------------------------- */

/* The interpolation points are 0, -1, 1, 1/2, -2 and infinity, not
 * Lavin and Gray's 0, +-1, +-2: Barabasz et al. ("Error analysis and
 * improving the accuracy of Winograd convolution for deep neural
 * networks", 2020) show these round less. Simulated in float32 over sums
 * of 288 products (32 channels), the worst error relative to the largest
 * output fell from 1.4e-5 to 4.4e-6, and per output (against max(1, |y|))
 * from 1.9e-3 to 6.7e-4. The halves and quarters are exact in float. */

/* B^T d: the input transform of six values. */
static inline void input_1d(const v8 d[6], v8 o[6]) {
    o[0] = d[0] - 1.5f * d[1] - 2.0f * d[2] + 1.5f * d[3] + d[4];
    o[1] = d[1] - 2.5f * d[2] + 0.5f * d[3] + d[4];
    o[2] = -d[1] + 0.5f * d[2] + 2.5f * d[3] + d[4];
    o[3] = -2.0f * d[1] - d[2] + 2.0f * d[3] + d[4];
    o[4] = 0.5f * d[1] - d[2] - 0.5f * d[3] + d[4];
    o[5] = d[1] - 1.5f * d[2] - 2.0f * d[3] + 1.5f * d[4] + d[5];
}

/* A^T m: six transformed values back to four outputs. */
static inline void output_1d(const v8 m[6], v8 o[4]) {
    v8 sum = m[1] + m[2], diff = m[2] - m[1];
    o[0] = m[0] + sum + m[3] + m[4];
    o[1] = diff + 0.5f * m[3] - 2.0f * m[4];
    o[2] = sum + 0.25f * m[3] + 4.0f * m[4];
    o[3] = diff + 0.125f * m[3] - 8.0f * m[4] + m[5];
}

/* A y: four output gradients to six (the transpose of output_1d). */
static inline void output_grad_1d(const v8 y[4], v8 o[6]) {
    v8 even = y[0] + y[2], odd = y[1] + y[3];
    o[0] = y[0];
    o[1] = even - odd;
    o[2] = even + odd;
    o[3] = y[0] + 0.5f * y[1] + 0.25f * y[2] + 0.125f * y[3];
    o[4] = y[0] - 2.0f * y[1] + 4.0f * y[2] - 8.0f * y[3];
    o[5] = y[3];
}

/* G: the kernel transform, 6 x 3. */
static const float G[6][3] = {{1.0f, 0, 0},
                              {-1.0f / 3, 1.0f / 3, -1.0f / 3},
                              {1.0f / 3, 1.0f / 3, 1.0f / 3},
                              {-16.0f / 15, -8.0f / 15, -4.0f / 15},
                              {1.0f / 15, -2.0f / 15, 4.0f / 15},
                              {0, 0, 1.0f}};

/* ---- what one call works with ----------------------------------------- */

typedef struct {
    kd_stored in, out;   /* the forward's input and output (the input gradient's: grad_out and grad_x) */
    int pad_h, pad_w;    /* on in */
    int cin8, cout16;    /* channels rounded up to a vector and to the micro-kernel's columns */
    int tiles_h, tiles_w, tiles;
    int chunk, threads;
} plan;

static int round_up(int n, int to) { return (n + to - 1) / to * to; }

static void plan_make(plan *p, kd_stored in, kd_stored out, int pad_h, int pad_w) {
    p->in = in, p->out = out, p->pad_h = pad_h, p->pad_w = pad_w;
    p->cin8 = round_up(in.C, 8), p->cout16 = round_up(out.C, NR);
    p->tiles_h = (out.H + 3) / 4, p->tiles_w = (out.W + 3) / 4;
    p->tiles = out.N * p->tiles_h * p->tiles_w;
    int chunk = CHUNK_FLOATS / (POINTS * (p->cin8 + p->cout16)) / MR * MR;
    p->chunk = chunk < MR ? MR : chunk > MOST_CHUNK ? MOST_CHUNK : chunk;
    int threads = kd_get_threads(), most = (p->tiles + MR - 1) / MR; /* at least a kernel's rows each */
    if (threads > KD_MAX_THREADS) threads = KD_MAX_THREADS;
    p->threads = threads < most ? threads : most;
    if (p->threads < 1) p->threads = 1;
}

/* The floats of a chunk's transformed input (V) and products (M, or dM),
 * and of the transformed weights (U, or the weight gradient's dU). */
static size_t v_floats(const plan *p) { return (size_t)POINTS * p->chunk * p->cin8; }
static size_t m_floats(const plan *p) { return (size_t)POINTS * p->chunk * p->cout16; }
static size_t u_floats(const plan *p) { return (size_t)POINTS * p->cin8 * p->cout16; }

/* The image and the top-left output pixel of tile t. */
static inline void tile_origin(const plan *p, int t, int *n, int *h, int *w) {
    int per_image = p->tiles_h * p->tiles_w, i = t % per_image;
    *n = t / per_image, *h = i / p->tiles_w * 4, *w = i % p->tiles_w * 4;
}

/* `count` pixels down from (h, w): a column of a tile. `inside`: they lie
 * wholly in the image and their channels are contiguous, so no checks. */
static inline void load_column(const channels8 *from, int h, int w, int count, bool inside, v8 *col) {
    if (inside) {
        const float *at = from->at + h * from->row + w * from->col;
        for (int i = 0; i < count; i++) col[i] = (v8)_mm256_loadu_ps(at + i * from->row);
    } else
        for (int i = 0; i < count; i++) col[i] = load_pixel(from, h + i, w);
}

/* Row r of V (a chunk of tiles x cin8, per point) from tile t of the input.
 * A column at a time from memory (B^T d), then the rows: a 6 x 6 tile of
 * vectors held between the two is all that goes through the stack. */
static void transform_input(const plan *p, int t, int r, float *V) {
    int n, h, w;
    tile_origin(p, t, &n, &h, &w);
    h -= p->pad_h, w -= p->pad_w;
    bool inside = p->in.block && h >= 0 && w >= 0 && h + 6 <= p->in.H && w + 6 <= p->in.W;
    size_t point_stride = (size_t)p->chunk * p->cin8;
    float *to = V + (size_t)r * p->cin8;
    for (int c0 = 0; c0 < p->cin8; c0 += 8) {
        v8 rows[6][6], col[6], o[6];
        channels8 from = channels_at(&p->in, n, c0);
        for (int j = 0; j < 6; j++) { /* along the columns: B^T d */
            load_column(&from, h, w + j, 6, inside, col);
            input_1d(col, o);
            for (int i = 0; i < 6; i++) rows[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) { /* along the rows: (B^T d) B */
            input_1d(rows[i], o);
            for (int j = 0; j < 6; j++) _mm256_storeu_ps(to + (size_t)(i * 6 + j) * point_stride + c0, (__m256)o[j]);
        }
    }
}

/* Row r of M back to tile t of the output: A^T m A, plus the bias, ReLU
 * where asked, written or added (add) where inside the output. */
static void transform_output(const plan *p, int t, int r, const float *M, const float *bias, bool relu, bool add) {
    int n, h, w;
    tile_origin(p, t, &n, &h, &w);
    int rows_in = p->out.H - h < 4 ? p->out.H - h : 4, cols_in = p->out.W - w < 4 ? p->out.W - w : 4;
    bool whole = rows_in == 4 && cols_in == 4;
    size_t point_stride = (size_t)p->chunk * p->cout16;
    const float *from = M + (size_t)r * p->cout16;
    for (int c0 = 0; c0 < p->out.C; c0 += 8) {
        v8 half[4][6], col[6], o[4], y[4];
        for (int j = 0; j < 6; j++) { /* A^T m, a column at a time from M */
            for (int i = 0; i < 6; i++)
                col[i] = (v8)_mm256_loadu_ps(from + (size_t)(i * 6 + j) * point_stride + c0);
            output_1d(col, o);
            for (int i = 0; i < 4; i++) half[i][j] = o[i];
        }
        channels8 to = channels_at(&p->out, n, c0);
        v8 b = {0};
        if (bias)
            for (int l = 0; l < 8 && c0 + l < p->out.C; l++) b[l] = bias[c0 + l];
        for (int i = 0; i < 4; i++) { /* (A^T m) A */
            output_1d(half[i], y);
            for (int j = 0; j < 4; j++) {
                if (bias) y[j] += b;
                if (relu) y[j] = (v8)_mm256_max_ps((__m256)y[j], _mm256_setzero_ps());
            }
            if (whole) /* the common case, with no checks: a row of four pixels */
                for (int j = 0; j < 4; j++) store_pixel(&to, h + i, w + j, y[j], add);
            else if (i < rows_in)
                for (int j = 0; j < cols_in; j++) store_pixel(&to, h + i, w + j, y[j], add);
        }
    }
}

/* Row r of dM (the weight gradient's, chunk x cout16 per point) from tile t
 * of the output gradient `out`: A dy A^T, zeros outside the output. */
static void transform_output_grad(const plan *p, int t, int r, float *dM) {
    int n, h, w;
    tile_origin(p, t, &n, &h, &w);
    bool inside = p->out.block && h + 4 <= p->out.H && w + 4 <= p->out.W;
    size_t point_stride = (size_t)p->chunk * p->cout16;
    float *to = dM + (size_t)r * p->cout16;
    for (int c0 = 0; c0 < p->out.C; c0 += 8) {
        v8 rows[6][4], col[4], o[6];
        channels8 from = channels_at(&p->out, n, c0);
        for (int j = 0; j < 4; j++) { /* A dy, a column at a time from memory */
            load_column(&from, h, w + j, 4, inside, col);
            output_grad_1d(col, o);
            for (int i = 0; i < 6; i++) rows[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) { /* (A dy) A^T */
            output_grad_1d(rows[i], o);
            for (int j = 0; j < 6; j++) _mm256_storeu_ps(to + (size_t)(i * 6 + j) * point_stride + c0, (__m256)o[j]);
        }
    }
}

/* ---- the micro-kernel ---------------------------------------------------
 * c[r][0..15] (+)= sum over k < depth of a(r, k) b[k][0..15], a(r, k) at
 * a + r * a_row + k * a_depth: V rows (a_row cin8, a_depth 1) for the
 * forward, V transposed (a_row 1, a_depth cin8) for the weight gradient.
 * Inlined with `rows` a constant; the accumulators are named variables,
 * not an array, which GCC kept on the stack (stored at every step: half
 * the speed). */
#define ROWS_DO(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define ACC_DECLARE(r) __m256 acc##r##0 = _mm256_setzero_ps(), acc##r##1 = _mm256_setzero_ps();
#define ACC_LOAD(r)                                        \
    if (rows > r) {                                        \
        acc##r##0 = _mm256_loadu_ps(c + r * ldc);          \
        acc##r##1 = _mm256_loadu_ps(c + r * ldc + 8);      \
    }
#define ACC_STEP(r)                                        \
    if (rows > r) {                                        \
        __m256 av = _mm256_broadcast_ss(ak + r * a_row);   \
        acc##r##0 = _mm256_fmadd_ps(av, b0, acc##r##0);    \
        acc##r##1 = _mm256_fmadd_ps(av, b1, acc##r##1);    \
    }
#define ACC_STORE(r)                                       \
    if (rows > r) {                                        \
        _mm256_storeu_ps(c + r * ldc, acc##r##0);          \
        _mm256_storeu_ps(c + r * ldc + 8, acc##r##1);      \
    }

static inline __attribute__((always_inline)) void micro(const int rows, int depth, const float *a, size_t a_row,
                                                        size_t a_depth, const float *b, size_t ldb, float *c,
                                                        size_t ldc, bool accumulate) {
    ROWS_DO(ACC_DECLARE)
    if (accumulate) {
        ROWS_DO(ACC_LOAD)
    }
    for (int k = 0; k < depth; k++) {
        __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
        const float *ak = a + k * a_depth;
        ROWS_DO(ACC_STEP)
    }
    ROWS_DO(ACC_STORE)
}

static void micro_rows(int rows, int depth, const float *a, size_t a_row, size_t a_depth, const float *b, size_t ldb,
                       float *c, size_t ldc, bool accumulate) {
    switch (rows) {
    case 6: micro(6, depth, a, a_row, a_depth, b, ldb, c, ldc, accumulate); break;
    case 5: micro(5, depth, a, a_row, a_depth, b, ldb, c, ldc, accumulate); break;
    case 4: micro(4, depth, a, a_row, a_depth, b, ldb, c, ldc, accumulate); break;
    case 3: micro(3, depth, a, a_row, a_depth, b, ldb, c, ldc, accumulate); break;
    case 2: micro(2, depth, a, a_row, a_depth, b, ldb, c, ldc, accumulate); break;
    default: micro(1, depth, a, a_row, a_depth, b, ldb, c, ldc, accumulate); break;
    }
}

/* M[p] = V[p] U[p] for the chunk's `used` tiles. */
static void multiply_forward(const plan *p, const float *V, const float *U, float *M, int used) {
    size_t cin8 = (size_t)p->cin8, cout16 = (size_t)p->cout16;
    for (int k = 0; k < POINTS; k++) {
        const float *Vk = V + (size_t)k * p->chunk * cin8, *Uk = U + (size_t)k * cin8 * cout16;
        float *Mk = M + (size_t)k * p->chunk * cout16;
        for (size_t j = 0; j < cout16; j += NR)
            for (int r = 0; r < used; r += MR)
                micro_rows(used - r < MR ? used - r : MR, p->in.C, Vk + r * cin8, cin8, 1, Uk + j, cout16,
                           Mk + r * cout16 + j, cout16, false);
    }
}

/* dU[p] += V[p]^T dM[p], summed over the chunk's `used` tiles. */
static void multiply_weight_grad(const plan *p, const float *V, const float *dM, float *dU, int used) {
    size_t cin8 = (size_t)p->cin8, cout16 = (size_t)p->cout16;
    for (int k = 0; k < POINTS; k++) {
        const float *Vk = V + (size_t)k * p->chunk * cin8, *dMk = dM + (size_t)k * p->chunk * cout16;
        float *dUk = dU + (size_t)k * cin8 * cout16;
        for (int c = 0; c < p->in.C; c += MR)
            for (size_t j = 0; j < cout16; j += NR)
                micro_rows(p->in.C - c < MR ? p->in.C - c : MR, used, Vk + c, 1, cin8, dMk + j, cout16,
                           dUk + c * cout16 + j, cout16, true);
    }
}

/* ---- the kernel's transforms -------------------------------------------- */

/* U[p][i][o] = (G g G^T)[p] for input channel i < ins and output channel o
 * < outs of the forward being run, zeros elsewhere (rows x cols per point).
 * g is w[o][i] (w: outs x ins x 3 x 3), or with flip (the input gradient,
 * whose inputs are w's outputs) w[i][o] with its taps turned by 180
 * degrees. Made 8 output channels to a vector (one by one, the scalar
 * arithmetic was 6% of a 2-thread training step of a 128-channel layer)
 * and written a vector per point: the 36 points' rows lie rows x cols
 * floats apart, a power of two for the usual channel counts, and value by
 * value the stores fought over the same cache sets (1.8 ms a call on 128 x
 * 128 channels, 0.2 of the teacher's step). */
static void transform_weights(const float *w, int ins, int outs, bool flip, int rows, int cols, float *U) {
#pragma omp parallel for schedule(static) if ((size_t)ins * outs > 256)
    for (int i = 0; i < rows; i++)
        for (int o0 = 0; o0 < cols; o0 += NR)
            for (int half = 0; half < NR; half += 8) { /* 8 output channels to a vector */
                v8 g[3][3] = {{{0}}}, gg[6][3];
                for (int l = 0; l < 8; l++) {
                    int o = o0 + half + l;
                    if (i >= ins || o >= outs) continue;
                    const float *k = flip ? w + ((size_t)i * outs + o) * 9 : w + ((size_t)o * ins + i) * 9;
                    for (int a = 0; a < 3; a++)
                        for (int b = 0; b < 3; b++) g[a][b][l] = flip ? k[(2 - a) * 3 + 2 - b] : k[a * 3 + b];
                }
                for (int x = 0; x < 6; x++)
                    for (int b = 0; b < 3; b++) gg[x][b] = G[x][0] * g[0][b] + G[x][1] * g[1][b] + G[x][2] * g[2][b];
                for (int x = 0; x < 6; x++)
                    for (int y = 0; y < 6; y++) {
                        v8 u = gg[x][0] * G[y][0] + gg[x][1] * G[y][1] + gg[x][2] * G[y][2];
                        _mm256_storeu_ps(U + ((size_t)(x * 6 + y) * rows + i) * cols + o0 + half, (__m256)u);
                    }
            }
}

/* grad_w[o][i] += G^T dU[.][i][o] G, 6x6 back to 3x3; dU read 16 output
 * channels at a time, as transform_weights writes U. */
static void weight_grad_back(const float *dU, int cin, int cout, int rows, int cols, float *grad_w) {
#pragma omp parallel for schedule(static) if ((size_t)cin * cout > 256)
    for (int i = 0; i < cin; i++)
        for (int o0 = 0; o0 < cout; o0 += NR) {
            float u[POINTS][NR];
            for (int k = 0; k < POINTS; k++) memcpy(u[k], dU + ((size_t)k * rows + i) * cols + o0, sizeof u[k]);
            for (int o = o0; o < o0 + NR && o < cout; o++) {
                float half[3][6];
                for (int a = 0; a < 3; a++)
                    for (int y = 0; y < 6; y++) {
                        float s = 0;
                        for (int x = 0; x < 6; x++) s += G[x][a] * u[x * 6 + y][o - o0];
                        half[a][y] = s;
                    }
                float *to = grad_w + ((size_t)o * cin + i) * 9;
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++) {
                        float s = 0;
                        for (int y = 0; y < 6; y++) s += half[a][y] * G[y][b];
                        to[a * 3 + b] += s;
                    }
            }
        }
}

/* ---- the passes ------------------------------------------------------- */

/* Each thread's buffers: V, and M (the forward) or dM and its partial dU
 * (the weight gradient). */
typedef struct {
    float *V, *M, *dU;
    size_t V_bytes, M_bytes, dU_bytes;
} buffers;

static void buffers_free(buffers *b, int n) {
    for (int t = 0; t < n; t++) {
        kd_cache_free(b[t].V, b[t].V_bytes);
        kd_cache_free(b[t].M, b[t].M_bytes);
        kd_cache_free(b[t].dU, b[t].dU_bytes);
    }
}

/* n sets, not zeroed (the weight gradient's are, by their threads:
 * buffers_zero). */
static bool buffers_make(const plan *p, buffers *b, int n, bool with_dU) {
    memset(b, 0, sizeof *b * (size_t)n);
    for (int t = 0; t < n; t++) {
        b[t].V = kd_cache_alloc(v_floats(p) * sizeof(float), &b[t].V_bytes);
        b[t].M = kd_cache_alloc(m_floats(p) * sizeof(float), &b[t].M_bytes);
        if (with_dU) b[t].dU = kd_cache_alloc(u_floats(p) * sizeof(float), &b[t].dU_bytes);
        if (!b[t].V || !b[t].M || (with_dU && !b[t].dU)) {
            buffers_free(b, t + 1);
            return false;
        }
    }
    return true;
}

/* For the weight gradient, a thread's dU and M (its dM) zeroed, by the
 * thread itself (zeroing every thread's from the calling thread took 9% of
 * a 64-channel layer's 2-thread step): the micro-kernel reads dM's columns
 * past the output's channels, which nothing writes. (The forward writes
 * every column of M it reads.) */
static void buffers_zero(const plan *p, const buffers *b) {
    memset(b->M, 0, m_floats(p) * sizeof(float));
    memset(b->dU, 0, u_floats(p) * sizeof(float));
}

/* The tiles thread `t` of `team` takes: equal runs, in order. */
static void share(const plan *p, int t, int team, int *first, int *end) {
    *first = (int)((long)p->tiles * t / team), *end = (int)((long)p->tiles * (t + 1) / team);
}

/* out = (or +=, add) conv(in, U), with bias and ReLU. */
static bool run_forward(const plan *p, const float *U, const float *bias, bool relu, bool add) {
    buffers b[KD_MAX_THREADS];
    if (!buffers_make(p, b, p->threads, false)) return false;
#pragma omp parallel num_threads(p->threads) if (p->threads > 1)
    {
        int t = omp_get_thread_num(), first, end;
        share(p, t, omp_get_num_threads(), &first, &end);
        for (int at = first; at < end; at += p->chunk) {
            int used = end - at < p->chunk ? end - at : p->chunk;
            for (int r = 0; r < used; r++) transform_input(p, at + r, r, b[t].V);
            multiply_forward(p, b[t].V, U, b[t].M, used);
            for (int r = 0; r < used; r++) transform_output(p, at + r, r, b[t].M, bias, relu, add);
        }
    }
    buffers_free(b, p->threads);
    return true;
}

/* grad_w += the weight gradient of conv(in) with output gradient out. */
static bool run_weight_grad(const plan *p, float *grad_w) {
    buffers b[KD_MAX_THREADS];
    if (!buffers_make(p, b, p->threads, true)) return false;
    int team_size = 1;
#pragma omp parallel num_threads(p->threads) if (p->threads > 1)
    {
        int t = omp_get_thread_num(), team = omp_get_num_threads(), first, end;
        if (t == 0) team_size = team;
        buffers_zero(p, &b[t]);
        share(p, t, team, &first, &end);
        for (int at = first; at < end; at += p->chunk) {
            int used = end - at < p->chunk ? end - at : p->chunk;
            for (int r = 0; r < used; r++) {
                transform_input(p, at + r, r, b[t].V);
                transform_output_grad(p, at + r, r, b[t].M);
            }
            multiply_weight_grad(p, b[t].V, b[t].M, b[t].dU, used);
        }
    }
    long n = (long)u_floats(p);
    /* in thread order for each value, so the same sums every run; the values
     * split among the threads (36 x 128 x 128 of them for 128 channels) */
#pragma omp parallel for schedule(static) num_threads(team_size) if (team_size > 1)
    for (long i = 0; i < n; i++)
        for (int t = 1; t < team_size; t++) b[0].dU[i] += b[t].dU[i];
    weight_grad_back(b[0].dU, p->in.C, p->out.C, p->cin8, p->cout16, grad_w);
    buffers_free(b, p->threads);
    return true;
}

/* U for a forward from `ins` to `outs` channels (flip: the input
 * gradient's), in a new buffer, or NULL. */
static float *weights_for(const plan *p, const float *w, bool flip, size_t *bytes) {
    float *U = kd_cache_alloc(u_floats(p) * sizeof(float), bytes);
    if (U) transform_weights(w, p->in.C, p->out.C, flip, p->cin8, p->cout16, U);
    return U;
}

/* The block an output of `channels` channels is written in: its input's
 * where that was blocked (the kernels' layout on this CPU), else 8 (AVX2's
 * nChw8c); 0 (NCHW) where the channels do not fill it or memory is short. */
static int block_for(int block_in, int channels, int h, int w) {
    int block = block_in ? block_in : 8;
    return channels % block == 0 && kd_blocked_layout_can_take(h, w, block) ? block : 0;
}

bool kd_conv_winograd_forward(const kd_conv_geometry *g, int N, int cout, const kd_tensor *x, const float *w,
                              const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out) {
    kd_stored in = kd_stored_of(x);
    int block = blocked_out ? block_for(in.block, cout, g->out_h, g->out_w) : 0;
    kd_stored out = {kd_data_as_stored(y), N, cout, g->out_h, g->out_w, block};
    plan p;
    plan_make(&p, in, out, g->pad_h, g->pad_w);
    size_t U_bytes;
    float *U = weights_for(&p, w, false, &U_bytes);
    const float *bias = e && e->bias ? kd_f32(e->bias) : NULL;
    bool relu_here = e && e->relu && !e->residual;
    bool ok = U && run_forward(&p, U, bias, relu_here, false);
    kd_cache_free(U, U_bytes);
    if (!ok) return false;
    if (block) kd_set_blocked(y, block);
    if (e && e->residual) kd_conv_residual_relu(y, e);
    return true;
}

unsigned kd_conv_winograd_backward(const kd_conv_geometry *g, const float *w, kd_stored x, kd_stored grad_out,
                                   kd_tensor *grad_x_tensor, float *grad_x_plain, bool grad_x_zeros, float *grad_w) {
    unsigned ran = 0;
    if (grad_x_tensor || grad_x_plain) {
        /* where it goes: written whole where its zeros are pending (blocked
         * where the layout allows, when it is a tensor), else added into it
         * as it is stored */
        kd_stored to = {grad_x_plain, grad_out.N, g->channels, g->height, g->width, 0};
        if (grad_x_tensor && grad_x_zeros) {
            to.block = kd_blocked_layout_on() ? block_for(grad_out.block, g->channels, g->height, g->width) : 0;
            to.data = kd_data_as_stored(grad_x_tensor);
        } else if (grad_x_tensor) {
            to = kd_stored_of(grad_x_tensor);
        }
        plan p;
        plan_make(&p, grad_out, to, 2 - g->pad_h, 2 - g->pad_w);
        size_t U_bytes;
        float *U = weights_for(&p, w, true, &U_bytes);
        bool ok = U && run_forward(&p, U, NULL, false, !grad_x_zeros);
        kd_cache_free(U, U_bytes);
        if (ok) ran |= KD_DNNL_INPUT_GRAD;
        if (ok && grad_x_tensor && grad_x_zeros && to.block) kd_set_blocked(grad_x_tensor, to.block);
    }
    if (grad_w) {
        plan p;
        plan_make(&p, x, grad_out, g->pad_h, g->pad_w);
        if (run_weight_grad(&p, grad_w)) ran |= KD_DNNL_WEIGHT_GRAD;
    }
    return ran;
}
