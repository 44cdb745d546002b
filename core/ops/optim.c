/* optim.c - in-place parameter updates outside autograd: one fused loop per
 * optimizer step (the Lua optimizers call these), and the small in-place
 * helpers gradient accumulation, EMA and clipping need. */
#include <math.h>

#include "internal.h"

static kd_status check_pair(const char *op, const char *what, const kd_tensor *a,
                            const kd_tensor *b) {
    kd_status s;
    if ((s = kd_check_f32(op, "parameter", a)) || (s = kd_check_f32(op, what, b))) return s;
    if (kd_numel(a) != kd_numel(b))
        return kd_fail(KD_ERR_SHAPE, "%s: parameter %s and %s %s differ", op, kd_shape_str(a), what,
                       kd_shape_str(b));
    return KD_OK;
}

kd_status kd_sgd_step(kd_tensor *param, const kd_tensor *grad, kd_tensor *buf, float lr,
                      float momentum, float dampening, float weight_decay, bool nesterov,
                      bool first_step) {
    kd_status s;
    if ((s = check_pair("sgd_step", "gradient", param, grad)) ||
        (buf && (s = check_pair("sgd_step", "momentum buffer", param, buf))))
        return s;
    if (momentum != 0 && !buf)
        return kd_fail(KD_ERR_ARG, "sgd_step: momentum %g needs a momentum buffer", momentum);
    size_t n = kd_numel(param);
    float *p = kd_f32(param), *b = buf ? kd_f32(buf) : NULL;
    const float *g = kd_f32(grad);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + weight_decay * p[i];
        if (momentum != 0) {
            b[i] = first_step ? d : momentum * b[i] + (1 - dampening) * d;
            d = nesterov ? d + momentum * b[i] : b[i];
        }
        p[i] -= lr * d;
    }
    kd_modified(param);
    return KD_OK;
}

kd_status kd_adamw_step(kd_tensor *param, const kd_tensor *grad, kd_tensor *exp_avg,
                        kd_tensor *exp_avg_sq, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int step) {
    kd_status s;
    if ((s = check_pair("adamw_step", "gradient", param, grad)) ||
        (s = check_pair("adamw_step", "exp_avg", param, exp_avg)) ||
        (s = check_pair("adamw_step", "exp_avg_sq", param, exp_avg_sq)))
        return s;
    if (step < 1) return kd_fail(KD_ERR_ARG, "adamw_step: step %d must count from 1", step);
    size_t n = kd_numel(param);
    float *p = kd_f32(param), *m = kd_f32(exp_avg), *v = kd_f32(exp_avg_sq);
    const float *g = kd_f32(grad);
    double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        p[i] *= 1 - lr * weight_decay;
        m[i] = beta1 * m[i] + (1 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
        p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
    kd_modified(param);
    return KD_OK;
}

kd_status kd_axpby(kd_tensor *dst, float a, const kd_tensor *src, float b) {
    kd_status s;
    if ((s = kd_check_f32("axpby", "destination", dst)) || (s = kd_check_f32("axpby", "source", src)))
        return s;
    if (kd_numel(dst) != kd_numel(src))
        return kd_fail(KD_ERR_SHAPE, "axpby: destination %s and source %s differ", kd_shape_str(dst),
                       kd_shape_str(src));
    size_t n = kd_numel(dst);
    float *d = kd_f32(dst);
    const float *x = kd_f32(src);
    if (a == 1.0f) {
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) d[i] += b * x[i];
    } else {
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) d[i] = a * d[i] + b * x[i];
    }
    kd_modified(dst);
    return KD_OK;
}

double kd_sum_squares(const kd_tensor *t) {
    if (t->dtype != KD_F32) return 0;
    const float *x = kd_f32(t);
    double total = 0;
    for (size_t i = 0, n = kd_numel(t); i < n; i++) total += (double)x[i] * x[i];
    return total;
}
