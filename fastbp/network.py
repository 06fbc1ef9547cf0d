"""fastbp.Network: the Python face of the compiled network.

This layer validates and allocates; src/_network.pyx computes. Parameters live in one
contiguous buffer (self._params) with per-layer views (weights, biases); gradients in a
mirror buffer (self._grads). fit() allocates its workspace once and hands each whole epoch
to compiled code that runs without the GIL.
"""

import copy
import functools
import threading
import sys
import time

import numpy as np

from . import _io, _network, _training
from ._common import (ACTIVATIONS, COMPILED_OUTPUT, LOSSES, DivergedError, check_init,
                      fill_initial_parameters, raise_diverged)
from ._training import Data, EpochStats
from ._validation import (
    CsrRows,
    check_activations,
    check_bool,
    check_dtype,
    check_layer_sizes,
    check_loss,
    check_lr,
    check_positive_int,
    check_seed,
    check_buffer_size,
    check_n_threads,
    check_targets,
    check_X,
    effective_n_threads,
    _all_finite,
)
from ._runtime import build_info, omp_max_threads

_OPENMP = build_info()["openmp"]

_FORWARD_CHUNK_ROWS = 8192  # forward() works through large inputs in slices of this many rows
_WORK_CACHE_BYTES = 8 << 20  # workspaces up to this size are kept between calls

# the most epochs run_epochs runs in one call (its record holds 56 bytes an epoch)
_RUN_MAX_EPOCHS = 1000


def _serialized(method):
    """Run the method holding the network's lock: two threads using one network take turns
    instead of interleaving steps on the same parameters and workspace. (The compiled
    loops release the GIL, so without this they really would interleave.)"""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


def _training_call(marks_busy):
    """_serialized for a call that changes the network's training state (parameters,
    optimizer, gradients, history). The lock is reentrant, so a callback or a signal
    handler of a running fit or train_epoch on the same thread would get in: it is refused
    instead, as it would corrupt the outer call's history, optimizer and rollback copy.
    marks_busy: fit and train_epoch, which mark the network busy on this thread."""
    def decorate(method):
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            with self._lock:
                me = threading.get_ident()
                if self._training_thread == me:
                    raise RuntimeError(
                        f"Network.{method.__name__} cannot run while a fit or train_epoch "
                        "of this network is running on this thread (from a callback or a "
                        "signal handler); read-only calls (forward, predict, loss, save) can")
                if not marks_busy:
                    return method(self, *args, **kwargs)
                self._training_thread = me
                try:
                    return method(self, *args, **kwargs)
                finally:
                    self._training_thread = None
        return locked
    return decorate


_changes_state = _training_call(marks_busy=False)
_training_loop = _training_call(marks_busy=True)


class ParameterList(list):
    """A list of views into the parameter buffer. Item assignment copies into the buffer
    (shape checked) instead of replacing the view, so `net.weights[0] = W` does what it
    says."""

    def __setitem__(self, index, value):
        if not isinstance(index, (int, np.integer)):
            raise TypeError("assign to one layer at a time: weights[i] = array")
        target = self[index]
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"parameter {index} must have shape {target.shape}; got {value.shape}")
        target[...] = value


class Network:
    """A multi-layer perceptron trained by backpropagation in compiled, multi-threaded code.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_0, n_1, ..., n_L]``: inputs, hidden widths, outputs; at least two, each >= 1.
    activation : str or list of str, default="relu"
        Hidden activation(s): "identity" (alias "linear"), "relu", "leaky_relu" (slope
        0.01), "sigmoid" (alias "logistic"), "tanh", "gelu" (exact, with erf). One name
        for every hidden layer, or one per hidden layer.
    loss : {"cross_entropy", "binary_cross_entropy", "mse", "poisson"}, default="cross_entropy"
        The loss sets the output activation: softmax (cross_entropy), sigmoid
        (binary_cross_entropy), exp (poisson: log link, targets y >= 0, loss half the
        Poisson deviance ``y log(y / mu) - y + mu`` with ``mu = exp(z)``) or
        `output_activation` (mse). Every loss is a mean over the batch's rows.
    output_activation : str or None, default=None
        Only for loss="mse": any hidden activation name; None means "identity".
    dtype : {np.float32, np.float64}, default=np.float32
        The precision of the parameters and of every computation.
    seed : int or None, default=None
        Seeds the initialization and the shuffling of fit and train_epoch; the same seed
        gives the same run as ``fastbp.reference.Network``.
    n_threads : int or None, default=None
        None: OMP_NUM_THREADS if set, else OpenMP's maximum (threadpoolctl's limits
        apply), capped at the usable cores, resolved at each call. A positive int caps
        the threads; -1 means all cores, -2 all but one. Results are bit-identical for
        every value.
    init : {"glorot_uniform", "glorot_normal", "he_uniform", "he_normal"}, default="glorot_uniform"
        Weight initialization; biases start at zero.

    Attributes
    ----------
    weights : list of ndarray
        Per layer, the (n_in, n_out) weight matrix: writable views of the network's
        parameter buffer (assignment copies into it).
    biases : list of ndarray
        Per layer, the (n_out,) bias vector, views as `weights` are.
    n_threads : int
        The threads the next call will use.
    loss_curve_ : list of float
        The training loss of every epoch of every fit (for L-BFGS, of every iteration).
    history : dict of str to list, or None
        The last fit's per-epoch records: "loss", "val_loss", "val_score", "lr",
        "samples_per_s", "seconds" (None where not measured); None before any fit.
    optimizer_ : Optimizer or LBFGS or None
        The optimizer the last fit used (with its state); None before any fit.
    layer_sizes, activation, dtype, seed, init
        The checked constructor arguments (activation as a list of canonical names, dtype
        as an np.dtype).
    loss_name, output_activation : str
        The loss and the output activation it implies.

    See Also
    --------
    fastbp.reference.Network : The same network in plain NumPy, the parity oracle.
    fastbp.load : Read a network written by `save`.

    Notes
    -----
    Targets ``y``, by loss, for a batch of B rows:

    - cross_entropy: integer class labels of shape (B,) in ``[0, n_L)``, or rows of
      class probabilities of shape (B, n_L);
    - binary_cross_entropy: a (B, n_L) matrix of values in [0, 1];
    - mse: a (B, n_L) matrix of finite values, or (B,) when n_L is 1;
    - poisson: as mse, every value >= 0.

    ``X`` is a (B, n_0) array of finite real numbers or a scipy CSR or CSC matrix
    (sorted, unique indices; the first layer's products then run sparse). Every input is
    checked, and converted to the network's dtype where it is not in it: bad input raises
    ValueError or TypeError naming the argument. Calls from several threads on one
    network take turns.

    Examples
    --------
    >>> import numpy as np
    >>> import fastbp
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> net = fastbp.Network([4, 16, 2], seed=0).fit(X, y, epochs=20, lr=0.1)
    >>> net.predict(X[:5]).shape
    (5,)
    """

    def __init__(self, layer_sizes, activation="relu", loss="cross_entropy",
                 output_activation=None, dtype=np.float32, seed=None, n_threads=None,
                 init="glorot_uniform"):
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.activation = check_activations(activation, len(self.layer_sizes) - 2)
        self.loss_name, self.output_activation = check_loss(loss, output_activation)
        self.dtype = check_dtype(dtype)
        self.seed = check_seed(seed)
        self._n_threads = check_n_threads(n_threads)
        self.init = check_init(init)
        self.loss_curve_ = []
        self.history = None
        self.optimizer_ = None
        self._lock = threading.RLock()
        self._work_cache = None
        self._trainer_cache = None
        self._rollback_cache = None
        self._forward_small = self._forward_large = None
        self._training_thread = None

        out_code = (_network.ACTIVATION_SOFTMAX if self.output_activation == "softmax" else
                    ACTIVATIONS[COMPILED_OUTPUT.get(self.output_activation,
                                                    self.output_activation)])
        self._exp_output = self.output_activation == "exp"
        self._sizes = np.array(self.layer_sizes, dtype=np.intp)
        self._acts = np.array([ACTIVATIONS[a] for a in self.activation] + [out_code], dtype=np.intc)
        self._loss_code = LOSSES[self.loss_name][0]
        n_params = check_buffer_size(
            sum(a * b + b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:])),
            self.dtype, "the parameters of layer_sizes")
        self._params = np.zeros(n_params, dtype=self.dtype)
        self._grads = np.zeros(n_params, dtype=self.dtype)
        self._weights, self._biases = self._views(self._params)

        self._rng = np.random.default_rng(self.seed)
        fill_initial_parameters(self._rng, self.weights, self.init)  # biases start at zero

    def __getstate__(self):
        """Pickling (and copy, deepcopy) keeps the configuration, parameters, generator
        state and training record, taken under the network's lock so that a snapshot
        during another thread's fit holds one step's parameters; the lock and the
        gradient buffer are made anew."""
        with self._lock:
            state = {k: v for k, v in self.__dict__.items()
                     if k not in ("_lock", "_grads", "_weights", "_biases", "_work_cache",
                                  "_trainer_cache", "_rollback_cache", "_forward_small",
                                  "_forward_large", "_training_thread")}
            state["_params"] = self._params.copy()
            for key in ("_rng", "loss_curve_", "history", "optimizer_"):
                if key in state:
                    state[key] = copy.deepcopy(state[key])
            return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._exp_output = self.output_activation == "exp"   # absent from older pickles
        self._lock = threading.RLock()
        self._work_cache = None
        self._trainer_cache = None
        self._rollback_cache = None
        self._forward_small = self._forward_large = None
        self._training_thread = None
        self._grads = np.zeros_like(self._params)
        self._weights, self._biases = self._views(self._params)

    @property
    def weights(self):
        """Per-layer weight matrices (n_in, n_out): writable views of the parameter buffer.
        Assigning a list (net.weights = [...]) copies into the buffer, as
        net.weights[i] = W and net.weights[i][...] = W do; the views stay the network's."""
        return self._weights

    @weights.setter
    def weights(self, values):
        self._assign_layers(self._weights, values, "weights")

    @property
    def biases(self):
        """Per-layer bias vectors (n_out,): writable views of the parameter buffer; see
        weights for assignment."""
        return self._biases

    @biases.setter
    def biases(self, values):
        self._assign_layers(self._biases, values, "biases")

    @_serialized
    def _assign_layers(self, views, values, name):
        # every shape checked before anything is copied: all layers or none
        try:
            values = [np.asarray(v) for v in values]
        except TypeError:
            raise TypeError(f"{name} must be assigned a list of arrays, one per layer; got "
                            f"{type(values).__name__}") from None
        if len(values) != len(views):
            raise ValueError(f"{name} must be assigned {len(views)} arrays, one per layer; "
                             f"got {len(values)}")
        for l, (view, value) in enumerate(zip(views, values)):
            if value.shape != view.shape:
                raise ValueError(f"{name}[{l}] must have shape {view.shape}; got {value.shape}")
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{name}[{l}] must hold real numbers; got dtype {value.dtype}")
        for view, value in zip(views, values):
            view[...] = value

    @property
    def n_threads(self):
        """The threads the next call will use (resolved now, so that OMP_NUM_THREADS and
        threadpoolctl's OpenMP limits apply when n_threads=None)."""
        return effective_n_threads(self._n_threads, _OPENMP, omp_max_threads())

    def _views(self, buffer):
        """Per-layer (weights, biases) views into a buffer laid out like the parameters."""
        weights, biases, off = ParameterList(), ParameterList(), 0
        for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            weights.append(buffer[off:off + n_in * n_out].reshape(n_in, n_out))
            off += n_in * n_out
            biases.append(buffer[off:off + n_out])
            off += n_out
        return weights, biases

    def __repr__(self):
        return (f"fastbp.Network({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, dtype={self.dtype.name}, n_threads={self.n_threads})")

    # -- argument handling -------------------------------------------------------------

    def _check_X(self, X):
        return check_X(X, self.layer_sizes[0], self.dtype)

    def _check_Xy(self, X, y):
        X = self._check_X(X)
        labels, Y = check_targets(y, self.loss_name, self.layer_sizes[-1], X.shape[0], self.dtype)
        if labels is None:
            labels = np.empty(0, dtype=np.int64)
        else:
            Y = np.empty((0, self.layer_sizes[-1]), dtype=self.dtype)
        return X, labels, Y

    def _check_plan_size(self, capacity, n_threads):
        # An upper bound of make_plan's layout (src/_plan.pxd), in Python ints, so that
        # sizes too large for the machine's index type are an error before C sees them:
        # per batch row two slots per layer, two dZ slots, input and targets; GEMM scratch
        # of (M + 8) R + 32 R per thread for the largest product of any layer; and for up
        # to MAX_PARTS row parts, a gradient buffer and a scratch slot each.
        widest = max(self.layer_sizes)
        scratch = (capacity + widest + 8) * widest + 32 * widest * max(capacity, widest)
        bound = (capacity * (2 * sum(self.layer_sizes) + 3 * widest)
                 + scratch * (n_threads + 1) + 16 * (scratch + self._params.size))
        check_buffer_size(bound, self.dtype, "the workspace of this batch size")

    def _work(self, capacity, n_threads, training):
        """A workspace for _network.forward (training False) or loss_gradients_step."""
        key = (capacity, n_threads, training)
        cached = self._work_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        self._check_plan_size(capacity, n_threads)
        _, size = _network.work_size(self._sizes, self._acts, capacity, False, training,
                                     n_threads)
        work = np.empty(size, dtype=self.dtype)
        # Kept for the next call with the same sizes (every epoch of a fit, every step of
        # a loop of train_step): allocating it anew cost page faults each time. Only the
        # most recent one is kept, and only a small one (a large one is worth its
        # allocation, and would hold memory after the call); the network's lock keeps two
        # calls from sharing it.
        self._work_cache = (key, work) if work.nbytes <= _WORK_CACHE_BYTES else None
        return work

    def _trainer(self, capacity, n_threads, state):
        """A _network.Trainer for this capacity, thread count and optimizer state, kept for
        the next call with the same ones (every epoch of a fit): a new one's workspace
        would be paged in again by its first epoch. Only a small one is kept, as the
        workspace of _work is."""
        key = (capacity, n_threads, tuple(id(b) for b in state))
        cached = self._trainer_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        self._check_plan_size(capacity, n_threads)
        trainer = _network.Trainer(self._params, self._grads, state, self._sizes, self._acts,
                                   self._loss_code, capacity, n_threads)
        small = trainer.work_bytes <= _WORK_CACHE_BYTES
        self._trainer_cache = (key, trainer) if small else None
        return trainer

    def _small_forward(self):
        """The _network.Forward for batches of up to the rows that run on one thread
        whatever n_threads says (_network.serial_rows: resolving the thread count costs
        more than such a batch's arithmetic), made once and kept, its workspace held to
        the cached size by taking fewer rows. The caller holds the lock, which keeps two
        calls from sharing the workspace."""
        fwd = self._forward_small
        if fwd is None:
            capacity = min(_network.serial_rows(self._sizes), _FORWARD_CHUNK_ROWS)
            while capacity > 1 and self._forward_work_bytes(capacity, 1) > _WORK_CACHE_BYTES:
                capacity //= 2
            self._check_plan_size(capacity, 1)
            fwd = _network.Forward(self._params, self._sizes, self._acts, capacity, 1,
                                   self._exp_output)
            self._forward_small = fwd
        return fwd

    def _large_forward(self, capacity, n_threads):
        """A _network.Forward for slices of up to `capacity` rows on n_threads, kept for
        the next call with the same ones when its workspace is small (as _work's)."""
        fwd = self._forward_large
        if fwd is not None and fwd.capacity == capacity and fwd.n_threads == n_threads:
            return fwd
        self._check_plan_size(capacity, n_threads)
        fwd = _network.Forward(self._params, self._sizes, self._acts, capacity, n_threads,
                               self._exp_output)
        self._forward_large = fwd if fwd.work_bytes <= _WORK_CACHE_BYTES else None
        return fwd

    def _forward_work_bytes(self, capacity, n_threads):
        return _network.work_size(self._sizes, self._acts, capacity, False, False,
                                  n_threads)[1] * self.dtype.itemsize

    def _rollback_buffers(self, n_state):
        """(params copy, state copies): buffers an epoch saves its start into, kept
        between epochs for the same reason as the Trainer."""
        cached = self._rollback_cache
        if cached is None or len(cached[1]) != n_state:
            cached = (np.empty_like(self._params),
                      tuple(np.empty_like(self._params) for _ in range(n_state)))
            self._rollback_cache = cached if self._params.nbytes <= _WORK_CACHE_BYTES else None
        return cached

    def _run(self, X, labels, Y, want_grad, lr, weights=None):
        """(loss, bad) of one call of the compiled step; see _network.loss_gradients_step."""
        nt = self.n_threads
        work = self._work(X.shape[0], nt, True)
        if weights is None:
            weights = np.empty(0, dtype=self.dtype)
        if isinstance(X, CsrRows):
            return _network.loss_gradients_step_sparse(
                self._params, self._grads, work, self._sizes, self._acts, self._loss_code,
                X, labels, Y, weights, want_grad, lr, nt)
        return _network.loss_gradients_step(
            self._params, self._grads, work, self._sizes, self._acts, self._loss_code,
            X, labels, Y, weights, want_grad, lr, nt)

    def _forward_sparse(self, X):
        """forward for a CsrRows X: its first layer's product sparse, in slices of
        _FORWARD_CHUNK_ROWS rows as forward takes a dense X."""
        B = X.shape[0]
        out = np.empty((B, self.layer_sizes[-1]), dtype=self.dtype)
        nt = self.n_threads
        work = self._work(min(B, _FORWARD_CHUNK_ROWS), nt, False)
        for start in range(0, B, _FORWARD_CHUNK_ROWS):
            stop = min(start + _FORWARD_CHUNK_ROWS, B)
            _network.forward_sparse(self._params, work, self._sizes, self._acts, X, start,
                                    stop, out[start:stop], nt, self._exp_output)
        return out

    # -- the pieces fit's loop (fastbp/_training.py) works with --------------------------

    def _prepare(self, X, y, sample_weight=None, class_weight=None, names=("X", "y")):
        X = check_X(X, self.layer_sizes[0], self.dtype, name=names[0])
        labels, Y = check_targets(y, self.loss_name, self.layer_sizes[-1], X.shape[0],
                                  self.dtype, name=names[1])
        weights = _training.check_sample_weight(sample_weight, class_weight, labels,
                                                self.loss_name, self.layer_sizes[-1],
                                                X.shape[0], self.dtype)
        return Data(X, labels, Y, weights)

    def _bind_optimizer(self, opt):
        """(lr checked for this dtype, opt's state buffers for this network): raises before
        anything of the network changes when opt cannot train it."""
        lr = check_lr(opt.lr, self.dtype)
        return lr, opt._bind((tuple(self.layer_sizes), self.dtype.str),
                             lambda: np.zeros_like(self._params))

    def _copy_parameters(self):
        return self._params.copy()

    def _set_parameters(self, copy):
        self._params[...] = copy

    def _data_loss(self, data):
        """Mean loss over `data` (weighted when it has weights; no penalty), computed in
        slices of forward's size."""
        n = data.X.shape[0]
        total = norm = 0.0
        for start in range(0, n, _FORWARD_CHUNK_ROWS):
            sl = slice(start, min(start + _FORWARD_CHUNK_ROWS, n))
            part = Data(data.X[sl], None if data.labels is None else data.labels[sl],
                        None if data.Y is None else data.Y[sl],
                        None if data.weights is None else data.weights[sl])
            mass = (sl.stop - sl.start if part.weights is None
                    else float(part.weights.sum(dtype=np.float64)))
            value, _ = self._run(*self._kernel_targets(part), False, 0.0, part.weights)
            total += value * mass
            norm += mass
        return total / norm if norm > 0 else 0.0

    def _full_batch(self, data, l2, l2_per_sample):
        """The objective of a full-batch optimizer over `data` (see _lbfgs.FullBatch)."""
        from ._lbfgs import FullBatch
        return FullBatch(self, data, l2, l2_per_sample)

    def _kernel_targets(self, data):
        labels = data.labels if data.labels is not None else np.empty(0, dtype=np.int64)
        Y = data.Y if data.Y is not None else np.empty((0, self.layer_sizes[-1]), dtype=self.dtype)
        return data.X, labels, Y

    def _epoch(self, data, order, batch_size, opt, loss_scale=1.0, progress=None):
        """One epoch in compiled code; see fastbp/_training.py. A step that makes the loss
        or a parameter non-finite raises ValueError with the parameters (and optimizer
        state) of the last finite step restored."""
        # a copy: the compiled loop indexes by it, and the caller may change its own array
        order = np.array(order, dtype=np.int64, copy=True)
        run = self._epoch_runner(data, order.shape[0], batch_size, opt, loss_scale, progress)
        return run(order)

    def _epoch_runner(self, data, n, batch_size, opt, loss_scale=1.0, progress=None,
                      step_non_finite=False):
        """An EpochRunner for n rows of `data` (order of n rows, int64, C-contiguous),
        with everything that stays the same from one epoch to the next prepared once, for
        loops of many short epochs (fastbp.sklearn's fit). opt.lr may change between
        calls (learning-rate schedules). step_non_finite: epochs go on through a
        divergence as scikit-learn's do (see EpochRunner)."""
        return EpochRunner(self, data, n, batch_size, opt, loss_scale, progress,
                           step_non_finite)

    # -- public API --------------------------------------------------------------------

    def forward(self, X):
        """The network's output for a batch.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch: finite real numbers, B >= 1.

        Returns
        -------
        ndarray, shape (B, n_L)
            A_L in the network's dtype: softmax probabilities (cross_entropy), sigmoid
            probabilities (binary_cross_entropy), the output activation (mse) or the means
            exp(z) (poisson).
        """
        with self._lock:
            out = self._forward_if_plain(X)
            if out is None:
                X = self._check_X(X)
                if isinstance(X, CsrRows):
                    return self._forward_sparse(X)
                out = self._forward_checked(X)
            return out

    def _forward_if_plain(self, X):
        """forward(X) when X is a plain batch, one that _check_X would return as it is (an
        ndarray of this dtype, C-contiguous, aligned, native, of this width, finite, with
        rows); None for any other X, without raising. The caller holds the lock.
        fastbp.sklearn's predictions use it to skip scikit-learn's checks for such an X."""
        small = self._forward_small or self._small_forward()
        # a small batch: checked and computed in one compiled call
        out = small.plain(X)
        if out is None and (type(X) is np.ndarray and X.ndim == 2
                            and X.shape[0] > small.capacity
                            and X.shape[1] == self.layer_sizes[0] and X.dtype == self.dtype
                            and X.flags.c_contiguous and X.flags.aligned
                            and X.dtype.isnative and _all_finite(X)):
            out = self._forward_checked(X)
        return out

    def _forward_checked(self, X):
        """forward for an X that _check_X returned; the caller holds the lock."""
        B = X.shape[0]
        out = np.empty((B, self.layer_sizes[-1]), dtype=self.dtype)
        small = self._forward_small or self._small_forward()
        if B <= small.capacity:
            small.run(X, out)
            return out
        fwd = self._large_forward(min(B, _FORWARD_CHUNK_ROWS), self.n_threads)
        for start in range(0, B, fwd.capacity):
            stop = min(start + fwd.capacity, B)
            fwd.run(X[start:stop], out[start:stop])
        return out

    @_serialized
    def loss(self, X, y, sample_weight=None):
        """The loss on a batch, without changing the network.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch: finite real numbers, B >= 1.
        y : array_like, shape (B,) or (B, n_L)
            The targets; what each loss takes is in the Notes of `Network`.
        sample_weight : array_like, shape (B,), optional
            Non-negative finite weights, not all zero.

        Returns
        -------
        float
            The mean loss over the rows (weighted by `sample_weight` when given); no L2
            penalty.
        """
        if sample_weight is None:
            X, labels, Y = self._check_Xy(X, y)
            return float(self._run(X, labels, Y, False, 0.0)[0])
        return self._data_loss(self._prepare(X, y, sample_weight))

    @_changes_state
    def gradients(self, X, y):
        """The gradients of the batch's mean loss, without changing the parameters.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch: finite real numbers, B >= 1.
        y : array_like, shape (B,) or (B, n_L)
            The targets; what each loss takes is in the Notes of `Network`.

        Returns
        -------
        dW : list of ndarray
            Per layer, the gradient with respect to ``weights[l]`` (a new array of its
            shape).
        db : list of ndarray
            Per layer, the gradient with respect to ``biases[l]``.
        """
        X, labels, Y = self._check_Xy(X, y)
        self._run(X, labels, Y, True, 0.0)  # the gradients land in self._grads
        dW, db = self._views(self._grads)
        return [g.copy() for g in dW], [g.copy() for g in db]

    @_changes_state
    def train_step(self, X, y, lr=0.1):
        """One plain SGD step on the batch's mean loss, in place.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch: finite real numbers, B >= 1.
        y : array_like, shape (B,) or (B, n_L)
            The targets; what each loss takes is in the Notes of `Network`.
        lr : float, default=0.1
            The learning rate: positive and finite in the network's dtype.

        Returns
        -------
        float
            The mean loss before the step.

        Raises
        ------
        DivergedError
            The loss is not finite, or the step would make a parameter non-finite; the
            parameters are left unchanged.
        """
        X, labels, Y = self._check_Xy(X, y)
        lr = check_lr(lr, self.dtype)
        before = self._params.copy()
        value, bad = self._run(X, labels, Y, True, lr)
        if bad:
            self._params[...] = before
            raise_diverged(self, "this step", lr, parameters=True)
        if not np.isfinite(value):
            raise_diverged(self, "this step", lr)
        return float(value)

    @_training_loop
    def train_epoch(self, X, y, *, optimizer, batch_size=32, order=None, shuffle=True,
                    sample_weight=None, class_weight=None, loss_scale=1.0):
        """One pass over (X, y) in minibatches, with a given optimizer.

        The epoch runs in compiled code; it is the building block of `fit` and of
        fastbp.sklearn.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (n, n_0)
            The training rows: finite real numbers, n >= 1.
        y : array_like, shape (n,) or (n, n_L)
            The targets; what each loss takes is in the Notes of `Network`.
        optimizer : fastbp.optim.Optimizer
            An ``optim.SGD`` or ``optim.Adam``; its state carries over between calls.
            ``optim.LBFGS`` is full-batch: only `fit` takes it.
        batch_size : int, default=32
            Rows per step; the last batch of the epoch may be smaller.
        order : array_like of int, shape (m,), optional
            The row indices to visit, in order (each in ``[0, n)``). Default: a
            permutation from the network's generator if `shuffle`, else ``0..n-1``.
        shuffle : bool, default=True
            Whether the default order is shuffled.
        sample_weight : array_like, shape (n,), optional
            Non-negative finite weights, not all zero: each batch's loss is a weighted
            mean.
        class_weight : dict or "balanced", optional
            Weights per class (cross_entropy with integer labels only): ``{class:
            weight}`` (missing classes weigh 1) or "balanced" (``n / (n_classes *
            count(class))``); multiplied into `sample_weight`.
        loss_scale : float, default=1.0
            A positive factor on the data loss and its gradient (not on the penalty).

        Returns
        -------
        EpochStats
            A named tuple: loss (mean over rows of each batch's scaled loss plus
            penalty), data_loss (without penalty and scale), penalty, n_samples, seconds.

        Raises
        ------
        DivergedError
            A step's loss or a parameter is not finite; the network holds the parameters
            (and the optimizer its state) of the last finite step.
        """
        from . import optim
        if not isinstance(optimizer, optim.Optimizer):
            raise TypeError(f"optimizer must be a fastbp.optim.Optimizer (SGD or Adam); got {optimizer!r}")
        data = self._prepare(X, y, sample_weight, class_weight)
        batch_size = check_positive_int(batch_size, "batch_size")
        shuffle = check_bool(shuffle, "shuffle")
        loss_scale = _training.check_loss_scale(loss_scale)
        n = data.X.shape[0]
        if order is not None:
            order = _training.epoch_order(self, n, order, shuffle)  # checked, nothing drawn
        self._bind_optimizer(optimizer)  # after every check, before the generator draws
        if order is None:
            order = _training.epoch_order(self, n, None, shuffle)
        return self._epoch(data, order, batch_size, optimizer, loss_scale)

    @_training_loop
    def fit(self, X, y, epochs=5, batch_size=32, lr=None, shuffle=True, *, optimizer="sgd",
            momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, epsilon=1e-8, l2=0.0,
            lr_schedule="constant", power_t=0.5, validation_data=None, validation_split=0.0,
            early_stopping=False, patience=10, min_delta=0.0, sample_weight=None,
            class_weight=None, callbacks=None, verbose=0):
        """Train the network on (X, y), starting from its current parameters.

        Each epoch is one pass over the rows in minibatches (the last may be smaller),
        run in compiled code without the GIL.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (n, n_0)
            The training rows: finite real numbers, n >= 1.
        y : array_like, shape (n,) or (n, n_L)
            The targets; what each loss takes is in the Notes of `Network`.
        epochs : int, default=5
            Passes over the data (for "lbfgs": the most iterations).
        batch_size : int, default=32
            Rows per step.
        lr : float, optional
            The learning rate; default 0.1 for "sgd", 0.001 for "adam". Not for "lbfgs".
        shuffle : bool, default=True
            Visit the rows in a new order from the network's generator each epoch.
        optimizer : {"sgd", "adam", "lbfgs"} or optim.Optimizer or optim.LBFGS, default="sgd"
            "sgd" (with `momentum`, `nesterov`), "adam" (with `beta1`, `beta2`,
            `epsilon`), "lbfgs" (scipy's full-batch L-BFGS-B; needs scipy), or an
            instance, used with its own hyperparameters and state (the arguments above
            then stay at their defaults).
        momentum : float, default=0.0
            SGD's momentum, in [0, 1].
        nesterov : bool, default=False
            Nesterov momentum for SGD.
        beta1, beta2, epsilon : float, default=0.9, 0.999, 1e-8
            Adam's moment decay rates and denominator term.
        l2 : float, default=0.0
            L2 penalty ``0.5 * l2 * sum(W**2)`` on the weights (not the biases).
        lr_schedule : {"constant", "invscaling", "adaptive"}, default="constant"
            scikit-learn's schedules: "invscaling" sets ``lr / (samples seen + 1) **
            power_t`` after each epoch; "adaptive" divides lr by 5 each time the monitored
            value has not improved by `min_delta` for `patience` epochs, and stops once lr
            is at most 1e-6. The monitored value is the validation loss when there is
            validation data, else the training loss.
        power_t : float, default=0.5
            The exponent of "invscaling".
        validation_data : tuple, optional
            ``(X_val, y_val)`` or ``(X_val, y_val, sample_weight_val)``, scored after
            every epoch.
        validation_split : float, default=0.0
            Instead of `validation_data`: the fraction in [0, 1) of the rows, taken from
            the end before any shuffling, held out for validation.
        early_stopping : bool, default=False
            Stop once the monitored value has not improved by `min_delta` for `patience`
            epochs, and restore the parameters of the best epoch.
        patience : int, default=10
            Epochs without improvement before "adaptive" or `early_stopping` acts.
        min_delta : float, default=0.0
            The least decrease that counts as an improvement.
        sample_weight : array_like, shape (n,), optional
            Non-negative finite weights, not all zero: the loss is a weighted mean.
        class_weight : dict or "balanced", optional
            As in `train_epoch`.
        callbacks : callable or list of callable, optional
            Each called as ``cb(net, epoch, logs)`` after every epoch, `logs` a dict of
            that epoch's epoch, loss, val_loss, val_score, lr, samples_per_s and seconds;
            a callback returning True stops the fit.
        verbose : int, default=0
            1 prints progress: a live bar on a terminal, a line per epoch otherwise.

        Returns
        -------
        Network
            The network itself, trained; ``self.history``, ``self.loss_curve_`` and
            ``self.optimizer_`` record the run.

        Raises
        ------
        DivergedError
            A batch's loss or a parameter became non-finite; the network keeps the
            parameters of the last finite step. A ValueError.
        ValueError
            Bad input, or validation data, early stopping, a schedule other than
            "constant" or callbacks with "lbfgs" (its epochs are iterations over all rows).

        Warns
        -----
        ConvergenceWarning
            "lbfgs" stopped at its iteration or evaluation limit before converging.

        Notes
        -----
        Ctrl-C (KeyboardInterrupt) stops a minibatch fit at the next batch boundary
        (signals are looked for every 20 ms), with the parameters of the last completed
        step.
        """
        return _training.fit(
            self, X, y, epochs=epochs, batch_size=batch_size, lr=lr, shuffle=shuffle,
            optimizer=optimizer, momentum=momentum, nesterov=nesterov, beta1=beta1,
            beta2=beta2, epsilon=epsilon, l2=l2, lr_schedule=lr_schedule, power_t=power_t,
            validation_data=validation_data, validation_split=validation_split,
            early_stopping=early_stopping, patience=patience, min_delta=min_delta,
            sample_weight=sample_weight, class_weight=class_weight, callbacks=callbacks,
            verbose=verbose)

    def predict(self, X):
        """Predict labels or values for a batch.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch: finite real numbers, B >= 1.

        Returns
        -------
        ndarray
            Class labels, int64 of shape (B,), the argmax of each row (cross_entropy); an
            int64 0/1 matrix (B, n_L), outputs above 0.5 (binary_cross_entropy); or the
            outputs of `forward` (mse; poisson: the means exp(z)).
        """
        out = self.forward(X)
        if self.loss_name == "cross_entropy":
            return out.argmax(axis=1)
        if self.loss_name == "binary_cross_entropy":
            return (out > 0.5).astype(np.int64)
        return out

    @_serialized
    def save(self, path):
        """Write the network's configuration and parameters to a file.

        Parameters
        ----------
        path : str, bytes or os.PathLike
            The file: an .npz without pickles, written to a temporary file then renamed
            onto `path` (onto a symlink's target), so a reader sees the old file or the
            new one, never half of one.

        See Also
        --------
        load : Read it back.
        """
        _io.save_network(self, path)


def _raise_bad_input(steps):
    raise ValueError(
        f"batch {steps + 1} of this epoch holds a row index or label out of range: the "
        "order or the labels changed after they were checked (another thread?); the "
        "network holds the parameters of the steps before it")


class EpochRunner:
    """Epochs of one network over one data set with one optimizer, in compiled code: the
    Trainer (src/_network.pyx) holds the plan, the buffers and the optimizer's settings
    for all of them; this adds what happens when training diverges. Call it with an order
    of the rows (int64, C-contiguous, n long) for one epoch, or use run_epochs for runs
    of epochs (fastbp.sklearn). The caller holds the network's lock.

    With step_non_finite, a non-finite loss or parameter does not stop an epoch: every
    step is taken, NaN and infinities flowing on as in scikit-learn's fit (whose loss
    curve, validation scores and early-stopping restore fastbp.sklearn reproduces), and
    nothing raises DivergedError."""

    def __init__(self, net, data, n, batch_size, opt, loss_scale=1.0, progress=None,
                 step_non_finite=False):
        self.net, self.opt, self.n, self.progress = net, opt, n, progress
        X, labels, Y = net._kernel_targets(data)
        capacity = min(batch_size, n) if n > 0 else 1
        lr, state = net._bind_optimizer(opt)
        self.state = state
        self.trainer = net._trainer(capacity, net.n_threads, tuple(state))
        self.trainer.bind(X, data.labels, data.Y if data.labels is None else None,
                          data.weights)
        kind, momentum, nesterov, beta1, beta2, eps = opt._hyper()
        self._hyper = (kind, momentum, nesterov, beta1, beta2, eps)
        self.trainer.set_objective(loss_scale, opt.l2, opt.l2_per_sample, step_non_finite)
        self._checked_lr = (opt.lr, lr)
        self.loss_scale = loss_scale
        # what a non-finite parameter after a step rolls back to: the epoch is replayed
        # from its start up to the last good step (the kernels are deterministic)
        self.saved_params, self.saved_state = net._rollback_buffers(len(state))
        self.steps_done = np.zeros(1, dtype=np.int64)   # kept current by the compiled loop

    def _set_lr(self):
        opt = self.opt
        if opt.lr != self._checked_lr[0]:
            self._checked_lr = (opt.lr, check_lr(opt.lr, self.net.dtype))
        lr = self._checked_lr[1]
        kind, momentum, nesterov, beta1, beta2, eps = self._hyper
        self.trainer.set_optimizer(kind, lr, momentum, nesterov, beta1, beta2, eps)
        return lr

    def _save(self):
        np.copyto(self.saved_params, self.net._params)
        for b, saved in zip(self.state, self.saved_state):
            np.copyto(saved, b)

    def _restore(self, t_saved):
        self.net._params[...] = self.saved_params
        for b, saved in zip(self.state, self.saved_state):
            b[...] = saved
        self.opt.t = t_saved

    def _replay_and_raise(self, order, lr, t_saved, done):
        # a step made a parameter non-finite: back to the epoch's start, then its first
        # `done` rows again (the kernels are deterministic), then the error
        self._restore(t_saved)
        steps = 0
        if done:
            steps = self.trainer.epoch(order[:done], t_saved, self.steps_done)[3]
        self.opt.t = t_saved + steps
        raise_diverged(self.net, f"batch {steps + 1} of this epoch", lr, parameters=True)

    def __call__(self, order):
        """One epoch over the rows in `order`; returns an EpochStats. A step that makes
        the loss or a parameter non-finite raises DivergedError, the network holding the
        parameters (and optimizer state) of the last finite step."""
        lr = self._set_lr()
        t_saved = self.opt.t
        self._save()
        t0 = time.perf_counter()
        try:
            total, total_penalty, done, steps, status = self.trainer.epoch(
                order, t_saved, self.steps_done, self.progress)
            seconds = time.perf_counter() - t0
            if status == _network.EpochStatus.EPOCH_PARAMS_NOT_FINITE:
                self._replay_and_raise(order, lr, t_saved, done)
            self.opt.t = t_saved + steps
        except BaseException:
            # Ctrl-C (or an exception from a callback) between two steps: the parameters
            # and the optimizer's buffers hold every completed step, and so must its step
            # count (Adam's bias correction depends on it)
            self.opt.t = t_saved + int(self.steps_done[0])
            raise
        if status == _network.EpochStatus.EPOCH_BAD_INPUT:
            _raise_bad_input(steps)
        if status == _network.EpochStatus.EPOCH_LOSS_NOT_FINITE:
            raise_diverged(self.net, f"batch {steps + 1} of this epoch", lr)
        return EpochStats((total + total_penalty) / done, total / self.loss_scale / done,
                          total_penalty / done, done, seconds)

    def steady_epochs(self):
        """How many of the next epochs run_epochs may run in one call."""
        return sys.maxsize if self.n > 0 else 0

    def run_epochs(self, order, random_state, max_epochs, rule, on_epochs):
        """Up to max_epochs (at most _RUN_MAX_EPOCHS) epochs by Trainer.run_epochs:
        `order` (int64, C-contiguous, n long) shuffled in place before each with
        random_state (a RandomState whose shuffle shuffle_like_random_state draws
        exactly; None: not shuffled), scikit-learn's stopping rule applied to `rule` (a
        _network.StopRule). Calls on_epochs(losses), the completed epochs' losses as
        scikit-learn reports them, before it returns or raises: a diverged epoch raises
        as a call does, a KeyboardInterrupt propagates with the steps taken counted in
        opt.t."""
        opt = self.opt
        lr = self._set_lr()
        t_start = opt.t
        max_epochs = min(max_epochs, _RUN_MAX_EPOCHS)
        record = np.zeros((max_epochs, _network.RecordColumn.REC_COLUMNS))
        if random_state is None:
            capsule = lock = None
        else:
            capsule = random_state._bit_generator.capsule
            lock = random_state._bit_generator.lock
        saved = (self.saved_params,) + self.saved_state + (None,) * (2 - len(self.saved_state))
        try:
            ran = self.trainer.run_epochs(order, t_start, self.steps_done, saved, capsule,
                                          lock, max_epochs, rule, record)
        except BaseException:
            opt.t = t_start + rule.steps + int(self.steps_done[0])
            on_epochs(record[:rule.epochs, _network.RecordColumn.REC_REPORTED_LOSS].tolist())
            raise
        opt.t = t_start + rule.steps
        on_epochs(record[:rule.epochs, _network.RecordColumn.REC_REPORTED_LOSS].tolist())
        last = record[ran - 1]
        status = int(last[_network.RecordColumn.REC_STATUS])
        if status != _network.EpochStatus.EPOCH_DONE:
            # the failed epoch is the last: order holds its rows, the saved buffers its
            # start
            done, steps = int(last[_network.RecordColumn.REC_ROWS]), int(last[_network.RecordColumn.REC_STEPS])
            if status == _network.EpochStatus.EPOCH_PARAMS_NOT_FINITE:
                try:
                    self._replay_and_raise(order, lr, opt.t, done)
                except DivergedError:
                    raise
                except BaseException:
                    opt.t = t_start + rule.steps + int(self.steps_done[0])
                    raise
            opt.t += steps      # the steps before the batch that failed
            if status == _network.EpochStatus.EPOCH_BAD_INPUT:
                _raise_bad_input(steps)
            raise_diverged(self.net, f"batch {steps + 1} of this epoch", lr)


def load(path):
    """Read a network written by `Network.save` (or ``fastbp.reference.Network.save``).

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file.

    Returns
    -------
    Network
        A new network with the file's configuration and parameters.
    """
    return _io.load_network(path, Network)
