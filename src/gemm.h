/* GEMM micro-kernels for every SIMD target, and the run-time choice between them.
 *
 * Each target's micro-kernels are the same source (gemm_microkernel.h, instantiated by
 * gemm_target.h) compiled with a per-function target attribute, never with -march: the
 * extension runs on any x86-64 CPU and calls AVX2 or AVX-512 code only after checking that
 * the CPU has it. The choice is made once (fastbp_set_target, called at import by
 * fastbp/_dispatch.py) and read by the parallel loops, which stay in baseline code: GCC and
 * clang do not reliably carry target attributes into OpenMP's outlined bodies, so only the
 * leaf micro-kernel is per target. No ifunc or target_clones (musl and macOS lack them).
 *
 * Register tiles (MR rows x NR columns; NR = vectors per row x lanes):
 *   baseline  (SSE2 on x86-64, 16 registers)  float 6 x 8,   double 6 x 4
 *   avx2+fma  (16 ymm registers)               float 6 x 16,  double 6 x 8
 *   avx512f   (32 zmm registers)               float 8 x 32,  double 8 x 16
 * 12 or 16 accumulators, two B vectors and a broadcast fit the register file.
 */
#ifndef FASTBP_GEMM_H
#define FASTBP_GEMM_H

#include <stddef.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict /* MSVC's C has the qualifier under this name */
#endif

enum { FASTBP_TARGET_BASELINE = 0, FASTBP_TARGET_AVX2 = 1, FASTBP_TARGET_AVX512 = 2 };

/* micro-kernel: (kc, A, a_si, a_sk, B, b_sk, tile), see gemm_microkernel.h */
typedef void (*fastbp_mk_f32)(ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, const float *,
                              ptrdiff_t, float *);
typedef void (*fastbp_mk_f64)(ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t, const double *,
                              ptrdiff_t, double *);

/* the largest tile of any target, for sizing scratch space */
enum { FASTBP_MAX_MR = 8, FASTBP_MAX_NR = 32 };

/* The epilogues a micro-kernel can apply from registers (the values of _gemm.pxd's EPI_*
 * and _activations.pxd's ACT_* that they stand for). */
enum {
    FASTBP_EPI_STORE = 0,
    FASTBP_EPI_FORWARD = 1,
    FASTBP_EPI_SGD = 2,
    FASTBP_EPI_DERIV = 4,
    FASTBP_EPI_FORWARD_ACT = 5
};

/* The register epilogue does the SGD step only where an empty asm can hold lr * acc in a
 * register, which keeps the compiler from fusing it into the subtraction (GCC fuses
 * across statements under -ffp-contract=fast, its default for GNU C). */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define FASTBP_REGISTER_SGD 1
#define FASTBP_NO_CONTRACT(v) __asm__("" : "+x"(v))
#else
#define FASTBP_REGISTER_SGD 0
#endif
enum { FASTBP_ACT_IDENTITY = 0, FASTBP_ACT_RELU = 1, FASTBP_ACT_LEAKY_RELU = 2 };

/* epilogue micro-kernel: (kc, A, a_si, a_sk, B, b_sk, kind, act, C, ldc, C2, V, lr) */
typedef void (*fastbp_mk_epi_f32)(ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                                  const float *, ptrdiff_t, int, int, float *, ptrdiff_t,
                                  float *, const float *, float);
typedef void (*fastbp_mk_epi_f64)(ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t,
                                  const double *, ptrdiff_t, int, int, double *, ptrdiff_t,
                                  double *, const double *, double);

/* Each target has a full-width tile and a narrow one (one vector per row, NR / 2) for
 * products with at most NR / 2 columns, such as a 10-class output layer: they would
 * otherwise spend most of a full tile's arithmetic on zero padding. */
typedef struct {
    int code;
    int mr_f32, nr_f32, mr_f64, nr_f64;
    fastbp_mk_f32 mk_f32, mk_narrow_f32;
    fastbp_mk_f64 mk_f64, mk_narrow_f64;
    /* NULL where the build has no vector extensions (the Cython epilogue runs instead) */
    fastbp_mk_epi_f32 mk_epi_f32, mk_narrow_epi_f32;
    fastbp_mk_epi_f64 mk_epi_f64, mk_narrow_epi_f64;
} fastbp_target;

#if defined(__GNUC__) || defined(__clang__)
#define FASTBP_VECTOR_EXTENSIONS 1
#else
#define FASTBP_VECTOR_EXTENSIONS 0
#endif

#if FASTBP_VECTOR_EXTENSIONS && (defined(__x86_64__) || defined(__i386__))
#define FASTBP_X86_TARGETS 1
#else
#define FASTBP_X86_TARGETS 0
#endif

/* ---- baseline: 16-byte vectors (SSE2 on x86-64, NEON on arm64), scalar elsewhere ---- */
#define GT_TARGET
#define GT_PREFIX fastbp_mk_baseline
#if FASTBP_VECTOR_EXTENSIONS
typedef float fastbp_f32x4 __attribute__((vector_size(16)));
typedef double fastbp_f64x2 __attribute__((vector_size(16)));
typedef int fastbp_i32x4 __attribute__((vector_size(16)));
typedef long long fastbp_i64x2 __attribute__((vector_size(16)));
#define GT_MR 6
#define GT_NV 2
#define GT_VEC_F32 fastbp_f32x4
#define GT_VEC_F64 fastbp_f64x2
#define GT_IVEC_F32 fastbp_i32x4
#define GT_IVEC_F64 fastbp_i64x2
#define FASTBP_BASELINE_NR_F32 8
#define FASTBP_BASELINE_NR_F64 4
#else /* plain C: the "vector" is one element */
#define GT_MR 4
#define GT_NV 4
#define GT_VEC_F32 float
#define GT_VEC_F64 double
#define FASTBP_BASELINE_NR_F32 4
#define FASTBP_BASELINE_NR_F64 4
#endif
#include "gemm_target.h"

static const fastbp_target fastbp_target_baseline = {
    FASTBP_TARGET_BASELINE,
#if FASTBP_VECTOR_EXTENSIONS
    6, FASTBP_BASELINE_NR_F32, 6, FASTBP_BASELINE_NR_F64,
#else
    4, FASTBP_BASELINE_NR_F32, 4, FASTBP_BASELINE_NR_F64,
#endif
    fastbp_mk_baseline_f32, fastbp_mk_baseline_narrow_f32,
    fastbp_mk_baseline_f64, fastbp_mk_baseline_narrow_f64,
#if FASTBP_VECTOR_EXTENSIONS
    fastbp_mk_baseline_f32_epi, fastbp_mk_baseline_narrow_f32_epi,
    fastbp_mk_baseline_f64_epi, fastbp_mk_baseline_narrow_f64_epi
#else
    NULL, NULL, NULL, NULL
#endif
};

/* ---- x86 targets ---- */
#if FASTBP_X86_TARGETS
typedef float fastbp_f32x8 __attribute__((vector_size(32)));
typedef double fastbp_f64x4 __attribute__((vector_size(32)));
typedef float fastbp_f32x16 __attribute__((vector_size(64)));
typedef double fastbp_f64x8 __attribute__((vector_size(64)));
typedef int fastbp_i32x8 __attribute__((vector_size(32)));
typedef long long fastbp_i64x4 __attribute__((vector_size(32)));
typedef int fastbp_i32x16 __attribute__((vector_size(64)));
typedef long long fastbp_i64x8 __attribute__((vector_size(64)));

#define GT_TARGET __attribute__((target("avx2,fma")))
#define GT_PREFIX fastbp_mk_avx2
#define GT_MR 6
#define GT_NV 2
#define GT_VEC_F32 fastbp_f32x8
#define GT_VEC_F64 fastbp_f64x4
#define GT_IVEC_F32 fastbp_i32x8
#define GT_IVEC_F64 fastbp_i64x4
#include "gemm_target.h"

#define GT_TARGET __attribute__((target("avx512f,avx2,fma")))
#define GT_PREFIX fastbp_mk_avx512
#define GT_MR 8
#define GT_NV 2
#define GT_VEC_F32 fastbp_f32x16
#define GT_VEC_F64 fastbp_f64x8
#define GT_IVEC_F32 fastbp_i32x16
#define GT_IVEC_F64 fastbp_i64x8
#include "gemm_target.h"

static const fastbp_target fastbp_target_avx2 = {
    FASTBP_TARGET_AVX2, 6, 16, 6, 8,
    fastbp_mk_avx2_f32, fastbp_mk_avx2_narrow_f32, fastbp_mk_avx2_f64, fastbp_mk_avx2_narrow_f64,
    fastbp_mk_avx2_f32_epi, fastbp_mk_avx2_narrow_f32_epi,
    fastbp_mk_avx2_f64_epi, fastbp_mk_avx2_narrow_f64_epi};
static const fastbp_target fastbp_target_avx512 = {
    FASTBP_TARGET_AVX512, 8, 32, 8, 16,
    fastbp_mk_avx512_f32, fastbp_mk_avx512_narrow_f32,
    fastbp_mk_avx512_f64, fastbp_mk_avx512_narrow_f64,
    fastbp_mk_avx512_f32_epi, fastbp_mk_avx512_narrow_f32_epi,
    fastbp_mk_avx512_f64_epi, fastbp_mk_avx512_narrow_f64_epi};
#endif

/* Whether this build has `code` and this CPU can run it. */
static int fastbp_target_supported(int code)
{
    if (code == FASTBP_TARGET_BASELINE)
        return 1;
#if FASTBP_X86_TARGETS
    __builtin_cpu_init();
    if (code == FASTBP_TARGET_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (code == FASTBP_TARGET_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* The target the kernels of this extension module use; baseline until set. */
static const fastbp_target *fastbp_active_target = &fastbp_target_baseline;

/* Select a target; returns 0, or -1 (nothing changed) when it cannot run here. */
static int fastbp_set_target(int code)
{
    if (!fastbp_target_supported(code))
        return -1;
#if FASTBP_X86_TARGETS
    if (code == FASTBP_TARGET_AVX2) {
        fastbp_active_target = &fastbp_target_avx2;
        return 0;
    }
    if (code == FASTBP_TARGET_AVX512) {
        fastbp_active_target = &fastbp_target_avx512;
        return 0;
    }
#endif
    fastbp_active_target = &fastbp_target_baseline;
    return 0;
}

#endif /* FASTBP_GEMM_H */
