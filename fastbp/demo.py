"""``fastbp demo``: the same network trained by fastbp, scikit-learn and PyTorch.

On scikit-learn's bundled data sets (shipped inside scikit-learn, so nothing is
downloaded) the demo trains one network three ways, with the same architecture, the same
initial parameters, the same minibatches and the same Adam settings:

- ``fastbp.sklearn``'s estimator, fastbp's compiled training loop;
- ``sklearn.neural_network``'s estimator of the same name, the library a user switches from;
- PyTorch (when installed): ``torch.nn.Sequential`` of ``Linear`` and ``ReLU`` layers,
  started from scikit-learn's initial parameters and fed scikit-learn's shuffles, trained
  with ``torch.optim.Adam`` on scikit-learn's loss (mean loss plus its L2 penalty).

Every fit runs exactly ``epochs`` epochs (scikit-learn's ``tol`` stopping is switched off
so all three do the same work) on the same number of threads (fastbp's ``n_threads``,
scikit-learn's BLAS threads through threadpoolctl, ``torch.set_num_threads``). Only the fit
is timed, and each fit runs `repeats` times (the libraries alternating) for a median. The
demo prints one table (fit time, speedup over scikit-learn, test score) and,
with ``--chart PATH`` and matplotlib, writes a PNG of the learning curves and fit times.
"""

import dataclasses
import statistics
import sys
import time
import warnings

import numpy as np

from ._bench import blas_threads, describe_machine

DATASETS = ("digits", "breast_cancer", "diabetes")
HIDDEN = (128, 64)
BATCH_SIZE = 200      # scikit-learn's default, min(200, n_samples)
LEARNING_RATE = 1e-3  # scikit-learn's default for adam
ALPHA = 1e-4          # scikit-learn's default L2 penalty

# Pause before each timed fit: NumPy's OpenBLAS threads keep spinning for about 0.1 s after
# the last product, and on a machine with few cores they would slow the next library's fit.
COOL_DOWN_S = 0.3

LIBRARIES = ("fastbp", "scikit-learn", "pytorch")


@dataclasses.dataclass
class Split:
    """A data set cut 75/25, features standardized on the training part."""
    name: str
    task: str          # "classification" (score: accuracy) or "regression" (score: R^2)
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray

    @property
    def metric(self):
        return "accuracy" if self.task == "classification" else "R^2"


@dataclasses.dataclass
class Result:
    """One library's fit of one data set."""
    library: str
    seconds: float
    score: float
    loss_curve: list


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("the demo trains on scikit-learn's bundled data sets and compares "
                         "with its MLP: pip install 'fastbp[demo]'") from None


def load_split(name, seed=0):
    """Data set `name` of scikit-learn's bundled ones, split and standardized.

    diabetes's target (25 to 346) is standardized too, so that Adam at scikit-learn's
    default learning rate converges within the demo's epochs; R^2 does not change when
    truth and prediction go through the same affine map.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    loaders = {"digits": (datasets.load_digits, "classification"),
               "breast_cancer": (datasets.load_breast_cancer, "classification"),
               "diabetes": (datasets.load_diabetes, "regression")}
    if name not in loaders:
        raise ValueError(f"data set must be one of {', '.join(loaders)}; got {name!r}")
    load, task = loaders[name]
    X, y = load(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.25, random_state=seed,
        stratify=y if task == "classification" else None)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    if task == "regression":
        mean, std = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mean) / std, (y_te - mean) / std
    return Split(name, task, X_tr, X_te, y_tr, y_te)


def _estimator_params(epochs, seed):
    # n_iter_no_change above max_iter switches scikit-learn's tol rule off: every fit
    # runs `epochs` epochs, so that all three libraries do the same work.
    return dict(hidden_layer_sizes=HIDDEN, activation="relu", solver="adam", alpha=ALPHA,
                batch_size=BATCH_SIZE, learning_rate_init=LEARNING_RATE, max_iter=epochs,
                n_iter_no_change=epochs + 1, shuffle=True, random_state=seed)


def _score(task, y_true, y_pred):
    if task == "classification":
        return float(np.mean(y_true == y_pred))
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / np.sum((y_true - y_true.mean()) ** 2))


def n_outputs(split):
    """The output width of scikit-learn's network for this data: one logistic unit for two
    classes, one softmax unit per class for more, one unit for a regression target."""
    if split.task == "regression":
        return 1
    n_classes = len(np.unique(split.y_train))
    return 1 if n_classes == 2 else n_classes


def fit_estimator(module, split, epochs, seed, n_threads):
    """Fit `module`'s MLPClassifier or MLPRegressor (fastbp.sklearn or
    sklearn.neural_network) and time the fit only."""
    from sklearn.exceptions import ConvergenceWarning

    cls = module.MLPClassifier if split.task == "classification" else module.MLPRegressor
    params = _estimator_params(epochs, seed)
    if module.__name__ == "fastbp.sklearn":
        params["n_threads"] = n_threads
    estimator = cls(**params)
    with warnings.catch_warnings(), blas_threads(n_threads):
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is reached on purpose
        time.sleep(COOL_DOWN_S)
        t0 = time.perf_counter()
        estimator.fit(split.X_train, split.y_train)
        seconds = time.perf_counter() - t0
        score = _score(split.task, split.y_test, estimator.predict(split.X_test))
    return Result("", seconds, score, list(estimator.loss_curve_)), estimator


def initial_parameters(layer_units, seed):
    """scikit-learn's initial parameters for relu layers of these sizes and this
    random_state, and the RandomState after drawing them (it shuffles next).

    scikit-learn draws each layer's weights and then its biases from U(-r, r),
    r = sqrt(6 / (fan_in + fan_out)), in layer order, from RandomState(random_state).
    """
    rng = np.random.RandomState(seed)
    coefs, intercepts = [], []
    for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        coefs.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
        intercepts.append(rng.uniform(-bound, bound, fan_out))
    return coefs, intercepts, rng


def fit_torch(split, epochs, seed, n_threads, n_outputs):
    """Train the same network with PyTorch, step for step as scikit-learn does: its
    initial parameters, its shuffles (one RandomState.shuffle of the indices per epoch),
    its loss (the mean loss plus 0.5 * alpha * sum(W**2) / batch rows) and Adam."""
    import torch

    layer_units = [split.X_train.shape[1], *HIDDEN, n_outputs]
    coefs, intercepts, rng = initial_parameters(layer_units, seed)
    layers = []
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        linear = torch.nn.Linear(W.shape[0], W.shape[1], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if i < len(coefs) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    weights = [layer.weight for layer in model if isinstance(layer, torch.nn.Linear)]
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.999),
                                 eps=1e-8)
    if split.task == "regression":
        def data_loss(out, target):
            return 0.5 * torch.mean((out[:, 0] - target) ** 2)
        targets = torch.from_numpy(split.y_train.astype(np.float64))
    elif n_outputs == 1:
        data_loss = torch.nn.BCEWithLogitsLoss()
        targets = torch.from_numpy(split.y_train.astype(np.float64)[:, None])
    else:
        data_loss = torch.nn.CrossEntropyLoss()
        targets = torch.from_numpy(np.searchsorted(np.unique(split.y_train), split.y_train))
    X = torch.from_numpy(split.X_train)
    n = len(split.y_train)
    batch = min(BATCH_SIZE, n)
    sample_idx = np.arange(n)
    torch.set_num_threads(n_threads)
    loss_curve = []
    time.sleep(COOL_DOWN_S)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = np.arange(n)
        rng.shuffle(order)          # what sklearn.utils.shuffle does with the RandomState
        sample_idx = sample_idx[order]
        index = torch.from_numpy(sample_idx)
        total = 0.0
        for start in range(0, n, batch):
            rows = index[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            penalty = sum(torch.sum(W * W) for W in weights)
            loss = data_loss(model(X[rows]), targets[rows]) + 0.5 * ALPHA * penalty / len(rows)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        loss_curve.append(total / n)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        out = model(torch.from_numpy(split.X_test)).numpy()
    if split.task == "regression":
        pred = out[:, 0]
    elif n_outputs == 1:
        pred = (out[:, 0] > 0).astype(split.y_test.dtype)
    else:
        pred = np.unique(split.y_train)[out.argmax(axis=1)]
    return Result("pytorch", seconds, _score(split.task, split.y_test, pred), loss_curve)


class Progress:
    """One status line for the fits: rewritten in place on a terminal, a line per fit
    otherwise (a CI log). Written to stderr, so that stdout holds the table alone."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def _bar(self):
        width = 20
        filled = width * self.done // self.total
        return "[" + "#" * filled + "." * (width - filled) + f"] {self.done}/{self.total}"

    def note(self, text):
        """A status shown until the next line replaces it (on a terminal only)."""
        if self.live:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()

    def start(self, dataset, library):
        if self.live:
            self.stream.write(f"\r\033[K{self._bar()} training {library} on {dataset} ...")
            self.stream.flush()

    def finish(self, dataset, library, seconds):
        self.done += 1
        line = f"{self._bar()} {library} on {dataset}: {seconds:.2f} s"
        if self.live:
            end = "\r\033[K" if self.done == self.total else ""
            self.stream.write(f"\r\033[K{line}{end}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def format_table(rows):
    """The table printed at the end: one row per data set and library."""
    header = ("data set", "library", "fit s", "speedup", "test score", "final loss")
    lines = [f"{header[0]:<14} {header[1]:<13} {header[2]:>7} {header[3]:>8} "
             f"{header[4]:>16} {header[5]:>11}"]
    lines.append("-" * len(lines[0]))
    for split, results in rows:
        base = results["scikit-learn"].seconds
        for library, r in results.items():
            score = f"{r.score:.4f} {split.metric}"
            lines.append(f"{split.name:<14} {library:<13} {r.seconds:>7.3f} "
                         f"{base / r.seconds:>7.1f}x {score:>16} {r.loss_curve[-1]:>11.5f}")
    return "\n".join(lines)


def write_chart(rows, path, epochs):
    """A PNG: each data set's learning curves, and the fit times. Returns False (and
    says so) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--chart needs matplotlib: pip install matplotlib (no chart written)")
        return False
    colors = {"fastbp": "tab:blue", "scikit-learn": "tab:orange", "pytorch": "tab:red"}
    styles = {"fastbp": "-", "scikit-learn": "--", "pytorch": ":"}
    n = len(rows)
    fig = plt.figure(figsize=(max(8.0, 4.0 * n), 7.0))
    grid = fig.add_gridspec(2, n)
    axes = [fig.add_subplot(grid[0, i]) for i in range(n)] + [fig.add_subplot(grid[1, :])]
    for ax, (split, results) in zip(axes, rows):
        for library, r in results.items():
            # fastbp's line is drawn wide and pale under the others, which it coincides with
            wide = library == "fastbp"
            ax.plot(range(1, len(r.loss_curve) + 1), r.loss_curve, styles[library],
                    color=colors[library], label=library, linewidth=5 if wide else 1.6,
                    alpha=0.45 if wide else 1.0)
        ax.set_yscale("log")
        ax.set_title(f"{split.name}: training loss", fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    ax = axes[-1]
    libraries = [lib for lib in LIBRARIES if any(lib in results for _, results in rows)]
    width = 0.8 / len(libraries)
    for k, library in enumerate(libraries):
        xs = [i + (k - (len(libraries) - 1) / 2) * width for i, (_, res) in enumerate(rows)
              if library in res]
        fits = [res for _, res in rows if library in res]
        speedups = [res["scikit-learn"].seconds / res[library].seconds for res in fits]
        bars = ax.bar(xs, speedups, width, color=colors[library], label=library)
        for bar, res in zip(bars, fits):
            ax.annotate(f"{res[library].seconds:.3f} s",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(n), [split.name for split, _ in rows], fontsize=8)
    ax.set_ylabel("speedup over scikit-learn")
    ax.set_title(f"speed: scikit-learn's fit time / each library's ({epochs} epochs; "
                 "labels: fit seconds)", fontsize=10)
    fig.suptitle("The same network, initial parameters and minibatches in each library: "
                 "the learning curves coincide", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(epochs=50, n_threads=None, datasets=DATASETS, seed=0, chart=None, torch=True,
        repeats=3):
    """Train on each data set with each library, print the table, write the chart.

    Parameters
    ----------
    epochs : int
        Epochs of every fit (scikit-learn's ``max_iter``; its ``tol`` stopping is off).
    n_threads : int or None
        Threads of every library; ``None`` is fastbp's default (the usable cores).
    datasets : sequence of str
        Names among ``"digits"``, ``"breast_cancer"``, ``"diabetes"``.
    seed : int
        ``random_state`` of the split and of every network.
    chart : str or None
        Path of a PNG of the learning curves and fit times (needs matplotlib).
    torch : bool
        Train with PyTorch too when it is installed.
    repeats : int
        Fits of each library on each data set; the table gives the median time.

    Returns
    -------
    list of (Split, dict)
        Each data set's split and its results by library name.
    """
    _sklearn()
    import sklearn.neural_network

    from . import sklearn as fastbp_sklearn
    from .network import Network

    n_threads = Network([1, 1], n_threads=n_threads).n_threads  # the effective count
    have_torch = False
    if torch:
        try:
            import torch as _torch  # noqa: F401
            have_torch = True
        except ImportError:
            pass
    libraries = ["fastbp", "scikit-learn"] + (["pytorch"] if have_torch else [])
    print(describe_machine())
    # lines under 80 columns: a narrow terminal wraps nothing
    print(f"network: relu hidden layers {HIDDEN}, adam (lr {LEARNING_RATE}), batch {BATCH_SIZE},")
    print(f"alpha {ALPHA}, {epochs} epochs, float64, {n_threads} threads; the same initial")
    print(f"parameters and minibatches in every library; median of {repeats} fits each")
    with blas_threads(1) as limited:
        if not limited:
            print("threadpoolctl is not installed: scikit-learn's BLAS uses all cores")
    if torch and not have_torch:
        print("PyTorch is not installed: its rows are skipped (pip install torch)")

    def fit(library, split, n_epochs):
        if library == "fastbp":
            r, _ = fit_estimator(fastbp_sklearn, split, n_epochs, seed, n_threads)
        elif library == "scikit-learn":
            r, _ = fit_estimator(sklearn.neural_network, split, n_epochs, seed, n_threads)
        else:
            r = fit_torch(split, n_epochs, seed, n_threads, n_outputs(split))
        r.library = library
        return r

    # One untimed epoch of each library first: thread pools, lazy imports and first-call
    # costs then stay out of every timed fit.
    progress = Progress(len(datasets) * len(libraries) * repeats)
    progress.note("warming up: one untimed epoch of each library ...")
    warm_up = load_split(datasets[0], seed)
    for library in libraries:
        fit(library, warm_up, 1)
    rows = []
    for name in datasets:
        split = load_split(name, seed)
        times = {library: [] for library in libraries}
        results = {}
        # the libraries alternate, so that a slow moment of a shared machine hits all alike
        for _ in range(repeats):
            for library in libraries:
                progress.start(name, library)
                r = fit(library, split, epochs)
                times[library].append(r.seconds)
                results.setdefault(library, r)   # every repeat trains the same bits
                progress.finish(name, library, r.seconds)
        for library, r in results.items():
            r.seconds = statistics.median(times[library])
        rows.append((split, results))
    print(format_table(rows))
    print("speedup: scikit-learn's fit time over this library's; test score on the held-out 25%")
    for other in libraries[1:]:
        ratios = [res[other].seconds / res["fastbp"].seconds for _, res in rows]
        spread = f"{min(ratios):.1f}x" if len(ratios) == 1 else f"{min(ratios):.1f}x to {max(ratios):.1f}x"
        print(f"fastbp's speedup over {other}: {spread}")
    if chart is not None and write_chart(rows, chart, epochs):
        print(f"chart written to {chart}")
    return rows
