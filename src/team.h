/* A team of threads that stays together for a whole training epoch: one OpenMP parallel
 * region per epoch instead of one per product, with this barrier and ticket counter in
 * between (used by _team.pxd and _network.pyx).
 *
 * Why not OpenMP's own regions and barriers: a 200-row batch of a small network is a few
 * hundred microseconds of work in about twenty dependent steps (each layer's product, the
 * loss, each layer's gradients and update). A parallel region per step costs more than
 * the step gains, so the products of such networks ran on one thread. And OpenMP's waiting
 * threads spin for a long time (libgomp: about 300,000 iterations) before they sleep:
 * with another process on the machine a waiting thread burns the time slice the working
 * one needs (see GEMM_MACS_PER_THREAD in _gemm.pxd). This barrier spins briefly, then
 * yields the core on every further check.
 *
 * Determinism is the callers' part: every element of every output is computed by one
 * thread in a fixed order, whichever thread that is, and sums across threads' shares are
 * taken in a fixed order after a barrier.
 */
#ifndef FASTBP_TEAM_H
#define FASTBP_TEAM_H

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FASTBP_TEAM_AVAILABLE 1
#if defined(_WIN32)
#include <windows.h>
#define FASTBP_YIELD() SwitchToThread()
#else
#include <sched.h>
#define FASTBP_YIELD() sched_yield()
#endif
#if defined(__x86_64__) || defined(__i386__)
#define FASTBP_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FASTBP_RELAX() __asm__ __volatile__("yield")
#else
#define FASTBP_RELAX() ((void)0)
#endif
#else
/* No GNU atomics (MSVC): the epoch runs its products with per-product parallel loops. */
#define FASTBP_TEAM_AVAILABLE 0
#define FASTBP_YIELD() ((void)0)
#define FASTBP_RELAX() ((void)0)
#endif

/* Checks of the barrier's generation with a pause in between before a waiting thread
 * starts yielding its core: a few microseconds. 2048 (tens of microseconds) had made two
 * threads sharing one core 8x slower than one thread: each wait spun out its time. */
enum { FASTBP_TEAM_SPIN = 128 };

typedef struct {
    int count;    /* threads arrived at the current barrier */
    int gen;      /* barriers completed */
    long tickets; /* work units handed out so far (see fastbp_team_ticket) */
    long long yielding_ns; /* time all threads spent waiting past the spin, in total */
} fastbp_team_sync;

static void fastbp_team_sync_init(fastbp_team_sync *s)
{
    s->count = 0;
    s->gen = 0;
    s->tickets = 0;
    s->yielding_ns = 0;
}

/* Nanoseconds on a clock that only moves forward: CLOCK_MONOTONIC where POSIX has it
 * (glibc, musl, macOS); C11's TIME_UTC elsewhere (MSVC). TIME_UTC alone is the wall clock,
 * which the time service may step: on the KVM guest the tests ran on it stepped by
 * seconds, and a one-second wait timed on it ended early. Also _network.pyx's clock. */
#include <time.h>
static long long fastbp_team_clock_ns(void)
{
    struct timespec ts;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    timespec_get(&ts, TIME_UTC);
#endif
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Time the team's threads have spent waiting at barriers beyond the short spin, summed
 * over threads: on an idle machine a few percent of the threads' time (uneven shares);
 * when another process holds one of the cores, most of it. */
static long long fastbp_team_yielding_ns(fastbp_team_sync *s)
{
#if FASTBP_TEAM_AVAILABLE
    return __atomic_load_n(&s->yielding_ns, __ATOMIC_RELAXED);
#else
    return s->yielding_ns;
#endif
}

/* Threads in the enclosing parallel region (1 outside one, or without OpenMP). */
static int fastbp_team_size(void)
{
#if defined(_OPENMP)
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Wait until all n threads of the team have arrived; what each wrote before is then
 * visible to all. Waits past the spin add to s->yielding_ns when timed. */
static void fastbp_team_barrier_wait(fastbp_team_sync *s, int n, int timed)
{
#if FASTBP_TEAM_AVAILABLE
    int gen;
    unsigned spins = 0;
    if (n <= 1)
        return;
    gen = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&s->count, 1, __ATOMIC_ACQ_REL) == n) {
        /* the last to arrive: nobody can arrive at the next barrier before gen moves */
        __atomic_store_n(&s->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->gen, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) == gen) {
        if (spins < FASTBP_TEAM_SPIN) {
            spins++;
            FASTBP_RELAX();
        } else {
            long long t0 = timed ? fastbp_team_clock_ns() : 0;
            while (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) == gen)
                FASTBP_YIELD();
            if (timed)
                __atomic_add_fetch(&s->yielding_ns, fastbp_team_clock_ns() - t0,
                                   __ATOMIC_RELAXED);
            return;
        }
    }
#else
    (void)s;
    (void)n;
    (void)timed;
#endif
}

static void fastbp_team_barrier(fastbp_team_sync *s, int n)
{
    fastbp_team_barrier_wait(s, n, 1);
}

static void fastbp_team_barrier_untimed(fastbp_team_sync *s, int n)
{
    fastbp_team_barrier_wait(s, n, 0);
}

/* Progress counters: a thread publishes how far it has got (a count that only grows, a
 * cache line of its own), another waits until it has got at least so far; what the first
 * wrote before publishing is then visible to the second. Used where one thread can start
 * on work that depends on part of another's (_network.pyx: the optimizer step of a layer
 * both halves of a batch are done with), instead of a barrier for all of it. */
static void fastbp_team_publish(long long *progress, long long value)
{
#if FASTBP_TEAM_AVAILABLE
    __atomic_store_n(progress, value, __ATOMIC_RELEASE);
#else
    *progress = value;
#endif
}

/* Wait until *progress >= value, spinning and then yielding as the barrier does; the wait
 * past the spin adds to s->yielding_ns. */
static void fastbp_team_wait_for(fastbp_team_sync *s, const long long *progress,
                                 long long value)
{
#if FASTBP_TEAM_AVAILABLE
    unsigned spins = 0;
    while (__atomic_load_n(progress, __ATOMIC_ACQUIRE) < value) {
        if (spins < FASTBP_TEAM_SPIN) {
            spins++;
            FASTBP_RELAX();
        } else {
            long long t0 = fastbp_team_clock_ns();
            while (__atomic_load_n(progress, __ATOMIC_ACQUIRE) < value)
                FASTBP_YIELD();
            __atomic_add_fetch(&s->yielding_ns, fastbp_team_clock_ns() - t0, __ATOMIC_RELAXED);
            return;
        }
    }
#else
    (void)s;
    (void)progress;
    (void)value;
#endif
}

/* Claim a piece of work for the step tagged `tag` (tags grow from step to step): 1 for the
 * one thread whose call moved *slot from below tag to tag, 0 for any other. */
static int fastbp_team_claim(long long *slot, long long tag)
{
#if FASTBP_TEAM_AVAILABLE
    long long seen = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    while (seen < tag)
        if (__atomic_compare_exchange_n(slot, &seen, tag, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 1;
    return 0;
#else
    if (*slot >= tag)
        return 0;
    *slot = tag;
    return 1;
#endif
}

/* The next ticket of the team's shared counter. A loop that shares out U units draws
 * tickets until one is past base + U, so each of the n threads draws exactly one ticket
 * past the end: after the barrier that follows the loop every thread knows the counter
 * stands at base + U + n, the next loop's base, without reading it. */
static long fastbp_team_ticket(fastbp_team_sync *s)
{
#if FASTBP_TEAM_AVAILABLE
    return __atomic_fetch_add(&s->tickets, 1, __ATOMIC_RELAXED);
#else
    return s->tickets++;
#endif
}

#endif /* FASTBP_TEAM_H */
