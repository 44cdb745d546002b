/* lkd.c - shared helpers of the bindings: the tensor userdata and the checks
 * every binding runs before it calls the core. */
#include <limits.h>
#include <string.h>

#include "lkd.h"

/* Whether the value at index is a tensor box (freed or not). */
static int is_tensor_box(lua_State *L, int index) {
    if (!lua_touserdata(L, index) || !lua_getmetatable(L, index)) return 0;
    luaL_getmetatable(L, LKD_TENSOR);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

kd_tensor *lkd_to_tensor(lua_State *L, int index) {
    return is_tensor_box(L, index) ? *(kd_tensor **)lua_touserdata(L, index) : NULL;
}

kd_tensor *lkd_check_tensor(lua_State *L, int index) {
    kd_tensor *t = lkd_to_tensor(L, index);
    if (!t && is_tensor_box(L, index))
        luaL_argerror(L, index, "tensor already freed (used from a finalizer?)");
    if (!t) {
        const char *got = luaL_typename(L, index);
        luaL_argerror(L, index, lua_pushfstring(L, "tensor expected, got %s", got));
    }
    return t;
}

kd_tensor *lkd_opt_tensor(lua_State *L, int index) {
    return lua_isnoneornil(L, index) ? NULL : lkd_check_tensor(L, index);
}

/* Tensor memory lives outside Lua's heap, so Lua's collector cannot see it
 * grow: a loop that drops tensors could pile up gigabytes before a cycle.
 * Collect when live tensor bytes have doubled (grown by at least 16 MiB)
 * since what the last collection left, or since the lowest point after it:
 * memory then plateaus within a few steps of a training loop, whatever
 * Lua's own pace. (Until 2026-12-02, when they had grown by half: the
 * method's students, two students and a teacher on two streams, collected
 * 5 times a step, 1.3-1.6 ms each over their 1.5 MB Lua heap; doubling
 * made that stage 3% faster, its peak resident memory 5-10% higher, the
 * benchmark networks' the same.) */
static size_t live_after_collect;
static const size_t min_allowance = (size_t)16 << 20;

static void collect(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    live_after_collect = kd_memory().live_bytes;
}

static bool collected_while_pushing; /* since the last backward */

void lkd_push_tensor(lua_State *L, kd_tensor *t) {
    size_t live = kd_memory().live_bytes;
    size_t allowance = live_after_collect > min_allowance ? live_after_collect : min_allowance;
    if (live > live_after_collect + allowance) collect(L), collected_while_pushing = true;
    else if (live < live_after_collect) live_after_collect = live; /* growth counts from the lowest point */
    kd_tensor **box = lua_newuserdata(L, sizeof *box);
    *box = t;
    luaL_getmetatable(L, LKD_TENSOR);
    lua_setmetatable(L, -2);
}

/* At the start of a backward, the forward's intermediates that only Lua
 * still holds are garbage (the tape keeps what it needs). Collected now, each
 * saved activation goes the moment its node's gradient is done, and the
 * gradients reuse its memory instead of adding to it: the step's peak is the
 * forward's, not forward plus backward. A full cycle costs a fraction of a
 * millisecond with a training script's Lua heap (0.15 ms with the zoo and a
 * dataset's index loaded). */
void lkd_collect_before_backward(lua_State *L) {
    /* at most 1 MiB of garbage left; and where a collection ran in the
     * forward, inside an op's call, that op's arguments (the logits given to
     * a loss, say) lived through it and may be garbage now */
    if (collected_while_pushing || kd_memory().live_bytes > live_after_collect + ((size_t)1 << 20)) collect(L);
    collected_while_pushing = false;
}

/* After it, live memory is back near the parameters and their gradients; the
 * next forward's garbage is counted from there, not from the peak. */
void lkd_backward_done(void) {
    size_t live = kd_memory().live_bytes;
    if (live < live_after_collect) live_after_collect = live;
}

/* "fn: message", unless the core's message already starts with "fn: ". */
int lkd_raise(lua_State *L, const char *fn) {
    const char *message = kd_error_message();
    size_t n = strlen(fn);
    if (strncmp(message, fn, n) == 0 && message[n] == ':') return luaL_error(L, "%s", message);
    return luaL_error(L, "%s: %s", fn, message);
}

int lkd_result(lua_State *L, const char *fn, kd_status s, kd_tensor **out) {
    if (s) return lkd_raise(L, fn);
    lkd_push_tensor(L, *out);
    return 1;
}

void lkd_check_options(lua_State *L, int index, const char *fn, const char *const *known) {
    if (lua_isnoneornil(L, index)) return;
    if (!lua_istable(L, index))
        luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, index));
    lua_pushnil(L);
    while (lua_next(L, index)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option keys must be strings", fn);
        const char *key = lua_tostring(L, -1);
        int found = 0;
        for (int i = 0; known[i] && !found; i++) found = strcmp(known[i], key) == 0;
        if (!found) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; known[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, known[i]);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option '%s' (known: %s)", fn, key, lua_tostring(L, -1));
        }
    }
}

/* Pushes t[key] if index holds a table, nil otherwise. */
static void get_field(lua_State *L, int index, const char *key) {
    if (lua_istable(L, index)) lua_getfield(L, index, key);
    else lua_pushnil(L);
}

double lkd_opt_number(lua_State *L, int index, const char *key, double fallback) {
    get_field(L, index, key);
    double v = fallback;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "option '%s' must be a number, got %s", key, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* Whether v converts to an int without undefined behaviour: (int)1e12 is
 * not an error in C, it is whatever the machine makes of it. */
static int fits_int(double v) { return v >= INT_MIN && v <= INT_MAX; }

int lkd_check_int(lua_State *L, int index) {
    double v = luaL_checknumber(L, index);
    if (!fits_int(v)) luaL_argerror(L, index, lua_pushfstring(L, "%f does not fit a 32-bit integer", v));
    return (int)v;
}

int lkd_opt_int_arg(lua_State *L, int index, int fallback) {
    return lua_isnoneornil(L, index) ? fallback : lkd_check_int(L, index);
}

int lkd_opt_int(lua_State *L, int index, const char *key, int fallback) {
    double v = lkd_opt_number(L, index, key, fallback);
    if (!fits_int(v) || v != (double)(int)v) luaL_error(L, "option '%s' must be an integer, got %f", key, v);
    return (int)v;
}

int lkd_opt_bool(lua_State *L, int index, const char *key, int fallback) {
    get_field(L, index, key);
    int v = fallback;
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "option '%s' must be a boolean, got %s", key, luaL_typename(L, -1));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

kd_tensor *lkd_opt_tensor_field(lua_State *L, int index, const char *key) {
    get_field(L, index, key);
    kd_tensor *t = NULL;
    if (!lua_isnil(L, -1)) {
        t = lkd_to_tensor(L, -1);
        if (!t) luaL_error(L, "option '%s' must be a tensor, got %s", key, luaL_typename(L, -1));
    }
    lua_pop(L, 1); /* the tensor stays alive: the options table holds it */
    return t;
}

void lkd_opt_pair(lua_State *L, int index, const char *key, int fallback, int *h, int *w) {
    get_field(L, index, key);
    *h = *w = fallback;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        if (!fits_int(lua_tonumber(L, -1))) luaL_error(L, "option '%s' does not fit a 32-bit integer", key);
        *h = *w = (int)lua_tonumber(L, -1);
    } else if (lua_istable(L, -1) && lua_objlen(L, -1) == 2) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1))
            luaL_error(L, "option '%s' must be a number or a pair {h, w} of numbers", key);
        if (!fits_int(lua_tonumber(L, -2)) || !fits_int(lua_tonumber(L, -1)))
            luaL_error(L, "option '%s' does not fit a pair of 32-bit integers", key);
        *h = (int)lua_tonumber(L, -2);
        *w = (int)lua_tonumber(L, -1);
        lua_pop(L, 2);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "option '%s' must be a number or a pair {h, w}, got %s", key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

/* A size is a whole number that fits an int: (int)v alone is undefined
 * beyond INT_MAX, and kd.zeros({1e12}) must say so, not wrap around. */
static int is_size(double v) { return v >= 0 && fits_int(v) && v == (double)(int)v; }

int lkd_check_shape(lua_State *L, int index, int *shape) {
    int ndim = 0;
    if (lua_istable(L, index)) {
        ndim = (int)lua_objlen(L, index);
        if (ndim < 1 || ndim > KD_MAX_DIMS)
            luaL_argerror(L, index, lua_pushfstring(L, "shape must have 1 to %d sizes, got %d",
                                                    KD_MAX_DIMS, ndim));
        for (int i = 0; i < ndim; i++) {
            lua_rawgeti(L, index, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER || !is_size(lua_tonumber(L, -1)))
                luaL_argerror(L, index, "shape sizes must be non-negative integers below 2^31");
            shape[i] = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
        return ndim;
    }
    int top = lua_gettop(L);
    for (int i = index; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        if (ndim == KD_MAX_DIMS) luaL_argerror(L, i, "at most 4 sizes");
        double v = lua_tonumber(L, i);
        if (!is_size(v)) luaL_argerror(L, i, "sizes must be non-negative integers below 2^31");
        shape[ndim++] = (int)v;
    }
    if (ndim == 0) luaL_argerror(L, index, "shape expected (a table of sizes or sizes)");
    return ndim;
}
