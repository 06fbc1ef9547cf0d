"""Divergence, Ctrl-C, and threads."""

import threading

import numpy as np
import pytest

import fastbp
from fastbp import reference


def diverging_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32) * 100
    y = rng.integers(0, 3, 64)
    return X, y


# the reference's NumPy overflows on the way to divergence, and says so
overflow_ok = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@overflow_ok
@pytest.mark.parametrize("cls", [fastbp.Network, reference.Network])
def test_fit_stops_on_divergence_with_finite_parameters(cls):
    X, y = diverging_problem()
    net = cls([5, 64, 3], seed=0)
    with pytest.raises(ValueError, match="diverged.*lr=10000"):
        net.fit(X, y, epochs=50, batch_size=8, lr=1e4)
    assert all(np.isfinite(p).all() for p in net.weights + net.biases)


@overflow_ok
def test_divergence_point_and_state_match_the_reference():
    X, y = diverging_problem()
    net, ref = fastbp.Network([5, 64, 3], seed=0), reference.Network([5, 64, 3], seed=0)
    messages = []
    for n in (net, ref):
        with pytest.raises(ValueError) as err:
            n.fit(X, y, epochs=50, batch_size=8, lr=1e4, shuffle=False)
        messages.append(str(err.value))
    assert messages[0] == messages[1]  # same epoch and batch
    for a, b in zip(net.weights, ref.weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


def test_train_step_with_non_finite_loss_changes_nothing():
    X, y = diverging_problem()
    net = fastbp.Network([5, 3], seed=0)
    net.weights[0][...] = 1e38  # logits overflow to inf
    before = [p.copy() for p in net.weights + net.biases]
    with pytest.raises(ValueError, match="diverged"):
        net.train_step(X, y, lr=0.1)
    for a, b in zip(before, net.weights + net.biases):
        assert np.array_equal(a, b)


def test_ctrl_c_stops_fit_at_a_batch_boundary_quickly(interrupt_after):
    rng = np.random.default_rng(0)
    X = rng.random((20000, 256)).astype(np.float32)
    y = rng.integers(0, 10, 20000)
    net = fastbp.Network([256, 256, 10], seed=0, n_threads=1)
    since_signal = interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=1000, batch_size=32, lr=0.01)
    latency = since_signal()
    assert latency < 0.15, f"fit took {latency * 1e3:.0f} ms to stop"
    assert all(np.isfinite(p).all() for p in net.weights + net.biases)
    # the network is consistent and usable: training resumes normally; the interrupted
    # epoch left no entry in loss_curve_
    epochs_done = len(net.loss_curve_)
    net.fit(X[:256], y[:256], epochs=1, batch_size=32, lr=0.01)
    assert len(net.loss_curve_) == epochs_done + 1


def test_two_networks_train_concurrently_like_serial_runs():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    make = lambda: fastbp.Network([64, 128, 10], seed=3, n_threads=1)  # noqa: E731
    serial = [make().fit(X, y, epochs=3, batch_size=16) for _ in range(2)]
    nets = [make(), make()]
    threads = [threading.Thread(target=n.fit, args=(X, y), kwargs=dict(epochs=3, batch_size=16))
               for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, s in zip(nets, serial):
        for a, b in zip(n.weights + n.biases, s.weights + s.biases):
            assert np.array_equal(a, b)


def test_two_threads_on_one_network_take_turns():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    shared = fastbp.Network([64, 128, 10], seed=5, n_threads=1)
    expected = fastbp.Network([64, 128, 10], seed=5, n_threads=1)
    expected.fit(X, y, epochs=2, batch_size=16).fit(X, y, epochs=2, batch_size=16)
    threads = [threading.Thread(target=shared.fit, args=(X, y), kwargs=dict(epochs=2, batch_size=16))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # serialized: the same as two fits one after the other (both draw their shuffles from
    # the network's generator in turn, and the two calls are identical)
    for a, b in zip(shared.weights + shared.biases, expected.weights + expected.biases):
        assert np.array_equal(a, b)
