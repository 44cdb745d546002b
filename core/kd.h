/* kd.h - the one public header of kdseg's C core: tensors, autograd, ops.
 *
 * Conventions that hold everywhere:
 *   - Tensors are NCHW, at most 4-D, always contiguous (views keep that: a
 *     reshape or a slice of the batch dimension shares storage at an offset).
 *   - Every function that can fail returns a kd_status; on failure it has
 *     allocated nothing and kd_error_message() names the op and the shapes.
 *   - Functions that make a tensor hand the caller one reference (*out);
 *     kd_tensor_release drops it. Inputs are borrowed, never consumed.
 *   - Differentiable ops record a node on the tape when grad mode is on and
 *     an input needs a gradient; kd_backward walks it and frees what it saved.
 * This header never includes lua.h: the core is a C library of its own. */
#ifndef KD_H
#define KD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KD_MAX_DIMS 4

/* ---- status -------------------------------------------------------------- */

typedef enum {
    KD_OK = 0,
    KD_ERR_ARG,    /* a bad argument value (negative stride, p outside [0,1)) */
    KD_ERR_SHAPE,  /* shapes that do not fit together */
    KD_ERR_DTYPE,  /* a tensor of the wrong element type */
    KD_ERR_MEMORY, /* an allocation failed */
    KD_ERR_IO,     /* a file could not be opened, read or written */
    KD_ERR_FORMAT, /* a file's content is malformed */
    KD_ERR_STATE,  /* a call in the wrong state (backward twice, no grad) */
} kd_status;

/* The message of the last failure on this thread. */
const char *kd_error_message(void);
/* Sets the message and returns code, so a check reads `return kd_fail(...)`. */
kd_status kd_fail(kd_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *kd_status_name(kd_status code);
/* The KDSEG_* variables of the environment (environment.c lists them and
 * their choices): KD_ERR_ARG naming the first that is not a kdseg setting
 * or holds a value not among its choices. A host calls it before its first
 * op, since the ops read their settings lazily. */
kd_status kd_environment_check(void);

/* ---- tensors ------------------------------------------------------------- */

typedef enum { KD_F32 = 0, KD_I32, KD_U8, KD_I64 } kd_dtype;

size_t kd_dtype_size(kd_dtype dtype);
const char *kd_dtype_name(kd_dtype dtype); /* "float32", "int32", ... */

typedef struct kd_storage {
    void *data;
    size_t bytes;
    int refcount;
    unsigned version; /* bumped by every in-place change: see kd_modified */
    /* 0: the data is NCHW. 8 or 16: a convolution wrote it in the blocked
     * layout its kernels use (nChw16c: channels in blocks of 16 innermost)
     * for the shape block_dims, so that the next convolution, batch norm or
     * elementwise op reads it without a reorder; kd_data converts it back to
     * NCHW in place at the first plain read (see kd_blocked).
     * KD_ZEROS_PENDING (-1): the first pending_bytes read as zeros but were
     * not written yet (a gradient accumulator, internal.h): kd_data zeroes
     * them at the first read, an op that writes them all takes them as they
     * are. */
    int block;
    int block_dims[4];
    size_t pending_bytes;
} kd_storage;

typedef struct kd_node kd_node;

typedef struct kd_tensor {
    kd_storage *storage;
    size_t offset; /* in elements from storage->data */
    int ndim;
    int shape[KD_MAX_DIMS];
    kd_dtype dtype;
    int refcount;
    bool requires_grad;      /* set on leaves (parameters, inputs) */
    struct kd_tensor *grad;  /* accumulated gradient of a leaf, or NULL */
    kd_node *grad_fn;        /* the tape node that made it, or NULL */
    int grad_uses;           /* during backward: consumers of this leaf yet to run */
} kd_tensor;

/* The data as stored, NCHW or blocked: for the ops that know both layouts
 * and asked kd_blocked which it is. */
static inline void *kd_data_as_stored(const kd_tensor *t) {
    return (char *)t->storage->data + t->offset * kd_dtype_size(t->dtype);
}
void kd_storage_make_plain(kd_storage *s);
/* The data, NCHW: every op that does not ask for the layout reads this. */
static inline void *kd_data(const kd_tensor *t) {
    if (__atomic_load_n(&t->storage->block, __ATOMIC_ACQUIRE)) kd_storage_make_plain(t->storage);
    return kd_data_as_stored(t);
}
/* The block of t's data when it is a whole blocked tensor (its storage's
 * shape, from its start), else 0: an op that knows the blocked layout reads
 * kd_data_as_stored then, and writes its output blocked the same way. */
int kd_blocked(const kd_tensor *t);
/* Marks t's storage as holding t's data in nChw<block>c (t 4-D and whole,
 * its channels a multiple of block, so the sizes agree). */
void kd_set_blocked(kd_tensor *t, int block);
/* Whether convolutions leave their outputs (and in training their input
 * gradients) blocked (the default; KDSEG_LAYOUT=nchw in the environment
 * starts with it off).
 * Returns the previous setting. */
bool kd_blocked_layout_use(bool use);
bool kd_blocked_layout_on(void);
static inline float *kd_f32(const kd_tensor *t) { return (float *)kd_data(t); }
static inline int32_t *kd_i32(const kd_tensor *t) { return (int32_t *)kd_data(t); }
static inline uint8_t *kd_u8(const kd_tensor *t) { return (uint8_t *)kd_data(t); }

size_t kd_numel(const kd_tensor *t);
size_t kd_shape_numel(int ndim, const int *shape);
/* "8x16x64x128" in one of a few rotating thread-local buffers, for messages. */
const char *kd_shape_str(const kd_tensor *t);
bool kd_same_shape(const kd_tensor *a, const kd_tensor *b);
bool kd_needs_grad(const kd_tensor *t);

kd_status kd_tensor_new(kd_dtype dtype, int ndim, const int *shape, kd_tensor **out);
kd_status kd_tensor_zeros(kd_dtype dtype, int ndim, const int *shape, kd_tensor **out);
kd_status kd_tensor_zeros_like(const kd_tensor *t, kd_tensor **out);
kd_status kd_tensor_full(kd_dtype dtype, int ndim, const int *shape, double value,
                         kd_tensor **out);
kd_tensor *kd_tensor_retain(kd_tensor *t);
void kd_tensor_release(kd_tensor *t); /* NULL is fine */

/* Zero-copy views: share storage, record a node when grad is needed. */
kd_status kd_reshape(kd_tensor *x, int ndim, const int *shape, kd_tensor **out);
kd_status kd_narrow_batch(kd_tensor *x, int start, int length, kd_tensor **out);
/* A new header on the same storage with no tape history (a detached view). */
kd_status kd_detach(kd_tensor *x, kd_tensor **out);
/* A contiguous copy with its own storage (differentiable). */
kd_status kd_clone(kd_tensor *x, kd_tensor **out);
/* The mirror image along the last dimension (differentiable). */
kd_status kd_flip_width(kd_tensor *x, kd_tensor **out);
/* Converts between element types (no grad): toward zero, saturating at the
 * target type's range (a float 300.7 becomes uint8 255). */
kd_status kd_to_dtype(const kd_tensor *x, kd_dtype dtype, kd_tensor **out);

/* Every function that changes a tensor's data in place calls this: the tape
 * remembers the version of each tensor it saves, and a backward through a
 * tensor changed since then fails instead of computing a wrong gradient. */
static inline void kd_modified(kd_tensor *t) { t->storage->version++; }

/* In place, outside autograd (initialisation, optimizer state). */
kd_status kd_fill(kd_tensor *t, double value);
kd_status kd_copy(kd_tensor *dst, const kd_tensor *src); /* same numel and dtype */
double kd_get(const kd_tensor *t, size_t index);          /* as a double */
void kd_set(kd_tensor *t, size_t index, double value);

/* ---- random numbers ---------------------------------------------------------
 * xoshiro128** seeded through splitmix64: the same seed gives the same numbers
 * on every machine and thread count. NULL means the global generator. */

typedef struct { uint32_t s[4]; } kd_rng;

void kd_rng_seed(kd_rng *rng, uint64_t seed);
uint32_t kd_rng_u32(kd_rng *rng);
float kd_rng_uniform(kd_rng *rng); /* [0, 1) */
float kd_rng_normal(kd_rng *rng);  /* mean 0, std 1 */
kd_rng *kd_rng_global(void);
void kd_manual_seed(uint64_t seed); /* seeds the global generator */

kd_status kd_fill_uniform(kd_tensor *t, float low, float high, kd_rng *rng);
kd_status kd_fill_normal(kd_tensor *t, float mean, float std, kd_rng *rng);
/* He initialisation for ReLU nets: normal(0, sqrt(2 / fan_in)), fan_in from
 * the weight's dims 1.. (Cin/groups x kh x kw for a conv weight). */
kd_status kd_fill_kaiming_normal(kd_tensor *t, kd_rng *rng);

/* ---- memory ---------------------------------------------------------------- */

typedef struct {
    size_t live_bytes;   /* tensor storage in use */
    size_t peak_bytes;   /* the most live_bytes has been since the last reset */
    size_t cached_bytes; /* freed blocks kept for reuse */
    size_t live_tensors; /* tensor headers alive */
} kd_memory_stats;

kd_memory_stats kd_memory(void);
void kd_memory_reset_peak(void);
void kd_memory_empty_cache(void); /* returns cached blocks to the system */
/* Caps live tensor bytes (0: no cap); an allocation past it fails with
 * KD_ERR_MEMORY, as a real out-of-memory would. */
void kd_memory_set_limit(size_t bytes);

/* ---- threads --------------------------------------------------------------- */

/* One setting for OpenBLAS and the OpenMP loops (they share one pool). */
void kd_set_threads(int n);
int kd_get_threads(void);
/* The best sgemm rate (GFLOP/s) of a few m x n x k products: the peak a
 * benchmark compares against. */
double kd_gemm_gflops(int m, int n, int k, int repeats);

/* ---- autograd -------------------------------------------------------------- */

bool kd_grad_enabled(void);
bool kd_set_grad_enabled(bool enabled); /* returns the previous setting */

/* Backward from a one-element tensor (grad 1), or from any tensor with a
 * gradient of its shape. Adds into the .grad of leaves that require it and
 * releases what the graph saved: a second backward through it is an error. */
kd_status kd_backward(kd_tensor *root, const kd_tensor *grad);

/* Data-parallel training (kd.dist) sends gradients while backward goes on:
 * the hook is called once per leaf and backward pass when the leaf's
 * gradient is complete (every node that consumes it has run). It runs on
 * the thread that called kd_backward; a failure it returns ends the
 * backward. NULL: no hook. */
typedef kd_status (*kd_grad_ready_fn)(kd_tensor *leaf, void *ctx);
void kd_set_grad_ready_hook(kd_grad_ready_fn fn, void *ctx);

/* ---- ops: pointwise (op_pointwise.c, op_activation.c) -------------------- */

kd_status kd_add(kd_tensor *a, kd_tensor *b, kd_tensor **out);
kd_status kd_sub(kd_tensor *a, kd_tensor *b, kd_tensor **out);
kd_status kd_mul(kd_tensor *a, kd_tensor *b, kd_tensor **out);
kd_status kd_div(kd_tensor *a, kd_tensor *b, kd_tensor **out);
/* x * scale + shift, the scalar forms of all four operators. */
kd_status kd_affine_scalar(kd_tensor *x, float scale, float shift, kd_tensor **out);
/* s / x */
kd_status kd_rdiv_scalar(kd_tensor *x, float s, kd_tensor **out);
/* x (N x C x H x W) with v (C) broadcast over N, H, W. */
kd_status kd_channel_add(kd_tensor *x, kd_tensor *v, kd_tensor **out);
kd_status kd_channel_sub(kd_tensor *x, kd_tensor *v, kd_tensor **out);
kd_status kd_channel_mul(kd_tensor *x, kd_tensor *v, kd_tensor **out);
kd_status kd_channel_div(kd_tensor *x, kd_tensor *v, kd_tensor **out);
kd_status kd_exp(kd_tensor *x, kd_tensor **out);
kd_status kd_log(kd_tensor *x, kd_tensor **out);

kd_status kd_relu(kd_tensor *x, kd_tensor **out);
kd_status kd_leaky_relu(kd_tensor *x, float slope, kd_tensor **out);
/* min(max(x, 0), 6), MobileNetV2's activation. */
kd_status kd_relu6(kd_tensor *x, kd_tensor **out);
kd_status kd_sigmoid(kd_tensor *x, kd_tensor **out);
kd_status kd_tanh(kd_tensor *x, kd_tensor **out);
/* Zeroes whole channels with probability p, scales the rest by 1/(1-p). */
kd_status kd_dropout2d(kd_tensor *x, float p, kd_rng *rng, kd_tensor **out);

/* ---- ops: reductions and shape (op_reduce.c, op_shape.c) ------------------ */

kd_status kd_sum(kd_tensor *x, kd_tensor **out);  /* all elements -> shape {1} */
kd_status kd_mean(kd_tensor *x, kd_tensor **out);
/* Over the dims whose bit is set in dim_mask (bit d = dim d); keepdim keeps
 * them as size 1. */
kd_status kd_sum_dims(kd_tensor *x, unsigned dim_mask, bool keepdim, kd_tensor **out);
kd_status kd_mean_dims(kd_tensor *x, unsigned dim_mask, bool keepdim, kd_tensor **out);
/* Over channels of N x C x H x W: values (float) and indices (int32), each
 * N x H x W; either may be NULL. No grad. Ties go to the lowest channel. */
kd_status kd_max_channels(const kd_tensor *x, kd_tensor **values, kd_tensor **indices);

kd_status kd_concat_channels(int count, kd_tensor *const *xs, kd_tensor **out);
kd_status kd_slice_channels(kd_tensor *x, int start, int length, kd_tensor **out);
/* The h x w window at (top, left) of every plane of N x C x H x W, zero where
 * it reaches outside (no grad: sliding-window evaluation). */
kd_status kd_crop2d(const kd_tensor *x, int top, int left, int h, int w, kd_tensor **out);
/* dst (N x C x H x W) window at (top, left) += src (N x C x h x w), clipped. */
kd_status kd_add_window(kd_tensor *dst, const kd_tensor *src, int top, int left);

/* ---- ops: convolution, normalisation, pooling, resize -------------------- */

typedef struct {
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dilation_h, dilation_w;
    int groups;
} kd_conv_params;

/* x N x Cin x H x W, weight Cout x Cin/groups x kh x kw, bias Cout or NULL. */
kd_status kd_conv2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                    const kd_conv_params *p, kd_tensor **out);
/* Inference's convolution + batch norm (on its running statistics) + an
 * optional residual sum + an optional ReLU, as one convolution: the batch
 * norm folded into the weights and bias, the sum and ReLU in the kernel's
 * epilogue (op_conv_bn.c). The same values as the ops one by one, up to
 * rounding. No gradient: an error if one is wanted. */
typedef struct {
    kd_tensor *weight, *bias;             /* the batch norm's affine parameters, or NULL */
    kd_tensor *running_mean, *running_var;
    float eps;
} kd_folded_bn;
kd_status kd_conv2d_bn(kd_tensor *x, kd_tensor *weight, kd_tensor *bias, const kd_folded_bn *bn,
                       kd_tensor *residual, bool relu, const kd_conv_params *p, kd_tensor **out);
/* The plain seven-loop convolution the fast one is tested against (no grad). */
kd_status kd_conv2d_reference(const kd_tensor *x, const kd_tensor *weight,
                              const kd_tensor *bias, const kd_conv_params *p,
                              kd_tensor **out);
/* Whether kd_conv2d runs on oneDNN's kernels (the default where oneDNN
 * works; KDSEG_CONV=im2col in the environment starts with the portable
 * im2col + GEMM path instead). Returns the previous setting. */
bool kd_conv_use_dnnl(bool use);
/* Whether kd_conv2d runs on oneDNN now (asked for, and oneDNN works here). */
bool kd_conv_dnnl_active(void);
/* bfloat16 compute for oneDNN's convolutions (inputs, weights and output
 * gradients read as bfloat16, results and accumulation float32; tensors
 * stay float32): off by default, KDSEG_CONV_PRECISION=bf16 turns it on;
 * returns the previous setting. Not used by the im2col path. */
bool kd_conv_set_bf16(bool on);
bool kd_conv_bf16(void);           /* asked for and available */
bool kd_conv_bf16_available(void); /* oneDNN has bfloat16 kernels for this CPU */
/* Winograd F(4x4, 3x3) for 3x3 stride-1 undilated convolutions (and
 * dilated ones on sub-images), in float32: on oneDNN's kernels where it has
 * them (AVX-512), on kdseg's own elsewhere (core/ops/conv_winograd.c); on
 * by default, KDSEG_CONV_ALGORITHM=direct turns it off; returns the
 * previous setting. Other convolutions run direct. */
bool kd_conv_set_winograd(bool on);
bool kd_conv_winograd(void);           /* asked for */
bool kd_conv_winograd_available(void); /* oneDNN has Winograd kernels for this CPU */
/* Whose Winograd kernels run where it is asked for: "onednn" (AVX-512),
 * "kdseg" (core/ops/conv_winograd.c, where oneDNN has none: AVX2;
 * KDSEG_OWN_WINOGRAD=always or never chooses), or NULL (no fast
 * convolutions: KDSEG_CONV=im2col, or oneDNN does not run). */
const char *kd_conv_winograd_kernels(void);

/* Training: normalises with batch statistics and updates the running ones
 * (running = (1-momentum) running + momentum batch, unbiased variance).
 * Evaluation: normalises with the running statistics. weight/bias may be NULL. */
kd_status kd_batch_norm2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                          kd_tensor *running_mean, kd_tensor *running_var,
                          bool training, float momentum, float eps, kd_tensor **out);
/* The same followed by a ReLU in one pass: kd_relu(kd_batch_norm2d(...))
 * without the batch norm's output in between (same values, same gradients). */
kd_status kd_batch_norm2d_relu(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                               kd_tensor *running_mean, kd_tensor *running_var,
                               bool training, float momentum, float eps, kd_tensor **out);

/* Spectral normalisation's power iteration (op_spectral.c): u (the weight's
 * dim 0 long) is updated in place by `iterations` steps of v = W^T u, u = W v
 * (normalised; 0 iterations: v from u alone, u kept); *outer gets u v^T in
 * the weight's shape and *sigma = u^T W v, the largest singular value's
 * estimate. No gradient: u and v are constants of the step. */
kd_status kd_spectral_power(const kd_tensor *w, kd_tensor *u, int iterations, kd_tensor **outer, float *sigma);

/* Synchronised batch norm (data-parallel training, kd.dist's sync_bn): the
 * training-mode batch norm whose statistics, and whose gradient's sums, are
 * over the inputs of every process, added up by the reducer (in place, over
 * `count` doubles, the same call on every process in the same order). With
 * no reducer set it is kd_batch_norm2d in training mode. */
typedef kd_status (*kd_sum_reducer)(double *values, int count, void *ctx);
void kd_set_batch_norm_reducer(kd_sum_reducer fn, void *ctx);
kd_status kd_batch_norm2d_synced(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                                 kd_tensor *running_mean, kd_tensor *running_var,
                                 float momentum, float eps, kd_tensor **out);

/* ceil_mode: the output size rounds up, as PyTorch's ceil_mode (a last
 * window may hang over the input's end, never start past it: it pools what
 * it covers). exclude_pad: an average divides by the input elements its
 * window covers, as PyTorch's count_include_pad = False; by default padding
 * counts in the divisor. Both false by default, so {k, k, s, s, p, p}
 * initialisers keep their meaning. */
typedef struct {
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    bool ceil_mode, exclude_pad;
} kd_pool_params;
kd_status kd_max_pool2d(kd_tensor *x, const kd_pool_params *p, kd_tensor **out);
kd_status kd_avg_pool2d(kd_tensor *x, const kd_pool_params *p, kd_tensor **out);
/* Mean over each cell of an out_h x out_w grid (PyTorch's adaptive pooling). */
kd_status kd_adaptive_avg_pool2d(kd_tensor *x, int out_h, int out_w, kd_tensor **out);

kd_status kd_resize_bilinear(kd_tensor *x, int out_h, int out_w, bool align_corners,
                             kd_tensor **out);
/* Any dtype, no grad: label maps (N x H x W or N x C x H x W) keep their values. */
kd_status kd_resize_nearest(const kd_tensor *x, int out_h, int out_w, kd_tensor **out);

/* ---- ops: softmax and losses (op_softmax.c, op_loss.c, op_distill.c) ------ */

/* Over channels of N x C x H x W, of x / temperature. */
kd_status kd_softmax(kd_tensor *x, float temperature, kd_tensor **out);
kd_status kd_log_softmax(kd_tensor *x, float temperature, kd_tensor **out);

typedef enum { KD_REDUCE_MEAN = 0, KD_REDUCE_SUM, KD_REDUCE_NONE } kd_reduction;

typedef struct {
    int ignore_index;          /* pixels with this target count nowhere (255) */
    kd_tensor *class_weight;   /* C floats, or NULL */
    kd_tensor *pixel_weight;   /* N x H x W floats, or NULL */
    kd_reduction reduction;
} kd_cross_entropy_params;

/* logits N x C x H x W, target N x H x W int32. Per pixel:
 *   loss = class_weight[y] * pixel_weight * -log softmax(logits)[y]
 * mean divides the sum by the sum of class_weight[y] over counted pixels
 * (PyTorch's convention), so pixel weights lower a pixel's share; a batch with
 * no counted pixel gives 0. none gives N x H x W with 0 at ignored pixels. */
kd_status kd_cross_entropy(kd_tensor *logits, const kd_tensor *target,
                           const kd_cross_entropy_params *p, kd_tensor **out);
/* Data-parallel training (kd.train.Loop on several ranks): while a reducer
 * is set, a cross-entropy with the mean reduction divides by the sum of
 * counted weights over every process, times the number of processes (the
 * reducer adds up {weight, 1} over them), so that the mean of the ranks'
 * values is the mean over the global batch even where the ranks' shards
 * hold different numbers of ignored pixels. NULL: each call's own mean. */
void kd_set_loss_mean_reducer(kd_sum_reducer fn, void *ctx);

/* T^2 * sum_c p_t (log p_t - log p_s), p = softmax(logits / T), per pixel;
 * mean over N x H x W pixels. With detach_target the teacher gets no grad. */
kd_status kd_kl_div(kd_tensor *student_logits, kd_tensor *teacher_logits,
                    float temperature, bool detach_target, kd_reduction reduction,
                    kd_tensor **out);

kd_status kd_mse(kd_tensor *a, kd_tensor *b, kd_reduction reduction, kd_tensor **out);

/* Pair-wise (structured) distillation: each feature map N x C x H x W is
 * average-pooled into a grid_h x grid_w grid of nodes; S = cosine similarity
 * between all pairs of nodes; loss = mean over N x M x M of (S_s - S_t)^2,
 * M = grid_h * grid_w. Channel counts of the two may differ. */
kd_status kd_pairwise_distill(kd_tensor *student_features, kd_tensor *teacher_features,
                              int grid_h, int grid_w, kd_tensor **out);
/* The same loss on nodes pooled by the caller (N x C x h x w each, the same
 * h x w); detach_norm takes the nodes' norms as constants in the gradient,
 * as the structured-distillation paper's code does. */
kd_status kd_pairwise_similarity(kd_tensor *student_nodes, kd_tensor *teacher_nodes, bool detach_norm,
                                 kd_tensor **out);

/* ---- optimizer steps and in-place helpers (optim.c), no grad -------------- */

/* PyTorch's SGD: g = grad + wd p; buf = momentum buf + (1 - dampening) g
 * (buf = g on the first step); g = nesterov ? g + momentum buf : buf;
 * p -= lr g. first_step says whether buf holds history yet. */
kd_status kd_sgd_step(kd_tensor *param, const kd_tensor *grad, kd_tensor *momentum_buf,
                      float lr, float momentum, float dampening, float weight_decay,
                      bool nesterov, bool first_step);
/* PyTorch's AdamW (decoupled weight decay), step counted from 1. */
kd_status kd_adamw_step(kd_tensor *param, const kd_tensor *grad, kd_tensor *exp_avg,
                        kd_tensor *exp_avg_sq, float lr, float beta1, float beta2,
                        float eps, float weight_decay, int step);
/* dst = dst * a + src * b, element by element (EMA, accumulation). */
kd_status kd_axpby(kd_tensor *dst, float a, const kd_tensor *src, float b);
/* Sum of squares of all elements, in double (gradient clipping). */
double kd_sum_squares(const kd_tensor *t);

/* ---- images (image.c) ------------------------------------------------------ */

/* Reads an 8-bit PNG as a uint8 C x H x W tensor: gray 1 channel, gray+alpha
 * 2, RGB 3, RGBA 4; a palette image gives its indices (1 channel), or RGB(A)
 * with expand_palette. 16-bit files are refused; errors name the file. */
kd_status kd_png_read(const char *path, bool expand_palette, kd_tensor **out);
/* An image file, PNG (as kd_png_read) or JPEG (gray: 1 x H x W, colour:
 * 3 x H x W), told apart by its first bytes. Label maps stay PNG-only. */
kd_status kd_image_read(const char *path, bool expand_palette, kd_tensor **out);
/* The most pixels an image read may have (0: the default, 2^27); larger
 * ones are refused before anything is allocated. */
void kd_image_set_max_pixels(size_t pixels);
/* A JPEG of image (uint8 H x W, 1 x H x W or 3 x H x W) at quality 1-100,
 * written atomically. */
kd_status kd_jpeg_write(const char *path, const kd_tensor *image, int quality);
/* Writes uint8 H x W or C x H x W (C 1 to 4) atomically; with a palette
 * (palette_size RGB triples) a 1-channel image is stored as indices. */
kd_status kd_png_write(const char *path, const kd_tensor *image, const uint8_t *palette,
                       int palette_size);

/* ---- augmentation and loading (augment.c, loader.c) ------------------------ */

typedef struct {
    int crop_h, crop_w;           /* 0 x 0: no crop (then images must share a size) */
    float scale_min, scale_max;   /* random rescale factor range; 1, 1: none */
    bool hflip;                   /* flip with probability 1/2 */
    float brightness, contrast, saturation, hue; /* ColorJitter strengths, 0: none */
    float jitter_p;               /* probability of applying the jitter */
    float grayscale_p, blur_p, blur_sigma_min, blur_sigma_max;
    float mean[3], std[3];        /* normalisation of [0, 1] pixel values */
    int pad_label;                /* label of padded pixels (255 = ignore, or a value of its own) */
} kd_augment_params;

kd_status kd_check_augment_params(const kd_augment_params *p);
/* A strong view's colours inside a training step: each image of a normalised
 * batch to 8 bits, colour jitter, grayscale and blur as the loader's (p's
 * strengths, probabilities, mean and std; not its geometry), normalised
 * again; draws from rng in image order. */
kd_status kd_photometric_batch(const kd_tensor *images, const kd_augment_params *p, kd_rng *rng, kd_tensor **out);

typedef struct {
    int count;                 /* samples */
    const char *const *images; /* count paths */
    const char *const *labels; /* count paths or NULL entries (unlabeled), or NULL */
    const char *const *weights;/* count paths of 8-bit weight PNGs (value / 255), or NULL */
    const uint8_t *label_map;  /* 256 entries: file label value -> train id, or NULL */
    kd_augment_params augment;
    int batch_size;
    bool shuffle, drop_last, infinite;
    uint64_t seed;
    int workers;  /* threads; 0 loads in the caller's thread */
    int prefetch; /* batches made ahead */
    long start_batch; /* the first batch to deliver (resuming a run): epoch * length + k */
    /* Data-parallel training: of every batch, only the samples of shard
     * shard_index (0-based) of shard_count equal parts, in order; 0 or 1
     * shards: the whole batch. Batch numbering, order and augmentation are
     * the unsharded loader's, so the shards of all ranks make its batches. */
    int shard_index, shard_count;
    /* Decoded samples (image, label, weights) kept in memory, up to this
     * many bytes, so that later epochs skip reading and decoding their
     * files (which are then not read again); 0 keeps none. */
    size_t cache_bytes;
} kd_loader_config;

typedef struct {
    kd_tensor *images;  /* B x 3 x H x W float, normalised */
    kd_tensor *labels;  /* B x H x W int32 (255 where unlabeled) */
    kd_tensor *weights; /* B x H x W float: per-pixel weight, 0 on padding */
    kd_tensor *valid;   /* B x H x W uint8: 1 where the pixel comes from the image */
    kd_tensor *ids;     /* B int32: dataset indices (0-based) */
    int epoch;
} kd_batch;

typedef struct kd_loader kd_loader;
kd_status kd_loader_new(const kd_loader_config *config, kd_loader **out);
/* The next batch, or *done at the end of an epoch (epoch mode). */
kd_status kd_loader_next(kd_loader *loader, kd_batch *batch, bool *done);
/* Number of batches of one epoch. */
int kd_loader_length(const kd_loader *loader);
void kd_loader_free(kd_loader *loader); /* stops and joins the workers */
void kd_batch_release(kd_batch *batch);
/* Loads and augments one sample alone (index 0-based) exactly as in epoch
 * `epoch` at position `position` - for tests and pictures. */
kd_status kd_loader_sample(kd_loader *loader, int index, int epoch, int position, kd_batch *batch);

/* Box masks (uint8 B x H x W, 1 inside the box) for CutMix and cutout. */
kd_status kd_box_masks(int batch, int h, int w, float p, float area_min, float area_max, float ratio_min,
                       float ratio_max, kd_rng *rng, kd_tensor **out);
/* Where mask (B x H x W) is 1: dst = src (same shape as dst), or fill when src
 * is NULL. dst is B x C x H x W or B x H x W, any dtype; in place, no grad. */
kd_status kd_mix_where(kd_tensor *dst, const kd_tensor *src, const kd_tensor *mask, double fill);

/* ---- metrics and pictures (metrics.c, picture.c) ---------------------------- */

/* matrix (K x K int64) [target][prediction] += pixel counts; targets outside
 * 0..K-1 (the ignore label) count nowhere. */
kd_status kd_confusion_update(kd_tensor *matrix, const kd_tensor *prediction, const kd_tensor *target);
/* labels (H x W, int32 or uint8) -> uint8 3 x H x W through palette (count RGB
 * triples); values outside the palette (ignore) become `other`. */
kd_status kd_colorize(const kd_tensor *labels, const uint8_t *palette, int count, const uint8_t *other,
                      kd_tensor **out);
/* Copies image (C x h x w) into canvas (C x H x W, same dtype) at (top, left), clipped. */
kd_status kd_paste(kd_tensor *canvas, const kd_tensor *image, int top, int left);

/* ---- pseudo-label refinement kernels (pseudo.c) ------------------------------
 * Label maps int32 (ignore where unlabeled); pred int32 classes and conf
 * float confidences of the same shape. */

/* A coarse label stays unless the teacher predicts another class with
 * confidence above threshold; ignored pixels stay ignored. */
kd_status kd_pseudo_keep_coarse(const kd_tensor *coarse, const kd_tensor *pred, const kd_tensor *conf, float threshold,
                                int ignore, kd_tensor **out);
/* Ignored pixels take the predicted class where conf > thresholds[class]. */
kd_status kd_pseudo_fill(const kd_tensor *labels, const kd_tensor *pred, const kd_tensor *conf, const float *thresholds,
                         int classes, int ignore, kd_tensor **out);
/* Per class, a percentile of the confidences of the pixels predicted as it. */
kd_status kd_class_percentiles(const kd_tensor *pred, const kd_tensor *conf, int classes, float percentile, float fallback,
                               float *thresholds);
/* probs (N x C x H x W) at each pixel's label; 0 where ignored. */
kd_status kd_pseudo_weights(const kd_tensor *probs, const kd_tensor *labels, int ignore, kd_tensor **out);
/* A float mask: 0 where a pixel's label (not ignore) differs from the
 * prediction, 1 elsewhere - where a teacher contradicts a trusted label. */
kd_status kd_label_agreement(const kd_tensor *pred, const kd_tensor *labels, int ignore, kd_tensor **out);
/* Each pixel's class's weight (class_weights: one float per class); 0 for a
 * class outside them, such as the ignore label. */
kd_status kd_class_weight_map(const kd_tensor *classes, const kd_tensor *class_weights, kd_tensor **out);
/* A model's prediction (labels, with its confidence conf) as training
 * labels: `ignore` where conf < threshold; or, with zero_weights, every
 * label kept and *out_weights (float) 1 where conf >= threshold, else 0.
 * valid (uint8, or NULL): with zero_weights, 0 marks padding, which gets
 * `ignore` and weight 0. */
kd_status kd_confident_labels(const kd_tensor *labels, const kd_tensor *conf, double threshold, const kd_tensor *valid,
                              bool zero_weights, int ignore, kd_tensor **out_labels, kd_tensor **out_weights);
/* weights = weight (in place) where a label is the coarse label: an annotator's
 * label is trusted whatever the teacher believes of it. */
kd_status kd_pseudo_trust_coarse(kd_tensor *weights, const kd_tensor *labels, const kd_tensor *coarse, float weight,
                                 int ignore);

/* ---- SynthCity (synth.c) ---------------------------------------------------- */

/* Scene `index` of the dataset of `seed`: rgb uint8 3 x H x W and Cityscapes
 * labelIds uint8 H x W. The same (seed, index) always gives the same scene. */
kd_status kd_synth_scene(int height, int width, uint64_t seed, uint64_t index, kd_tensor **rgb,
                         kd_tensor **label_ids);
/* Coarse labels in the manner of gtCoarse from fine labelIds (0 = unlabeled). */
kd_status kd_synth_coarse(const kd_tensor *fine, uint64_t seed, kd_tensor **coarse);

typedef struct {
    const char *root, *split; /* split: train, val, train_extra ... */
    int first, count;         /* scene indices first .. first+count-1 */
    int height, width;
    uint64_t seed;
    bool fine, coarse, true_fine; /* which label files to write */
} kd_synthcity_job;
/* Writes the job's scenes in parallel; the split's folders must exist. */
kd_status kd_synthcity_write(const kd_synthcity_job *job);

#endif
