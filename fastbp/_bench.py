"""Training throughput of fastbp against fastbp.reference (and PyTorch and scikit-learn when
they are installed), in one process, on the same data.

Every figure is one epoch of minibatch SGD (relu hidden layers, softmax cross-entropy).
Runs alternate between the libraries (fastbp, reference, torch, sklearn, fastbp, ...) so
that drift in the machine's speed hits all alike, and figures are medians: these machines
are shared and noisy, so only medians and ratios mean much. GFLOPS are given as a fraction
of the machine's GEMM peak, measured in the same run as NumPy's 2048^3 matmul at the same
thread count. Peak memory is the largest amount traced by tracemalloc (NumPy's allocations)
during one extra, untimed fit.
"""

import contextlib
import os
import platform
import statistics
import time
import tracemalloc
import warnings

import numpy as np

from . import reference
from ._config import config
from .network import Network

CONFIGS = {
    "tiny": ([64, 32, 10], 16),
    "mnist": ([784, 128, 10], 32),
    "deep": ([784, 512, 512, 10], 128),
    "wide": ([4096, 4096, 4096, 10], 256),
}

# Pause before each timed run: OpenBLAS's worker threads keep spinning for a while after
# NumPy's last product (and OpenMP's after fastbp's), and on a machine with few cores they
# would steal a core from the next library's run.
COOL_DOWN_S = 0.3
LR = 0.01


def mnist_like(n_samples, n_in, n_out, seed=0, dtype=np.float32):
    """Random data shaped like MNIST: pixels in [0, 1], uniform labels."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_samples, n_in), dtype=np.float64).astype(dtype)
    y = rng.integers(0, n_out, n_samples)
    return X, y


def flops_per_sample(sizes):
    """Multiply-adds x 2 of one training step per sample: forward A W, weight gradient
    A^T dZ, and input gradient dZ W^T (not needed below the first layer)."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * (2 * sum(products) + sum(products[1:]))


@contextlib.contextmanager
def blas_threads(n):
    """Give NumPy's BLAS n threads (needs threadpoolctl; without it the reference keeps
    BLAS's default, all cores, and the report says so)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield True


def gemm_peak_gflops(dtype, n_threads, n=2048, repeats=3):
    """NumPy's n^3 matmul at this thread count: the machine's practical GEMM peak."""
    a = np.random.default_rng(0).random((n, n)).astype(dtype)
    with blas_threads(n_threads):
        a @ a
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


# -- one epoch with each library ---------------------------------------------------------

def fit_fastbp(sizes, X, y, batch_size, dtype, n_threads, seed):
    net = Network(sizes, activation="relu", dtype=dtype, seed=seed, n_threads=n_threads)

    def run():
        net.fit(X, y, epochs=1, batch_size=batch_size, lr=LR)

    return run


def fit_reference(sizes, X, y, batch_size, dtype, n_threads, seed):
    net = reference.Network(sizes, activation="relu", dtype=dtype, seed=seed)

    def run():
        with blas_threads(n_threads):
            net.fit(X, y, epochs=1, batch_size=batch_size, lr=LR)
    return run


def fit_torch(sizes, X, y, batch_size, dtype, n_threads, seed):
    import torch

    torch.manual_seed(seed)
    layers = []
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=torch.float32 if dtype == np.float32 else torch.float64))
        if l < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    rng = np.random.default_rng(seed)

    def run():
        torch.set_num_threads(n_threads)
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    return run


def fit_sklearn(sizes, X, y, batch_size, dtype, n_threads, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd",
                        alpha=0.0, batch_size=batch_size, learning_rate_init=LR, momentum=0.0,
                        nesterovs_momentum=False, max_iter=1, shuffle=True, random_state=seed)

    def run():
        with warnings.catch_warnings(), blas_threads(n_threads):
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
    return run


def available_libraries():
    libs = {"fastbp": fit_fastbp, "reference": fit_reference}
    for name, module, runner in [("torch", "torch", fit_torch), ("sklearn", "sklearn", fit_sklearn)]:
        try:
            __import__(module)
            libs[name] = runner
        except ImportError:
            pass
    return libs


def peak_traced_mib(make_run):
    """Largest NumPy/Python allocation total traced during one run, in MiB."""
    run = make_run()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def compare(name, dtype, n_threads, n_samples, repeats, libraries, seed=0):
    """Median samples/s of each library for one epoch of config `name`."""
    sizes, batch_size = CONFIGS[name]
    X, y = mnist_like(n_samples, sizes[0], sizes[-1], seed=seed, dtype=dtype)
    runs = {lib: make(sizes, X, y, batch_size, dtype, n_threads, seed) for lib, make in libraries.items()}
    for run in runs.values():  # warm-up: first-call costs, caches, thread pools
        getattr(run, "warm_up", run)()
    rates = {lib: [] for lib in runs}
    for _ in range(repeats):
        for lib, run in runs.items():
            time.sleep(COOL_DOWN_S)
            t0 = time.perf_counter()
            run()
            rates[lib].append(n_samples / (time.perf_counter() - t0))
    row = {"config": name, "sizes": sizes, "batch_size": batch_size, "dtype": np.dtype(dtype).name,
           "n_threads": n_threads}
    for lib in runs:
        row[lib] = statistics.median(rates[lib])
    for lib in ("fastbp", "reference"):
        row[f"{lib}_mib"] = peak_traced_mib(
            lambda lib=lib: libraries[lib](sizes, X, y, batch_size, dtype, n_threads, seed))
    row["gflops"] = row["fastbp"] * flops_per_sample(sizes) / 1e9
    return row


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
    # two lines, each under 80 columns for a short CPU name
    return (f"fastbp {c['fastbp']}, NumPy {c['numpy']}, {cpu}, {os.cpu_count()} CPUs\n"
            f"SIMD target {c['simd_target_chosen']} (available: "
            f"{', '.join(c['simd_targets_available'])}), OpenMP {'on' if c['openmp'] else 'off'}")


def format_row(r, peak):
    sizes = "-".join(map(str, r["sizes"]))
    extra = "".join(f"  {lib} {r['fastbp'] / r[lib]:5.2f}x" for lib in ("torch", "sklearn") if lib in r)
    return (f"{r['config']:>5} {sizes:>20} b{r['batch_size']:<4}{r['dtype']:>8} {r['n_threads']} thr | "
            f"fastbp {r['fastbp']:>9.0f}/s  reference {r['reference']:>9.0f}/s  "
            f"ratio {r['fastbp'] / r['reference']:5.2f}x |{extra} | "
            f"{r['gflops']:6.1f} GFLOPS = {100 * r['gflops'] / peak:3.0f}% of peak | "
            f"MiB {r['fastbp_mib']:.1f} vs {r['reference_mib']:.1f}")


def write_chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart written")
        return
    labels = [f"{r['config']}\n{r['dtype']}\n{r['n_threads']} thr" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    ax.bar(range(len(rows)), [r["fastbp"] / r["reference"] for r in rows], color="tab:blue")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("fastbp / reference samples/s")
    ax.set_title("fastbp training speed against the NumPy reference (median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"chart written to {path}")


def main(configs=("mnist",), dtypes=("float32",), threads=(None,), n_samples=8192, repeats=5,
         libraries=None, chart=None):
    libs = available_libraries()
    if libraries is not None:
        libs = {k: v for k, v in libs.items() if k in set(libraries) | {"fastbp", "reference"}}
    print(describe_machine())
    print(f"one epoch of {n_samples} samples, relu, softmax cross-entropy, plain SGD (lr {LR}); "
          f"median of {repeats} alternating runs; libraries: {', '.join(libs)}")
    with blas_threads(1) as limited:
        print("NumPy's BLAS (reference, scikit-learn) gets the same thread count as fastbp"
              if limited else
              "threadpoolctl is not installed: NumPy's BLAS uses all its threads in every row")
    rows = []
    for dt in dtypes:
        for t in threads:
            n_threads = Network([1, 1], n_threads=t).n_threads
            peak = gemm_peak_gflops(np.dtype(dt), n_threads)
            print(f"{dt}, {n_threads} threads: NumPy 2048^3 matmul peak {peak:.1f} GFLOPS")
            for name in configs:
                r = compare(name, np.dtype(dt), n_threads, n_samples, repeats, libs)
                r["peak_gflops"] = peak
                print(format_row(r, peak), flush=True)
                rows.append(r)
    if chart:
        write_chart(rows, chart)
    return rows
