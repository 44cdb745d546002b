/* fuzz_lua.c - libFuzzer harness for the parsers written in Lua or reached
 * through Lua (safetensors, YAML, configs, split lists, class tables, sweep
 * specs): one LuaJIT state with the kd library, and tests/fuzz/targets.lua's
 * function TARGET (a compile-time name) called with each input's bytes.
 * A clear error is the expected answer to bad input. A crash, undefined
 * behaviour, or an error raised by anything but the library's own error
 * calls (the VM indexing nil, ipairs given a string: the library tripping
 * on input it did not check; targets.run tells) is a finding, and aborts
 * with the message. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lkd.h"

#ifndef TARGET
#error "compile with -DTARGET=\"name\" (a function of tests/fuzz/targets.lua)"
#endif

static lua_State *L;
static int run_ref; /* targets.run */

/* Closed before LeakSanitizer looks at exit: what Lua values hold (cjson's
 * buffers, tensors) lives behind LuaJIT's own memory, which LSan does not
 * scan, and would read as leaks. */
static void close_state(void) { lua_close(L); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    lkd_open_kd(L, KDSEG_SCRIPTS, "fuzz");
    lua_getglobal(L, "dofile");
    lua_pushstring(L, KDSEG_SCRIPTS "/../tests/fuzz/targets.lua");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, TARGET);
    if (!lua_isfunction(L, -1)) {
        fprintf(stderr, "fuzz_lua: no target '%s' in targets.lua\n", TARGET);
        exit(2);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "run");
    run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    atexit(close_state);
    /* One call before fuzzing loads what the target loads on first use
     * (modules, cjson's buffers): kept for good behind Lua values, it would
     * read as the first input's leak. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
    lua_pushliteral(L, TARGET);
    lua_pushliteral(L, "");
    lua_pcall(L, 2, 0, 0);
    lua_settop(L, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
    lua_pushliteral(L, TARGET);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 2, 3, 0) != 0) { /* targets.run itself failed: memory, or a bug of the harness */
        fprintf(stderr, "fuzz_lua: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (lua_toboolean(L, -1)) { /* ok, message, unclear */
        fprintf(stderr, "fuzz_lua: a Lua runtime error, not a clear one: %s\n", lua_tostring(L, -2));
        abort();
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT, 0); /* tensors and files made by the input go now */
    return 0;
}
