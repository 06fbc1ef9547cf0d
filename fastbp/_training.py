"""fit's epoch loop, shared by fastbp.Network and fastbp.reference.Network.

A network provides the pieces that differ between the compiled and the NumPy versions:

    net._prepare(X, y, sample_weight, class_weight) -> Data     (checked, converted)
    net._epoch(data, order, batch_size, optimizer, loss_scale, progress) -> EpochStats
    net._copy_parameters() / net._set_parameters(copy)
    net._data_loss(data) -> float                          (weighted mean loss, no penalty)
    net.forward(X)

and this module does the rest: validation data, learning-rate schedules, early stopping
with the best parameters restored, the history, callbacks and progress output.
"""

import collections
import math
import sys
import time

import numpy as np

from . import optim
from ._common import DivergedError
from ._validation import check_bool, check_positive_int, check_X, check_targets

Data = collections.namedtuple("Data", "X labels Y weights")
Data.__doc__ = """Checked training data: X (n, n_0) C-contiguous in the network's dtype;
labels (n,) int64 or None; Y (n, n_L) or None; weights (n,) in the network's dtype or None."""

EpochStats = collections.namedtuple("EpochStats", "loss data_loss penalty n_samples seconds")
EpochStats.__doc__ = """What one epoch measured. loss: the mean over samples of each
batch's loss (times loss_scale) plus its L2 penalty, each batch weighted by its number of
rows (scikit-learn's loss_); data_loss: the same without the penalty and loss_scale;
penalty: the penalty part; n_samples; seconds (wall clock)."""

LR_SCHEDULES = ("constant", "invscaling", "adaptive")
ADAPTIVE_MIN_LR = 1e-6     # scikit-learn's: below this, adaptive stops instead of dividing
ADAPTIVE_FACTOR = 5.0


# -- argument checks shared by both networks ------------------------------------------------

def check_sample_weight(sample_weight, class_weight, labels, loss_name, n_out, n, dtype):
    """Per-row weights (n,) in `dtype`, or None when neither argument is given.

    sample_weight: (n,) non-negative finite numbers. class_weight (cross_entropy with
    integer labels only): a dict {class: weight} (missing classes weigh 1) or "balanced"
    (n / (n_classes * count(class)), scikit-learn's meaning). Both given: multiplied. The
    weights must not all be zero."""
    weights = None
    if sample_weight is not None:
        arr = np.asarray(sample_weight)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must hold real numbers; got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), one weight per sample; "
                             f"got {arr.shape}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("sample_weight must be finite")
        if (arr < 0).any():
            raise ValueError("sample_weight must be non-negative")
        weights = arr
    if class_weight is not None:
        if loss_name != "cross_entropy" or labels is None:
            raise ValueError("class_weight needs loss='cross_entropy' with integer labels")
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be a dict or 'balanced'; got {class_weight!r}")
            counts = np.bincount(labels, minlength=n_out).astype(np.float64)
            present = counts > 0
            per_class = np.ones(n_out)
            per_class[present] = n / (present.sum() * counts[present])
        elif isinstance(class_weight, dict):
            per_class = np.ones(n_out)
            for key, value in class_weight.items():
                if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) \
                        or not 0 <= key < n_out:
                    raise ValueError(f"class_weight keys must be class labels in [0, {n_out}); "
                                     f"got {key!r}")
                value = optim._real(value, f"class_weight[{key}]", low=0.0)
                per_class[key] = value
        else:
            raise TypeError(f"class_weight must be a dict or 'balanced'; got {class_weight!r}")
        cw = per_class[labels]
        weights = cw if weights is None else weights * cw
    if weights is None:
        return None
    if n > 0 and not (weights > 0).any():
        raise ValueError("the sample weights are all zero")
    with np.errstate(over="ignore", under="ignore"):
        out = weights.astype(dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"the sample weights overflow {np.dtype(dtype).name}")
    # checked again after the conversion: weights that underflow to zero in the network's
    # dtype would train nothing, silently
    if n > 0 and not (out > 0).any():
        raise ValueError(f"the sample weights are all zero in {np.dtype(dtype).name} "
                         f"(the largest is {weights.max():g}); scale them up")
    return out


def check_loss_scale(value):
    return optim._real(value, "loss_scale", low=0.0, low_open=True)


def epoch_order(net, n, order, shuffle):
    """The row order of one epoch: `order` checked, else a permutation from the network's
    generator (shuffle) or 0..n-1."""
    if order is None:
        return net._rng.permutation(n) if shuffle else np.arange(n)
    arr = np.asarray(order)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(f"order must be a 1-d array of integer row indices; got "
                        f"{arr.dtype} with shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("order must not be empty")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"order must index rows of X, in [0, {n}); got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return arr


# -- scores ---------------------------------------------------------------------------------

def score(net, out, data):
    """Accuracy (cross_entropy: of the argmax; binary_cross_entropy: of whole rows, as
    scikit-learn's accuracy_score for multi-label), or R^2 averaged over outputs (mse);
    weighted by the sample weights when there are any."""
    w = None if data.weights is None else data.weights.astype(np.float64)
    if net.loss_name == "cross_entropy":
        truth = data.labels if data.labels is not None else data.Y.argmax(axis=1)
        return float(np.average(out.argmax(axis=1) == truth, weights=w))
    if net.loss_name == "binary_cross_entropy":
        return float(np.average(((out > 0.5) == (data.Y > 0.5)).all(axis=1), weights=w))
    Y = data.Y.astype(np.float64)
    out = out.astype(np.float64)
    mean = np.average(Y, axis=0, weights=w)
    ss_res = np.average((Y - out) ** 2, axis=0, weights=w)
    ss_tot = np.average((Y - mean) ** 2, axis=0, weights=w)
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                  np.where(ss_res > 0, 0.0, 1.0))
    return float(r2.mean())


# -- progress output ----------------------------------------------------------------------

class Progress:
    """verbose output: a live bar on a terminal (redrawn at most every 0.1 s, fed from the
    compiled loop's signal checks), one line per epoch otherwise."""

    def __init__(self, verbose, epochs, stream=None):
        self.verbose = verbose
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stdout
        self.live = verbose and _isatty(self.stream)
        self.epoch = 0
        self.n = 0
        self.t0 = 0.0
        self._last = 0.0

    def start_epoch(self, epoch, n):
        self.epoch, self.n, self.t0, self._last = epoch, n, time.perf_counter(), 0.0
        if self.live:
            self._draw(0)

    def callback(self):
        return self._draw if self.live else None

    def _draw(self, done):
        now = time.perf_counter()
        if done and done < self.n and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / max(self.n, 1))
        rate = done / (now - self.t0) if now > self.t0 and done else 0.0
        self.stream.write(f"\rEpoch {self.epoch}/{self.epochs} [{'=' * filled}{'.' * (width - filled)}] "
                          f"{done}/{self.n} {rate:,.0f} samples/s")
        self.stream.flush()

    def end_epoch(self, logs):
        if not self.verbose:
            return
        parts = [f"Epoch {self.epoch}/{self.epochs}", f"loss {logs['loss']:.6f}"]
        if logs.get("val_loss") is not None:
            parts += [f"val_loss {logs['val_loss']:.6f}", f"val_score {logs['val_score']:.4f}"]
        parts.append(f"{logs['samples_per_s']:,.0f} samples/s")
        line = " - ".join(parts)
        self.stream.write(("\r" + line + " " * 10 + "\n") if self.live else line + "\n")
        self.stream.flush()

    def message(self, text):
        if self.verbose:
            self.stream.write(text + "\n")
            self.stream.flush()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- fit ------------------------------------------------------------------------------------

def split_validation(net, data, validation_data, validation_split):
    """(training Data, validation Data or None). validation_split takes the last fraction
    of the rows (before any shuffling), as Keras does."""
    if validation_data is not None and validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise TypeError("validation_data must be a tuple (X_val, y_val) or "
                            "(X_val, y_val, sample_weight_val)")
        Xv, yv = validation_data[0], validation_data[1]
        wv = validation_data[2] if len(validation_data) == 3 else None
        return data, net._prepare(Xv, yv, wv, None, names=("validation_data X",
                                                           "validation_data y"))
    split = optim._real(validation_split, "validation_split", low=0.0, high=1.0, high_open=True)
    if split == 0:
        return data, None
    n = data.X.shape[0]
    n_val = int(math.ceil(n * split))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split={split:g} leaves {n - n_val} training and "
                         f"{n_val} validation rows of {n}; both need at least one")
    cut = n - n_val

    def part(sl):
        return Data(data.X[sl], None if data.labels is None else data.labels[sl],
                    None if data.Y is None else data.Y[sl],
                    None if data.weights is None else data.weights[sl])
    return part(slice(0, cut)), part(slice(cut, n))


def fit(net, X, y, *, epochs, batch_size, lr, shuffle, optimizer, momentum, nesterov,
        beta1, beta2, epsilon, l2, lr_schedule, power_t, validation_data, validation_split,
        early_stopping, patience, min_delta, sample_weight, class_weight, callbacks, verbose):
    """The body of Network.fit (see its docstring)."""
    data = net._prepare(X, y, sample_weight, class_weight)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    shuffle = check_bool(shuffle, "shuffle")
    early_stopping = check_bool(early_stopping, "early_stopping")
    patience = check_positive_int(patience, "patience")
    min_delta = optim._real(min_delta, "min_delta", low=0.0)
    power_t = optim._real(power_t, "power_t", low=0.0)
    if not isinstance(lr_schedule, str) or lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}; "
                         f"got {lr_schedule!r}")
    if isinstance(verbose, (bool, np.bool_)):
        verbose = int(verbose)
    if not isinstance(verbose, (int, np.integer)) or verbose < 0:
        raise ValueError(f"verbose must be 0, 1 (or True/False); got {verbose!r}")
    if callbacks is None:
        callbacks = ()
    elif callable(callbacks):
        callbacks = (callbacks,)
    elif isinstance(callbacks, (list, tuple)):
        callbacks = tuple(callbacks)
    else:
        raise TypeError(f"callbacks must be a callable cb(net, epoch, logs) or a list of them; "
                        f"got {callbacks!r}")
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables cb(net, epoch, logs); got {cb!r}")
    opt = optim.make_optimizer(optimizer, lr, momentum, nesterov, beta1, beta2, epsilon, l2)
    if isinstance(opt, optim.LBFGS):
        unused = [name for name, given in (
            ("validation_data", validation_data is not None),
            ("validation_split", validation_split != 0.0), ("early_stopping", early_stopping),
            ("lr_schedule", lr_schedule != "constant"), ("callbacks", bool(callbacks)))
            if given]
        if unused:
            raise ValueError(f"not used by the full-batch L-BFGS optimizer (fit's epochs are "
                             f"its iterations): {', '.join(unused)}")
        return fit_lbfgs(net, data, opt, epochs, progress=Progress(verbose, epochs))
    train, val = split_validation(net, data, validation_data, validation_split)
    net._bind_optimizer(opt)  # lr for this dtype, state for this network: before any change

    net.optimizer_ = opt
    history = {"loss": [], "val_loss": [], "val_score": [], "lr": [], "samples_per_s": [],
               "seconds": []}
    net.history = history
    base_lr = opt.lr
    seen = 0                 # samples seen, for invscaling (scikit-learn's t_)
    best = math.inf          # best monitored value (val_loss with validation data, else loss)
    best_params = None
    stall = 0
    progress = Progress(verbose, epochs)
    n = train.X.shape[0]
    for epoch in range(1, epochs + 1):
        order = epoch_order(net, n, None, shuffle)
        progress.start_epoch(epoch, n)
        stats = net._epoch(train, order, batch_size, opt, 1.0, progress.callback())
        seen += stats.n_samples
        net.loss_curve_.append(stats.loss)
        logs = {"epoch": epoch, "loss": stats.loss, "lr": opt.lr,
                "samples_per_s": stats.n_samples / stats.seconds if stats.seconds > 0 else math.inf,
                "seconds": stats.seconds, "val_loss": None, "val_score": None}
        if val is not None:
            logs["val_loss"] = net._data_loss(val)
            logs["val_score"] = score(net, net.forward(val.X), val)
        for key in ("loss", "lr", "samples_per_s", "seconds", "val_loss", "val_score"):
            history[key].append(logs[key])
        progress.end_epoch(logs)

        monitored = logs["val_loss"] if val is not None else logs["loss"]
        if monitored < best - min_delta:
            stall = 0
        else:
            stall += 1
        if monitored < best:
            best = monitored
            if early_stopping:
                best_params = net._copy_parameters()
        stop = False
        for cb in callbacks:
            if cb(net, epoch, dict(logs)):
                stop = True
        if lr_schedule == "invscaling":
            opt.lr = base_lr / (seen + 1) ** power_t
        if stall >= patience:
            if lr_schedule == "adaptive" and opt.lr > ADAPTIVE_MIN_LR:
                opt.lr = opt.lr / ADAPTIVE_FACTOR
                progress.message(f"no improvement for {patience} epochs: lr -> {opt.lr:g}")
                stall = 0
            elif lr_schedule == "adaptive" or early_stopping:
                progress.message(f"early stopping: no improvement for {patience} epochs")
                stop = True
        if stop:
            break
    if early_stopping and best_params is not None:
        net._set_parameters(best_params)
    return net


def fit_lbfgs(net, data, opt, max_iter, progress):
    """Network.fit with an optim.LBFGS: scipy's L-BFGS-B from the network's parameters
    over all of `data`, at most max_iter iterations; the network ends with the result.
    history["loss"] and loss_curve_ get the objective (loss plus penalty) after each
    iteration."""
    from . import _lbfgs
    objective = net._full_batch(data, opt.l2, opt.l2_per_sample)
    losses = []

    def after_iteration(intermediate_result):
        losses.append(float(intermediate_result.fun))
        progress.message(f"iteration {len(losses)}: loss {losses[-1]:.6g}")

    result = _lbfgs.minimize(objective, objective.x0(), max_iter=max_iter,
                             max_fun=opt.max_fun, tol=opt.tol, callback=after_iteration,
                             one_blas_thread=isinstance(objective, _lbfgs.FullBatch))
    objective.set(result.x)
    if not np.isfinite(result.fun):
        # the start is already diverged (scipy stops at once, "ABNORMAL"): as the
        # minibatch optimizers say it
        raise DivergedError("training diverged: the L-BFGS objective is not finite at the "
                            "starting parameters; scale the inputs")
    opt.n_iter_ = _lbfgs.iterations(result, max_iter)
    opt.n_fun_ = int(result.nfev)
    net.optimizer_ = opt
    net.loss_curve_.extend(losses)
    net.history = {"loss": losses, "val_loss": [None] * len(losses),
                   "val_score": [None] * len(losses), "lr": [None] * len(losses),
                   "samples_per_s": [None] * len(losses), "seconds": [None] * len(losses)}
    return net
