/* main.c - the kdseg host: LuaJIT with the kd library, a script runner,
 * `-e CODE`, sub-commands (scripts/kd/cli/<name>.lua) and the REPL.
 * Like luajit.c: a protected start, a traceback on error (the user's frames),
 * and Ctrl-C that interrupts the running Lua code, not the session. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "lkd.h"
#include "lkd_dist.h"

#define KDSEG_VERSION "0.1.0"

static lua_State *global_state;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void on_sigint(int sig) {
    (void)sig;
    /* Safe in a handler: it only sets the hook fields. */
    lua_sethook(global_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* The traceback a user reads: the frames of their own code only. Frames in
 * the kd library (whose source names contain LIBRARY_MARK) and in C say how
 * the library got there, which is noise for someone whose config names a
 * missing file; KDSEG_TRACEBACK=1 keeps every frame, for reporting a bug in
 * the library. The error's own location (its first line) is always kept. */
#define LIBRARY_MARK "scripts/kd/"

/* Where the library's mark starts in s[0..len), or NULL. */
static const char *find_library(const char *s, size_t len) {
    size_t mark = sizeof LIBRARY_MARK - 1;
    for (size_t i = 0; i + mark <= len; i++)
        if (memcmp(s + i, LIBRARY_MARK, mark) == 0) return s + i;
    return NULL;
}

static int is_library_frame(const char *line, size_t len) {
    if (len >= 4 && memcmp(line, "\t[C]", 4) == 0) return 1;
    if (len >= 5 && memcmp(line, "\t(...", 5) == 0) return 1; /* tail calls */
    return find_library(line, len) != NULL;
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    const char *full = getenv("KDSEG_TRACEBACK");
    if (full && *full && strcmp(full, "0") != 0) {
        luaL_traceback(L, L, msg, 1);
        return 1;
    }
    luaL_traceback(L, L, NULL, 1);
    const char *frames = lua_tostring(L, -1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    /* "/long/path/scripts/kd/infra/config.lua:53: ..." reads as "kd/infra/config.lua:53: ..." */
    const char *colon = strchr(msg, ':');
    const char *lib = colon ? find_library(msg, (size_t)(colon - msg)) : NULL;
    luaL_addstring(&b, lib ? lib + sizeof "scripts/" - 1 : msg);
    int kept = 0;
    const char *line = strchr(frames, '\n'); /* past "stack traceback:" */
    while (line) {
        line++;
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (!is_library_frame(line, len)) {
            if (!kept++) luaL_addstring(&b, "\nstack traceback:");
            luaL_addchar(&b, '\n');
            luaL_addlstring(&b, line, len);
        }
        line = end;
    }
    luaL_pushresult(&b);
    return 1;
}

/* Calls the function below nargs arguments with the traceback handler; prints
 * the error and returns non-zero on failure. */
static int protected_call(lua_State *L, int nargs) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    signal(SIGINT, on_sigint);
    int status = lua_pcall(L, nargs, 0, base);
    signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    if (status) {
        fprintf(stderr, "kdseg: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return status;
}

/* The Lua library lives in <dir of the binary>/../scripts (build/kdseg in a
 * checkout; build/san/kdseg is one level deeper) or
 * /usr/local/share/kdseg/scripts (installed). */
static int find_scripts(char *out, size_t size) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        /* build/kdseg, build/san/kdseg (the sanitizer build), an install */
        const char *candidates[] = {"%s/../scripts", "%s/../../scripts", "%s/scripts", "%s/../share/kdseg/scripts"};
        for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
            char probe[PATH_MAX + 64];
            snprintf(out, size, candidates[i], exe);
            snprintf(probe, sizeof probe, "%s/kd/init.lua", out);
            if (access(probe, R_OK) == 0) return 1;
        }
    }
    return 0;
}

static int open_kd(lua_State *L) {
    char scripts[PATH_MAX];
    if (!find_scripts(scripts, sizeof scripts))
        return luaL_error(L, "cannot find the kd Lua library (scripts/kd/init.lua) next to the binary");
    lkd_open_kd(L, scripts, KDSEG_VERSION);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: kdseg [options] [script.lua | command] [args...]\n"
            "  kdseg script.lua [args]   run a Lua script (its arguments in arg)\n"
            "  kdseg COMMAND [args]      run a sub-command (kdseg help lists them)\n"
            "  kdseg -e CODE             run a chunk of Lua\n"
            "  kdseg                     open the interactive REPL\n"
            "options:\n"
            "  --threads N   threads for OpenBLAS and the core's loops (default: all cores)\n"
            "  --seed N      seed of the global random generator (default 0)\n"
            "  -i            open the REPL after the script or -e\n"
            "  --help        this text;  --version  the version\n");
}

/* arg[-1] = binary, arg[0] = script, arg[1..] = its arguments. */
static void set_arg_table(lua_State *L, char **argv, int script_at, int argc) {
    lua_createtable(L, argc - script_at, script_at + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script_at);
    }
    lua_setglobal(L, "arg");
}

static int run_main(lua_State *L, int argc, char **argv) {
    const char *code = NULL;
    int script_at = 0, interactive = 0, threads = 0;
    double seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return usage(stdout), 0;
        if (strcmp(a, "--version") == 0) return printf("kdseg %s (%s)\n", KDSEG_VERSION, LUAJIT_VERSION), 0;
        if (strcmp(a, "-i") == 0) { interactive = 1; continue; }
        if ((strcmp(a, "-e") == 0 || strcmp(a, "--threads") == 0 || strcmp(a, "--seed") == 0) && i + 1 >= argc) {
            fprintf(stderr, "kdseg: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "-e") == 0) { code = argv[++i]; continue; }
        if (strcmp(a, "--threads") == 0) {
            char *end;
            threads = (int)strtol(argv[++i], &end, 10);
            if (*end || threads < 1) return fprintf(stderr, "kdseg: --threads wants a positive integer, got '%s'\n", argv[i]), 2;
            continue;
        }
        if (strcmp(a, "--seed") == 0) {
            char *end;
            seed = strtod(argv[++i], &end);
            if (*end || seed < 0) return fprintf(stderr, "kdseg: --seed wants a non-negative integer, got '%s'\n", argv[i]), 2;
            continue;
        }
        if (a[0] == '-' && a[1]) return fprintf(stderr, "kdseg: unknown option '%s' (see kdseg --help)\n", a), 2;
        script_at = i;
        break;
    }
    /* a typo in KDSEG_CONV_ALGORITHM would otherwise run the default unnoticed */
    if (kd_environment_check() != KD_OK) return fprintf(stderr, "kdseg: %s\n", kd_error_message()), 2;
    lua_pushcfunction(L, open_kd);
    if (protected_call(L, 0)) return 1;
    if (threads) kd_set_threads(threads);
    kd_manual_seed((uint64_t)seed);
    set_arg_table(L, argv, script_at ? script_at : argc - 1, argc);

    if (code) {
        if (luaL_loadbuffer(L, code, strlen(code), "=(command line)")) {
            fprintf(stderr, "kdseg: %s\n", lua_tostring(L, -1));
            return 1;
        }
        if (protected_call(L, 0)) return 1;
    }
    if (script_at) {
        /* kd.cli.run decides between a script file and a sub-command */
        lua_getglobal(L, "require");
        lua_pushstring(L, "kd.cli");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "main");
        lua_remove(L, -2);
        int nargs = 0;
        for (int i = script_at; i < argc; i++, nargs++) lua_pushstring(L, argv[i]);
        if (protected_call(L, nargs)) return 1;
    }
    if ((!code && !script_at) || interactive) {
        lua_getglobal(L, "require");
        lua_pushstring(L, "kd.infra.repl");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "run");
        lua_remove(L, -2);
        if (protected_call(L, 0)) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    /* Line by line even into a file or a pipe: a training log must show its
     * progress while the run goes on, and keep it if the run is killed. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* one of several processes started by mpirun or srun: MPI first */
    if (lkd_dist_start()) return 1;
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "kdseg: cannot create a Lua state\n");
        return 1;
    }
    global_state = L;
    luaL_openlibs(L);
    int status = run_main(L, argc, argv);
    fflush(stdout);
    lua_close(L);
    /* a failed process ends the others (MPI_Abort) instead of leaving them waiting */
    lkd_dist_finish(status);
    return status;
}
