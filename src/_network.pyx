# The whole network in compiled code: forward pass, loss, backward pass, SGD update, and
# the minibatch loop of one epoch, all without the GIL.
#
# Memory. Parameters live in one buffer, layer after layer: W_0 (n0 x n1), b_0 (n1),
# W_1, b_1, ...; gradients live in a buffer with the same layout, so the SGD update is one
# loop over the whole buffer. Activations live in one workspace buffer sized for a batch
# capacity C (see work_size):
#     [A_0 (C x n0), only with an input slot] Z_1, A_1, ..., Z_L, A_L (C x n_l each),
#     dZ ping-pong (2 x C x max n_l), GEMM scratch (see _dense.dense_scratch_size),
#     Y (C x n_L, only with an input slot),
#     [for batches in halves (batch_parts): the second half's gradients (laid out like
#     the parameters) and its thread's GEMM scratch]
# A batch of B <= C rows uses the first B rows of each slot. The Python layer allocates
# all of this once per call (once per fit), so nothing is allocated per batch.
#
# The Python layer (fastbp/network.py) has checked every argument; nothing here checks.

from cython cimport floating
from libc.stdint cimport int64_t, uint32_t, uint64_t
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdlib cimport malloc, calloc, free
from libc.math cimport isfinite
from libc.string cimport memcpy
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cython.parallel cimport parallel, threadid

cdef extern from *:
    """
    #include "team.h"
    /* seconds on team.h's clock, which only moves forward */
    static double fastbp_now(void) {
        return 1e-9 * (double)fastbp_team_clock_ns();
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
from _activations cimport ACT_GELU
from _losses cimport loss_and_output_gradient
from _optim cimport (OptStep, OPT_NONE, OPT_SGD, OPT_ADAM, update_block, update_chunks,
                     update_chunk_sum,
                     adam_set_step, update_layer_team, update_chunk, UPDATE_CHUNK)
from _dense cimport (dense_forward_team, weight_gradient_team, weight_update_team,
                     input_gradient_team)
from _losses cimport loss_and_output_gradient_team, weight_sum, loss_norm, loss_rows
from _team cimport (Team, team_next, team_loop_done, fastbp_team_sync,
                    fastbp_team_sync_init, fastbp_team_size,
                    fastbp_team_yielding_ns, fastbp_team_barrier_untimed, team_barrier,
                    team_share, fastbp_team_publish, fastbp_team_wait_for,
                    fastbp_team_claim, FASTBP_TEAM_AVAILABLE)


cdef struct Plan:
    Py_ssize_t n_layers          # L
    const Py_ssize_t* sizes      # n_0 .. n_L
    const int* acts              # activation code of layers 1..L (the last one: output)
    int loss
    int n_threads
    Py_ssize_t n_params
    Py_ssize_t* w_off            # L offsets into the parameter buffer
    Py_ssize_t* b_off
    Py_ssize_t* z_off            # L offsets into the workspace (a_off[l + 1] for a layer
                                 # that keeps no Z, see keeps_z)
    Py_ssize_t* a_off            # L + 1 (a_off[0]: the input slot, if any)
    Py_ssize_t dz_off[2]
    Py_ssize_t scratch_off
    Py_ssize_t y_off
    Py_ssize_t work_size
    Py_ssize_t widest            # max n_l, l >= 1: the dZ slots' row length
    int parts                    # 2: training steps compute a batch in two halves (see
                                 # batch_parts); 1: whole
    Py_ssize_t g2_off            # parts == 2: the second half's gradients (n_params)
    Py_ssize_t scratch2_off      # parts == 2: the second half's GEMM scratch (one thread)
    Py_ssize_t* chunk_base       # L + 1: the first update chunk of layer l (its weights'
                                 # chunks, then its biases'), counted over the whole network
    double* partials             # the optimizer step's per-chunk results (_optim.pxd), for
                                 # every chunk of the network


# Training steps on small networks compute each batch in two halves of rows, whatever
# the thread count: the forward and backward passes of a half are independent of the
# other's, so with two threads each half runs on its own thread, meeting only at the
# optimizer step (which sums the halves' weight gradients; the thread done first starts
# on the layers the other is done with, see update_halves) and after it. The
# team that shares out every product instead has some twenty barriers a step: on the
# 2-vCPU guest this was written on, two threads trained the 64-128-64-10 network of
# digits at batch 200 1.11x and 1.65x faster in halves than in that team (in-process,
# alternating, the two load orders). One thread computes the same halves one
# after the other, so results stay the same bits for every thread count (SPEC); what the
# halves change is only the order of the weight gradients' sums (two partial sums added),
# as any data-parallel trainer does. Large networks (more than SPLIT_MAX_PARAMS
# parameters) keep the team, which splits their products without a second gradient
# buffer and with less of the weights read by both threads; batches of under
# SPLIT_MIN_ROWS rows (capacity) are not split: their halves would be too short for the
# products' row panels.
cdef Py_ssize_t SPLIT_MAX_PARAMS = 1 << 16
cdef Py_ssize_t SPLIT_MIN_ROWS = 64


cpdef int batch_parts(const Py_ssize_t[::1] sizes, Py_ssize_t capacity) noexcept:
    """2 when training steps of this network at this batch capacity compute each batch
    in two halves (see SPLIT_MAX_PARAMS), else 1."""
    cdef Py_ssize_t l, n_params = 0
    for l in range(sizes.shape[0] - 1):
        n_params += (sizes[l] + 1) * sizes[l + 1]
    return 2 if n_params <= SPLIT_MAX_PARAMS and capacity >= SPLIT_MIN_ROWS else 1


cdef inline bint keeps_z(Py_ssize_t l, Py_ssize_t L, int act) noexcept nogil:
    # Whether layer l keeps its pre-activations Z_l in a slot of their own. Only the output
    # layer (its loss reads the logits) and gelu layers (whose derivative needs z) do: for
    # every other hidden activation f'(z) is a function of a = f(z) (relu and leaky_relu:
    # z > 0 exactly when a > 0, NaN included; sigmoid, tanh: from a; identity: 1), so the
    # layer's z_off is its a_off, the forward pass writes only A_l, and the input gradient
    # reads A_l where it would read Z_l. Writing Z_l as well had cost 1.3-4% of a digits
    # epoch (64-128-64-10, in-process A/Bs, both load orders): 51 KB more stores a half.
    return l == L - 1 or act == ACT_GELU


cdef int make_plan(Plan* p, const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                   Py_ssize_t capacity, bint input_slot, int n_threads) except -1:
    cdef Py_ssize_t L = sizes.shape[0] - 1, l, off = 0, widest = 0, scratch = 0
    cdef Py_ssize_t scratch1 = 0
    p.n_layers = L
    p.sizes = &sizes[0]
    p.acts = &acts[0]
    p.loss = loss
    p.n_threads = n_threads
    p.parts = batch_parts(sizes, capacity)
    p.partials = NULL
    p.w_off = <Py_ssize_t*>malloc(5 * (L + 1) * sizeof(Py_ssize_t))
    if p.w_off == NULL:
        raise MemoryError()
    p.b_off = p.w_off + (L + 1)
    p.z_off = p.b_off + (L + 1)
    p.a_off = p.z_off + (L + 1)
    p.chunk_base = p.a_off + (L + 1)
    p.chunk_base[0] = 0
    for l in range(L):
        p.w_off[l] = off
        off += sizes[l] * sizes[l + 1]
        p.b_off[l] = off
        off += sizes[l + 1]
        p.chunk_base[l + 1] = (p.chunk_base[l] + update_chunks(sizes[l] * sizes[l + 1])
                               + update_chunks(sizes[l + 1]))
        widest = max(widest, sizes[l + 1])
        scratch = max(scratch, dense_scratch_size(capacity, sizes[l], sizes[l + 1], n_threads))
        scratch1 = max(scratch1, dense_scratch_size(capacity, sizes[l], sizes[l + 1], 1))
    p.n_params = off
    p.widest = widest
    p.partials = <double*>malloc(2 * p.chunk_base[L] * sizeof(double))
    if p.partials == NULL:
        free(p.w_off)
        p.w_off = NULL
        raise MemoryError()
    off = 0
    p.a_off[0] = 0
    if input_slot:
        off += capacity * sizes[0]
    for l in range(L):
        p.z_off[l] = off
        if keeps_z(l, L, acts[l]):
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
    p.g2_off = off
    p.scratch2_off = off
    if p.parts == 2:
        off += p.n_params
        p.scratch2_off = off
        off += scratch1
    p.work_size = off
    return 0


cdef inline void free_plan(Plan* p) noexcept:
    free(p.w_off)
    free(p.partials)
    p.w_off = NULL
    p.partials = NULL


def sizes_of(const Py_ssize_t[::1] sizes, const int[::1] acts, Py_ssize_t capacity,
             bint input_slot, int n_threads):
    """(parameter count, workspace length) for layer sizes, a batch capacity and a thread
    count (the GEMM scratch holds one panel per thread, or with two or more threads all of
    a small B, for the epoch's team: see gemm_scratch_size)."""
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


cdef struct Objective:
    double scale                 # multiplies the data loss and its gradient
    double l2                    # L2 penalty 0.5 l2 sum(W^2) on the weights (not biases)
    bint l2_per_sample           # divide l2 by the batch's weight sum (scikit-learn's alpha)


cdef inline double step_decay(const Objective* obj, const floating* w,
                              Py_ssize_t B) noexcept nogil:
    # the L2 factor of this batch's step: obj.l2, divided by the batch's weight sum when
    # l2_per_sample (scikit-learn's alpha)
    cdef double w_sum
    if not obj.l2_per_sample or obj.l2 == 0:
        return obj.l2
    w_sum = weight_sum(w, B)
    return obj.l2 / w_sum if w_sum > 0 else 0


cdef inline floating* offset(floating* buf, Py_ssize_t off) noexcept nogil:
    return buf + off if buf != NULL else NULL


# -- a batch in two halves (see SPLIT_MAX_PARAMS) ----------------------------------------

cdef inline void half_rows(Py_ssize_t B, int half, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # rows [lo, hi) of the batch's half 0 or 1
    cdef Py_ssize_t h = (B + 1) // 2
    lo[0] = 0 if half == 0 else h
    hi[0] = h if half == 0 else B


# A progress counter of each half (see loss_and_gradient_team_halves) on a cache line of its
# own: the long longs between them
cdef enum:
    PROGRESS_APART = 8


# What the two threads of a batch in halves share to work on each other's half (see
# loss_and_gradient_team_halves): every counter only grows within an epoch, and a step's
# values are above the step before's.
cdef struct HalvesSync:
    fastbp_team_sync* sync
    long long* ready        # ready[PROGRESS_APART * h]: how far half h's thread has got: base
                            # + 1 once its loss is written (dZ_{L-1} ready), base + 1 + L - l
                            # once its input gradient of layer l is (dZ_{l-1} ready, W_l no
                            # longer read)
    long long* claimed      # claimed[L * h + l]: base + 1 once a thread took the weight
                            # gradient of layer l of half h in this step
    long long* done         # done[L * h + l]: base + 1 once that weight gradient is in G


cdef inline void half_weight_gradient(const Plan* p, floating* G, floating* work,
                                      floating* scratch, const floating* X, Py_ssize_t lo,
                                      Py_ssize_t hi, Py_ssize_t l) noexcept nogil:
    # layer l's weight and bias gradients of rows [lo, hi) into G, from the dZ_l that
    # half_gradient left in its slot
    cdef Py_ssize_t K = p.sizes[l], N = p.sizes[l + 1]
    cdef const floating* a_in = X + lo * K if l == 0 else work + p.a_off[l] + lo * K
    weight_gradient(G + p.w_off[l], G + p.b_off[l], a_in,
                    work + p.dz_off[l % 2] + lo * p.widest, hi - lo, K, N, 1, scratch)


cdef inline void claimed_weight_gradient(const Plan* p, floating* G, floating* work,
                                         floating* scratch, const floating* X,
                                         Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t l,
                                         HalvesSync* hs, int h, long long base) noexcept nogil:
    # half_weight_gradient of layer l of half h (rows [lo, hi)) if this thread is the
    # first of the two to claim it in this step, then published as done
    if fastbp_team_claim(hs.claimed + p.n_layers * h + l, base + 1):
        half_weight_gradient(p, G, work, scratch, X, lo, hi, l)
        fastbp_team_publish(hs.done + p.n_layers * h + l, base + 1)


cdef void half_gradient(const Plan* p, const floating* params, floating* G,
                        floating* work, floating* scratch, const floating* X,
                        const int64_t* labels, const floating* Y, const floating* w,
                        Py_ssize_t lo, Py_ssize_t hi, double scale, double norm,
                        double* total, HalvesSync* hs, int h, long long base) noexcept nogil:
    # Rows [lo, hi) of a batch through forward, loss and backward on this thread, their
    # weight and bias gradients into G (laid out like params), each Z, A and dZ row where
    # the whole batch's would be (the dZ slots' rows widest apart, so that the two halves
    # never share a row however the layers' widths differ). *total gets this half's share
    # of the loss sum: sum_i r_i l_i, which the caller adds to the other half's and
    # divides by norm; each dZ row is already scaled by scale r_i / norm, as
    # loss_and_output_gradient scales it. hs (NULL: none) is this half's (h) progress for
    # the other thread: a layer's weight gradient goes to whichever of the two threads
    # claims it first (steal_weight_gradients), after this thread's input gradient of the
    # layer, which is on the path to the next layer.
    cdef Py_ssize_t L = p.n_layers, l, K, N, Bh = hi - lo, nL = p.sizes[L]
    cdef const floating* a_in = X + lo * p.sizes[0]
    cdef floating* dz[2]
    cdef floating* dZ
    dz[0] = work + p.dz_off[0] + lo * p.widest
    dz[1] = work + p.dz_off[1] + lo * p.widest
    for l in range(L):
        N = p.sizes[l + 1]
        dense_forward(work + p.z_off[l] + lo * N, work + p.a_off[l + 1] + lo * N, a_in,
                      params + p.w_off[l], params + p.b_off[l],
                      Bh, p.sizes[l], N, p.acts[l], 1, scratch)
        a_in = work + p.a_off[l + 1] + lo * N
    total[0] = loss_rows(dz[(L - 1) % 2], work + p.z_off[L - 1] + lo * nL,
                         work + p.a_off[L] + lo * nL, labels + lo if labels != NULL else NULL,
                         Y + lo * nL if Y != NULL else NULL, w + lo if w != NULL else NULL,
                         Bh, nL, p.loss, p.acts[L - 1], scale, norm, True)
    if hs != NULL:
        fastbp_team_publish(hs.ready + PROGRESS_APART * h, base + 1)
    for l in range(L - 1, -1, -1):
        K = p.sizes[l]
        N = p.sizes[l + 1]
        dZ = dz[l % 2]
        if l > 0:
            if hs != NULL and l + 1 < L:
                # dZ_{l-1} goes where dZ_{l+1} is: its weight gradient must be done
                fastbp_team_wait_for(hs.sync, hs.done + L * h + l + 1, base + 1)
            input_gradient(dz[(l - 1) % 2], dZ, params + p.w_off[l],
                           work + p.z_off[l - 1] + lo * K, work + p.a_off[l] + lo * K,
                           Bh, K, N, p.acts[l - 1], 1, scratch)
            if hs != NULL:
                fastbp_team_publish(hs.ready + PROGRESS_APART * h, base + 1 + (L - l))
        if hs == NULL:
            half_weight_gradient(p, G, work, scratch, X, lo, hi, l)
        else:
            claimed_weight_gradient(p, G, work, scratch, X, lo, hi, l, hs, h, base)


cdef void steal_weight_gradients(const Plan* p, floating* G, floating* work,
                                 floating* scratch, const floating* X, Py_ssize_t lo,
                                 Py_ssize_t hi, HalvesSync* hs, int h,
                                 long long base) noexcept nogil:
    # For the thread done with its own half: the weight gradients of half h (rows [lo, hi),
    # into G) that its own thread has not taken yet, each as soon as its dZ is ready, from
    # layer L-1 down. The same products, so the same bits, whichever thread computes them;
    # a vCPU that runs slower (on the 2-vCPU guest one ran a half 30-80% slower in some
    # hours) hands over part of its half.
    cdef Py_ssize_t L = p.n_layers, l
    for l in range(L - 1, -1, -1):
        fastbp_team_wait_for(hs.sync, hs.ready + PROGRESS_APART * h, base + 1 + (L - 1 - l))
        claimed_weight_gradient(p, G, work, scratch, X, lo, hi, l, hs, h, base)


cdef inline void add_into(floating* g, const floating* g2, Py_ssize_t n) noexcept nogil:
    # g += g2, element by element: the two halves' gradients
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] + g2[i]


cdef inline void sgd_chunk(floating* param, const floating* grad, const floating* grad2,
                           Py_ssize_t n, floating lr, double* out) noexcept nogil:
    # Plain SGD's step as the fused weight product takes it (_dense.pxd's weight_update):
    # fl(p - fl(lr g)), two roundings, as NumPy's p - lr * g (this module is compiled
    # without FMA, so the compiler cannot contract them), with g = fl(grad + grad2), the
    # halves' sum; out as update_chunk leaves it.
    cdef Py_ssize_t i
    cdef floating x, g
    cdef bint finite = True
    for i in range(n):
        g = grad[i] + grad2[i]
        x = param[i] - lr * g
        param[i] = x
        if x - x != 0:
            finite = False
    out[0] = 0
    out[1] = 0 if finite else 1


cdef double update_halves(const Plan* p, floating* params, floating* grads,
                          const floating* g2, floating* s1, floating* s2, const OptStep* o,
                          floating decay, Team* team, HalvesSync* hs, long long base,
                          bint* bad) noexcept nogil:
    # The optimizer step of a batch computed in halves, over every chunk of the network
    # (a layer's weight chunks, then its bias chunks; the penalty on the weights only):
    # each chunk's gradient is the halves' sum, taken within the chunk's step
    # (update_chunk_sum, sgd_chunk; grads keeps the first half's). team NULL: this thread
    # does every chunk; otherwise chunks go to whichever thread of the team asks first,
    # and all threads return the same value and *bad.
    # Returns sum W^2 before the step, summed as loss_and_gradient's per-layer
    # update_block calls sum it (layer L-1 first, each layer's chunks in order).
    # hs (NULL: none): the halves' progress (see half_gradient), for a thread that comes
    # here before the other half is done: chunks are handed out from layer L-1 down, the
    # order in which the backward pass finishes the layers, and a layer's chunks wait only
    # until both halves' weight gradients of that layer are in and neither half's thread
    # reads W_l again (its input gradient of the layer is done), so the thread that
    # finished first steps the upper layers while the other computes the lower layers'
    # gradients.
    cdef Py_ssize_t L = p.n_layers, l, c, u, v, lo, n, off, n_w, units = p.chunk_base[L]
    cdef int h
    cdef bint want_sq = decay != 0, weights
    cdef bint plain = o.kind == OPT_SGD and s1 == NULL and decay == 0
    cdef double sq = 0, layer_sq
    v = -1
    while True:
        if team == NULL:
            v += 1
            if v >= units:
                break
        else:
            v = team_next(team, units)
            if v < 0:
                break
        # ticket v: layers L-1 .. 0 in turn, each layer's chunks in order
        l = L - 1
        while v >= units - p.chunk_base[l]:
            l -= 1
        u = p.chunk_base[l] + v - (units - p.chunk_base[l + 1])
        if hs != NULL:
            # (the input gradients are done already when this thread came through
            # steal_weight_gradients, which waits for the other half's last one; the wait
            # keeps this function right on its own)
            for h in range(2):
                if l > 0:
                    fastbp_team_wait_for(hs.sync, hs.ready + PROGRESS_APART * h,
                                         base + 1 + (L - l))
                fastbp_team_wait_for(hs.sync, hs.done + L * h + l, base + 1)
        n_w = p.sizes[l] * p.sizes[l + 1]
        c = u - p.chunk_base[l]
        weights = c < update_chunks(n_w)
        if weights:
            off = p.w_off[l] + c * UPDATE_CHUNK
            n = min(<Py_ssize_t>UPDATE_CHUNK, n_w - c * UPDATE_CHUNK)
        else:
            c -= update_chunks(n_w)
            off = p.b_off[l] + c * UPDATE_CHUNK
            n = min(<Py_ssize_t>UPDATE_CHUNK, p.sizes[l + 1] - c * UPDATE_CHUNK)
        # the halves' gradients are summed within the step (not stored)
        if plain:
            sgd_chunk(params + off, grads + off, g2 + off, n, <floating>o.lr,
                      p.partials + 2 * u)
        else:
            update_chunk_sum(params + off, grads + off, g2 + off,
                             s1 + off if s1 != NULL else NULL,
                             s2 + off if s2 != NULL else NULL, n, o, decay if weights else 0,
                             want_sq and weights, p.partials + 2 * u)
    if team != NULL:
        team_loop_done(team, units)
    for l in range(L - 1, -1, -1):
        layer_sq = 0
        for c in range(update_chunks(p.sizes[l] * p.sizes[l + 1])):
            layer_sq += p.partials[2 * (p.chunk_base[l] + c)]
        sq += layer_sq
    for u in range(units):
        if p.partials[2 * u + 1] != 0:
            bad[0] = True
    return sq


cdef double loss_and_gradient_halves(const Plan* p, floating* params, floating* grads,
                                     floating* s1, floating* s2, floating* work,
                                     const floating* X, const int64_t* labels,
                                     const floating* Y, const floating* w, Py_ssize_t B,
                                     const Objective* obj, const OptStep* o,
                                     double* penalty, bint* bad) noexcept nogil:
    # loss_and_gradient (with grads) of a batch in two halves on this thread: what the
    # two threads of epoch_thread compute together, in the same order.
    cdef Py_ssize_t lo, hi
    cdef double norm = loss_norm(w, B, p.sizes[p.n_layers], p.loss), total0, total1, value
    cdef double decay
    cdef floating* g2 = work + p.g2_off
    penalty[0] = 0
    half_rows(B, 0, &lo, &hi)
    half_gradient(p, params, grads, work, work + p.scratch_off, X, labels, Y, w, lo, hi,
                  obj.scale, norm, &total0, NULL, 0, 0)
    half_rows(B, 1, &lo, &hi)
    half_gradient(p, params, g2, work, work + p.scratch_off, X, labels, Y, w, lo, hi,
                  obj.scale, norm, &total1, NULL, 1, 0)
    value = obj.scale * ((total0 + total1) / norm) if norm != 0 else 0.0
    if o.kind == OPT_NONE:
        add_into(grads, g2, p.n_params)
        return value
    if not isfinite(value):
        return value
    decay = step_decay(obj, w, B)
    penalty[0] = 0.5 * decay * update_halves(p, params, grads, g2, s1, s2, o,
                                             <floating>decay, NULL, NULL, 0, bad)
    return value


cdef double loss_and_gradient(const Plan* p, floating* params, floating* grads,
                              floating* s1, floating* s2, floating* work,
                              const floating* X, const int64_t* labels, const floating* Y,
                              const floating* w, Py_ssize_t B, const Objective* obj,
                              const OptStep* o, double* penalty, bint* bad) noexcept nogil:
    # Forward, loss, and (grads not NULL) the backward pass by the chain rule from layer L
    # down:
    #   dW_l = A_{l-1}^T dZ_l,  db_l = sum_rows dZ_l,  dZ_{l-1} = (dZ_l W_l^T) * f'_{l-1}(Z_{l-1})
    # o.kind == OPT_NONE: the gradients go into grads. Otherwise each layer takes its
    # optimizer step (_optim.pxd) right after its gradient, while it is in cache; plain SGD
    # without state or penalty is fused into the weight-gradient product instead
    # (W_l -= lr dW_l without storing dW_l; only db_l is kept, in grads). *penalty gets the
    # L2 penalty's value at the parameters before the step; *bad is set when the step made
    # a parameter or state value non-finite.
    cdef Py_ssize_t L = p.n_layers, l, i, K, N
    cdef double value, decay = obj.l2, sq = 0
    cdef floating* dZ
    cdef const floating* a_in
    cdef bint fused
    if grads != NULL and p.parts == 2 and B >= 2:
        return loss_and_gradient_halves(p, params, grads, s1, s2, work, X, labels, Y, w, B,
                                        obj, o, penalty, bad)
    penalty[0] = 0
    forward_pass(p, params, work, X, B)
    dZ = work + p.dz_off[(L - 1) % 2] if grads != NULL else NULL
    value = loss_and_output_gradient(dZ, work + p.z_off[L - 1], work + p.a_off[L],
                                     labels, Y, w, B, p.sizes[L], p.loss, p.acts[L - 1],
                                     obj.scale, True)
    if grads == NULL or (o.kind != OPT_NONE and not isfinite(value)):
        # A non-finite loss before a training step means training diverged: leave the
        # parameters as they are. (Asked only for gradients, compute them anyway: they
        # are this input's, non-finite as the reference's are.)
        return value
    decay = step_decay(obj, w, B)
    fused = o.kind == OPT_SGD and s1 == NULL and decay == 0
    for l in range(L - 1, -1, -1):
        K = p.sizes[l]
        N = p.sizes[l + 1]
        dZ = work + p.dz_off[l % 2]
        a_in = X if l == 0 else work + p.a_off[l]
        if l > 0:
            # before the weight product: a step overwrites W_l, and dZ_{l-1} needs the W_l
            # of this step
            input_gradient(work + p.dz_off[(l - 1) % 2], dZ, params + p.w_off[l],
                           work + p.z_off[l - 1], work + p.a_off[l],
                           B, K, N, p.acts[l - 1], p.n_threads, work + p.scratch_off)
        if fused:
            weight_update(params + p.w_off[l], params + p.b_off[l], grads + p.b_off[l],
                          a_in, dZ, B, K, N, <floating>o.lr, p.n_threads,
                          work + p.scratch_off, bad)
            continue
        weight_gradient(grads + p.w_off[l], grads + p.b_off[l], a_in, dZ,
                        B, K, N, p.n_threads, work + p.scratch_off)
        if o.kind != OPT_NONE:
            sq += update_block(params + p.w_off[l], grads + p.w_off[l], offset(s1, p.w_off[l]),
                               offset(s2, p.w_off[l]), K * N, o, <floating>decay, decay != 0,
                               p.n_threads, p.partials, bad)
            update_block(params + p.b_off[l], grads + p.b_off[l], offset(s1, p.b_off[l]),
                         offset(s2, p.b_off[l]), N, o, 0, False, p.n_threads, p.partials, bad)
    penalty[0] = 0.5 * decay * sq
    return value


cdef void gather_batch(const Plan* p, floating* work, int64_t* label_buf, floating* w_buf,
                       const floating* X, const int64_t* labels, const floating* Y,
                       const floating* w, const int64_t* rows, Py_ssize_t lo,
                       Py_ssize_t hi) noexcept nogil:
    # for lo <= i < hi: work's input slot row i <- X[rows[i]]; label_buf[i] <- labels[rows[i]]
    # or the Y slot's row i <- Y[rows[i]]; w_buf[i] <- w[rows[i]] when there are row weights
    cdef Py_ssize_t i, n0 = p.sizes[0], nL = p.sizes[p.n_layers]
    for i in range(lo, hi):
        memcpy(work + i * n0, X + rows[i] * n0, n0 * sizeof(floating))
        if w != NULL:
            w_buf[i] = w[rows[i]]
        if labels != NULL:
            label_buf[i] = labels[rows[i]]
        else:
            memcpy(work + p.y_off + i * nL, Y + rows[i] * nL, nL * sizeof(floating))


# -- the epoch run by a team of threads ------------------------------------------------------
# With two or more threads, train_epoch opens one parallel region for the whole epoch and
# every thread runs epoch_thread: the same steps as the serial loop, each product and
# loop shared out among the team (_team.pxd, team.h), with a barrier wherever a step needs
# the previous one's output. The same bits as the serial loop, whatever the thread count.

cdef double loss_and_gradient_team(Team* team, const Plan* p, floating* params,
                                   floating* grads, floating* s1, floating* s2,
                                   floating* work, const floating* X, const int64_t* labels,
                                   const floating* Y, const floating* w, Py_ssize_t B,
                                   const Objective* obj, const OptStep* o, double* penalty,
                                   floating* flag, bint* bad, double* rows) noexcept nogil:
    # loss_and_gradient of one training step (o.kind is OPT_SGD or OPT_ADAM) by the team;
    # every thread returns the same value, *penalty and *bad. The fused SGD step marks a
    # non-finite value in *flag, which the team shares. rows: B doubles.
    cdef Py_ssize_t L = p.n_layers, l, i, K, N
    cdef double value, decay = obj.l2, sq = 0
    cdef floating* dZ
    cdef const floating* a_in = X
    cdef bint fused
    penalty[0] = 0
    for l in range(L):
        dense_forward_team(team, work + p.z_off[l], work + p.a_off[l + 1], a_in,
                           params + p.w_off[l], params + p.b_off[l],
                           B, p.sizes[l], p.sizes[l + 1], p.acts[l], work + p.scratch_off)
        a_in = work + p.a_off[l + 1]
    value = loss_and_output_gradient_team(team, work + p.dz_off[(L - 1) % 2],
                                          work + p.z_off[L - 1], work + p.a_off[L],
                                          labels, Y, w, B, p.sizes[L], p.loss, p.acts[L - 1],
                                          obj.scale, rows)
    if not isfinite(value):
        return value
    decay = step_decay(obj, w, B)
    fused = o.kind == OPT_SGD and s1 == NULL and decay == 0
    for l in range(L - 1, -1, -1):
        K = p.sizes[l]
        N = p.sizes[l + 1]
        dZ = work + p.dz_off[l % 2]
        a_in = X if l == 0 else work + p.a_off[l]
        if l > 0:
            input_gradient_team(team, work + p.dz_off[(l - 1) % 2], dZ, params + p.w_off[l],
                                work + p.z_off[l - 1], work + p.a_off[l],
                                B, K, N, p.acts[l - 1], work + p.scratch_off)
        if fused:
            weight_update_team(team, params + p.w_off[l], params + p.b_off[l],
                               grads + p.b_off[l], a_in, dZ, B, K, N, <floating>o.lr,
                               work + p.scratch_off, flag)
            continue
        weight_gradient_team(team, grads + p.w_off[l], grads + p.b_off[l], a_in, dZ,
                             B, K, N, work + p.scratch_off)
        sq += update_layer_team(team, params + p.w_off[l], grads + p.w_off[l],
                                params + p.b_off[l], grads + p.b_off[l], s1, s2,
                                p.w_off[l], p.b_off[l], K * N, N, o, <floating>decay,
                                p.partials, bad)
    penalty[0] = 0.5 * decay * sq
    return value


cdef double loss_and_gradient_team_halves(Team* team, const Plan* p, floating* params,
                                          floating* grads, floating* s1, floating* s2,
                                          floating* work, const floating* X,
                                          const int64_t* labels, const floating* Y,
                                          const floating* w, Py_ssize_t B,
                                          const Objective* obj, const OptStep* o,
                                          double* penalty, bint* bad,
                                          double* half_total, HalvesSync* hs,
                                          long long base) noexcept nogil:
    # loss_and_gradient_halves run by a team of two: thread t computes half t of the batch
    # (into grads, or the plan's second gradient buffer), then both take the optimizer
    # step together, the first to finish its half starting on the layers the other is
    # done with (see update_halves); both return its value, *penalty and *bad.
    # half_total: 2 doubles shared by the team; hs: the halves' progress (see HalvesSync),
    # base: its counters' value before this step. The thread done with its half first takes
    # over the other half's weight gradients that are ready and not yet taken.
    cdef Py_ssize_t lo, hi
    cdef int t = team.tid
    cdef double norm = loss_norm(w, B, p.sizes[p.n_layers], p.loss), value, decay
    cdef floating* scratch = work + (p.scratch_off if t == 0 else p.scratch2_off)
    penalty[0] = 0
    half_rows(B, t, &lo, &hi)
    half_gradient(p, params, grads if t == 0 else work + p.g2_off, work, scratch,
                  X, labels, Y, w, lo, hi, obj.scale, norm, &half_total[t], hs, t, base)
    # the other half's loss
    fastbp_team_wait_for(hs.sync, hs.ready + PROGRESS_APART * (1 - t), base + 1)
    value = obj.scale * ((half_total[0] + half_total[1]) / norm) if norm != 0 else 0.0
    if not isfinite(value):
        team_barrier(team)      # both come here: no step, and the other half is done
        return value
    half_rows(B, 1 - t, &lo, &hi)
    steal_weight_gradients(p, grads if t == 1 else work + p.g2_off, work, scratch, X, lo, hi,
                           hs, 1 - t, base)
    decay = step_decay(obj, w, B)
    penalty[0] = 0.5 * decay * update_halves(p, params, grads, work + p.g2_off, s1, s2, o,
                                             <floating>decay, team, hs, base, bad)
    return value


# Threads join the epoch's team only for this many multiply-adds each per step (forward,
# weight and input gradients of a full batch), as products get threads only from
# GEMM_MACS_PER_THREAD: a step is some twenty dependent pieces with a barrier after each,
# and below this the barriers cost more than the threads save. Measured on the 2-vCPU
# guest, fastbp.sklearn on two threads against one (medians of four fits of each): the
# 30-128-64-1 network of breast_cancer (6.5M multiply-adds a step) 0.089 s against
# 0.117 s, the 10-128-64-1 of diabetes (5.5M) 0.118 s against 0.120 s, 64-128-64-10 at
# batch 200 (8.6M) 1.2-1.45x faster. Single fits on that machine ranged from 0.7x to 1.6x
# of the one-thread time: a team depends on both cores running, see TEAM_MAX_YIELDING.
cdef Py_ssize_t TEAM_MIN_MACS_PER_THREAD = 1 << 20      # 1 Mi


# A team waits at each barrier for its slowest thread. When another process holds one of
# the cores, that thread is often not running, and the team ran 8x slower than one thread
# (a 10-128-64-1 network beside a busy loop on a 2-core guest). So thread 0 watches the
# time the threads spend waiting beyond the barrier's spin: past TEAM_MAX_YIELDING of
# their time over SIGNAL_CHECK_S within an epoch, the epoch goes on on one thread; past
# it on average over the last few shorter epochs (team_yielding: each epoch's share
# weighs half, the ones before the other half), the next epochs run on one thread; the
# team is tried again after TEAM_RETRY_S. Results do not depend on which way an epoch
# runs. The average, not each short epoch on its own: the two halves of a batch (see
# SPLIT_MAX_PARAMS) wait for each other at the optimizer step, and on an idle 2-vCPU
# guest the share of a digits epoch (1.5 ms) spent so was 3% in the median but up to 24%
# in single epochs, which had blocked the team for a second at a time in most fits;
# beside a busy loop it was 31-55% in the median.
cdef double TEAM_MAX_YIELDING = 0.25
cdef double TEAM_RETRY_S = 1.0
cdef double team_blocked_until = 0    # fastbp_now() before which epochs run on one thread
cdef double team_yielding = 0         # the recent epochs' share of waiting, averaged


def set_team_policy(min_macs=None, max_yielding=None):
    """Set TEAM_MIN_MACS_PER_THREAD and TEAM_MAX_YIELDING (None: unchanged) and clear a
    fallback to one thread; returns the previous (min_macs, max_yielding). For the tests,
    which run the team on small networks with min_macs=0, and whatever the machine's load
    with max_yielding=inf."""
    global TEAM_MIN_MACS_PER_THREAD, TEAM_MAX_YIELDING, team_blocked_until, team_yielding
    previous = (TEAM_MIN_MACS_PER_THREAD, TEAM_MAX_YIELDING)
    if min_macs is not None:
        TEAM_MIN_MACS_PER_THREAD = max(<Py_ssize_t>min_macs, 0)
    if max_yielding is not None:
        TEAM_MAX_YIELDING = max_yielding
    team_blocked_until = 0
    team_yielding = 0
    return previous


def team_fallback_active():
    """Whether epochs now run on one thread because a recent team waited too long (see
    TEAM_MAX_YIELDING)."""
    return fastbp_now() < team_blocked_until


cpdef int team_size(const Py_ssize_t[::1] sizes, Py_ssize_t batch_size,
                   int n_threads) noexcept:
    # The threads of the epoch's team (see TEAM_MIN_MACS_PER_THREAD); under 2: no team.
    cdef Py_ssize_t l, macs = 0, L = sizes.shape[0] - 1
    if not FASTBP_TEAM_AVAILABLE or n_threads < 2:
        return 1
    for l in range(L):
        macs += sizes[l] * sizes[l + 1] * (3 if l > 0 else 2)
    if TEAM_MIN_MACS_PER_THREAD == 0:
        return n_threads
    return <int>max(1, min(<Py_ssize_t>n_threads, macs * batch_size // TEAM_MIN_MACS_PER_THREAD))


cdef struct EpochShared:
    fastbp_team_sync sync
    bint stop                    # thread 0's signal check raised: all stop at the barrier
    bint fallback                # the team is too slow here: all stop, the epoch goes on
                                 # on one thread (see TEAM_MAX_YIELDING)
    double yielding              # the share of the threads' time spent waiting past the
                                 # spin, over the epoch
    PyObject* error              # the exception it raised (a new reference), or NULL
    PyObject* progress           # borrowed, or NULL
    const void* target           # the SIMD target (gemm.h's fastbp_target), read once for
                                 # the epoch: threads that read it apart could see two
    int64_t* steps_done
    double half_total[2]         # a batch in halves: each half's loss sum
    long long half_progress[2 * PROGRESS_APART]  # ... and each half's progress this epoch
    long long* half_claims       # ... and 4 L counters: HalvesSync's claimed and done
    # thread 0's results
    double total, total_penalty
    Py_ssize_t start, n_steps
    int status


cdef int team_checks(PyObject* progress, Py_ssize_t start, PyObject** error) noexcept with gil:
    # The serial loop's signal check and progress call, for thread 0 of a team: an
    # exception cannot leave a parallel region, so it is kept in *error (returns 1) and
    # raised after the region.
    try:
        PyErr_CheckSignals()
        if progress != NULL:
            (<object>progress)(start)
    except BaseException as exc:
        Py_INCREF(exc)
        error[0] = <PyObject*>exc
        return 1
    return 0


cdef void epoch_thread(EpochShared* sh, const Plan* p, floating* params, floating* grads,
                       floating* s1, floating* s2, floating* work, int64_t* label_buf,
                       floating* wb, const floating* X, const int64_t* lab,
                       const floating* ys, const floating* w, const int64_t* order,
                       Py_ssize_t n, Py_ssize_t batch_size, const OptStep* o_in, double lr,
                       long long t0, const Objective* obj, floating* flag, double* rows,
                       int tid) noexcept nogil:
    # train_epoch's loop, run by each thread of the team. Every decision to go on or stop
    # is taken from values all threads hold alike (their own copies, or shared ones read
    # after a barrier), so they leave the loop together.
    cdef Team team
    cdef OptStep o = o_in[0]
    cdef Py_ssize_t start = 0, n_steps = 0, B, lo, hi
    cdef double total = 0, total_penalty = 0, value, penalty, next_check, now
    cdef double began = fastbp_now(), last_check = began
    cdef long long yielded = 0, yielded_now
    cdef int status = 0
    cdef bint bad = False, halves
    cdef long long half_base = 0    # the halves' progress counters before this step
    cdef HalvesSync hs
    hs.sync = &sh.sync
    hs.ready = sh.half_progress
    hs.claimed = sh.half_claims
    hs.done = sh.half_claims + 2 * p.n_layers
    team.tid = tid
    team.n = fastbp_team_size()
    team.sync = &sh.sync
    team.base = 0
    team.target = sh.target
    next_check = began + SIGNAL_CHECK_S
    while start < n:
        B = min(batch_size, n - start)
        if tid == 0 and n_steps > 0 and fastbp_now() >= next_check:
            if team_checks(sh.progress, start, &sh.error):
                sh.stop = True
            now = fastbp_now()
            yielded_now = fastbp_team_yielding_ns(&sh.sync)
            if (yielded_now - yielded) * 1e-9 > TEAM_MAX_YIELDING * team.n * (now - last_check):
                sh.fallback = True
            yielded = yielded_now
            last_check = now
            next_check = now + SIGNAL_CHECK_S
        # a batch in halves, one per thread (see SPLIT_MAX_PARAMS); a team that OpenMP
        # gave one thread (OMP_THREAD_LIMIT) computes both, as the serial loop does
        halves = p.parts == 2 and B >= 2
        if halves and team.n == 2:
            half_rows(B, tid, &lo, &hi)     # the rows this thread computes
        else:
            team_share(&team, B, &lo, &hi)
        gather_batch(p, work, label_buf, wb, X, lab, ys, w, order + start, lo, hi)
        # not timed: here the others wait for thread 0's signal check and progress call
        # (the GIL, a callback), which is not the machine being busy
        fastbp_team_barrier_untimed(team.sync, team.n)
        if sh.stop or sh.fallback:
            break
        if o.kind == OPT_ADAM:
            adam_set_step(&o, lr, t0 + n_steps + 1)
        if halves and team.n == 1:
            value = loss_and_gradient_halves(p, params, grads, s1, s2, work, work,
                                             label_buf if lab != NULL else NULL,
                                             work + p.y_off if lab == NULL else NULL,
                                             wb, B, obj, &o, &penalty, &bad)
        elif halves:
            value = loss_and_gradient_team_halves(&team, p, params, grads, s1, s2, work, work,
                                                  label_buf if lab != NULL else NULL,
                                                  work + p.y_off if lab == NULL else NULL,
                                                  wb, B, obj, &o, &penalty, &bad,
                                                  sh.half_total, &hs, half_base)
            half_base += 1 + p.n_layers
        else:
            value = loss_and_gradient_team(&team, p, params, grads, s1, s2, work, work,
                                           label_buf if lab != NULL else NULL,
                                           work + p.y_off if lab == NULL else NULL,
                                           wb, B, obj, &o, &penalty, flag, &bad, rows)
        if not isfinite(value):
            status = 1
            break
        if bad or flag[0] != 0:
            status = 2
            break
        total += value * B
        total_penalty += penalty * B
        n_steps += 1
        start += B
        if tid == 0:
            sh.steps_done[0] = n_steps
    if tid == 0:
        now = fastbp_now()
        if status == 0 and not sh.stop and not sh.fallback and now >= next_check:
            team_checks(sh.progress, start, &sh.error)
        sh.yielding = (fastbp_team_yielding_ns(&sh.sync) * 1e-9
                       / max(team.n * (now - began), 1e-9))
        sh.total = total
        sh.total_penalty = total_penalty
        sh.start = start
        sh.n_steps = n_steps
        sh.status = status


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


cdef inline floating* data_or_null(floating[::1] buf) noexcept:
    return &buf[0] if buf.shape[0] > 0 else NULL


def loss_gradients_step(floating[::1] params, floating[::1] grads, floating[::1] work,
                        const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                        const floating[:, ::1] X, const int64_t[::1] labels,
                        const floating[:, ::1] Y, const floating[::1] weights,
                        bint want_grad, double lr, int n_threads):
    """Loss of (X, labels or Y), a weighted mean when weights is not empty. With want_grad and lr == 0 the gradients go into grads;
    with want_grad and lr > 0 one SGD step is taken on params instead (grads is then
    scratch space: the bias gradients, or a half batch's gradients). Returns (loss before
    the step, bad): bad when the step made a parameter non-finite."""
    cdef Plan p
    cdef Py_ssize_t B = X.shape[0]
    cdef double value, penalty
    cdef bint bad = False
    cdef const int64_t* lab = labels_ptr(labels)
    cdef const floating* ys = rows_ptr(Y)
    cdef floating* g = &grads[0] if want_grad else NULL
    cdef const floating* w = &weights[0] if weights.shape[0] > 0 else NULL
    cdef Objective obj
    cdef OptStep o
    obj.scale = 1
    obj.l2 = 0
    obj.l2_per_sample = False
    o.kind = OPT_SGD if lr > 0 else OPT_NONE
    o.lr = lr
    make_plan(&p, sizes, acts, loss, B, False, n_threads)
    try:
        with nogil:
            value = loss_and_gradient(&p, &params[0], g, NULL, NULL, &work[0], &X[0, 0],
                                      lab, ys, w, B, &obj, &o, &penalty, &bad)
    finally:
        free_plan(&p)
    return value, bad


cpdef tuple train_epoch(floating[::1] params, floating[::1] grads, floating[::1] state1,
                      floating[::1] state2, floating[::1] work, int64_t[::1] label_buf,
                      floating[::1] w_buf,
                      const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                      const floating[:, ::1] X, const int64_t[::1] labels,
                      const floating[:, ::1] Y, const floating[::1] weights,
                      const int64_t[::1] order, Py_ssize_t batch_size,
                      int kind, double lr, double momentum, bint nesterov,
                      double beta1, double beta2, double eps, long long t0,
                      double scale, double l2, bint l2_per_sample,
                      int n_threads, int64_t[::1] steps_done, progress=None):
    """One epoch of minibatch training over the rows of X in `order`, without the GIL.
    work: work_size(capacity=batch_size, input_slot=True); label_buf and w_buf: batch_size
    elements (w_buf: 0 without row weights); state1/state2: the optimizer's state buffers
    laid out like params, or empty (plain SGD keeps none; momentum uses state1, Adam both).
    kind: OPT_SGD or OPT_ADAM; t0: Adam steps taken before this epoch.

    Returns (sum over batches of loss * rows, sum of penalty * rows, rows done, steps
    done, status). Each batch's loss is taken before its step. status 0: the epoch
    finished; 1: a batch's loss was not finite and the loop stopped before its step; 2: the
    last step made a parameter non-finite (that step is applied and not counted in steps
    done: the caller restores and replays). Every SIGNAL_CHECK_S seconds the loop takes
    the GIL to let Python handle signals and to call progress(rows done) if given; a
    KeyboardInterrupt then propagates from here at a batch boundary, with the parameters
    of the last completed step. steps_done[0] is kept equal to the steps completed so
    far, so that the caller knows it when an exception propagates."""
    cdef Plan p
    cdef Py_ssize_t n = order.shape[0], start = 0, B, n_steps = 0
    cdef double total = 0, total_penalty = 0, value, penalty, next_check
    cdef int status = 0
    cdef bint bad = False
    cdef const int64_t* lab = labels_ptr(labels)
    cdef const floating* ys = rows_ptr(Y)
    cdef const floating* w = &weights[0] if weights.shape[0] > 0 else NULL
    cdef floating* s1 = data_or_null(state1)
    cdef floating* s2 = data_or_null(state2)
    cdef floating* wb = data_or_null(w_buf)
    cdef Objective obj
    cdef OptStep o
    obj.scale = scale
    obj.l2 = l2
    obj.l2_per_sample = l2_per_sample
    o.kind = kind
    o.lr = lr
    o.momentum = momentum
    o.nesterov = nesterov
    o.beta1 = beta1
    o.beta2 = beta2
    o.eps = eps
    cdef EpochShared sh
    cdef double* rows = NULL
    cdef long long* claims = NULL
    cdef floating flag[1]
    cdef object error
    global team_blocked_until, team_yielding
    cdef int team = team_size(sizes, batch_size, n_threads)
    sh.fallback = False
    steps_done[0] = 0
    make_plan(&p, sizes, acts, loss, batch_size, True, n_threads)
    if p.parts == 2:
        team = min(team, 2)     # a thread for each half of a batch
    try:
        if team >= 2 and n > 0 and fastbp_now() >= team_blocked_until:
            # one parallel region for the whole epoch (see epoch_thread)
            rows = <double*>malloc(batch_size * sizeof(double))
            claims = <long long*>calloc(4 * p.n_layers, sizeof(long long))
            if rows == NULL or claims == NULL:
                raise MemoryError()
            sh.half_claims = claims
            fastbp_team_sync_init(&sh.sync)
            sh.stop = False
            sh.fallback = False
            sh.yielding = 0
            sh.half_progress[0] = 0
            sh.half_progress[PROGRESS_APART] = 0
            sh.error = NULL
            sh.progress = <PyObject*>progress if progress is not None else NULL
            sh.steps_done = &steps_done[0]
            sh.target = <const void*>fastbp_active_target
            flag[0] = 0
            with nogil, parallel(num_threads=team):
                epoch_thread(&sh, &p, &params[0], &grads[0], s1, s2, &work[0],
                             &label_buf[0], wb, &X[0, 0], lab, ys, w, &order[0], n,
                             batch_size, &o, lr, t0, &obj, flag, rows, threadid())
            if not sh.fallback:
                team_yielding = 0.5 * team_yielding + 0.5 * sh.yielding
                if team_yielding > TEAM_MAX_YIELDING:
                    team_blocked_until = fastbp_now() + TEAM_RETRY_S
                    team_yielding = 0
            if sh.error != NULL:
                error = <object>sh.error
                Py_XDECREF(sh.error)
                raise error
            if not sh.fallback or sh.status != 0:
                return sh.total, sh.total_penalty, sh.start, sh.n_steps, sh.status
            # the rest of the epoch on this thread, from where the team stopped
            total = sh.total
            total_penalty = sh.total_penalty
            start = sh.start
            n_steps = sh.n_steps
        if team >= 2:
            # a team was due but the machine is busy (see TEAM_MAX_YIELDING): one thread,
            # not the products' own parallel regions, whose waiting threads spin as long
            p.n_threads = 1
        with nogil:
            next_check = fastbp_now() + SIGNAL_CHECK_S
            while start < n:
                B = min(batch_size, n - start)
                gather_batch(&p, &work[0], &label_buf[0], wb, &X[0, 0], lab, ys, w,
                             &order[start], 0, B)
                if kind == OPT_ADAM:
                    adam_set_step(&o, lr, t0 + n_steps + 1)
                value = loss_and_gradient(&p, &params[0], &grads[0], s1, s2, &work[0],
                                          &work[0],
                                          &label_buf[0] if lab != NULL else NULL,
                                          &work[0] + p.y_off if lab == NULL else NULL,
                                          wb, B, &obj, &o, &penalty, &bad)
                if not isfinite(value):
                    status = 1
                    break
                if bad:
                    status = 2
                    break
                total += value * B
                total_penalty += penalty * B
                n_steps += 1
                start += B
                steps_done[0] = n_steps
                if fastbp_now() >= next_check:
                    with gil:
                        PyErr_CheckSignals()
                        if progress is not None:
                            progress(start)
                    next_check = fastbp_now() + SIGNAL_CHECK_S
    finally:
        free_plan(&p)
        free(rows)
        free(claims)
    if team >= 2 and n > 0 and sh.fallback:
        # retried a second after the epoch that gave up on the team
        team_blocked_until = fastbp_now() + TEAM_RETRY_S
        team_yielding = 0
    return total, total_penalty, start, n_steps, status


# -- numpy's legacy shuffle, for fastbp.sklearn ----------------------------------------------

cdef extern from "numpy/random/bitgen.h" nogil:
    ctypedef struct bitgen_t:
        void* state
        uint64_t (*next_uint64)(void* st) nogil
        uint32_t (*next_uint32)(void* st) nogil


cdef inline uint64_t random_interval(bitgen_t* bg, uint64_t mx) noexcept nogil:
    # numpy's random_interval: a uniform integer in [0, mx] by masked rejection
    cdef uint64_t mask = mx, value
    if mx == 0:
        return 0
    mask |= mask >> 1
    mask |= mask >> 2
    mask |= mask >> 4
    mask |= mask >> 8
    mask |= mask >> 16
    mask |= mask >> 32
    if mx <= <uint64_t>0xffffffffU:
        while True:
            value = bg.next_uint32(bg.state) & mask
            if value <= mx:
                return value
    while True:
        value = bg.next_uint64(bg.state) & mask
        if value <= mx:
            return value


def shuffle_like_random_state(object capsule, int64_t[::1] x):
    """Shuffle x in place as numpy.random.RandomState.shuffle does, drawing from the bit
    generator of `capsule` (RandomState._bit_generator.capsule; the caller holds that bit
    generator's lock): Fisher-Yates from the last element down, each partner drawn by
    numpy's random_interval. fastbp.sklearn checks it against RandomState.shuffle before
    trusting it (see _fast_shuffle there): scikit-learn's MLP shuffles its rows with that
    every epoch, and the Python around it had cost 20 us an epoch."""
    cdef bitgen_t* bg = <bitgen_t*>PyCapsule_GetPointer(capsule, "BitGenerator")
    if x.shape[0] > 0:
        with nogil:
            shuffle_rows(bg, &x[0], x.shape[0])


cdef void shuffle_rows(bitgen_t* bg, int64_t* x, Py_ssize_t n) noexcept nogil:
    # shuffle_like_random_state's loop
    cdef Py_ssize_t i = n - 1, j
    cdef int64_t tmp
    while i >= 1:
        j = <Py_ssize_t>random_interval(bg, <uint64_t>i)
        tmp = x[i]
        x[i] = x[j]
        x[j] = tmp
        i -= 1


# -- epochs in a row, for fastbp.sklearn ---------------------------------------------------

cdef inline void copy_buffer(floating[::1] dst, floating[::1] src) noexcept:
    if src.shape[0] > 0:
        memcpy(&dst[0], &src[0], src.shape[0] * sizeof(floating))


def train_epochs(floating[::1] params, floating[::1] grads, floating[::1] state1,
                 floating[::1] state2, floating[::1] work, int64_t[::1] label_buf,
                 floating[::1] w_buf,
                 const Py_ssize_t[::1] sizes, const int[::1] acts, int loss,
                 const floating[:, ::1] X, const int64_t[::1] labels,
                 const floating[:, ::1] Y, const floating[::1] weights,
                 int64_t[::1] order, Py_ssize_t batch_size,
                 int kind, double lr, double momentum, bint nesterov,
                 double beta1, double beta2, double eps, long long t0,
                 double scale, double l2, bint l2_per_sample,
                 int n_threads, int64_t[::1] steps_done,
                 floating[::1] saved_params, floating[::1] saved_state1,
                 floating[::1] saved_state2, object shuffle_capsule, object shuffle_lock,
                 Py_ssize_t max_epochs, bint mse, double tol, double n_iter_no_change,
                 double[::1] rule, double[:, ::1] record):
    """Up to max_epochs epochs of train_epoch in a row (same arguments up to steps_done),
    with what fastbp.sklearn's fit does between two epochs, for its loops of many short
    epochs: on the small data sets scikit-learn's MLP is used for, the Python between
    epochs (the shuffle, the copies for a rollback, scikit-learn's stopping rule) had been
    about 100 us an epoch, 5-10% of a fit. Before each epoch `order` is shuffled in place
    as shuffle_like_random_state does, under shuffle_lock (unless shuffle_capsule is
    None), and params and the state buffers are copied into saved_* (what the caller
    restores when an epoch fails); t0 is Adam's step count before the first epoch.

    After epoch e, record[e] = (loss sum, penalty sum, rows done, steps, status, seconds,
    loss as scikit-learn reports it: the mean loss with the penalty, 0.5 * the mean
    squared error plus the penalty when mse) and scikit-learn's rule without early
    stopping is applied to rule = [best loss, epochs without improvement, epochs done,
    steps done]: a loss above best - tol adds one, another sets it to 0, a lower loss is
    the new best. Returns the epochs run: after max_epochs, after an epoch whose status
    is not 0 (its record says which; nothing of rule changes for it), or after the epoch
    that made the count exceed n_iter_no_change. A KeyboardInterrupt propagates as from
    train_epoch, rule counting the epochs completed before it; signals are also looked
    for before each epoch."""
    cdef Py_ssize_t e, n = order.shape[0]
    cdef double began, total, total_penalty, done, value, best = rule[0], count = rule[1]
    cdef long long t = t0, steps
    cdef int status
    cdef bitgen_t* bg = NULL
    if (saved_params.shape[0] != params.shape[0] or saved_state1.shape[0] != state1.shape[0]
            or saved_state2.shape[0] != state2.shape[0]):
        raise ValueError("train_epochs: saved buffers do not match the parameters")
    if record.shape[0] < max_epochs or record.shape[1] != 7 or rule.shape[0] != 4:
        raise ValueError("train_epochs: record or rule too short")
    if n == 0:
        raise ValueError("train_epochs: no rows")
    if shuffle_capsule is not None:
        bg = <bitgen_t*>PyCapsule_GetPointer(shuffle_capsule, "BitGenerator")
    for e in range(max_epochs):
        # A signal (Ctrl-C) that came after the last epoch's check: the loop of one epoch
        # at a time would see it between two epochs, in the interpreter; here nothing
        # else would until an epoch longer than SIGNAL_CHECK_S.
        steps_done[0] = 0       # the last epoch's are in rule[3]
        PyErr_CheckSignals()
        if bg != NULL:
            with shuffle_lock:
                with nogil:
                    shuffle_rows(bg, &order[0], n)
        copy_buffer(saved_params, params)
        copy_buffer(saved_state1, state1)
        copy_buffer(saved_state2, state2)
        began = fastbp_now()
        total, total_penalty, done, steps, status = train_epoch(
            params, grads, state1, state2, work, label_buf, w_buf, sizes, acts, loss, X,
            labels, Y, weights, order, batch_size, kind, lr, momentum, nesterov, beta1,
            beta2, eps, t, scale, l2, l2_per_sample, n_threads, steps_done, None)
        record[e, 0] = total
        record[e, 1] = total_penalty
        record[e, 2] = done
        record[e, 3] = <double>steps
        record[e, 4] = status
        record[e, 5] = fastbp_now() - began
        if status != 0:
            return e + 1
        t += steps
        # as fastbp/network.py's EpochStats and fastbp.sklearn's loss_ compute it
        if mse:
            value = 0.5 * (total / scale / done) + total_penalty / done
        else:
            value = (total + total_penalty) / done
        record[e, 6] = value
        if value > best - tol:
            count += 1
        else:
            count = 0
        if value < best:
            best = value
        rule[0] = best
        rule[1] = count
        rule[2] = e + 1
        rule[3] = <double>(t - t0)
        if count > n_iter_no_change:
            return e + 1
    return max_epochs
