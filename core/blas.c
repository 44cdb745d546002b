/* blas.c - the only file that includes cblas.h: GEMM and the thread setting.
 * OpenBLAS is the OpenMP build (Debian's libopenblas-openmp-dev), so its GEMM
 * threads and the core's OpenMP loops are one pool and never oversubscribe. */
#include <cblas.h>
#include <omp.h>

#include "blas.h"

void kd_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static int thread_count;

void kd_set_threads(int n) {
    if (n < 1) n = 1;
    thread_count = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int kd_get_threads(void) { return thread_count ? thread_count : omp_get_max_threads(); }
