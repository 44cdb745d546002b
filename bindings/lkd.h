/* lkd.h - what the binding files share: the tensor userdata, argument and
 * option-table checks, and raising a core error as a Lua error.
 *
 * Rule of every binding: check all arguments first (luaL_check* may raise),
 * then call the core; a core failure has allocated nothing, so raising then
 * leaks nothing. A tensor pushed to Lua owns exactly one core reference. */
#ifndef LKD_H
#define LKD_H

#include <lauxlib.h>
#include <lua.h>

#include "kd.h"

#define LKD_TENSOR "kd.Tensor"

kd_tensor *lkd_check_tensor(lua_State *L, int index);
kd_tensor *lkd_opt_tensor(lua_State *L, int index); /* nil or none -> NULL */
kd_tensor *lkd_to_tensor(lua_State *L, int index);  /* NULL if not a tensor */
/* Pushes t, taking over the caller's reference; may run a GC cycle first when
 * tensor memory has grown (Lua cannot see it otherwise). */
void lkd_push_tensor(lua_State *L, kd_tensor *t);
/* Around kd_backward: collect the forward's garbage first (if tensor memory
 * has grown), and count later growth from what the backward leaves. */
void lkd_collect_before_backward(lua_State *L);
void lkd_backward_done(void);
/* Raises "fn: <the core's message>". */
int lkd_raise(lua_State *L, const char *fn);
/* Raises if status is an error, otherwise pushes *out and returns 1. */
int lkd_result(lua_State *L, const char *fn, kd_status s, kd_tensor **out);

/* Options tables: index may be absent (none/nil). Unknown keys are an error
 * naming the function and the key, so a typo never passes silently. */
void lkd_check_options(lua_State *L, int index, const char *fn, const char *const *known);
double lkd_opt_number(lua_State *L, int index, const char *key, double fallback);
/* An int argument: luaL_checkinteger's truncation, but an error where the
 * number does not fit 32 bits (instead of a wrapped-around size). */
int lkd_check_int(lua_State *L, int index);
int lkd_opt_int_arg(lua_State *L, int index, int fallback);
int lkd_opt_int(lua_State *L, int index, const char *key, int fallback);
int lkd_opt_bool(lua_State *L, int index, const char *key, int fallback);
kd_tensor *lkd_opt_tensor_field(lua_State *L, int index, const char *key);
/* An int or a {h, w} pair from an option. */
void lkd_opt_pair(lua_State *L, int index, const char *key, int fallback, int *h, int *w);
/* A shape from a table {2, 3} or from the integer arguments at index... */
int lkd_check_shape(lua_State *L, int index, int *shape);

void lkd_open_tensor(lua_State *L);   /* l_tensor.c: kd.Tensor and constructors */
void lkd_open_ops(lua_State *L);      /* l_ops.c */
void lkd_open_system(lua_State *L);   /* l_system.c: threads, seeds, memory, files */
void lkd_open_readline(lua_State *L); /* readline.c */
void lkd_open_data(lua_State *L);     /* l_data.c: images, SynthCity, files */
void lkd_open_yaml(lua_State *L);     /* l_yaml.c */
void lkd_open_loader(lua_State *L);   /* l_loader.c */
void lkd_open_pseudo(lua_State *L);   /* l_pseudo.c */
void lkd_open_process(lua_State *L);  /* l_process.c */
void lkd_open_dist(lua_State *L);     /* l_dist.c, l_dist_grads.c: data-parallel training */
/* open.c: package.path to the Lua files in `scripts`, kd._C, the global kd
 * (raises a Lua error if the library fails to load) */
void lkd_open_kd(lua_State *L, const char *scripts, const char *version);

#endif
