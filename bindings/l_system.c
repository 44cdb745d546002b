/* l_system.c - the process-wide settings and services Lua needs from C:
 * threads, seeds, grad mode, tensor memory, a monotonic clock, atomic file
 * writes (checkpoints must survive a kill at any moment), the lock that
 * gives a run folder to one process, and removing a run folder. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lkd.h"

/* set_conv_backend("onednn" | "im2col") -> the previous one */
static int l_set_conv_backend(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    bool onednn = strcmp(name, "onednn") == 0;
    if (!onednn && strcmp(name, "im2col") != 0)
        return luaL_error(L, "kd.set_conv_backend: 'onednn' or 'im2col', got '%s'", name);
    bool was = kd_conv_use_dnnl(onednn);
    if (onednn && !kd_conv_dnnl_active()) {
        kd_conv_use_dnnl(was);
        return luaL_error(L, "kd.set_conv_backend: oneDNN does not run here");
    }
    lua_pushstring(L, was ? "onednn" : "im2col");
    return 1;
}

/* set_conv_precision("bf16" | "float32") -> the previous one: oneDNN's
 * convolutions compute in bfloat16 (float32 results and accumulation) */
static int l_set_conv_precision(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    bool bf16 = strcmp(name, "bf16") == 0;
    if (!bf16 && strcmp(name, "float32") != 0)
        return luaL_error(L, "kd.set_conv_precision: 'bf16' or 'float32', got '%s'", name);
    if (bf16 && !kd_conv_bf16_available())
        return luaL_error(L, "kd.set_conv_precision: oneDNN has no bfloat16 convolutions for this CPU "
                             "(or oneDNN does not run here)");
    lua_pushstring(L, kd_conv_set_bf16(bf16) ? "bf16" : "float32");
    return 1;
}

/* set_conv_algorithm("winograd" | "direct") -> the previous one: Winograd
 * F(4x4, 3x3) for 3x3 stride-1 convolutions (oneDNN's kernels where it has
 * them, kdseg's own elsewhere), direct convolution for the rest */
static int l_set_conv_algorithm(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    bool winograd = strcmp(name, "winograd") == 0;
    if (!winograd && strcmp(name, "direct") != 0)
        return luaL_error(L, "kd.set_conv_algorithm: 'winograd' or 'direct', got '%s'", name);
    lua_pushstring(L, kd_conv_set_winograd(winograd) ? "winograd" : "direct");
    return 1;
}

/* conv_algorithm() -> "winograd" or "direct": what is asked for now;
 * whether Winograd kernels run here (calls without one run direct); and
 * whose: "onednn" or "kdseg" (its own, where oneDNN has none), or nil */
static int l_conv_algorithm(lua_State *L) {
    const char *kernels = kd_conv_winograd_kernels();
    lua_pushstring(L, kd_conv_winograd() ? "winograd" : "direct");
    lua_pushboolean(L, kernels != NULL);
    if (kernels) lua_pushstring(L, kernels);
    else lua_pushnil(L);
    return 3;
}

/* set_layout("blocked" | "nchw") -> the previous one: whether convolutions
 * leave their outputs (and in training their input gradients) in their
 * kernels' blocked layout for the next op (core/engine/layout.c) */
static int l_set_layout(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    bool blocked = strcmp(name, "blocked") == 0;
    if (!blocked && strcmp(name, "nchw") != 0)
        return luaL_error(L, "kd.set_layout: 'blocked' or 'nchw', got '%s'", name);
    lua_pushstring(L, kd_blocked_layout_use(blocked) ? "blocked" : "nchw");
    return 1;
}

/* blocked(t) -> the block of t's channels when its data is blocked, else 0 (for tests) */
static int l_blocked(lua_State *L) {
    lua_pushinteger(L, kd_blocked(lkd_check_tensor(L, 1)));
    return 1;
}

/* conv_precision() -> "bf16" or "float32": what oneDNN's convolutions compute in now */
static int l_conv_precision(lua_State *L) {
    lua_pushstring(L, kd_conv_bf16() ? "bf16" : "float32");
    return 1;
}

static int l_set_threads(lua_State *L) {
    int n = lkd_check_int(L, 1);
    if (n < 1 || n > 1024) return luaL_error(L, "kd.set_threads: %d threads, must be 1 to 1024", n);
    kd_set_threads(n);
    return 0;
}

static int l_get_threads(lua_State *L) {
    lua_pushinteger(L, kd_get_threads());
    return 1;
}

static int l_manual_seed(lua_State *L) {
    lua_Number seed = luaL_checknumber(L, 1);
    if (seed < 0) return luaL_error(L, "kd.manual_seed: seed %f must be >= 0", seed);
    kd_manual_seed((uint64_t)seed);
    return 0;
}

/* The global generator's state as a string, and back: checkpoints resume it. */
static int l_rng_state(lua_State *L) {
    lua_pushlstring(L, (const char *)kd_rng_global()->s, sizeof kd_rng_global()->s);
    return 1;
}

static int l_set_rng_state(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (len != sizeof kd_rng_global()->s) return luaL_error(L, "kd.set_rng_state: %d bytes, expected %d", (int)len, (int)sizeof kd_rng_global()->s);
    memcpy(kd_rng_global()->s, s, len);
    return 0;
}

static int l_grad_enabled(lua_State *L) {
    lua_pushboolean(L, kd_grad_enabled());
    return 1;
}

static int l_set_grad_enabled(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, kd_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int l_memory(lua_State *L) {
    kd_memory_stats m = kd_memory();
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number)m.live_bytes);
    lua_setfield(L, -2, "live_bytes");
    lua_pushnumber(L, (lua_Number)m.peak_bytes);
    lua_setfield(L, -2, "peak_bytes");
    lua_pushnumber(L, (lua_Number)m.cached_bytes);
    lua_setfield(L, -2, "cached_bytes");
    lua_pushnumber(L, (lua_Number)m.live_tensors);
    lua_setfield(L, -2, "live_tensors");
    return 1;
}

static int l_reset_peak(lua_State *L) {
    (void)L;
    kd_memory_reset_peak();
    return 0;
}

static int l_empty_cache(lua_State *L) {
    (void)L;
    kd_memory_empty_cache();
    return 0;
}

/* Resident set size of the process in bytes, from /proc/self/statm. */
static int l_rss(lua_State *L) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) {
        if (f) fclose(f);
        return luaL_error(L, "kd.rss: cannot read /proc/self/statm");
    }
    fclose(f);
    lua_pushnumber(L, (lua_Number)resident * (lua_Number)sysconf(_SC_PAGESIZE));
    return 1;
}

/* The process's peak resident memory in bytes: VmHWM of /proc/self/status,
 * which reset_rss_peak can lower, else getrusage's high-water mark. */
static int l_rss_peak(lua_State *L) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && kib < 0 && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) != 1) kib = -1;
    if (f) fclose(f);
    if (kib < 0) {
        struct rusage usage;
        if (getrusage(RUSAGE_SELF, &usage) != 0) return luaL_error(L, "kd.rss_peak: getrusage failed");
        kib = usage.ru_maxrss;
    }
    lua_pushnumber(L, (lua_Number)kib * 1024);
    return 1;
}

/* Lowers the peak resident memory to what is resident now (Linux's
 * /proc/self/clear_refs), so that a benchmark can leave its own probes out
 * of the peak it reports; false where the kernel does not allow it. */
static int l_reset_rss_peak(lua_State *L) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool ok = f && fputs("5", f) >= 0;
    if (f && fclose(f) != 0) ok = false;
    lua_pushboolean(L, ok);
    return 1;
}

static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec * 1e-9);
    return 1;
}

/* write_atomic(path, data): data goes to path.tmp, is fsynced, then renamed
 * over path, so a reader (or a kill) sees the old file or the new, never half. */
static int l_write_atomic(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
    const char *tmp = lua_tostring(L, -1);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return luaL_error(L, "cannot write %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return luaL_error(L, "cannot write %s: %s", path, strerror(e));
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return luaL_error(L, "cannot write %s: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return luaL_error(L, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

static int l_mkdir(lua_State *L) { /* mkdir(path): one level; existing is fine */
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return luaL_error(L, "cannot create directory %s: %s", path, strerror(errno));
    return 0;
}

/* lock_file(path) -> fd, or nil and the holder's pid. A POSIX write lock on
 * the whole file: the kernel drops it when the process ends, however it
 * ends, so a killed run never leaves a stale lock; children do not inherit
 * it. The holder's pid is also written into the file, for people. */
static int l_lock_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return luaL_error(L, "cannot open lock file %s: %s", path, strerror(errno));
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &lock) != 0) {
        int e = errno;
        struct flock holder = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        int pid = fcntl(fd, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK ? (int)holder.l_pid : 0;
        close(fd);
        if (e != EAGAIN && e != EACCES) return luaL_error(L, "cannot lock %s: %s", path, strerror(e));
        lua_pushnil(L);
        lua_pushinteger(L, pid);
        return 2;
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) { /* only informative: the lock holds */ }
    lua_pushinteger(L, fd);
    return 1;
}

static int l_unlock_file(lua_State *L) { /* unlock_file(fd): closing releases the lock */
    close(lkd_check_int(L, 1));
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) != 0 ? errno : 0;
}

/* remove_tree(path): the folder and everything under it; symbolic links are
 * removed, never followed, and the walk stays on path's file system. */
static int l_remove_tree(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : luaL_error(L, "cannot remove %s: %s", path, strerror(errno));
    int e = nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    if (e != 0) return luaL_error(L, "cannot remove %s: %s", path, strerror(e > 0 ? e : errno));
    return 0;
}

static int l_is_dir(lua_State *L) {
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty(lkd_opt_int_arg(L, 1, 1)));
    return 1;
}

static int l_getpid(lua_State *L) {
    lua_pushinteger(L, getpid());
    return 1;
}

static int l_gemm_gflops(lua_State *L) {
    int m = lkd_check_int(L, 1), n = lkd_check_int(L, 2), k = lkd_check_int(L, 3);
    if (m < 1 || n < 1 || k < 1 || (double)m * n > 1e8 || (double)n * k > 1e8 || (double)m * k > 1e8)
        return luaL_error(L, "kd.gemm_gflops: sizes %d x %d x %d out of range", m, n, k);
    lua_pushnumber(L, kd_gemm_gflops(m, n, k, lkd_opt_int_arg(L, 4, 5)));
    return 1;
}

static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    return 0;
}

/* cwd() -> the working folder (kdseg --emit-slurm writes it into the job
 * script, beside exe_path()) */
static int l_cwd(lua_State *L) {
    char path[4096];
    if (!getcwd(path, sizeof path)) return luaL_error(L, "cannot read the working folder: %s", strerror(errno));
    lua_pushstring(L, path);
    return 1;
}

static const luaL_Reg functions[] = {
    {"cwd", l_cwd},
    {"gemm_gflops", l_gemm_gflops}, {"sleep", l_sleep},
    {"set_conv_backend", l_set_conv_backend}, {"set_conv_precision", l_set_conv_precision},
    {"conv_precision", l_conv_precision}, {"set_conv_algorithm", l_set_conv_algorithm},
    {"conv_algorithm", l_conv_algorithm}, {"set_layout", l_set_layout}, {"blocked", l_blocked},
    {"set_threads", l_set_threads}, {"get_threads", l_get_threads}, {"manual_seed", l_manual_seed},
    {"rng_state", l_rng_state}, {"set_rng_state", l_set_rng_state},
    {"grad_enabled", l_grad_enabled}, {"set_grad_enabled", l_set_grad_enabled}, {"memory", l_memory},
    {"reset_peak_memory", l_reset_peak}, {"empty_cache", l_empty_cache}, {"rss", l_rss}, {"rss_peak", l_rss_peak},
    {"reset_rss_peak", l_reset_rss_peak},
    {"clock", l_clock}, {"write_atomic", l_write_atomic}, {"mkdir", l_mkdir}, {"is_dir", l_is_dir},
    {"lock_file", l_lock_file}, {"unlock_file", l_unlock_file}, {"remove_tree", l_remove_tree},
    {"isatty", l_isatty}, {"getpid", l_getpid}, {NULL, NULL},
};

void lkd_open_system(lua_State *L) { luaL_register(L, NULL, functions); }
