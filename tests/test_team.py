"""The epoch run by a team of threads (src/team.h, _team.pxd, train_epoch's parallel region)
against the serial epoch, its slow twin: with n_threads=1 train_epoch runs the plain loop,
one product after the other; with 2 or more every product, loss row, bias column and
optimizer chunk is shared out among the threads. The SPEC promises the same bits for
every thread count, so every comparison here is exact: parameters, optimizer state,
loss values and step counts.

Shapes cover the paths of gemm_team: layers of 1, 7 and 33 units (narrow products, one
column panel cut into row chunks), batches that are not a multiple of the tile height
(the last, partial row panel), products whose B is shared by the team (team_shares_b) and
ones too large for that (column panels handed out dynamically), and batches tall enough
for several GEMM row blocks. Three threads on a two-core machine check that a team larger
than the machine still agrees (and does not deadlock).
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp
from fastbp import optim

DTYPES = [np.float32, np.float64]
THREADS = [2, 3]


@pytest.fixture(autouse=True)
def team_for_any_size():
    # train_epoch forms a team only for steps of enough work (TEAM_MIN_MACS_PER_THREAD)
    # and leaves it for one thread when the machine is busy (TEAM_MAX_YIELDING); these
    # tests make it form one for every size, down to one-unit layers, whatever the load,
    # and for every epoch (no timed choice of one thread, fastbp/_team_choice.py)
    from fastbp import _network, _team_choice
    previous = _network.set_team_policy(0, float("inf"))
    enabled = _team_choice.ENABLED
    _team_choice.ENABLED = False
    yield
    _team_choice.ENABLED = enabled
    _network.set_team_policy(*previous)


def _targets_for(loss, rng, n, n_out, dtype):
    if loss == "cross_entropy":
        return rng.integers(0, n_out, n)
    if loss == "binary_cross_entropy":
        return (rng.random((n, n_out)) > 0.5).astype(dtype)
    return rng.standard_normal((n, n_out)).astype(dtype)


OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.05),                                  # fused into dW
    "sgd_l2": lambda: optim.SGD(lr=0.05, l2=1e-3),                      # not fused
    "momentum": lambda: optim.SGD(lr=0.05, momentum=0.9),
    "nesterov": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, l2=1e-3),
    "adam": lambda: optim.Adam(lr=1e-3, l2=1e-4, l2_per_sample=True),
}


def _run(sizes, activation, loss, dtype, n_threads, opt_name, X, y, batch_size, epochs=2,
         sample_weight=None, order=None):
    # order None: a permutation per epoch; else the same order every epoch
    net = fastbp.Network(sizes, activation=activation, loss=loss, dtype=dtype, seed=3,
                         n_threads=n_threads)
    opt = OPTIMIZERS[opt_name]()
    n = X.shape[0]
    stats = []
    for e in range(epochs):
        s = net.train_epoch(X, y, optimizer=opt, batch_size=batch_size,
                            order=np.random.default_rng(e).permutation(n) if order is None
                            else order,
                            sample_weight=sample_weight)
        stats.append((s.loss, s.data_loss, s.penalty, s.n_samples))
    return net, opt, stats


def _assert_same(a, b):
    net_a, opt_a, stats_a = a
    net_b, opt_b, stats_b = b
    for x, y in zip(net_a.weights + net_a.biases, net_b.weights + net_b.biases):
        np.testing.assert_array_equal(x, y)
    assert stats_a == stats_b
    assert opt_a.t == opt_b.t
    for x, y in zip(opt_a.state, opt_b.state):
        np.testing.assert_array_equal(x, y)


def _require_threads():
    if fastbp.Network([2, 2], n_threads=2).n_threads < 2:
        pytest.skip("built without OpenMP: no team to compare")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,activation,loss,n,batch", [
    ([64, 128, 64, 10], "relu", "cross_entropy", 403, 200),        # digits-like
    ([30, 128, 64, 1], "relu", "binary_cross_entropy", 301, 200),  # one output unit
    ([10, 33, 7, 1], "leaky_relu", "mse", 97, 33),                 # odd widths
    ([1, 7, 1], "tanh", "mse", 13, 5),                             # the smallest
    ([33, 33, 33, 33], "gelu", "cross_entropy", 70, 7),           # batches of 7
    ([7, 40, 5], "sigmoid", "binary_cross_entropy", 50, 1),       # one-row batches
    ([5, 300, 1], "relu", "mse", 61, 20),     # one output of 300 inputs: the threads'
                                              # shares cross the 256-weight chunks
    ([2, 1], "relu", "binary_cross_entropy", 29, 9),   # fewer inputs than threads
])
def test_team_epoch_equals_serial_epoch(target, dtype, sizes, activation, loss, n, batch):
    _require_threads()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = _targets_for(loss, rng, n, sizes[-1], dtype)
    for opt_name in OPTIMIZERS:
        serial = _run(sizes, activation, loss, dtype, 1, opt_name, X, y, batch)
        for nt in THREADS:
            _assert_same(serial, _run(sizes, activation, loss, dtype, nt, opt_name, X, y,
                                      batch))


@pytest.mark.parametrize("dtype", DTYPES)
def test_team_epoch_with_row_weights_equals_serial(target, dtype):
    _require_threads()
    rng = np.random.default_rng(2)
    X = rng.standard_normal((150, 20)).astype(dtype)
    y = rng.integers(0, 3, 150)
    w = rng.random(150).astype(dtype)
    w[:40] = 0    # the first batch of the first epoch may weigh nothing
    for opt_name in ("sgd", "adam"):
        serial = _run([20, 17, 3], "relu", "cross_entropy", dtype, 1, opt_name, X, y, 40,
                      sample_weight=w)
        _assert_same(serial, _run([20, 17, 3], "relu", "cross_entropy", dtype, 2, opt_name,
                                  X, y, 40, sample_weight=w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_team_epoch_in_halves_with_row_weights_equals_serial(target, dtype, opt_name):
    # Batches of 65 in halves of 33 and 32 rows, one thread each: a first batch whose
    # first half weighs nothing, a second batch that weighs nothing at all (no gradient;
    # the penalty only), 131 = 2 * 65 + 1 ending with a one-row batch (not halved), and
    # a one-unit hidden layer beside a wider one (the dZ rows of the two halves must not
    # overlap whatever the layers' widths)
    _require_threads()
    rng = np.random.default_rng(7)
    X = rng.standard_normal((131, 9)).astype(dtype)
    y = rng.integers(0, 5, 131)
    w = rng.random(131).astype(dtype)
    w[:33] = 0
    w[65:130] = 0
    for sizes in ([9, 40, 1, 5], [9, 3, 60, 5]):
        serial = _run(sizes, "tanh", "cross_entropy", dtype, 1, opt_name, X, y, 65,
                      sample_weight=w, order=np.arange(131))
        for nt in THREADS:
            _assert_same(serial, _run(sizes, "tanh", "cross_entropy", dtype, nt, opt_name,
                                      X, y, 65, sample_weight=w, order=np.arange(131)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_team_halves_of_a_deep_network_equal_serial(target, dtype):
    # Batches in halves through six layers, two of them of more than one optimizer chunk
    # (UPDATE_CHUNK = 4096 weights): the thread that finishes its half first steps the
    # upper layers' chunks while the other half computes the lower layers' gradients
    # (update_halves hands chunks out from the last layer down and waits per layer), so
    # a chunk stepped before the other half was done with its layer, stepped twice, or
    # skipped would show here; 130 rows end with a two-row batch (halves of one row).
    _require_threads()
    sizes = [12, 100, 50, 90, 7, 30, 4]       # 5000 and 4500 weights: two chunks each
    rng = np.random.default_rng(8)
    X = rng.standard_normal((130, 12)).astype(dtype)
    y = rng.integers(0, 4, 130)
    for opt_name in OPTIMIZERS:
        serial = _run(sizes, "relu", "cross_entropy", dtype, 1, opt_name, X, y, 64)
        for nt in THREADS:
            _assert_same(serial, _run(sizes, "relu", "cross_entropy", dtype, nt, opt_name,
                                      X, y, 64))


def test_team_halves_stop_at_a_non_finite_loss_like_the_serial_loop():
    # A row that overflows the forward pass in the third batch (of 64, in halves): the
    # loss of that batch is not finite, so neither loop takes its step; the second half's
    # thread must not have stepped any layer before it knew the whole batch's loss.
    _require_threads()
    rng = np.random.default_rng(9)
    X = rng.standard_normal((256, 8)).astype(np.float32)
    X[2 * 64 + 40] = 3e38        # in the second half of batch 3
    y = rng.standard_normal((256, 1)).astype(np.float32)
    results = []
    for nt in (1, 2):
        net = fastbp.Network([8, 32, 16, 1], loss="mse", dtype=np.float32, seed=0,
                             n_threads=nt)
        opt = optim.Adam(lr=1e-3)
        with pytest.raises(ValueError, match="diverged"):
            net.train_epoch(X, y, optimizer=opt, batch_size=64, shuffle=False)
        results.append((net, opt))
    (a, oa), (b, ob) = results
    assert oa.t == ob.t == 2
    for x, y_ in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y_)
    for x, y_ in zip(oa.state, ob.state):
        np.testing.assert_array_equal(x, y_)


def test_team_given_one_thread_computes_both_halves(tmp_path):
    # OMP_THREAD_LIMIT=1: the parallel region asked for two threads gets one, which must
    # then compute both halves of each batch itself (before it did, the second half's
    # gradients were never computed and training diverged at the first step)
    _require_threads()
    code = """if True:
        import numpy as np, fastbp
        from fastbp import optim, _network, _team_choice
        _network.set_team_policy(0, float("inf"))
        _team_choice.ENABLED = False
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 9)).astype(np.float32)
        y = rng.integers(0, 5, 300)
        params = []
        for nt in (1, 2):
            net = fastbp.Network([9, 40, 5], seed=0, n_threads=nt)
            assert net.n_threads == nt and _network.batch_parts(net._sizes, 100) == 2
            net.train_epoch(X, y, optimizer=optim.Adam(lr=0.01), batch_size=100,
                            shuffle=False)
            params.append(net._params.copy())
        assert np.array_equal(params[0], params[1])
        print("same")
    """
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "same"


def test_small_networks_train_in_halves():
    from fastbp import _network
    sizes = lambda *s: np.array(s, dtype=np.intp)
    assert _network.batch_parts(sizes(64, 128, 64, 10), 200) == 2     # 17,226 parameters
    assert _network.batch_parts(sizes(64, 128, 64, 10), 64) == 2
    assert _network.batch_parts(sizes(64, 128, 64, 10), 63) == 1      # halves too short
    assert _network.batch_parts(sizes(784, 128, 10), 200) == 1        # 101,770: too many
    assert _network.batch_parts(sizes(255, 255, 1), 64) == 2          # 65,536: the most
    assert _network.batch_parts(sizes(256, 255, 1), 64) == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_team_epoch_large_products_equal_serial(dtype):
    # W of 300 x 400 is too large for a B shared by the team (gemm_team hands out column
    # panels), and 900-row batches span several row blocks
    _require_threads()
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1000, 300)).astype(dtype)
    y = rng.integers(0, 40, 1000)
    for opt_name in ("sgd", "adam"):
        serial = _run([300, 400, 40], "relu", "cross_entropy", dtype, 1, opt_name, X, y,
                      900, epochs=1)
        _assert_same(serial, _run([300, 400, 40], "relu", "cross_entropy", dtype, 2,
                                  opt_name, X, y, 900, epochs=1))


@pytest.mark.parametrize("batch", [8, 64])   # 64: in halves, SGD not fused
def test_team_epoch_reports_divergence_like_the_serial_one(batch):
    # a learning rate that overflows float32 parameters within the epoch: both loops stop
    # at the same step and restore the same parameters
    _require_threads()
    rng = np.random.default_rng(4)
    X = (rng.standard_normal((8 * batch, 8)) * 1e3).astype(np.float32)
    y = (rng.standard_normal((8 * batch, 1)) * 1e6).astype(np.float32)
    results = []
    for nt in (1, 2):
        net = fastbp.Network([8, 16, 1], loss="mse", dtype=np.float32, seed=0, n_threads=nt)
        opt = optim.SGD(lr=1e3)
        with pytest.raises(ValueError, match="diverged"):
            net.train_epoch(X, y, optimizer=opt, batch_size=batch, shuffle=False)
        results.append((net, opt))
    (a, oa), (b, ob) = results
    for x, y_ in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y_)
        assert np.isfinite(x).all()
    assert oa.t == ob.t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,n,batch", [
    # rows enough for epochs well over the 50 ms the test needs: 6000 and 60000 took
    # 49 ms and about 50 on two threads in a fast spell of the 2-vCPU guest
    ([300, 400, 40], 12000, 50),       # products shared out
    ([64, 128, 64, 10], 120000, 200),  # batches in halves
])
def test_team_falling_back_to_one_thread_mid_epoch_equals_serial(dtype, sizes, n, batch):
    # With TEAM_MAX_YIELDING below zero every check finds the team too slow: at its first
    # check (after SIGNAL_CHECK_S = 20 ms of an epoch that lasts longer) the team stops
    # and the epoch goes on on one thread from that step; later epochs start on one
    # thread. The same bits as the serial epoch either way.
    _require_threads()
    from fastbp import _network
    rng = np.random.default_rng(6)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    serial = _run(sizes, "relu", "cross_entropy", dtype, 1, "adam", X, y, batch, epochs=1)
    _network.set_team_policy(0, -1.0)
    assert not _network.team_fallback_active()
    t0 = time.perf_counter()
    team = _run(sizes, "relu", "cross_entropy", dtype, 2, "adam", X, y, batch, epochs=1)
    assert time.perf_counter() - t0 > 0.05     # long enough for a check mid-epoch
    assert _network.team_fallback_active()
    _assert_same(serial, team)
    # and an epoch that starts on one thread because of it
    _assert_same(_run(sizes, "relu", "cross_entropy", dtype, 1, "adam", X, y, batch,
                      epochs=2),
                 _run(sizes, "relu", "cross_entropy", dtype, 2, "adam", X, y, batch,
                      epochs=2))


def test_short_team_epochs_that_wait_too_long_block_the_team():
    # Epochs shorter than SIGNAL_CHECK_S are judged at their end, on the average share of
    # waiting over the recent epochs: with TEAM_MAX_YIELDING below zero any average is
    # too much, so after one team epoch the next ones run on one thread (the same bits)
    _require_threads()
    from fastbp import _network
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 9)).astype(np.float32)
    y = rng.integers(0, 5, 300)
    serial = _run([9, 40, 5], "relu", "cross_entropy", np.float32, 1, "adam", X, y, 100)
    _network.set_team_policy(0, -1.0)
    assert not _network.team_fallback_active()
    team = _run([9, 40, 5], "relu", "cross_entropy", np.float32, 2, "adam", X, y, 100)
    assert _network.team_fallback_active()
    _assert_same(serial, team)
    _network.set_team_policy(0, float("inf"))     # and clearing the policy clears it
    assert not _network.team_fallback_active()


def test_team_threshold_keeps_small_steps_serial():
    # 64-128-64-10 at batch 200 is 8.6M multiply-adds a step: up to 8 threads at 1Mi
    # each; 64-32-10 at batch 16 (81K) stays on one thread; batch 1 too
    from fastbp import _network
    _network.set_team_policy(1 << 20)
    sizes = lambda *s: np.array(s, dtype=np.intp)
    assert _network.team_size(sizes(64, 128, 64, 10), 200, 2) == 2
    assert _network.team_size(sizes(64, 128, 64, 10), 200, 16) == 8
    assert _network.team_size(sizes(10, 128, 64, 1), 200, 2) == 2
    assert _network.team_size(sizes(64, 32, 10), 16, 2) == 1
    assert _network.team_size(sizes(64, 128, 64, 10), 1, 2) == 1
    assert _network.team_size(sizes(64, 128, 64, 10), 200, 1) == 1
    _network.set_team_policy(0)
    assert _network.team_size(sizes(1, 1), 1, 3) == 3


def test_sklearn_estimator_is_the_same_for_any_thread_count():
    pytest.importorskip("sklearn")
    _require_threads()
    from fastbp.sklearn import MLPClassifier
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 12)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    fits = [MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=15, random_state=0,
                          n_threads=nt).fit(X, y) for nt in (1, 2)]
    for a, b in zip(fits[0].coefs_ + fits[0].intercepts_, fits[1].coefs_ + fits[1].intercepts_):
        np.testing.assert_array_equal(a, b)
    assert fits[0].loss_curve_ == fits[1].loss_curve_


# -- the timed choice between the team and one thread (fastbp/_team_choice.py) ------------

def test_team_choice_probes_team_one_one_team_and_keeps_the_faster():
    from fastbp import _team_choice
    for team_s, one_s, keeps_team in [(1.0, 2.0, True), (2.0, 1.0, False),
                                      (0.97, 1.0, False),    # within TEAM_MARGIN: one
                                      (0.90, 1.0, True)]:
        c = _team_choice.TeamChoice()
        assert c.probing and c.use_team() is True
        c.record(True, 1e-3, 1, 1)  # the first epoch: untimed (cold caches, thread start)
        seen = []
        for _ in range(4):
            assert c.probing
            used = c.use_team()
            seen.append(used)
            c.record(used, team_s if used else one_s, 1, 1000)
        assert seen == [True, False, False, True]
        assert not c.probing
        assert c.use_team() is keeps_team
        # every RECHECK_EPOCHS epochs it probes again, and can change its mind
        for _ in range(_team_choice.RECHECK_EPOCHS):
            c.record(c.use_team(), 1.0, 1, 1000)
        assert c.probing and c.use_team() is True
        team_s = 2.0 if keeps_team else 0.5                # the machine has changed
        for _ in range(4):
            used = c.use_team()
            c.record(used, team_s if used else 1.0, 1, 1000)
        assert c.use_team() is (not keeps_team)


def test_team_choice_is_not_decided_by_one_stalled_epoch():
    # the faster epoch of each way counts: a team epoch ten times slower than the other
    # (a core taken away for a while) does not make it choose one thread, nor a stalled
    # one-thread epoch the team
    from fastbp import _team_choice
    for times, keeps_team in [((1.0, 2.0, 2.0, 10.0), True), ((2.0, 20.0, 1.0, 2.0), False)]:
        c = _team_choice.TeamChoice()
        c.record(True, 1e-3, 1, 1)
        for seconds in times:
            c.record(c.use_team(), seconds, 1, 1000)
        assert not c.probing and c.use_team() is keeps_team


def test_team_choice_ignores_an_epoch_that_ran_the_other_way():
    from fastbp import _team_choice
    c = _team_choice.TeamChoice()
    c.record(True, 1e-3, 10, 1)     # the untimed first epoch
    c.record(False, 5e-3, 10, 10)   # not what it asked for: not counted
    seen = []
    for _ in range(4):              # the whole probe still to come, in its order
        assert c.probing
        used = c.use_team()
        seen.append(used)
        c.record(used, 1e-3 if used else 2e-3, 10, 10)
    assert seen == [True, False, False, True]
    assert not c.probing and c.use_team() is True


def test_team_choice_does_not_probe_long_steps():
    # steps of LONG_STEP_S or more keep the team without probing (probing would cost
    # seconds, and a team's cost is small next to such steps)
    # (long in the untimed first epoch and in the first timed one)
    from fastbp import _team_choice
    c = _team_choice.TeamChoice()
    c.record(True, 10 * _team_choice.LONG_STEP_S, 640, 10)
    assert c.probing and c.use_team() is True
    c.record(True, 10 * _team_choice.LONG_STEP_S, 640, 10)
    assert not c.probing and c.use_team() is True
    for _ in range(3 * _team_choice.RECHECK_EPOCHS):
        c.record(True, 1.0, 640, 10)
        assert not c.probing and c.use_team() is True
    # one just under the limit is probed
    c = _team_choice.TeamChoice()
    c.record(True, 10 * _team_choice.LONG_STEP_S, 640, 10)
    c.record(True, 0.9 * _team_choice.LONG_STEP_S * 10, 640, 10)
    assert c.probing
    # and so is a slow untimed epoch followed by a fast one: it counts as the probe's
    # first team epoch, and the probe goes on with one thread
    c = _team_choice.TeamChoice()
    c.record(True, 10 * _team_choice.LONG_STEP_S, 640, 10)
    c.record(True, 0.1 * _team_choice.LONG_STEP_S * 10, 640, 10)
    assert c.probing and c.use_team() is False


def _threads_of_each_epoch(monkeypatch):
    # the n_threads that each compiled epoch was given
    from fastbp import network
    calls = []
    real = network._network.train_epoch

    def spy(*args):
        calls.append(args[-3])
        return real(*args)

    monkeypatch.setattr(network._network, "train_epoch", spy)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_timed_choice_runs_epochs_both_ways_and_changes_no_bit(dtype, monkeypatch):
    _require_threads()
    from fastbp import _team_choice
    rng = np.random.default_rng(4)
    X = rng.standard_normal((403, 64)).astype(dtype)
    y = rng.integers(0, 10, 403)
    serial = _run([64, 128, 64, 10], "relu", "cross_entropy", dtype, 1, "adam", X, y, 200,
                  epochs=8)
    monkeypatch.setattr(_team_choice, "ENABLED", True)
    # probed however slow the steps (a sanitizer build's are over LONG_STEP_S)
    monkeypatch.setattr(_team_choice, "LONG_STEP_S", float("inf"))
    calls = _threads_of_each_epoch(monkeypatch)
    timed = _run([64, 128, 64, 10], "relu", "cross_entropy", dtype, 2, "adam", X, y, 200,
                 epochs=8)
    _assert_same(serial, timed)
    assert calls[:5] == [2, 2, 1, 1, 2]
    choice, = timed[0]._team_choices.values()
    assert calls[5:] == [2 if choice.use_team() else 1] * 3


def test_timed_choice_is_shared_by_networks_of_one_shape(monkeypatch):
    # a second network of the same shape, batch size and threads (fastbp.sklearn's next
    # fit) goes on with the first one's choice instead of probing again; another shape,
    # or one trained after SHARE_S without that shape, probes for itself
    _require_threads()
    from fastbp import _team_choice
    rng = np.random.default_rng(5)
    X = rng.standard_normal((403, 64)).astype(np.float32)
    y = rng.integers(0, 10, 403)
    monkeypatch.setattr(_team_choice, "ENABLED", True)
    monkeypatch.setattr(_team_choice, "LONG_STEP_S", float("inf"))
    calls = _threads_of_each_epoch(monkeypatch)
    first = _run([64, 128, 64, 10], "relu", "cross_entropy", np.float32, 2, "adam", X, y,
                 200, epochs=6)
    assert calls[:5] == [2, 2, 1, 1, 2]
    choice, = first[0]._team_choices.values()
    assert not choice.probing
    verdict = 2 if choice.use_team() else 1
    del calls[:]
    second = _run([64, 128, 64, 10], "relu", "cross_entropy", np.float32, 2, "adam", X, y,
                  200, epochs=6)
    assert second[0]._team_choices[(200, 2)] is choice
    assert calls == [verdict] * 6
    # the shared choice counts the epochs of both: its next probe comes RECHECK_EPOCHS
    # after the first network's
    assert choice.steady_epochs() == _team_choice.RECHECK_EPOCHS - 7
    del calls[:]
    other = _run([64, 128, 64, 10], "relu", "cross_entropy", np.float64, 2, "adam",
                 X.astype(np.float64), y, 200, epochs=6)
    assert other[0]._team_choices[(200, 2)] is not choice
    assert calls[:5] == [2, 2, 1, 1, 2]
    del calls[:]
    choice.last_used -= _team_choice.SHARE_S + 1        # unused for too long
    late = _run([64, 128, 64, 10], "relu", "cross_entropy", np.float32, 2, "adam", X, y,
                200, epochs=6)
    assert late[0]._team_choices[(200, 2)] is not choice
    assert calls[:5] == [2, 2, 1, 1, 2]
    # the runs share choices only, never a bit of their results
    _assert_same(first, second)


def test_shared_timed_choices_are_bounded():
    from fastbp import _team_choice
    shapes = [((4, n, 2), (1, 6), 0, "<f4") for n in range(3 * _team_choice.MAX_SHARED)]
    for shape in shapes:
        _team_choice.choice_for({}, (32, 2), shape)
        assert len(_team_choice._shared) <= _team_choice.MAX_SHARED
    # the least recently used went first
    assert ((shapes[-1], (32, 2)) in _team_choice._shared
            and (shapes[0], (32, 2)) not in _team_choice._shared)


def test_timed_choices_kept_per_network_are_bounded(monkeypatch):
    _require_threads()
    from fastbp import _team_choice
    monkeypatch.setattr(_team_choice, "ENABLED", True)
    rng = np.random.default_rng(4)
    net = fastbp.Network([16, 32, 4], dtype=np.float32, n_threads=2, seed=1)
    opt = optim.Adam(lr=1e-3)
    for n in range(10, 10 + 2 * _team_choice.MAX_CHOICES):   # partial_fit-like chunks
        X = rng.standard_normal((n, 16)).astype(np.float32)
        net.train_epoch(X, rng.integers(0, 4, n), optimizer=opt, batch_size=n)
        assert 1 <= len(net._team_choices) <= _team_choice.MAX_CHOICES


def test_timed_choice_is_off_for_one_thread_and_for_steps_too_small_for_a_team(monkeypatch):
    _require_threads()
    from fastbp import _network, _team_choice
    monkeypatch.setattr(_team_choice, "ENABLED", True)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 8)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    calls = _threads_of_each_epoch(monkeypatch)
    net, _, _ = _run([8, 16, 3], "relu", "cross_entropy", np.float32, 1, "adam", X, y, 10)
    assert calls == [1, 1] and net._team_choices == {}
    _network.set_team_policy(1 << 20)      # 8-16-3 at batch 10: far below a team's size
    net, _, _ = _run([8, 16, 3], "relu", "cross_entropy", np.float32, 2, "adam", X, y, 10)
    assert calls[2:] == [2, 2] and net._team_choices == {}


def test_timed_choice_is_not_pickled():
    # timings of this machine mean nothing on another: not part of a pickled network
    import pickle
    import threading
    net = fastbp.Network([4, 3, 2], n_threads=2)
    net._team_choices[(1, 2)] = threading.Lock()      # cannot be pickled
    assert "_team_choices" not in net.__getstate__()
    clone = pickle.loads(pickle.dumps(net))
    assert clone._team_choices == {}
