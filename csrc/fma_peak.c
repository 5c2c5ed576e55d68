/* The FMA peak of one core: independent chains of vector fused multiply-adds, long enough to
 * hide the FMA latency on both FMA ports. The widest instruction set the CPU has is chosen at run
 * time (AVX-512, then AVX2+FMA, then plain scalar code), so the same build runs anywhere.
 *
 * Each function runs `iters` rounds and returns the floating-point operations it did (2 per lane
 * per FMA); `*sink` receives a value that depends on every chain, so nothing is optimised away. */
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define CHAINS 16

/* Sixteen named accumulators, so that they live in registers (an array of them was kept in
 * memory by GCC -O2, and the loop measured store-to-load latency instead of the FMA units).
 * `a * m + c` is contracted into one FMA (build.rs passes -ffp-contract=fast). */
#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define DECL(j) vec_t a##j = zero + (elem_t)(j);
#define STEP(j) a##j = a##j * m + c;
#define SUM(j) s = s + a##j;

#define KERNEL(name, TGT, T, BYTES)                                                   \
    __attribute__((target(TGT))) static double name(uint64_t iters, double *sink) {   \
        typedef T elem_t;                                                             \
        typedef elem_t vec_t __attribute__((vector_size(BYTES)));                     \
        enum { LANES = BYTES / sizeof(elem_t) };                                      \
        const vec_t zero = {0};                                                       \
        const vec_t m = zero + (elem_t)0.999999, c = zero + (elem_t)1e-6;             \
        EACH(DECL)                                                                    \
        for (uint64_t i = 0; i < iters; i++) {                                        \
            EACH(STEP)                                                                \
        }                                                                             \
        vec_t s = zero;                                                               \
        EACH(SUM)                                                                     \
        double r = 0;                                                                 \
        for (int l = 0; l < LANES; l++) r += (double)s[l];                            \
        *sink = r;                                                                    \
        return 2.0 * LANES * CHAINS * (double)iters;                                  \
    }

KERNEL(f32_avx512, "avx512f", float, 64)
KERNEL(f64_avx512, "avx512f", double, 64)
KERNEL(f32_avx2, "avx2,fma", float, 32)
KERNEL(f64_avx2, "avx2,fma", double, 32)
#endif

#define SCALAR_CHAINS 8
#define SCALAR(name, T)                                                        \
    static double name(uint64_t iters, double *sink) {                        \
        T acc[SCALAR_CHAINS];                                                 \
        for (int j = 0; j < SCALAR_CHAINS; j++) acc[j] = (T)j;                \
        for (uint64_t i = 0; i < iters; i++)                                  \
            for (int j = 0; j < SCALAR_CHAINS; j++)                           \
                acc[j] = acc[j] * (T)0.999999 + (T)1e-6;                      \
        T s = 0;                                                              \
        for (int j = 0; j < SCALAR_CHAINS; j++) s += acc[j];                  \
        *sink = (double)s;                                                    \
        return 2.0 * SCALAR_CHAINS * (double)iters;                           \
    }
SCALAR(f32_scalar, float)
SCALAR(f64_scalar, double)

/* Which kernel runs: 512, 256 (vector bits) or 0 (scalar). */
int affine_fma_width(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 256;
#endif
    return 0;
}

/* `double_precision` = 0 for f32, 1 for f64. */
double affine_fma_run(int double_precision, uint64_t iters, double *sink) {
#if defined(__x86_64__) || defined(__i386__)
    int width = affine_fma_width();
    if (width == 512) return double_precision ? f64_avx512(iters, sink) : f32_avx512(iters, sink);
    if (width == 256) return double_precision ? f64_avx2(iters, sink) : f32_avx2(iters, sink);
#endif
    return double_precision ? f64_scalar(iters, sink) : f32_scalar(iters, sink);
}
