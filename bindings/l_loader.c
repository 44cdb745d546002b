/* l_loader.c - the threaded loader as a Lua object:
 *   local loader = kd._C.loader_new{images = {...}, labels = {...}, batch_size = 8, ...}
 *   local batch = loader:next()   -- {images, labels, weights, valid, ids, epoch}, nil at an epoch's end
 * Unlabeled entries of labels (and weights) are false or "". The object's
 * __gc stops and joins the workers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lkd.h"

#define LKD_LOADER "kd.Loader"

typedef struct {
    kd_loader *loader;
} loader_box;

/* An array of paths from field key of the table at index; false/"" -> NULL. */
static const char **path_list(lua_State *L, int index, const char *key, int *count, bool allow_holes) {
    lua_getfield(L, index, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (!lua_istable(L, -1)) luaL_error(L, "loader: '%s' must be a list of paths", key);
    int n = (int)lua_objlen(L, -1);
    if (*count >= 0 && n != *count) luaL_error(L, "loader: '%s' has %d entries, images has %d", key, n, *count);
    *count = n;
    /* a userdata, so that a Lua error below frees it with the rest */
    const char **paths = lua_newuserdata(L, sizeof(char *) * (size_t)(n ? n : 1));
    char anchor[64];
    snprintf(anchor, sizeof anchor, "kd.loader.%s", key);
    lua_setfield(L, LUA_REGISTRYINDEX, anchor); /* anchored until the loader has copied them */
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        if (lua_type(L, -1) == LUA_TSTRING && lua_objlen(L, -1) > 0) paths[i] = lua_tostring(L, -1);
        else if (allow_holes && (lua_isboolean(L, -1) || lua_type(L, -1) == LUA_TSTRING)) paths[i] = NULL;
        else luaL_error(L, "loader: entry %d of '%s' is %s, not a path", i + 1, key, luaL_typename(L, -1));
        lua_pop(L, 1); /* the string stays alive in the list table */
    }
    lua_pop(L, 1);
    return paths;
}

static void range(lua_State *L, int index, const char *key, float *lo, float *hi) {
    lua_getfield(L, index, key);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1)) luaL_error(L, "loader: '%s' must be {min, max}", key);
        *lo = (float)lua_tonumber(L, -2), *hi = (float)lua_tonumber(L, -1);
        lua_pop(L, 2);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "loader: '%s' must be {min, max}", key);
    }
    lua_pop(L, 1);
}

static void triple(lua_State *L, int index, const char *key, float *v) {
    lua_getfield(L, index, key);
    if (lua_istable(L, -1)) {
        for (int c = 0; c < 3; c++) {
            lua_rawgeti(L, -1, c + 1);
            if (!lua_isnumber(L, -1)) luaL_error(L, "loader: '%s' must be three numbers", key);
            v[c] = (float)lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "loader: '%s' must be three numbers", key);
    }
    lua_pop(L, 1);
}

static kd_augment_params augment_params(lua_State *L, int index) {
    static const char *const known[] = {"crop", "scale", "hflip", "brightness", "contrast", "saturation", "hue",
                                        "jitter_p", "grayscale_p", "blur_p", "blur_sigma", "mean", "std",
                                        "pad_label", NULL};
    kd_augment_params p = {.scale_min = 1, .scale_max = 1, .jitter_p = 1, .blur_sigma_min = 0.1f,
                           .blur_sigma_max = 2.0f, .std = {1, 1, 1}, .pad_label = 255};
    if (lua_isnil(L, index)) return p;
    lkd_check_options(L, index, "loader augment", known);
    lkd_opt_pair(L, index, "crop", 0, &p.crop_h, &p.crop_w);
    range(L, index, "scale", &p.scale_min, &p.scale_max);
    p.hflip = lkd_opt_bool(L, index, "hflip", 0);
    p.brightness = (float)lkd_opt_number(L, index, "brightness", 0);
    p.contrast = (float)lkd_opt_number(L, index, "contrast", 0);
    p.saturation = (float)lkd_opt_number(L, index, "saturation", 0);
    p.hue = (float)lkd_opt_number(L, index, "hue", 0);
    p.jitter_p = (float)lkd_opt_number(L, index, "jitter_p", 1);
    p.grayscale_p = (float)lkd_opt_number(L, index, "grayscale_p", 0);
    p.blur_p = (float)lkd_opt_number(L, index, "blur_p", 0);
    range(L, index, "blur_sigma", &p.blur_sigma_min, &p.blur_sigma_max);
    triple(L, index, "mean", p.mean);
    triple(L, index, "std", p.std);
    p.pad_label = lkd_opt_int(L, index, "pad_label", 255);
    return p;
}

/* photometric(images, augment) -> a new batch: colour jitter, grayscale and
 * blur as augment says, from the global generator (kd.data.photometric) */
static int l_photometric(lua_State *L) {
    kd_tensor *images = lkd_check_tensor(L, 1), *out;
    luaL_checktype(L, 2, LUA_TTABLE);
    kd_augment_params p = augment_params(L, 2);
    return lkd_result(L, "kd.data.photometric", kd_photometric_batch(images, &p, kd_rng_global(), &out), &out);
}

static int l_loader_new(lua_State *L) {
    static const char *const known[] = {"images", "labels", "weights", "label_map", "augment", "batch_size",
                                        "shuffle", "drop_last", "infinite", "seed", "workers", "prefetch", "start_batch",
                                        "shard_index", "shard_count", "cache_mb", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    lkd_check_options(L, 1, "kd.data.Loader", known);
    int count = -1;
    kd_loader_config c = {0};
    c.images = path_list(L, 1, "images", &count, false);
    if (!c.images) return luaL_error(L, "kd.data.Loader: 'images' is required");
    c.labels = path_list(L, 1, "labels", &count, true);
    c.weights = path_list(L, 1, "weights", &count, true);
    c.count = count;
    uint8_t map[256];
    lua_getfield(L, 1, "label_map");
    if (lua_istable(L, -1)) {
        for (int i = 0; i < 256; i++) {
            lua_rawgeti(L, -1, i + 1);
            lua_Number v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 255;
            map[i] = (uint8_t)(v < 0 || v > 255 ? 255 : v);
            lua_pop(L, 1);
        }
        c.label_map = map;
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "augment");
    c.augment = augment_params(L, lua_gettop(L));
    lua_pop(L, 1);
    c.batch_size = lkd_opt_int(L, 1, "batch_size", 1);
    c.shuffle = lkd_opt_bool(L, 1, "shuffle", 0);
    c.drop_last = lkd_opt_bool(L, 1, "drop_last", 0);
    c.infinite = lkd_opt_bool(L, 1, "infinite", 0);
    c.seed = (uint64_t)lkd_opt_number(L, 1, "seed", 0);
    c.workers = lkd_opt_int(L, 1, "workers", 0);
    c.prefetch = lkd_opt_int(L, 1, "prefetch", 2);
    c.start_batch = (long)lkd_opt_number(L, 1, "start_batch", 0);
    c.shard_index = lkd_opt_int(L, 1, "shard_index", 0);
    c.shard_count = lkd_opt_int(L, 1, "shard_count", 1);
    lua_Number cache_mb = lkd_opt_number(L, 1, "cache_mb", 0);
    if (!(cache_mb >= 0 && cache_mb <= 1 << 24))
        return luaL_error(L, "kd.data.Loader: cache_mb %f must be 0 (none) to 16777216", (double)cache_mb);
    c.cache_bytes = (size_t)(cache_mb * 1048576.0);
    loader_box *box = lua_newuserdata(L, sizeof *box);
    box->loader = NULL;
    luaL_getmetatable(L, LKD_LOADER);
    lua_setmetatable(L, -2);
    if (kd_loader_new(&c, &box->loader)) return lkd_raise(L, "kd.data.Loader");
    return 1;
}

static kd_loader *check_loader(lua_State *L) {
    loader_box *box = luaL_checkudata(L, 1, LKD_LOADER);
    if (!box->loader) luaL_error(L, "loader: already closed");
    return box->loader;
}

static int push_batch(lua_State *L, kd_batch *b) {
    lua_createtable(L, 0, 6);
    lkd_push_tensor(L, b->images);
    lua_setfield(L, -2, "images");
    lkd_push_tensor(L, b->labels);
    lua_setfield(L, -2, "labels");
    lkd_push_tensor(L, b->weights);
    lua_setfield(L, -2, "weights");
    lkd_push_tensor(L, b->valid);
    lua_setfield(L, -2, "valid");
    lkd_push_tensor(L, b->ids);
    lua_setfield(L, -2, "ids");
    lua_pushinteger(L, b->epoch + 1);
    lua_setfield(L, -2, "epoch");
    return 1;
}

static int m_next(lua_State *L) {
    kd_loader *l = check_loader(L);
    kd_batch b;
    bool done;
    if (kd_loader_next(l, &b, &done)) return lkd_raise(L, "loader:next");
    if (done) return 0;
    return push_batch(L, &b);
}

static int m_sample(lua_State *L) { /* sample(index (1-based)[, epoch, position]) */
    kd_loader *l = check_loader(L);
    int index = lkd_check_int(L, 2) - 1;
    int epoch = lkd_opt_int_arg(L, 3, 1) - 1, position = lkd_opt_int_arg(L, 4, 1) - 1;
    kd_batch b;
    if (kd_loader_sample(l, index, epoch, position, &b)) return lkd_raise(L, "loader:sample");
    return push_batch(L, &b);
}

static int m_length(lua_State *L) {
    lua_pushinteger(L, kd_loader_length(check_loader(L)));
    return 1;
}

static int m_close(lua_State *L) {
    loader_box *box = luaL_checkudata(L, 1, LKD_LOADER);
    kd_loader_free(box->loader);
    box->loader = NULL;
    return 0;
}

static const luaL_Reg methods[] = {
    {"next", m_next}, {"sample", m_sample}, {"length", m_length}, {"close", m_close}, {NULL, NULL},
};

void lkd_open_loader(lua_State *L) {
    luaL_newmetatable(L, LKD_LOADER);
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_loader_new);
    lua_setfield(L, -2, "loader_new");
    lua_pushcfunction(L, l_photometric);
    lua_setfield(L, -2, "photometric");
}
