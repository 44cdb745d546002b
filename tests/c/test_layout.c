/* test_layout.c - the blocked layout convolutions leave their outputs in
 * (core/engine/layout.c) changes no result: every chain of ops gives the
 * same bits with it on and off, a blocked tensor reads as NCHW through any
 * view, also when no buffer can be had for the conversion, and a blocked
 * input feeds a convolution that records gradients; a gradient computed
 * blocked adds into an NCHW one as its naive twin does; in training, the
 * outputs stay blocked and the gradients are those of NCHW; so do batch
 * norms on fewer channel blocks than threads, whose sums split by lanes,
 * and a batch norm's backward run wholly blocked. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"

static kd_tensor *vector(int c, float first, float step) {
    kd_tensor *t;
    if (kd_tensor_new(KD_F32, 1, &c, &t)) abort();
    for (int i = 0; i < c; i++) kd_f32(t)[i] = first + step * i;
    return t;
}

static const kd_conv_params same3 = {1, 1, 1, 1, 1, 1, 1}, dilated = {1, 1, 2, 2, 2, 2, 1},
                            strided = {2, 2, 1, 1, 1, 1, 1};

/* Parameters of the chain below, one set for both runs. */
typedef struct {
    kd_tensor *w1, *w2, *b2, *w3, *b3, *gamma, *beta, *mean, *var, *mean2, *var2;
} chain_params;

/* conv (stride 2) -> batch norm in training mode (running statistics
 * updated) + ReLU -> dilated conv with bias -> add the first conv's output -> ReLU ->
 * batch norm in evaluation mode -> conv with bias to 5 channels: every op
 * that knows the blocked layout, and an output whose channels do not fill a
 * block. *blocked_seen: how many of the intermediate outputs were blocked. */
static kd_tensor *chain(kd_tensor *x, chain_params *p, int *blocked_seen) {
    kd_tensor *a, *b, *c, *d, *e, *f, *g;
    CHECK_OK(kd_conv2d(x, p->w1, NULL, &strided, &a));
    CHECK_OK(kd_batch_norm2d_relu(a, p->gamma, p->beta, p->mean, p->var, true, 0.1f, 1e-5f, &b));
    CHECK_OK(kd_conv2d(b, p->w2, p->b2, &dilated, &c));
    CHECK_OK(kd_add(c, a, &d));
    CHECK_OK(kd_relu(d, &e));
    CHECK_OK(kd_batch_norm2d(e, p->gamma, p->beta, p->mean2, p->var2, false, 0.1f, 1e-5f, &f));
    *blocked_seen = (kd_blocked(a) > 0) + (kd_blocked(b) > 0) + (kd_blocked(c) > 0) + (kd_blocked(d) > 0) +
                    (kd_blocked(e) > 0) + (kd_blocked(f) > 0);
    CHECK_OK(kd_conv2d(f, p->w3, p->b3, &same3, &g));
    kd_tensor *all[] = {a, b, c, d, e, f};
    for (int i = 0; i < 6; i++) kd_tensor_release(all[i]);
    return g;
}

static void test_chain_check_same_bits(void) {
    kd_tensor *x = check_randn4(3, 3, 21, 30, 1);
    chain_params p = {check_randn4(32, 3, 3, 3, 2), check_randn4(32, 32, 3, 3, 3), vector(32, 0.7f, -0.05f), check_randn4(5, 32, 3, 3, 4), vector(5, -0.2f, 0.1f),
                      vector(32, 0.5f, 0.03f), vector(32, -0.1f, 0.01f), vector(32, 0, 0), vector(32, 1, 0),
                      vector(32, 0.3f, -0.02f), vector(32, 2.0f, 0.1f)};
    bool grad = kd_set_grad_enabled(false);
    kd_blocked_layout_use(false);
    int seen_plain, seen_blocked;
    kd_tensor *plain = chain(x, &p, &seen_plain);
    kd_tensor *mean_after = vector(32, 0, 0), *var_after = vector(32, 0, 0);
    CHECK_OK(kd_copy(mean_after, p.mean));
    CHECK_OK(kd_copy(var_after, p.var));
    CHECK_OK(kd_fill(p.mean, 0));
    CHECK_OK(kd_fill(p.var, 1));
    kd_blocked_layout_use(true);
    kd_tensor *blocked = chain(x, &p, &seen_blocked);
    CHECK(seen_plain == 0, "with the layout off, %d outputs were blocked", seen_plain);
    if (kd_conv_dnnl_active())
        CHECK(seen_blocked == 6, "with the layout on, %d of the 6 inner outputs were blocked", seen_blocked);
    CHECK(kd_blocked(blocked) == 0, "5 channels fill no block: the last output is NCHW");
    CHECK(check_same_bits(plain, blocked), "the chain's output differs between the layouts");
    CHECK(check_same_bits(mean_after, p.mean) && check_same_bits(var_after, p.var),
          "the running statistics a blocked batch norm updates differ");
    kd_set_grad_enabled(grad);
    kd_tensor *all[] = {x, plain, blocked, mean_after, var_after, p.w1, p.w2, p.b2, p.w3, p.b3, p.gamma, p.beta,
                        p.mean, p.var, p.mean2, p.var2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

/* A blocked output read through views, and converted image by image when
 * the allocator can give no buffer as large as it. */
static void test_views_and_conversion(void) {
    kd_tensor *x = check_randn4(4, 16, 7, 9, 5), *w = check_randn4(16, 16, 3, 3, 6);
    bool grad = kd_set_grad_enabled(false);
    kd_blocked_layout_use(false);
    kd_tensor *want, *got, *view, *batch;
    CHECK_OK(kd_conv2d(x, w, NULL, &same3, &want));
    kd_blocked_layout_use(true);
    CHECK_OK(kd_conv2d(x, w, NULL, &same3, &got));
    int block = kd_blocked(got);
    if (kd_conv_dnnl_active()) CHECK(block == 16 || block == 8, "the output is blocked (block %d)", block);
    int flat[2] = {4, 16 * 7 * 9};
    CHECK_OK(kd_reshape(got, 2, flat, &view));
    CHECK(kd_blocked(view) == 0, "a view of another shape reads NCHW");
    CHECK(kd_blocked(got) == block, "asking a view leaves the storage as it was");
    CHECK_OK(kd_narrow_batch(got, 2, 2, &batch));
    CHECK(kd_get(batch, 5) == kd_get(want, 2 * 16 * 7 * 9 + 5), "a batch slice of a blocked tensor reads NCHW");
    CHECK(kd_blocked(got) == 0, "reading converted the storage");
    CHECK(check_same_bits(view, want), "the reshaped view reads the values in NCHW order");
    kd_tensor_release(got);

    /* no buffer for the conversion: it goes image by image in place */
    CHECK_OK(kd_conv2d(x, w, NULL, &same3, &got));
    kd_memory_set_limit(kd_memory().live_bytes + 64);
    CHECK(check_same_bits(got, want), "converted image by image, the values are NCHW");
    kd_memory_set_limit(0);
    kd_set_grad_enabled(grad);
    kd_tensor *all[] = {x, w, want, got, view, batch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

/* Where element (n, c, position h) of an N x C x HW tensor lies in nChw<block>c. */
static size_t blocked_at(int n, int c, size_t h, int C, size_t HW, int block) {
    return (((size_t)n * (C / block) + c / block) * HW + h) * block + c % block;
}

/* kd_blocked_add_to_plain against its naive twin on 2 images of 2 blocks
 * of channels; onto pending zeros (internal.h), what `to` held is not read,
 * and -0 lands as +0 as when added into zeros. */
static void check_add_to_plain(int block, size_t HW, bool onto_zeros) {
    int N = 2, C = 2 * block;
    size_t n_all = (size_t)N * C * HW;
    float *blocked = malloc(n_all * sizeof(float)), *got = malloc(n_all * sizeof(float));
    float *want = malloc(n_all * sizeof(float));
    for (size_t i = 0; i < n_all; i++) {
        blocked[i] = i % 5 == 0 ? -0.0f : (float)((i * 7919) % 1000) / 7.0f;
        got[i] = want[i] = (float)((i * 104729) % 997) / 3.0f;
        if (onto_zeros) want[i] = 0.0f;
    }
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t h = 0; h < HW; h++)
                want[((size_t)n * C + c) * HW + h] += blocked[blocked_at(n, c, h, C, HW, block)];
    kd_blocked_add_to_plain(blocked, got, N, C, HW, block, onto_zeros);
    CHECK(memcmp(got, want, n_all * sizeof(float)) == 0, "nChw%dc added to NCHW%s, planes of %zu", block,
          onto_zeros ? " (onto pending zeros)" : "", HW);
    free(blocked), free(got), free(want);
}

/* Both blocks, plane sizes with and without a tail past the last 8. */
static void test_blocked_add_to_plain(void) {
    const int blocks[2] = {8, 16}, planes[5] = {1, 7, 8, 63, 70};
    for (int b = 0; b < 2; b++)
        for (int p = 0; p < 5; p++) {
            check_add_to_plain(blocks[b], (size_t)planes[p], false);
            check_add_to_plain(blocks[b], (size_t)planes[p], true);
        }
}

/* A frozen part's blocked output into a convolution that learns: the
 * gradients are those of the NCHW run. */
static void test_blocked_input_with_gradients(void) {
    kd_tensor *results[2][2];
    for (int on = 0; on < 2; on++) {
        kd_blocked_layout_use(on);
        kd_tensor *x = check_randn4(2, 3, 12, 10, 7), *frozen = check_randn4(16, 3, 3, 3, 8), *w = check_randn4(8, 16, 3, 3, 9);
        w->requires_grad = true;
        kd_tensor *features, *y, *sq, *loss;
        bool grad = kd_set_grad_enabled(false);
        CHECK_OK(kd_conv2d(x, frozen, NULL, &same3, &features));
        kd_set_grad_enabled(grad);
        if (on && kd_conv_dnnl_active()) CHECK(kd_blocked(features) > 0, "the frozen part's output is blocked");
        features->requires_grad = true; /* its gradient too: the input gradient of the conv */
        CHECK_OK(kd_conv2d(features, w, NULL, &same3, &y));
        CHECK_OK(kd_mul(y, y, &sq));
        CHECK_OK(kd_sum(sq, &loss));
        CHECK_OK(kd_backward(loss, NULL));
        results[on][0] = kd_tensor_retain(w->grad);
        results[on][1] = kd_tensor_retain(features->grad);
        kd_tensor *all[] = {x, frozen, w, features, y, sq, loss};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
    }
    CHECK(check_same_bits(results[0][0], results[1][0]), "the weight gradient differs with a blocked input");
    CHECK(check_same_bits(results[0][1], results[1][1]), "the input gradient differs with a blocked input");
    for (int i = 0; i < 4; i++) kd_tensor_release(results[i / 2][i % 2]);
    kd_blocked_layout_use(true);
}

/* The same values (== : a gradient oneDNN writes straight into its
 * accumulator may hold -0 where adding into zeros gives +0). */
static bool same_values(const kd_tensor *a, const kd_tensor *b) {
    if (kd_numel(a) != kd_numel(b)) return false;
    const float *x = kd_f32(a), *y = kd_f32(b);
    for (size_t i = 0; i < kd_numel(a); i++)
        if (!(x[i] == y[i])) return false;
    return true;
}

/* Training with gradients: the chain of test_chain_check_same_bits with
 * its batch norms on batch statistics, a loss, backward. With the layout
 * on, every inner output stays blocked (the gradients flow back blocked:
 * batch norm's, ReLU's and the sum's backward in it), and the loss and
 * every gradient, the input's too, are those of the NCHW run. */
enum { TRAINED = 8 };
static void train_chain(kd_tensor *x, chain_params *p, kd_tensor *out[TRAINED + 1], int *blocked_seen) {
    kd_tensor *a, *b, *c, *d, *e, *f, *sq, *loss;
    CHECK_OK(kd_conv2d(x, p->w1, NULL, &strided, &a));
    CHECK_OK(kd_batch_norm2d_relu(a, p->gamma, p->beta, p->mean, p->var, true, 0.1f, 1e-5f, &b));
    CHECK_OK(kd_conv2d(b, p->w2, p->b2, &dilated, &c));
    CHECK_OK(kd_add(c, a, &d));
    CHECK_OK(kd_relu(d, &e));
    CHECK_OK(kd_conv2d(e, p->w3, p->b3, &same3, &f));
    *blocked_seen = (kd_blocked(a) > 0) + (kd_blocked(b) > 0) + (kd_blocked(c) > 0) + (kd_blocked(d) > 0) +
                    (kd_blocked(e) > 0);
    CHECK_OK(kd_mul(f, f, &sq));
    CHECK_OK(kd_sum(sq, &loss));
    CHECK_OK(kd_backward(loss, NULL));
    kd_tensor *learnt[TRAINED] = {x, p->w1, p->w2, p->b2, p->w3, p->b3, p->gamma, p->beta};
    for (int i = 0; i < TRAINED; i++) {
        out[i] = learnt[i]->grad;
        learnt[i]->grad = NULL;
    }
    out[TRAINED] = loss;
    kd_tensor *all[] = {a, b, c, d, e, f, sq};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
}

static void test_training_with_gradients(void) {
    kd_tensor *x = check_randn4(3, 3, 21, 30, 11);
    chain_params p = {check_randn4(32, 3, 3, 3, 12), check_randn4(32, 32, 3, 3, 13), vector(32, 0.7f, -0.05f),
                      check_randn4(5, 32, 3, 3, 14), vector(5, -0.2f, 0.1f), vector(32, 0.5f, 0.03f),
                      vector(32, -0.1f, 0.01f), vector(32, 0, 0), vector(32, 1, 0), NULL, NULL};
    kd_tensor *learnt[TRAINED] = {x, p.w1, p.w2, p.b2, p.w3, p.b3, p.gamma, p.beta};
    for (int i = 0; i < TRAINED; i++) learnt[i]->requires_grad = true;
    kd_tensor *got[2][TRAINED + 1];
    int seen[2];
    for (int on = 0; on < 2; on++) {
        kd_blocked_layout_use(on);
        CHECK_OK(kd_fill(p.mean, 0));
        CHECK_OK(kd_fill(p.var, 1));
        train_chain(x, &p, got[on], &seen[on]);
    }
    CHECK(seen[0] == 0, "with the layout off, %d outputs were blocked in training", seen[0]);
    if (kd_conv_dnnl_active())
        CHECK(seen[1] == 5, "with the layout on, %d of the 5 inner outputs were blocked in training", seen[1]);
    const char *names[TRAINED + 1] = {"input", "w1", "w2", "b2", "w3", "b3", "gamma", "beta", "loss"};
    for (int i = 0; i <= TRAINED; i++) {
        CHECK(got[0][i] && got[1][i] && same_values(got[0][i], got[1][i]),
              "training: the %s%s differs between the layouts", names[i], i < TRAINED ? "'s gradient" : "");
        kd_tensor_release(got[0][i]), kd_tensor_release(got[1][i]);
    }
    kd_blocked_layout_use(true);
    for (int i = 0; i < TRAINED; i++) kd_tensor_release(learnt[i]);
    kd_tensor_release(p.mean), kd_tensor_release(p.var);
}

/* Batch norms whose channels make fewer blocks than there are threads (16
 * and 48 channels: 1 and 3 blocks of 16, 2 and 6 of 8) split each block's
 * sums by lanes (op_norm.c); at 1, 2, 3, 5 and 16 threads, their outputs,
 * running statistics and gradients are those of NCHW, value for value.
 * Large enough to run in parallel (KD_PARALLEL_MIN), with planes of 37 x 53
 * (no multiple of the 8 lanes). */
static void test_batch_norm_split_by_lanes(void) {
    int threads[] = {1, 2, 3, 5, 16}, channels[] = {16, 48};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++)
        for (int k = 0; k < 2; k++) {
            int C = channels[k];
            kd_set_threads(threads[t]);
            kd_tensor *got[2][6];
            for (int on = 0; on < 2; on++) {
                kd_blocked_layout_use(on);
                kd_tensor *x = check_randn4(2, 3, 37, 53, 21), *w = check_randn4(C, 3, 3, 3, 22);
                kd_tensor *gamma = vector(C, 0.5f, 0.03f), *beta = vector(C, -0.1f, 0.01f);
                kd_tensor *mean = vector(C, 0, 0), *var = vector(C, 1, 0), *a, *b, *c, *sq, *loss;
                w->requires_grad = gamma->requires_grad = beta->requires_grad = true;
                CHECK_OK(kd_conv2d(x, w, NULL, &same3, &a));
                CHECK_OK(kd_batch_norm2d_relu(a, gamma, beta, mean, var, true, 0.1f, 1e-5f, &b));
                CHECK_OK(kd_batch_norm2d(b, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f, &c));
                if (on && kd_conv_dnnl_active())
                    CHECK(kd_blocked(a) && kd_blocked(b) && kd_blocked(c), "%d channels: the batch norms ran blocked", C);
                CHECK_OK(kd_mul(c, a, &sq));
                CHECK_OK(kd_sum(sq, &loss));
                CHECK_OK(kd_backward(loss, NULL));
                kd_tensor *results[6] = {c, mean, var, w->grad, gamma->grad, beta->grad};
                for (int i = 0; i < 6; i++) got[on][i] = kd_tensor_retain(results[i]);
                kd_tensor *all[] = {x, w, gamma, beta, mean, var, a, b, c, sq, loss};
                for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
            }
            const char *names[6] = {"output", "running mean", "running variance", "weight gradient",
                                    "gamma gradient", "beta gradient"};
            for (int i = 0; i < 6; i++) {
                CHECK(got[0][i] && got[1][i] && same_values(got[0][i], got[1][i]),
                      "%d channels, %d threads: the %s differs between the layouts", C, threads[t], names[i]);
                kd_tensor_release(got[0][i]), kd_tensor_release(got[1][i]);
            }
        }
    kd_blocked_layout_use(true);
    kd_set_threads(2);
}

/* A copy of the NCHW tensor t in nChw<block>c, marked so (kd_set_blocked). */
static kd_tensor *blocked_copy(const kd_tensor *t, int block) {
    int N = t->shape[0], C = t->shape[1];
    size_t HW = (size_t)t->shape[2] * t->shape[3];
    kd_tensor *b;
    if (kd_tensor_new(KD_F32, 4, t->shape, &b)) abort();
    const float *from = kd_f32(t);
    float *to = kd_data_as_stored(b);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (size_t h = 0; h < HW; h++)
                to[blocked_at(n, c, h, C, HW, block)] = from[((size_t)n * C + c) * HW + h];
    kd_set_blocked(b, block);
    return b;
}

/* The blocked batch norm's backward (op_norm.c's block_grads), where its
 * input, output and output gradient are all blocked: the chains above feed
 * their batch norms NCHW gradients (a loss's, a sum's), and only the zoo's
 * networks (test_conv_backends.lua) reached it. In both blocks of 8 and
 * 16 whatever the CPU, with and without the ReLU, in training and on
 * running statistics, at 1 to 3 threads: the input's, weight's and bias's
 * gradients are those of NCHW, value for value. 48 channels, planes of
 * 13 x 21 (no multiple of the 8 lanes). */
static void test_batch_norm_backward_blocked(void) {
    const int blocks[2] = {8, 16};
    for (int k = 0; k < 2; k++)
        for (int relu = 0; relu < 2; relu++)
            for (int training = 0; training < 2; training++)
                for (int threads = 1; threads <= 3; threads++) {
                    int block = blocks[k], C = 48;
                    kd_set_threads(threads);
                    kd_tensor *x0 = check_randn4(2, C, 13, 21, 31), *g0 = check_randn4(2, C, 13, 21, 32);
                    kd_tensor *got[2][4];
                    for (int on = 0; on < 2; on++) {
                        kd_tensor *x = on ? blocked_copy(x0, block) : kd_tensor_retain(x0);
                        kd_tensor *g = on ? blocked_copy(g0, block) : kd_tensor_retain(g0);
                        kd_tensor *gamma = vector(C, 0.5f, 0.03f), *beta = vector(C, -0.1f, 0.01f);
                        kd_tensor *mean = vector(C, 0.1f, 0.01f), *var = vector(C, 1.5f, 0.02f), *y;
                        x->requires_grad = gamma->requires_grad = beta->requires_grad = true;
                        CHECK_OK(relu ? kd_batch_norm2d_relu(x, gamma, beta, mean, var, training, 0.1f, 1e-5f, &y)
                                      : kd_batch_norm2d(x, gamma, beta, mean, var, training, 0.1f, 1e-5f, &y));
                        if (on) CHECK(kd_blocked(y) == block, "nChw%dc: the batch norm's output is blocked", block);
                        CHECK_OK(kd_backward(y, g)); /* a blocked seed stays blocked (autograd.c) */
                        kd_tensor *results[4] = {x->grad, gamma->grad, beta->grad, y};
                        for (int i = 0; i < 4; i++) got[on][i] = kd_tensor_retain(results[i]);
                        kd_tensor *all[] = {x, g, gamma, beta, mean, var, y};
                        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kd_tensor_release(all[i]);
                    }
                    const char *names[4] = {"input gradient", "weight gradient", "bias gradient", "output"};
                    for (int i = 0; i < 4; i++) {
                        CHECK(got[0][i] && got[1][i] && same_values(got[0][i], got[1][i]),
                              "nChw%dc%s%s, %d threads: the %s differs from NCHW's", block, relu ? ", ReLU" : "",
                              training ? ", training" : "", threads, names[i]);
                        kd_tensor_release(got[0][i]), kd_tensor_release(got[1][i]);
                    }
                    kd_tensor_release(x0), kd_tensor_release(g0);
                }
    kd_set_threads(2);
}

int main(void) {
    kd_set_threads(2);
    test_chain_check_same_bits();
    test_views_and_conversion();
    test_blocked_add_to_plain();
    test_blocked_input_with_gradients();
    test_training_with_gradients();
    test_batch_norm_split_by_lanes();
    test_batch_norm_backward_blocked();
    kd_memory_stats m = kd_memory();
    CHECK(m.live_bytes == 0 && m.live_tensors == 0, "leaked %zu bytes in %zu tensors", m.live_bytes,
          m.live_tensors);
    return check_done("test_layout");
}
