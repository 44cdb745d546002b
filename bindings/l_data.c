/* l_data.c - images, SynthCity and directory listing for Lua. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lkd.h"

static int l_image_read(lua_State *L) { /* image_read(path[, expand_palette]) -> uint8 C x H x W (PNG or JPEG) */
    const char *path = luaL_checkstring(L, 1);
    kd_tensor *t;
    return lkd_result(L, "kd.image.read", kd_image_read(path, lua_toboolean(L, 2), &t), &t);
}

static int l_jpeg_write(lua_State *L) { /* jpeg_write(path, uint8 tensor[, quality = 95]) */
    const char *path = luaL_checkstring(L, 1);
    kd_tensor *t = lkd_check_tensor(L, 2);
    if (kd_jpeg_write(path, t, lkd_opt_int_arg(L, 3, 95))) return lkd_raise(L, "kd.image.write");
    return 0;
}

static int l_png_write(lua_State *L) { /* png_write(path, uint8 tensor[, palette {{r,g,b}, ...}]) */
    const char *path = luaL_checkstring(L, 1);
    kd_tensor *t = lkd_check_tensor(L, 2);
    uint8_t palette[256 * 3];
    int colors = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        colors = (int)lua_objlen(L, 3);
        if (colors < 1 || colors > 256) return luaL_error(L, "kd.image.write: a palette has 1 to 256 colours, got %d", colors);
        for (int i = 0; i < colors; i++) {
            lua_rawgeti(L, 3, i + 1);
            for (int c = 0; c < 3; c++) {
                lua_rawgeti(L, -1 - c, c + 1);
                lua_Number v = lua_tonumber(L, -1);
                if (!lua_isnumber(L, -1) || v < 0 || v > 255)
                    return luaL_error(L, "kd.image.write: palette colour %d must be {r, g, b} in 0..255", i + 1);
                palette[3 * i + c] = (uint8_t)v;
            }
            lua_pop(L, 4);
        }
    }
    if (kd_png_write(path, t, colors ? palette : NULL, colors)) return lkd_raise(L, "kd.image.write");
    return 0;
}

static int l_synth_scene(lua_State *L) { /* synth_scene(h, w, seed, index) -> rgb, labelIds */
    int h = lkd_check_int(L, 1), w = lkd_check_int(L, 2);
    lua_Number seed = luaL_checknumber(L, 3), index = luaL_checknumber(L, 4);
    if (seed < 0 || index < 0) return luaL_error(L, "kd.synth_scene: seed and index must be >= 0");
    kd_tensor *rgb, *labels;
    if (kd_synth_scene(h, w, (uint64_t)seed, (uint64_t)index, &rgb, &labels)) return lkd_raise(L, "kd.synth_scene");
    lkd_push_tensor(L, rgb);
    lkd_push_tensor(L, labels);
    return 2;
}

static int l_synth_coarse(lua_State *L) {
    kd_tensor *fine = lkd_check_tensor(L, 1), *out;
    lua_Number seed = luaL_optnumber(L, 2, 0);
    return lkd_result(L, "kd.synth_coarse", kd_synth_coarse(fine, (uint64_t)seed, &out), &out);
}

/* synthcity_write{root, split, first, count, height, width, seed, fine, coarse, true_fine} */
static int l_synthcity_write(lua_State *L) {
    static const char *const known[] = {"root", "split", "first", "count", "height", "width", "seed",
                                        "fine", "coarse", "true_fine", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    lkd_check_options(L, 1, "synthcity_write", known);
    lua_getfield(L, 1, "root");
    lua_getfield(L, 1, "split");
    kd_synthcity_job job = {
        .root = luaL_checkstring(L, -2), .split = luaL_checkstring(L, -1),
        .first = lkd_opt_int(L, 1, "first", 0), .count = lkd_opt_int(L, 1, "count", 0),
        .height = lkd_opt_int(L, 1, "height", 128), .width = lkd_opt_int(L, 1, "width", 256),
        .seed = (uint64_t)lkd_opt_number(L, 1, "seed", 0), .fine = lkd_opt_bool(L, 1, "fine", 0),
        .coarse = lkd_opt_bool(L, 1, "coarse", 0), .true_fine = lkd_opt_bool(L, 1, "true_fine", 0),
    };
    if (kd_synthcity_write(&job)) return lkd_raise(L, "kdseg synthcity");
    return 0;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int l_listdir(lua_State *L) { /* listdir(path) -> sorted names (no . and ..) */
    const char *path = luaL_checkstring(L, 1);
    DIR *dir = opendir(path);
    if (!dir) return luaL_error(L, "cannot list %s: %s", path, strerror(errno));
    char **names = NULL;
    size_t count = 0, capacity = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (count == capacity) {
            capacity = capacity ? capacity * 2 : 64;
            char **grown = realloc(names, sizeof(char *) * capacity);
            if (!grown) break;
            names = grown;
        }
        names[count] = strdup(e->d_name);
        if (names[count]) count++;
    }
    closedir(dir);
    qsort(names, count, sizeof(char *), compare_names);
    lua_createtable(L, (int)count, 0);
    for (size_t i = 0; i < count; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (int)i + 1);
        free(names[i]);
    }
    free(names);
    return 1;
}

/* map_values(uint8 tensor, lut of 256 values 0..255) -> uint8 tensor */
static int l_map_values(lua_State *L) {
    kd_tensor *t = lkd_check_tensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (t->dtype != KD_U8) return luaL_error(L, "kd.map_values: tensor must be uint8, got %s", kd_dtype_name(t->dtype));
    uint8_t lut[256];
    for (int i = 0; i < 256; i++) {
        lua_rawgeti(L, 2, i + 1);
        lua_Number v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 255;
        lut[i] = (uint8_t)(v < 0 || v > 255 ? 255 : v);
        lua_pop(L, 1);
    }
    kd_tensor *out;
    if (kd_tensor_new(KD_U8, t->ndim, t->shape, &out)) return lkd_raise(L, "kd.map_values");
    const uint8_t *src = kd_u8(t);
    uint8_t *dst = kd_u8(out);
    for (size_t i = 0, n = kd_numel(t); i < n; i++) dst[i] = lut[src[i]];
    lkd_push_tensor(L, out);
    return 1;
}

static int l_confusion_update(lua_State *L) { /* confusion_update(matrix int64 KxK, prediction, target) */
    kd_tensor *m = lkd_check_tensor(L, 1), *p = lkd_check_tensor(L, 2), *t = lkd_check_tensor(L, 3);
    if (kd_confusion_update(m, p, t)) return lkd_raise(L, "kd.metrics");
    return 0;
}

/* One channel of an RGB colour: 0..255, not wrapped modulo 256. */
static uint8_t check_channel(lua_State *L, int index, int colour) { /* colour 0: the one for other labels */
    double v = lua_tonumber(L, index);
    if (lua_type(L, index) != LUA_TNUMBER || v < 0 || v > 255) {
        if (colour) luaL_error(L, "kd.colorize: colour %d: channels must be numbers 0..255", colour);
        luaL_error(L, "kd.colorize: the colour of other labels: channels must be numbers 0..255");
    }
    return (uint8_t)v;
}

/* colorize(labels, palette {{r,g,b}, ...}[, other {r,g,b}]) -> uint8 3 x H x W */
static int l_colorize(lua_State *L) {
    kd_tensor *labels = lkd_check_tensor(L, 1), *out;
    luaL_checktype(L, 2, LUA_TTABLE);
    int count = (int)lua_objlen(L, 2);
    if (count > 256) return luaL_error(L, "kd.colorize: at most 256 colours");
    uint8_t palette[256 * 3], other[3] = {0, 0, 0};
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, 2, i + 1);
        for (int c = 0; c < 3; c++) {
            lua_rawgeti(L, -1, c + 1);
            palette[3 * i + c] = check_channel(L, -1, i + 1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (lua_istable(L, 3))
        for (int c = 0; c < 3; c++) {
            lua_rawgeti(L, 3, c + 1);
            other[c] = check_channel(L, -1, 0);
            lua_pop(L, 1);
        }
    return lkd_result(L, "kd.colorize", kd_colorize(labels, palette, count, other, &out), &out);
}

static int l_paste(lua_State *L) { /* paste(canvas, image, top, left): 0-based offsets */
    kd_tensor *canvas = lkd_check_tensor(L, 1), *image = lkd_check_tensor(L, 2);
    int top = lkd_check_int(L, 3), left = lkd_check_int(L, 4);
    if (kd_paste(canvas, image, top, left)) return lkd_raise(L, "kd.paste");
    return 0;
}

/* box_masks(batch, h, w, {p, area = {min, max}, ratio = {min, max}}) from the global generator */
static int l_box_masks(lua_State *L) {
    int b = lkd_check_int(L, 1), h = lkd_check_int(L, 2), w = lkd_check_int(L, 3);
    static const char *const known[] = {"p", "area", "ratio", NULL};
    lkd_check_options(L, 4, "kd.data.box_masks", known);
    float p = (float)lkd_opt_number(L, 4, "p", 0.5), a0 = 0.02f, a1 = 0.4f, r0 = 0.3f, r1 = 1 / 0.3f;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "area");
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1), lua_rawgeti(L, -2, 2);
            a0 = (float)luaL_checknumber(L, -2), a1 = (float)luaL_checknumber(L, -1);
            lua_pop(L, 2);
        }
        lua_getfield(L, 4, "ratio");
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1), lua_rawgeti(L, -2, 2);
            r0 = (float)luaL_checknumber(L, -2), r1 = (float)luaL_checknumber(L, -1);
            lua_pop(L, 2);
        }
        lua_pop(L, 2);
    }
    kd_tensor *out;
    return lkd_result(L, "kd.data.box_masks", kd_box_masks(b, h, w, p, a0, a1, r0, r1, NULL, &out), &out);
}

static int l_mix_where(lua_State *L) { /* mix_where(dst, src_or_nil, mask[, fill]) */
    kd_tensor *dst = lkd_check_tensor(L, 1), *src = lkd_opt_tensor(L, 2), *mask = lkd_check_tensor(L, 3);
    if (kd_mix_where(dst, src, mask, luaL_optnumber(L, 4, 0))) return lkd_raise(L, "kd.data.mix");
    return 0;
}

static const luaL_Reg functions[] = {
    {"box_masks", l_box_masks}, {"mix_where", l_mix_where},
    {"confusion_update", l_confusion_update}, {"colorize", l_colorize}, {"paste", l_paste},
    {"image_read", l_image_read}, {"png_write", l_png_write}, {"jpeg_write", l_jpeg_write}, {"synth_scene", l_synth_scene},
    {"synth_coarse", l_synth_coarse}, {"synthcity_write", l_synthcity_write}, {"listdir", l_listdir},
    {"map_values", l_map_values}, {NULL, NULL},
};

void lkd_open_data(lua_State *L) { luaL_register(L, NULL, functions); }
