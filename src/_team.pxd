# A team of threads that runs a whole training epoch inside one parallel region (see
# team.h for why): the team's barrier, its shared ticket counter, and how a thread finds
# its share of a loop. _gemm.pxd's gemm_team, the team kernels of _dense.pxd, _losses.pxd
# and _optim.pxd, and _network.pyx's epoch loop are built on these.

cdef extern from "team.h" nogil:
    ctypedef struct fastbp_team_sync:
        pass
    void fastbp_team_sync_init(fastbp_team_sync* s)
    int fastbp_team_size()
    void fastbp_team_barrier(fastbp_team_sync* s, int n)
    void fastbp_team_barrier_untimed(fastbp_team_sync* s, int n)
    long fastbp_team_ticket(fastbp_team_sync* s)
    long long fastbp_team_yielding_ns(fastbp_team_sync* s)
    void fastbp_team_publish(long long* progress, long long value)
    void fastbp_team_wait_for(fastbp_team_sync* s, const long long* progress, long long value)
    int fastbp_team_claim(long long* slot, long long tag)
    enum:
        FASTBP_TEAM_AVAILABLE


cdef struct Team:
    int tid                     # this thread, 0 .. n - 1
    int n                       # threads in the team
    fastbp_team_sync* sync      # shared by the team
    long base                   # the ticket counter's value when the current loop began
    const void* target          # gemm.h's fastbp_target for the whole epoch


cdef inline void team_barrier(Team* t) noexcept nogil:
    fastbp_team_barrier(t.sync, t.n)


cdef inline Py_ssize_t team_next(Team* t, Py_ssize_t units) noexcept nogil:
    # The next unit of a loop of `units` that this thread takes, or -1 when none is left.
    # Units go to whichever thread asks first (a core slowed by another process takes
    # fewer), so a unit's result must not depend on the thread that computes it.
    cdef long u = fastbp_team_ticket(t.sync) - t.base
    return <Py_ssize_t>u if u < units else -1


cdef inline void team_loop_done(Team* t, Py_ssize_t units) noexcept nogil:
    # After a thread's team_next returned -1: wait for the team, then move the base past
    # the loop (each thread drew one ticket past its end, see fastbp_team_ticket).
    team_barrier(t)
    t.base += units + t.n


cdef inline void team_share(const Team* t, Py_ssize_t total, Py_ssize_t* lo,
                            Py_ssize_t* hi) noexcept nogil:
    # This thread's contiguous share [lo, hi) of `total` items, for cheap element-wise
    # loops that need no balancing.
    lo[0] = total * t.tid // t.n
    hi[0] = total * (t.tid + 1) // t.n
