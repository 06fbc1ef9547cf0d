"""fastbp.reference: the whole of SPEC.md in plain, vectorized NumPy.

This is the oracle for every parity test and the baseline for every benchmark, so it is
written the way a careful NumPy user would write it: one array expression per step of the
algorithm (matrix products go to NumPy's BLAS), a Python loop over layers and minibatches
only, never over samples or units.

It shares the constructor, attributes, methods, argument checks, initialization and
shuffling of fastbp.Network: with the same seed, both start from the same parameters and
visit the minibatches in the same order.
"""

import math

import numpy as np

from . import _io
from ._common import LEAKY_RELU_SLOPE, batch_slices, init_parameters, raise_diverged
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
    effective_n_threads,
)

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
    """A multi-layer perceptron trained by minibatch SGD, in plain NumPy.

    Same constructor and methods as fastbp.Network; see that class for the details.
    """

    def __init__(self, layer_sizes, activation="relu", loss="cross_entropy",
                 output_activation=None, dtype=np.float32, seed=None, n_threads=None):
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.activation = check_activations(activation, len(self.layer_sizes) - 2)
        self.loss_name, self.output_activation = check_loss(loss, output_activation)
        self.dtype = check_dtype(dtype)
        self.seed = check_seed(seed)
        # NumPy's BLAS picks its own threads; the argument is checked for parity of errors.
        self.n_threads = effective_n_threads(n_threads)
        self.loss_curve_ = []
        self._rng = np.random.default_rng(self.seed)
        self.weights, self.biases = init_parameters(self._rng, self.layer_sizes, self.dtype)

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
            else:
                A = ACTIVATION_FUNCTIONS[self.output_activation][0](Z)
            Zs.append(Z)
            As.append(A)
        return Zs, As

    def _loss_and_output_grad(self, Z, A, labels, Y):
        """Mean loss over the batch and dL/dZ_L."""
        B = Z.shape[0]
        if self.loss_name == "cross_entropy":
            logp = _log_softmax(Z)
            if labels is not None:
                rows = np.arange(B)
                value = -logp[rows, labels].sum(dtype=np.float64) / B
                dZ = np.exp(logp)
                dZ[rows, labels] -= 1
            else:
                value = -(Y * logp).sum(dtype=np.float64) / B
                dZ = np.exp(logp) * Y.sum(axis=1, keepdims=True) - Y
            return value, dZ / Z.dtype.type(B)
        n = Z.size
        if self.loss_name == "binary_cross_entropy":
            value = (np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))).sum(dtype=np.float64) / n
            return value, (A - Y) / Z.dtype.type(n)
        diff = A - Y  # mse
        value = (diff * diff).sum(dtype=np.float64) / n
        derivative = ACTIVATION_FUNCTIONS[self.output_activation][1](Z, A)
        return value, diff * (Z.dtype.type(2.0 / n) * derivative)

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

    # -- public API ----------------------------------------------------------------------

    def _check_X(self, X):
        return check_X(X, self.layer_sizes[0], self.dtype)

    def _check_Xy(self, X, y):
        X = self._check_X(X)
        labels, Y = check_targets(y, self.loss_name, self.layer_sizes[-1], X.shape[0], self.dtype)
        return X, labels, Y

    def forward(self, X):
        return self._forward(self._check_X(X))[1][-1]

    def loss(self, X, y):
        X, labels, Y = self._check_Xy(X, y)
        Zs, As = self._forward(X)
        return float(self._loss_and_output_grad(Zs[-1], As[-1], labels, Y)[0])

    def gradients(self, X, y):
        X, labels, Y = self._check_Xy(X, y)
        Zs, As = self._forward(X)
        dZ = self._loss_and_output_grad(Zs[-1], As[-1], labels, Y)[1]
        return self._backward(Zs, As, dZ)

    def train_step(self, X, y, lr=0.1):
        X, labels, Y = self._check_Xy(X, y)
        lr = check_lr(lr, self.dtype)
        Zs, As = self._forward(X)
        value, dZ = self._loss_and_output_grad(Zs[-1], As[-1], labels, Y)
        if not np.isfinite(value):
            raise_diverged(self, "this step", lr)
        self._update(self._backward(Zs, As, dZ), lr)
        return float(value)

    def fit(self, X, y, epochs=5, batch_size=32, lr=0.1, shuffle=True):
        X, labels, Y = self._check_Xy(X, y)
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        lr = check_lr(lr, self.dtype)
        shuffle = check_bool(shuffle, "shuffle")
        n = X.shape[0]
        for epoch in range(epochs):
            order = self._rng.permutation(n) if shuffle else np.arange(n)
            batches = batch_slices(n, batch_size)
            total = 0.0
            for k, (start, stop) in enumerate(batches):
                idx = order[start:stop]
                value = self._step(X[idx], None if labels is None else labels[idx],
                                   None if Y is None else Y[idx], lr)
                if value is None:
                    raise_diverged(self, f"epoch {epoch + 1}, batch {k + 1}", lr)
                total += value
            self.loss_curve_.append(total / len(batches))
        return self

    def predict(self, X):
        out = self.forward(X)
        if self.loss_name == "cross_entropy":
            return out.argmax(axis=1)
        if self.loss_name == "binary_cross_entropy":
            return (out > 0.5).astype(np.int64)
        return out

    def save(self, path):
        _io.save_network(self, path)


def load(path):
    """Load a file written by save() into a reference.Network."""
    return _io.load_network(path, Network)
