/* The micro-kernels of one SIMD target (gemm_microkernel.h), for gemm.h: float and double,
 * each full (GT_NV vectors per tile row) and narrow (half as many). No include guard on
 * purpose. The including file defines:
 *
 *   GT_TARGET    __attribute__((target(...))), or nothing for the baseline
 *   GT_PREFIX    name prefix: the kernels are GT_PREFIX##_f32, _f64, _narrow_f32 and
 *                _narrow_f64, and the same names + _epi for the register epilogues
 *   GT_MR        rows of the register tile     GT_NV  vectors per row of the full tile
 *   GT_VEC_F32, GT_VEC_F64    the vector types (the element type itself in plain C)
 *   GT_IVEC_F32, GT_IVEC_F64  the integer vectors of the same shapes, defined only with
 *                             vector extensions: the epilogue kernels exist only with them
 *
 * Lanes per vector follow from the types. Everything is undefined at the end.
 */

#define GT_CAT_(a, b) a##b
#define GT_CAT(a, b) GT_CAT_(a, b)

#define MK_TARGET GT_TARGET
#define MK_MR GT_MR

#define MK_T float
#define MK_VEC GT_VEC_F32
#define MK_VW ((int)(sizeof(GT_VEC_F32) / sizeof(float)))
#ifdef GT_IVEC_F32
#define MK_IVEC GT_IVEC_F32
#endif
#define MK_NV GT_NV
#define MK_NAME GT_CAT(GT_PREFIX, _f32)
#define MK_EPI_NAME GT_CAT(GT_PREFIX, _f32_epi)
#include "gemm_microkernel.h"
#undef MK_NV
#undef MK_NAME
#undef MK_EPI_NAME
#define MK_NV (GT_NV / 2)
#define MK_NAME GT_CAT(GT_PREFIX, _narrow_f32)
#define MK_EPI_NAME GT_CAT(GT_PREFIX, _narrow_f32_epi)
#include "gemm_microkernel.h"
#undef MK_NV
#undef MK_NAME
#undef MK_EPI_NAME
#undef MK_T
#undef MK_VEC
#undef MK_VW
#undef MK_IVEC

#define MK_T double
#define MK_VEC GT_VEC_F64
#define MK_VW ((int)(sizeof(GT_VEC_F64) / sizeof(double)))
#ifdef GT_IVEC_F64
#define MK_IVEC GT_IVEC_F64
#endif
#define MK_NV GT_NV
#define MK_NAME GT_CAT(GT_PREFIX, _f64)
#define MK_EPI_NAME GT_CAT(GT_PREFIX, _f64_epi)
#include "gemm_microkernel.h"
#undef MK_NV
#undef MK_NAME
#undef MK_EPI_NAME
#define MK_NV (GT_NV / 2)
#define MK_NAME GT_CAT(GT_PREFIX, _narrow_f64)
#define MK_EPI_NAME GT_CAT(GT_PREFIX, _narrow_f64_epi)
#include "gemm_microkernel.h"
#undef MK_NV
#undef MK_NAME
#undef MK_EPI_NAME
#undef MK_T
#undef MK_VEC
#undef MK_VW
#undef MK_IVEC

#undef MK_TARGET
#undef MK_MR
#undef GT_CAT
#undef GT_CAT_

#undef GT_TARGET
#undef GT_PREFIX
#undef GT_MR
#undef GT_NV
#undef GT_VEC_F32
#undef GT_VEC_F64
#undef GT_IVEC_F32
#undef GT_IVEC_F64
