"""Model files fail closed: however a file is damaged (the zip layer, a member's .npy
header, a size, the configuration, the parameters), fastbp.load raises a ValueError that
names the file, or returns exactly the network that was saved. Sizes in a file are
checked against the configuration and the file's size before anything is allocated or
read. The checksum covers the configuration too. Saving follows the umask and symlinks
and takes str, bytes and os.PathLike paths."""

import io
import os
import re
import struct
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import reference

X_PROBE = np.random.default_rng(7).standard_normal((5, 3))


def small(cls=fastbp.Network, sizes=(3, 4, 2), activation="relu", loss="cross_entropy",
          output_activation=None, dtype=np.float32, init="glorot_uniform", seed=0):
    """A small network whose biases are non-zero (one SGD step)."""
    net = cls(list(sizes), activation=activation, loss=loss,
              output_activation=output_activation, dtype=dtype, init=init, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((8, sizes[0]))
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], 8)
    elif loss == "binary_cross_entropy":
        y = (rng.random((8, sizes[-1])) > 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((8, sizes[-1]))
    net.train_step(X, y, lr=0.5)
    return net


def same_network(a, b):
    """Same configuration, same parameter bytes, same predictions."""
    if (tuple(a.layer_sizes) != tuple(b.layer_sizes) or list(a.activation) != list(b.activation)
            or a.loss_name != b.loss_name or a.output_activation != b.output_activation
            or np.dtype(a.dtype) != np.dtype(b.dtype) or a.init != b.init):
        return False
    for p, q in zip(list(a.weights) + list(a.biases), list(b.weights) + list(b.biases)):
        if p.dtype != q.dtype or p.shape != q.shape or p.tobytes() != q.tobytes():
            return False
    # predictions: bit-exact within one implementation (fastbp and the reference differ
    # in rounding)
    if type(a) is type(b) and a.layer_sizes[0] <= X_PROBE.shape[1]:
        X = X_PROBE[:, :a.layer_sizes[0]]
        X = np.ascontiguousarray(X, dtype=a.dtype)
        if a.forward(X).tobytes() != b.forward(X).tobytes():
            return False
        if np.asarray(a.predict(X)).tobytes() != np.asarray(b.predict(X)).tobytes():
            return False
    return True


def load_error(path, load=fastbp.load):
    """load(path) must raise ValueError whose message contains the path."""
    with pytest.raises(ValueError, match=re.escape(os.fsdecode(path))) as info:
        load(path)
    return str(info.value)


def members(path):
    """[(name, raw bytes of the member)] in the file's order."""
    with zipfile.ZipFile(path) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    """A well-formed zip (right CRCs, consistent directory) of (name, bytes) entries."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)


def npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_with_header(header, data):
    """A .npy (1.0) of the given header dict (written as numpy writes it) and raw data."""
    text = repr(header)
    text += " " * ((-(10 + len(text) + 1)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1") + data


def split_npy(raw):
    """(header dict, data bytes) of a .npy 1.0 member."""
    f = io.BytesIO(raw)
    assert np.lib.format.read_magic(f) == (1, 0)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    return ({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
             "shape": shape}, raw[f.tell():])


def replaced(path, out, **new):
    """Copy of the file at `path` to `out` with members replaced by new raw bytes (or
    arrays) under their names (no .npy suffix); None removes a member."""
    entries = []
    for name, data in members(path):
        key = name[:-4]
        if key in new:
            value = new.pop(key)
            if value is None:
                continue
            data = value if isinstance(value, bytes) else npy(value)
        entries.append((name, data))
    entries += [(k + ".npy", v if isinstance(v, bytes) else npy(v)) for k, v in new.items()]
    write_zip(out, entries)
    return out


def zip_records(data, signature):
    """Offsets of the zip records with this 4-byte signature."""
    return [m.start() for m in re.finditer(re.escape(signature), data)]


CENTRAL, LOCAL = b"PK\x01\x02", b"PK\x03\x04"


def write_v1(net, path):
    """A file exactly as fastbp wrote format version 1 (before the checksum covered the
    configuration): no init member, checksum over the parameters only."""
    import hashlib
    h = hashlib.sha256()
    for W, b in zip(net.weights, net.biases):
        h.update(np.ascontiguousarray(W).tobytes())
        h.update(np.ascontiguousarray(b).tobytes())
    arrays = {
        "format": np.array("fastbp.Network"),
        "format_version": np.array(1, dtype=np.int64),
        "layer_sizes": np.array(net.layer_sizes, dtype=np.int64),
        "activation": np.array(net.activation, dtype=np.str_).reshape(-1),
        "loss": np.array(net.loss_name),
        "output_activation": np.array(net.output_activation),
        "dtype": np.array(net.dtype.name),
        "checksum": np.array(h.hexdigest()),
    }
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{l}"] = W
        arrays[f"biases_{l}"] = b
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.fixture
def model(tmp_path):
    net = small()
    path = tmp_path / "model.npz"
    net.save(path)
    return net, path


# ---------------------------------------------------------------------------------------
# The zip layer
# ---------------------------------------------------------------------------------------

def _patched(path, out, fmt, value, signature=None, field=None, entries=None):
    """Copy of `path` to `out` with struct field `fmt` at `field` bytes into the zip
    records of `signature` (those numbered in `entries`, default all) set to value."""
    data = bytearray(path.read_bytes())
    for k, offset in enumerate(zip_records(bytes(data), signature)):
        if entries is None or k in entries:
            struct.pack_into(fmt, data, offset + field,
                             *(value if isinstance(value, tuple) else (value,)))
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("method", [8, 12, 14, 99])  # deflate, bzip2, lzma, unknown
def test_compression_method_in_the_directory(model, tmp_path, method):
    """Was NotImplementedError (99) or zlib.error (8)."""
    _, path = model
    bad = _patched(path, tmp_path / "method.npz", "<H", method, CENTRAL, 10)
    load_error(bad)
    load_error(bad, reference.load)


@pytest.mark.parametrize("flag", [0x1, 0x20, 0x40])
def test_flags_in_the_directory(model, tmp_path, flag):
    """Encrypted (0x1) was RuntimeError ('password required'); compressed patched data
    (0x20) and strong encryption (0x40) NotImplementedError."""
    _, path = model
    data = path.read_bytes()
    entry = zip_records(data, CENTRAL)[1]
    (flags,) = struct.unpack_from("<H", data, entry + 8)
    bad = _patched(path, tmp_path / "flag.npz", "<H", flags | flag, CENTRAL, 8, {1})
    load_error(bad)


@pytest.mark.parametrize("flag", [0x1, 0x8, 0x20, 0x40])
def test_flags_in_a_local_header(model, tmp_path, flag):
    """zipfile reads the flags from the directory; the local copy does not matter, but
    the file must then load exactly."""
    net, path = model
    bad = _patched(path, tmp_path / "flag.npz", "<H", flag, LOCAL, 6)
    assert _loads_or_value_error(bad, net) in ("loaded", "refused")


def test_damaged_central_directory(model, tmp_path):
    """Central directory entries' extra-field length misaligns every entry after."""
    _, path = model
    load_error(_patched(path, tmp_path / "dir.npz", "<H", 7, CENTRAL, 30, {2}))


@pytest.mark.parametrize("size", [0xFFFFFFFF, 2 ** 31])
def test_directory_sizes_past_the_end_of_the_file(model, tmp_path, size):
    """The directory says the first members hold 4 or 2 GiB; the file has a few KB.
    Before: numpy read the bytes its header declared, never reached the member's end
    (nor its CRC), and the file loaded."""
    _, path = model
    bad = _patched(path, tmp_path / "claims.npz", "<II", (size, size), CENTRAL, 20, {0, 1, 2})
    _quick_and_small(fastbp.load, bad)


def test_bad_local_header(model, tmp_path):
    _, path = model
    load_error(_patched(path, tmp_path / "local.npz", "<H", 0xFFFF, LOCAL, 26))


def test_bad_local_signature(model, tmp_path):
    _, path = model
    load_error(_patched(path, tmp_path / "local.npz", "<I", 0x04034B51, LOCAL, 0, {3}))


def test_crc_error(model, tmp_path):
    """A flipped bit in a member's data that no other check sees: the zip's CRC-32."""
    net, path = model
    data = bytearray(path.read_bytes())
    raw = dict(members(path))["weights_0.npy"]
    at = bytes(data).index(raw) + len(raw) - 1
    data[at] ^= 0x01
    bad = tmp_path / "crc.npz"
    bad.write_bytes(bytes(data))
    assert "CRC" in load_error(bad)


@pytest.mark.parametrize("target", ["header_offset", "directory_offset"])
def test_offsets_past_the_end(model, tmp_path, target):
    _, path = model
    data = bytearray(path.read_bytes())
    if target == "header_offset":
        entry = zip_records(bytes(data), CENTRAL)[-1]
        struct.pack_into("<I", data, entry + 42, 0x7FFFFFF0)
    else:
        end = bytes(data).rindex(b"PK\x05\x06")
        struct.pack_into("<I", data, end + 16, 0x7FFFFFF0)
    bad = tmp_path / "offset.npz"
    bad.write_bytes(bytes(data))
    load_error(bad)


def test_duplicate_member(model, tmp_path):
    """A second 'activation.npy' after the first: zipfile reads the last one."""
    _, path = model
    entries = members(path) + [("activation.npy", npy(np.array(["tanh"])))]
    bad = tmp_path / "duplicate.npz"
    with pytest.warns(UserWarning):  # zipfile: "Duplicate name"
        write_zip(bad, entries)
    load_error(bad)


def test_extra_member(model, tmp_path):
    _, path = model
    bad = replaced(path, tmp_path / "extra.npz", notes=np.arange(3))
    assert "notes" in load_error(bad)


def test_trailing_data_in_a_member(model, tmp_path):
    """Data after the array its header declares: numpy's reader stopped at the declared
    size and never reached the CRC; fastbp loaded such a file."""
    _, path = model
    raw = dict(members(path))["weights_0.npy"]
    bad = replaced(path, tmp_path / "trailing.npz", weights_0=raw + b"\0" * 64)
    assert "bytes" in load_error(bad)


def test_deflated_member_is_refused(model, tmp_path):
    """fastbp writes members stored; a compressed member is not a file it wrote."""
    _, path = model
    bad = tmp_path / "deflated.npz"
    write_zip(bad, members(path), compression=zipfile.ZIP_DEFLATED)
    assert "compressed" in load_error(bad)


def _deflated_bomb(path, entries, name, prefix, n_zeros):
    """A zip whose member `name` is `prefix` then n_zeros zero bytes, deflated (about
    1000:1), written with raw records so that building it does not take n_zeros of
    memory or time. The CRC is left 0: only a reader that inflates the whole member
    ever finds that out."""
    chunk = 1 << 20
    assert n_zeros % chunk == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(b"\0" * chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    block2 = comp.compress(b"\0" * chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    assert block == block2  # after a full flush the same input deflates the same
    tail = comp.flush(zlib.Z_FINISH)
    comp_size = len(head) + len(block) * (n_zeros // chunk) + len(tail)
    size = len(prefix) + n_zeros
    out, directory = bytearray(), bytearray()
    for entry_name, data in entries + [(name, None)]:
        fname = entry_name.encode()
        offset = len(out)
        if data is None:
            method, crc, csize, usize = 8, 0, comp_size, size
        else:
            method, crc, csize, usize = 0, zlib.crc32(data), len(data), len(data)
        extra = struct.pack("<HHQQ", 1, 16, usize, csize)  # zip64: sizes over 4 GiB fit
        out += struct.pack("<4sHHHHHIIIHH", LOCAL, 45, 0, method, 0, 0x21, crc,
                           0xFFFFFFFF, 0xFFFFFFFF, len(fname), len(extra)) + fname + extra
        if data is None:
            out += head
            for _ in range(n_zeros // chunk):
                out += block
            out += tail
        else:
            out += data
        cextra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", CENTRAL, 45, 45, 0, method, 0, 0x21,
                                 crc, 0xFFFFFFFF, 0xFFFFFFFF, len(fname), len(cextra), 0, 0, 0,
                                 0, 0xFFFFFFFF) + fname + cextra
    n = len(entries) + 1
    start = len(out)
    out += directory
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(directory), start, 0)
    path.write_bytes(bytes(out))
    return path


def _quick_and_small(load, path, seconds=2.0, peak=64 << 20):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        msg = load_error(path, load)
    finally:
        elapsed = time.perf_counter() - t0
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, elapsed
    assert top < peak, top
    return msg


def test_deflate_bomb_member_is_refused_quickly(model, tmp_path):
    """weights_0 holds its right header and data, then 2 GiB of zeros deflated to about
    2 MB. Before: numpy read the declared bytes and ignored the rest, and the file
    loaded. Now: refused from the directory, nothing inflated."""
    _, path = model
    entries = [(n, d) for n, d in members(path) if n != "weights_0.npy"]
    raw = dict(members(path))["weights_0.npy"]
    bad = _deflated_bomb(tmp_path / "bomb.npz", entries, "weights_0.npy", raw, 2 << 30)
    assert bad.stat().st_size < 4 << 20
    _quick_and_small(fastbp.load, bad)


# ---------------------------------------------------------------------------------------
# Member headers and sizes: checked before anything is allocated or read
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2 ** 45,), (3, 2 ** 45), (2 ** 62, 2 ** 62), (4, 3), ()])
def test_parameter_header_claims_another_shape(model, tmp_path, shape):
    """(2**45,) floats was a MemoryError (numpy allocated what the header said)."""
    _, path = model
    header, data = split_npy(dict(members(path))["weights_0.npy"])
    header["shape"] = shape
    bad = replaced(path, tmp_path / "shape.npz", weights_0=npy_with_header(header, data))
    _quick_and_small(fastbp.load, bad)
    _quick_and_small(reference.load, bad)


@pytest.mark.parametrize("key", ["layer_sizes", "activation", "checksum", "loss"])
def test_config_header_claims_a_huge_array(model, tmp_path, key):
    _, path = model
    header, data = split_npy(dict(members(path))[key + ".npy"])
    header["shape"] = (2 ** 40,)
    bad = replaced(path, tmp_path / "huge.npz", **{key: npy_with_header(header, data)})
    _quick_and_small(fastbp.load, bad)


@pytest.mark.parametrize("descr", ["<f8", ">f4", "|O", "<i4", "<U1", "|V4", "<c8"])
def test_parameter_header_claims_another_dtype(model, tmp_path, descr):
    _, path = model
    header, data = split_npy(dict(members(path))["biases_1.npy"])
    header["descr"] = descr
    bad = replaced(path, tmp_path / "dtype.npz", biases_1=npy_with_header(header, data))
    load_error(bad)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda raw: raw[:6] + b"\x02\x00" + raw[8:], id="version-2.0-with-1.0-length"),
    pytest.param(lambda raw: raw[:6] + b"\x09\x00" + raw[8:], id="version-9"),
    pytest.param(lambda raw: b"\x93NUMPX" + raw[6:], id="magic"),
    pytest.param(lambda raw: raw[:8] + struct.pack("<H", 0xFFFF) + raw[10:], id="header-length"),
    pytest.param(lambda raw: raw.replace(b"'descr'", b"'dascr'"), id="header-key"),
    pytest.param(lambda raw: raw.replace(b"{", b"[", 1), id="header-syntax"),
    pytest.param(lambda raw: raw.replace(b"'shape': (", b"'shape': ('", 1), id="shape-syntax"),
    pytest.param(lambda raw: raw[:20], id="short"),
])
@pytest.mark.parametrize("key", ["weights_0", "layer_sizes", "format"])
def test_damaged_npy_header(model, tmp_path, key, edit):
    _, path = model
    raw = dict(members(path))[key + ".npy"]
    bad = replaced(path, tmp_path / "header.npz", **{key: edit(raw)})
    load_error(bad)


def test_layer_sizes_larger_than_the_file(model, tmp_path):
    """layer_sizes and every header claim a 2**40-unit layer: refused by the file's size
    (was MemoryError)."""
    _, path = model
    parts = dict(members(path))
    new = {"layer_sizes": np.array([3, 2 ** 40, 2], dtype=np.int64)}
    for key, shape in [("weights_0", (3, 2 ** 40)), ("biases_0", (2 ** 40,)),
                       ("weights_1", (2 ** 40, 2))]:
        header, data = split_npy(parts[key + ".npy"])
        header["shape"] = shape
        new[key] = npy_with_header(header, data)
    bad = replaced(path, tmp_path / "big.npz", **new)
    _quick_and_small(fastbp.load, bad)
    _quick_and_small(reference.load, bad)


# ---------------------------------------------------------------------------------------
# The checksum covers the configuration
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("activation", np.array(["tanh"])),
    ("activation", np.array(["RELU"])),   # the same activation, spelled otherwise
    ("activation", np.array(["leaky_relu"])),
    ("loss", np.array("binary_cross_entropy")),
    ("output_activation", np.array("sigmoid")),
])
def test_edited_configuration_fails_the_checksum(model, tmp_path, key, value):
    """Was loaded as edited: the checksum covered the parameters only."""
    net, path = model
    assert net.activation == ["relu"]
    bad = replaced(path, tmp_path / "edited.npz", **{key: value})
    load_error(bad)
    load_error(bad, reference.load)


@pytest.mark.parametrize("edit", [
    pytest.param({"output_activation": np.array("tanh")}, id="output-activation"),
    pytest.param({"init": np.array("he_normal")}, id="init"),
])
def test_edited_mse_configuration_fails_the_checksum(tmp_path, edit):
    net = small(loss="mse", output_activation="identity", sizes=(3, 5, 2), dtype=np.float64)
    path = tmp_path / "mse.npz"
    net.save(path)
    msg = load_error(replaced(path, tmp_path / "edited.npz", **edit))
    assert "checksum" in msg


def test_init_is_saved(tmp_path):
    net = small(init="he_normal")
    net.save(tmp_path / "m.npz")
    assert fastbp.load(tmp_path / "m.npz").init == "he_normal"
    assert reference.load(tmp_path / "m.npz").init == "he_normal"


def test_version_1_files_still_load(tmp_path):
    for net in [small(), small(cls=reference.Network, loss="mse", output_activation="tanh",
                               dtype=np.float64, sizes=(3, 5, 4, 2), activation="gelu")]:
        path = write_v1(net, tmp_path / "v1.npz")
        for load in (fastbp.load, reference.load):
            assert same_network(net, load(path))


def test_version_1_file_with_damaged_parameters(tmp_path):
    net = small()
    path = write_v1(net, tmp_path / "v1.npz")
    W = net.weights[1].copy()
    W.view(np.uint32)[0, 0] ^= 1
    assert "checksum" in load_error(replaced(path, tmp_path / "bad.npz", weights_1=W))


def test_version_2_file_relabelled_version_1(model, tmp_path):
    """The version 1 rules (checksum over the parameters only) apply only to files with
    exactly version 1's members and a checksum of version 1's kind."""
    _, path = model
    bad = replaced(path, tmp_path / "v1.npz", format_version=np.array(1, dtype=np.int64))
    load_error(bad)
    bad2 = replaced(bad, tmp_path / "v1b.npz", init=None)
    assert "checksum" in load_error(bad2)


def test_version_1_file_relabelled_version_2(tmp_path):
    path = write_v1(small(), tmp_path / "v1.npz")
    bad = replaced(path, tmp_path / "v2.npz", format_version=np.array(2, dtype=np.int64))
    load_error(bad)
    bad2 = replaced(bad, tmp_path / "v2b.npz", init=np.array("glorot_uniform"))
    assert "checksum" in load_error(bad2)


# ---------------------------------------------------------------------------------------
# Saving: umask, symlinks, path types
# ---------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_file_mode_follows_the_umask(tmp_path, umask):
    net = small()
    old = os.umask(umask)
    try:
        net.save(tmp_path / "m.npz")
        np.save(tmp_path / "numpy.npy", np.arange(3))
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / "m.npz").st_mode & 0o777
    assert mode == 0o666 & ~umask
    assert mode == os.stat(tmp_path / "numpy.npy").st_mode & 0o777


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_save_follows_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "model.npz"
    link = tmp_path / "links" / "model.npz"
    a, b = small(seed=1), small(seed=2)
    a.save(target)
    link.symlink_to(target)
    b.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert same_network(b, fastbp.load(target))
    assert same_network(b, fastbp.load(link))
    assert sorted(os.listdir(tmp_path / "real")) == ["model.npz"]
    assert sorted(os.listdir(tmp_path / "links")) == ["model.npz"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_save_through_a_dangling_symlink_creates_its_target(tmp_path):
    link, target = tmp_path / "link.npz", tmp_path / "target.npz"
    link.symlink_to("target.npz")  # relative, as ln -s would make it
    net = small()
    net.save(link)
    assert link.is_symlink() and target.is_file()
    assert same_network(net, fastbp.load(target))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_save_to_a_symlink_loop_raises_oserror(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError):
        small().save(a)
    assert a.is_symlink() and b.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz"]


class _PathLike:
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike-str", "pathlike-bytes", "path"])
@pytest.mark.parametrize("cls", [fastbp.Network, reference.Network])
def test_save_and_load_take_str_bytes_and_pathlike(tmp_path, kind, cls):
    """bytes was a TypeError from save."""
    net = small(cls=cls)
    plain = str(tmp_path / "m.npz")
    path = {"str": plain, "bytes": os.fsencode(plain), "pathlike-str": _PathLike(plain),
            "pathlike-bytes": _PathLike(os.fsencode(plain)), "path": tmp_path / "m.npz"}[kind]
    net.save(path)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    load = fastbp.load if cls is fastbp.Network else reference.load
    assert same_network(net, load(path))


def test_load_error_names_a_bytes_path(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        fastbp.load(os.fsencode(str(bad)))


def test_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.npz"))):
        fastbp.load(os.fsencode(str(tmp_path / "nope.npz")))


def test_save_refuses_parameters_that_do_not_match_the_configuration(tmp_path):
    net = small(cls=reference.Network)
    net.weights[0] = net.weights[0].astype(np.float64)
    with pytest.raises(ValueError):
        net.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_fortran_ordered_parameter_round_trips(tmp_path):
    """A reference network's weights can be any layout; the file stores C order."""
    net = small(cls=reference.Network)
    net.weights[0] = np.asfortranarray(net.weights[0])
    net.save(tmp_path / "m.npz")
    assert same_network(net, reference.load(tmp_path / "m.npz"))


# ---------------------------------------------------------------------------------------
# Every single-bit flip, and random damage
# ---------------------------------------------------------------------------------------

def _loads_or_value_error(path, net, load=fastbp.load):
    """'loaded' (identical to net) or 'refused' (ValueError naming the file); anything
    else fails the test."""
    try:
        loaded = load(path)
    except ValueError as exc:
        assert os.fsdecode(path) in str(exc), exc
        return "refused"
    assert same_network(net, loaded)
    return "loaded"


def test_every_single_bit_flip(tmp_path):
    """Each bit of a small model's file flipped in turn: a ValueError naming the file,
    or (a bit zipfile and numpy ignore: a timestamp, a local copy of a directory field)
    exactly the saved network."""
    net = small(sizes=(2, 2), activation=[])
    path = tmp_path / "m.npz"
    net.save(path)
    good = path.read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(len(good)):
            for bit in range(8):
                os.pwrite(fd, bytes([good[i] ^ (1 << bit)]), i)
                try:
                    outcomes[_loads_or_value_error(path, net)] += 1
                except BaseException:
                    print(f"byte {i} bit {bit}")
                    raise
            os.pwrite(fd, good[i:i + 1], i)
    finally:
        os.close(fd)
    # the flips that load touch only what zipfile ignores: local copies of directory
    # fields, times, "version made by", the end record's disk numbers and counts
    assert outcomes["refused"] > 0.75 * 8 * len(good), outcomes


_NETS = {}


def _saved_networks(folder):
    """Three small networks, two sharing every shape (so that members swap cleanly)."""
    if not _NETS:
        nets = {"a": small(activation="relu", seed=0),
                "b": small(activation="tanh", init="he_uniform", seed=1),
                "c": small(cls=reference.Network, sizes=(3, 4, 2), loss="mse",
                           output_activation="sigmoid", dtype=np.float64, seed=2)}
        for key, net in nets.items():
            path = os.path.join(folder, f"{key}.npz")
            net.save(path)
            _NETS[key] = (net, path, open(path, "rb").read(), members(path))
    return _NETS


_HEADER_EDITS = [("descr", "<f8"), ("descr", "<f4"), ("descr", ">f4"), ("descr", "|O"),
                 ("descr", "<i8"), ("descr", "<U4"), ("fortran_order", True),
                 ("shape", ()), ("shape", (2,)), ("shape", (4, 3)), ("shape", (3, 4)),
                 ("shape", (2 ** 45,)), ("shape", (2 ** 31, 2 ** 31))]
_CONFIG_EDITS = [
    ("activation", np.array(["relu"])), ("activation", np.array(["tanh"])),
    ("activation", np.array([], dtype=np.str_)), ("activation", np.array(["nope"])),
    ("loss", np.array("cross_entropy")), ("loss", np.array("mse")), ("loss", np.array(1)),
    ("output_activation", np.array("softmax")), ("output_activation", np.array("sigmoid")),
    ("dtype", np.array("float32")), ("dtype", np.array("float64")),
    ("dtype", np.array("float16")), ("init", np.array("glorot_uniform")),
    ("init", np.array("he_uniform")), ("layer_sizes", np.array([3, 4, 2])),
    ("layer_sizes", np.array([3, 2, 4])), ("layer_sizes", np.array([3, 2 ** 40, 2])),
    ("format_version", np.array(1)), ("format_version", np.array(2)),
    ("format_version", np.array(3)), ("format", np.array("fastbp.Network")),
    ("checksum", np.array("0" * 64)),
]

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.floats(0, 1, exclude_max=True), min_size=1,
                                        max_size=3), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("swap"), st.integers(0, 1), st.integers(1, 2 ** 13 - 1)),
    st.tuples(st.just("header"), st.integers(0, 12), st.sampled_from(_HEADER_EDITS)),
    st.tuples(st.just("config"), st.sampled_from(_CONFIG_EDITS)),
)


def _damage(nets, base, mutation, bad):
    """Write to `bad` the saved file of network `base` damaged as `mutation` says."""
    net, path, data, parts = nets[base]
    kind = mutation[0]
    if kind == "flip":
        damaged = bytearray(data)
        for where in mutation[1]:
            damaged[int(where * len(data))] ^= 1 << mutation[2]
        bad.write_bytes(bytes(damaged))
    elif kind == "truncate":
        bad.write_bytes(data[:int(mutation[1] * len(data))])
    elif kind == "swap":
        other = dict(nets[[k for k in "abc" if k != base][mutation[1]]][3])
        chosen = [i for i in range(len(parts)) if mutation[2] >> (i % 13) & 1]
        write_zip(bad, [(n, other.get(n, d) if i in chosen else d)
                        for i, (n, d) in enumerate(parts)])
    elif kind == "header":
        name, raw = parts[mutation[1] % len(parts)]
        header, body = split_npy(raw)
        header[mutation[2][0]] = mutation[2][1]
        edited = dict(parts)
        edited[name] = npy_with_header(header, body)
        write_zip(bad, list(edited.items()))
    else:
        key, value = mutation[1]
        edited = dict(parts)
        edited[key + ".npy"] = npy(value)
        write_zip(bad, list(edited.items()))


def _refused_or_same(nets, base, mutation, bad):
    """Load raises ValueError naming the file, or returns the saved network exactly (or,
    after a swap, the other network: swapping in every member that differs gives it
    whole)."""
    kind = mutation[0]
    try:
        loaded = fastbp.load(bad)
    except ValueError as exc:
        assert str(bad) in str(exc)
        return "refused"
    assert any(same_network(n, loaded) for n, *_ in nets.values()), mutation
    assert same_network(nets[base][0], loaded) or kind == "swap", mutation
    return "loaded"


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate, Phase.shrink],
          suppress_health_check=list(HealthCheck))
@given(base=st.sampled_from("abc"), mutation=_mutation)
def test_damaged_file_is_refused_or_loads_the_same(tmp_path_factory, base, mutation):
    """Random damage to a saved file: bit flips, truncation, members swapped in from
    another saved network, an edited .npy header, an edited configuration member."""
    folder = tmp_path_factory.getbasetemp()
    nets = _saved_networks(str(folder))
    bad = folder / "damaged.npz"
    _damage(nets, base, mutation, bad)
    event(f"{mutation[0]}: {_refused_or_same(nets, base, mutation, bad)}")


def test_every_header_and_config_edit(tmp_path):
    """The finite edits of the test above, all of them: each .npy header edit of each
    member, each configuration edit, in each saved network."""
    nets = _saved_networks(str(tmp_path))
    bad = tmp_path / "damaged.npz"
    outcomes = {"loaded": 0, "refused": 0}
    for base in "abc":
        mutations = [("config", edit) for edit in _CONFIG_EDITS]
        mutations += [("header", i, edit) for i in range(len(nets[base][3]))
                      for edit in _HEADER_EDITS]
        for mutation in mutations:
            _damage(nets, base, mutation, bad)
            outcomes[_refused_or_same(nets, base, mutation, bad)] += 1
    # those that load change nothing: '<f4' on a float32 member, shape () on a scalar,
    # Fortran order on a 1-D array, a configuration member set to its own value
    assert outcomes["refused"] > 0.75 * sum(outcomes.values()), outcomes
