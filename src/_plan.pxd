# The memory plan of a network at a batch capacity: where each parameter, activation,
# gradient and scratch area lives, and how a batch is cut into row parts.
#
# Parameters live in one buffer, layer after layer: W_0 (n0 x n1), b_0 (n1), W_1, b_1, ...;
# the gradient buffer has the same layout, so an optimizer step is one loop over it.
# The workspace (one buffer, allocated once per call or fit by the Python layer) holds:
#     [A_0 (C x n0), only with an input slot] Z_1, A_1, ..., Z_L, A_L (C x n_l each),
#     dZ ping-pong (2 x C x widest), the GEMM scratch, [Y (C x n_L), with an input slot],
#     the gradients of row parts 1 .. P-1 (laid out like the parameters)
# A batch of B <= C rows uses the first B rows of each slot.
#
# Row parts. A training step cuts its batch into P parts of consecutive rows; each part's
# forward and backward pass is one thread's work, into a gradient buffer of its own, and
# the step sums the parts' gradients in part order. P comes from the batch capacity and
# the network only, never from the thread count, so every thread count computes the same
# sums in the same order: the same bits. A network with large layers is one part, its
# products shared among the threads by output tiles instead (_gemm.pxd), which reads each
# weight matrix once per step rather than once per part.

from libc.stdlib cimport malloc, free

from _activations cimport ACT_GELU
from _dense cimport dense_scratch_size
from _optim cimport update_chunks

cdef extern from "blocking.h":
    enum:
        PART_MIN_ROWS "FASTBP_PART_MIN_ROWS"
        PART_MIN_MACS "FASTBP_PART_MIN_MACS"
        MAX_PARTS "FASTBP_MAX_PARTS"
        PARTS_MAX_PARAMS "FASTBP_PARTS_MAX_PARAMS"


cdef struct Plan:
    Py_ssize_t n_layers          # L
    const Py_ssize_t* sizes      # n_0 .. n_L
    const int* acts              # activation code of layers 1..L (the last one: output)
    int loss
    Py_ssize_t capacity          # C: the most rows of a batch
    int parts                    # P: row parts of a full batch (see n_parts)
    Py_ssize_t n_params
    Py_ssize_t widest            # max n_l, l >= 1: the dZ slots' row length
    Py_ssize_t* w_off            # L offsets into the parameter buffer
    Py_ssize_t* b_off
    Py_ssize_t* z_off            # L offsets into the workspace (a_off[l + 1] for a layer
                                 # that keeps no Z, see keeps_z)
    Py_ssize_t* a_off            # L + 1 (a_off[0]: the input slot, if any)
    Py_ssize_t* unit_base        # L + 1: the first update unit of layer l (its weights'
                                 # chunks, then its biases'), counted over the network
    Py_ssize_t dz_off[2]
    Py_ssize_t scratch_off       # P slots of scratch_len elements (one per part)
    Py_ssize_t scratch_len
    Py_ssize_t y_off
    Py_ssize_t part_grads_off    # parts 1 .. P-1: n_params each
    Py_ssize_t work_size
    double* partials             # 2 per update unit: sum p^2 before the step, non-finite
    double* part_loss            # P: each part's loss sum


cdef inline Py_ssize_t macs_per_row(const Py_ssize_t* sizes, Py_ssize_t L) noexcept nogil:
    # multiply-adds of one row's training step: forward, weight and input gradients (the
    # first layer has no input gradient)
    cdef Py_ssize_t l, macs = 0
    for l in range(L):
        macs += sizes[l] * sizes[l + 1] * (3 if l > 0 else 2)
    return macs


cdef inline int n_parts(const Py_ssize_t* sizes, Py_ssize_t L, Py_ssize_t capacity) noexcept nogil:
    # P for this network at this batch capacity: the largest power of two, up to
    # MAX_PARTS, whose parts keep PART_MIN_ROWS rows and PART_MIN_MACS multiply-adds each
    # (smaller parts spend more of their time packing weights and summing gradients); 1
    # for a network of more than PARTS_MAX_PARAMS parameters. A power of two shares evenly
    # among 2, 4, 8 or 16 threads.
    cdef Py_ssize_t l, n_params = 0, work = capacity * macs_per_row(sizes, L)
    cdef int parts = 1
    for l in range(L):
        n_params += (sizes[l] + 1) * sizes[l + 1]
    if n_params > PARTS_MAX_PARAMS:
        return 1
    while (2 * parts <= MAX_PARTS and capacity >= 2 * parts * PART_MIN_ROWS
           and work >= 2 * parts * <Py_ssize_t>PART_MIN_MACS):
        parts *= 2
    return parts


cdef inline Py_ssize_t part_rows(Py_ssize_t B, int parts) noexcept nogil:
    # rows of each part of a batch of B rows but the last (which may have fewer)
    return (B + parts - 1) // parts


cdef inline int active_parts(Py_ssize_t B, int parts) noexcept nogil:
    # the parts of a batch of B rows that hold any rows
    cdef Py_ssize_t step = part_rows(B, parts)
    return <int>((B + step - 1) // step) if B > 0 else 0


cdef inline bint keeps_z(Py_ssize_t l, Py_ssize_t L, int act) noexcept nogil:
    # Whether layer l keeps its pre-activations Z_l in a slot of their own. Only the output
    # layer (its loss reads the logits) and gelu layers (whose derivative needs z) do: for
    # every other hidden activation f'(z) is a function of a = f(z) (relu, leaky_relu:
    # z > 0 exactly when a > 0; sigmoid, tanh: from a; identity: 1), so the forward pass
    # writes only A_l and the input gradient reads A_l where it would read Z_l.
    return l == L - 1 or act == ACT_GELU


cdef inline int make_plan(Plan* p, const Py_ssize_t[::1] sizes, const int[::1] acts,
                          int loss, Py_ssize_t capacity, bint input_slot, int parts,
                          int n_threads) except -1:
    # parts: n_parts(...) for training steps, 1 for the forward pass alone. n_threads
    # sizes the scratch of a one-part plan, whose products share tiles among threads.
    cdef Py_ssize_t L = sizes.shape[0] - 1, l, off = 0, widest = 0, scratch = 0
    cdef Py_ssize_t rows = part_rows(capacity, parts) if parts > 1 else capacity
    cdef int nt = n_threads if parts == 1 else 1
    p.n_layers = L
    p.sizes = &sizes[0]
    p.acts = &acts[0]
    p.loss = loss
    p.capacity = capacity
    p.parts = parts
    p.partials = NULL
    p.part_loss = NULL
    p.w_off = <Py_ssize_t*>malloc(5 * (L + 1) * sizeof(Py_ssize_t))
    if p.w_off == NULL:
        raise MemoryError()
    p.b_off = p.w_off + (L + 1)
    p.z_off = p.b_off + (L + 1)
    p.a_off = p.z_off + (L + 1)
    p.unit_base = p.a_off + (L + 1)
    p.unit_base[0] = 0
    for l in range(L):
        p.w_off[l] = off
        off += sizes[l] * sizes[l + 1]
        p.b_off[l] = off
        off += sizes[l + 1]
        p.unit_base[l + 1] = (p.unit_base[l] + update_chunks(sizes[l] * sizes[l + 1])
                              + update_chunks(sizes[l + 1]))
        widest = max(widest, sizes[l + 1])
        scratch = max(scratch, dense_scratch_size(rows, sizes[l], sizes[l + 1], nt))
    p.n_params = off
    p.widest = widest
    p.partials = <double*>malloc((2 * p.unit_base[L] + parts) * sizeof(double))
    if p.partials == NULL:
        free(p.w_off)
        p.w_off = NULL
        raise MemoryError()
    p.part_loss = p.partials + 2 * p.unit_base[L]
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
    p.scratch_len = scratch
    off += parts * scratch
    p.y_off = off
    if input_slot:
        off += capacity * sizes[L]
    p.part_grads_off = off
    off += (parts - 1) * p.n_params
    p.work_size = off
    return 0


cdef inline void free_plan(Plan* p) noexcept:
    free(p.w_off)
    free(p.partials)
    p.w_off = NULL
    p.partials = NULL
    p.part_loss = NULL
