/* Optimizer-step kernels for every SIMD target, chosen at run time like the GEMM
 * micro-kernels (gemm.h): the same source (update_kernel.h) compiled with a per-function
 * target attribute, never -march. fastbp_update_f32[code] / fastbp_update_f64[code] is
 * the kernel of target `code` (FASTBP_TARGET_*); a target this build lacks maps to the
 * baseline. update_pair.h instantiates both dtypes of one target.
 */
#ifndef FASTBP_UPDATE_H
#define FASTBP_UPDATE_H

#include <math.h>
#include <stddef.h>

#include "gemm.h"

typedef void (*fastbp_update_f32_fn)(int, int, float *, const float *, const float *, float *,
                                     float *,
                                     ptrdiff_t, float, float, float, float, float, float, int,
                                     double *);
typedef void (*fastbp_update_f64_fn)(int, int, double *, const double *, const double *,
                                     double *, double *,
                                     ptrdiff_t, double, double, double, double, double, double,
                                     int, double *);

#define UPD_TARGET
#define UPD_NAME_F32 fastbp_update_baseline_f32
#define UPD_NAME_F64 fastbp_update_baseline_f64
#include "update_pair.h"

#if FASTBP_X86_TARGETS
#define UPD_TARGET __attribute__((target("avx2,fma")))
#define UPD_NAME_F32 fastbp_update_avx2_f32
#define UPD_NAME_F64 fastbp_update_avx2_f64
#include "update_pair.h"

#define UPD_TARGET __attribute__((target("avx512f,avx2,fma")))
#define UPD_NAME_F32 fastbp_update_avx512_f32
#define UPD_NAME_F64 fastbp_update_avx512_f64
#include "update_pair.h"

static const fastbp_update_f32_fn fastbp_update_f32[3] = {
    fastbp_update_baseline_f32, fastbp_update_avx2_f32, fastbp_update_avx512_f32};
static const fastbp_update_f64_fn fastbp_update_f64[3] = {
    fastbp_update_baseline_f64, fastbp_update_avx2_f64, fastbp_update_avx512_f64};
#else
static const fastbp_update_f32_fn fastbp_update_f32[3] = {
    fastbp_update_baseline_f32, fastbp_update_baseline_f32, fastbp_update_baseline_f32};
static const fastbp_update_f64_fn fastbp_update_f64[3] = {
    fastbp_update_baseline_f64, fastbp_update_baseline_f64, fastbp_update_baseline_f64};
#endif

#endif /* FASTBP_UPDATE_H */
