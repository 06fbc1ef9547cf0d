"""Prediction latency and throughput: fastbp against scikit-learn and PyTorch.

    python benchmarks/bench_predict.py            # float32 and float64; 1, 1,000, 100,000 rows
    python benchmarks/bench_predict.py --rounds 3 --rows 1 1000   # quicker

The network is digits-sized, 64-128-64-10 with relu, trained briefly (scikit-learn's
MLPClassifier, 20 epochs of adam on the digits data in the benchmark's dtype); the same
weights are then copied into every contestant:
  * fastbp.Network predict (class labels) and forward (probabilities),
  * fastbp.sklearn.MLPClassifier predict and predict_proba,
  * sklearn.neural_network.MLPClassifier predict (the trained estimator itself),
  * PyTorch in inference_mode: torch.from_numpy(X), the model, argmax, .numpy() (skipped,
    with a note, when torch is not installed).
Inputs are C-contiguous arrays of the benchmark's dtype (rows drawn from the digits data,
repeated for the larger batches). Every library runs as it does out of the box (fastbp's
n_threads=None, PyTorch's default threads, NumPy's BLAS unlimited), or with --threads N
each on N threads (fastbp's n_threads, torch.set_num_threads, threadpoolctl's limit on
the BLAS). On a machine whose cores are busy with other work, threads of any library
wait for each other's time slices: compare with --threads 1 there.

Timing: --rounds rounds; in each, every contestant is timed once, their order rotating
from round to round, with no pause between them. One timing is the mean time of a call
over a loop of calls lasting at least --min-time seconds (timeit's way: one call of a
1-row prediction is too short for the clock); the table gives the median over the rounds.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

SIZES = (64, 128, 64, 10)


def _train(dtype):
    """scikit-learn's MLPClassifier trained briefly on digits, and the digits X."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    sk = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
    return sk, X, y


def _contestants(dtype, threads=None):
    """{name: function of X} for every contestant, all with the same weights."""
    import fastbp
    from fastbp.sklearn import MLPClassifier as FastMLP
    sk, X, y = _train(dtype)
    coefs = [np.asarray(c, dtype=dtype) for c in sk.coefs_]
    intercepts = [np.asarray(b, dtype=dtype) for b in sk.intercepts_]

    net = fastbp.Network(list(SIZES), activation="relu", loss="cross_entropy", dtype=dtype,
                         n_threads=threads)
    net.weights = coefs
    net.biases = intercepts

    fast = FastMLP(hidden_layer_sizes=SIZES[1:-1], max_iter=1, random_state=0, dtype=dtype,
                   n_threads=threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast.fit(X, y)
    fast.coefs_ = [c.copy() for c in coefs]
    fast.intercepts_ = [b.copy() for b in intercepts]

    out = {
        "fastbp.Network.predict": net.predict,
        "fastbp.Network.forward": net.forward,
        "fastbp.sklearn predict": fast.predict,
        "fastbp.sklearn predict_proba": fast.predict_proba,
        "sklearn predict": sk.predict,
    }
    torch_note = None
    try:
        import torch
    except ImportError:
        torch_note = "PyTorch is not installed: skipped"
    else:
        if threads is not None:
            torch.set_num_threads(threads)
        tdtype = torch.float32 if dtype == np.float32 else torch.float64
        layers = []
        for i, (W, b) in enumerate(zip(coefs, intercepts)):
            lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=tdtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(coefs) - 1:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers).eval()

        def torch_predict(X):
            with torch.inference_mode():
                return model(torch.from_numpy(X)).argmax(dim=1).numpy()

        out["PyTorch predict"] = torch_predict
        torch_note = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"

    # every contestant predicts the same classes (a sanity check, not a timing)
    labels = sk.predict(X)
    for name, fn in out.items():
        got = fn(np.ascontiguousarray(X[:50]))
        if got.ndim == 2:
            got = got.argmax(axis=1)
        if not np.array_equal(got, labels[:50]):
            raise SystemExit(f"{name} disagrees with scikit-learn's predictions")
    return out, X, torch_note


def _time_call(fn, X, min_time):
    """Mean seconds of one call over a loop that lasts at least min_time."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn(X)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / number
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9)) + 1)


def run(dtype, rows_list, rounds, min_time, threads=None):
    contestants, X_all, note = _contestants(dtype, threads)
    names = list(contestants)
    results = {}
    for rows in rows_list:
        reps = -(-rows // X_all.shape[0])
        X = np.ascontiguousarray(np.tile(X_all, (reps, 1))[:rows])
        times = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                times[name].append(_time_call(contestants[name], X, min_time))
        results[rows] = {name: statistics.median(t) for name, t in times.items()}
    return results, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 1000, 100000])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every library (default: each one's own)")
    args = parser.parse_args(argv)
    limits = None
    if args.threads is not None:
        try:
            from threadpoolctl import threadpool_limits
            limits = threadpool_limits(limits=args.threads, user_api="blas")
        except ImportError:
            print("threadpoolctl is not installed: NumPy's BLAS keeps its threads")

    import fastbp
    print(f"fastbp {fastbp.__version__}, Python {platform.python_version()}, "
          f"NumPy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"network {'-'.join(map(str, SIZES))} relu; median of {args.rounds} rounds; "
          f"times per call; threads: {args.threads or 'each library its own'}")
    for dt in args.dtypes:
        results, note = run(np.dtype(dt).type, args.rows, args.rounds, args.min_time,
                            args.threads)
        print(f"\n{dt}  ({note})")
        names = list(next(iter(results.values())))
        header = f"{'':30s}" + "".join(f"{f'{r} rows':>16s}" for r in args.rows)
        print(header)
        for name in names:
            cells = []
            for r in args.rows:
                t = results[r][name]
                cells.append(f"{t * 1e6:13.1f} us" if t < 1e-2 else f"{t * 1e3:13.2f} ms")
            print(f"{name:30s}" + "".join(cells))
        if any("PyTorch predict" in results[r] for r in args.rows):
            print(f"{'Network.predict / PyTorch':30s}" + "".join(
                f"{results[r]['fastbp.Network.predict'] / results[r]['PyTorch predict']:16.2f}"
                for r in args.rows))
        print(f"{'fastbp.sklearn / sklearn':30s}" + "".join(
            f"{results[r]['fastbp.sklearn predict'] / results[r]['sklearn predict']:16.2f}"
            for r in args.rows))
    if limits is not None:
        limits.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
