"""No silent no-op: values checked after conversion to the network's dtype, parameter lists
that never detach, and calls that would change a running fit refused (issue: reliability,
round two)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import fastbp
from fastbp import optim


def _data(n=64, d=6, k=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, k, n)


# -- values that vanish in the network's dtype --------------------------------------------

def test_sample_weights_that_underflow_in_float32_are_refused():
    X, y = _data()
    net = fastbp.Network([6, 8, 3], seed=0)
    before = net._params.copy()
    with pytest.raises(ValueError, match="all zero in float32"):
        net.fit(X, y, epochs=1, sample_weight=np.full(64, 1e-300))
    assert np.array_equal(net._params, before)
    # the same weights are a valid (tiny, positive) weighting in float64
    net64 = fastbp.Network([6, 8, 3], seed=0, dtype=np.float64)
    net64.fit(X.astype(np.float64), y, epochs=1, sample_weight=np.full(64, 1e-300))


@pytest.mark.parametrize("call", ["fit", "train_step", "train_epoch"])
def test_a_learning_rate_that_rounds_to_zero_in_float32_is_refused(call):
    X, y = _data()
    net = fastbp.Network([6, 8, 3], seed=0)
    with pytest.raises(ValueError, match="rounds to 0"):
        if call == "fit":
            net.fit(X, y, epochs=1, lr=1e-320)
        elif call == "train_step":
            net.train_step(X, y, lr=1e-46)
        else:
            net.train_epoch(X, y, optimizer=optim.SGD(lr=1e-320))
    # 1e-320 is a float64 subnormal: a (useless but real) step in float64
    net64 = fastbp.Network([6, 8, 3], seed=0, dtype=np.float64)
    net64.train_step(X.astype(np.float64), y, lr=1e-320)


def test_thread_counts_are_bounded_at_construction():
    for bad in (2**31, -2**31, 10**9):
        with pytest.raises(ValueError, match="n_threads"):
            fastbp.Network([2, 2], n_threads=bad)


# -- weights and biases never detach ------------------------------------------------------

def test_assigning_a_list_of_weights_copies_into_the_network():
    X, _ = _data()
    net = fastbp.Network([6, 8, 3], seed=0)
    rng = np.random.default_rng(5)
    new_W = [rng.standard_normal(w.shape) for w in net.weights]
    new_b = [rng.standard_normal(b.shape) for b in net.biases]
    views = list(net.weights)
    net.weights = new_W
    net.biases = new_b
    for view, w in zip(net.weights, new_W):
        assert np.shares_memory(view, net._params)      # still the network's own buffer
        assert np.array_equal(view, w.astype(np.float32))
    assert all(a is b for a, b in zip(views, net.weights))
    ref = fastbp.reference.Network([6, 8, 3], seed=0)
    for l in range(2):
        ref.weights[l][...] = new_W[l]
        ref.biases[l][...] = new_b[l]
    np.testing.assert_allclose(net.forward(X), ref.forward(X), rtol=1e-5, atol=1e-6)


def test_a_bad_assignment_changes_nothing():
    net = fastbp.Network([6, 8, 3], seed=0)
    before = net._params.copy()
    good = [np.ones(w.shape) for w in net.weights]
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape"):
        net.weights = [good[0], np.ones((3, 8))]
    with pytest.raises(ValueError, match="2 arrays"):
        net.weights = good[:1]
    with pytest.raises(TypeError):
        net.biases = 3.0
    assert np.array_equal(net._params, before)


# -- reentrancy ------------------------------------------------------------------------

@pytest.mark.parametrize("inner", ["fit", "train_epoch", "train_step", "gradients"])
def test_a_callback_cannot_change_its_running_fit(inner):
    X, y = _data()
    net = fastbp.Network([6, 8, 3], seed=0)
    seen = {}

    def callback(n, epoch, logs):
        seen["predict"] = n.predict(X)          # read-only: allowed
        seen["loss"] = n.loss(X, y)
        if inner == "fit":
            n.fit(X, y, epochs=1)
        elif inner == "train_epoch":
            n.train_epoch(X, y, optimizer=optim.SGD(lr=0.1))
        elif inner == "train_step":
            n.train_step(X, y, lr=0.1)
        else:
            n.gradients(X, y)

    with pytest.raises(RuntimeError, match="cannot run while a fit"):
        net.fit(X, y, epochs=3, callbacks=[callback])
    assert "predict" in seen and "loss" in seen
    assert len(net.history["loss"]) == 1        # the outer fit's first epoch, not the inner's
    net.fit(X, y, epochs=1)                     # and the network trains again afterwards


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_signal_handler_cannot_change_a_running_fit():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40000, 64)).astype(np.float32)
    y = rng.integers(0, 10, 40000)
    net = fastbp.Network([64, 128, 10], seed=0, n_threads=1)
    caught = []

    def handler(signum, frame):
        try:
            net.gradients(X[:10], y[:10])
        except RuntimeError as exc:
            caught.append(exc)
            raise

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError, match="cannot run while a fit"):
            net.fit(X, y, epochs=20, batch_size=32)
        assert time.perf_counter() - t0 < 10
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert caught
    net.gradients(X[:10], y[:10])               # allowed once the fit is over
