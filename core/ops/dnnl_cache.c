/* dnnl_cache.c - oneDNN primitives made once and reused.
 *
 * conv_dnnl.c runs every convolution and reorder through a primitive.
 * Making one from scratch (its descriptor: oneDNN tries its implementations
 * in turn; then the primitive: a look-up in oneDNN's own cache of compiled
 * kernels) took 2.8% of bench_student's single-thread training step and
 * 2.7% of its inference, the same at any thread count, so about twice that
 * share on two threads. Here each is made once per key - a convolution's
 * geometry and settings (conv_dnnl.c builds the key), or a reorder's two
 * layouts - and kept in a hash table. The same primitives run either way,
 * so results keep their bits.
 *
 * A primitive divides its work among the OpenMP threads there were when it
 * was made, and runs on that many whatever kd_set_threads says later (a
 * convolution made at 1 thread stayed at 1 thread after kd.set_threads(2),
 * and one made at 2 kept using 2 after kd.set_threads(1)). So the thread
 * count is part of every key: each count gets its own primitives.
 *
 * Called from one thread at a time, as the rest of conv_dnnl.c (its engine
 * and stream are shared too). */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnnl_cache.h"

#define BUCKETS 1024

typedef enum { BY_BYTES, BY_LAYOUTS } key_kind;

/* A reorder's key: layouts compare with dnnl_memory_desc_equal, not by
 * their bytes (a descriptor's padding bytes and the strides of unit
 * dimensions are not part of what it describes). */
typedef struct {
    dnnl_memory_desc_t from, to;
    bool accumulate;
} reorder_key;

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    int threads; /* omp_get_max_threads() when it was made */
    key_kind kind;
    size_t key_bytes;
    kd_dnnl_made made;
    unsigned char key[]; /* key_bytes: the caller's bytes, or a reorder_key */
} entry;

static entry *buckets[BUCKETS];
static size_t kept, made_total;

static uint64_t fnv(uint64_t h, const void *data, size_t bytes) {
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static const uint64_t FNV_START = 1469598103934665603ull;

/* What two equal layouts share: their dimensions, type and blocks. */
static uint64_t layout_hash(uint64_t h, const dnnl_memory_desc_t *md) {
    h = fnv(h, &md->ndims, sizeof md->ndims);
    h = fnv(h, md->dims, sizeof md->dims[0] * (size_t)md->ndims);
    h = fnv(h, &md->data_type, sizeof md->data_type);
    h = fnv(h, &md->format_kind, sizeof md->format_kind);
    if (md->format_kind == dnnl_blocked) {
        const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
        h = fnv(h, &b->inner_nblks, sizeof b->inner_nblks);
        h = fnv(h, b->inner_blks, sizeof b->inner_blks[0] * (size_t)b->inner_nblks);
        h = fnv(h, b->inner_idxs, sizeof b->inner_idxs[0] * (size_t)b->inner_nblks);
    }
    return h;
}

static bool same_key(const entry *e, key_kind kind, const void *key, size_t key_bytes) {
    if (e->kind != kind || e->key_bytes != key_bytes) return false;
    if (kind == BY_BYTES) return memcmp(e->key, key, key_bytes) == 0;
    const reorder_key *a = (const reorder_key *)e->key, *b = key;
    return a->accumulate == b->accumulate && dnnl_memory_desc_equal(&a->from, &b->from) &&
           dnnl_memory_desc_equal(&a->to, &b->to);
}

/* The thread count oneDNN divides a primitive's work by (its OpenMP
 * runtime reads omp_get_max_threads() when the primitive is made), mixed
 * into every hash. */
static uint64_t with_threads(uint64_t h) {
    int threads = omp_get_max_threads();
    return fnv(h, &threads, sizeof threads);
}

static const kd_dnnl_made *find(uint64_t hash, key_kind kind, const void *key, size_t key_bytes) {
    int threads = omp_get_max_threads();
    for (entry *e = buckets[hash % BUCKETS]; e; e = e->next)
        if (e->hash == hash && e->threads == threads && same_key(e, kind, key, key_bytes)) return &e->made;
    return NULL;
}

static const kd_dnnl_made *keep(uint64_t hash, key_kind kind, const void *key, size_t key_bytes,
                                dnnl_primitive_desc_t pd) {
    entry *e = malloc(sizeof *e + key_bytes);
    if (!e || dnnl_primitive_create(&e->made.primitive, pd) != dnnl_success) {
        free(e);
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    e->hash = hash, e->threads = omp_get_max_threads(), e->kind = kind, e->key_bytes = key_bytes, e->made.pd = pd;
    memcpy(e->key, key, key_bytes);
    e->next = buckets[hash % BUCKETS];
    buckets[hash % BUCKETS] = e;
    kept++, made_total++;
    return &e->made;
}

const kd_dnnl_made *kd_dnnl_cache_find(const void *key, size_t key_bytes) {
    return find(with_threads(fnv(FNV_START, key, key_bytes)), BY_BYTES, key, key_bytes);
}

const kd_dnnl_made *kd_dnnl_cache_keep(const void *key, size_t key_bytes, dnnl_primitive_desc_t pd) {
    return keep(with_threads(fnv(FNV_START, key, key_bytes)), BY_BYTES, key, key_bytes, pd);
}

const kd_dnnl_made *kd_dnnl_reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *from,
                                    const dnnl_memory_desc_t *to, bool accumulate) {
    reorder_key key;
    memset(&key, 0, sizeof key);
    key.from = *from, key.to = *to, key.accumulate = accumulate;
    uint64_t hash =
        with_threads(layout_hash(layout_hash(fnv(FNV_START, &key.accumulate, sizeof key.accumulate), from), to));
    const kd_dnnl_made *m = find(hash, BY_LAYOUTS, &key, sizeof key);
    if (m) return m;
    dnnl_primitive_attr_t attr = NULL;
    if (accumulate) {
        dnnl_post_ops_t ops;
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
        dnnl_post_ops_create(&ops);
        dnnl_post_ops_append_sum(ops, 1.0f);
        dnnl_primitive_attr_set_post_ops(attr, ops);
        dnnl_post_ops_destroy(ops);
    }
    dnnl_primitive_desc_t pd;
    bool ok = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr) == dnnl_success;
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok ? keep(hash, BY_LAYOUTS, &key, sizeof key, pd) : NULL;
}

void kd_dnnl_cache_trim(void) {
    if (kept <= KD_DNNL_CACHE_BOUND) return;
    for (int b = 0; b < BUCKETS; b++) {
        for (entry *e = buckets[b], *next; e; e = next) {
            next = e->next;
            dnnl_primitive_destroy(e->made.primitive);
            dnnl_primitive_desc_destroy(e->made.pd);
            free(e);
        }
        buckets[b] = NULL;
    }
    kept = 0;
}

size_t kd_dnnl_cache_count(void) { return kept; }
size_t kd_dnnl_cache_made(void) { return made_total; }
