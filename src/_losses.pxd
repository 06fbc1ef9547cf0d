# Loss values and output gradients dL/dZ_L, computed stably from the logits Z_L and the
# output activations A_L that the forward pass left behind. Losses are means over the
# batch (PyTorch's reduction="mean"); the value is accumulated in double.
#
# The output layer is small (B x n_out) next to the products before it, and a serial
# loop keeps the loss sum in one fixed order, so these loops do not use threads.

from cython cimport floating
from libc.math cimport exp, log, log1p, fabs
from libc.stdint cimport int64_t

from _activations cimport activation_derivative

cdef enum:
    LOSS_CROSS_ENTROPY = 0
    LOSS_BINARY_CROSS_ENTROPY = 1
    LOSS_MSE = 2


cdef inline double log_sum_exp_row(const floating* z, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double m = z[0], s = 0
    for j in range(1, n):
        if z[j] > m:
            m = z[j]
    for j in range(n):
        s += exp(z[j] - m)
    return m + log(s)


cdef inline double loss_and_output_gradient(
        floating* dZ,                                   # OUT (B, N), may be NULL
        const floating* Z, const floating* A,           # IN  (B, N) logits, outputs
        const int64_t* labels, const floating* Y,       # IN  (B,) labels or (B, N) targets
        Py_ssize_t B, Py_ssize_t N, int loss, int out_act) noexcept nogil:
    """Mean loss over the batch; when dZ is not NULL also dL/dZ (already divided by the
    batch size, or by B*N for the element-wise losses)."""
    cdef Py_ssize_t i, j, c
    cdef double total = 0, lse, row_mass, z, y
    cdef floating inv_B = <floating>(1.0 / B)
    cdef floating inv_BN = <floating>(1.0 / (B * N))
    cdef floating two_inv_BN = <floating>(2.0 / (B * N))
    cdef floating d

    if loss == LOSS_CROSS_ENTROPY:
        # -sum_c Y_c log softmax(z)_c = sum_c Y_c (lse(z) - z_c);
        # gradient softmax(z) * sum_c Y_c - Y, which is softmax(z) - onehot for labels.
        for i in range(B):
            lse = log_sum_exp_row(Z + i * N, N)
            if labels != NULL:
                c = labels[i]
                total += lse - Z[i * N + c]
                if dZ != NULL:
                    for j in range(N):
                        dZ[i * N + j] = A[i * N + j] * inv_B
                    dZ[i * N + c] = (A[i * N + c] - 1) * inv_B
            else:
                row_mass = 0
                for j in range(N):
                    total += Y[i * N + j] * (lse - Z[i * N + j])
                    row_mass += Y[i * N + j]
                if dZ != NULL:
                    for j in range(N):
                        dZ[i * N + j] = (A[i * N + j] * <floating>row_mass - Y[i * N + j]) * inv_B
        return total / B

    if loss == LOSS_BINARY_CROSS_ENTROPY:
        # max(z, 0) - z y + log(1 + exp(-|z|)): never overflows; gradient sigmoid(z) - y.
        for i in range(B * N):
            z = Z[i]
            y = Y[i]
            total += (z if z > 0 else 0) - z * y + log1p(exp(-fabs(z)))
            if dZ != NULL:
                dZ[i] = (A[i] - Y[i]) * inv_BN
        return total / (B * N)

    # mse through the output activation. The square is taken in the network's dtype, as
    # the reference does: a float32 residual whose square overflows float32 is a diverged
    # network (infinite loss), not a finite double.
    for i in range(B * N):
        d = A[i] - Y[i]
        total += d * d
        if dZ != NULL:
            dZ[i] = d * (two_inv_BN * activation_derivative(Z[i], A[i], out_act))
    return total / (B * N)
