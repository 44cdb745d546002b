/* bench_conv.c - the one-layer benchmark of ../shared/bench/NETS.md: conv3x3
 * 64->64, stride 1, padding 1, input 8 x 64 x 64 x 128. Forward, input
 * gradient and weight gradient are timed alone, each beside cblas_sgemm on
 * the GEMM shape it reduces to, measured in the same run; with 1 and 2
 * threads. Prints one JSON line per figure. Median of 9 runs after 2 warm-ups. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "blas.h"
#include "kd.h"

#define REPEATS 9
#define WARMUP 2

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs one case and returns the seconds of the part it times. */
typedef double (*timed_fn)(void *ctx);

static double median_seconds(timed_fn fn, void *ctx) {
    double t[REPEATS];
    for (int i = 0; i < WARMUP; i++) fn(ctx);
    for (int i = 0; i < REPEATS; i++) t[i] = fn(ctx);
    qsort(t, REPEATS, sizeof(double), compare);
    return t[REPEATS / 2];
}

enum { N = 8, C = 64, H = 64, W = 128 };

typedef struct {
    kd_tensor *x, *w, *grad_out;
    int part; /* 0 forward, 1 input grad, 2 weight grad */
} conv_ctx;

/* The forward alone, or a gradient alone: its backward is timed, the
 * forward before it is not (a forward+backward minus a separate forward
 * turns every slow forward sample into a wrong backward figure). The
 * gradient is added into the leaf's existing .grad, as in training. */
static double run_conv(void *p) {
    conv_ctx *c = p;
    kd_conv_params params = {1, 1, 1, 1, 1, 1, 1};
    c->x->requires_grad = c->part == 1;
    c->w->requires_grad = c->part == 2;
    bool was = kd_set_grad_enabled(c->part != 0);
    kd_tensor *y;
    double start = now();
    if (kd_conv2d(c->x, c->w, NULL, &params, &y)) {
        fprintf(stderr, "bench_conv: %s\n", kd_error_message());
        exit(1);
    }
    if (c->part != 0) {
        start = now();
        if (kd_backward(y, c->grad_out)) {
            fprintf(stderr, "bench_conv: %s\n", kd_error_message());
            exit(1);
        }
    }
    double seconds = now() - start;
    kd_set_grad_enabled(was);
    kd_tensor_release(y);
    return seconds;
}

typedef struct {
    bool ta, tb;
    int m, n, k, batch;
    float *a, *b, *c;
} gemm_ctx;

static double run_gemm(void *p) {
    gemm_ctx *g = p;
    double start = now();
    for (int i = 0; i < g->batch; i++)
        kd_sgemm(g->ta, g->tb, g->m, g->n, g->k, 1.0f, g->a, g->ta ? g->m : g->k, g->b,
                 g->tb ? g->k : g->n, 0.0f, g->c, g->n);
    return now() - start;
}

int main(void) {
    const double flops = 2.0 * N * C * C * 9 * H * W;
    const char *names[3] = {"forward", "input_grad", "weight_grad"};
    int shape_x[4] = {N, C, H, W}, shape_w[4] = {C, C, 3, 3};
    kd_tensor *x, *w, *g;
    kd_tensor_new(KD_F32, 4, shape_x, &x);
    kd_tensor_new(KD_F32, 4, shape_w, &w);
    kd_tensor_new(KD_F32, 4, shape_x, &g);
    kd_fill_normal(x, 0, 1, NULL);
    kd_fill_normal(w, 0, 0.05f, NULL);
    kd_fill_normal(g, 0, 1, NULL);
    /* GEMM shapes per image: forward 64 x 8192 x 576; input grad, a
     * convolution of the output gradient by the flipped weight, the same;
     * weight grad 64 x 576 x 8192 (B^T). */
    int K = C * 9, P = H * W;
    float *a = malloc(sizeof(float) * (size_t)K * P), *b = malloc(sizeof(float) * (size_t)K * P);
    float *cbuf = malloc(sizeof(float) * (size_t)K * P);
    for (size_t i = 0; i < (size_t)K * P; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    gemm_ctx gemms[3] = {
        {false, false, C, P, K, N, a, b, cbuf},
        {false, false, C, P, K, N, a, b, cbuf},
        {false, true, C, K, P, N, a, b, cbuf},
    };
    const char *gemm_shape[3] = {"64x8192x576", "64x8192x576", "64x576x8192 (B^T)"};
    int thread_counts[2] = {1, 2};
    for (int t = 0; t < 2; t++) {
        kd_set_threads(thread_counts[t]);
        for (int part = 0; part < 3; part++) {
            conv_ctx ctx = {x, w, g, part};
            double seconds = median_seconds(run_conv, &ctx);
            double gemm_seconds = median_seconds(run_gemm, &gemms[part]);
            double gflops = flops / seconds * 1e-9, gemm_gflops = flops / gemm_seconds * 1e-9;
            printf("{\"bench\": \"conv3x3_64_64_8x64x64x128\", \"part\": \"%s\", \"threads\": %d, "
                   "\"ms\": %.2f, \"gflops\": %.1f, \"sgemm_shape\": \"%s x%d\", \"sgemm_gflops\": %.1f, "
                   "\"ratio_to_sgemm\": %.2f}\n",
                   names[part], thread_counts[t], seconds * 1e3, gflops, gemm_shape[part], N,
                   gemm_gflops, gflops / gemm_gflops);
            fflush(stdout);
        }
    }
    free(a), free(b), free(cbuf);
    kd_tensor_release(x), kd_tensor_release(w), kd_tensor_release(g);
    return 0;
}
