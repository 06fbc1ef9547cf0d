# The first layer on a sparse (CSR) input: its forward product X_b W + b with the layer's
# activation, and its weight gradient X_b^T dZ with the bias gradient; and the plain-loop
# twins the tests hold them against. X is never densified: a product costs nnz * N
# multiply-adds where the dense one costs B * K * N. The first layer needs no input
# gradient, so there is no sparse input-gradient product.
#
# A batch's rows are rows of a bound CSR matrix (CsrRows): batch row i is CSR row rows[i]
# (rows not NULL: a batch by row indices) or first + i. The Python boundary
# (fastbp/_validation.py, and _network.pyx for memory safety) has checked that indptr is
# non-decreasing from 0, that every index lies in [0, K), and that each row's indices are
# sorted without duplicates; nothing here checks.
#
# Determinism: every output element is one thread's, summed in a fixed order (a row's
# entries in index order for the forward product, the batch's rows in order for the
# weight gradient), so every thread count gives the same bits, and the fast kernels give
# the bits of their naive twins.

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from _activations cimport ACT_SOFTMAX, activate_row, softmax_row
from _dense cimport bias_gradient, threads_for, PARALLEL_MIN_MACS


cdef extern from *:
    """
    /* Ask for the cache lines of `bytes` bytes at p ahead of their use (no-op where the
     * compiler has no prefetch builtin): a sparse product's weight rows are scattered
     * over the whole matrix, and each one's load would otherwise wait on memory. */
    static inline void fastbp_prefetch(const void* p, Py_ssize_t bytes) {
    #if defined(__GNUC__) || defined(__clang__)
        const char* c = (const char*)p;
        Py_ssize_t o;
        for (o = 0; o < bytes; o += 64)
            __builtin_prefetch(c + o, 0, 3);
    #else
        (void)p; (void)bytes;
    #endif
    }
    """
    void fastbp_prefetch(const void* p, Py_ssize_t bytes) nogil

cdef extern from "blocking.h":
    enum:
        PREFETCH_AHEAD "FASTBP_SPARSE_PREFETCH_AHEAD"


cdef struct CsrRows:
    const void* data             # the CSR's values, of the step's dtype
    const int64_t* indices       # their feature indices, each in [0, K)
    const int64_t* indptr        # row r's entries are [indptr[r], indptr[r + 1])
    const int64_t* rows          # batch row i is CSR row rows[i]; NULL: CSR row first + i
    Py_ssize_t first
    int64_t* scratch             # sparse_scratch_size(K, scratch_nnz) elements, for the
    Py_ssize_t scratch_nnz       # weight gradient's transpose of a batch of at most
                                 # scratch_nnz entries (sized for distinct rows: an order
                                 # that repeats long rows may need more, see below)


cdef inline Py_ssize_t sparse_scratch_size(Py_ssize_t K, Py_ssize_t nnz) noexcept nogil:
    # int64 elements of CsrRows.scratch for a batch of nnz entries: K + 1 feature starts,
    # then each entry's batch row and position
    return K + 1 + 2 * nnz


cdef inline Py_ssize_t csr_row(const CsrRows* x, Py_ssize_t i) noexcept nogil:
    return x.rows[i] if x.rows != NULL else x.first + i


cdef inline void sparse_row_product(floating* z, const floating* data,
                                    const int64_t* indices, int64_t p0, int64_t p1,
                                    const floating* W, const floating* b,
                                    Py_ssize_t N) noexcept nogil:
    # z (N) = b + sum over p in [p0, p1) of data[p] W[indices[p], :], the terms added in
    # order of p; the inner loop is an axpy the compiler vectorizes
    cdef Py_ssize_t j
    cdef int64_t p
    cdef floating v
    cdef const floating* w
    for p in range(p0, min(p0 + PREFETCH_AHEAD, p1)):
        fastbp_prefetch(W + indices[p] * N, N * sizeof(floating))
    for j in range(N):
        z[j] = b[j]
    for p in range(p0, p1):
        if p + PREFETCH_AHEAD < p1:
            fastbp_prefetch(W + indices[p + PREFETCH_AHEAD] * N, N * sizeof(floating))
        v = data[p]
        w = W + indices[p] * N
        for j in range(N):
            z[j] = z[j] + v * w[j]


cdef inline void sparse_activate_row(floating* a, const floating* z, Py_ssize_t N,
                                     int act) noexcept nogil:
    # the layer's activation, with the dense path's row functions (a == z: in place)
    if act == ACT_SOFTMAX:
        softmax_row(a, z, N)
    else:
        activate_row(a, z, N, act)


cdef inline void sparse_forward(floating* Z, floating* A_out, const CsrRows* x,
                                const floating* W, const floating* b, Py_ssize_t B,
                                Py_ssize_t N, int act, int n_threads) noexcept nogil:
    # Z (B, N) = X_b W (K, N) + b;  A_out (B, N) = f_act(Z) (Z == A_out: only f_act(Z) is
    # kept, as the dense path does for a layer that keeps no Z). Threads share the rows;
    # each row is computed whole by one thread, its activation applied while in cache.
    cdef Py_ssize_t i, r, nnz = 0
    cdef const floating* data = <const floating*>x.data
    cdef int nt
    for i in range(B):
        r = csr_row(x, i)
        nnz += x.indptr[r + 1] - x.indptr[r]
    nt = threads_for((nnz + B) * N, PARALLEL_MIN_MACS, n_threads) if B > 1 else 1
    for i in prange(B, nogil=True, schedule="static", num_threads=nt):
        r = csr_row(x, i)
        sparse_row_product(Z + i * N, data, x.indices, x.indptr[r], x.indptr[r + 1], W, b, N)
        sparse_activate_row(A_out + i * N, Z + i * N, N, act)


cdef inline void sparse_gradient_row(floating* dw, const floating* data,
                                     const int64_t* ent_row, const int64_t* ent_pos,
                                     int64_t e0, int64_t e1, const floating* dZ,
                                     Py_ssize_t N) noexcept nogil:
    # dw (N) = sum over the entries e in [e0, e1) of data[ent_pos[e]] dZ[ent_row[e], :],
    # from 0, in order of e
    cdef Py_ssize_t j
    cdef int64_t e
    cdef floating v
    cdef const floating* dz
    for j in range(N):
        dw[j] = 0
    for e in range(e0, e1):
        v = data[ent_pos[e]]
        dz = dZ + ent_row[e] * N
        for j in range(N):
            dw[j] = dw[j] + v * dz[j]


cdef inline void sparse_weight_gradient(floating* dW, floating* db, const CsrRows* x,
                                        const floating* dZ, Py_ssize_t B, Py_ssize_t K,
                                        Py_ssize_t N, int n_threads) noexcept nogil:
    # dW (K, N) = X_b^T dZ (B, N), every row written (zeros for a feature absent from the
    # batch);  db (N) = sum over rows of dZ.
    # The batch's entries are first sorted by feature into x.scratch (a counting sort,
    # which keeps the batch's row order within a feature); then each row of dW is summed
    # from its feature's entries, in row order, and written once. Threads share the rows
    # of dW; the sort is O(nnz + K) on one thread, small beside the K * N writes. A batch
    # of more entries than the scratch holds (rows repeated by the caller's order) takes
    # the naive twin, whose sums are the same, in the same order: the same bits.
    cdef int64_t* start = x.scratch          # K + 1: where each feature's entries begin
    cdef int64_t* ent_row = x.scratch + K + 1
    cdef int64_t* ent_pos
    cdef const floating* data = <const floating*>x.data
    cdef Py_ssize_t i, k, r
    cdef int64_t p, e, total = 0
    cdef int nt = threads_for(K * N, PARALLEL_MIN_MACS, n_threads)
    for i in range(B):
        r = csr_row(x, i)
        total += x.indptr[r + 1] - x.indptr[r]
    if x.scratch == NULL or total > x.scratch_nnz:
        sparse_weight_gradient_naive(dW, db, x, dZ, B, K, N)
        return
    memset(start, 0, (K + 1) * sizeof(int64_t))
    for i in range(B):
        r = csr_row(x, i)
        for p in range(x.indptr[r], x.indptr[r + 1]):
            start[x.indices[p] + 1] += 1
    for k in range(K):
        start[k + 1] += start[k]
    ent_pos = ent_row + total
    for i in range(B):
        r = csr_row(x, i)
        for p in range(x.indptr[r], x.indptr[r + 1]):
            k = x.indices[p]
            e = start[k]
            ent_row[e] = i
            ent_pos[e] = p
            start[k] = e + 1
    # start[k] is now the end of feature k's entries, the start of feature k + 1's
    for k in prange(K, nogil=True, schedule="static", num_threads=nt):
        sparse_gradient_row(dW + k * N, data, ent_row, ent_pos,
                            start[k - 1] if k > 0 else 0, start[k], dZ, N)
    bias_gradient(db, dZ, B, N)


# -- the naive twins -------------------------------------------------------------------------
# Plain loops in the textbook order, one thread: the oracle of the kernels above.

cdef inline void sparse_forward_naive(floating* Z, floating* A_out, const CsrRows* x,
                                      const floating* W, const floating* b, Py_ssize_t B,
                                      Py_ssize_t N, int act) noexcept nogil:
    # Z[i, :] = b + sum over row i's entries of data[p] W[indices[p], :];  A_out = f(Z)
    cdef Py_ssize_t i, j, r
    cdef int64_t p
    cdef const floating* data = <const floating*>x.data
    for i in range(B):
        r = csr_row(x, i)
        for j in range(N):
            Z[i * N + j] = b[j]
        for p in range(x.indptr[r], x.indptr[r + 1]):
            for j in range(N):
                Z[i * N + j] = Z[i * N + j] + data[p] * W[x.indices[p] * N + j]
        if act == ACT_SOFTMAX:
            softmax_row(A_out + i * N, Z + i * N, N)
        else:
            activate_row(A_out + i * N, Z + i * N, N, act)


cdef inline void sparse_weight_gradient_naive(floating* dW, floating* db, const CsrRows* x,
                                              const floating* dZ, Py_ssize_t B,
                                              Py_ssize_t K, Py_ssize_t N) noexcept nogil:
    # dW = 0, then dW[indices[p], :] += data[p] dZ[i, :] for each entry p of each batch
    # row i in order;  db[j] = sum over rows of dZ[:, j]
    cdef Py_ssize_t i, j, k, r
    cdef int64_t p
    cdef const floating* data = <const floating*>x.data
    for k in range(K * N):
        dW[k] = 0
    for i in range(B):
        r = csr_row(x, i)
        for p in range(x.indptr[r], x.indptr[r + 1]):
            k = x.indices[p]
            for j in range(N):
                dW[k * N + j] = dW[k * N + j] + data[p] * dZ[i * N + j]
    for j in range(N):
        db[j] = 0
    for i in range(B):
        for j in range(N):
            db[j] = db[j] + dZ[i * N + j]
