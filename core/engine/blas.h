/* blas.h - GEMM for the core's own files; row-major, like the tensors. */
#ifndef KD_BLAS_H
#define KD_BLAS_H

#include "kd.h"

/* C (m x n) = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n. */
void kd_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc);

#endif
