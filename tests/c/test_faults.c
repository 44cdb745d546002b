/* test_faults.c - allocation failure at every allocation of a training step.
 *
 * The core's malloc, calloc, realloc and aligned_alloc are wrapped at link
 * time (-Wl,--wrap, set in the Makefile for this test only; the shared
 * libraries, OpenBLAS and libpng, keep theirs): after a countdown every
 * allocation fails. A step (convolution, batch norm, ReLU, a 1x1
 * convolution, cross-entropy, backward, SGD with momentum) is run with the
 * countdown at 0, 1, 2, ... until it no longer reaches it. Each failed step
 * must return KD_ERR_MEMORY with a message, leave no tensor and no byte
 * behind, and the next clean step must give the reference loss: nothing
 * the failure touched stays broken. Run plain and under ASan + UBSan. */
#include <math.h>
#include <stdlib.h>

#include "check.h"

/* ---- the wrapped allocator ------------------------------------------------ */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_aligned_alloc(size_t alignment, size_t size);

static long countdown = -1; /* allocations left before failing; -1: never fail */
static long allocations;    /* counted while the countdown runs */

static int fail_now(void) {
    if (countdown < 0) return 0;
    allocations++;
    if (countdown == 0) return 1;
    countdown--;
    return 0;
}

void *__wrap_malloc(size_t size) { return fail_now() ? NULL : __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) { return fail_now() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t size) { return fail_now() ? NULL : __real_realloc(p, size); }
void *__wrap_aligned_alloc(size_t a, size_t size) { return fail_now() ? NULL : __real_aligned_alloc(a, size); }

/* ---- the model and one step ----------------------------------------------- */

enum { W1, B1, GAMMA, BETA, W2, B2, PARAMS };

typedef struct {
    kd_tensor *param[PARAMS], *momentum[PARAMS], *running_mean, *running_var;
    kd_tensor *images, *labels;
} model;

static kd_tensor *new_tensor(int ndim, int a, int b, int c, int d, kd_rng *rng, float fill) {
    int shape[4] = {a, b, c, d};
    kd_tensor *t;
    kd_tensor_new(KD_F32, ndim, shape, &t);
    if (rng) kd_fill_normal(t, 0, 0.3f, rng);
    else kd_fill(t, fill);
    return t;
}

static void model_init(model *m) {
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    m->param[W1] = new_tensor(4, 8, 3, 3, 3, &rng, 0);
    m->param[B1] = new_tensor(1, 8, 0, 0, 0, NULL, 0.1f);
    m->param[GAMMA] = new_tensor(1, 8, 0, 0, 0, NULL, 1);
    m->param[BETA] = new_tensor(1, 8, 0, 0, 0, NULL, 0);
    m->param[W2] = new_tensor(4, 5, 8, 1, 1, &rng, 0);
    m->param[B2] = new_tensor(1, 5, 0, 0, 0, NULL, 0);
    for (int i = 0; i < PARAMS; i++) {
        m->param[i]->requires_grad = true;
        kd_tensor_zeros_like(m->param[i], &m->momentum[i]);
    }
    m->running_mean = new_tensor(1, 8, 0, 0, 0, NULL, 0);
    m->running_var = new_tensor(1, 8, 0, 0, 0, NULL, 1);
    m->images = new_tensor(4, 2, 3, 12, 16, &rng, 0);
    int lshape[3] = {2, 12, 16};
    kd_tensor_new(KD_I32, 3, lshape, &m->labels);
    for (size_t i = 0; i < kd_numel(m->labels); i++) { /* classes 0..4 and some ignored pixels */
        int v = (int)((i * 7 + i / 16) % 6);
        kd_i32(m->labels)[i] = v == 5 ? 255 : v;
    }
}

static void model_free(model *m) {
    for (int i = 0; i < PARAMS; i++) kd_tensor_release(m->param[i]), kd_tensor_release(m->momentum[i]);
    kd_tensor_release(m->running_mean), kd_tensor_release(m->running_var);
    kd_tensor_release(m->images), kd_tensor_release(m->labels);
}

/* Copies every value of src into dst (parameters, buffers, statistics). */
static void model_copy(model *dst, const model *src) {
    for (int i = 0; i < PARAMS; i++) {
        kd_copy(dst->param[i], src->param[i]), kd_copy(dst->momentum[i], src->momentum[i]);
        if (dst->param[i]->grad) kd_fill(dst->param[i]->grad, 0);
    }
    kd_copy(dst->running_mean, src->running_mean), kd_copy(dst->running_var, src->running_var);
}

/* One training step; *loss the loss before the update. Whatever fails, the
 * step releases what it made. */
static kd_status train_step(model *m, float *loss) {
    kd_tensor *h1 = NULL, *h2 = NULL, *h3 = NULL, *logits = NULL, *l = NULL;
    kd_conv_params same = {1, 1, 1, 1, 1, 1, 1}, one = {1, 1, 0, 0, 1, 1, 1};
    kd_cross_entropy_params ce = {255, NULL, NULL, KD_REDUCE_MEAN};
    kd_status s;
    for (int i = 0; i < PARAMS; i++)
        if (m->param[i]->grad) kd_fill(m->param[i]->grad, 0);
    if ((s = kd_conv2d(m->images, m->param[W1], m->param[B1], &same, &h1)) ||
        (s = kd_batch_norm2d(h1, m->param[GAMMA], m->param[BETA], m->running_mean, m->running_var, true, 0.1f, 1e-5f,
                             &h2)) ||
        (s = kd_relu(h2, &h3)) || (s = kd_conv2d(h3, m->param[W2], m->param[B2], &one, &logits)) ||
        (s = kd_cross_entropy(logits, m->labels, &ce, &l)) || (s = kd_backward(l, NULL)))
        goto done;
    *loss = kd_f32(l)[0];
    for (int i = 0; i < PARAMS && !s; i++)
        s = kd_sgd_step(m->param[i], m->param[i]->grad, m->momentum[i], 0.1f, 0.9f, 0, 1e-4f, false, false);
done:
    kd_tensor_release(h1), kd_tensor_release(h2), kd_tensor_release(h3);
    kd_tensor_release(logits), kd_tensor_release(l);
    return s;
}

int main(void) {
    kd_set_threads(1); /* one thread: the same allocations in the same order every time */
    model start, m;
    model_init(&start);
    model_init(&m);
    float first, reference;
    CHECK_OK(train_step(&start, &first)); /* every gradient buffer exists from here on */
    model_copy(&m, &start);
    CHECK_OK(train_step(&m, &reference));
    model_copy(&m, &start);
    kd_memory_empty_cache();
    kd_memory_stats base = kd_memory();
    int failures = 0, trials = 0;
    for (long k = 0;; k++) {
        int reached_any = 0;
        for (int cached = 0; cached <= 1; cached++) { /* storage from the system, then from the cache */
            if (!cached) kd_memory_empty_cache();
            else train_step(&m, &(float){0}), model_copy(&m, &start);
            allocations = 0;
            countdown = k;
            float loss = 0;
            kd_status s = train_step(&m, &loss);
            int reached = countdown == 0 && allocations > k;
            countdown = -1;
            reached_any |= reached;
            trials++;
            if (s) {
                failures++;
                CHECK(s == KD_ERR_MEMORY && kd_error_message()[0],
                      "allocation %ld failed (cache %d): %s \"%s\", expected a memory error", k, cached,
                      kd_status_name(s), kd_error_message());
            } else { /* not reached, or an allocation with a fallback failed */
                CHECK(loss == reference, "a step past failing allocation %ld (cache %d) gave loss %.9g, not %.9g", k,
                      cached, loss, reference);
            }
            kd_memory_stats after = kd_memory();
            CHECK(after.live_tensors == base.live_tensors && after.live_bytes == base.live_bytes,
                  "allocation %ld failed (cache %d): %zu tensors of %zu bytes left, before %zu of %zu", k, cached,
                  after.live_tensors, after.live_bytes, base.live_tensors, base.live_bytes);
            model_copy(&m, &start);
            float again = 0;
            CHECK_OK(train_step(&m, &again));
            CHECK(again == reference, "after failing allocation %ld (cache %d) a clean step gives %.9g, not %.9g",
                  k, cached, again, reference);
            model_copy(&m, &start);
        }
        if (!reached_any) break; /* the step ran to its end without meeting the countdown */
    }
    CHECK(failures > 20, "the step met failing allocations only %d times of %d: the wrapping is not working",
          failures, trials);
    printf("fault injection: %d failing allocations of a training step, each a clear error, nothing leaked\n",
           failures);
    model_free(&start), model_free(&m);
    kd_memory_empty_cache();
    kd_memory_stats end = kd_memory();
    CHECK(end.live_bytes == 0 && end.live_tensors == 0, "leaked %zu bytes in %zu tensors", end.live_bytes,
          end.live_tensors);
    return check_done("test_faults");
}
