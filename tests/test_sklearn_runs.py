"""fastbp.sklearn's runs of epochs (EpochRunner.run_epochs, _network.Trainer.run_epochs)
against its loop of one epoch at a time, their slow twin: where nothing between two epochs
needs Python, fit runs them in one compiled call that shuffles the rows, saves the
parameters for a rollback and applies scikit-learn's stopping rule itself. Both ways draw
the same shuffles and take the same steps, so every comparison here is exact: parameters,
loss curves, the counts of the stopping rule, the optimizer's step count, the learning
rate, warnings, what the random state draws next, and where training diverges or is
interrupted.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import fastbp  # noqa: E402
import fastbp.sklearn as fsk  # noqa: E402
from fastbp.network import EpochRunner  # noqa: E402


@pytest.fixture
def count_runs(monkeypatch):
    """The epochs each call of EpochRunner.run_epochs completed, in a list."""
    runs = []
    real = EpochRunner.run_epochs

    def counted(self, order, random_state, max_epochs, rule, on_epochs):
        # a run's epochs: those completed, and a diverged one (then the run raises)
        completed = []

        def on(losses):
            completed.append(len(losses))
            on_epochs(losses)
        try:
            result = real(self, order, random_state, max_epochs, rule, on)
        except fastbp.DivergedError:
            runs.append(completed[0] + 1)
            raise
        runs.append(completed[0])
        return result

    monkeypatch.setattr(EpochRunner, "run_epochs", counted)
    return runs


def _fit_both_ways(make, X, y, monkeypatch, **fit_kw):
    """(estimator fitted in runs, estimator fitted epoch by epoch, their warnings)."""
    out = []
    for in_runs in (True, False):
        monkeypatch.setattr(fsk, "_EPOCHS_IN_RUNS", in_runs)
        est = make()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(X, y, **fit_kw)
        out.append((est, [(w.category, str(w.message)) for w in caught]))
    return out


def _assert_same_fit(a, b):
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert x.tobytes() == y.tobytes()
    assert a.loss_curve_ == b.loss_curve_
    assert all(type(v) is float for v in a.loss_curve_)
    assert (a.n_iter_, a.t_, a.loss_, a.best_loss_, a._no_improvement_count) == \
        (b.n_iter_, b.t_, b.loss_, b.best_loss_, b._no_improvement_count)
    assert a._optimizer.t == b._optimizer.t
    assert a._optimizer.lr == b._optimizer.lr and a._learning_rate == b._learning_rate
    for x, y in zip(a._optimizer.state, b._optimizer.state):
        assert x.tobytes() == y.tobytes()
    # the random state drew the same numbers (one shuffle per epoch, no more)
    assert a._random_state.randint(1 << 30) == b._random_state.randint(1 << 30)


def _data(n=300, d=12, classes=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0.3)
    return X, y % classes, rng


CONFIGS = {
    # adam, stops by tol before max_iter
    "adam": (fsk.MLPClassifier, dict(hidden_layer_sizes=(32, 16), max_iter=300,
                                      random_state=0)),
    # max_iter reached: the ConvergenceWarning, once
    "adam_max_iter": (fsk.MLPClassifier, dict(hidden_layer_sizes=(20,), max_iter=15,
                                              random_state=1)),
    "momentum": (fsk.MLPClassifier, dict(solver="sgd", hidden_layer_sizes=(24,),
                                         learning_rate_init=0.05, max_iter=120,
                                         random_state=2)),
    # adaptive: the rule divides the learning rate by 5 and training goes on, several
    # times (a tol this large triggers it every n_iter_no_change + 1 epochs)
    "nesterov_adaptive": (fsk.MLPClassifier, dict(
        solver="sgd", learning_rate="adaptive", nesterovs_momentum=True, tol=0.05,
        n_iter_no_change=3, hidden_layer_sizes=(16,), max_iter=200, random_state=3)),
    "no_shuffle": (fsk.MLPClassifier, dict(hidden_layer_sizes=(16,), shuffle=False,
                                           max_iter=60, random_state=4)),
    "integer_tol": (fsk.MLPClassifier, dict(hidden_layer_sizes=(16,), tol=0, max_iter=40,
                                            n_iter_no_change=5, random_state=5)),
    # mse: scikit-learn's loss is half the mean squared error plus the penalty
    "regressor": (fsk.MLPRegressor, dict(hidden_layer_sizes=(32,), max_iter=80,
                                         random_state=6)),
    "binary": (fsk.MLPClassifier, dict(hidden_layer_sizes=(8, 8), alpha=1e-2,
                                       batch_size=64, max_iter=100, random_state=7)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_runs_of_epochs_equal_the_loop_epoch_by_epoch(name, dtype, monkeypatch, count_runs):
    est_cls, params = CONFIGS[name]
    X, y, rng = _data(dtype=dtype)
    if name == "regressor":
        y = X[:, :3].sum(axis=1) + 0.1 * rng.standard_normal(X.shape[0])
    if name == "binary":
        y = y % 2
    (a, warn_a), (b, warn_b) = _fit_both_ways(lambda: est_cls(**params), X, y, monkeypatch)
    _assert_same_fit(a, b)
    assert warn_a == warn_b
    if name == "adam_max_iter":
        assert [w for w in warn_a if w[0] is ConvergenceWarning]
    if name == "nesterov_adaptive":
        assert a._learning_rate < params.get("learning_rate_init", 1e-3) / 20
    # the fit in runs ran every epoch in them
    assert sum(count_runs) == a.n_iter_
    assert len(count_runs) >= 1


def test_runs_with_sample_weight_and_warm_start(monkeypatch, count_runs):
    X, y, rng = _data(n=250, seed=1)
    w = rng.random(X.shape[0]).astype(np.float32)
    ests = []
    for in_runs in (True, False):
        monkeypatch.setattr(fsk, "_EPOCHS_IN_RUNS", in_runs)
        est = fsk.MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, warm_start=True,
                                random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y, sample_weight=w)
            est.fit(X, y)       # warm: the best loss and counts carry over
        ests.append(est)
    _assert_same_fit(*ests)
    assert len(count_runs) == 2


@pytest.mark.parametrize("n_threads", [2, 4])
def test_runs_on_threads_equal_the_loop_and_one_thread(n_threads, monkeypatch, count_runs):
    # Batches of 200 rows are cut into row parts that threads share: runs on any thread
    # count equal the loop epoch by epoch and one thread, bit for bit.
    X, y, _ = _data(n=600, d=8, seed=2)
    fits = []
    for t in (n_threads, 1):
        fits.append(_fit_both_ways(
            lambda: fsk.MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=40, tol=0.0,
                                      n_iter_no_change=10**6, n_threads=t, random_state=0),
            X, y, monkeypatch))
    (a, _), (b, _) = fits[0]
    (c, _), (d, _) = fits[1]
    _assert_same_fit(a, b)
    _assert_same_fit(c, d)
    for x, z in zip(a.coefs_ + a.intercepts_, c.coefs_ + c.intercepts_):
        assert x.tobytes() == z.tobytes()
    assert a.loss_curve_ == c.loss_curve_
    assert sum(count_runs) == 2 * a.n_iter_

def test_divergence_in_a_run_like_epoch_by_epoch(monkeypatch, count_runs):
    # A learning rate that makes the weights overflow after some epochs: both ways go on
    # through it as scikit-learn does (NaN losses, the stopping rule seeing them) and
    # raise scikit-learn's error at the end, with the same parameters, loss curve (NaN
    # where the other has NaN) and step count.
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 6)).astype(np.float32)
    y = (X.sum(axis=1) * 1e3).astype(np.float32)
    out = []
    for in_runs in (True, False):
        monkeypatch.setattr(fsk, "_EPOCHS_IN_RUNS", in_runs)
        est = fsk.MLPRegressor(solver="sgd", learning_rate_init=0.02, momentum=0.9,
                               hidden_layer_sizes=(32,), max_iter=60, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with pytest.raises(ValueError, match="non-finite parameter weights"):
                est.fit(X, y)
        out.append(est)
    a, b = out
    assert a.n_iter_ == b.n_iter_ == 60
    assert np.isnan(a.loss_curve_[-1])
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)   # NaN equal to NaN
    for x, y_ in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert x.tobytes() == y_.tobytes()
    assert a._optimizer.t == b._optimizer.t
    assert count_runs and sum(count_runs) == a.n_iter_


@pytest.mark.parametrize("n_rows", [20000, 200000])
def test_ctrl_c_in_a_run(n_rows, monkeypatch, count_runs, interrupt_after):
    # Ctrl-C during a run, between two epochs (20,000 rows: epochs of a few ms, shorter
    # than the compiled loop's signal checks) or within one (200,000 rows): scikit-learn's
    # warning, soon; the epochs completed before it counted (loss curve, n_iter_, t_), and
    # the optimizer's step count that of the parameters: at least those epochs' steps,
    # fewer than one more epoch's.
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n_rows, 32)).astype(np.float32)
    y = rng.integers(0, 5, X.shape[0])
    # several seconds of epochs (2-6 on the 2-vCPU guest) if the signal were missed (then
    # no warning: the test fails); the signal comes at 0.4 s
    est = fsk.MLPClassifier(hidden_layer_sizes=(64,), max_iter=24_000_000 // n_rows,
                            tol=0.0, n_iter_no_change=10**6, n_threads=1, random_state=0)
    since_signal = interrupt_after(0.4)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        est.fit(X, y)
    assert since_signal() < 0.3
    assert count_runs == []     # the interrupted run never returned
    steps_per_epoch = -(-X.shape[0] // 200)
    assert len(est.loss_curve_) == est.n_iter_
    assert est.t_ == est.n_iter_ * X.shape[0]
    assert est.n_iter_ * steps_per_epoch <= est._optimizer.t
    assert est._optimizer.t < (est.n_iter_ + 1) * steps_per_epoch
    assert all(np.isfinite(c).all() for c in est.coefs_)


def test_long_fits_go_in_runs_of_bounded_length(monkeypatch, count_runs):
    # 2,500 one-batch epochs: runs of at most _RUN_MAX_EPOCHS (the record is allocated per
    # run), ending with the ConvergenceWarning as epoch by epoch
    from fastbp import network
    X, y, _ = _data(n=20, d=3, seed=5)
    (a, warn_a), (b, warn_b) = _fit_both_ways(
        lambda: fsk.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2500, tol=0.0,
                                  n_iter_no_change=10**6, random_state=0),
        X, y, monkeypatch)
    _assert_same_fit(a, b)
    assert warn_a == warn_b and len(warn_a) == 1
    assert count_runs == [network._RUN_MAX_EPOCHS, network._RUN_MAX_EPOCHS, 500]
