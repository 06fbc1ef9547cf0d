"""Full-batch L-BFGS: fastbp.Network.fit(optimizer="lbfgs") against fastbp.reference, and
fastbp.sklearn's solver="lbfgs" against scikit-learn's.

Tolerances: the compiled loss and gradient differ from NumPy's by rounding only (float64:
about 1e-15 relative per sum over at most a few hundred terms). L-BFGS-B turns its inputs
into steps through line searches, which amplify such differences a little each iteration;
over 10-20 iterations of these well-conditioned problems they stay below 1e-8 relative,
so 1e-6 leaves two orders of margin while a wrong gradient (a missing penalty or a
misplaced weight) fails by far more.
"""

import pickle
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import reference
from fastbp.optim import LBFGS

scipy = pytest.importorskip("scipy")


def _copy_parameters(src, dst):
    for a, b in zip(dst.weights, src.weights):
        a[...] = b
    for a, b in zip(dst.biases, src.biases):
        a[...] = b


def _problem(loss, rng, n=240, n_in=9, n_out=3):
    X = rng.standard_normal((n, n_in))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, n_out)) < 0.4).astype(np.float64)
    else:
        y = rng.standard_normal((n, n_out))
    return X, y


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity", "gelu"])
def test_network_lbfgs_matches_reference(loss, activation):
    rng = np.random.default_rng(5)
    X, y = _problem(loss, rng)
    w = rng.random(X.shape[0]) + 0.5
    nets = []
    for cls in (fastbp.Network, reference.Network):
        net = cls([9, 11, 7, 3], activation=activation, loss=loss, dtype=np.float64, seed=3)
        nets.append(net)
    _copy_parameters(nets[0], nets[1])
    for net in nets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
            net.fit(X, y, epochs=12, optimizer=LBFGS(l2=1e-2), sample_weight=w)
    fast, ref = nets
    assert fast.optimizer_.n_iter_ == ref.optimizer_.n_iter_ >= 1
    np.testing.assert_allclose(fast.loss_curve_, ref.loss_curve_, rtol=1e-6)
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_batch_gradient_is_the_loss_derivative(dtype):
    # central differences of the objective (loss + penalty) against its gradient, with
    # row weights and the per-sample penalty; float32 with a wider step and tolerance
    rng = np.random.default_rng(2)
    X, y = _problem("cross_entropy", rng, n=30, n_in=5, n_out=4)
    net = fastbp.Network([5, 6, 4], activation="tanh", dtype=dtype, seed=0)
    data = net._prepare(X, y, rng.random(30) + 0.1)
    objective = net._full_batch(data, 0.3, True)
    x = objective.x0()
    f, g = objective(x)
    eps = 1e-6 if dtype == np.float64 else 1e-2
    numeric = np.empty_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = eps
        numeric[i] = (objective(x + step)[0] - objective(x - step)[0]) / (2 * eps)
    tol = 1e-7 if dtype == np.float64 else 2e-2
    np.testing.assert_allclose(g, numeric, rtol=tol, atol=tol)
    # the penalty is in f: without it the value drops by 0.5 * decay * sum(W^2)
    plain = net._full_batch(data, 0.0, True)
    f0, g0 = plain(x)
    decay = 0.3 / data.weights.sum(dtype=np.float64)
    sq = sum(float((W.astype(np.float64) ** 2).sum()) for W in net.weights)
    assert f - f0 == pytest.approx(0.5 * decay * sq, rel=1e-5)
    assert not np.allclose(g, g0)


@pytest.mark.parametrize("n_threads", [2, 3, 8])
def test_lbfgs_same_bits_for_any_thread_count(n_threads, monkeypatch):
    # n_threads is capped at the usable cores: lift the cap so 3 and 8 run as asked
    from fastbp import _validation
    monkeypatch.setattr(_validation, "cpu_count", lambda: 64)
    rng = np.random.default_rng(1)
    X, y = _problem("cross_entropy", rng, n=3000, n_in=40, n_out=5)
    runs = []
    for nt in (1, n_threads):
        net = fastbp.Network([40, 64, 5], dtype=np.float32, seed=0, n_threads=nt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
            net.fit(X, y, epochs=8, optimizer="lbfgs", l2=1e-3)
        assert net.n_threads == nt
        runs.append(net)
    a, b = runs
    assert a.loss_curve_ == b.loss_curve_
    assert a._params.tobytes() == b._params.tobytes()


def test_lbfgs_stops_at_max_fun_with_a_warning():
    rng = np.random.default_rng(0)
    X, y = _problem("mse", rng)
    net = fastbp.Network([9, 8, 3], loss="mse", dtype=np.float64, seed=0)
    with pytest.warns(fastbp.ConvergenceWarning, match="lbfgs failed to converge"):
        net.fit(X, y, epochs=500, optimizer=LBFGS(max_fun=7))
    assert net.optimizer_.n_fun_ <= 8 and net.optimizer_.n_iter_ <= 7


def test_lbfgs_converges_and_trains():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    net = fastbp.Network([4, 16, 2], activation="tanh", dtype=np.float64, seed=0)
    before = net.loss(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastbp.ConvergenceWarning)
        net.fit(X, y, epochs=2000, optimizer=LBFGS(tol=1e-5))
    assert net.loss(X, y) < 0.1 * before
    assert (net.predict(X) == y).mean() > 0.95
    assert len(net.loss_curve_) == net.optimizer_.n_iter_
    assert all(b <= a + 1e-12 for a, b in zip(net.loss_curve_, net.loss_curve_[1:]))
    pickle.loads(pickle.dumps(net))


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1), dict(momentum=0.9), dict(validation_split=0.2), dict(early_stopping=True),
    dict(lr_schedule="adaptive"), dict(callbacks=[lambda *a: None]),
])
def test_lbfgs_rejects_minibatch_options(kwargs):
    rng = np.random.default_rng(0)
    X, y = _problem("cross_entropy", rng, n=20)
    net = fastbp.Network([9, 4, 3], seed=0)
    before = net._params.copy()
    with pytest.raises(ValueError):
        net.fit(X, y, epochs=3, optimizer="lbfgs", **kwargs)
    assert np.array_equal(net._params, before)


@pytest.mark.parametrize("bad, error", [
    (dict(max_fun=0), ValueError), (dict(max_fun=2.5), TypeError), (dict(tol=-1.0), ValueError),
    (dict(l2=float("nan")), ValueError),
])
def test_lbfgs_bad_hyperparameters(bad, error):
    with pytest.raises(error):
        LBFGS(**bad)


def test_train_epoch_refuses_lbfgs():
    net = fastbp.Network([3, 2], seed=0)
    with pytest.raises(TypeError):
        net.train_epoch(np.zeros((4, 3)), np.zeros(4, dtype=int), optimizer=LBFGS())


# -- fastbp.sklearn's solver="lbfgs" against scikit-learn's ----------------------------------

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network as skn  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import fastbp.sklearn as fsk  # noqa: E402


def _sk_data(kind):
    if kind in ("multiclass", "binary"):
        X, y = load_digits(n_class=3 if kind == "multiclass" else 2, return_X_y=True)
        return X[:300] / 16.0, y[:300]
    if kind == "multilabel":
        X, y = load_digits(return_X_y=True)
        return X[:300] / 16.0, np.stack([y[:300] % 2, y[:300] > 4], axis=1).astype(int)
    X, y = make_regression(n_samples=200, n_features=10, n_targets=2 if kind == "multi" else 1,
                           noise=10.0, random_state=0)
    return X, y / y.std()


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression", "multi"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sklearn_lbfgs_matches_scikit_learn(kind, weighted):
    X, y = _sk_data(kind)
    sw = np.random.RandomState(0).uniform(0.5, 2.0, X.shape[0]) if weighted else None
    fitted = []
    for mod in (fsk, skn):
        cls = mod.MLPRegressor if kind in ("regression", "multi") else mod.MLPClassifier
        est = cls(solver="lbfgs", hidden_layer_sizes=(13,), alpha=1e-3, max_iter=15,
                  random_state=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y, sample_weight=sw)
        fitted.append(est)
    ours, theirs = fitted
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not hasattr(ours, "loss_curve_") and not hasattr(theirs, "loss_curve_")
    if kind in ("regression", "multi"):
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6, atol=1e-8)
    else:
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_loss_grad_lbfgs_is_scikit_learns():
    X, y = _sk_data("multiclass")
    ests = []
    for mod in (fsk, skn):
        est = mod.MLPClassifier(solver="lbfgs", hidden_layer_sizes=(6, 5), alpha=0.1,
                                max_iter=1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        ests.append(est)
    theta = np.hstack([a.ravel() for a in ests[1].coefs_ + ests[1].intercepts_])
    Y = ests[1]._label_binarizer.transform(y)
    out = []
    for est in ests:
        coef_grads, intercept_grads = [None] * 3, [None] * 3
        loss, grad = est._loss_grad_lbfgs(theta, X, Y, None, [X] + [None] * 3, [None] * 3,
                                          coef_grads, intercept_grads)
        out.append((loss, grad, coef_grads, intercept_grads))
        for c, t in zip(est.coefs_, ests[1].coefs_):
            assert c.shape == t.shape
    (l1, g1, c1, i1), (l2, g2, c2, i2) = out
    assert l1 == pytest.approx(l2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-14)
    for a, b in zip(c1 + i1, c2 + i2):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_sklearn_lbfgs_max_fun_and_warm_start():
    X, y = _sk_data("multiclass")
    for mod in (fsk, skn):
        est = mod.MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_fun=5,
                                random_state=0)
        with pytest.warns(ConvergenceWarning):
            est.fit(X, y)
        assert est.n_iter_ <= 5
    ours = fsk.MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=5,
                             warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        first = ours.loss_
        ours.fit(X, y)
    assert ours.loss_ < first
    assert not hasattr(ours, "partial_fit")


def test_lbfgs_on_sparse_x_is_lbfgs_on_the_dense_x():
    # the full-batch pass takes a CSR X through the sparse first layer: the same run as on
    # the dense X to rounding (float64; sums of at most 40 products differ in order only)
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((150, 40)) * (rng.random((150, 40)) < 0.1)
    y = rng.integers(0, 3, 150)
    nets = []
    for data in (X, sp.csr_matrix(X)):
        net = fastbp.Network([40, 12, 3], activation="tanh", dtype=np.float64, seed=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
            net.fit(data, y, epochs=15, optimizer=LBFGS(l2=1e-2))
        nets.append(net)
    dense, sparse = nets
    assert dense.optimizer_.n_iter_ == sparse.optimizer_.n_iter_
    np.testing.assert_allclose(dense.loss_curve_, sparse.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(dense._params, sparse._params, rtol=1e-7, atol=1e-10)


def test_sklearn_poisson_lbfgs_matches_scikit_learn():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((200, 6))
    y = rng.poisson(np.exp(0.3 * X[:, 0] - 0.2 * X[:, 1]))
    fitted = []
    for mod in (fsk, skn):
        est = mod.MLPRegressor(loss="poisson", solver="lbfgs", hidden_layer_sizes=(8,),
                               alpha=1e-3, max_iter=15, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        fitted.append(est)
    ours, theirs = fitted
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-5)


def test_blas_on_one_thread_during_the_minimize_only():
    # fastbp's objective uses no BLAS; SciPy's L-BFGS-B work between evaluations does, and
    # its threads would compete with fastbp's: one BLAS thread meanwhile, restored after
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastbp import _lbfgs

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]

    before = blas_threads()
    seen = []

    def objective(x):
        seen.append(blas_threads())
        return float(x @ x), 2 * x

    _lbfgs.minimize(objective, np.ones(5), max_iter=5, max_fun=20, tol=1e-8,
                    one_blas_thread=True)
    assert seen and all(all(n == 1 for n in threads) for threads in seen)
    assert blas_threads() == before
    seen.clear()
    _lbfgs.minimize(objective, np.ones(5), max_iter=5, max_fun=20, tol=1e-8)
    assert seen and all(threads == before for threads in seen)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy's overflow, in the reference
@pytest.mark.parametrize("cls", [fastbp.Network, reference.Network])
def test_lbfgs_from_a_diverged_start_raises_as_the_minibatch_optimizers(cls):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4)) * 1e200
    y = rng.standard_normal((50, 1))
    net = cls([4, 8, 1], loss="mse", dtype=np.float64, seed=0)
    with pytest.raises(fastbp.DivergedError, match="not finite"):
        net.fit(X, y, epochs=5, optimizer="lbfgs")
