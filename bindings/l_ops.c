/* l_ops.c - every core op as a Lua function of kd._C. Arguments are checked
 * here (types, option names); shapes and values are checked by the core,
 * whose message becomes the Lua error. Dimensions and channel positions given
 * from Lua are 1-based, as everywhere in Lua. */
#include <string.h>

#include "lkd.h"

typedef kd_status (*binary_fn)(kd_tensor *, kd_tensor *, kd_tensor **);
typedef kd_status (*unary_fn)(kd_tensor *, kd_tensor **);

static int binary(lua_State *L, const char *name, binary_fn fn) {
    kd_tensor *a = lkd_check_tensor(L, 1), *b = lkd_check_tensor(L, 2), *out;
    return lkd_result(L, name, fn(a, b, &out), &out);
}

static int unary(lua_State *L, const char *name, unary_fn fn) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    return lkd_result(L, name, fn(x, &out), &out);
}

static int l_add(lua_State *L) { return binary(L, "kd.add", kd_add); }
static int l_sub(lua_State *L) { return binary(L, "kd.sub", kd_sub); }
static int l_mul(lua_State *L) { return binary(L, "kd.mul", kd_mul); }
static int l_div(lua_State *L) { return binary(L, "kd.div", kd_div); }
static int l_channel_add(lua_State *L) { return binary(L, "kd.channel_add", kd_channel_add); }
static int l_channel_sub(lua_State *L) { return binary(L, "kd.channel_sub", kd_channel_sub); }
static int l_channel_mul(lua_State *L) { return binary(L, "kd.channel_mul", kd_channel_mul); }
static int l_channel_div(lua_State *L) { return binary(L, "kd.channel_div", kd_channel_div); }
static int l_exp(lua_State *L) { return unary(L, "kd.exp", kd_exp); }
static int l_log(lua_State *L) { return unary(L, "kd.log", kd_log); }
static int l_relu(lua_State *L) { return unary(L, "kd.relu", kd_relu); }
static int l_relu6(lua_State *L) { return unary(L, "kd.relu6", kd_relu6); }
static int l_sigmoid(lua_State *L) { return unary(L, "kd.sigmoid", kd_sigmoid); }
static int l_tanh(lua_State *L) { return unary(L, "kd.tanh", kd_tanh); }

static int l_affine(lua_State *L) { /* affine(x, scale, shift) = x * scale + shift */
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    float scale = (float)luaL_checknumber(L, 2), shift = (float)luaL_optnumber(L, 3, 0);
    return lkd_result(L, "kd.affine", kd_affine_scalar(x, scale, shift, &out), &out);
}

static int l_rdiv(lua_State *L) { /* rdiv(x, s) = s / x */
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    float s = (float)luaL_checknumber(L, 2);
    return lkd_result(L, "kd.rdiv", kd_rdiv_scalar(x, s, &out), &out);
}

static int l_leaky_relu(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    float slope = (float)luaL_optnumber(L, 2, 0.01);
    return lkd_result(L, "kd.leaky_relu", kd_leaky_relu(x, slope, &out), &out);
}

static int l_dropout2d(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    float p = (float)luaL_checknumber(L, 2);
    return lkd_result(L, "kd.dropout2d", kd_dropout2d(x, p, NULL, &out), &out);
}

/* dims: nil (all), a number, or a table of 1-based dims. */
static unsigned dims_mask(lua_State *L, int index, const kd_tensor *x, const char *fn) {
    if (lua_isnoneornil(L, index)) return (1u << x->ndim) - 1u;
    unsigned mask = 0;
    int count = lua_istable(L, index) ? (int)lua_objlen(L, index) : 1;
    for (int i = 1; i <= count; i++) {
        int d;
        if (lua_istable(L, index)) {
            lua_rawgeti(L, index, i);
            d = lkd_check_int(L, -1);
            lua_pop(L, 1);
        } else {
            d = lkd_check_int(L, index);
        }
        if (d < 0) d += x->ndim + 1;
        if (d < 1 || d > x->ndim) luaL_error(L, "%s: dim %d out of range for %s", fn, d, kd_shape_str(x));
        mask |= 1u << (d - 1);
    }
    return mask;
}

static int reduce(lua_State *L, const char *name, bool mean) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    unsigned mask = dims_mask(L, 2, x, name);
    bool keepdim = lua_toboolean(L, 3);
    kd_status s = mean ? kd_mean_dims(x, mask, keepdim, &out) : kd_sum_dims(x, mask, keepdim, &out);
    return lkd_result(L, name, s, &out);
}

static int l_sum(lua_State *L) { return reduce(L, "kd.sum", false); }
static int l_mean(lua_State *L) { return reduce(L, "kd.mean", true); }

static int l_max_channels(lua_State *L) { /* -> values, class indices (0-based class ids) */
    kd_tensor *x = lkd_check_tensor(L, 1), *values, *indices;
    if (kd_max_channels(x, &values, &indices)) return lkd_raise(L, "kd.max");
    lkd_push_tensor(L, values);
    lkd_push_tensor(L, indices);
    return 2;
}

static int l_concat(lua_State *L) { /* concat({a, b, ...}) along channels */
    luaL_checktype(L, 1, LUA_TTABLE);
    int count = (int)lua_objlen(L, 1);
    kd_tensor *xs[8];
    if (count < 1 || count > 8) return luaL_error(L, "kd.concat: 1 to 8 tensors, got %d", count);
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, 1, i + 1);
        xs[i] = lkd_to_tensor(L, -1);
        if (!xs[i]) return luaL_error(L, "kd.concat: element %d is %s, not a tensor", i + 1, luaL_typename(L, -1));
        lua_pop(L, 1); /* still held by the table */
    }
    kd_tensor *out;
    return lkd_result(L, "kd.concat", kd_concat_channels(count, xs, &out), &out);
}

static int l_slice_channels(lua_State *L) { /* slice_channels(x, first (1-based), count) */
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    int first = lkd_check_int(L, 2), count = lkd_check_int(L, 3);
    return lkd_result(L, "kd.slice_channels", kd_slice_channels(x, first - 1, count, &out), &out);
}

static int l_crop2d(lua_State *L) { /* crop2d(x, top, left, h, w): 0-based offsets, no grad */
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    int top = lkd_check_int(L, 2), left = lkd_check_int(L, 3);
    int h = lkd_check_int(L, 4), w = lkd_check_int(L, 5);
    return lkd_result(L, "kd.crop2d", kd_crop2d(x, top, left, h, w, &out), &out);
}

static int l_add_window(lua_State *L) { /* add_window(dst, src, top, left) */
    kd_tensor *dst = lkd_check_tensor(L, 1), *src = lkd_check_tensor(L, 2);
    if (kd_add_window(dst, src, lkd_check_int(L, 3), lkd_check_int(L, 4))) return lkd_raise(L, "kd.add_window");
    return 0;
}

static const char *const conv_options[] = {"stride", "padding", "dilation", "groups", NULL};

static kd_conv_params conv_params(lua_State *L, int index, const char *fn) {
    lkd_check_options(L, index, fn, conv_options);
    kd_conv_params p;
    lkd_opt_pair(L, index, "stride", 1, &p.stride_h, &p.stride_w);
    lkd_opt_pair(L, index, "padding", 0, &p.pad_h, &p.pad_w);
    lkd_opt_pair(L, index, "dilation", 1, &p.dilation_h, &p.dilation_w);
    p.groups = lkd_opt_int(L, index, "groups", 1);
    return p;
}

static int l_conv2d(lua_State *L) { /* conv2d(x, weight[, bias][, {stride, padding, dilation, groups}]) */
    kd_tensor *x = lkd_check_tensor(L, 1), *w = lkd_check_tensor(L, 2), *b = lkd_opt_tensor(L, 3), *out;
    kd_conv_params p = conv_params(L, 4, "kd.conv2d");
    return lkd_result(L, "kd.conv2d", kd_conv2d(x, w, b, &p, &out), &out);
}

static const char *const conv_bn_options[] = {"stride", "padding", "dilation", "groups", "eps", "relu", NULL};

/* conv2d_bn(x, weight, bias, bn_weight, bn_bias, running_mean, running_var[, residual]
 *           [, {stride, padding, dilation, groups, eps = 1e-5, relu = false}]):
 * inference's conv -> batch norm (running statistics) [-> + residual] [-> ReLU] as one convolution */
static int l_conv2d_bn(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *w = lkd_check_tensor(L, 2), *b = lkd_opt_tensor(L, 3), *out;
    kd_folded_bn bn = {lkd_opt_tensor(L, 4), lkd_opt_tensor(L, 5), lkd_opt_tensor(L, 6), lkd_opt_tensor(L, 7), 0};
    kd_tensor *residual = lkd_opt_tensor(L, 8);
    lkd_check_options(L, 9, "kd.conv2d_bn", conv_bn_options);
    kd_conv_params p;
    lkd_opt_pair(L, 9, "stride", 1, &p.stride_h, &p.stride_w);
    lkd_opt_pair(L, 9, "padding", 0, &p.pad_h, &p.pad_w);
    lkd_opt_pair(L, 9, "dilation", 1, &p.dilation_h, &p.dilation_w);
    p.groups = lkd_opt_int(L, 9, "groups", 1);
    bn.eps = (float)lkd_opt_number(L, 9, "eps", 1e-5);
    bool relu = lkd_opt_bool(L, 9, "relu", false);
    return lkd_result(L, "kd.conv2d_bn", kd_conv2d_bn(x, w, b, &bn, residual, relu, &p, &out), &out);
}

static int l_conv2d_reference(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *w = lkd_check_tensor(L, 2), *b = lkd_opt_tensor(L, 3), *out;
    kd_conv_params p = conv_params(L, 4, "kd.conv2d_reference");
    return lkd_result(L, "kd.conv2d_reference", kd_conv2d_reference(x, w, b, &p, &out), &out);
}

/* spectral_power(weight, u, iterations) -> u v^T (the weight's shape), sigma; u updated */
static int l_spectral_power(lua_State *L) {
    kd_tensor *w = lkd_check_tensor(L, 1), *u = lkd_check_tensor(L, 2), *outer;
    int iterations = lkd_check_int(L, 3);
    float sigma;
    if (kd_spectral_power(w, u, iterations, &outer, &sigma)) return lkd_raise(L, "kd.spectral_power");
    lkd_push_tensor(L, outer);
    lua_pushnumber(L, sigma);
    return 2;
}

static const char *const bn_options[] = {"training", "momentum", "eps", "sync", "relu", NULL};

/* batch_norm(x, weight, bias, running_mean, running_var[, {training, momentum, eps, sync, relu}]);
 * sync: in training, statistics over every process of a data-parallel run;
 * relu: a ReLU after it, in the same pass (kd_batch_norm2d_relu) */
static int l_batch_norm(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *w = lkd_opt_tensor(L, 2), *b = lkd_opt_tensor(L, 3);
    kd_tensor *rm = lkd_opt_tensor(L, 4), *rv = lkd_opt_tensor(L, 5), *out;
    lkd_check_options(L, 6, "kd.batch_norm", bn_options);
    bool training = lkd_opt_bool(L, 6, "training", true);
    float momentum = (float)lkd_opt_number(L, 6, "momentum", 0.1), eps = (float)lkd_opt_number(L, 6, "eps", 1e-5);
    bool relu = lkd_opt_bool(L, 6, "relu", false);
    if (training && lkd_opt_bool(L, 6, "sync", false)) {
        if (relu) return luaL_error(L, "kd.batch_norm: relu is not fused into a synchronised batch norm (sync)");
        return lkd_result(L, "kd.batch_norm", kd_batch_norm2d_synced(x, w, b, rm, rv, momentum, eps, &out), &out);
    }
    return lkd_result(L, "kd.batch_norm",
                      (relu ? kd_batch_norm2d_relu : kd_batch_norm2d)(x, w, b, rm, rv, training, momentum, eps, &out), &out);
}

static const char *const max_pool_options[] = {"kernel", "stride", "padding", "ceil_mode", NULL};
static const char *const avg_pool_options[] = {"kernel", "stride", "padding", "ceil_mode", "count_include_pad", NULL};

/* pool(x, {kernel, stride = kernel, padding = 0, ceil_mode = false[, count_include_pad = true]}) */
static int pool(lua_State *L, const char *fn, bool max) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    lkd_check_options(L, 2, fn, max ? max_pool_options : avg_pool_options);
    kd_pool_params p = {0};
    p.ceil_mode = lkd_opt_bool(L, 2, "ceil_mode", false);
    p.exclude_pad = !lkd_opt_bool(L, 2, "count_include_pad", true);
    lkd_opt_pair(L, 2, "kernel", 0, &p.kernel_h, &p.kernel_w);
    if (p.kernel_h == 0) return luaL_error(L, "%s: option 'kernel' is required", fn);
    lkd_opt_pair(L, 2, "stride", 0, &p.stride_h, &p.stride_w);
    if (p.stride_h == 0 && p.stride_w == 0) p.stride_h = p.kernel_h, p.stride_w = p.kernel_w;
    lkd_opt_pair(L, 2, "padding", 0, &p.pad_h, &p.pad_w);
    return lkd_result(L, fn, max ? kd_max_pool2d(x, &p, &out) : kd_avg_pool2d(x, &p, &out), &out);
}

static int l_max_pool2d(lua_State *L) { return pool(L, "kd.max_pool2d", true); }
static int l_avg_pool2d(lua_State *L) { return pool(L, "kd.avg_pool2d", false); }

static int l_adaptive_avg_pool2d(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    int h = lkd_check_int(L, 2), w = lkd_opt_int_arg(L, 3, h);
    return lkd_result(L, "kd.adaptive_avg_pool2d", kd_adaptive_avg_pool2d(x, h, w, &out), &out);
}

static int l_resize_bilinear(lua_State *L) { /* resize_bilinear(x, h, w[, align_corners]) */
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    int h = lkd_check_int(L, 2), w = lkd_check_int(L, 3);
    bool align = lua_toboolean(L, 4);
    return lkd_result(L, "kd.resize_bilinear", kd_resize_bilinear(x, h, w, align, &out), &out);
}

static int l_resize_nearest(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    int h = lkd_check_int(L, 2), w = lkd_check_int(L, 3);
    return lkd_result(L, "kd.resize_nearest", kd_resize_nearest(x, h, w, &out), &out);
}

static int l_softmax(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    float t = (float)luaL_optnumber(L, 2, 1);
    return lkd_result(L, "kd.softmax", kd_softmax(x, t, &out), &out);
}

static int l_log_softmax(lua_State *L) {
    kd_tensor *x = lkd_check_tensor(L, 1), *out;
    float t = (float)luaL_optnumber(L, 2, 1);
    return lkd_result(L, "kd.log_softmax", kd_log_softmax(x, t, &out), &out);
}

/* Makes the options argument at index a table (an empty one when absent). */
static void options_table(lua_State *L, int index) {
    if (lua_gettop(L) < index) lua_settop(L, index);
    if (lua_isnil(L, index)) {
        lua_newtable(L);
        lua_replace(L, index);
    }
}

static const char *const reductions[] = {"mean", "sum", "none", NULL};

static kd_reduction check_reduction(lua_State *L, int index, const char *fn) {
    lua_getfield(L, index, "reduction");
    kd_reduction r = KD_REDUCE_MEAN;
    if (!lua_isnil(L, -1)) {
        const char *name = lua_tostring(L, -1);
        int found = -1;
        for (int i = 0; name && reductions[i]; i++)
            if (strcmp(name, reductions[i]) == 0) found = i;
        if (found < 0) luaL_error(L, "%s: reduction must be 'mean', 'sum' or 'none'", fn);
        r = (kd_reduction)found;
    }
    lua_pop(L, 1);
    return r;
}

static const char *const ce_options[] = {"ignore", "class_weight", "pixel_weight", "reduction", NULL};

/* cross_entropy(logits, target[, {ignore = 255, class_weight, pixel_weight, reduction = 'mean'}]) */
static int l_cross_entropy(lua_State *L) {
    const char *fn = "kd.losses.cross_entropy";
    kd_tensor *logits = lkd_check_tensor(L, 1), *target = lkd_check_tensor(L, 2), *out;
    options_table(L, 3);
    lkd_check_options(L, 3, fn, ce_options);
    kd_cross_entropy_params p = {
        .ignore_index = lkd_opt_int(L, 3, "ignore", 255),
        .class_weight = lkd_opt_tensor_field(L, 3, "class_weight"),
        .pixel_weight = lkd_opt_tensor_field(L, 3, "pixel_weight"),
        .reduction = check_reduction(L, 3, fn),
    };
    return lkd_result(L, fn, kd_cross_entropy(logits, target, &p, &out), &out);
}

static const char *const kl_options[] = {"temperature", "detach_target", "reduction", NULL};

/* kl_div(student_logits, teacher_logits[, {temperature = 1, detach_target = true, reduction}]) */
static int l_kl_div(lua_State *L) {
    const char *fn = "kd.losses.kl_div";
    kd_tensor *s = lkd_check_tensor(L, 1), *t = lkd_check_tensor(L, 2), *out;
    options_table(L, 3);
    lkd_check_options(L, 3, fn, kl_options);
    float temperature = (float)lkd_opt_number(L, 3, "temperature", 1);
    bool detach = lkd_opt_bool(L, 3, "detach_target", true);
    kd_reduction r = check_reduction(L, 3, fn);
    return lkd_result(L, fn, kd_kl_div(s, t, temperature, detach, r, &out), &out);
}

static int l_mse(lua_State *L) { /* mse(a, b[, {reduction}]) */
    const char *fn = "kd.losses.mse";
    kd_tensor *a = lkd_check_tensor(L, 1), *b = lkd_check_tensor(L, 2), *out;
    options_table(L, 3);
    static const char *const options[] = {"reduction", NULL};
    lkd_check_options(L, 3, fn, options);
    return lkd_result(L, fn, kd_mse(a, b, check_reduction(L, 3, fn), &out), &out);
}

static int l_pairwise(lua_State *L) { /* pairwise_distill(fs, ft[, {grid = {h, w}}]) */
    const char *fn = "kd.losses.pairwise_distill";
    kd_tensor *s = lkd_check_tensor(L, 1), *t = lkd_check_tensor(L, 2), *out;
    static const char *const options[] = {"grid", NULL};
    lkd_check_options(L, 3, fn, options);
    int gh, gw;
    lkd_opt_pair(L, 3, "grid", 4, &gh, &gw);
    return lkd_result(L, fn, kd_pairwise_distill(s, t, gh, gw, &out), &out);
}

static int l_pairwise_similarity(lua_State *L) { /* pairwise_similarity(ns, nt[, {detach_norm = false}]) */
    const char *fn = "kd.losses.pairwise_similarity";
    kd_tensor *s = lkd_check_tensor(L, 1), *t = lkd_check_tensor(L, 2), *out;
    static const char *const options[] = {"detach_norm", NULL};
    lkd_check_options(L, 3, fn, options);
    bool detach = lkd_opt_bool(L, 3, "detach_norm", false);
    return lkd_result(L, fn, kd_pairwise_similarity(s, t, detach, &out), &out);
}

/* sgd_step(param, grad, buf_or_nil, lr, momentum, dampening, weight_decay, nesterov, first) */
static int l_sgd_step(lua_State *L) {
    kd_tensor *p = lkd_check_tensor(L, 1), *g = lkd_check_tensor(L, 2), *buf = lkd_opt_tensor(L, 3);
    kd_status s = kd_sgd_step(p, g, buf, (float)luaL_checknumber(L, 4), (float)luaL_checknumber(L, 5),
                              (float)luaL_checknumber(L, 6), (float)luaL_checknumber(L, 7),
                              lua_toboolean(L, 8), lua_toboolean(L, 9));
    return s ? lkd_raise(L, "kd.optim.SGD") : 0;
}

/* adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step) */
static int l_adamw_step(lua_State *L) {
    kd_tensor *p = lkd_check_tensor(L, 1), *g = lkd_check_tensor(L, 2);
    kd_tensor *m = lkd_check_tensor(L, 3), *v = lkd_check_tensor(L, 4);
    kd_status s = kd_adamw_step(p, g, m, v, (float)luaL_checknumber(L, 5), (float)luaL_checknumber(L, 6),
                                (float)luaL_checknumber(L, 7), (float)luaL_checknumber(L, 8),
                                (float)luaL_checknumber(L, 9), lkd_check_int(L, 10));
    return s ? lkd_raise(L, "kd.optim.AdamW") : 0;
}

static const luaL_Reg ops[] = {
    {"add", l_add}, {"sub", l_sub}, {"mul", l_mul}, {"div", l_div}, {"affine", l_affine},
    {"rdiv", l_rdiv}, {"channel_add", l_channel_add}, {"channel_sub", l_channel_sub},
    {"channel_mul", l_channel_mul}, {"channel_div", l_channel_div}, {"exp", l_exp}, {"log", l_log},
    {"relu", l_relu}, {"relu6", l_relu6}, {"leaky_relu", l_leaky_relu}, {"sigmoid", l_sigmoid}, {"tanh", l_tanh},
    {"dropout2d", l_dropout2d}, {"sum", l_sum}, {"mean", l_mean}, {"max_channels", l_max_channels},
    {"concat", l_concat}, {"slice_channels", l_slice_channels}, {"conv2d", l_conv2d}, {"conv2d_bn", l_conv2d_bn},
    {"conv2d_reference", l_conv2d_reference}, {"batch_norm", l_batch_norm}, {"spectral_power", l_spectral_power},
    {"max_pool2d", l_max_pool2d}, {"avg_pool2d", l_avg_pool2d},
    {"adaptive_avg_pool2d", l_adaptive_avg_pool2d}, {"resize_bilinear", l_resize_bilinear},
    {"resize_nearest", l_resize_nearest}, {"softmax", l_softmax}, {"log_softmax", l_log_softmax},
    {"cross_entropy", l_cross_entropy}, {"kl_div", l_kl_div}, {"mse", l_mse},
    {"pairwise_distill", l_pairwise}, {"pairwise_similarity", l_pairwise_similarity}, {"crop2d", l_crop2d}, {"add_window", l_add_window}, {"sgd_step", l_sgd_step}, {"adamw_step", l_adamw_step},
    {NULL, NULL},
};

void lkd_open_ops(lua_State *L) { luaL_register(L, NULL, ops); }
