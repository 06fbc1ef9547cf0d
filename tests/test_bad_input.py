"""The bad-input rules (docs/guide.md, "Data and dtypes"): every bad argument is a ValueError
or TypeError whose message names the argument, for fastbp.Network, fastbp.reference.Network
and fastbp.kernels; a failing call
never leaves a half-updated network; and the input conversions that must work (int, bool,
lists, Fortran order, strides, big-endian, another float dtype) give exactly the results of
the clean C-contiguous input of the network's dtype.
"""

import re

import numpy as np
import pytest

import fastbp
from fastbp import kernels, reference

CLASSES = [fastbp.Network, reference.Network]
CLASS_IDS = ["fastbp", "reference"]
LOSSES = ["cross_entropy", "binary_cross_entropy", "mse"]
DTYPES = [np.float32, np.float64]
SIZES = [7, 9, 5]
N_IN, N_OUT = SIZES[0], SIZES[-1]
B = 12

# a message "names the argument": the name as a whole word
M_X = r"\bX\b"
M_Y = r"\by\b"
M_LR = r"\blr\b"

XY_METHODS = ["loss", "gradients", "train_step", "fit"]
ALL_METHODS = ["forward"] + XY_METHODS


@pytest.fixture(params=CLASSES, ids=CLASS_IDS)
def cls(request):
    return request.param


def make_net(cls, loss="cross_entropy", dtype=np.float32, seed=0, **kw):
    return cls(SIZES, activation="tanh", loss=loss, dtype=dtype, seed=seed, **kw)


def make_data(loss, seed=0, n=B):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_IN))
    if loss == "cross_entropy":
        y = rng.integers(0, N_OUT, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, N_OUT)) > 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((n, N_OUT))
    return X, y


def call(net, method, X, y=None, **kw):
    if method == "forward":
        return net.forward(X)
    if method == "fit":
        kw.setdefault("epochs", 1)
        kw.setdefault("batch_size", 4)
    return getattr(net, method)(X, y, **kw)


def params(net):
    return [np.array(a, copy=True) for a in list(net.weights) + list(net.biases)]


def assert_params_equal(net, saved):
    now = list(net.weights) + list(net.biases)
    assert len(now) == len(saved)
    for a, b in zip(now, saved):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), "parameters changed by a call that failed"


# ---------------------------------------------------------------------------------------
# Constructor
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_sizes", [7, "7,9,5", None, 7.0, b"\x07\x09\x05"],
                         ids=["int", "str", "None", "float", "bytes"])
def test_layer_sizes_wrong_type(cls, layer_sizes):
    with pytest.raises(TypeError, match="layer_sizes"):
        cls(layer_sizes)


@pytest.mark.parametrize("layer_sizes", [[], [7], (5,), np.array([7])])
def test_layer_sizes_too_short(cls, layer_sizes):
    with pytest.raises(ValueError, match="layer_sizes"):
        cls(layer_sizes)


@pytest.mark.parametrize("layer_sizes", [[7, 0, 5], [0, 9, 5], [7, 9, 0], [-7, 9, 5], [7, -1, 5]])
def test_layer_sizes_non_positive(cls, layer_sizes):
    with pytest.raises(ValueError, match="layer_sizes"):
        cls(layer_sizes)


@pytest.mark.parametrize("layer_sizes", [[7.0, 9, 5], [7, 9.5, 5], [7, 9, np.float64(5)],
                                         [7, True, 5], [True, 9, 5], [7, "9", 5], [7, None, 5]])
def test_layer_sizes_non_int(cls, layer_sizes):
    with pytest.raises(TypeError, match="layer_sizes"):
        cls(layer_sizes)


def test_layer_sizes_numpy_ints_accepted(cls):
    net = cls(np.array([7, 9, 5]), activation="tanh", seed=0)
    assert tuple(net.layer_sizes) == (7, 9, 5)
    assert [w.shape for w in net.weights] == [(7, 9), (9, 5)]


@pytest.mark.parametrize("activation", ["softmax", "swish", "", "relu6"])
def test_unknown_activation(cls, activation):
    with pytest.raises(ValueError, match="activation"):
        cls(SIZES, activation=activation)


@pytest.mark.parametrize("activation", [None, 3, 1.5])
def test_activation_wrong_type(cls, activation):
    with pytest.raises(TypeError, match="activation"):
        cls(SIZES, activation=activation)


@pytest.mark.parametrize("sizes, activation", [
    ([7, 9, 5], ["relu", "tanh"]),
    ([7, 9, 5], []),
    ([7, 9, 8, 5], ["relu"]),
    ([7, 9, 8, 5], ["relu", "tanh", "gelu"]),
    ([7, 5], ["relu"]),
])
def test_wrong_number_of_activations(cls, sizes, activation):
    with pytest.raises(ValueError, match="activation"):
        cls(sizes, activation=activation)


def test_unknown_activation_in_list(cls):
    with pytest.raises(ValueError, match=r"activation\[1\]"):
        cls([7, 9, 8, 5], activation=["relu", "bogus"])
    with pytest.raises(TypeError, match=r"activation\[0\]"):
        cls([7, 9, 8, 5], activation=[None, "relu"])


@pytest.mark.parametrize("loss", ["hinge", "CE", "", "crossentropy", "nll"])
def test_unknown_loss(cls, loss):
    with pytest.raises(ValueError, match="loss"):
        cls(SIZES, loss=loss)


@pytest.mark.parametrize("loss", [None, 0, ["mse"]])
def test_loss_wrong_type(cls, loss):
    with pytest.raises((ValueError, TypeError), match="loss"):
        cls(SIZES, loss=loss)


@pytest.mark.parametrize("loss, output_activation", [
    ("cross_entropy", "sigmoid"),
    ("cross_entropy", "identity"),
    ("binary_cross_entropy", "softmax"),
    ("binary_cross_entropy", "relu"),
    ("mse", "softmax"),
    ("mse", "bogus"),
])
def test_output_activation_conflicts_with_loss(cls, loss, output_activation):
    with pytest.raises(ValueError, match="output_activation"):
        cls(SIZES, loss=loss, output_activation=output_activation)


@pytest.mark.parametrize("loss, output_activation", [
    ("cross_entropy", "softmax"),
    ("binary_cross_entropy", "sigmoid"),
    ("binary_cross_entropy", "logistic"),  # "logistic" is an alias of "sigmoid"
    ("mse", "tanh"),
    ("mse", "logistic"),
])
def test_output_activation_consistent_with_loss_accepted(cls, loss, output_activation):
    net = cls(SIZES, loss=loss, output_activation=output_activation)
    expected = {"softmax": "softmax", "sigmoid": "sigmoid", "logistic": "sigmoid",
                "tanh": "tanh"}[output_activation]
    assert net.output_activation == expected


@pytest.mark.parametrize("dtype", [np.int32, np.int64, "complex", np.complex64, np.float16,
                                   bool, "U3"])
def test_bad_dtype(cls, dtype):
    with pytest.raises((ValueError, TypeError), match="dtype"):
        cls(SIZES, dtype=dtype)


@pytest.mark.parametrize("dtype", ["not-a-dtype", object()])
def test_dtype_not_a_dtype(cls, dtype):
    with pytest.raises(TypeError, match="dtype"):
        cls(SIZES, dtype=dtype)


def test_n_threads_zero(cls):
    with pytest.raises(ValueError, match="n_threads"):
        cls(SIZES, n_threads=0)


@pytest.mark.parametrize("n_threads", [1.5, 2.0, "4", True, [2]])
def test_n_threads_wrong_type(cls, n_threads):
    with pytest.raises(TypeError, match="n_threads"):
        cls(SIZES, n_threads=n_threads)


@pytest.mark.parametrize("seed", [-1, -(2**40)])
def test_negative_seed(cls, seed):
    # either type is allowed; the message must name the argument.
    with pytest.raises((ValueError, TypeError), match="seed"):
        cls(SIZES, seed=seed)


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_seed_wrong_type(cls, seed):
    with pytest.raises(TypeError, match="seed"):
        cls(SIZES, seed=seed)


# ---------------------------------------------------------------------------------------
# X
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("shape", [(N_IN,), (B, N_IN, 1), (), (1, B, N_IN)],
                         ids=["1d", "3d", "0d", "3d-leading"])
def test_X_wrong_ndim(cls, method, shape):
    net = make_net(cls)
    _, y = make_data("cross_entropy")
    X = np.ones(shape)
    with pytest.raises(ValueError, match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("n_cols", [N_IN - 1, N_IN + 1, 1])
def test_X_wrong_columns(cls, method, n_cols):
    net = make_net(cls)
    _, y = make_data("cross_entropy")
    X = np.ones((B, n_cols))
    with pytest.raises(ValueError, match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_X_empty_batch(cls, method):
    net = make_net(cls)
    X = np.ones((0, N_IN))
    y = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_X_empty_list(cls, method):
    net = make_net(cls)
    with pytest.raises(ValueError, match=M_X):
        call(net, method, [], [])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_X_non_finite(cls, method, bad, dtype):
    net = make_net(cls, dtype=dtype)
    X, y = make_data("cross_entropy")
    X[B - 1, N_IN - 1] = bad
    with pytest.raises(ValueError, match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_X_overflows_on_conversion_to_float32(cls, method):
    # 1e300 is finite in float64 but infinite once converted to the float32 network
    net = make_net(cls, dtype=np.float32)
    X, y = make_data("cross_entropy")
    X[3, 2] = 1e300
    with np.errstate(over="ignore"), pytest.raises(ValueError, match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("kind", ["str", "numeric-str", "complex", "complex-list", "object",
                                  "datetime"])
def test_X_not_real_numbers(cls, method, kind):
    net = make_net(cls)
    X0, y = make_data("cross_entropy")
    X = {
        "str": np.full((B, N_IN), "a"),
        "numeric-str": X0.astype(str),
        "complex": X0.astype(np.complex128),
        "complex-list": [[1 + 2j] * N_IN] * B,
        "object": np.array([[object()] * N_IN] * B, dtype=object),
        "datetime": np.zeros((B, N_IN), dtype="datetime64[s]"),
    }[kind]
    with pytest.raises(TypeError, match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_X_ragged_list(cls, method):
    net = make_net(cls)
    _, y = make_data("cross_entropy", n=2)
    X = [[0.0] * N_IN, [0.0] * (N_IN - 1)]
    with pytest.raises((TypeError, ValueError), match=M_X):
        call(net, method, X, y)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_X_nan_in_a_large_batch_past_forward_chunk(cls, method):
    # fastbp.Network.forward works through large inputs in chunks; a NaN in a late chunk
    # must still be rejected up front.
    net = make_net(cls)
    n = 8192 + 17
    X, y = make_data("cross_entropy", n=n)
    X[n - 1, 0] = np.nan
    with pytest.raises(ValueError, match=M_X):
        call(net, method, X, y)


# ---------------------------------------------------------------------------------------
# y
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", XY_METHODS)
@pytest.mark.parametrize("bad", [
    pytest.param(lambda y: np.where(np.arange(B) == B - 1, N_OUT, y), id="label=n_out"),
    pytest.param(lambda y: np.where(np.arange(B) == 0, 10**6, y), id="label-huge"),
    pytest.param(lambda y: np.where(np.arange(B) == B - 1, -1, y), id="label-negative"),
    pytest.param(lambda y: np.where(np.arange(B) == 2, 1.5, y.astype(float)), id="label-non-integer"),
    pytest.param(lambda y: np.where(np.arange(B) == 2, 0.999, y.astype(float)), id="label-near-integer"),
    pytest.param(lambda y: np.where(np.arange(B) == B - 1, np.nan, y.astype(float)), id="label-nan"),
    pytest.param(lambda y: np.where(np.arange(B) == B - 1, np.inf, y.astype(float)), id="label-inf"),
    pytest.param(lambda y: y[:-1], id="too-few"),
    pytest.param(lambda y: np.concatenate([y, y[:1]]), id="too-many"),
    pytest.param(lambda y: y.reshape(-1, 1), id="column"),
    pytest.param(lambda y: np.zeros((B, N_OUT + 1)), id="prob-rows-wide"),
    pytest.param(lambda y: np.zeros((B - 1, N_OUT)), id="prob-rows-short"),
    pytest.param(lambda y: np.full((B, N_OUT), 1.5), id="prob>1"),
    pytest.param(lambda y: np.full((B, N_OUT), -0.25), id="prob<0"),
    pytest.param(lambda y: np.where(np.arange(B)[:, None] == B - 1, np.nan, np.full((B, N_OUT), 0.2)),
                 id="prob-nan"),
    pytest.param(lambda y: np.zeros((B, N_OUT, 1)), id="3d"),
    pytest.param(lambda y: np.int64(1), id="scalar"),
])
def test_y_cross_entropy_bad(cls, method, bad):
    net = make_net(cls, loss="cross_entropy")
    X, y = make_data("cross_entropy")
    with pytest.raises(ValueError, match=M_Y):
        call(net, method, X, bad(y))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("method", XY_METHODS)
@pytest.mark.parametrize("kind", ["str", "complex", "object"])
def test_y_not_real_numbers(cls, method, loss, kind):
    net = make_net(cls, loss=loss)
    X, y = make_data(loss)
    y = {"str": np.asarray(y).astype(str),
         "complex": np.asarray(y).astype(np.complex128),
         "object": np.full(np.shape(y), object(), dtype=object)}[kind]
    with pytest.raises(TypeError, match=M_Y):
        call(net, method, X, y)


@pytest.mark.parametrize("method", XY_METHODS)
@pytest.mark.parametrize("bad", [
    pytest.param(lambda Y: np.where(Y > 0.5, 1.0, -0.5), id="negative"),
    pytest.param(lambda Y: np.where(Y > 0.5, 1.0 + 1e-6, 0.0), id="above-one"),
    pytest.param(lambda Y: np.where(np.arange(B)[:, None] == B - 1, np.nan, Y), id="nan"),
    pytest.param(lambda Y: np.where(np.arange(B)[:, None] == B - 1, np.inf, Y), id="inf"),
    pytest.param(lambda Y: Y[:, 0], id="1d"),
    pytest.param(lambda Y: Y[:, :-1], id="too-few-columns"),
    pytest.param(lambda Y: np.hstack([Y, Y[:, :1]]), id="too-many-columns"),
    pytest.param(lambda Y: Y[:-1], id="too-few-rows"),
    pytest.param(lambda Y: Y[:, :, None], id="3d"),
    pytest.param(lambda Y: np.zeros(B, dtype=np.int64), id="labels"),
])
def test_y_binary_cross_entropy_bad(cls, method, bad):
    net = make_net(cls, loss="binary_cross_entropy")
    X, Y = make_data("binary_cross_entropy")
    with pytest.raises(ValueError, match=M_Y):
        call(net, method, X, bad(Y))


@pytest.mark.parametrize("method", XY_METHODS)
@pytest.mark.parametrize("bad", [
    pytest.param(lambda Y: Y[:, 0], id="1d"),
    pytest.param(lambda Y: Y.T, id="transposed"),
    pytest.param(lambda Y: Y[:, :-1], id="too-few-columns"),
    pytest.param(lambda Y: np.hstack([Y, Y[:, :1]]), id="too-many-columns"),
    pytest.param(lambda Y: Y[:-1], id="too-few-rows"),
    pytest.param(lambda Y: np.vstack([Y, Y[:1]]), id="too-many-rows"),
    pytest.param(lambda Y: Y[:, :, None], id="3d"),
    pytest.param(lambda Y: np.float64(0.5), id="scalar"),
    pytest.param(lambda Y: np.where(np.arange(B)[:, None] == B - 1, np.nan, Y), id="nan"),
    pytest.param(lambda Y: np.where(np.arange(B)[:, None] == B - 1, -np.inf, Y), id="inf"),
])
def test_y_mse_bad(cls, method, bad):
    net = make_net(cls, loss="mse")
    X, Y = make_data("mse")
    with pytest.raises(ValueError, match=M_Y):
        call(net, method, X, bad(Y))


@pytest.mark.parametrize("method", XY_METHODS)
def test_y_mse_overflows_on_conversion_to_float32(cls, method):
    net = make_net(cls, loss="mse", dtype=np.float32)
    X, Y = make_data("mse")
    Y[0, 0] = 1e300
    with np.errstate(over="ignore"), pytest.raises(ValueError, match=M_Y):
        call(net, method, X, Y)


@pytest.mark.parametrize("method", XY_METHODS)
def test_y_ragged(cls, method):
    net = make_net(cls, loss="mse")
    X, _ = make_data("mse", n=2)
    with pytest.raises((TypeError, ValueError), match=M_Y):
        call(net, method, X, [[0.0] * N_OUT, [0.0] * (N_OUT - 1)])


# ---------------------------------------------------------------------------------------
# lr, epochs, batch_size, shuffle
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["train_step", "fit"])
@pytest.mark.parametrize("lr", [np.nan, np.inf, -np.inf, 0, 0.0, -0.1, np.float32(np.nan),
                                np.float64(-1.0), 1e400])
def test_lr_bad_value(cls, method, lr):
    net = make_net(cls)
    X, y = make_data("cross_entropy")
    with pytest.raises(ValueError, match=M_LR):
        call(net, method, X, y, lr=lr)


@pytest.mark.parametrize("method", ["train_step", "fit"])
@pytest.mark.parametrize("lr", ["0.1", None, True, 1j, [0.1]])
def test_lr_wrong_type(cls, method, lr):
    if method == "fit" and lr is None:
        pytest.skip("fit(lr=None) means the optimizer's default (test_fit_lr_none_is_default)")
    net = make_net(cls)
    X, y = make_data("cross_entropy")
    with pytest.raises(TypeError, match=M_LR):
        call(net, method, X, y, lr=lr)


def test_fit_lr_none_is_default(cls):
    X, y = make_data("cross_entropy")
    a = make_net(cls).fit(X, y, epochs=2, lr=None)
    b = make_net(cls).fit(X, y, epochs=2, lr=0.1)   # sgd's default
    assert a.loss_curve_ == b.loss_curve_


@pytest.mark.parametrize("name, value, exc", [
    ("epochs", 0, ValueError),
    ("epochs", -1, ValueError),
    ("epochs", 1.0, TypeError),
    ("epochs", "2", TypeError),
    ("epochs", True, TypeError),
    ("epochs", None, TypeError),
    ("batch_size", 0, ValueError),
    ("batch_size", -4, ValueError),
    ("batch_size", 4.0, TypeError),
    ("batch_size", 2.5, TypeError),
    ("batch_size", True, TypeError),
    ("batch_size", "4", TypeError),
    ("shuffle", "yes", TypeError),
    ("shuffle", 1, TypeError),
    ("shuffle", None, TypeError),
    ("shuffle", "False", TypeError),
])
def test_fit_bad_arguments(cls, name, value, exc):
    net = make_net(cls)
    X, y = make_data("cross_entropy")
    with pytest.raises(exc, match=rf"\b{name}\b"):
        net.fit(X, y, **{name: value})


def test_fit_numpy_scalars_accepted(cls):
    net = make_net(cls)
    X, y = make_data("cross_entropy")
    assert net.fit(X, y, epochs=np.int64(2), batch_size=np.int32(5), lr=np.float32(0.05),
                   shuffle=np.bool_(False)) is net
    assert len(net.loss_curve_) == 2


# ---------------------------------------------------------------------------------------
# Never a half-updated network
# ---------------------------------------------------------------------------------------

def _nan_last_row(X, y):
    X = X.copy()
    X[-1, -1] = np.nan
    return X, y


def _bad_last_label(X, y):
    y = y.copy()
    y[-1] = N_OUT
    return X, y


def _negative_last_label(X, y):
    y = y.copy()
    y[-1] = -1
    return X, y


def _short_y(X, y):
    return X, y[:-1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spoil", [_nan_last_row, _bad_last_label, _negative_last_label, _short_y],
                         ids=["nan-last-row", "label-too-big-last", "label-negative-last", "y-short"])
@pytest.mark.parametrize("method", ["train_step", "fit"])
def test_failed_call_leaves_network_unchanged(cls, method, spoil, dtype):
    net = make_net(cls, dtype=dtype, seed=5)
    X, y = make_data("cross_entropy", n=40)
    net.train_step(X, y, lr=0.1)  # non-trivial (non-zero) biases
    before = params(net)
    curve = list(net.loss_curve_)
    Xb, yb = spoil(X, y)
    with pytest.raises(ValueError):
        call(net, method, Xb, yb, lr=0.1, **({"epochs": 3, "batch_size": 4} if method == "fit" else {}))
    assert_params_equal(net, before)
    assert net.loss_curve_ == curve


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("method", ["train_step", "fit"])
def test_failed_call_bad_targets_at_end_leaves_network_unchanged(cls, method, loss):
    net = make_net(cls, loss=loss, seed=5)
    X, y = make_data(loss, n=40)
    before = params(net)
    y = np.array(y, dtype=np.float64)
    if loss == "cross_entropy":
        y[-1] = 2.5
    elif loss == "binary_cross_entropy":
        y[-1, -1] = 1.5
    else:
        y[-1, -1] = np.nan
    with pytest.raises(ValueError, match=M_Y):
        call(net, method, X, y, lr=0.1)
    assert_params_equal(net, before)


@pytest.mark.parametrize("kw", [{"lr": np.nan}, {"lr": -1.0}, {"epochs": 0}, {"batch_size": 0},
                                {"shuffle": "yes"}, {"batch_size": 2.0}],
                         ids=["lr-nan", "lr-negative", "epochs-0", "batch-0", "shuffle-str",
                              "batch-float"])
def test_failed_fit_changes_nothing_then_fit_matches_fresh_net(cls, kw):
    """A failed fit leaves parameters, loss curve and the shuffling RNG untouched: fitting
    afterwards is exactly the same run as on a fresh network of the same seed."""
    X, y = make_data("cross_entropy", n=30)
    net, fresh = make_net(cls, seed=11), make_net(cls, seed=11)
    before = params(net)
    with pytest.raises((ValueError, TypeError)):
        net.fit(X, y, **{"epochs": 2, "batch_size": 4, "lr": 0.1, **kw})
    assert_params_equal(net, before)
    assert net.loss_curve_ == []
    net.fit(X, y, epochs=2, batch_size=4, lr=0.1)
    fresh.fit(X, y, epochs=2, batch_size=4, lr=0.1)
    assert_params_equal(net, params(fresh))
    assert net.loss_curve_ == fresh.loss_curve_


@pytest.mark.parametrize("lr", [np.nan, np.inf, 0.0, -0.5, "0.1"])
def test_failed_train_step_bad_lr_leaves_network_unchanged(cls, lr):
    net = make_net(cls, seed=2)
    X, y = make_data("cross_entropy")
    before = params(net)
    with pytest.raises((ValueError, TypeError), match=M_LR):
        net.train_step(X, y, lr=lr)
    assert_params_equal(net, before)


# ---------------------------------------------------------------------------------------
# Conversions that must work
# ---------------------------------------------------------------------------------------

def _conversions(X, dtype):
    """(name, converted X, the clean C-contiguous X of `dtype` it must behave like)."""
    rng = np.random.default_rng(99)
    Xi = rng.integers(-3, 4, X.shape)
    Xb = rng.random(X.shape) > 0.5
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous
    fortran = np.asfortranarray(X)
    assert not fortran.flags.c_contiguous
    big = X.astype(">f8")
    assert not big.dtype.isnative
    other = np.float64 if dtype == np.float32 else np.float32
    return [
        ("int", Xi, Xi.astype(dtype)),
        ("int32", Xi.astype(np.int32), Xi.astype(dtype)),
        ("uint8", (Xi + 3).astype(np.uint8), (Xi + 3).astype(dtype)),
        ("bool", Xb, Xb.astype(dtype)),
        ("list", X.tolist(), np.array(X, dtype=dtype)),
        ("int-list", Xi.tolist(), Xi.astype(dtype)),
        ("bool-list", Xb.tolist(), Xb.astype(dtype)),
        ("fortran", fortran.astype(dtype, order="F"), X.astype(dtype)),
        ("strided", strided, X.astype(dtype)),
        ("strided-same-dtype", _strided_of(X.astype(dtype)), X.astype(dtype)),
        ("big-endian", big, X.astype(dtype)),
        ("big-endian-f4", X.astype(">f4"), X.astype(">f4").astype(dtype)),
        ("reversed-rows", np.ascontiguousarray(X[::-1])[::-1], X.astype(dtype)),
        ("other-float", X.astype(other), X.astype(other).astype(dtype)),
        ("float16", X.astype(np.float16), X.astype(np.float16).astype(dtype)),
        ("read-only", _read_only(X.astype(dtype)), X.astype(dtype)),
    ]


def _strided_of(Xd):
    wide = np.zeros((Xd.shape[0], 2 * Xd.shape[1]), dtype=Xd.dtype)
    wide[:, ::2] = Xd
    out = wide[:, ::2]
    assert not out.flags.c_contiguous and out.dtype == Xd.dtype
    return out


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


CONVERSION_IDS = ["int", "int32", "uint8", "bool", "list", "int-list", "bool-list", "fortran",
                  "strided", "strided-same-dtype", "big-endian", "big-endian-f4",
                  "reversed-rows", "other-float", "float16", "read-only"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("which", CONVERSION_IDS)
def test_X_conversions_give_identical_results(cls, dtype, loss, which):
    X, y = make_data(loss, seed=4)
    name, Xc, Xclean = next(c for c in _conversions(X, dtype) if c[0] == which)
    assert Xclean.dtype == np.dtype(dtype) and Xclean.flags.c_contiguous
    Xc_before = np.array(Xc, copy=True)

    net = make_net(cls, loss=loss, dtype=dtype, seed=1)
    out = net.forward(Xc)
    ref = net.forward(Xclean)
    assert out.dtype == np.dtype(dtype) and out.shape == (B, N_OUT)
    assert np.array_equal(out, ref)
    assert np.array_equal(net.predict(Xc), net.predict(Xclean))
    assert net.loss(Xc, y) == net.loss(Xclean, y)
    dW, db = net.gradients(Xc, y)
    dW0, db0 = net.gradients(Xclean, y)
    for a, b in zip(dW + db, dW0 + db0):
        assert a.dtype == np.dtype(dtype)
        assert np.array_equal(a, b)

    n1 = make_net(cls, loss=loss, dtype=dtype, seed=1)
    n2 = make_net(cls, loss=loss, dtype=dtype, seed=1)
    assert n1.train_step(Xc, y, lr=0.1) == n2.train_step(Xclean, y, lr=0.1)
    assert_params_equal(n1, params(n2))
    n1.fit(Xc, y, epochs=2, batch_size=5, lr=0.05)
    n2.fit(Xclean, y, epochs=2, batch_size=5, lr=0.05)
    assert_params_equal(n1, params(n2))
    assert n1.loss_curve_ == n2.loss_curve_
    # the caller's array is never modified
    assert np.array_equal(np.asarray(Xc), Xc_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["list", "int32", "uint8", "float-integers", "big-endian",
                                  "strided", "bool-two-classes"])
def test_label_conversions_give_identical_results(cls, dtype, kind):
    X, y = make_data("cross_entropy", seed=8)
    if kind == "bool-two-classes":
        y = (y % 2).astype(np.int64)
    yc = {
        "list": y.tolist(),
        "int32": y.astype(np.int32),
        "uint8": y.astype(np.uint8),
        "float-integers": y.astype(np.float64),
        "big-endian": y.astype(">i8"),
        "strided": np.repeat(y, 2)[::2],
        "bool-two-classes": y.astype(bool),
    }[kind]
    net = make_net(cls, dtype=dtype, seed=3)
    assert net.loss(X, yc) == net.loss(X, y)
    for a, b in zip(*[sum(net.gradients(X, t), []) for t in (yc, y)]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse"])
def test_target_matrix_conversions_give_identical_results(cls, dtype, loss):
    X, Y = make_data(loss, seed=8)
    net = make_net(cls, loss=loss, dtype=dtype, seed=3)
    clean = Y.astype(dtype)
    for Yc in [Y.tolist(), np.asfortranarray(Y), Y.astype(">f8"), _strided_of(Y)]:
        assert net.loss(X, Yc) == net.loss(X, clean)
        for a, b in zip(sum(net.gradients(X, Yc), []), sum(net.gradients(X, clean), [])):
            assert np.array_equal(a, b)


def test_single_output_mse_accepts_1d_targets(cls):
    net = cls([7, 9, 1], activation="tanh", loss="mse", seed=0)
    X, _ = make_data("mse")
    y = np.random.default_rng(1).standard_normal(B)
    assert net.loss(X, y) == net.loss(X, y.reshape(-1, 1))


# ---------------------------------------------------------------------------------------
# fastbp.kernels
# ---------------------------------------------------------------------------------------

KB, KK, KN = 6, 4, 5  # batch, inputs, outputs of a layer (B != K != N)


def kdata(dtype=np.float64, seed=0, square=False):
    rng = np.random.default_rng(seed)
    K = KN if square else KK
    return {
        "A_in": rng.standard_normal((KB, K)).astype(dtype),
        "W": rng.standard_normal((K, KN)).astype(dtype),
        "b": rng.standard_normal(KN).astype(dtype),
        "Z": rng.standard_normal((KB, KN)).astype(dtype),
        "dZ": rng.standard_normal((KB, KN)).astype(dtype),
    }


def read_only(shape, dtype=np.float64):
    a = np.zeros(shape, dtype=dtype)
    a.flags.writeable = False
    return a


def non_contiguous(shape, dtype=np.float64):
    a = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)[..., ::2]
    assert a.shape == tuple(shape) and not a.flags.c_contiguous
    return a


def bad_outputs(shape):
    """(id, array, exception) for each way an output of `shape` can be wrong."""
    return [
        ("list", np.zeros(shape).tolist(), TypeError),
        ("int", np.zeros(shape, dtype=np.int64), TypeError),
        ("float16", np.zeros(shape, dtype=np.float16), TypeError),
        ("complex", np.zeros(shape, dtype=np.complex128), TypeError),
        ("big-endian", np.zeros(shape, dtype=">f8"), TypeError),
        ("wrong-shape", np.zeros(tuple(s + 1 for s in shape)), ValueError),
        ("fortran", np.zeros(shape, order="F") if len(shape) > 1 else non_contiguous(shape), ValueError),
        ("strided", non_contiguous(shape), ValueError),
        ("read-only", read_only(shape), ValueError),
    ]


BAD_OUTPUT_IDS = ["list", "int", "float16", "complex", "big-endian", "fortran", "strided",
                  "read-only"]


def _pick(shape, which):
    return next((a, e) for i, a, e in bad_outputs(shape) if i == which)


def kernel_call(fn, overrides=(), dtype=np.float64, square=False):
    """Call kernel `fn` with valid arguments except those in `overrides`."""
    d = kdata(dtype, square=square)
    K = d["A_in"].shape[1]
    z = lambda *s: np.zeros(s, dtype=dtype)  # noqa: E731
    if fn == "dense_forward":
        args = {"Z": z(KB, KN), "A_out": z(KB, KN), "A_in": d["A_in"], "W": d["W"],
                "b": d["b"], "activation": "tanh"}
    elif fn == "activation_forward":
        args = {"A": z(KB, KN), "Z": d["Z"], "activation": "tanh"}
    elif fn == "activation_backward":
        args = {"dZ": z(KB, KN), "dA": d["dZ"], "Z": d["Z"], "A": np.tanh(d["Z"]),
                "activation": "tanh"}
    elif fn == "output_gradient":
        args = {"dZ": z(KB, KN), "Z": d["Z"], "A": d["Z"], "y": d["dZ"], "loss": "mse"}
    elif fn == "weight_gradient":
        args = {"dW": z(K, KN), "db": z(KN), "A_in": d["A_in"], "dZ": d["dZ"]}
    elif fn == "input_gradient":
        args = {"dZ_in": z(KB, K), "dZ": d["dZ"], "W": d["W"], "Z_in": d["A_in"],
                "A_in": np.tanh(d["A_in"]), "activation": "tanh"}
    elif fn == "sgd_update":
        args = {"param": d["W"].copy(), "grad": d["W"] * 0.5, "lr": 0.1}
    else:
        raise AssertionError(fn)
    args.update(dict(overrides))
    return getattr(kernels, fn)(**args), args


OUTPUTS = [  # (function, output argument, its shape)
    ("dense_forward", "Z", (KB, KN)),
    ("dense_forward", "A_out", (KB, KN)),
    ("activation_forward", "A", (KB, KN)),
    ("activation_backward", "dZ", (KB, KN)),
    ("output_gradient", "dZ", (KB, KN)),
    ("weight_gradient", "dW", (KK, KN)),
    ("weight_gradient", "db", (KN,)),
    ("input_gradient", "dZ_in", (KB, KK)),
    ("sgd_update", "param", (KK, KN)),
]

INPUTS = [  # (function, input argument, its shape)
    ("dense_forward", "A_in", (KB, KK)),
    ("dense_forward", "W", (KK, KN)),
    ("dense_forward", "b", (KN,)),
    ("activation_forward", "Z", (KB, KN)),
    ("activation_backward", "dA", (KB, KN)),
    ("activation_backward", "Z", (KB, KN)),
    ("activation_backward", "A", (KB, KN)),
    ("output_gradient", "Z", (KB, KN)),
    ("output_gradient", "A", (KB, KN)),
    ("output_gradient", "y", (KB, KN)),
    ("weight_gradient", "A_in", (KB, KK)),
    ("weight_gradient", "dZ", (KB, KN)),
    ("input_gradient", "dZ", (KB, KN)),
    ("input_gradient", "W", (KK, KN)),
    ("input_gradient", "Z_in", (KB, KK)),
    ("input_gradient", "A_in", (KB, KK)),
    ("sgd_update", "grad", (KK, KN)),
]


def _names(name):
    return rf"\b{name}\b"


def test_kernel_baseline_calls_work():
    """The valid calls the bad-input tests start from do run and compute the right thing."""
    for fn in ["dense_forward", "activation_forward", "activation_backward", "output_gradient",
               "weight_gradient", "input_gradient", "sgd_update"]:
        kernel_call(fn)
    d = kdata()
    _, args = kernel_call("dense_forward")
    Z = d["A_in"] @ d["W"] + d["b"]
    np.testing.assert_allclose(args["Z"], Z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(args["A_out"], np.tanh(Z), rtol=1e-12, atol=1e-12)
    _, args = kernel_call("sgd_update")
    np.testing.assert_allclose(args["param"], d["W"] - 0.1 * 0.5 * d["W"], rtol=1e-15)


@pytest.mark.parametrize("which", BAD_OUTPUT_IDS)
@pytest.mark.parametrize("fn, name, shape", OUTPUTS, ids=[f"{f}-{n}" for f, n, _ in OUTPUTS])
def test_kernel_bad_output(fn, name, shape, which):
    arr, exc = _pick(shape, which)
    with pytest.raises(exc, match=_names(name)):
        kernel_call(fn, {name: arr})


@pytest.mark.parametrize("fn, name, shape", [o for o in OUTPUTS if o[1] in ("A_out", "db")],
                         ids=["dense_forward-A_out", "weight_gradient-db"])
def test_kernel_second_output_wrong_shape(fn, name, shape):
    for bad in [tuple(s + 1 for s in shape), shape + (1,), (0,) + shape[1:]]:
        with pytest.raises(ValueError, match=_names(name)):
            kernel_call(fn, {name: np.zeros(bad)})


@pytest.mark.parametrize("fn, name, shape", OUTPUTS, ids=[f"{f}-{n}" for f, n, _ in OUTPUTS])
def test_kernel_output_wrong_shape_names_output_or_input(fn, name, shape):
    """The first output fixes B and N, so its wrong shape shows up as a mismatch with an
    input; the message must name the output or the mismatching argument."""
    arr = np.zeros(tuple(s + 1 for s in shape))
    with pytest.raises(ValueError) as info:
        kernel_call(fn, {name: arr})
    candidates = [name] + [n for f, n, _ in INPUTS if f == fn] + [n for f, n, _ in OUTPUTS if f == fn]
    assert any(re.search(_names(n), str(info.value)) for n in candidates), str(info.value)


TWO_D_OUTPUTS = [o for o in OUTPUTS if len(o[2]) == 2 and o[1] != "param"]  # param: any shape


@pytest.mark.parametrize("fn, name, shape", TWO_D_OUTPUTS,
                         ids=[f"{f}-{n}" for f, n, s in TWO_D_OUTPUTS])
def test_kernel_output_empty_or_wrong_ndim(fn, name, shape):
    for arr in [np.zeros((0, shape[1])), np.zeros((shape[0], 0)), np.zeros(shape[0] * shape[1]),
                np.zeros(shape + (1,))]:
        with pytest.raises(ValueError, match=_names(name)):
            kernel_call(fn, {name: arr})


@pytest.mark.parametrize("fn, name, shape", [o for o in OUTPUTS if o[1] in ("A_out", "db")],
                         ids=["dense_forward-A_out", "weight_gradient-db"])
def test_kernel_second_output_dtype_must_match_first(fn, name, shape):
    with pytest.raises(TypeError, match=_names(name)):
        kernel_call(fn, {name: np.zeros(shape, dtype=np.float32)})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn, name, shape", INPUTS, ids=[f"{f}-{n}" for f, n, _ in INPUTS])
def test_kernel_non_finite_input(fn, name, shape, bad):
    _, args = kernel_call(fn)  # valid values for this input
    value = np.array(args[name], dtype=np.float64, copy=True)
    value.reshape(-1)[-1] = bad
    with pytest.raises(ValueError, match=_names(name)):
        kernel_call(fn, {name: value})


@pytest.mark.parametrize("fn, name, shape", INPUTS, ids=[f"{f}-{n}" for f, n, _ in INPUTS])
def test_kernel_input_wrong_shape(fn, name, shape):
    for bad_shape in [tuple(s + 1 for s in shape), shape[:-1], shape + (1,)]:
        if bad_shape == ():
            bad_shape = (0,)
        with pytest.raises(ValueError, match=_names(name)):
            kernel_call(fn, {name: np.zeros(bad_shape) + 0.5})


@pytest.mark.parametrize("kind", ["str", "complex", "object"])
@pytest.mark.parametrize("fn, name, shape", INPUTS, ids=[f"{f}-{n}" for f, n, _ in INPUTS])
def test_kernel_input_not_real_numbers(fn, name, shape, kind):
    value = {"str": np.full(shape, "a"), "complex": np.zeros(shape, dtype=complex),
             "object": np.full(shape, object(), dtype=object)}[kind]
    with pytest.raises(TypeError, match=_names(name)):
        kernel_call(fn, {name: value})


@pytest.mark.parametrize("fn", ["dense_forward", "activation_forward", "activation_backward",
                                "input_gradient"])
@pytest.mark.parametrize("activation", ["bogus", "softplus", ""])
def test_kernel_unknown_activation(fn, activation):
    with pytest.raises(ValueError, match="activation"):
        kernel_call(fn, {"activation": activation})


@pytest.mark.parametrize("fn", ["dense_forward", "activation_forward", "activation_backward",
                                "input_gradient"])
def test_kernel_activation_wrong_type(fn):
    with pytest.raises(TypeError, match="activation"):
        kernel_call(fn, {"activation": 3})


@pytest.mark.parametrize("fn", ["activation_forward", "activation_backward", "input_gradient"])
def test_kernel_softmax_is_not_a_hidden_activation(fn):
    with pytest.raises(ValueError, match="activation"):
        kernel_call(fn, {"activation": "softmax"})


def test_kernel_output_gradient_bad_loss_and_targets():
    with pytest.raises(ValueError, match="loss"):
        kernel_call("output_gradient", {"loss": "hinge"})
    with pytest.raises(ValueError, match="output_activation"):
        kernel_call("output_gradient", {"loss": "cross_entropy", "output_activation": "sigmoid"})
    labels = np.arange(KB) % KN
    kernel_call("output_gradient", {"loss": "cross_entropy", "y": labels})  # valid
    for y in [np.where(labels == 0, KN, labels), labels - 1, labels[:-1], labels + 0.5,
              np.full((KB, KN), 1.5)]:
        with pytest.raises(ValueError, match=M_Y):
            kernel_call("output_gradient", {"loss": "cross_entropy", "y": y})
    with pytest.raises(ValueError, match=M_Y):
        kernel_call("output_gradient", {"loss": "binary_cross_entropy", "y": np.full((KB, KN), -0.5)})


def test_kernel_input_gradient_needs_Z_in_and_A_in():
    for drop in [{"Z_in": None}, {"A_in": None}, {"Z_in": None, "A_in": None}]:
        with pytest.raises(ValueError, match=r"Z_in|A_in"):
            kernel_call("input_gradient", drop)


@pytest.mark.parametrize("lr", [np.nan, np.inf, 0.0, -1.0])
def test_kernel_sgd_update_bad_lr(lr):
    d = kdata()
    param = d["W"].copy()
    with pytest.raises(ValueError, match=M_LR):
        kernels.sgd_update(param, d["W"], lr)
    assert np.array_equal(param, d["W"])


@pytest.mark.parametrize("lr", ["0.1", None, 1j])
def test_kernel_sgd_update_lr_wrong_type(lr):
    d = kdata()
    with pytest.raises(TypeError, match=M_LR):
        kernels.sgd_update(d["W"].copy(), d["W"], lr)


def test_kernel_sgd_update_empty_param():
    with pytest.raises(ValueError, match="param"):
        kernels.sgd_update(np.zeros((0, 3)), np.zeros((0, 3)), 0.1)


@pytest.mark.parametrize("fn", ["dense_forward", "weight_gradient", "input_gradient", "sgd_update"])
@pytest.mark.parametrize("n_threads, exc", [(0, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_kernel_bad_n_threads(fn, n_threads, exc):
    with pytest.raises(exc, match="n_threads"):
        kernel_call(fn, {"n_threads": n_threads})


# -- outputs overlapping inputs ------------------------------------------------------------

def _ov_dense_Z_is_A_in():
    A = np.ones((KB, KN))
    return "dense_forward", {"Z": A, "A_in": A, "W": np.ones((KN, KN))}, ("Z", "A_in")


def _ov_dense_A_out_is_A_in():
    A = np.ones((KB, KN))
    return "dense_forward", {"A_out": A, "A_in": A, "W": np.ones((KN, KN))}, ("A_out", "A_in")


def _ov_dense_Z_is_W():
    W = np.ones((KB, KN))  # K == B
    return "dense_forward", {"Z": W, "W": W, "A_in": np.ones((KB, KB))}, ("Z", "W")


def _ov_dense_b_in_Z():
    Z = np.ones((KB, KN))
    return "dense_forward", {"Z": Z, "b": Z[1]}, ("Z", "b")


def _ov_dense_Z_is_A_out():
    Z = np.zeros((KB, KN))
    return "dense_forward", {"Z": Z, "A_out": Z}, ("Z", "A_out")


def _ov_dense_Z_shifted_A_out():
    buf = np.zeros(KB * KN + 1)
    return "dense_forward", {"Z": buf[:-1].reshape(KB, KN), "A_out": buf[1:].reshape(KB, KN)}, ("Z", "A_out")


def _ov_act_backward_dZ_is_Z():
    Z = np.random.default_rng(0).standard_normal((KB, KN))
    return "activation_backward", {"dZ": Z, "Z": Z, "A": np.tanh(Z)}, ("dZ", "Z")


def _ov_act_backward_dZ_is_A():
    A = np.tanh(np.random.default_rng(0).standard_normal((KB, KN)))
    return "activation_backward", {"dZ": A, "A": A}, ("dZ", "A")


def _ov_output_dZ_is_Z():
    Z = np.random.default_rng(0).standard_normal((KB, KN))
    return "output_gradient", {"dZ": Z, "Z": Z}, ("dZ", "Z")


def _ov_output_dZ_is_A():
    A = np.random.default_rng(0).standard_normal((KB, KN))
    return "output_gradient", {"dZ": A, "A": A}, ("dZ", "A")


def _ov_output_dZ_is_y():
    Y = np.random.default_rng(0).standard_normal((KB, KN))
    return "output_gradient", {"dZ": Y, "y": Y}, ("dZ", "y")


def _ov_weight_db_in_dW():
    dW = np.zeros((KK, KN))
    return "weight_gradient", {"dW": dW, "db": dW[0]}, ("dW", "db")


def _ov_weight_dW_is_dZ():
    dZ = np.ones((KK, KN))  # B == K
    return "weight_gradient", {"dW": dZ, "dZ": dZ, "A_in": np.ones((KK, KK))}, ("dW", "dZ")


def _ov_weight_dW_is_A_in():
    A = np.ones((KK, KK))  # B == K == N
    return "weight_gradient", {"dW": A, "db": np.zeros(KK), "A_in": A, "dZ": np.ones((KK, KK))}, ("dW", "A_in")


def _ov_weight_db_in_dZ():
    dZ = np.ones((KB, KN))
    return "weight_gradient", {"db": dZ[2], "dZ": dZ}, ("db", "dZ")


def _ov_input_dZ_in_is_Z_in():
    Z = np.random.default_rng(0).standard_normal((KB, KK))
    return "input_gradient", {"dZ_in": Z, "Z_in": Z, "A_in": np.tanh(Z)}, ("dZ_in", "Z_in")


def _ov_input_dZ_in_is_A_in():
    A = np.tanh(np.random.default_rng(0).standard_normal((KB, KK)))
    return "input_gradient", {"dZ_in": A, "A_in": A}, ("dZ_in", "A_in")


def _ov_input_dZ_in_is_dZ():
    dZ = np.ones((KB, KN))  # K == N
    return "input_gradient", {"dZ_in": dZ, "dZ": dZ, "W": np.ones((KN, KN)),
                              "Z_in": np.zeros((KB, KN)), "A_in": np.zeros((KB, KN))}, ("dZ_in", "dZ")


def _ov_input_dZ_in_is_dZ_identity():
    dZ = np.ones((KB, KN))  # K == N, Z_in and A_in omitted
    return "input_gradient", {"dZ_in": dZ, "dZ": dZ, "W": np.ones((KN, KN)), "Z_in": None,
                              "A_in": None, "activation": "identity"}, ("dZ_in", "dZ")


def _ov_input_dZ_in_overlaps_W():
    buf = np.ones(KB * KK + KK * KN)
    start = KB * KK - 4  # the last 4 elements of dZ_in are the first 4 of W
    return "input_gradient", {"dZ_in": buf[:KB * KK].reshape(KB, KK),
                              "W": buf[start:start + KK * KN].reshape(KK, KN)}, ("dZ_in", "W")


def _ov_sgd_grad_is_param():
    P = np.ones((KK, KN))
    return "sgd_update", {"param": P, "grad": P}, ("param", "grad")


def _ov_sgd_grad_shifted_param():
    buf = np.linspace(0.0, 1.0, KK * KN + 1)
    return "sgd_update", {"param": buf[:-1], "grad": buf[1:]}, ("param", "grad")


# activation_forward (A may be Z itself) and activation_backward (dZ may be dA itself)
# allow the exact alias; a PARTIAL overlap is never meaningful and silently corrupts the
# result (the row loop reads values it has already overwritten).
def _ov_act_forward_A_shifted_Z():
    buf = np.linspace(-2.0, 2.0, KB * KN + 1)
    return "activation_forward", {"A": buf[1:].reshape(KB, KN), "Z": buf[:-1].reshape(KB, KN)}, ("A", "Z")


def _ov_act_backward_dZ_shifted_dA():
    buf = np.linspace(-2.0, 2.0, KB * KN + 1)
    return "activation_backward", {"dZ": buf[1:].reshape(KB, KN), "dA": buf[:-1].reshape(KB, KN)}, ("dZ", "dA")


def _ov_act_forward_A_row_shifted_Z():
    buf = np.linspace(-2.0, 2.0, (KB + 1) * KN)
    return "activation_forward", {"A": buf[KN:].reshape(KB, KN), "Z": buf[:-KN].reshape(KB, KN)}, ("A", "Z")


OVERLAPS = [v for k, v in sorted(globals().items()) if k.startswith("_ov_")]


@pytest.mark.parametrize("make", OVERLAPS, ids=[f.__name__[4:] for f in OVERLAPS])
def test_kernel_output_overlapping_input(make):
    fn, overrides, names = make()
    with pytest.raises(ValueError) as info:
        kernel_call(fn, overrides)
    msg = str(info.value)
    assert all(re.search(_names(n), msg) for n in names), msg
    assert "overlap" in msg, msg


def test_kernel_adjacent_outputs_in_one_buffer_are_fine():
    """Views of one buffer that do not overlap are accepted and computed correctly."""
    d = kdata()
    buf = np.full(2 * KB * KN, np.nan)
    Z, A = buf[:KB * KN].reshape(KB, KN), buf[KB * KN:].reshape(KB, KN)
    kernels.dense_forward(Z, A, d["A_in"], d["W"], d["b"], "tanh")
    expected = d["A_in"] @ d["W"] + d["b"]
    np.testing.assert_allclose(Z, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A, np.tanh(expected), rtol=1e-12, atol=1e-12)


def test_kernel_in_place_aliases_that_are_documented_work():
    """activation_forward: A may be Z itself; activation_backward: dZ may be dA itself."""
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((KB, KN))
    expected = np.tanh(Z)
    A = Z.copy()
    kernels.activation_forward(A, A, "tanh")
    np.testing.assert_allclose(A, expected, rtol=1e-14, atol=1e-15)

    dA = rng.standard_normal((KB, KN))
    Af = np.tanh(Z)
    expected = dA * (1 - Af * Af)
    buf = dA.copy()
    kernels.activation_backward(buf, buf, Z, Af, "tanh")
    np.testing.assert_allclose(buf, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_input_conversions_give_identical_results(dtype):
    """Inputs of another dtype, order, stride or byte order are converted exactly like
    np.ascontiguousarray(x, dtype) would."""
    d = kdata(np.float64, seed=7)
    clean = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in d.items()}

    def run(A_in, W, b):
        Z, A = np.empty((KB, KN), dtype), np.empty((KB, KN), dtype)
        kernels.dense_forward(Z, A, A_in, W, b, "relu", n_threads=1)
        return Z, A

    Z0, A0 = run(clean["A_in"], clean["W"], clean["b"])
    variants = [
        (np.asfortranarray(d["A_in"]), np.asfortranarray(d["W"]), d["b"]),
        (d["A_in"].astype(">f8"), d["W"].astype(">f8"), d["b"].astype(">f8")),
        (_strided_of(d["A_in"]), _strided_of(d["W"]), d["b"].tolist()),
        (d["A_in"].tolist(), d["W"].tolist(), d["b"].tolist()),
    ]
    for A_in, W, b in variants:
        Z, A = run(A_in, W, b)
        assert np.array_equal(Z, Z0) and np.array_equal(A, A0)


def test_lr_threshold_of_float32_is_where_the_cast_overflows():
    # check_lr compares with the midpoint below 2^128 instead of casting (the cast needs an
    # errstate context, slow per epoch): the two must agree on both sides of it
    from fastbp._validation import _FLOAT32_ROUNDS_TO_INF as edge, check_lr
    below = float(np.nextafter(edge, 0.0))
    with np.errstate(over="ignore"):
        assert np.isfinite(np.float32(below)) and np.isinf(np.float32(edge))
    assert check_lr(below, np.float32) == below
    with pytest.raises(ValueError, match="finite in float32"):
        check_lr(edge, np.float32)
    assert check_lr(edge, np.float64) == edge


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_arrays_are_read_as_their_aligned_copies(dtype):
    # C-contiguous views at an odd address (a byte buffer's slice): the kernels read whole
    # floats, so the network works on an aligned copy (the sanitizer build flags a
    # misaligned load), with the results of the aligned data
    def unaligned(a):
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
        out = raw[1:].view(a.dtype).reshape(a.shape)
        out[...] = a
        assert not out.flags.aligned and out.flags.c_contiguous
        return out

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5)).astype(dtype)
    Y = rng.standard_normal((40, 2)).astype(dtype)
    labels = rng.integers(0, 3, 40).astype(np.int64)
    for loss, y in (("mse", Y), ("cross_entropy", labels)):
        n_out = 2 if loss == "mse" else 3
        a = fastbp.Network([5, 7, n_out], loss=loss, dtype=dtype, seed=0)
        b = fastbp.Network([5, 7, n_out], loss=loss, dtype=dtype, seed=0)
        a.fit(unaligned(X), unaligned(y), epochs=2, batch_size=8, shuffle=False)
        b.fit(X, y, epochs=2, batch_size=8, shuffle=False)
        assert a._params.tobytes() == b._params.tobytes()
        np.testing.assert_array_equal(a.forward(unaligned(X)), b.forward(X))
        assert a.loss(unaligned(X), unaligned(y)) == b.loss(X, y)


@pytest.mark.filterwarnings("error")
def test_a_value_past_float32s_range_is_the_error_alone():
    # 1e300 in X for a float32 network: a ValueError, with no NumPy overflow warning
    # before it (warnings are errors here)
    net = fastbp.Network([3, 2], dtype=np.float32, seed=0)
    X = np.array([[1e300, 0.0, 0.0]])
    with pytest.raises(ValueError, match="infinite"):
        net.forward(X)
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(ValueError, match="infinite"):
        net.forward(sparse.csr_matrix(X))
