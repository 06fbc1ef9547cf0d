"""fastbp.sklearn against scikit-learn's MLP on scikit-learn's bundled data sets.

    python benchmarks/bench_sklearn.py --float32           # all cores, seeds 0 1 2
    python benchmarks/bench_sklearn.py --float32 --threads 1 --seeds 0 1 2 3 4
    python benchmarks/bench_sklearn.py --float32 --repeats 1   # one fit of each per seed

For each data set (digits and breast_cancer: classification, accuracy; diabetes:
regression, R^2, see below) and each seed: a 75/25 split (stratified for classification) with that
seed, features standardized with a StandardScaler fitted on the training part, then
sklearn.neural_network's estimator and fastbp.sklearn's, with the same hyperparameters
(hidden_layer_sizes=(128, 64), max_iter=200, random_state=seed, everything else at
scikit-learn's defaults: adam, lr 0.001, batch 200, alpha 1e-4, tol 1e-4), are fitted in
this process one after the other, their order alternating from fit to fit, --repeats times
each (default 3; the fits of one seed are the same computation each time, and the median
of the repeats is that seed's time: on a shared machine a single fit's time drifts by up
to half from one minute to the next, on both sides). The table gives the median test
score of each over the seeds, the difference of those medians, the median over the seeds
of those fit times, and their ratio.

diabetes is run twice. "diabetes" fits the raw target (25 to 346), as a user swapping the
import would: with these defaults neither library has converged after 200 epochs (the
loss is still falling) and the test R^2 is about 0.3. "diabetes_std" standardizes the
target with the training part's mean and standard deviation for both libraries: training
then converges, the (128, 64) network overfits the 331 training rows and the test R^2 is
about 0. Predictions are mapped back to the original scale before R^2 is computed (R^2 is
unchanged when truth and prediction go through the same affine map, so it is the same on
either scale).

By default both libraries run as they do out of the box, on all the machine's cores
(fastbp's n_threads=None, scikit-learn's BLAS unlimited). --threads N gives fastbp N threads
(n_threads=N) and limits scikit-learn's BLAS to N threads (threadpoolctl, when installed). Both train in float64 unless --float32 (then X
is float32 for both, and both train in float32); --fastbp-float32 keeps X float64 and
scikit-learn in float64 but gives fastbp dtype=np.float32 (its extra parameter).
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

# Pause before each timed fit: OpenBLAS's worker threads spin for a while after
# scikit-learn's last product (and OpenMP's after fastbp's), and with few cores they would
# steal a core from the other library's fit (fastbp on two threads right after
# scikit-learn ran measurably slower without the pause).
COOL_DOWN_S = 0.3


def _load(name):
    from sklearn import datasets
    if name == "digits":
        X, y = datasets.load_digits(return_X_y=True)
        return X, y, "classification"
    if name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
        return X, y, "classification"
    if name in ("diabetes", "diabetes_std"):
        X, y = datasets.load_diabetes(return_X_y=True)
        return X, y, "regression"
    raise ValueError(f"unknown data set {name!r}")


def _split(X, y, task, seed, dtype):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.25, random_state=seed,
        stratify=y if task == "classification" else None)
    scaler = StandardScaler().fit(X_tr)
    X_tr = scaler.transform(X_tr).astype(dtype)
    X_te = scaler.transform(X_te).astype(dtype)
    return X_tr, X_te, y_tr, y_te


def _fit_and_score(make, X_tr, X_te, y_tr, y_te, task, standardize_y):
    """(test score, fit seconds, epochs) of one estimator."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    est = make()
    mean, std = 0.0, 1.0
    if standardize_y:
        mean, std = float(np.mean(y_tr)), float(np.std(y_tr))
    target = (y_tr - mean) / std if standardize_y else y_tr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if COOL_DOWN_S > 0:
            time.sleep(COOL_DOWN_S)
        t0 = time.perf_counter()
        est.fit(X_tr, target)
        seconds = time.perf_counter() - t0
    if task == "regression":
        score = r2_score(y_te, est.predict(X_te) * std + mean)
    else:
        score = est.score(X_te, y_te)
    return float(score), seconds, est.n_iter_


def _blas_limit(threads):
    if threads is None:
        import contextlib
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def run(datasets, seeds, threads, dtype, fastbp_dtype=None, out=sys.stdout, repeats=3):
    import sklearn
    import sklearn.neural_network as skn
    import fastbp
    import fastbp.sklearn as fbs

    params = dict(hidden_layer_sizes=(128, 64), max_iter=200)
    rows = []
    with _blas_limit(threads):
        for name in datasets:
            X, y, task = _load(name)
            sk_cls = skn.MLPClassifier if task == "classification" else skn.MLPRegressor
            fb_cls = fbs.MLPClassifier if task == "classification" else fbs.MLPRegressor
            sk_scores, fb_scores, sk_times, fb_times, epochs = [], [], [], [], []
            for i, seed in enumerate(seeds):
                X_tr, X_te, y_tr, y_te = _split(X, y, task, seed, dtype)
                runs = {
                    "sklearn": lambda: sk_cls(random_state=seed, **params),
                    "fastbp": lambda: fb_cls(random_state=seed, n_threads=threads,
                                             dtype=fastbp_dtype, **params),
                }
                result = {"sklearn": [], "fastbp": []}
                for r in range(repeats):
                    order = ["sklearn", "fastbp"] if (i + r) % 2 == 0 else ["fastbp", "sklearn"]
                    for who in order:
                        result[who].append(_fit_and_score(runs[who], X_tr, X_te, y_tr, y_te,
                                                          task, name == "diabetes_std"))
                # scores and epochs are the same in every repeat (random_state=seed) unless
                # a library is not deterministic: then the median score
                sk_scores.append(statistics.median(f[0] for f in result["sklearn"]))
                fb_scores.append(statistics.median(f[0] for f in result["fastbp"]))
                sk_times.append(statistics.median(f[1] for f in result["sklearn"]))
                fb_times.append(statistics.median(f[1] for f in result["fastbp"]))
                epochs.append((result["sklearn"][0][2], result["fastbp"][0][2]))
            rows.append(dict(
                name=name, metric="accuracy" if task == "classification" else "R^2",
                sk_score=statistics.median(sk_scores), fb_score=statistics.median(fb_scores),
                sk_time=statistics.median(sk_times), fb_time=statistics.median(fb_times),
                per_seed=list(zip(seeds, sk_scores, fb_scores, sk_times, fb_times, epochs))))

    print(f"fastbp {fastbp.__version__}, scikit-learn {sklearn.__version__}, numpy "
          f"{np.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; threads={'all' if threads is None else threads}, X dtype={np.dtype(dtype).name}, "
          f"fastbp dtype={'as X' if fastbp_dtype is None else np.dtype(fastbp_dtype).name}, "
          f"seeds={list(seeds)}, repeats={repeats}; hidden_layer_sizes=(128, 64), "
          f"max_iter=200, adam defaults",
          file=out)
    print("", file=out)
    print("| dataset | metric | sklearn score | fastbp score | abs diff | sklearn fit s (median) "
          "| fastbp fit s (median) | speedup |", file=out)
    print("|---|---|---|---|---|---|---|---|", file=out)
    for r in rows:
        print(f"| {r['name']} | {r['metric']} | {r['sk_score']:.4f} | {r['fb_score']:.4f} | "
              f"{abs(r['sk_score'] - r['fb_score']):.4f} | {r['sk_time']:.3f} | "
              f"{r['fb_time']:.3f} | {r['sk_time'] / r['fb_time']:.1f}x |", file=out)
    print("", file=out)
    print("per seed: seed, sklearn score, fastbp score, sklearn s, fastbp s (medians of the "
          "repeats), epochs (sklearn, fastbp)", file=out)
    for r in rows:
        for seed, a, b, ta, tb, ep in r["per_seed"]:
            print(f"  {r['name']:>13} seed {seed}: {a:.4f} {b:.4f}  {ta:.3f} s {tb:.3f} s  "
                  f"epochs {ep[0]} {ep[1]}", file=out)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ["digits", "breast_cancer", "diabetes", "diabetes_std"]
    parser.add_argument("--datasets", nargs="+", default=names, choices=names)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None,
                        help="fastbp's n_threads and the BLAS thread limit for scikit-learn "
                             "(default: neither limited, all cores)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits of each library per seed; a seed's time is their median")
    parser.add_argument("--cool-down", type=float, default=COOL_DOWN_S,
                        help="seconds of pause before each timed fit (0: none, as in users' "
                             "scripts; default %(default)s)")
    parser.add_argument("--float32", action="store_true", help="train both in float32")
    parser.add_argument("--fastbp-float32", action="store_true",
                        help="fastbp trains in float32 (dtype=np.float32), scikit-learn in float64")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.float32 and args.fastbp_float32:
        parser.error("--float32 already trains fastbp in float32")
    if args.cool_down < 0:
        parser.error("--cool-down must be >= 0")
    globals()["COOL_DOWN_S"] = args.cool_down
    run(args.datasets, args.seeds, args.threads, np.float32 if args.float32 else np.float64,
        np.float32 if args.fastbp_float32 else None, repeats=args.repeats)


if __name__ == "__main__":
    main()
