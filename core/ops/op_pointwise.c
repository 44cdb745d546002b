/* op_pointwise.c - elementwise arithmetic: two tensors of one shape, a tensor
 * and scalars, and a tensor with a per-channel vector broadcast over N, H, W.
 * The four operators share one loop each, picked by an internal kind. */
#include <math.h>

#include "internal.h"

typedef enum { ADD, SUB, MUL, DIV } arith;

static const char *arith_name(arith kind, bool channel) {
    static const char *plain[] = {"add", "sub", "mul", "div"};
    static const char *per_channel[] = {"channel_add", "channel_sub", "channel_mul",
                                        "channel_div"};
    return channel ? per_channel[kind] : plain[kind];
}

/* ---- equal shapes ---------------------------------------------------------- */

/* What an accumulator holds at i: 0.0f where its zeros were pending and
 * taken (kd_write_in), so that they are not read. */
static inline float onto(const float *at, bool zeros, size_t i) { return zeros ? 0.0f : at[i]; }

/* a, b, out, grads: all the same shape, n elements. */
static kd_status binary_backward(kd_node *node, const kd_tensor *grad_output,
                                 kd_tensor *const *grad_inputs) {
    arith kind = (arith)node->ints[0];
    size_t n = kd_numel(grad_output);
    /* in the layout the operands share (kd_shared_block): elementwise */
    const kd_tensor *reads[3] = {grad_output, node->saved[0], node->saved[1]};
    int block = kd_shared_block(reads, kind >= MUL ? 3 : 1, grad_inputs, 2);
    const float *g = kd_read_in(grad_output, block);
    const float *a = node->saved[0] ? kd_read_in(node->saved[0], block) : NULL;
    const float *b = node->saved[1] ? kd_read_in(node->saved[1], block) : NULL;
    /* onto pending zeros: 0.0f + d, and 0.0f - d for a difference, as into
     * zeros; one accumulator for both (x + x) is taken once */
    bool a_zeros, b_zeros;
    float *ga = kd_write_in(grad_inputs[0], block, &a_zeros);
    float *gb = kd_write_in(grad_inputs[1], block, &b_zeros);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        switch (kind) { /* each `what was there op term`, so the compiler fuses as it did with += */
        case ADD:
            if (ga) ga[i] = onto(ga, a_zeros, i) + g[i];
            if (gb) gb[i] = onto(gb, b_zeros, i) + g[i];
            break;
        case SUB:
            if (ga) ga[i] = onto(ga, a_zeros, i) + g[i];
            if (gb) gb[i] = onto(gb, b_zeros, i) - g[i];
            break;
        case MUL:
            if (ga) ga[i] = onto(ga, a_zeros, i) + g[i] * b[i];
            if (gb) gb[i] = onto(gb, b_zeros, i) + g[i] * a[i];
            break;
        case DIV:
            if (ga) ga[i] = onto(ga, a_zeros, i) + g[i] / b[i];
            if (gb) gb[i] = onto(gb, b_zeros, i) - g[i] * a[i] / (b[i] * b[i]);
            break;
        }
    }
    return KD_OK;
}

/* The ReLU that took over a sum (kd_take_add_inputs): both operands get the
 * gradient through the ReLU, whose input (the sum) is saved[0]; floats[0]
 * is its slope. */
static kd_status relu_add_backward(kd_node *node, const kd_tensor *grad_output,
                                   kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    float slope = node->floats[0];
    /* in the layout they share (kd_shared_block); both gradients written
     * whole: onto their zeros when still pending (internal.h); one
     * accumulator for both (x + x) is taken once, and then gets d twice as
     * before */
    const kd_tensor *reads[2] = {grad_output, node->saved[0]};
    int block = kd_shared_block(reads, 2, grad_inputs, 2);
    const float *g = kd_read_in(grad_output, block), *sum = kd_read_in(node->saved[0], block);
    bool a_zeros, b_zeros;
    float *ga = kd_write_in(grad_inputs[0], block, &a_zeros);
    float *gb = kd_write_in(grad_inputs[1], block, &b_zeros);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = sum[i] > 0 ? g[i] : slope * g[i];
        if (ga) ga[i] = (a_zeros ? 0.0f : ga[i]) + d;
        if (gb) gb[i] = (b_zeros ? 0.0f : gb[i]) + d;
    }
    return KD_OK;
}

bool kd_take_add_inputs(kd_node *relu, float slope) {
    kd_node *add = relu->inputs[0].node;
    if (!add || add->backward != binary_backward || add->ints[0] != ADD || add->released || relu->n_inputs != 1)
        return false;
    relu->floats[0] = slope;
    relu->backward = relu_add_backward;
    kd_node_take_inputs(relu, 2);
    return true;
}

static kd_status binary(arith kind, kd_tensor *a, kd_tensor *b, kd_tensor **out) {
    const char *op = arith_name(kind, false);
    kd_status s;
    if ((s = kd_check_f32(op, "first operand", a)) || (s = kd_check_f32(op, "second operand", b)) ||
        (s = kd_check_same_shape(op, a, b)) || (s = kd_tensor_new_like(a, out)))
        return s;
    size_t n = kd_numel(a);
    /* elementwise, so operands blocked alike (layout.c) give an output blocked alike */
    int block = kd_blocked(a);
    if (kd_blocked(b) != block) block = 0;
    const float *x = block ? kd_data_as_stored(a) : kd_f32(a), *y = block ? kd_data_as_stored(b) : kd_f32(b);
    float *z = kd_f32(*out);
    if (block) kd_set_blocked(*out, block);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case ADD: z[i] = x[i] + y[i]; break;
        case SUB: z[i] = x[i] - y[i]; break;
        case MUL: z[i] = x[i] * y[i]; break;
        case DIV: z[i] = x[i] / y[i]; break;
        }
    }
    kd_tensor *inputs[2] = {a, b}, *saved[2] = {a, b};
    kd_node *node;
    s = kd_finish_op(op, binary_backward, out, 2, inputs, kind >= MUL ? 2 : 0, saved, &node);
    if (node) node->ints[0] = kind;
    return s;
}

kd_status kd_add(kd_tensor *a, kd_tensor *b, kd_tensor **out) { return binary(ADD, a, b, out); }
kd_status kd_sub(kd_tensor *a, kd_tensor *b, kd_tensor **out) { return binary(SUB, a, b, out); }
kd_status kd_mul(kd_tensor *a, kd_tensor *b, kd_tensor **out) { return binary(MUL, a, b, out); }
kd_status kd_div(kd_tensor *a, kd_tensor *b, kd_tensor **out) { return binary(DIV, a, b, out); }

/* ---- with scalars ---------------------------------------------------------- */

/* out = x * scale + shift; grad x += g * scale. */
static kd_status affine_scalar_backward(kd_node *node, const kd_tensor *grad_output,
                                        kd_tensor *const *grad_inputs) {
    return kd_axpby(grad_inputs[0], 1.0f, grad_output, node->floats[0]);
}

kd_status kd_affine_scalar(kd_tensor *x, float scale, float shift, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("affine_scalar", "input", x)) || (s = kd_tensor_new_like(x, out)))
        return s;
    size_t n = kd_numel(x);
    const float *in = kd_f32(x);
    float *z = kd_f32(*out);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) z[i] = in[i] * scale + shift;
    kd_node *node;
    s = kd_finish_op("affine_scalar", affine_scalar_backward, out, 1, &x, 0, NULL, &node);
    if (node) node->floats[0] = scale;
    return s;
}

/* out = s / x; grad x += -g * out / x, with out saved. */
static kd_status rdiv_scalar_backward(kd_node *node, const kd_tensor *grad_output,
                                      kd_tensor *const *grad_inputs) {
    size_t n = kd_numel(grad_output);
    const float *g = kd_f32(grad_output), *x = kd_f32(node->saved[0]);
    const float *y = kd_f32(node->saved[1]);
    float *gx = kd_f32(grad_inputs[0]);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] -= g[i] * y[i] / x[i];
    return KD_OK;
}

kd_status kd_rdiv_scalar(kd_tensor *x, float scalar, kd_tensor **out) {
    kd_status s;
    if ((s = kd_check_f32("rdiv_scalar", "input", x)) || (s = kd_tensor_new_like(x, out)))
        return s;
    size_t n = kd_numel(x);
    const float *in = kd_f32(x);
    float *z = kd_f32(*out);
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) z[i] = scalar / in[i];
    kd_tensor *saved[2] = {x, *out};
    return kd_finish_op("rdiv_scalar", rdiv_scalar_backward, out, 1, &x, 2, saved, NULL);
}

/* ---- per channel ------------------------------------------------------------
 * x N x C x (inner), v C. Parallel over channels for the vector's gradient,
 * so each sum runs in one fixed order whatever the thread count. */

static void channel_dims(const kd_tensor *x, size_t *batch, size_t *channels, size_t *inner) {
    *batch = (size_t)x->shape[0];
    *channels = (size_t)x->shape[1];
    size_t planes = *batch * *channels;
    *inner = planes ? kd_numel(x) / planes : 0;
}

static kd_status channel_backward(kd_node *node, const kd_tensor *grad_output,
                                  kd_tensor *const *grad_inputs) {
    arith kind = (arith)node->ints[0];
    size_t N, C, inner;
    channel_dims(grad_output, &N, &C, &inner);
    const float *g = kd_f32(grad_output);
    const float *x = node->saved[0] ? kd_f32(node->saved[0]) : NULL;
    const float *v = node->saved[1] ? kd_f32(node->saved[1]) : NULL;
    float *gx = grad_inputs[0] ? kd_f32(grad_inputs[0]) : NULL;
    float *gv = grad_inputs[1] ? kd_f32(grad_inputs[1]) : NULL;
#pragma omp parallel for schedule(static) if (N * C * inner > KD_PARALLEL_MIN)
    for (size_t c = 0; c < C; c++) {
        double acc = 0;
        for (size_t n = 0; n < N; n++) {
            size_t base = (n * C + c) * inner;
            for (size_t i = base; i < base + inner; i++) {
                switch (kind) {
                case ADD:
                    if (gx) gx[i] += g[i];
                    acc += g[i];
                    break;
                case SUB:
                    if (gx) gx[i] += g[i];
                    acc -= g[i];
                    break;
                case MUL:
                    if (gx) gx[i] += g[i] * v[c];
                    if (gv) acc += (double)g[i] * x[i];
                    break;
                case DIV:
                    if (gx) gx[i] += g[i] / v[c];
                    if (gv) acc -= (double)g[i] * x[i] / ((double)v[c] * v[c]);
                    break;
                }
            }
        }
        if (gv) gv[c] += (float)acc;
    }
    return KD_OK;
}

static kd_status channel(arith kind, kd_tensor *x, kd_tensor *v, kd_tensor **out) {
    const char *op = arith_name(kind, true);
    kd_status s;
    if ((s = kd_check_f32(op, "input", x)) || (s = kd_check_f32(op, "channel vector", v)))
        return s;
    if (x->ndim < 2 || kd_numel(v) != (size_t)x->shape[1])
        return kd_fail(KD_ERR_SHAPE, "%s: vector %s does not match the channels of input %s",
                       op, kd_shape_str(v), kd_shape_str(x));
    if ((s = kd_tensor_new_like(x, out))) return s;
    size_t N, C, inner;
    channel_dims(x, &N, &C, &inner);
    const float *in = kd_f32(x), *vec = kd_f32(v);
    float *z = kd_f32(*out);
#pragma omp parallel for schedule(static) if (N * C * inner > KD_PARALLEL_MIN)
    for (size_t plane = 0; plane < N * C; plane++) {
        float a = vec[plane % C];
        const float *src = in + plane * inner;
        float *dst = z + plane * inner;
        for (size_t i = 0; i < inner; i++) {
            switch (kind) {
            case ADD: dst[i] = src[i] + a; break;
            case SUB: dst[i] = src[i] - a; break;
            case MUL: dst[i] = src[i] * a; break;
            case DIV: dst[i] = src[i] / a; break;
            }
        }
    }
    kd_tensor *inputs[2] = {x, v}, *saved[2] = {x, v};
    kd_node *node;
    s = kd_finish_op(op, channel_backward, out, 2, inputs, kind >= MUL ? 2 : 0, saved, &node);
    if (node) node->ints[0] = kind;
    return s;
}

kd_status kd_channel_add(kd_tensor *x, kd_tensor *v, kd_tensor **o) { return channel(ADD, x, v, o); }
kd_status kd_channel_sub(kd_tensor *x, kd_tensor *v, kd_tensor **o) { return channel(SUB, x, v, o); }
kd_status kd_channel_mul(kd_tensor *x, kd_tensor *v, kd_tensor **o) { return channel(MUL, x, v, o); }
kd_status kd_channel_div(kd_tensor *x, kd_tensor *v, kd_tensor **o) { return channel(DIV, x, v, o); }
