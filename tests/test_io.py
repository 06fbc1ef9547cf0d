"""Network files: save/load round trips bit-exactly; damaged, foreign or malicious files are a
ValueError naming the file and never run code; saving is atomic and leaves no temporary
files behind."""

import os
import pickle
import re

import numpy as np
import pytest

import fastbp
from fastbp import reference

LOSSES = ["cross_entropy", "binary_cross_entropy", "mse"]
DTYPES = [np.float32, np.float64]
SIZES = [7, 9, 5]


def make_data(loss, n=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0]))
    if loss == "cross_entropy":
        y = rng.integers(0, SIZES[-1], n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, SIZES[-1])) > 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((n, SIZES[-1]))
    return X, y


def trained(cls, loss="cross_entropy", dtype=np.float32, sizes=SIZES, activation="tanh",
            output_activation=None, seed=0):
    """A network whose biases are non-zero (one SGD step) so every parameter matters."""
    net = cls(sizes, activation=activation, loss=loss, output_activation=output_activation,
              dtype=dtype, seed=seed)
    X, y = make_data(loss, seed=seed)
    net.train_step(X, y, lr=0.5)
    assert all(np.any(b != 0) for b in net.biases)
    return net


def assert_same_network(a, b):
    assert tuple(a.layer_sizes) == tuple(b.layer_sizes)
    assert list(a.activation) == list(b.activation)
    assert a.loss_name == b.loss_name
    assert a.output_activation == b.output_activation
    assert np.dtype(a.dtype) == np.dtype(b.dtype)
    assert len(a.weights) == len(b.weights) == len(a.biases) == len(b.biases)
    for p, q in zip(list(a.weights) + list(a.biases), list(b.weights) + list(b.biases)):
        assert p.dtype == q.dtype == np.dtype(a.dtype)
        assert p.shape == q.shape
        assert p.tobytes() == q.tobytes()  # bit-exact, including the sign of zeros
        assert not np.shares_memory(p, q)


def saved(tmp_path, net=None, name="model.npz"):
    path = tmp_path / name
    (net or trained(fastbp.Network)).save(path)
    return path


def arrays_of(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_error(path):
    """fastbp.load(path) must raise ValueError whose message contains the path."""
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        fastbp.load(path)
    return str(info.value)


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_round_trip_is_bit_exact(tmp_path, loss, dtype):
    out_act = "tanh" if loss == "mse" else None
    net = trained(fastbp.Network, loss=loss, dtype=dtype, output_activation=out_act)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = fastbp.load(path)
    assert isinstance(loaded, fastbp.Network)
    assert_same_network(net, loaded)
    if loss == "mse":
        assert loaded.output_activation == "tanh"

    X, y = make_data(loss, n=23, seed=5)
    out = net.forward(X)
    assert out.tobytes() == loaded.forward(X).tobytes()
    assert np.array_equal(net.predict(X), loaded.predict(X))
    assert net.loss(X, y) == loaded.loss(X, y)
    # the loaded network trains on exactly like the original
    assert net.train_step(X, y, lr=0.1) == loaded.train_step(X, y, lr=0.1)
    assert_same_network(net, loaded)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_round_trip_per_layer_activations(tmp_path, loss, dtype):
    sizes = [7, 9, 6, 8, 5]
    net = trained(fastbp.Network, loss=loss, dtype=dtype, sizes=sizes,
                  activation=["gelu", "leaky_relu", "logistic"],
                  output_activation="relu" if loss == "mse" else None, seed=3)
    path = saved(tmp_path, net)
    loaded = fastbp.load(path)
    assert_same_network(net, loaded)
    assert list(loaded.activation) == ["gelu", "leaky_relu", "sigmoid"]
    X, _ = make_data(loss, n=9, seed=1)
    assert net.forward(X).tobytes() == loaded.forward(X).tobytes()


def test_round_trip_without_hidden_layers(tmp_path):
    net = trained(fastbp.Network, sizes=[7, 5], activation=[], seed=2)
    loaded = fastbp.load(saved(tmp_path, net))
    assert_same_network(net, loaded)
    assert list(loaded.activation) == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_extreme_values(tmp_path, dtype):
    """Subnormals, -0.0, the largest finite values: all survive bit-for-bit."""
    net = fastbp.Network(SIZES, activation="relu", dtype=dtype, seed=0)
    info = np.finfo(dtype)
    W = net.weights[0].copy()
    W.reshape(-1)[:5] = [info.smallest_subnormal, -0.0, info.max, -info.max, info.tiny]
    net.weights[0] = W
    net.biases[1] = np.array([-0.0, 1e-30, -1.5, np.pi, 2.0], dtype=dtype)
    loaded = fastbp.load(saved(tmp_path, net))
    assert_same_network(net, loaded)
    assert np.signbit(loaded.weights[0].reshape(-1)[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_reference_file_loads_into_fastbp(tmp_path, loss, dtype):
    ref = trained(reference.Network, loss=loss, dtype=dtype,
                  output_activation="sigmoid" if loss == "mse" else None, seed=4)
    path = tmp_path / "ref.npz"
    ref.save(path)
    net = fastbp.load(path)
    assert isinstance(net, fastbp.Network)
    assert_same_network(ref, net)
    # and back: a fastbp file loads into the reference
    path2 = tmp_path / "fast.npz"
    net.save(path2)
    ref2 = reference.load(path2)
    assert isinstance(ref2, reference.Network)
    assert_same_network(net, ref2)


def test_load_accepts_str_and_pathlike(tmp_path):
    net = trained(fastbp.Network)
    net.save(str(tmp_path / "a.npz"))
    net.save(tmp_path / "b.npz")
    assert_same_network(net, fastbp.load(str(tmp_path / "b.npz")))
    assert_same_network(net, fastbp.load(tmp_path / "a.npz"))


def test_saved_file_needs_no_pickle(tmp_path):
    path = saved(tmp_path)
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            assert data[key].dtype.kind != "O", key


def test_loaded_parameters_are_the_networks_own_writable_views(tmp_path):
    net = trained(fastbp.Network)
    loaded = fastbp.load(saved(tmp_path, net))
    X, _ = make_data("cross_entropy")
    before = loaded.forward(X)
    loaded.weights[1][...] = 0
    loaded.biases[1][...] = 0
    after = loaded.forward(X)
    np.testing.assert_allclose(after, 1.0 / SIZES[-1], rtol=1e-6)
    assert not np.array_equal(before, after)
    # the original is untouched
    assert net.forward(X).tobytes() == before.tobytes()


# ---------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------

def test_save_over_existing_file_replaces_it_and_leaves_no_temporary_files(tmp_path):
    a = trained(fastbp.Network, seed=1)
    b = trained(fastbp.Network, loss="mse", dtype=np.float64, seed=2)
    path = tmp_path / "model.npz"
    a.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    b.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert_same_network(b, fastbp.load(path))
    a.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert_same_network(a, fastbp.load(path))


def test_save_writes_exactly_the_given_name(tmp_path):
    net = trained(fastbp.Network)
    net.save(tmp_path / "model.bin")
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]
    assert_same_network(net, fastbp.load(tmp_path / "model.bin"))


def test_failed_save_leaves_no_temporary_files(tmp_path):
    net = trained(fastbp.Network)
    target = tmp_path / "a_directory"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(OSError):
        net.save(target)  # cannot replace a (non-empty) directory with a file
    assert sorted(os.listdir(tmp_path)) == ["a_directory"]
    assert sorted(os.listdir(target)) == ["keep.txt"]


def test_save_into_missing_folder_raises(tmp_path):
    net = trained(fastbp.Network)
    with pytest.raises(FileNotFoundError):
        net.save(tmp_path / "no" / "such" / "model.npz")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Damaged and foreign files
# ---------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError) as info:
        fastbp.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        reference.load(path)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.1])
def test_truncated_file(tmp_path, fraction):
    good = saved(tmp_path)
    data = good.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:int(len(data) * fraction)])
    load_error(bad)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        reference.load(bad)


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.npz"
    bad.write_bytes(b"")
    load_error(bad)


@pytest.mark.parametrize("key", ["weights_0", "biases_0", "weights_1", "biases_1"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_flipped_parameter_byte_fails_checksum(tmp_path, key, dtype):
    good = saved(tmp_path, trained(fastbp.Network, dtype=dtype))
    arrays = arrays_of(good)
    original = arrays[key]
    damaged = original.copy()
    damaged.view(np.uint8).reshape(-1)[1] ^= 0xFF  # one byte, low-order mantissa
    assert damaged.dtype == original.dtype and damaged.shape == original.shape
    assert damaged.tobytes() != original.tobytes()
    assert np.isfinite(damaged).all()
    arrays[key] = damaged
    bad = tmp_path / "flipped.npz"
    np.savez(bad, **arrays)  # the original checksum stays
    msg = load_error(bad)
    assert "checksum" in msg


def test_tampered_checksum(tmp_path):
    arrays = arrays_of(saved(tmp_path))
    arrays["checksum"] = np.array("0" * 64)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert "checksum" in load_error(bad)


@pytest.mark.parametrize("change", [
    pytest.param(lambda a: a.update(weights_0=a["weights_0"][:, :-1]), id="weights-shape"),
    pytest.param(lambda a: a.update(biases_1=a["biases_1"][:-1]), id="bias-shape"),
    pytest.param(lambda a: a.update(weights_1=a["weights_1"].astype(np.float64)), id="weights-dtype"),
    pytest.param(lambda a: a.update(layer_sizes=np.array([7, 9, 6])), id="layer-sizes"),
    pytest.param(lambda a: a.update(layer_sizes=np.array([7, -9, 5])), id="negative-size"),
    pytest.param(lambda a: a.pop("weights_1"), id="missing-weights"),
    pytest.param(lambda a: a.pop("checksum"), id="missing-checksum"),
    pytest.param(lambda a: a.pop("format_version"), id="missing-version"),
    pytest.param(lambda a: a.pop("loss"), id="missing-loss"),
    pytest.param(lambda a: a.update(loss=np.array("hinge")), id="unknown-loss"),
    pytest.param(lambda a: a.update(activation=np.array(["swish"])), id="unknown-activation"),
    pytest.param(lambda a: a.update(dtype=np.array("float16")), id="bad-dtype"),
    pytest.param(lambda a: a.update(dtype=np.array("nonsense")), id="nonsense-dtype"),
    pytest.param(lambda a: a.update(loss=np.array(3)), id="loss-not-a-string"),
    pytest.param(lambda a: a.update(format=np.array("something.else")), id="other-format"),
])
def test_inconsistent_file(tmp_path, change):
    arrays = arrays_of(saved(tmp_path))
    change(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    load_error(bad)


@pytest.mark.parametrize("version", [99, 0, 3, -1])
def test_unsupported_format_version(tmp_path, version):
    arrays = arrays_of(saved(tmp_path))
    arrays["format_version"] = np.array(version, dtype=np.int64)
    bad = tmp_path / "v.npz"
    np.savez(bad, **arrays)
    msg = load_error(bad)
    assert str(version) in msg


def test_foreign_npz(tmp_path):
    bad = tmp_path / "foreign.npz"
    rng = np.random.default_rng(0)
    np.savez(bad, a=rng.standard_normal((3, 4)), b=np.arange(5))
    load_error(bad)


def test_foreign_npz_with_look_alike_keys(tmp_path):
    """Arrays named like a model's, but no format marker."""
    arrays = arrays_of(saved(tmp_path))
    del arrays["format"]
    bad = tmp_path / "lookalike.npz"
    np.savez(bad, **arrays)
    load_error(bad)


def test_text_file(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_text("layer_sizes = [7, 9, 5]\nthis is not a model\n")
    load_error(bad)


def test_npy_file(tmp_path):
    bad = tmp_path / "array.npz"
    with open(bad, "wb") as f:
        np.save(f, np.arange(10.0))
    load_error(bad)


def test_directory(tmp_path):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises((ValueError, OSError)):
        fastbp.load(folder)


# ---------------------------------------------------------------------------------------
# Never run code from a file
# ---------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs os.mkdir(marker): code from the file would leave `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _object_array(marker):
    arr = np.empty(3, dtype=object)
    arr[:] = [_Payload(marker), 1.0, 2.0]
    return arr


def _write_malicious(path, marker, key):
    arrays = arrays_of(saved(path.parent, name="clean-" + path.name))
    arrays[key] = _object_array(marker)
    np.savez(path, **arrays)  # np.savez pickles object arrays


@pytest.mark.parametrize("key", ["format", "format_version", "layer_sizes", "activation", "loss",
                                 "dtype", "checksum", "weights_0", "biases_1"])
def test_object_array_is_rejected_without_unpickling(tmp_path, key):
    # the payload is live: loading it WITH pickle enabled does create its marker
    probe, probe_marker = tmp_path / "probe.npz", tmp_path / "probe-marker"
    _write_malicious(probe, probe_marker, key)
    with np.load(probe, allow_pickle=True) as data:
        data[key]
    assert probe_marker.exists()

    bad, marker = tmp_path / "evil.npz", tmp_path / "MARKER"
    _write_malicious(bad, marker, key)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        fastbp.load(bad)
    assert not marker.exists()
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        reference.load(bad)
    assert not marker.exists()


def test_object_array_in_an_extra_field_never_runs(tmp_path):
    bad, marker = tmp_path / "evil.npz", tmp_path / "MARKER"
    _write_malicious(bad, marker, "extra")
    try:
        fastbp.load(bad)
    except ValueError as exc:
        assert str(bad) in str(exc)
    assert not marker.exists()


def test_pickle_file_is_rejected_without_unpickling(tmp_path):
    bad, marker = tmp_path / "model.npz", tmp_path / "MARKER"
    bad.write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    load_error(bad)
    assert not marker.exists()


def test_npy_object_array_is_rejected_without_unpickling(tmp_path):
    bad, marker = tmp_path / "model.npz", tmp_path / "MARKER"
    with open(bad, "wb") as f:
        np.save(f, _object_array(marker), allow_pickle=True)
    load_error(bad)
    assert not marker.exists()
