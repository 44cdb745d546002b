/* op_spectral.c - the power iteration of spectral normalisation (Miyato et
 * al. 2018): the largest singular value of a weight seen as a matrix of
 * out rows (dim 0) by in x kh x kw columns. Not differentiable: as in the
 * paper and PyTorch's spectral_norm, u and v are constants of the step and
 * the gradient flows through sigma = u^T W v (kd.nn.SpectralNorm computes
 * that from the outer product made here). Plain double loops: the critics
 * it serves are small. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

/* x / ||x||, with PyTorch's eps against a zero vector */
static void normalise(double *x, size_t n) {
    double norm = 0;
    for (size_t i = 0; i < n; i++) norm += x[i] * x[i];
    norm = sqrt(norm);
    double scale = 1.0 / (norm > 1e-12 ? norm : 1e-12);
    for (size_t i = 0; i < n; i++) x[i] *= scale;
}

kd_status kd_spectral_power(const kd_tensor *w, kd_tensor *u, int iterations, kd_tensor **outer, float *sigma) {
    kd_status s;
    if ((s = kd_check_f32("spectral_power", "weight", w)) || (s = kd_check_f32("spectral_power", "u", u))) return s;
    if (w->ndim < 2) return kd_fail(KD_ERR_SHAPE, "spectral_power: weight %s must have 2 or more dimensions", kd_shape_str(w));
    size_t rows = (size_t)w->shape[0], cols = kd_numel(w) / rows;
    if (u->ndim != 1 || (size_t)u->shape[0] != rows)
        return kd_fail(KD_ERR_SHAPE, "spectral_power: u %s must have the weight's %zu rows", kd_shape_str(u), rows);
    if (iterations < 0 || iterations > 1000)
        return kd_fail(KD_ERR_ARG, "spectral_power: %d iterations, must be 0 to 1000", iterations);
    double *uu = malloc(sizeof(double) * rows), *vv = malloc(sizeof(double) * cols);
    if (!uu || !vv) {
        free(uu), free(vv);
        return kd_fail(KD_ERR_MEMORY, "spectral_power: cannot allocate %zu + %zu values", rows, cols);
    }
    const float *W = kd_f32(w);
    float *U = kd_f32(u);
    for (size_t i = 0; i < rows; i++) uu[i] = U[i];
    normalise(uu, rows);
    /* v = W^T u / ||.||, then u = W v / ||.||; with no iteration, v from u alone */
    for (int it = 0; it < (iterations > 0 ? iterations : 1); it++) {
        for (size_t j = 0; j < cols; j++) vv[j] = 0;
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) vv[j] += W[i * cols + j] * uu[i];
        normalise(vv, cols);
        if (iterations == 0) break;
        for (size_t i = 0; i < rows; i++) {
            double acc = 0;
            for (size_t j = 0; j < cols; j++) acc += W[i * cols + j] * vv[j];
            uu[i] = acc;
        }
        normalise(uu, rows);
    }
    if ((s = kd_tensor_new(KD_F32, w->ndim, w->shape, outer))) {
        free(uu), free(vv);
        return s;
    }
    float *O = kd_f32(*outer);
    double sig = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            O[i * cols + j] = (float)(uu[i] * vv[j]);
            sig += uu[i] * W[i * cols + j] * vv[j];
        }
    for (size_t i = 0; i < rows; i++) U[i] = (float)uu[i];
    kd_modified(u);
    *sigma = (float)sig;
    free(uu), free(vv);
    return KD_OK;
}
