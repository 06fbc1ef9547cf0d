"""Run-time SIMD dispatch: every target this CPU runs holds the GEMM path against its plain
loop twin (naive=True), and whole networks against fastbp.reference.

Tolerance of a product of reduction length R: both sides round each of R multiply-adds
(the SIMD targets with fused multiply-adds round once per term instead of twice), so the
difference is at most 2 * gamma_R * (|a| @ |b|) with gamma_R ~ R * eps (Higham); we use
2 * (R + 1) * eps * (|a| @ |b| + |bias|), the bias counting as one more term.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import _dispatch, kernels, reference

TARGETS = _dispatch.available_targets()
ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]
# (900, 300, 40): A spans three row blocks of the GEMM (GEMM_BLOCK_BYTES) in both dtypes
SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 1), (33, 7, 7), (33, 33, 33), (65, 257, 129),
          (900, 300, 40)]


def product_bound(a_abs_b_abs, R, dtype):
    return 2 * (R + 1) * np.finfo(dtype).eps * a_abs_b_abs + 4 * np.finfo(dtype).tiny


def data(shape, dtype, seed=0):
    B, K, N = shape
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype),
            rng.standard_normal(N).astype(dtype), rng.standard_normal((B, N)).astype(dtype))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_products_match_naive_twins(target, dtype, shape, n_threads):
    B, K, N = shape
    A, W, b, dZ = data(shape, dtype)
    out = {}
    for naive in (False, True):
        Z, A_out = np.empty((B, N), dtype), np.empty((B, N), dtype)
        kernels.dense_forward(Z, A_out, A, W, b, "identity", n_threads, naive=naive)
        dW, db = np.empty((K, N), dtype), np.empty(N, dtype)
        kernels.weight_gradient(dW, db, A, dZ, n_threads, naive=naive)
        dA = np.empty((B, K), dtype)
        kernels.input_gradient(dA, dZ, W, n_threads=n_threads, naive=naive)
        out[naive] = (Z, dW, db, dA)
    (Z, dW, db, dA), (Z0, dW0, db0, dA0) = out[False], out[True]
    assert np.all(np.abs(Z - Z0) <= product_bound(np.abs(A) @ np.abs(W) + np.abs(b), K, dtype))
    assert np.all(np.abs(dW - dW0) <= product_bound(np.abs(A).T @ np.abs(dZ), B, dtype))
    assert np.array_equal(db, db0)  # the same serial loop in both
    assert np.all(np.abs(dA - dA0) <= product_bound(np.abs(dZ) @ np.abs(W).T, N, dtype))


@pytest.mark.parametrize("activation", ACTS + ["softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_epilogues_match_naive_twins(target, dtype, activation):
    shape = (33, 65, 47)  # edges in both directions for every tile size
    B, K, N = shape
    A, W, b, dZ = data(shape, dtype, seed=1)
    res = {}
    for naive in (False, True):
        Z, A_out = np.empty((B, N), dtype), np.empty((B, N), dtype)
        kernels.dense_forward(Z, A_out, A, W, b, activation, 1, naive=naive)
        res[naive] = (Z, A_out)
    bound = product_bound(np.abs(A) @ np.abs(W) + np.abs(b), K, dtype)
    assert np.all(np.abs(res[False][0] - res[True][0]) <= bound)
    # the activation is Lipschitz with constant <= 1.13 (gelu), softmax rows <= 1 in sum
    assert np.all(np.abs(res[False][1] - res[True][1]) <= 2 * bound.max() + 8 * np.finfo(dtype).eps)
    if activation != "softmax":
        dZ_in = {}
        # input gradient with the derivative fused: dZ_in (B, K) from dZ (B, N), W (K, N)
        Zin = A  # any (B, K) pre-activations
        Ain = reference.ACTIVATION_FUNCTIONS[activation][0](Zin)
        for naive in (False, True):
            out = np.empty((B, K), dtype)
            kernels.input_gradient(out, dZ, W, Zin, Ain, activation, 1, naive=naive)
            dZ_in[naive] = out
        # |f'| <= 1.13 (gelu at z ~ 1.4; 1 for the others) scales the product bound
        bound = product_bound(np.abs(dZ) @ np.abs(W).T, N, dtype) * 1.13
        assert np.all(np.abs(dZ_in[False] - dZ_in[True]) <= bound + 8 * np.finfo(dtype).eps * np.abs(dZ_in[True]))


# Hidden layers of a network keep no Z of their own unless their activation is gelu
# (_network.pyx's keeps_z): the forward pass is then called with Z == A_out and writes only
# f(Z) (EPI_FORWARD_ACT), and the input gradient is given A where it would read Z.
KEEPS_NO_Z = ["identity", "relu", "leaky_relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 33), (7, 33, 1), (33, 65, 47),
                                   (100, 64, 128), (257, 33, 40)])
@pytest.mark.parametrize("activation", KEEPS_NO_Z)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_without_z_equals_forward_with_it(target, dtype, activation, shape, n_threads):
    from fastbp import _common, _kernels
    B, K, N = shape
    A, W, b, dZ = data(shape, dtype, seed=2)
    act = _common.ACTIVATIONS[activation]
    scratch = np.empty(_kernels.scratch_size(B, K, N, n_threads), dtype)
    Z, A_out = np.empty((B, N), dtype), np.empty((B, N), dtype)
    _kernels.dense_forward(Z, A_out, A, W, b, act, n_threads, scratch, False)
    only_A = np.full((B, N), np.nan, dtype)
    _kernels.dense_forward(only_A, only_A, A, W, b, act, n_threads, scratch, False)
    assert np.array_equal(only_A, A_out)
    # the input gradient of the layer after it, with f' from A in place of Z: the same
    # bits (relu and leaky_relu read only the sign, which A keeps; the others read A)
    W2 = data((N, N, K), dtype, seed=3)[1]          # (N, K): a next layer of K outputs
    dZ2 = np.random.default_rng(4).standard_normal((B, K)).astype(dtype)
    got = {}
    for name, Zin in (("Z", Z), ("A", A_out)):
        out = np.empty((B, N), dtype)
        _kernels.input_gradient(out, dZ2, W2, Zin, A_out, act, n_threads, scratch, False)
        got[name] = out
    assert np.array_equal(got["A"], got["Z"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_without_z_keeps_nan_and_signed_zeros(target, dtype):
    # relu and leaky_relu of NaN, -0.0, +0.0 and tiny negatives: f' from A is f' from Z
    from fastbp import _common, _kernels
    B, K, N = 7, 1, 40
    A = np.ones((B, K), dtype)
    W = np.zeros((K, N), dtype)
    b = np.array([np.nan, -0.0, 0.0, -np.finfo(dtype).tiny / 4, np.finfo(dtype).tiny / 4,
                  -1e-30, 1e-30, 3.0] * 5, dtype)
    scratch = np.empty(_kernels.scratch_size(B, K, N, 1), dtype)
    for activation in ("relu", "leaky_relu"):
        act = _common.ACTIVATIONS[activation]
        Z, A_out = np.empty((B, N), dtype), np.empty((B, N), dtype)
        _kernels.dense_forward(Z, A_out, A, W, b, act, 1, scratch, False)
        only_A = np.empty((B, N), dtype)
        _kernels.dense_forward(only_A, only_A, A, W, b, act, 1, scratch, False)
        assert np.array_equal(only_A, A_out, equal_nan=True)
        assert np.array_equal(np.signbit(only_A), np.signbit(A_out))
        dZ2 = np.ones((B, 3), dtype)
        W2 = np.ones((N, 3), dtype)
        outs = []
        for Zin in (Z, A_out):
            out = np.empty((B, N), dtype)
            _kernels.input_gradient(out, dZ2, W2, Zin, A_out, act, 1, scratch, False)
            outs.append(out)
        assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_bit_identical_per_target(target, dtype):
    A, W, b, dZ = data((256, 300, 400), dtype)  # 30M multiply-adds: several threads
    outs = []
    for t in (1, 2):
        Z, A_out = np.empty((256, 400), dtype), np.empty((256, 400), dtype)
        kernels.dense_forward(Z, A_out, A, W, b, "gelu", t)
        dW, db = np.empty((300, 400), dtype), np.empty(400, dtype)
        kernels.weight_gradient(dW, db, A, dZ, t)
        dA = np.empty((256, 300), dtype)
        kernels.input_gradient(dA, dZ, W, n_threads=t)
        outs.append((Z, A_out, dW, dA))
    for x, y in zip(*outs):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_network_matches_reference_under_target(target, dtype, loss):
    sizes = [13, 40, 33, 7]
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 13)).astype(dtype)
    y = (rng.integers(0, 7, 50) if loss == "cross_entropy" else
         (rng.random((50, 7)) > 0.5).astype(dtype) if loss == "binary_cross_entropy" else
         rng.standard_normal((50, 7)).astype(dtype))
    net = fastbp.Network(sizes, activation="tanh", loss=loss, dtype=dtype, seed=4)
    ref = reference.Network(sizes, activation="tanh", loss=loss, dtype=dtype, seed=4)
    net.fit(X, y, epochs=2, batch_size=16, lr=0.05)
    ref.fit(X, y, epochs=2, batch_size=16, lr=0.05)
    # 8 steps, 3 layers, reductions up to 50: the network test's bound (test_network.py)
    tol = 4 * 3 * 50 * np.finfo(dtype).eps * 8
    for a, r in zip(net.weights + net.biases, ref.weights + ref.biases):
        assert np.max(np.abs(a - r)) <= tol


def test_use_target_rejects_unknown_names():
    with pytest.raises(ValueError, match="SIMD target"):
        _dispatch.use_target("sse9")


def _run(code, cwd, **env):
    # cwd outside the source tree, whose fastbp/ has no compiled modules
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd)


@pytest.mark.parametrize("name", TARGETS)
def test_fastbp_isa_forces_a_target(name, tmp_path):
    r = _run("import fastbp; fastbp.show_config()", tmp_path, FASTBP_ISA=name)
    assert r.returncode == 0, r.stderr
    assert f"SIMD target chosen: {name}" in r.stdout


def test_fastbp_isa_unknown_is_a_clear_error(tmp_path):
    r = _run("import fastbp", tmp_path, FASTBP_ISA="avx1024")
    assert r.returncode == 1
    assert "FASTBP_ISA='avx1024'" in r.stderr and "ImportError" in r.stderr


def test_default_is_the_best_available(tmp_path):
    r = _run("import fastbp; from fastbp import _dispatch; print(_dispatch.current_target())",
             tmp_path, FASTBP_ISA="")
    assert r.stdout.strip() == TARGETS[-1]


def _assert_step_is_gradient_then_update(net, X, y, lr, dtype, where):
    # net.train_step(X, y, lr) leaves exactly fl(p - fl(lr * g)) for every parameter, g its
    # gradient before the step (net.gradients)
    dW, db = net.gradients(X, y)
    want_W = [W - dtype(lr) * g for W, g in zip(net.weights, dW)]
    want_b = [b - dtype(lr) * g for b, g in zip(net.biases, db)]
    net.train_step(X, y, lr=lr)
    for l in range(len(want_W)):
        assert np.array_equal(net.weights[l], want_W[l]), f"{where}: layer {l} weights"
        assert np.array_equal(net.biases[l], want_b[l]), f"{where}: layer {l} biases"


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sizes", [[7, 33, 5], [65, 129, 40, 10], [33, 16, 8]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sgd_step_equals_gradient_then_update(target, dtype, sizes, n_threads):
    # Plain SGD is fused into the weight-gradient product (W -= lr * tile straight from
    # the registers for full tiles, from the tile buffer for the edges). It must be the
    # unfused step bit for bit: the same sums, then fl(W - fl(lr * dW)) as NumPy does it.
    # Batches of 37 and 67 rows (one row part each: these networks are too small for
    # more, see src/_plan.pxd) take the fused step; both have full row panels and a
    # partial one for every target's MR.
    rng = np.random.default_rng(len(sizes))
    for B in (37, 67):
        X = rng.standard_normal((B, sizes[0])).astype(dtype)
        y = rng.integers(0, sizes[-1], B)
        net = fastbp.Network(sizes, activation="relu", dtype=dtype, seed=3,
                             n_threads=n_threads)
        _assert_step_is_gradient_then_update(net, X, y, 0.37, dtype, f"B={B}")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sgd_step_of_a_one_output_layer(target, dtype, loss, n_threads):
    # A layer of one output steps its weights with vector loops, a chunk of
    # ONE_OUTPUT_CHUNK (256) at a time (src/_dense.pxd): 300 inputs are a full chunk and a
    # partial one. Batches of 7 and 67 rows take that fused step (both must equal gradient
    # then update bit for bit). A step that overflows a weight raises and keeps every
    # parameter.
    sizes = [5, 300, 1]
    rng = np.random.default_rng(11)
    for B in (7, 67):
        X = rng.standard_normal((B, sizes[0])).astype(dtype)
        y = (rng.integers(0, 2, (B, 1)) if loss == "binary_cross_entropy"
             else rng.standard_normal((B, 1))).astype(dtype)
        net = fastbp.Network(sizes, activation="relu", loss=loss, dtype=dtype, seed=3,
                             n_threads=n_threads)
        _assert_step_is_gradient_then_update(net, X, y, 0.37, dtype, f"B={B}")
        before = [p.copy() for p in net.weights + net.biases]
        with pytest.raises(ValueError, match="parameter became non-finite"):
            net.train_step(X * dtype(1e3), y, lr=float(np.finfo(dtype).max) / 4)
        for p, p0 in zip(net.weights + net.biases, before):
            assert np.array_equal(p, p0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_output_weight_step_reports_its_own_overflow(target, dtype):
    # Two rows whose residuals cancel: the bias gradient is (nearly) zero and its step
    # finite, while the weight gradient, (x1 - x2) times the residual, overflows the step.
    # Only the one-output weight step can see it, and train_step must raise and keep the
    # parameters.
    net = fastbp.Network([3, 1], loss="mse", dtype=dtype, seed=0)
    X = np.array([[1e3, -1e3, 5e2], [-1e3, 1e3, -5e2]], dtype=dtype)
    y = net.forward(X) + np.array([[-1.0], [1.0]], dtype=dtype)
    dW, db = net.gradients(X, y)
    lr = float(np.finfo(dtype).max) / 8
    with np.errstate(over="ignore"):
        assert np.isfinite(dtype(lr) * db[0]).all()
        assert not np.isfinite(net.weights[0] - dtype(lr) * dW[0]).all()
    before = [p.copy() for p in net.weights + net.biases]
    with pytest.raises(ValueError, match="parameter became non-finite"):
        net.train_step(X, y, lr=lr)
    for p, p0 in zip(net.weights + net.biases, before):
        assert np.array_equal(p, p0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sgd_step_reports_an_overflow(target, dtype):
    # A step that overflows a weight (in a full tile) is caught: train_step raises, and the
    # network keeps its parameters.
    sizes = [64, 64, 4]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 64)).astype(dtype)
    y = rng.integers(0, 4, 48)
    net = fastbp.Network(sizes, activation="identity", dtype=dtype, seed=0)
    before = [W.copy() for W in net.weights]
    huge = float(np.finfo(dtype).max) / 4
    with pytest.raises(ValueError, match="finite"):
        net.train_step(X * dtype(1e3), y, lr=huge)
    for W, W0 in zip(net.weights, before):
        assert np.array_equal(W, W0)


# The optimizer steps are C loops compiled per target (src/update_kernel.h); each target's
# is held against the reference's NumPy optimizers. 300 x 230 = 69000 weights: 17 chunks
# (the last one partial) that two threads share, and blocks of lanes with a tail.
OPT_SIZES = [300, 230, 3]


@pytest.mark.parametrize("kind", ["sgd_l2", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_steps_match_reference(target, dtype, kind):
    from fastbp import optim

    def flat(net):
        return np.concatenate([np.concatenate([W.ravel(), b.ravel()])
                               for W, b in zip(net.weights, net.biases)])

    def bound(dtype, n_layers, K, steps):  # as in test_training: rounding of each step
        return 4 * n_layers * K * np.finfo(dtype).eps * steps

    def make():
        if kind == "sgd_l2":
            return optim.SGD(lr=0.05, l2=0.01)
        if kind == "adam":
            return optim.Adam(lr=0.01, l2=1e-3, l2_per_sample=True)
        return optim.SGD(lr=0.05, momentum=0.9, nesterov=kind == "nesterov", l2=1e-3)

    rng = np.random.default_rng(5)
    n, batch, epochs = 50, 16, 2
    X = rng.standard_normal((n, OPT_SIZES[0])).astype(dtype)
    y = rng.integers(0, OPT_SIZES[-1], n)
    ref = reference.Network(OPT_SIZES, activation="tanh", dtype=dtype, seed=2)
    opt_r = make()
    fast = {}
    for n_threads in (1, 2):
        fast[n_threads] = (fastbp.Network(OPT_SIZES, activation="tanh", dtype=dtype, seed=2,
                                          n_threads=n_threads), make())
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(n)
        sr = ref.train_epoch(X, y, optimizer=opt_r, batch_size=batch, order=order)
        for net, opt in fast.values():
            sf = net.train_epoch(X, y, optimizer=opt, batch_size=batch, order=order)
            tol = bound(dtype, 2, OPT_SIZES[0], (epoch + 1) * 4)
            assert abs(sf.loss - sr.loss) <= tol * max(1.0, abs(sr.loss))
            assert abs(sf.penalty - sr.penalty) <= tol * max(1.0, abs(sr.penalty))
    steps = epochs * 4
    tol = bound(dtype, 2, OPT_SIZES[0], steps)
    (net1, opt1), (net2, opt2) = fast[1], fast[2]
    assert np.array_equal(flat(net1), flat(net2)), "thread counts differ"
    for a, b in zip(opt1.state, opt2.state):
        assert np.array_equal(a, b), "optimizer state differs between thread counts"
    p_fast, p_ref = flat(net1).astype(np.float64), flat(ref).astype(np.float64)
    assert np.max(np.abs(p_fast - p_ref)) <= tol * max(1.0, np.max(np.abs(p_ref))), \
        f"{kind}/{target}: parameters"
    assert opt1.t == opt_r.t == steps
    for a, b in zip(opt1.state, opt_r.state):   # relative to each buffer's own size
        a, b = a.astype(np.float64), b.astype(np.float64)
        assert np.max(np.abs(a - b)) <= tol * np.max(np.abs(b)), f"{kind}/{target}: state"
