"""fastbp.sklearn against scikit-learn's MLPClassifier on sparse (CSR) input.

    python benchmarks/bench_sparse.py                  # 20,000 x 50,000, 0.5% dense, float64
    python benchmarks/bench_sparse.py --float32 --threads 2 --repeats 3
    python benchmarks/bench_sparse.py --quick          # 2,000 x 5,000: a check that it runs

The data is made here: a synthetic TF-IDF-like CSR matrix of --rows documents over
--features terms, --density of its entries stored, in 20 classes. Each document draws its
terms (with repetition) from a Zipf-like background distribution over the whole
vocabulary and, for a fraction of them, from its class's own topic terms (a disjoint slice
of the vocabulary per class), so the classes are learnable but overlap; counts become
1 + log(count) times the smoothed idf, and each row is L2-normalized (scikit-learn's
TfidfVectorizer's defaults). 80/20 stratified split.

Both estimators get the same settings: hidden_layer_sizes=(100,), solver="adam",
max_iter=--epochs (a few epochs: the time per epoch is what is compared, and both stop at
max_iter), batch_size 200 ("auto"), random_state=0, alpha 1e-4. X is given to both as
the same CSR matrix, float64 (or float32 with --float32: both then train in float32).
The fits alternate between the libraries, --repeats times each, with no pause between
them; the median fit time of each is reported with their ratio, and each one's test
accuracy (the same for every repeat: the fits are deterministic).

--threads N gives fastbp n_threads=N and limits scikit-learn's BLAS to N threads
(threadpoolctl, when installed); by default both use the machine's cores.
"""

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

N_CLASSES = 20
TOPIC_FRACTION = 0.05     # of a document's term draws that come from its class's topic


def make_tfidf(n_rows, n_features, density, seed, dtype):
    """(X CSR (n_rows, n_features) of dtype, y (n_rows,) in [0, N_CLASSES))."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n_rows)
    per_row = density * n_features
    # draws per row: a little more than the target, since repeated terms merge
    draws = rng.poisson(per_row * 1.08, n_rows).clip(1)
    rows = np.repeat(np.arange(n_rows), draws)
    total = rows.shape[0]
    # background: Zipf-like over a random permutation of the vocabulary
    ranks = np.arange(1, n_features + 1, dtype=np.float64)
    p = ranks ** -0.8
    p /= p.sum()
    vocab = rng.permutation(n_features)
    cols = vocab[rng.choice(n_features, size=total, p=p)]
    # topic terms: class c owns the slice [c * t, (c + 1) * t) of another permutation
    topic_width = n_features // (2 * N_CLASSES)
    topics = rng.permutation(n_features)
    from_topic = rng.random(total) < TOPIC_FRACTION
    cls = y[rows[from_topic]]
    cols[from_topic] = topics[cls * topic_width + rng.integers(0, topic_width, cls.shape[0])]
    counts = sp.csr_matrix((np.ones(total), (rows, cols)), shape=(n_rows, n_features))
    counts.sum_duplicates()
    df = np.bincount(counts.indices, minlength=n_features)
    idf = np.log((1 + n_rows) / (1 + df)) + 1
    counts.data = (1 + np.log(counts.data)) * idf[counts.indices]
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    X = sp.diags(1 / np.maximum(norms, 1e-12)) @ counts
    X = sp.csr_matrix(X, dtype=dtype)
    X.sort_indices()
    return X, y


@contextlib.contextmanager
def blas_threads(n):
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--features", type=int, default=50000)
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 x 5,000, 10 epochs, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.epochs, args.repeats = 2000, 5000, 10, 1

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP
    from fastbp.sklearn import MLPClassifier as FbMLP

    dtype = np.float32 if args.float32 else np.float64
    t0 = time.perf_counter()
    X, y = make_tfidf(args.rows, args.features, args.density, 0, dtype)
    made = time.perf_counter() - t0
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0,
                                              stratify=y)
    print(f"python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, threads={args.threads or 'all'}, {np.dtype(dtype).name}")
    print(f"X: {X.shape[0]} x {X.shape[1]} CSR, {X.nnz} stored "
          f"({100 * X.nnz / (X.shape[0] * X.shape[1]):.3f}% dense), {N_CLASSES} classes, "
          f"made in {made:.1f} s; train {X_tr.shape[0]}, test {X_te.shape[0]}")
    settings = dict(hidden_layer_sizes=(100,), solver="adam", max_iter=args.epochs,
                    random_state=0)
    makers = {"scikit-learn": lambda: SkMLP(**settings),
              "fastbp": lambda: FbMLP(n_threads=args.threads, **settings)}
    times = {name: [] for name in makers}
    scores = {}
    order = list(makers)
    for rep in range(args.repeats):
        for name in (order if rep % 2 == 0 else order[::-1]):
            est = makers[name]()
            with warnings.catch_warnings(), blas_threads(args.threads):
                warnings.simplefilter("ignore", ConvergenceWarning)
                t = time.perf_counter()
                est.fit(X_tr, y_tr)
                times[name].append(time.perf_counter() - t)
                scores[name] = est.score(X_te, y_te)
            print(f"  repeat {rep + 1}: {name:12s} fit {times[name][-1]:7.2f} s "
                  f"({est.n_iter_} epochs), test accuracy {scores[name]:.4f}", flush=True)
    sk, fb = (statistics.median(times[n]) for n in order)
    print(f"median fit: scikit-learn {sk:.2f} s, fastbp {fb:.2f} s, "
          f"ratio {sk / fb:.2f}x; test accuracy scikit-learn {scores['scikit-learn']:.4f}, "
          f"fastbp {scores['fastbp']:.4f} (difference "
          f"{scores['fastbp'] - scores['scikit-learn']:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
