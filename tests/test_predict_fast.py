"""The lean prediction paths: Network.forward / predict and fastbp.sklearn's predict,
predict_proba and raw output skip the general checks for a plain X (an ndarray of the
network's dtype and width, C-contiguous, finite). They must give the bits of the checked
path, and every other X must behave as before: converted and computed the same, or
refused with the same exception class (and, in fastbp.sklearn, the same warnings).
"""

import threading
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import _network
from fastbp.network import _FORWARD_CHUNK_ROWS

DTYPES = [np.float32, np.float64]
ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]
# (loss, output_activation): every output kind the compiled forward pass has
OUTPUTS = [("cross_entropy", None), ("binary_cross_entropy", None), ("mse", None),
           ("mse", "tanh"), ("mse", "gelu"), ("mse", "relu"), ("poisson", None)]
SIZES = [13, 37, 9, 5]      # odd widths, none a multiple of a SIMD width


def net_of(activation="tanh", loss="cross_entropy", output_activation=None,
           dtype=np.float32, sizes=SIZES, seed=0, **kw):
    net = fastbp.Network(sizes, activation=activation, loss=loss,
                         output_activation=output_activation, dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed + 1)
    for b in net.biases:          # non-zero biases, so that a bias left out shows
        b[...] = rng.standard_normal(b.shape)
    return net


def old_forward(net, X):
    """The forward pass through _network.forward, the entry point with a plan made per
    call (the path before the lean one), on one thread; for poisson, exp of its output
    taken by NumPy in float64 (libm's exp may round another way: compare to an ulp)."""
    X = np.ascontiguousarray(X, dtype=net.dtype)
    out = np.empty((X.shape[0], net.layer_sizes[-1]), dtype=net.dtype)
    _, size = _network.work_size(net._sizes, net._acts, X.shape[0], False, False, 1)
    work = np.empty(size, dtype=net.dtype)
    _network.forward(net._params, work, net._sizes, net._acts, X, out, 1)
    if net.loss_name == "poisson":
        out = np.exp(out.astype(np.float64)).astype(net.dtype)
    return out


def batch(n, width=SIZES[0], dtype=np.float32, seed=3):
    return np.random.default_rng(seed).standard_normal((n, width)).astype(dtype)


# ---------------------------------------------------------------------------------------
# the same bits as the checked path
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss,output_activation", OUTPUTS)
def test_plain_batch_gives_the_checked_paths_bits(dtype, activation, loss, output_activation):
    net = net_of(activation, loss, output_activation, dtype)
    for n in (1, 2, 7, 64):
        X = batch(n, dtype=dtype, seed=n)
        fast = net.forward(X)
        assert fast.dtype == np.dtype(dtype) and fast.shape == (n, SIZES[-1])
        assert fast.flags.c_contiguous and fast.flags.writeable and fast.base is None
        # an F-ordered copy of the same values goes the checked way
        checked = net.forward(np.asfortranarray(X))
        np.testing.assert_array_equal(fast, checked)
        if loss == "poisson":
            np.testing.assert_allclose(fast, old_forward(net, X), rtol=np.finfo(dtype).eps,
                                       atol=0)
        else:
            np.testing.assert_array_equal(fast, old_forward(net, X))
        ref = fastbp.reference.Network(SIZES, activation=activation, loss=loss,
                                       output_activation=output_activation, dtype=dtype)
        ref.weights = [w.copy() for w in net.weights]
        ref.biases = [b.copy() for b in net.biases]
        tol = 64 * max(SIZES) * np.finfo(dtype).eps
        np.testing.assert_allclose(fast, ref.forward(X), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse", "poisson"])
def test_predict_fast_matches_predict_of_a_converted_X(dtype, loss):
    net = net_of("relu", loss, None, dtype)
    X = batch(9, dtype=dtype)
    fast = net.predict(X)
    slow = net.predict(X.tolist())
    assert fast.dtype == slow.dtype
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_output_is_a_new_array_each_call(dtype):
    net = net_of(dtype=dtype)
    X = batch(3, dtype=dtype)
    a = net.forward(X)
    a_copy = a.copy()
    b = net.forward(X)
    assert a is not b and not np.shares_memory(a, b)
    b[...] = 0
    np.testing.assert_array_equal(a, a_copy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_parameters_changed_between_calls_are_used(dtype):
    net = net_of(dtype=dtype)
    X = batch(4, dtype=dtype)
    before = net.forward(X)
    net.weights[1][...] *= 2
    net.biases[-1][...] += 1
    after = net.forward(X)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, old_forward(net, X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_sizes_across_the_small_and_threaded_plans(dtype):
    # 64-128-64-10: batches below serial_rows run the small plan, larger ones the threaded
    # slices (and past _FORWARD_CHUNK_ROWS, several slices)
    sizes = [64, 128, 64, 10]
    net = net_of("relu", dtype=dtype, sizes=sizes)
    small = _network.serial_rows(net._sizes)
    assert 1 <= small < 4000
    for n in (1, small - 1, small, small + 1, 3000, _FORWARD_CHUNK_ROWS + 17):
        X = batch(n, width=64, dtype=dtype, seed=n)
        out = net.forward(X)
        np.testing.assert_array_equal(out, old_forward(net, X))
        np.testing.assert_array_equal(out, net.forward(np.asfortranarray(X)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[64, 128, 64, 10], [13, 300, 300, 5]],
                         ids=["rows-split", "tiles-shared"])
def test_forward_plans_give_the_same_bits_for_every_thread_count(dtype, sizes):
    # more threads than cores on purpose. A small network's threads take rows through
    # every layer, a large one's share each product's tiles; either way no sum changes
    net = net_of("gelu", dtype=dtype, sizes=sizes)
    assert (net._params.size <= 1 << 16) == (sizes[1] == 128)
    X = batch(3001, width=sizes[0], dtype=dtype)
    np.testing.assert_array_equal(net.forward(X), old_forward(net, X))
    outs = []
    for nt in (1, 2, 3, 4, 7):
        fwd = _network.Forward(net._params, net._sizes, net._acts, 4096, nt)
        out = np.empty((X.shape[0], sizes[-1]), dtype=dtype)
        fwd.run(X, out)
        outs.append(out)
        for n_threads in (1, 2, 3):
            np.testing.assert_array_equal(
                net_with_threads(net, n_threads).forward(X), out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def net_with_threads(net, n_threads):
    other = fastbp.Network(net.layer_sizes, activation=net.activation, loss=net.loss_name,
                           dtype=net.dtype, n_threads=n_threads)
    other.weights = list(net.weights)
    other.biases = list(net.biases)
    return other


def test_forward_plan_refuses_what_does_not_fit_it():
    net = net_of()
    fwd = _network.Forward(net._params, net._sizes, net._acts, 8, 1)
    out = np.empty((9, SIZES[-1]), dtype=np.float32)
    with pytest.raises(ValueError):
        fwd.run(batch(9), out)                               # past the capacity
    with pytest.raises(ValueError):
        fwd.run(batch(4).astype(np.float64), out[:4])        # the wrong dtype
    with pytest.raises(ValueError):
        fwd.run(batch(4), out[:3])                           # out too short
    with pytest.raises(ValueError):
        fwd.run(np.asfortranarray(batch(4)), out[:4])        # not C-contiguous
    with pytest.raises(ValueError):
        fwd.run(batch(4), np.empty((4, SIZES[-1]), dtype=np.float32)[::-1])
    with pytest.raises(ValueError):
        _network.Forward(net._params, net._sizes, net._acts, 0, 1)
    with pytest.raises(TypeError):
        _network.Forward(net._params.astype(np.int32), net._sizes, net._acts, 4, 1)
    # not a plain batch: None, the caller's cue to check it
    for X in (batch(9), batch(4, width=SIZES[0] + 1), batch(4).astype(np.float64),
              np.asfortranarray(batch(4)), batch(8)[::2], batch(4).tolist(),
              batch(4).astype(">f4"), batch(4)[None], batch(4).view(np.recarray),
              np.empty((0, SIZES[0]), dtype=np.float32)):
        assert fwd.plain(X) is None
    X = batch(4)
    np.testing.assert_array_equal(fwd.plain(X), old_forward(net, X))
    X[2, 3] = np.inf
    assert fwd.plain(X) is None


# ---------------------------------------------------------------------------------------
# every other X behaves as before
# ---------------------------------------------------------------------------------------

def _conversions(X):
    strided = np.empty((X.shape[0] * 2, X.shape[1]), dtype=X.dtype)
    strided[::2] = X
    return {
        "fortran": np.asfortranarray(X),
        "strided": strided[::2],
        "list": X.tolist(),
        "other-float": X.astype(np.float64 if X.dtype == np.float32 else np.float32),
        "big-endian": X.astype(X.dtype.newbyteorder(">")),
        "read-only": _read_only(X),
        "subclass": X.view(np.recarray),
        "unaligned": _unaligned(X),
    }


def _read_only(X):
    X = X.copy()
    X.flags.writeable = False
    return X


def _unaligned(X):
    raw = np.zeros(X.nbytes + 1, dtype=np.uint8)
    out = raw[1:].view(X.dtype).reshape(X.shape)
    out[...] = X
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", ["fortran", "strided", "list", "other-float", "big-endian",
                                   "read-only", "subclass", "unaligned"])
def test_other_layouts_give_the_results_of_their_plain_copy(dtype, which):
    net = net_of("tanh", dtype=dtype)
    X = batch(6, dtype=dtype)
    Xc = _conversions(X)[which]
    plain = np.ascontiguousarray(np.asarray(Xc), dtype=dtype)
    np.testing.assert_array_equal(net.forward(Xc), net.forward(plain))
    np.testing.assert_array_equal(net.predict(Xc), net.predict(plain))


@pytest.mark.parametrize("dtype", DTYPES)
def test_integer_input_is_converted(dtype):
    net = net_of(dtype=dtype)
    Xi = np.arange(3 * SIZES[0]).reshape(3, SIZES[0]) % 5
    np.testing.assert_array_equal(net.forward(Xi), net.forward(Xi.astype(dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5, 3000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_is_refused_as_before(dtype, n, bad):
    net = net_of(dtype=dtype, sizes=[SIZES[0], 300, 300, 5])
    X = batch(n, dtype=dtype)
    X[n - 1, SIZES[0] - 1] = bad
    with pytest.raises(ValueError, match=r"\bX\b.*NaN or infinite"):
        net.forward(X)
    with pytest.raises(ValueError, match=r"\bX\b.*NaN or infinite"):
        net.predict(X)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_shapes_and_types_raise_the_same_classes(dtype):
    net = net_of(dtype=dtype)
    cases = [
        (batch(3, width=SIZES[0] + 1, dtype=dtype), ValueError),   # wrong width
        (batch(3, width=SIZES[0] - 1, dtype=dtype), ValueError),
        (batch(3, dtype=dtype)[0], ValueError),                    # 1-D
        (batch(3, dtype=dtype)[None], ValueError),                 # 3-D
        (np.empty((0, SIZES[0]), dtype=dtype), ValueError),        # no rows
        (np.full((2, SIZES[0]), "a"), TypeError),                  # strings
        (np.ones((2, SIZES[0]), dtype=np.complex64), TypeError),
        ([[0.0] * SIZES[0], [0.0]], (TypeError, ValueError)),       # ragged
        (None, (TypeError, ValueError)),
    ]
    for X, error in cases:
        with pytest.raises(error):
            net.forward(X)
        with pytest.raises(error):
            net.predict(X)


# ---------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_two_threads_predicting_at_once_get_correct_results(dtype):
    sizes = [64, 128, 64, 10]
    net = net_of("relu", dtype=dtype, sizes=sizes)
    inputs = [batch(n, width=64, dtype=dtype, seed=n) for n in (1, 3, 200, 1500)]
    expected = [old_forward(net, X) for X in inputs]
    errors, barrier = [], threading.Barrier(3)

    def worker(order):
        try:
            barrier.wait()
            for _ in range(30):
                for i in order:
                    got = net.forward(inputs[i])
                    if not np.array_equal(got, expected[i]):
                        errors.append(f"batch {i}: wrong output")
                    if not np.array_equal(net.predict(inputs[i]), expected[i].argmax(axis=1)):
                        errors.append(f"batch {i}: wrong prediction")
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(order,))
               for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_predicting_while_another_thread_trains_sees_one_steps_parameters():
    # the lock: a forward pass never sees half of a step's update
    sizes = [64, 128, 64, 10]
    net = net_of("relu", sizes=sizes)
    X = batch(2, width=64)
    Xtrain = batch(256, width=64, seed=9)
    y = np.arange(256) % 10
    stop, bad = threading.Event(), []

    def predict():
        while not stop.is_set():
            with net._lock:
                params = net._params.copy()
                out = net.forward(X)
            probe = net_of("relu", sizes=sizes)
            probe._params[...] = params
            if not np.array_equal(out, old_forward(probe, X)):
                bad.append(True)

    t = threading.Thread(target=predict)
    t.start()
    try:
        net.fit(Xtrain, y, epochs=3, batch_size=16, lr=0.05)
    finally:
        stop.set()
        t.join()
    assert not bad


def test_pickled_network_predicts_the_same():
    import pickle
    net = net_of("relu", sizes=[64, 128, 64, 10])
    X = batch(5, width=64)
    out = net.forward(X)
    other = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(other.forward(X), out)
    # the copy has its own buffers: changing it leaves the original's predictions alone
    other.weights[0][...] = 0
    np.testing.assert_array_equal(net.forward(X), out)


# ---------------------------------------------------------------------------------------
# fastbp.sklearn
# ---------------------------------------------------------------------------------------

sklearn = pytest.importorskip("sklearn")


def _fitted(kind, dtype, n_classes=4, n_outputs=1, seed=0):
    from fastbp.sklearn import MLPClassifier, MLPRegressor
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((120, 11)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "classifier":
            y = rng.integers(0, n_classes, 120)
            est = MLPClassifier((17,), max_iter=3, random_state=0).fit(X, y)
        elif kind == "multilabel":
            y = (rng.random((120, 3)) > 0.5).astype(int)
            est = MLPClassifier((17,), max_iter=3, random_state=0).fit(X, y)
        else:
            y = rng.standard_normal((120, n_outputs)) if n_outputs > 1 else rng.standard_normal(120)
            est = MLPRegressor(hidden_layer_sizes=(17,), max_iter=3, random_state=0).fit(X, y)
    return est, X


def _slow(est, method, X):
    """The method through scikit-learn's validation: the plain-X path turned off."""
    est._forward_if_plain = lambda X: None
    try:
        return getattr(est, method)(X)
    finally:
        del est._forward_if_plain


ESTIMATORS = [("classifier", 4, 1), ("classifier", 2, 1), ("multilabel", 0, 3),
              ("regressor", 0, 1), ("regressor", 0, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,n_classes,n_outputs", ESTIMATORS)
def test_sklearn_plain_path_matches_the_validated_path(dtype, kind, n_classes, n_outputs):
    est, X = _fitted(kind, dtype, n_classes, n_outputs)
    methods = ["predict"] + (["predict_proba", "predict_log_proba"]
                             if kind != "regressor" else [])
    for method in methods:
        for rows in (X[:1], X[:7], X):
            rows = np.ascontiguousarray(rows)
            assert est._forward_if_plain(rows) is not None    # the plain path is taken
            fast = getattr(est, method)(rows)
            slow = _slow(est, method, rows)
            assert type(fast) is type(slow) and fast.dtype == slow.dtype
            assert fast.shape == slow.shape
            np.testing.assert_array_equal(fast, slow)
    raw = est._forward(np.ascontiguousarray(X))
    np.testing.assert_array_equal(raw, _slow(est, "_forward", X))


def test_sklearn_plain_path_matches_scikit_learn():
    from sklearn.neural_network import MLPClassifier as SkMLP
    est, X = _fitted("classifier", np.float64, n_classes=5)
    sk = SkMLP((17,), max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X[:20], np.arange(20) % 5)
    sk.coefs_ = [c.copy() for c in est.coefs_]
    sk.intercepts_ = [b.copy() for b in est.intercepts_]
    sk.classes_ = est.classes_
    sk._label_binarizer = est._label_binarizer
    np.testing.assert_array_equal(est.predict(X), sk.predict(X))
    np.testing.assert_allclose(est.predict_proba(X), sk.predict_proba(X), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sklearn_changed_coefs_change_the_predictions(dtype):
    est, X = _fitted("regressor", dtype)
    X = np.ascontiguousarray(X[:5])
    before = est.predict(X)
    est.coefs_[0][...] *= 2                       # in place
    mid = est.predict(X)
    assert not np.array_equal(before, mid)
    np.testing.assert_array_equal(mid, _slow(est, "predict", X))
    est.intercepts_[-1] = est.intercepts_[-1] + 1  # a new array
    np.testing.assert_allclose(est.predict(X), mid + 1, rtol=1e-5)


@pytest.mark.parametrize("which", ["fortran", "strided", "list", "other-float", "big-endian",
                                   "read-only", "subclass", "unaligned"])
def test_sklearn_other_layouts_give_the_same_predictions(which):
    est, X = _fitted("classifier", np.float32)
    X = np.ascontiguousarray(X[:9])
    Xc = _conversions(X)[which]
    expected = _slow(est, "predict_proba", Xc)
    np.testing.assert_array_equal(est.predict_proba(Xc), expected)


def test_sklearn_bad_input_errors_are_scikit_learns():
    est, X = _fitted("classifier", np.float64)
    nan = np.ascontiguousarray(X[:4])
    nan[2, 3] = np.nan
    inf = nan.copy()
    inf[2, 3] = np.inf
    wide = np.zeros((3, X.shape[1] + 1))
    for bad, match in ((nan, "NaN"), (inf, "infinity"), (wide, "features"),
                       (np.zeros((0, X.shape[1])), "0 sample"), (X[0], "2D array")):
        for method in ("predict", "predict_proba"):
            with pytest.raises(ValueError, match=match) as fast:
                getattr(est, method)(bad)
            with pytest.raises(ValueError) as slow:
                _slow(est, method, bad)
            assert str(fast.value) == str(slow.value)


def test_sklearn_unfitted_estimator_raises_not_fitted():
    from sklearn.exceptions import NotFittedError
    from fastbp.sklearn import MLPClassifier, MLPRegressor
    for est in (MLPClassifier(), MLPRegressor()):
        with pytest.raises(NotFittedError):
            est.predict(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        MLPClassifier().predict_proba(np.zeros((2, 3)))


def test_sklearn_feature_names_warning_kept_without_pandas():
    # an estimator fitted with feature names (as a DataFrame would set them) warns on an
    # ndarray exactly as scikit-learn does; the plain path must not skip that
    from sklearn.neural_network import MLPClassifier as SkMLP
    est, X = _fitted("classifier", np.float64)
    names = np.array([f"f{i}" for i in range(X.shape[1])], dtype=object)
    est.feature_names_in_ = names
    X = np.ascontiguousarray(X[:3])
    sk = SkMLP((17,), max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, [0, 1, 2])
    sk.feature_names_in_ = names
    with pytest.warns(UserWarning) as ours:
        est.predict(X)
    with pytest.warns(UserWarning) as theirs:
        sk.predict(X)
    assert ([str(w.message).replace("MLPClassifier", "")
             for w in ours if "feature names" in str(w.message)]
            == [str(w.message).replace("MLPClassifier", "")
                for w in theirs if "feature names" in str(w.message)])
    assert any("feature names" in str(w.message) for w in ours)


def test_sklearn_feature_names_with_a_dataframe():
    pd = pytest.importorskip("pandas")
    from sklearn.neural_network import MLPClassifier as SkMLP
    from fastbp.sklearn import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y = np.arange(60) % 3
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MLPClassifier((7,), max_iter=2, random_state=0).fit(df, y)
        theirs = SkMLP((7,), max_iter=2, random_state=0).fit(df, y)
    for est in (ours, theirs):
        with pytest.warns(UserWarning, match="does not have valid feature names"):
            est.predict(np.ascontiguousarray(X[:2]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            est.predict(df.iloc[:2])           # names match: no warning
    # fitted without names, predicted with: scikit-learn warns the other way
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = MLPClassifier((7,), max_iter=2, random_state=0).fit(X, y)
    with pytest.warns(UserWarning, match="fitted without feature names"):
        plain.predict(df.iloc[:2])


def test_sklearn_two_threads_predicting_at_once():
    est, X = _fitted("classifier", np.float32)
    rows = [np.ascontiguousarray(X[i:i + n]) for i, n in ((0, 1), (5, 3), (0, 120))]
    expected = [_slow(est, "predict_proba", r) for r in rows]
    errors, barrier = [], threading.Barrier(2)

    def worker(order):
        barrier.wait()
        for _ in range(40):
            for i in order:
                if not np.array_equal(est.predict_proba(rows[i]), expected[i]):
                    errors.append(i)

    threads = [threading.Thread(target=worker, args=(o,)) for o in ([0, 1, 2], [2, 0, 1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_split_forward_uses_fewer_threads_than_it_was_made_for(dtype):
    # A Forward made for n_threads runs a smaller batch on fewer of them, each thread
    # taking a larger share of rows: its scratch slots must be sized for that share (they
    # were sized for capacity / n_threads rows, and neighbours overwrote each other's)
    rng = np.random.default_rng(0)
    net = fastbp.Network([200, 200, 10], activation="tanh", dtype=dtype, seed=0, n_threads=1)
    X = rng.standard_normal((700, 200)).astype(dtype)
    expected = net.forward(X)
    for n_threads in (2, 3, 5, 8, 16):
        for capacity in (210, 300, 700):
            fwd = _network.Forward(net._params, net._sizes, net._acts, capacity, n_threads)
            for B in (capacity, capacity - 1, capacity // 2 + 1):
                Xb = np.ascontiguousarray(X[:B])
                out = np.empty((B, 10), dtype=dtype)
                fwd.run(Xb, out)
                assert out.tobytes() == expected[:B].tobytes(), (n_threads, capacity, B)
                assert fwd.plain(Xb).tobytes() == expected[:B].tobytes()


def test_predicting_during_a_fit_leaves_the_fit_alone():
    # Another thread predicting while a warm-started fit runs: the predictions load
    # coefs_ (the fit's start until it ends) into their own network, not into the one
    # being trained, so the fit ends as it does alone.
    from fastbp.sklearn import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 20))
    y = rng.integers(0, 3, 2000)

    def fit(concurrent):
        est = MLPClassifier(hidden_layer_sizes=(32,), random_state=0, max_iter=1,
                            early_stopping=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
            est.set_params(max_iter=30, warm_start=True, tol=0, n_iter_no_change=1000)
            stop = threading.Event()
            predictions = []

            def predict():
                while not stop.is_set():
                    predictions.append(est.predict_proba(X[:5]))
                    est.predict(np.asfortranarray(X[:5]))   # the checked path too

            thread = threading.Thread(target=predict)
            if concurrent:
                thread.start()
            try:
                est.fit(X, y)
            finally:
                stop.set()
                if concurrent:
                    thread.join()
        return est, predictions

    alone, _ = fit(False)
    together, predictions = fit(True)
    assert predictions
    assert together.loss_ == alone.loss_
    for a, b in zip(together.coefs_ + together.intercepts_, alone.coefs_ + alone.intercepts_):
        assert a.tobytes() == b.tobytes()
