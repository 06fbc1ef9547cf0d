"""Memory safety does not depend on the caller leaving its arrays alone after validation.

The compiled loop indexes by row indices (the epoch's order) and by class labels. Both are
copied before the loop reads them (Network._epoch, check_targets), and the loop checks each
index and label again where it reads it (src/_passes.pxd, copy_checked), so another
thread that scribbles over the caller's arrays during a call can change results but never
make the loop read or write out of bounds.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastbp
from fastbp import _network, optim

# the folder the fastbp under test comes from (the source tree or site-packages)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))

SCRIBBLE = textwrap.dedent("""
    import threading, numpy as np, fastbp
    from fastbp import optim

    rng = np.random.default_rng(0)
    n = 3000
    X = rng.standard_normal((n, 20)).astype(np.float32)
    y = rng.integers(0, 5, n)
    w = rng.random(n).astype(np.float32) + 0.5
    order = rng.permutation(n)
    stop = threading.Event()

    def scribble():
        # huge and negative indices and labels, NaN weights and inputs, again and again
        bad = np.array([2**40, -2**40, -1, n, 10**6], dtype=np.int64)
        k = 0
        while not stop.is_set():
            k += 1
            y[k % n] = bad[k % 5]
            order[(7 * k) % n] = bad[(k + 1) % 5]
            w[k % n] = np.nan if k % 3 else -1e30
            X[k % n, k % 20] = np.nan if k % 2 else 1e30
            if k % 64 == 0:
                y[:] = bad[k % 5]
                order[:] = bad[(k + 2) % 5]

    def restore():
        y[:] = rng.integers(0, 5, n)
        order[:] = rng.permutation(n)
        w[:] = rng.random(n).astype(np.float32) + 0.5
        X[:] = rng.standard_normal((n, 20)).astype(np.float32)

    outcomes = []

    def attempt(call, scribbler):
        # call() while scribbler runs on another thread: "ok" or "ValueError"
        stop.clear()
        t = threading.Thread(target=scribbler)
        t.start()
        try:
            call()
            outcomes.append("ok")
        except ValueError:
            outcomes.append("ValueError")
        finally:
            stop.set()
            t.join()

    def run(net, call):
        if call == "fit":
            net.fit(X, y, epochs=3, batch_size=200, sample_weight=w)
        elif call == "train_epoch":
            net.train_epoch(X, y, optimizer=optim.SGD(lr=0.05), batch_size=128,
                            order=order, sample_weight=w)
        elif call == "predict":
            for _ in range(20):
                net.predict(X)
        else:
            net.loss(X, y, sample_weight=w)

    for n_threads in (1, 2):
        for call in ("fit", "train_epoch", "predict", "loss"):
            for round_ in range(4):
                restore()
                net = fastbp.Network([20, 64, 32, 5], seed=0, n_threads=n_threads)
                attempt(lambda: run(net, call), scribble)
    # the same, the scribbling started once the call is past its checks: only indices and
    # labels, ahead of where the loop is, so that the loop meets them (before the copies
    # and checks of the loop, this read and wrote out of bounds)
    big_n = 200000
    BX = rng.standard_normal((big_n, 20)).astype(np.float32)
    for n_threads in (1, 2):
        for call in ("fit", "train_epoch"):
            by = rng.integers(0, 5, big_n)
            border = rng.permutation(big_n)
            net = fastbp.Network([20, 32, 5], seed=0, n_threads=n_threads)

            def late_scribble():
                stop.wait(0.03)
                border[big_n // 2:] = 2**40
                by[:] = -2**40

            if call == "fit":
                attempt(lambda: net.fit(BX, by, epochs=2, batch_size=64), late_scribble)
            else:
                attempt(lambda: net.train_epoch(BX, by, optimizer=optim.SGD(lr=0.05),
                                                batch_size=64, order=border), late_scribble)
    print("OUTCOMES", len(outcomes), sorted(set(outcomes)))
""")


def test_scribbling_over_the_callers_arrays_during_calls_never_crashes(tmp_path):
    # In a subprocess, so that a crash fails this test instead of ending the suite; run
    # from an empty folder, so that it imports the fastbp under test, not a source tree
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIBBLE], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [s for s in r.stdout.splitlines() if s.startswith("OUTCOMES")][0]
    assert line.startswith("OUTCOMES 36 "), line
    assert set(eval(line.split(" ", 2)[2])) <= {"ok", "ValueError"}


def _trainer(net, capacity):
    trainer = _network.Trainer(net._params, net._grads, (), net._sizes, net._acts,
                               net._loss_code, capacity, 1)
    trainer.set_optimizer(_network.OPTIMIZER_SGD, 0.1, 0.0, False, 0.0, 0.0, 0.0)
    return trainer


def test_the_loop_checks_labels_where_it_reads_them():
    # The Trainer binds the arrays themselves (no copy): a label made out of range after
    # binding is caught in the batch that reads it, which is not computed; the batches
    # before it are.
    rng = np.random.default_rng(1)
    net = fastbp.Network([6, 8, 4], seed=0)
    X = rng.standard_normal((100, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 100).astype(np.int64)
    order = np.arange(100, dtype=np.int64)
    trainer = _trainer(net, 10)
    trainer.bind(X, labels, None, None)
    steps_done = np.zeros(1, dtype=np.int64)
    for bad in (4, -1, 2**40):
        labels[55] = bad
        before = net._params.copy()
        total, penalty, rows, steps, status = trainer.epoch(order, 0, steps_done)
        assert status == _network.EpochStatus.EPOCH_BAD_INPUT
        assert (rows, steps) == (50, 5)
        assert not np.array_equal(net._params, before)      # five steps were taken


def test_the_epoch_refuses_rows_out_of_range():
    rng = np.random.default_rng(1)
    net = fastbp.Network([6, 8, 4], seed=0)
    trainer = _trainer(net, 10)
    trainer.bind(rng.standard_normal((100, 6)).astype(np.float32),
                 rng.integers(0, 4, 100).astype(np.int64), None, None)
    for bad in (100, -1, 2**40):
        order = np.arange(100, dtype=np.int64)
        order[55] = bad
        with pytest.raises(ValueError, match="not a row"):
            trainer.epoch(order, 0, np.zeros(1, dtype=np.int64))


def test_labels_changed_after_validation_cannot_reach_the_loss():
    # check_targets copies labels: changing the caller's array afterwards changes nothing
    from fastbp._validation import check_targets
    y = np.array([0, 1, 2, 3], dtype=np.int64)
    labels, _ = check_targets(y, "cross_entropy", 4, 4, np.float32)
    y[0] = 2**40
    assert labels[0] == 0
    assert not np.shares_memory(labels, y)
