"""Sparse input (scipy CSR/CSC): the first layer's compiled sparse kernels (src/_sparse.pxd)
and their use by fastbp.Network, fastbp.reference and fastbp.sklearn.

1. The kernels against their naive twins, bit for bit (both sum every element in the same
   order), for float32 and float64, odd shapes (empty rows, a row holding every feature,
   one row, features no row uses, one output), rows by index (repeated too), and thread
   counts 1, 2, 3, 4, 8; and the naive twins against NumPy's dense products.
2. Network on sparse X against Network on the same X dense: loss, gradients, forward,
   train_step, fit; within a tolerance of a few units in the last place of the dtype
   times the reduction length (a sparse sum skips the zeros and so rounds differently);
   bit-identical across thread counts, and CSC bit-identical to CSR.
3. fastbp.sklearn on sparse X against the same estimator on dense X.
4. Bad input: index dtypes, unsorted and duplicate indices, NaN/inf, shapes, formats.
5. The caller's arrays changed after validation never reach the kernels.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

scipy_sparse = pytest.importorskip("scipy.sparse")

import fastbp
from fastbp import _kernels, _network, optim, reference
from fastbp._common import ACTIVATIONS
from fastbp._validation import CsrRows, check_X

DTYPES = [np.float32, np.float64]
THREADS = (1, 2, 3, 4, 8)
SOFTMAX = _network.ACTIVATION_SOFTMAX
ACTS = [ACTIVATIONS[a] for a in ("identity", "relu", "tanh", "sigmoid", "gelu")] + [SOFTMAX]


@pytest.fixture(autouse=True)
def _threads_beyond_the_cores(monkeypatch):
    """fastbp caps n_threads at the usable cores; these tests force counts above them."""
    from fastbp import _validation
    monkeypatch.setattr(_validation, "cpu_count", lambda: 64)


def odd_csr(n_rows, n_features, density, dtype, seed):
    """A canonical CSR with an empty row, a row holding every feature (when there are
    two rows or more) and the last feature in no row."""
    rng = np.random.default_rng(seed)
    X = scipy_sparse.random(n_rows, n_features, density=density, format="lil",
                            random_state=seed, dtype=np.float64)
    X[:, n_features - 1] = 0
    if n_rows >= 2:
        X[0, :] = 0
        X[1, :n_features - 1] = rng.standard_normal(n_features - 1)
    X = X.tocsr()
    X.eliminate_zeros()
    X.sort_indices()
    return X.astype(dtype)


def kernel_args(X):
    return X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)


def tolerance(dtype, length):
    """A bound for |a - b| / scale of two sums of `length` terms added in different
    orders: a few units of rounding per term."""
    return 4 * length * np.finfo(dtype).eps


# -- 1. kernels --------------------------------------------------------------------------

KERNEL_SHAPES = [(1, 5, 3), (7, 40, 1), (37, 53, 17), (64, 300, 33), (200, 1000, 100)]


@pytest.mark.parametrize("by_index", [False, True])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_match_naive_twins(dtype, shape, by_index):
    B, K, N = shape
    rng = np.random.default_rng(B + K + N)
    X = odd_csr(B + 3 if by_index else B, K, 0.05, dtype, seed=K)
    data, indices, indptr = kernel_args(X)
    rows = (rng.integers(0, X.shape[0], B).astype(np.int64) if by_index
            else np.empty(0, np.int64))
    if by_index and B > 2:
        rows[:2] = [0, 1]    # the empty row and the full one
        rows[-1] = rows[-2]  # a row twice
    Xd = X.toarray()[rows] if by_index else X.toarray()
    W = rng.standard_normal((K, N)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype)
    dZ = rng.standard_normal((B, N)).astype(dtype)
    for act in ACTS:
        if act == SOFTMAX and N == 1:
            continue
        Z0, A0 = np.empty((B, N), dtype), np.empty((B, N), dtype)
        _kernels.sparse_forward(Z0, A0, data, indices, indptr, rows, W, b, act, 1, True)
        np.testing.assert_allclose(Z0, Xd @ W + b, rtol=0,
                                   atol=tolerance(dtype, K) * (np.abs(Xd) @ np.abs(W)).max())
        for nt in THREADS:
            Z, A = np.full((B, N), np.nan, dtype), np.full((B, N), np.nan, dtype)
            _kernels.sparse_forward(Z, A, data, indices, indptr, rows, W, b, act, nt, False)
            assert Z.tobytes() == Z0.tobytes() and A.tobytes() == A0.tobytes(), (act, nt)
    dW0, db0 = np.empty((K, N), dtype), np.empty(N, dtype)
    _kernels.sparse_weight_gradient(dW0, db0, data, indices, indptr, rows, dZ, 1, True)
    scale = (np.abs(Xd).T @ np.abs(dZ)).max()
    np.testing.assert_allclose(dW0, Xd.T @ dZ, rtol=0, atol=tolerance(dtype, B) * scale)
    np.testing.assert_allclose(db0, dZ.sum(axis=0), rtol=0,
                               atol=tolerance(dtype, B) * np.abs(dZ).sum(axis=0).max())
    assert not dW0[K - 1].any()          # a feature no row uses: a zero row
    for nt in THREADS:
        # NaN first: every element must be written, the unused features' rows too
        dW, db = np.full((K, N), np.nan, dtype), np.full(N, np.nan, dtype)
        _kernels.sparse_weight_gradient(dW, db, data, indices, indptr, rows, dZ, nt, False)
        assert dW.tobytes() == dW0.tobytes() and db.tobytes() == db0.tobytes(), nt
    # a scratch too small for the batch (an order repeating long rows): the fallback
    for scratch_nnz in (0, max(0, int(np.diff(indptr)[rows if by_index else slice(None)]
                                      .sum()) - 1)):
        dW, db = np.full((K, N), np.nan, dtype), np.full(N, np.nan, dtype)
        _kernels.sparse_weight_gradient(dW, db, data, indices, indptr, rows, dZ, 2, False,
                                        scratch_nnz)
        assert dW.tobytes() == dW0.tobytes() and db.tobytes() == db0.tobytes()


def test_kernel_entry_points_check_indices():
    X = odd_csr(5, 8, 0.5, np.float64, 0)
    data, indices, indptr = kernel_args(X)
    W, b = np.ones((8, 3)), np.zeros(3)
    Z, A = np.empty((5, 3)), np.empty((5, 3))
    bad = indices.copy()
    bad[-1] = 8
    with pytest.raises(ValueError, match="not a feature"):
        _kernels.sparse_forward(Z, A, data, bad, indptr, np.empty(0, np.int64), W, b, 0, 1,
                                False)
    with pytest.raises(ValueError, match="not a row"):
        _kernels.sparse_forward(Z[:1], A[:1], data, indices, indptr,
                                np.array([5], np.int64), W, b, 0, 1, False)


# -- 2. Network ----------------------------------------------------------------------------

# a network in row parts (few parameters) and one in one part (> 65,536 parameters)
NETWORKS = {"parts": [120, 16, 5], "one_part": [3000, 24, 7]}


def data_for(sizes, dtype, n=300, seed=0):
    X = odd_csr(n, sizes[0], 0.03, dtype, seed)
    y = np.random.default_rng(seed).integers(0, sizes[-1], n)
    return X, y


def assert_close(a, b, dtype, length):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, np.abs(b).max())
    assert np.abs(a - b).max() <= tolerance(dtype, length) * scale


@pytest.mark.parametrize("layout", NETWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_network_sparse_matches_dense(dtype, layout):
    sizes = NETWORKS[layout]
    X, y = data_for(sizes, dtype)
    Xd = X.toarray()
    sp, de = (fastbp.Network(sizes, dtype=dtype, seed=1, n_threads=2) for _ in range(2))
    assert_close(sp.loss(X, y), de.loss(Xd, y), dtype, sizes[0])
    assert_close(sp.forward(X), de.forward(Xd), dtype, sizes[0])
    np.testing.assert_array_equal(sp.predict(X), sp.predict(Xd))
    gs, gd = sp.gradients(X, y), de.gradients(Xd, y)
    for a, b in zip(gs[0] + gs[1], gd[0] + gd[1]):
        assert_close(a, b, dtype, X.shape[0] * sizes[0])
    assert_close(sp.train_step(X[:40], y[:40], lr=0.1),
                 de.train_step(Xd[:40], y[:40], lr=0.1), dtype, sizes[0])
    for opt in ("sgd", "adam"):
        sp.fit(X, y, epochs=2, batch_size=32, optimizer=opt, l2=1e-3, shuffle=True)
        de.fit(Xd, y, epochs=2, batch_size=32, optimizer=opt, l2=1e-3, shuffle=True)
        # a few steps compound the rounding differences (Adam divides by sqrt(s))
        for a, b in zip(sp.weights + sp.biases, de.weights + de.biases):
            assert_close(a, b, dtype, 1e4 if dtype == np.float64 else 1e2)
    w = np.random.default_rng(0).random(X.shape[0])
    assert_close(sp.loss(X, y, sample_weight=w), de.loss(Xd, y, sample_weight=w), dtype,
                 sizes[0])
    # the reference (the oracle) takes sparse X too, densifying it
    ref = reference.Network(sizes, dtype=dtype, seed=1)
    assert_close(ref.loss(X, y), ref.loss(Xd, y), dtype, 1)


@pytest.mark.parametrize("layout", NETWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_network_sparse_same_bits_for_every_thread_count(dtype, layout):
    sizes = NETWORKS[layout]
    X, y = data_for(sizes, dtype, n=250)
    results = []
    for nt in THREADS:
        net = fastbp.Network(sizes, dtype=dtype, seed=3, n_threads=nt)
        net.fit(X, y, epochs=2, batch_size=64, optimizer="adam", validation_split=0.2)
        g = net.gradients(X, y)
        results.append((net._params.tobytes(), net.forward(X).tobytes(),
                        b"".join(a.tobytes() for a in g[0] + g[1]), net.loss_curve_))
    assert all(r == results[0] for r in results[1:])


def test_fit_with_sparse_validation_data_and_early_stopping():
    sizes = NETWORKS["parts"]
    X, y = data_for(sizes, np.float64, n=300)
    runs = []
    for form in (X, X.toarray()):
        net = fastbp.Network(sizes, dtype=np.float64, seed=2, n_threads=2)
        net.fit(form[:240], y[:240], epochs=4, batch_size=32, optimizer="adam",
                validation_data=(form[240:], y[240:]), early_stopping=True, patience=1)
        runs.append(net)
    sp, de = runs
    assert len(sp.history["val_loss"]) == len(de.history["val_loss"])
    assert_close(sp.history["val_loss"], de.history["val_loss"], np.float64, 1e4)
    assert sp.history["val_score"] == de.history["val_score"]
    assert_close(sp._params, de._params, np.float64, 1e4)


def test_forward_of_more_rows_than_one_slice():
    # forward works through 8,192 rows at a time: the slices start inside the CSR
    X = odd_csr(8192 + 300, 20, 0.2, np.float64, 4)
    net = fastbp.Network([20, 6, 3], dtype=np.float64, seed=0, n_threads=3)
    out = net.forward(X)
    assert_close(out, net.forward(X.toarray()), np.float64, 20)
    assert out[8192:].tobytes() == net.forward(X[8192:]).tobytes()


@pytest.mark.parametrize("layout", NETWORKS)
def test_an_order_repeating_the_longest_row(layout):
    # batches of the row holding every feature but one, many times over: more entries
    # than the scratch sized for distinct rows holds (the kernel's fallback)
    sizes = NETWORKS[layout]
    X, y = data_for(sizes, np.float64, n=100)
    order = np.ones(96, dtype=np.int64)
    order[::7] = np.arange(14)
    runs = []
    for nt in (1, 3):
        net = fastbp.Network(sizes, dtype=np.float64, seed=0, n_threads=nt)
        net.train_epoch(X, y, optimizer=optim.Adam(lr=1e-3), batch_size=48, order=order)
        runs.append(net._params.tobytes())
    de = fastbp.Network(sizes, dtype=np.float64, seed=0, n_threads=1)
    de.train_epoch(X.toarray(), y, optimizer=optim.Adam(lr=1e-3), batch_size=48, order=order)
    assert runs[0] == runs[1]
    assert_close(np.frombuffer(runs[0]), de._params, np.float64, 1e4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_csc_and_sparse_arrays_give_the_csr_bits(dtype):
    sizes = NETWORKS["parts"]
    X, y = data_for(sizes, dtype)
    runs = []
    for form in (X, X.tocsc(), scipy_sparse.csr_array(X), scipy_sparse.csc_array(X)):
        net = fastbp.Network(sizes, dtype=dtype, seed=5, n_threads=2)
        net.train_epoch(form, y, optimizer=optim.SGD(lr=0.05, momentum=0.9), batch_size=16)
        runs.append((net._params.tobytes(), net.forward(form).tobytes()))
    assert all(r == runs[0] for r in runs[1:])


def test_sparse_one_output_and_mse():
    # a one-output network (binary cross-entropy) and a regression, in float64
    X, _ = data_for([60, 8, 1], np.float64, n=90)
    y = np.random.default_rng(0).integers(0, 2, (90, 1))
    for loss, target in (("binary_cross_entropy", y), ("mse", y * 2.5 - 1)):
        sp = fastbp.Network([60, 8, 1], loss=loss, dtype=np.float64, seed=0)
        de = fastbp.Network([60, 8, 1], loss=loss, dtype=np.float64, seed=0)
        sp.fit(X, target, epochs=3, batch_size=10, lr=0.05)
        de.fit(X.toarray(), target, epochs=3, batch_size=10, lr=0.05)
        assert_close(sp._params, de._params, np.float64, 1e4)


# -- 3. fastbp.sklearn ---------------------------------------------------------------------

@pytest.mark.parametrize("early_stopping", [False, True])
def test_sklearn_sparse_matches_dense(early_stopping):
    skl = pytest.importorskip("fastbp.sklearn")
    from sklearn.exceptions import ConvergenceWarning
    X, _ = data_for([200, 1], np.float64, n=400, seed=2)
    y = np.asarray(X[:, :100].sum(axis=1)).ravel() > np.asarray(X[:, 100:].sum(axis=1)).ravel()
    y = y.astype(int) + (np.asarray(X[:, :10].sum(axis=1)).ravel() > 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kw = dict(hidden_layer_sizes=(20,), max_iter=4, random_state=0,
                  early_stopping=early_stopping, validation_fraction=0.2)
        sp = skl.MLPClassifier(**kw).fit(X, y)
        csc = skl.MLPClassifier(**kw).fit(scipy_sparse.csc_array(X), y)
        de = skl.MLPClassifier(**kw).fit(X.toarray(), y)
        for a, b in zip(sp.coefs_ + sp.intercepts_, de.coefs_ + de.intercepts_):
            assert_close(a, b, np.float64, 1e4)
        for a, b in zip(sp.coefs_, csc.coefs_):
            np.testing.assert_array_equal(a, b)
        assert_close(sp.predict_proba(X), de.predict_proba(X.toarray()), np.float64, 1e4)
        np.testing.assert_array_equal(sp.predict(X.tocsc()), sp.predict(X.toarray()))
        assert sp.score(X, y) == sp.score(X.toarray(), y)
        # partial_fit, and the regressor
        if not early_stopping:
            sp.partial_fit(X, y)
            de.partial_fit(X.toarray(), y)
            assert_close(sp.coefs_[0], de.coefs_[0], np.float64, 1e4)
        reg = skl.MLPRegressor(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
        reg.fit(X, y.astype(float))
        reg_d = skl.MLPRegressor(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
        reg_d.fit(X.toarray(), y.astype(float))
        assert_close(reg.predict(X), reg_d.predict(X.toarray()), np.float64, 1e4)


def test_sklearn_sparse_bad_input():
    skl = pytest.importorskip("fastbp.sklearn")
    X, y = data_for([30, 2], np.float64, n=40)
    with pytest.raises(ValueError, match="sort_indices"):
        skl.MLPClassifier(max_iter=1).fit(_unsorted(X), y)
    with pytest.raises(ValueError, match="sort_indices"):
        skl.MLPClassifier(max_iter=1).fit(_unsorted(X.tocsc()), y)
    with pytest.raises(ValueError, match="sum_duplicates"):
        skl.MLPClassifier(max_iter=1).fit(_duplicated(X), y)
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        skl.MLPClassifier(max_iter=1).fit(bad, y)


# -- 4. bad input --------------------------------------------------------------------------

def _unsorted(X):
    """X with the first two entries of its fullest row swapped."""
    X = X.copy()
    r = int(np.argmax(np.diff(X.indptr)))
    p = X.indptr[r]
    X.indices[p], X.indices[p + 1] = X.indices[p + 1], X.indices[p]
    X.has_sorted_indices = True      # scipy's cached flag must not be what decides
    return X


def _duplicated(X):
    X = X.copy()
    r = int(np.argmax(np.diff(X.indptr)))
    p = X.indptr[r]
    X.indices[p + 1] = X.indices[p]
    return X


@pytest.mark.parametrize("form", ["csr", "csc"])
def test_bad_sparse_input(form):
    net = fastbp.Network([30, 4, 3], n_threads=1)
    X, y = data_for([30, 3], np.float32, n=20)
    X = X.asformat(form)
    with pytest.raises(ValueError, match="sort_indices"):
        net.forward(_unsorted(X))
    with pytest.raises(ValueError, match="sum_duplicates"):
        net.loss(_duplicated(X), y)
    for part in ("indices", "indptr"):
        bad = X.copy()
        setattr(bad, part, getattr(bad, part).astype(np.int16))
        with pytest.raises(TypeError, match=part):
            net.fit(bad, y, epochs=1)
        bad = X.copy()
        setattr(bad, part, getattr(bad, part).astype(np.float64))
        with pytest.raises(TypeError, match=part):
            net.gradients(bad, y)
    for value in (np.nan, np.inf):
        bad = X.copy()
        bad.data[0] = value
        with pytest.raises(ValueError, match="NaN or infinite"):
            net.train_step(bad, y)
    with pytest.raises(ValueError, match="30 columns"):
        net.forward(scipy_sparse.random(3, 29, density=0.5, format=form))
    with pytest.raises(ValueError, match="empty batch"):
        net.forward(scipy_sparse.csr_matrix((0, 30), dtype=np.float32))
    with pytest.raises(TypeError, match="CSR or CSC"):
        net.forward(X.tocoo())
    with pytest.raises(TypeError, match="real numbers"):
        net.forward(X.astype(np.complex128))
    with pytest.raises(ValueError, match="must have 20"):
        net.fit(X, y[:-1], epochs=1)


def test_compiled_entry_points_check_what_they_index_by():
    # a CsrRows made past the validation: the compiled code refuses it, never reads it
    net = fastbp.Network([10, 4, 2], dtype=np.float64, n_threads=1)
    X = check_X(odd_csr(6, 10, 0.5, np.float64, 0), 10, np.float64)
    bad = CsrRows(X.data, X.indices.copy(), X.indptr, X.shape)
    bad.indices[-1] = 10
    with pytest.raises(ValueError, match="out of range"):
        net.forward(bad)
    with pytest.raises(ValueError, match="out of range"):
        net.loss(bad, np.zeros(6, np.int64))
    bad = CsrRows(X.data, X.indices, X.indptr.copy(), X.shape)
    bad.indptr[3] = 10 ** 9
    with pytest.raises(ValueError, match="out of range"):
        net.fit(bad, np.zeros(6, np.int64), epochs=1)


# -- 5. the caller's arrays ------------------------------------------------------------------

def test_scribbling_over_the_callers_arrays_changes_nothing():
    sizes = NETWORKS["parts"]
    X, y = data_for(sizes, np.float64)
    clean = fastbp.Network(sizes, dtype=np.float64, seed=0, n_threads=2)
    clean.fit(X.copy(), y, epochs=3, batch_size=32)
    # validated, then the original's indices and indptr point far out of range
    X2 = X.copy()
    checked = check_X(X2, sizes[0], np.float64)
    X2.indices[:] = 10 ** 9
    X2.indptr[1:] = X2.indptr[-1] * 7
    X2.data[:] = np.nan
    net = fastbp.Network(sizes, dtype=np.float64, seed=0, n_threads=2)
    assert net.forward(checked).tobytes() == net.forward(X).tobytes()
    # during fit: a callback scribbles over the caller's arrays after every epoch
    X3 = X.copy()

    def scribble(net, epoch, logs):
        X3.indices[:] = 10 ** 9 + epoch
        X3.indptr[:] = -1
        X3.data[:] = np.inf

    net.fit(X3, y, epochs=3, batch_size=32, callbacks=[scribble])
    assert net._params.tobytes() == clean._params.tobytes()


def test_import_fastbp_needs_no_scipy(tmp_path):
    # in tmp_path, with the installed (or built) package on the path: a source tree's
    # fastbp/ in the working directory has no compiled modules
    code = ("import sys; sys.modules['scipy'] = None; import fastbp, numpy as np; "
            "net = fastbp.Network([4, 3, 2], seed=0); "
            "net.fit(np.ones((8, 4)), np.zeros(8, int), epochs=1); "
            "assert 'scipy.sparse' not in sys.modules or sys.modules['scipy'] is None; "
            "print('ok')")
    root = os.path.dirname(os.path.dirname(fastbp.__file__))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
