/* l_dist.c - data-parallel training on MPI, as kd._C.dist_*: which process
 * this is, all-reduce, broadcast and barrier over tensors and numbers, and
 * synchronised batch norm. MPI itself is in a plugin (build/kdseg-mpi.so,
 * dist_mpi.c) loaded only when an MPI launcher started kdseg: alone, or
 * without Open MPI installed, kdseg is one process of one and every call
 * here is a no-op. The gradient averaging is in l_dist_grads.c. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <dlfcn.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lkd_dist.h"

static kd_dist_backend backend;
static bool active;

const kd_dist_backend *lkd_dist(void) { return active ? &backend : NULL; }

/* The number of processes an MPI launcher says it started, or 0 if none did. */
static int launched_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    /* PMIx (srun --mpi=pmix) sets the rank, not always the size */
    return getenv("PMIX_RANK") ? 1 : 0;
}

/* Threads per process when none were asked for (OMP_NUM_THREADS or
 * --threads): the cores it may run on, shared with the other processes of
 * its node unless the launcher bound it to cores of its own. */
static void share_cores(void) {
    if (getenv("OMP_NUM_THREADS")) return;
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int usable = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
    int threads = usable >= online ? usable / (backend.local_size > 0 ? backend.local_size : 1) : usable;
    kd_set_threads(threads > 0 ? threads : 1);
}

int lkd_dist_start(void) {
    int size = launched_size();
    if (size == 0) return 0;
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    if (n <= 0) return fprintf(stderr, "kdseg: cannot find its own binary to load the MPI plugin\n"), 1;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    strcpy(slash ? slash + 1 : path, "kdseg-mpi.so");
    /* RTLD_GLOBAL: Open MPI's own components, loaded by libmpi, look for its symbols */
    void *plugin = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    kd_dist_open_fn open = plugin ? (kd_dist_open_fn)dlsym(plugin, KD_DIST_OPEN_SYMBOL) : NULL;
    if (!open) {
        if (size == 1) return 0; /* mpirun -np 1: one process either way */
        fprintf(stderr, "kdseg: started by an MPI launcher as one of %d processes, but cannot load the MPI plugin "
                        "%s: %s (make builds it where libopenmpi-dev is installed)\n", size, path, dlerror());
        return 1;
    }
    if (open(&backend)) {
        fprintf(stderr, "kdseg: MPI does not start: %s\n", backend.message ? backend.message() : "?");
        return 1;
    }
    active = true;
    share_cores();
    return 0;
}

void lkd_dist_finish(int status) {
    if (!active) return;
    active = false;
    backend.finish(status);
}

int lkd_dist_raise(lua_State *L, const char *fn) {
    return luaL_error(L, "%s: rank %d of %d: %s", fn, backend.rank, backend.size, backend.message());
}

static int l_dist_info(lua_State *L) {
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, active ? backend.rank : 0);
    lua_setfield(L, -2, "rank");
    lua_pushinteger(L, active ? backend.size : 1);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, active ? backend.local_rank : 0);
    lua_setfield(L, -2, "local_rank");
    lua_pushinteger(L, active ? backend.local_size : 1);
    lua_setfield(L, -2, "local_size");
    lua_pushboolean(L, active);
    lua_setfield(L, -2, "mpi");
    return 1;
}

static kd_dist_op check_op(lua_State *L, int index, const char *fn) {
    const char *name = luaL_optstring(L, index, "sum");
    if (strcmp(name, "sum") == 0) return KD_DIST_SUM;
    if (strcmp(name, "max") == 0) return KD_DIST_MAX;
    if (strcmp(name, "min") == 0) return KD_DIST_MIN;
    luaL_error(L, "%s: op must be 'sum', 'max' or 'min', got '%s'", fn, name);
    return KD_DIST_SUM;
}

static kd_dist_type dist_type(kd_dtype t) {
    switch (t) {
    case KD_F32: return KD_DIST_F32;
    case KD_I32: return KD_DIST_I32;
    case KD_I64: return KD_DIST_I64;
    default: return KD_DIST_U8;
    }
}

/* dist_all_reduce(tensor[, op]): in place; the tensor again */
static int l_dist_all_reduce(lua_State *L) {
    kd_tensor *t = lkd_check_tensor(L, 1);
    kd_dist_op op = check_op(L, 2, "kd.dist.all_reduce");
    if (t->dtype == KD_U8 && op == KD_DIST_SUM)
        return luaL_error(L, "kd.dist.all_reduce: a uint8 tensor can take max or min, not a sum (it would overflow)");
    if (t->requires_grad || t->grad_fn)
        return luaL_error(L, "kd.dist.all_reduce: tensor %s is part of a graph (detach it first: the sum "
                             "has no gradient)", kd_shape_str(t));
    if (active && backend.all_reduce(kd_data(t), (long)kd_numel(t), dist_type(t->dtype), op))
        return lkd_dist_raise(L, "kd.dist.all_reduce");
    if (active) kd_modified(t);
    lua_settop(L, 1);
    return 1;
}

/* dist_broadcast(tensor, root): in place, root is 0-based */
static int l_dist_broadcast(lua_State *L) {
    kd_tensor *t = lkd_check_tensor(L, 1);
    int root = lkd_check_int(L, 2), size = active ? backend.size : 1;
    if (root < 0 || root >= size)
        return luaL_error(L, "kd.dist.broadcast: root %d is not a rank of 0..%d", root, size - 1);
    if (active && backend.broadcast(kd_data(t), (long)(kd_numel(t) * kd_dtype_size(t->dtype)), root))
        return lkd_dist_raise(L, "kd.dist.broadcast");
    if (active) kd_modified(t);
    lua_settop(L, 1);
    return 1;
}

/* dist_reduce_numbers({x, ...}[, op]) -> a new table: the same numbers (as
 * doubles) reduced over the processes */
static int l_dist_reduce_numbers(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    kd_dist_op op = check_op(L, 2, "kd.dist.all_reduce_numbers");
    int n = (int)lua_objlen(L, 1);
    double *values = lua_newuserdata(L, sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        if (!lua_isnumber(L, -1))
            return luaL_error(L, "kd.dist.all_reduce_numbers: entry %d is a %s, not a number", i + 1, luaL_typename(L, -1));
        values[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (active && n > 0 && backend.all_reduce(values, n, KD_DIST_F64, op))
        return lkd_dist_raise(L, "kd.dist.all_reduce_numbers");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, values[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_dist_barrier(lua_State *L) {
    if (active && backend.barrier()) return lkd_dist_raise(L, "kd.dist.barrier");
    return 0;
}

/* the core's reducers (kd_sum_reducer): ctx names what is reduced, for messages */
static kd_status sum_doubles(double *values, int count, void *ctx) {
    if (backend.all_reduce(values, count, KD_DIST_F64, KD_DIST_SUM))
        return kd_fail(KD_ERR_STATE, "%s: rank %d of %d: %s", (const char *)ctx, backend.rank, backend.size,
                       backend.message());
    return KD_OK;
}

/* dist_sync_batch_norm(on): batch norms with sync = true add up their
 * statistics over the processes (while on, with more than one process) */
static int l_dist_sync_batch_norm(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    bool on = lua_toboolean(L, 1) && active;
    kd_set_batch_norm_reducer(on ? sum_doubles : NULL, (void *)"synchronised batch norm");
    return 0;
}

/* dist_global_means(on): while on, cross-entropy means divide by the
 * counted pixels of every process (kd_set_loss_mean_reducer) */
static int l_dist_global_means(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    bool on = lua_toboolean(L, 1) && active;
    kd_set_loss_mean_reducer(on ? sum_doubles : NULL, (void *)"cross-entropy over all ranks");
    return 0;
}

void lkd_open_dist(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"dist_info", l_dist_info}, {"dist_all_reduce", l_dist_all_reduce}, {"dist_broadcast", l_dist_broadcast},
        {"dist_reduce_numbers", l_dist_reduce_numbers}, {"dist_barrier", l_dist_barrier},
        {"dist_sync_batch_norm", l_dist_sync_batch_norm}, {"dist_global_means", l_dist_global_means}, {NULL, NULL}};
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lkd_open_dist_grads(L);
}
