/* One optimizer step over a chunk of parameters, instantiated by update.h once per (dtype,
 * SIMD target). No include guard on purpose. The including file defines:
 *
 *   UPD_NAME    function name        UPD_T   element type (float, double)
 *   UPD_TARGET  __attribute__((target(...))) or nothing for the baseline
 *
 * The rules are those of src/_optim.pxd (scikit-learn's), with g = grad + decay * param,
 * where grad is g[i], or g[i] + g2[i] when g2 is not NULL (two gradients of one batch,
 * summed here instead of in a pass of their own before the step: the same rounding of
 * the same sum):
 *   kind 1 (sgd), s1 == NULL:   p -= lr g
 *   kind 1, nesterov:           v = mu v - lr g;  p += mu v - lr g
 *   kind 1:                     v = mu v - lr g;  p += v
 *   kind 2 (adam):              m = b1 m + (1 - b1) g;  s = b2 s + (1 - b2) g^2;
 *                               p -= lr m / (sqrt(s) + eps)
 * out[0] = sum of p^2 before the step (0 unless want_sq), in double; out[1] = 1 when a new
 * parameter or state value is not finite, else 0.
 *
 * Why this is C and not a Cython loop: the two reductions (the sum of squares and the
 * non-finite marker) are sequential in a plain loop, and GCC does not vectorize a
 * floating-point reduction without reassociation (-ffast-math, which we never use). Here
 * each of UPD_LANES lanes keeps its own partial sums, so every statement of the loop body
 * is independent across lanes and the compiler vectorizes the whole body with the
 * target's widest vectors; the lanes are added in a fixed order at the end, so the result
 * does not depend on threads. The non-finite marker is a sum of (x - x), 0 for finite x
 * and NaN otherwise, so it stays NaN once any value is not finite.
 */

UPD_TARGET static void UPD_NAME(int kind, int nesterov, UPD_T *restrict p,
                                const UPD_T *restrict g, const UPD_T *restrict g2,
                                UPD_T *restrict s1,
                                UPD_T *restrict s2, ptrdiff_t n, UPD_T lr, UPD_T mu, UPD_T b1,
                                UPD_T b2, UPD_T eps, UPD_T decay, int want_sq, double *out)
{
    double sq[UPD_LANES];
    UPD_T chk[UPD_LANES];
    ptrdiff_t i0, i, n_full = n - n % UPD_LANES;
    int l;
    double sq_total = 0;
    UPD_T chk_total = 0;
    for (l = 0; l < UPD_LANES; l++) {
        sq[l] = 0;
        chk[l] = 0;
    }
    if (want_sq) {
        for (i0 = 0; i0 < n_full; i0 += UPD_LANES)
            for (l = 0; l < UPD_LANES; l++)
                sq[l] += (double)p[i0 + l] * (double)p[i0 + l];
        for (i = n_full; i < n; i++)
            sq[0] += (double)p[i] * (double)p[i];
    }
/* the body for element index I: reads and writes only element I */
#define UPD_SGD_PLAIN(I, L, GR)                                                                \
    {                                                                                          \
        UPD_T x = p[I] - lr * (GR(I) + decay * p[I]);                                          \
        p[I] = x;                                                                              \
        chk[L] += x - x;                                                                       \
    }
#define UPD_SGD_NESTEROV(I, L, GR)                                                             \
    {                                                                                          \
        UPD_T gi = GR(I) + decay * p[I];                                                       \
        UPD_T v = mu * s1[I] - lr * gi;                                                        \
        UPD_T x = p[I] + (mu * v - lr * gi);                                                   \
        s1[I] = v;                                                                             \
        p[I] = x;                                                                              \
        chk[L] += x - x;                                                                       \
    }
#define UPD_SGD_MOMENTUM(I, L, GR)                                                             \
    {                                                                                          \
        UPD_T gi = GR(I) + decay * p[I];                                                       \
        UPD_T v = mu * s1[I] - lr * gi;                                                        \
        UPD_T x = p[I] + v;                                                                    \
        s1[I] = v;                                                                             \
        p[I] = x;                                                                              \
        chk[L] += x - x;                                                                       \
    }
#define UPD_ADAM(I, L, GR)                                                                     \
    {                                                                                          \
        UPD_T gi = GR(I) + decay * p[I];                                                       \
        UPD_T m = b1 * s1[I] + (1 - b1) * gi;                                                  \
        UPD_T s = b2 * s2[I] + (1 - b2) * (gi * gi);                                           \
        UPD_T x = p[I] - lr * m / (UPD_SQRT(s) + eps);                                         \
        s1[I] = m;                                                                             \
        s2[I] = s;                                                                             \
        p[I] = x;                                                                              \
        chk[L] += (x - x) + (s - s);                                                           \
    }
#define UPD_LOOP(BODY, GR)                                                                     \
    for (i0 = 0; i0 < n_full; i0 += UPD_LANES)                                                 \
        for (l = 0; l < UPD_LANES; l++)                                                        \
            BODY(i0 + l, l, GR)                                                                \
    for (i = n_full; i < n; i++)                                                               \
        BODY(i, 0, GR)
#define UPD_KINDS(GR)                                                                          \
    if (kind == 1 && s1 == NULL) {                                                             \
        UPD_LOOP(UPD_SGD_PLAIN, GR)                                                            \
    } else if (kind == 1 && nesterov) {                                                        \
        UPD_LOOP(UPD_SGD_NESTEROV, GR)                                                         \
    } else if (kind == 1) {                                                                    \
        UPD_LOOP(UPD_SGD_MOMENTUM, GR)                                                         \
    } else {                                                                                   \
        UPD_LOOP(UPD_ADAM, GR)                                                                 \
    }
#define UPD_ONE(I) (g[I])
#define UPD_SUM(I) (g[I] + g2[I])
    if (g2 == NULL) {
        UPD_KINDS(UPD_ONE)
    } else {
        UPD_KINDS(UPD_SUM)
    }
#undef UPD_ONE
#undef UPD_SUM
#undef UPD_KINDS
#undef UPD_LOOP
#undef UPD_SGD_PLAIN
#undef UPD_SGD_NESTEROV
#undef UPD_SGD_MOMENTUM
#undef UPD_ADAM
    for (l = 0; l < UPD_LANES; l++) {
        sq_total += sq[l];
        chk_total += chk[l];
    }
    out[0] = sq_total;
    out[1] = chk_total != 0 ? 1 : 0; /* NaN != 0 */
}
