/* rng.c - seeded random numbers: xoshiro128** (Blackman & Vigna), seeded by
 * splitmix64 so that nearby seeds give unrelated streams. Fills run serially:
 * the numbers must not depend on the thread count. */
#include <math.h>

#include "internal.h"

static kd_rng global_rng = {{0x9E3779B9u, 0x243F6A88u, 0xB7E15162u, 0x12345678u}};

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void kd_rng_seed(kd_rng *rng, uint64_t seed) {
    uint64_t a = splitmix64(&seed), b = splitmix64(&seed);
    rng->s[0] = (uint32_t)a;
    rng->s[1] = (uint32_t)(a >> 32);
    rng->s[2] = (uint32_t)b;
    rng->s[3] = (uint32_t)(b >> 32);
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3])) rng->s[0] = 1;
}

static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

uint32_t kd_rng_u32(kd_rng *rng) {
    if (!rng) rng = &global_rng;
    uint32_t *s = rng->s;
    uint32_t result = rotl(s[1] * 5, 7) * 9;
    uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

float kd_rng_uniform(kd_rng *rng) { return (float)(kd_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); }

float kd_rng_normal(kd_rng *rng) {
    /* Box-Muller, one value per call: simpler state than caching the pair. */
    float u1 = kd_rng_uniform(rng), u2 = kd_rng_uniform(rng);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

kd_rng *kd_rng_global(void) { return &global_rng; }
void kd_manual_seed(uint64_t seed) { kd_rng_seed(&global_rng, seed); }

kd_status kd_fill_uniform(kd_tensor *t, float low, float high, kd_rng *rng) {
    kd_status s = kd_check_f32("fill_uniform", "tensor", t);
    if (s) return s;
    if (!(high >= low))
        return kd_fail(KD_ERR_ARG, "fill_uniform: high %g is below low %g", high, low);
    float *x = kd_f32(t);
    for (size_t i = 0, n = kd_numel(t); i < n; i++)
        x[i] = low + (high - low) * kd_rng_uniform(rng);
    kd_modified(t);
    return KD_OK;
}

kd_status kd_fill_normal(kd_tensor *t, float mean, float std, kd_rng *rng) {
    kd_status s = kd_check_f32("fill_normal", "tensor", t);
    if (s) return s;
    if (!(std >= 0)) return kd_fail(KD_ERR_ARG, "fill_normal: std %g is negative", std);
    float *x = kd_f32(t);
    for (size_t i = 0, n = kd_numel(t); i < n; i++) x[i] = mean + std * kd_rng_normal(rng);
    kd_modified(t);
    return KD_OK;
}

kd_status kd_fill_kaiming_normal(kd_tensor *t, kd_rng *rng) {
    if (t->ndim < 2)
        return kd_fail(KD_ERR_SHAPE, "fill_kaiming_normal: weight %s needs at least 2 dims",
                       kd_shape_str(t));
    size_t fan_in = kd_numel(t) / (size_t)t->shape[0];
    if (fan_in == 0) return KD_OK;
    return kd_fill_normal(t, 0.0f, sqrtf(2.0f / (float)fan_in), rng);
}
