"""fastbp.Network against fastbp.reference.Network (and PyTorch where installed).

Tolerances. Each layer's product is a dot product of length K; its rounding error is at most
about K*eps relative to sum |a_k w_k| (Higham, gamma_K), and fastbp and NumPy's BLAS sum in
different orders, so they may differ by twice that. Through L layers of O(1) values with
O(1) Lipschitz activations the errors add, giving |fast - ref| <= c * L * K_max * eps * scale
with scale = max(1, max |ref|). We take c = 4 for the transcendental activations' few-ulp
differences. After S SGD steps at lr <= 0.1 on these small, well-conditioned problems the
parameter differences grow at most linearly in S (each step adds one step's rounding and
propagates earlier differences through a contraction-or-mild-expansion map), so the fit
comparison multiplies the bound by S.
"""

import numpy as np
import pytest

import fastbp
from fastbp import reference

ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]
LOSSES = ["cross_entropy", "binary_cross_entropy", "mse"]
DTYPES = [np.float32, np.float64]
SIZES = [7, 33, 9, 5]  # odd sizes, none a multiple of a SIMD width


def bound(dtype, sizes, scale=1.0, steps=1):
    eps = np.finfo(dtype).eps
    n_layers = len(sizes) - 1
    return 4 * n_layers * max(sizes) * eps * max(1.0, scale) * steps


def make_data(loss, n_out, B=33, n_in=7, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n_in)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, B)
    elif loss == "binary_cross_entropy":
        y = (rng.random((B, n_out)) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((B, n_out)).astype(dtype)
    return X, y


def pair(activation, loss, dtype, sizes=SIZES, seed=3, **kw):
    return (fastbp.Network(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed, **kw),
            reference.Network(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed, **kw))


def assert_close(fast, ref, tol, what):
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, what
    assert fast.dtype == ref.dtype, what
    err = np.max(np.abs(fast.astype(np.float64) - ref.astype(np.float64)))
    assert err <= tol, f"{what}: max |fast - ref| = {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("B", [33, 131])
def test_parity_with_reference(B, activation, loss, dtype):
    net, ref = pair(activation, loss, dtype)
    rng = np.random.default_rng(1)
    for l in range(len(net.biases)):  # non-zero biases so they matter
        b = rng.uniform(-0.5, 0.5, net.biases[l].shape).astype(dtype)
        net.biases[l][...] = b
        ref.biases[l][...] = b
    X, y = make_data(loss, SIZES[-1], B=B, dtype=dtype)
    tol = bound(dtype, SIZES) * max(1.0, B / max(SIZES))   # dW sums over B rows

    out, out_ref = net.forward(X), ref.forward(X)
    assert_close(out, out_ref, tol * np.abs(out_ref).max(), "forward")
    assert abs(net.loss(X, y) - ref.loss(X, y)) <= tol * max(1, abs(ref.loss(X, y))), "loss"

    dW, db = net.gradients(X, y)
    dW_ref, db_ref = ref.gradients(X, y)
    for l in range(len(dW)):
        g_scale = max(np.abs(dW_ref[l]).max(), np.abs(db_ref[l]).max(), 1e-3)
        assert_close(dW[l], dW_ref[l], tol * g_scale, f"dW[{l}]")
        assert_close(db[l], db_ref[l], tol * g_scale, f"db[{l}]")

    v, v_ref = net.train_step(X, y, lr=0.1), ref.train_step(X, y, lr=0.1)
    assert abs(v - v_ref) <= tol * max(1, abs(v_ref)), "train_step loss"
    for l in range(len(dW)):
        assert_close(net.weights[l], ref.weights[l], tol, f"W[{l}] after one step")
        assert_close(net.biases[l], ref.biases[l], tol, f"b[{l}] after one step")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fit_three_epochs_matches_reference(activation, loss, dtype):
    net, ref = pair(activation, loss, dtype, seed=11)
    X, y = make_data(loss, SIZES[-1], B=50, dtype=dtype, seed=5)
    batch_size = 8  # 50 = 6 * 8 + 2: the last batch of each epoch is short
    net.fit(X, y, epochs=3, batch_size=batch_size, lr=0.1)
    ref.fit(X, y, epochs=3, batch_size=batch_size, lr=0.1)
    steps = 3 * 7
    tol = bound(dtype, SIZES, steps=steps)
    for l in range(len(net.weights)):
        assert_close(net.weights[l], ref.weights[l], tol, f"W[{l}] after fit")
        assert_close(net.biases[l], ref.biases[l], tol, f"b[{l}] after fit")
    np.testing.assert_allclose(net.loss_curve_, ref.loss_curve_, rtol=tol, atol=tol)
    assert len(net.loss_curve_) == 3


def test_fit_actually_learns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 10)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(np.int64) + 2 * (X[:, 3] > 0)
    net = fastbp.Network([10, 32, 4], seed=0)
    before = net.loss(X, y)
    net.fit(X, y, epochs=30, batch_size=16, lr=0.1)
    assert net.loss(X, y) < 0.5 * before
    assert (net.predict(X) == y).mean() > 0.85


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_shuffle_matches_reference(shuffle):
    net, ref = pair("tanh", "cross_entropy", np.float64, seed=2)
    X, y = make_data("cross_entropy", SIZES[-1], B=40, dtype=np.float64)
    net.fit(X, y, epochs=2, batch_size=7, lr=0.05, shuffle=shuffle)
    ref.fit(X, y, epochs=2, batch_size=7, lr=0.05, shuffle=shuffle)
    tol = bound(np.float64, SIZES, steps=12)
    for l in range(len(net.weights)):
        assert_close(net.weights[l], ref.weights[l], tol, f"W[{l}]")


def test_batch_size_larger_than_data_is_one_batch():
    net, ref = pair("relu", "cross_entropy", np.float64)
    X, y = make_data("cross_entropy", SIZES[-1], B=5, dtype=np.float64)
    net.fit(X, y, epochs=2, batch_size=100, lr=0.1)
    ref.fit(X, y, epochs=2, batch_size=100, lr=0.1)
    for l in range(len(net.weights)):
        assert_close(net.weights[l], ref.weights[l], bound(np.float64, SIZES, steps=2), "W")


@pytest.mark.parametrize("dtype", DTYPES)
def test_probability_targets_for_cross_entropy(dtype):
    net, ref = pair("relu", "cross_entropy", dtype)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((9, 7)).astype(dtype)
    Y = rng.random((9, 5))
    Y /= Y.sum(axis=1, keepdims=True)
    tol = bound(dtype, SIZES)
    assert abs(net.loss(X, Y) - ref.loss(X, Y)) <= tol * 4
    for g, g_ref in zip(net.gradients(X, Y)[0], ref.gradients(X, Y)[0]):
        assert_close(g, g_ref, tol, "dW with probability targets")
    # one-hot probability rows give the same loss and gradients as the labels
    labels = rng.integers(0, 5, 9)
    onehot = np.eye(5)[labels]
    assert abs(net.loss(X, onehot) - net.loss(X, labels)) <= tol
    for g1, g2 in zip(net.gradients(X, onehot)[0], net.gradients(X, labels)[0]):
        assert_close(g1, g2, tol, "one-hot vs labels")


@pytest.mark.parametrize("output_activation", ACTIVATIONS)
def test_mse_output_activations(output_activation):
    kw = dict(output_activation=output_activation)
    net, ref = pair("tanh", "mse", np.float64, **kw)
    X, y = make_data("mse", SIZES[-1], dtype=np.float64)
    tol = bound(np.float64, SIZES)
    assert_close(net.forward(X), ref.forward(X), tol, "forward")
    for g, g_ref in zip(net.gradients(X, y)[0], ref.gradients(X, y)[0]):
        assert_close(g, g_ref, tol, "dW")


# -- finite differences ------------------------------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_central_differences(activation, loss):
    """float64 central differences: truncation error O(h^2 * f''') ~ 1e-10 and rounding
    error O(eps * |L| / h) ~ 1e-10 at h = 1e-6, so 1e-6 relative to the gradient scale
    leaves a wide margin while still catching any wrong term (errors of order 1)."""
    sizes = [4, 6, 5, 3]
    net = fastbp.Network(sizes, activation=activation, loss=loss, dtype=np.float64, seed=7)
    rng = np.random.default_rng(8)
    for b in net.biases:
        b[...] = rng.uniform(-0.3, 0.3, b.shape)
    X, y = make_data(loss, sizes[-1], B=6, n_in=4, seed=9)
    dW, db = net.gradients(X, y)
    h = 1e-6
    for analytic, params in [(dW, net.weights), (db, net.biases)]:
        for l, p in enumerate(params):
            numeric = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + h
                up = net.loss(X, y)
                p[idx] = old - h
                down = net.loss(X, y)
                p[idx] = old
                numeric[idx] = (up - down) / (2 * h)
            scale = max(1e-3, np.abs(numeric).max())
            err = np.abs(analytic[l] - numeric).max()
            assert err <= 1e-6 * scale, f"layer {l}: {err:.2e}"


# -- threads and determinism -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_for_any_thread_count(dtype):
    """Every parallel loop writes disjoint rows in a fixed order, so 1 and 2 threads must
    agree to the last bit. The sizes cross the kernels' parallel threshold."""
    sizes = [300, 257, 129, 10]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 300)).astype(dtype)
    y = rng.integers(0, 10, 200)
    nets = [fastbp.Network(sizes, activation="gelu", dtype=dtype, seed=1, n_threads=t) for t in (1, 2)]
    assert [n.n_threads for n in nets] == [1, 2]
    outs = [n.forward(X) for n in nets]
    grads = [n.gradients(X, y) for n in nets]
    for n in nets:
        n.fit(X, y, epochs=2, batch_size=64, lr=0.05)
    assert np.array_equal(outs[0], outs[1])
    for a, b in zip(grads[0][0] + grads[0][1], grads[1][0] + grads[1][1]):
        assert np.array_equal(a, b)
    for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases):
        assert np.array_equal(a, b)
    assert nets[0].loss_curve_ == nets[1].loss_curve_


def test_n_threads_follows_omp_num_threads(monkeypatch):
    # at most the usable cores (a test machine with fewer than 3 pretends to have 64)
    from fastbp import _validation
    real_cpu_count = _validation.cpu_count
    monkeypatch.setattr(_validation, "cpu_count", lambda: 64)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert fastbp.Network([2, 2], seed=0).n_threads == 3
    monkeypatch.setattr(_validation, "cpu_count", lambda: 2)
    assert fastbp.Network([2, 2], seed=0).n_threads == 2
    assert fastbp.Network([2, 2], seed=0, n_threads=8).n_threads == 2
    monkeypatch.setattr(_validation, "cpu_count", real_cpu_count)
    assert fastbp.Network([2, 2], seed=0, n_threads=1).n_threads == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert fastbp.Network([2, 2], seed=0).n_threads >= 1
    assert fastbp.Network([2, 2], seed=0, n_threads=-1).n_threads == fastbp.Network([2, 2], seed=0).n_threads


# -- API behaviour ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_same_seed_same_initial_parameters(dtype):
    net, ref = pair("relu", "cross_entropy", dtype, seed=42)
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        assert np.array_equal(a, b)
    other = fastbp.Network(SIZES, dtype=dtype, seed=43)
    assert not np.array_equal(other.weights[0], net.weights[0])


def test_parameters_are_writable_views_of_one_buffer():
    net = fastbp.Network([7, 9, 5], seed=0)
    assert [w.shape for w in net.weights] == [(7, 9), (9, 5)]
    assert [b.shape for b in net.biases] == [(9,), (5,)]
    for p in net.weights + net.biases:
        assert p.flags.c_contiguous and p.flags.writeable
        assert np.shares_memory(p, net.weights[0].base)  # all in the one parameter buffer
    X = np.ones((2, 7), np.float32)
    before = net.forward(X)
    net.weights[1][...] = 0
    net.biases[1][...] = [1, 0, 0, 0, 0]
    after = net.forward(X)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, np.tile(np.exp([1, 0, 0, 0, 0]) / (np.e + 4), (2, 1)), rtol=1e-6)
    net.weights[0] = np.zeros((7, 9))  # item assignment copies into the buffer
    assert np.shares_memory(net.weights[0], net.weights[1].base)
    assert not net.weights[0].any()
    with pytest.raises(ValueError, match="shape"):
        net.weights[0] = np.zeros((3, 3))


@pytest.mark.parametrize("loss", LOSSES)
def test_predict(loss):
    net, ref = pair("relu", loss, np.float64)
    X, _ = make_data(loss, SIZES[-1], dtype=np.float64)
    p = net.predict(X)
    if loss == "mse":
        assert_close(p, ref.predict(X), bound(np.float64, SIZES), "predict")
    else:
        assert np.array_equal(p, ref.predict(X))
    out = net.forward(X)
    if loss == "cross_entropy":
        assert p.shape == (33,) and np.array_equal(p, out.argmax(1))
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-12)
    elif loss == "binary_cross_entropy":
        assert p.shape == (33, 5) and set(np.unique(p)) <= {0, 1}
    else:
        assert np.array_equal(p, out)


def test_forward_in_chunks_equals_one_pass():
    net = fastbp.Network([5, 8, 3], seed=0, dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((20000, 5))  # more than one 8192-row chunk
    out = net.forward(X)
    assert np.array_equal(out[:100], net.forward(X[:100]))
    assert np.array_equal(out[-100:], net.forward(X[-100:]))


def test_train_step_returns_loss_before_step():
    net = fastbp.Network([7, 9, 5], seed=0)
    X, y = make_data("cross_entropy", 5, dtype=np.float32)
    before = net.loss(X, y)
    assert net.train_step(X, y, lr=0.1) == pytest.approx(before, rel=1e-6)
    assert net.loss(X, y) < before


def test_numerically_extreme_logits_stay_finite():
    net = fastbp.Network([2, 3], activation="relu", loss="cross_entropy", dtype=np.float32, seed=0)
    net.weights[0][...] = [[1e3, -1e3, 0], [0, 0, 0]]
    X = np.array([[50.0, 0.0]], dtype=np.float32)  # logits 5e4, -5e4, 0
    assert np.isfinite(net.loss(X, [1]))
    assert net.loss(X, [1]) == pytest.approx(1e5, rel=1e-6)
    assert all(np.isfinite(g).all() for g in net.gradients(X, [1])[0])
    bce = fastbp.Network([2, 1], loss="binary_cross_entropy", dtype=np.float32, seed=0)
    bce.weights[0][...] = [[1e3], [0]]
    assert bce.loss(X, [[0.0]]) == pytest.approx(5e4, rel=1e-6)


# -- PyTorch, where installed ---------------------------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
def test_matches_pytorch(loss):
    torch = pytest.importorskip("torch")
    sizes = [7, 9, 5]
    net = fastbp.Network(sizes, activation="gelu", loss=loss, dtype=np.float64, seed=0)
    X, y = make_data(loss, 5, dtype=np.float64)
    Ws = [torch.tensor(w.copy(), requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b.copy(), requires_grad=True) for b in net.biases]
    a = torch.tensor(X)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W + b
        a = torch.nn.functional.gelu(z) if l < len(Ws) - 1 else z
    if loss == "cross_entropy":
        value = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    elif loss == "binary_cross_entropy":
        value = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y))
    else:
        value = torch.nn.functional.mse_loss(z, torch.tensor(y))
    value.backward()
    tol = bound(np.float64, sizes)
    assert abs(net.loss(X, y) - value.item()) <= tol
    dW, db = net.gradients(X, y)
    for l in range(2):
        assert_close(dW[l], Ws[l].grad.numpy(), tol, f"dW[{l}] vs torch")
        assert_close(db[l], bs[l].grad.numpy(), tol, f"db[{l}] vs torch")


def test_threadpoolctl_sees_and_limits_fastbps_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fastbp._config.config()["openmp"]:
        pytest.skip("serial build")
    net = fastbp.Network([4, 4], seed=0)
    apis = [i["user_api"] for i in threadpoolctl.threadpool_info()]
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert net.n_threads == 1
    assert fastbp.Network([4, 4], seed=0, n_threads=-1).n_threads >= 1
    with pytest.raises(ValueError, match="n_threads"):
        fastbp.Network([4, 4], n_threads=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e3])
def test_cross_entropy_loss_from_the_softmax_matches_log_sum_exp(dtype, scale):
    """The training loop takes each row's log-sum-exp from the forward pass's softmax (the
    maximum's output is 1/sum): held against an exact float64 log-sum-exp of the same
    logits, for logits from nearly equal to a thousand apart. Error bound: the softmax's
    rounding, a few epsilons of the dtype times (|lse| + 1) per row."""
    rng = np.random.default_rng(7)
    net = fastbp.Network([5, 9], activation="identity", loss="cross_entropy", dtype=dtype,
                         seed=0)
    net.weights[0][...] = (rng.standard_normal((5, 9)) * scale).astype(dtype)
    net.biases[0][...] = 0
    X = rng.standard_normal((40, 5)).astype(dtype)
    y = rng.integers(0, 9, 40)
    Z = (X @ net.weights[0]).astype(np.float64)          # the logits, rounded to the dtype
    m = Z.max(axis=1)
    lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
    exact = np.mean(lse - Z[np.arange(40), y])
    bound = 8 * np.finfo(dtype).eps * (np.mean(np.abs(lse)) + 1)
    assert abs(net.loss(X, y) - exact) <= bound
