/* op_activation.c - elementwise nonlinearities and channel dropout. Each saves
 * what its derivative is cheapest from: the input (ReLU family) or the output
 * (sigmoid, tanh, exp). All shapes: out and grads have the input's shape. */
#include <math.h>

#include "internal.h"

/* Checks x, allocates out like it; the shared start of every unary op. */
static kd_status unary_begin(const char *op, const kd_tensor *x, kd_tensor **out) {
    kd_status s = kd_check_f32(op, "input", x);
    return s ? s : kd_tensor_new_like(x, out);
}

/* Elementwise, so in the layout its operands share (kd_shared_block). */
static kd_status relu_backward(kd_node *node, const kd_tensor *grad_output,
                               kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    float slope = node->floats[0];
    const kd_tensor *reads[2] = {grad_output, node->saved[0]};
    int block = kd_shared_block(reads, 2, grad_inputs, 1);
    const float *g = kd_read_in(grad_output, block), *x = kd_read_in(node->saved[0], block);
    bool zeros;
    float *gx = kd_write_in(grad_inputs[0], block, &zeros);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] = (zeros ? 0.0f : gx[i]) + (x[i] > 0 ? g[i] : slope * g[i]);
    return KD_OK;
}

kd_status kd_leaky_relu(kd_tensor *x, float slope, kd_tensor **out) {
    const char *op = slope == 0 ? "relu" : "leaky_relu";
    kd_status s = unary_begin(op, x, out);
    if (s) return s;
    size_t n = kd_numel(x);
    int block = kd_blocked(x); /* elementwise: a blocked input (layout.c) gives a blocked output */
    const float *in = block ? kd_data_as_stored(x) : kd_f32(x);
    float *y = kd_f32(*out);
    if (block) kd_set_blocked(*out, block);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) y[i] = in[i] > 0 ? in[i] : slope * in[i];
    kd_node *node;
    s = kd_finish_op(op, relu_backward, out, 1, &x, 1, &x, &node);
    if (node && !kd_take_batch_norm_input(node, slope) && !kd_take_add_inputs(node, slope)) node->floats[0] = slope;
    return s;
}

kd_status kd_relu(kd_tensor *x, kd_tensor **out) { return kd_leaky_relu(x, 0.0f, out); }

/* ReLU6 (MobileNetV2's activation): min(max(x, 0), 6); the input is saved,
 * the gradient passes where 0 < x < 6. */
static kd_status relu6_backward(kd_node *node, const kd_tensor *grad_output,
                                kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    const float *g = kd_f32(grad_output), *x = kd_f32(node->saved[0]);
    float *gx = kd_f32(grad_inputs[0]);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] += x[i] > 0 && x[i] < 6 ? g[i] : 0;
    return KD_OK;
}

kd_status kd_relu6(kd_tensor *x, kd_tensor **out) {
    kd_status s = unary_begin("relu6", x, out);
    if (s) return s;
    size_t n = kd_numel(x);
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) y[i] = in[i] > 0 ? (in[i] < 6 ? in[i] : 6) : 0;
    return kd_finish_op("relu6", relu6_backward, out, 1, &x, 1, &x, NULL);
}

/* The output y is saved; ints[0] says which derivative: 0 sigmoid y(1-y),
 * 1 tanh 1-y^2, 2 exp y. */
static kd_status from_output_backward(kd_node *node, const kd_tensor *grad_output,
                                      kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    int kind = node->ints[0];
    const float *g = kd_f32(grad_output), *y = kd_f32(node->saved[0]);
    float *gx = kd_f32(grad_inputs[0]);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = kind == 0 ? y[i] * (1 - y[i]) : kind == 1 ? 1 - y[i] * y[i] : y[i];
        gx[i] += g[i] * d;
    }
    return KD_OK;
}

static kd_status from_output(const char *op, int kind, kd_tensor *x, kd_tensor **out) {
    kd_status s = unary_begin(op, x, out);
    if (s) return s;
    size_t n = kd_numel(x);
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = kind == 0 ? 1.0f / (1.0f + expf(-in[i])) : kind == 1 ? tanhf(in[i]) : expf(in[i]);
    kd_node *node;
    s = kd_finish_op(op, from_output_backward, out, 1, &x, 1, out, &node);
    if (node) node->ints[0] = kind;
    return s;
}

kd_status kd_sigmoid(kd_tensor *x, kd_tensor **out) { return from_output("sigmoid", 0, x, out); }
kd_status kd_tanh(kd_tensor *x, kd_tensor **out) { return from_output("tanh", 1, x, out); }
kd_status kd_exp(kd_tensor *x, kd_tensor **out) { return from_output("exp", 2, x, out); }

static kd_status log_backward(kd_node *node, const kd_tensor *grad_output,
                              kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    const float *g = kd_f32(grad_output), *x = kd_f32(node->saved[0]);
    float *gx = kd_f32(grad_inputs[0]);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] += g[i] / x[i];
    return KD_OK;
}

kd_status kd_log(kd_tensor *x, kd_tensor **out) {
    kd_status s = unary_begin("log", x, out);
    if (s) return s;
    size_t n = kd_numel(x);
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) y[i] = logf(in[i]);
    return kd_finish_op("log", log_backward, out, 1, &x, 1, &x, NULL);
}

/* ---- channel dropout: the scale of each (n, c) plane is saved, N x C ------ */

static kd_status dropout2d_backward(kd_node *node, const kd_tensor *grad_output,
                                    kd_tensor *const *grad_inputs) {
    const float *g = kd_f32(grad_output), *scale = kd_f32(node->saved[0]);
    float *gx = kd_f32(grad_inputs[0]);
    size_t planes = kd_numel(node->saved[0]), inner = kd_numel(grad_output) / planes;
#pragma omp parallel for schedule(static) if (planes * inner > KD_PARALLEL_MIN)
    for (size_t p = 0; p < planes; p++)
        for (size_t i = p * inner; i < (p + 1) * inner; i++) gx[i] += g[i] * scale[p];
    return KD_OK;
}

kd_status kd_dropout2d(kd_tensor *x, float p, kd_rng *rng, kd_tensor **out) {
    kd_status s = kd_check_f32("dropout2d", "input", x);
    if (s) return s;
    if (x->ndim < 2)
        return kd_fail(KD_ERR_SHAPE, "dropout2d: input %s needs a channel dimension",
                       kd_shape_str(x));
    if (!(p >= 0 && p < 1))
        return kd_fail(KD_ERR_ARG, "dropout2d: probability %g is outside [0, 1)", p);
    kd_tensor *scale;
    int plane_shape[2] = {x->shape[0], x->shape[1]};
    if ((s = kd_tensor_new(KD_F32, 2, plane_shape, &scale))) return s;
    if ((s = kd_tensor_new_like(x, out))) {
        kd_tensor_release(scale);
        return s;
    }
    size_t planes = kd_numel(scale), inner = planes ? kd_numel(x) / planes : 0;
    float *sc = kd_f32(scale);
    for (size_t i = 0; i < planes; i++) /* serial: the draws must not depend on threads */
        sc[i] = kd_rng_uniform(rng) < p ? 0.0f : 1.0f / (1.0f - p);
    const float *in = kd_f32(x);
    float *y = kd_f32(*out);
#pragma omp parallel for schedule(static) if (planes * inner > KD_PARALLEL_MIN)
    for (size_t q = 0; q < planes; q++)
        for (size_t i = q * inner; i < (q + 1) * inner; i++) y[i] = in[i] * sc[q];
    s = kd_finish_op("dropout2d", dropout2d_backward, out, 1, &x, 1, &scale, NULL);
    kd_tensor_release(scale);
    return s;
}
