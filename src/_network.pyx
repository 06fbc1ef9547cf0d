# The whole network in compiled code: forward pass, loss, backward pass, SGD update, and
# the minibatch loop of one epoch, all without the GIL.
#
# Memory. Parameters live in one buffer, layer after layer: W_0 (n0 x n1), b_0 (n1),
# W_1, b_1, ...; gradients live in a buffer with the same layout, so the SGD update is one
# loop over the whole buffer. Activations live in one workspace buffer sized for a batch
# capacity C (see work_size):
#     [A_0 (C x n0), only with an input slot] Z_1, A_1, ..., Z_L, A_L (C x n_l each),
#     dZ ping-pong (2 x C x max n_l), GEMM scratch (see _dense.dense_scratch_size),
#     Y (C x n_L, only with an input slot)
# A batch of B <= C rows uses the first B rows of each slot. The Python layer allocates
# all of this once per call (once per fit), so nothing is allocated per batch.
#
# The Python layer (fastbp/network.py) has checked every argument; nothing here checks.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.math cimport isfinite
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <time.h>
    /* seconds on a clock that only moves forward (C11; MSVC, glibc, musl, macOS) */
    static double fastbp_now(void) {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    """
    double fastbp_now() nogil

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

# fit's compiled loop looks for signals (Ctrl-C) this often, taking the GIL only for that
cdef double SIGNAL_CHECK_S = 0.02

from _dense cimport (dense_forward, dense_scratch_size, weight_gradient, weight_update,
                     input_gradient)
from _gemm cimport fastbp_set_target, fastbp_target_supported, fastbp_active_target
from _losses cimport loss_and_output_gradient


cdef struct Plan:
    Py_ssize_t n_layers          # L
    const Py_ssize_t* sizes      # n_0 .. n_L
    const int* acts              # activation code of layers 1..L (the last one: output)
    int loss
    int n_threads
    Py_ssize_t n_params
    Py_ssize_t* w_off            # L offsets into the parameter buffer
    Py_ssize_t* b_off
    Py_ssize_t* z_off            # L offsets into the workspace
    Py_ssize_t* a_off            # L + 1 (a_off[0]: the input slot, if any)
    Py_ssize_t dz_off[2]
    Py_ssize_t scratch_off
    Py_ssize_t y_off
    Py_ssize_t work_size


cdef int make_plan(Plan* p, const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                   Py_ssize_t capacity, bint input_slot, int n_threads) except -1:
    cdef Py_ssize_t L = sizes.shape[0] - 1, l, off = 0, widest = 0, scratch = 0
    p.n_layers = L
    p.sizes = &sizes[0]
    p.acts = &acts[0]
    p.loss = loss
    p.n_threads = n_threads
    p.w_off = <Py_ssize_t*>malloc(4 * (L + 1) * sizeof(Py_ssize_t))
    if p.w_off == NULL:
        raise MemoryError()
    p.b_off = p.w_off + (L + 1)
    p.z_off = p.b_off + (L + 1)
    p.a_off = p.z_off + (L + 1)
    for l in range(L):
        p.w_off[l] = off
        off += sizes[l] * sizes[l + 1]
        p.b_off[l] = off
        off += sizes[l + 1]
        widest = max(widest, sizes[l + 1])
        scratch = max(scratch, dense_scratch_size(capacity, sizes[l], sizes[l + 1], n_threads))
    p.n_params = off
    off = 0
    p.a_off[0] = 0
    if input_slot:
        off += capacity * sizes[0]
    for l in range(L):
        p.z_off[l] = off
        off += capacity * sizes[l + 1]
        p.a_off[l + 1] = off
        off += capacity * sizes[l + 1]
    p.dz_off[0] = off
    p.dz_off[1] = off + capacity * widest
    off += 2 * capacity * widest
    p.scratch_off = off
    off += scratch
    p.y_off = off
    if input_slot:
        off += capacity * sizes[L]
    p.work_size = off
    return 0


cdef inline void free_plan(Plan* p) noexcept:
    free(p.w_off)
    p.w_off = NULL


def sizes_of(const Py_ssize_t[::1] sizes, const int[::1] acts, Py_ssize_t capacity,
             bint input_slot, int n_threads):
    """(parameter count, workspace length) for layer sizes, a batch capacity and a thread
    count (the GEMM scratch holds one panel per thread)."""
    cdef Plan p
    make_plan(&p, sizes, acts, 0, capacity, input_slot, n_threads)
    free_plan(&p)
    return p.n_params, p.work_size


# -- the passes ----------------------------------------------------------------------------

cdef void forward_pass(const Plan* p, const floating* params, floating* work,
                       const floating* X, Py_ssize_t B) noexcept nogil:
    # A_0 = X (B, n0); for each layer Z_l = A_{l-1} W_l + b_l, A_l = f_l(Z_l).
    cdef Py_ssize_t l
    cdef const floating* a_in = X
    for l in range(p.n_layers):
        dense_forward(work + p.z_off[l], work + p.a_off[l + 1], a_in,
                      params + p.w_off[l], params + p.b_off[l],
                      B, p.sizes[l], p.sizes[l + 1], p.acts[l], p.n_threads,
                      work + p.scratch_off)
        a_in = work + p.a_off[l + 1]


cdef double loss_and_gradient(const Plan* p, floating* params, floating* grads,
                              floating* work, const floating* X, const int64_t* labels,
                              const floating* Y, Py_ssize_t B, bint want_grad,
                              floating lr) noexcept nogil:
    # Forward, loss, and (want_grad) the backward pass by the chain rule from layer L down:
    #   dW_l = A_{l-1}^T dZ_l,  db_l = sum_rows dZ_l,  dZ_{l-1} = (dZ_l W_l^T) * f'_{l-1}(Z_{l-1})
    # With lr > 0 each layer's SGD step is fused into its weight-gradient product
    # (W_l -= lr dW_l without storing dW_l); only db_l is kept, in grads.
    cdef Py_ssize_t L = p.n_layers, l
    cdef double value
    cdef floating* dZ
    cdef const floating* a_in
    forward_pass(p, params, work, X, B)
    dZ = work + p.dz_off[(L - 1) % 2] if want_grad else NULL
    value = loss_and_output_gradient(dZ, work + p.z_off[L - 1], work + p.a_off[L],
                                     labels, Y, B, p.sizes[L], p.loss, p.acts[L - 1])
    if not want_grad or (lr > 0 and not isfinite(value)):
        # A non-finite loss before a training step means training diverged: leave the
        # parameters as they are. (Asked only for gradients, compute them anyway: they
        # are this input's, non-finite as the reference's are.)
        return value
    for l in range(L - 1, -1, -1):
        dZ = work + p.dz_off[l % 2]
        a_in = X if l == 0 else work + p.a_off[l]
        if l > 0:
            # before the weight product: a fused SGD step overwrites W_l, and dZ_{l-1}
            # needs the W_l of this step
            input_gradient(work + p.dz_off[(l - 1) % 2], dZ, params + p.w_off[l],
                           work + p.z_off[l - 1], work + p.a_off[l],
                           B, p.sizes[l], p.sizes[l + 1], p.acts[l - 1], p.n_threads,
                           work + p.scratch_off)
        if lr > 0:
            weight_update(params + p.w_off[l], params + p.b_off[l], grads + p.b_off[l],
                          a_in, dZ, B, p.sizes[l], p.sizes[l + 1], lr, p.n_threads,
                          work + p.scratch_off)
        else:
            weight_gradient(grads + p.w_off[l], grads + p.b_off[l], a_in, dZ,
                            B, p.sizes[l], p.sizes[l + 1], p.n_threads, work + p.scratch_off)
    return value


cdef void gather_batch(const Plan* p, floating* work, int64_t* label_buf,
                       const floating* X, const int64_t* labels, const floating* Y,
                       const int64_t* rows, Py_ssize_t B) noexcept nogil:
    # work's input slot (B, n0) <- X[rows]; label_buf <- labels[rows] or the Y slot <- Y[rows]
    cdef Py_ssize_t i, n0 = p.sizes[0], nL = p.sizes[p.n_layers]
    for i in range(B):
        memcpy(work + i * n0, X + rows[i] * n0, n0 * sizeof(floating))
        if labels != NULL:
            label_buf[i] = labels[rows[i]]
        else:
            memcpy(work + p.y_off + i * nL, Y + rows[i] * nL, nL * sizeof(floating))


# -- Python entry points (arguments checked by fastbp/network.py) --------------------------

cdef inline const int64_t* labels_ptr(const int64_t[::1] labels) noexcept:
    return &labels[0] if labels.shape[0] > 0 else NULL


cdef inline const floating* rows_ptr(const floating[:, ::1] Y) noexcept:
    return &Y[0, 0] if Y.shape[0] > 0 else NULL


def set_target(int code):
    """Make this module's kernels use SIMD target `code` (0 baseline, 1 avx2, 2 avx512);
    False when this build or CPU cannot run it."""
    return fastbp_set_target(code) == 0


def target_supported(int code):
    return fastbp_target_supported(code) != 0


def active_target():
    return fastbp_active_target.code


def forward(floating[::1] params, floating[::1] work,
            const Py_ssize_t[::1] sizes, const int[::1] acts,
            const floating[:, ::1] X, floating[:, ::1] out, int n_threads):
    """out (B, n_L) <- the network's output for X (B, n_0). work: work_size(capacity=B)."""
    cdef Plan p
    cdef Py_ssize_t B = X.shape[0]
    make_plan(&p, sizes, acts, 0, B, False, n_threads)
    try:
        with nogil:
            forward_pass(&p, &params[0], &work[0], &X[0, 0], B)
            memcpy(&out[0, 0], &work[0] + p.a_off[p.n_layers],
                   B * p.sizes[p.n_layers] * sizeof(floating))
    finally:
        free_plan(&p)


def loss_gradients_step(floating[::1] params, floating[::1] grads, floating[::1] work,
                        const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                        const floating[:, ::1] X, const int64_t[::1] labels,
                        const floating[:, ::1] Y, bint want_grad, double lr, int n_threads):
    """Loss of (X, labels or Y). With want_grad and lr == 0 the gradients go into grads;
    with want_grad and lr > 0 one SGD step is taken on params instead (grads then holds
    only the bias gradients). Returns the loss before the step."""
    cdef Plan p
    cdef Py_ssize_t B = X.shape[0]
    cdef double value
    cdef const int64_t* lab = labels_ptr(labels)
    cdef const floating* ys = rows_ptr(Y)
    cdef floating* g = &grads[0] if want_grad else NULL
    make_plan(&p, sizes, acts, loss, B, False, n_threads)
    try:
        with nogil:
            value = loss_and_gradient(&p, &params[0], g, &work[0], &X[0, 0], lab, ys,
                                      B, want_grad, <floating>lr)
    finally:
        free_plan(&p)
    return value


def train_epoch(floating[::1] params, floating[::1] grads, floating[::1] work,
                int64_t[::1] label_buf,
                const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                const floating[:, ::1] X, const int64_t[::1] labels,
                const floating[:, ::1] Y, const int64_t[::1] order,
                Py_ssize_t batch_size, double lr, int n_threads):
    """One epoch of minibatch SGD over the rows of X in `order`, without the GIL.
    work: work_size(capacity=batch_size, input_slot=True); label_buf: batch_size int64.

    Returns (sum of the batch losses, batches completed, diverged). Each batch loss is
    taken before its step. When a batch's loss is not finite the loop stops before that
    step (diverged is True). Every SIGNAL_CHECK_S seconds the loop takes the GIL to let
    Python handle signals; a KeyboardInterrupt then propagates from here at a batch
    boundary, with the parameters of the last completed step."""
    cdef Plan p
    cdef Py_ssize_t n = order.shape[0], start, B, n_batches = 0
    cdef double total = 0, value, next_check
    cdef bint diverged = False
    cdef const int64_t* lab = labels_ptr(labels)
    cdef const floating* ys = rows_ptr(Y)
    make_plan(&p, sizes, acts, loss, batch_size, True, n_threads)
    try:
        with nogil:
            start = 0
            next_check = fastbp_now() + SIGNAL_CHECK_S
            while start < n:
                B = min(batch_size, n - start)
                gather_batch(&p, &work[0], &label_buf[0], &X[0, 0], lab, ys, &order[start], B)
                value = loss_and_gradient(&p, &params[0], &grads[0], &work[0], &work[0],
                                          &label_buf[0] if lab != NULL else NULL,
                                          &work[0] + p.y_off if lab == NULL else NULL,
                                          B, True, <floating>lr)
                if not isfinite(value):
                    diverged = True
                    break
                total += value
                n_batches += 1
                start += B
                if fastbp_now() >= next_check:
                    with gil:
                        PyErr_CheckSignals()
                    next_check = fastbp_now() + SIGNAL_CHECK_S
    finally:
        free_plan(&p)
    return total, n_batches, diverged
