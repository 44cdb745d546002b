/* conv_dnnl.c - convolutions on oneDNN (Debian's libdnnl), the library
 * PyTorch's CPU convolutions run on: JIT kernels for the widest vectors the
 * processor has (AVX-512 on this machine, AVX2 elsewhere; the environment
 * variable ONEDNN_MAX_CPU_ISA=AVX2 caps it), chosen at run time, whatever
 * OPENBLAS_CORETYPE says.
 *
 * Activations are NCHW, or blocked where a convolution left them so
 * (layout.c): an operand already in the layout the kernel wants is read as
 * it is, the others are reordered into it, and an output stays in the
 * kernel's layout when that is nChw16c or nChw8c over the same bytes
 * (kd_conv_dnnl_forward's blocked_out), else it is reordered back to NCHW;
 * in training, an output gradient stored blocked is read as it is, and an
 * input gradient is written blocked into an accumulator nothing was added
 * to yet (accumulate_into). Two more reorders are saved: the forward hands its blocked copy of the source back to be kept
 * for the weight gradient (kd_conv_dnnl_forward's keep_src; op_conv.c keeps
 * it instead of the NCHW input, so it costs no memory where the channels
 * fill the blocks), and one blocked copy of the output gradient serves both
 * gradients. Primitives are made once per geometry and settings and kept
 * (dnnl_cache.c). Blocked copies live in kdseg's caching allocator.
 *
 * Each entry point returns false when it did not run (oneDNN refused the
 * geometry, a buffer could not be had, or KDSEG_CONV=im2col asks for the
 * portable path); op_conv.c then runs its im2col + GEMM path, which stays the
 * reference the tests hold this one to. Gradients are added into what the
 * caller passes, as every backward in kdseg does (a reorder with a sum
 * post-op). With a fixed thread count the results are the same from run to
 * run. Depthwise convolutions run here too (op_depthwise.c is their
 * fallback).
 *
 * bfloat16 compute (kd_conv_set_bf16, KDSEG_CONV_PRECISION=bf16): the
 * kernels read the input, the weights and the output gradient as bfloat16
 * (the reorders into the blocked layouts convert them, so it costs no pass
 * of its own) and write float32 outputs and gradients, accumulated in
 * float32; kdseg's tensors and master weights stay float32. Where oneDNN has
 * no bfloat16 kernel for the CPU, the call falls back as above, in float32.
 *
 * Winograd (the default; kd_conv_set_winograd, KDSEG_CONV_ALGORITHM): each
 * primitive tries oneDNN's Winograd kernels first where the geometry is
 * theirs (3x3, stride 1, undilated), then direct ones; dilated 3x3
 * convolutions are handed to conv_subimages.c, which runs them undilated on
 * sub-images so that Winograd takes them too. Where oneDNN has no Winograd
 * kernels (AVX2), the entry points hand those geometries to kdseg's own
 * (conv_winograd.c) before making any primitive. */
#include <dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "conv_dnnl.h"
#include "conv_subimages.h"
#include "conv_winograd.h"
#include "dnnl_cache.h"
#include "internal.h"

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static int enabled = -1;             /* -1: the environment decides at the first call */
static bool engine_tried, engine_ok; /* the engine is made once */
static int bf16 = -1;                /* bfloat16 compute; -1: the environment decides */

bool kd_conv_bf16(void) {
    if (bf16 < 0) {
        bf16 = kd_environment_choice("KDSEG_CONV_PRECISION") == 1;
    }
    return bf16 && kd_conv_bf16_available();
}

bool kd_conv_set_bf16(bool on) {
    bool was = kd_conv_bf16();
    bf16 = on;
    return was;
}

/* Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3 kernels; AVX-512 only) for
 * 3x3 stride-1 undilated convolutions: 36 multiplications per 4x4 output
 * tile where direct convolution makes 144, so about 2.2x faster on
 * NETS.md's conv layer here, forward and both gradients. It rounds
 * differently from direct convolution (transforms of the input, the
 * weights and the output, each in float32), so results move by about
 * 1e-5 relative; still the same bits from run to run at a thread count.
 * On by default (KDSEG_CONV_ALGORITHM=direct turns it off): on the accuracy
 * benchmark its models read as direct convolution's within the seeds'
 * spread (README, "Winograd, the default"). Where oneDNN has no Winograd
 * kernel for a call (no AVX-512, bfloat16), that call runs direct. Its kernels take no residual as a post-op: at inference the
 * residual and the ReLU come after them (kd_conv_dnnl_inference). */
static int winograd = -1; /* -1: the environment decides */

bool kd_conv_winograd(void) {
    if (winograd < 0) {
        winograd = kd_environment_choice("KDSEG_CONV_ALGORITHM") == 0;
    }
    return winograd;
}

bool kd_conv_set_winograd(bool on) {
    bool was = kd_conv_winograd();
    winograd = on;
    return was;
}

static bool ready(void) {
    if (enabled < 0) {
        enabled = kd_environment_choice("KDSEG_CONV") == 0;
    }
    if (!enabled) return false;
    if (!engine_tried) {
        engine_tried = true;
        engine_ok = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success &&
                    dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success;
    }
    return engine_ok;
}

bool kd_conv_dnnl_active(void) { return ready(); }

bool kd_conv_use_dnnl(bool use) {
    bool was = ready();
    enabled = use;
    return was;
}

/* One operand: the caller's plain NCHW (or OIHW) data, and the layout the
 * primitive wants; a blocked copy when they differ. */
typedef struct {
    dnnl_memory_t plain, used;
    void *copy;
    size_t copy_bytes;
} operand;

static void operand_release(operand *o) {
    if (o->used && o->used != o->plain) dnnl_memory_destroy(o->used);
    if (o->plain) dnnl_memory_destroy(o->plain);
    kd_cache_free(o->copy, o->copy_bytes);
    memset(o, 0, sizeof *o);
}

static bool execute(const kd_dnnl_made *m, int n, const dnnl_exec_arg_t *args) {
    return dnnl_primitive_execute(m->primitive, stream, n, args) == dnnl_success &&
           dnnl_stream_wait(stream) == dnnl_success;
}

static bool reorder(dnnl_memory_t from, dnnl_memory_t to, bool accumulate) {
    const dnnl_memory_desc_t *a, *b;
    dnnl_memory_get_memory_desc(from, &a);
    dnnl_memory_get_memory_desc(to, &b);
    const kd_dnnl_made *m = kd_dnnl_reorder(engine, a, b, accumulate);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    return m && execute(m, 2, args);
}

/* Binds data (laid out as plain) to the layout `wanted`: a blocked copy when
 * they differ, filled from data when `fill`. */
static bool operand_bind(operand *o, const dnnl_memory_desc_t *plain, const dnnl_memory_desc_t *wanted,
                         void *data, bool fill) {
    if (dnnl_memory_create(&o->plain, plain, engine, data) != dnnl_success) return false;
    if (dnnl_memory_desc_equal(plain, wanted)) {
        o->used = o->plain;
        return true;
    }
    o->copy = kd_cache_alloc(dnnl_memory_desc_get_size(wanted), &o->copy_bytes);
    if (!o->copy || dnnl_memory_create(&o->used, wanted, engine, o->copy) != dnnl_success) return false;
    return !fill || reorder(o->plain, o->used, false);
}

/* A source kept from the forward for the weight gradient: a uint8 tensor
 * holding the memory descriptor of its layout (KEPT_HEADER bytes, which
 * keeps the data 64-byte aligned) and then the data in that layout. */
#define KEPT_HEADER (((sizeof(dnnl_memory_desc_t) + 63) / 64) * 64)

static const dnnl_memory_desc_t *kept_desc(const kd_tensor *kept) { return (const dnnl_memory_desc_t *)kd_u8(kept); }
static void *kept_data(const kd_tensor *kept) { return kd_u8(kept) + KEPT_HEADER; }

/* Binds the source like operand_bind, its blocked copy in a new kept tensor (*kept). */
static bool operand_bind_kept(operand *o, const dnnl_memory_desc_t *plain, const dnnl_memory_desc_t *wanted,
                              void *data, kd_tensor **kept) {
    if (dnnl_memory_desc_equal(plain, wanted)) return operand_bind(o, plain, wanted, data, true);
    int bytes = (int)(KEPT_HEADER + dnnl_memory_desc_get_size(wanted));
    if (bytes <= 0 || kd_tensor_new(KD_U8, 1, &bytes, kept)) {
        *kept = NULL;
        return operand_bind(o, plain, wanted, data, true); /* no room to keep it: this call alone */
    }
    memcpy(kd_u8(*kept), wanted, sizeof *wanted);
    return dnnl_memory_create(&o->plain, plain, engine, data) == dnnl_success &&
           dnnl_memory_create(&o->used, wanted, engine, kept_data(*kept)) == dnnl_success &&
           reorder(o->plain, o->used, false);
}

/* Binds a kept source to the layout `wanted`: itself when it is in it, else
 * a copy (the precision changed between forward and backward, say). */
static bool operand_bind_from_kept(operand *o, const kd_tensor *kept, const dnnl_memory_desc_t *wanted) {
    if (dnnl_memory_create(&o->plain, kept_desc(kept), engine, kept_data(kept)) != dnnl_success) return false;
    if (dnnl_memory_desc_equal(kept_desc(kept), wanted)) {
        o->used = o->plain;
        return true;
    }
    o->copy = kd_cache_alloc(dnnl_memory_desc_get_size(wanted), &o->copy_bytes);
    return o->copy && dnnl_memory_create(&o->used, wanted, engine, o->copy) == dnnl_success &&
           reorder(o->plain, o->used, false);
}

/* Whether a kept source holds the sub-images of a convolution of N images
 * (conv_subimages.c) rather than the images. */
static bool kept_subimages(const kd_tensor *kept, int N) { return kept_desc(kept)->dims[0] != N; }

bool kd_conv_dnnl_kept_source(const kd_tensor *kept, const kd_conv_geometry *g, int N, float *x) {
    if (!engine_ok) return false; /* made by the forward that kept it, even if oneDNN is off now */
    kd_dnnl_cache_trim();
    const dnnl_memory_desc_t *have = kept_desc(kept);
    dnnl_memory_desc_t plain;
    if (dnnl_memory_desc_init_by_tag(&plain, have->ndims, have->dims, dnnl_f32, dnnl_nchw) != dnnl_success) return false;
    bool subimages = kept_subimages(kept, N);
    size_t bytes = 0;
    float *to_data = subimages ? kd_cache_alloc(dnnl_memory_desc_get_size(&plain), &bytes) : x;
    dnnl_memory_t from = NULL, to = NULL;
    bool ok = to_data && dnnl_memory_create(&from, have, engine, kept_data(kept)) == dnnl_success &&
              dnnl_memory_create(&to, &plain, engine, to_data) == dnnl_success && reorder(from, to, false);
    if (ok && subimages) kd_conv_subimages_to_full(g, N, to_data, x);
    if (from) dnnl_memory_destroy(from);
    if (to) dnnl_memory_destroy(to);
    if (subimages) kd_cache_free(to_data, bytes);
    return ok;
}

static bool blocked_desc(dnnl_memory_desc_t *md, const dnnl_dims_t dims, int block) {
    return dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, block == 16 ? dnnl_nChw16c : dnnl_nChw8c) ==
           dnnl_success;
}

/* The block of `md` where it is float32 nChw16c or nChw8c with the channels
 * filling the blocks (the layouts kd_set_blocked can mark), else 0. */
static int block_of(const dnnl_memory_desc_t *md) {
    if (md->ndims != 4 || md->data_type != dnnl_f32) return 0;
    for (int block = 16; block >= 8; block /= 2) {
        dnnl_memory_desc_t b;
        if (md->dims[1] % block == 0 && blocked_desc(&b, md->dims, block) && dnnl_memory_desc_equal(&b, md))
            return block;
    }
    return 0;
}

/* x's data as it is stored and its layout (*have): the blocked one it was
 * left in, else NCHW (`plain`). */
static void *as_stored(const kd_tensor *x, const dnnl_memory_desc_t *plain, dnnl_memory_desc_t *have) {
    int block = kd_blocked(x);
    if (block && blocked_desc(have, plain->dims, block)) return kd_data_as_stored(x);
    *have = *plain;
    return kd_f32(x);
}

/* What a convolution's primitives are made from: its geometry and settings
 * (describe), then per primitive which one it is and, for inference's
 * forward, which fusions. All ints, zeroed first: it compares by its bytes
 * (dnnl_cache.c). */
enum { FORWARD = 1, BACKWARD_DATA, BACKWARD_WEIGHTS };
typedef struct {
    kd_conv_geometry g;
    int N, cout, groups, bf16, winograd;
    int purpose, bias, residual, relu;
} conv_key;

/* The descriptors of one convolution: the caller's plain float32 data, and
 * what the primitives take ("any" layout) as inputs, in the compute type,
 * and give as results, in float32. */
typedef struct {
    dnnl_memory_desc_t src, weights, dst;           /* plain */
    dnnl_memory_desc_t src_in, weights_in, grad_in; /* the kernels' inputs (grad_in: the output's gradient) */
    dnnl_memory_desc_t dst_out, src_grad_out, weights_grad_out; /* their results */
    dnnl_memory_desc_t bias;                                    /* Cout, for inference's fused convolution */
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    bool winograd; /* try Winograd first (kd_conv_winograd and a 3x3 stride-1 undilated geometry) */
    conv_key key;
} conv_desc;

/* Whether oneDNN has a kernel here for the forward of a small 3x3
 * convolution reading its inputs as `in`, by `algorithm`. */
static bool has_kernel(dnnl_data_type_t in, dnnl_alg_kind_t algorithm) {
    if (!ready()) return false;
    dnnl_dims_t src = {1, 16, 8, 8}, w = {16, 16, 3, 3}, one = {1, 1}, zero = {0, 0};
    dnnl_memory_desc_t s_md, w_md, d_md;
    dnnl_memory_desc_init_by_tag(&s_md, 4, src, in, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&w_md, 4, w, in, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&d_md, 4, src, dnnl_f32, dnnl_format_tag_any);
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd;
    if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, algorithm, &s_md, &w_md, NULL, &d_md,
                                                   one, zero, one, one) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, engine, NULL) != dnnl_success)
        return false;
    dnnl_primitive_desc_destroy(pd);
    return true;
}

/* Whether oneDNN has bfloat16 convolution kernels for this CPU (asked
 * once): elsewhere bfloat16 falls back to float32 on oneDNN, not to the
 * slower im2col path. */
bool kd_conv_bf16_available(void) {
    static int available = -1;
    if (available < 0) available = has_kernel(dnnl_bf16, dnnl_convolution_direct);
    return available;
}

/* Whether oneDNN has Winograd kernels for this CPU (asked once): AVX-512
 * only in this oneDNN. */
bool kd_conv_winograd_available(void) {
    static int available = -1;
    if (available < 0) available = has_kernel(dnnl_f32, dnnl_convolution_winograd);
    return available;
}

static void describe(const kd_conv_geometry *g, int N, int cout, int groups, conv_desc *d) {
    dnnl_data_type_t in = kd_conv_bf16() ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t src = {N, g->channels, g->height, g->width}, dst = {N, cout, g->out_h, g->out_w};
    dnnl_memory_desc_init_by_tag(&d->src, 4, src, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&d->dst, 4, dst, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&d->src_in, 4, src, in, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&d->src_grad_out, 4, src, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&d->dst_out, 4, dst, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&d->grad_in, 4, dst, in, dnnl_format_tag_any);
    dnnl_dims_t bias = {cout};
    dnnl_memory_desc_init_by_tag(&d->bias, 1, bias, dnnl_f32, dnnl_a);
    if (groups == 1) {
        dnnl_dims_t w = {cout, g->channels, g->kernel_h, g->kernel_w};
        dnnl_memory_desc_init_by_tag(&d->weights, 4, w, dnnl_f32, dnnl_oihw);
        dnnl_memory_desc_init_by_tag(&d->weights_in, 4, w, in, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&d->weights_grad_out, 4, w, dnnl_f32, dnnl_format_tag_any);
    } else { /* kdseg's Cout x Cin/g x kh x kw is oneDNN's goihw */
        dnnl_dims_t w = {groups, cout / groups, g->channels / groups, g->kernel_h, g->kernel_w};
        dnnl_memory_desc_init_by_tag(&d->weights, 5, w, dnnl_f32, dnnl_goihw);
        dnnl_memory_desc_init_by_tag(&d->weights_in, 5, w, in, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&d->weights_grad_out, 5, w, dnnl_f32, dnnl_format_tag_any);
    }
    d->strides[0] = g->stride_h, d->strides[1] = g->stride_w;
    d->winograd = kd_conv_winograd() && groups == 1 && g->kernel_h == 3 && g->kernel_w == 3 && g->stride_h == 1 &&
                  g->stride_w == 1 && g->dilation_h == 1 && g->dilation_w == 1;
    d->dilates[0] = g->dilation_h - 1, d->dilates[1] = g->dilation_w - 1; /* oneDNN counts the gaps */
    d->pad_l[0] = g->pad_h, d->pad_l[1] = g->pad_w;
    /* the right padding that makes the output size kdseg's (floor) */
    d->pad_r[0] = (g->out_h - 1) * g->stride_h + g->dilation_h * (g->kernel_h - 1) + 1 - g->height - g->pad_h;
    d->pad_r[1] = (g->out_w - 1) * g->stride_w + g->dilation_w * (g->kernel_w - 1) + 1 - g->width - g->pad_w;
    memset(&d->key, 0, sizeof d->key);
    d->key.g = *g;
    d->key.N = N, d->key.cout = cout, d->key.groups = groups;
    d->key.bf16 = in == dnnl_bf16, d->key.winograd = d->winograd;
}

/* The algorithms to try for d, the preferred first: Winograd where asked
 * for and the geometry is one it takes, then direct. */
static int algorithms(const conv_desc *d, dnnl_alg_kind_t algorithm[2]) {
    int n = 0;
    if (d->winograd) algorithm[n++] = dnnl_convolution_winograd;
    algorithm[n++] = dnnl_convolution_direct;
    return n;
}

/* A forward primitive (the training kind: its kernels take the blocked
 * layout; the inference kind picks channels-last kernels here, which would
 * reorder every activation). For inference's fused convolution, a bias
 * (`bias`) and as post-ops the residual sum (a second input in the layout
 * `residual`, which is also the output's) and the ReLU; NULL and false for
 * none, and then the kernel's choice of output layout. */
static dnnl_primitive_desc_t forward_pd(const conv_desc *d, const dnnl_memory_desc_t *bias,
                                        const dnnl_memory_desc_t *residual, bool relu) {
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t ops;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
    dnnl_post_ops_create(&ops);
    if (residual) dnnl_post_ops_append_binary(ops, dnnl_binary_add, residual);
    if (relu) dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
    dnnl_primitive_attr_set_post_ops(attr, ops);
    dnnl_post_ops_destroy(ops);
    dnnl_alg_kind_t algorithm[2];
    int n = algorithms(d, algorithm);
    dnnl_primitive_desc_t pd = NULL;
    for (int i = 0; !pd && i < n; i++) {
        dnnl_convolution_desc_t cd;
        if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, algorithm[i], &d->src_in,
                                                       &d->weights_in, bias, residual ? residual : &d->dst_out, d->strides,
                                                       d->dilates, d->pad_l, d->pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, attr, engine, NULL) != dnnl_success)
            pd = NULL;
    }
    dnnl_primitive_attr_destroy(attr);
    return pd;
}

static const dnnl_memory_desc_t *query(dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

/* Whether m's convolution runs Winograd's algorithm. */
static bool runs_winograd(const kd_dnnl_made *m) {
    const dnnl_convolution_desc_t *cd = NULL;
    return dnnl_primitive_desc_query(m->pd, dnnl_query_convolution_d, 0, &cd) == dnnl_success && cd &&
           cd->alg_kind == dnnl_convolution_winograd;
}

/* forward_pd's primitive for d, made once: with a bias (d->bias), the
 * residual (read in the output layout the kernel picks without it: a
 * residual in another layout makes oneDNN fall back to a slow kernel) and
 * the ReLU as asked. */
static const kd_dnnl_made *forward_made(const conv_desc *d, bool bias, bool residual, bool relu) {
    conv_key key = d->key;
    key.purpose = FORWARD, key.bias = bias, key.residual = residual, key.relu = relu;
    const kd_dnnl_made *m = kd_dnnl_cache_find(&key, sizeof key);
    if (m) return m;
    dnnl_memory_desc_t dst_md;
    if (residual) {
        const kd_dnnl_made *without = forward_made(d, bias, false, relu);
        if (!without) return NULL;
        dst_md = *query(without->pd, dnnl_query_dst_md);
    }
    dnnl_primitive_desc_t pd = forward_pd(d, bias ? &d->bias : NULL, residual ? &dst_md : NULL, relu);
    return pd ? kd_dnnl_cache_keep(&key, sizeof key, pd) : NULL;
}

/* Whether m runs on oneDNN's GEMM-based fallback rather than a JIT
 * convolution kernel (some dilated geometries, more of them on AVX2). */
static bool runs_on_gemm(const kd_dnnl_made *m) {
    const char *impl = NULL;
    return dnnl_primitive_desc_query(m->pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
           strstr(impl, "gemm") != NULL;
}

/* Whether g's direct forward (groups 1) runs on the GEMM-based fallback
 * (conv_subimages.c asks). The primitive is made and kept, as the direct
 * path would. */
bool kd_conv_dnnl_direct_on_gemm(const kd_conv_geometry *g, int N, int cout) {
    if (!ready()) return false;
    conv_desc d;
    describe(g, N, cout, 1, &d);
    const kd_dnnl_made *m = forward_made(&d, false, false, false);
    return m && runs_on_gemm(m);
}

/* A gradient's primitive for d (purpose BACKWARD_DATA or BACKWARD_WEIGHTS),
 * made once, with the forward's as oneDNN's hint. */
static const kd_dnnl_made *backward_made(const conv_desc *d, int purpose, const kd_dnnl_made *hint) {
    conv_key key = d->key;
    key.purpose = purpose;
    const kd_dnnl_made *m = kd_dnnl_cache_find(&key, sizeof key);
    if (m) return m;
    dnnl_alg_kind_t algorithm[2];
    int n = algorithms(d, algorithm);
    dnnl_primitive_desc_t pd = NULL;
    for (int i = 0; !pd && i < n; i++) {
        dnnl_convolution_desc_t cd;
        dnnl_status_t made =
            purpose == BACKWARD_DATA
                ? dnnl_dilated_convolution_backward_data_desc_init(&cd, algorithm[i], &d->src_grad_out,
                                                                   &d->weights_in, &d->grad_in, d->strides,
                                                                   d->dilates, d->pad_l, d->pad_r)
                : dnnl_dilated_convolution_backward_weights_desc_init(&cd, algorithm[i], &d->src_in,
                                                                      &d->weights_grad_out, NULL, &d->grad_in,
                                                                      d->strides, d->dilates, d->pad_l, d->pad_r);
        if (made != dnnl_success || dnnl_primitive_desc_create(&pd, &cd, NULL, engine, hint->pd) != dnnl_success)
            pd = NULL;
    }
    return pd ? kd_dnnl_cache_keep(&key, sizeof key, pd) : NULL;
}

/* The same for g's weight gradient, which runs on the fallback for more
 * geometries than the forward does (on AVX2, the 16 x 32 layers of
 * dilation 2, whose forward has a JIT kernel). */
bool kd_conv_dnnl_weight_grad_on_gemm(const kd_conv_geometry *g, int N, int cout) {
    if (!ready()) return false;
    conv_desc d;
    describe(g, N, cout, 1, &d);
    const kd_dnnl_made *hint = forward_made(&d, false, false, false);
    const kd_dnnl_made *m = hint ? backward_made(&d, BACKWARD_WEIGHTS, hint) : NULL;
    return m && runs_on_gemm(m);
}

/* The output bound to y's own storage in the kernel's blocked layout `md`. */
static bool bind_blocked_output(operand *o, const dnnl_memory_desc_t *md, kd_tensor *y) {
    if (dnnl_memory_create(&o->plain, md, engine, kd_data_as_stored(y)) != dnnl_success) return false;
    o->used = o->plain;
    return true;
}

/* Runs the forward primitive pd: x (read as it is stored) and w in, with
 * an epilogue e its bias and its residual (read in the output's layout),
 * and the output left in its blocked layout when blocked_out allows, else
 * reordered to y's NCHW. keep_src: as kd_conv_dnnl_forward's. */
static bool run_forward(const kd_dnnl_made *m, const conv_desc *d, const kd_tensor *x, const float *w,
                        const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out, kd_tensor **keep_src) {
    dnnl_primitive_desc_t pd = m->pd;
    const dnnl_memory_desc_t *src_md = query(pd, dnnl_query_src_md), *dst_md = query(pd, dnnl_query_dst_md);
    operand src = {0}, weights = {0}, dst = {0}, bias = {0}, residual = {0};
    const kd_tensor *res = e ? e->residual : NULL, *b = e ? e->bias : NULL;
    dnnl_memory_desc_t src_have, residual_have;
    void *src_data = as_stored(x, &d->src, &src_have);
    void *residual_data = res ? as_stored(res, &d->dst, &residual_have) : NULL;
    int out_block = blocked_out ? block_of(dst_md) : 0;
    if (out_block && !kd_blocked_layout_can_take(d->key.g.out_h, d->key.g.out_w, out_block)) out_block = 0;
    bool ok = (keep_src ? operand_bind_kept(&src, &src_have, src_md, src_data, keep_src)
                        : operand_bind(&src, &src_have, src_md, src_data, true)) &&
              operand_bind(&weights, &d->weights, query(pd, dnnl_query_weights_md), (void *)w, true) &&
              (!b || operand_bind(&bias, &d->bias, &d->bias, kd_f32(b), true)) &&
              (!res || operand_bind(&residual, &residual_have, dst_md, residual_data, true)) &&
              (out_block ? bind_blocked_output(&dst, dst_md, y) : operand_bind(&dst, &d->dst, dst_md, kd_f32(y), false));
    if (ok) {
        dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, src.used}, {DNNL_ARG_WEIGHTS, weights.used}, {DNNL_ARG_DST, dst.used}};
        int n = 3;
        if (b) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias.used};
        if (res)
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, residual.used};
        ok = execute(m, n, args) && (dst.used == dst.plain || reorder(dst.used, dst.plain, false));
        if (ok && out_block) kd_set_blocked(y, out_block);
    }
    operand_release(&src), operand_release(&weights), operand_release(&dst);
    operand_release(&bias), operand_release(&residual);
    return ok;
}

bool kd_conv_dnnl_forward(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                          const float *w, kd_tensor *y, bool blocked_out, kd_tensor **keep_src) {
    if (keep_src) *keep_src = NULL;
    if (!ready()) return false;
    if (kd_conv_by_subimages(g, N, cout, groups, keep_src != NULL))
        return kd_conv_subimages_forward(g, N, cout, x, w, y, blocked_out, keep_src);
    /* kdseg's own Winograd keeps no copy: the caller keeps x itself */
    if (kd_conv_own_winograd_takes(g, groups) && kd_conv_winograd_forward(g, N, cout, x, w, NULL, y, blocked_out))
        return true;
    kd_dnnl_cache_trim();
    conv_desc d;
    describe(g, N, cout, groups, &d);
    const kd_dnnl_made *m = forward_made(&d, false, false, false);
    if (!m) return false;
    bool ok = run_forward(m, &d, x, w, NULL, y, blocked_out, keep_src);
    if (!ok && keep_src && *keep_src) {
        kd_tensor_release(*keep_src);
        *keep_src = NULL;
    }
    return ok;
}

bool kd_conv_dnnl_inference(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                            const float *w, const kd_conv_epilogue *e, kd_tensor *y, bool blocked_out) {
    if (!ready()) return false;
    if (kd_conv_by_subimages(g, N, cout, groups, false))
        return kd_conv_subimages_inference(g, N, cout, x, w, e, y, blocked_out);
    if (kd_conv_own_winograd_takes(g, groups) && kd_conv_winograd_forward(g, N, cout, x, w, e, y, blocked_out))
        return true;
    kd_dnnl_cache_trim();
    conv_desc d;
    describe(g, N, cout, groups, &d);
    /* Winograd's kernels take no binary post-op: with them the convolution
     * and its bias run fused, and the residual and the ReLU after, in one
     * pass (their sum post-op, on the residual copied into the output
     * first, made these layers of bench_student 0.3 ms slower). The same
     * where the GEMM-based fallback runs: it takes the binary post-op, at a
     * quarter of its speed without it (bench_student's dilation-4 layer on
     * AVX2: 22.9 ms against 5.8). Elsewhere as direct. */
    const kd_dnnl_made *conv_and_bias = e->residual ? forward_made(&d, e->bias != NULL, false, false) : NULL;
    if (conv_and_bias && (runs_winograd(conv_and_bias) || runs_on_gemm(conv_and_bias))) {
        kd_conv_epilogue bias_only = {e->bias, NULL, false};
        if (!run_forward(conv_and_bias, &d, x, w, &bias_only, y, blocked_out, NULL)) return false;
        kd_conv_residual_relu(y, e);
        return true;
    }
    /* else the residual is read in the output's layout (reordered into it if
     * stored otherwise) */
    const kd_dnnl_made *m = forward_made(&d, e->bias != NULL, e->residual != NULL, e->relu);
    return m && run_forward(m, &d, x, w, e, y, blocked_out, NULL);
}

/* Whether a and b have the same dimensions. */
static bool same_dims(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b) {
    return a->ndims == b->ndims && memcmp(a->dims, b->dims, sizeof(a->dims[0]) * (size_t)a->ndims) == 0;
}

/* Where a gradient goes: the caller's plain buffer, or (the input
 * gradient, called with tensors) the accumulator tensor itself, whose
 * layout this may choose; zeros: taken pending (internal.h), not read. */
typedef struct {
    float *plain;
    kd_tensor *tensor;
    bool zeros;
} grad_target;

/* to[i] += from[i]: a gradient added into one stored in the same layout */
static void add_floats(const float *from, float *to, size_t n) {
#pragma omp parallel for schedule(static) if (n > KD_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) to[i] += from[i];
}

/* The gradient's result, in the primitive's layout, added into its target
 * (or, where the target's zeros are pending, written onto them). An
 * accumulator tensor is written straight in the kernel's blocked layout
 * where its zeros are pending and the layout is on (layout.c: the next
 * backward reads it so, no reorder at all), and added in that layout where
 * it is stored so already. Else into NCHW: an activation's gradient in a
 * blocked layout by kd_blocked_add_to_plain (oneDNN's reorder with a sum
 * post-op runs its generic kernel, at a third of the speed of its plain
 * one; the sums are the same), any other by that reorder. */
static bool accumulate_into(const kd_dnnl_made *m, const dnnl_memory_desc_t *plain, dnnl_query_t what, grad_target to,
                            int n, dnnl_exec_arg_t *args, int result_arg) {
    const dnnl_memory_desc_t *wanted = query(m->pd, what);
    int block = plain->ndims == 4 && same_dims(plain, wanted) ? block_of(wanted) : 0;
    kd_tensor *t = to.tensor;
    bool straight = block && t && to.zeros && kd_blocked_layout_on() &&
                    kd_blocked_layout_can_take((int)plain->dims[2], (int)plain->dims[3], block);
    bool onto_blocked = block && t && !to.zeros && kd_blocked(t) == block;
    float *into = !t ? to.plain : straight || onto_blocked ? kd_data_as_stored(t) : kd_f32(t);
    size_t bytes = 0, size = dnnl_memory_desc_get_size(wanted);
    void *buffer = straight ? into : kd_cache_alloc(size, &bytes);
    dnnl_memory_t result = NULL, target = NULL;
    bool ok = buffer && dnnl_memory_create(&result, wanted, engine, buffer) == dnnl_success &&
              (block || dnnl_memory_create(&target, plain, engine, into) == dnnl_success);
    if (ok) {
        args[n] = (dnnl_exec_arg_t){result_arg, result};
        ok = execute(m, n + 1, args);
        if (ok && straight) {
            kd_set_blocked(t, block);
        } else if (ok && onto_blocked) {
            add_floats(buffer, into, size / sizeof(float));
        } else if (ok && block) {
            kd_blocked_add_to_plain(buffer, into, (int)plain->dims[0], (int)plain->dims[1],
                                    (size_t)plain->dims[2] * (size_t)plain->dims[3], block, to.zeros);
        } else if (ok) {
            if (to.zeros) kd_zero_bytes(into, dnnl_memory_desc_get_size(plain));
            ok = reorder(result, target, true);
        }
    }
    if (result) dnnl_memory_destroy(result);
    if (target) dnnl_memory_destroy(target);
    if (!straight) kd_cache_free(buffer, bytes);
    return ok;
}

/* One gradient: its primitive (made with the forward's as a hint), its
 * input (the weights or the source) bound from plain data, the output
 * gradient already bound, and its result added into `into`. */
typedef struct {
    int arg;
    dnnl_query_t query;
    const dnnl_memory_desc_t *plain; /* the layout data is in */
    const void *data;
    const kd_tensor *kept; /* or the source kept from the forward */
} gradient_input;

static bool run_gradient(const kd_dnnl_made *m, gradient_input in, const operand *diff_dst, int result_arg,
                         dnnl_query_t result_query, const dnnl_memory_desc_t *result_plain, grad_target to) {
    operand input = {0};
    bool ok = in.kept ? operand_bind_from_kept(&input, in.kept, query(m->pd, in.query))
                      : operand_bind(&input, in.plain, query(m->pd, in.query), (void *)in.data, true);
    if (ok) {
        dnnl_exec_arg_t args[3] = {{in.arg, input.used}, {DNNL_ARG_DIFF_DST, diff_dst->used}};
        ok = accumulate_into(m, result_plain, result_query, to, 2, args, result_arg);
    }
    operand_release(&input);
    return ok;
}

/* The output gradient (stored in the layout `have`) in the layout a
 * gradient's primitive takes: the one bound for the other gradient when it
 * is the same (the usual case, so one reorder, or none where it is stored
 * so, serves both), else its own copy in `own`. */
static const operand *diff_dst_for(const kd_dnnl_made *m, const dnnl_memory_desc_t *have_out, const float *grad_out,
                                   const operand *shared, operand *own) {
    const dnnl_memory_desc_t *wanted = query(m->pd, dnnl_query_diff_dst_md);
    if (shared && shared->used) {
        const dnnl_memory_desc_t *have;
        dnnl_memory_get_memory_desc(shared->used, &have);
        if (dnnl_memory_desc_equal(have, wanted)) return shared;
    }
    return operand_bind(own, have_out, wanted, (void *)grad_out, true) ? own : NULL;
}

/* Both gradients, the output gradient stored in the layout have_out. */
static unsigned backward(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                         const kd_tensor *kept_src, const float *w, const dnnl_memory_desc_t *have_out,
                         const float *grad_out, grad_target grad_x, float *grad_w) {
    kd_dnnl_cache_trim();
    conv_desc d;
    describe(g, N, cout, groups, &d);
    const kd_dnnl_made *hint = forward_made(&d, false, false, false); /* one for both gradients */
    if (!hint) return 0;
    bool want_x = grad_x.plain || grad_x.tensor;
    const kd_dnnl_made *data_primitive = want_x ? backward_made(&d, BACKWARD_DATA, hint) : NULL;
    const kd_dnnl_made *weights_primitive = grad_w ? backward_made(&d, BACKWARD_WEIGHTS, hint) : NULL;
    unsigned ran = 0;
    operand data_grad = {0}, weights_grad = {0};
    const operand *dd = NULL;
    if (data_primitive && (dd = diff_dst_for(data_primitive, have_out, grad_out, NULL, &data_grad)) &&
        run_gradient(data_primitive, (gradient_input){DNNL_ARG_WEIGHTS, dnnl_query_weights_md, &d.weights, w, NULL}, dd,
                     DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, &d.src, grad_x))
        ran |= KD_DNNL_INPUT_GRAD;
    dnnl_memory_desc_t src_have = d.src;
    const void *src_data = weights_primitive && !kept_src ? as_stored(x, &d.src, &src_have) : NULL;
    if (weights_primitive && (dd = diff_dst_for(weights_primitive, have_out, grad_out, &data_grad, &weights_grad)) &&
        run_gradient(weights_primitive, (gradient_input){DNNL_ARG_SRC, dnnl_query_src_md, &src_have, src_data, kept_src}, dd,
                     DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, &d.weights, (grad_target){grad_w, NULL, false}))
        ran |= KD_DNNL_WEIGHT_GRAD;
    operand_release(&data_grad), operand_release(&weights_grad);
    return ran;
}

/* Both gradients on kdseg's own Winograd, where the forward ran on it (it
 * kept no source): what ran, 0 where they do not run there. The output
 * gradient is a tensor as stored, or plain NCHW floats (grad_out NULL). */
static unsigned own_winograd_backward(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                                      const kd_tensor *kept_src, const float *w, const kd_tensor *grad_out,
                                      const float *grad_out_plain, kd_tensor *grad_x_tensor, float *grad_x_plain,
                                      bool grad_x_zeros, float *grad_w) {
    if (kept_src || !kd_conv_own_winograd_takes(g, groups)) return 0;
    kd_stored go = grad_out ? kd_stored_of(grad_out)
                            : (kd_stored){(float *)grad_out_plain, N, cout, g->out_h, g->out_w, 0};
    return kd_conv_winograd_backward(g, w, grad_w ? kd_stored_of(x) : (kd_stored){0}, go, grad_x_tensor,
                                     grad_x_plain, grad_x_zeros, grad_w);
}

unsigned kd_conv_dnnl_backward(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                               const kd_tensor *kept_src, const float *w, const kd_tensor *grad_out,
                               kd_tensor *grad_x, bool grad_x_zeros, float *grad_w) {
    if (!ready()) return 0;
    /* the way the forward ran, where it kept its source */
    if (kept_src ? kept_subimages(kept_src, N) : kd_conv_by_subimages(g, N, cout, groups, grad_w != NULL))
        return kd_conv_subimages_backward(g, N, cout, x, kept_src, w, kd_f32(grad_out), grad_x ? kd_f32(grad_x) : NULL,
                                          grad_x_zeros, grad_w);
    unsigned ran = own_winograd_backward(g, N, cout, groups, x, kept_src, w, grad_out, NULL, grad_x, NULL,
                                         grad_x_zeros, grad_w);
    if (ran) return ran;
    dnnl_memory_desc_t plain_out, have_out;
    dnnl_dims_t dims = {N, cout, g->out_h, g->out_w};
    dnnl_memory_desc_init_by_tag(&plain_out, 4, dims, dnnl_f32, dnnl_nchw);
    const float *go = as_stored(grad_out, &plain_out, &have_out);
    return backward(g, N, cout, groups, x, kept_src, w, &have_out, go, (grad_target){NULL, grad_x, grad_x_zeros},
                    grad_w);
}

unsigned kd_conv_dnnl_backward_plain(const kd_conv_geometry *g, int N, int cout, int groups, const kd_tensor *x,
                                     const kd_tensor *kept_src, const float *w, const float *grad_out, float *grad_x,
                                     bool grad_x_zeros, float *grad_w) {
    if (!ready()) return 0;
    unsigned ran = own_winograd_backward(g, N, cout, groups, x, kept_src, w, NULL, grad_out, NULL, grad_x,
                                         grad_x_zeros, grad_w);
    if (ran) return ran;
    dnnl_memory_desc_t plain_out;
    dnnl_dims_t dims = {N, cout, g->out_h, g->out_w};
    dnnl_memory_desc_init_by_tag(&plain_out, 4, dims, dnnl_f32, dnnl_nchw);
    return backward(g, N, cout, groups, x, kept_src, w, &plain_out, grad_out,
                    (grad_target){grad_x, NULL, grad_x_zeros}, grad_w);
}
