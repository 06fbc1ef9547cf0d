"""Names, codes and initialization shared by fastbp.Network and fastbp.reference.Network.

The integer codes must match the enums in src/_activations.pxd and src/_losses.pxd.
"""

import numpy as np

# Hidden (and mse output) activations: name -> code used by the compiled kernels.
ACTIVATIONS = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "sigmoid": 3,
    "tanh": 4,
    "gelu": 5,
}
ACTIVATION_ALIASES = {"logistic": "sigmoid", "linear": "identity"}
LEAKY_RELU_SLOPE = 0.01

# Losses: name -> (code, output activation it implies, or None when free (mse)).
LOSSES = {
    "cross_entropy": (0, "softmax"),
    "binary_cross_entropy": (1, "sigmoid"),
    "mse": (2, None),
}

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def canonical_activation(name, argname="activation"):
    """Return the canonical activation name for `name` or raise."""
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a string naming an activation; got {name!r}")
    key = ACTIVATION_ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        choices = ", ".join(repr(n) for n in list(ACTIVATIONS) + list(ACTIVATION_ALIASES))
        raise ValueError(f"{argname} must be one of {choices}; got {name!r}")
    return key


def init_parameters(rng, layer_sizes, dtype, init="glorot_uniform"):
    """Initial (weights, biases) for `layer_sizes`, drawn from `rng`.

    Weights: Glorot/Xavier uniform, U(-r, r) with r = sqrt(6 / (fan_in + fan_out)),
    drawn in float64 then rounded to `dtype`, so float32 and float64 networks with the
    same seed start from the same values up to rounding. Biases: zero.
    Both fastbp.Network and fastbp.reference.Network call this, which is what makes
    "same seed, same initial parameters" hold.
    """
    weights, biases = [], []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        weights.append(np.empty((fan_in, fan_out), dtype=dtype))
        biases.append(np.zeros(fan_out, dtype=dtype))
    fill_initial_parameters(rng, weights, init)
    return weights, biases


_INIT_CHUNK = 1 << 20  # values drawn at a time: the float64 draw never doubles a big layer

INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal")


def check_init(init):
    if not isinstance(init, str) or init.lower() not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")
    return init.lower()


def fill_initial_parameters(rng, weights, init="glorot_uniform"):
    """Fill each weight matrix in place, drawing in row chunks:
        glorot_uniform  U(-r, r), r = sqrt(6 / (fan_in + fan_out))   (the default)
        glorot_normal   N(0, s^2), s = sqrt(2 / (fan_in + fan_out))
        he_uniform      U(-r, r), r = sqrt(6 / fan_in)
        he_normal       N(0, s^2), s = sqrt(2 / fan_in)
    A Generator's draws are one stream in C order, so the chunks give exactly the values
    of one draw of the whole matrix, without its float64 copy."""
    for W in weights:
        fan_in, fan_out = W.shape
        fan = fan_in + fan_out if init.startswith("glorot") else fan_in
        rows = max(1, _INIT_CHUNK // fan_out)
        for start in range(0, fan_in, rows):
            stop = min(start + rows, fan_in)
            size = (stop - start, fan_out)
            if init.endswith("uniform"):
                bound = np.sqrt(6.0 / fan)
                W[start:stop] = rng.uniform(-bound, bound, size=size)
            else:
                W[start:stop] = rng.normal(0.0, np.sqrt(2.0 / fan), size=size)


def batch_slices(n_samples, batch_size):
    """Start/stop of each minibatch; the last one may be shorter (nothing is dropped)."""
    return [(s, min(s + batch_size, n_samples)) for s in range(0, n_samples, batch_size)]


class DivergedError(ValueError):
    """Training diverged: a batch's loss, or a parameter after a step, is not finite. The
    network holds the parameters of the last finite step. A ValueError, so code that
    catches bad input keeps catching it."""


class ConvergenceWarning(UserWarning):
    """An optimizer stopped before it converged (L-BFGS at its iteration or evaluation
    limit). fastbp.sklearn warns with scikit-learn's ConvergenceWarning instead."""


def raise_diverged(net, where, lr, parameters=False):
    """The error fit, train_epoch and train_step raise when training diverges: the loss
    is not finite before a step, or (parameters=True) a step made a parameter or an
    optimizer state value non-finite and was undone."""
    if parameters:
        what = f"a parameter became non-finite at {where} (a gradient or update overflowed)"
    else:
        what = f"the loss is not finite at {where}"
    finite = all(np.isfinite(p).all() for p in net.weights + net.biases)
    state = ("the network holds the parameters of the last finite step" if finite else
             "the parameters already held non-finite values")
    raise DivergedError(
        f"training diverged: {what}; {state}. "
        f"Try a smaller learning rate (lr={lr:g}) or scale the inputs.")
