"""The training engine of row parts (src/_plan.pxd, src/_passes.pxd, src/_network.pyx):
a step cuts its batch into P parts of consecutive rows, P from the batch capacity and the
network only (fastbp._network.parts_of); threads take whole parts, each part's gradients
go into a buffer of its own and are summed in part order; a network of more than 65,536
parameters is one part whose products share output tiles among the threads instead.

What that design promises, and what is checked here:

1. the same bits for every thread count: parameters, loss history and optimizer state
   after fit, for networks in several parts (ragged last batches) and in one part, both
   dtypes, every SIMD target, every optimizer, hidden activation and loss;
2. the parts count depends on the capacity and the network only; a batch computed in
   parts has the reference's gradients (to rounding), and train_step is its gradient
   then fl(p - fl(lr * g)) bit for bit;
3. a step that diverges mid-epoch leaves exactly the parameters of the last finite step,
   whatever the thread count;
4. a child forked after threaded training trains on one thread instead of hanging;
5. Python threads: networks trained at the same time equal the same fits in turn, and a
   copy or pickle taken during a fit waits for it;
6. n_threads is checked at construction.

Thread counts go up to 16 whatever the machine has: more threads than cores must still
give the same bits (and must not deadlock). Whatever runs the same compiled code is
compared bit for bit (the bytes of the arrays, so that -0.0 and 0.0 differ too).
"""

import copy
import importlib.util
import json
import multiprocessing
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastbp
from fastbp import _network, optim, reference
from fastbp._runtime import build_info


def _sibling(name):
    """The test module `name` of this directory, loaded once by its path: tests/ is not a
    package and pytest's importlib mode keeps it off sys.path, so test modules cannot
    import each other by name, here or where the suite runs outside the source tree."""
    key = f"_fastbp_engine_helpers_{name}"
    module = sys.modules.get(key)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            key, pathlib.Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return module


_training_tests = _sibling("test_training")
make_data = _training_tests.make_data     # (X, y) for ce_labels, ce_probs, bce, mse
flat = _training_tests.flat               # parameters in the parameter buffer's layout
LOSS_OF = _training_tests.LOSS_OF
_assert_step_is_gradient_then_update = \
    _sibling("test_dispatch")._assert_step_is_gradient_then_update

OPENMP = build_info()["openmp"]
@pytest.fixture(autouse=True)
def _threads_beyond_the_cores(monkeypatch):
    """fastbp caps n_threads at the usable cores; these tests force counts above them
    (up to 16 on a 2-core machine) to show the bits do not depend on the count."""
    from fastbp import _validation
    monkeypatch.setattr(_validation, "cpu_count", lambda: 64)


DTYPES = [np.float32, np.float64]
THREADS = (1, 2, 3, 4, 8, 16)
MAX_PARAMS_IN_PARTS = 1 << 16      # _plan.pxd's PARTS_MAX_PARAMS


def n_params(sizes):
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def parts_of(sizes, capacity):
    return _network.parts_of(np.array(sizes, dtype=np.intp), capacity)


def assert_same_bits(a, b, what):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert (a.dtype, a.shape) == (b.dtype, b.shape), \
        f"{what}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
    if a.tobytes() != b.tobytes():
        differ = a.view(f"u{a.itemsize}") != b.view(f"u{b.itemsize}")
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))
        pytest.fail(f"{what}: {int(differ.sum())} of {a.size} values differ in their bits "
                    f"(max |difference| {err:.3e})")


def assert_same_optimizer(opt, ref, what):
    assert opt.t == ref.t, f"{what}: optimizer steps {opt.t} != {ref.t}"
    assert len(opt.state) == len(ref.state), what
    for i, (a, b) in enumerate(zip(opt.state, ref.state)):
        assert_same_bits(a, b, f"{what}: optimizer state[{i}]")


# -- 1. the same bits for every thread count --------------------------------------------------

# Networks trained in several parts, and in one. [64, 128, 64, n] at capacity 256 is 4 parts
# of 64 rows; 549 rows end each epoch with a batch of 37 (parts of 10, 10, 10 and 7) and
# 515 rows with one of 3 (three parts of one row, the fourth empty). [300, 256, n] has over
# 65,536 parameters: one part, whose products at batches of 96 rows are shared by up to 7
# threads (GEMM_MACS_PER_THREAD), and 200 rows end with a batch of 8.
ENGINE_NETS = {
    "parts": dict(sizes=lambda n_out: [64, 128, 64, n_out], n_out=5, batch=256,
                  epochs=3),
    "one_part": dict(sizes=lambda n_out: [300, 256, n_out], n_out=10, batch=96, n=200,
                     epochs=2),
}

# (learning rates for which 300 inputs and the squared error do not diverge)
ENGINE_OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.02),
    "sgd_l2": lambda: optim.SGD(lr=0.02, l2=1e-3),
    "momentum_l2": lambda: optim.SGD(lr=0.005, momentum=0.9, l2=1e-3),
    "nesterov": lambda: optim.SGD(lr=0.005, momentum=0.9, nesterov=True),
    "nesterov_l2": lambda: optim.SGD(lr=0.005, momentum=0.9, nesterov=True, l2=1e-2,
                                     l2_per_sample=True),
    "adam": lambda: optim.Adam(lr=1e-3),
    "adam_l2": lambda: optim.Adam(lr=1e-3, l2=1e-3, l2_per_sample=True),
}

# (hidden activation, loss, optimizer, row weights, rows of the parts network): the axes
# combined rather than multiplied; each activation, loss, optimizer appears, with and
# without sample weights, and both short last batches. mse has one output.
ENGINE_CASES = [
    ("identity", "ce_labels", "sgd", False, 549),
    ("relu", "ce_probs", "momentum_l2", True, 515),
    ("leaky_relu", "bce", "nesterov", False, 549),
    ("sigmoid", "mse", "adam_l2", True, 549),
    ("tanh", "ce_labels", "adam", True, 515),
    ("gelu", "bce", "sgd_l2", True, 549),
    ("relu", "mse", "sgd", True, 515),
    ("gelu", "ce_labels", "nesterov_l2", False, 549),
]


def _engine_fit(kind, case, dtype, n_threads, data):
    activation, loss, opt_name, _, _ = case
    spec = ENGINE_NETS[kind]
    X, y, w = data
    sizes = spec["sizes"](1 if loss == "mse" else spec["n_out"])
    net = fastbp.Network(sizes, activation=activation, loss=LOSS_OF[loss], dtype=dtype,
                         seed=7, n_threads=n_threads)
    assert net.n_threads == (n_threads if OPENMP else 1)
    opt = ENGINE_OPTIMIZERS[opt_name]()
    net.fit(X, y, epochs=spec["epochs"], batch_size=spec["batch"], optimizer=opt,
            sample_weight=w)
    return net, opt


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(ENGINE_NETS))
@pytest.mark.parametrize("case", ENGINE_CASES,
                         ids=["-".join(map(str, c[:3])) + ("-weighted" if c[3] else "")
                              for c in ENGINE_CASES])
def test_fit_is_bit_identical_for_every_thread_count(target, case, kind, dtype):
    activation, loss, opt_name, weighted, parts_rows = case
    spec = ENGINE_NETS[kind]
    n_out = 1 if loss == "mse" else spec["n_out"]
    sizes = spec["sizes"](n_out)
    n = spec.get("n", parts_rows)
    # the network is trained the way this test is about
    if kind == "parts":
        assert n_params(sizes) <= MAX_PARAMS_IN_PARTS and parts_of(sizes, spec["batch"]) == 4
    else:
        assert n_params(sizes) > MAX_PARAMS_IN_PARTS and parts_of(sizes, spec["batch"]) == 1
    assert n % spec["batch"] != 0
    X, y = make_data(loss, n, sizes[0], n_out, dtype, seed=len(activation))
    w = None
    if weighted:
        w = np.random.default_rng(5).random(n)
        w[::7] = 0       # rows that weigh nothing, in every part
    base_net, base_opt = _engine_fit(kind, case, dtype, 1, (X, y, w))
    start = fastbp.Network(sizes, activation=activation, loss=LOSS_OF[loss], dtype=dtype,
                           seed=7)
    assert not np.array_equal(flat(base_net), flat(start)), "nothing was trained"
    assert len(base_net.loss_curve_) == spec["epochs"]
    assert base_opt.t == spec["epochs"] * -(-n // spec["batch"])
    for nt in THREADS[1:]:
        net, opt = _engine_fit(kind, case, dtype, nt, (X, y, w))
        what = f"n_threads={nt}"
        assert_same_bits(flat(net), flat(base_net), f"{what}: parameters")
        assert net.loss_curve_ == base_net.loss_curve_, f"{what}: loss_curve_"
        assert net.history["loss"] == base_net.history["loss"], f"{what}: history"
        assert_same_optimizer(opt, base_opt, what)


# -- 2. the parts of a batch -----------------------------------------------------------------

# Networks of at most 65,536 parameters ([255, 255, 1]: exactly that many), and of more
PARTS_NETS = [[64, 128, 64, 5], [64, 128, 64, 1], [64, 128, 64, 10], [784, 64, 10],
              [255, 255, 1]]
ONE_PART_NETS = [[300, 256, 10], [300, 256, 1], [256, 255, 1], [784, 128, 10]]
CAPACITIES = [1, 7, 31, 32, 64, 96, 200, 203, 1000, 4096]


def test_parts_count_depends_on_the_capacity_and_the_network_only():
    for sizes in PARTS_NETS:
        assert n_params(sizes) <= MAX_PARAMS_IN_PARTS
        assert 1 < parts_of(sizes, 256) <= 16, sizes
        for capacity in CAPACITIES:
            # at most 16 parts, and parts of at least 64 rows (blocking.h's PART_MIN_ROWS)
            assert 1 <= parts_of(sizes, capacity) <= max(1, min(16, capacity // 64))
    for sizes in ONE_PART_NETS:
        assert n_params(sizes) > MAX_PARAMS_IN_PARTS
        for capacity in CAPACITIES:
            assert parts_of(sizes, capacity) == 1, (sizes, capacity)
    # the plan a fit uses (the Trainer, built for a thread count) has the same parts for
    # every thread count, and a plan in parts the same workspace
    for sizes, capacity in [([64, 128, 64, 5], 256), ([64, 128, 64, 5], 259),
                            ([64, 128, 64, 10], 1000), ([300, 256, 10], 96)]:
        net = fastbp.Network(sizes, seed=0)
        parts = parts_of(sizes, capacity)
        works = set()
        for nt in THREADS:
            trainer = _network.Trainer(net._params, net._grads, (), net._sizes, net._acts,
                                       net._loss_code, capacity, nt)
            assert trainer.parts == parts, (sizes, capacity, nt)
            works.add(_network.work_size(net._sizes, net._acts, capacity, True, True, nt))
        if parts > 1:
            assert len(works) == 1, (sizes, works)


# (hidden activation, layer sizes) per loss; B = 259 rows are 4 parts of 65, 65, 65, 64
GRADIENT_CASES = {
    "ce_labels": ("relu", [64, 128, 64, 5]),
    "ce_probs": ("gelu", [64, 128, 64, 5]),
    "bce": ("tanh", [64, 128, 64, 5]),
    "mse": ("sigmoid", [64, 128, 64, 1]),
}
GRADIENT_ROWS = 259


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("loss", list(GRADIENT_CASES))
def test_gradients_in_parts_match_the_reference(target, loss, dtype):
    activation, sizes = GRADIENT_CASES[loss]
    B = GRADIENT_ROWS
    assert parts_of(sizes, B) == 4
    X, y = make_data(loss, B, sizes[0], sizes[-1], dtype, seed=3)
    ref = reference.Network(sizes, activation=activation, loss=LOSS_OF[loss], dtype=dtype,
                            seed=2)
    dW_ref, db_ref = ref.gradients(X, y)
    grads = {}
    for nt in THREADS:
        net = fastbp.Network(sizes, activation=activation, loss=LOSS_OF[loss], dtype=dtype,
                             seed=2, n_threads=nt)
        grads[nt] = net.gradients(X, y)
    dW, db = grads[1]
    for nt in THREADS[1:]:
        for l in range(len(dW)):
            assert_same_bits(grads[nt][0][l], dW[l], f"n_threads={nt}: dW[{l}]")
            assert_same_bits(grads[nt][1][l], db[l], f"n_threads={nt}: db[{l}]")
    # Tolerance. Each gradient element is a sum over the B rows (the longest reduction
    # here; the forward and backward products sum over at most max(sizes) terms) of
    # products whose factors carry the rounding of L layers. A sum of R terms is within
    # gamma_R ~ R * eps of the exact one relative to the sum of the terms' sizes
    # (Higham), and fastbp (part sums of ~50 rows, added in part order) and NumPy's BLAS
    # add in different orders, so they may differ by twice that; the L layers' errors
    # add. With a factor 2 for the transcendental activations' few-ulp differences:
    #     |fast - ref| <= 4 * L * max(B, max(sizes)) * eps * scale,
    # scale the layer's largest gradient (at least 1e-3): 3e-4 relative in float32,
    # 5e-13 in float64, where a few eps is typical.
    L = len(sizes) - 1
    tol = 4 * L * max(B, max(sizes)) * np.finfo(dtype).eps
    for l in range(L):
        scale = max(np.abs(dW_ref[l]).max(), np.abs(db_ref[l]).max(), 1e-3)
        for name, got, want in (("dW", dW[l], dW_ref[l]), ("db", db[l], db_ref[l])):
            assert got.dtype == want.dtype and got.shape == want.shape
            err = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))
            assert err <= tol * scale, f"{name}[{l}]: {err:.3e} > {tol * scale:.3e}"


@pytest.mark.parametrize("n_threads", [1, 3, 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_train_step_in_parts_is_gradient_then_update(target, dtype, n_threads):
    rng = np.random.default_rng(9)
    for sizes, B in (([64, 128, 64, 5], 259), ([64, 128, 64, 5], 256),
                     ([64, 128, 64, 10], 250)):
        assert parts_of(sizes, B) > 1
        X = rng.standard_normal((B, sizes[0])).astype(dtype)
        y = rng.integers(0, sizes[-1], B)
        net = fastbp.Network(sizes, activation="tanh", dtype=dtype, seed=3,
                             n_threads=n_threads)
        for step in range(2):
            _assert_step_is_gradient_then_update(net, X, y, 0.37, dtype,
                                                 f"{sizes} B={B} step {step}")


# -- 3. divergence mid-epoch, in parts -------------------------------------------------------

DIV_SIZES, DIV_B, DIV_N = [64, 128, 64, 5], 256, 4 * 256 + 37

# (dtype, optimizer, quiet rows, size of the loud rows, what fit says). Batches 1 and 2
# are quiet, batch 3 loud. With zero quiet rows and lr 1e36 (1e300 in float64) a step
# moves only the output biases (relu'(0) = 0), by up to lr: finite. The loud rows
# (inputs ~1e5, ~1e10) give weight gradients of about that size, whose step overflows,
# while the loss (logits ~lr) stays finite: batch 3's step makes a parameter non-finite
# and is undone by the replay. Adam's step is bounded by lr, so there the loud rows
# (~1e24) overflow the second moment g**2 instead. "loss": ordinary rows and one row of
# 3e38 in batch 3's third part, whose forward pass overflows: batch 3's loss is not
# finite and its step is never taken, not even by the parts that finished first.
DIVERGE = {
    "sgd": (np.float32, lambda: optim.SGD(lr=1e36), "zeros", 1e5, "non-finite at batch 3"),
    "nesterov": (np.float32, lambda: optim.SGD(lr=1e36, momentum=0.9, nesterov=True),
                 "zeros", 1e5, "non-finite at batch 3"),
    "adam": (np.float32, lambda: optim.Adam(lr=0.01, l2=1e-3), "normal", 1e24,
             "non-finite at batch 3"),
    "sgd_f64": (np.float64, lambda: optim.SGD(lr=1e300, momentum=0.5), "zeros", 1e10,
                "non-finite at batch 3"),
    "loss": (np.float32, lambda: optim.Adam(lr=1e-3, l2=1e-3), "normal", None,
             "loss is not finite at batch 3"),
}


def _diverging_data(dtype, quiet, loud):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((DIV_N, DIV_SIZES[0]))
    if quiet == "zeros":
        X[:2 * DIV_B] = 0
    if loud is None:
        X[2 * DIV_B + 130] = 3e38          # part 130 // 50 = 2 of batch 3
    else:
        X[2 * DIV_B:3 * DIV_B] = rng.uniform(0.5, 1.0, (DIV_B, DIV_SIZES[0])) * loud
    return X.astype(dtype), rng.integers(0, DIV_SIZES[-1], DIV_N)


@pytest.mark.parametrize("case", list(DIVERGE))
def test_divergence_in_parts_keeps_the_last_finite_step(case):
    dtype, make_opt, quiet, loud, message = DIVERGE[case]
    X, y = _diverging_data(dtype, quiet, loud)
    assert parts_of(DIV_SIZES, DIV_B) == 4
    assert issubclass(fastbp.DivergedError, ValueError)
    # what the network must hold: the first two batches' steps, the same compiled steps
    good = fastbp.Network(DIV_SIZES, dtype=dtype, seed=1, n_threads=1)
    opt_good = make_opt()
    good.train_epoch(X, y, optimizer=opt_good, batch_size=DIV_B,
                     order=np.arange(2 * DIV_B))
    assert opt_good.t == 2 and np.isfinite(flat(good)).all()
    assert not np.array_equal(flat(good), flat(fastbp.Network(DIV_SIZES, dtype=dtype,
                                                               seed=1)))
    for nt in (1, 4):
        net = fastbp.Network(DIV_SIZES, dtype=dtype, seed=1, n_threads=nt)
        opt = make_opt()
        with pytest.raises(fastbp.DivergedError, match=message):
            net.fit(X, y, epochs=2, batch_size=DIV_B, shuffle=False, optimizer=opt)
        assert net.optimizer_ is opt and net.loss_curve_ == []
        assert_same_bits(flat(net), flat(good), f"n_threads={nt}: parameters")
        assert_same_optimizer(opt, opt_good, f"n_threads={nt}")


# -- 4. fork ----------------------------------------------------------------------------------

# A parent forks a child before it trains on two threads, trains, and forks another. Each
# child trains and predicts with n_threads=2 and sends back the thread count it got and
# its results. libgomp cannot run a parallel region in a child forked after the parent
# ran one (it waits forever for worker threads the child does not have), so the second
# child must run on one thread (fastbp/_validation.py); the first keeps its two.
FORK_SCRIPT = r"""
import json, multiprocessing as mp, sys
import numpy as np
import fastbp

def train(n_threads):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((549, 64)).astype(np.float32)
    y = rng.integers(0, 5, 549)
    net = fastbp.Network([64, 128, 64, 5], seed=1, n_threads=n_threads)  # 2 parts at 200
    threads = net.n_threads
    net.fit(X, y, epochs=2, batch_size=200, lr=0.1)
    return [threads, net._params.tobytes().hex(), net.predict(X).tobytes().hex(),
            net.forward(X).tobytes().hex(), fastbp.Network([2, 2], n_threads=-1).n_threads]

def child(send):
    try:
        send.send(("ok", train(2)))
    except BaseException as exc:
        send.send(("error", repr(exc)))
    finally:
        send.close()

def forked():
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child, args=(send,))
    proc.start()
    send.close()
    if not receive.poll(60):
        proc.kill()
        proc.join()
        sys.exit("the forked child did not answer within 60 s: it hangs")
    status, result = receive.recv()
    proc.join(60)
    if status != "ok":
        sys.exit("the forked child failed: " + result)
    return result

before = forked()
mine = train(2)
after = forked()
print(json.dumps({"threads": [before[0], mine[0], after[0]],
                  "all_cores_in_child_after": after[4],
                  "same": [before[1:4] == mine[1:4], after[1:4] == mine[1:4]]}))
"""


def test_child_forked_after_threaded_training_trains_on_one_thread(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    package_root = str(pathlib.Path(fastbp.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env.get("PYTHONPATH")) if p)
    # cwd outside the source tree, whose fastbp/ may have no compiled modules
    r = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["threads"] == ([2, 2, 1] if OPENMP else [1, 1, 1])
    assert out["all_cores_in_child_after"] == 1
    assert out["same"] == [True, True], "a child's training differs from the parent's"


# -- 5. Python threads ----------------------------------------------------------------------

def _thread_jobs():
    """Two networks (in parts, in one part) with their data and optimizers."""
    rng = np.random.default_rng(21)
    Xa = rng.standard_normal((549, 64)).astype(np.float32)
    ya = rng.integers(0, 5, 549)
    Xb = rng.standard_normal((200, 300)).astype(np.float32)
    yb = rng.integers(0, 10, 200)
    return [
        (fastbp.Network([64, 128, 64, 5], seed=1, n_threads=2), optim.Adam(lr=1e-3),
         Xa, ya, 200),
        (fastbp.Network([300, 256, 10], activation="tanh", seed=2, n_threads=2),
         optim.SGD(lr=0.05, momentum=0.9), Xb, yb, 96),
    ]


ROUNDS = 3


def test_networks_trained_in_two_python_threads_equal_fits_in_turn():
    serial = _thread_jobs()
    for _ in range(ROUNDS):
        for net, opt, X, y, batch in serial:
            net.fit(X, y, epochs=2, batch_size=batch, optimizer=opt)
    jobs = _thread_jobs()
    errors = []
    barrier = threading.Barrier(len(jobs))

    def train(net, opt, X, y, batch):
        try:
            for _ in range(ROUNDS):
                barrier.wait(timeout=60)   # each round's fits start together
                net.fit(X, y, epochs=2, batch_size=batch, optimizer=opt)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=train, args=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a training thread hangs"
    assert errors == []
    for (net, opt, *_), (s_net, s_opt, *_) in zip(jobs, serial):
        assert_same_bits(flat(net), flat(s_net), f"{net.layer_sizes}: parameters")
        assert net.loss_curve_ == s_net.loss_curve_
        assert_same_optimizer(opt, s_opt, f"{net.layer_sizes}")


SNAPSHOTS = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda net: pickle.loads(pickle.dumps(net)),
    "copy": copy.copy,
}


@pytest.mark.parametrize("how", list(SNAPSHOTS))
def test_snapshot_from_another_thread_during_fit_waits_for_the_fit(how):
    # fit holds the network's lock for the whole call, and pickling and copies take it:
    # a snapshot asked for during the fit (after its first epoch) completes only after
    # fit's last epoch, with the final parameters, never those of a step in between
    rng = np.random.default_rng(22)
    X = rng.standard_normal((549, 64)).astype(np.float32)
    y = rng.integers(0, 5, 549)
    net = fastbp.Network([64, 128, 64, 5], seed=1, n_threads=2)
    epochs = 8
    seen = []                         # epochs whose callback ran (inside fit, locked)
    first_epoch, asking = threading.Event(), threading.Event()
    after_first = []
    result = {}

    def callback(net_, epoch, logs):
        seen.append(epoch)
        if epoch == 1:
            after_first.append(net_._params.copy())
            first_epoch.set()
            assert asking.wait(30), "the snapshot thread did not start"
            time.sleep(0.05)          # let it reach the lock while the fit holds it

    def snapshot():
        first_epoch.wait(30)
        asking.set()
        clone = SNAPSHOTS[how](net)
        result["epochs_seen"] = len(seen)
        result["clone"] = clone

    t = threading.Thread(target=snapshot, daemon=True)
    t.start()
    net.fit(X, y, epochs=epochs, batch_size=200, lr=0.1, callbacks=callback)
    t.join(timeout=60)
    assert not t.is_alive(), "the snapshot never completed"
    assert seen == list(range(1, epochs + 1))
    assert result["epochs_seen"] == epochs, "the snapshot completed during the fit"
    clone = result["clone"]
    assert not np.array_equal(after_first[0], flat(net))
    assert_same_bits(flat(clone), flat(net), f"{how}: parameters")
    assert clone.loss_curve_ == net.loss_curve_


# -- 6. n_threads ----------------------------------------------------------------------------

@pytest.mark.parametrize("n_threads", [2**31, -(2**31), 2**31 - 1, np.int64(2**31),
                                       2**16 + 1])
@pytest.mark.parametrize("cls", [fastbp.Network, reference.Network])
def test_n_threads_beyond_a_c_int_is_a_value_error_at_construction(cls, n_threads):
    with pytest.raises(ValueError, match="n_threads"):
        cls([4, 3, 2], n_threads=n_threads)
