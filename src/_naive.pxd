# The slow, obvious twins of the dense-layer products in _dense.pxd: plain loops in the
# textbook order, kept as the oracle the GEMM path is tested against (fastbp.kernels with
# naive=True) and as a readable statement of what each product computes.
#
# Conventions (llm.c / scikit-learn): outputs first, then inputs, then sizes; row-major
# C-contiguous buffers; the caller (Python boundary) has checked shapes and allocated every
# output, so nothing here allocates or checks. Every parallel loop gives each thread its own
# rows of the output and every output element is computed by one thread in a fixed order,
# so results are bit-identical for any thread count.

from cython cimport floating
from cython.parallel cimport prange

from _activations cimport ACT_SOFTMAX, activate_row, scale_by_derivative_row, softmax_row
from _dense cimport PARALLEL_MIN_MACS, threads_for

cdef inline void dense_forward_naive(floating* Z, floating* A_out,
                               const floating* A_in, const floating* W, const floating* b,
                               Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                               int act, int n_threads) noexcept nogil:
    # Z (B, N) = A_in (B, K) @ W (K, N) + b (N);  A_out (B, N) = f_act(Z) row by row.
    # i-k-j order: the innermost loop is an axpy over a contiguous row of W into a row of
    # Z that stays in L1, which the compiler vectorizes. Threads split the rows of Z.
    cdef Py_ssize_t i, k, j
    cdef floating aik
    cdef floating* z
    cdef const floating* w
    cdef int nt = threads_for(B * K * N, PARALLEL_MIN_MACS, n_threads)
    for i in prange(B, nogil=True, schedule="static", num_threads=nt):
        z = Z + i * N
        for j in range(N):
            z[j] = b[j]
        for k in range(K):
            aik = A_in[i * K + k]
            w = W + k * N
            for j in range(N):
                z[j] = z[j] + aik * w[j]
        if act == ACT_SOFTMAX:
            softmax_row(A_out + i * N, z, N)
        else:
            activate_row(A_out + i * N, z, N, act)


cdef inline void weight_gradient_naive(floating* dW, floating* db,
                                 const floating* A_in, const floating* dZ,
                                 Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                                 int n_threads) noexcept nogil:
    # dW (K, N) = A_in (B, K)^T @ dZ (B, N);  db (N) = sum over rows of dZ.
    # Threads split the rows k of dW; each row sums over the batch in order i = 0..B-1.
    cdef Py_ssize_t i, k, j
    cdef floating aik
    cdef floating* dw
    cdef const floating* dz
    cdef int nt = threads_for(B * K * N, PARALLEL_MIN_MACS, n_threads)
    for k in prange(K, nogil=True, schedule="static", num_threads=nt):
        dw = dW + k * N
        for j in range(N):
            dw[j] = 0
        for i in range(B):
            aik = A_in[i * K + k]
            dz = dZ + i * N
            for j in range(N):
                dw[j] = dw[j] + aik * dz[j]
    # db is B*N additions, too small to share out
    for j in range(N):
        db[j] = 0
    for i in range(B):
        for j in range(N):
            db[j] += dZ[i * N + j]


cdef inline floating dot(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    """sum x[j] * y[j] with eight partial sums: a fixed association order the compiler may
    vectorize (it cannot reorder one running sum without -ffast-math)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t j = 0
    while j + 8 <= n:
        s0 += x[j] * y[j]
        s1 += x[j + 1] * y[j + 1]
        s2 += x[j + 2] * y[j + 2]
        s3 += x[j + 3] * y[j + 3]
        s4 += x[j + 4] * y[j + 4]
        s5 += x[j + 5] * y[j + 5]
        s6 += x[j + 6] * y[j + 6]
        s7 += x[j + 7] * y[j + 7]
        j += 8
    while j < n:
        s0 += x[j] * y[j]
        j += 1
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


cdef inline void input_gradient_naive(floating* dZ_in,
                                const floating* dZ, const floating* W,
                                const floating* Z_in, const floating* A_in,
                                Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                                int act_in, int n_threads) noexcept nogil:
    # dZ_in (B, K) = (dZ (B, N) @ W (K, N)^T) * f'_act_in(Z_in (B, K), A_in (B, K)).
    # dZ and W are both read along contiguous rows, so each element is a dot product;
    # the activation derivative is applied while the row is still in cache.
    cdef Py_ssize_t i, k
    cdef floating* d
    cdef int nt = threads_for(B * K * N, PARALLEL_MIN_MACS, n_threads)
    for i in prange(B, nogil=True, schedule="static", num_threads=nt):
        d = dZ_in + i * K
        for k in range(K):
            d[k] = dot(dZ + i * N, W + k * N, N)
        scale_by_derivative_row(d, Z_in + i * K, A_in + i * K, K, act_in)
