# NumPy's legacy shuffle (RandomState.shuffle) in compiled code, for fastbp.sklearn's runs
# of epochs (included by _network.pyx).


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
    trusting it (see _fast_shuffle_matches there): scikit-learn's MLP shuffles its rows
    with that every epoch, and this keeps the shuffle inside a compiled run of epochs."""
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


