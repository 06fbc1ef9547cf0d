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


def init_parameters(rng, layer_sizes, dtype):
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
    fill_initial_parameters(rng, weights)
    return weights, biases


_INIT_CHUNK = 1 << 20  # values drawn at a time: the float64 draw never doubles a big layer


def fill_initial_parameters(rng, weights):
    """Fill each weight matrix in place with Glorot uniform values, drawing in row chunks.
    A Generator's uniform draws are one stream in C order, so the chunks give exactly the
    values of one rng.uniform(size=(fan_in, fan_out)) call, without its float64 copy."""
    for W in weights:
        fan_in, fan_out = W.shape
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        rows = max(1, _INIT_CHUNK // fan_out)
        for start in range(0, fan_in, rows):
            stop = min(start + rows, fan_in)
            W[start:stop] = rng.uniform(-bound, bound, size=(stop - start, fan_out))


def batch_slices(n_samples, batch_size):
    """Start/stop of each minibatch; the last one may be shorter (nothing is dropped)."""
    return [(s, min(s + batch_size, n_samples)) for s in range(0, n_samples, batch_size)]


def raise_diverged(net, where, lr):
    """The error fit and train_step raise when the loss stops being finite."""
    finite = all(np.isfinite(p).all() for p in net.weights + net.biases)
    state = ("the parameters are those before this step" if finite else
             "the parameters already hold non-finite values (a gradient overflowed)")
    raise ValueError(
        f"training diverged: the loss is not finite at {where}; {state}. "
        f"Try a smaller learning rate (lr={lr:g}) or scale the inputs.")
