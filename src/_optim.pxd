# The optimizer steps, in place over a block of parameters (one layer's weights or biases)
# with their gradient and the optimizer's state, which lives in buffers laid out like the
# parameter buffer. scikit-learn's update rules (sklearn/neural_network/_stochastic_optimizers.py),
# with g = grad + decay * param (the L2 penalty's gradient):
#
#   sgd:       v <- momentum v - lr g;   param += momentum v - lr g   (nesterov)
#                                        param += v                   (otherwise)
#              momentum == 0 keeps no state: param -= lr g
#   adam:      m <- beta1 m + (1 - beta1) g;   s <- beta2 s + (1 - beta2) g^2
#              param -= lr_t m / (sqrt(s) + eps),  lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)
#
# The block is cut into chunks of UPDATE_CHUNK elements that threads share out; each chunk
# leaves two partial results in `partials` (the sum of param^2 before the step, for the
# penalty's value, and a non-finite marker), summed afterwards in chunk order, so the
# result is the same for any thread count. Plain loops over contiguous arrays: GCC
# vectorizes the stateless and momentum loops; Adam's divide and sqrt vectorize too.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, pow

cdef enum:
    OPT_NONE = 0      # gradients only
    OPT_SGD = 1
    OPT_ADAM = 2
    UPDATE_CHUNK = 8192
    UPDATE_PARALLEL_MIN = 1 << 16


cdef struct OptStep:
    int kind
    bint nesterov
    double lr          # sgd: the learning rate; adam: lr_t of this step
    double momentum
    double beta1, beta2, eps


cdef inline Py_ssize_t update_chunks(Py_ssize_t n) noexcept nogil:
    return (n + UPDATE_CHUNK - 1) // UPDATE_CHUNK


cdef inline void adam_set_step(OptStep* o, double lr, long long t) noexcept nogil:
    # lr_t of step t (1-based), bias corrections folded in as scikit-learn does
    o.lr = lr * sqrt(1 - pow(o.beta2, <double>t)) / (1 - pow(o.beta1, <double>t))


cdef inline void update_chunk(floating* p, const floating* g, floating* s1, floating* s2,
                              Py_ssize_t n, const OptStep* o, floating decay, bint want_sq,
                              double* out) noexcept nogil:
    # out[0] = sum p^2 before the step (when want_sq), out[1] = 1 when any new parameter or
    # state value is not finite, else 0 (x - x is 0 for finite x, NaN otherwise; an integer
    # OR keeps the loop vectorizable, where a floating-point flag sum would not be).
    cdef Py_ssize_t i
    cdef floating lr = <floating>o.lr, mu = <floating>o.momentum
    cdef floating b1 = <floating>o.beta1, b2 = <floating>o.beta2, eps = <floating>o.eps
    cdef floating gi, x, v, m, s
    cdef int bad = 0
    cdef double sq = 0
    if want_sq:
        for i in range(n):
            sq += <double>p[i] * p[i]
    if o.kind == OPT_SGD and s1 == NULL:
        for i in range(n):
            x = p[i] - lr * (g[i] + decay * p[i])
            p[i] = x
            bad |= x - x != 0
    elif o.kind == OPT_SGD and o.nesterov:
        for i in range(n):
            gi = g[i] + decay * p[i]
            v = mu * s1[i] - lr * gi
            s1[i] = v
            x = p[i] + (mu * v - lr * gi)
            p[i] = x
            bad |= x - x != 0
    elif o.kind == OPT_SGD:
        for i in range(n):
            gi = g[i] + decay * p[i]
            v = mu * s1[i] - lr * gi
            s1[i] = v
            x = p[i] + v
            p[i] = x
            bad |= x - x != 0
    else:
        for i in range(n):
            gi = g[i] + decay * p[i]
            m = b1 * s1[i] + (1 - b1) * gi
            s = b2 * s2[i] + (1 - b2) * (gi * gi)
            s1[i] = m
            s2[i] = s
            x = p[i] - lr * m / (sqrt(s) + eps)
            p[i] = x
            bad |= (x - x != 0) | (s - s != 0)
    out[0] = sq
    out[1] = bad


cdef inline double update_block(floating* p, const floating* g, floating* s1, floating* s2,
                                Py_ssize_t n, const OptStep* o, floating decay, bint want_sq,
                                int n_threads, double* partials, bint* bad) noexcept nogil:
    # One optimizer step over p[0:n]; returns sum p^2 before the step (0 unless want_sq),
    # sets *bad when a new value is not finite. partials: 2 * update_chunks(n) doubles.
    cdef Py_ssize_t c, n_chunks = update_chunks(n), lo
    cdef double sq = 0
    cdef int nt = n_threads if n >= UPDATE_PARALLEL_MIN else 1
    if nt == 1:
        for c in range(n_chunks):
            lo = c * UPDATE_CHUNK
            update_chunk(p + lo, g + lo, s1 + lo if s1 != NULL else NULL,
                         s2 + lo if s2 != NULL else NULL, min(UPDATE_CHUNK, n - lo),
                         o, decay, want_sq, partials + 2 * c)
    else:
        for c in prange(n_chunks, nogil=True, schedule="static", num_threads=nt):
            update_chunk(p + c * UPDATE_CHUNK, g + c * UPDATE_CHUNK,
                         s1 + c * UPDATE_CHUNK if s1 != NULL else NULL,
                         s2 + c * UPDATE_CHUNK if s2 != NULL else NULL,
                         min(<Py_ssize_t>UPDATE_CHUNK, n - c * UPDATE_CHUNK),
                         o, decay, want_sq, partials + 2 * c)
    for c in range(n_chunks):
        sq += partials[2 * c]
        if partials[2 * c + 1] != 0:
            bad[0] = True
    return sq
