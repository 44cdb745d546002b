/* l_tensor.c - the kd.Tensor userdata: constructors, properties (shape,
 * dtype, grad, requires_grad), views, conversion to and from Lua tables and
 * byte strings, and in-place fills. Arithmetic metamethods and printing are
 * added in Lua (scripts/kd/tensor.lua) on the metatable this file makes. */
#include <math.h>
#include <string.h>

#include "lkd.h"

static const char *const dtype_names[] = {"float32", "int32", "uint8", "int64", NULL};

static kd_dtype check_dtype(lua_State *L, int index, kd_dtype fallback) {
    if (lua_isnoneornil(L, index)) return fallback;
    return (kd_dtype)luaL_checkoption(L, index, NULL, dtype_names);
}

static int push_shape(lua_State *L, const kd_tensor *t) {
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* ---- constructors ------------------------------------------------------------ */

/* The argument after a shape given as a table (one argument) or as sizes. */
static int after_shape(lua_State *L, int ndim) { return lua_istable(L, 1) ? 2 : 1 + ndim; }

static int l_zeros(lua_State *L) { /* zeros(shape[, dtype]) */
    int shape[KD_MAX_DIMS], ndim = lkd_check_shape(L, 1, shape);
    kd_tensor *t;
    kd_dtype dtype = check_dtype(L, after_shape(L, ndim), KD_F32);
    return lkd_result(L, "kd.zeros", kd_tensor_zeros(dtype, ndim, shape, &t), &t);
}

static int l_full(lua_State *L) { /* full(shape, value[, dtype]) */
    int shape[KD_MAX_DIMS], ndim = lkd_check_shape(L, 1, shape);
    if (!lua_istable(L, 1)) return luaL_error(L, "kd.full: the shape must be a table, as in kd.full({2, 3}, 7)");
    double value = luaL_checknumber(L, 2);
    kd_tensor *t;
    return lkd_result(L, "kd.full", kd_tensor_full(check_dtype(L, 3, KD_F32), ndim, shape, value, &t), &t);
}

static int l_randn(lua_State *L) { /* randn(shape[, mean, std]) */
    int shape[KD_MAX_DIMS], ndim = lkd_check_shape(L, 1, shape);
    int at = after_shape(L, ndim);
    float mean = (float)luaL_optnumber(L, at, 0), std = (float)luaL_optnumber(L, at + 1, 1);
    kd_tensor *t;
    if (kd_tensor_new(KD_F32, ndim, shape, &t)) return lkd_raise(L, "kd.randn");
    if (kd_fill_normal(t, mean, std, NULL)) {
        kd_tensor_release(t);
        return lkd_raise(L, "kd.randn");
    }
    lkd_push_tensor(L, t);
    return 1;
}

static int l_rand(lua_State *L) { /* rand(shape[, low, high]) */
    int shape[KD_MAX_DIMS], ndim = lkd_check_shape(L, 1, shape);
    int at = after_shape(L, ndim);
    float low = (float)luaL_optnumber(L, at, 0), high = (float)luaL_optnumber(L, at + 1, 1);
    kd_tensor *t;
    if (kd_tensor_new(KD_F32, ndim, shape, &t)) return lkd_raise(L, "kd.rand");
    if (kd_fill_uniform(t, low, high, NULL)) {
        kd_tensor_release(t);
        return lkd_raise(L, "kd.rand");
    }
    lkd_push_tensor(L, t);
    return 1;
}

static int l_arange(lua_State *L) { /* arange(stop) or arange(start, stop[, step][, dtype]) */
    double start = 0, stop, step = 1;
    int dtype_at = 2;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        start = luaL_checknumber(L, 1);
        stop = luaL_checknumber(L, 2);
        dtype_at = 3;
        if (lua_type(L, 3) == LUA_TNUMBER) step = lua_tonumber(L, 3), dtype_at = 4;
    } else {
        stop = luaL_checknumber(L, 1);
    }
    if (step == 0 || !isfinite(start) || !isfinite(stop)) return luaL_error(L, "kd.arange: step must be non-zero and bounds finite");
    double count = ceil((stop - start) / step);
    if (count < 0) count = 0;
    if (count > 1e9) return luaL_error(L, "kd.arange: %f elements is too many", count);
    int shape[1] = {(int)count};
    kd_tensor *t;
    if (kd_tensor_new(check_dtype(L, dtype_at, KD_F32), 1, shape, &t)) return lkd_raise(L, "kd.arange");
    for (int i = 0; i < shape[0]; i++) kd_set(t, (size_t)i, start + i * step);
    lkd_push_tensor(L, t);
    return 1;
}

/* Walks a nested table to find its shape; every level must be a full array. */
static int nested_shape(lua_State *L, int index, int *shape) {
    int ndim = 0;
    lua_pushvalue(L, index);
    while (lua_istable(L, -1)) {
        if (ndim == KD_MAX_DIMS) luaL_error(L, "kd.tensor: more than %d nesting levels", KD_MAX_DIMS);
        shape[ndim++] = (int)lua_objlen(L, -1);
        if (shape[ndim - 1] == 0) break;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

/* t is already on the Lua stack (Lua frees it if an error is raised here). */
static void fill_nested(lua_State *L, int index, kd_tensor *t, int dim, size_t *at) {
    if (dim >= KD_MAX_DIMS) return;
    int n = (int)lua_objlen(L, index);
    if (n != t->shape[dim]) {
        luaL_error(L, "kd.tensor: ragged nested table: %d elements at depth %d, expected %d", n,
                   dim + 1, t->shape[dim]);
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, index, i);
        if (dim + 1 < t->ndim) {
            if (!lua_istable(L, -1)) {
                luaL_error(L, "kd.tensor: expected a table at depth %d, got %s", dim + 2, luaL_typename(L, -1));
            }
            fill_nested(L, lua_gettop(L), t, dim + 1, at);
        } else {
            if (lua_type(L, -1) != LUA_TNUMBER) {
                luaL_error(L, "kd.tensor: element %d is %s, not a number", (int)*at + 1, luaL_typename(L, -1));
            }
            kd_set(t, (*at)++, lua_tonumber(L, -1));
        }
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) { /* tensor(nested table or number[, dtype]) */
    kd_dtype dtype = check_dtype(L, 2, KD_F32);
    kd_tensor *t;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        int one[1] = {1};
        if (kd_tensor_full(dtype, 1, one, lua_tonumber(L, 1), &t)) return lkd_raise(L, "kd.tensor");
        lkd_push_tensor(L, t);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int shape[KD_MAX_DIMS], ndim = nested_shape(L, 1, shape);
    if (kd_tensor_new(dtype, ndim, shape, &t)) return lkd_raise(L, "kd.tensor");
    lkd_push_tensor(L, t); /* first: a ragged table's error leaves it to Lua's collector */
    size_t at = 0;
    if (kd_numel(t) > 0) fill_nested(L, 1, t, 0, &at);
    return 1;
}

static int l_from_bytes(lua_State *L) { /* from_bytes(string, dtype, shape[, offset]) */
    size_t len;
    const char *bytes = luaL_checklstring(L, 1, &len);
    kd_dtype dtype = check_dtype(L, 2, KD_F32);
    int shape[KD_MAX_DIMS], ndim = lkd_check_shape(L, 3, shape);
    size_t offset = (size_t)luaL_optinteger(L, 4, 0);
    size_t need = kd_shape_numel(ndim, shape) * kd_dtype_size(dtype);
    if (offset > len || len - offset < need)
        return luaL_error(L, "kd.from_bytes: %d bytes needed at offset %d, the string has %d",
                          (int)need, (int)offset, (int)len);
    kd_tensor *t;
    if (kd_tensor_new(dtype, ndim, shape, &t)) return lkd_raise(L, "kd.from_bytes");
    memcpy(kd_data(t), bytes + offset, need);
    lkd_push_tensor(L, t);
    return 1;
}

/* ---- methods ------------------------------------------------------------------ */

static int m_gc(lua_State *L) {
    kd_tensor **box = luaL_checkudata(L, 1, LKD_TENSOR);
    kd_tensor_release(*box);
    *box = NULL; /* a second __gc (or a resurrected box) finds nothing to free */
    return 0;
}

static kd_tensor *self(lua_State *L) { return lkd_check_tensor(L, 1); }

static int m_shape(lua_State *L) { return push_shape(L, self(L)); }

static int m_size(lua_State *L) { /* size() -> table, size(d) -> number (1-based, negative from the end) */
    kd_tensor *t = self(L);
    if (lua_isnoneornil(L, 2)) return push_shape(L, t);
    int d = lkd_check_int(L, 2);
    if (d < 0) d += t->ndim + 1;
    if (d < 1 || d > t->ndim) return luaL_error(L, "size: dimension %d out of range for %s", d, kd_shape_str(t));
    lua_pushinteger(L, t->shape[d - 1]);
    return 1;
}

static int m_numel(lua_State *L) {
    lua_pushnumber(L, (lua_Number)kd_numel(self(L)));
    return 1;
}

static int m_dim(lua_State *L) {
    lua_pushinteger(L, self(L)->ndim);
    return 1;
}

static int m_dtype(lua_State *L) {
    lua_pushstring(L, kd_dtype_name(self(L)->dtype));
    return 1;
}

/* view(shape) with at most one -1, inferred from the element count. */
static int m_view(lua_State *L) {
    kd_tensor *t = self(L);
    int shape[KD_MAX_DIMS], ndim = 0, infer = -1;
    int index = 2, top = lua_gettop(L);
    if (lua_istable(L, 2)) {
        ndim = (int)lua_objlen(L, 2);
        if (ndim < 1 || ndim > KD_MAX_DIMS) return luaL_error(L, "view: 1 to 4 sizes, got %d", ndim);
        for (int i = 0; i < ndim; i++) {
            lua_rawgeti(L, 2, i + 1);
            shape[i] = lkd_check_int(L, -1);
            lua_pop(L, 1);
        }
    } else {
        for (; index <= top; index++) {
            if (ndim == KD_MAX_DIMS) return luaL_error(L, "view: at most 4 sizes");
            shape[ndim++] = lkd_check_int(L, index);
        }
    }
    if (ndim == 0) return luaL_error(L, "view: a shape is required");
    size_t known = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1) {
            if (infer >= 0) return luaL_error(L, "view: only one size may be -1");
            infer = i;
        } else if (shape[i] < 0) {
            return luaL_error(L, "view: size %d is negative", shape[i]);
        } else {
            known *= (size_t)shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || kd_numel(t) % known)
            return luaL_error(L, "view: cannot infer -1 for %s from the other sizes", kd_shape_str(t));
        shape[infer] = (int)(kd_numel(t) / known);
    }
    kd_tensor *out;
    return lkd_result(L, "view", kd_reshape(t, ndim, shape, &out), &out);
}

static int m_narrow(lua_State *L) { /* narrow(start, length): rows of the batch, 1-based */
    kd_tensor *t = self(L);
    int start = lkd_check_int(L, 2), length = lkd_opt_int_arg(L, 3, 1);
    kd_tensor *out;
    return lkd_result(L, "narrow", kd_narrow_batch(t, start - 1, length, &out), &out);
}

static int m_item(lua_State *L) {
    kd_tensor *t = self(L);
    if (kd_numel(t) != 1)
        return luaL_error(L, "item: tensor %s has %d elements, not one", kd_shape_str(t), (int)kd_numel(t));
    lua_pushnumber(L, kd_get(t, 0));
    return 1;
}

static void push_nested(lua_State *L, const kd_tensor *t, int dim, size_t *at) {
    if (dim >= KD_MAX_DIMS) return;
    lua_createtable(L, t->shape[dim], 0);
    for (int i = 0; i < t->shape[dim]; i++) {
        if (dim + 1 < t->ndim) push_nested(L, t, dim + 1, at);
        else lua_pushnumber(L, kd_get(t, (*at)++));
        lua_rawseti(L, -2, i + 1);
    }
}

static int m_totable(lua_State *L) {
    kd_tensor *t = self(L);
    size_t at = 0;
    push_nested(L, t, 0, &at);
    return 1;
}

static int m_flat(lua_State *L) { /* flat values in one array, for printing and tests */
    kd_tensor *t = self(L);
    size_t n = kd_numel(t), limit = (size_t)luaL_optnumber(L, 2, (lua_Number)n);
    if (limit > n) limit = n;
    lua_createtable(L, (int)limit, 0);
    for (size_t i = 0; i < limit; i++) {
        lua_pushnumber(L, kd_get(t, i));
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int m_get(lua_State *L) { /* get(i): the i-th element in flat order, 1-based */
    kd_tensor *t = self(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || (size_t)i > kd_numel(t)) return luaL_error(L, "get: index %d outside 1..%d", (int)i, (int)kd_numel(t));
    lua_pushnumber(L, kd_get(t, (size_t)i - 1));
    return 1;
}

static int m_set(lua_State *L) {
    kd_tensor *t = self(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    double v = luaL_checknumber(L, 3);
    if (i < 1 || (size_t)i > kd_numel(t)) return luaL_error(L, "set: index %d outside 1..%d", (int)i, (int)kd_numel(t));
    kd_set(t, (size_t)i - 1, v);
    return 0;
}

static int m_bytes(lua_State *L) {
    kd_tensor *t = self(L);
    lua_pushlstring(L, kd_data(t), kd_numel(t) * kd_dtype_size(t->dtype));
    return 1;
}

static int m_backward(lua_State *L) {
    kd_tensor *t = self(L), *grad = lkd_opt_tensor(L, 2);
    lkd_collect_before_backward(L);
    kd_status s = kd_backward(t, grad);
    lkd_backward_done();
    if (s) return lkd_raise(L, "backward");
    return 0;
}

static int m_detach(lua_State *L) {
    kd_tensor *out;
    return lkd_result(L, "detach", kd_detach(self(L), &out), &out);
}

static int m_clone(lua_State *L) {
    kd_tensor *out;
    return lkd_result(L, "clone", kd_clone(self(L), &out), &out);
}

static int m_flip_width(lua_State *L) {
    kd_tensor *out;
    return lkd_result(L, "flip_width", kd_flip_width(self(L), &out), &out);
}

static int m_to(lua_State *L) {
    kd_tensor *t = self(L), *out;
    kd_dtype dtype = check_dtype(L, 2, KD_F32);
    return lkd_result(L, "to", kd_to_dtype(t, dtype, &out), &out);
}

static int m_fill(lua_State *L) {
    kd_tensor *t = self(L);
    kd_fill(t, luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int m_copy(lua_State *L) {
    kd_tensor *t = self(L), *src = lkd_check_tensor(L, 2);
    if (kd_copy(t, src)) return lkd_raise(L, "copy_");
    lua_settop(L, 1);
    return 1;
}

static int m_normal(lua_State *L) {
    kd_tensor *t = self(L);
    if (kd_fill_normal(t, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1), NULL))
        return lkd_raise(L, "normal_");
    lua_settop(L, 1);
    return 1;
}

static int m_uniform(lua_State *L) {
    kd_tensor *t = self(L);
    if (kd_fill_uniform(t, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1), NULL))
        return lkd_raise(L, "uniform_");
    lua_settop(L, 1);
    return 1;
}

static int m_kaiming(lua_State *L) {
    kd_tensor *t = self(L);
    if (kd_fill_kaiming_normal(t, NULL)) return lkd_raise(L, "kaiming_normal_");
    lua_settop(L, 1);
    return 1;
}

static int m_axpby(lua_State *L) { /* self = self * a + src * b */
    kd_tensor *t = self(L);
    double a = luaL_checknumber(L, 2);
    kd_tensor *src = lkd_check_tensor(L, 3);
    double b = luaL_checknumber(L, 4);
    if (kd_axpby(t, (float)a, src, (float)b)) return lkd_raise(L, "axpby_");
    lua_settop(L, 1);
    return 1;
}

static int m_sum_squares(lua_State *L) {
    lua_pushnumber(L, kd_sum_squares(self(L)));
    return 1;
}

static int m_same(lua_State *L) { /* whether two tensors share storage and offset */
    kd_tensor *a = self(L), *b = lkd_check_tensor(L, 2);
    lua_pushboolean(L, a->storage == b->storage && a->offset == b->offset);
    return 1;
}

/* ---- properties: t.grad, t.requires_grad, t.shape, t.dtype, t.ndim ------------- */

static int m_index(lua_State *L) {
    kd_tensor *t = self(L);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* the methods table */
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    const char *key = lua_tostring(L, 2);
    if (!key || lua_type(L, 2) != LUA_TSTRING) return luaL_error(L, "tensor: cannot index with a %s", luaL_typename(L, 2));
    if (strcmp(key, "grad") == 0) {
        if (t->grad) lkd_push_tensor(L, kd_tensor_retain(t->grad));
        else lua_pushnil(L);
    } else if (strcmp(key, "requires_grad") == 0) {
        lua_pushboolean(L, t->requires_grad || t->grad_fn);
    } else if (strcmp(key, "is_leaf") == 0) {
        lua_pushboolean(L, t->grad_fn == NULL);
    } else if (strcmp(key, "shape") == 0) {
        push_shape(L, t);
    } else if (strcmp(key, "dtype") == 0) {
        lua_pushstring(L, kd_dtype_name(t->dtype));
    } else if (strcmp(key, "ndim") == 0) {
        lua_pushinteger(L, t->ndim);
    } else {
        return luaL_error(L, "tensor has no field or method '%s'", key);
    }
    return 1;
}

static int m_newindex(lua_State *L) {
    kd_tensor *t = self(L);
    const char *key = luaL_checkstring(L, 2);
    if (strcmp(key, "requires_grad") == 0) {
        luaL_checktype(L, 3, LUA_TBOOLEAN);
        if (t->grad_fn) return luaL_error(L, "requires_grad: only leaf tensors can be set, this one has a history");
        if (t->dtype != KD_F32 && lua_toboolean(L, 3))
            return luaL_error(L, "requires_grad: only float32 tensors can require grad, this one is %s", kd_dtype_name(t->dtype));
        t->requires_grad = lua_toboolean(L, 3);
    } else if (strcmp(key, "grad") == 0) {
        kd_tensor *g = lkd_opt_tensor(L, 3);
        if (g && (g->dtype != KD_F32 || kd_numel(g) != kd_numel(t)))
            return luaL_error(L, "grad: %s does not match tensor %s", kd_shape_str(g), kd_shape_str(t));
        kd_tensor_release(t->grad);
        t->grad = kd_tensor_retain(g);
    } else {
        return luaL_error(L, "tensor: cannot set field '%s'", key);
    }
    return 0;
}

static const luaL_Reg methods[] = {
    {"shape_table", m_shape}, {"size", m_size}, {"numel", m_numel}, {"dim", m_dim},
    {"type", m_dtype}, {"view", m_view}, {"reshape", m_view}, {"narrow", m_narrow},
    {"item", m_item}, {"totable", m_totable}, {"flat", m_flat}, {"get", m_get}, {"set", m_set},
    {"bytes", m_bytes}, {"backward", m_backward}, {"detach", m_detach}, {"clone", m_clone},
    {"flip_width", m_flip_width},
    {"to", m_to}, {"fill_", m_fill}, {"copy_", m_copy}, {"normal_", m_normal},
    {"uniform_", m_uniform}, {"kaiming_normal_", m_kaiming}, {"axpby_", m_axpby},
    {"sum_squares", m_sum_squares}, {"shares_storage", m_same}, {NULL, NULL},
};

static const luaL_Reg constructors[] = {
    {"zeros", l_zeros}, {"full", l_full}, {"randn", l_randn}, {"rand", l_rand},
    {"arange", l_arange}, {"tensor", l_tensor}, {"from_bytes", l_from_bytes}, {NULL, NULL},
};

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, lkd_to_tensor(L, 1) != NULL);
    return 1;
}

/* Expects the _C table on top; adds constructors, Tensor_methods, Tensor_meta. */
void lkd_open_tensor(lua_State *L) {
    luaL_newmetatable(L, LKD_TENSOR);
    lua_pushcfunction(L, m_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L); /* methods, shared with Lua so that it can add its own */
    luaL_register(L, NULL, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "Tensor_methods");
    lua_pushcclosure(L, m_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, m_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setfield(L, -2, "Tensor_meta");
    luaL_register(L, NULL, constructors);
    lua_pushcfunction(L, l_is_tensor);
    lua_setfield(L, -2, "is_tensor");
}
