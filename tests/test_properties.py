"""Property-based tests (hypothesis) of the bad-input rules (docs/guide.md, "Data and dtypes")
and of parity with the reference.

Every call of the public API (fastbp.Network's forward / predict / loss / gradients /
train_step / fit, and each function of fastbp.kernels) is made on inputs drawn at random:
layer sizes, activations, losses and network dtypes; X and y of random shape (0 rows, wrong
column counts, wrong ndim), dtype (float16/32/64, longdouble, ints, bool, complex, str,
objects), memory layout (C, Fortran, strided, transposed, reversed, read-only, big-endian,
nested lists), with NaN / Inf and extreme finite values at random positions.

Properties
----------
Each call either
  (a) succeeds, and then agrees with fastbp.reference.Network of the same seed on the same
      input within the bound of tests/test_network.py,
      4 * n_layers * max(sizes) * eps * max(1, scale),
      (for inputs with extreme-but-finite values, above 1e4 after conversion, only the
      finiteness of every result is compared: both may overflow, but the same way), or
  (b) raises ValueError or TypeError, of a type the rules allow for what was wrong with the
      input (an independent oracle below decides which argument is bad and how), and the
      reference raises the same type; the fastbp network's parameters, loss curve and
      shuffling RNG are then bit-for-bit unchanged (except after a fit that diverged
      part-way, which keeps the last step taken, as documented: it is compared with the
      reference instead).
Converted inputs (Fortran order, strided, transposed, big-endian, another float dtype,
ints, bool, lists, objects, read-only) give results bit-identical to the same values passed
as a clean C-contiguous array of the network's dtype, and the caller's array is never
modified.

The kernels of fastbp.kernels either succeed and match the NumPy formula within the bounds
of tests/test_kernels.py, or raise ValueError/TypeError as the oracle predicts, leaving
their output arrays untouched.

Library bugs these properties found are pinned as plain regression tests at the end of
the file (section "Regressions").
"""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp import kernels, reference

ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]
PIECEWISE_LINEAR = {"identity", "relu", "leaky_relu"}
LOSSES = ["cross_entropy", "binary_cross_entropy", "mse"]
DTYPES = [np.float32, np.float64]
METHODS = ["forward", "predict", "loss", "gradients", "train_step", "fit"]
XY_METHODS = {"loss", "gradients", "train_step", "fit"}

VE, TE = ValueError, TypeError
EXTREME = 1e4  # inputs with |value| above this (after conversion) only compare finiteness


def _settings(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    report_multiple_bugs=False,
                    suppress_health_check=list(HealthCheck))


def bound(dtype, sizes, scale=1.0, steps=1):
    """tests/test_network.py's tolerance."""
    eps = np.finfo(dtype).eps
    n_layers = len(sizes) - 1
    return 4 * n_layers * max(sizes) * eps * max(1.0, scale) * steps


def eps_of(dtype):
    return float(np.finfo(dtype).eps)


def tiny_of(dtype):
    return 4 * float(np.finfo(dtype).smallest_subnormal)


# ------------------------------------------------------------------------------------------
# Input cases: a value to pass, what it must behave like, and what the rules say about it
# ------------------------------------------------------------------------------------------

class Case:
    """value: what is passed; clean: the same values as a C-contiguous array of the
    network's dtype (None when the input is invalid); errors: the exception types the rules
    allow (empty: the input is valid); extreme: valid but with values above EXTREME."""

    def __init__(self, value, clean, errors, extreme, desc):
        self.value, self.clean, self.errors = value, clean, frozenset(errors)
        self.extreme, self.desc = extreme, desc

    def __repr__(self):
        return f"Case({self.desc}, errors={sorted(e.__name__ for e in self.errors)})"


FLOAT_REPS = ["float64", "float32", "float16", "longdouble"]
INT_REPS = ["int8", "int32", "int64", "uint8", "uint64"]
OTHER_REPS = ["bool", "complex", "str", "object", "object-str", "object-none", "object-bigint",
              "datetime"]
LAYOUTS = ["C", "F", "strided", "transposed", "reversed", "big-endian", "list", "read-only"]


def _strided(arr, axis):
    shape = list(arr.shape)
    shape[axis] *= 2
    wide = np.zeros(shape, dtype=arr.dtype)
    index = [slice(None)] * arr.ndim
    index[axis] = slice(None, None, 2)
    wide[tuple(index)] = arr
    out = wide[tuple(index)]
    return out


def _apply_layout(arr, layout, axis):
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "strided":
        return _strided(arr, axis % arr.ndim)
    if layout == "transposed":
        return np.ascontiguousarray(arr.T).T
    if layout == "reversed":
        return np.ascontiguousarray(arr[::-1])[::-1]
    if layout == "big-endian":
        if arr.dtype.kind in "biufc" and arr.dtype.itemsize > 1:
            return arr.astype(arr.dtype.newbyteorder(">"))
        return arr
    if layout == "list":
        return arr.tolist()
    if layout == "read-only":
        arr = arr.copy()
        arr.flags.writeable = False
        return arr
    return arr


def _to_rep(values, rep, rng_pos):
    """values (float64, C) -> an array of representation `rep`."""
    with np.errstate(all="ignore"):
        if rep in FLOAT_REPS:
            return values.astype(rep)
        if rep in INT_REPS:
            return values.astype(rep)
        if rep == "bool":
            return values != 0
        if rep == "complex":
            return values.astype(np.complex128)
        if rep == "str":
            return values.astype(str)
        if rep == "datetime":
            return np.zeros(values.shape, dtype="datetime64[s]")
        obj = values.astype(object)
        if obj.size:
            flat = obj.reshape(-1)
            flat[rng_pos % flat.size] = {"object": flat[rng_pos % flat.size],
                                         "object-str": "a", "object-none": None,
                                         "object-bigint": 10 ** 400}[rep]
        return obj


def _rep_errors(rep):
    """Exception types for values that are not real numbers at all."""
    if rep in ("complex", "str", "object-str", "datetime"):
        return {TE}
    if rep in ("object-none", "object-bigint"):
        return {TE, VE}  # None / 10**400: not a real number of the dtype (either type is fine)
    return set()


def _converted(rep_arr, dtype):
    """The values a network of `dtype` must see: the array converted as NumPy converts."""
    with np.errstate(all="ignore"):
        if rep_arr.dtype.kind == "O":
            return np.ascontiguousarray(rep_arr.astype(np.float64), dtype=dtype)
        return np.ascontiguousarray(rep_arr, dtype=dtype)


ALL_REGIMES = ("normal",) * 4 + ("nonfinite", "extreme", "extreme", "overflow32")
VALID_REGIMES = ("normal",) * 5 + ("extreme",)


@st.composite
def array_cases(draw, shape, dtype, free=(), bad=True, reps=None, special=True,
                elements=(-4.0, 4.0), regimes=None, layouts=None):
    """An input array meant to have `shape` (axes in `free` may take any size >= 1)."""
    shape = list(shape)
    errors = set()
    desc = []
    # -- shape ----------------------------------------------------------------------------
    shape_kind = "ok"
    if bad:
        shape_kind = draw(st.sampled_from(["ok"] * 6 + ["zero", "wrong", "ndim-", "ndim+"]))
    if shape_kind == "zero":
        shape[draw(st.integers(0, len(shape) - 1))] = 0
        errors.add(VE)
    elif shape_kind == "wrong":
        fixed = [a for a in range(len(shape)) if a not in free]
        if fixed:
            a = draw(st.sampled_from(fixed))
            shape[a] = draw(st.sampled_from([n for n in (shape[a] - 1, shape[a] + 1,
                                                          2 * shape[a] + 1) if n >= 1 and n != shape[a]]))
            errors.add(VE)
    elif shape_kind == "ndim-":
        shape = [int(np.prod(shape))] if len(shape) > 1 else []
        errors.add(VE)
    elif shape_kind == "ndim+":
        shape = shape + [1]
        errors.add(VE)
    shape = tuple(shape)
    desc.append(f"shape={shape}")
    # -- representation and values ---------------------------------------------------------
    if reps is None:
        reps = FLOAT_REPS * 4 + INT_REPS + ["bool"] + ((OTHER_REPS[1:]) if bad else ["object"])
    rep = draw(st.sampled_from(reps))
    desc.append(rep)
    errors |= _rep_errors(rep)
    if rep in INT_REPS:
        lo = 0 if rep.startswith("u") else -3
        values = draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, 3))).astype(np.float64)
        if special and draw(st.integers(0, 9)) == 0 and values.size:
            values.reshape(-1)[draw(st.integers(0, values.size - 1))] = 2 ** 24 if lo == 0 else -2 ** 24
    elif rep == "bool":
        values = draw(hnp.arrays(np.bool_, shape)).astype(np.float64)
    else:
        lo, hi = elements
        values = draw(hnp.arrays(np.float64, shape, elements=st.floats(
            lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)))
        if draw(st.integers(0, 3)) != 3:
            # hypothesis favours "nice" floats, exact in float16/32; most examples get
            # values with full float64 mantissas instead, so that a lossy conversion shows
            # (the simplest draw, 0, takes this branch: derandomized runs favour it)
            noise = np.random.default_rng(draw(st.integers(0, 2 ** 32))).uniform(lo, hi, shape)
            values = np.asarray(np.clip(values * 0.5 + noise * 0.5, lo, hi), dtype=np.float64)
        regime = "normal"
        if special and values.size:
            regime = draw(st.sampled_from(regimes or (ALL_REGIMES if bad else VALID_REGIMES)))
        if regime != "normal":
            n = draw(st.integers(1, min(3, values.size)))
            idx = draw(st.lists(st.integers(0, values.size - 1), min_size=n, max_size=n))
            for i in idx:
                if regime == "nonfinite":
                    v = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
                elif regime == "extreme":  # finite in float32; magnitudes whose products
                    # stay far from the overflow threshold or far above it
                    v = draw(st.sampled_from([1e5, 1e10, 1e15, 1e30])) * draw(st.floats(1, 9))
                else:  # finite in float64, infinite in float32 (and float16)
                    v = draw(st.sampled_from([1e40, 1e100, 1e250, 1e300])) * draw(st.floats(1, 1.7))
                if regime != "nonfinite" and draw(st.booleans()):
                    v = -v
                values.reshape(-1)[i] = v
            desc.append(regime)
    arr = _to_rep(values, rep, draw(st.integers(0, 1000)))
    # -- layout ------------------------------------------------------------------------------
    layout = draw(st.sampled_from(layouts or LAYOUTS) if arr.ndim >= 1 else st.sampled_from(["C", "list"]))
    if rep == "longdouble" and layout == "list":
        layout = "C"  # tolist() of longdouble rounds to Python floats: not the same values
    if rep == "datetime" and layout == "list":
        layout = "C"
    desc.append(layout)
    value = _apply_layout(arr, layout, draw(st.integers(0, 2)))
    # -- what it must behave like -------------------------------------------------------------
    clean, extreme = None, False
    if not errors:
        conv = _converted(arr, dtype)
        if not np.isfinite(conv).all():
            errors.add(VE)
        else:
            clean = conv
            extreme = bool(conv.size) and float(np.abs(conv).max()) > EXTREME
    return Case(value, clean, errors, extreme, ", ".join(desc))


def x_cases(n_in, dtype, bad=True, min_rows=1, **kw):
    """X: (B, n_in), B in min_rows..9."""
    return st.integers(min_rows, 9).flatmap(
        lambda B: array_cases((B, n_in), dtype, free=(0,), bad=bad, **kw))


@st.composite
def y_cases(draw, loss, n_out, B, dtype, bad=True):
    """Targets for `loss` and a batch of B rows: labels or (B, n_out) rows, valid or not."""
    if loss == "cross_entropy":
        kinds = ["labels"] * 5 + ["probs"] * 2
        badk = ["label-high", "label-negative", "label-fraction", "label-nonfinite", "short",
                "long", "probs-out", "probs-nonfinite", "probs-cols", "probs-3d", "str", "complex"]
    elif loss == "binary_cross_entropy":
        kinds = ["probs"] * 6 + (["vector"] if n_out == 1 else [])
        badk = ["probs-out", "probs-nonfinite", "short", "probs-cols", "probs-3d", "str",
                "complex"] + (["labels-1d"] if n_out > 1 else [])
    else:
        kinds = ["targets"] * 6 + (["vector"] if n_out == 1 else []) + ["targets-extreme"]
        badk = ["targets-nonfinite", "targets-overflow32", "short", "probs-cols", "probs-3d",
                "str", "complex"] + (["labels-1d"] if n_out > 1 else [])
    kind = draw(st.sampled_from(badk if bad else kinds))
    errors = set()
    if kind.startswith("label") or kind in ("short", "long") and loss == "cross_entropy":
        n = {"short": B - 1, "long": B + 1}.get(kind, B)
        vals = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, n_out - 1))).astype(np.float64)
        if kind in ("short", "long"):
            errors.add(VE)
        if n and kind in ("label-high", "label-negative", "label-fraction", "label-nonfinite"):
            i = draw(st.integers(0, n - 1))
            vals[i] = {"label-high": n_out + draw(st.sampled_from([0, 1, 10 ** 6])),
                       "label-negative": -1 - draw(st.sampled_from([0, 5])),
                       "label-fraction": vals[i] + draw(st.sampled_from([0.5, 0.001, -0.25])),
                       "label-nonfinite": draw(st.sampled_from([np.nan, np.inf, -np.inf]))}[kind]
            errors.add(VE)
        if kind == "labels-1d":  # labels given to a loss that needs (B, n_out) rows
            errors.add(VE)
        integral = np.isfinite(vals).all() and np.array_equal(vals, np.round(vals))
        reps = ["float64", "float32"] if not integral else (
            ["int64", "int32", "float64", "float32"]
            + (["uint8"] if (vals >= 0).all() and vals.size and vals.max() < 256 else [])
            + (["bool"] if vals.size and set(np.unique(vals)) <= {0.0, 1.0} else []))
        rep = draw(st.sampled_from(reps))
        arr = _to_rep(vals, rep, 0)
        layout = draw(st.sampled_from(["C", "strided", "reversed", "big-endian", "list", "read-only"]))
        value = _apply_layout(arr, layout, 0)
        clean = None if errors else np.ascontiguousarray(arr, dtype=np.int64)
        if kind == "labels-1d":
            clean = None
        return Case(value, clean, errors, False, f"y {kind} {rep} {layout} n={n}")

    # (B, n_out) rows (or a vector when n_out == 1)
    shape = {"short": (max(B - 1, 0), n_out), "probs-cols": (B, n_out + 1),
             "probs-3d": (B, n_out, 1), "vector": (B,)}.get(kind, (B, n_out))
    if kind in ("short", "probs-cols", "probs-3d"):
        errors.add(VE)
    lo, hi = (0.0, 1.0) if loss != "mse" else (-3.0, 3.0)
    vals = draw(hnp.arrays(np.float64, shape, elements=st.floats(
        lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)))
    if draw(st.integers(0, 3)) != 3:  # full float64 mantissas (see array_cases)
        noise = np.random.default_rng(draw(st.integers(0, 2 ** 32))).uniform(lo, hi, shape)
        vals = np.asarray(np.clip(vals * 0.5 + noise * 0.5, lo, hi), dtype=np.float64)
    if vals.size and kind in ("probs-out", "probs-nonfinite", "targets-nonfinite",
                              "targets-extreme", "targets-overflow32"):
        i = draw(st.integers(0, vals.size - 1))
        vals.reshape(-1)[i] = {
            "probs-out": draw(st.sampled_from([1 + 1e-4, 1.5, 3.0, -1e-4, -0.5, -7.0])),
            "probs-nonfinite": draw(st.sampled_from([np.nan, np.inf, -np.inf])),
            "targets-nonfinite": draw(st.sampled_from([np.nan, np.inf, -np.inf])),
            "targets-extreme": draw(st.sampled_from([1e5, -1e10, 1e15, -1e30])),
            "targets-overflow32": draw(st.sampled_from([1e40, -1e100, 1e300])),
        }[kind]
    rep = draw(st.sampled_from(["float64", "float32", "float16"] + (["str", "complex"] if kind in ("str", "complex") else [])))
    if kind in ("str", "complex"):
        rep = kind
        errors |= _rep_errors(rep)
    arr = _to_rep(vals, rep, 0)
    layout = draw(st.sampled_from(LAYOUTS))
    value = _apply_layout(arr, layout, draw(st.integers(0, 2)))
    clean, extreme = None, False
    if not errors:
        conv = _converted(arr, dtype)
        if conv.ndim == 1:
            conv = conv.reshape(-1, 1)
        if not np.isfinite(conv).all():
            errors.add(VE)
        elif loss != "mse" and ((conv < 0).any() or (conv > 1).any()):
            errors.add(VE)  # float16 rounding cannot push [0, 1] values out, but be exact
        else:
            clean = conv
            extreme = bool(conv.size) and float(np.abs(conv).max()) > EXTREME
    return Case(value, clean, errors, extreme, f"y {kind} {rep} {layout} shape={shape}")


@st.composite
def net_configs(draw, losses=LOSSES, min_inputs=1):
    n_layers = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 12), min_size=n_layers + 1, max_size=n_layers + 1))
    sizes[0] = max(sizes[0], min_inputs)
    loss = draw(st.sampled_from(losses))
    if n_layers > 1 and draw(st.booleans()):
        activation = draw(st.lists(st.sampled_from(ACTIVATIONS + ["logistic"]),
                                   min_size=n_layers - 1, max_size=n_layers - 1))
    else:
        activation = draw(st.sampled_from(ACTIVATIONS + ["logistic"]))
    kw = {}
    if loss == "mse" and draw(st.booleans()):
        kw["output_activation"] = draw(st.sampled_from(ACTIVATIONS + ["logistic"]))
    return dict(layer_sizes=sizes, activation=activation, loss=loss,
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2 ** 32)),
                n_threads=draw(st.sampled_from([None, 1, 2])), **kw)


def make_pair(cfg, bias_seed):
    """fastbp and reference networks of the same seed, with the same non-zero biases."""
    fast = fastbp.Network(**cfg)
    ref = reference.Network(**cfg)
    rng = np.random.default_rng(bias_seed)
    for l in range(len(fast.biases)):
        b = rng.uniform(-0.5, 0.5, fast.biases[l].shape).astype(cfg["dtype"])
        fast.biases[l][...] = b
        ref.biases[l][...] = b
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        assert np.array_equal(a, b), "same seed, different initial parameters"
    return fast, ref


# ------------------------------------------------------------------------------------------
# Calling and comparing
# ------------------------------------------------------------------------------------------

def call(net, method, X, y, kw):
    with np.errstate(all="ignore"):
        if method == "forward":
            return net.forward(X)
        if method == "predict":
            return net.predict(X)
        if method == "loss":
            return net.loss(X, y)
        if method == "gradients":
            return net.gradients(X, y)
        if method == "train_step":
            return net.train_step(X, y, **kw)
        net.fit(X, y, **kw)
        return None


def outcome(fn, *args):
    try:
        return fn(*args), None
    except Exception as exc:  # anything but ValueError/TypeError fails the property below
        return None, exc


def same_array(a, b):
    """The caller's array is untouched: same dtype, shape and values (NaN equal to NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return [repr(v) for v in a.ravel()] == [repr(v) for v in b.ravel()]
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def snapshot(net):
    return [np.array(p, copy=True) for p in list(net.weights) + list(net.biases)]


def assert_unchanged(net, saved, what):
    now = list(net.weights) + list(net.biases)
    for a, b in zip(now, saved):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert np.array_equal(a, b, equal_nan=True) and \
            np.array_equal(np.signbit(a), np.signbit(b)), f"{what}: parameters changed"


def assert_close(fast, ref, tol, what):
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != {ref.shape}"
    assert fast.dtype == ref.dtype, f"{what}: dtype {fast.dtype} != {ref.dtype}"
    assert np.isfinite(fast).all() == np.isfinite(ref).all(), f"{what}: finiteness differs"
    if fast.size:
        err = float(np.max(np.abs(fast.astype(np.float64) - ref.astype(np.float64))))
        assert err <= tol, f"{what}: max |fast - ref| = {err:.3e} > {tol:.3e}"


def assert_same_finiteness(fast, ref, what):
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != {ref.shape}"
    assert fast.dtype == ref.dtype, f"{what}: dtype {fast.dtype} != {ref.dtype}"
    assert np.array_equal(np.isfinite(fast), np.isfinite(ref)), (
        f"{what}: finiteness differs: fastbp {fast!r} vs reference {ref!r}")


def _names(arg):
    return rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])"


def _flatten(result):
    if isinstance(result, tuple):  # gradients: (dW list, db list)
        return list(result[0]) + list(result[1])
    return [result]


@st.composite
def fit_kwargs(draw, method, dtype, B, bad=True):
    """(kwargs, errors, extreme) for train_step / fit."""
    kw, errors, extreme = {}, set(), False
    if method not in ("train_step", "fit"):
        return kw, errors, extreme
    lr_kind = draw(st.sampled_from(["ok"] * 2 + ["bad-value", "bad-type", "huge"] if bad else ["ok"]))
    if lr_kind == "ok":
        kw["lr"] = draw(st.one_of(st.floats(1e-3, 0.3), st.floats(1e-3, 0.3).map(np.float32),
                                  st.just(np.float64(0.05))))
    elif lr_kind == "bad-value":
        kw["lr"] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0, 0.0, -0.1, np.float32(-1)]))
        errors.add(VE)
    elif lr_kind == "bad-type":
        # (fit takes lr=None as "the optimizer's default"; train_step has no default)
        kw["lr"] = draw(st.sampled_from(["0.1", True, 1j, [0.1]] + ([None] if method == "train_step" else [])))
        errors.add(TE)
    else:
        # finite as a Python float, infinite in float32: like X = 1e300, an infinite lr (a
        # ValueError) for a float32 network; for float64 a legitimate huge step
        kw["lr"] = draw(st.sampled_from([1e39, 1e300]))
        if np.dtype(dtype) == np.float32:
            errors.add(VE)
        else:
            extreme = True
    if method == "fit":
        kw["epochs"] = draw(st.integers(1, 2))
        kw["batch_size"] = draw(st.integers(1, B + 2))
        kw["shuffle"] = draw(st.sampled_from([True, False, np.bool_(True)]))
        if bad and draw(st.integers(0, 2)) == 0:
            name, value, exc = draw(st.sampled_from([
                ("epochs", 0, VE), ("epochs", -1, VE), ("epochs", 1.0, TE), ("epochs", True, TE),
                ("batch_size", 0, VE), ("batch_size", 2.0, TE), ("batch_size", "4", TE),
                ("shuffle", "yes", TE), ("shuffle", 1, TE)]))
            kw[name] = value
            errors.add(exc)
    return kw, errors, extreme


def _bad_args(xcase, ycase, kw_errors):
    names = []
    if xcase.errors:
        names.append("X")
    if ycase is not None and ycase.errors:
        names.append("y")
    return names


def error_scales(net, X, y):
    """Magnitudes of the terms whose roundings fastbp and the reference make differently,
    by first-order error propagation in float64 from the network's parameters:
      D: logits, D_1 = |X| @ |W_1| + |b_1|, D_l = |A_{l-1}| @ |W_l| + |b_l|
         + (D_{l-1} * |f'(Z_{l-1})|) @ |W_l| (a dot product errs by ~K eps times the
         dot product of the magnitudes; errors from below pass through f' and W);
      E: output gradient terms, e.g. (|A| + |Y|) / (B n) for binary cross-entropy: A - Y
         may cancel, its error stays eps |A| (+ the error of A itself, D);
         backward E_{l-1} = (E_l @ |W_l|^T) * (|f'(Z_{l-1})| + 1), the + 1 for the
         rounding of f' itself (a few ulps of 1 + |f'|, see tests/test_kernels.py);
      G_l: |A_{l-1}|^T @ E_l and the column sums of E_l (the gradient products).
    Returns (output scale, loss scale, [G_l]). The test_network bound, proportional to
    eps, multiplies these instead of max |ref| alone, so that a result that is small by
    cancellation is not held to a bound relative to its own size."""
    f = reference.ACTIVATION_FUNCTIONS
    Ws = [np.asarray(w, np.float64) for w in net.weights]
    bs = [np.asarray(b, np.float64) for b in net.biases]
    acts = list(net.activation)
    A, As, Zs, D = np.asarray(X, np.float64), [], [], None
    for l, (W, b) in enumerate(zip(Ws, bs)):
        As.append(A)
        Z = A @ W + b
        T = np.abs(A) @ np.abs(W) + np.abs(b)
        if D is not None:
            T = T + (D * np.abs(f[acts[l - 1]][1](Zs[-1], As[-1]))) @ np.abs(W)
        D = T
        Zs.append(Z)
        if l < len(Ws) - 1:
            A = f[acts[l]][0](Z)
    out_act = net.output_activation
    Z = Zs[-1]
    if out_act == "softmax":
        A = np.exp(Z - Z.max(axis=1, keepdims=True))
        A /= A.sum(axis=1, keepdims=True)
    else:
        A = f[out_act][0](Z)
    B, N = Z.shape
    if y is None:
        return float(D.max()), None, None
    if net.loss_name == "cross_entropy":
        if y.ndim == 1:
            Y = np.eye(N)[y]
        else:
            Y = np.asarray(y, np.float64)
        mass = np.abs(Y).sum(axis=1, keepdims=True)
        E = ((np.abs(A) + D) * mass + np.abs(Y)) / B
        loss_scale = 2 * float((D * mass).max())
    elif net.loss_name == "binary_cross_entropy":
        Y = np.asarray(y, np.float64)
        E = (np.abs(A) + np.abs(Y) + D) / (B * N)
        loss_scale = 2 * float(D.max()) * (1 + float(np.abs(Y).max()))
    else:
        Y = np.asarray(y, np.float64).reshape(B, N)
        d = np.abs(f[out_act][1](Z, A)) + 1
        E = (np.abs(A) + np.abs(Y) + D * d) * d * 2 / (B * N)
        loss_scale = 2 * float((D * d * (np.abs(A) + np.abs(Y))).max())
    G = [0.0] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        G[l] = max(float((np.abs(As[l]).T @ E).max()), float(E.sum(axis=0).max()))
        if l > 0:
            E = (E @ np.abs(Ws[l]).T) * (np.abs(f[acts[l - 1]][1](Zs[l - 1], As[l])) + 1)
    return float(D.max()), loss_scale, G


def check_network_call(cfg, bias_seed, method, xcase, ycase, kw, kw_errors, kw_extreme):
    fast, ref = make_pair(cfg, bias_seed)
    dtype = np.dtype(cfg["dtype"])
    sizes = cfg["layer_sizes"]
    X, y = xcase.value, (ycase.value if ycase is not None else None)
    expected = set(xcase.errors) | (set(ycase.errors) if ycase is not None else set()) | kw_errors
    extreme = xcase.extreme or (ycase is not None and ycase.extreme) or kw_extreme
    if method == "fit" and extreme and not expected:
        # one step: a trajectory of steps that grow by orders of magnitude crosses the
        # overflow threshold, where fusing lr into the weight product (fastbp) or not (the
        # reference) legitimately decides which one overflows first
        kw = dict(kw, epochs=1, batch_size=xcase.clean.shape[0])
    X_before = np.array(X, copy=True) if isinstance(X, np.ndarray) else None
    before = snapshot(fast)

    res_f, exc_f = outcome(call, fast, method, X, y, kw)
    res_r, exc_r = outcome(call, ref, method, X, y, kw)

    if X_before is not None:
        assert same_array(X, X_before), "X was modified"

    for exc, who in ((exc_f, "fastbp"), (exc_r, "reference")):
        if exc is not None and not isinstance(exc, (ValueError, TypeError)):
            raise AssertionError(f"{who} raised {type(exc).__name__}: {exc}") from exc

    event(f"{method}: " + ("error expected" if expected else "extreme" if extreme else "valid")
          + f", fastbp {'ok' if exc_f is None else type(exc_f).__name__}")
    if expected:
        # (b): a bad argument: both raise the same allowed type, nothing changes
        assert exc_f is not None, f"fastbp accepted a bad input (expected {expected})"
        assert exc_r is not None, f"reference accepted a bad input (expected {expected})"
        assert type(exc_f) in expected, (
            f"fastbp raised {type(exc_f).__name__} ({exc_f}); expected one of "
            f"{sorted(e.__name__ for e in expected)}")
        assert type(exc_r) is type(exc_f), (
            f"fastbp raised {type(exc_f).__name__} ({exc_f}), reference "
            f"{type(exc_r).__name__} ({exc_r})")
        bad = _bad_args(xcase, ycase, kw_errors)
        if len(bad) == 1 and not kw_errors:
            assert re.search(_names(bad[0]), str(exc_f)), (
                f"message does not name {bad[0]}: {exc_f}")
        assert_unchanged(fast, before, f"failed {method}")
        assert fast.loss_curve_ == []
        # nothing hidden changed either (the shuffling RNG, the workspace): a clean fit
        # afterwards is the same run as on a fresh network
        fresh, _ = make_pair(cfg, bias_seed)
        rng = np.random.default_rng(0)
        Xc = rng.standard_normal((5, sizes[0]))
        yc = _valid_targets(cfg["loss"], sizes[-1], 5, rng)
        with np.errstate(all="ignore"):
            fast.fit(Xc, yc, epochs=1, batch_size=2, lr=0.05)
            fresh.fit(Xc, yc, epochs=1, batch_size=2, lr=0.05)
        assert_unchanged(fast, snapshot(fresh), "fit after a failed call")
        assert fast.loss_curve_ == fresh.loss_curve_
        return

    Xc = xcase.clean
    steps = 1
    if method == "fit":
        steps = kw["epochs"] * math.ceil(Xc.shape[0] / kw["batch_size"])
    tol = bound(dtype, sizes, steps=steps)
    if not extreme:
        with np.errstate(all="ignore"):
            out_scale, loss_scale, G = error_scales(
                fresh_copy(cfg, bias_seed), Xc, None if ycase is None else ycase.clean)
        lr = float(kw.get("lr", 0.0))

    if exc_f is not None or exc_r is not None:
        # a valid input can only fail by diverging (non-finite loss), in both alike
        assert exc_f is not None and exc_r is not None, (
            f"only one raised: fastbp {exc_f!r}, reference {exc_r!r}")
        assert type(exc_f) is type(exc_r) is fastbp.DivergedError, (exc_f, exc_r)
        assert method in ("train_step", "fit") and "diverged" in str(exc_f), exc_f
        if method == "train_step":
            assert_unchanged(fast, before, "train_step that diverged")
        else:  # fit keeps the last step taken; so does the reference
            assert len(fast.loss_curve_) == len(ref.loss_curve_), "loss_curve_ after a diverged fit"
            for l, (a, b) in enumerate(zip(fast.weights + fast.biases, ref.weights + ref.biases)):
                if extreme:
                    assert_same_finiteness(a, b, f"param {l} after a diverged fit")
                else:
                    assert_close(a, b, tol * max(1.0, float(np.abs(b).max()),
                                                 lr * G[l % (len(sizes) - 1)]), f"param {l}")
        return

    # (a): success; compare with the reference
    if method == "forward":
        assert res_f.shape == (Xc.shape[0], sizes[-1]) and res_f.dtype == dtype
    if extreme:
        if method in ("loss", "train_step"):
            assert math.isfinite(res_f) == math.isfinite(res_r), (
                f"{method}: fastbp {res_f!r}, reference {res_r!r}")
        elif method in ("forward", "gradients", "predict"):
            for l, (a, b) in enumerate(zip(_flatten(res_f), _flatten(res_r))):
                assert_same_finiteness(a, b, f"{method}[{l}]")
        if method in ("train_step", "fit"):
            for l, (a, b) in enumerate(zip(fast.weights + fast.biases, ref.weights + ref.biases)):
                assert_same_finiteness(a, b, f"param {l} after {method}")
            assert_same_finiteness(fast.loss_curve_, ref.loss_curve_, "loss_curve_")
        return

    if method == "forward":
        assert_close(res_f, res_r, tol * max(1.0, float(np.abs(res_r).max()), out_scale), "forward")
    elif method == "predict":
        out = fast.forward(Xc)
        want = {"cross_entropy": lambda o: o.argmax(axis=1),
                "binary_cross_entropy": lambda o: (o > 0.5).astype(np.int64),
                "mse": lambda o: o}[cfg["loss"]](out)
        assert np.array_equal(res_f, want), "predict is not the documented function of forward"
        assert res_f.shape == res_r.shape and res_f.dtype == res_r.dtype
    elif method in ("loss", "train_step"):
        assert isinstance(res_f, float)
        assert abs(res_f - res_r) <= tol * max(1.0, abs(res_r), loss_scale), (
            f"{method}: {res_f} vs {res_r}")
    elif method == "gradients":
        dW, db = res_f
        dW_r, db_r = res_r
        assert len(dW) == len(db) == len(sizes) - 1
        for l in range(len(dW)):
            g = max(float(np.abs(dW_r[l]).max()), float(np.abs(db_r[l]).max()), 1e-3, G[l])
            assert_close(dW[l], dW_r[l], tol * g, f"dW[{l}]")
            assert_close(db[l], db_r[l], tol * g, f"db[{l}]")
    if method in ("train_step", "fit"):
        n = len(sizes) - 1
        for l, (a, b) in enumerate(zip(fast.weights + fast.biases, ref.weights + ref.biases)):
            assert_close(a, b, tol * max(1.0, float(np.abs(b).max()), lr * G[l % n]),
                         f"param {l} after {method}")
        if method == "fit":
            assert len(fast.loss_curve_) == len(ref.loss_curve_) == kw["epochs"]
            np.testing.assert_allclose(fast.loss_curve_, ref.loss_curve_, rtol=tol, atol=tol)


def fresh_copy(cfg, bias_seed):
    return make_pair(cfg, bias_seed)[1]


def _valid_targets(loss, n_out, B, rng):
    if loss == "cross_entropy":
        return rng.integers(0, n_out, B)
    if loss == "binary_cross_entropy":
        return (rng.random((B, n_out)) > 0.5).astype(np.float64)
    return rng.standard_normal((B, n_out))


# ------------------------------------------------------------------------------------------
# Network: success equals the reference, failure is a clean ValueError/TypeError
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@_settings(170)
@given(data=st.data())
def test_network_call_matches_reference_or_fails_cleanly(method, data):
    cfg = data.draw(net_configs(), label="config")
    B = data.draw(st.integers(1, 9), label="B")
    # which argument(s) may be spoiled; the others are valid (moderate or extreme values)
    spoil = data.draw(st.sampled_from(["none"] * 4 + ["X"] * 3 + ["y"] * 2 + ["kwargs", "all"]),
                      label="spoil")
    xcase = data.draw(array_cases((B, cfg["layer_sizes"][0]), cfg["dtype"], free=(0,),
                                  bad=spoil in ("X", "all")), label="X")
    ycase = None
    if method in XY_METHODS:
        ycase = data.draw(y_cases(cfg["loss"], cfg["layer_sizes"][-1], B, cfg["dtype"],
                                  bad=spoil in ("y", "all")), label="y")
    kw, kw_errors, kw_extreme = data.draw(fit_kwargs(method, cfg["dtype"], B,
                                                     bad=spoil in ("kwargs", "all")),
                                          label="kwargs")
    check_network_call(cfg, data.draw(st.integers(0, 1000), label="bias_seed"), method,
                       xcase, ycase, kw, kw_errors, kw_extreme)


@pytest.mark.parametrize("method", METHODS)
@_settings(70)
@given(data=st.data())
def test_network_valid_inputs_match_reference(method, data):
    """Only valid, moderate inputs: the parity half of the property gets every example."""
    cfg = data.draw(net_configs(), label="config")
    xcase = data.draw(x_cases(cfg["layer_sizes"][0], cfg["dtype"], bad=False, special=False),
                      label="X")
    B = xcase.clean.shape[0]
    ycase = None
    if method in XY_METHODS:
        ycase = data.draw(y_cases(cfg["loss"], cfg["layer_sizes"][-1], B, cfg["dtype"], bad=False),
                          label="y")
        if ycase.extreme or ycase.errors:  # float16 targets above 65504
            return
    kw, kw_errors, kw_extreme = data.draw(fit_kwargs(method, cfg["dtype"], B, bad=False),
                                          label="kwargs")
    assert not xcase.errors and not kw_errors
    check_network_call(cfg, data.draw(st.integers(0, 1000), label="bias_seed"), method,
                       xcase, ycase, kw, kw_errors, kw_extreme)


@pytest.mark.parametrize("method", METHODS)
@_settings(100)
@given(data=st.data())
def test_network_extreme_values_overflow_alike(method, data):
    """X with extreme finite values at random places (1e5 to 1e30; 1e40 to 1e300, which
    float32 cannot hold): fastbp and the reference fail alike, or succeed with non-finite
    results in the same places. (mse, the loss that overflows, is drawn half the time.)"""
    cfg = data.draw(net_configs(LOSSES + ["mse"] * 2), label="config")
    B = data.draw(st.integers(1, 9), label="B")
    xcase = data.draw(array_cases((B, cfg["layer_sizes"][0]), cfg["dtype"], free=(0,), bad=False,
                                  reps=["float64", "float32", "longdouble"],
                                  regimes=("extreme", "overflow32")), label="X")
    ycase = None
    if method in XY_METHODS:
        ycase = data.draw(y_cases(cfg["loss"], cfg["layer_sizes"][-1], B, cfg["dtype"], bad=False),
                          label="y")
    kw, kw_errors, kw_extreme = data.draw(fit_kwargs(method, cfg["dtype"], B, bad=False),
                                          label="kwargs")
    check_network_call(cfg, data.draw(st.integers(0, 1000), label="bias_seed"), method,
                       xcase, ycase, kw, kw_errors, kw_extreme)


@pytest.mark.parametrize("method", ["train_step", "fit"])
@_settings(120)
@given(data=st.data())
def test_network_training_arguments_checked_before_anything_changes(method, data):
    """lr (NaN, inf, 0, negative, non-numbers, and 1e39 / 1e300, which a float32 network
    holds as inf), epochs, batch_size, shuffle; X and y valid."""
    cfg = data.draw(net_configs(), label="config")
    B = data.draw(st.integers(1, 9), label="B")
    xcase = data.draw(array_cases((B, cfg["layer_sizes"][0]), cfg["dtype"], free=(0,), bad=False,
                                  special=False), label="X")
    ycase = data.draw(y_cases(cfg["loss"], cfg["layer_sizes"][-1], B, cfg["dtype"], bad=False),
                      label="y")
    kw, kw_errors, kw_extreme = data.draw(fit_kwargs(method, cfg["dtype"], B, bad=True),
                                          label="kwargs")
    check_network_call(cfg, data.draw(st.integers(0, 1000), label="bias_seed"), method,
                       xcase, ycase, kw, kw_errors, kw_extreme)


# ------------------------------------------------------------------------------------------
# Network: converted inputs behave exactly like the clean array
# ------------------------------------------------------------------------------------------

def _run_all(net_factory, X, y, kw):
    """Every method on one input, in turn on one network; returns everything each produced
    (arrays, or the exception's type and message: a valid input may still diverge)."""
    net = net_factory()
    steps = [lambda: [net.forward(X)], lambda: [net.predict(X)],
             lambda: [np.float64(net.loss(X, y))], lambda: _flatten(net.gradients(X, y)),
             lambda: [np.float64(net.train_step(X, y, lr=kw["lr"]))] + snapshot(net),
             lambda: [net.fit(X, y, epochs=kw["epochs"], batch_size=kw["batch_size"],
                              lr=kw["lr"], shuffle=kw["shuffle"]) and np.array(net.loss_curve_)]
             + snapshot(net)]
    out = []
    for step in steps:
        with np.errstate(all="ignore"):
            try:
                out.append(step())
            except (ValueError, TypeError) as exc:
                out.append((type(exc), str(exc)))
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@_settings(45)
@given(data=st.data())
def test_converted_inputs_are_bit_identical_to_clean_arrays(layout, data):
    """(At least 2 x 2, so that a Fortran-ordered or strided X is not also C-contiguous.)"""
    cfg = data.draw(net_configs(min_inputs=2), label="config")
    xcase = data.draw(x_cases(cfg["layer_sizes"][0], cfg["dtype"], bad=False, special=False,
                              layouts=[layout], min_rows=2), label="X")
    B = xcase.clean.shape[0]
    ycase = data.draw(y_cases(cfg["loss"], cfg["layer_sizes"][-1], B, cfg["dtype"], bad=False),
                      label="y")
    if ycase.extreme or ycase.errors:  # training on 1e30 targets may diverge; float16 > 65504
        return
    kw = dict(lr=data.draw(st.floats(1e-3, 0.2)), epochs=data.draw(st.integers(1, 2)),
              batch_size=data.draw(st.integers(1, B + 1)), shuffle=data.draw(st.booleans()))
    bias_seed = data.draw(st.integers(0, 1000))
    Xv_before = np.array(xcase.value, copy=True) if isinstance(xcase.value, np.ndarray) else None
    yv_before = np.array(ycase.value, copy=True) if isinstance(ycase.value, np.ndarray) else None
    for which in (0, 1):  # fastbp, then the reference
        factory = lambda: make_pair(cfg, bias_seed)[which]  # noqa: E731
        got = _run_all(factory, xcase.value, ycase.value, kw)
        want = _run_all(factory, xcase.clean, ycase.clean, kw)
        who = "fastbp" if which == 0 else "reference"
        for i, (a, b) in enumerate(zip(got, want)):
            assert isinstance(a, tuple) == isinstance(b, tuple), (
                f"{who} step {i}: {a!r} with {xcase.desc} / {ycase.desc}, {b!r} with the clean arrays")
            if isinstance(a, tuple):
                assert a == b, f"{who} step {i}: {a!r} vs {b!r}"
                continue
            for j, (u, v) in enumerate(zip(a, b)):
                assert u.dtype == v.dtype and u.shape == v.shape, f"{who} step {i}, result {j}"
                assert np.array_equal(u, v, equal_nan=True), (
                    f"{who} step {i}, result {j} differs between {xcase.desc} / {ycase.desc} "
                    f"and the clean arrays")
    if Xv_before is not None:
        assert same_array(xcase.value, Xv_before), "X was modified"
    if yv_before is not None:
        assert same_array(ycase.value, yv_before), "y was modified"


# ------------------------------------------------------------------------------------------
# fastbp.kernels
# ------------------------------------------------------------------------------------------

SENTINEL = 7.25


@st.composite
def out_cases(draw, shape, dtype, bad=True, first=False):
    """(output array, errors). The first output of a call fixes the shapes, so its shape is
    never wrong."""
    kinds = ["ok"]
    if bad:
        kinds = ["list", "int", "float16", "big-endian", "fortran", "strided", "read-only"]
        if not first:
            kinds += ["wrong-shape", "other-float"]
    kind = draw(st.sampled_from(kinds))
    dtype = np.dtype(dtype)
    if kind == "fortran" and (len(shape) < 2 or min(shape) < 2):
        kind = "strided"
    arr = {"ok": lambda: np.full(shape, SENTINEL, dtype),
           "list": lambda: np.full(shape, SENTINEL).tolist(),
           "int": lambda: np.full(shape, 7, np.int64),
           "float16": lambda: np.full(shape, SENTINEL, np.float16),
           "big-endian": lambda: np.full(shape, SENTINEL, dtype.newbyteorder(">")),
           "fortran": lambda: np.asfortranarray(np.full(shape, SENTINEL, dtype)),
           "strided": lambda: _strided(np.full(shape, SENTINEL, dtype), len(shape) - 1),
           "read-only": lambda: _read_only(np.full(shape, SENTINEL, dtype)),
           "wrong-shape": lambda: np.full(tuple(s + 1 for s in shape), SENTINEL, dtype),
           "other-float": lambda: np.full(shape, SENTINEL,
                                          np.float32 if dtype == np.float64 else np.float64),
           }[kind]()
    errors = {"ok": set(), "list": {TE}, "int": {TE}, "float16": {TE}, "big-endian": {TE},
              "other-float": {TE}, "fortran": {VE}, "strided": {VE}, "read-only": {VE},
              "wrong-shape": {VE}}[kind]
    if kind in ("fortran", "strided") and arr.flags.c_contiguous:
        errors = set()  # NumPy calls a view C-contiguous when the strided axis has length 1
    return arr, errors, kind


def _read_only(a):
    a.flags.writeable = False
    return a


def _activation_arg(draw, allow_softmax, bad=True):
    names = ACTIVATIONS + ["logistic"] + (["softmax"] if allow_softmax else [])
    choices = ["bogus", "softmax", 3] if bad else names
    act = draw(st.sampled_from(choices))
    if act == 3:
        return act, {TE}
    if act == "bogus" or (act == "softmax" and not allow_softmax):
        return act, {VE}
    return act, set()


def _canon(act):
    return "sigmoid" if act == "logistic" else act


def f_ref(name, Z):
    name = _canon(name)
    if name == "softmax":
        return np.exp(reference._log_softmax(Z))
    return reference.ACTIVATION_FUNCTIONS[name][0](Z)


def df_ref(name, Z, A):
    return reference.ACTIVATION_FUNCTIONS[_canon(name)][1](Z, A)


def activation_bound(name, z, ref, dtype):
    """tests/test_kernels.py: exact for piecewise-linear, a few ulps otherwise."""
    name = _canon(name)
    ref = np.abs(np.asarray(ref, np.float64))
    if name in PIECEWISE_LINEAR:
        return np.zeros(ref.shape)
    eps = eps_of(dtype)
    b = 8 * eps * (1 + ref)
    if name == "gelu":
        b = b + 8 * eps * np.abs(np.asarray(z, np.float64))
    if name == "softmax":
        zz = np.asarray(z, np.float64)
        s = zz - zz.max(axis=1, keepdims=True)
        L = np.log(np.exp(s).sum(axis=1, keepdims=True))
        b = 4 * eps * (zz.shape[1] + 4 + np.abs(s) + np.abs(L)) * ref + tiny_of(dtype)
    return b


def derivative_bound(name, deriv, dtype):
    if _canon(name) in PIECEWISE_LINEAR:
        return np.zeros(np.shape(deriv))
    return 8 * eps_of(dtype) * (1 + np.abs(np.asarray(deriv, np.float64)))


def product_bound(dtype, X, Y, length, extra=None):
    absprod = np.abs(np.asarray(X, np.float64)) @ np.abs(np.asarray(Y, np.float64))
    if extra is not None:
        absprod = absprod + np.abs(np.asarray(extra, np.float64))
    return 2 * (length + 1) * eps_of(dtype) * absprod + tiny_of(dtype)


def assert_within(got, want, bnd, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    err = np.abs(got - want)
    bnd = np.broadcast_to(np.asarray(bnd, np.float64), err.shape)
    bad = ~(err <= bnd)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} outside the bound; at {i}: "
                             f"got {got[i]!r}, want {want[i]!r}, bound {bnd[i]:.3e}")


KERNEL_ARGS = {
    "dense_forward": ("Z", "A_out", "A_in", "W", "b", "activation", "n_threads"),
    "activation_forward": ("A", "Z", "activation"),
    "activation_backward": ("dZ", "dA", "Z", "A", "activation"),
    "output_gradient": ("dZ", "Z", "A", "y"),
    "weight_gradient": ("dW", "db", "A_in", "dZ", "n_threads"),
    "input_gradient": ("dZ_in", "dZ", "W", "Z_in", "A_in", "activation", "n_threads"),
    "sgd_update": ("param", "grad", "lr", "n_threads"),
}
KERNELS = ["dense_forward", "activation_forward", "activation_backward", "output_gradient",
           "weight_gradient", "input_gradient", "sgd_update"]


@st.composite
def kernel_calls(draw, fn, bad=True):
    """(name, argument name -> value, outputs [(name, array, errors)], errors, inputs
    [(name, Case)], dtype, extreme)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    B, K, N = (draw(st.integers(1, 9)) for _ in range(3))
    args, outs, ins, errs, shapes = {}, [], [], {}, {}
    # spoil one argument (or all, or none, or pass an output as an input)
    spoil = draw(st.sampled_from(["none"] * 3 + ["all", "overlap", "overlap"]
                                 + list(KERNEL_ARGS[fn]) * 2)) if bad else "none"

    def may_spoil(name):
        return spoil in (name, "all")

    def out(name, shape, first=False):
        arr, err, _ = draw(out_cases(shape, dtype, bad=may_spoil(name), first=first))
        args[name] = arr
        outs.append((name, arr, err))
        errs[name] = set(err)

    def inp(name, shape, free=(), **kw):
        shapes[name] = tuple(shape)
        case = draw(array_cases(shape, dtype, free=free, bad=may_spoil(name), **kw))
        args[name] = case.value
        ins.append((name, case))
        errs[name] = set(case.errors)

    if fn == "dense_forward":
        out("Z", (B, N), first=True)
        out("A_out", (B, N))
        inp("A_in", (B, K), free=(1,))
        inp("W", (K, N), elements=(-1.0, 1.0))
        inp("b", (N,))
        act, e = _activation_arg(draw, True, may_spoil("activation"))
        args["activation"] = act
        errs["activation"] = e
    elif fn == "activation_forward":
        out("A", (B, N), first=True)
        inp("Z", (B, N))
        act, e = _activation_arg(draw, False, may_spoil("activation"))
        args["activation"] = act
        errs["activation"] = e
    elif fn == "activation_backward":
        out("dZ", (B, N), first=True)
        inp("dA", (B, N))
        inp("Z", (B, N))
        inp("A", (B, N))
        act, e = _activation_arg(draw, False, may_spoil("activation"))
        args["activation"] = act
        errs["activation"] = e
    elif fn == "output_gradient":
        out("dZ", (B, N), first=True)
        loss = draw(st.sampled_from(LOSSES))
        args["loss"] = loss
        inp("Z", (B, N))
        inp("A", (B, N), elements=(0.0, 1.0) if loss != "mse" else (-4.0, 4.0))
        ycase = draw(y_cases(loss, N, B, dtype, bad=may_spoil("y")))
        args["y"] = ycase.value
        ins.append(("y", ycase))
        errs["y"] = set(ycase.errors)
        if loss == "mse" and draw(st.booleans()):
            args["output_activation"] = draw(st.sampled_from(ACTIVATIONS + ["logistic"]))
    elif fn == "weight_gradient":
        out("dW", (K, N), first=True)
        out("db", (N,))
        inp("A_in", (B, K), free=(0,))
        inp("dZ", (B, N))
    elif fn == "input_gradient":
        out("dZ_in", (B, K), first=True)
        inp("dZ", (B, N))
        inp("W", (K, N), free=(1,), elements=(-1.0, 1.0))
        act, e = _activation_arg(draw, False, may_spoil("activation"))
        args["activation"] = act
        errs["activation"] = e
        if act == "identity" and draw(st.booleans()):
            args["Z_in"] = args["A_in"] = None
        else:
            inp("Z_in", (B, K))
            inp("A_in", (B, K))
    else:  # sgd_update
        shape = draw(st.sampled_from([(B, N), (N,), (B, K, N)]))
        arr, err, kind = draw(out_cases(shape, dtype, bad=may_spoil("param"), first=True))
        args["param"] = arr
        outs.append(("param", arr, err))
        errs["param"] = set(err)
        inp("grad", shape)
        lr, e, extreme_lr = draw(_lr_cases(dtype, may_spoil("lr")))
        args["lr"] = lr
        errs["lr"] = e
    if fn in ("dense_forward", "weight_gradient", "input_gradient", "sgd_update"):
        nt = draw(st.sampled_from([0, 1.5] if may_spoil("n_threads") else [None, 1, 2]))
        args["n_threads"] = nt
        errs["n_threads"] = {0: {VE}, 1.5: {TE}}.get(nt, set())
        if fn != "sgd_update" and draw(st.booleans()):
            args["naive"] = True
    if spoil == "overlap":
        # an output passed as an input of the same shape: a ValueError, except for the two
        # documented in-place uses (activation_forward A is Z, activation_backward dZ is dA)
        pairs = [(o, i) for o, arr, _ in outs for i, shp in shapes.items()
                 if isinstance(arr, np.ndarray) and arr.shape == shp and args.get(i) is not None]
        if pairs:
            o, i = draw(st.sampled_from(pairs))
            arr = args[o]
            args[i] = arr
            ins = [(n, c) if n != i else (n, Case(arr, arr, (), False, f"{i} is {o}"))
                   for n, c in ins]
            errs[i] = set()
            if (fn, o, i) not in (("activation_forward", "A", "Z"),
                                  ("activation_backward", "dZ", "dA")):
                errs[i] = {VE}
    extreme = any(c.extreme for _, c in ins) or (fn == "sgd_update" and extreme_lr)
    errors = set().union(*errs.values())
    return fn, args, outs, errors, ins, dtype, extreme


@st.composite
def _lr_cases(draw, dtype, bad):
    kind = draw(st.sampled_from(["ok", "bad-value", "bad-type", "huge", "huge"] if bad else ["ok"]))
    if kind == "ok":
        return draw(st.floats(1e-3, 1.0)), set(), False
    if kind == "bad-value":
        return draw(st.sampled_from([np.nan, np.inf, 0.0, -1.0])), {VE}, False
    if kind == "bad-type":
        return draw(st.sampled_from(["0.1", None, True])), {TE}, False
    lr = draw(st.sampled_from([1e39, 1e300]))  # infinite once rounded to float32
    return lr, ({VE} if dtype == np.float32 else set()), dtype != np.float32


def kernel_expected(fn, args, dtype, outs_before):
    """What the kernel must compute, in float64, from the converted inputs, with the
    elementwise bound allowed: {output name: (want, bound)}; and the return value."""
    c = {k: (_converted(np.asarray(v), dtype) if k in ("A_in", "W", "b", "Z", "A", "dA", "dZ",
                                                      "Z_in", "grad") and v is not None else v)
         for k, v in args.items()}
    eps, tiny = eps_of(dtype), tiny_of(dtype)
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    if fn == "dense_forward":
        A_in, W, b = c["A_in"], c["W"], c["b"]
        Zw = f64(A_in) @ f64(W) + f64(b)
        return {"Z": (Zw, product_bound(dtype, A_in, W, A_in.shape[1], b))}, None
    if fn == "activation_forward":
        ref = f_ref(args["activation"], c["Z"])
        return {"A": (ref, activation_bound(args["activation"], c["Z"], ref, dtype) + tiny)}, None
    if fn == "activation_backward":
        d = df_ref(args["activation"], c["Z"], c["A"])
        want = f64(c["dA"]) * f64(d)
        bnd = np.abs(f64(c["dA"])) * derivative_bound(args["activation"], d, dtype) \
            + 2 * eps * np.abs(want) + tiny
        return {"dZ": (want, bnd)}, None
    if fn == "output_gradient":
        Z, A = f64(c["Z"]), f64(c["A"])
        B, N = Z.shape
        loss = args["loss"]
        yv = np.asarray(args["y"])
        if loss == "cross_entropy":
            m = Z.max(axis=1, keepdims=True)
            lse = m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True))
            if yv.ndim == 1:
                lab = np.ascontiguousarray(yv, dtype=np.int64)
                Y = np.eye(N)[lab]
                mass = np.ones((B, 1))
            else:
                Y = f64(_converted(yv, dtype))
                mass = f64(f64(Y.sum(axis=1, keepdims=True)).astype(dtype))
            value = float((Y * (lse - Z)).sum() / B)
            want = (A * mass - Y) / B
            bnd = 8 * eps * (np.abs(A) * mass + np.abs(Y)) / B + tiny
            vb = 1e-12 * (np.abs(Y) * (np.abs(lse) + np.abs(Z))).sum() / B + 1e-300
        else:
            Y = f64(_converted(yv, dtype)).reshape(B, N)
            if loss == "binary_cross_entropy":
                terms = np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))
                want = (A - Y) / (B * N)
                bnd = 8 * eps * (np.abs(A) + np.abs(Y)) / (B * N) + tiny
                vb = 1e-12 * (np.abs(Z) * (1 + np.abs(Y)) + 1).sum() / (B * N)
            else:
                out = args.get("output_activation") or "identity"
                diff = A - Y
                terms = diff * diff
                d = f64(df_ref(out, c["Z"], c["A"]))
                want = diff * (2.0 / (B * N)) * d
                bnd = (np.abs(diff) * (2.0 / (B * N))
                       * (derivative_bound(out, d, dtype) + 8 * eps * np.abs(d)) + tiny)
                # fastbp forms A - Y in the dtype, then squares and sums in double
                vb = 4 * eps * terms.sum() / (B * N) + 1e-300
            value = float(terms.sum() / (B * N))
        return {"dZ": (want, bnd)}, (value, vb)
    if fn == "weight_gradient":
        A_in, dZ = c["A_in"], c["dZ"]
        B = A_in.shape[0]
        dW = f64(A_in).T @ f64(dZ)
        db = f64(dZ).sum(axis=0)
        return {"dW": (dW, product_bound(dtype, A_in.T, dZ, B)),
                "db": (db, 2 * (B + 1) * eps * np.abs(f64(dZ)).sum(axis=0) + tiny)}, None
    if fn == "input_gradient":
        dZ, W = c["dZ"], c["W"]
        g = f64(dZ) @ f64(W).T
        gb = product_bound(dtype, dZ, W.T, W.shape[1])
        act = args["activation"]
        if args.get("Z_in") is None:
            return {"dZ_in": (g, gb)}, None
        d = f64(df_ref(act, c["Z_in"], c["A_in"]))
        want = g * d
        bnd = gb * np.abs(d) + np.abs(g) * derivative_bound(act, d, dtype) + 2 * eps * np.abs(want) + tiny
        return {"dZ_in": (want, bnd)}, None
    # sgd_update
    p0 = f64(outs_before["param"])
    lr = float(dtype.type(args["lr"]))
    g = f64(c["grad"])
    want = p0 - lr * g
    return {"param": (want, 2 * eps * (np.abs(p0) + np.abs(lr * g)) + tiny)}, None


def call_kernel(fn, args):
    with np.errstate(all="ignore"):
        return getattr(kernels, fn)(**args)


@pytest.mark.parametrize("kernel", KERNELS)
@_settings(150)
@given(data=st.data())
def test_kernels_match_numpy_or_fail_cleanly(kernel, data):
    fn, args, outs, errors, ins, dtype, extreme = data.draw(kernel_calls(kernel), label="call")
    outs_before = [(name, np.array(arr, copy=True)) for name, arr, _ in outs]
    out_ids = {id(arr) for _, arr, _ in outs}
    ins_before = {name: np.array(case.value, copy=True) for name, case in ins
                  if isinstance(case.value, np.ndarray) and id(case.value) not in out_ids}
    args_before = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                   for k, v in args.items()}
    result, exc = outcome(call_kernel, fn, args)
    event(f"{fn}: " + ("error expected" if errors else "extreme" if extreme else "valid")
          + f", {'ok' if exc is None else type(exc).__name__}")
    if exc is not None and not isinstance(exc, (ValueError, TypeError)):
        raise AssertionError(f"{fn} raised {type(exc).__name__}: {exc}") from exc
    for name, before in ins_before.items():
        assert same_array(args[name], before), f"input {name} modified"
    if errors:
        assert exc is not None, f"{fn} accepted a bad call (expected {errors})"
        assert type(exc) in errors, (
            f"{fn} raised {type(exc).__name__} ({exc}); expected one of "
            f"{sorted(e.__name__ for e in errors)}")
        for (name, before), (_, arr, _) in zip(outs_before, outs):
            assert np.array_equal(np.asarray(arr), before), f"output {name} written by a failed call"
        return
    assert exc is None, f"{fn} rejected a valid call: {type(exc).__name__}: {exc}"
    if extreme:
        return  # values above 1e4: overflow is legitimate; the call only must not fail
    expected, value = kernel_expected(fn, args_before, dtype, dict(outs_before))
    for name, (want, bnd) in expected.items():
        got = args[name]
        assert isinstance(got, np.ndarray) and got.shape == np.shape(want)
        assert got.dtype == dtype
        assert np.isfinite(got).all(), f"{fn}: {name} not finite"
        assert_within(got, want, bnd, f"{fn} {name}")
    if fn == "dense_forward":  # the epilogue, on fastbp's own Z
        Z = args["Z"]
        ref = f_ref(args["activation"], Z)
        assert_within(args["A_out"], ref,
                      activation_bound(args["activation"], Z, ref, dtype) + tiny_of(dtype),
                      "dense_forward A_out")
    if value is not None:
        want, vb = value
        assert isinstance(result, float) and math.isfinite(result)
        assert abs(result - want) <= vb + 1e-12 * abs(want), f"{fn} value {result} vs {want}"


@pytest.mark.parametrize("kernel", KERNELS)
@_settings(40)
@given(data=st.data())
def test_kernel_input_conversions_are_bit_identical(kernel, data):
    """Any valid representation of an input gives the result of the clean C array."""
    fn, args, outs, errors, ins, dtype, extreme = data.draw(kernel_calls(kernel, bad=False),
                                                            label="call")
    if errors:
        return
    clean_args = dict(args)
    for name, case in ins:
        clean_args[name] = case.clean
    for name, arr, _ in outs:
        clean_args[name] = np.array(arr, copy=True)
    r1, e1 = outcome(call_kernel, fn, args)
    r2, e2 = outcome(call_kernel, fn, clean_args)
    assert e1 is None and e2 is None, (e1, e2)
    assert r1 == r2 or (r1 != r1 and r2 != r2)
    for name, arr, _ in outs:
        assert np.array_equal(arr, clean_args[name], equal_nan=True), f"{fn} {name}"


# ------------------------------------------------------------------------------------------
# Regressions: library bugs found by the properties above (each fails until fixed)
# ------------------------------------------------------------------------------------------

CLASSES = [fastbp.Network, reference.Network]
CLASS_IDS = ["fastbp", "reference"]


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("where", ["X-list", "X-object-array", "y-list"])
def test_regression_python_int_too_large_for_float_is_a_clean_error(cls, where):
    """Found by test_network_call_matches_reference_or_fails_cleanly (X of rep
    "object-bigint"). A Python int beyond float64 (10**400) in X or y: NumPy's cast raises
    OverflowError, which _validation._as_numeric_array does not catch (only TypeError and
    ValueError), so it escapes instead of "a ValueError or TypeError whose message names the
    argument". Expected: ValueError or TypeError naming X / y; got: OverflowError("int too
    large to convert to float"), from fastbp and the reference alike."""
    net = cls([2, 3], activation="relu", loss="mse", seed=0)
    before = snapshot(net)
    X, y, name = [[0.5, 1.0]], [[0.0, 0.0, 0.0]], "X"
    if where == "X-list":
        X = [[10 ** 400, 1.0]]
    elif where == "X-object-array":
        X = np.array([[10 ** 400, 1.0]], dtype=object)
    else:
        y, name = [[10 ** 400, 0.0, 0.0]], "y"
    for method in ["forward", "loss", "gradients", "train_step", "fit"]:
        if method == "forward" and name == "y":
            continue
        with np.errstate(all="ignore"), pytest.raises((ValueError, TypeError), match=_names(name)):
            call(net, method, X, y, {"lr": 0.1} if method == "train_step" else
                 {"epochs": 1, "batch_size": 1} if method == "fit" else {})
    assert_unchanged(net, before, "after a rejected call")


def test_regression_kernel_python_int_too_large_for_float_is_a_clean_error():
    """The same through fastbp.kernels (test_kernels_match_numpy_or_fail_cleanly): got
    OverflowError, expected ValueError/TypeError naming `grad`, `param` untouched."""
    param = np.ones(2)
    with pytest.raises((ValueError, TypeError), match=_names("grad")):
        kernels.sgd_update(param, [10 ** 400, 1], 0.1)
    assert np.array_equal(param, np.ones(2))


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("method", ["train_step", "fit"])
@pytest.mark.parametrize("lr", [1e39, 1e300])
def test_regression_lr_infinite_in_float32_is_rejected(cls, method, lr):
    """Found by test_network_call_matches_reference_or_fails_cleanly (lr "huge"). lr=1e39 is
    a finite Python float but infinite in the float32 network's dtype; check_lr accepts it,
    the compiled step (and the reference's `self.dtype.type(lr)`) rounds it to inf, and the
    step silently turns every weight with a non-zero gradient into +-inf (0 * inf = NaN
    where a gradient is zero). Like X = 1e300 for a float32 network (a ValueError by
    test_bad_input.py), this is an infinite lr, which the rules make a ValueError: expected
    one naming lr and an unchanged network; got: the call returns normally, e.g. train_step
    returns 1.3038 and net.weights[0] is [[inf, -inf, -inf], [inf, -inf, -inf]]."""
    net = cls([2, 3], activation="relu", loss="cross_entropy", dtype=np.float32, seed=0)
    before = snapshot(net)
    X, y = np.ones((4, 2)), np.array([0, 1, 2, 0])
    with np.errstate(all="ignore"), pytest.raises(ValueError, match=_names("lr")):
        call(net, method, X, y, {"lr": lr} if method == "train_step" else
             {"lr": lr, "epochs": 1, "batch_size": 2})
    assert_unchanged(net, before, "after a rejected lr")


def test_regression_kernel_sgd_update_lr_infinite_in_float32_is_rejected():
    """kernels.sgd_update(param float32, grad, lr=1e39) (test_kernels_match_numpy_or_fail_
    cleanly): expected ValueError naming lr, param untouched; got param == [-inf, -inf]."""
    param = np.ones(2, dtype=np.float32)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match=_names("lr")):
        kernels.sgd_update(param, np.ones(2, dtype=np.float32), 1e39)
    assert np.array_equal(param, np.ones(2, dtype=np.float32))


def test_regression_gradients_when_the_loss_overflows_are_not_stale():
    """Found by test_network_extreme_values_overflow_alike. When the loss is not finite,
    src/_network.pyx loss_and_gradient returns before the backward pass, so
    Network.gradients copies out whatever the gradient buffer held: the gradients of the
    previous call (zeros on a fresh network), silently, as if they were this input's.
    Network [1, 1, 1], identity, mse, float64, seed 0; X = [[1e200]], y = [[0.25]]:
    reference: loss inf and dW = [[[inf]], [[-inf]]] (overflowed, non-finite);
    fastbp: after gradients([[0.5]], y) it returns exactly that call's dW
    [[[0.35024015]], [[-0.20836974]]] again (finite, wrong); on a fresh network zeros."""
    kw = dict(activation="identity", loss="mse", dtype=np.float64, seed=0)
    net, ref = fastbp.Network([1, 1, 1], **kw), reference.Network([1, 1, 1], **kw)
    y = [[0.25]]
    first = net.gradients([[0.5]], y)
    with np.errstate(all="ignore"):
        got, want = net.gradients([[1e200]], y), ref.gradients([[1e200]], y)
    for l, (a, b) in enumerate(zip(_flatten(got), _flatten(want))):
        assert_same_finiteness(a, b, f"gradients[{l}] for X = 1e200")
    assert not all(np.array_equal(a, b) for a, b in zip(_flatten(got), _flatten(first))), (
        "gradients() returned the previous call's gradients")


@pytest.mark.parametrize("method", ["loss", "train_step", "fit"])
def test_regression_float32_mse_overflow_fails_alike(method):
    """Found by test_network_call_matches_reference_or_fails_cleanly and
    test_network_extreme_values_overflow_alike. float32 mse with a residual of 1e30 (targets
    or inputs of that size, all finite in float32): the reference squares the residual in
    float32 (inf), so loss() is inf and train_step/fit raise ValueError("training diverged");
    fastbp squares in double (src/_losses.pxd), so loss() is 5.0e59, and train_step/fit take
    a step of size ~1e29 without error. The same valid input must give the same outcome in
    both; one of the two has to change (a float32 network whose loss exceeds float32's range
    has diverged by the reference's rule).
    Network [1, 1, 2], identity, mse, float32, seed 0; X = [[0.5]], y = [[1e30, 0]], lr 0.25."""
    kw = dict(activation="identity", loss="mse", dtype=np.float32, seed=0)
    net, ref = fastbp.Network([1, 1, 2], **kw), reference.Network([1, 1, 2], **kw)
    X, y = [[0.5]], [[1e30, 0.0]]
    args = {"loss": {}, "train_step": {"lr": 0.25},
            "fit": {"lr": 0.25, "epochs": 1, "batch_size": 1}}[method]
    res_f, exc_f = outcome(call, net, method, X, y, args)
    res_r, exc_r = outcome(call, ref, method, X, y, args)
    assert type(exc_f) is type(exc_r), f"fastbp: {exc_f!r} / {res_f!r}; reference: {exc_r!r} / {res_r!r}"
    if method == "loss":
        assert math.isfinite(res_f) == math.isfinite(res_r), f"fastbp {res_f!r}, reference {res_r!r}"


def test_regression_float32_fit_that_diverges_with_moderate_inputs_fails_alike():
    """Found by test_converted_inputs_are_bit_identical_to_clean_arrays (a 12x random run).
    Moderate inputs, lr 0.125: training diverges within 4 steps. Before the fix the
    reference raised ValueError("training diverged") at epoch 2, batch 2 (its float32 loss
    overflowed), while fastbp.fit returned normally with loss_curve_ [26611.3, 6.0e41] (a
    float32 network's loss beyond float32's range, summed in double) and weights ~1e31."""
    kw = dict(activation="identity", loss="mse", dtype=np.float32, seed=4096212240)
    X = np.array([[-3, -2], [-3, -2]], dtype=np.int8)
    y = np.array([[-0.26603064521186814], [1.8019070453488197]])
    outcomes = []
    for cls in CLASSES:
        net = cls([2, 2, 1], **kw)
        _, exc = outcome(call, net, "fit", X, y,
                         {"lr": 0.125, "epochs": 2, "batch_size": 1, "shuffle": False})
        outcomes.append((type(exc), list(map(float, net.loss_curve_))))
    assert outcomes[0][0] is outcomes[1][0], outcomes
    np.testing.assert_allclose(outcomes[0][1], outcomes[1][1], rtol=1e-6)


def test_regression_float32_fit_never_returns_with_nan_parameters():
    """Before the fix: Network([1, 2, 1], relu, mse, float32, seed 28), X = [[1e8], [0]],
    y = 0, fit(lr=0.25, epochs=1, batch_size=1, shuffle=False) returned normally with
    weights[0] == [[nan, -4.6e15]] (the loss, 4.0e45, was finite in double; relu(NaN) is
    0 in the compiled kernels, so the NaN never reached the loss); the reference raised
    ValueError("training diverged") at batch 2."""
    X, y = np.array([[1e8], [0.0]]), np.zeros((2, 1))
    for cls in CLASSES:
        net = cls([1, 2, 1], activation="relu", loss="mse", dtype=np.float32, seed=28)
        _, exc = outcome(call, net, "fit", X, y,
                         {"lr": 0.25, "epochs": 1, "batch_size": 1, "shuffle": False})
        assert exc is not None or all(np.isfinite(p).all() for p in net.weights + net.biases), (
            f"{cls.__module__}: fit returned with non-finite parameters")


def test_regression_relu_of_nan_is_nan_like_the_reference():
    """Open (found while pinning the case above): the compiled relu is `z if z > 0 else 0`,
    which maps NaN to 0, while the reference's np.maximum(z, 0) keeps NaN (and leaky_relu
    keeps it in both). A network holding a NaN parameter (assigned through the writable
    views, or left by an overflowing step) therefore gives finite outputs from fastbp and
    NaN from the reference: Network([1, 2, 1], relu, mse, seed 0) with weights[0][0, 0] =
    NaN: fastbp.forward([[1.0]]) == [[0.]], reference [[nan]]. Expected the same finiteness
    (a NaN parameter must not vanish silently)."""
    outs = []
    for cls in CLASSES:
        net = cls([1, 2, 1], activation="relu", loss="mse", seed=0)
        net.weights[0][0, 0] = np.nan
        with np.errstate(all="ignore"):
            outs.append(net.forward([[1.0]]))
    assert_same_finiteness(outs[0], outs[1], "forward with a NaN weight")


# ------------------------------------------------------------------------------------------
# train_epoch with every optimizer: equals the reference, or both stop with ValueError
# ------------------------------------------------------------------------------------------

@st.composite
def optimizers(draw):
    """A pair of identically configured, fresh optimizers (one per network) and the lr."""
    kind = draw(st.sampled_from(["sgd", "momentum", "nesterov", "adam"]))
    lr = draw(st.sampled_from([1e-3, 0.05, 0.3]))
    l2 = draw(st.sampled_from([0.0, 0.0, 1e-3, 0.5]))
    per_sample = draw(st.booleans())
    if kind == "adam":
        kw = dict(beta1=draw(st.sampled_from([0.0, 0.5, 0.9])),
                  beta2=draw(st.sampled_from([0.9, 0.999])), epsilon=1e-8)
        make = lambda: fastbp.optim.Adam(lr, l2=l2, l2_per_sample=per_sample, **kw)  # noqa: E731
    else:
        momentum = 0.0 if kind == "sgd" else draw(st.sampled_from([0.5, 0.9]))
        make = lambda: fastbp.optim.SGD(lr, momentum=momentum, nesterov=kind == "nesterov",  # noqa: E731
                                        l2=l2, l2_per_sample=per_sample)
    return make(), make(), lr


@_settings(60)
@given(data=st.data())
def test_train_epoch_with_optimizers_matches_reference(data):
    """Random networks, optimizers (state carried over two epochs), L2 penalties, sample
    weights (zeros included: a batch may weigh nothing), loss scales and batch sizes:
    fastbp's compiled epoch equals the reference's, or both raise ValueError (diverged)
    leaving equal parameters."""
    cfg = data.draw(net_configs(), label="config")
    B = data.draw(st.integers(1, 12), label="B")
    rng = np.random.default_rng(data.draw(st.integers(0, 1000), label="data_seed"))
    X = rng.standard_normal((B, cfg["layer_sizes"][0]))
    y = _valid_targets(cfg["loss"], cfg["layer_sizes"][-1], B, rng)
    weights = data.draw(st.sampled_from([None, "random", "some-zero"]), label="weights")
    w = None
    if weights is not None:
        w = rng.uniform(0.1, 3.0, B)
        if weights == "some-zero":
            w[rng.random(B) < 0.5] = 0.0
            w[0] = 1.0  # not all zero (that is a ValueError, tested in test_training)
    opt_f, opt_r, lr = data.draw(optimizers(), label="optimizer")
    batch_size = data.draw(st.integers(1, B + 2), label="batch_size")
    loss_scale = data.draw(st.sampled_from([1.0, 0.5, 3.0]), label="loss_scale")
    fast, ref = make_pair(cfg, data.draw(st.integers(0, 1000), label="bias_seed"))
    for epoch in range(2):
        order = rng.permutation(B)
        results = []
        for net, opt in ((fast, opt_f), (ref, opt_r)):
            with np.errstate(all="ignore"):
                results.append(outcome(lambda: net.train_epoch(
                    X, y, optimizer=opt, batch_size=batch_size, order=order,
                    sample_weight=w, loss_scale=loss_scale)))
        (sf, ef), (sr, er) = results
        for exc in (ef, er):
            if exc is not None and not isinstance(exc, ValueError):
                raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
        # Adam divides by sqrt of the second moment: a rounding-level difference in a
        # gradient near zero moves a parameter by up to about lr * |g| / epsilon, so the
        # tolerance grows with lr; SGD's tolerance is the forward/backward bound scaled by
        # the steps and the learning rate.
        steps = (epoch + 1) * -(-B // batch_size)
        tol = bound(cfg["dtype"], cfg["layer_sizes"], scale=max(1.0, lr * loss_scale * 10),
                    steps=steps)
        if isinstance(opt_f, fastbp.optim.Adam):
            tol += lr * steps * (1e-3 if cfg["dtype"] == np.float32 else 1e-6)
        event(f"epoch {epoch}: {'ok' if ef is None else 'diverged'}")
        if (ef is None) != (er is None):
            # one diverged at the edge of finiteness, the other did not: only acceptable
            # when the reference's values are themselves huge
            big = max(float(np.abs(p).max()) for p in ref.weights + ref.biases)
            assert big > 1e15, f"fastbp {'raised ' + str(ef) if ef else 'ok'}, reference {'raised ' + str(er) if er else 'ok'}"
            return
        for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
            assert_close(a, b, tol * max(1.0, float(np.abs(b).max())), "parameters")
        if ef is not None:
            return
        assert opt_f.t == opt_r.t
        assert abs(sf.loss - sr.loss) <= tol * max(1.0, abs(sr.loss)), (sf, sr)
