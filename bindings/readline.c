/* readline.c - line editing for the REPL through libedit's readline
 * interface (BSD licensed): readline, history kept in a file, and tab
 * completion that asks a Lua function for candidates. */
#define _POSIX_C_SOURCE 200809L /* sigaction */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <editline/readline.h>

#include "lkd.h"

static lua_State *completion_state; /* the REPL's state, while a completer is set */
static int completer_ref = LUA_NOREF;

/* Candidates for text: the Lua completer returns an array of strings. */
static char *candidate(const char *text, int state) {
    static int index, count;
    lua_State *L = completion_state;
    if (!L || completer_ref == LUA_NOREF) return NULL;
    if (state == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, completer_ref);
        lua_pushstring(L, text);
        if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L); /* a failing completer completes nothing */
        }
        lua_setfield(L, LUA_REGISTRYINDEX, "kd.completions");
        index = 0;
        lua_getfield(L, LUA_REGISTRYINDEX, "kd.completions");
        count = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
        lua_pop(L, 1);
    }
    if (index >= count) return NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, "kd.completions");
    lua_rawgeti(L, -1, ++index);
    const char *s = lua_tostring(L, -1);
    char *copy = s ? strdup(s) : NULL;
    lua_pop(L, 2);
    return copy;
}

static char **complete(const char *text, int start, int end) {
    (void)start, (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    return rl_completion_matches(text, candidate);
}

static volatile sig_atomic_t prompt_interrupted;
static void on_prompt_sigint(int sig) { (void)sig; prompt_interrupted = 1; }

/* readline(prompt) -> line; nil at end of input; nil, "interrupted" on Ctrl-C.
 * At the prompt Ctrl-C drops the line being typed: the session goes on, and
 * no statement inherits the interrupt. (Ignoring SIGINT is not enough: libedit
 * then gives up reading, which looks like end of input and ended the REPL.) */
static int l_readline(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "> ");
    completion_state = L;
    struct sigaction on_int = {.sa_handler = on_prompt_sigint}, previous;
    sigemptyset(&on_int.sa_mask);
    prompt_interrupted = 0;
    sigaction(SIGINT, &on_int, &previous);
    char *line = readline(prompt);
    sigaction(SIGINT, &previous, NULL);
    if (prompt_interrupted) {
        free(line);
        lua_pushnil(L);
        lua_pushliteral(L, "interrupted");
        return 2;
    }
    if (!line) return 0;
    lua_pushstring(L, line);
    free(line);
    return 1;
}

static int l_add_history(lua_State *L) {
    add_history(luaL_checkstring(L, 1));
    return 0;
}

static int l_read_history(lua_State *L) {
    read_history(luaL_checkstring(L, 1)); /* a missing file is a fresh history */
    return 0;
}

static int l_write_history(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    stifle_history(lkd_opt_int_arg(L, 2, 1000));
    lua_pushboolean(L, write_history(path) == 0);
    return 1;
}

static int l_set_completer(lua_State *L) { /* set_completer(function(text) -> {candidates}) */
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (completer_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, completer_ref);
    lua_pushvalue(L, 1);
    completer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    completion_state = L;
    /* dots and colons stay inside a word: "kd.ze" completes as one */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~[]";
    rl_attempted_completion_function = complete;
    return 0;
}

static const luaL_Reg functions[] = {
    {"readline", l_readline}, {"add_history", l_add_history}, {"read_history", l_read_history},
    {"write_history", l_write_history}, {"set_completer", l_set_completer}, {NULL, NULL},
};

void lkd_open_readline(lua_State *L) { luaL_register(L, NULL, functions); }
