# The dense-layer kernels: the forward product with bias and activation fused into its
# epilogue, the weight-gradient product, the input-gradient product with the activation
# derivative fused in, the bias gradient, and the SGD update. All three products go
# through the GEMM driver in _gemm.pxd, except for a layer of one output (see "layers of
# one output" below), whose products are vector loops; the plain-loop twins the tests hold
# them against are in _naive.pxd.
#
# Conventions (llm.c / scikit-learn): outputs first, then inputs, then sizes; row-major
# C-contiguous buffers; `scratch` holds dense_scratch_size() elements. The caller (the
# Python boundary) has checked shapes and allocated everything, so nothing here allocates
# or checks. Every parallel loop gives each thread whole tiles or rows of the output and
# each element is summed in a fixed order, so results are bit-identical for any thread
# count.

from cython cimport floating
from cython.parallel cimport prange

from _activations cimport (ACT_IDENTITY, ACT_SOFTMAX, activate_row, scale_by_derivative_row,
                          softmax_row, softmax_rows)
from _gemm cimport (gemm, gemm_scratch_size, EPI_STORE, EPI_FORWARD, EPI_SGD, EPI_DERIV,
                   EPI_FORWARD_ACT)

cdef extern from "blocking.h":
    enum:
        PARALLEL_MIN_MACS "FASTBP_PARALLEL_MIN_MACS"
        PARALLEL_MIN_ELEMENTS "FASTBP_PARALLEL_MIN_ELEMENTS"


cdef inline int threads_for(Py_ssize_t work, Py_ssize_t threshold, int n_threads) noexcept nogil:
    return n_threads if work >= threshold else 1


cdef inline Py_ssize_t dense_scratch_size(Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                                          int n_threads) noexcept nogil:
    """Scratch elements the three products of a (K -> N) layer need at batch size B."""
    return max(gemm_scratch_size(B, N, K, n_threads),       # forward:      (B x K)(K x N)
               max(gemm_scratch_size(K, N, B, n_threads),   # weight grad:  (K x B)(B x N)
                   gemm_scratch_size(B, K, N, n_threads)))  # input grad:   (B x N)(N x K)


# -- layers of one output ------------------------------------------------------------------
# A one-output layer (the output of a regression or of a binary classifier) makes each of
# its products a vector one: the GEMM's register tile, 16 or 32 columns wide, would compute
# one useful column and spend the rest on padding, and the input gradient's product sums
# over a single term (benchmarks/RESULTS.md has the measurements). Each output value is
# computed by one thread in a fixed order, so the results are the same for every thread
# count. The loops are baseline code (the same on every SIMD target) and run on one
# thread whatever n_threads says: a one-output layer is the smallest of a network.

cdef enum:
    DOT_LANES = 8               # partial sums of one_output_rows
    ONE_OUTPUT_CHUNK = 256      # weights stepped at a time by the fused SGD step


cdef inline void one_output_rows(floating* Z, const floating* A_in, const floating* w,
                                 const floating* b, Py_ssize_t lo, Py_ssize_t hi,
                                 Py_ssize_t K) noexcept nogil:
    # Z[i] = A_in[i, :] . w + b[0] for lo <= i < hi: DOT_LANES partial sums (lane j takes
    # k = j mod DOT_LANES, in order), added pairwise, then the last K % DOT_LANES terms in
    # order, then the bias. The fixed-length inner loop is what the compiler vectorizes.
    cdef Py_ssize_t i, k, j
    cdef floating acc[DOT_LANES]
    cdef floating z
    cdef const floating* a
    for i in range(lo, hi):
        a = A_in + i * K
        for j in range(DOT_LANES):
            acc[j] = 0
        k = 0
        while k + DOT_LANES <= K:
            for j in range(DOT_LANES):
                acc[j] = acc[j] + a[k + j] * w[k + j]
            k += DOT_LANES
        z = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
        while k < K:
            z = z + a[k] * w[k]
            k += 1
        Z[i] = z + b[0]


cdef inline void one_output_activate(floating* A_out, const floating* Z, Py_ssize_t lo,
                                     Py_ssize_t hi, int act) noexcept nogil:
    cdef Py_ssize_t i
    if act == ACT_SOFTMAX:      # of one value: 1
        for i in range(lo, hi):
            softmax_row(A_out + i, Z + i, 1)
    else:
        activate_row(A_out + lo, Z + lo, hi - lo, act)


cdef inline void one_output_weight_sums(floating* out, const floating* A_in,
                                        const floating* dz, Py_ssize_t B, Py_ssize_t K,
                                        Py_ssize_t k_lo, Py_ssize_t k_hi) noexcept nogil:
    # out[k - k_lo] = sum over the B rows of A_in[i, k] dz[i], in row order, for
    # k_lo <= k < k_hi: the weight gradient of a one-output layer (a vectorized axpy a row
    # at a time into out, which stays in cache: k_hi - k_lo is a layer's input count, or
    # at most a layer's input count)
    cdef Py_ssize_t i, k, n = k_hi - k_lo
    cdef floating d
    cdef const floating* a
    for k in range(n):
        out[k] = 0
    for i in range(B):
        d = dz[i]
        a = A_in + i * K + k_lo
        for k in range(n):
            out[k] = out[k] + a[k] * d


cdef inline void one_output_weight_step(floating* W, const floating* A_in,
                                        const floating* dz, Py_ssize_t B, Py_ssize_t K,
                                        floating lr, Py_ssize_t k_lo, Py_ssize_t k_hi,
                                        floating* flag) noexcept nogil:
    # W[k] -= lr * (the weight gradient's sum for k), k_lo <= k < k_hi, a chunk at a time;
    # *flag = 1 when a new value is not finite. The same sums and the same two roundings as
    # one_output_weight_sums followed by sgd_update.
    cdef floating acc[ONE_OUTPUT_CHUNK]
    cdef Py_ssize_t k0 = k_lo, k1, k
    cdef floating x
    while k0 < k_hi:
        k1 = min(k0 + <Py_ssize_t>ONE_OUTPUT_CHUNK, k_hi)
        one_output_weight_sums(acc, A_in, dz, B, K, k0, k1)
        for k in range(k0, k1):
            x = W[k] - lr * acc[k - k0]
            W[k] = x
            if x - x != 0:
                flag[0] = 1
        k0 = k1


cdef inline void one_output_input_gradient(floating* dZ_in, const floating* dz,
                                           const floating* w, const floating* Z_in,
                                           const floating* A_in, Py_ssize_t lo,
                                           Py_ssize_t hi, Py_ssize_t K,
                                           int act_in) noexcept nogil:
    # dZ_in[i, :] = dz[i] w * f'(Z_in[i, :]) for lo <= i < hi (a product of one term)
    cdef Py_ssize_t i, k
    cdef floating d
    cdef floating* out
    for i in range(lo, hi):
        d = dz[i]
        out = dZ_in + i * K
        for k in range(K):
            out[k] = d * w[k]
        scale_by_derivative_row(out, Z_in + i * K, A_in + i * K, K, act_in)


cdef inline void dense_forward(floating* Z, floating* A_out,
                               const floating* A_in, const floating* W, const floating* b,
                               Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                               int act, int n_threads, floating* scratch) noexcept nogil:
    # Z (B, N) = A_in (B, K) @ W (K, N) + b (N);  A_out (B, N) = f_act(Z).
    # The epilogue adds b and applies f to each tile while it is in cache. Softmax needs
    # whole rows, so it runs as a row pass after. Z == A_out (a hidden layer that keeps no
    # Z, see _network.pyx's keeps_z; not softmax): only f_act(Z) is written.
    if N == 1:
        one_output_rows(Z, A_in, W, b, 0, B, K)
        one_output_activate(A_out, Z, 0, B, act)
        return
    if Z == A_out:
        gemm(A_out, N, A_in, K, 1, W, N, 1, B, N, K, scratch,
             EPI_FORWARD_ACT, NULL, b, NULL, NULL, act, 0, n_threads)
    elif act == ACT_SOFTMAX:
        # the logits Z = acc + b from the registers (a full tile), then the row pass
        gemm(Z, N, A_in, K, 1, W, N, 1, B, N, K, scratch,
             EPI_FORWARD_ACT, NULL, b, NULL, NULL, ACT_IDENTITY, 0, n_threads)
        softmax_rows(A_out, Z, B, N)
    else:
        gemm(Z, N, A_in, K, 1, W, N, 1, B, N, K, scratch,
             EPI_FORWARD, A_out, b, NULL, NULL, act, 0, n_threads)


cdef inline void bias_gradient_block(floating* db, const floating* dZ, Py_ssize_t B,
                                     Py_ssize_t N, Py_ssize_t width) noexcept nogil:
    # db[j] = sum over the B rows of dZ[:, j] for j < width (at most 32), summed in a local
    # array: called with a constant width, the compiler keeps it in registers
    cdef floating acc[32]
    cdef Py_ssize_t i, j
    for j in range(width):
        acc[j] = 0
    for i in range(B):
        for j in range(width):
            acc[j] += dZ[i * N + j]
    for j in range(width):
        db[j] = acc[j]


cdef inline void bias_gradient_columns(floating* db, const floating* dZ,
                                       Py_ssize_t B, Py_ssize_t N,
                                       Py_ssize_t j_lo, Py_ssize_t j_hi) noexcept nogil:
    # db[j] = sum over the B rows of dZ (B, N)[:, j] in row order, for j_lo <= j < j_hi.
    # 128 bytes of columns at a time are summed down all rows in registers (8 SSE
    # registers): adding each row into db in memory makes every row's adds wait for the
    # previous row's stores. Each column is still summed in row order: the same bits.
    cdef Py_ssize_t i, j, j0 = j_lo
    cdef Py_ssize_t width = 32 if floating is float else 16
    while j0 + width <= j_hi:
        if floating is float:
            bias_gradient_block(db + j0, dZ + j0, B, N, 32)
        else:
            bias_gradient_block(db + j0, dZ + j0, B, N, 16)
        j0 += width
    for j in range(j0, j_hi):
        db[j] = 0
    for i in range(B):
        for j in range(j0, j_hi):
            db[j] += dZ[i * N + j]


cdef inline void bias_gradient(floating* db, const floating* dZ,
                               Py_ssize_t B, Py_ssize_t N) noexcept nogil:
    # db (N) = sum over the B rows of dZ (B, N), in row order; B*N additions, too few to
    # share between threads.
    bias_gradient_columns(db, dZ, B, N, 0, N)


cdef inline void weight_gradient(floating* dW, floating* db,
                                 const floating* A_in, const floating* dZ,
                                 Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                                 int n_threads, floating* scratch) noexcept nogil:
    # dW (K, N) = A_in (B, K)^T @ dZ (B, N);  db (N) = sum over rows of dZ.
    if N == 1:
        one_output_weight_sums(dW, A_in, dZ, B, K, 0, K)
    else:
        gemm(dW, N, A_in, 1, K, dZ, N, 1, K, N, B, scratch,
             EPI_STORE, NULL, NULL, NULL, NULL, 0, 0, n_threads)
    bias_gradient(db, dZ, B, N)


cdef inline void weight_update(floating* W, floating* b, floating* db,
                               const floating* A_in, const floating* dZ,
                               Py_ssize_t B, Py_ssize_t K, Py_ssize_t N, floating lr,
                               int n_threads, floating* scratch, bint* bad) noexcept nogil:
    # W (K, N) -= lr * A_in^T @ dZ;  b (N) -= lr * db, db (N) = sum over rows of dZ.
    # The SGD step fused into the weight-gradient product: each tile of dW is subtracted
    # from W straight from registers, never stored (a one-output layer's sums go through
    # a chunk on the stack). Exact: the same sums as weight_gradient followed by
    # sgd_update, in the same order. *bad is set when a new value is not finite.
    cdef floating flag = 0
    if N == 1:
        one_output_weight_step(W, A_in, dZ, B, K, lr, 0, K, &flag)
    else:
        gemm(W, N, A_in, 1, K, dZ, N, 1, K, N, B, scratch,
             EPI_SGD, &flag, NULL, NULL, NULL, 0, lr, n_threads)
    bias_step(b, db, dZ, B, N, lr, 0, N, &flag)
    if flag != 0:
        bad[0] = True


cdef inline void bias_step(floating* b, floating* db, const floating* dZ,
                           Py_ssize_t B, Py_ssize_t N, floating lr,
                           Py_ssize_t j_lo, Py_ssize_t j_hi, floating* flag) noexcept nogil:
    # db[j] = sum over rows of dZ[:, j];  b[j] -= lr * db[j];  *flag = 1 when a new b[j]
    # is not finite; for j_lo <= j < j_hi
    cdef Py_ssize_t j
    cdef floating x
    bias_gradient_columns(db, dZ, B, N, j_lo, j_hi)
    for j in range(j_lo, j_hi):
        x = b[j] - lr * db[j]
        b[j] = x
        if x - x != 0:
            flag[0] = 1


cdef inline void input_gradient(floating* dZ_in,
                                const floating* dZ, const floating* W,
                                const floating* Z_in, const floating* A_in,
                                Py_ssize_t B, Py_ssize_t K, Py_ssize_t N,
                                int act_in, int n_threads, floating* scratch) noexcept nogil:
    # dZ_in (B, K) = (dZ (B, N) @ W (K, N)^T) * f'_act_in(Z_in (B, K), A_in (B, K)).
    # Rows of dZ are read in place; W^T is packed a column panel at a time (a transpose of
    # NR rows of W, K*N copies in all against B*K*N multiply-adds); the epilogue multiplies
    # each tile by f' while it is in cache. (The transpose W @ dZ^T instead would write
    # every tile back with a stride of B.)
    if N == 1:
        one_output_input_gradient(dZ_in, dZ, W, Z_in, A_in, 0, B, K, act_in)
        return
    gemm(dZ_in, K, dZ, N, 1, W, 1, N, B, K, N, scratch,
         EPI_DERIV, NULL, NULL, Z_in, A_in, act_in, 0, n_threads)


cdef inline void sgd_update(floating* param, const floating* grad, Py_ssize_t n,
                            floating lr, int n_threads) noexcept nogil:
    # param (n) -= lr * grad (n), in place; elementwise, so any split is exact.
    cdef Py_ssize_t i
    cdef int nt = threads_for(n, PARALLEL_MIN_ELEMENTS, n_threads)
    for i in prange(n, nogil=True, schedule="static", num_threads=nt):
        param[i] = param[i] - lr * grad[i]
