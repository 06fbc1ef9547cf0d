"""The main job: train on a real data set and compare with the NumPy reference.

scikit-learn's bundled handwritten digits (1797 images of 8x8 pixels, 10 classes, shipped
inside scikit-learn, so no download) are standardized and split 75/25. fastbp.Network and
fastbp.reference.Network are trained with the same seed and hyperparameters; the command
prints test accuracy and training samples/s of both.
"""

import time

import numpy as np

from . import reference
from ._bench import describe_machine
from .network import Network


def load_digits_split(seed=0):
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SystemExit(
            "the demo trains on scikit-learn's bundled digits: pip install 'fastbp[demo]'"
        ) from exc
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_train = int(0.75 * len(y))
    train, test = order[:n_train], order[n_train:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    X = ((X - mean) / std).astype(np.float32)
    return X[train], y[train], X[test], y[test]


def run(epochs=30, batch_size=32, lr=0.05, hidden=(128, 64), n_threads=None, seed=0):
    X_train, y_train, X_test, y_test = load_digits_split(seed)
    sizes = [X_train.shape[1], *hidden, 10]
    print(describe_machine())
    print(f"digits: {len(y_train)} train / {len(y_test)} test images, network "
          f"{'-'.join(map(str, sizes))} relu, softmax cross-entropy, {epochs} epochs, "
          f"batch {batch_size}, lr {lr}, float32")
    results = {}
    for name, cls in [("fastbp", Network), ("reference", reference.Network)]:
        net = cls(sizes, activation="relu", loss="cross_entropy", dtype=np.float32,
                  seed=seed, n_threads=n_threads)
        t0 = time.perf_counter()
        net.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, lr=lr)
        seconds = time.perf_counter() - t0
        accuracy = float((net.predict(X_test) == y_test).mean())
        rate = epochs * len(y_train) / seconds
        results[name] = (accuracy, rate, net)
        print(f"  {name:>9}: test accuracy {accuracy:.4f}, final train loss "
              f"{net.loss_curve_[-1]:.4f}, {rate:,.0f} samples/s ({seconds:.2f} s)")
    ratio = results["fastbp"][1] / results["reference"][1]
    same = all(np.allclose(a, b, atol=1e-3) for a, b in
               zip(results["fastbp"][2].weights, results["reference"][2].weights))
    print(f"  fastbp / reference speed: {ratio:.2f}x; same trained weights (to 1e-3): {same}")
    return results
