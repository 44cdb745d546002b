/* test_autograd.c - the tape: gradients accumulate across backward calls,
 * no-grad records nothing, memory returns to its level before the forward,
 * a freed graph cannot be walked twice, a saved tensor changed in place
 * makes backward fail, long chains release without
 * recursion, and the same seed and thread count give bit-identical results;
 * gradient accumulators whose zeros are pending read as zeros and are taken
 * whole, once, with the bits of adding into zeros. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "internal.h"

#define SEED 11u

static kd_tensor *leaf(int n, int c, int h, int w, kd_rng *rng, bool grad) {
    int shape[4] = {n, c, h, w};
    kd_tensor *t;
    kd_tensor_new(KD_F32, 4, shape, &t);
    kd_fill_normal(t, 0, 1, rng);
    t->requires_grad = grad;
    return t;
}

static void test_accumulation(void) {
    int shape[1] = {3};
    kd_tensor *x, *y, *loss;
    kd_tensor_full(KD_F32, 1, shape, 1.0, &x);
    x->requires_grad = true;
    for (int round = 0; round < 2; round++) { /* two losses, two backward calls */
        CHECK_OK(kd_affine_scalar(x, 2.0f, 0.0f, &y));
        CHECK_OK(kd_sum(y, &loss));
        CHECK_OK(kd_backward(loss, NULL));
        kd_tensor_release(y), kd_tensor_release(loss);
    }
    CHECK(x->grad && kd_f32(x->grad)[0] == 4.0f, "grad accumulates to 4, got %g",
          x->grad ? kd_f32(x->grad)[0] : -1);

    /* x used twice in one graph: both paths add */
    kd_tensor *z;
    kd_fill(x->grad, 0);
    CHECK_OK(kd_mul(x, x, &z));
    CHECK_OK(kd_sum(z, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    CHECK(kd_f32(x->grad)[1] == 2.0f, "d(x*x)/dx = 2x = 2, got %g", kd_f32(x->grad)[1]);
    CHECK_FAILS(kd_backward(loss, NULL), KD_ERR_STATE, "already freed");
    kd_tensor_release(z), kd_tensor_release(loss), kd_tensor_release(x);
}

/* A tensor the tape saved and then changed in place makes backward fail
 * (a wrong gradient otherwise: y = x * x; x = 3; dy/dx would read 2 * 3),
 * whatever changed it; a change to a tensor nothing saved is fine. */
static void test_changed_after_saving(void) {
    int shape[1] = {3};
    for (int how = 0; how < 5; how++) {
        kd_tensor *x, *other, *y, *loss, *buf;
        kd_tensor_full(KD_F32, 1, shape, 1.0, &x);
        kd_tensor_full(KD_F32, 1, shape, 2.0, &other);
        kd_tensor_zeros(KD_F32, 1, shape, &buf);
        x->requires_grad = true;
        CHECK_OK(kd_mul(x, x, &y));
        CHECK_OK(kd_sum(y, &loss));
        switch (how) {
        case 0: kd_fill(x, 3); break;
        case 1: kd_copy(x, other); break;
        case 2: kd_set(x, 1, 5); break;
        case 3: kd_axpby(x, 0.5f, other, 1.0f); break;
        case 4: kd_sgd_step(x, other, buf, 0.1f, 0, 0, 0, false, true); break;
        }
        CHECK_FAILS(kd_backward(loss, NULL), KD_ERR_STATE, "mul saved", "changed in place");
        CHECK(x->grad == NULL, "change %d: no gradient was added", how);
        kd_tensor_release(y), kd_tensor_release(loss), kd_tensor_release(x), kd_tensor_release(other);
        kd_tensor_release(buf);
    }
    kd_tensor *x, *y, *loss;
    kd_tensor_full(KD_F32, 1, shape, 1.0, &x);
    x->requires_grad = true;
    CHECK_OK(kd_affine_scalar(x, 2.0f, 0.0f, &y)); /* saves nothing of x */
    CHECK_OK(kd_sum(y, &loss));
    kd_fill(x, 3);
    CHECK_OK(kd_backward(loss, NULL));
    CHECK(x->grad && kd_f32(x->grad)[0] == 2.0f, "d(2x)/dx = 2 whatever x became");
    kd_tensor_release(y), kd_tensor_release(loss), kd_tensor_release(x);
}

static void test_no_grad(void) {
    int shape[1] = {3};
    kd_tensor *x, *y;
    kd_tensor_full(KD_F32, 1, shape, 1.0, &x);
    x->requires_grad = true;
    bool was = kd_set_grad_enabled(false);
    CHECK_OK(kd_exp(x, &y));
    kd_set_grad_enabled(was);
    CHECK(y->grad_fn == NULL, "no-grad records no node");
    CHECK_FAILS(kd_backward(y, NULL), KD_ERR_STATE, "does not require grad");
    kd_tensor_release(y);
    CHECK_OK(kd_exp(x, &y));
    CHECK(y->grad_fn != NULL, "grad mode records a node");
    CHECK_FAILS(kd_backward(y, NULL), KD_ERR_SHAPE, "more than one element");
    kd_tensor_release(y), kd_tensor_release(x);
}

/* A small segmentation step: conv - bn - relu - conv - upsample - CE. */
typedef struct { kd_tensor *x, *w1, *g1, *b1, *rm, *rv, *w2, *b2; kd_tensor *target; } net;

static net make_net(uint64_t seed) {
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    net n;
    n.x = leaf(2, 3, 16, 20, &rng, false);
    n.w1 = leaf(8, 3, 3, 3, &rng, true);
    int c8[1] = {8}, c4[1] = {4}, tshape[3] = {2, 16, 20};
    kd_tensor_full(KD_F32, 1, c8, 1.0, &n.g1);
    kd_tensor_zeros(KD_F32, 1, c8, &n.b1);
    kd_tensor_zeros(KD_F32, 1, c8, &n.rm);
    kd_tensor_full(KD_F32, 1, c8, 1.0, &n.rv);
    n.g1->requires_grad = n.b1->requires_grad = true;
    n.w2 = leaf(4, 8, 1, 1, &rng, true);
    kd_tensor_zeros(KD_F32, 1, c4, &n.b2);
    n.b2->requires_grad = true;
    kd_tensor_new(KD_I32, 3, tshape, &n.target);
    for (size_t i = 0; i < kd_numel(n.target); i++)
        kd_i32(n.target)[i] = i % 17 == 0 ? 255 : (int32_t)(kd_rng_u32(&rng) % 4);
    return n;
}

static void free_net(net *n) {
    kd_tensor *all[] = {n->x, n->w1, n->g1, n->b1, n->rm, n->rv, n->w2, n->b2, n->target};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

static kd_status step(net *n, kd_tensor **logits_out, kd_tensor **loss_out) {
    kd_conv_params c1 = {2, 2, 1, 1, 1, 1, 1}, c2 = {1, 1, 0, 0, 1, 1, 1};
    kd_tensor *h1 = NULL, *h2 = NULL, *h3 = NULL, *h4 = NULL, *logits = NULL, *loss = NULL;
    kd_cross_entropy_params ce = {255, NULL, NULL, KD_REDUCE_MEAN};
    kd_status s;
    if (!(s = kd_conv2d(n->x, n->w1, NULL, &c1, &h1)) &&
        !(s = kd_batch_norm2d(h1, n->g1, n->b1, n->rm, n->rv, true, 0.1f, 1e-5f, &h2)) &&
        !(s = kd_relu(h2, &h3)) && !(s = kd_conv2d(h3, n->w2, n->b2, &c2, &h4)) &&
        !(s = kd_resize_bilinear(h4, 16, 20, false, &logits)))
        s = kd_cross_entropy(logits, n->target, &ce, &loss);
    kd_tensor_release(h1), kd_tensor_release(h2), kd_tensor_release(h3), kd_tensor_release(h4);
    *logits_out = logits;
    *loss_out = loss;
    return s;
}

static void test_memory_returns(void) {
    net n = make_net(SEED);
    kd_tensor *logits, *loss;
    CHECK_OK(step(&n, &logits, &loss)); /* a first step allocates the leaves' grads */
    CHECK_OK(kd_backward(loss, NULL));
    kd_tensor_release(logits), kd_tensor_release(loss);
    kd_memory_stats before = kd_memory();
    CHECK_OK(step(&n, &logits, &loss));
    kd_memory_stats during = kd_memory();
    CHECK(during.live_bytes > before.live_bytes, "the forward holds activations");
    CHECK_OK(kd_backward(loss, NULL));
    kd_memory_stats after_backward = kd_memory();
    /* the tape's saved tensors are gone; only the two outputs remain */
    CHECK(after_backward.live_bytes < during.live_bytes, "backward frees what the tape saved: "
          "%zu -> %zu", during.live_bytes, after_backward.live_bytes);
    kd_tensor_release(logits), kd_tensor_release(loss);
    kd_memory_stats after = kd_memory();
    CHECK(after.live_bytes == before.live_bytes && after.live_tensors == before.live_tensors,
          "live bytes back to %zu (tensors %zu), got %zu (tensors %zu)", before.live_bytes,
          before.live_tensors, after.live_bytes, after.live_tensors);
    free_net(&n);
}

static void run_twice_identical(int threads) {
    kd_set_threads(threads);
    float *first = NULL;
    size_t count = 0;
    for (int run = 0; run < 2; run++) {
        net n = make_net(SEED);
        kd_tensor *logits, *loss;
        CHECK_OK(step(&n, &logits, &loss));
        CHECK_OK(kd_backward(loss, NULL));
        kd_tensor *outs[] = {logits, n.w1->grad, n.g1->grad, n.b1->grad, n.w2->grad, n.b2->grad, n.rm, n.rv};
        size_t total = 0;
        for (size_t i = 0; i < 8; i++) total += kd_numel(outs[i]);
        float *all = malloc(sizeof(float) * total), *at = all;
        for (size_t i = 0; i < 8; i++) {
            memcpy(at, kd_f32(outs[i]), sizeof(float) * kd_numel(outs[i]));
            at += kd_numel(outs[i]);
        }
        if (run == 0) {
            first = all;
            count = total;
        } else {
            CHECK(total == count && memcmp(first, all, sizeof(float) * total) == 0,
                  "two runs with seed %u and %d threads differ", SEED, threads);
            free(all);
        }
        kd_tensor_release(logits), kd_tensor_release(loss);
        free_net(&n);
    }
    free(first);
}

static void test_long_chain(void) {
    int shape[1] = {1};
    kd_tensor *x, *y;
    kd_tensor_full(KD_F32, 1, shape, 0.0, &x);
    x->requires_grad = true;
    y = kd_tensor_retain(x);
    for (int i = 0; i < 200000; i++) { /* a chain far deeper than the C stack allows to recurse */
        kd_tensor *next;
        if (kd_affine_scalar(y, 1.0f, 1.0f, &next)) break;
        kd_tensor_release(y);
        y = next;
    }
    CHECK(kd_f32(y)[0] == 200000.0f, "chain value %g", kd_f32(y)[0]);
    kd_tensor_release(y); /* releases 200000 nodes iteratively */
    kd_tensor_release(x);
    CHECK(kd_memory().live_tensors == 0, "chain released");
}

/* The grad-ready hook (data-parallel training sends gradients while backward
 * goes on): called once per leaf, after the leaf's last contribution; a
 * failure it returns ends the backward. */
typedef struct {
    kd_tensor *seen[4];
    float grad_when_called[4];
    int calls;
    bool fail;
} hook_log;

static kd_status record_ready(kd_tensor *leaf, void *ctx) {
    hook_log *log = ctx;
    if (log->calls < 4) log->seen[log->calls] = leaf, log->grad_when_called[log->calls] = kd_f32(leaf->grad)[0];
    log->calls++;
    return log->fail ? kd_fail(KD_ERR_STATE, "hook says no") : KD_OK;
}

static void test_grad_ready_hook(void) {
    int shape[1] = {1};
    kd_tensor *a, *b, *ab, *aab, *loss;
    kd_tensor_full(KD_F32, 1, shape, 3.0, &a);
    kd_tensor_full(KD_F32, 1, shape, 5.0, &b);
    a->requires_grad = b->requires_grad = true;
    hook_log log = {0};
    kd_set_grad_ready_hook(record_ready, &log);
    /* loss = (a * b) * a: a is consumed twice, b once */
    CHECK_OK(kd_mul(a, b, &ab));
    CHECK_OK(kd_mul(ab, a, &aab));
    CHECK_OK(kd_sum(aab, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    CHECK(log.calls == 2, "hook called %d times for 2 leaves", log.calls);
    int ia = log.seen[0] == a ? 0 : 1, ib = 1 - ia;
    CHECK(log.seen[ia] == a && log.seen[ib] == b, "the hook names both leaves");
    CHECK(log.grad_when_called[ia] == 30.0f, "a's gradient complete (2ab = 30) when called: %g", log.grad_when_called[ia]);
    CHECK(log.grad_when_called[ib] == 9.0f, "b's gradient complete (a^2 = 9) when called: %g", log.grad_when_called[ib]);
    CHECK(a->grad_uses == 0 && b->grad_uses == 0, "no count left behind");
    kd_tensor_release(ab), kd_tensor_release(aab), kd_tensor_release(loss);
    /* a failing hook fails the backward */
    log = (hook_log){.fail = true};
    CHECK_OK(kd_mul(a, b, &ab));
    CHECK_OK(kd_sum(ab, &loss));
    CHECK_FAILS(kd_backward(loss, NULL), KD_ERR_STATE, "hook says no");
    CHECK(a->grad_uses == 0 && b->grad_uses == 0, "no count left behind after a failure");
    kd_set_grad_ready_hook(NULL, NULL);
    kd_tensor_release(ab), kd_tensor_release(loss), kd_tensor_release(a), kd_tensor_release(b);
}

/* Zeros pending (internal.h): read, they are zeros whatever the memory held
 * before; only a whole tensor is taken, once; an op that takes them writes
 * 0.0f + its value, so a gradient of -0 lands as +0 as it did when added
 * into zeros, and one accumulator for both operands (x + x) gets both. */
static void test_pending_zeros(void) {
    int shape[4] = {2, 16, 5, 7};
    size_t n = 2 * 16 * 5 * 7;
    kd_tensor *junk, *t, *view;
    CHECK_OK(kd_tensor_full(KD_F32, 4, shape, 7.0, &junk));
    kd_tensor_release(junk); /* the allocator keeps its buffer for the next tensor of this size */
    CHECK_OK(kd_tensor_zeros_pending(4, shape, &t));
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) nonzero += kd_f32(t)[i] != 0.0f || signbit(kd_f32(t)[i]);
    CHECK(nonzero == 0, "pending zeros read as +0: %zu are not", nonzero);
    CHECK(!kd_take_zeros(t), "zeros already read cannot be taken");
    kd_tensor_release(t);
    CHECK_OK(kd_tensor_zeros_pending(4, shape, &t));
    CHECK_OK(kd_narrow_batch(t, 1, 1, &view));
    CHECK(!kd_take_zeros(view), "a part of the tensor cannot take its zeros");
    CHECK(kd_take_zeros(t), "the whole tensor takes its pending zeros");
    CHECK(!kd_take_zeros(t), "and only once");
    kd_tensor_release(view), kd_tensor_release(t);

    /* relu(x + x), whose backward takes both operands' accumulators: the
     * same one here. Gradients of +-0 and 1 over sums > 0. */
    int flat[1] = {4};
    kd_tensor *x, *sum, *y, *g;
    CHECK_OK(kd_tensor_full(KD_F32, 1, flat, 1.0, &x));
    x->requires_grad = true;
    CHECK_OK(kd_add(x, x, &sum));
    CHECK_OK(kd_relu(sum, &y));
    CHECK_OK(kd_tensor_new(KD_F32, 1, flat, &g));
    const float given[4] = {-0.0f, 0.0f, 1.0f, -0.0f};
    for (int i = 0; i < 4; i++) kd_f32(g)[i] = given[i];
    CHECK_OK(kd_backward(y, g));
    const float *gx = kd_f32(x->grad);
    CHECK(gx[0] == 0.0f && !signbit(gx[0]) && !signbit(gx[1]) && !signbit(gx[3]),
          "a gradient of -0 lands as +0 (got %g %g %g)", gx[0], gx[1], gx[3]);
    CHECK(gx[2] == 2.0f, "d relu(x + x) / dx = 2, got %g", gx[2]);
    kd_tensor *all[] = {x, sum, y, g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

int main(void) {
    kd_set_threads(2);
    test_pending_zeros();
    test_grad_ready_hook();
    test_accumulation();
    test_changed_after_saving();
    test_no_grad();
    test_memory_returns();
    run_twice_identical(1);
    run_twice_identical(2);
    test_long_chain();
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes,
          m.live_tensors);
    return check_done("test_autograd");
}
