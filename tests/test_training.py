"""Training features: optimizers (SGD, momentum, Nesterov, Adam, L2), train_epoch, fit's
options (validation, early stopping, schedules, history, callbacks, verbose, sample and
class weights), initialization schemes, divergence handling, bad input and pickling.

fastbp.Network is checked against fastbp.reference.Network (the oracle) and, where it is
installed, against PyTorch's optimizers.

Tolerances. A layer's product is a dot product of length K (the layer width or the batch
size, whichever reduction is longer); its rounding error is at most about K * eps relative
to the size of the values (Higham's gamma_K), and fastbp and NumPy's BLAS sum in different
orders, so the two may differ by twice that. Through L layers the errors add, and after S
optimizer steps (each adds one step's rounding and carries the earlier differences through
a mildly expanding map at these learning rates) they grow at most linearly in S:

    |fast - ref| <= 4 * L * K * eps * S * max(1, max |ref|)

For float64 (eps 2.2e-16) and the small networks here (L <= 4, K <= 9, S <= 15) this is
~5e-13, i.e. agreement to ~1e-12 relative; for float32 (eps 1.2e-7) a few 1e-4 at most,
where a few 1e-7 is typical. Whatever runs the same compiled code twice (thread counts,
pickled copies, replays) is compared bit for bit.
"""

import io
import math
import pickle
import sys

import numpy as np
import pytest

import fastbp
from fastbp import optim, reference

DTYPES = [np.float32, np.float64]
HIDDEN = ["relu", "tanh", "gelu"]


# -- helpers --------------------------------------------------------------------------------

def bound(dtype, n_layers, K, steps, scale=1.0):
    """The rounding bound of the module docstring."""
    return 4 * n_layers * K * np.finfo(dtype).eps * steps * max(1.0, scale)


def flat(net):
    """All parameters in the parameter buffer's layout (W_0, b_0, W_1, b_1, ...), which is
    also the layout of an optimizer's state buffers."""
    return np.concatenate([np.concatenate([W.ravel(), b.ravel()])
                           for W, b in zip(net.weights, net.biases)])


def assert_close(fast, ref, tol, what, relative_to=None):
    fast = np.asarray(fast, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert fast.shape == ref.shape, what
    scale = np.max(np.abs(ref)) if relative_to is None else relative_to
    limit = tol * max(1.0, scale) if relative_to is None else tol * scale
    err = np.max(np.abs(fast - ref)) if fast.size else 0.0
    assert err <= limit, f"{what}: max |fast - ref| = {err:.3e} > {limit:.3e}"


def assert_same_state(opt_a, opt_b, tol, what):
    assert opt_a.t == opt_b.t, f"{what}: t {opt_a.t} != {opt_b.t}"
    assert len(opt_a.state) == len(opt_b.state), what
    for i, (a, b) in enumerate(zip(opt_a.state, opt_b.state)):
        # state buffers (velocity, first and second moments) are compared relative to
        # their own size: their errors are relative errors of the gradients they hold
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        assert_close(a, b, 2 * tol, f"{what}: state[{i}]", relative_to=max(scale, 1e-300))


def make_data(kind, n, n_in, n_out, dtype, seed=0):
    """(X, y) for loss kind ce_labels, ce_probs, bce or mse."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if kind == "ce_labels":
        y = rng.integers(0, n_out, n)
    elif kind == "ce_probs":
        y = rng.dirichlet(np.ones(n_out), n).astype(dtype)
    elif kind == "bce":
        y = rng.random((n, n_out))
        y[:, : n_out // 2] = np.round(y[:, : n_out // 2])   # hard and soft targets
        y = y.astype(dtype)
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, y


LOSS_OF = {"ce_labels": "cross_entropy", "ce_probs": "cross_entropy",
           "bce": "binary_cross_entropy", "mse": "mse"}


def pair(sizes, dtype, loss="cross_entropy", activation="relu", seed=3, **kw):
    return (fastbp.Network(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed, **kw),
            reference.Network(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed,
                              **kw))


def clf_data(n=40, n_in=4, n_out=3, seed=0, dtype=np.float64):
    return make_data("ce_labels", n, n_in, n_out, dtype, seed)


# -- 1. parity of train_epoch with the reference -------------------------------------------

OPTIMIZERS = {
    "sgd": lambda l2, ps: optim.SGD(lr=0.1, l2=l2, l2_per_sample=ps),
    "momentum": lambda l2, ps: optim.SGD(lr=0.05, momentum=0.9, l2=l2, l2_per_sample=ps),
    "nesterov": lambda l2, ps: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, l2=l2,
                                         l2_per_sample=ps),
    "adam": lambda l2, ps: optim.Adam(lr=0.01, l2=l2, l2_per_sample=ps),
}
PENALTIES = {"none": (0.0, False), "l2": (0.02, False), "l2_per_sample": (0.5, True)}
PARITY_SIZES = [6, 9, 7, 5, 4]      # three hidden layers: relu, tanh, gelu
PARITY_EPOCHS = 3
# (rows, batch size): 8 does not divide 37 (a batch of 5); 151 = 2 * 65 + 21 ends with a
# batch of 21 (row parts are covered in tests/test_engine.py)
PARITY_BATCHES = [(37, 8), (151, 65)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["ce_labels", "ce_probs", "bce", "mse"])
@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("n,batch", PARITY_BATCHES)
def test_train_epoch_parity_with_reference(n, batch, kind, penalty, loss, dtype):
    sizes = PARITY_SIZES
    X, y = make_data(loss, n, sizes[0], sizes[-1], dtype, seed=1)
    w = np.random.default_rng(2).uniform(0.0, 3.0, n)
    w[[3, 17]] = 0.0                      # rows that do not count at all
    l2, per_sample = PENALTIES[penalty]
    steps = PARITY_EPOCHS * math.ceil(n / batch)
    tol = bound(dtype, len(sizes) - 1, max(max(sizes), batch), steps)
    for sample_weight, loss_scale in [(None, 1.0), (w, 2.5)]:
        fast, ref = pair(sizes, dtype, LOSS_OF[loss], HIDDEN)
        start = flat(ref)
        np.testing.assert_array_equal(flat(fast), start)   # same seed, same start
        opt_f, opt_r = OPTIMIZERS[kind](l2, per_sample), OPTIMIZERS[kind](l2, per_sample)
        what = f"{kind}/{penalty}/{loss}/{np.dtype(dtype).name}/w={sample_weight is not None}"
        for epoch in range(PARITY_EPOCHS):
            order = np.random.default_rng(10 + epoch).permutation(n)
            sf = fast.train_epoch(X, y, optimizer=opt_f, batch_size=batch, order=order,
                                  sample_weight=sample_weight, loss_scale=loss_scale)
            sr = ref.train_epoch(X, y, optimizer=opt_r, batch_size=batch, order=order,
                                 sample_weight=sample_weight, loss_scale=loss_scale)
            assert sf.n_samples == sr.n_samples == n
            for field in ("loss", "data_loss", "penalty"):
                a, b = getattr(sf, field), getattr(sr, field)
                assert np.isfinite(a), what
                assert abs(a - b) <= tol * max(1.0, abs(b)), f"{what}: {field} {a!r} != {b!r}"
            if l2 == 0:
                assert sf.penalty == 0.0
            else:
                assert sf.penalty > 0.0
            # loss = data_loss * loss_scale + penalty (each batch's mean, row-weighted)
            assert sf.loss == pytest.approx(sf.data_loss * loss_scale + sf.penalty, rel=1e-12)
        assert_close(flat(fast), flat(ref), tol, f"{what}: parameters")
        assert opt_f.t == opt_r.t == steps
        expected_buffers = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[kind]
        assert len(opt_f.state) == expected_buffers
        for buf in opt_f.state:
            assert buf.shape == fast._params.shape and buf.dtype == np.dtype(dtype)
        assert_same_state(opt_f, opt_r, tol, what)
        assert np.max(np.abs(flat(fast) - start)) > 1e-3      # and training moved them


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_zero_weight_batch_and_repeated_order_match_reference(kind):
    """A batch whose rows all weigh zero (no data gradient, no per-sample penalty) and an
    order that repeats and skips rows."""
    dtype = np.float64
    X, y = clf_data(n=24, n_in=5, n_out=3)
    w = np.ones(24)
    w[:6] = 0.0
    order = np.array([0, 1, 2, 3, 4, 5, 7, 7, 7, 20, 9, 9, 23, 11], dtype=np.int64)
    fast, ref = pair([5, 8, 3], dtype, activation="tanh")
    opt_f, opt_r = OPTIMIZERS[kind](0.5, True), OPTIMIZERS[kind](0.5, True)
    for _ in range(2):
        sf = fast.train_epoch(X, y, optimizer=opt_f, batch_size=6, order=order, sample_weight=w)
        sr = ref.train_epoch(X, y, optimizer=opt_r, batch_size=6, order=order, sample_weight=w)
        assert sf.n_samples == sr.n_samples == order.size
        tol = bound(dtype, 2, 8, 6)
        assert sf.loss == pytest.approx(sr.loss, rel=tol, abs=tol)
        assert sf.penalty == pytest.approx(sr.penalty, rel=tol, abs=tol)
    assert_close(flat(fast), flat(ref), bound(dtype, 2, 8, 6), "parameters")
    assert_same_state(opt_f, opt_r, bound(dtype, 2, 8, 6), "state")


# -- 2. thread independence ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_opt", [
    lambda: optim.SGD(lr=0.05, momentum=0.9, l2=1e-3),
    lambda: optim.Adam(lr=1e-3, l2=1e-3, l2_per_sample=True),
], ids=["momentum", "adam"])
def test_thread_count_does_not_change_results(make_opt, dtype):
    sizes = [300, 512, 10]          # 153,600 weights: the update loop is split over threads
    if fastbp.Network(sizes, n_threads=2).n_threads < 2:
        pytest.skip("one core only: nothing to compare")
    X, y = make_data("ce_labels", 320, sizes[0], sizes[-1], dtype, seed=4)
    results = []
    for nt in (1, 2):
        net = fastbp.Network(sizes, dtype=dtype, seed=5, n_threads=nt)
        opt = make_opt()
        losses = [net.train_epoch(X, y, optimizer=opt, batch_size=128,
                                  order=np.random.default_rng(e).permutation(320))[:3]
                  for e in range(2)]
        results.append((flat(net), opt, losses))
    (p1, o1, l1), (p2, o2, l2) = results
    np.testing.assert_array_equal(p1, p2)
    assert l1 == l2
    assert o1.t == o2.t == 6
    for a, b in zip(o1.state, o2.state):
        np.testing.assert_array_equal(a, b)


# -- 3. optimizer math against PyTorch -----------------------------------------------------

def _torch_copy(torch, net, activation):
    layers = []
    for i, (W, b) in enumerate(zip(net.weights, net.biases)):
        lin = torch.nn.Linear(*W.shape).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))    # torch keeps (out, in)
            lin.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(lin)
        if i < len(net.weights) - 1:
            layers.append(activation())
    model = torch.nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    return model, [m.weight for m in linears], [m.bias for m in linears]


TORCH_CASES = {
    # name: (fastbp optimizer, torch optimizer class, torch kwargs, l2, l2_per_sample)
    "sgd": (lambda: optim.SGD(lr=0.1), "SGD", dict(lr=0.1), 0.0, False),
    "sgd_l2": (lambda: optim.SGD(lr=0.1, l2=0.05), "SGD", dict(lr=0.1), 0.05, False),
    "sgd_l2_per_sample": (lambda: optim.SGD(lr=0.1, l2=0.6, l2_per_sample=True), "SGD",
                          dict(lr=0.1), 0.6, True),
    "momentum_l2": (lambda: optim.SGD(lr=0.05, momentum=0.9, l2=0.05), "SGD",
                    dict(lr=0.05, momentum=0.9), 0.05, False),
    "nesterov_l2": (lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, l2=0.05), "SGD",
                    dict(lr=0.05, momentum=0.9, nesterov=True), 0.05, False),
    # epsilon: fastbp divides lr_t * m by sqrt(v) + eps, torch lr * m_hat by sqrt(v_hat) + eps,
    # i.e. torch's eps is fastbp's eps * sqrt(1 - beta2**t). With eps = 1e-300 both are
    # sqrt(v) to the last bit for every non-zero gradient element (sqrt(v) here is > 1e-12,
    # so eps / sqrt(v) < 1e-288), and both give exactly 0 for a zero one: the remaining
    # difference is rounding only. (With eps = 1e-12 the two updates differ by up to
    # lr_t * eps / sqrt(v), ~1e-9 here, a difference of formula and not of implementation.)
    "adam": (lambda: optim.Adam(lr=0.01, epsilon=1e-300), "Adam", dict(lr=0.01, eps=1e-300),
             0.0, False),
    "adam_l2": (lambda: optim.Adam(lr=0.01, beta1=0.8, beta2=0.99, epsilon=1e-300, l2=0.05),
                "Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-300), 0.05, False),
}


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_optimizer_math_matches_torch(case, loss):
    torch = pytest.importorskip("torch")
    make_opt, torch_cls, torch_kw, l2, per_sample = TORCH_CASES[case]
    n, sizes, steps = 20, [5, 8, 6, 3], 6
    X, y = make_data("ce_labels" if loss == "cross_entropy" else "mse", n, 5, 3,
                     np.float64, seed=7)
    net = fastbp.Network(sizes, activation="tanh", loss=loss, dtype=np.float64, seed=8)
    model, ws, bs = _torch_copy(torch, net, torch.nn.Tanh)
    # torch's weight_decay applies to every parameter of its group: weights in a group with
    # the penalty, biases in one without (fastbp's l2 is on the weights only); the
    # per-sample penalty is l2 / (the batch's size), full batches here
    decay = l2 / n if per_sample else l2
    topt = getattr(torch.optim, torch_cls)([{"params": ws, "weight_decay": decay},
                                            {"params": bs, "weight_decay": 0.0}], **torch_kw)
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    criterion = (torch.nn.functional.cross_entropy if loss == "cross_entropy"
                 else torch.nn.functional.mse_loss)
    opt = make_opt()
    # float64, reductions of length <= 20, 3 layers; S steps
    tol = bound(np.float64, 3, n, steps)
    for step in range(steps):
        penalty = 0.5 * decay * sum(float((W.detach() ** 2).sum()) for W in ws)
        stats = net.train_epoch(X, y, optimizer=opt, batch_size=n, shuffle=False)
        topt.zero_grad()
        value = criterion(model(Xt), yt)
        value.backward()
        topt.step()
        assert stats.data_loss == pytest.approx(value.item(), rel=tol), f"step {step}"
        assert stats.penalty == pytest.approx(penalty, rel=tol, abs=tol)
        assert stats.loss == pytest.approx(value.item() + penalty, rel=tol)
        for l, (W, b) in enumerate(zip(net.weights, net.biases)):
            assert_close(W, ws[l].detach().numpy().T, tol, f"step {step}: W[{l}]")
            assert_close(b, bs[l].detach().numpy(), tol, f"step {step}: b[{l}]")
    assert opt.t == steps
    if torch_cls == "SGD" and "momentum" in torch_kw:
        # torch's buffer is the sum of gradients, scikit-learn's velocity is -lr times it
        buf = np.concatenate([np.concatenate([topt.state[W]["momentum_buffer"].numpy().T.ravel(),
                                              topt.state[b]["momentum_buffer"].numpy()])
                              for W, b in zip(ws, bs)])
        assert_close(opt.state[0], -torch_kw["lr"] * buf, tol, "velocity",
                     relative_to=np.max(np.abs(opt.state[0])))
    if torch_cls == "Adam":
        for i, key in enumerate(("exp_avg", "exp_avg_sq")):
            buf = np.concatenate([np.concatenate([topt.state[W][key].numpy().T.ravel(),
                                                  topt.state[b][key].numpy()])
                                  for W, b in zip(ws, bs)])
            assert_close(opt.state[i], buf, tol, key, relative_to=np.max(np.abs(buf)))


# -- 4. divergence ---------------------------------------------------------------------------

DIV_SIZES, DIV_B = [4, 6, 3], 4
# the reference computes the overflowing step in NumPy before rejecting it
overflow_ok = pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                                         "ignore:invalid value:RuntimeWarning")


def _quiet_then_loud(loud_scale, quiet="zeros", k=3, seed=0, batch=DIV_B):
    """float32 rows: k-1 batches of quiet rows, then a batch of loud rows (inputs of size
    loud_scale), then one more ordinary batch."""
    rng = np.random.default_rng(seed)
    n_quiet = (k - 1) * batch
    quiet_rows = (np.zeros((n_quiet, 4)) if quiet == "zeros"
                  else rng.standard_normal((n_quiet, 4)))
    loud_rows = rng.uniform(0.5, 1.0, (batch, 4)) * loud_scale
    X = np.vstack([quiet_rows, loud_rows, rng.standard_normal((batch, 4))]).astype(np.float32)
    y = rng.integers(0, 3, X.shape[0])
    return X, y, n_quiet


# (optimizer factory, inputs): with lr 1e36 (finite in float32) the quiet batches of zero
# inputs move only the output biases (by up to lr), and the batch of inputs ~1e5 gives
# weight gradients ~1e4, so lr * gradient overflows float32; the loss stays finite
# (~1e36 logits). Adam's step is bounded by lr_t whatever the gradient, so there the loud
# batch (inputs ~1e24, finite loss) overflows the second moment g**2 instead.
DIVERGE = {
    "sgd_fused": (lambda: optim.SGD(lr=1e36), 1e5, "zeros"),
    "momentum": (lambda: optim.SGD(lr=1e36, momentum=0.9), 1e5, "zeros"),
    "nesterov": (lambda: optim.SGD(lr=1e36, momentum=0.9, nesterov=True), 1e5, "zeros"),
    "adam": (lambda: optim.Adam(lr=0.01), 1e24, "normal"),
}


def _first_batches(make_opt, X, y, n_rows, batch=DIV_B):
    """A fresh network trained on only the first n_rows rows, in order."""
    net = fastbp.Network(DIV_SIZES, dtype=np.float32, seed=1)
    opt = make_opt()
    net.train_epoch(X, y, optimizer=opt, batch_size=batch, order=np.arange(n_rows))
    return net, opt


@overflow_ok
@pytest.mark.parametrize("case", list(DIVERGE))
@pytest.mark.parametrize("batch", [DIV_B, 64])
def test_parameter_overflow_in_train_epoch_keeps_last_finite_step(case, batch):
    make_opt, scale, quiet = DIVERGE[case]
    X, y, n_good = _quiet_then_loud(scale, quiet, batch=batch)
    fast, ref = pair(DIV_SIZES, np.float32, seed=1)
    opt_f, opt_r = make_opt(), make_opt()
    with pytest.raises(ValueError, match="non-finite") as info:
        fast.train_epoch(X, y, optimizer=opt_f, batch_size=batch, shuffle=False)
    assert "batch 3" in str(info.value)
    with pytest.raises(ValueError, match="non-finite"):
        ref.train_epoch(X, y, optimizer=opt_r, batch_size=batch, shuffle=False)
    assert np.isfinite(flat(fast)).all()
    good, opt_g = _first_batches(make_opt, X, y, n_good, batch)
    # the same compiled steps: bit for bit
    np.testing.assert_array_equal(flat(fast), flat(good))
    assert opt_f.t == opt_g.t == 2
    for a, b in zip(opt_f.state, opt_g.state):
        np.testing.assert_array_equal(a, b)
    # the reference stopped at the same point (float32, 2 steps, K = 6 or the batch)
    tol = bound(np.float32, 2, max(6, batch), 2)
    assert_close(flat(fast), flat(ref), tol, "parameters vs reference")
    assert_same_state(opt_f, opt_r, tol, "state vs reference")
    # the steps before the bad one did happen
    assert not np.array_equal(flat(fast), flat(fastbp.Network(DIV_SIZES, seed=1)))


@overflow_ok
@pytest.mark.parametrize("case", list(DIVERGE))
def test_parameter_overflow_in_fit_keeps_last_finite_step(case):
    make_opt, scale, quiet = DIVERGE[case]
    X, y, n_good = _quiet_then_loud(scale, quiet)
    good, opt_g = _first_batches(make_opt, X, y, n_good)
    for cls in (fastbp.Network, reference.Network):
        net = cls(DIV_SIZES, dtype=np.float32, seed=1)
        opt = make_opt()
        with pytest.raises(ValueError, match="non-finite"):
            net.fit(X, y, epochs=3, batch_size=DIV_B, shuffle=False, optimizer=opt)
        assert net.optimizer_ is opt and opt.t == 2
        if cls is fastbp.Network:
            np.testing.assert_array_equal(flat(net), flat(good))
            for a, b in zip(opt.state, opt_g.state):
                np.testing.assert_array_equal(a, b)
        else:
            assert_close(flat(net), flat(good), bound(np.float32, 2, 6, 2), "reference")


def _huge_first_input_net(cls):
    """A float32 network whose weights from input 0 are 3e38 (finite): rows with x_0 = 0
    train normally (those weights get zero gradient and stay), a row with x_0 = 2 makes
    the first layer's products overflow, so its loss is not finite."""
    net = cls(DIV_SIZES, dtype=np.float32, seed=1)
    net.weights[0][0] = 3e38
    return net


@overflow_ok
@pytest.mark.parametrize("case", ["sgd", "momentum", "adam"])
def test_nonfinite_loss_stops_before_the_step(case):
    make_opt = {"sgd": lambda: optim.SGD(lr=0.1),
                "momentum": lambda: optim.SGD(lr=0.1, momentum=0.9),
                "adam": lambda: optim.Adam(lr=0.01)}[case]
    rng = np.random.default_rng(4)
    X = rng.standard_normal((4 * DIV_B, 4)).astype(np.float32)
    X[:, 0] = 0.0
    X[2 * DIV_B:3 * DIV_B, 0] = 2.0             # batch 3
    y = rng.integers(0, 3, 4 * DIV_B)
    good = _huge_first_input_net(fastbp.Network)
    opt_g = make_opt()
    good.train_epoch(X, y, optimizer=opt_g, batch_size=DIV_B, order=np.arange(2 * DIV_B))
    assert not np.array_equal(flat(good), flat(_huge_first_input_net(fastbp.Network)))
    for cls in NETS:
        net = _huge_first_input_net(cls)
        opt = make_opt()
        with pytest.raises(ValueError, match="not finite at batch 3"):
            net.train_epoch(X, y, optimizer=opt, batch_size=DIV_B, shuffle=False)
        assert opt.t == 2
        if cls is fastbp.Network:
            np.testing.assert_array_equal(flat(net), flat(good))
            for a, b in zip(opt.state, opt_g.state):
                np.testing.assert_array_equal(a, b)
        else:
            # relative to the ordinary parameters (the 3e38 ones are unchanged exactly)
            np.testing.assert_array_equal(net.weights[0][0], good.weights[0][0])
            assert_close(flat(net)[6:], flat(good)[6:], bound(np.float32, 2, 6, 2),
                         "reference")
            assert_same_state(opt, opt_g, bound(np.float32, 2, 6, 2), "reference state")
        net2 = _huge_first_input_net(cls)
        opt2 = make_opt()
        with pytest.raises(ValueError, match="not finite at batch 3"):
            net2.fit(X, y, epochs=2, batch_size=DIV_B, shuffle=False, optimizer=opt2)
        assert opt2.t == 2
        np.testing.assert_array_equal(flat(net2), flat(net))


@overflow_ok
def test_divergence_in_train_step_leaves_parameters_unchanged():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((8, 4)).astype(np.float32)
    X[:, 0] = 0.0
    y = rng.integers(0, 3, 8)
    loud = (rng.uniform(0.5, 1.0, (4, 4)) * 1e5).astype(np.float32)
    loud[:, 0] = 0.0
    overflowing = X[:4].copy()
    overflowing[:, 0] = 2.0                      # times the 3e38 weights: inf
    fast, ref = _huge_first_input_net(fastbp.Network), _huge_first_input_net(reference.Network)
    for net in (fast, ref):
        net.train_step(X[:4], y[:4], lr=0.1)
        net.train_step(X[4:], y[4:], lr=0.1)
    before_f, before_r = flat(fast), flat(ref)
    for net, before in ((fast, before_f), (ref, before_r)):
        # lr 1e36 times weight gradients ~1e4: the (fused, for fastbp) SGD step overflows
        with pytest.raises(ValueError, match="non-finite"):
            net.train_step(loud, y[:4], lr=1e36)
        np.testing.assert_array_equal(flat(net), before)
        with pytest.raises(ValueError, match="not finite"):
            net.train_step(overflowing, y[:4], lr=0.1)
        np.testing.assert_array_equal(flat(net), before)
    np.testing.assert_array_equal(before_f[:6], before_r[:6])   # the 3e38 weights stayed
    assert_close(before_f[6:], before_r[6:], bound(np.float32, 2, 6, 2), "reference")
    # and the network still trains
    assert np.isfinite(fast.train_step(X, y, lr=0.1))


@overflow_ok
def test_divergence_in_a_later_epoch_restores_that_epochs_start():
    """The first batch of an epoch diverging: nothing to replay, the epoch's starting
    parameters and optimizer state come back."""
    X, y, _ = _quiet_then_loud(1e24, "normal", k=1)
    net = fastbp.Network(DIV_SIZES, dtype=np.float32, seed=1)
    opt = optim.Adam(lr=0.01)
    rows = np.arange(DIV_B, 2 * DIV_B)           # the ordinary batch
    net.train_epoch(X, y, optimizer=opt, batch_size=DIV_B, order=rows)
    params, state, t = flat(net), [s.copy() for s in opt.state], opt.t
    with pytest.raises(ValueError, match="batch 1"):
        net.train_epoch(X, y, optimizer=opt, batch_size=DIV_B, shuffle=False)
    np.testing.assert_array_equal(flat(net), params)
    assert opt.t == t == 1
    for a, b in zip(opt.state, state):
        np.testing.assert_array_equal(a, b)


# -- 5. fit options ----------------------------------------------------------------------

NETS = [fastbp.Network, reference.Network]
HISTORY_KEYS = {"loss", "val_loss", "val_score", "lr", "samples_per_s", "seconds"}


@pytest.mark.parametrize("cls", NETS)
def test_validation_split_and_history(cls):
    X, y = clf_data(n=50)
    split, epochs = 0.25, 4
    cut = 50 - math.ceil(50 * split)     # the last ceil(n * split) rows validate
    net = cls([4, 7, 3], dtype=np.float64, seed=0)
    assert net.fit(X, y, epochs=epochs, batch_size=8, lr=0.1, validation_split=split) is net
    h = net.history
    assert set(h) == HISTORY_KEYS
    assert all(len(v) == epochs for v in h.values())
    assert net.loss_curve_ == h["loss"]
    # val_loss of the last epoch: the loss on the validation slice with the final parameters
    # (same data, one pass; a weighted-mean path may round once more: 1e-12 relative)
    assert h["val_loss"][-1] == pytest.approx(net.loss(X[cut:], y[cut:]), rel=1e-12)
    assert h["val_score"][-1] == pytest.approx(np.mean(net.predict(X[cut:]) == y[cut:]))
    assert all(s > 0 for s in h["samples_per_s"]) and all(s >= 0 for s in h["seconds"])
    assert h["lr"] == [0.1] * epochs
    # training used only the first `cut` rows
    other = cls([4, 7, 3], dtype=np.float64, seed=0)
    other.fit(X[:cut], y[:cut], epochs=epochs, batch_size=8, lr=0.1)
    np.testing.assert_array_equal(flat(net), flat(other))
    assert other.history["val_loss"] == [None] * epochs
    # a second fit appends to loss_curve_ and starts a new history
    net.fit(X, y, epochs=2, batch_size=8, lr=0.1)
    assert len(net.loss_curve_) == epochs + 2 and len(net.history["loss"]) == 2


@pytest.mark.parametrize("cls", NETS)
def test_validation_data(cls):
    X, y = clf_data(n=40)
    Xv, yv = clf_data(n=15, seed=9)
    wv = np.linspace(0.5, 2.0, 15)
    net = cls([4, 7, 3], dtype=np.float64, seed=0)
    net.fit(X, y, epochs=3, batch_size=8, lr=0.1, validation_data=(Xv, yv))
    assert net.history["val_loss"][-1] == pytest.approx(net.loss(Xv, yv), rel=1e-12)
    net.fit(X, y, epochs=2, batch_size=8, lr=0.1, validation_data=(Xv, yv, wv))
    assert net.history["val_loss"][-1] == pytest.approx(net.loss(Xv, yv, sample_weight=wv),
                                                        rel=1e-12)
    correct = net.predict(Xv) == yv
    assert net.history["val_score"][-1] == pytest.approx(np.average(correct, weights=wv))


def _expected_stop(values, patience, min_delta):
    """The epoch (1-based) at which early stopping stops, and the best epoch so far."""
    best, best_epoch, stall = math.inf, 0, 0
    for epoch, v in enumerate(values, 1):
        stall = 0 if v < best - min_delta else stall + 1
        if v < best:
            best, best_epoch = v, epoch
        if stall >= patience:
            return epoch, best_epoch
    return len(values), best_epoch


def _overfitting_data():
    """Tiny noisy training set and a validation set with other random labels: with a big
    learning rate the validation loss falls, then rises and wanders."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((16, 4))
    y = rng.integers(0, 3, 16)
    Xv = rng.standard_normal((30, 4))
    yv = rng.integers(0, 3, 30)
    return X, y, Xv, yv


def _recorder(store):
    def cb(net, epoch, logs):
        store.append((epoch, logs["val_loss"], flat(net).copy()))
    return cb


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("patience,min_delta", [(3, 0.0), (2, 0.0), (2, 10.0)])
def test_early_stopping_restores_best_epoch(cls, patience, min_delta):
    X, y, Xv, yv = _overfitting_data()
    kw = dict(epochs=25, batch_size=4, lr=0.5, validation_data=(Xv, yv))
    full = []
    cls([4, 16, 3], dtype=np.float64, seed=2).fit(X, y, callbacks=_recorder(full), **kw)
    vals = [v for _, v, _ in full]
    stop, best = _expected_stop(vals, patience, min_delta)
    assert stop < kw["epochs"] and best < stop, "the case must stop early and after its best"
    seen = []
    net = cls([4, 16, 3], dtype=np.float64, seed=2)
    net.fit(X, y, early_stopping=True, patience=patience, min_delta=min_delta,
            callbacks=_recorder(seen), **kw)
    assert len(net.history["loss"]) == stop == len(seen)
    assert [e for e, _, _ in seen] == list(range(1, stop + 1))
    assert net.history["val_loss"] == vals[:stop]
    np.testing.assert_array_equal(flat(net), seen[best - 1][2])
    assert not np.array_equal(flat(net), seen[-1][2])


@pytest.mark.parametrize("cls", NETS)
def test_early_stopping_without_validation_monitors_training_loss(cls):
    X, y, _, _ = _overfitting_data()
    net = cls([4, 16, 3], dtype=np.float64, seed=2)
    seen = []
    net.fit(X, y, epochs=30, batch_size=4, lr=3.0, early_stopping=True, patience=2,
            callbacks=_recorder(seen))
    losses = net.history["loss"]
    stop, best = _expected_stop(losses, 2, 0.0)
    assert len(losses) == stop < 30 and best < stop, "the case must stop after its best"
    np.testing.assert_array_equal(flat(net), seen[best - 1][2])


@pytest.mark.parametrize("cls", NETS)
def test_callbacks_receive_logs_and_can_stop(cls):
    X, y = clf_data()
    calls = []

    def first(net, epoch, logs):
        calls.append(("first", net, epoch, dict(logs)))
        return epoch == 3

    def second(net, epoch, logs):
        calls.append(("second", net, epoch, None))
        return None

    net = cls([4, 6, 3], dtype=np.float64, seed=0)
    net.fit(X, y, epochs=10, batch_size=8, lr=0.1, validation_split=0.2,
            callbacks=[first, second])
    assert len(net.history["loss"]) == 3
    assert [(c[0], c[2]) for c in calls] == [("first", 1), ("second", 1), ("first", 2),
                                             ("second", 2), ("first", 3), ("second", 3)]
    assert all(c[1] is net for c in calls)
    logs = calls[4][3]
    for key in ("loss", "val_loss", "val_score", "lr", "samples_per_s", "seconds"):
        assert key in logs
    assert logs["loss"] == net.history["loss"][2] and logs["val_loss"] == net.history["val_loss"][2]
    # one callable is accepted as it is
    net.fit(X, y, epochs=5, batch_size=8, lr=0.1, callbacks=lambda n, e, l: e >= 2)
    assert len(net.history["loss"]) == 2


@pytest.mark.parametrize("cls", NETS)
def test_invscaling_schedule(cls):
    X, y = clf_data(n=30)
    n_train, lr, power_t = 24, 0.2, 0.3     # validation_split 0.2: 6 rows validate
    net = cls([4, 6, 3], dtype=np.float64, seed=0)
    net.fit(X, y, epochs=5, batch_size=8, lr=lr, lr_schedule="invscaling", power_t=power_t,
            validation_split=0.2)
    expected = [lr / (seen + 1) ** power_t for seen in range(0, 5 * n_train, n_train)]
    expected[0] = lr
    assert net.history["lr"] == pytest.approx(expected, rel=1e-15)
    # the lr used is the one recorded: replay the epochs with train_epoch and those lrs
    other = cls([4, 6, 3], dtype=np.float64, seed=0)
    opt = optim.SGD(lr=lr)
    for value in expected:
        opt.lr = value
        other.train_epoch(X[:n_train], y[:n_train], optimizer=opt, batch_size=8)
    np.testing.assert_array_equal(flat(other), flat(net))


def _expected_schedule(values, lr, patience, min_delta=0.0):
    """fit's adaptive rule (scikit-learn's), run on the recorded monitored values: the lr
    of each epoch, and the number of epochs run."""
    lrs, best, stall = [], math.inf, 0
    for epoch, v in enumerate(values, 1):
        lrs.append(lr)
        stall = 0 if v < best - min_delta else stall + 1
        best = min(best, v)
        if stall >= patience:
            if lr > 1e-6:
                lr, stall = lr / 5, 0
            else:
                return lrs, epoch
    return lrs, len(values)


@pytest.mark.parametrize("cls", NETS)
def test_adaptive_schedule(cls):
    X, y, Xv, yv = _overfitting_data()
    patience, lr = 2, 0.5
    net = cls([4, 16, 3], dtype=np.float64, seed=2)
    net.fit(X, y, epochs=20, batch_size=4, lr=lr, lr_schedule="adaptive", patience=patience,
            validation_data=(Xv, yv))
    lrs, n_epochs = _expected_schedule(net.history["val_loss"], lr, patience)
    assert net.history["lr"] == pytest.approx(lrs, rel=1e-15)
    assert n_epochs == len(net.history["lr"]) == 20
    assert min(net.history["lr"]) < lr, "the case must lower the learning rate"


@pytest.mark.parametrize("cls", NETS)
def test_adaptive_schedule_stops_once_lr_is_small(cls):
    """Without validation data the training loss is monitored; once lr is at most 1e-6
    and it stalls again, fit stops."""
    X, y, _, _ = _overfitting_data()
    net = cls([4, 16, 3], dtype=np.float64, seed=2)
    net.fit(X, y, epochs=60, batch_size=4, lr=2e-5, lr_schedule="adaptive", patience=1,
            min_delta=1e-3)
    lrs, n_epochs = _expected_schedule(net.history["loss"], 2e-5, 1, 1e-3)
    assert net.history["lr"] == pytest.approx(lrs, rel=1e-15)
    assert len(net.history["lr"]) == n_epochs < 60, "the case must stop early"
    assert net.history["lr"][-1] <= 1e-6


@pytest.mark.parametrize("cls", NETS)
def test_verbose_lines_when_not_a_terminal(cls, capsys):
    X, y = clf_data()
    net = cls([4, 6, 3], dtype=np.float64, seed=0)
    net.fit(X, y, epochs=3, batch_size=8, lr=0.1, verbose=0)
    assert capsys.readouterr().out == ""
    net.fit(X, y, epochs=3, batch_size=8, lr=0.1, verbose=1, validation_split=0.2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, 1):
        assert line.startswith(f"Epoch {epoch}/3")
        assert "loss" in line and "val_loss" in line and "samples/s" in line
        assert "\r" not in line


def test_verbose_live_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    X, y = clf_data()
    fastbp.Network([4, 6, 3], dtype=np.float64, seed=0).fit(X, y, epochs=2, batch_size=8,
                                                            lr=0.1, verbose=1)
    text = out.getvalue()
    assert "\r" in text and "samples/s" in text
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert text.count("\n") == 2          # one finished line per epoch


# -- sample and class weights -----------------------------------------------------------

@pytest.mark.parametrize("loss", ["ce_labels", "ce_probs", "bce", "mse"])
@pytest.mark.parametrize("cls", NETS)
def test_integer_sample_weight_equals_duplicated_rows(cls, loss):
    n = 12
    X, y = make_data(loss, n, 4, 3, np.float64, seed=5)
    counts = np.array([1, 2, 0, 3, 1, 1, 4, 1, 0, 2, 1, 1])
    Xd, yd = np.repeat(X, counts, axis=0), np.repeat(y, counts, axis=0)
    a = cls([4, 6, 3], activation="tanh", loss=LOSS_OF[loss], dtype=np.float64, seed=0)
    b = cls([4, 6, 3], activation="tanh", loss=LOSS_OF[loss], dtype=np.float64, seed=0)
    # float64 sums of <= 17 terms, summed in different orders: 1e-13 relative
    assert a.loss(X, y, sample_weight=counts) == pytest.approx(b.loss(Xd, yd), rel=1e-13)
    # one full-batch SGD step each: the same gradient
    sa = a.train_epoch(X, y, optimizer=optim.SGD(lr=0.5), batch_size=n, shuffle=False,
                       sample_weight=counts)
    sb = b.train_epoch(Xd, yd, optimizer=optim.SGD(lr=0.5), batch_size=counts.sum(),
                       shuffle=False)
    assert sa.data_loss == pytest.approx(sb.data_loss, rel=1e-13)
    assert_close(flat(a), flat(b), 1e-13, "parameters after one weighted step")
    assert not np.array_equal(flat(a), flat(cls([4, 6, 3], seed=0, dtype=np.float64)))


@pytest.mark.parametrize("cls", NETS)
def test_class_weight_equals_sample_weight(cls):
    X, y = clf_data(n=40)
    y[y == 2] = 0                         # class 2 absent, so "balanced" uses 2 classes
    kw = dict(epochs=3, batch_size=8, lr=0.1)
    labels, counts = np.unique(y, return_counts=True)
    balanced = {c: len(y) / (len(labels) * k) for c, k in zip(labels, counts)}
    cases = [
        ({0: 2.0, 1: 0.5}, np.where(y == 0, 2.0, 0.5)),
        ({1: 3.0}, np.where(y == 1, 3.0, 1.0)),        # missing classes weigh 1
        ("balanced", np.array([balanced[c] for c in y])),
    ]
    for class_weight, sample_weight in cases:
        a = cls([4, 6, 3], dtype=np.float64, seed=0)
        b = cls([4, 6, 3], dtype=np.float64, seed=0)
        a.fit(X, y, class_weight=class_weight, **kw)
        b.fit(X, y, sample_weight=sample_weight, **kw)
        assert_close(flat(a), flat(b), 1e-14, f"class_weight={class_weight!r}")
        assert a.loss_curve_ == pytest.approx(b.loss_curve_, rel=1e-14)
    # both given: multiplied
    extra = np.linspace(0.5, 1.5, 40)
    a = cls([4, 6, 3], dtype=np.float64, seed=0)
    b = cls([4, 6, 3], dtype=np.float64, seed=0)
    a.fit(X, y, class_weight={0: 2.0}, sample_weight=extra, **kw)
    b.fit(X, y, sample_weight=extra * np.where(y == 0, 2.0, 1.0), **kw)
    assert_close(flat(a), flat(b), 1e-14, "class_weight * sample_weight")


# -- optimizer objects across calls ----------------------------------------------------

@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("make_opt", [lambda: optim.SGD(lr=0.05, momentum=0.9),
                                      lambda: optim.Adam(lr=0.01)], ids=["momentum", "adam"])
def test_optimizer_reused_across_fit_calls_continues(cls, make_opt):
    X, y = clf_data(n=30)
    steps_per_epoch = math.ceil(30 / 8)
    net = cls([4, 6, 3], dtype=np.float64, seed=0)
    opt = make_opt()
    net.fit(X, y, epochs=2, batch_size=8, optimizer=opt)
    assert net.optimizer_ is opt and opt.t == 2 * steps_per_epoch
    net.fit(X, y, epochs=2, batch_size=8, optimizer=opt)
    assert opt.t == 4 * steps_per_epoch
    once = cls([4, 6, 3], dtype=np.float64, seed=0)
    opt_once = make_opt()
    once.fit(X, y, epochs=4, batch_size=8, optimizer=opt_once)
    np.testing.assert_array_equal(flat(net), flat(once))
    for a, b in zip(opt.state, opt_once.state):
        np.testing.assert_array_equal(a, b)
    # a fresh optimizer would have started again: different result
    fresh = cls([4, 6, 3], dtype=np.float64, seed=0)
    fresh.fit(X, y, epochs=2, batch_size=8, optimizer=make_opt())
    fresh.fit(X, y, epochs=2, batch_size=8, optimizer=make_opt())
    assert not np.array_equal(flat(fresh), flat(once))
    # reset() forgets the state
    opt.reset()
    assert opt.t == 0 and opt.state == ()


@pytest.mark.parametrize("cls", NETS)
def test_optimizer_bound_to_another_network_is_rejected(cls):
    X, y = clf_data()
    opt = optim.SGD(lr=0.1, momentum=0.9)
    cls([4, 5, 3], dtype=np.float64, seed=0).fit(X, y, epochs=1, optimizer=opt)
    t, state = opt.t, [s.copy() for s in opt.state]
    for other in (cls([4, 6, 3], dtype=np.float64, seed=1),     # another shape
                  cls([4, 5, 3], dtype=np.float32, seed=1)):    # another dtype
        before = flat(other)
        with pytest.raises(ValueError, match="another network"):
            other.fit(X, y, epochs=1, optimizer=opt)
        with pytest.raises(ValueError, match="another network"):
            other.train_epoch(X, y, optimizer=opt, shuffle=False)
        np.testing.assert_array_equal(flat(other), before)
        assert opt.t == t
        for a, b in zip(opt.state, state):
            np.testing.assert_array_equal(a, b)
    opt.reset()
    cls([4, 6, 3], dtype=np.float64, seed=1).fit(X, y, epochs=1, optimizer=opt)


@pytest.mark.parametrize("cls", NETS)
def test_rejected_optimizer_leaves_the_network_untouched(cls):
    """Bad input is rejected before anything is modified (README): after a fit with an
    optimizer bound to another network, the network trains exactly as a fresh one."""
    X, y = clf_data()
    opt = optim.SGD(lr=0.1, momentum=0.9)
    cls([4, 5, 3], dtype=np.float64, seed=0).fit(X, y, epochs=1, optimizer=opt)
    net = cls([4, 6, 3], dtype=np.float64, seed=1)
    fresh = cls([4, 6, 3], dtype=np.float64, seed=1)
    with pytest.raises(ValueError, match="another network"):
        net.fit(X, y, epochs=1, optimizer=opt)
    np.testing.assert_array_equal(flat(net), flat(fresh))
    # the shuffling generator was not advanced: the next fit is a fresh network's
    net_after, fresh_after = pickle.loads(pickle.dumps(net)), pickle.loads(pickle.dumps(fresh))
    net_after.fit(X, y, epochs=1, lr=0.1)
    fresh_after.fit(X, y, epochs=1, lr=0.1)
    np.testing.assert_array_equal(flat(net_after), flat(fresh_after))
    # nor were the record of the last fit and its optimizer replaced
    assert net.optimizer_ is None and net.history is None and net.loss_curve_ == []


# -- fastbp against the reference through fit ------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", ["sgd_momentum_invscaling", "adam_early_stopping"])
def test_fit_parity_with_reference(config, dtype):
    X, y, Xv, yv = _overfitting_data()
    X = np.vstack([X, Xv])
    y = np.concatenate([y, yv])
    if config == "sgd_momentum_invscaling":
        kw = dict(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, l2=1e-3,
                  lr_schedule="invscaling", power_t=0.25, validation_split=0.3)
    else:
        kw = dict(optimizer="adam", lr=0.05, l2=1e-3, early_stopping=True, patience=2,
                  validation_split=0.3)
    fast, ref = pair([4, 9, 7, 3], dtype, activation=["tanh", "gelu"], seed=6)
    fast.fit(X, y, epochs=12, batch_size=5, **kw)
    ref.fit(X, y, epochs=12, batch_size=5, **kw)
    hf, hr = fast.history, ref.history
    assert len(hf["loss"]) == len(hr["loss"])
    n_train = 46 - math.ceil(46 * 0.3)
    steps = len(hf["loss"]) * math.ceil(n_train / 5)
    tol = bound(dtype, 3, 9, steps)
    assert_close(fast.loss_curve_, ref.loss_curve_, tol, "loss_curve_")
    assert_close(hf["val_loss"], hr["val_loss"], tol, "val_loss")
    assert hf["val_score"] == hr["val_score"]
    assert hf["lr"] == pytest.approx(hr["lr"], rel=1e-15)
    assert_close(flat(fast), flat(ref), tol, "parameters")
    assert fast.optimizer_.t == ref.optimizer_.t
    assert_same_state(fast.optimizer_, ref.optimizer_, tol, "optimizer state")
    if config == "adam_early_stopping":
        assert len(hf["loss"]) < 12, "the case must stop early"


# -- 6. initialization -----------------------------------------------------------------

INITS = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", INITS)
def test_init_same_in_network_and_reference(init, dtype):
    sizes = [7, 12, 5, 3]
    fast = fastbp.Network(sizes, dtype=dtype, seed=4, init=init)
    ref = reference.Network(sizes, dtype=dtype, seed=4, init=init)
    np.testing.assert_array_equal(flat(fast), flat(ref))
    assert all((b == 0).all() for b in fast.biases)
    other = fastbp.Network(sizes, dtype=dtype, seed=5, init=init)
    assert not np.array_equal(flat(fast), flat(other))
    # the same seed gives the same run afterwards too (the generator is shared with fit)
    X, y = clf_data(n=20, n_in=7)
    fast.fit(X, y, epochs=2, batch_size=6, lr=0.1)
    ref.fit(X, y, epochs=2, batch_size=6, lr=0.1)
    assert_close(flat(fast), flat(ref), bound(dtype, 3, 12, 8), "after fit")


@pytest.mark.parametrize("init", INITS)
def test_init_distribution(init):
    fan_in, fan_out = 400, 300
    W = fastbp.Network([fan_in, fan_out], dtype=np.float64, seed=0, init=init).weights[0]
    fan = fan_in + fan_out if init.startswith("glorot") else fan_in
    if init.endswith("uniform"):
        r = math.sqrt(6.0 / fan)
        assert np.abs(W).max() <= r
        # 120,000 draws of U(-r, r): the extremes come within r/1000 of the bounds
        assert W.max() > 0.99 * r and W.min() < -0.99 * r
        std = r / math.sqrt(3.0)
    else:
        std = math.sqrt(2.0 / fan)
        assert np.abs(W).max() > 3 * std          # not a bounded distribution
    # the sample std of 120,000 draws has relative standard error 1/sqrt(2N) = 0.2%: 3%
    # is a > 10-sigma margin, tight enough to tell any two of the four schemes apart
    assert W.std() == pytest.approx(std, rel=0.03)
    assert abs(W.mean()) < 5 * std / math.sqrt(W.size)


def test_init_default_and_bad_names():
    sizes = [5, 8, 2]
    for cls in NETS:
        np.testing.assert_array_equal(flat(cls(sizes, seed=1)),
                                      flat(cls(sizes, seed=1, init="glorot_uniform")))
        assert cls(sizes, seed=1).init == "glorot_uniform"
        for bad in ("xavier", "he", "", None, 3):
            with pytest.raises(ValueError, match="init"):
                cls(sizes, seed=1, init=bad)
    # float32 and float64 draw the same values, then round
    a = fastbp.Network(sizes, seed=1, init="he_normal", dtype=np.float32)
    b = fastbp.Network(sizes, seed=1, init="he_normal", dtype=np.float64)
    np.testing.assert_array_equal(flat(a), flat(b).astype(np.float32))


# -- 7. bad input --------------------------------------------------------------------------

def _snapshot(net):
    return (flat(net).copy(), list(net.loss_curve_), net.history, net.optimizer_,
            net._rng.bit_generator.state)


def _assert_unchanged(net, snap):
    params, curve, history, opt, rng = snap
    np.testing.assert_array_equal(flat(net), params)
    assert net.loss_curve_ == curve
    assert net.history is history
    assert net.optimizer_ is opt
    assert net._rng.bit_generator.state == rng


X_BAD, Y_BAD = clf_data(n=20)
BAD_FIT = [
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(optimizer=3), TypeError, "optimizer"),
    (dict(optimizer=None), TypeError, "optimizer"),
    (dict(momentum=1.5), ValueError, "momentum"),     # [0, 1], 1 allowed as scikit-learn does
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(optimizer="adam", momentum=0.9), ValueError, "momentum"),
    (dict(optimizer="adam", beta1=1.0), ValueError, "beta1"),
    (dict(optimizer="adam", beta2=-0.5), ValueError, "beta2"),
    (dict(optimizer="adam", epsilon=0.0), ValueError, "epsilon"),
    (dict(l2=-1.0), ValueError, "l2"),
    (dict(l2=float("nan")), ValueError, "l2"),
    (dict(l2="0.1"), TypeError, "l2"),
    (dict(lr_schedule="invscale"), ValueError, "lr_schedule"),
    (dict(lr_schedule=None), ValueError, "lr_schedule"),
    (dict(power_t=-1.0), ValueError, "power_t"),
    (dict(validation_split=1.0), ValueError, "validation_split"),
    (dict(validation_split=-0.1), ValueError, "validation_split"),
    (dict(validation_split=0.99), ValueError, "validation_split"),     # no training rows
    (dict(validation_data=(X_BAD,)), TypeError, "validation_data"),
    (dict(validation_data="data"), TypeError, "validation_data"),
    (dict(validation_data=(X_BAD[:, :3], Y_BAD)), ValueError, "validation_data"),
    (dict(validation_data=(X_BAD, Y_BAD[:5])), ValueError, "validation_data"),
    (dict(validation_data=(X_BAD, Y_BAD + 5)), ValueError, "validation_data"),
    (dict(validation_data=(X_BAD, Y_BAD), validation_split=0.2), ValueError,
     "validation_data or validation_split"),
    (dict(patience=0), ValueError, "patience"),
    (dict(patience=1.5), TypeError, "patience"),
    (dict(min_delta=-1.0), ValueError, "min_delta"),
    (dict(early_stopping="yes"), TypeError, "early_stopping"),
    (dict(sample_weight=-np.ones(20)), ValueError, "sample_weight"),
    (dict(sample_weight=np.full(20, np.nan)), ValueError, "sample_weight"),
    (dict(sample_weight=np.ones(19)), ValueError, "sample_weight"),
    (dict(sample_weight=np.ones((20, 1))), ValueError, "sample_weight"),
    (dict(sample_weight=np.zeros(20)), ValueError, "weights are all zero"),
    (dict(sample_weight=np.array(["1"] * 20)), TypeError, "sample_weight"),
    (dict(class_weight={5: 2.0}), ValueError, "class_weight"),
    (dict(class_weight={-1: 2.0}), ValueError, "class_weight"),
    (dict(class_weight={0: -2.0}), ValueError, "class_weight"),
    (dict(class_weight="balance"), ValueError, "class_weight"),
    (dict(class_weight=[1.0, 2.0, 3.0]), TypeError, "class_weight"),
    (dict(class_weight={0: 0.0, 1: 0.0, 2: 0.0}), ValueError, "weights are all zero"),
    (dict(callbacks=[print, 3]), TypeError, "callbacks"),
    (dict(callbacks=5), TypeError, "callbacks"),
    (dict(verbose=-1), ValueError, "verbose"),
    (dict(optimizer=optim.SGD(lr=0.1), lr=0.1), ValueError, "optimizer"),
    (dict(optimizer=optim.SGD(lr=0.1), momentum=0.9), ValueError, "optimizer"),
    (dict(optimizer=optim.Adam(), l2=0.1), ValueError, "optimizer"),
    (dict(optimizer=optim.Adam(), beta1=0.5), ValueError, "optimizer"),
    (dict(lr=0.0), ValueError, "lr"),
]


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("kwargs,exc,match", BAD_FIT,
                         ids=[f"{i}-{'-'.join(k)}" for i, (k, _, _) in enumerate(BAD_FIT)])
def test_fit_rejects_bad_arguments(cls, kwargs, exc, match):
    net = cls([4, 5, 3], dtype=np.float64, seed=0)
    snap = _snapshot(net)
    with pytest.raises(exc, match=match):
        net.fit(X_BAD, Y_BAD, epochs=2, **kwargs)
    _assert_unchanged(net, snap)


@pytest.mark.parametrize("cls", NETS)
def test_class_weight_needs_cross_entropy_labels(cls):
    X, Y = make_data("mse", 20, 4, 3, np.float64)
    for loss, y in (("mse", Y), ("cross_entropy", np.full((20, 3), 1 / 3))):
        net = cls([4, 5, 3], loss=loss, dtype=np.float64, seed=0)
        snap = _snapshot(net)
        with pytest.raises(ValueError, match="class_weight"):
            net.fit(X, y, epochs=1, class_weight={0: 2.0})
        with pytest.raises(ValueError, match="class_weight"):
            net.train_epoch(X, y, optimizer=optim.SGD(), class_weight="balanced")
        _assert_unchanged(net, snap)


BAD_EPOCH = [
    (dict(order=np.array([0, 20])), ValueError, "order"),
    (dict(order=np.array([-1, 2])), ValueError, "order"),
    (dict(order=np.arange(20, dtype=np.float64)), TypeError, "order"),
    (dict(order=np.arange(20).reshape(4, 5)), TypeError, "order"),
    (dict(order=np.array([], dtype=np.int64)), ValueError, "order"),
    (dict(loss_scale=0.0), ValueError, "loss_scale"),
    (dict(loss_scale=-1.0), ValueError, "loss_scale"),
    (dict(loss_scale=float("inf")), ValueError, "loss_scale"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(sample_weight=np.ones(3)), ValueError, "sample_weight"),
    (dict(shuffle=1), TypeError, "shuffle"),
]


@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("kwargs,exc,match", BAD_EPOCH,
                         ids=[f"{i}-{'-'.join(k)}" for i, (k, _, _) in enumerate(BAD_EPOCH)])
def test_train_epoch_rejects_bad_arguments(cls, kwargs, exc, match):
    net = cls([4, 5, 3], dtype=np.float64, seed=0)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    snap = _snapshot(net)
    with pytest.raises(exc, match=match):
        net.train_epoch(X_BAD, Y_BAD, optimizer=opt, **kwargs)
    _assert_unchanged(net, snap)
    assert opt.t == 0 and opt.state == ()


@pytest.mark.parametrize("cls", NETS)
def test_train_epoch_needs_an_optimizer(cls):
    net = cls([4, 5, 3], dtype=np.float64, seed=0)
    snap = _snapshot(net)
    with pytest.raises(TypeError, match="optimizer"):
        net.train_epoch(X_BAD, Y_BAD)
    for bad in ("sgd", None, optim.SGD):
        with pytest.raises(TypeError, match="optimizer"):
            net.train_epoch(X_BAD, Y_BAD, optimizer=bad)
    _assert_unchanged(net, snap)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: optim.SGD(momentum=1.01), ValueError, "momentum"),
    (lambda: optim.SGD(momentum=-0.1), ValueError, "momentum"),
    (lambda: optim.SGD(nesterov=1), TypeError, "nesterov"),
    (lambda: optim.SGD(lr=0.0), ValueError, "lr"),
    (lambda: optim.SGD(lr=float("inf")), ValueError, "lr"),
    (lambda: optim.SGD(l2=-1.0), ValueError, "l2"),
    (lambda: optim.SGD(l2_per_sample="yes"), TypeError, "l2_per_sample"),
    (lambda: optim.Adam(beta1=1.0), ValueError, "beta1"),
    (lambda: optim.Adam(beta2=1.0), ValueError, "beta2"),
    (lambda: optim.Adam(epsilon=0.0), ValueError, "epsilon"),
    (lambda: optim.Adam(lr=True), TypeError, "lr"),
])
def test_optimizer_constructor_checks(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_momentum_one_is_allowed():
    assert optim.SGD(momentum=1.0).momentum == 1.0      # scikit-learn's range is [0, 1]


def test_optimizer_lr_assignment_is_checked():
    opt = optim.SGD(lr=0.1)
    for bad, exc in ((0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                     ("0.1", TypeError)):
        with pytest.raises(exc, match="lr"):
            opt.lr = bad
    assert opt.lr == 0.1
    # finite in float64 but not in float32: rejected by the float32 network, unchanged
    opt.lr = 1e39
    net = fastbp.Network([4, 5, 3], dtype=np.float32, seed=0)
    snap = _snapshot(net)
    with pytest.raises(ValueError, match="lr"):
        net.fit(X_BAD, Y_BAD, epochs=1, optimizer=opt)
    _assert_unchanged(net, snap)
    with pytest.raises(ValueError, match="lr"):
        net.train_epoch(X_BAD, Y_BAD, optimizer=opt)        # shuffle=True by default
    _assert_unchanged(net, snap)                             # generator not advanced


# -- 8. pickle -------------------------------------------------------------------------

@pytest.mark.parametrize("cls", NETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pickle_round_trip_and_continued_training(cls, dtype):
    X, y = clf_data(n=30, dtype=dtype)
    net = cls([4, 7, 3], activation="tanh", dtype=dtype, seed=0)
    net.fit(X, y, epochs=2, batch_size=8, optimizer="adam", lr=0.01, validation_split=0.2)
    copy = pickle.loads(pickle.dumps(net))
    assert type(copy) is cls
    for a, b in zip(net.weights + net.biases, copy.weights + copy.biases):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(net.forward(X), copy.forward(X))
    assert copy.loss_curve_ == net.loss_curve_ and copy.history == net.history
    # continued training, shuffled by the pickled generator: identical
    for m in (net, copy):
        m.fit(X, y, epochs=2, batch_size=8, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(flat(net), flat(copy))
    assert copy.loss_curve_ == net.loss_curve_
    # a pickled optimizer continues its state with the pickled network
    opt = net.optimizer_
    net2, opt2 = pickle.loads(pickle.dumps((net, opt)))
    assert opt2.t == opt.t
    for m, o in ((net, opt), (net2, opt2)):
        m.train_epoch(X, y, optimizer=o, batch_size=8)
    np.testing.assert_array_equal(flat(net), flat(net2))
    for a, b in zip(opt.state, opt2.state):
        np.testing.assert_array_equal(a, b)
    # the copy's parameters are its own
    copy.weights[0][...] = 0
    assert np.abs(net.weights[0]).max() > 0


def test_pickled_network_weights_are_views_of_its_buffer():
    net = fastbp.Network([4, 5, 3], seed=0)
    copy = pickle.loads(pickle.dumps(net))
    copy.weights[0][0, 0] = 123.0
    assert copy._params[0] == 123.0
    X, y = clf_data(n=10, dtype=np.float32)
    copy.train_step(X, y, lr=0.1)            # trains through the views' buffer
    assert copy.weights[0][0, 0] != 123.0
