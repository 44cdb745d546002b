/* dnnl_cache.h - oneDNN primitives made once and reused (conv_dnnl.c). */
#ifndef KD_DNNL_CACHE_H
#define KD_DNNL_CACHE_H

#include <dnnl.h>
#include <stdbool.h>
#include <stddef.h>

/* A primitive descriptor and the primitive made from it. */
typedef struct {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t primitive;
} kd_dnnl_made;

/* The primitive kept under `key` (key_bytes of plain bytes, compared as
 * they are: zero the key's padding), or NULL. */
const kd_dnnl_made *kd_dnnl_cache_find(const void *key, size_t key_bytes);

/* Makes pd's primitive and keeps both under `key`; the cache owns pd from
 * then on (it is destroyed here when the primitive cannot be made: NULL). */
const kd_dnnl_made *kd_dnnl_cache_keep(const void *key, size_t key_bytes, dnnl_primitive_desc_t pd);

/* The reorder from the layout `from` to `to` (with accumulate, adding to
 * what `to` holds), made on the first call for these layouts; NULL where
 * oneDNN cannot make it. */
const kd_dnnl_made *kd_dnnl_reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *from,
                                    const dnnl_memory_desc_t *to, bool accumulate);

/* Frees every primitive once more than KD_DNNL_CACHE_BOUND are kept (new
 * geometries, say evaluation at many image sizes). Only where no primitive
 * the cache returned is still in use: at the start of an entry point. */
#define KD_DNNL_CACHE_BOUND 2048
void kd_dnnl_cache_trim(void);

/* How many primitives are kept, and how many were made (for tests). */
size_t kd_dnnl_cache_count(void);
size_t kd_dnnl_cache_made(void);

#endif
