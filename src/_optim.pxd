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
# result is the same for any thread count. The per-chunk loops are C kernels compiled
# per SIMD target (src/update.h, src/update_kernel.h).

from cython cimport floating
from libc.math cimport sqrt, pow

cdef enum:
    OPT_NONE = 0      # gradients only
    OPT_SGD = 1
    OPT_ADAM = 2

cdef extern from "blocking.h":
    enum:
        UPDATE_CHUNK "FASTBP_UPDATE_CHUNK"
        UPDATE_PARALLEL_MIN "FASTBP_UPDATE_PARALLEL_MIN"


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


cdef extern from "update.h" nogil:
    ctypedef void (*fastbp_update_f32_fn)(int, int, float*, const float*, const float*,
                                         float*, float*, Py_ssize_t, float, float, float, float,
                                         float, float, int, double*)
    ctypedef void (*fastbp_update_f64_fn)(int, int, double*, const double*, const double*,
                                         double*, double*, Py_ssize_t, double, double, double,
                                         double, double, double, int, double*)
    const fastbp_update_f32_fn fastbp_update_f32[3]
    const fastbp_update_f64_fn fastbp_update_f64[3]

from _gemm cimport fastbp_active_target


cdef inline void update_chunk_sum(floating* p, const floating* g, const floating* g2,
                                  floating* s1, floating* s2, Py_ssize_t n, const OptStep* o,
                                  floating decay, bint want_sq, double* out) noexcept nogil:
    # The step with gradient g, or g + g2 (summed element by element, as a separate pass
    # would store it) when g2 is not NULL. out[0] = sum p^2 before the step (when
    # want_sq), out[1] = 1 when any new parameter or state value is not finite, else 0.
    # The loops are C, compiled per SIMD target (src/update_kernel.h says why); the
    # reference optimizers of fastbp/reference.py are the oracle the tests hold them to.
    if floating is float:
        fastbp_update_f32[fastbp_active_target.code](
            o.kind, o.nesterov, p, g, g2, s1, s2, n, <float>o.lr, <float>o.momentum,
            <float>o.beta1, <float>o.beta2, <float>o.eps, decay, want_sq, out)
    else:
        fastbp_update_f64[fastbp_active_target.code](
            o.kind, o.nesterov, p, g, g2, s1, s2, n, o.lr, o.momentum, o.beta1, o.beta2,
            o.eps, decay, want_sq, out)


cdef inline void update_chunk(floating* p, const floating* g, floating* s1, floating* s2,
                              Py_ssize_t n, const OptStep* o, floating decay, bint want_sq,
                              double* out) noexcept nogil:
    # update_chunk_sum of one gradient
    update_chunk_sum(p, g, NULL, s1, s2, n, o, decay, want_sq, out)
