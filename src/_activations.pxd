# Activation functions and their derivatives, as inline point functions.
#
# Codes match fastbp/_common.py ACTIVATIONS. Every function works on one value so the
# row loops that call them (dense forward epilogue, backward prologue) stay in one pass
# over memory. float32 uses the float libm functions (expf, tanhf), except softmax, whose
# exp is expf.h's vectorizable one; gelu's erf is taken in double for both dtypes because
# the NumPy reference's erf is accurate to double.

from cython cimport floating
from libc.math cimport exp, expf, tanh, tanhf, erf

cdef extern from "expf.h" nogil:
    float fastbp_expf_nonpos(float x)

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_LEAKY_RELU = 2
    ACT_SIGMOID = 3
    ACT_TANH = 4
    ACT_GELU = 5
    ACT_SOFTMAX = 6      # output only: applied row-wise by the loss kernels

# constants are written inline (a .pxd cannot hold initialized variables):
# LEAKY_SLOPE = 0.01, SQRT_HALF = 1/sqrt(2), INV_SQRT_2PI = 1/sqrt(2 pi)


cdef inline floating exp_t(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating sigmoid(floating z) noexcept nogil:
    # exp of a non-positive argument only, so no overflow for any finite z
    cdef floating e
    if z >= 0:
        e = exp_t(-z)
        return 1 / (1 + e)
    e = exp_t(z)
    return e / (1 + e)


cdef inline floating activate(floating z, int act) noexcept nogil:
    """f(z) for a hidden activation code."""
    if act == ACT_RELU:
        return 0 if z <= 0 else z  # NaN stays NaN, as in np.maximum(z, 0)
    elif act == ACT_LEAKY_RELU:
        return z if z > 0 else z * <floating>0.01
    elif act == ACT_SIGMOID:
        return sigmoid(z)
    elif act == ACT_TANH:
        if floating is float:
            return tanhf(z)
        else:
            return tanh(z)
    elif act == ACT_GELU:
        return <floating>(0.5 * z * (1.0 + erf(z * 0.7071067811865476)))
    return z


cdef inline floating activation_derivative(floating z, floating a, int act) noexcept nogil:
    """f'(z), given z and a = f(z) (sigmoid and tanh are cheaper from a)."""
    if act == ACT_RELU:
        return 1 if z > 0 else 0
    elif act == ACT_LEAKY_RELU:
        return 1 if z > 0 else <floating>0.01
    elif act == ACT_SIGMOID:
        return a * (1 - a)
    elif act == ACT_TANH:
        return 1 - a * a
    elif act == ACT_GELU:
        return <floating>(0.5 * (1.0 + erf(z * 0.7071067811865476)) + z * exp(-0.5 * z * z) * 0.3989422804014327)
    return 1


cdef inline void activate_row(floating* a, const floating* z, Py_ssize_t n, int act) noexcept nogil:
    """a[j] = f(z[j]) for j < n. The switch sits outside the loop so each loop is simple
    enough for the compiler to vectorize (relu, leaky_relu, identity)."""
    cdef Py_ssize_t j
    if act == ACT_IDENTITY:
        for j in range(n):
            a[j] = z[j]
    elif act == ACT_RELU:
        for j in range(n):
            a[j] = 0 if z[j] <= 0 else z[j]  # NaN stays NaN
    elif act == ACT_LEAKY_RELU:
        for j in range(n):
            a[j] = z[j] if z[j] > 0 else z[j] * <floating>0.01
    else:
        for j in range(n):
            a[j] = activate(z[j], act)


cdef inline void scale_by_derivative_row(floating* d, const floating* z, const floating* a,
                                         Py_ssize_t n, int act) noexcept nogil:
    """d[j] *= f'(z[j]) for j < n: turns dL/dA into dL/dZ."""
    cdef Py_ssize_t j
    cdef floating x
    if act == ACT_IDENTITY:
        return
    elif act == ACT_RELU:
        for j in range(n):
            x = d[j]  # read unconditionally: a blend, not a branch on the sign
            d[j] = x if z[j] > 0 else 0
    elif act == ACT_LEAKY_RELU:
        for j in range(n):
            d[j] = d[j] if z[j] > 0 else d[j] * <floating>0.01
    else:
        for j in range(n):
            d[j] = d[j] * activation_derivative(z[j], a[j], act)


cdef inline void softmax_row(floating* a, const floating* z, Py_ssize_t n) noexcept nogil:
    """a = exp(z - max z) / sum, the sum taken in double. In float32 the exp is expf.h's,
    a loop without calls that the compiler vectorizes."""
    cdef Py_ssize_t j
    cdef floating m = z[0]
    cdef double s = 0
    for j in range(1, n):
        if z[j] > m:
            m = z[j]
    if floating is float:
        for j in range(n):
            a[j] = fastbp_expf_nonpos(z[j] - m)
    else:
        for j in range(n):
            a[j] = exp(z[j] - m)
    for j in range(n):
        s += a[j]
    for j in range(n):
        a[j] = <floating>(a[j] / s)


cdef extern from "softmax.h" nogil:
    enum:
        SOFTMAX_BLOCK_ROWS "FASTBP_SOFTMAX_BLOCK_ROWS"      # rows a block takes at once
        SOFTMAX_BLOCK_MAX_N "FASTBP_SOFTMAX_BLOCK_MAX_N"    # ... of at most this many columns
    # softmax_row of SOFTMAX_BLOCK_ROWS rows, bit for bit, as vector code of the active
    # SIMD target (src/softmax.h): a 10-class row alone is too short for vector code.
    void softmax_block "fastbp_softmax_block"(float* a, const float* z, Py_ssize_t n)


cdef inline void softmax_rows(floating* a, const floating* z, Py_ssize_t B,
                              Py_ssize_t n) noexcept nogil:
    """softmax_row of each of the B rows of z (B, n) into a (B, n): narrow float32 rows a
    block at a time (softmax_block), the rest one by one; a row's result does not depend
    on how the rows are grouped."""
    cdef Py_ssize_t i = 0
    if floating is float:
        if n <= SOFTMAX_BLOCK_MAX_N:
            while i + SOFTMAX_BLOCK_ROWS <= B:
                softmax_block(a + i * n, z + i * n, n)
                i += SOFTMAX_BLOCK_ROWS
    while i < B:
        softmax_row(a + i * n, z + i * n, n)
        i += 1
