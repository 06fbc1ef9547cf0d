"""fastbp.kernels: each compiled hot loop, callable on its own.

Every function writes into outputs you pass in (first arguments, as in llm.c) and
allocates nothing. The outputs fix the dtype of the call (float32 or float64) and must be
C-contiguous, writable, of the documented shape and not overlap the inputs; inputs are
converted to that dtype (and to C order) when they can be, and must be finite.

Shapes: B rows in the batch, K inputs and N outputs of a layer.

The three products run on the GEMM core with the SIMD target chosen at import (see
fastbp.show_config()), except for a layer of one output (N = 1), whose products are
vector loops on one thread; `naive=True` runs their plain-loop twins instead, the oracle
the fast path is tested against.

    dense_forward(Z, A_out, A_in, W, b, activation)    Z = A_in @ W + b, A_out = f(Z)
    activation_forward(A, Z, activation)                A = f(Z)
    activation_backward(dZ, dA, Z, A, activation)       dZ = dA * f'(Z)
    output_gradient(dZ, Z, A, y, loss, output_activation)  dL/dZ of the output layer; returns L
    weight_gradient(dW, db, A_in, dZ)                   dW = A_in.T @ dZ, db = dZ.sum(0)
    input_gradient(dZ_in, dZ, W, Z_in, A_in, activation)   dZ_in = (dZ @ W.T) * f'(Z_in)
    sgd_update(param, grad, lr)                         param -= lr * grad
"""

import numpy as np

from . import _kernels
from ._common import ACTIVATIONS, COMPILED_OUTPUT, LOSSES, canonical_activation
from ._runtime import build_info, omp_max_threads
from ._validation import (
    SUPPORTED_DTYPES,
    _as_numeric_array,
    _check_finite,
    check_loss,
    check_lr,
    check_targets,
    effective_n_threads,
)

__all__ = [
    "dense_forward", "activation_forward", "activation_backward", "output_gradient",
    "weight_gradient", "input_gradient", "sgd_update",
]

_ACT_SOFTMAX = 6


_OPENMP = build_info()["openmp"]


def _threads(n_threads):
    return effective_n_threads(n_threads, _OPENMP, omp_max_threads())


def _act_code(activation, allow_softmax=False):
    if allow_softmax and activation == "softmax":
        return _ACT_SOFTMAX
    return ACTIVATIONS[canonical_activation(activation)]


def _output(arr, name, shape, dtype=None):
    """Check an output array: ndarray, float32/float64, C-contiguous, writable, shape."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array (an output written in place); got {type(arr).__name__}")
    if arr.dtype not in SUPPORTED_DTYPES or not arr.dtype.isnative:
        raise TypeError(f"{name} must be a native float32 or float64 array; got {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} like the other outputs; got {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (outputs are written in place)")
    if not arr.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return arr


def _input(arr, name, dtype, ndim, shape=None):
    """Convert an input to a finite C-contiguous array of dtype with the given ndim/shape."""
    a = _as_numeric_array(arr, name)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {a.shape}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(a.shape, shape)):
            if want is not None and got != want:
                raise ValueError(f"{name} must have shape {tuple('any' if w is None else w for w in shape)}; got {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty; got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=dtype)
    _check_finite(a, name)
    return a


def _same_array(a, b):
    """The documented in-place case: b is exactly the memory of a (same start, shape and
    strides), as opposed to a shifted or partial overlap."""
    return (isinstance(b, np.ndarray) and a.shape == b.shape and a.strides == b.strides
            and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _no_overlap(outputs, inputs):
    for oname, o in outputs:
        for iname, i in inputs:
            if i is not None and np.may_share_memory(o, i):
                raise ValueError(f"{oname} must not overlap the input {iname}")
    for n, (oname, o) in enumerate(outputs):
        for pname, p in outputs[n + 1:]:
            if np.may_share_memory(o, p):
                raise ValueError(f"outputs {oname} and {pname} must not overlap")


def _scratch(dtype, B, K, N, n_threads):
    return np.empty(_kernels.scratch_size(B, K, N, n_threads), dtype=dtype)


def dense_forward(Z, A_out, A_in, W, b, activation="identity", n_threads=None, *, naive=False):
    """A layer's forward pass: ``Z = A_in @ W + b`` and ``A_out = f(Z)``, in place.

    Parameters
    ----------
    Z : ndarray of shape (B, N)
        Output: the pre-activations. Its dtype (float32 or float64) is the call's dtype.
    A_out : ndarray of shape (B, N)
        Output: the activations ``f(Z)``.
    A_in : array_like of shape (B, K)
        The layer's input.
    W : array_like of shape (K, N)
        The weights.
    b : array_like of shape (N,)
        The biases.
    activation : str, default="identity"
        Any hidden activation, or ``"softmax"`` (row-wise).
    n_threads : int or None, default=None
        As `fastbp.Network`'s; the output tiles are shared among the threads.
    naive : bool, default=False
        Run the plain-loop twin instead (the oracle of the tests).

    Raises
    ------
    TypeError
        An output that is not a native float32 or float64 array.
    ValueError
        Shapes that do not match, outputs that are not C-contiguous and writable or that
        overlap an input, non-finite input, an unknown activation.
    """
    dtype = _output(Z, "Z", None).dtype
    if Z.ndim != 2 or 0 in Z.shape:
        raise ValueError(f"Z must be a non-empty 2-D array; got shape {Z.shape}")
    B, N = Z.shape
    _output(A_out, "A_out", (B, N), dtype)
    A_in = _input(A_in, "A_in", dtype, 2, (B, None))
    K = A_in.shape[1]
    W = _input(W, "W", dtype, 2, (K, N))
    b = _input(b, "b", dtype, 1, (N,))
    act = _act_code(activation, allow_softmax=True)
    _no_overlap([("Z", Z), ("A_out", A_out)], [("A_in", A_in), ("W", W), ("b", b)])
    nt = _threads(n_threads)
    _kernels.dense_forward(Z, A_out, A_in, W, b, act, nt, _scratch(dtype, B, K, N, nt),
                           bool(naive))


def activation_forward(A, Z, activation):
    """Apply an activation element-wise: ``A = f(Z)``.

    Parameters
    ----------
    A : ndarray of shape (B, N)
        Output; it may be `Z` itself (in place).
    Z : array_like of shape (B, N)
        The pre-activations.
    activation : str
        Any hidden activation.
    """
    dtype = _output(A, "A", None).dtype
    if A.ndim != 2 or 0 in A.shape:
        raise ValueError(f"A must be a non-empty 2-D array; got shape {A.shape}")
    Z = _input(Z, "Z", dtype, 2, A.shape)
    if not _same_array(A, Z):
        _no_overlap([("A", A)], [("Z", Z)])
    _kernels.activation_forward(A, Z, _act_code(activation))


def activation_backward(dZ, dA, Z, A, activation):
    """Back through an activation: ``dZ = dA * f'(Z)``.

    Parameters
    ----------
    dZ : ndarray of shape (B, N)
        Output; it may be `dA` itself (in place).
    dA : array_like of shape (B, N)
        The gradient with respect to the activations.
    Z : array_like of shape (B, N)
        The pre-activations.
    A : array_like of shape (B, N)
        The activations ``f(Z)`` (some derivatives are computed from them).
    activation : str
        Any hidden activation.
    """
    dtype = _output(dZ, "dZ", None).dtype
    if dZ.ndim != 2 or 0 in dZ.shape:
        raise ValueError(f"dZ must be a non-empty 2-D array; got shape {dZ.shape}")
    dA = _input(dA, "dA", dtype, 2, dZ.shape)
    Z = _input(Z, "Z", dtype, 2, dZ.shape)
    A = _input(A, "A", dtype, 2, dZ.shape)
    _no_overlap([("dZ", dZ)], [("Z", Z), ("A", A)] + ([] if _same_array(dZ, dA) else [("dA", dA)]))
    _kernels.activation_backward(dZ, dA, Z, A, _act_code(activation))


def output_gradient(dZ, Z, A, y, loss, output_activation=None):
    """The output layer's gradient ``dL/dZ`` and the mean loss.

    Parameters
    ----------
    dZ : ndarray of shape (B, N)
        Output: the gradient of the mean loss with respect to the logits.
    Z : array_like of shape (B, N)
        The logits.
    A : array_like of shape (B, N)
        The outputs ``f(Z)``: softmax for cross_entropy, sigmoid for binary_cross_entropy.
    y : array_like of shape (B,) or (B, N)
        Integer labels or targets, as for `fastbp.Network.loss`.
    loss : str
        The loss, as `fastbp.Network`'s.
    output_activation : str or None, default=None
        For ``loss="mse"`` only: the output activation (identity by default).

    Returns
    -------
    float
        The mean loss over the batch.
    """
    dtype = _output(dZ, "dZ", None).dtype
    if dZ.ndim != 2 or 0 in dZ.shape:
        raise ValueError(f"dZ must be a non-empty 2-D array; got shape {dZ.shape}")
    B, N = dZ.shape
    loss, out_act = check_loss(loss, output_activation)
    Z = _input(Z, "Z", dtype, 2, (B, N))
    A = _input(A, "A", dtype, 2, (B, N))
    labels, Y = check_targets(y, loss, N, B, dtype)
    if labels is None:
        labels = np.empty(0, dtype=np.int64)
    else:
        Y = np.empty((0, N), dtype=dtype)
    _no_overlap([("dZ", dZ)], [("Z", Z), ("A", A), ("y", Y)])
    code = (_ACT_SOFTMAX if out_act == "softmax" else
            ACTIVATIONS[COMPILED_OUTPUT.get(out_act, out_act)])
    return float(_kernels.output_loss_gradient(dZ, Z, A, labels, Y, LOSSES[loss][0], code))


def weight_gradient(dW, db, A_in, dZ, n_threads=None, *, naive=False):
    """A layer's parameter gradients: ``dW = A_in.T @ dZ`` and ``db = dZ.sum(axis=0)``.

    Parameters
    ----------
    dW : ndarray of shape (K, N)
        Output: the weight gradient.
    db : ndarray of shape (N,)
        Output: the bias gradient.
    A_in : array_like of shape (B, K)
        The layer's input.
    dZ : array_like of shape (B, N)
        The gradient with respect to the layer's pre-activations.
    n_threads : int or None, default=None
        As `fastbp.Network`'s; rows of `dW` are shared among the threads.
    naive : bool, default=False
        Run the plain-loop twin instead.
    """
    dtype = _output(dW, "dW", None).dtype
    if dW.ndim != 2 or 0 in dW.shape:
        raise ValueError(f"dW must be a non-empty 2-D array; got shape {dW.shape}")
    K, N = dW.shape
    _output(db, "db", (N,), dtype)
    A_in = _input(A_in, "A_in", dtype, 2, (None, K))
    dZ = _input(dZ, "dZ", dtype, 2, (A_in.shape[0], N))
    _no_overlap([("dW", dW), ("db", db)], [("A_in", A_in), ("dZ", dZ)])
    nt = _threads(n_threads)
    _kernels.weight_gradient(dW, db, A_in, dZ, nt, _scratch(dtype, A_in.shape[0], K, N, nt),
                             bool(naive))


def input_gradient(dZ_in, dZ, W, Z_in=None, A_in=None, activation="identity", n_threads=None,
                   *, naive=False):
    """The gradient passed down to the layer below: ``dZ_in = (dZ @ W.T) * f'(Z_in)``.

    Parameters
    ----------
    dZ_in : ndarray of shape (B, K)
        Output: the gradient with respect to the lower layer's pre-activations.
    dZ : array_like of shape (B, N)
        The gradient with respect to this layer's pre-activations.
    W : array_like of shape (K, N)
        This layer's weights.
    Z_in, A_in : array_like of shape (B, K), optional
        The lower layer's pre-activations and activations ``f(Z_in)``; with the default
        identity activation they may be omitted, and the result is ``dZ @ W.T``.
    activation : str, default="identity"
        The lower layer's activation `f`.
    n_threads : int or None, default=None
        As `fastbp.Network`'s.
    naive : bool, default=False
        Run the plain-loop twin instead.
    """
    dtype = _output(dZ_in, "dZ_in", None).dtype
    if dZ_in.ndim != 2 or 0 in dZ_in.shape:
        raise ValueError(f"dZ_in must be a non-empty 2-D array; got shape {dZ_in.shape}")
    B, K = dZ_in.shape
    W = _input(W, "W", dtype, 2, (K, None))
    dZ = _input(dZ, "dZ", dtype, 2, (B, W.shape[1]))
    act = _act_code(activation)
    if act == ACTIVATIONS["identity"] and Z_in is None and A_in is None:
        Z_in = A_in = dZ_in  # never read for identity
    elif Z_in is None or A_in is None:
        raise ValueError(f"input_gradient with activation={activation!r} needs Z_in and A_in")
    else:
        Z_in = _input(Z_in, "Z_in", dtype, 2, (B, K))
        A_in = _input(A_in, "A_in", dtype, 2, (B, K))
        _no_overlap([("dZ_in", dZ_in)], [("Z_in", Z_in), ("A_in", A_in)])
    _no_overlap([("dZ_in", dZ_in)], [("dZ", dZ), ("W", W)])
    nt = _threads(n_threads)
    _kernels.input_gradient(dZ_in, dZ, W, Z_in, A_in, act, nt,
                            _scratch(dtype, B, K, W.shape[1], nt), bool(naive))


def sgd_update(param, grad, lr, n_threads=None):
    """One plain SGD step in place: ``param -= lr * grad``.

    Parameters
    ----------
    param : ndarray
        The parameters, any shape, C-contiguous and writable; updated in place.
    grad : array_like
        The gradient, of `param`'s shape.
    lr : float
        The learning rate, positive and finite.
    n_threads : int or None, default=None
        As `fastbp.Network`'s.
    """
    _output(param, "param", None)
    if param.size == 0:
        raise ValueError("param must not be empty")
    grad = _input(grad, "grad", param.dtype, param.ndim, param.shape)
    lr = check_lr(lr, param.dtype)
    _no_overlap([("param", param)], [("grad", grad)])
    _kernels.sgd_update(param.reshape(-1), grad.reshape(-1), lr, _threads(n_threads))
