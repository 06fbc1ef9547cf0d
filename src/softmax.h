/* The float32 softmax of a block of FASTBP_SOFTMAX_BLOCK_ROWS narrow rows (n <= 16), for
 * every SIMD target, chosen at run time like the GEMM micro-kernels (gemm.h).
 *
 * For each row the arithmetic of _activations.pxd's softmax_row in the same order: the
 * first maximum m, t_j = expf.h's exp(z_j - m), the sum s of the t_j in double in column
 * order, a_j = (float)(t_j / s). The block is worked on as columns (t[j][r]), copied in
 * and out, so that every inner loop runs over the block's eight rows with a constant
 * length and the compiler makes vector code of the exponentials, the double sums, the
 * divisions and the maxima (a select, not softmax_row's branch, which random logits
 * mispredict; the divisions had stayed scalar while they were stored straight to a's rows).
 *
 * The AVX2 copy is the same source with eight float lanes instead of SSE2's four, and with
 * no FMA: the target attribute leaves FMA out, so the compiler cannot contract the
 * exponential's multiply-adds, and every target's block equals softmax_row bit for bit
 * (tests/test_kernels.py). The copies in and out of the column layout are scalar moves,
 * most of what is left. AVX-512 CPUs take the AVX2 copy: their FMA comes with avx512f.
 */
#ifndef FASTBP_SOFTMAX_H
#define FASTBP_SOFTMAX_H

#include <stddef.h>

#include "expf.h"
#include "gemm.h"

#define FASTBP_SOFTMAX_BLOCK_ROWS 8
#define FASTBP_SOFTMAX_BLOCK_MAX_N 16

#define FASTBP_SOFTMAX_BLOCK_BODY                                                              \
    {                                                                                          \
        float t[FASTBP_SOFTMAX_BLOCK_MAX_N][FASTBP_SOFTMAX_BLOCK_ROWS];                        \
        float m[FASTBP_SOFTMAX_BLOCK_ROWS];                                                    \
        double s[FASTBP_SOFTMAX_BLOCK_ROWS];                                                   \
        ptrdiff_t j;                                                                           \
        int r;                                                                                 \
        for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                        \
            for (j = 0; j < n; j++)                                                            \
                t[j][r] = z[r * n + j];                                                        \
        for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                        \
            m[r] = t[0][r];                                                                    \
        for (j = 1; j < n; j++)                                                                \
            for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                    \
                m[r] = t[j][r] > m[r] ? t[j][r] : m[r];                                        \
        for (j = 0; j < n; j++)                                                                \
            for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                    \
                t[j][r] = fastbp_expf_nonpos(t[j][r] - m[r]);                                  \
        for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                        \
            s[r] = 0;                                                                          \
        for (j = 0; j < n; j++)                                                                \
            for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                    \
                s[r] += t[j][r];                                                               \
        for (j = 0; j < n; j++)                                                                \
            for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                    \
                t[j][r] = (float)(t[j][r] / s[r]);                                             \
        for (r = 0; r < FASTBP_SOFTMAX_BLOCK_ROWS; r++)                                        \
            for (j = 0; j < n; j++)                                                            \
                a[r * n + j] = t[j][r];                                                        \
    }

/* softmax_row of FASTBP_SOFTMAX_BLOCK_ROWS rows of z (n <= FASTBP_SOFTMAX_BLOCK_MAX_N
 * values each) into a */
static void fastbp_softmax_block_baseline(float *restrict a, const float *restrict z,
                                          ptrdiff_t n) FASTBP_SOFTMAX_BLOCK_BODY

#if FASTBP_X86_TARGETS
__attribute__((target("avx2"))) static void
fastbp_softmax_block_avx2(float *restrict a, const float *restrict z,
                          ptrdiff_t n) FASTBP_SOFTMAX_BLOCK_BODY
#endif

/* the active target's block (fastbp_active_target, set by fastbp_set_target) */
static void fastbp_softmax_block(float *restrict a, const float *restrict z, ptrdiff_t n)
{
#if FASTBP_X86_TARGETS
    if (fastbp_active_target->code != FASTBP_TARGET_BASELINE) {
        fastbp_softmax_block_avx2(a, z, n);
        return;
    }
#endif
    fastbp_softmax_block_baseline(a, z, n);
}

#undef FASTBP_SOFTMAX_BLOCK_BODY

#endif /* FASTBP_SOFTMAX_H */
