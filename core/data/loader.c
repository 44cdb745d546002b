/* loader.c - batches from files, made ahead by worker threads.
 *
 * Batch number k of epoch e holds the samples at positions [kB, (k+1)B) of
 * that epoch's order (a shuffle seeded by (seed, e)); the sample at position
 * p is augmented with a generator seeded by (seed, e, p). Any worker may make
 * any batch, and the caller receives them in order: the batches are the same
 * for any number of workers. Workers stay at most `prefetch` batches ahead. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "internal.h"

enum { SLOT_EMPTY, SLOT_READY };

typedef struct {
    long seq; /* which batch the slot holds */
    int state;
    kd_batch batch;
    kd_status status;
    char message[512];
} slot;

struct kd_loader {
    kd_loader_config config;
    char **images, **labels, **weights;
    uint8_t label_map[256];
    bool has_map;
    int length; /* batches per epoch */
    /* consumer cursor */
    int epoch, batch_in_epoch;
    /* workers */
    pthread_t *threads;
    int thread_count;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    long next_to_make, next_to_take;
    slot *slots;
    bool stop;
    /* decoded samples kept (config.cache_bytes), filled as they are first
     * loaded until the budget is spent; never changed once set */
    kd_sample **decoded;
    size_t decoded_bytes;
    pthread_mutex_t decoded_lock;
};

/* Per worker: the order of the epoch last used. */
typedef struct {
    int epoch;
    int *order;
} order_cache;

static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static bool epoch_order(const kd_loader *l, order_cache *cache, int epoch) {
    if (cache->order && cache->epoch == epoch) return true;
    if (!cache->order && !(cache->order = malloc(sizeof(int) * (size_t)l->config.count))) return false;
    int n = l->config.count;
    for (int i = 0; i < n; i++) cache->order[i] = i;
    if (l->config.shuffle) {
        kd_rng rng;
        kd_rng_seed(&rng, mix(mix(l->config.seed, 0x5EED), (uint64_t)epoch));
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(kd_rng_u32(&rng) % (uint32_t)(i + 1)), t = cache->order[i];
            cache->order[i] = cache->order[j], cache->order[j] = t;
        }
    }
    cache->epoch = epoch;
    return true;
}

/* ---- one sample -------------------------------------------------------------- */

static size_t sample_bytes(const kd_sample *s) {
    size_t n = (size_t)s->h * s->w;
    return 3 * n + n + (s->label ? n : 0) + (s->weight ? n * sizeof(float) : 0);
}

/* A copy of `from` into `to` (zeroed first, freed by the caller). */
static bool sample_copy(const kd_sample *from, kd_sample *to) {
    size_t n = (size_t)from->h * from->w;
    memset(to, 0, sizeof *to);
    to->h = from->h, to->w = from->w;
    to->rgb = malloc(3 * n), to->valid = malloc(n);
    to->label = from->label ? malloc(n) : NULL;
    to->weight = from->weight ? malloc(n * sizeof(float)) : NULL;
    if (!to->rgb || !to->valid || (from->label && !to->label) || (from->weight && !to->weight)) return false;
    memcpy(to->rgb, from->rgb, 3 * n), memcpy(to->valid, from->valid, n);
    if (from->label) memcpy(to->label, from->label, n);
    if (from->weight) memcpy(to->weight, from->weight, n * sizeof(float));
    return true;
}

/* The decoded sample `index` kept by the loader, or NULL. */
static const kd_sample *decoded_sample(kd_loader *l, int index) {
    if (!l->decoded) return NULL;
    pthread_mutex_lock(&l->decoded_lock);
    const kd_sample *kept = l->decoded[index];
    pthread_mutex_unlock(&l->decoded_lock);
    return kept;
}

/* Keeps a copy of a freshly decoded sample while the budget lasts. */
static void keep_decoded(kd_loader *l, int index, const kd_sample *s) {
    if (!l->decoded) return;
    size_t bytes = sample_bytes(s);
    pthread_mutex_lock(&l->decoded_lock);
    bool wanted = !l->decoded[index] && l->decoded_bytes + bytes <= l->config.cache_bytes;
    if (wanted) l->decoded_bytes += bytes; /* reserved: another worker may be here too */
    pthread_mutex_unlock(&l->decoded_lock);
    if (!wanted) return;
    kd_sample *copy = malloc(sizeof *copy);
    bool ok = copy && sample_copy(s, copy);
    pthread_mutex_lock(&l->decoded_lock);
    if (ok && !l->decoded[index]) {
        l->decoded[index] = copy;
        copy = NULL;
    } else {
        l->decoded_bytes -= bytes;
    }
    pthread_mutex_unlock(&l->decoded_lock);
    if (copy) kd_sample_free(copy), free(copy);
}

static kd_status decode_sample(const kd_loader *l, int index, kd_sample *s);

/* Sample `index` as its files hold it (decoded once where the loader keeps
 * decoded samples). The sample is zeroed first: whatever fails after, the
 * caller frees it. */
static kd_status load_sample(kd_loader *l, int index, kd_sample *s) {
    const kd_sample *kept = decoded_sample(l, index);
    if (kept) {
        if (!sample_copy(kept, s)) return kd_sample_free(s), kd_fail(KD_ERR_MEMORY, "loader: cannot copy a sample");
        return KD_OK;
    }
    kd_status st = decode_sample(l, index, s);
    if (!st) keep_decoded(l, index, s);
    return st;
}

static kd_status decode_sample(const kd_loader *l, int index, kd_sample *s) {
    memset(s, 0, sizeof *s);
    const char *path = l->images[index];
    kd_tensor *img = NULL, *lab = NULL, *wt = NULL;
    kd_status st = kd_image_read(path, true, &img); /* PNG or JPEG; labels below are PNG only */
    if (st) return st;
    int channels = img->shape[0], h = img->shape[1], w = img->shape[2];
    size_t n = (size_t)h * w;
    s->h = h, s->w = w;
    s->rgb = malloc(3 * n);
    s->valid = malloc(n);
    if (!s->rgb || !s->valid) {
        kd_tensor_release(img);
        kd_sample_free(s);
        return kd_fail(KD_ERR_MEMORY, "loader: cannot allocate a %dx%d sample", h, w);
    }
    memset(s->valid, 1, n);
    for (int c = 0; c < 3; c++) /* gray repeats its channel; alpha is dropped */
        memcpy(s->rgb + c * n, kd_u8(img) + (channels >= 3 ? (size_t)c : 0) * n, n);
    kd_tensor_release(img);
    if (l->labels && l->labels[index]) {
        if ((st = kd_png_read(l->labels[index], false, &lab))) return kd_sample_free(s), st;
        if (lab->shape[0] != 1 || lab->shape[1] != h || lab->shape[2] != w) {
            st = kd_fail(KD_ERR_FORMAT, "loader: label %s is %s, expected one channel of %dx%d like image %s",
                         l->labels[index], kd_shape_str(lab), h, w, path);
            kd_tensor_release(lab);
            return kd_sample_free(s), st;
        }
        s->label = malloc(n);
        if (!s->label) {
            kd_tensor_release(lab);
            return kd_sample_free(s), kd_fail(KD_ERR_MEMORY, "loader: cannot allocate a label map");
        }
        const uint8_t *src = kd_u8(lab);
        for (size_t i = 0; i < n; i++) s->label[i] = l->has_map ? l->label_map[src[i]] : src[i];
        kd_tensor_release(lab);
    }
    if (l->weights && l->weights[index]) {
        if ((st = kd_png_read(l->weights[index], false, &wt))) return kd_sample_free(s), st;
        if (wt->shape[0] != 1 || wt->shape[1] != h || wt->shape[2] != w) {
            st = kd_fail(KD_ERR_FORMAT, "loader: weight map %s is %s, expected 1x%dx%d", l->weights[index],
                         kd_shape_str(wt), h, w);
            kd_tensor_release(wt);
            return kd_sample_free(s), st;
        }
        s->weight = malloc(sizeof(float) * n);
        if (!s->weight) {
            kd_tensor_release(wt);
            return kd_sample_free(s), kd_fail(KD_ERR_MEMORY, "loader: cannot allocate a weight map");
        }
        for (size_t i = 0; i < n; i++) s->weight[i] = kd_u8(wt)[i] / 255.0f;
        kd_tensor_release(wt);
    }
    return KD_OK;
}

static kd_status alloc_batch(int b, int h, int w, kd_batch *batch) {
    int img[4] = {b, 3, h, w}, map[3] = {b, h, w}, ids[1] = {b};
    memset(batch, 0, sizeof *batch);
    kd_status s;
    if ((s = kd_tensor_new(KD_F32, 4, img, &batch->images)) || (s = kd_tensor_new(KD_I32, 3, map, &batch->labels)) ||
        (s = kd_tensor_new(KD_F32, 3, map, &batch->weights)) || (s = kd_tensor_new(KD_U8, 3, map, &batch->valid)) ||
        (s = kd_tensor_new(KD_I32, 1, ids, &batch->ids)))
        kd_batch_release(batch);
    return s;
}

static void store_sample(const kd_loader *l, const kd_sample *s, kd_batch *batch, int slot_index) {
    size_t n = (size_t)s->h * s->w;
    const kd_augment_params *p = &l->config.augment;
    float *img = kd_f32(batch->images) + (size_t)slot_index * 3 * n;
    for (int c = 0; c < 3; c++) {
        float scale = 1.0f / (255.0f * p->std[c]), shift = -p->mean[c] / p->std[c];
        for (size_t i = 0; i < n; i++) img[c * n + i] = s->rgb[c * n + i] * scale + shift;
    }
    int32_t *lab = kd_i32(batch->labels) + (size_t)slot_index * n;
    float *wt = kd_f32(batch->weights) + (size_t)slot_index * n;
    uint8_t *valid = kd_u8(batch->valid) + (size_t)slot_index * n;
    for (size_t i = 0; i < n; i++) {
        lab[i] = s->label ? s->label[i] : (s->valid[i] ? 255 : p->pad_label);
        valid[i] = s->valid[i];
        wt[i] = s->valid[i] ? (s->weight ? s->weight[i] : 1.0f) : 0.0f;
    }
}

/* Loads, augments and stores the samples at positions [first, first+count)
 * of epoch `epoch` into a new batch. */
static kd_status make_batch(kd_loader *l, order_cache *cache, int epoch, int first, int count, kd_batch *batch) {
    if (!epoch_order(l, cache, epoch)) return kd_fail(KD_ERR_MEMORY, "loader: cannot allocate the epoch order");
    memset(batch, 0, sizeof *batch);
    for (int i = 0; i < count; i++) {
        int index = cache->order[first + i];
        kd_sample s;
        kd_status st = load_sample(l, index, &s);
        kd_rng rng;
        kd_rng_seed(&rng, mix(mix(l->config.seed, (uint64_t)epoch), (uint64_t)(first + i)));
        if (!st) st = kd_augment_sample(&s, &l->config.augment, &rng);
        if (!st && i == 0) st = alloc_batch(count, s.h, s.w, batch);
        if (!st && (s.h != batch->images->shape[2] || s.w != batch->images->shape[3]))
            st = kd_fail(KD_ERR_SHAPE, "loader: %s gives a %dx%d sample, the batch is %dx%d; set a crop size "
                         "to batch images of different sizes", l->images[index], s.h, s.w,
                         batch->images->shape[2], batch->images->shape[3]);
        if (!st) {
            store_sample(l, &s, batch, i);
            kd_i32(batch->ids)[i] = index;
        }
        kd_sample_free(&s);
        if (st) {
            kd_batch_release(batch);
            return st;
        }
    }
    batch->epoch = epoch;
    return KD_OK;
}

static void batch_range(const kd_loader *l, long seq, int *epoch, int *first, int *count) {
    *epoch = (int)(seq / l->length);
    int k = (int)(seq % l->length), b = l->config.batch_size;
    *first = k * b;
    *count = *first + b <= l->config.count ? b : l->config.count - *first;
    int shards = l->config.shard_count;
    if (shards > 1) { /* shard r of the batch: positions [count r / S, count (r + 1) / S) */
        int r = l->config.shard_index, from = *count * r / shards, to = *count * (r + 1) / shards;
        *first += from;
        *count = to - from;
    }
}

/* ---- workers ------------------------------------------------------------------ */

static void *worker(void *arg) {
    kd_loader *l = arg;
    order_cache cache = {-1, NULL};
    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (!l->stop && l->next_to_make - l->next_to_take >= l->config.prefetch)
            pthread_cond_wait(&l->changed, &l->lock);
        if (l->stop) break;
        long seq = l->next_to_make++;
        pthread_mutex_unlock(&l->lock);
        int epoch, first, count;
        batch_range(l, seq, &epoch, &first, &count);
        kd_batch batch;
        kd_status st = make_batch(l, &cache, epoch, first, count, &batch);
        pthread_mutex_lock(&l->lock);
        slot *s = &l->slots[seq % l->config.prefetch];
        s->seq = seq;
        s->batch = batch;
        s->status = st;
        if (st) snprintf(s->message, sizeof s->message, "%s", kd_error_message());
        s->state = SLOT_READY;
        pthread_cond_broadcast(&l->changed);
    }
    pthread_mutex_unlock(&l->lock);
    free(cache.order);
    return NULL;
}

/* ---- public ------------------------------------------------------------------- */

static char **copy_paths(const char *const *paths, int count, bool allow_null) {
    if (!paths) return NULL;
    char **out = calloc((size_t)count, sizeof(char *));
    if (!out) return NULL;
    for (int i = 0; i < count; i++) {
        if (!paths[i] && allow_null) continue;
        if (!paths[i] || !(out[i] = strdup(paths[i]))) {
            for (int j = 0; j < i; j++) free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void free_paths(char **paths, int count) {
    if (!paths) return;
    for (int i = 0; i < count; i++) free(paths[i]);
    free(paths);
}

void kd_batch_release(kd_batch *b) {
    kd_tensor_release(b->images), kd_tensor_release(b->labels), kd_tensor_release(b->weights);
    kd_tensor_release(b->valid), kd_tensor_release(b->ids);
    memset(b, 0, sizeof *b);
}

void kd_loader_free(kd_loader *l) {
    if (!l) return;
    if (l->threads) {
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        pthread_cond_broadcast(&l->changed);
        pthread_mutex_unlock(&l->lock);
        for (int i = 0; i < l->thread_count; i++) pthread_join(l->threads[i], NULL);
        free(l->threads);
    }
    if (l->slots)
        for (int i = 0; i < l->config.prefetch; i++)
            if (l->slots[i].state == SLOT_READY) kd_batch_release(&l->slots[i].batch);
    free(l->slots);
    free_paths(l->images, l->config.count);
    free_paths(l->labels, l->config.count);
    free_paths(l->weights, l->config.count);
    if (l->decoded) {
        for (int i = 0; i < l->config.count; i++)
            if (l->decoded[i]) kd_sample_free(l->decoded[i]), free(l->decoded[i]);
        free(l->decoded);
        pthread_mutex_destroy(&l->decoded_lock);
    }
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->changed);
    free(l);
}

kd_status kd_loader_new(const kd_loader_config *c, kd_loader **out) {
    if (c->count < 1) return kd_fail(KD_ERR_ARG, "loader: the dataset is empty");
    if (!c->images) return kd_fail(KD_ERR_ARG, "loader: no image paths");
    if (c->batch_size < 1) return kd_fail(KD_ERR_ARG, "loader: batch size %d must be >= 1", c->batch_size);
    if (c->workers < 0 || c->workers > 64) return kd_fail(KD_ERR_ARG, "loader: %d workers, must be 0 to 64", c->workers);
    if (c->shard_count < 0 || c->shard_count > c->batch_size || c->shard_index < 0 ||
        (c->shard_count > 1 && c->shard_index >= c->shard_count))
        return kd_fail(KD_ERR_ARG, "loader: shard %d of %d does not split batches of %d", c->shard_index + 1,
                       c->shard_count, c->batch_size);
    if (c->drop_last && c->count < c->batch_size)
        return kd_fail(KD_ERR_ARG, "loader: %d samples make no full batch of %d (drop_last)", c->count, c->batch_size);
    kd_status s = kd_check_augment_params(&c->augment);
    if (s) return s;
    kd_loader *l = calloc(1, sizeof *l);
    if (!l) return kd_fail(KD_ERR_MEMORY, "loader: cannot allocate");
    l->config = *c;
    if (l->config.prefetch < 1) l->config.prefetch = 2;
    l->length = c->drop_last ? c->count / c->batch_size : (c->count + c->batch_size - 1) / c->batch_size;
    if (c->start_batch < 0) {
        free(l);
        return kd_fail(KD_ERR_ARG, "loader: start batch %ld is negative", c->start_batch);
    }
    l->epoch = (int)(c->start_batch / l->length);
    l->batch_in_epoch = (int)(c->start_batch % l->length);
    l->next_to_make = l->next_to_take = c->start_batch;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->changed, NULL);
    l->images = copy_paths(c->images, c->count, false);
    l->labels = copy_paths(c->labels, c->count, true);
    l->weights = copy_paths(c->weights, c->count, true);
    l->slots = calloc((size_t)l->config.prefetch, sizeof(slot));
    if (!l->images || (c->labels && !l->labels) || (c->weights && !l->weights) || !l->slots) {
        kd_loader_free(l);
        return kd_fail(KD_ERR_MEMORY, "loader: cannot copy %d paths", c->count);
    }
    if (c->label_map) {
        memcpy(l->label_map, c->label_map, 256);
        l->has_map = true;
    }
    if (c->cache_bytes > 0) {
        if (!(l->decoded = calloc((size_t)c->count, sizeof *l->decoded))) {
            kd_loader_free(l);
            return kd_fail(KD_ERR_MEMORY, "loader: cannot allocate the table of %d decoded samples", c->count);
        }
        pthread_mutex_init(&l->decoded_lock, NULL);
    }
    /* each worker's own copy of the config points at the loader's paths */
    l->config.images = (const char *const *)l->images;
    l->config.labels = (const char *const *)l->labels;
    l->config.weights = (const char *const *)l->weights;
    if (c->workers > 0) {
        l->threads = calloc((size_t)c->workers, sizeof(pthread_t));
        if (!l->threads) {
            kd_loader_free(l);
            return kd_fail(KD_ERR_MEMORY, "loader: cannot allocate workers");
        }
        for (int i = 0; i < c->workers; i++) {
            if (pthread_create(&l->threads[i], NULL, worker, l) != 0) {
                kd_loader_free(l);
                return kd_fail(KD_ERR_MEMORY, "loader: cannot start worker thread %d", i + 1);
            }
            l->thread_count++;
        }
    }
    *out = l;
    return KD_OK;
}

int kd_loader_length(const kd_loader *l) { return l->length; }

kd_status kd_loader_next(kd_loader *l, kd_batch *batch, bool *done) {
    *done = false;
    if (!l->config.infinite && l->batch_in_epoch == l->length) {
        l->batch_in_epoch = 0;
        l->epoch++;
        *done = true;
        return KD_OK;
    }
    long seq = (long)l->epoch * l->length + l->batch_in_epoch;
    l->batch_in_epoch++;
    if (l->config.infinite && l->batch_in_epoch == l->length) l->batch_in_epoch = 0, l->epoch++;
    if (!l->threads) {
        order_cache cache = {-1, NULL}; /* loading in the caller's thread */
        int epoch, first, count;
        batch_range(l, seq, &epoch, &first, &count);
        kd_status s = make_batch(l, &cache, epoch, first, count, batch);
        free(cache.order);
        return s;
    }
    pthread_mutex_lock(&l->lock);
    slot *s = &l->slots[seq % l->config.prefetch];
    while (!(s->state == SLOT_READY && s->seq == seq)) pthread_cond_wait(&l->changed, &l->lock);
    kd_status status = s->status;
    char message[512];
    snprintf(message, sizeof message, "%s", s->message);
    *batch = s->batch;
    memset(&s->batch, 0, sizeof s->batch);
    s->state = SLOT_EMPTY;
    l->next_to_take = seq + 1;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    if (status) return kd_fail(status, "%s", message);
    return KD_OK;
}

kd_status kd_loader_sample(kd_loader *l, int index, int epoch, int position, kd_batch *batch) {
    if (index < 0 || index >= l->config.count)
        return kd_fail(KD_ERR_ARG, "loader: sample %d outside 0..%d", index, l->config.count - 1);
    kd_sample s;
    kd_status st = load_sample(l, index, &s);
    if (st) return st;
    kd_rng rng;
    kd_rng_seed(&rng, mix(mix(l->config.seed, (uint64_t)epoch), (uint64_t)position));
    if (!(st = kd_augment_sample(&s, &l->config.augment, &rng)) && !(st = alloc_batch(1, s.h, s.w, batch))) {
        store_sample(l, &s, batch, 0);
        kd_i32(batch->ids)[0] = index;
        batch->epoch = epoch;
    }
    kd_sample_free(&s);
    return st;
}
