"""The training engine's goals, measured in one process: a fit right after NumPy, two fits
at once from two threads, thread scaling, and oversubscribed thread counts.

    python benchmarks/bench_engine.py [--repeats 7] [--quick]

Every figure is a median over alternating runs; ratios compare runs taken in the same
loop, so that the machine's drift hits both sides alike. Nothing here cools down between
libraries unless a line says so.
"""

import argparse
import statistics
import threading
import time

import numpy as np

import fastbp

DEEP = ([784, 512, 512, 10], 128)
MNIST = ([784, 128, 10], 32)
DIGITS = ([64, 128, 64, 10], 200)


def data(sizes, n, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.random((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    return X, y


def make_fit(sizes, batch, n, n_threads, dtype=np.float32, epochs=1):
    X, y = data(sizes, n, dtype=dtype)
    net = fastbp.Network(sizes, dtype=dtype, seed=0, n_threads=n_threads)
    net.fit(X, y, epochs=1, batch_size=batch, lr=0.01)     # warm: pages, thread pool

    def fit():
        net.fit(X, y, epochs=epochs, batch_size=batch, lr=0.01)
        return net
    return fit


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def after_numpy(repeats):
    """A fit started right after a NumPy matmul (OpenBLAS's threads still spinning)
    against the same fit after a 2 s pause."""
    fit = make_fit(*DEEP, n=10240, n_threads=None)
    a = np.random.default_rng(1).random((1024, 1024))
    hot, cold = [], []
    for _ in range(repeats):
        time.sleep(2.0)
        cold.append(timed(fit))
        a @ a
        hot.append(timed(fit))
    h, c = statistics.median(hot), statistics.median(cold)
    print(f"deep fit after a NumPy matmul {h * 1e3:7.1f} ms, after a 2 s pause "
          f"{c * 1e3:7.1f} ms: {h / c:.2f}x", flush=True)


def two_at_once(repeats):
    """Two fits from two Python threads at once, against the same two one after the
    other (each fit all threads)."""
    fits = [make_fit(*DIGITS, n=2000, n_threads=None, epochs=5),
            make_fit(*MNIST, n=4096, n_threads=None)]
    together, apart = [], []
    for _ in range(repeats):
        apart.append(timed(lambda: [f() for f in fits]))
        threads = [threading.Thread(target=f) for f in fits]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        together.append(time.perf_counter() - t0)
    t, a = statistics.median(together), statistics.median(apart)
    print(f"two fits at once {t * 1e3:7.1f} ms, one after the other {a * 1e3:7.1f} ms: "
          f"{t / a:.2f}x", flush=True)


def scaling(repeats, counts=(1, 2, 4, 8)):
    """Epoch times of the same network at several thread counts, alternating, with the
    parameters compared bit for bit."""
    for name, (sizes, batch), n in (("mnist b32", MNIST, 4096), ("digits b200", DIGITS, 4000),
                                    ("deep b128", DEEP, 2048)):
        X, y = data(sizes, n)
        nets = {t: fastbp.Network(sizes, seed=0, n_threads=t) for t in counts}
        times = {t: [] for t in counts}
        for t, net in nets.items():
            net.fit(X, y, epochs=1, batch_size=batch, lr=0.01)
        for _ in range(repeats):
            for t, net in nets.items():
                times[t].append(timed(lambda: net.fit(X, y, epochs=1, batch_size=batch,
                                                      lr=0.01)))
        same = all(np.array_equal(nets[t]._params, nets[counts[0]]._params) for t in counts)
        med = {t: statistics.median(v) for t, v in times.items()}
        cells = "  ".join(f"{t} thr {med[t] * 1e3:6.1f} ms" for t in counts)
        ratios = "  ".join(f"{t}/1 {med[1] / med[t]:.2f}x" for t in counts[1:])
        over = "  ".join(f"{t}/2 {med[t] / med[2]:.2f}x" for t in counts[2:])
        print(f"{name:12} {cells} | speedup {ratios} | vs 2 thr {over} | "
              f"same bits: {same}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=("numpy", "two", "scaling"))
    args = parser.parse_args()
    from fastbp._config import config
    cfg = config()
    print(f"fastbp {cfg['fastbp']}, target {cfg['simd_target_chosen']}, "
          f"default threads {fastbp.Network([1, 1]).n_threads}", flush=True)
    if args.only in (None, "scaling"):
        scaling(args.repeats)
    if args.only in (None, "two"):
        two_at_once(args.repeats)
    if args.only in (None, "numpy"):
        after_numpy(args.repeats)


if __name__ == "__main__":
    main()
