/* exp(x) in float for x <= 0, written so that a loop of it vectorizes (no call, no
 * branch): softmax's exp(z - max z), which through libm's expf is one call per element.
 *
 * Cody and Waite's reduction x = n ln2 + r, |r| <= ln2 / 2, with n rounded by adding and
 * subtracting 1.5 * 2^23 (exact in float arithmetic without -ffast-math, which the build
 * never uses) and ln2 in two parts (Cephes' C1 = 355/512, exact times any n here, and C2).
 * exp(r) by Cephes' expf polynomial, 1 + r + r^2 p(r) with p of degree 5, then times 2^n
 * built from its exponent bits. Within 1 unit in the last place of the exact exp: 0.982 at
 * worst over every float from -87.34 to 0 (checked exhaustively against double exp;
 * tests/test_kernels.py checks a sample), as compiled for x86-64, where this baseline code
 * has no fused multiply-add to contract into; a compiler that contracts (GCC on arm64)
 * rounds some steps once instead of twice, which changes bits, not the method. exp(0) is
 * exactly 1 either way, which _losses.pxd's lse_from_softmax relies on.
 * Below -87.33 (where exp(x) < 2^-126, the smallest normal float) the result is 0, where
 * libm's expf returns a subnormal or 0: at most 1.2e-38 lower, nothing next to the 1 of a
 * row's maximum. -inf gives 0 and NaN gives NaN; nothing else is valid input.
 */
#ifndef FASTBP_EXPF_H
#define FASTBP_EXPF_H

#include <string.h>

/* Selections are made on the bits with masks (comparison results as 0 or -1), not with
 * ?: on floats: GCC does not if-convert a float comparison that may trap, and a loop with
 * control flow is not vectorized (checked with -fopt-info-vec). */
static inline float fastbp_expf_nonpos(float x)
{
    const float lo = -87.3365402f;   /* just above ln(2^-126) */
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    const float lo_v = lo;
    int ok = -(int)(x >= lo);        /* all ones, or 0 below lo, for -inf and for NaN */
    int nan = -(int)(x != x);
    int x_bits, lo_bits, c_bits, bits, y_bits;
    float xc, n, r, p, y, scale;
    memcpy(&x_bits, &x, sizeof x);
    memcpy(&lo_bits, &lo_v, sizeof lo_v);
    c_bits = (x_bits & ok) | (lo_bits & ~ok);   /* x clamped to lo: finite for every x, */
    memcpy(&xc, &c_bits, sizeof xc);            /* so the int conversion is defined */
    n = (xc * 1.44269504088896341f + magic) - magic;    /* round(x / ln2) */
    r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    y = p * (r * r) + r + 1.0f;
    bits = ((int)n + 127) << 23;     /* 2^n, n in [-126, 0] */
    memcpy(&scale, &bits, sizeof scale);
    y = y * scale;
    memcpy(&y_bits, &y, sizeof y);
    y_bits = (y_bits & ok) | (x_bits & nan);    /* below lo and -inf: 0; NaN: x */
    memcpy(&y, &y_bits, sizeof y);
    return y;
}

#endif /* FASTBP_EXPF_H */
