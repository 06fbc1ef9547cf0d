"""fastbp.sklearn: scikit-learn's estimator checks, parity with sklearn.neural_network's MLP
run for run, and the drop-in's promises (pipelines, pickling, partial_fit, warm_start,
multi-label, float32, errors).

Parity tolerances. With the same random_state, fastbp.sklearn draws the same initial
parameters, shuffles, validation split and minibatches as scikit-learn and applies the
same update rules, so in float64 the two runs differ only by rounding: fastbp's GEMM and
NumPy's BLAS sum the (at most 120-term) dot products in different orders, and fastbp
computes the log-losses from the logits where scikit-learn takes logs of clipped
probabilities. One step's relative difference is then a few K * eps ~ 1e-14, and over
the <= 60 steps of these runs, on small well-conditioned problems, it grows at most
linearly: ~1e-12 (measured: below 1e-15). We assert rtol 1e-9 on the loss curves and
1e-8 (atol 1e-10 for entries near zero) on the parameters, a thousandfold margin, while
a semantic difference (a penalty divided by the wrong count, a loss scaled by the number
of outputs or not, another batch order, a decayed bias, a schedule off by one epoch)
moves these values by 1e-4 or more. The data are standard normal with small networks,
so no probability comes near scikit-learn's clipping at eps.
"""

import io
import os
import pickle
import subprocess
import sys
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")  # validate_data, __sklearn_tags__

import joblib  # noqa: E402  (scikit-learn depends on joblib)
import sklearn.neural_network as skn  # noqa: E402
import fastbp.sklearn as fsk  # noqa: E402
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

SKLEARN = {MLPClassifier: skn.MLPClassifier, MLPRegressor: skn.MLPRegressor}

LOSS_RTOL = 1e-9
PARAM_RTOL, PARAM_ATOL = 1e-8, 1e-10


# -- scikit-learn's estimator checks, each one a test ---------------------------------------

@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# -- data -----------------------------------------------------------------------------------

def _data(kind, n=120, n_features=5, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, n_features))
    if kind == "multiclass":
        y = rng.randint(0, 3, n)
    elif kind == "binary":
        y = np.where(rng.rand(n) > 0.5, "yes", "no")  # string labels go through LabelBinarizer
    elif kind == "multilabel":
        y = (rng.rand(n, 3) > 0.5).astype(int)
        y[0] = 0  # a row with no label and one with all: both are valid indicator rows
        y[1] = 1
    elif kind == "regression":
        y = X @ rng.standard_normal(n_features) + 0.1 * rng.standard_normal(n)
    elif kind == "regression2":
        y = np.column_stack([X @ rng.standard_normal(n_features), np.tanh(X[:, 0])])
    else:
        raise ValueError(kind)
    return X, y


def _fit_both(cls, X, y, sample_weight=None, **params):
    ours, theirs = cls(**params), SKLEARN[cls](**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y, sample_weight=sample_weight)
        theirs.fit(X, y, sample_weight=sample_weight)
    return ours, theirs


def _assert_same_run(ours, theirs):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert len(ours.loss_curve_) == len(theirs.loss_curve_)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=LOSS_RTOL)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=LOSS_RTOL)
    if theirs.best_loss_ is None:
        assert ours.best_loss_ is None
    else:
        np.testing.assert_allclose(ours.best_loss_, theirs.best_loss_, rtol=LOSS_RTOL)
    if theirs.validation_scores_ is None:
        assert ours.validation_scores_ is None and ours.best_validation_score_ is None
    else:
        # accuracies move in steps of 1/n_val and R^2 is smooth: any real difference shows
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_,
                                   rtol=LOSS_RTOL)
        np.testing.assert_allclose(ours.best_validation_score_, theirs.best_validation_score_,
                                   rtol=LOSS_RTOL)
    for attr in ("n_layers_", "n_outputs_", "out_activation_", "n_features_in_"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert len(ours.coefs_) == len(theirs.coefs_)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=PARAM_RTOL, atol=PARAM_ATOL)


BASE = dict(hidden_layer_sizes=(8, 5), random_state=1, max_iter=12, alpha=0.01,
            batch_size=32)  # 120 rows: batches of 32, 32, 32 and a shorter 24

PARITY_CASES = [
    # (estimator, target, parameters): every solver feature on at least one target kind
    (MLPClassifier, "multiclass", dict(solver="adam")),
    (MLPClassifier, "multiclass", dict(solver="sgd", learning_rate_init=0.05)),  # nesterov
    (MLPClassifier, "binary", dict(solver="sgd", nesterovs_momentum=False,
                                   learning_rate="invscaling", learning_rate_init=0.2,
                                   activation="tanh")),
    (MLPClassifier, "multilabel", dict(solver="adam", activation="logistic",
                                       learning_rate_init=0.01)),
    (MLPClassifier, "multilabel", dict(solver="sgd", momentum=0.0, learning_rate_init=0.1)),
    (MLPClassifier, "multiclass", dict(solver="adam", early_stopping=True, max_iter=20,
                                       n_iter_no_change=3)),
    (MLPClassifier, "binary", dict(solver="adam", early_stopping=True, max_iter=20,
                                   validation_fraction=0.2, n_iter_no_change=2)),  # stratified
    (MLPClassifier, "multiclass", dict(solver="adam", shuffle=False, batch_size="auto")),
    (MLPRegressor, "regression", dict(solver="adam")),
    (MLPRegressor, "regression", dict(solver="sgd", learning_rate_init=0.01,
                                      activation="identity")),
    (MLPRegressor, "regression2", dict(solver="sgd", learning_rate="invscaling",
                                       learning_rate_init=0.05, power_t=0.25)),
    (MLPRegressor, "regression2", dict(solver="adam", early_stopping=True, max_iter=25,
                                       tol=1e-2, n_iter_no_change=2)),
]


@pytest.mark.parametrize("cls,kind,params", PARITY_CASES,
                         ids=[f"{c.__name__}-{k}-{i}" for i, (c, k, _) in enumerate(PARITY_CASES)])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_parity_with_sklearn(cls, kind, params, weighted):
    X, y = _data(kind)
    sw = np.random.RandomState(5).uniform(0.2, 3.0, X.shape[0]) if weighted else None
    ours, theirs = _fit_both(cls, X, y, sample_weight=sw, **{**BASE, **params})
    _assert_same_run(ours, theirs)
    if params.get("early_stopping"):
        # the best parameters were restored: scoring them on the validation rows gives
        # the best score, and training went on past the best epoch or stopped there
        assert ours.best_validation_score_ == max(ours.validation_scores_)
    if cls is MLPClassifier:
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X),
                                   rtol=PARAM_RTOL, atol=PARAM_ATOL)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    else:
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X),
                                   rtol=PARAM_RTOL, atol=PARAM_ATOL)


def test_parity_adaptive_learning_rate():
    # tol so large that every epoch counts as no improvement: the learning rate is divided
    # by 5 every n_iter_no_change + 1 epochs until it is <= 1e-6, then training stops
    X, y = _data("multiclass")
    params = dict(BASE, solver="sgd", learning_rate="adaptive", learning_rate_init=0.05,
                  tol=10.0, n_iter_no_change=1, max_iter=200)
    ours, theirs = _fit_both(MLPClassifier, X, y, **params)
    assert theirs._optimizer.learning_rate < 1e-6 * 5  # the schedule really ran its course
    assert theirs.n_iter_ < 200  # and stopped training
    _assert_same_run(ours, theirs)


def test_parity_verbose_output():
    X, y = _data("multiclass")
    params = dict(BASE, verbose=True, early_stopping=True, max_iter=6)
    outputs = []
    for cls in (MLPClassifier, skn.MLPClassifier):
        buf = io.StringIO()
        with redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            cls(**params).fit(X, y)
        outputs.append(buf.getvalue())
    # losses and scores printed to 8 and 6 decimals: equal unless a 1e-15 difference
    # straddles a rounding boundary of the last printed digit
    assert outputs[0] == outputs[1]
    assert outputs[0].count("Iteration") == 6 and "Validation score" in outputs[0]


def test_parity_float32():
    # float32 in, float32 throughout, as in scikit-learn. scikit-learn computes parts of
    # the loss in float64 and sums in another order: per step a few float32 eps (1.2e-7)
    # relative, over 48 steps well below the 1e-4 asserted.
    X, y = _data("multiclass")
    X = X.astype(np.float32)
    ours, theirs = _fit_both(MLPClassifier, X, y, **BASE)
    assert ours.coefs_[0].dtype == np.float32 and theirs.coefs_[0].dtype == np.float32
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_parity_partial_fit():
    X, y = _data("multiclass", n=150)
    params = dict(BASE, solver="sgd", learning_rate="invscaling", learning_rate_init=0.1)
    ours, theirs = MLPClassifier(**params), skn.MLPClassifier(**params)
    for est in (ours, theirs):
        # classes on the first call only; a batch missing a class is fine after that
        est.partial_fit(X[:50], y[:50], classes=[0, 1, 2])
        est.partial_fit(X[50:100], y[50:100])
        keep = y[100:] != 2
        est.partial_fit(X[100:][keep], y[100:][keep])
    _assert_same_run(ours, theirs)
    assert ours.n_iter_ == 1  # scikit-learn counts one iteration per partial_fit call


def test_parity_warm_start():
    X, y = _data("regression")
    for early_stopping in (False, True):
        params = dict(BASE, warm_start=True, early_stopping=early_stopping, max_iter=8)
        ours, theirs = _fit_both(MLPRegressor, X, y, **params)
        for est in (ours, theirs):
            est.set_params(max_iter=5, learning_rate_init=0.003)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y)
        # the second fit continued from the first: t_ counts both, the curve grows
        assert ours.t_ == theirs.t_ and len(ours.loss_curve_) == 13
        _assert_same_run(ours, theirs)


def test_parity_warm_start_after_early_stopping_without_improvement():
    # scikit-learn's restore makes coefs_ the very arrays of its saved best, and a later
    # warm-started fit updates those in place; when that fit never beats the best score,
    # it ends with its last parameters, not the earlier best. fastbp.sklearn mirrors this.
    X, y = _data("regression")
    params = dict(BASE, warm_start=True, early_stopping=True, max_iter=15)
    ours, theirs = _fit_both(MLPRegressor, X, y, **params)
    best = theirs.best_validation_score_
    n_first = len(theirs.validation_scores_)
    for est in (ours, theirs):
        est.set_params(max_iter=3, learning_rate_init=0.3)  # steps too large to improve
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
    assert max(theirs.validation_scores_[n_first:]) < best  # the case really arose
    _assert_same_run(ours, theirs)


# -- the drop-in's promises -----------------------------------------------------------------

def test_import_fastbp_does_not_import_sklearn(tmp_path):
    root = os.path.dirname(os.path.dirname(fastbp.__file__))
    code = ("import sys; sys.path.insert(0, %r); import fastbp; "
            "assert 'sklearn' not in sys.modules, 'fastbp imported sklearn'; print('ok')" % root)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_import_without_sklearn_says_how_to_install(tmp_path):
    root = os.path.dirname(os.path.dirname(fastbp.__file__))
    # sys.modules["sklearn"] = None makes every `import sklearn...` fail as if absent
    code = ("import sys; sys.path.insert(0, %r); sys.modules['sklearn'] = None\n"
            "try:\n    import fastbp.sklearn\nexcept ImportError as e:\n    print(e)\n"
            "else:\n    print('imported')" % root)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "pip install 'fastbp[sklearn]'" in r.stdout and "scikit-learn" in r.stdout


def test_partial_fit_where_scikit_learn_has_it():
    # scikit-learn's classifier has partial_fit for the stochastic solvers only; its
    # regressor for every solver (with lbfgs a whole L-BFGS fit)
    for solver in ("lbfgs", "sgd", "adam"):
        for ours, theirs in ((MLPClassifier, skn.MLPClassifier),
                             (MLPRegressor, skn.MLPRegressor)):
            assert (hasattr(ours(solver=solver), "partial_fit")
                    == hasattr(theirs(solver=solver), "partial_fit"))
    X, y = _data("regression", n=60)
    fitted = []
    for cls in (MLPRegressor, skn.MLPRegressor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted.append(cls(solver="lbfgs", max_iter=10, random_state=0).partial_fit(X, y))
    assert fitted[0].n_iter_ == fitted[1].n_iter_
    assert fitted[0].loss_ == pytest.approx(fitted[1].loss_, rel=1e-6)


def test_warm_start_with_other_layer_sizes_is_an_error():
    X, y = _data("regression", n=60)
    for solver in ("lbfgs", "adam"):
        est = MLPRegressor(solver=solver, hidden_layer_sizes=(6,), max_iter=3,
                           warm_start=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        before = [c.copy() for c in est.coefs_]
        est.set_params(hidden_layer_sizes=(3,))
        with pytest.raises(ValueError, match="layer sizes"):
            est.fit(X, y)
        assert all(np.array_equal(a, b) for a, b in zip(est.coefs_, before))


def test_same_parameters_as_sklearn():
    for cls, theirs in SKLEARN.items():
        ours_params = cls().get_params()
        assert ours_params.pop("n_threads") is None
        assert ours_params.pop("dtype") is None
        assert ours_params == theirs().get_params()


@pytest.mark.parametrize("params,error,match", [
    (dict(solver="newton"), ValueError, "'solver' parameter"),
    (dict(hidden_layer_sizes=(5, 0)), ValueError, "hidden_layer_sizes"),
    (dict(alpha=-1.0), ValueError, "'alpha' parameter"),
    (dict(learning_rate="cyclic"), ValueError, "'learning_rate' parameter"),
    (dict(batch_size=0), ValueError, "'batch_size' parameter"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(n_threads=1.5), ValueError, "'n_threads' parameter"),
    (dict(dtype=np.int32), ValueError, "dtype"),
    (dict(dtype="words"), TypeError, "dtype"),
])
def test_bad_parameters_are_named(params, error, match):
    X, y = _data("multiclass", n=30)
    with pytest.raises(error, match=match):
        MLPClassifier(max_iter=2, **params).fit(X, y)


def test_bad_input_is_named():
    X, y = _data("multiclass", n=30)
    est = MLPClassifier(max_iter=2)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="sample_weight"):
        est.fit(X, y, sample_weight=np.ones(7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :3])
    import scipy.sparse
    unsorted = scipy.sparse.csr_matrix(X)     # sparse X is taken, but only canonical
    unsorted.indices[[0, 1]] = unsorted.indices[[1, 0]]
    with pytest.raises(ValueError, match="sort_indices"):
        MLPClassifier(max_iter=2).fit(unsorted, y)


def test_divergence_is_sklearn_error():
    # training that overflows ends as scikit-learn's does: a ValueError
    X, _ = _data("regression", n=40)
    y = np.random.RandomState(1).standard_normal(40) * 1e6
    for cls in (MLPRegressor, skn.MLPRegressor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError, match="non-finite parameter weights"):
                cls(solver="sgd", learning_rate_init=1.0, max_iter=50).fit(X * 100, y)


def _curves_agree(ours, theirs, rtol):
    """Loss curves (or validation scores) with NaN and infinities where scikit-learn's
    are, and the finite values close."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    np.testing.assert_array_equal(np.sign(a[np.isinf(a)]), np.sign(b[np.isinf(b)]))
    finite = np.isfinite(a)
    np.testing.assert_allclose(a[finite], b[finite], rtol=rtol)


_IRIS = load_iris(return_X_y=True)
_DIGITS3 = (load_digits(n_class=3, return_X_y=True)[0][:150] / 16.0,
            load_digits(n_class=3, return_X_y=True)[1][:150])
_DIVERGING = {
    # scikit-learn's test_mlp_diverging_loss: NaN scores, the best parameters restored
    "early_stopping": (lambda m: m.MLPRegressor(
        hidden_layer_sizes=100, activation="identity", solver="sgd", learning_rate_init=1,
        max_iter=20, early_stopping=True, n_iter_no_change=10, random_state=0), *_IRIS),
    # the squared error overflows; the gradient does not: an infinite loss curve, finite
    # parameters, and the fit finishes
    "targets_1e200": (lambda m: m.MLPRegressor(max_iter=5, random_state=0),
                      np.random.RandomState(0).standard_normal((80, 5)),
                      np.random.RandomState(1).standard_normal(80) * 1e200),
    # logits of 1e300: every probability clipped to [eps, 1 - eps] in the loss values
    "adam_X_1e300": (lambda m: m.MLPClassifier(max_iter=5, random_state=0),
                     _DIGITS3[0] * 1e300, _DIGITS3[1]),
    # momentum 0.99, one row a batch: confident mistakes early (the clipped loss again)
    "momentum_batch_1": (lambda m: m.MLPClassifier(
        solver="sgd", momentum=0.99, batch_size=1, learning_rate_init=0.5, max_iter=10,
        random_state=0), *_DIGITS3),
    # the loss overflows, then the parameters: scikit-learn's error at the end
    "targets_1e155": (lambda m: m.MLPRegressor(max_iter=5, random_state=0, solver="sgd"),
                      np.random.RandomState(0).standard_normal((80, 5)),
                      np.random.RandomState(1).standard_normal(80) * 1e155),
}


@pytest.mark.parametrize("case", sorted(_DIVERGING))
def test_divergence_goes_on_as_in_scikit_learn(case):
    make, X, y = _DIVERGING[case]
    results = []
    for mod in (fsk, skn):
        est = make(mod)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                est.fit(X, y)
                error = None
            except ValueError as exc:
                error = str(exc)
        results.append((est, error))
    (ours, our_error), (theirs, their_error) = results
    assert our_error == their_error
    assert ours.n_iter_ == theirs.n_iter_
    _curves_agree(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    if theirs.validation_scores_ is not None:
        _curves_agree(ours.validation_scores_, theirs.validation_scores_, rtol=1e-9)
        assert all(isinstance(v, float) for v in ours.validation_scores_)
    # (inputs of 1e300: a few hidden units sum products near the overflow threshold, where
    # one rounding more or less, FMA or not, moves the parameters by percents; that case
    # is here for its loss curve, the clipped log loss)
    if their_error is None and case != "adam_X_1e300":
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("y_kind", ["multiclass", "binary", "multilabel"])
def test_clipped_log_loss_is_scikit_learns(dtype, y_kind):
    # Parameters scaled up until most probabilities are within eps of 0 or 1, where
    # scikit-learn's reported loss takes log(clip(p, eps, 1 - eps)) (eps: the dtype's
    # machine epsilon): the batch's loss, the first step's, is scikit-learn's.
    X, y = load_digits(return_X_y=True)
    X = (X[:200] / 16.0).astype(dtype)
    y = y[:200]
    if y_kind == "binary":
        y = y % 2
    elif y_kind == "multilabel":
        y = np.stack([y % 2, y > 4], axis=1).astype(int)
    losses = []
    for mod in (fsk, skn):
        est = mod.MLPClassifier(hidden_layer_sizes=(16,), batch_size=200, shuffle=False,
                                random_state=0, learning_rate_init=1e-12, max_iter=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        est.coefs_ = [c * dtype(300) for c in est.coefs_]
        est.partial_fit(X, y)
        losses.append(est.loss_curve_[-1])
    ours, theirs = losses
    assert theirs > 1.0           # the clip matters: confident mistakes are capped
    assert ours == pytest.approx(theirs, rel=1e-5 if dtype == np.float32 else 1e-12)


def test_convergence_warning_at_max_iter():
    X, y = _data("multiclass")
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        est = MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3


def test_pipeline_and_grid_search_match_sklearn():
    X, y = _data("multiclass", n=90)
    grid = {"mlpclassifier__alpha": [1e-4, 1.0], "mlpclassifier__hidden_layer_sizes": [(4,), (9,)]}
    results = []
    for cls in (MLPClassifier, skn.MLPClassifier):
        pipe = make_pipeline(StandardScaler(), cls(max_iter=15, random_state=0))
        search = GridSearchCV(pipe, grid, cv=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(X, y)
        results.append(search)
    ours, theirs = results
    assert isinstance(ours.best_estimator_[-1], MLPClassifier)
    # every cross-validated score is the same as scikit-learn's (accuracy on 30 rows:
    # any difference in a fit would show as a multiple of 1/30)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               theirs.cv_results_["mean_test_score"], rtol=1e-12)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("cls,kind", [(MLPClassifier, "multiclass"), (MLPClassifier, "binary"),
                                      (MLPRegressor, "regression2")])
def test_pickle_and_joblib_round_trips(cls, kind, tmp_path):
    X, y = _data(kind)
    est = cls(**dict(BASE, max_iter=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    copies = [pickle.loads(pickle.dumps(est)), joblib.load(path)]
    for copy in copies:
        assert type(copy) is cls
        np.testing.assert_array_equal(copy.predict(X), est.predict(X))
        if cls is MLPClassifier:
            np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
        for a, b in zip(copy.coefs_ + copy.intercepts_, est.coefs_ + est.intercepts_):
            np.testing.assert_array_equal(a, b)
    # the optimizer's state travels too: partial_fit continues identically after a round trip
    copy = copies[0]
    est.partial_fit(X, y)
    copy.partial_fit(X, y)
    for a, b in zip(copy.coefs_ + copy.intercepts_, est.coefs_ + est.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_partial_fit_rules():
    X, y = _data("multiclass")
    est = MLPClassifier(**BASE)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    est.partial_fit(X, y, classes=np.array([0, 1, 2, 3]))
    assert list(est.classes_) == [0, 1, 2, 3] and est.predict_proba(X).shape == (120, 4)
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X, np.full(120, 7))
    with pytest.raises(ValueError, match="early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(*_data("regression"))
    # partial_fit after fit continues the fit (same optimizer, same parameters)
    reg = MLPRegressor(**BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(*_data("regression"))
    before = [c.copy() for c in reg.coefs_]
    t = reg.t_
    reg.partial_fit(*_data("regression"))
    assert reg.t_ == t + 120 and len(reg.loss_curve_) == 13
    assert any(not np.array_equal(a, b) for a, b in zip(before, reg.coefs_))


def test_warm_start_keeps_parameters_and_classes():
    X, y = _data("multiclass")
    est = MLPClassifier(**dict(BASE, warm_start=True, max_iter=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        first = est.loss_curve_[-1]
        est.fit(X, y)
    assert len(est.loss_curve_) == 6 and est.loss_curve_[3] < first + 0.05
    with pytest.raises(ValueError, match="warm_start can only be used"):
        est.fit(X, np.where(y == 2, 5, y))
    # without warm_start, a second fit starts over from random_state's parameters
    cold = MLPClassifier(**dict(BASE, max_iter=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = [c.copy() for c in cold.fit(X, y).coefs_]
        b = cold.fit(X, y).coefs_
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_multilabel():
    X, _ = _data("multilabel", n=200)
    # three learnable labels, any number of them per row
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0.5, X[:, 2] + X[:, 3] > 0]).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(20,), max_iter=300, random_state=0,
                        learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, Y)
    assert est.out_activation_ == "logistic" and est.n_outputs_ == 3
    pred = est.predict(X)
    assert pred.shape == (200, 3) and set(np.unique(pred)) <= {0, 1}
    proba = est.predict_proba(X)
    assert proba.shape == (200, 3) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    # subset accuracy, as scikit-learn's score (a chance level of 1/8 for three labels)
    assert est.score(X, Y) == np.mean((pred == Y).all(axis=1)) > 0.9


def test_float32_stays_float32_and_dtype_parameter():
    X, y = _data("regression")
    X32 = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPRegressor(**BASE).fit(X32, y)
        assert all(c.dtype == np.float32 for c in est.coefs_ + est.intercepts_)
        assert est.predict(X32).dtype == np.float32
        clf = MLPClassifier(**BASE).fit(X32, y > 0)
        assert clf.predict_proba(X32).dtype == np.float32
        # dtype= overrides the input's precision, both ways
        est = MLPRegressor(**BASE, dtype=np.float32).fit(X, y)
        assert all(c.dtype == np.float32 for c in est.coefs_)
        est = MLPRegressor(**BASE, dtype="float64").fit(X32, y)
        assert all(c.dtype == np.float64 for c in est.coefs_)


def test_results_do_not_depend_on_n_threads():
    # fastbp is bit-for-bit reproducible for any thread count; a layer of 300 units
    # makes products large enough to be split between threads
    X, y = _data("multiclass", n=400, n_features=40)
    fits = []
    for n_threads in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(MLPClassifier(hidden_layer_sizes=(300,), max_iter=2, random_state=0,
                                      n_threads=n_threads).fit(X, y))
    for a, b in zip(fits[0].coefs_ + fits[0].intercepts_, fits[1].coefs_ + fits[1].intercepts_):
        np.testing.assert_array_equal(a, b)


def test_coefs_are_the_model():
    # as in scikit-learn, the fitted attributes are the parameters predictions use
    X, y = _data("regression")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPRegressor(**BASE).fit(X, y)
    est.coefs_[-1][:] = 0
    est.intercepts_[-1][:] = 2.5
    np.testing.assert_array_equal(est.predict(X), np.full(120, 2.5))


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = _data("multiclass")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(**BASE).fit(df, y)
    np.testing.assert_array_equal(est.feature_names_in_, df.columns)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(est.predict(df), est.predict(X))
    with pytest.raises(ValueError, match="feature names"):
        est.predict(df.rename(columns={"f0": "other"}))


@pytest.mark.parametrize("y", [
    np.array([0, 1, 1, 0, 1]), np.arange(12) % 5, np.array([-3, 2, 2, -3], dtype=np.int8),
    np.array(["b", "a", "c", "a"]), np.array(["x", "y", "y"]), np.array([True, False, True]),
    np.array([5, 6, 6], dtype=np.uint16),
], ids=["binary", "multiclass", "int8", "strings", "two_strings", "bool", "uint16"])
def test_fast_label_binarizing_equals_label_binarizer(y):
    from sklearn.preprocessing import LabelBinarizer
    from fastbp.sklearn import _binarize_fitted_labels
    lb = LabelBinarizer().fit(y)
    fast = _binarize_fitted_labels(lb, y)
    assert fast is not None
    np.testing.assert_array_equal(fast, lb.transform(y).astype(bool))
    assert fast.dtype == bool


@pytest.mark.parametrize("y", [
    np.array([3, 3, 3]),                                   # one class
    np.array([[0, 1], [1, 1], [1, 0]]),                    # multi-label
    np.array(["a", 1, "a"], dtype=object),                 # mixed objects
    np.array([0.0, 1.0, 1.0]),                             # float labels
], ids=["one_class", "multilabel", "object", "float"])
def test_fast_label_binarizing_leaves_other_labels_to_label_binarizer(y):
    from sklearn.preprocessing import LabelBinarizer
    from fastbp.sklearn import _binarize_fitted_labels
    try:
        lb = LabelBinarizer().fit(y)
    except (ValueError, TypeError):
        pytest.skip("scikit-learn rejects these labels")
    assert _binarize_fitted_labels(lb, y) is None


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 200, 331, 1347])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_compiled_shuffle_draws_what_random_state_shuffle_draws(n, seed):
    # fastbp.sklearn shuffles its rows every epoch in compiled code; scikit-learn's
    # parity needs the very permutation RandomState.shuffle makes, and the generator left
    # in the same state
    from fastbp import _network
    from fastbp.sklearn import _fast_shuffle_matches, _shuffled_range
    assert _fast_shuffle_matches()
    a, b, c = (np.random.RandomState(seed) for _ in range(3))
    expected = np.arange(n)
    a.shuffle(expected)
    got = np.arange(n, dtype=np.int64)
    with b._bit_generator.lock:
        _network.shuffle_like_random_state(b._bit_generator.capsule, got)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(_shuffled_range(c, n), expected)
    assert a.random_sample() == b.random_sample() == c.random_sample()


def test_shuffle_falls_back_for_other_generators():
    from fastbp.sklearn import _shuffled_range

    class Recorder:
        def shuffle(self, x):
            x[:] = x[::-1]

    np.testing.assert_array_equal(_shuffled_range(Recorder(), 4), [3, 2, 1, 0])


def test_side_by_side_benchmark_script_runs_and_scores_agree():
    # benchmarks/bench_sklearn.py, whose table the README quotes: one data set, one seed,
    # one thread, two repeats; the scores it prints must agree as the README says
    import importlib.util
    import io
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sklearn.py"
    if not path.exists():
        pytest.skip("not run from a checkout")
    spec = importlib.util.spec_from_file_location("bench_sklearn", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = io.StringIO()
    rows = bench.run(["diabetes"], [0], 1, np.float32, out=out, repeats=2)
    assert len(rows) == 1 and rows[0]["name"] == "diabetes"
    assert abs(rows[0]["sk_score"] - rows[0]["fb_score"]) <= 0.02
    assert rows[0]["sk_time"] > 0 and rows[0]["fb_time"] > 0
    assert "| diabetes | R^2 |" in out.getvalue()
