# Each hot loop of fastbp, callable on its own from Python. Outputs come first and are
# written in place; fastbp/kernels.py checks dtypes, shapes and contiguity and allocates
# the GEMM scratch before calling, so these wrappers only release the GIL and run the
# inline kernels. `naive` selects the plain-loop twins of _naive.pxd.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from _activations cimport (ACT_SOFTMAX, activate_row, scale_by_derivative_row, fastbp_expf_nonpos,
                          softmax_row, softmax_rows)
from _dense cimport dense_forward as _dense_forward
from _dense cimport weight_gradient as _weight_gradient
from _dense cimport input_gradient as _input_gradient
from _dense cimport sgd_update as _sgd_update
from _dense cimport dense_scratch_size
from _naive cimport dense_forward_naive, weight_gradient_naive, input_gradient_naive
from _gemm cimport fastbp_set_target, fastbp_target_supported, fastbp_active_target


def expf_nonpos(const float[::1] x, float[::1] out):
    """out = expf.h's exp of x (x <= 0, or NaN), as softmax uses it in float32; for the
    tests."""
    cdef Py_ssize_t i
    if out.shape[0] != x.shape[0]:
        raise ValueError("out must have the length of x")
    for i in range(x.shape[0]):
        if x[i] > 0:
            raise ValueError("expf_nonpos takes x <= 0 only")
    for i in range(x.shape[0]):
        out[i] = fastbp_expf_nonpos(x[i])


def set_target(int code):
    """Make this module's kernels use SIMD target `code` (0 baseline, 1 avx2, 2 avx512);
    False when this build or CPU cannot run it."""
    return fastbp_set_target(code) == 0


def target_supported(int code):
    return fastbp_target_supported(code) != 0


def active_target():
    return fastbp_active_target.code


def scratch_size(Py_ssize_t B, Py_ssize_t K, Py_ssize_t N, int n_threads):
    """GEMM scratch elements for the products of a (K -> N) layer at batch size B."""
    return dense_scratch_size(B, K, N, n_threads)
from _losses cimport loss_and_output_gradient


def dense_forward(floating[:, ::1] Z, floating[:, ::1] A_out, const floating[:, ::1] A_in,
                  const floating[:, ::1] W, const floating[::1] b, int act, int n_threads,
                  floating[::1] scratch, bint naive):
    cdef Py_ssize_t B = A_in.shape[0], K = A_in.shape[1], N = W.shape[1]
    with nogil:
        if naive:
            dense_forward_naive(&Z[0, 0], &A_out[0, 0], &A_in[0, 0], &W[0, 0], &b[0],
                                B, K, N, act, n_threads)
        else:
            _dense_forward(&Z[0, 0], &A_out[0, 0], &A_in[0, 0], &W[0, 0], &b[0],
                           B, K, N, act, n_threads, &scratch[0])


def softmax(floating[:, ::1] A, const floating[:, ::1] Z, bint blocked):
    """A = the softmax of each row of Z: softmax_rows (narrow float32 rows a block at a
    time, as the forward pass takes them) or, not blocked, softmax_row row by row."""
    cdef Py_ssize_t i, B = Z.shape[0], N = Z.shape[1]
    with nogil:
        if blocked:
            softmax_rows(&A[0, 0], &Z[0, 0], B, N)
        else:
            for i in range(B):
                softmax_row(&A[i, 0], &Z[i, 0], N)


def activation_forward(floating[:, ::1] A, const floating[:, ::1] Z, int act):
    cdef Py_ssize_t i, B = Z.shape[0], N = Z.shape[1]
    with nogil:
        for i in range(B):
            activate_row(&A[i, 0], &Z[i, 0], N, act)


def activation_backward(floating[:, ::1] dZ, const floating[:, ::1] dA,
                        const floating[:, ::1] Z, const floating[:, ::1] A, int act):
    cdef Py_ssize_t i, B = Z.shape[0], N = Z.shape[1]
    with nogil:
        for i in range(B):
            memcpy(&dZ[i, 0], &dA[i, 0], N * sizeof(floating))
            scale_by_derivative_row(&dZ[i, 0], &Z[i, 0], &A[i, 0], N, act)


def output_loss_gradient(floating[:, ::1] dZ, const floating[:, ::1] Z,
                         const floating[:, ::1] A, const int64_t[::1] labels,
                         const floating[:, ::1] Y, int loss, int out_act):
    cdef Py_ssize_t B = Z.shape[0], N = Z.shape[1]
    cdef double value
    cdef const int64_t* lab = &labels[0] if labels.shape[0] > 0 else NULL
    cdef const floating* ys = &Y[0, 0] if Y.shape[0] > 0 else NULL
    with nogil:
        value = loss_and_output_gradient(&dZ[0, 0], &Z[0, 0], &A[0, 0], lab, ys, NULL,
                                         B, N, loss, out_act, 1.0, False)
    return value


def weight_gradient(floating[:, ::1] dW, floating[::1] db, const floating[:, ::1] A_in,
                    const floating[:, ::1] dZ, int n_threads, floating[::1] scratch,
                    bint naive):
    cdef Py_ssize_t B = A_in.shape[0], K = A_in.shape[1], N = dZ.shape[1]
    with nogil:
        if naive:
            weight_gradient_naive(&dW[0, 0], &db[0], &A_in[0, 0], &dZ[0, 0], B, K, N,
                                  n_threads)
        else:
            _weight_gradient(&dW[0, 0], &db[0], &A_in[0, 0], &dZ[0, 0], B, K, N, n_threads,
                             &scratch[0])


def input_gradient(floating[:, ::1] dZ_in, const floating[:, ::1] dZ,
                   const floating[:, ::1] W, const floating[:, ::1] Z_in,
                   const floating[:, ::1] A_in, int act_in, int n_threads,
                   floating[::1] scratch, bint naive):
    cdef Py_ssize_t B = dZ.shape[0], K = W.shape[0], N = W.shape[1]
    with nogil:
        if naive:
            input_gradient_naive(&dZ_in[0, 0], &dZ[0, 0], &W[0, 0], &Z_in[0, 0],
                                 &A_in[0, 0], B, K, N, act_in, n_threads)
        else:
            _input_gradient(&dZ_in[0, 0], &dZ[0, 0], &W[0, 0], &Z_in[0, 0], &A_in[0, 0],
                            B, K, N, act_in, n_threads, &scratch[0])


def sgd_update(floating[::1] param, const floating[::1] grad, double lr, int n_threads):
    with nogil:
        _sgd_update(&param[0], &grad[0], param.shape[0], <floating>lr, n_threads)



# -- the sparse first layer (_sparse.pxd) ----------------------------------------------------

from _sparse cimport (CsrRows, sparse_forward as _sparse_forward,
                      sparse_weight_gradient as _sparse_weight_gradient, sparse_forward_naive,
                      sparse_weight_gradient_naive, sparse_scratch_size)
import numpy as np


cdef Py_ssize_t csr_batch(CsrRows* x, const floating[::1] data, const int64_t[::1] indices,
                          const int64_t[::1] indptr, const int64_t[::1] rows, Py_ssize_t B,
                          Py_ssize_t K) except -1:
    # x <- the batch of B rows (rows empty: CSR rows 0 .. B-1) of the CSR (data, indices,
    # indptr), its every index checked; returns the batch's entry count
    cdef Py_ssize_t i, r, n_rows = indptr.shape[0] - 1, nnz = 0
    cdef int64_t p
    if n_rows < 0 or indices.shape[0] != data.shape[0]:
        raise ValueError("indptr needs n_rows + 1 elements, indices those of data")
    if rows.shape[0] != 0 and rows.shape[0] != B or rows.shape[0] == 0 and B > n_rows:
        raise ValueError("rows must hold one CSR row per batch row")
    for i in range(B):
        r = rows[i] if rows.shape[0] else i
        if r < 0 or r >= n_rows:
            raise ValueError(f"rows[{i}] = {r} is not a row of the CSR")
        if indptr[r] < 0 or indptr[r] > indptr[r + 1] or indptr[r + 1] > indices.shape[0]:
            raise ValueError(f"indptr is out of range at row {r}")
        for p in range(indptr[r], indptr[r + 1]):
            if indices[p] < 0 or indices[p] >= K:
                raise ValueError(f"indices[{p}] = {indices[p]} is not a feature")
        nnz += indptr[r + 1] - indptr[r]
    x.data = &data[0] if data.shape[0] else NULL
    x.indices = &indices[0] if indices.shape[0] else NULL
    x.indptr = &indptr[0]
    x.rows = &rows[0] if rows.shape[0] else NULL
    x.first = 0
    x.scratch = NULL
    x.scratch_nnz = 0
    return nnz


def sparse_forward(floating[:, ::1] Z, floating[:, ::1] A_out, const floating[::1] data,
                   const int64_t[::1] indices, const int64_t[::1] indptr,
                   const int64_t[::1] rows, const floating[:, ::1] W, const floating[::1] b,
                   int act, int n_threads, bint naive):
    """Z, A_out (B, N) <- the first layer on B rows of a CSR (rows: their indices, or
    empty for rows 0 .. B-1): Z = X_b W + b, A_out = f_act(Z)."""
    cdef CsrRows x
    cdef Py_ssize_t B = Z.shape[0], K = W.shape[0], N = W.shape[1]
    if (A_out.shape[0] != B or Z.shape[1] != N or A_out.shape[1] != N or b.shape[0] != N
            or B < 1 or N < 1):
        raise ValueError("sparse_forward: shapes do not match")
    csr_batch(&x, data, indices, indptr, rows, B, K)
    with nogil:
        if naive:
            sparse_forward_naive(&Z[0, 0], &A_out[0, 0], &x, &W[0, 0], &b[0], B, N, act)
        else:
            _sparse_forward(&Z[0, 0], &A_out[0, 0], &x, &W[0, 0], &b[0], B, N, act,
                            n_threads)


def sparse_weight_gradient(floating[:, ::1] dW, floating[::1] db, const floating[::1] data,
                           const int64_t[::1] indices, const int64_t[::1] indptr,
                           const int64_t[::1] rows, const floating[:, ::1] dZ,
                           int n_threads, bint naive, Py_ssize_t scratch_nnz=-1):
    """dW (K, N) <- X_b^T dZ and db (N) <- the column sums of dZ (B, N), for B rows of a
    CSR as sparse_forward takes them. scratch_nnz: the entries the transpose's scratch
    holds (-1: the batch's; fewer makes the kernel take its naive fallback)."""
    cdef CsrRows x
    cdef Py_ssize_t B = dZ.shape[0], K = dW.shape[0], N = dW.shape[1], nnz
    if dZ.shape[1] != N or db.shape[0] != N or B < 1 or N < 1 or K < 1:
        raise ValueError("sparse_weight_gradient: shapes do not match")
    nnz = csr_batch(&x, data, indices, indptr, rows, B, K)
    if scratch_nnz < 0:
        scratch_nnz = nnz
    scratch = np.empty(sparse_scratch_size(K, scratch_nnz), dtype=np.int64)
    cdef int64_t[::1] scratch_view = scratch
    x.scratch = &scratch_view[0]
    x.scratch_nnz = scratch_nnz
    with nogil:
        if naive:
            sparse_weight_gradient_naive(&dW[0, 0], &db[0], &x, &dZ[0, 0], B, K, N)
        else:
            _sparse_weight_gradient(&dW[0, 0], &db[0], &x, &dZ[0, 0], B, K, N, n_threads)
