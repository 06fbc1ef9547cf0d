"""Network files: a plain .npz (NumPy's zip of .npy arrays), never pickled.

Layout, format version 2 (what save writes):
    format            "fastbp.Network"
    format_version    2
    layer_sizes       int64 (L+1,)
    activation        str (L-1,)  hidden activations
    loss, output_activation, dtype, init   str scalars
    weights_<l>, biases_<l>          the parameters, in the network's dtype, C order
    checksum          sha256 hex digest of the configuration (every member above but the
                      parameters, see _config_bytes) followed by the parameters' bytes in
                      layer order

Version 1, written before version 2, has no init member and its checksum covers the
parameters only. Such files still load, but only when format_version says 1 and the
members are exactly version 1's: a version 2 file whose version was damaged to 1 still
has its init member and a checksum that covers more than the parameters, so it is
refused rather than read with the weaker check.

Saving writes a temporary file in the target's folder and renames it onto the target
(os.replace), so a crash never leaves a half-written model under the real name.

Loading fails closed: whatever is wrong with a file (the zip layer, a member's .npy
header, a size, the configuration, the parameters) ends in a ValueError that names the
file, and nothing is allocated or decompressed beyond what the file's own size and its
configuration allow. Only opening the file raises OSError (FileNotFoundError when it is
missing), as open() does.
"""

import errno
import hashlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib

import numpy as np

from ._common import ACTIVATIONS, INITS, LOSSES

FORMAT_NAME = "fastbp.Network"
FORMAT_VERSION = 2

# the members besides weights_<l> and biases_<l>, by format version
_CONFIG_MEMBERS = {
    1: ("format", "format_version", "layer_sizes", "activation", "loss",
        "output_activation", "dtype", "checksum"),
    2: ("format", "format_version", "layer_sizes", "activation", "loss",
        "output_activation", "dtype", "init", "checksum"),
}
_DTYPES = ("float32", "float64")

# A member's .npy header: ours are 128 bytes (numpy pads them to a multiple of 64).
_NPY_HEADER_MAX = 4096
# A configuration member's data: a million bytes is tens of thousands of layers.
_CONFIG_MEMBER_MAX = 1 << 20
# the fixed part of a zip local file header, before the member's name and extra field
_ZIP_LOCAL_HEADER = 30

# Everything reading a damaged file can raise: zipfile alone raises BadZipFile, OSError
# (a seek before the start), EOFError, struct.error, NotImplementedError (an unknown
# compression or flag), RuntimeError (an encryption flag), UnicodeDecodeError and
# zlib.error; numpy's header parser ValueError, SyntaxError and TypeError. All of them
# become one ValueError naming the file. MemoryError is not among them: no size in a file
# is trusted before it is checked against the file's size, so it cannot come from one.
_DAMAGE = (ValueError, TypeError, KeyError, IndexError, OverflowError, EOFError, OSError,
           SyntaxError, NotImplementedError, RuntimeError, struct.error, zlib.error,
           zipfile.BadZipFile, zipfile.LargeZipFile)


# ---------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------

def _config_bytes(config):
    """The configuration as the version 2 checksum sees it: canonical JSON (sorted keys,
    no spaces, ASCII) of the values exactly as stored, so editing any configuration
    member (relu -> tanh, even relu -> RELU) changes it."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode("ascii")


def _checksum(weights, biases, config=None):
    """sha256 hex digest of the parameters' bytes (C order, layer by layer), preceded in
    version 2 (config given) by the configuration's length and bytes. The layer sizes in
    the configuration fix where one array ends and the next begins, so the byte stream
    means one thing only."""
    h = hashlib.sha256()
    if config is not None:
        text = _config_bytes(config)
        h.update(len(text).to_bytes(8, "little"))
        h.update(text)
    for W, b in zip(weights, biases):
        h.update(np.ascontiguousarray(W).reshape(-1).view(np.uint8))
        h.update(np.ascontiguousarray(b).reshape(-1).view(np.uint8))
    return h.hexdigest()


def _config_of(net):
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "layer_sizes": [int(n) for n in net.layer_sizes],
        "activation": [str(a) for a in net.activation],
        "loss": str(net.loss_name),
        "output_activation": str(net.output_activation),
        "dtype": np.dtype(net.dtype).name,
        "init": str(net.init),
    }


# ---------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------

def _create_temporary(folder):
    """A new file in `folder` for writing: (fd, path). Created with mode 0666 so the
    umask (and any default ACL) shapes its permissions as for any file a program
    writes, like numpy.save's; tempfile.mkstemp would make it 0600. O_EXCL: never an
    existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".fastbp-{secrets.token_hex(8)}.npz.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", folder)


def _sync_folder(folder):
    """Best effort: make the rename itself durable (POSIX; not possible on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_network(net, path):
    """Write `net` to `path` (str, bytes or os.PathLike) atomically."""
    config = _config_of(net)
    dtype = np.dtype(net.dtype)
    sizes = config["layer_sizes"]
    weights, biases = [], []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        # never write a file that load would refuse (a reference network's parameter
        # lists can be assigned anything)
        n_in, n_out = sizes[l], sizes[l + 1]
        W, b = np.asarray(W), np.asarray(b)
        if W.shape != (n_in, n_out) or b.shape != (n_out,) or W.dtype != dtype or b.dtype != dtype:
            raise ValueError(f"layer {l} parameters are {W.dtype} {W.shape}, {b.dtype} {b.shape}; "
                             f"the network's configuration says {dtype} ({n_in}, {n_out}), ({n_out},)")
        weights.append(np.ascontiguousarray(W))
        biases.append(np.ascontiguousarray(b))
    arrays = {
        "format": np.array(config["format"]),
        "format_version": np.array(config["format_version"], dtype=np.int64),
        "layer_sizes": np.array(sizes, dtype=np.int64),
        "activation": np.array(config["activation"], dtype=np.str_).reshape(-1),
        "loss": np.array(config["loss"]),
        "output_activation": np.array(config["output_activation"]),
        "dtype": np.array(config["dtype"]),
        "init": np.array(config["init"]),
        "checksum": np.array(_checksum(weights, biases, config)),
    }
    for l, (W, b) in enumerate(zip(weights, biases)):
        arrays[f"weights_{l}"] = W
        arrays[f"biases_{l}"] = b

    # A symlink at `path` is followed, as open() would: its target is replaced and the
    # link stays. realpath leaves a symlink only when it cannot be resolved (a loop).
    target = os.path.realpath(os.fsdecode(os.fspath(path)))
    if os.path.islink(target):
        raise OSError(errno.ELOOP, "too many levels of symbolic links", os.fsdecode(path))
    folder = os.path.dirname(target)
    fd, tmp = _create_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # plain numeric and text arrays: nothing is pickled
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _sync_folder(folder)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

def _read_member(zf, info, expect):
    """The array in zip member `info`, read without trusting any size the file states.

    expect(shape, dtype) checks what the member's .npy header declares against what the
    configuration implies and returns the data's size in bytes, BEFORE any data is read;
    the zip directory must then say the member holds exactly that header and that data,
    and the read asks for one byte more than that (never more), so trailing data is
    found and zipfile, having reached the member's end, checks its CRC-32.
    """
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version != (1, 0):  # np.savez writes 1.0 for every array fastbp stores
            raise ValueError(f".npy format {version}, not 1.0")
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(
            member, max_header_size=_NPY_HEADER_MAX)
        nbytes = expect(shape, dtype)
        header = member.tell()
        if info.file_size != header + nbytes:
            raise ValueError(f"holds {info.file_size - header} bytes of data; its header "
                             f"declares {nbytes}")
        data = member.read(nbytes + 1)
        if len(data) != nbytes:
            raise ValueError(f"holds {len(data)} bytes of data; its header declares {nbytes}")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _config_member(kind, shape):
    """expect() for a configuration member: text (kind "U") or integers (kind "i"),
    `shape` () for a scalar or None for a 1-D array of any length, at most
    _CONFIG_MEMBER_MAX bytes."""
    def expect(got_shape, dtype):
        right_kind = dtype.kind in ("iu" if kind == "i" else "U")
        right_shape = len(got_shape) == 1 if shape is None else got_shape == shape
        if not (right_kind and right_shape):
            what = "text" if kind == "U" else "integers"
            want = "a scalar" if shape == () else "a 1-D array"
            raise ValueError(f"is {dtype} of shape {got_shape}; expected {what}, {want}")
        nbytes = math.prod(got_shape) * dtype.itemsize
        if nbytes > _CONFIG_MEMBER_MAX:
            raise ValueError(f"declares {nbytes} bytes, more than a configuration member holds")
        return nbytes
    return expect


def _parameter(shape, dtype):
    """expect() for a parameter: exactly the shape and dtype the configuration implies."""
    def expect(got_shape, got_dtype):
        if got_shape != shape or got_dtype != dtype:
            raise ValueError(f"is {got_dtype} of shape {got_shape}; the configuration says "
                             f"{dtype} of shape {shape}")
        return math.prod(shape) * dtype.itemsize
    return expect


def _read(f):
    """(constructor arguments, weights, biases) from the open file `f`; raises one of
    _DAMAGE for anything wrong with it. The order matters: the zip directory is checked
    against the file's size, the configuration is read (small members) and checked, the
    parameters' sizes are checked against the configuration and the file's size, and only
    then are the parameters read and the checksum compared."""
    file_size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise ValueError("two members have the same name")
        members = {}
        for info in infos:
            # fastbp writes every member stored (np.savez), so the data read is the data
            # on disk: nothing here is ever decompressed, and no member can claim more
            # bytes than the file holds
            if info.flag_bits & 0x1:
                raise ValueError(f"member {info.filename!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise ValueError(f"member {info.filename!r} is compressed (method "
                                 f"{info.compress_type}); fastbp stores members uncompressed")
            if info.header_offset + _ZIP_LOCAL_HEADER + info.compress_size > file_size:
                raise ValueError(f"member {info.filename!r} claims {info.file_size} bytes at "
                                 f"offset {info.header_offset}, past the end of the file "
                                 f"({file_size} bytes)")
            if not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected member {info.filename!r}")
            members[info.filename[:-len(".npy")]] = info

        def read(key, expect):
            if key not in members:
                raise ValueError(f"member {key!r} is missing")
            try:
                return _read_member(zf, members[key], expect)
            except ValueError as exc:
                raise ValueError(f"member {key!r}: {exc}") from exc

        def text(key):
            return str(read(key, _config_member("U", ())))

        def integer(key):
            return int(read(key, _config_member("i", ())))

        if "format" not in members or text("format") != FORMAT_NAME:
            raise ValueError(f"not a fastbp model file (no 'format' member of {FORMAT_NAME})")
        version = integer("format_version")
        if version not in _CONFIG_MEMBERS:
            raise ValueError(f"format version {version} is not supported "
                             f"(this fastbp reads {', '.join(map(str, _CONFIG_MEMBERS))})")

        layer_sizes = [int(n) for n in read("layer_sizes", _config_member("i", None))]
        if len(layer_sizes) < 2 or min(layer_sizes) < 1:
            raise ValueError(f"layer_sizes {layer_sizes} is not two or more positive sizes")
        n_layers = len(layer_sizes) - 1
        expected = set(_CONFIG_MEMBERS[version])
        expected.update(f"{kind}_{l}" for l in range(n_layers) for kind in ("weights", "biases"))
        if set(members) != expected:
            missing, extra = sorted(expected - set(members)), sorted(set(members) - expected)
            raise ValueError(f"the members are not those of a format {version} file of "
                             f"{n_layers} layers (missing {missing}, unexpected {extra})")

        # Configuration: only the exact names save writes (no aliases, no other case).
        activation = [str(a) for a in read("activation", _config_member("U", None))]
        if len(activation) != n_layers - 1 or not all(a in ACTIVATIONS for a in activation):
            raise ValueError(f"activation {activation} is not {n_layers - 1} of "
                             f"{', '.join(ACTIVATIONS)}")
        loss = text("loss")
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
        output_activation = text("output_activation")
        implied = LOSSES[loss][1]  # None for mse, whose output activation is free
        if output_activation != implied and (implied or output_activation not in ACTIVATIONS):
            raise ValueError(f"output_activation {output_activation!r} does not go with "
                             f"loss {loss!r}")
        dtype_name = text("dtype")
        if dtype_name not in _DTYPES:
            raise ValueError(f"dtype {dtype_name!r} is not one of {', '.join(_DTYPES)}")
        dtype = np.dtype(dtype_name)
        init = text("init") if version >= 2 else "glorot_uniform"
        if init not in INITS:
            raise ValueError(f"init {init!r} is not one of {', '.join(INITS)}")
        checksum = text("checksum")

        # Sizes: the parameters the configuration implies must fit in the file before
        # one of them is read (with the checks in _read_member, nothing allocated
        # exceeds the file's size).
        shapes = [((n_in, n_out), (n_out,))
                  for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])]
        n_bytes = sum(math.prod(w) + math.prod(b) for w, b in shapes) * dtype.itemsize
        if n_bytes > file_size:
            raise ValueError(f"layer_sizes {layer_sizes} needs {n_bytes} bytes of {dtype} "
                             f"parameters; the file holds {file_size} bytes")
        weights = [read(f"weights_{l}", _parameter(w, dtype)) for l, (w, _) in enumerate(shapes)]
        biases = [read(f"biases_{l}", _parameter(b, dtype)) for l, (_, b) in enumerate(shapes)]

    if version == 1:
        expected_checksum = _checksum(weights, biases)
    else:
        expected_checksum = _checksum(weights, biases, {
            "format": FORMAT_NAME, "format_version": version, "layer_sizes": layer_sizes,
            "activation": activation, "loss": loss, "output_activation": output_activation,
            "dtype": dtype_name, "init": init})
    if checksum != expected_checksum:
        raise ValueError("checksum mismatch: the configuration or the parameters are damaged")
    arguments = dict(layer_sizes=layer_sizes, activation=activation, loss=loss,
                     output_activation=output_activation if loss == "mse" else None,
                     dtype=dtype, init=init)
    return arguments, weights, biases


def load_network(path, cls):
    """Read `path` (str, bytes or os.PathLike) into a new `cls` (fastbp.Network or
    fastbp.reference.Network)."""
    path = os.fspath(path)
    name = os.fsdecode(path)
    # Opening stays outside the conversion to ValueError: a missing file is still
    # FileNotFoundError, a folder or an unreadable file the OSError open raises.
    with open(path, "rb") as f:
        try:
            arguments, weights, biases = _read(f)
            # allocated only now: the configuration has passed its checksum
            net = cls(seed=0, **arguments)
        except _DAMAGE as exc:
            raise ValueError(f"cannot load {name!r}: {exc}") from exc
    for l, (W, b) in enumerate(zip(weights, biases)):  # shapes and dtypes: checked
        net.weights[l][...] = W
        net.biases[l][...] = b
    return net
