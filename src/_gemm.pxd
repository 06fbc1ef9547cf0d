# The GEMM driver: C (M x N) = sum over r < R of a(m, r) b(r, n), cut into register tiles
# that threads share out, each tile finished by an epilogue that writes the layer's
# output (bias + activation, or times the activation derivative) while it is in cache.
#
# The micro-kernel wants, for each r, MR scalars of a and NR contiguous values of b:
#     a(m, r) = A[m * a_sm + r * a_sr]      b(r, n) = B[r * b_sr + n * b_sn]
# Rows of A (a_sr == 1: the batch's activations) are read in place, and so is a narrow A^T
# (a_sm == 1, rows under 2 KiB apart: the weight gradient's A_in^T for layers up to 511
# float32 inputs, whose MR scalars for one r are MR neighbours in a row of A_in); a wider
# A^T is packed, as in place each r would be a new cache line and often a new page.
# Narrow rows of B (b_sn == 1, rows under 2 KiB apart, when fewer than 8 row panels sweep
# them) are read in place too. Everything else is packed (GotoBLAS style) into contiguous
# panels: A into panels of MR rows up front, B into one panel of NR columns per thread at
# a time, which that thread then sweeps over the row panels of A (a block of them at a
# time, see GEMM_BLOCK_BYTES) while the panel sits in L2. Packing costs M*R or N*R copies
# against 2*M*N*R flops and pays when a panel is reused: in place, wide B rows put each k
# on a new 4 KiB page (and power-of-two widths in one L1 set), while a narrow panel that
# serves only a few row panels does not repay its copy. The last partial row panel and
# column panel are always packed, zero-padded to the tile. Nothing is allocated here:
# `scratch` holds gemm_scratch_size() elements. (Measurements: benchmarks/RESULTS.md.)
#
# Determinism: each element of C is summed over r = 0..R-1 in order by one micro-kernel
# call, whichever thread runs it, so results are bit-identical for any thread count. That
# also frees the parallel loops to hand out panels dynamically, so that on a shared
# machine a core slowed down by another process takes fewer panels instead of holding the
# other at the barrier.
# The parallel loop is baseline code; only the leaf micro-kernel is per SIMD target.

from cython cimport floating
from cython.parallel cimport prange, threadid

from _activations cimport (ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU, ACT_SOFTMAX, activate_row,
                          activation_derivative)

cdef extern from "pack.h" nogil:
    void fastbp_pack_transposed_f32(float* dst, Py_ssize_t width, const float* src,
                                    Py_ssize_t s_x, Py_ssize_t R, Py_ssize_t x_valid)
    void fastbp_pack_transposed_f64(double* dst, Py_ssize_t width, const double* src,
                                    Py_ssize_t s_x, Py_ssize_t R, Py_ssize_t x_valid)

cdef extern from "gemm.h" nogil:
    ctypedef void (*fastbp_mk_f32)(Py_ssize_t, const float*, Py_ssize_t, Py_ssize_t,
                                   const float*, Py_ssize_t, float*)
    ctypedef void (*fastbp_mk_f64)(Py_ssize_t, const double*, Py_ssize_t, Py_ssize_t,
                                   const double*, Py_ssize_t, double*)
    ctypedef void (*fastbp_mk_epi_f32)(Py_ssize_t, const float*, Py_ssize_t, Py_ssize_t,
                                       const float*, Py_ssize_t, int, int, float*, Py_ssize_t,
                                       float*, const float*, float)
    ctypedef void (*fastbp_mk_epi_f64)(Py_ssize_t, const double*, Py_ssize_t, Py_ssize_t,
                                       const double*, Py_ssize_t, int, int, double*,
                                       Py_ssize_t, double*, const double*, double)
    ctypedef struct fastbp_target:
        int code
        int mr_f32, nr_f32, mr_f64, nr_f64
        fastbp_mk_f32 mk_f32, mk_narrow_f32
        fastbp_mk_f64 mk_f64, mk_narrow_f64
        fastbp_mk_epi_f32 mk_epi_f32, mk_narrow_epi_f32
        fastbp_mk_epi_f64 mk_epi_f64, mk_narrow_epi_f64
    const fastbp_target* fastbp_active_target
    int fastbp_set_target(int code)
    int fastbp_target_supported(int code)
    enum:
        FASTBP_MAX_MR
        FASTBP_MAX_NR
        FASTBP_EPI_STORE
        FASTBP_EPI_FORWARD
        FASTBP_EPI_SGD
        FASTBP_EPI_DERIV
        FASTBP_EPI_FORWARD_ACT
        FASTBP_REGISTER_SGD
        FASTBP_ACT_IDENTITY
        FASTBP_ACT_RELU
        FASTBP_ACT_LEAKY_RELU

cdef enum:
    EPI_STORE = 0       # C = acc
    EPI_FORWARD = 1     # C = acc + bias;  C2 = f_act(C)  (softmax: left to a row pass)
    EPI_SGD = 2         # C -= lr * acc  (W stepped with its gradient, which is never
                        # stored); C2, if not NULL, is set to 1 when a new value is not
                        # finite
    EPI_DERIV = 4       # C = acc * f'_act(Z, A): C, Z, A are M x N, leading dimension ldc
    EPI_FORWARD_ACT = 5 # C = f_act(acc + bias): a layer that keeps no Z, or the logits of
                        # a softmax layer (act identity; the softmax is a row pass after)

cdef extern from "blocking.h":
    enum:
        GEMM_MACS_PER_THREAD "FASTBP_GEMM_MACS_PER_THREAD"
        GEMM_BLOCK_BYTES "FASTBP_GEMM_BLOCK_BYTES"
        GEMM_MIN_BLOCK_PANELS "FASTBP_GEMM_MIN_BLOCK_PANELS"


cdef inline int gemm_threads(Py_ssize_t macs, int n_threads) noexcept nogil:
    # A product of M*N*R multiply-adds runs on at most M*N*R / GEMM_MACS_PER_THREAD
    # threads. The cost that sets the floor is a busy machine's: OpenMP threads spin while
    # they wait at a barrier, and when another process holds a core the spinning thread
    # burns the time slice of the one with the work, so small products stay on one thread.
    cdef Py_ssize_t useful = macs // GEMM_MACS_PER_THREAD
    if useful < 2:
        return 1
    return n_threads if n_threads < useful else <int>useful


cdef inline Py_ssize_t gemm_scratch_size(Py_ssize_t M, Py_ssize_t N, Py_ssize_t R,
                                         int n_threads) noexcept nogil:
    """Scratch elements gemm() needs for these sizes, whatever the target: all of A packed
    in row panels, and one column panel of B per thread."""
    return (M + FASTBP_MAX_MR) * R + <Py_ssize_t>max(n_threads, 1) * FASTBP_MAX_NR * R


cdef inline bint a_in_place(Py_ssize_t a_sm, Py_ssize_t a_sr, size_t item) noexcept nogil:
    # Whether gemm reads A's full row panels where they are (see the top of
    # this file): rows of A, or A^T from rows under 2 KiB apart.
    return a_sr == 1 or (a_sm == 1 and a_sr * <Py_ssize_t>item < 2048)


cdef inline bint b_in_place(Py_ssize_t b_sr, Py_ssize_t b_sn, Py_ssize_t n_mb,
                            size_t item) noexcept nogil:
    # Whether B's full column panels are read where they are: B rows only when narrow and
    # swept by few row panels. With many (a 200-row batch is 34 panels of 6) the packed
    # copy is reused enough to pay for itself, and in place the panel's rows, 512 B or
    # 1 KiB apart, fall into a few L1 sets and are evicted between sweeps.
    return b_sn == 1 and b_sr * <Py_ssize_t>item < 2048 and n_mb < 8


cdef inline void tile_epilogue(floating* tile, Py_ssize_t nr_full,
                               Py_ssize_t m0, Py_ssize_t mr, Py_ssize_t n0, Py_ssize_t nr,
                               floating* C, Py_ssize_t ldc, floating* C2,
                               const floating* bias, const floating* Z, const floating* A,
                               int kind, int act, floating lr) noexcept nogil:
    cdef Py_ssize_t i, j, idx
    cdef floating* c
    cdef floating* t
    cdef floating x, z
    cdef int bad
    for i in range(mr):
        t = tile + i * nr_full
        c = C + (m0 + i) * ldc + n0
        if kind == EPI_DERIV:
            idx = (m0 + i) * ldc + n0
            if act == ACT_IDENTITY:
                for j in range(nr):
                    c[j] = t[j]
            elif act == ACT_RELU:
                # both loads unconditional, so that the choice compiles to a blend, not a
                # branch, which random signs mispredict half the time
                for j in range(nr):
                    x = t[j]
                    z = Z[idx + j]
                    c[j] = x if z > 0 else 0
            else:
                for j in range(nr):
                    c[j] = t[j] * activation_derivative(Z[idx + j], A[idx + j], act)
            continue
        if kind == EPI_STORE:
            for j in range(nr):
                c[j] = t[j]
        elif kind == EPI_SGD:
            # two roundings, fl(c - fl(lr t)), as sgd_update (this module has no FMA)
            bad = 0
            for j in range(nr):
                x = c[j] - lr * t[j]
                c[j] = x
                bad |= x - x != 0       # NaN unless x is finite
            if bad and C2 != NULL:
                C2[0] = 1               # several threads may store the same 1: harmless
        else:  # EPI_FORWARD, EPI_FORWARD_ACT
            for j in range(nr):
                c[j] = t[j] + bias[n0 + j]
            if kind == EPI_FORWARD_ACT:
                if act != ACT_IDENTITY:
                    activate_row(c, c, nr, act)     # in place: element by element
            elif act != ACT_SOFTMAX:
                activate_row(C2 + (m0 + i) * ldc + n0, c, nr, act)


cdef inline int register_epilogue(int kind, int act) noexcept nogil:
    # The FASTBP_EPI_* code of the micro-kernel that applies this epilogue from registers
    # to a full tile (gemm_microkernel.h), or -1 when only tile_epilogue does it.
    if kind == EPI_STORE:
        return FASTBP_EPI_STORE
    if kind == EPI_SGD:
        return FASTBP_EPI_SGD if FASTBP_REGISTER_SGD else -1
    if act != ACT_IDENTITY and act != ACT_RELU and act != ACT_LEAKY_RELU:
        return -1
    if kind == EPI_FORWARD:
        return FASTBP_EPI_FORWARD
    if kind == EPI_FORWARD_ACT:
        return FASTBP_EPI_FORWARD_ACT
    if kind == EPI_DERIV:
        return FASTBP_EPI_DERIV
    return -1


cdef inline int register_act(int act) noexcept nogil:
    if act == ACT_RELU:
        return FASTBP_ACT_RELU
    if act == ACT_LEAKY_RELU:
        return FASTBP_ACT_LEAKY_RELU
    return FASTBP_ACT_IDENTITY


cdef inline void run_tile(const fastbp_target* tgt, bint narrow, Py_ssize_t NR, Py_ssize_t R,
                          const floating* a, Py_ssize_t a_si, Py_ssize_t a_sk,
                          const floating* b, Py_ssize_t b_sk,
                          Py_ssize_t m0, Py_ssize_t mr, Py_ssize_t n0, Py_ssize_t nr,
                          floating* C, Py_ssize_t ldc, floating* C2,
                          const floating* bias, const floating* Z, const floating* A,
                          int kind, int act, floating lr, bint full_rows) noexcept nogil:
    # A function of its own so that each thread's tile lives on that thread's stack.
    cdef floating tile[FASTBP_MAX_MR * FASTBP_MAX_NR]
    cdef int epi = register_epilogue(kind, act)
    cdef Py_ssize_t at = m0 * ldc + n0
    cdef const floating* v
    cdef floating* c2
    if full_rows and nr == NR and epi >= 0 and tgt.mk_epi_f32 != NULL:
        # a full tile whose epilogue the micro-kernel applies from registers
        v = (bias + n0 if kind == EPI_FORWARD or kind == EPI_FORWARD_ACT
             else (Z + at if kind == EPI_DERIV else NULL))
        # C2: EPI_FORWARD's activation output, EPI_SGD's one-element flag, or NULL
        c2 = C2 if kind == EPI_SGD or C2 == NULL else C2 + at
        if floating is float:
            (tgt.mk_narrow_epi_f32 if narrow else tgt.mk_epi_f32)(
                R, a, a_si, a_sk, b, b_sk, epi, register_act(act), C + at, ldc, c2, v, lr)
        else:
            (tgt.mk_narrow_epi_f64 if narrow else tgt.mk_epi_f64)(
                R, a, a_si, a_sk, b, b_sk, epi, register_act(act), C + at, ldc, c2, v, lr)
        return
    if floating is float:
        (tgt.mk_narrow_f32 if narrow else tgt.mk_f32)(R, a, a_si, a_sk, b, b_sk, tile)
    else:
        (tgt.mk_narrow_f64 if narrow else tgt.mk_f64)(R, a, a_si, a_sk, b, b_sk, tile)
    tile_epilogue(tile, NR, m0, mr, n0, nr, C, ldc, C2, bias, Z, A, kind, act, lr)


cdef inline void pack_block(floating* dst, Py_ssize_t width, const floating* src,
                            Py_ssize_t s_r, Py_ssize_t s_x, Py_ssize_t R,
                            Py_ssize_t x_valid) noexcept nogil:
    # dst[r * width + x] = src[r * s_r + x * s_x] for x < x_valid, zero for x < width
    cdef Py_ssize_t r, x
    if s_x == 1:  # contiguous runs: copy and pad a row at a time (a loop, not memcpy: a
        # row is one or two vectors, and a call per row cost more than the copy). Full
        # rows of the tile widths (NR, or MR when a wide A^T is packed) get loops of
        # constant length, which the compiler turns into a few moves per row.
        if x_valid == width and width == 4:
            for r in range(R):
                for x in range(4):
                    dst[r * 4 + x] = src[r * s_r + x]
            return
        if x_valid == width and width == 6:   # A^T's row panels (MR = 6)
            for r in range(R):
                for x in range(6):
                    dst[r * 6 + x] = src[r * s_r + x]
            return
        if x_valid == width and width == 8:
            for r in range(R):
                for x in range(8):
                    dst[r * 8 + x] = src[r * s_r + x]
            return
        if x_valid == width and width == 16:
            for r in range(R):
                for x in range(16):
                    dst[r * 16 + x] = src[r * s_r + x]
            return
        if x_valid == width and width == 32:
            for r in range(R):
                for x in range(32):
                    dst[r * 32 + x] = src[r * s_r + x]
            return
        for r in range(R):
            for x in range(x_valid):
                dst[r * width + x] = src[r * s_r + x]
            for x in range(x_valid, width):
                dst[r * width + x] = 0
        return
    if s_r == 1:  # a transpose (B = W^T): in blocks transposed in registers, see pack.h
        if floating is float:
            fastbp_pack_transposed_f32(dst, width, src, s_x, R, x_valid)
        else:
            fastbp_pack_transposed_f64(dst, width, src, s_x, R, x_valid)
        return
    for r in range(R):
        for x in range(x_valid):
            dst[r * width + x] = src[r * s_r + x * s_x]
        for x in range(x_valid, width):
            dst[r * width + x] = 0


cdef inline void gemm_panel(const fastbp_target* tgt, bint narrow, Py_ssize_t nb,
                            Py_ssize_t MR, Py_ssize_t NR,
                            Py_ssize_t mb_lo, Py_ssize_t mb_hi, bint a_inplace, bint b_inplace,
                            floating* a_pack, floating* b_pack,
                            const floating* A, Py_ssize_t a_sm, Py_ssize_t a_sr,
                            const floating* B, Py_ssize_t b_sr, Py_ssize_t b_sn,
                            Py_ssize_t M, Py_ssize_t N, Py_ssize_t R,
                            floating* C, Py_ssize_t ldc, floating* C2, const floating* bias,
                            const floating* Z, const floating* Az, int kind,
                            int act, floating lr) noexcept nogil:
    # Column panel nb of C over row panels mb_lo..mb_hi-1: pack it from B into b_pack
    # (this thread's) unless it can be read in place, then sweep those row panels with it.
    cdef Py_ssize_t n0 = nb * NR, nr = min(NR, N - nb * NR), mb, m0, mr, b_sk
    cdef const floating* b_ptr
    if b_inplace and nr == NR:
        b_ptr = B + n0
        b_sk = b_sr
    else:
        pack_block(b_pack, NR, B + n0 * b_sn, b_sr, b_sn, R, nr)
        b_ptr = b_pack
        b_sk = NR
    for mb in range(mb_lo, mb_hi):
        m0 = mb * MR
        mr = min(MR, M - m0)
        if a_inplace and mr == MR:
            run_tile(tgt, narrow, NR, R, A + m0 * a_sm, a_sm, a_sr, b_ptr, b_sk, m0, mr, n0, nr,
                     C, ldc, C2, bias, Z, Az, kind, act, lr, True)
        else:
            run_tile(tgt, narrow, NR, R, a_pack + mb * MR * R, 1, MR, b_ptr, b_sk, m0, mr, n0, nr,
                     C, ldc, C2, bias, Z, Az, kind, act, lr, mr == MR)


cdef inline void gemm(floating* C, Py_ssize_t ldc,
                      const floating* A, Py_ssize_t a_sm, Py_ssize_t a_sr,
                      const floating* B, Py_ssize_t b_sr, Py_ssize_t b_sn,
                      Py_ssize_t M, Py_ssize_t N, Py_ssize_t R,
                      floating* scratch, int kind, floating* C2, const floating* bias,
                      const floating* Z, const floating* Az, int act, floating lr,
                      int n_threads) noexcept nogil:
    # C (M x N, leading dimension ldc) from a (M x R) and b (R x N) as described at the
    # top of this file; see EPI_* for what is written.
    # n_threads must not exceed the count scratch was sized for.
    cdef const fastbp_target* tgt = fastbp_active_target
    cdef Py_ssize_t MR, NR, n_mb, n_nb, mb, nb, mb_block, mb_lo, mb_hi
    cdef floating* a_pack = scratch
    cdef floating* b_packs
    cdef bint a_inplace, b_inplace, narrow
    cdef int nt
    if floating is float:
        MR = tgt.mr_f32
        NR = tgt.nr_f32
    else:
        MR = tgt.mr_f64
        NR = tgt.nr_f64
    narrow = N <= NR // 2
    if narrow:
        NR = NR // 2
    n_mb = (M + MR - 1) // MR
    n_nb = (N + NR - 1) // NR
    b_packs = scratch + n_mb * MR * R
    nt = gemm_threads(M * N * R, n_threads)
    a_inplace = a_in_place(a_sm, a_sr, sizeof(floating))
    b_inplace = b_in_place(b_sr, b_sn, n_mb, sizeof(floating))

    if a_inplace:  # only the last, partial row panel
        if M % MR:
            pack_block(a_pack + (n_mb - 1) * MR * R, MR, A + (n_mb - 1) * MR * a_sm,
                       a_sr, a_sm, R, M - (n_mb - 1) * MR)
    elif nt == 1:
        for mb in range(n_mb):
            pack_block(a_pack + mb * MR * R, MR, A + mb * MR * a_sm, a_sr, a_sm, R,
                       min(MR, M - mb * MR))
    else:
        for mb in prange(n_mb, nogil=True, schedule="dynamic", chunksize=4,
                       num_threads=nt):
            pack_block(a_pack + mb * MR * R, MR, A + mb * MR * a_sm, a_sr, a_sm, R,
                       min(MR, M - mb * MR))

    # Row blocks: the column panels sweep GEMM_BLOCK_BYTES of A's rows at a time, so that
    # those rows stay in L2 while every panel passes over them (sweeping all of a tall A
    # for each panel reads it from memory once per panel). Each block packs B's panels
    # again, so blocks are as large as L2 allows, and never under GEMM_MIN_BLOCK_PANELS
    # row panels, where repacking B would cost more than the blocks save. Training
    # batches are one block.
    mb_block = max(GEMM_BLOCK_BYTES // (MR * R * <Py_ssize_t>sizeof(floating)),
                   GEMM_MIN_BLOCK_PANELS)
    mb_lo = 0
    while mb_lo < n_mb:
        mb_hi = min(mb_lo + mb_block, n_mb)
        # One thread runs the loop itself: even a one-thread OpenMP region has a fixed
        # cost, a noticeable share of a small layer's product.
        if nt == 1:
            for nb in range(n_nb):
                gemm_panel(tgt, narrow, nb, MR, NR, mb_lo, mb_hi, a_inplace, b_inplace,
                           a_pack, b_packs, A, a_sm, a_sr, B, b_sr, b_sn, M, N, R, C, ldc,
                           C2, bias, Z, Az, kind, act, lr)
        else:
            for nb in prange(n_nb, nogil=True, schedule="dynamic", num_threads=nt):
                gemm_panel(tgt, narrow, nb, MR, NR, mb_lo, mb_hi, a_inplace, b_inplace,
                           a_pack, b_packs + threadid() * NR * R,
                           A, a_sm, a_sr, B, b_sr, b_sn, M, N, R, C, ldc, C2, bias, Z, Az,
                           kind, act, lr)
        mb_lo = mb_hi
