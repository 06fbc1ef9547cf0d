/* The kernels' block sizes and thresholds, in one place. The .pxd files declare them under
 * the names without FASTBP_ (cdef extern from "blocking.h"); the register tiles' bounds,
 * FASTBP_MAX_MR and FASTBP_MAX_NR, stay with the tiles in gemm.h.
 *
 * The GEMM and threading thresholds decide only where and by how many threads work runs,
 * never the order of a sum, so changing them changes speed, not results. The row-part
 * constants and UPDATE_CHUNK do set orders of summation (the parts' gradients, the chunks'
 * sums of squares): changing them changes the last bits of results, though never their
 * independence of the thread count. Figures behind the values: benchmarks/RESULTS.md.
 */
#ifndef FASTBP_BLOCKING_H
#define FASTBP_BLOCKING_H

enum {
    /* _gemm.pxd: multiply-adds a GEMM thread gets, at least (see gemm_threads) */
    FASTBP_GEMM_MACS_PER_THREAD = 1 << 22,
    /* _gemm.pxd: bytes of A's packed rows that all column panels sweep in turn (L2) */
    FASTBP_GEMM_BLOCK_BYTES = 1 << 19,
    /* _gemm.pxd: ... but at least this many row panels a block, as each block repacks B */
    FASTBP_GEMM_MIN_BLOCK_PANELS = 64,

    /* _optim.pxd: parameters per optimizer chunk, the unit that threads share out */
    FASTBP_UPDATE_CHUNK = 4096,
    /* _optim.pxd: fewer parameters are stepped on one thread (a region costs more) */
    FASTBP_UPDATE_PARALLEL_MIN = 1 << 18,

    /* _dense.pxd: fewer multiply-adds run a naive twin's product on one thread */
    FASTBP_PARALLEL_MIN_MACS = 1 << 16,
    /* _dense.pxd: fewer elements run an elementwise loop (sgd_update) on one thread */
    FASTBP_PARALLEL_MIN_ELEMENTS = 1 << 15,

    /* _plan.pxd: rows of a row part, at least (smaller parts spend more of their time
     * packing weights and summing gradients) */
    FASTBP_PART_MIN_ROWS = 64,
    /* _plan.pxd: multiply-adds of a part's step, at least, to repay a thread's share */
    FASTBP_PART_MIN_MACS = 1 << 21,
    /* _plan.pxd: row parts of a batch, at most */
    FASTBP_MAX_PARTS = 16,
    /* _plan.pxd: a larger network is one part, its products' tiles shared instead */
    FASTBP_PARTS_MAX_PARAMS = 1 << 16,

    /* _sparse.pxd: entries ahead whose weight rows the sparse forward product prefetches
     * (scattered rows: without it each one's loads wait on memory) */
    FASTBP_SPARSE_PREFETCH_AHEAD = 8
};

#endif /* FASTBP_BLOCKING_H */
