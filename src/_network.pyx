# The whole network in compiled code: the forward pass, a step's loss and gradients, and
# the epoch loop of minibatch training, all without the GIL. The memory plan is in
# _plan.pxd, the passes of a step in _passes.pxd; this file holds the Python entry points
# and the Trainer, which keeps what an epoch needs between calls.
#
# The Python layer (fastbp/network.py) has checked every argument; Trainer checks only
# what keeps memory safe (dtypes, lengths of the buffers it points into).

from cython cimport floating
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libc.math cimport isfinite, fabs, exp
from libc.float cimport FLT_MAX, DBL_MAX
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer

import numpy as np

cnp.import_array()

from _plan cimport Plan, make_plan, free_plan, n_parts
from _passes cimport Objective, Batch, Buffers, StepResult, step, forward_rows, forward_rows_of
from _plan cimport part_rows
from _sparse cimport CsrRows, sparse_scratch_size
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from _gemm cimport fastbp_set_target, fastbp_target_supported, fastbp_active_target
from _gemm cimport GEMM_MACS_PER_THREAD, gemm_scratch_size
from _plan cimport PARTS_MAX_PARAMS
from cython.parallel cimport prange
from _optim cimport OptStep, OPT_NONE, OPT_SGD, OPT_ADAM, adam_set_step
from _activations cimport ACT_SOFTMAX
from _losses cimport (LOSS_LOG_LOSS_CLIPPED as _LOSS_LOG_LOSS_CLIPPED,
                     LOSS_BINARY_LOG_LOSS_CLIPPED as _LOSS_BINARY_LOG_LOSS_CLIPPED)

cdef extern from *:
    """
    #include <time.h>
    /* seconds on a clock that only moves forward (CLOCK_MONOTONIC where POSIX has it;
     * C11's TIME_UTC elsewhere, MSVC) */
    static double fastbp_now(void) {
        struct timespec ts;
    #if defined(CLOCK_MONOTONIC)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    #else
        timespec_get(&ts, TIME_UTC);
    #endif
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    """
    double fastbp_now() nogil

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

include "_shuffle.pxi"

# The epoch loop looks for signals (Ctrl-C) this often, taking the GIL only for that.
cdef double SIGNAL_CHECK_S = 0.02

# Codes the Python layer reads from here rather than retyping them.
OPTIMIZER_NONE = OPT_NONE
# scikit-learn's clipped log losses (src/_losses.pxd), for fastbp.sklearn's networks
LOSS_LOG_LOSS_CLIPPED = _LOSS_LOG_LOSS_CLIPPED
LOSS_BINARY_LOG_LOSS_CLIPPED = _LOSS_BINARY_LOG_LOSS_CLIPPED
OPTIMIZER_SGD = OPT_SGD
OPTIMIZER_ADAM = OPT_ADAM
ACTIVATION_SOFTMAX = ACT_SOFTMAX


cpdef enum EpochStatus:
    EPOCH_DONE = 0               # every batch stepped
    EPOCH_LOSS_NOT_FINITE = 1    # a batch's loss was not finite: stopped before its step
    EPOCH_PARAMS_NOT_FINITE = 2  # the last step made a value non-finite (applied, not
                                 # counted: the caller restores and replays)
    EPOCH_BAD_INPUT = 3          # a row index or label out of range (changed after it was
                                 # checked): stopped before that batch


cpdef enum RecordColumn:
    # the columns of Trainer.run_epochs' record, one row per epoch
    REC_LOSS_SUM = 0             # sum over batches of loss * rows
    REC_PENALTY_SUM = 1          # sum over batches of penalty * rows
    REC_ROWS = 2
    REC_STEPS = 3
    REC_STATUS = 4               # an EpochStatus
    REC_SECONDS = 5
    REC_REPORTED_LOSS = 6        # the loss as scikit-learn reports it
    REC_COLUMNS = 7


cdef struct EpochResult:
    double total                 # sum over batches of loss * rows
    double total_penalty
    Py_ssize_t rows
    Py_ssize_t steps
    int status


def set_target(int code):
    """Make this module's kernels use SIMD target `code` (0 baseline, 1 avx2, 2 avx512);
    False when this build or CPU cannot run it."""
    return fastbp_set_target(code) == 0


def target_supported(int code):
    return fastbp_target_supported(code) != 0


def active_target():
    return fastbp_active_target.code


def parts_of(const Py_ssize_t[::1] sizes, Py_ssize_t capacity):
    """The row parts a training step cuts a batch of this capacity into (_plan.pxd)."""
    return n_parts(&sizes[0], sizes.shape[0] - 1, capacity)


def work_size(const Py_ssize_t[::1] sizes, const int[::1] acts, Py_ssize_t capacity,
              bint input_slot, bint training, int n_threads):
    """(parameter count, workspace length) of the plan for these layer sizes, batch
    capacity and thread count; training: a plan for steps (row parts), else the forward
    pass alone."""
    cdef Plan p
    cdef int parts = n_parts(&sizes[0], sizes.shape[0] - 1, capacity) if training else 1
    make_plan(&p, sizes, acts, 0, capacity, input_slot, parts, n_threads)
    free_plan(&p)
    return p.n_params, p.work_size


cdef inline void* data_of(object array, object dtype, Py_ssize_t length, str name,
                          bint writable=True) except NULL:
    # the address of a C-contiguous array of `dtype` with at least `length` elements (the
    # memory a Trainer or entry point keeps a pointer into); writable unless only read
    if (not isinstance(array, np.ndarray) or array.dtype != dtype
            or not array.flags.c_contiguous or array.size < length
            or (writable and not array.flags.writeable)):
        raise ValueError(f"{name}: a {'writable ' if writable else ''}C-contiguous "
                         f"{np.dtype(dtype).name} array of at least {length} elements is "
                         f"needed")
    if array.size == 0:
        return <void*><Py_ssize_t>1     # never read: a non-NULL marker
    return <void*><Py_ssize_t>array.__array_interface__["data"][0]


cdef tuple csr_arrays(object X, Py_ssize_t n_features, Py_ssize_t lo, Py_ssize_t hi):
    # (data, indices, indptr) of X, a CSR as fastbp._validation.CsrRows holds it (int64
    # indices and indptr), each read once: the caller keeps and points into these. What
    # the kernels index by is checked here for rows [lo, hi), so that memory safety never
    # rests on the Python layer: indptr non-decreasing within the arrays, every index of
    # those rows in [0, n_features).
    arrays = (X.data, X.indices, X.indptr)
    cdef const int64_t[::1] indices = arrays[1]
    cdef const int64_t[::1] indptr = arrays[2]
    cdef Py_ssize_t r = 0, n_rows = X.shape[0], nnz = indices.shape[0]
    cdef int64_t q
    if (X.shape[1] != n_features or indptr.shape[0] != n_rows + 1 or arrays[0].shape[0] != nnz
            or lo < 0 or hi > n_rows or lo > hi):
        raise ValueError("a sparse X with inconsistent arrays or the wrong width")
    with nogil:
        for r in range(lo, hi):
            if indptr[r] < 0 or indptr[r] > indptr[r + 1] or indptr[r + 1] > nnz:
                break
        else:
            for q in range(indptr[lo], indptr[hi]):
                if indices[q] < 0 or indices[q] >= n_features:
                    break
            else:
                r = -1
    if r != -1:
        raise ValueError("a sparse X whose indptr or indices are out of range")
    return arrays


def sparse_part_nnz(indptr, Py_ssize_t rows):
    """The most entries any `rows` distinct rows of a CSR hold: the sum of its `rows`
    longest rows' lengths (a batch that repeats rows may hold more: _sparse.pxd)."""
    lengths = np.diff(np.asarray(indptr))
    if rows < lengths.shape[0]:
        lengths = np.partition(lengths, lengths.shape[0] - rows)[lengths.shape[0] - rows:]
    return int(lengths.sum())


cdef int set_csr(Batch* batch, tuple arrays, object dtype, object scratch,
                 Py_ssize_t slot_len) except -1:
    # batch's sparse fields <- arrays (csr_arrays', values of dtype) and its transposes'
    # scratch (int64, parts slots of slot_len)
    data, indices, indptr = arrays
    batch.sp_data = data_of(data, dtype, data.shape[0], "X.data", False)
    batch.sp_indices = <const int64_t*>data_of(indices, np.int64, indices.shape[0],
                                               "X.indices", False)
    batch.sp_indptr = <const int64_t*>data_of(indptr, np.int64, indptr.shape[0],
                                              "X.indptr", False)
    batch.sp_scratch = <int64_t*>data_of(scratch, np.int64, scratch.shape[0], "scratch")
    batch.sp_scratch_len = slot_len
    return 0


def forward_sparse(floating[::1] params, floating[::1] work, const Py_ssize_t[::1] sizes,
                   const int[::1] acts, X, Py_ssize_t lo, Py_ssize_t hi,
                   floating[:, ::1] out, int n_threads, bint exp_output=False):
    """out (hi - lo, n_L) <- the network's output for rows [lo, hi) of the CSR X
    (CsrRows, values of params' dtype); work: work_size(capacity=hi - lo,
    input_slot=False, training=False). exp_output: as Forward's."""
    cdef Py_ssize_t j
    cdef Plan p
    cdef CsrRows x
    cdef Py_ssize_t B = hi - lo
    data, indices, indptr = csr_arrays(X, sizes[0], lo, hi)
    make_plan(&p, sizes, acts, 0, B, False, 1, n_threads)
    try:
        if (params.shape[0] < p.n_params or work.shape[0] < p.work_size or B < 1
                or out.shape[0] < B or out.shape[1] != p.sizes[p.n_layers]):
            raise ValueError("forward_sparse: buffers too short for the plan")
        x.data = data_of(data, np.float64 if floating is double else np.float32,
                         data.shape[0], "X.data", False)
        x.indices = <const int64_t*>data_of(indices, np.int64, indices.shape[0],
                                            "X.indices", False)
        x.indptr = <const int64_t*>data_of(indptr, np.int64, indptr.shape[0],
                                           "X.indptr", False)
        x.rows = NULL
        x.first = lo
        x.scratch = NULL
        x.scratch_nnz = 0
        with nogil:
            forward_rows_of(&p, &params[0], &work[0], &work[0] + p.scratch_off, NULL, &x,
                            0, B, n_threads)
            memcpy(&out[0, 0], &work[0] + p.a_off[p.n_layers],
                   B * p.sizes[p.n_layers] * sizeof(floating))
            if exp_output:
                # as forward_into: the poisson loss's means, rounded from double
                for j in range(B * p.sizes[p.n_layers]):
                    (&out[0, 0])[j] = <floating>exp(<double>(&out[0, 0])[j])
    finally:
        free_plan(&p)


def forward(floating[::1] params, floating[::1] work, const Py_ssize_t[::1] sizes,
            const int[::1] acts, const floating[:, ::1] X, floating[:, ::1] out,
            int n_threads):
    """out (B, n_L) <- the network's output for X (B, n_0); work: work_size(capacity=B,
    input_slot=False, training=False)."""
    cdef Plan p
    cdef Py_ssize_t B = X.shape[0]
    make_plan(&p, sizes, acts, 0, B, False, 1, n_threads)
    try:
        if params.shape[0] < p.n_params or work.shape[0] < p.work_size:
            raise ValueError("forward: buffers too short for the plan")
        with nogil:
            forward_rows(&p, &params[0], &work[0], &work[0] + p.scratch_off, &X[0, 0], 0, B,
                         n_threads)
            memcpy(&out[0, 0], &work[0] + p.a_off[p.n_layers],
                   B * p.sizes[p.n_layers] * sizeof(floating))
    finally:
        free_plan(&p)


cdef inline bint all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    # whether no element is NaN or infinite; in blocks without an early exit inside, so
    # that the comparisons vectorize (NaN fails <=, as infinity fails <= the largest value)
    cdef Py_ssize_t i, j, stop
    cdef floating largest = FLT_MAX if floating is float else DBL_MAX
    cdef bint bad = False
    for i in range(0, n, 1024):
        stop = min(i + 1024, n)
        for j in range(i, stop):
            bad |= not (fabs(x[j]) <= largest)
        if bad:
            return False
    return True


cdef enum:
    # rows of a batch's share a thread of a row-split forward pass takes: a multiple of
    # every register tile's row count (a row's result never depends on its tile anyway:
    # a partial tile is padded and runs the same micro-kernel)
    ROW_SHARE_QUANTUM = 64


cdef inline bint splits_rows(const Py_ssize_t* sizes, Py_ssize_t L) noexcept nogil:
    # Whether a threaded forward pass gives each thread its own rows through every layer
    # (one parallel region; each thread packs the weights itself) rather than sharing
    # each product's tiles: for a network of at most PARTS_MAX_PARAMS parameters, the
    # training step's rule for row parts (_plan.pxd), whose weights are cheap to repack.
    cdef Py_ssize_t l, n_params = 0
    for l in range(L):
        n_params += (sizes[l] + 1) * sizes[l + 1]
    return n_params <= PARTS_MAX_PARAMS


cdef inline Py_ssize_t threaded_macs_per_row(const Py_ssize_t* sizes,
                                             Py_ssize_t L) noexcept nogil:
    # The multiply-adds per row that decide the threads of a forward pass: the largest
    # product's, as gemm_threads decides each product's, for row-split passes too. (The
    # whole pass's count would thread smaller batches, which a busy machine makes slower:
    # each thread pool's spinning steals the cores the others wait for.)
    cdef Py_ssize_t l, widest = 1
    for l in range(L):
        widest = max(widest, sizes[l] * sizes[l + 1])
    return widest


def serial_rows(const Py_ssize_t[::1] sizes):
    """The most rows of a batch whose forward pass runs on one thread whatever n_threads
    says: its largest product has under two threads' worth of multiply-adds
    (GEMM_MACS_PER_THREAD each, as _gemm.pxd's gemm_threads counts them), so resolving
    the thread count would change nothing."""
    return max(1, (2 * <Py_ssize_t>GEMM_MACS_PER_THREAD - 1)
               // threaded_macs_per_row(&sizes[0], sizes.shape[0] - 1))


cdef class Forward:
    """The forward pass of one network for batches of up to `capacity` rows on n_threads,
    its plan and workspace made once: a prediction pays for one check of X and one
    output array. It points into the network's parameter buffer (kept referenced); the
    network's lock keeps two threads from sharing its workspace."""

    cdef Plan plan
    cdef bint f64
    cdef bint exp_output          # the outputs are exp of the last layer's (identity) ones
    cdef int type_num
    cdef void* params
    cdef void* work
    cdef void* row_scratch        # a row-split pass's GEMM scratch, a slot a thread
    cdef Py_ssize_t row_scratch_total
    cdef bint split               # threads take rows, not tiles (splits_rows)
    cdef object arrays            # what params and work point into
    cdef readonly int n_threads
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t work_bytes

    def __cinit__(self, params, sizes, acts, Py_ssize_t capacity, int n_threads,
                  bint exp_output=False):
        cdef Py_ssize_t[::1] sizes_view
        cdef int[::1] acts_view
        self.plan.w_off = NULL
        self.plan.partials = NULL
        dtype = params.dtype
        if dtype != np.float32 and dtype != np.float64:
            raise TypeError("Forward: float32 or float64 parameters")
        self.f64 = dtype == np.float64
        self.exp_output = exp_output
        self.type_num = cnp.NPY_DOUBLE if self.f64 else cnp.NPY_FLOAT
        sizes = np.array(sizes, dtype=np.intp)
        acts = np.array(acts, dtype=np.intc)
        sizes_view = sizes
        acts_view = acts
        if (capacity < 1 or n_threads < 1 or sizes.shape[0] < 2
                or acts.shape[0] != sizes.shape[0] - 1):
            raise ValueError("Forward: bad sizes, capacity or threads")
        cdef Py_ssize_t L = sizes.shape[0] - 1
        cdef int nt
        self.split = n_threads > 1 and splits_rows(&sizes_view[0], L)
        # a row-split pass needs no shared tiles: the plan's scratch is one thread's
        make_plan(&self.plan, sizes_view, acts_view, 0, capacity, False, 1,
                  1 if self.split else n_threads)
        work = np.empty(self.plan.work_size, dtype=dtype)
        self.params = data_of(params, dtype, self.plan.n_params, "params", False)
        self.work = data_of(work, dtype, self.plan.work_size, "work")
        # rows() runs nt of the n_threads (2 <= nt) with slots for row_share(B, nt) rows,
        # B <= capacity: room for the largest nt slots of any such nt
        self.row_scratch_total = 0
        if self.split:
            for nt in range(2, n_threads + 1):
                self.row_scratch_total = max(self.row_scratch_total, nt * row_slot_len(
                    &self.plan, row_share(capacity, nt)))
        row_scratch = np.empty(self.row_scratch_total, dtype=dtype)
        self.row_scratch = data_of(row_scratch, dtype, row_scratch.shape[0], "scratch")
        self.arrays = (params, work, row_scratch, sizes, acts)
        self.capacity = capacity
        self.n_threads = n_threads
        self.work_bytes = work.nbytes + row_scratch.nbytes

    def __dealloc__(self):
        free_plan(&self.plan)

    cdef void rows(self, const void* X, void* out, Py_ssize_t B) noexcept nogil:
        # out (B, n_L) <- the output for X (B, n_0), B <= capacity. Row-split: the
        # threads gemm_threads would give the largest product, each thread its share of
        # rows through every layer (one parallel region instead of one per layer); each
        # row's arithmetic is the same on any thread, so the bits do not depend on the
        # count.
        cdef Py_ssize_t t, share, lo, hi, slot
        cdef Py_ssize_t L = self.plan.n_layers
        cdef int nt = 1
        if self.split:
            nt = <int>min(<Py_ssize_t>self.n_threads,
                          B * threaded_macs_per_row(self.plan.sizes, L) // GEMM_MACS_PER_THREAD)
        if nt < 2:
            if self.f64:
                forward_into(&self.plan, <const double*>self.params, <double*>self.work,
                             <double*>self.work + self.plan.scratch_off, <const double*>X,
                             <double*>out, 0, B, 1 if self.split else self.n_threads,
                             self.exp_output)
            else:
                forward_into(&self.plan, <const float*>self.params, <float*>self.work,
                             <float*>self.work + self.plan.scratch_off, <const float*>X,
                             <float*>out, 0, B, 1 if self.split else self.n_threads,
                             self.exp_output)
            return
        share = row_share(B, nt)
        slot = row_slot_len(&self.plan, share)    # nt slots fit in row_scratch_total
        for t in prange(nt, nogil=True, schedule="static", num_threads=nt):
            lo = t * share
            hi = min(lo + share, B)
            if lo < hi:
                if self.f64:
                    forward_into(&self.plan, <const double*>self.params,
                                 <double*>self.work,
                                 <double*>self.row_scratch + t * slot,
                                 <const double*>X, <double*>out, lo, hi, 1, self.exp_output)
                else:
                    forward_into(&self.plan, <const float*>self.params, <float*>self.work,
                                 <float*>self.row_scratch + t * slot,
                                 <const float*>X, <float*>out, lo, hi, 1, self.exp_output)

    def plain(self, X):
        """The output (a new (B, n_L) array) for X when X is a plain batch: an ndarray
        (not a subclass) of the network's dtype in native byte order, C-contiguous and
        aligned, of shape (B, n_0) with 1 <= B <= capacity, every value finite. None for
        any other X, which the caller then checks and converts the usual way (and whose
        errors it raises)."""
        cdef cnp.ndarray arr
        cdef cnp.npy_intp dims[2]
        cdef Py_ssize_t B, n0 = self.plan.sizes[0]
        cdef const void* x
        cdef bint finite
        if not cnp.PyArray_CheckExact(X):
            return None
        arr = <cnp.ndarray>X
        if (cnp.PyArray_NDIM(arr) != 2 or cnp.PyArray_TYPE(arr) != self.type_num
                or not cnp.PyArray_ISCARRAY_RO(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)):
            return None
        B = cnp.PyArray_DIM(arr, 0)
        if B < 1 or B > self.capacity or cnp.PyArray_DIM(arr, 1) != n0:
            return None
        x = cnp.PyArray_DATA(arr)
        if self.f64:
            finite = all_finite(<const double*>x, B * n0)
        else:
            finite = all_finite(<const float*>x, B * n0)
        if not finite:
            return None
        dims[0] = B
        dims[1] = self.plan.sizes[self.plan.n_layers]
        out = cnp.PyArray_EMPTY(2, dims, self.type_num, 0)
        if B * n0 * (8 if self.f64 else 4) < 65536:
            # too little work to repay releasing and taking back the GIL
            self.rows(x, cnp.PyArray_DATA(<cnp.ndarray>out), B)
        else:
            with nogil:
                self.rows(x, cnp.PyArray_DATA(<cnp.ndarray>out), B)
        return out

    def run(self, X, out):
        """out <- the output for X, both checked by the caller: C-contiguous arrays of the
        network's dtype, X (B, n_0) finite, out (B, n_L), B <= capacity."""
        cdef Py_ssize_t B = X.shape[0]
        cdef Py_ssize_t n0 = self.plan.sizes[0], nL = self.plan.sizes[self.plan.n_layers]
        dtype = np.float64 if self.f64 else np.float32
        if (B > self.capacity or X.ndim != 2 or out.ndim != 2 or X.shape[1] != n0
                or out.shape[0] != B or out.shape[1] != nL):
            raise ValueError("Forward.run: X and out do not fit the plan")
        cdef const void* x = data_of(X, dtype, B * n0, "X", False)
        cdef void* y = data_of(out, dtype, B * nL, "out")
        if B == 0:
            return
        with nogil:
            self.rows(x, y, B)


cdef inline Py_ssize_t row_slot_len(const Plan* p, Py_ssize_t rows) noexcept nogil:
    # GEMM scratch of one thread taking `rows` rows through every layer on its own
    cdef Py_ssize_t l, n = 0
    for l in range(p.n_layers):
        n = max(n, gemm_scratch_size(rows, p.sizes[l + 1], p.sizes[l], 1))
    return n


cdef inline Py_ssize_t row_share(Py_ssize_t B, int n_threads) noexcept nogil:
    # rows of each thread's share of a row-split pass (the last may have fewer)
    cdef Py_ssize_t share = (B + n_threads - 1) // n_threads
    return (share + ROW_SHARE_QUANTUM - 1) // ROW_SHARE_QUANTUM * ROW_SHARE_QUANTUM


cdef inline void forward_into(const Plan* p, const floating* params, floating* work,
                              floating* scratch, const floating* X, floating* out,
                              Py_ssize_t lo, Py_ssize_t hi, int n_threads,
                              bint exp_output) noexcept nogil:
    # rows [lo, hi) of the batch X through every layer into the same rows of out
    cdef Py_ssize_t j, nL = p.sizes[p.n_layers]
    cdef floating* dst = out + lo * nL
    forward_rows(p, params, work, scratch, X, lo, hi, n_threads)
    memcpy(dst, work + p.a_off[p.n_layers] + lo * nL, (hi - lo) * nL * sizeof(floating))
    if exp_output:
        # the means exp(z) of the poisson loss, rounded from double as its loss rounds them
        for j in range((hi - lo) * nL):
            dst[j] = <floating>exp(<double>dst[j])


cdef class StopRule:
    """scikit-learn's stopping rule without early stopping, as its MLP applies it after
    each epoch: a loss above best_loss - tol adds one to no_improvement_count, another
    sets it to 0, a lower loss is the new best; training stops once the count exceeds
    n_iter_no_change. epochs and steps count what the last run_epochs completed."""
    cdef public double best_loss
    cdef public double no_improvement_count
    cdef public double tol
    cdef public double n_iter_no_change
    cdef public bint mse
    cdef public Py_ssize_t epochs
    cdef public long long steps

    def __init__(self, double best_loss, double no_improvement_count, double tol,
                 double n_iter_no_change, bint mse):
        self.best_loss = best_loss
        self.no_improvement_count = no_improvement_count
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.mse = mse
        self.epochs = 0
        self.steps = 0

    cdef double reported_loss(self, double total, double total_penalty, double rows,
                              double scale) noexcept:
        # the epoch's loss as scikit-learn reports it: the mean loss plus the penalty;
        # for the squared error 0.5 * its mean plus the penalty
        if self.mse:
            return 0.5 * (total / scale / rows) + total_penalty / rows
        return (total + total_penalty) / rows

    cdef bint after_epoch(self, double value) noexcept:
        # the rule applied to an epoch's reported loss; True: stop
        if value > self.best_loss - self.tol:
            self.no_improvement_count += 1
        else:
            self.no_improvement_count = 0
        if value < self.best_loss:
            self.best_loss = value
        return self.no_improvement_count > self.n_iter_no_change


cdef class Trainer:
    """What training steps of one network need, kept between calls: the plan for a batch
    capacity and thread count, pointers to the network's buffers (parameters, gradients,
    the optimizer's state) and to its workspace, the optimizer's settings, the objective,
    and the data bound for the next epochs. The arrays it points into are kept referenced
    here. Every method runs its loop without the GIL; the network's lock (fastbp/network.py)
    keeps two threads from using one Trainer at once."""

    cdef Plan plan
    cdef Buffers buf
    cdef Batch batch
    cdef Objective obj
    cdef OptStep opt
    cdef double lr
    cdef bint f64
    cdef Py_ssize_t n_rows        # rows of the bound data
    cdef object arrays            # what buf and batch point into
    cdef object data
    cdef readonly int n_threads
    cdef readonly object dtype
    cdef readonly Py_ssize_t capacity

    def __cinit__(self, params, grads, tuple state, sizes, acts, int loss,
                  Py_ssize_t capacity, int n_threads):
        cdef Py_ssize_t[::1] sizes_view
        cdef int[::1] acts_view
        self.plan.w_off = NULL
        self.plan.partials = NULL
        self.dtype = params.dtype
        if self.dtype != np.float32 and self.dtype != np.float64:
            raise TypeError("Trainer: float32 or float64 parameters")
        self.f64 = self.dtype == np.float64
        sizes = np.array(sizes, dtype=np.intp)
        acts = np.array(acts, dtype=np.intc)
        sizes_view = sizes
        acts_view = acts
        if (capacity < 1 or n_threads < 1 or sizes.shape[0] < 2
                or acts.shape[0] != sizes.shape[0] - 1 or len(state) > 2):
            raise ValueError("Trainer: bad sizes, capacity, threads or state")
        make_plan(&self.plan, sizes_view, acts_view, loss, capacity, True,
                  n_parts(&sizes_view[0], sizes.shape[0] - 1, capacity), n_threads)
        self.capacity = capacity
        self.n_threads = n_threads
        work = np.empty(self.plan.work_size, dtype=self.dtype)
        row_buf = np.empty(capacity, dtype=np.int64)
        label_buf = np.empty(capacity, dtype=np.int64)
        w_buf = np.empty(capacity, dtype=self.dtype)
        n = self.plan.n_params
        self.buf.params = data_of(params, self.dtype, n, "params")
        self.buf.grads = data_of(grads, self.dtype, n, "grads")
        self.buf.state1 = data_of(state[0], self.dtype, n, "state") if len(state) > 0 else NULL
        self.buf.state2 = data_of(state[1], self.dtype, n, "state") if len(state) > 1 else NULL
        self.buf.work = data_of(work, self.dtype, self.plan.work_size, "work")
        self.buf.row_buf = <int64_t*>data_of(row_buf, np.int64, capacity, "row_buf")
        self.buf.label_buf = <int64_t*>data_of(label_buf, np.int64, capacity, "label_buf")
        self.buf.w_buf = data_of(w_buf, self.dtype, capacity, "w_buf")
        self.arrays = (params, grads, state, work, row_buf, label_buf, w_buf, sizes, acts)
        self.batch.X = NULL
        self.batch.sp_indptr = NULL
        self.n_rows = 0
        self.set_objective(1.0, 0.0, False)
        self.set_optimizer(OPT_SGD, 0.0, 0.0, False, 0.0, 0.0, 0.0)

    def __dealloc__(self):
        free_plan(&self.plan)

    @property
    def work_bytes(self):
        """Bytes of the workspace this Trainer allocated."""
        return self.plan.work_size * (8 if self.f64 else 4)

    @property
    def parts(self):
        """Row parts of a full batch (_plan.pxd)."""
        return self.plan.parts

    def set_optimizer(self, int kind, double lr, double momentum, bint nesterov,
                      double beta1, double beta2, double eps):
        """The optimizer's settings (an OPTIMIZER_* code; lr may change between epochs)."""
        if kind != OPT_SGD and kind != OPT_ADAM:
            raise ValueError("Trainer: kind must be OPTIMIZER_SGD or OPTIMIZER_ADAM")
        if kind == OPT_SGD and momentum != 0 and self.buf.state1 == NULL:
            raise ValueError("Trainer: momentum needs a state buffer")
        if kind == OPT_ADAM and self.buf.state2 == NULL:
            raise ValueError("Trainer: Adam needs two state buffers")
        self.opt.kind = kind
        self.opt.lr = lr
        self.opt.momentum = momentum
        self.opt.nesterov = nesterov
        self.opt.beta1 = beta1
        self.opt.beta2 = beta2
        self.opt.eps = eps
        self.lr = lr

    def set_objective(self, double scale, double l2, bint l2_per_sample,
                      bint step_non_finite=False):
        """The loss's scale and the L2 penalty (per sample: scikit-learn's alpha).
        step_non_finite: epochs go on through non-finite losses and parameters, stepping
        as scikit-learn's fit does, instead of stopping before the step (fastbp's rule)."""
        self.obj.scale = scale
        self.obj.l2 = l2
        self.obj.l2_per_sample = l2_per_sample
        self.obj.step_non_finite = step_non_finite

    def loss_gradient(self, const int64_t[::1] rows):
        """The objective over the bound data's `rows` as one batch (at most the capacity):
        its gradient with respect to every parameter, the penalty's included, into the
        gradient buffer; the parameters unchanged. Returns (data loss times the scale,
        penalty): a full-batch optimizer's function and gradient."""
        cdef StepResult res
        cdef OptStep o = self.opt
        cdef Batch batch = self.batch
        cdef double value
        # each row index is checked where step() reads it (copy_checked: bad_input)
        if self.batch.X == NULL:
            raise ValueError("Trainer: no data bound")
        if rows.shape[0] < 1 or rows.shape[0] > self.capacity:
            raise ValueError("Trainer.loss_gradient: between 1 and capacity rows")
        o.kind = OPT_NONE
        batch.rows = &rows[0]
        batch.size = rows.shape[0]
        with nogil:
            if self.f64:
                value = step(&self.plan, &self.buf, &batch, &self.obj, &o, True,
                             self.n_threads, &res, <double*>NULL)
            else:
                value = step(&self.plan, &self.buf, &batch, &self.obj, &o, True,
                             self.n_threads, &res, <float*>NULL)
        if res.bad_input:
            raise ValueError("a row index or label is out of range: the data changed "
                             "after they were checked")
        return value, res.penalty

    def bind(self, X, labels, Y, weights):
        """The data of the next epochs: X (n, n_0), dense or a CSR as
        fastbp._validation.CsrRows holds it; labels (n,) int64 or Y (n, n_L); row weights
        (n,) or None. Kept referenced until the next bind."""
        cdef Py_ssize_t n = X.shape[0], n0 = self.plan.sizes[0]
        cdef Py_ssize_t nL = self.plan.sizes[self.plan.n_layers], slot_len
        cdef int parts = self.plan.parts
        self.batch.X = NULL
        self.batch.sp_indptr = NULL
        scratch = arrays = None
        try:
            if isinstance(X, np.ndarray):
                if X.ndim != 2 or X.shape[1] != n0:
                    raise ValueError("Trainer.bind: X has the wrong shape")
                self.batch.X = data_of(X, self.dtype, n * n0, "X", False)
            else:
                arrays = csr_arrays(X, n0, 0, n)
                # a slot per part, for the most entries a part's rows can hold
                slot_len = sparse_scratch_size(n0, sparse_part_nnz(
                    arrays[2], part_rows(self.capacity, parts) if parts > 1 else self.capacity))
                scratch = np.empty(parts * slot_len, dtype=np.int64)
                set_csr(&self.batch, arrays, self.dtype, scratch, slot_len)
                self.batch.X = <const void*>self.batch.sp_indptr    # bound: not NULL
            self.batch.labels = NULL
            self.batch.Y = NULL
            self.batch.w = NULL
            if labels is not None:
                if labels.shape != (n,):
                    raise ValueError("Trainer.bind: labels has the wrong shape")
                self.batch.labels = <const int64_t*>data_of(labels, np.int64, n, "labels", False)
            else:
                if Y is None or Y.shape != (n, nL):
                    raise ValueError("Trainer.bind: Y has the wrong shape")
                self.batch.Y = data_of(Y, self.dtype, n * nL, "Y", False)
            if weights is not None:
                if weights.shape != (n,):
                    raise ValueError("Trainer.bind: weights has the wrong shape")
                self.batch.w = data_of(weights, self.dtype, n, "weights", False)
            self.data = (X, labels, Y, weights, scratch, arrays)
        except BaseException:
            # nothing half bound: the epoch loop refuses to run without data
            self.batch.X = NULL
            self.batch.sp_indptr = NULL
            raise
        self.n_rows = n
        self.batch.n_rows = n
        self.batch.n_classes = nL

    def epoch(self, const int64_t[::1] order, long long t0, int64_t[::1] steps_done,
              progress=None):
        """One epoch of minibatch training over the bound data's rows in `order`, in
        batches of the capacity (the last may be smaller). t0: Adam's steps before it.

        Returns (sum over batches of loss * rows, sum of penalty * rows, rows done, steps
        done, an EpochStatus). Each batch's loss is taken before its step. Every
        SIGNAL_CHECK_S seconds the loop takes the GIL to let Python handle signals and to
        call progress(rows done) if given; a KeyboardInterrupt then propagates from here
        at a batch boundary, with the parameters of the last completed step. steps_done[0]
        is kept equal to the steps completed so far, for the caller when an exception
        propagates."""
        cdef EpochResult r
        self.check_epoch(order, steps_done)
        if order.shape[0] > 0:
            if self.f64:
                epoch_loop(self, &order[0], order.shape[0], t0, &steps_done[0], progress,
                           &r, <double*>NULL)
            else:
                epoch_loop(self, &order[0], order.shape[0], t0, &steps_done[0], progress,
                           &r, <float*>NULL)
        else:
            r.total = r.total_penalty = 0
            r.rows = r.steps = 0
            r.status = EPOCH_DONE
        return r.total, r.total_penalty, r.rows, r.steps, r.status

    cdef int check_epoch(self, const int64_t[::1] order, int64_t[::1] steps_done) except -1:
        # the row indices are the caller's: each is checked here, after which the loop
        # reads them (issue: a caller changing them during the epoch; see epoch_loop)
        cdef Py_ssize_t i
        if self.batch.X == NULL:
            raise ValueError("Trainer: no data bound")
        if steps_done.shape[0] < 1:
            raise ValueError("Trainer: steps_done needs one element")
        for i in range(order.shape[0]):
            if order[i] < 0 or order[i] >= self.n_rows:
                raise ValueError(f"order[{i}] = {order[i]} is not a row of the data")
        return 0

    def run_epochs(self, int64_t[::1] order, long long t0, int64_t[::1] steps_done,
                   tuple saved, object shuffle_capsule, object shuffle_lock,
                   Py_ssize_t max_epochs, StopRule rule, double[:, ::1] record):
        """Up to max_epochs epochs in a row with what fastbp.sklearn's fit does between
        two: before each, `order` is shuffled in place as shuffle_like_random_state does
        (under shuffle_lock; not when shuffle_capsule is None) and the parameters and
        optimizer state are copied into `saved` (params, state1, state2: what the caller
        restores when an epoch fails); after each, record[e] gets the RecordColumn values
        and `rule` (scikit-learn's stopping rule without early stopping) is applied.
        Returns the epochs run: after max_epochs, after an epoch whose status is not
        EPOCH_DONE (nothing of rule changes for it), or after the epoch that made the
        rule's count exceed n_iter_no_change. A KeyboardInterrupt propagates as from
        epoch, rule counting the epochs completed before it."""
        cdef Py_ssize_t e, n = order.shape[0]
        cdef double began, value
        cdef long long t = t0
        cdef bitgen_t* bg = NULL
        cdef EpochResult r
        cdef Py_ssize_t n_params = self.plan.n_params
        cdef size_t item = 8 if self.f64 else 4
        cdef void* saved_params = data_of(saved[0], self.dtype, n_params, "saved")
        cdef void* saved1 = (data_of(saved[1], self.dtype, n_params, "saved")
                             if self.buf.state1 != NULL else NULL)
        cdef void* saved2 = (data_of(saved[2], self.dtype, n_params, "saved")
                             if self.buf.state2 != NULL else NULL)
        if record.shape[0] < max_epochs or record.shape[1] != REC_COLUMNS:
            raise ValueError("run_epochs: record too short")
        if n == 0:
            raise ValueError("run_epochs: no rows")
        self.check_epoch(order, steps_done)
        if shuffle_capsule is not None:
            bg = <bitgen_t*>PyCapsule_GetPointer(shuffle_capsule, "BitGenerator")
        rule.epochs = 0
        rule.steps = 0
        for e in range(max_epochs):
            # a signal that came after the last epoch's check: epochs shorter than
            # SIGNAL_CHECK_S would otherwise never look
            steps_done[0] = 0
            PyErr_CheckSignals()
            if bg != NULL:
                with shuffle_lock:
                    with nogil:
                        shuffle_rows(bg, &order[0], n)
            if not self.obj.step_non_finite:
                # what a diverged epoch rolls back to (an epoch that steps through
                # non-finite values never does)
                memcpy(saved_params, self.buf.params, n_params * item)
                if saved1 != NULL:
                    memcpy(saved1, self.buf.state1, n_params * item)
                if saved2 != NULL:
                    memcpy(saved2, self.buf.state2, n_params * item)
            began = fastbp_now()
            if self.f64:
                epoch_loop(self, &order[0], n, t, &steps_done[0], None, &r, <double*>NULL)
            else:
                epoch_loop(self, &order[0], n, t, &steps_done[0], None, &r, <float*>NULL)
            record[e, <int>REC_LOSS_SUM] = r.total
            record[e, <int>REC_PENALTY_SUM] = r.total_penalty
            record[e, <int>REC_ROWS] = r.rows
            record[e, <int>REC_STEPS] = <double>r.steps
            record[e, <int>REC_STATUS] = r.status
            record[e, <int>REC_SECONDS] = fastbp_now() - began
            if r.status != EPOCH_DONE:
                return e + 1
            t += r.steps
            value = rule.reported_loss(r.total, r.total_penalty, r.rows, self.obj.scale)
            record[e, <int>REC_REPORTED_LOSS] = value
            rule.epochs = e + 1
            rule.steps = t - t0
            if rule.after_epoch(value):
                return e + 1
        return max_epochs


cdef int report(PyObject* progress, Py_ssize_t rows, PyObject** error) noexcept with gil:
    # The epoch loop's signal check and progress call, taking the GIL. An exception is kept
    # in *error (a new reference; returns 1) and raised by epoch_loop once the loop has
    # stopped at a batch boundary.
    try:
        PyErr_CheckSignals()
        if progress != NULL:
            (<object>progress)(rows)
    except BaseException as exc:
        Py_INCREF(exc)
        error[0] = <PyObject*>exc
        return 1
    return 0


cdef struct EpochArgs:
    # what the epoch loop reads besides the Trainer
    const int64_t* order
    Py_ssize_t n
    long long t0
    int64_t* steps_done
    PyObject* progress           # borrowed, or NULL
    PyObject* error              # OUT: an exception from report(), or NULL
    EpochResult* r               # OUT


cdef void batch_loop(Trainer t, EpochArgs* a, floating* dtype) noexcept nogil:
    # Trainer.epoch's loop: each batch one step (_passes.pxd); signals looked for every
    # SIGNAL_CHECK_S.
    cdef Py_ssize_t start = 0, B, capacity = t.capacity
    cdef double value, next_check
    cdef StepResult res
    cdef Batch batch = t.batch
    cdef OptStep o = t.opt
    cdef EpochResult* r = a.r
    next_check = fastbp_now() + SIGNAL_CHECK_S
    while start < a.n:
        B = min(capacity, a.n - start)
        batch.rows = a.order + start
        batch.size = B
        if o.kind == OPT_ADAM:
            adam_set_step(&o, t.lr, a.t0 + r.steps + 1)
        value = step(&t.plan, &t.buf, &batch, &t.obj, &o, True, t.n_threads, &res, dtype)
        if res.bad_input:
            r.status = EPOCH_BAD_INPUT
            break
        if not t.obj.step_non_finite:
            if not isfinite(value):
                r.status = EPOCH_LOSS_NOT_FINITE
                break
            if res.not_finite:
                r.status = EPOCH_PARAMS_NOT_FINITE
                break
        r.total += value * B
        r.total_penalty += res.penalty * B
        r.steps += 1
        start += B
        r.rows = start
        a.steps_done[0] = r.steps
        if fastbp_now() >= next_check:
            if report(a.progress, start, &a.error):
                break
            next_check = fastbp_now() + SIGNAL_CHECK_S


cdef int epoch_loop(Trainer t, const int64_t* order, Py_ssize_t n, long long t0,
                    int64_t* steps_done, object progress, EpochResult* r,
                    floating* dtype) except -1:
    # batch_loop without the GIL
    cdef EpochArgs a
    cdef object error
    r.total = 0
    r.total_penalty = 0
    r.rows = 0
    r.steps = 0
    r.status = EPOCH_DONE
    steps_done[0] = 0
    a.order = order
    a.n = n
    a.t0 = t0
    a.steps_done = steps_done
    a.progress = <PyObject*>progress if progress is not None else NULL
    a.error = NULL
    a.r = r
    with nogil:
        batch_loop(t, &a, dtype)
    if a.error != NULL:
        error = <object>a.error
        Py_XDECREF(a.error)
        raise error
    return 0


def loss_gradients_step(floating[::1] params, floating[::1] grads, floating[::1] work,
                        const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                        const floating[:, ::1] X, const int64_t[::1] labels,
                        const floating[:, ::1] Y, const floating[::1] weights,
                        bint want_grad, double lr, int n_threads):
    """The loss of the batch (X, labels or Y), a weighted mean when weights is not empty;
    with want_grad and lr == 0 its gradients go into grads; with want_grad and lr > 0 one
    plain SGD step is taken on params (grads then holds the gradients it took). work:
    work_size(capacity=B, input_slot=False, training=True). Returns (loss before the
    step, bad): bad when the step made a parameter non-finite. A label out of range
    raises ValueError."""
    cdef Batch batch
    if X.shape[1] != sizes[0]:
        raise ValueError("loss_gradients_step: X has the wrong width")
    batch.X = &X[0, 0] if X.shape[0] > 0 else NULL
    batch.sp_indptr = NULL
    return batch_loss_gradients(params, grads, work, sizes, acts, loss, X.shape[0], &batch,
                                labels, Y, weights, want_grad, lr, n_threads)


def loss_gradients_step_sparse(floating[::1] params, floating[::1] grads,
                               floating[::1] work, const Py_ssize_t[::1] sizes,
                               const int[::1] acts, int loss, X,
                               const int64_t[::1] labels, const floating[:, ::1] Y,
                               const floating[::1] weights, bint want_grad, double lr,
                               int n_threads):
    """loss_gradients_step for a CSR X (fastbp._validation.CsrRows, values of params'
    dtype): the batch is all its rows."""
    cdef Batch batch
    cdef Py_ssize_t B = X.shape[0], slot_len
    cdef int parts = n_parts(&sizes[0], sizes.shape[0] - 1, B) if B > 0 else 1
    arrays = csr_arrays(X, sizes[0], 0, B)
    slot_len = sparse_scratch_size(sizes[0], sparse_part_nnz(
        arrays[2], part_rows(B, parts) if parts > 1 else B))
    scratch = np.empty(parts * slot_len, dtype=np.int64)
    set_csr(&batch, arrays, np.float64 if floating is double else np.float32, scratch,
            slot_len)
    batch.X = NULL
    return batch_loss_gradients(params, grads, work, sizes, acts, loss, B, &batch, labels, Y,
                                weights, want_grad, lr, n_threads)


cdef object batch_loss_gradients(floating[::1] params, floating[::1] grads,
                                 floating[::1] work, const Py_ssize_t[::1] sizes,
                                 const int[::1] acts, int loss, Py_ssize_t B, Batch* batch,
                                 const int64_t[::1] labels, const floating[:, ::1] Y,
                                 const floating[::1] weights, bint want_grad, double lr,
                                 int n_threads):
    # the body of loss_gradients_step once batch's X (dense or sparse) is set: B rows
    cdef Plan p
    cdef double value
    cdef StepResult res
    cdef Buffers buf
    cdef Objective obj
    cdef OptStep o
    make_plan(&p, sizes, acts, loss, B, False, n_parts(&sizes[0], sizes.shape[0] - 1, B),
              n_threads)
    try:
        if (params.shape[0] < p.n_params or grads.shape[0] < p.n_params
                or work.shape[0] < p.work_size or B < 1):
            raise ValueError("loss_gradients_step: buffers too short for the plan")
        if ((labels.shape[0] > 0 and labels.shape[0] < B)
                or (Y.shape[0] > 0 and (Y.shape[0] < B or Y.shape[1] != p.sizes[p.n_layers]))
                or (labels.shape[0] == 0 and Y.shape[0] == 0)
                or (weights.shape[0] > 0 and weights.shape[0] < B)):
            raise ValueError("loss_gradients_step: targets or weights of the wrong shape")
        buf.params = &params[0]
        buf.grads = &grads[0]
        buf.state1 = NULL
        buf.state2 = NULL
        buf.work = &work[0]
        buf.row_buf = NULL
        buf.label_buf = NULL
        buf.w_buf = NULL
        batch.labels = &labels[0] if labels.shape[0] > 0 else NULL
        batch.Y = &Y[0, 0] if Y.shape[0] > 0 else NULL
        batch.w = &weights[0] if weights.shape[0] > 0 else NULL
        batch.rows = NULL
        batch.size = B
        batch.n_rows = B
        batch.n_classes = p.sizes[p.n_layers]
        obj.scale = 1
        obj.l2 = 0
        obj.l2_per_sample = False
        obj.step_non_finite = False
        o.kind = OPT_SGD if lr > 0 else OPT_NONE
        o.lr = lr
        o.momentum = 0
        o.nesterov = False
        with nogil:
            value = step(&p, &buf, batch, &obj, &o, want_grad, n_threads, &res, &params[0])
    finally:
        free_plan(&p)
    if res.bad_input:
        raise ValueError("a label is out of range: the labels changed after they were checked")
    return value, res.not_finite
