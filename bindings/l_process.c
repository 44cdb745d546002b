/* l_process.c - child processes for the sweep runner: spawn a command with
 * its output in a log file, poll for finished children, signal them.
 *   pid = spawn({"kdseg", "train", ...}, "log.txt"[, env {KEY = value}])
 *   pid, code, signal = wait_any()   -- nil when no child has finished
 *   kill(pid[, signal])               -- SIGTERM by default
 * Children get their own process group, so that Ctrl-C in the terminal
 * reaches only the runner, which then stops them itself; and they are sent
 * SIGTERM when the runner dies, however it dies (SIGKILL included), so a
 * killed runner leaves no trial running on as an orphan. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lkd.h"

static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *log = luaL_checkstring(L, 2);
    int argc = (int)lua_objlen(L, 1);
    if (argc < 1 || argc > 255) return luaL_error(L, "spawn: 1 to 255 arguments, got %d", argc);
    const char *argv[256];
    for (int i = 0; i < argc; i++) {
        lua_rawgeti(L, 1, i + 1);
        argv[i] = luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the strings stay in the table */
    }
    argv[argc] = NULL;
    /* environment additions, as "KEY=value" strings kept on the Lua stack */
    const char *env[64];
    int envc = 0;
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3) && envc < 64) {
            lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            env[envc++] = lua_tostring(L, -1);
            lua_insert(L, -3); /* keep it below the key/value pair */
            lua_pop(L, 1);
        }
    }
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return luaL_error(L, "spawn: cannot open log %s: %s", log, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return luaL_error(L, "spawn: fork failed: %s", strerror(errno));
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* the death signal outlives exec; the parent may have died before it was set */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        for (int i = 0; i < envc; i++) putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
    lua_pushinteger(L, pid);
    return 1;
}

static int l_wait_any(lua_State *L) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return 0;
    lua_pushinteger(L, pid);
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushinteger(L, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    return 3;
}

static int l_kill(lua_State *L) {
    pid_t pid = (pid_t)lkd_check_int(L, 1);
    int sig = lkd_opt_int_arg(L, 2, SIGTERM);
    lua_pushboolean(L, kill(pid, sig) == 0);
    return 1;
}

static int l_nproc(lua_State *L) {
    lua_pushinteger(L, sysconf(_SC_NPROCESSORS_ONLN));
    return 1;
}

/* interrupted(): whether SIGINT or SIGTERM arrived since watching began */
static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static int l_watch_interrupts(lua_State *L) {
    (void)L;
    interrupted = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    return 0;
}

static int l_interrupted(lua_State *L) {
    lua_pushboolean(L, interrupted);
    return 1;
}

static int l_exe_path(lua_State *L) { /* the running kdseg binary */
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) return luaL_error(L, "exe_path: cannot read /proc/self/exe");
    lua_pushlstring(L, path, (size_t)n);
    return 1;
}

static const luaL_Reg functions[] = {
    {"exe_path", l_exe_path}, {"spawn", l_spawn}, {"wait_any", l_wait_any}, {"kill", l_kill}, {"nproc", l_nproc},
    {"watch_interrupts", l_watch_interrupts}, {"interrupted", l_interrupted}, {NULL, NULL},
};

void lkd_open_process(lua_State *L) { luaL_register(L, NULL, functions); }
