/* blas.c - the only file that includes cblas.h: GEMM and the thread setting.
 * OpenBLAS is the OpenMP build (Debian's libopenblas-openmp-dev), so its GEMM
 * threads and the core's OpenMP loops are one pool and never oversubscribe. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>

#include "blas.h"

void kd_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

double kd_gemm_gflops(int m, int n, int k, int repeats) {
    float *a = calloc((size_t)m * k, sizeof(float)), *b = calloc((size_t)k * n, sizeof(float));
    float *c = calloc((size_t)m * n, sizeof(float));
    double best = 0;
    if (a && b && c)
        for (int r = 0; r < repeats + 1; r++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            kd_sgemm(false, false, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
            double rate = 2.0 * m * n * k / seconds * 1e-9;
            if (r > 0 && rate > best) best = rate; /* the first call warms up */
        }
    free(a), free(b), free(c);
    return best;
}

static int thread_count;

void kd_set_threads(int n) {
    if (n < 1) n = 1;
    thread_count = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int kd_get_threads(void) { return thread_count ? thread_count : omp_get_max_threads(); }
