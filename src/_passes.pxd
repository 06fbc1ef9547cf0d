# The passes of a training step, each written once: a part's rows through forward, loss
# and backward (rows_pass), an update unit's gradient sum and optimizer step
# (update_unit), and the step that runs them (step): the parts of a batch shared among
# threads as whole parts, then the update units shared among them. The layout of every
# buffer is the plan's (_plan.pxd); the Python layer (fastbp/network.py) has checked
# every argument, so nothing here checks.
#
# Determinism: a part's values are computed by one thread in a fixed order, whichever
# thread that is; the parts' gradients are summed in part order and their loss sums
# likewise; an update unit's values depend only on its own elements. So every thread
# count gives the same bits (see _plan.pxd for why P never depends on it).

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport isfinite, NAN
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from _plan cimport Plan, part_rows, active_parts
from _dense cimport dense_forward, weight_gradient, weight_update, input_gradient
from _losses cimport loss_rows, loss_norm, weight_sum
from _sparse cimport CsrRows, sparse_forward, sparse_weight_gradient
from _optim cimport (OptStep, OPT_NONE, OPT_SGD, UPDATE_CHUNK, UPDATE_PARALLEL_MIN, update_chunks,
                     update_chunk)


cdef extern from *:
    """
    /* An OpenMP barrier for the enclosing parallel region (an orphaned directive): Cython
     * ends a prange inside `with parallel()` without one (omp for nowait). */
    static void fastbp_omp_barrier(void) {
    #ifdef _OPENMP
        #pragma omp barrier
    #endif
    }
    """
    void fastbp_omp_barrier() nogil


cdef struct Objective:
    double scale                 # multiplies the data loss and its gradient
    double l2                    # L2 penalty 0.5 l2 sum(W^2) on the weights (not biases)
    bint l2_per_sample           # divide l2 by the batch's weight sum (scikit-learn's alpha)
    bint step_non_finite         # step even when the batch's loss is not finite (scikit-learn's
                                 # fit goes on through a divergence; fastbp's stops before it)


cdef struct Batch:
    # A batch's rows, of the step's dtype (pointers to float or double).
    const void* X                # the rows of X (rows != NULL) or the batch itself;
                                 # unused when X is sparse (sp_indptr not NULL)
    const int64_t* labels        # class labels, or NULL (then Y)
    const void* Y                # target rows, or NULL (then labels)
    const void* w                # row weights, or NULL
    const int64_t* rows          # this batch's row indices into X, labels, Y, w, or NULL
    Py_ssize_t size              # B
    Py_ssize_t n_rows            # rows of X (with rows: each index is checked against it)
    Py_ssize_t n_classes         # labels are checked to lie in [0, n_classes)
    # A CSR X (_sparse.pxd; sp_indptr NULL: X is dense): its rows as X's, the first
    # layer's products sparse. sp_scratch holds one slot of sp_scratch_len per part.
    const void* sp_data
    const int64_t* sp_indices
    const int64_t* sp_indptr
    int64_t* sp_scratch
    Py_ssize_t sp_scratch_len


cdef struct Buffers:
    # The network's buffers, of the step's dtype, laid out as the plan says.
    void* params
    void* grads                  # part 0's gradients, then the step's summed gradients
    void* state1                 # the optimizer's state (momentum, Adam's m), or NULL
    void* state2                 # Adam's s, or NULL
    void* work
    int64_t* row_buf             # capacity row indices (with rows): the checked copy the
                                 # parts read, so that no index changes after its check
    int64_t* label_buf           # capacity labels (with rows)
    void* w_buf                  # capacity row weights (with rows and weights)


cdef struct FusedSgd:
    # Plain SGD (no momentum, no penalty) of a one-part plan, taken in the backward pass:
    # W_l -= lr dW_l straight from the weight product's registers, dW_l never stored
    # (_dense.pxd's weight_update); storing a large layer's gradient and stepping after
    # cost a fifth of a 784-128-10 epoch on one thread (benchmarks/RESULTS.md).
    double lr
    bint not_finite              # OUT: a new value is not finite


cdef inline void gather_rows(const Plan* p, floating* work, const floating* X,
                             const floating* Y, const int64_t* rows, Py_ssize_t lo,
                             Py_ssize_t hi) noexcept nogil:
    # the input slot's rows [lo, hi) <- X[rows[i]], and the Y slot's <- Y[rows[i]]
    # (X NULL: a sparse X, read in place through the row indices)
    cdef Py_ssize_t i, n0 = p.sizes[0], nL = p.sizes[p.n_layers]
    for i in range(lo, hi):
        if X != NULL:
            memcpy(work + i * n0, X + rows[i] * n0, n0 * sizeof(floating))
        if Y != NULL:
            memcpy(work + p.y_off + i * nL, Y + rows[i] * nL, nL * sizeof(floating))


cdef inline void forward_rows(const Plan* p, const floating* params, floating* work,
                              floating* scratch, const floating* X, Py_ssize_t lo,
                              Py_ssize_t hi, int n_threads) noexcept nogil:
    # Rows [lo, hi) of the batch X (B, n0): for each layer Z_l = A_{l-1} W_l + b_l and
    # A_l = f_l(Z_l), into the same rows of the Z and A slots.
    forward_rows_of(p, params, work, scratch, X, NULL, lo, hi, n_threads)


cdef inline void forward_rows_of(const Plan* p, const floating* params, floating* work,
                                 floating* scratch, const floating* X, const CsrRows* x,
                                 Py_ssize_t lo, Py_ssize_t hi, int n_threads) noexcept nogil:
    # forward_rows of a dense X (x NULL) or of a sparse one, x: the batch's rows from its
    # row lo on (X unused), whose first layer is sparse_forward.
    cdef Py_ssize_t l, N
    cdef const floating* a_in = X + lo * p.sizes[0] if x == NULL else NULL
    for l in range(p.n_layers):
        N = p.sizes[l + 1]
        if l == 0 and x != NULL:
            sparse_forward(work + p.z_off[0] + lo * N, work + p.a_off[1] + lo * N, x,
                           params + p.w_off[0], params + p.b_off[0], hi - lo, N,
                           p.acts[0], n_threads)
        else:
            dense_forward(work + p.z_off[l] + lo * N, work + p.a_off[l + 1] + lo * N, a_in,
                          params + p.w_off[l], params + p.b_off[l], hi - lo, p.sizes[l], N,
                          p.acts[l], n_threads, scratch)
        a_in = work + p.a_off[l + 1] + lo * N


cdef inline double rows_pass(const Plan* p, const floating* params, floating* G,
                             floating* work, floating* scratch, const floating* X,
                             const int64_t* labels, const floating* Y, const floating* w,
                             Py_ssize_t lo, Py_ssize_t hi, double scale, double norm,
                             int n_threads, FusedSgd* sgd, const CsrRows* x) noexcept nogil:
    # Rows [lo, hi) of a batch through forward, loss and (G not NULL) backward; returns
    # their share of the loss sum, sum_i r_i l_i (r_i: row weight or 1), which the caller
    # adds to the other parts' and divides by norm. The gradients of these rows go into G
    # (laid out like params) by the chain rule from layer L down:
    #   dZ_L = scale r_i / norm dl_i/dZ_L,   dW_l = A_{l-1}^T dZ_l,   db_l = sum_rows dZ_l,
    #   dZ_{l-1} = (dZ_l W_l^T) * f'_{l-1}(Z_{l-1})
    # Pointers are at the batch's first row. The dZ rows of a part start widest * lo into
    # their slot, so parts never share a row whatever the layers' widths. sgd (not NULL)
    # steps each layer in place of storing its weight gradient (G then holds only the
    # bias gradients), unless the loss is not finite, when nothing is stepped.
    # x (not NULL): X is sparse, x its batch's rows (_sparse.pxd); layer 0's products are
    # then the sparse ones (sgd must be NULL).
    cdef Py_ssize_t L = p.n_layers, l, K, N, B = hi - lo, nL = p.sizes[L]
    cdef const floating* a_in
    cdef floating* dz[2]
    cdef double total
    cdef CsrRows rows_x                  # x from row lo on
    if x != NULL:
        rows_x = x[0]
        if rows_x.rows != NULL:
            rows_x.rows += lo
        else:
            rows_x.first += lo
    dz[0] = work + p.dz_off[0] + lo * p.widest
    dz[1] = work + p.dz_off[1] + lo * p.widest
    forward_rows_of(p, params, work, scratch, X, &rows_x if x != NULL else NULL, lo, hi,
                    n_threads)
    total = loss_rows(dz[(L - 1) % 2] if G != NULL else NULL,
                      work + p.z_off[L - 1] + lo * nL, work + p.a_off[L] + lo * nL,
                      labels + lo if labels != NULL else NULL,
                      Y + lo * nL if Y != NULL else NULL, w + lo if w != NULL else NULL,
                      B, nL, p.loss, p.acts[L - 1], scale, norm, True)
    if G == NULL or (sgd != NULL and not isfinite(total)):
        return total
    for l in range(L - 1, -1, -1):
        K = p.sizes[l]
        N = p.sizes[l + 1]
        if l == 0 and x != NULL:
            sparse_weight_gradient(G + p.w_off[0], G + p.b_off[0], &rows_x, dz[0], B, K, N,
                                   n_threads)
            continue
        a_in = X + lo * K if l == 0 else work + p.a_off[l] + lo * K
        if l > 0:
            # before the weights' step: dZ_{l-1} needs this step's W_l
            input_gradient(dz[(l - 1) % 2], dz[l % 2], params + p.w_off[l],
                           work + p.z_off[l - 1] + lo * K, work + p.a_off[l] + lo * K,
                           B, K, N, p.acts[l - 1], n_threads, scratch)
        if sgd != NULL:
            weight_update(<floating*>params + p.w_off[l], <floating*>params + p.b_off[l],
                          G + p.b_off[l], a_in, dz[l % 2], B, K, N, <floating>sgd.lr,
                          n_threads, scratch, &sgd.not_finite)
        else:
            weight_gradient(G + p.w_off[l], G + p.b_off[l], a_in, dz[l % 2], B, K, N,
                            n_threads, scratch)
    return total


cdef inline void part_pass(const Plan* p, const Buffers* buf, const Batch* batch,
                           int part, int parts, double scale, double norm, bint want_grad,
                           int n_threads, FusedSgd* sgd, floating* dtype) noexcept nogil:
    # Part `part` of `parts` of the batch on this thread: its rows gathered (when the batch
    # comes by row indices), then rows_pass into its own gradient buffer; its loss sum
    # goes to p.part_loss[part]. n_threads share each product's tiles (one-part plans).
    # dtype: unused, selects the specialization.
    cdef floating* work = <floating*>buf.work
    cdef floating* G = NULL
    cdef Py_ssize_t step = part_rows(batch.size, parts)
    cdef Py_ssize_t lo = part * step, hi = min(lo + step, batch.size)
    cdef const floating* X = <const floating*>batch.X
    cdef const floating* Y = <const floating*>batch.Y
    cdef const floating* w = <const floating*>batch.w
    cdef const int64_t* labels = batch.labels
    cdef CsrRows x                       # a sparse X's rows (batch.sp_indptr not NULL)
    if batch.sp_indptr != NULL:
        x.data = batch.sp_data
        x.indices = batch.sp_indices
        x.indptr = batch.sp_indptr
        x.rows = buf.row_buf if batch.rows != NULL else NULL
        x.first = 0
        x.scratch = batch.sp_scratch + part * batch.sp_scratch_len
        x.scratch_nnz = (batch.sp_scratch_len - p.sizes[0] - 1) // 2
        X = NULL
    if batch.rows != NULL:
        gather_rows(p, work, X, Y, buf.row_buf, lo, hi)
        if X != NULL:
            X = work
        Y = work + p.y_off if Y != NULL else NULL
        labels = buf.label_buf if labels != NULL else NULL
        w = <const floating*>buf.w_buf if w != NULL else NULL
    if want_grad:
        G = (<floating*>buf.grads if part == 0
             else work + p.part_grads_off + (part - 1) * p.n_params)
    p.part_loss[part] = rows_pass(p, <const floating*>buf.params, G, work,
                                  work + p.scratch_off + part * p.scratch_len, X, labels, Y,
                                  w, lo, hi, scale, norm, n_threads, sgd,
                                  &x if batch.sp_indptr != NULL else NULL)


cdef inline void sgd_chunk(floating* param, const floating* grad, Py_ssize_t n, floating lr,
                           double* out) noexcept nogil:
    # Plain SGD's step as NumPy takes it, fl(p - fl(lr g)): two roundings (this module is
    # compiled without FMA, so the compiler cannot contract them; the per-target update
    # kernels may). out as update_chunk leaves it.
    cdef Py_ssize_t i
    cdef floating x
    cdef bint finite = True
    for i in range(n):
        x = param[i] - lr * grad[i]
        param[i] = x
        if x - x != 0:
            finite = False
    out[0] = 0
    out[1] = 0 if finite else 1


cdef inline void penalty_gradient(const floating* param, floating* grad, Py_ssize_t n,
                                  floating decay, double* out) noexcept nogil:
    # grad += decay * param; out[0] = sum param^2 (0 when decay is 0), out[1] = 0
    cdef Py_ssize_t i
    cdef double sq = 0
    if decay != 0:
        for i in range(n):
            grad[i] = grad[i] + decay * param[i]
            sq += <double>param[i] * param[i]
    out[0] = sq
    out[1] = 0


cdef inline void update_unit(const Plan* p, const Buffers* buf, Py_ssize_t u, int parts,
                             const OptStep* o, double decay, floating* dtype) noexcept nogil:
    # Update unit u (a chunk of one layer's weights or biases): the parts' gradients summed
    # into part 0's buffer in part order, then the optimizer step on the chunk (none for
    # OPT_NONE); the L2 decay on weights only. Leaves its partials (_optim.pxd).
    cdef Py_ssize_t l = 0, c, off, n, n_w, i
    cdef int q
    cdef bint weights
    cdef floating* g
    cdef const floating* gq
    cdef floating* s1 = <floating*>buf.state1
    cdef floating* s2 = <floating*>buf.state2
    while u >= p.unit_base[l + 1]:
        l += 1
    n_w = p.sizes[l] * p.sizes[l + 1]
    c = u - p.unit_base[l]
    weights = c < update_chunks(n_w)
    if weights:
        off = p.w_off[l] + c * UPDATE_CHUNK
        n = min(<Py_ssize_t>UPDATE_CHUNK, n_w - c * UPDATE_CHUNK)
    else:
        c -= update_chunks(n_w)
        off = p.b_off[l] + c * UPDATE_CHUNK
        n = min(<Py_ssize_t>UPDATE_CHUNK, p.sizes[l + 1] - c * UPDATE_CHUNK)
    g = <floating*>buf.grads + off
    for q in range(1, parts):
        gq = <floating*>buf.work + p.part_grads_off + (q - 1) * p.n_params + off
        for i in range(n):
            g[i] = g[i] + gq[i]
    if o.kind == OPT_NONE:
        # gradients only (a full-batch optimizer's): the penalty's gradient added to the
        # weights', its sum of squares left in the partials
        penalty_gradient(<const floating*>buf.params + off, g, n,
                         <floating>(decay if weights else 0), p.partials + 2 * u)
        return
    if o.kind == OPT_SGD and s1 == NULL and decay == 0:
        sgd_chunk(<floating*>buf.params + off, g, n, <floating>o.lr, p.partials + 2 * u)
        return
    update_chunk(<floating*>buf.params + off, g, s1 + off if s1 != NULL else NULL,
                 s2 + off if s2 != NULL else NULL, n, o,
                 <floating>(decay if weights else 0), weights and decay != 0,
                 p.partials + 2 * u)


cdef inline double step_decay(const Objective* obj, const floating* w,
                              Py_ssize_t B) noexcept nogil:
    # the L2 factor of this batch's step: obj.l2, divided by the batch's weight sum when
    # l2_per_sample (scikit-learn's alpha)
    cdef double w_sum
    if not obj.l2_per_sample or obj.l2 == 0:
        return obj.l2
    w_sum = weight_sum(w, B)
    return obj.l2 / w_sum if w_sum > 0 else 0


cdef struct StepResult:
    double penalty               # the L2 penalty at the parameters before the step
    bint not_finite              # the step made a parameter or state value non-finite
    bint bad_input               # a row index or label out of range: the caller's arrays
                                 # changed after validation; nothing was computed


cdef inline bint copy_checked(const Plan* p, const Buffers* buf, const Batch* batch,
                              floating* dtype) noexcept nogil:
    # The batch's row indices into buf.row_buf, its labels into buf.label_buf and its row
    # weights into buf.w_buf, each index and label checked where it is read: False when
    # one is out of range. Every later read of them is of these copies.
    cdef Py_ssize_t i, r
    cdef int64_t c
    cdef const floating* w = <const floating*>batch.w
    for i in range(batch.size):
        r = batch.rows[i]
        if r < 0 or r >= batch.n_rows:
            return False
        buf.row_buf[i] = r
        if batch.labels != NULL:
            c = batch.labels[r]
            if c < 0 or c >= batch.n_classes:
                return False
            buf.label_buf[i] = c
        if w != NULL:
            (<floating*>buf.w_buf)[i] = w[r]
    return True


cdef inline bint labels_in_range(const Batch* batch) noexcept nogil:
    cdef Py_ssize_t i
    if batch.labels != NULL:
        for i in range(batch.size):
            if batch.labels[i] < 0 or batch.labels[i] >= batch.n_classes:
                return False
    return True


cdef inline double batch_loss(const Plan* p, int parts, double scale,
                              double norm) noexcept nogil:
    # the batch's loss from its parts' loss sums, added in part order
    cdef int q
    cdef double total = 0
    for q in range(parts):
        total += p.part_loss[q]
    return scale * (total / norm) if norm != 0 else 0.0


cdef inline double step(const Plan* p, const Buffers* buf, const Batch* batch,
                        const Objective* obj, const OptStep* o, bint want_grad,
                        int n_threads, StepResult* out, floating* dtype) noexcept nogil:
    # One step on a batch: forward, loss and (want_grad) backward of every part, then the
    # parts' gradients summed and (o.kind != OPT_NONE) the optimizer step, unless the loss
    # is not finite (training diverged: the parameters stay as they are; asked only for
    # gradients, they are computed anyway, non-finite as the reference's are). Returns the
    # batch's loss before the step, times obj.scale, and fills *out (a bad input: NaN,
    # nothing computed).
    # n_threads share the parts and update units, or a one-part plan's products.
    cdef FusedSgd sgd
    cdef bint fused
    cdef Py_ssize_t B = batch.size, u, units = p.unit_base[p.n_layers]
    cdef int parts = active_parts(B, p.parts), q, nt
    cdef const floating* w = <const floating*>batch.w
    cdef double norm, value, decay, sq = 0
    cdef bint update, stop
    out.penalty = 0
    out.not_finite = False
    out.bad_input = False
    if batch.rows != NULL:
        # indices, labels and row weights first: the norm needs all the weights
        if not copy_checked(p, buf, batch, dtype):
            out.bad_input = True
            return NAN
        if w != NULL:
            w = <const floating*>buf.w_buf
    elif not labels_in_range(batch):
        out.bad_input = True
        return NAN
    norm = loss_norm(w, B, p.sizes[p.n_layers], p.loss)
    update = want_grad and o.kind != OPT_NONE
    # stop: a non-finite loss leaves the parameters as they are
    stop = update and not obj.step_non_finite
    decay = step_decay(obj, w, B) if want_grad else 0
    nt = min(n_threads, parts)
    if nt > 1:
        # One parallel region: the parts, then (every thread having summed the same loss
        # and so taken the same decision) the update units. Static schedules give a
        # thread the same parts and units each step, so their buffers stay in its cache.
        with parallel(num_threads=nt):
            for q in prange(parts, schedule="static"):
                part_pass(p, buf, batch, q, parts, obj.scale, norm, want_grad, 1, NULL,
                          dtype)
            fastbp_omp_barrier()    # every part done before any thread reads their sums
            if want_grad and (not stop or isfinite(batch_loss(p, parts, obj.scale, norm))):
                for u in prange(units, schedule="static"):
                    update_unit(p, buf, u, parts, o, decay, dtype)
        value = batch_loss(p, parts, obj.scale, norm)
        if not want_grad or (stop and not isfinite(value)):
            return value
    else:
        # one part (its products share tiles among the threads), or one thread
        fused = (p.parts == 1 and stop and o.kind == OPT_SGD and buf.state1 == NULL
                 and decay == 0 and batch.sp_indptr == NULL)
        sgd.lr = o.lr
        sgd.not_finite = False
        for q in range(parts):
            part_pass(p, buf, batch, q, parts, obj.scale, norm, want_grad,
                      n_threads if p.parts == 1 else 1, &sgd if fused else NULL, dtype)
        value = batch_loss(p, parts, obj.scale, norm)
        if not want_grad or (stop and not isfinite(value)):
            return value
        if fused:
            out.not_finite = sgd.not_finite
            return value
        nt = n_threads if p.n_params >= UPDATE_PARALLEL_MIN else 1
        nt = <int>min(<Py_ssize_t>nt, units)
        if nt <= 1:
            for u in range(units):
                update_unit(p, buf, u, parts, o, decay, dtype)
        else:
            for u in prange(units, nogil=True, schedule="static", num_threads=nt):
                update_unit(p, buf, u, parts, o, decay, dtype)
    if not update and decay == 0:
        return value
    for u in range(units):
        if p.partials[2 * u + 1] != 0:
            out.not_finite = True
        sq += p.partials[2 * u]
    out.penalty = 0.5 * decay * sq
    return value
