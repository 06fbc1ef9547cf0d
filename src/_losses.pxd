# Loss values and output gradients dL/dZ_L, computed stably from the logits Z_L and the
# output activations A_L that the forward pass left behind. Losses are means over the
# batch (PyTorch's reduction="mean"); the value is accumulated in double.
#
# The output layer is small (B x n_out) next to the products before it: each row part of a
# step (_passes.pxd) sums its rows' losses in row order, and the step adds the parts' sums
# in part order.

from cython cimport floating
from libc.math cimport exp, log, log1p, fabs
from libc.stdint cimport int64_t

from _activations cimport activation_derivative

cdef enum:
    LOSS_CROSS_ENTROPY = 0
    LOSS_BINARY_CROSS_ENTROPY = 1
    LOSS_MSE = 2
    # scikit-learn's log_loss and binary_log_loss: the same gradients, but the value takes
    # the log of the output probability clipped to [eps, 1 - eps] (eps: the dtype's
    # machine epsilon), as its MLP reports and stops on it (fastbp.sklearn only)
    LOSS_LOG_LOSS_CLIPPED = 8
    LOSS_BINARY_LOG_LOSS_CLIPPED = 9


cdef inline floating clip_probability(floating p) noexcept nogil:
    # clip(p, eps, 1 - eps) with the dtype's machine epsilon, as scikit-learn's losses
    cdef floating eps = 1.1920928955078125e-07 if floating is float else 2.220446049250313e-16
    if p < eps:
        return eps
    if p > 1 - eps:
        return 1 - eps
    return p


cdef inline double clipped_log(floating p) noexcept nogil:
    return log(<double>clip_probability(p))


cdef inline double log_sum_exp_row(const floating* z, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double m = z[0], s = 0
    for j in range(1, n):
        if z[j] > m:
            m = z[j]
    for j in range(n):
        s += exp(z[j] - m)
    return m + log(s)


cdef inline double loss_row(
        floating* dZ, const floating* Z, const floating* A,
        const int64_t* labels, const floating* Y, Py_ssize_t i, Py_ssize_t N, int loss,
        int out_act, floating f, bint lse_from_softmax) noexcept nogil:
    # Row i's loss l_i (for the element-wise losses the sum over its N elements; the
    # caller divides) and, when dZ is not NULL, its gradient row times f.
    cdef Py_ssize_t j, c, jm
    cdef double row = 0, lse, row_mass, z, y
    cdef floating d, m
    cdef bint clipped = loss == LOSS_LOG_LOSS_CLIPPED or loss == LOSS_BINARY_LOG_LOSS_CLIPPED
    if loss == LOSS_CROSS_ENTROPY or loss == LOSS_LOG_LOSS_CLIPPED:
        # -sum_c Y_c log softmax(z)_c = sum_c Y_c (lse(z) - z_c);
        # gradient softmax(z) * sum_c Y_c - Y, which is softmax(z) - onehot for labels.
        if lse_from_softmax:
            # A is the forward pass's softmax_row of Z: at the first maximum z_jm = m
            # the row's exp is exactly 1, so A_jm = 1 / s rounded and lse = m + log s =
            # m - log A_jm, without a second exp per element. A_jm >= 1/N never
            # underflows; the rounding of A_jm costs at most the dtype's epsilon in lse,
            # as the reference's log_softmax does.
            jm = 0
            m = Z[i * N]
            for j in range(1, N):
                if Z[i * N + j] > m:
                    m = Z[i * N + j]
                    jm = j
            lse = m - log(<double>A[i * N + jm])
        else:
            lse = log_sum_exp_row(Z + i * N, N)
        if labels != NULL:
            c = labels[i]
            row = -clipped_log(A[i * N + c]) if clipped else lse - Z[i * N + c]
            if dZ != NULL:
                for j in range(N):
                    dZ[i * N + j] = A[i * N + j] * f
                dZ[i * N + c] = (A[i * N + c] - 1) * f
        else:
            row_mass = 0
            for j in range(N):
                if clipped:
                    row -= Y[i * N + j] * clipped_log(A[i * N + j])
                else:
                    row += Y[i * N + j] * (lse - Z[i * N + j])
                row_mass += Y[i * N + j]
            if dZ != NULL:
                for j in range(N):
                    dZ[i * N + j] = (A[i * N + j] * <floating>row_mass - Y[i * N + j]) * f
    elif loss == LOSS_BINARY_CROSS_ENTROPY or loss == LOSS_BINARY_LOG_LOSS_CLIPPED:
        # max(z, 0) - z y + log(1 + exp(-|z|)): never overflows; gradient sigmoid(z) - y.
        for j in range(i * N, i * N + N):
            z = Z[j]
            y = Y[j]
            if clipped:
                # -(y log p + (1 - y) log(1 - p)), p clipped; xlogy's 0 log 0 = 0
                if y != 0:
                    row -= y * clipped_log(A[j])
                if y != 1:
                    row -= (1 - y) * log(<double>(1 - clip_probability(A[j])))
            else:
                row += (z if z > 0 else 0) - z * y + log1p(exp(-fabs(z)))
            if dZ != NULL:
                dZ[j] = (A[j] - Y[j]) * f
    else:
        # mse through the output activation. The square is taken in the network's
        # dtype, as the reference does: a float32 residual whose square overflows
        # float32 is a diverged network (infinite loss), not a finite double.
        for j in range(i * N, i * N + N):
            d = A[j] - Y[j]
            row += d * d
            if dZ != NULL:
                dZ[j] = d * ((2 * f) * activation_derivative(Z[j], A[j], out_act))
    return row


cdef inline double weight_sum(const floating* w, Py_ssize_t B) noexcept nogil:
    cdef Py_ssize_t i
    cdef double w_sum = 0
    if w == NULL:
        return B
    for i in range(B):
        w_sum += w[i]
    return w_sum


cdef inline double loss_norm(const floating* w, Py_ssize_t B, Py_ssize_t N,
                             int loss) noexcept nogil:
    # What a batch's loss sum is divided by: its weight sum (B without weights), times N
    # for the element-wise losses, which average over a row's N outputs too; 0 when the
    # weights sum to zero.
    cdef double w_sum = weight_sum(w, B)
    if loss == LOSS_CROSS_ENTROPY or loss == LOSS_LOG_LOSS_CLIPPED:
        return w_sum
    return w_sum * N


cdef inline double loss_rows(
        floating* dZ, const floating* Z, const floating* A, const int64_t* labels,
        const floating* Y, const floating* w, Py_ssize_t rows, Py_ssize_t N, int loss,
        int out_act, double scale, double norm, bint lse_from_softmax) noexcept nogil:
    # sum_i r_i l_i over `rows` rows (r_i = w_i, or 1 without weights) in row order, and
    # when dZ is not NULL their gradient rows, each scaled by scale r_i / norm; norm 0 (a
    # batch that weighs nothing): 0 and zero gradients. The pointers are at the first row.
    cdef Py_ssize_t i
    cdef double total = 0, row, r_i
    if norm == 0:
        if dZ != NULL:
            for i in range(rows * N):
                dZ[i] = 0
        return 0.0
    for i in range(rows):
        r_i = 1.0 if w == NULL else <double>w[i]
        row = loss_row(dZ, Z, A, labels, Y, i, N, loss, out_act,
                       <floating>(scale * r_i / norm), lse_from_softmax)
        total += row if w == NULL else r_i * row
    return total


cdef inline double loss_and_output_gradient(
        floating* dZ,                                   # OUT (B, N), may be NULL
        const floating* Z, const floating* A,           # IN  (B, N) logits, outputs
        const int64_t* labels, const floating* Y,       # IN  (B,) labels or (B, N) targets
        const floating* w,                              # IN  (B,) row weights, or NULL
        Py_ssize_t B, Py_ssize_t N, int loss, int out_act, double scale,
        bint lse_from_softmax) noexcept nogil:
    """Mean loss over the batch, times `scale`; when dZ is not NULL also its gradient
    dL/dZ. With row weights w the mean is weighted: sum_i w_i l_i / sum_i w_i (scikit-learn's
    and PyTorch's convention), where l_i is row i's loss (for the element-wise losses the
    mean over its N elements). A batch whose weights sum to zero has loss 0 and gradient 0.
    lse_from_softmax: for cross-entropy, A is softmax_row(Z) and lse is taken from it (see
    loss_row); otherwise lse is computed from Z alone."""
    cdef double norm = loss_norm(w, B, N, loss)
    cdef double total = loss_rows(dZ, Z, A, labels, Y, w, B, N, loss, out_act, scale, norm,
                                  lse_from_softmax)
    return scale * (total / norm) if norm != 0 else 0.0
