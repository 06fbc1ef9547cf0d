"""fastbp.reference: everything fastbp.Network computes, in plain, vectorized NumPy.

This is the oracle for every parity test and the baseline for every benchmark, so it is
written the way a careful NumPy user would write it: one array expression per step of the
algorithm (matrix products go to NumPy's BLAS), a Python loop over layers and minibatches
only, never over samples or units.

It shares the constructor, attributes, methods, argument checks, initialization and
shuffling of fastbp.Network: with the same seed, both start from the same parameters and
visit the minibatches in the same order.
"""

import math
import time

import numpy as np

from . import _io, _training
from ._common import LEAKY_RELU_SLOPE, batch_slices, check_init, init_parameters, raise_diverged
from ._training import Data, EpochStats
from ._validation import (
    check_activations,
    check_bool,
    check_dtype,
    check_layer_sizes,
    check_loss,
    check_lr,
    check_positive_int,
    check_seed,
    check_targets,
    check_X,
    CsrRows,
    effective_n_threads,
)


def _dense(X):
    """X as a dense array: the oracle densifies a sparse X (check_X's CsrRows)."""
    return X.toarray() if isinstance(X, CsrRows) else X


def _erf(x):
    """erf, elementwise: SciPy's vectorized ufunc when SciPy is installed, else libm's erf
    per element (exact to double, slow; only gelu needs it). Imported on first use so that
    `import fastbp` does not pay for importing SciPy."""
    global _erf_impl
    if _erf_impl is None:
        try:
            from scipy.special import erf as scipy_erf
            _erf_impl = scipy_erf
        except ImportError:  # pragma: no cover - exercised only where SciPy is absent
            scalar = np.frompyfunc(math.erf, 1, 1)
            _erf_impl = lambda v: scalar(v).astype(v.dtype)  # noqa: E731
    return _erf_impl(x)


_erf_impl = None
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _sigmoid(z):
    # exp of a non-positive argument only: no overflow for any finite z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def _gelu(z):
    return (0.5 * z * (1.0 + _erf(z * z.dtype.type(_SQRT_HALF)))).astype(z.dtype, copy=False)


def _gelu_derivative(z):
    cdf = 0.5 * (1.0 + _erf(z * z.dtype.type(_SQRT_HALF)))
    pdf = np.exp(-0.5 * z * z) * z.dtype.type(_INV_SQRT_2PI)
    return (cdf + z * pdf).astype(z.dtype, copy=False)


# name -> (f(z), f'(z) given z and a = f(z))
ACTIVATION_FUNCTIONS = {
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
    "leaky_relu": (
        lambda z: np.where(z > 0, z, z * z.dtype.type(LEAKY_RELU_SLOPE)),
        lambda z, a: np.where(z > 0, z.dtype.type(1), z.dtype.type(LEAKY_RELU_SLOPE)),
    ),
    "sigmoid": (_sigmoid, lambda z, a: a * (1 - a)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
    "gelu": (_gelu, lambda z, a: _gelu_derivative(z)),
}


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class Network:
    """A multi-layer perceptron trained by backpropagation, in plain NumPy.

    The parity oracle of `fastbp.Network`: the same constructor, attributes, methods,
    argument checks, initialization and shuffling, so that with the same seed both start
    from the same parameters and visit the minibatches in the same order. Needs only
    NumPy (scipy for the "lbfgs" optimizer).

    Parameters
    ----------
    layer_sizes, activation, loss, output_activation, dtype, seed, n_threads, init
        As `fastbp.Network`'s. `n_threads` is checked and resolved, nothing more: NumPy's
        BLAS picks its own threads.

    Attributes
    ----------
    weights, biases : list of ndarray
        Per layer, the (n_in, n_out) weight matrix and the (n_out,) bias vector.
    loss_curve_, history, optimizer_, n_threads
        As `fastbp.Network`'s.

    See Also
    --------
    fastbp.Network : The compiled network.
    """

    def __init__(self, layer_sizes, activation="relu", loss="cross_entropy",
                 output_activation=None, dtype=np.float32, seed=None, n_threads=None,
                 init="glorot_uniform"):
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.activation = check_activations(activation, len(self.layer_sizes) - 2)
        self.loss_name, self.output_activation = check_loss(loss, output_activation)
        self.dtype = check_dtype(dtype)
        self.seed = check_seed(seed)
        # NumPy's BLAS picks its own threads; the argument is checked for parity of errors.
        self.n_threads = effective_n_threads(n_threads)
        self.init = check_init(init)
        self.loss_curve_ = []
        self.history = None
        self.optimizer_ = None
        self._rng = np.random.default_rng(self.seed)
        self.weights, self.biases = init_parameters(self._rng, self.layer_sizes, self.dtype,
                                                    self.init)

    def __repr__(self):
        return (f"reference.Network({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, dtype={self.dtype.name})")

    # -- the algorithm -------------------------------------------------------------------

    def _forward(self, X):
        """Z_l and A_l of every layer (A_0 = X), kept for the backward pass."""
        Zs, As = [], [X]
        n_layers = len(self.weights)
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            Z = As[-1] @ W + b
            if l < n_layers - 1:
                A = ACTIVATION_FUNCTIONS[self.activation[l]][0](Z)
            elif self.output_activation == "softmax":
                A = np.exp(_log_softmax(Z))
            elif self.output_activation == "exp":
                A = np.exp(Z)
            else:
                A = ACTIVATION_FUNCTIONS[self.output_activation][0](Z)
            Zs.append(Z)
            As.append(A)
        return Zs, As

    def _loss_and_output_grad(self, Z, A, labels, Y, w=None, scale=1.0):
        """Mean loss over the batch and dL/dZ_L, both times `scale`. With row weights w:
        the weighted mean sum_i w_i l_i / sum_i w_i (l_i: row i's loss; for the element-wise
        losses the mean over its outputs); weights summing to zero give 0 and 0."""
        B, N = Z.shape
        dt = Z.dtype.type
        w_sum = B if w is None else w.sum(dtype=np.float64)
        if w is not None and w_sum == 0:
            return 0.0, np.zeros_like(Z)
        norm = w_sum if self.loss_name == "cross_entropy" else w_sum * N
        # each row's factor in dL/dZ, rounded to the dtype as the compiled loop does
        f = (np.full((B, 1), dt(scale / norm)) if w is None else
             (scale * w.astype(np.float64) / norm).astype(Z.dtype).reshape(-1, 1))
        if self.loss_name == "cross_entropy":
            logp = _log_softmax(Z)
            if labels is not None:
                rows = np.arange(B)
                row_loss = -logp[rows, labels].astype(np.float64)
                dZ = np.exp(logp)
                dZ[rows, labels] -= 1
            else:
                row_loss = -(Y * logp).sum(axis=1, dtype=np.float64)
                dZ = np.exp(logp) * Y.sum(axis=1, keepdims=True) - Y
            dZ = dZ * f
        elif self.loss_name == "binary_cross_entropy":
            row_loss = (np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))).sum(axis=1, dtype=np.float64)
            dZ = (A - Y) * f
        elif self.loss_name == "poisson":
            # half the Poisson deviance, y log(y / mu) - y + mu with mu = A = exp(Z) (0 log 0
            # = 0), written as y (log y - z) - y + mu; gradient mu - y
            Y64, Z64 = Y.astype(np.float64), Z.astype(np.float64)
            ylogy = np.where(Y64 > 0, Y64 * (np.log(np.where(Y64 > 0, Y64, 1.0)) - Z64), 0.0)
            row_loss = (ylogy - Y64 + A.astype(np.float64)).sum(axis=1)
            dZ = (A - Y) * f
        else:  # mse
            diff = A - Y
            row_loss = (diff * diff).sum(axis=1, dtype=np.float64)
            derivative = ACTIVATION_FUNCTIONS[self.output_activation][1](Z, A)
            dZ = diff * ((2 * f) * derivative)
        total = row_loss.sum() if w is None else (w.astype(np.float64) * row_loss).sum()
        return scale * (total / norm), dZ

    def _backward(self, Zs, As, dZ):
        """Gradients of every W_l and b_l by the chain rule, from the output layer down."""
        n_layers = len(self.weights)
        dW, db = [None] * n_layers, [None] * n_layers
        for l in range(n_layers - 1, -1, -1):
            dW[l] = As[l].T @ dZ
            db[l] = dZ.sum(axis=0)
            if l > 0:
                dA = dZ @ self.weights[l].T
                dZ = dA * ACTIVATION_FUNCTIONS[self.activation[l - 1]][1](Zs[l - 1], As[l])
        return dW, db

    def _update(self, gradients, lr):
        for W, b, gW, gb in zip(self.weights, self.biases, *gradients):
            W -= self.dtype.type(lr) * gW
            b -= self.dtype.type(lr) * gb

    def _step(self, X, labels, Y, lr):
        """One SGD step; returns the loss before it, or None (no step) when that loss is
        not finite."""
        Zs, As = self._forward(X)
        value, dZ = self._loss_and_output_grad(Zs[-1], As[-1], labels, Y)
        if not np.isfinite(value):
            return None
        self._update(self._backward(Zs, As, dZ), lr)
        return value

    # -- the pieces fit's loop (fastbp/_training.py) works with --------------------------

    def _prepare(self, X, y, sample_weight=None, class_weight=None, names=("X", "y")):
        X = _dense(check_X(X, self.layer_sizes[0], self.dtype, name=names[0]))
        labels, Y = check_targets(y, self.loss_name, self.layer_sizes[-1], X.shape[0],
                                  self.dtype, name=names[1])
        weights = _training.check_sample_weight(sample_weight, class_weight, labels,
                                                self.loss_name, self.layer_sizes[-1],
                                                X.shape[0], self.dtype)
        return Data(X, labels, Y, weights)

    def _bind_optimizer(self, opt):
        lr = check_lr(opt.lr, self.dtype)
        n_params = sum(a * b + b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        return lr, opt._bind((tuple(self.layer_sizes), self.dtype.str),
                             lambda: np.zeros(n_params, dtype=self.dtype))

    def _copy_parameters(self):
        return [p.copy() for p in self.weights + self.biases]

    def _set_parameters(self, copy):
        for p, saved in zip(self.weights + self.biases, copy):
            p[...] = saved

    def _data_loss(self, data):
        Zs, As = self._forward(data.X)
        return float(self._loss_and_output_grad(Zs[-1], As[-1], data.labels, data.Y,
                                                data.weights)[0])

    def _l2_penalty(self, decay):
        """0.5 * decay * sum(W**2) over the weights (not the biases), summed in float64."""
        if not decay:
            return 0.0
        return 0.5 * decay * sum(float(np.dot(W.ravel().astype(np.float64), W.ravel()))
                                 for W in self.weights)

    def _full_batch(self, data, l2, l2_per_sample):
        """The objective of a full-batch optimizer over `data` (_FullBatch)."""
        return _FullBatch(self, data, l2, l2_per_sample)

    def _state_views(self, state):
        """Per-layer (weight, bias) views of optimizer state buffers laid out like
        fastbp.Network's parameter buffer."""
        views, off = [], 0
        for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            views.append((slice(off, off + n_in * n_out), (n_in, n_out)))
            off += n_in * n_out
            views.append((slice(off, off + n_out), (n_out,)))
            off += n_out
        return [[buf[sl].reshape(shape) for sl, shape in views] for buf in state]

    def _optimizer_step(self, grads, opt, decay, lr, t):
        """New values of every parameter and state array (scikit-learn's rules, see
        fastbp/optim.py), or None when one of them is not finite: nothing is written
        until all are known to be finite."""
        dt = self.dtype.type
        kind, momentum, nesterov, beta1, beta2, eps = opt._hyper()
        params = [p for l in range(len(self.weights)) for p in (self.weights[l], self.biases[l])]
        state = self._state_views(opt.state)
        new_params, new_state = [], [[] for _ in state]
        for i, (p, g) in enumerate(zip(params, grads)):
            d = dt(decay) if i % 2 == 0 else dt(0)   # the penalty is on weights only
            if kind == 1 and not state:             # plain SGD
                x = p - dt(lr) * (g + d * p) if d else p - dt(lr) * g
            elif kind == 1:
                gi = g + d * p
                v = dt(momentum) * state[0][i] - dt(lr) * gi
                new_state[0].append(v)
                x = p + (dt(momentum) * v - dt(lr) * gi) if nesterov else p + v
            else:
                lr_t = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                gi = g + d * p
                m = dt(beta1) * state[0][i] + dt(1 - dt(beta1)) * gi
                s2 = dt(beta2) * state[1][i] + dt(1 - dt(beta2)) * (gi * gi)
                new_state[0].append(m)
                new_state[1].append(s2)
                x = p - dt(lr_t) * m / (np.sqrt(s2) + dt(eps))
                if not np.isfinite(s2).all():
                    return None
            if not np.isfinite(x).all():
                return None
            new_params.append(x)
        return new_params, new_state

    def _train_batch(self, X, labels, Y, w, opt, lr, scale):
        """(loss, penalty, status) of one optimizer step; status 0 (taken), 1 (loss not
        finite: not taken), 2 (a new value would not be finite: not taken)."""
        Zs, As = self._forward(X)
        value, dZ = self._loss_and_output_grad(Zs[-1], As[-1], labels, Y, w, scale)
        if not np.isfinite(value):
            return value, 0.0, 1
        decay = _decay(opt.l2, opt.l2_per_sample, w, X.shape[0])
        penalty = self._l2_penalty(decay)
        dW, db = self._backward(Zs, As, dZ)
        grads = [g for l in range(len(dW)) for g in (dW[l], db[l])]
        step = self._optimizer_step(grads, opt, decay, lr, opt.t + 1)
        if step is None:
            return value, penalty, 2
        new_params, new_state = step
        params = [p for l in range(len(self.weights)) for p in (self.weights[l], self.biases[l])]
        for p, x in zip(params, new_params):
            p[...] = x
        for views, news in zip(self._state_views(opt.state), new_state):
            for v, x in zip(views, news):
                v[...] = x
        opt.t += 1
        return value, penalty, 0

    def _epoch(self, data, order, batch_size, opt, loss_scale=1.0, progress=None):
        lr, _ = self._bind_optimizer(opt)
        t0 = time.perf_counter()
        total = total_penalty = 0.0
        done = 0
        for k, (start, stop) in enumerate(batch_slices(order.shape[0], batch_size)):
            idx = order[start:stop]
            value, penalty, status = self._train_batch(
                data.X[idx], None if data.labels is None else data.labels[idx],
                None if data.Y is None else data.Y[idx],
                None if data.weights is None else data.weights[idx], opt, lr, loss_scale)
            if status:
                raise_diverged(self, f"batch {k + 1} of this epoch", lr, parameters=status == 2)
            total += value * (stop - start)
            total_penalty += penalty * (stop - start)
            done = stop
        seconds = time.perf_counter() - t0
        return EpochStats((total + total_penalty) / done, total / loss_scale / done,
                          total_penalty / done, done, seconds)

    # -- public API ----------------------------------------------------------------------

    def _check_X(self, X):
        return _dense(check_X(X, self.layer_sizes[0], self.dtype))

    def _check_Xy(self, X, y):
        X = self._check_X(X)
        labels, Y = check_targets(y, self.loss_name, self.layer_sizes[-1], X.shape[0], self.dtype)
        return X, labels, Y

    def forward(self, X):
        """The network's output for a batch, as `fastbp.Network.forward`.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch.

        Returns
        -------
        ndarray, shape (B, n_L)
            The output layer's activations.

        See Also
        --------
        fastbp.Network.forward : The compiled twin.
        """
        return self._forward(self._check_X(X))[1][-1]

    def loss(self, X, y, sample_weight=None):
        """The mean loss on a batch, as `fastbp.Network.loss`.

        Parameters
        ----------
        X, y, sample_weight
            As `fastbp.Network.loss`'s.

        Returns
        -------
        float
            The (weighted) mean loss over the rows; no L2 penalty.

        See Also
        --------
        fastbp.Network.loss : The compiled twin.
        """
        return self._data_loss(self._prepare(X, y, sample_weight))

    def gradients(self, X, y):
        """The gradients of the batch's mean loss, as `fastbp.Network.gradients`.

        Parameters
        ----------
        X, y
            As `fastbp.Network.gradients`'s.

        Returns
        -------
        dW : list of ndarray
            Per layer, the gradient with respect to the weights.
        db : list of ndarray
            Per layer, the gradient with respect to the biases.

        See Also
        --------
        fastbp.Network.gradients : The compiled twin.
        """
        X, labels, Y = self._check_Xy(X, y)
        Zs, As = self._forward(X)
        dZ = self._loss_and_output_grad(Zs[-1], As[-1], labels, Y)[1]
        return self._backward(Zs, As, dZ)

    def train_step(self, X, y, lr=0.1):
        """One plain SGD step on the batch, in place, as `fastbp.Network.train_step`.

        Parameters
        ----------
        X, y, lr
            As `fastbp.Network.train_step`'s.

        Returns
        -------
        float
            The mean loss before the step.

        Raises
        ------
        DivergedError
            The loss or a parameter would not be finite; nothing changes.

        See Also
        --------
        fastbp.Network.train_step : The compiled twin.
        """
        X, labels, Y = self._check_Xy(X, y)
        lr = check_lr(lr, self.dtype)
        from . import optim
        value, _, status = self._train_batch(X, labels, Y, None, optim.SGD(lr), lr, 1.0)
        if status:
            raise_diverged(self, "this step", lr, parameters=status == 2)
        return float(value)

    def train_epoch(self, X, y, *, optimizer, batch_size=32, order=None, shuffle=True,
                    sample_weight=None, class_weight=None, loss_scale=1.0):
        """One pass over (X, y) in minibatches, as `fastbp.Network.train_epoch`.

        Parameters
        ----------
        X, y, optimizer, batch_size, order, shuffle
            As `fastbp.Network.train_epoch`'s.
        sample_weight, class_weight, loss_scale
            As `fastbp.Network.train_epoch`'s.

        Returns
        -------
        EpochStats
            What the epoch measured, as `fastbp.Network.train_epoch`'s.

        See Also
        --------
        fastbp.Network.train_epoch : The compiled twin.
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

    def fit(self, X, y, epochs=5, batch_size=32, lr=None, shuffle=True, *, optimizer="sgd",
            momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, epsilon=1e-8, l2=0.0,
            lr_schedule="constant", power_t=0.5, validation_data=None, validation_split=0.0,
            early_stopping=False, patience=10, min_delta=0.0, sample_weight=None,
            class_weight=None, callbacks=None, verbose=0):
        """Train the network on (X, y), as `fastbp.Network.fit` (the same loop).

        Parameters
        ----------
        X, y, epochs, batch_size, lr, shuffle, optimizer, momentum, nesterov
            As `fastbp.Network.fit`'s.
        beta1, beta2, epsilon, l2, lr_schedule, power_t, validation_data
            As `fastbp.Network.fit`'s.
        validation_split, early_stopping, patience, min_delta, sample_weight
            As `fastbp.Network.fit`'s.
        class_weight, callbacks, verbose
            As `fastbp.Network.fit`'s.

        Returns
        -------
        Network
            The network itself, trained.

        See Also
        --------
        fastbp.Network.fit : The compiled twin.
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
        """Predict labels or values for a batch, as `fastbp.Network.predict`.

        Parameters
        ----------
        X : array_like or scipy.sparse CSR or CSC matrix, shape (B, n_0)
            The batch.

        Returns
        -------
        ndarray
            Class labels (cross_entropy), a 0/1 matrix (binary_cross_entropy) or the
            outputs (mse, poisson).

        See Also
        --------
        fastbp.Network.predict : The compiled twin.
        """
        out = self.forward(X)
        if self.loss_name == "cross_entropy":
            return out.argmax(axis=1)
        if self.loss_name == "binary_cross_entropy":
            return (out > 0.5).astype(np.int64)
        return out

    def save(self, path):
        """Write the network to a file, as `fastbp.Network.save` (the same format).

        Parameters
        ----------
        path : str, bytes or os.PathLike
            The file.

        See Also
        --------
        fastbp.Network.save : The compiled twin.
        """
        _io.save_network(self, path)


def load(path):
    """Read a file written by `Network.save` or ``fastbp.Network.save``.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file.

    Returns
    -------
    Network
        A new ``fastbp.reference.Network`` with the file's configuration and parameters.
    """
    return _io.load_network(path, Network)


def _decay(l2, l2_per_sample, w, n):
    """The L2 factor of a batch of n rows with row weights w (or None): l2, divided by the
    weight sum when l2_per_sample (scikit-learn's alpha; 0 when the weights sum to 0)."""
    if not l2_per_sample or not l2:
        return l2
    w_sum = n if w is None else w.sum(dtype=np.float64)
    return l2 / w_sum if w_sum > 0 else 0.0


class _FullBatch:
    """fastbp/_lbfgs.py FullBatch in NumPy: the mean loss over all of `data` plus the L2
    penalty, and its gradient, at x (every parameter in the compiled network's buffer
    order: W_0, b_0, W_1, b_1, ...)."""

    def __init__(self, net, data, l2, l2_per_sample):
        self.net, self.data = net, data
        self.decay = _decay(l2, l2_per_sample, data.weights, data.X.shape[0])

    def _arrays(self):
        return [p for W, b in zip(self.net.weights, self.net.biases) for p in (W, b)]

    def x0(self):
        return np.concatenate([p.ravel() for p in self._arrays()]).astype(np.float64)

    def set(self, x):
        off = 0
        for p in self._arrays():
            p[...] = x[off:off + p.size].reshape(p.shape)
            off += p.size

    def __call__(self, x):
        self.set(x)
        net, d = self.net, self.data
        Zs, As = net._forward(d.X)
        value, dZ = net._loss_and_output_grad(Zs[-1], As[-1], d.labels, d.Y, d.weights)
        dW, db = net._backward(Zs, As, dZ)
        penalty = net._l2_penalty(self.decay)
        if self.decay:
            dW = [g + net.dtype.type(self.decay) * W for g, W in zip(dW, net.weights)]
        grads = [g for gW, gb in zip(dW, db) for g in (gW.ravel(), gb)]
        return value + penalty, np.concatenate(grads).astype(np.float64)
