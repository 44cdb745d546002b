/* internal.h - what the core's own files share and callers never see: the
 * tape node, argument checks, the allocator and the parallel-loop threshold. */
#ifndef KD_INTERNAL_H
#define KD_INTERNAL_H

#include <math.h>

#include "kd.h"

#define KD_MAX_INPUTS 8 /* concat of up to 8 branches (ASPP has 4) */
#define KD_MAX_SAVED 5

/* Loops shorter than this run on one thread: forking costs more than it saves. */
#define KD_PARALLEL_MIN 32768

/* ---- zeros written lazily ----------------------------------------------
 * The backward's gradient accumulators start as zeros and are most often
 * written whole by their first op (a convolution's or batch norm's input
 * gradient): zeroing them first costs a pass over memory for nothing, and
 * adding into them another read. So they are made with the zeros pending
 * (kd_storage.block); any read through kd_data zeroes them then, and an op
 * that writes every element takes them instead (kd_take_zeros) and writes
 * 0.0f + its value, the same bits as adding its value into zeros. */
#define KD_ZEROS_PENDING (-1)
kd_status kd_tensor_zeros_pending(int ndim, const int *shape, kd_tensor **out); /* float32 */
/* Whether t (whole, from its storage's start) still had its zeros pending;
 * if so they no longer are, and the caller must write all of t. */
bool kd_take_zeros(kd_tensor *t);
/* Zeroes bytes [0, n) of p, on every thread where it is large. */
void kd_zero_bytes(void *p, size_t n);
/* Adds N x C x HW values stored nChw<block>c (from) into NCHW ones (to), C
 * a multiple of block: a gradient computed blocked into its accumulator
 * (core/engine/layout.c); onto_zeros: `to` was taken pending zeros, so it is
 * written, not read. */
void kd_blocked_add_to_plain(const float *from, float *to, int N, int C, size_t HW, int block, bool onto_zeros);

/* ---- gradients in the blocked layout (layout.c) --------------------------
 * In training, a convolution's output stays blocked for the next op as at
 * inference, and its gradient flows back blocked: an elementwise or batch
 * norm backward works in the layout its operands share, and writes its
 * gradients in it where their accumulators allow. */

/* Which of its choices (environment.c) a KDSEG_* variable holds: 0, the
 * first, when it is unset, empty or not one of them. */
int kd_environment_choice(const char *name);

/* Whether a tensor of planes height x width may be written in nChw<block>c
 * (kd_set_blocked): room is kept to convert it back to NCHW whatever
 * memory is left then (layout.c). An op writing a new shape blocked asks
 * first, and writes NCHW where this says no (no memory). */
bool kd_blocked_layout_can_take(int height, int width, int block);
/* The block every tensor of `reads` is stored in (kd_blocked), where each
 * accumulator of `writes` (NULLs skipped) is stored in it too or still has
 * its zeros pending (its first writer lays it out); else 0, and the op
 * reads and writes NCHW. */
int kd_shared_block(const kd_tensor *const *reads, int n_reads, kd_tensor *const *writes, int n_writes);
/* Where an op reads t: as stored when block (from kd_shared_block), else
 * NCHW (kd_f32 converts it). */
static inline const float *kd_read_in(const kd_tensor *t, int block) {
    return block ? (const float *)kd_data_as_stored(t) : kd_f32(t);
}
/* Where an op writes the accumulator t in `block` (0: NCHW): its zeros
 * taken when pending (*zeros set: write 0.0f + value, not read), the
 * storage marked blocked then. NULL for a NULL t. */
float *kd_write_in(kd_tensor *t, int block, bool *zeros);

/* At most this many threads keep buffers of their own in one op. */
#define KD_MAX_THREADS 64

/* An edge from a node to one input: the node that made the input, or the leaf
 * tensor itself, or neither when the input needs no gradient. */
typedef struct {
    kd_node *node;
    kd_tensor *leaf;
    int ndim;
    int shape[KD_MAX_DIMS];
} kd_edge;

/* Adds into each non-NULL grad_inputs[i] the gradient for input i. */
typedef kd_status (*kd_backward_fn)(kd_node *node, const kd_tensor *grad_output,
                                    kd_tensor *const *grad_inputs);

struct kd_node {
    int refcount;
    const char *op;
    kd_backward_fn backward;
    int n_inputs;
    kd_edge inputs[KD_MAX_INPUTS];
    kd_tensor *saved[KD_MAX_SAVED]; /* detached views: no history, no cycles */
    unsigned saved_version[KD_MAX_SAVED]; /* their storage's version when saved */
    int ints[16];    /* an op's parameters (a conv keeps its whole geometry) */
    float floats[4];
    int out_ndim;
    int out_shape[KD_MAX_DIMS];
    kd_tensor *grad_accumulator; /* the output's gradient, during backward */
    int pending;                 /* consumers not yet processed, during backward */
    bool released;               /* backward has run and freed what was saved */
};

/* Records a node for out if grad mode is on and an input needs a gradient;
 * returns NULL (and records nothing) otherwise. On allocation failure it
 * returns NULL and sets *status. */
kd_node *kd_record(const char *op, kd_backward_fn backward, kd_tensor *out,
                   int n_inputs, kd_tensor *const *inputs, kd_status *status);
/* For fusing a node's backward with that of the node that made its only
 * input (the producer): node takes the producer's first n inputs as its
 * inputs 0..n-1 and lets go of the producer, which the producer's output
 * tensor still holds for any other consumer. */
void kd_node_take_inputs(kd_node *node, int n);
/* Saves a detached view of t in slot (t may be NULL). */
kd_status kd_node_save(kd_node *node, int slot, kd_tensor *t);
void kd_node_release(kd_node *node);
kd_node *kd_node_retain(kd_node *node);

/* Whether input i of node wants a gradient (the engine passes NULL if not). */
static inline bool kd_edge_needed(const kd_node *node, int i) {
    return node->inputs[i].node != NULL || node->inputs[i].leaf != NULL;
}

/* Records the node for out (see kd_record) and saves saved[0..n_saved-1] in
 * its first slots. On failure releases *out and sets it NULL. *node is NULL
 * when nothing was recorded; ops store their parameters through it. */
kd_status kd_finish_op(const char *op, kd_backward_fn backward, kd_tensor **out,
                       int n_inputs, kd_tensor *const *inputs, int n_saved,
                       kd_tensor *const *saved, kd_node **node);

/* ---- argument checks: each returns KD_OK or fails with a message --------- */
kd_status kd_check_f32(const char *op, const char *what, const kd_tensor *t);
kd_status kd_check_dtype(const char *op, const char *what, const kd_tensor *t,
                         kd_dtype dtype);
kd_status kd_check_ndim(const char *op, const char *what, const kd_tensor *t, int ndim);
kd_status kd_check_same_shape(const char *op, const kd_tensor *a, const kd_tensor *b);
kd_status kd_check_not_null(const char *op, const char *what, const void *p);

/* ---- allocator (alloc.c) -------------------------------------------------- */
void *kd_cache_alloc(size_t bytes, size_t *rounded);
void kd_cache_free(void *ptr, size_t rounded);
void kd_count_tensor(int delta);

/* A new tensor of the same shape as t (uninitialised). */
kd_status kd_tensor_new_like(const kd_tensor *t, kd_tensor **out);

/* exp for the hot loops (softmax, losses): glibc's expf is a scalar call
 * that blocks vectorisation; this one is branch-free and vectorises. Cephes'
 * expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two for exactness),
 * e^r by its degree-7 polynomial, 2^n put into the exponent bits. About 1 ulp
 * over the clamped range; below -87 it gives ~1e-38 instead of 0. */
static inline float kd_fast_exp(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float kd_max(float a, float b) { return a > b ? a : b; }

/* log_softmax(x / T) over the C channels of one image (C x HW, channel
 * stride HW), for the pixels [p0, p1) - at most KD_PIXEL_BLOCK of them. */
#define KD_PIXEL_BLOCK 256
void kd_logsumexp_pixels(const float *x, int channels, size_t plane, size_t p0, size_t p1,
                         float inv_temperature, float *lse);
void kd_log_softmax_pixels(const float *x, int channels, size_t plane, size_t p0, size_t p1,
                           float inv_temperature, float *out);

/* Runs body for every (image n, pixels [p0, p1)) block of an N x C x H x W
 * tensor t, blocks in parallel; plane_ is H*W inside body. */
#define FOR_PIXEL_BLOCKS(t, n, p0, p1, ...)                                               \
    do {                                                                                  \
        size_t plane_ = (size_t)(t)->shape[2] * (t)->shape[3];                            \
        size_t per_image_ = (plane_ + KD_PIXEL_BLOCK - 1) / KD_PIXEL_BLOCK;               \
        size_t blocks_ = (size_t)(t)->shape[0] * per_image_;                              \
        bool parallel_ = kd_numel(t) > KD_PARALLEL_MIN;                                   \
        _Pragma("omp parallel for schedule(static) if (parallel_)")                       \
        for (size_t b_ = 0; b_ < blocks_; b_++) {                                         \
            size_t n = b_ / per_image_, p0 = b_ % per_image_ * KD_PIXEL_BLOCK;            \
            size_t p1 = p0 + KD_PIXEL_BLOCK < plane_ ? p0 + KD_PIXEL_BLOCK : plane_;      \
            __VA_ARGS__                                                                   \
        }                                                                                 \
    } while (0)

/* Bilinear source coordinates (op_resize.c): for each output coordinate the
 * two source indices and the weight of the second, PyTorch's convention. */
typedef struct {
    int lo, hi;
    float frac;
} kd_bilinear_tap;
void kd_bilinear_taps(int in, int out, bool align_corners, kd_bilinear_tap *taps);

/* The transpose of one axis' interpolation, gathered per input position:
 * input column x receives go[index[k]] * weight[k] for k in [first[x],
 * first[x+1]). Each output column appears twice (its lo and hi taps).
 * Summing per input column, rather than scattering per output column,
 * leaves no chain of adds through one memory cell (an x8 upsampling sends
 * 16 outputs to each input). */
typedef struct {
    int *first, *index;
    float *weight;
} kd_fold_table;

/* What the transpose of a resize in_h x in_w -> out_h x out_w needs: the
 * taps of its output rows and the fold table of its columns. */
typedef struct {
    kd_bilinear_tap *rows;
    kd_fold_table columns;
} kd_bilinear_transpose;
kd_status kd_bilinear_transpose_new(int in_h, int in_w, int out_h, int out_w, bool align_corners,
                                    kd_bilinear_transpose *t);
void kd_bilinear_transpose_free(kd_bilinear_transpose *t);

/* The transpose of a bilinear resize, down the columns first: each output
 * row's gradient (channels x width) is added, weighted, into the (at most
 * two) input rows it came from, kept at full width; an input row, once
 * complete, is folded across once and added into dst
 * (channels x in_height x in_width). Folding across is the expensive half (an
 * indexed gather), and this does it once per input row instead of once per
 * output row (8 times fewer for an x8 upsampling). Output rows must come in
 * order, so two full-width rows are all that is kept: row r lives in slot
 * r % 2 and is complete when row r + 2 arrives. */
typedef struct {
    const kd_fold_table *fold;
    int channels, width, in_height, in_width;
    float *acc;    /* 2 x channels x width, the caller's */
    float *folded; /* in_width, the caller's */
    float *dst;
    int row[2];    /* the input row each slot holds, -1: none */
} kd_column_fold;
void kd_column_fold_start(kd_column_fold *cf, float *dst);
void kd_column_fold_add(kd_column_fold *cf, int row, float weight, const float *g_row);
void kd_column_fold_finish(kd_column_fold *cf);

/* When the only input of node is the output of kd_resize_bilinear whose tape is
 * still there, node takes the resize's own input in its place and gets its
 * align_corners: node's backward then gives the gradient of both ops at once
 * (kd_cross_entropy does, for logits upsampled to the labels' size). The
 * resize's node stays with the resized tensor for any other consumer. */
bool kd_take_bilinear_input(kd_node *node, bool *align_corners);

/* The same for a ReLU (or leaky ReLU) right after a batch norm: the ReLU's
 * node (one input, its input saved in slot 0) takes the batch norm's three
 * inputs and saved tensors and gives their gradients, the ReLU's mask
 * applied on the fly, with no gradient buffer for the batch norm's output. */
bool kd_take_batch_norm_input(kd_node *relu, float slope);
/* And for a ReLU right after an addition (a residual block's end): both
 * operands get the gradient through the ReLU, with no buffer for the sum's. */
bool kd_take_add_inputs(kd_node *relu, float slope);

/* Depthwise convolution (op_depthwise.c), which kd_conv2d hands over to. */
#include "im2col.h"
bool kd_is_depthwise(const kd_conv_geometry *g, int groups, int out_channels);
kd_status kd_conv2d_depthwise(kd_tensor *x, kd_tensor *w, kd_tensor *b, const kd_conv_geometry *g,
                              kd_tensor **out);

/* A batch norm's per-channel map y = x * scale + shift, from its mean and
 * 1 / std (kd_bn_invstd of the variance): every batch-norm path (plain,
 * blocked, synchronised) and the folded convolution compute them this way,
 * so they agree bit for bit. */
static inline float kd_bn_invstd(double var, float eps) { return (float)(1.0 / sqrt(var + eps)); }
static inline float kd_bn_scale(const float *gamma, int c, float invstd) { return (gamma ? gamma[c] : 1.0f) * invstd; }
static inline float kd_bn_shift(const float *beta, int c, float mean, float scale) {
    return (beta ? beta[c] : 0.0f) - mean * scale;
}

/* What inference's fused convolution (op_conv_bn.c) runs after the
 * convolution itself, in this order: + bias per output channel, + residual
 * (the output's shape), max(0, .). */
typedef struct {
    const kd_tensor *bias;     /* Cout, or NULL */
    const kd_tensor *residual; /* or NULL */
    bool relu;
} kd_conv_epilogue;
/* The epilogue's residual and ReLU on y, which holds the convolution and
 * its bias: in y's layout where the residual is stored alike, else both
 * read as NCHW (op_conv.c). */
void kd_conv_residual_relu(kd_tensor *y, const kd_conv_epilogue *e);
/* kd_conv2d with an epilogue, recording no gradient (the caller checked
 * that none is wanted). */
kd_status kd_conv2d_with_epilogue(kd_tensor *x, kd_tensor *w, const kd_conv_params *p, const kd_conv_epilogue *e,
                                  kd_tensor **out);

/* Sum of a float array in double, in fixed blocks so that the result does not
 * depend on the thread count. */
double kd_sum_f32(const float *x, size_t n);
/* The sum of (x[i] - y[i])^2 in double, in the same fixed blocks. */
double kd_sum_squared_difference_f32(const float *x, const float *y, size_t n);

#endif
