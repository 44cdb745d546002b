/* open.c - makes the kd library of a Lua state: the Lua files' folder on
 * package.path, the raw core as kd._C, and the global `kd`. The host
 * (main.c) and the fuzzing harnesses (tests/fuzz/) start from it. */
#include <lauxlib.h>
#include <lua.h>

#include "lkd.h"

void lkd_open_kd(lua_State *L, const char *scripts, const char *version) {
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", scripts, scripts);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L); /* kd._C: the raw core */
    lkd_open_tensor(L);
    lkd_open_ops(L);
    lkd_open_system(L);
    lkd_open_readline(L);
    lkd_open_data(L);
    lkd_open_yaml(L);
    lkd_open_loader(L);
    lkd_open_pseudo(L);
    lkd_open_process(L);
    lkd_open_dist(L);
    lua_pushstring(L, version);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, scripts);
    lua_setfield(L, -2, "scripts_dir");
#ifdef __SANITIZE_ADDRESS__
    lua_pushboolean(L, 1); /* built with AddressSanitizer: RSS measurements mean nothing */
    lua_setfield(L, -2, "sanitizer");
#endif
    lua_setfield(L, -2, "kd._C");
    lua_pop(L, 2);
    lua_getglobal(L, "require");
    lua_pushstring(L, "kd");
    lua_call(L, 1, 1);
    lua_setglobal(L, "kd");
}
