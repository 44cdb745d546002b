/* alloc.c - the caching allocator behind every tensor's storage.
 *
 * A training step frees and re-allocates the same buffer sizes every
 * iteration; returning them to the system would fault fresh pages each step.
 * Freed blocks are kept in bins keyed by their rounded size and handed out
 * again. Sizes round up to 1/8 of their power of two, so near-equal requests
 * share a bin and at most 12.5% is wasted. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ALIGNMENT 64
#define BIN_COUNT 1024 /* open addressing on the rounded size */

typedef struct {
    size_t size; /* 0: empty slot */
    void **blocks;
    int count, capacity;
} bin;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bin bins[BIN_COUNT];
static size_t live_bytes, peak_bytes, cached_bytes, live_tensors;
static size_t limit_bytes = (size_t)-1;

static size_t round_size(size_t bytes) {
    if (bytes <= 4096) return (bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    size_t power = 4096;
    while (power * 2 <= bytes) power *= 2;
    size_t step = power / 8;
    return (bytes + step - 1) / step * step;
}

static bin *find_bin(size_t size, bool create) {
    size_t h = (size / ALIGNMENT * 2654435761u) % BIN_COUNT;
    for (int probe = 0; probe < BIN_COUNT; probe++, h = (h + 1) % BIN_COUNT) {
        if (bins[h].size == size) return &bins[h];
        if (bins[h].size == 0) {
            if (!create) return NULL;
            bins[h].size = size;
            return &bins[h];
        }
    }
    return NULL; /* every slot holds another size: do not cache this one */
}

void *kd_cache_alloc(size_t bytes, size_t *rounded) {
    size_t size = round_size(bytes ? bytes : 1);
    void *ptr = NULL;
    pthread_mutex_lock(&lock);
    if (live_bytes + size > limit_bytes) {
        pthread_mutex_unlock(&lock);
        return NULL;
    }
    bin *b = find_bin(size, false);
    if (b && b->count > 0) {
        ptr = b->blocks[--b->count];
        cached_bytes -= size;
    }
    if (ptr) {
        live_bytes += size;
        if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    }
    pthread_mutex_unlock(&lock);
    if (!ptr) {
        ptr = aligned_alloc(ALIGNMENT, size);
        if (!ptr) return NULL;
        pthread_mutex_lock(&lock);
        live_bytes += size;
        if (live_bytes > peak_bytes) peak_bytes = live_bytes;
        pthread_mutex_unlock(&lock);
    }
    *rounded = size;
    return ptr;
}

void kd_cache_free(void *ptr, size_t rounded) {
    if (!ptr) return;
    pthread_mutex_lock(&lock);
    live_bytes -= rounded;
    bin *b = find_bin(rounded, true);
    if (b && b->count == b->capacity) {
        int capacity = b->capacity ? b->capacity * 2 : 8;
        void **grown = realloc(b->blocks, sizeof(void *) * (size_t)capacity);
        if (grown) {
            b->blocks = grown;
            b->capacity = capacity;
        }
    }
    if (b && b->count < b->capacity) {
        b->blocks[b->count++] = ptr;
        cached_bytes += rounded;
        ptr = NULL;
    }
    pthread_mutex_unlock(&lock);
    free(ptr); /* only when it could not be cached */
}

void kd_count_tensor(int delta) {
    pthread_mutex_lock(&lock);
    live_tensors += (size_t)(ptrdiff_t)delta;
    pthread_mutex_unlock(&lock);
}

kd_memory_stats kd_memory(void) {
    pthread_mutex_lock(&lock);
    kd_memory_stats s = {live_bytes, peak_bytes, cached_bytes, live_tensors};
    pthread_mutex_unlock(&lock);
    return s;
}

void kd_memory_reset_peak(void) {
    pthread_mutex_lock(&lock);
    peak_bytes = live_bytes;
    pthread_mutex_unlock(&lock);
}

void kd_memory_set_limit(size_t bytes) {
    pthread_mutex_lock(&lock);
    limit_bytes = bytes ? bytes : (size_t)-1;
    pthread_mutex_unlock(&lock);
}

void kd_memory_empty_cache(void) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < BIN_COUNT; i++) {
        for (int j = 0; j < bins[i].count; j++) free(bins[i].blocks[j]);
        bins[i].count = 0;
    }
    cached_bytes = 0;
    pthread_mutex_unlock(&lock);
}
