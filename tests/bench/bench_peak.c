/* bench_peak.c - the processor's single-precision FMA peak, measured: chains
 * of independent fused multiply-adds in registers (no memory traffic), with
 * AVX-512 (16 floats) where the CPU has it and AVX2 (8 floats), on 1 and 2
 * threads. What a convolution could reach at best; make bench prints each
 * network's step as a fraction of it. One JSON line per figure. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CHAINS 12 /* independent accumulators: enough to hide the FMA latency on two ports */

__attribute__((target("avx512f"))) static float fma512(long iterations) {
    __m512 acc[CHAINS], m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iterations; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], m, a);
    __m512 sum = acc[0];
    for (int j = 1; j < CHAINS; j++) sum = _mm512_add_ps(sum, acc[j]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float fma256(long iterations) {
    __m256 acc[CHAINS], m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < iterations; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], m, a);
    float out[8], total = 0;
    __m256 sum = acc[0];
    for (int j = 1; j < CHAINS; j++) sum = _mm256_add_ps(sum, acc[j]);
    _mm256_storeu_ps(out, sum);
    for (int i = 0; i < 8; i++) total += out[i];
    return total;
}

/* GFLOP/s over `threads` threads: the best of 5 timings. */
static double measure(int width, int threads) {
    long iterations = 20000000L;
    double best = 0;
    volatile float sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double start = now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        sink += width == 16 ? fma512(iterations) : fma256(iterations);
        double seconds = now() - start;
        double gflops = 2.0 * width * CHAINS * (double)iterations * threads / seconds / 1e9;
        if (gflops > best) best = gflops;
    }
    return best;
}

int main(void) {
    __builtin_cpu_init();
    for (int threads = 1; threads <= 2; threads++) {
        if (__builtin_cpu_supports("avx512f"))
            printf("{\"bench\": \"fma_peak\", \"isa\": \"avx512\", \"threads\": %d, \"gflops\": %.1f}\n", threads,
                   measure(16, threads));
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            printf("{\"bench\": \"fma_peak\", \"isa\": \"avx2\", \"threads\": %d, \"gflops\": %.1f}\n", threads,
                   measure(8, threads));
        fflush(stdout);
    }
    return 0;
}
