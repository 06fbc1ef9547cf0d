"""Sizes at the edges of memory and of 32-bit indexing."""

import numpy as np
import pytest

import fastbp
from fastbp import reference


@pytest.mark.parametrize("cls", [fastbp.Network, reference.Network])
def test_unallocatable_sizes_fail_before_touching_memory(cls):
    # 1e14 parameters: far beyond this machine, but indexable
    with pytest.raises(MemoryError):
        cls([10**7, 10**7, 10])


def test_sizes_beyond_the_index_type_are_a_value_error():
    with pytest.raises(ValueError, match="more than this machine can address"):
        fastbp.Network([2**40, 2**40, 2])


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
@pytest.mark.skipif(_available_bytes() < 16 * 2**30, reason="needs 16 GiB of free memory")
def test_layer_with_more_than_2_to_the_31_weights():
    """Index arithmetic is 64-bit throughout: a layer of 2^31 + 2^16 weights (8 GiB in
    float32) gives the right outputs, including the last columns past the 2^31st weight."""
    n_in, n_out = 2**16, 2**15 + 1
    net = fastbp.Network([n_in, n_out], loss="mse", seed=0, n_threads=2)
    assert net.weights[0].size > 2**31
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, n_in)).astype(np.float32)
    out = net.forward(X)
    W = net.weights[0]
    # compare the last columns (whose weights lie past index 2^31) and a few first ones
    cols = np.r_[0:4, n_out - 4:n_out]
    want = X.astype(np.float64) @ W[:, cols].astype(np.float64)
    bound = 2 * n_in * np.finfo(np.float32).eps * (np.abs(X) @ np.abs(W[:, cols]))
    assert np.all(np.abs(out[:, cols] - want) <= bound)
