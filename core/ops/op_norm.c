/* op_norm.c - 2-D batch normalisation (Ioffe & Szegedy), PyTorch semantics:
 * biased variance to normalise, unbiased variance into the running estimate.
 * Every loop is parallel over channels (blocked, also over parts of each
 * channel's lanes, below), so each channel's sums run in one fixed order
 * whatever the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "internal.h"

/* Sums over one channel's values, in LANES independent double accumulators
 * (lane l takes elements l, l + LANES, ...) added up at the end: one chain of
 * dependent adds would make these loops latency-bound, and the fixed lane
 * order keeps the result independent of the thread count. */
#define LANES 8

typedef struct {
    double a[LANES];
} lanes;

static double lanes_total(const lanes *l) {
    double t = 0;
    for (int i = 0; i < LANES; i++) t += l->a[i];
    return t;
}

/* sum of x[i] over one plane of n values, added into acc */
static void add_sum(const float *x, size_t n, lanes *acc) {
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__) /* GCC left the lanes' loop scalar: it is written out, 4 lanes a vector */
    __m256d lo = _mm256_loadu_pd(acc->a), hi = _mm256_loadu_pd(acc->a + 4);
    for (; i + LANES <= n; i += LANES) {
        __m256 v = _mm256_loadu_ps(x + i);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    _mm256_storeu_pd(acc->a, lo), _mm256_storeu_pd(acc->a + 4, hi);
#else
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc->a[l] += x[i + l];
#endif
    for (; i < n; i++) acc->a[i % LANES] += x[i];
}

/* sum of (x[i] - m)^2 */
static void add_centered_squares(const float *x, size_t n, double m, lanes *acc) {
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__) /* as add_sum; the square added as GCC contracts it, in one FMA */
    __m256d lo = _mm256_loadu_pd(acc->a), hi = _mm256_loadu_pd(acc->a + 4), mean = _mm256_set1_pd(m);
    for (; i + LANES <= n; i += LANES) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d d_lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), mean),
                d_hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), mean);
        lo = _mm256_fmadd_pd(d_lo, d_lo, lo), hi = _mm256_fmadd_pd(d_hi, d_hi, hi);
    }
    _mm256_storeu_pd(acc->a, lo), _mm256_storeu_pd(acc->a + 4, hi);
#else
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc->a[l] += (x[i + l] - m) * (x[i + l] - m);
#endif
    for (; i < n; i++) acc->a[i % LANES] += (x[i] - m) * (x[i] - m);
}

/* The gradient reaching the batch norm's output at i: g itself, or when a
 * ReLU follows and took over this backward (kd_take_batch_norm_input), g
 * through the ReLU, whose input is the batch norm's output y. `relu` is a
 * constant at each call site, so the compiler makes one loop for each case;
 * g, y and slope are passed by value (restrict) so that stores into the
 * gradient cannot alias them and both loops vectorise. */
static inline float grad_at(const float *restrict g, const float *restrict y, float slope, bool relu, size_t i) {
    if (!relu) return g[i];
    return y[i] > 0 ? g[i] : slope * g[i];
}

#if defined(__AVX2__) && defined(__FMA__)
/* Eight sums of d and of d * (x - mu), 4 doubles to a vector, where GCC
 * left the scalar loops scalar: over positions i = i0, i0 + LANES, ... <
 * i1, the 8 floats from element first + i * block + channel. In a blocked
 * tensor (block_grad_sums) they are 8 channels of one lane; in NCHW
 * (add_sums, block 1) the 8 lanes of one channel. The arithmetic of the
 * scalar loops, which GCC contracts into a fused multiply-add, so the bits
 * are theirs. (Scalar, the blocked loop for blocks of 8, AVX2's nChw8c,
 * took 14% of bench_student's 2-thread step under ONEDNN_MAX_CPU_ISA=AVX2,
 * and add_sums 4.6% of it with KDSEG_LAYOUT=nchw.) */
static inline __attribute__((always_inline)) void lane_grad_sums8(const float *restrict g, const float *restrict y,
                                                                  float slope, bool relu, const float *restrict in,
                                                                  size_t first, size_t i0, size_t i1, int block,
                                                                  int channel, const float *mu8, double *dy8,
                                                                  double *dy_x8) {
    __m256d dy_lo = _mm256_loadu_pd(dy8), dy_hi = _mm256_loadu_pd(dy8 + 4);
    __m256d dx_lo = _mm256_loadu_pd(dy_x8), dx_hi = _mm256_loadu_pd(dy_x8 + 4);
    __m256 mu = _mm256_loadu_ps(mu8), slopes = _mm256_set1_ps(slope);
    for (size_t i = i0; i < i1; i += LANES) {
        size_t at = first + i * block + channel;
        __m256 d = _mm256_loadu_ps(g + at);
        if (relu) { /* grad_at: y > 0 ? g : slope * g */
            __m256 positive = _mm256_cmp_ps(_mm256_loadu_ps(y + at), _mm256_setzero_ps(), _CMP_GT_OQ);
            d = _mm256_blendv_ps(_mm256_mul_ps(slopes, d), d, positive);
        }
        __m256 centered = _mm256_sub_ps(_mm256_loadu_ps(in + at), mu);
        __m256d d_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), d_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
        __m256d c_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(centered)),
                c_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(centered, 1));
        dy_lo = _mm256_add_pd(dy_lo, d_lo), dy_hi = _mm256_add_pd(dy_hi, d_hi);
        dx_lo = _mm256_fmadd_pd(d_lo, c_lo, dx_lo), dx_hi = _mm256_fmadd_pd(d_hi, c_hi, dx_hi);
    }
    _mm256_storeu_pd(dy8, dy_lo), _mm256_storeu_pd(dy8 + 4, dy_hi);
    _mm256_storeu_pd(dy_x8, dx_lo), _mm256_storeu_pd(dy_x8 + 4, dx_hi);
}
#endif

/* sum of d[i] and of d[i] * (x[i] - mu), added into the lanes of i */
static void add_sums(const float *d, const float *x, float mu, size_t n, lanes *dy, lanes *dy_x) {
    size_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const float mu8[LANES] = {mu, mu, mu, mu, mu, mu, mu, mu};
    i = n / LANES * LANES;
    lane_grad_sums8(d, NULL, 0.0f, false, x, 0, 0, i, 1, 0, mu8, dy->a, dy_x->a);
#else
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            dy->a[l] += d[i + l];
            dy_x->a[l] += (double)d[i + l] * (x[i + l] - mu);
        }
#endif
    for (; i < n; i++) {
        dy->a[i % LANES] += d[i];
        dy_x->a[i % LANES] += (double)d[i] * (x[i] - mu);
    }
}

/* The same sums of dy over elements [i0, i0 + n). Through a ReLU, dy is
 * first made in a small buffer, a chunk at a time (a select in the summing
 * loop would keep it from vectorising); chunks are a multiple of LANES, so
 * every element keeps its lane. */
#define CHUNK 256
static inline void add_grad_sums(const float *restrict g, const float *restrict y, float slope, bool relu,
                                 const float *restrict x, float mu, size_t i0, size_t n, lanes *dy, lanes *dy_x) {
    if (!relu) {
        add_sums(g + i0, x + i0, mu, n, dy, dy_x);
        return;
    }
    float d[CHUNK];
    for (size_t at = 0; at < n; at += CHUNK) {
        size_t m = n - at < CHUNK ? n - at : CHUNK;
        for (size_t k = 0; k < m; k++) d[k] = grad_at(g, y, slope, true, i0 + at + k);
        add_sums(d, x + i0 + at, mu, m, dy, dy_x);
    }
}

/* The output gradient through the ReLU (when relu) over elements [i0, i0 +
 * n) into d, or g itself there when no ReLU: a loop of its own, so that it
 * and the loops reading d vectorise. */
enum { SPAN = 128 }; /* positions of a plane at a time: a multiple of LANES */
static inline const float *grads_through_relu(const float *restrict g, const float *restrict y, float slope,
                                              bool relu, size_t i0, size_t n, float *restrict d) {
    if (!relu) return g + i0;
    for (size_t k = 0; k < n; k++) d[k] = grad_at(g, y, slope, true, i0 + k);
    return d;
}

/* The input gradient over `count` elements of a span of one channel block
 * (block_grads), onto zeros (written, not read) or added; `training`,
 * `zeros` and `block` are constants at each call. */
static inline __attribute__((always_inline)) void span_input_grad(float *restrict to, const float *restrict d,
                                                                  const float *restrict x, size_t count,
                                                                  const int block, const float *scale,
                                                                  const float *mean_dy, const float *mu,
                                                                  const float *is, const float *mean_dy_xhat,
                                                                  const bool training, const bool zeros) {
    for (size_t at = 0; at < count; at += block)
        for (int lane = 0; lane < block; lane++) {
            float v = training ? scale[lane] * (d[at + lane] - mean_dy[lane] -
                                                (x[at + lane] - mu[lane]) * is[lane] * mean_dy_xhat[lane])
                               : scale[lane] * d[at + lane];
            to[at + lane] = (zeros ? 0.0f : to[at + lane]) + v;
        }
}

/* A blocked batch norm's sums (nChw<block>c, layout.c) keep the NCHW
 * loops' lanes: element i of a plane goes into lane i % LANES of its
 * channel, each lane summed over the images and positions in order, and
 * the lanes added up in order at the end, so that the results are the same
 * bit for bit. Here the lanes are kept lane-major, sums[l][channel of the
 * block], so that the loops run along the memory across a block's
 * channels and vectorise (`block` is a constant at each call).
 *
 * The work is split by channel block and, where there are fewer blocks
 * than threads, by lanes too: part k of P takes the positions whose lane is
 * in [k * LANES / P, (k + 1) * LANES / P). Each lane is still summed by one
 * thread in one order, so the split changes no bit. (By channel blocks
 * alone, bench_student's first batch norm, 16 channels, one block, ran on
 * one thread.) */
typedef double lane_sums[LANES][16];

static double lane_total(const lane_sums s, int lane) {
    double t = 0;
    for (int l = 0; l < LANES; l++) t += s[l][lane]; /* as lanes_total */
    return t;
}

/* How many lane parts each of `blocks` channel blocks is split into: the
 * fewest (a power of two, at most LANES) that give every thread a unit. */
static int lane_parts(int blocks, bool parallel) {
    int parts = 1, threads = parallel ? omp_get_max_threads() : 1;
    while (parts < LANES && blocks * parts < threads) parts *= 2;
    return parts;
}

/* Unit u of blocks x parts: its channel block and its lanes [*l0, *l1). */
static int unit_lanes(int u, int parts, int *l0, int *l1) {
    int part = u % parts;
    *l0 = part * LANES / parts, *l1 = (part + 1) * LANES / parts;
    return u / parts;
}


/* The sums of the output gradient d (g, through the ReLU when relu) and of
 * d * (x - mu) over lanes [l0, l1) of channel block cb, into dy and dy_x.
 * A span of positions at a time (in cache), and in it the positions of each
 * lane in turn, so that the lane's sums stay in registers. */
static inline __attribute__((always_inline)) void block_grad_sums(const float *restrict g, const float *restrict y,
                                                                  float slope, bool relu, const float *restrict in,
                                                                  int N, int blocks, int cb, size_t HW,
                                                                  const int block, int l0, int l1,
                                                                  const float *mean, lane_sums dy, lane_sums dy_x) {
    float mu[16];
    for (int lane = 0; lane < block; lane++) mu[lane] = mean[cb * block + lane];
    for (int n = 0; n < N; n++) {
        size_t first = ((size_t)n * blocks + cb) * HW * block;
        for (size_t s0 = 0; s0 < HW; s0 += SPAN) {
            size_t s1 = s0 + SPAN < HW ? s0 + SPAN : HW;
            for (int l = l0; l < l1; l++) {
#if defined(__AVX2__) && defined(__FMA__)
                for (int channel = 0; channel < block; channel += 8)
                    lane_grad_sums8(g, y, slope, relu, in, first, s0 + l, s1, block, channel, mu + channel,
                                    dy[l] + channel, dy_x[l] + channel);
#else
                double sum_dy[16], sum_dy_x[16];
                for (int lane = 0; lane < block; lane++) sum_dy[lane] = dy[l][lane], sum_dy_x[lane] = dy_x[l][lane];
                for (size_t i = s0 + l; i < s1; i += LANES) {
                    size_t at = first + i * block;
                    for (int lane = 0; lane < block; lane++) {
                        float d = grad_at(g, y, slope, relu, at + lane);
                        sum_dy[lane] += d;
                        sum_dy_x[lane] += (double)d * (in[at + lane] - mu[lane]);
                    }
                }
                for (int lane = 0; lane < block; lane++) dy[l][lane] = sum_dy[lane], dy_x[l][lane] = sum_dy_x[lane];
#endif
            }
        }
    }
}

/* The input gradient of image n's channel block cb, from each channel's
 * scale, mean_dy and mean_dy_xhat (batch_norm_grads). */
static inline __attribute__((always_inline)) void block_input_grad(const float *restrict g, const float *restrict y,
                                                                   float slope, bool relu, const float *restrict in,
                                                                   int n, int blocks, int cb, size_t HW,
                                                                   const int block, const float *mean,
                                                                   const float *invstd, const float *scale,
                                                                   const float *mean_dy, const float *mean_dy_xhat,
                                                                   bool training, float *restrict gx,
                                                                   bool gx_zeros) {
    float d_span[SPAN * 16];
    int c0 = cb * block;
    size_t first = ((size_t)n * blocks + cb) * HW * block;
    for (size_t s0 = 0; s0 < HW; s0 += SPAN) {
        size_t s1 = s0 + SPAN < HW ? s0 + SPAN : HW, base = first + s0 * block, count = (s1 - s0) * block;
        const float *d = grads_through_relu(g, y, slope, relu, base, count, d_span), *x = in + base;
        float *to = gx + base;
        const float *sc = scale + c0, *mdy = mean_dy + c0, *mu = mean + c0, *is = invstd + c0,
                    *mdx = mean_dy_xhat + c0;
        /* each case a loop of its own: with a select inside, they do not vectorise */
        if (training && gx_zeros)
            span_input_grad(to, d, x, count, block, sc, mdy, mu, is, mdx, true, true);
        else if (training)
            span_input_grad(to, d, x, count, block, sc, mdy, mu, is, mdx, true, false);
        else if (gx_zeros)
            span_input_grad(to, d, x, count, block, sc, mdy, mu, is, mdx, false, true);
        else
            span_input_grad(to, d, x, count, block, sc, mdy, mu, is, mdx, false, false);
    }
}

/* The blocked batch norm's gradients (batch_norm_grads): the sums by
 * (channel block, lane part), then each channel's factors, then the input
 * gradient by (image, channel block). sums: 2 x C / block zeroed lane_sums;
 * factors: 3 x C floats. */
static void block_grads(const float *g, const float *y, float slope, bool relu, const float *in, int N, int C,
                        size_t HW, int block, const float *mean, const float *invstd, const float *w,
                        bool training, float *gx, bool gx_zeros, float *gw, float *gb, bool parallel,
                        lane_sums *sums, float *factors) {
    int blocks = C / block, parts = lane_parts(blocks, parallel);
    lane_sums *dy = sums, *dy_x = sums + blocks;
#pragma omp parallel for schedule(static) if (parallel)
    for (int u = 0; u < blocks * parts; u++) {
        int l0, l1, cb = unit_lanes(u, parts, &l0, &l1);
        if (block == 16 && relu)
            block_grad_sums(g, y, slope, true, in, N, blocks, cb, HW, 16, l0, l1, mean, dy[cb], dy_x[cb]);
        else if (block == 16)
            block_grad_sums(g, y, slope, false, in, N, blocks, cb, HW, 16, l0, l1, mean, dy[cb], dy_x[cb]);
        else if (relu)
            block_grad_sums(g, y, slope, true, in, N, blocks, cb, HW, 8, l0, l1, mean, dy[cb], dy_x[cb]);
        else
            block_grad_sums(g, y, slope, false, in, N, blocks, cb, HW, 8, l0, l1, mean, dy[cb], dy_x[cb]);
    }
    double M = (double)N * (double)HW;
    float *scale = factors, *mean_dy = factors + C, *mean_dy_xhat = factors + 2 * C;
    for (int c = 0; c < C; c++) {
        int cb = c / block, lane = c % block;
        double sum_dy = lane_total(dy[cb], lane), sum_dy_xhat = lane_total(dy_x[cb], lane) * invstd[c];
        if (gw) gw[c] += (float)sum_dy_xhat;
        if (gb) gb[c] += (float)sum_dy;
        scale[c] = (w ? w[c] : 1.0f) * invstd[c];
        mean_dy[c] = (float)(sum_dy / M), mean_dy_xhat[c] = (float)(sum_dy_xhat / M);
    }
    if (gx) {
#pragma omp parallel for schedule(static) if (parallel)
        for (int unit = 0; unit < N * blocks; unit++) {
            int n = unit / blocks, cb = unit % blocks;
            if (block == 16)
                block_input_grad(g, y, slope, relu, in, n, blocks, cb, HW, 16, mean, invstd, scale, mean_dy,
                                 mean_dy_xhat, training, gx, gx_zeros);
            else
                block_input_grad(g, y, slope, relu, in, n, blocks, cb, HW, 8, mean, invstd, scale, mean_dy,
                                 mean_dy_xhat, training, gx, gx_zeros);
        }
    }
}

/* Saved: x (N x C x H x W), weight (C) or NULL, mean (C), invstd (C).
 * training: batch statistics, so gradients flow through them.
 * Grads: x, weight, bias (each may be NULL). g: the output's gradient; with
 * relu, y (the ReLU's input) and its slope. In the blocked layout where x,
 * g (and y) are stored in it (kd_shared_block), else in NCHW. */
static inline kd_status batch_norm_grads(kd_tensor *const *saved, bool training, const kd_tensor *grad_output,
                                         const kd_tensor *relu_input, float slope, bool relu,
                                         kd_tensor *const *grad_inputs) {
    const kd_tensor *x = saved[0], *w = saved[1];
    const float *mean = kd_f32(saved[2]), *invstd = kd_f32(saved[3]);
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3], M = (size_t)N * HW;
    const kd_tensor *reads[3] = {x, grad_output, relu_input};
    int block = kd_shared_block(reads, relu ? 3 : 2, grad_inputs, 1);
    /* the blocked loops' buffers, before anything is read or written */
    lane_sums *sums = NULL;
    float *factors = NULL;
    if (block) {
        sums = calloc(2 * (size_t)(C / block), sizeof *sums);
        factors = malloc(3 * sizeof(float) * (size_t)C);
        if (!sums || !factors) {
            free(sums), free(factors);
            return kd_fail(KD_ERR_MEMORY, "batch_norm2d backward: cannot allocate the sums of %d channels", C);
        }
    }
    const float *restrict in = kd_read_in(x, block), *restrict g = kd_read_in(grad_output, block);
    const float *restrict y = relu ? kd_read_in(relu_input, block) : NULL;
    /* the input gradient, written whole: onto its zeros when they are still
     * pending (internal.h), without reading them */
    bool gx_zeros;
    float *restrict gx = kd_write_in(grad_inputs[0], block, &gx_zeros);
    float *gw = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
    float *gb = grad_inputs[2] ? kd_f32(grad_inputs[2]) : NULL;
    const float *weight = w ? kd_f32(w) : NULL;
    if (block) {
        block_grads(g, y, slope, relu, in, N, C, HW, block, mean, invstd, weight, training, gx, gx_zeros, gw, gb,
                    M * C > KD_PARALLEL_MIN, sums, factors);
        free(sums), free(factors);
        return KD_OK;
    }
#pragma omp parallel for schedule(static) if (M * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        float mu = mean[c], is = invstd[c];
        lanes dy = {{0}}, dy_x = {{0}};
        for (int n = 0; n < N; n++) add_grad_sums(g, y, slope, relu, in, mu, ((size_t)n * C + c) * HW, HW, &dy, &dy_x);
        double sum_dy = lanes_total(&dy), sum_dy_xhat = lanes_total(&dy_x) * is;
        if (gw) gw[c] += (float)sum_dy_xhat;
        if (gb) gb[c] += (float)sum_dy;
        if (!gx) continue;
        float scale = (weight ? weight[c] : 1.0f) * is;
        float mean_dy = (float)(sum_dy / (double)M), mean_dy_xhat = (float)(sum_dy_xhat / (double)M);
        for (int n = 0; n < N; n++) {
            size_t base = ((size_t)n * C + c) * HW;
            if (training)
                for (size_t i = base; i < base + HW; i++)
                    gx[i] = (gx_zeros ? 0.0f : gx[i]) +
                            scale * (grad_at(g, y, slope, relu, i) - mean_dy - (in[i] - mu) * is * mean_dy_xhat);
            else
                for (size_t i = base; i < base + HW; i++)
                    gx[i] = (gx_zeros ? 0.0f : gx[i]) + scale * grad_at(g, y, slope, relu, i);
        }
    }
    return KD_OK;
}

static kd_status batch_norm_backward(kd_node *node, const kd_tensor *grad_output,
                                     kd_tensor *const *grad_inputs) {
    return batch_norm_grads(node->saved, node->ints[0], grad_output, NULL, 0.0f, false, grad_inputs);
}

/* The ReLU that took over (see kd_take_batch_norm_input): saved[0..3] are the
 * batch norm's, saved[4] the ReLU's input; ints[0] training, floats[0] slope. */
static kd_status relu_batch_norm_backward(kd_node *node, const kd_tensor *grad_output,
                                          kd_tensor *const *grad_inputs) {
    return batch_norm_grads(node->saved, node->ints[0], grad_output, node->saved[4], node->floats[0], true,
                            grad_inputs);
}

bool kd_take_batch_norm_input(kd_node *relu, float slope) {
    kd_node *bn = relu->inputs[0].node;
    if (!bn || bn->backward != batch_norm_backward || bn->released || relu->n_inputs != 1) return false;
    kd_tensor *relu_input = relu->saved[0];
    unsigned relu_input_version = relu->saved_version[0];
    for (int i = 0; i < 4; i++) {
        relu->saved[i] = bn->saved[i] ? kd_tensor_retain(bn->saved[i]) : NULL;
        relu->saved_version[i] = bn->saved_version[i];
    }
    relu->saved[4] = relu_input;
    relu->saved_version[4] = relu_input_version;
    relu->ints[0] = bn->ints[0];
    relu->floats[0] = slope;
    relu->backward = relu_batch_norm_backward;
    kd_node_take_inputs(relu, 3);
    return true;
}

static kd_status check_vector(const char *what, const kd_tensor *v, const kd_tensor *x) {
    if (!v) return KD_OK;
    kd_status s = kd_check_f32("batch_norm2d", what, v);
    if (s) return s;
    if (v->ndim != 1 || v->shape[0] != x->shape[1])
        return kd_fail(KD_ERR_SHAPE, "batch_norm2d: %s %s does not match the channels of input %s",
                       what, kd_shape_str(v), kd_shape_str(x));
    return KD_OK;
}

/* The arguments of a batch norm, plain or synchronised, in this order. */
static kd_status check_arguments(const kd_tensor *x, const kd_tensor *weight, const kd_tensor *bias,
                                 const kd_tensor *running_mean, const kd_tensor *running_var, bool training,
                                 float momentum, float eps) {
    kd_status s;
    if ((s = kd_check_f32("batch_norm2d", "input", x)) ||
        (s = kd_check_ndim("batch_norm2d", "input", x, 4)) ||
        (s = check_vector("weight", weight, x)) || (s = check_vector("bias", bias, x)) ||
        (s = check_vector("running_mean", running_mean, x)) ||
        (s = check_vector("running_var", running_var, x)))
        return s;
    if (!training && (!running_mean || !running_var))
        return kd_fail(KD_ERR_STATE, "batch_norm2d: evaluation mode needs running statistics");
    if ((running_mean == NULL) != (running_var == NULL))
        return kd_fail(KD_ERR_ARG, "batch_norm2d: running_mean and running_var go together");
    if (!(eps > 0) || !(momentum >= 0 && momentum <= 1))
        return kd_fail(KD_ERR_ARG, "batch_norm2d: eps %g must be > 0 and momentum %g in [0, 1]",
                       eps, momentum);
    return KD_OK;
}

/* y = x * scale + shift over channel c of every image, or with relu
 * max(0, that): the ReLU fused into the batch norm's one pass */
static void scale_channel(const float *in, float *y, int N, int C, size_t HW, int c, float scale, float shift,
                          bool relu) {
    for (int n = 0; n < N; n++) {
        size_t i = ((size_t)n * C + c) * HW, e = i + HW;
        if (relu)
            for (; i < e; i++) {
                float v = in[i] * scale + shift;
                y[i] = v > 0 ? v : 0.0f * v; /* kd_relu's -0 for negatives, so results are bit-identical */
            }
        else
            for (; i < e; i++) y[i] = in[i] * scale + shift;
    }
}

/* The sums of x (with m, of its squared distances to m) over lanes [l0,
 * l1) of channel block cb of a blocked x, into `sums` (lane_sums says how
 * the lanes split the work and keep the NCHW loops' bits), in the order of
 * block_grad_sums. */
static inline __attribute__((always_inline)) void block_sums(const float *restrict in, int N, int blocks, int cb,
                                                             size_t HW, const int block, int l0, int l1,
                                                             const double *m, lane_sums sums) {
    for (int n = 0; n < N; n++) {
        const float *at = in + ((size_t)n * blocks + cb) * HW * block;
        for (size_t s0 = 0; s0 < HW; s0 += SPAN) {
            size_t s1 = s0 + SPAN < HW ? s0 + SPAN : HW;
            for (int l = l0; l < l1; l++) {
                double acc[16];
                for (int lane = 0; lane < block; lane++) acc[lane] = sums[l][lane];
                for (size_t i = s0 + l; i < s1; i += LANES) {
                    const float *p = at + i * block;
                    if (m)
                        for (int lane = 0; lane < block; lane++) {
                            double d = p[lane] - m[cb * block + lane];
                            acc[lane] += d * d;
                        }
                    else
                        for (int lane = 0; lane < block; lane++) acc[lane] += p[lane];
                }
                for (int lane = 0; lane < block; lane++) sums[l][lane] = acc[lane];
            }
        }
    }
}

/* One pass of block_sums over every (channel block, lane part) unit. */
static void blocked_sums_pass(const float *in, int N, int blocks, size_t HW, int block, int parts, bool parallel,
                              const double *m, lane_sums *sums) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int u = 0; u < blocks * parts; u++) {
        int l0, l1, cb = unit_lanes(u, parts, &l0, &l1);
        if (block == 16 && m)
            block_sums(in, N, blocks, cb, HW, 16, l0, l1, m, sums[cb]);
        else if (block == 16)
            block_sums(in, N, blocks, cb, HW, 16, l0, l1, NULL, sums[cb]);
        else if (m)
            block_sums(in, N, blocks, cb, HW, 8, l0, l1, m, sums[cb]);
        else
            block_sums(in, N, blocks, cb, HW, 8, l0, l1, NULL, sums[cb]);
    }
}

/* y = x * scale + shift (then the ReLU) over one block of channels of one image */
static inline __attribute__((always_inline)) void block_normalise(const float *restrict in, float *restrict y,
                                                                  size_t HW, const int block, const float *scale,
                                                                  const float *shift, bool relu) {
    for (size_t i = 0; i < HW * block; i += block)
        for (int lane = 0; lane < block; lane++) {
            float v = in[i + lane] * scale[lane] + shift[lane];
            y[i + lane] = !relu || v > 0 ? v : 0.0f * v;
        }
}

/* The batch norm of a blocked x into y, blocked alike, with the NCHW
 * loops' arithmetic (two passes: the mean, then the squared distances to
 * it); sets mu and is as batch_norm does. sums: 2 x C / block zeroed
 * lane_sums; m: C doubles; factors: 2 x C floats. */
static void batch_norm_blocked(const float *in, float *y, int N, int C, size_t HW, int block, bool training,
                               const float *weight, const float *bias, float *rm, float *rv, float momentum,
                               float eps, bool relu, float *mu, float *is, lane_sums *sums, double *m,
                               float *factors) {
    int blocks = C / block;
    bool parallel = (size_t)N * HW * C > KD_PARALLEL_MIN;
    if (training) {
        int parts = lane_parts(blocks, parallel);
        size_t M = (size_t)N * HW;
        lane_sums *sum = sums, *sq = sums + blocks;
        blocked_sums_pass(in, N, blocks, HW, block, parts, parallel, NULL, sum);
        for (int c = 0; c < C; c++) m[c] = lane_total(sum[c / block], c % block) / (double)M;
        blocked_sums_pass(in, N, blocks, HW, block, parts, parallel, m, sq);
        for (int c = 0; c < C; c++) {
            double var = lane_total(sq[c / block], c % block) / (double)M;
            mu[c] = (float)m[c];
            is[c] = kd_bn_invstd(var, eps);
            if (rm) {
                rm[c] = (float)((1 - momentum) * rm[c] + momentum * m[c]);
                rv[c] = (float)((1 - momentum) * rv[c] + momentum * var * (double)M / (double)(M - 1));
            }
        }
    } else {
        for (int c = 0; c < C; c++) {
            mu[c] = rm[c];
            is[c] = kd_bn_invstd(rv[c], eps);
        }
    }
    float *scale = factors, *shift = factors + C;
    for (int c = 0; c < C; c++) {
        scale[c] = kd_bn_scale(weight, c, is[c]);
        shift[c] = kd_bn_shift(bias, c, mu[c], scale[c]);
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int unit = 0; unit < N * blocks; unit++) {
        size_t first = (size_t)unit * HW * block;
        int c0 = unit % blocks * block;
        if (block == 16)
            block_normalise(in + first, y + first, HW, 16, scale + c0, shift + c0, relu);
        else
            block_normalise(in + first, y + first, HW, 8, scale + c0, shift + c0, relu);
    }
}

/* A batch norm, followed by a ReLU when relu (kd_batch_norm2d_relu). */
static kd_status batch_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias, kd_tensor *running_mean,
                            kd_tensor *running_var, bool training, float momentum, float eps, bool relu,
                            kd_tensor **out) {
    kd_status s = check_arguments(x, weight, bias, running_mean, running_var, training, momentum, eps);
    if (s) return s;
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3], M = (size_t)N * HW;
    if (training && M < 2)
        return kd_fail(KD_ERR_SHAPE, "batch_norm2d: training needs more than one value per "
                       "channel, input is %s", kd_shape_str(x));
    kd_tensor *mean, *invstd = NULL; /* NULL: released safely if its allocation fails */
    int cshape[1] = {C};
    if ((s = kd_tensor_new(KD_F32, 1, cshape, &mean))) return s;
    if ((s = kd_tensor_new(KD_F32, 1, cshape, &invstd)) || (s = kd_tensor_new_like(x, out))) {
        kd_tensor_release(mean);
        kd_tensor_release(invstd);
        return s;
    }
    float *mu = kd_f32(mean), *is = kd_f32(invstd);
    int block = kd_blocked(x);
    if (block) {
        lane_sums *sums = calloc(2 * (size_t)(C / block), sizeof *sums);
        double *m = malloc(sizeof(double) * (size_t)C);
        float *factors = malloc(2 * sizeof(float) * (size_t)C);
        if (!sums || !m || !factors) {
            free(sums), free(m), free(factors);
            kd_tensor_release(mean), kd_tensor_release(invstd), kd_tensor_release(*out);
            *out = NULL;
            return kd_fail(KD_ERR_MEMORY, "batch_norm2d: cannot allocate the sums of %d channels", C);
        }
        batch_norm_blocked(kd_data_as_stored(x), kd_data_as_stored(*out), N, C, HW, block, training,
                           weight ? kd_f32(weight) : NULL, bias ? kd_f32(bias) : NULL,
                           running_mean ? kd_f32(running_mean) : NULL, running_var ? kd_f32(running_var) : NULL,
                           momentum, eps, relu, mu, is, sums, m, factors);
        free(sums), free(m), free(factors);
        kd_set_blocked(*out, block);
    } else {
        const float *in = kd_f32(x);
        float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (M * C > KD_PARALLEL_MIN)
        for (int c = 0; c < C; c++) {
            if (training) { /* two passes: the one-pass formula loses digits */
                lanes sum = {{0}}, sq = {{0}};
                for (int n = 0; n < N; n++) add_sum(in + ((size_t)n * C + c) * HW, HW, &sum);
                double m = lanes_total(&sum) / (double)M;
                for (int n = 0; n < N; n++) add_centered_squares(in + ((size_t)n * C + c) * HW, HW, m, &sq);
                double var = lanes_total(&sq) / (double)M;
                mu[c] = (float)m;
                is[c] = kd_bn_invstd(var, eps);
                if (running_mean) {
                    float *rm = kd_f32(running_mean), *rv = kd_f32(running_var);
                    rm[c] = (float)((1 - momentum) * rm[c] + momentum * m);
                    rv[c] = (float)((1 - momentum) * rv[c] + momentum * var * (double)M / (double)(M - 1));
                }
            } else {
                mu[c] = kd_f32(running_mean)[c];
                is[c] = kd_bn_invstd(kd_f32(running_var)[c], eps);
            }
            float scale = kd_bn_scale(weight ? kd_f32(weight) : NULL, c, is[c]);
            scale_channel(in, y, N, C, HW, c, scale, kd_bn_shift(bias ? kd_f32(bias) : NULL, c, mu[c], scale), relu);
        }
    }
    if (training && running_mean) kd_modified(running_mean), kd_modified(running_var);
    /* fused, the node is the one a ReLU taking over the batch norm's backward
     * makes (kd_take_batch_norm_input), with the output in place of the
     * ReLU's input: both are > 0 at the same elements */
    kd_tensor *inputs[3] = {x, weight, bias}, *saved[5] = {x, weight, mean, invstd, *out};
    kd_node *node;
    s = relu ? kd_finish_op("batch_norm2d_relu", relu_batch_norm_backward, out, 3, inputs, 5, saved, &node)
             : kd_finish_op("batch_norm2d", batch_norm_backward, out, 3, inputs, 4, saved, &node);
    if (node) node->ints[0] = training, node->floats[0] = 0.0f;
    kd_tensor_release(mean);
    kd_tensor_release(invstd);
    return s;
}

kd_status kd_batch_norm2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                          kd_tensor *running_mean, kd_tensor *running_var, bool training,
                          float momentum, float eps, kd_tensor **out) {
    return batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, false, out);
}

kd_status kd_batch_norm2d_relu(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                               kd_tensor *running_mean, kd_tensor *running_var, bool training,
                               float momentum, float eps, kd_tensor **out) {
    return batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, true, out);
}

/* ---- synchronised over processes ------------------------------------------------
 * The same arithmetic per channel as above, in two phases around each
 * reduction: local sums of every channel, added up over the processes, then
 * the per-element work. Saved as the plain op's; ints[1] holds the global
 * element count per channel. */

static kd_sum_reducer bn_reducer;
static void *bn_reducer_ctx;

void kd_set_batch_norm_reducer(kd_sum_reducer fn, void *ctx) {
    bn_reducer = fn;
    bn_reducer_ctx = ctx;
}

static kd_status synced_batch_norm_backward(kd_node *node, const kd_tensor *grad_output,
                                            kd_tensor *const *grad_inputs) {
    kd_tensor *const *saved = node->saved;
    const kd_tensor *x = saved[0], *w = saved[1];
    const float *mean = kd_f32(saved[2]), *invstd = kd_f32(saved[3]);
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3];
    double M = (double)node->ints[1];
    const float *in = kd_f32(x), *g = kd_f32(grad_output);
    /* per channel: sum dy, then sum dy * xhat; this process's, then all of them */
    double *local = malloc(sizeof(double) * 4 * (size_t)C), *all = local + 2 * C;
    if (!local) return kd_fail(KD_ERR_MEMORY, "batch_norm2d (synced): cannot allocate %d channel sums", C);
#pragma omp parallel for schedule(static) if ((size_t)N * HW * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        lanes dy = {{0}}, dy_x = {{0}};
        for (int n = 0; n < N; n++) add_sums(g + ((size_t)n * C + c) * HW, in + ((size_t)n * C + c) * HW, mean[c], HW, &dy, &dy_x);
        local[c] = lanes_total(&dy);
        local[C + c] = lanes_total(&dy_x) * invstd[c];
    }
    memcpy(all, local, sizeof(double) * 2 * (size_t)C);
    kd_status s = bn_reducer ? bn_reducer(all, 2 * C, bn_reducer_ctx) : KD_OK;
    if (s) {
        free(local);
        return s;
    }
    float *gx = grad_inputs[0] ? kd_f32(grad_inputs[0]) : NULL;
    float *gw = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
    float *gb = grad_inputs[2] ? kd_f32(grad_inputs[2]) : NULL;
    /* the weight's and bias's gradients are this process's share, as every
     * parameter's (the gradient averaging adds them up); the input's needs
     * the sums over all processes */
#pragma omp parallel for schedule(static) if ((size_t)N * HW * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        if (gw) gw[c] += (float)local[C + c];
        if (gb) gb[c] += (float)local[c];
        if (!gx) continue;
        float mu = mean[c], is = invstd[c];
        float scale = (w ? kd_f32(w)[c] : 1.0f) * is;
        float mean_dy = (float)(all[c] / M), mean_dy_xhat = (float)(all[C + c] / M);
        for (int n = 0; n < N; n++)
            for (size_t i = ((size_t)n * C + c) * HW, e = i + HW; i < e; i++)
                gx[i] += scale * (g[i] - mean_dy - (in[i] - mu) * is * mean_dy_xhat);
    }
    free(local);
    return KD_OK;
}

kd_status kd_batch_norm2d_synced(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                                 kd_tensor *running_mean, kd_tensor *running_var,
                                 float momentum, float eps, kd_tensor **out) {
    if (!bn_reducer) return kd_batch_norm2d(x, weight, bias, running_mean, running_var, true, momentum, eps, out);
    kd_status s = check_arguments(x, weight, bias, running_mean, running_var, true, momentum, eps);
    if (s) return s;
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3];
    const float *in = kd_f32(x);
    /* sums of every channel and the element count, then the centred squares */
    double *sums = malloc(sizeof(double) * (2 * (size_t)C + 1));
    if (!sums) return kd_fail(KD_ERR_MEMORY, "batch_norm2d (synced): cannot allocate %d channel sums", C);
#pragma omp parallel for schedule(static) if ((size_t)N * HW * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        lanes sum = {{0}};
        for (int n = 0; n < N; n++) add_sum(in + ((size_t)n * C + c) * HW, HW, &sum);
        sums[c] = lanes_total(&sum);
    }
    sums[C] = (double)N * (double)HW;
    if ((s = bn_reducer(sums, C + 1, bn_reducer_ctx))) {
        free(sums);
        return s;
    }
    double M = sums[C];
    if (M < 2 || M > 2147483647.0) {
        free(sums);
        return kd_fail(KD_ERR_SHAPE, "batch_norm2d (synced): %.0f values per channel over all processes; "
                       "training needs 2 to 2^31 - 1", M);
    }
    double *sq = sums + C + 1;
#pragma omp parallel for schedule(static) if ((size_t)N * HW * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        lanes acc = {{0}};
        double m = sums[c] / M;
        for (int n = 0; n < N; n++) add_centered_squares(in + ((size_t)n * C + c) * HW, HW, m, &acc);
        sq[c] = lanes_total(&acc);
    }
    if ((s = bn_reducer(sq, C, bn_reducer_ctx))) {
        free(sums);
        return s;
    }
    kd_tensor *mean, *invstd = NULL; /* NULL: released safely if its allocation fails */
    int cshape[1] = {C};
    if ((s = kd_tensor_new(KD_F32, 1, cshape, &mean))) {
        free(sums);
        return s;
    }
    if ((s = kd_tensor_new(KD_F32, 1, cshape, &invstd)) || (s = kd_tensor_new_like(x, out))) {
        kd_tensor_release(mean);
        kd_tensor_release(invstd);
        free(sums);
        return s;
    }
    float *y = kd_f32(*out), *mu = kd_f32(mean), *is = kd_f32(invstd);
    for (int c = 0; c < C; c++) {
        double m = sums[c] / M, var = sq[c] / M;
        mu[c] = (float)m;
        is[c] = kd_bn_invstd(var, eps);
        if (running_mean) {
            float *rm = kd_f32(running_mean), *rv = kd_f32(running_var);
            rm[c] = (float)((1 - momentum) * rm[c] + momentum * m);
            rv[c] = (float)((1 - momentum) * rv[c] + momentum * var * M / (M - 1));
        }
    }
    free(sums);
#pragma omp parallel for schedule(static) if ((size_t)N * HW * C > KD_PARALLEL_MIN)
    for (int c = 0; c < C; c++) {
        float scale = kd_bn_scale(weight ? kd_f32(weight) : NULL, c, is[c]);
        scale_channel(in, y, N, C, HW, c, scale, kd_bn_shift(bias ? kd_f32(bias) : NULL, c, mu[c], scale), false);
    }
    if (running_mean) kd_modified(running_mean), kd_modified(running_var);
    kd_tensor *inputs[3] = {x, weight, bias}, *saved[4] = {x, weight, mean, invstd};
    kd_node *node;
    s = kd_finish_op("batch_norm2d", synced_batch_norm_backward, out, 3, inputs, 4, saved, &node);
    if (node) node->ints[0] = 1, node->ints[1] = (int)M;
    kd_tensor_release(mean);
    kd_tensor_release(invstd);
    return s;
}
