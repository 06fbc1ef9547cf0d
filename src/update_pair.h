/* The float and double optimizer-step kernels of one SIMD target (update_kernel.h), for
 * update.h. No include guard on purpose. The including file defines UPD_TARGET,
 * UPD_NAME_F32 and UPD_NAME_F64; they are undefined at the end. Lane blocks are 64 bytes,
 * the widest vector of any target, so each target's loop body fills whole registers. */
#define UPD_LANES 16
#define UPD_NAME UPD_NAME_F32
#define UPD_T float
#define UPD_SQRT sqrtf
#include "update_kernel.h"
#undef UPD_LANES
#undef UPD_NAME
#undef UPD_T
#undef UPD_SQRT
#define UPD_LANES 8
#define UPD_NAME UPD_NAME_F64
#define UPD_T double
#define UPD_SQRT sqrt
#include "update_kernel.h"
#undef UPD_LANES
#undef UPD_NAME
#undef UPD_T
#undef UPD_SQRT
#undef UPD_NAME_F32
#undef UPD_NAME_F64
#undef UPD_TARGET
