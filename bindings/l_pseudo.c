/* l_pseudo.c - the pseudo-label kernels for scripts/kd/method/pseudo.lua. */
#include "lkd.h"

static int l_keep_coarse(lua_State *L) { /* keep_coarse(coarse, pred, conf, threshold[, ignore]) */
    kd_tensor *c = lkd_check_tensor(L, 1), *p = lkd_check_tensor(L, 2), *f = lkd_check_tensor(L, 3), *out;
    float threshold = (float)luaL_checknumber(L, 4);
    int ignore = lkd_opt_int_arg(L, 5, 255);
    return lkd_result(L, "kd.pseudo.keep_coarse", kd_pseudo_keep_coarse(c, p, f, threshold, ignore, &out), &out);
}

static void thresholds_arg(lua_State *L, int index, int classes, float *t) {
    if (lua_type(L, index) == LUA_TNUMBER) {
        for (int c = 0; c < classes; c++) t[c] = (float)lua_tonumber(L, index);
        return;
    }
    luaL_checktype(L, index, LUA_TTABLE);
    if ((int)lua_objlen(L, index) != classes) luaL_error(L, "thresholds: %d values for %d classes", (int)lua_objlen(L, index), classes);
    for (int c = 0; c < classes; c++) {
        lua_rawgeti(L, index, c + 1);
        t[c] = (float)luaL_checknumber(L, -1);
        lua_pop(L, 1);
    }
}

static int l_fill(lua_State *L) { /* fill(labels, pred, conf, thresholds (number or table), classes[, ignore]) */
    kd_tensor *l = lkd_check_tensor(L, 1), *p = lkd_check_tensor(L, 2), *f = lkd_check_tensor(L, 3), *out;
    int classes = lkd_check_int(L, 5);
    if (classes < 1 || classes > 1024) return luaL_error(L, "kd.pseudo.fill: %d classes", classes);
    float t[1024];
    thresholds_arg(L, 4, classes, t);
    int ignore = lkd_opt_int_arg(L, 6, 255);
    return lkd_result(L, "kd.pseudo.fill", kd_pseudo_fill(l, p, f, t, classes, ignore, &out), &out);
}

static int l_percentiles(lua_State *L) { /* class_percentiles(pred, conf, classes, percentile, fallback) -> table */
    kd_tensor *p = lkd_check_tensor(L, 1), *f = lkd_check_tensor(L, 2);
    int classes = lkd_check_int(L, 3);
    if (classes < 1 || classes > 1024) return luaL_error(L, "kd.pseudo.class_percentiles: %d classes", classes);
    float t[1024];
    if (kd_class_percentiles(p, f, classes, (float)luaL_checknumber(L, 4), (float)luaL_optnumber(L, 5, 1), t))
        return lkd_raise(L, "kd.pseudo.class_percentiles");
    lua_createtable(L, classes, 0);
    for (int c = 0; c < classes; c++) {
        lua_pushnumber(L, t[c]);
        lua_rawseti(L, -2, c + 1);
    }
    return 1;
}

static int l_weights(lua_State *L) { /* weights(probs, labels[, ignore]) */
    kd_tensor *p = lkd_check_tensor(L, 1), *l = lkd_check_tensor(L, 2), *out;
    return lkd_result(L, "kd.pseudo.weights", kd_pseudo_weights(p, l, lkd_opt_int_arg(L, 3, 255), &out), &out);
}

static int l_trust_coarse(lua_State *L) { /* trust_coarse(weights, labels, coarse, weight[, ignore]) */
    kd_tensor *w = lkd_check_tensor(L, 1), *l = lkd_check_tensor(L, 2), *c = lkd_check_tensor(L, 3);
    float weight = (float)luaL_checknumber(L, 4);
    if (kd_pseudo_trust_coarse(w, l, c, weight, lkd_opt_int_arg(L, 5, 255))) return lkd_raise(L, "kd.pseudo.trust_coarse");
    return 0;
}

static int l_agreement(lua_State *L) { /* label_agreement(pred, labels[, ignore]) -> float mask */
    kd_tensor *p = lkd_check_tensor(L, 1), *l = lkd_check_tensor(L, 2), *out;
    return lkd_result(L, "kd.pseudo.label_agreement", kd_label_agreement(p, l, lkd_opt_int_arg(L, 3, 255), &out), &out);
}

static int l_class_weight_map(lua_State *L) { /* class_weight_map(classes, class_weights) -> float map */
    kd_tensor *c = lkd_check_tensor(L, 1), *w = lkd_check_tensor(L, 2), *out;
    return lkd_result(L, "kd.pseudo.class_weight_map", kd_class_weight_map(c, w, &out), &out);
}

/* confident_labels(labels, conf, threshold, zero_weights[, valid[, ignore]]) -> labels[, weights] */
static int l_confident_labels(lua_State *L) {
    kd_tensor *l = lkd_check_tensor(L, 1), *c = lkd_check_tensor(L, 2), *labels, *weights;
    double threshold = luaL_checknumber(L, 3);
    luaL_checktype(L, 4, LUA_TBOOLEAN);
    bool zero_weights = lua_toboolean(L, 4);
    kd_tensor *valid = lkd_opt_tensor(L, 5);
    if (kd_confident_labels(l, c, threshold, valid, zero_weights, lkd_opt_int_arg(L, 6, 255), &labels, &weights))
        return lkd_raise(L, "kd.confident_labels");
    lkd_push_tensor(L, labels);
    if (!zero_weights) return 1;
    lkd_push_tensor(L, weights);
    return 2;
}

static const luaL_Reg functions[] = {
    {"pseudo_keep_coarse", l_keep_coarse}, {"pseudo_fill", l_fill}, {"class_percentiles", l_percentiles},
    {"pseudo_weights", l_weights}, {"pseudo_trust_coarse", l_trust_coarse},
    {"label_agreement", l_agreement}, {"class_weight_map", l_class_weight_map},
    {"confident_labels", l_confident_labels}, {NULL, NULL},
};

void lkd_open_pseudo(lua_State *L) { luaL_register(L, NULL, functions); }
