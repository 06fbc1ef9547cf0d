"""Training throughput of fastbp against fastbp.reference, in one process, on the same data.

Runs alternate (fastbp, reference, fastbp, ...) so that drift in the machine's speed hits
both alike, and the figures are medians: these machines are shared and noisy, so only
medians and ratios are meaningful.
"""

import contextlib
import os
import platform
import statistics
import time

import numpy as np

from . import reference
from ._config import config
from .network import Network


def mnist_like(n_samples, n_in, n_out, seed=0, dtype=np.float32):
    """Random data shaped like MNIST: pixels in [0, 1], uniform labels."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_samples, n_in), dtype=np.float64).astype(dtype)
    y = rng.integers(0, n_out, n_samples)
    return X, y


# Pause before each timed run: OpenBLAS's worker threads keep spinning for a while after
# NumPy's last product (and OpenMP's after fastbp's), and on a machine with few cores they
# would steal a core from the other library's run.
COOL_DOWN_S = 0.3


@contextlib.contextmanager
def blas_threads(n):
    """Give NumPy's BLAS the same thread count as fastbp (needs threadpoolctl; without it
    the reference keeps BLAS's default, all cores, and the report says so)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield True


def time_fit(cls, sizes, X, y, batch_size, lr, dtype, n_threads, seed):
    """Seconds for one epoch of fit on a fresh network (construction not timed)."""
    net = cls(sizes, activation="relu", loss="cross_entropy", dtype=dtype, seed=seed,
              n_threads=n_threads)
    time.sleep(COOL_DOWN_S)
    t0 = time.perf_counter()
    net.fit(X, y, epochs=1, batch_size=batch_size, lr=lr)
    return time.perf_counter() - t0, net


def compare(sizes, batch_size, n_samples=8192, dtype=np.float32, n_threads=None,
            repeats=5, lr=0.01, seed=0):
    """Median samples/s of fastbp and the reference for one epoch, and their ratio."""
    X, y = mnist_like(n_samples, sizes[0], sizes[-1], seed=seed, dtype=dtype)
    time_fit(Network, sizes, X[:batch_size * 4], y[:batch_size * 4], batch_size, lr, dtype, n_threads, seed)  # warm-up
    fast, ref = [], []
    for _ in range(repeats):
        t, net = time_fit(Network, sizes, X, y, batch_size, lr, dtype, n_threads, seed)
        fast.append(n_samples / t)
        with blas_threads(net.n_threads):
            t, ref_net = time_fit(reference.Network, sizes, X, y, batch_size, lr, dtype,
                                  n_threads, seed)
        ref.append(n_samples / t)
    agree = max(float(np.abs(a - b).max()) for a, b in zip(net.weights, ref_net.weights))
    fast_med, ref_med = statistics.median(fast), statistics.median(ref)
    return {
        "sizes": list(sizes), "batch_size": batch_size, "dtype": np.dtype(dtype).name,
        "n_threads": net.n_threads, "fastbp_samples_per_s": fast_med,
        "reference_samples_per_s": ref_med, "ratio": fast_med / ref_med,
        "max_weight_difference": agree,
    }


def describe_machine():
    c = config()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"fastbp {c['fastbp']}, NumPy {c['numpy']}, {cpu}, {os.cpu_count()} CPUs, "
            f"SIMD target {c['simd_target_chosen']} (CPU has {', '.join(c['cpu_features'])}), "
            f"OpenMP {'on' if c['openmp'] else 'off'}")


def format_row(r):
    sizes = "-".join(map(str, r["sizes"]))
    return (f"{sizes:>22} b{r['batch_size']:<4} {r['dtype']:>7} {r['n_threads']:>3} thr  "
            f"fastbp {r['fastbp_samples_per_s']:>10.0f}/s  reference {r['reference_samples_per_s']:>10.0f}/s  "
            f"ratio {r['ratio']:5.2f}x")


CONFIGS = {
    "tiny": ([64, 32, 10], 16),
    "mnist": ([784, 128, 10], 32),
    "deep": ([784, 512, 512, 10], 128),
    "wide": ([4096, 4096, 4096, 10], 256),
}


def main(configs=("mnist",), dtypes=("float32",), threads=(None,), n_samples=8192, repeats=5):
    print(describe_machine())
    print(f"one epoch of {n_samples} samples, relu, softmax cross-entropy, plain SGD; "
          f"median of {repeats} alternating runs")
    with blas_threads(1) as limited:
        print("NumPy's BLAS runs with the same thread count as fastbp" if limited else
              "threadpoolctl is not installed: NumPy's BLAS uses all its threads in every row")
    rows = []
    for name in configs:
        sizes, batch = CONFIGS[name]
        for dt in dtypes:
            for t in threads:
                r = compare(sizes, batch, n_samples=n_samples, dtype=np.dtype(dt),
                            n_threads=t, repeats=repeats)
                r["config"] = name
                print(f"{name:>6} " + format_row(r), flush=True)
                rows.append(r)
    return rows
