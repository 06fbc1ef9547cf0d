/* Packing a column panel of B = W^T (the input gradient's dZ W^T) from rows of W:
 *
 *   dst[r * width + x] = src[x * s_x + r]   for x < x_valid, r < R
 *   dst[r * width + x] = 0                  for x_valid <= x < width
 *
 * Element by element this writes down a column of the panel, one store per element to a
 * new cache line. With SSE2 (every x86-64 CPU) blocks of 4 x 4 floats or 2 x 2 doubles are
 * read as rows, transposed in registers and stored as rows of the panel; the edges go
 * element by element. A copy: the panel holds the same values either way.
 */
#ifndef FASTBP_PACK_H
#define FASTBP_PACK_H

#include <stddef.h>

#if defined(_MSC_VER) && !defined(__clang__) && !defined(restrict)
#define restrict __restrict /* MSVC's C has the qualifier under this name (as gemm.h) */
#endif

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define FASTBP_PACK_SSE2 1
#else
#define FASTBP_PACK_SSE2 0
#endif

static void fastbp_pack_transposed_f32(float *restrict dst, ptrdiff_t width,
                                       const float *restrict src, ptrdiff_t s_x, ptrdiff_t R,
                                       ptrdiff_t x_valid)
{
    ptrdiff_t x, r, x4 = 0, r4 = 0;
#if FASTBP_PACK_SSE2
    x4 = x_valid - x_valid % 4;
    r4 = R - R % 4;
    for (x = 0; x < x4; x += 4) {
        for (r = 0; r < r4; r += 4) {
            __m128 a = _mm_loadu_ps(src + x * s_x + r);
            __m128 b = _mm_loadu_ps(src + (x + 1) * s_x + r);
            __m128 c = _mm_loadu_ps(src + (x + 2) * s_x + r);
            __m128 d = _mm_loadu_ps(src + (x + 3) * s_x + r);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            _mm_storeu_ps(dst + r * width + x, a);
            _mm_storeu_ps(dst + (r + 1) * width + x, b);
            _mm_storeu_ps(dst + (r + 2) * width + x, c);
            _mm_storeu_ps(dst + (r + 3) * width + x, d);
        }
    }
#endif
    for (x = 0; x < x_valid; x++)   /* what the blocks left: r >= r4, or x >= x4 */
        for (r = x < x4 ? r4 : 0; r < R; r++)
            dst[r * width + x] = src[x * s_x + r];
    for (r = 0; r < R; r++)
        for (x = x_valid; x < width; x++)
            dst[r * width + x] = 0;
}

static void fastbp_pack_transposed_f64(double *restrict dst, ptrdiff_t width,
                                       const double *restrict src, ptrdiff_t s_x,
                                       ptrdiff_t R, ptrdiff_t x_valid)
{
    ptrdiff_t x, r, x2 = 0, r2 = 0;
#if FASTBP_PACK_SSE2
    x2 = x_valid - x_valid % 2;
    r2 = R - R % 2;
    for (x = 0; x < x2; x += 2) {
        for (r = 0; r < r2; r += 2) {
            __m128d a = _mm_loadu_pd(src + x * s_x + r);
            __m128d b = _mm_loadu_pd(src + (x + 1) * s_x + r);
            _mm_storeu_pd(dst + r * width + x, _mm_unpacklo_pd(a, b));
            _mm_storeu_pd(dst + (r + 1) * width + x, _mm_unpackhi_pd(a, b));
        }
    }
#endif
    for (x = 0; x < x_valid; x++)
        for (r = x < x2 ? r2 : 0; r < R; r++)
            dst[r * width + x] = src[x * s_x + r];
    for (r = 0; r < R; r++)
        for (x = x_valid; x < width; x++)
            dst[r * width + x] = 0;
}

#endif /* FASTBP_PACK_H */
