/* l_dist_grads.c - gradient averaging for data-parallel training, in
 * buckets sent while backward goes on (the way PyTorch's DDP does it).
 *
 *   local r = kd._C.dist_grad_reducer(params, bucket_bytes)
 *   r:arm(); loss:backward(); local seconds = r:finish()
 *
 * The parameters, taken in reverse order (backward reaches the last layers
 * first), are packed into buckets of about bucket_bytes. The core calls back
 * (kd_set_grad_ready_hook) when a parameter's gradient is complete; a bucket
 * whose gradients are all complete is copied into its flat buffer and its
 * sum over the processes started (MPI_Iallreduce), in bucket order on every
 * process, so that the collectives match. finish starts what is left (a
 * parameter that got no gradient counts as zeros), waits for every bucket
 * and writes the mean back into the gradients. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lkd_dist.h"

#define LKD_GRADS "kd.dist.GradReducer"

typedef struct {
    int first, count; /* parameters [first, first + count) of the reduction order */
    long numel;
    float *flat;
    int ready;        /* parameters whose gradient is complete */
    int request;
    bool started;
} bucket;

typedef struct {
    kd_tensor **params; /* in reduction order, each retained */
    int n;
    long *offset;       /* each parameter's offset in its bucket's buffer */
    int *bucket_of;
    bool *ready;
    bucket *buckets;
    int n_buckets, next_to_start, hint;
    double seconds;     /* this step's time in packing, MPI calls and waiting */
    int started_in_backward; /* this step's buckets started before backward ended */
    bool armed;
} reducer;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kd_status mpi_failure(const char *what) {
    const kd_dist_backend *b = lkd_dist();
    return kd_fail(KD_ERR_STATE, "gradient averaging: %s: rank %d of %d: %s", what, b->rank, b->size, b->message());
}

/* The bucket's gradients into its buffer (zeros for a parameter without
 * one), and its sum started. */
static kd_status start_bucket(reducer *r, bucket *b) {
    for (int i = b->first; i < b->first + b->count; i++) {
        kd_tensor *p = r->params[i];
        size_t n = kd_numel(p);
        float *to = b->flat + r->offset[i];
        if (p->grad) memcpy(to, kd_f32(p->grad), sizeof(float) * n);
        else memset(to, 0, sizeof(float) * n);
    }
    b->started = true;
    return lkd_dist()->start_sum(b->flat, b->numel, &b->request) ? mpi_failure("MPI_Iallreduce") : KD_OK;
}

/* Starts the complete buckets next in order, and lets the started ones progress. */
static kd_status start_ready(reducer *r, bool all) {
    kd_status s = KD_OK;
    while (!s && r->next_to_start < r->n_buckets) {
        bucket *b = &r->buckets[r->next_to_start];
        if (!all && b->ready < b->count) break;
        s = start_bucket(r, b);
        r->next_to_start++;
    }
    for (int k = 0; !s && k < r->next_to_start; k++) {
        int done = 0;
        if (lkd_dist()->test(r->buckets[k].request, &done)) s = mpi_failure("MPI_Test");
    }
    return s;
}

static int find_param(reducer *r, const kd_tensor *leaf) {
    for (int k = 0; k < r->n; k++) {
        int i = (r->hint + k) % r->n;
        if (r->params[i] == leaf) return r->hint = i;
    }
    return -1;
}

static kd_status on_grad_ready(kd_tensor *leaf, void *ctx) {
    reducer *r = ctx;
    int i = find_param(r, leaf);
    if (i < 0 || r->ready[i]) return KD_OK; /* not one of ours (an input), or counted already */
    double t0 = now();
    r->ready[i] = true;
    r->buckets[r->bucket_of[i]].ready++;
    kd_status s = start_ready(r, false);
    r->seconds += now() - t0;
    return s;
}

static reducer *check_reducer(lua_State *L) { return luaL_checkudata(L, 1, LKD_GRADS); }

static void disarm(reducer *r) {
    if (r->armed) kd_set_grad_ready_hook(NULL, NULL);
    r->armed = false;
}

/* r:arm(): the next backward sends gradients as they complete */
static int l_arm(lua_State *L) {
    reducer *r = check_reducer(L);
    if (!lkd_dist()) return 0;
    memset(r->ready, 0, sizeof(bool) * (size_t)r->n);
    for (int k = 0; k < r->n_buckets; k++) r->buckets[k].ready = 0, r->buckets[k].started = false;
    r->next_to_start = 0, r->hint = 0, r->seconds = 0, r->started_in_backward = 0;
    kd_set_grad_ready_hook(on_grad_ready, r);
    r->armed = true;
    return 0;
}

/* r:finish() -> seconds spent communicating this step: every gradient is
 * then the mean over the processes */
static int l_finish(lua_State *L) {
    reducer *r = check_reducer(L);
    if (!lkd_dist()) {
        lua_pushnumber(L, 0);
        return 1;
    }
    disarm(r);
    r->started_in_backward = r->next_to_start;
    double t0 = now();
    kd_status s = start_ready(r, true);
    for (int k = 0; !s && k < r->n_buckets; k++)
        if (lkd_dist()->wait(r->buckets[k].request)) s = mpi_failure("MPI_Wait");
    if (s) return lkd_raise(L, "kd.dist (gradients)");
    float scale = 1.0f / (float)lkd_dist()->size;
    for (int i = 0; i < r->n; i++) {
        kd_tensor *p = r->params[i];
        const float *from = r->buckets[r->bucket_of[i]].flat + r->offset[i];
        size_t n = kd_numel(p);
        if (!p->grad) { /* no gradient here: one only if another process had one */
            bool any = false;
            for (size_t k = 0; k < n && !any; k++) any = from[k] != 0;
            if (!any) continue;
            if (kd_tensor_zeros(KD_F32, p->ndim, p->shape, &p->grad)) return lkd_raise(L, "kd.dist (gradients)");
        }
        float *to = kd_f32(p->grad);
        for (size_t k = 0; k < n; k++) to[k] = from[k] * scale;
        kd_modified(p->grad);
    }
    r->seconds += now() - t0;
    lua_pushnumber(L, r->seconds);
    return 1;
}

/* r:disarm(): after a failed backward, no more callbacks */
static int l_disarm(lua_State *L) {
    disarm(check_reducer(L));
    return 0;
}

static int l_gc(lua_State *L) {
    reducer *r = check_reducer(L);
    disarm(r);
    for (int i = 0; i < r->n; i++) kd_tensor_release(r->params[i]);
    for (int k = 0; k < r->n_buckets; k++) free(r->buckets[k].flat);
    free(r->params), free(r->offset), free(r->bucket_of), free(r->ready), free(r->buckets);
    memset(r, 0, sizeof *r);
    return 0;
}

/* r:buckets() -> the number of buckets, and how many of them the last step
 * started while backward was still running */
static int l_buckets(lua_State *L) {
    reducer *r = check_reducer(L);
    lua_pushinteger(L, r->n_buckets);
    lua_pushinteger(L, r->started_in_backward);
    return 2;
}

/* dist_grad_reducer({param, ...}, bucket_bytes) */
static int l_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double bucket_bytes = luaL_checknumber(L, 2);
    if (!(bucket_bytes >= 4)) return luaL_error(L, "kd.dist: bucket size %f bytes must be at least 4", bucket_bytes);
    int n = (int)lua_objlen(L, 1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        kd_tensor *p = lkd_to_tensor(L, -1);
        if (!p || p->dtype != KD_F32)
            return luaL_error(L, "kd.dist: parameter %d is not a float32 tensor", i);
        lua_pop(L, 1);
    }
    reducer *r = lua_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    luaL_getmetatable(L, LKD_GRADS);
    lua_setmetatable(L, -2);
    size_t m = (size_t)(n > 0 ? n : 1);
    r->params = calloc(m, sizeof *r->params);
    r->offset = calloc(m, sizeof *r->offset);
    r->bucket_of = calloc(m, sizeof *r->bucket_of);
    r->ready = calloc(m, sizeof *r->ready);
    r->buckets = calloc(m, sizeof *r->buckets);
    if (!r->params || !r->offset || !r->bucket_of || !r->ready || !r->buckets)
        return luaL_error(L, "kd.dist: cannot allocate the gradient buckets of %d parameters", n);
    for (int i = 0; i < n; i++) { /* reverse order: the last layers' gradients come first */
        lua_rawgeti(L, 1, n - i);
        r->params[i] = kd_tensor_retain(lkd_to_tensor(L, -1));
        r->n = i + 1;
        lua_pop(L, 1);
    }
    long limit = (long)(bucket_bytes / sizeof(float));
    for (int i = 0; i < n; i++) {
        bucket *b = &r->buckets[r->n_buckets];
        if (b->count > 0 && b->numel + (long)kd_numel(r->params[i]) > limit) b = &r->buckets[++r->n_buckets];
        if (b->count == 0) b->first = i;
        r->offset[i] = b->numel;
        r->bucket_of[i] = (int)(b - r->buckets);
        b->numel += (long)kd_numel(r->params[i]);
        b->count++;
    }
    if (n > 0) r->n_buckets++;
    for (int k = 0; k < r->n_buckets; k++)
        if (!(r->buckets[k].flat = malloc(sizeof(float) * (size_t)r->buckets[k].numel)))
            return luaL_error(L, "kd.dist: cannot allocate a gradient bucket of %ld values", r->buckets[k].numel);
    return 1;
}

void lkd_open_dist_grads(lua_State *L) {
    static const luaL_Reg methods[] = {{"arm", l_arm}, {"finish", l_finish}, {"disarm", l_disarm},
                                       {"buckets", l_buckets}, {NULL, NULL}};
    luaL_newmetatable(L, LKD_GRADS);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "dist_grad_reducer");
}
