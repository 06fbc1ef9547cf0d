# The GEMM driver: C (M x N) = sum over r < R of a(m, r) b(r, n), cut into register tiles
# that threads share out, each tile finished by an epilogue that writes the layer's
# output (bias + activation, activation derivative, SGD update) while it is in cache.
#
# Operands are read in place through strides wherever the micro-kernel allows it:
#     a(m, r) = A[m * a_sm + r * a_sr]      any strides (broadcast scalars)
#     b(r, n) = B[r * b_sr + n * b_sn]      b_sn == 1: rows read in place
# Only what the micro-kernel cannot read in place is packed into `scratch` first: the last
# partial block of rows of A, the last partial panel of columns of B (zero-padded to the
# tile), or all of B when its columns are strided (b_sn != 1). Nothing is allocated.
#
# Determinism: each element of C is summed over r = 0..R-1 in order by one micro-kernel
# call, whichever thread runs it, so results are bit-identical for any thread count.
# The parallel loop is baseline code; only the leaf micro-kernel is per SIMD target.

from cython cimport floating
from cython.parallel cimport prange

from _activations cimport (ACT_SOFTMAX, activate_row, activation_derivative)

cdef extern from "gemm.h" nogil:
    ctypedef void (*fastbp_mk_f32)(Py_ssize_t, const float*, Py_ssize_t, Py_ssize_t,
                                   const float*, Py_ssize_t, float*)
    ctypedef void (*fastbp_mk_f64)(Py_ssize_t, const double*, Py_ssize_t, Py_ssize_t,
                                   const double*, Py_ssize_t, double*)
    ctypedef struct fastbp_target:
        int code
        int mr_f32, nr_f32, mr_f64, nr_f64
        fastbp_mk_f32 mk_f32
        fastbp_mk_f64 mk_f64
    const fastbp_target* fastbp_active_target
    int fastbp_set_target(int code)
    int fastbp_target_supported(int code)
    enum:
        FASTBP_MAX_MR
        FASTBP_MAX_NR

cdef enum:
    EPI_STORE = 0       # C = acc
    EPI_FORWARD = 1     # C = acc + bias;  C2 = f_act(C)  (softmax: left to a row pass)
    EPI_SGD = 2         # C -= lr * acc    (W updated with its gradient, never stored)
    EPI_DERIV_T = 3     # C^T = acc * f'_act(Z^T, A^T): C, Z, A are N x M (transposed)

# Each thread gets at least this many multiply-adds, so a product of M*N*R multiply-adds
# runs on at most M*N*R / GEMM_MACS_PER_THREAD threads. Measured on the development machine
# (2 cores, AVX-512): a 32x784x128 product (3.2M) ran slower on two threads than on one,
# while 128x784x512 (51M) ran 2.0x faster, so products below ~4M stay on one thread.
cdef enum:
    GEMM_MACS_PER_THREAD = 1 << 21


cdef inline int gemm_threads(Py_ssize_t macs, int n_threads) noexcept nogil:
    cdef Py_ssize_t useful = macs // GEMM_MACS_PER_THREAD
    if useful < 2:
        return 1
    return n_threads if n_threads < useful else <int>useful


cdef inline Py_ssize_t gemm_scratch_size(Py_ssize_t M, Py_ssize_t N, Py_ssize_t R,
                                         bint b_strided) noexcept nogil:
    """Scratch elements gemm() may use for these sizes, whatever the target."""
    cdef Py_ssize_t b_part = R * FASTBP_MAX_NR
    if b_strided:
        b_part = (N + FASTBP_MAX_NR) * R
    return R * FASTBP_MAX_MR + b_part


cdef inline void tile_epilogue(floating* tile, Py_ssize_t nr_full,
                               Py_ssize_t m0, Py_ssize_t mr, Py_ssize_t n0, Py_ssize_t nr,
                               floating* C, Py_ssize_t ldc, floating* C2,
                               const floating* bias, const floating* Z, const floating* A,
                               int kind, int act, floating lr) noexcept nogil:
    cdef Py_ssize_t i, j, idx
    cdef floating* c
    cdef floating* t
    for i in range(mr):
        t = tile + i * nr_full
        if kind == EPI_DERIV_T:
            for j in range(nr):
                idx = (n0 + j) * ldc + m0 + i
                C[idx] = t[j] * activation_derivative(Z[idx], A[idx], act)
            continue
        c = C + (m0 + i) * ldc + n0
        if kind == EPI_STORE:
            for j in range(nr):
                c[j] = t[j]
        elif kind == EPI_SGD:
            for j in range(nr):
                c[j] = c[j] - lr * t[j]
        else:  # EPI_FORWARD
            for j in range(nr):
                c[j] = t[j] + bias[n0 + j]
            if act != ACT_SOFTMAX:
                activate_row(C2 + (m0 + i) * ldc + n0, c, nr, act)


cdef inline void run_tile(const fastbp_target* tgt, Py_ssize_t R,
                          const floating* a, Py_ssize_t a_si, Py_ssize_t a_sk,
                          const floating* b, Py_ssize_t b_sk,
                          Py_ssize_t m0, Py_ssize_t mr, Py_ssize_t n0, Py_ssize_t nr,
                          floating* C, Py_ssize_t ldc, floating* C2,
                          const floating* bias, const floating* Z, const floating* A,
                          int kind, int act, floating lr) noexcept nogil:
    # A function of its own so that each thread's tile lives on that thread's stack.
    cdef floating tile[FASTBP_MAX_MR * FASTBP_MAX_NR]
    cdef Py_ssize_t nr_full
    if floating is float:
        tgt.mk_f32(R, a, a_si, a_sk, b, b_sk, tile)
        nr_full = tgt.nr_f32
    else:
        tgt.mk_f64(R, a, a_si, a_sk, b, b_sk, tile)
        nr_full = tgt.nr_f64
    tile_epilogue(tile, nr_full, m0, mr, n0, nr, C, ldc, C2, bias, Z, A, kind, act, lr)


cdef inline void pack_block(floating* dst, Py_ssize_t width, const floating* src,
                            Py_ssize_t s_r, Py_ssize_t s_x, Py_ssize_t R,
                            Py_ssize_t x_valid) noexcept nogil:
    # dst[r * width + x] = src[r * s_r + x * s_x] for x < x_valid, zero for x < width
    cdef Py_ssize_t r, x
    for r in range(R):
        for x in range(x_valid):
            dst[r * width + x] = src[r * s_r + x * s_x]
        for x in range(x_valid, width):
            dst[r * width + x] = 0


cdef inline void gemm(floating* C, Py_ssize_t ldc,
                      const floating* A, Py_ssize_t a_sm, Py_ssize_t a_sr,
                      const floating* B, Py_ssize_t b_sr, Py_ssize_t b_sn,
                      Py_ssize_t M, Py_ssize_t N, Py_ssize_t R,
                      floating* scratch, int kind, floating* C2, const floating* bias,
                      const floating* Z, const floating* Az, int act, floating lr,
                      int n_threads) noexcept nogil:
    # C (M x N, leading dimension ldc; for EPI_DERIV_T C is N x M) from a (M x R) and
    # b (R x N) as described at the top of this file; see EPI_* for what is written.
    cdef const fastbp_target* tgt = fastbp_active_target
    cdef Py_ssize_t MR, NR, n_mb, n_nb, n_tiles, t, mb, nb, m0, n0, mr, nr, p
    cdef Py_ssize_t full_mb, full_nb, b_sk_full
    cdef floating* a_edge = scratch
    cdef floating* b_pack = scratch + R * FASTBP_MAX_MR
    cdef const floating* a_ptr
    cdef const floating* b_ptr
    cdef Py_ssize_t a_si, a_sk, b_sk
    cdef int nt
    if floating is float:
        MR = tgt.mr_f32
        NR = tgt.nr_f32
    else:
        MR = tgt.mr_f64
        NR = tgt.nr_f64
    n_mb = (M + MR - 1) // MR
    n_nb = (N + NR - 1) // NR
    full_mb = M // MR
    full_nb = N // NR if b_sn == 1 else 0
    nt = gemm_threads(M * N * R, n_threads)

    # Pack what cannot be read in place (zero-padded to the tile).
    if full_mb < n_mb:
        pack_block(a_edge, MR, A + full_mb * MR * a_sm, a_sr, a_sm, R, M - full_mb * MR)
    if b_sn == 1:
        if full_nb < n_nb:
            pack_block(b_pack, NR, B + full_nb * NR, b_sr, 1, R, N - full_nb * NR)
    else:
        for p in prange(n_nb, nogil=True, schedule="static", num_threads=nt):
            pack_block(b_pack + p * R * NR, NR, B + p * NR * b_sn, b_sr, b_sn, R,
                       min(NR, N - p * NR))

    # Tiles run column panel by column panel, so consecutive tiles of a thread share the
    # B panel (it stays in L1/L2) and sweep the rows of A.
    n_tiles = n_mb * n_nb
    for t in prange(n_tiles, nogil=True, schedule="static", num_threads=nt):
        nb = t // n_mb
        mb = t - nb * n_mb
        m0 = mb * MR
        n0 = nb * NR
        mr = min(MR, M - m0)
        nr = min(NR, N - n0)
        if mb < full_mb:
            a_ptr = A + m0 * a_sm
            a_si = a_sm
            a_sk = a_sr
        else:
            a_ptr = a_edge
            a_si = 1
            a_sk = MR
        if nb < full_nb:
            b_ptr = B + n0
            b_sk = b_sr
        elif b_sn == 1:
            b_ptr = b_pack
            b_sk = NR
        else:
            b_ptr = b_pack + nb * R * NR
            b_sk = NR
        run_tile(tgt, R, a_ptr, a_si, a_sk, b_ptr, b_sk, m0, mr, n0, nr,
                 C, ldc, C2, bias, Z, Az, kind, act, lr)
