/* fuzz_lua.c - libFuzzer harness for the parsers written in Lua or reached
 * through Lua (safetensors, YAML, configs, split lists, class tables, sweep
 * specs): one LuaJIT state with the kd library, and tests/fuzz/targets.lua's
 * function TARGET (a compile-time name) called with each input's bytes.
 * A clear error is the expected answer to bad input. A crash, undefined
 * behaviour, or an error of the Lua language itself (indexing nil, calling
 * nil, arithmetic on a string: the library tripping on input it did not
 * check) is a finding, and aborts with the message. */
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
static int target_ref;

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
    target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    atexit(close_state);
    /* One call before fuzzing loads what the target loads on first use
     * (modules, cjson's buffers): kept for good behind Lua values, it would
     * read as the first input's leak. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
    lua_pushliteral(L, "");
    lua_pcall(L, 1, 0, 0);
    lua_settop(L, 0);
    return 0;
}

/* Messages of the Lua language's own runtime errors: never a kd message. */
static const char *const language_errors[] = {"attempt to ", "bad argument #", "table index is ",
                                              "stack overflow", "invalid key to 'next'", NULL};

/* Whether at `at` in message a runtime error starts: at the very start, or
 * right after the location Lua puts before one ("file.lua:12: "). Inputs
 * quoted inside a clear message may contain the same words anywhere else
 * (libFuzzer learns them from the binary and inserts them). */
static bool starts_runtime_error(const char *message, const char *at) {
    if (at == message) return true;
    const char *p = at;
    if (p - message < 2 || p[-1] != ' ' || p[-2] != ':') return false;
    p -= 2;
    const char *digits_end = p;
    while (p > message && p[-1] >= '0' && p[-1] <= '9') p--;
    if (p == digits_end || p - message < 5 || p[-1] != ':') return false;
    return strncmp(p - 5, ".lua:", 5) == 0;
}

static bool is_language_error(const char *message) {
    for (int i = 0; language_errors[i]; i++)
        for (const char *at = strstr(message, language_errors[i]); at; at = strstr(at + 1, language_errors[i]))
            if (starts_runtime_error(message, at)) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        const char *message = lua_tostring(L, -1);
        if (!message) {
            fprintf(stderr, "fuzz_lua: an error that is not a message\n");
            abort();
        }
        if (is_language_error(message)) {
            fprintf(stderr, "fuzz_lua: a Lua runtime error, not a clear one: %s\n", message);
            abort();
        }
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT, 0); /* tensors and files made by the input go now */
    return 0;
}
