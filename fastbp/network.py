"""fastbp.Network: the Python face of the compiled network.

This layer validates and allocates; src/_network.pyx computes. Parameters live in one
contiguous buffer (self._params) with per-layer views (weights, biases); gradients in a
mirror buffer (self._grads). fit() allocates its workspace once and hands each whole epoch
to compiled code that runs without the GIL.
"""

import functools
import threading

import numpy as np

from . import _io, _network
from ._common import ACTIVATIONS, LOSSES, fill_initial_parameters, raise_diverged
from ._validation import (
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
)
from ._runtime import build_info, omp_max_threads

_OPENMP = build_info()["openmp"]

_ACT_SOFTMAX = 6  # src/_activations.pxd ACT_SOFTMAX
_FORWARD_CHUNK_ROWS = 8192  # forward() works through large inputs in slices of this many rows


def _serialized(method):
    """Run the method holding the network's lock: two threads using one network take turns
    instead of interleaving steps on the same parameters and workspace. (The compiled
    loops release the GIL, so without this they really would interleave.)"""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


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
    """A multi-layer perceptron trained by minibatch SGD with compiled, multi-threaded
    kernels.

    Parameters
    ----------
    layer_sizes : sequence of int
        [n_0, n_1, ..., n_L]: inputs, hidden widths, outputs.
    activation : str or list of str
        Hidden activation(s): "identity", "relu", "leaky_relu" (slope 0.01), "sigmoid"
        (alias "logistic"), "tanh", "gelu" (exact, erf). One name, or one per hidden layer.
    loss : {"cross_entropy", "binary_cross_entropy", "mse"}
        cross_entropy implies a softmax output, binary_cross_entropy a sigmoid output.
    output_activation : str or None
        Only for loss="mse": any hidden activation name; default "identity".
    dtype : np.float32 (default) or np.float64
    seed : int or None
        Seeds initialization and fit's shuffling (same seed, same run as
        fastbp.reference.Network).
    n_threads : int or None
        None: OMP_NUM_THREADS if set, else OpenMP's maximum (threadpoolctl limits apply)
        capped at the usable cores, resolved at each call. A positive int caps the threads,
        -1 means all cores, -2 all but one. Results are bit-identical for any value.
    """

    def __init__(self, layer_sizes, activation="relu", loss="cross_entropy",
                 output_activation=None, dtype=np.float32, seed=None, n_threads=None):
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.activation = check_activations(activation, len(self.layer_sizes) - 2)
        self.loss_name, self.output_activation = check_loss(loss, output_activation)
        self.dtype = check_dtype(dtype)
        self.seed = check_seed(seed)
        self._n_threads = check_n_threads(n_threads)
        self.loss_curve_ = []
        self._lock = threading.RLock()

        out_code = _ACT_SOFTMAX if self.output_activation == "softmax" else ACTIVATIONS[self.output_activation]
        self._sizes = np.array(self.layer_sizes, dtype=np.intp)
        self._acts = np.array([ACTIVATIONS[a] for a in self.activation] + [out_code], dtype=np.intc)
        self._loss_code = LOSSES[self.loss_name][0]
        n_params = check_buffer_size(
            sum(a * b + b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:])),
            self.dtype, "the parameters of layer_sizes")
        self._params = np.zeros(n_params, dtype=self.dtype)
        self._grads = np.zeros(n_params, dtype=self.dtype)
        self.weights, self.biases = self._views(self._params)

        self._rng = np.random.default_rng(self.seed)
        fill_initial_parameters(self._rng, self.weights)  # biases start at zero

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

    def _work(self, capacity, n_threads, input_slot=False):
        # An upper bound of make_plan's layout (src/_network.pyx), in Python ints, so that
        # sizes too large for the machine's index type are an error before C sees them:
        # per batch row two slots per layer, two dZ slots, input and targets; GEMM scratch
        # of (M + 8) R + 32 R per thread for the largest product of any layer.
        widest = max(self.layer_sizes)
        bound = (capacity * (2 * sum(self.layer_sizes) + 3 * widest)
                 + (capacity + widest + 8) * widest + 32 * widest * max(capacity, widest) * n_threads)
        check_buffer_size(bound, self.dtype, "the workspace of this batch size")
        _, size = _network.sizes_of(self._sizes, self._acts, capacity, input_slot, n_threads)
        return np.empty(size, dtype=self.dtype)

    def _run(self, X, labels, Y, want_grad, lr):
        nt = self.n_threads
        work = self._work(X.shape[0], nt)
        return _network.loss_gradients_step(
            self._params, self._grads, work, self._sizes, self._acts, self._loss_code,
            X, labels, Y, want_grad, lr, nt)

    # -- public API --------------------------------------------------------------------

    @_serialized
    def forward(self, X):
        """A_L for a batch X of shape (B, n_0): softmax probabilities (cross_entropy),
        sigmoid probabilities (binary_cross_entropy), or the output activation (mse)."""
        X = self._check_X(X)
        B = X.shape[0]
        out = np.empty((B, self.layer_sizes[-1]), dtype=self.dtype)
        nt = self.n_threads
        work = self._work(min(B, _FORWARD_CHUNK_ROWS), nt)
        for start in range(0, B, _FORWARD_CHUNK_ROWS):
            stop = min(start + _FORWARD_CHUNK_ROWS, B)
            _network.forward(self._params, work, self._sizes, self._acts,
                             X[start:stop], out[start:stop], nt)
        return out

    @_serialized
    def loss(self, X, y):
        """Mean loss over the batch (float)."""
        X, labels, Y = self._check_Xy(X, y)
        return float(self._run(X, labels, Y, False, 0.0))

    @_serialized
    def gradients(self, X, y):
        """(dW, db): lists of new arrays shaped like weights and biases."""
        X, labels, Y = self._check_Xy(X, y)
        self._run(X, labels, Y, True, 0.0)
        dW, db = self._views(self._grads)
        return [g.copy() for g in dW], [g.copy() for g in db]

    @_serialized
    def train_step(self, X, y, lr=0.1):
        """One SGD step on the batch, in place; returns the loss before the step. A
        non-finite loss raises ValueError and leaves the parameters unchanged."""
        X, labels, Y = self._check_Xy(X, y)
        lr = check_lr(lr, self.dtype)
        value = float(self._run(X, labels, Y, True, lr))
        if not np.isfinite(value):
            raise_diverged(self, "this step", lr)
        return value

    @_serialized
    def fit(self, X, y, epochs=5, batch_size=32, lr=0.1, shuffle=True):
        """Minibatch SGD for `epochs` passes over (X, y); the last batch of an epoch may be
        smaller. Each epoch runs in compiled code without the GIL. Returns self; the mean
        batch loss of each epoch is appended to self.loss_curve_.

        When a batch's loss is not finite (training diverged), fit stops before that step
        and raises ValueError; the network keeps the parameters of the last step taken.
        Ctrl-C (KeyboardInterrupt) stops it at the next batch boundary (signals are looked
        for every 20 ms), with the parameters of the last completed step."""
        X, labels, Y = self._check_Xy(X, y)
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        lr = check_lr(lr, self.dtype)
        shuffle = check_bool(shuffle, "shuffle")
        n = X.shape[0]
        capacity = min(batch_size, n)
        nt = self.n_threads
        work = self._work(capacity, nt, input_slot=True)
        label_buf = np.empty(capacity, dtype=np.int64)
        for epoch in range(epochs):
            order = self._rng.permutation(n) if shuffle else np.arange(n)
            total, n_done, diverged = _network.train_epoch(
                self._params, self._grads, work, label_buf, self._sizes, self._acts,
                self._loss_code, X, labels, Y, order.astype(np.int64, copy=False),
                capacity, lr, nt)
            if diverged:
                raise_diverged(self, f"epoch {epoch + 1}, batch {n_done + 1}", lr)
            self.loss_curve_.append(total / n_done)
        return self

    def predict(self, X):
        """Class labels (cross_entropy), a 0/1 matrix (binary_cross_entropy), or the
        outputs (mse)."""
        out = self.forward(X)
        if self.loss_name == "cross_entropy":
            return out.argmax(axis=1)
        if self.loss_name == "binary_cross_entropy":
            return (out > 0.5).astype(np.int64)
        return out

    @_serialized
    def save(self, path):
        """Write the network to `path` (.npz, no pickle; atomic)."""
        _io.save_network(self, path)


def load(path):
    """Read a network written by Network.save (or reference.Network.save)."""
    return _io.load_network(path, Network)
