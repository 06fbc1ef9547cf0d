/* One register-tiled GEMM micro-kernel, instantiated by gemm.h once per (dtype, SIMD
 * target). No include guard on purpose. The including file defines:
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
 * The accumulators are a local array of vectors with constant bounds, which the compiler
 * unrolls completely and keeps in registers (checked in the assembly: no stack traffic
 * in the k loop). The k loop runs in a fixed order, so results do not depend on threads.
 */

MK_TARGET static void MK_NAME(ptrdiff_t kc, const MK_T *restrict A, ptrdiff_t a_si,
                              ptrdiff_t a_sk, const MK_T *restrict B, ptrdiff_t b_sk,
                              MK_T *restrict tile)
{
    MK_VEC acc[MK_MR][MK_NV];
    int i, v;
    ptrdiff_t k;
    for (i = 0; i < MK_MR; i++)
        for (v = 0; v < MK_NV; v++)
            acc[i][v] = (MK_VEC){0};
    for (k = 0; k < kc; k++) {
        MK_VEC b[MK_NV];
        for (v = 0; v < MK_NV; v++)
            memcpy(&b[v], B + v * MK_VW, sizeof(MK_VEC));
        for (i = 0; i < MK_MR; i++) {
            MK_T a = A[i * a_si];
            for (v = 0; v < MK_NV; v++)
                acc[i][v] += b[v] * a;
        }
        A += a_sk;
        B += b_sk;
    }
    for (i = 0; i < MK_MR; i++)
        for (v = 0; v < MK_NV; v++)
            memcpy(tile + i * (MK_NV * MK_VW) + v * MK_VW, &acc[i][v], sizeof(MK_VEC));
}
