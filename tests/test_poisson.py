"""The Poisson loss: Network(loss="poisson") and fastbp.sklearn.MLPRegressor(loss="poisson").

The loss is half the Poisson deviance of y against mu = exp(z), y log(y / mu) - y + mu
(0 log 0 = 0), scikit-learn's poisson_loss; fastbp.Network averages it over rows and
outputs as it does mse, and fastbp.sklearn scales it by n_outputs_ to scikit-learn's sum
over outputs of each column's mean.

Tolerances. Compiled against reference: as in test_network.py, a dot product of length K
rounds to about K eps of sum |a w|, summed in another order on each side; exp and log add
an ulp or two. The bound 4 L K_max eps max(1, scale) (per SGD step, growing linearly over
steps) covers it with room; a wrong term (the y log y constant left out, mu - y with the
wrong sign, a mean over rows only) moves the values by O(1). Against scikit-learn in
float64 the runs differ only by the order of the sums (see test_sklearn.py): rtol 1e-9 on
the loss curves, 1e-8 (atol 1e-10) on the parameters; in float32, 1e-4.
"""

import pickle
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import kernels, reference

DTYPES = [np.float32, np.float64]
ACTIVATIONS = ["identity", "relu", "tanh", "sigmoid", "gelu"]
SIZES = [7, 19, 9, 3]


def bound(dtype, sizes=SIZES, scale=1.0, steps=1):
    return 4 * (len(sizes) - 1) * max(sizes) * np.finfo(dtype).eps * max(1.0, scale) * steps


def counts(shape, seed=0, dtype=np.float64, rate=1.5):
    """Poisson counts, zeros included (the 0 log 0 = 0 case)."""
    y = np.random.default_rng(seed).poisson(rate, shape).astype(dtype)
    assert y.size < 20 or ((y == 0).any() and (y > 0).any())
    return y


def data(B=41, seed=0, dtype=np.float64, n_out=SIZES[-1]):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, SIZES[0])).astype(dtype)
    return X, counts((B, n_out), seed + 1, dtype)


def pair(activation, dtype, sizes=SIZES, seed=3):
    net = fastbp.Network(sizes, activation=activation, loss="poisson", dtype=dtype, seed=seed)
    ref = reference.Network(sizes, activation=activation, loss="poisson", dtype=dtype,
                            seed=seed)
    rng = np.random.default_rng(seed + 100)
    for l in range(len(net.biases)):
        b = rng.uniform(-0.5, 0.5, net.biases[l].shape).astype(dtype)
        net.biases[l][...] = b
        ref.biases[l][...] = b
    return net, ref


def half_deviance(y, mu):
    """Half the Poisson deviance per element, in float64, independently of both."""
    y, mu = np.asarray(y, np.float64), np.asarray(mu, np.float64)
    ylogy = np.zeros_like(y)
    pos = y > 0
    ylogy[pos] = y[pos] * np.log(y[pos] / mu[pos])
    return ylogy - y + mu


def test_configuration():
    net = fastbp.Network(SIZES, loss="poisson")
    assert net.loss_name == "poisson" and net.output_activation == "exp"
    assert fastbp.Network(SIZES, loss="poisson", output_activation="exp").output_activation == "exp"
    for bad in ("identity", "softmax", "relu"):
        with pytest.raises(ValueError, match="output_activation"):
            fastbp.Network(SIZES, loss="poisson", output_activation=bad)
        with pytest.raises(ValueError, match="output_activation"):
            reference.Network(SIZES, loss="poisson", output_activation=bad)
    # exp is poisson's alone, not an activation of its own
    with pytest.raises(ValueError):
        fastbp.Network(SIZES, loss="mse", output_activation="exp")


# -- the loss and its gradient ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_output_gradient_kernel_against_the_definition(dtype):
    rng = np.random.default_rng(0)
    B, N = 37, 5
    Z = rng.uniform(-3, 3, (B, N)).astype(dtype)
    A = np.exp(Z)
    y = counts((B, N), 1, dtype)
    dZ = np.empty_like(Z)
    value = kernels.output_gradient(dZ, Z, A, y, "poisson")
    mu = np.exp(Z.astype(np.float64))
    eps = np.finfo(dtype).eps
    expected = half_deviance(y, mu).mean()
    assert abs(value - expected) <= 16 * eps * max(1.0, expected)
    np.testing.assert_allclose(dZ, (mu - y) / (B * N), rtol=16 * eps,
                               atol=16 * eps * np.abs(mu - y).max() / (B * N))
    # the same value and gradient as the reference's loss
    ref = reference.Network([N, N], loss="poisson", dtype=dtype)
    ref_value, ref_dZ = ref._loss_and_output_grad(Z, A, None, y)
    assert abs(value - ref_value) <= 16 * eps * max(1.0, abs(ref_value))
    np.testing.assert_allclose(dZ, ref_dZ, rtol=16 * eps, atol=16 * eps * np.abs(ref_dZ).max())


def test_loss_value_is_scikit_learns_poisson_loss_over_the_outputs():
    from_sklearn = pytest.importorskip("sklearn.neural_network._base")
    rng = np.random.default_rng(2)
    B, N = 29, 4
    Z = rng.uniform(-2, 2, (B, N))
    y = counts((B, N), 3)
    w = rng.uniform(0.1, 2.0, B)
    dZ = np.empty_like(Z)
    value = kernels.output_gradient(dZ, Z, np.exp(Z), y, "poisson")
    # scikit-learn sums over the outputs what fastbp averages
    np.testing.assert_allclose(value * N, from_sklearn.poisson_loss(y, np.exp(Z)), rtol=1e-13)
    net = fastbp.Network([N, N], activation="identity", loss="poisson", dtype=np.float64)
    net.weights = [np.eye(N)]
    net.biases = [np.zeros(N)]
    np.testing.assert_allclose(net.loss(Z, y) * N, from_sklearn.poisson_loss(y, np.exp(Z)),
                               rtol=1e-13)
    np.testing.assert_allclose(net.loss(Z, y, sample_weight=w) * N,
                               from_sklearn.poisson_loss(y, np.exp(Z), sample_weight=w),
                               rtol=1e-13)


def test_loss_is_zero_at_the_truth_and_finite_for_zero_counts():
    y = np.array([[0.0, 1.0, 4.0], [2.0, 0.0, 0.0]])
    net = fastbp.Network([3, 3], activation="identity", loss="poisson", dtype=np.float64)
    net.weights = [np.eye(3)]
    net.biases = [np.zeros(3)]
    z = np.log(np.where(y > 0, y, 1e-300))    # mu = y (zero counts: mu ~ 0)
    assert abs(net.loss(z, y)) < 1e-12
    dW, db = net.gradients(z, y)
    assert np.abs(db[0]).max() < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_parity_with_reference(activation, dtype, weighted):
    net, ref = pair(activation, dtype)
    X, y = data(dtype=dtype)
    w = np.random.default_rng(7).uniform(0.2, 2.0, X.shape[0]) if weighted else None
    tol = bound(dtype) * max(1.0, X.shape[0] / max(SIZES))

    out, out_ref = net.forward(X), ref.forward(X)
    assert out.dtype == np.dtype(dtype) and (out > 0).all()
    np.testing.assert_allclose(out, out_ref, rtol=tol, atol=0)
    np.testing.assert_array_equal(net.predict(X), out)
    kw = {} if w is None else {"sample_weight": w}
    value, value_ref = net.loss(X, y, **kw), ref.loss(X, y, **kw)
    assert abs(value - value_ref) <= tol * max(1.0, abs(value_ref))

    if w is None:
        dW, db = net.gradients(X, y)
        dW_ref, db_ref = ref.gradients(X, y)
        for l in range(len(dW)):
            scale = max(np.abs(dW_ref[l]).max(), np.abs(db_ref[l]).max(), 1e-3)
            np.testing.assert_allclose(dW[l], dW_ref[l], rtol=0, atol=tol * scale)
            np.testing.assert_allclose(db[l], db_ref[l], rtol=0, atol=tol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_matches_reference(dtype, optimizer):
    net, ref = pair("tanh", dtype, seed=11)
    X, y = data(B=50, seed=5, dtype=dtype)
    kw = dict(epochs=3, batch_size=8, optimizer=optimizer,
              lr=0.05 if optimizer == "sgd" else 0.01)
    net.fit(X, y, **kw)
    ref.fit(X, y, **kw)
    tol = bound(dtype, steps=3 * 7)
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)
    np.testing.assert_allclose(net.loss_curve_, ref.loss_curve_, rtol=tol, atol=tol)
    assert net.loss_curve_[-1] < net.loss_curve_[0]    # it learns


def test_fit_learns_a_log_linear_rate():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 4))
    rate = np.exp(0.6 * X[:, :1] - 0.4 * X[:, 1:2])
    y = rng.poisson(rate).astype(np.float64)
    net = fastbp.Network([4, 1], activation="identity", loss="poisson", dtype=np.float64,
                         seed=0)
    net.fit(X, y, epochs=40, batch_size=32, lr=0.05)
    # the GLM's coefficients, up to the noise of 2000 counts
    np.testing.assert_allclose(net.weights[0][:, 0], [0.6, -0.4, 0.0, 0.0], atol=0.1)
    assert abs(net.biases[0][0]) < 0.1


@pytest.mark.parametrize("dtype", DTYPES)
def test_overflowing_mean_is_divergence_not_garbage(dtype):
    net = fastbp.Network([2, 1], activation="identity", loss="poisson", dtype=dtype)
    net.weights = [np.array([[1.0], [0.0]])]
    net.biases = [np.zeros(1)]
    big = 1000.0                                    # exp(1000) overflows both dtypes
    X = np.array([[big, 0.0], [0.0, 0.0]])
    y = np.array([1.0, 2.0])
    assert np.isinf(net.forward(X)[0, 0])
    assert not np.isfinite(net.loss(X, y))
    before = [p.copy() for p in net.weights + net.biases]
    with pytest.raises(fastbp.DivergedError):
        net.train_step(X, y, lr=0.1)
    for a, b in zip(net.weights + net.biases, before):
        np.testing.assert_array_equal(a, b)


# -- targets ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [fastbp.Network, reference.Network])
@pytest.mark.parametrize("bad,error", [(-1.0, ValueError), (np.nan, ValueError),
                                       (np.inf, ValueError)])
def test_bad_targets_are_refused(cls, bad, error):
    net = cls(SIZES, loss="poisson", seed=0)
    X, y = data()
    y[5, 1] = bad
    before = [p.copy() for p in net.weights + net.biases]
    for call in (lambda: net.loss(X, y), lambda: net.train_step(X, y),
                 lambda: net.gradients(X, y), lambda: net.fit(X, y, epochs=1)):
        with pytest.raises(error, match=r"\by\b"):
            call()
    for a, b in zip(net.weights + net.biases, before):
        np.testing.assert_array_equal(a, b)


def test_negative_target_message():
    net = fastbp.Network(SIZES, loss="poisson")
    X, y = data()
    y[0, 0] = -0.5
    with pytest.raises(ValueError, match=r"y must be non-negative.*poisson"):
        net.loss(X, y)


def test_one_output_takes_a_vector_of_counts():
    net = fastbp.Network([SIZES[0], 5, 1], loss="poisson", dtype=np.float64, seed=0)
    X, y = data(n_out=1)
    assert net.loss(X, y.ravel()) == net.loss(X, y)


# -- saving, pickling, the lean forward path ---------------------------------------------

def test_save_load_and_pickle(tmp_path):
    net, _ = pair("relu", np.float32)
    X, _ = data(dtype=np.float32)
    path = tmp_path / "poisson.npz"
    net.save(path)
    for other in (fastbp.load(path), pickle.loads(pickle.dumps(net))):
        assert other.loss_name == "poisson" and other.output_activation == "exp"
        np.testing.assert_array_equal(other.forward(X), net.forward(X))
    ref = reference.load(path) if hasattr(reference, "load") else None
    if ref is not None:
        np.testing.assert_allclose(ref.forward(X), net.forward(X), rtol=bound(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_and_checked_forward_give_the_same_bits(dtype):
    net, _ = pair("gelu", dtype)
    for n in (1, 7, 3000):
        X, _ = data(B=n, dtype=dtype)
        np.testing.assert_array_equal(net.forward(X), net.forward(np.asfortranarray(X)))


# -- fastbp.sklearn.MLPRegressor(loss="poisson") ------------------------------------------

sklearn = pytest.importorskip("sklearn", minversion="1.6")


def _sk_data(n=120, n_out=1, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, 6))
    rate = np.exp(0.5 * X[:, :n_out] - 0.3 * X[:, 1:n_out + 1])
    y = rng.poisson(rate).astype(np.float64)
    return X, (y.ravel() if n_out == 1 else y)


def _fit_both(X, y, sample_weight=None, **params):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor as SkMLP
    from fastbp.sklearn import MLPRegressor
    ours, theirs = MLPRegressor(**params), SkMLP(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y, sample_weight=sample_weight)
        theirs.fit(X, y, sample_weight=sample_weight)
    return ours, theirs


BASE = dict(loss="poisson", hidden_layer_sizes=(8, 5), random_state=1, max_iter=12,
            alpha=0.01, batch_size=32)

CASES = [
    dict(solver="adam"),
    dict(solver="sgd", learning_rate_init=0.01),
    dict(solver="sgd", learning_rate_init=0.02, nesterovs_momentum=False,
         learning_rate="invscaling", activation="tanh"),
    dict(solver="adam", activation="logistic", learning_rate_init=0.01),
    dict(solver="adam", early_stopping=True, max_iter=25, n_iter_no_change=2, tol=1e-2),
]


@pytest.mark.parametrize("params", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("n_out", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_parity_with_sklearn(params, n_out, weighted):
    X, y = _sk_data(n_out=n_out)
    sw = np.random.RandomState(5).uniform(0.2, 3.0, X.shape[0]) if weighted else None
    ours, theirs = _fit_both(X, y, sample_weight=sw, **{**BASE, **params})
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-9)
    if theirs.validation_scores_ is not None:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_,
                                   rtol=1e-9)
    else:
        np.testing.assert_allclose(ours.best_loss_, theirs.best_loss_, rtol=1e-9)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    pred = ours.predict(X)
    assert (pred > 0).all()
    np.testing.assert_allclose(pred, theirs.predict(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.score(X, y), theirs.score(X, y), rtol=1e-8)


def test_parity_with_sklearn_partial_fit_and_float32():
    from sklearn.neural_network import MLPRegressor as SkMLP
    from fastbp.sklearn import MLPRegressor
    X, y = _sk_data()
    params = dict(BASE, solver="sgd", learning_rate_init=0.01)
    ours, theirs = MLPRegressor(**params), SkMLP(**params)
    for start in range(0, 120, 40):
        ours.partial_fit(X[start:start + 40], y[start:start + 40])
        theirs.partial_fit(X[start:start + 40], y[start:start + 40])
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    ours32, theirs32 = _fit_both(X.astype(np.float32), y, **{**BASE, "solver": "adam"})
    assert ours32.coefs_[0].dtype == np.float32 == theirs32.coefs_[0].dtype
    np.testing.assert_allclose(ours32.loss_curve_, theirs32.loss_curve_, rtol=1e-4)
    for a, b in zip(ours32.coefs_, theirs32.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sklearn_negative_y_is_refused():
    from fastbp.sklearn import MLPRegressor
    X, y = _sk_data()
    y = y.copy()
    y[3] = -1.0
    est = MLPRegressor(loss="poisson", max_iter=2)
    with pytest.raises(ValueError, match=r"y must be non-negative.*poisson"):
        est.fit(X, y)
    assert not hasattr(est, "coefs_")
    with pytest.raises(ValueError, match=r"y must be non-negative.*poisson"):
        MLPRegressor(loss="poisson").partial_fit(X, y)
    # the squared error takes any y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPRegressor(max_iter=2).fit(X, y)


def test_sklearn_poisson_pickles_and_predicts_exp():
    from fastbp.sklearn import MLPRegressor
    X, y = _sk_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPRegressor(**BASE).fit(X, y)
    other = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(other.predict(X), est.predict(X))
    # predict is exp of the last layer's output, computed from coefs_ and intercepts_
    a = X
    for W, b in zip(est.coefs_[:-1], est.intercepts_[:-1]):
        a = np.maximum(a @ W + b, 0)
    z = (a @ est.coefs_[-1] + est.intercepts_[-1]).ravel()
    np.testing.assert_allclose(est.predict(X), np.exp(z), rtol=1e-12)
