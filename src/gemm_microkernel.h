/* One register-tiled GEMM micro-kernel, instantiated by gemm_target.h once per (dtype,
 * tile width, SIMD target). No include guard on purpose. The including file defines:
 *
 *   MK_NAME    function name                 MK_T   element type (float, double)
 *   MK_VEC     GCC vector type of MK_VW lanes  MK_VW  lanes per vector
 *   MK_MR      rows of the register tile       MK_NV  vectors per tile row (NR = MK_NV * MK_VW)
 *   MK_TARGET  __attribute__((target(...))) or nothing for the baseline
 *
 * tile (MR x NR, row-major, NR = MK_NV * MK_VW) = sum over k < kc of a(:, k) b(k, :), with
 *   a(i, k) = A[i * a_si + k * a_sk]   (MR scalars per k, broadcast)
 *   b(k, j) = B[k * b_sk + j]          (NR contiguous values per k, vector loads)
 * so row-major operands are read in place (a packed panel is a_si = 1, a_sk = MR, b_sk = NR).
 * MK_EPI_NAME (defined only where MK_IVEC, the integer vector of the same shape, is) runs
 * the same product and writes a full tile straight from the registers into the layer's
 * output with the epilogue applied (the FASTBP_EPI_* codes of gemm.h), instead of storing
 * it to `tile` for the Cython epilogue: for small layers the round trip through the stack
 * and the scalar row loops is a large share of a product (benchmarks/RESULTS.md).
 * The accumulators are a local array of vectors with constant bounds, which the compiler
 * unrolls completely and keeps in registers (checked in the assembly: no stack traffic
 * in the k loop). The k loop runs in a fixed order, so results do not depend on threads.
 */

/* acc[i][v] = the MK_MR x NR product, for both functions below */
#define MK_ACCUMULATE                                                                          \
    MK_VEC acc[MK_MR][MK_NV];                                                                  \
    int i, v;                                                                                  \
    ptrdiff_t k;                                                                               \
    for (i = 0; i < MK_MR; i++)                                                                \
        for (v = 0; v < MK_NV; v++)                                                            \
            acc[i][v] = (MK_VEC){0};                                                           \
    for (k = 0; k < kc; k++) {                                                                 \
        MK_VEC b[MK_NV];                                                                       \
        for (v = 0; v < MK_NV; v++)                                                            \
            memcpy(&b[v], B + v * MK_VW, sizeof(MK_VEC));                                      \
        for (i = 0; i < MK_MR; i++) {                                                          \
            MK_T a = A[i * a_si];                                                              \
            for (v = 0; v < MK_NV; v++)                                                        \
                acc[i][v] += b[v] * a;                                                         \
        }                                                                                      \
        A += a_sk;                                                                             \
        B += b_sk;                                                                             \
    }

MK_TARGET static void MK_NAME(ptrdiff_t kc, const MK_T *restrict A, ptrdiff_t a_si,
                              ptrdiff_t a_sk, const MK_T *restrict B, ptrdiff_t b_sk,
                              MK_T *restrict tile)
{
    MK_ACCUMULATE
    for (i = 0; i < MK_MR; i++)
        for (v = 0; v < MK_NV; v++)
            memcpy(tile + i * (MK_NV * MK_VW) + v * MK_VW, &acc[i][v], sizeof(MK_VEC));
}

#ifdef MK_IVEC
/* The full tile at C (row stride ldc), with
 *   kind FASTBP_EPI_STORE:    C = acc
 *   kind FASTBP_EPI_FORWARD:  C = acc + V (V: the bias, NR values);  C2 = f_act(C)
 *   kind FASTBP_EPI_FORWARD_ACT:  C = f_act(acc + V)  (a layer that keeps no Z, or a
 *                             softmax layer's logits with act identity)
 *   kind FASTBP_EPI_DERIV:    C = acc * f'_act(V)  (V: Z, row stride ldc)
 *   kind FASTBP_EPI_SGD:      C -= lr * acc; *C2 = 1 when a new value is not finite
 *                             (only where FASTBP_REGISTER_SGD)
 * for act identity, relu or leaky_relu: exactly the arithmetic of _gemm.pxd's
 * tile_epilogue (no multiply-add is formed: each value is one rounding, as there; the SGD
 * step keeps lr * acc from being fused into the subtraction, so that the fused update
 * equals the weight gradient followed by sgd_update bit for bit).
 * Masks are the lanes' comparison results (all ones or zero) used bitwise, so a NaN
 * goes where the Cython epilogue sends it: relu keeps it, the derivatives zero it. */
MK_TARGET static void MK_EPI_NAME(ptrdiff_t kc, const MK_T *restrict A, ptrdiff_t a_si,
                                  ptrdiff_t a_sk, const MK_T *restrict B, ptrdiff_t b_sk,
                                  int kind, int act, MK_T *restrict C, ptrdiff_t ldc,
                                  MK_T *restrict C2, const MK_T *restrict V, MK_T lr)
{
    const MK_VEC zero = {0};
    MK_IVEC bad = {0};
    const MK_VEC one = zero + (MK_T)1;
    const MK_VEC slope = zero + (MK_T)0.01;
    MK_ACCUMULATE
    for (i = 0; i < MK_MR; i++) {
        for (v = 0; v < MK_NV; v++) {
            MK_VEC x = acc[i][v], y, w;
            MK_IVEC m;
            if (kind == FASTBP_EPI_STORE) {
                memcpy(C + i * ldc + v * MK_VW, &x, sizeof(MK_VEC));
            } else if (kind == FASTBP_EPI_FORWARD || kind == FASTBP_EPI_FORWARD_ACT) {
                memcpy(&w, V + v * MK_VW, sizeof(MK_VEC));
                x = x + w;
                if (kind == FASTBP_EPI_FORWARD)
                    memcpy(C + i * ldc + v * MK_VW, &x, sizeof(MK_VEC));
                if (act == FASTBP_ACT_RELU) {
                    m = x <= zero; /* 0 if z <= 0 else z: NaN stays NaN */
                    y = (MK_VEC)((MK_IVEC)x & ~m);
                } else if (act == FASTBP_ACT_LEAKY_RELU) {
                    m = x > zero;
                    w = x * slope;
                    y = (MK_VEC)(((MK_IVEC)x & m) | ((MK_IVEC)w & ~m));
                } else {
                    y = x;
                }
                memcpy((kind == FASTBP_EPI_FORWARD ? C2 : C) + i * ldc + v * MK_VW, &y,
                       sizeof(MK_VEC));
#if FASTBP_REGISTER_SGD
            } else if (kind == FASTBP_EPI_SGD) {
                y = x * lr;
                FASTBP_NO_CONTRACT(y);
                memcpy(&w, C + i * ldc + v * MK_VW, sizeof(MK_VEC));
                w = w - y;
                memcpy(C + i * ldc + v * MK_VW, &w, sizeof(MK_VEC));
                bad |= (w - w) != zero; /* NaN unless finite */
#endif
            } else { /* FASTBP_EPI_DERIV */
                if (act != FASTBP_ACT_IDENTITY) {
                    memcpy(&w, V + i * ldc + v * MK_VW, sizeof(MK_VEC));
                    m = w > zero;
                    if (act == FASTBP_ACT_RELU)
                        x = (MK_VEC)((MK_IVEC)x & m);
                    else
                        x = x * (MK_VEC)(((MK_IVEC)one & m) | ((MK_IVEC)slope & ~m));
                }
                memcpy(C + i * ldc + v * MK_VW, &x, sizeof(MK_VEC));
            }
        }
    }
    if (kind == FASTBP_EPI_SGD && C2 != NULL) {
        for (i = 0; i < MK_VW; i++)
            if (bad[i])
                C2[0] = 1; /* several threads may store the same 1: harmless */
    }
}
#endif

#undef MK_ACCUMULATE
