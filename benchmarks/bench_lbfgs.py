"""solver="lbfgs": fastbp.sklearn against scikit-learn's MLP on scikit-learn's bundled data.

    python benchmarks/bench_lbfgs.py                  # float64, all cores, no cool-down
    python benchmarks/bench_lbfgs.py --cool-down 0.3  # a pause before each fit
    python benchmarks/bench_lbfgs.py --threads 1

For digits, breast_cancer (classification) and diabetes (regression, target
standardized): features standardized, hidden_layer_sizes=(100,) (scikit-learn's default),
max_iter=200, random_state=0, float64, everything else scikit-learn's defaults. Both
libraries fit the same data in this process, alternating which goes first, --repeats
times; the table gives each library's median fit time, their ratio, the iterations each
ran (the same iterations are the point: a faster fit that stops earlier proves nothing),
the final loss of each and the training score. By default there is no pause between the
fits, as in a user's script (--cool-down S adds one).
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def _data(name):
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler
    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
              "diabetes": datasets.load_diabetes}[name]
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    if name == "diabetes":
        y = (y - y.mean()) / y.std()
    return X, y, "regression" if name == "diabetes" else "classification"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer", "diabetes"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="fastbp's n_threads and scikit-learn's BLAS threads (default: all)")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--cool-down", type=float, default=0.0, metavar="S")
    args = parser.parse_args(argv)

    from sklearn import neural_network as skn
    import fastbp
    import fastbp.sklearn as fsk
    limits = None
    if args.threads is not None:
        try:
            from threadpoolctl import threadpool_limits
            limits = threadpool_limits(args.threads, user_api="blas")
        except ImportError:
            print("threadpoolctl missing: scikit-learn's BLAS runs on all cores")

    print(f"# fastbp {fastbp.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads {args.threads or 'all'}, cool-down {args.cool_down} s, "
          f"repeats {args.repeats}")
    print("| dataset | sklearn s | fastbp s | speedup | iterations (sk / fb) | "
          "loss sk | loss fb | train score sk | train score fb |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        X, y, task = _data(name)
        libs = {"sklearn": skn, "fastbp": fsk}
        times = {k: [] for k in libs}
        fitted = {}
        for r in range(args.repeats):
            order = list(libs) if r % 2 == 0 else list(libs)[::-1]
            for lib in order:
                mod = libs[lib]
                cls = mod.MLPRegressor if task == "regression" else mod.MLPClassifier
                kw = dict(solver="lbfgs", max_iter=args.max_iter, random_state=0)
                if lib == "fastbp":
                    kw["n_threads"] = args.threads
                est = cls(**kw)
                if args.cool_down:
                    time.sleep(args.cool_down)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    est.fit(X, y)
                    times[lib].append(time.perf_counter() - t0)
                fitted[lib] = est
        sk, fb = fitted["sklearn"], fitted["fastbp"]
        t_sk, t_fb = statistics.median(times["sklearn"]), statistics.median(times["fastbp"])
        print(f"| {name} | {t_sk:.3f} | {t_fb:.3f} | {t_sk / t_fb:.2f}x | "
              f"{sk.n_iter_} / {fb.n_iter_} | {sk.loss_:.6g} | {fb.loss_:.6g} | "
              f"{sk.score(X, y):.4f} | {fb.score(X, y):.4f} |")
    if limits is not None:
        limits.restore_original_limits()


if __name__ == "__main__":
    main()
