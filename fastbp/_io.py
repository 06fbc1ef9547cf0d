"""Network files: a plain .npz (NumPy's zip of .npy arrays), never pickled.

Layout, format version 1:
    format            "fastbp.Network"
    format_version    1
    layer_sizes       int64 (L+1,)
    activation        str (L-1,)  hidden activations
    loss, output_activation, dtype   str scalars
    weights_<l>, biases_<l>          the parameters, in the network's dtype
    checksum          sha256 hex digest of the parameters' bytes, in layer order

The file is written to a temporary name in the same folder and renamed, so a crash never
leaves a half-written model under the real name.
"""

import hashlib
import os
import tempfile
import zipfile

import numpy as np

FORMAT_NAME = "fastbp.Network"
FORMAT_VERSION = 1


def _checksum(weights, biases):
    h = hashlib.sha256()
    for W, b in zip(weights, biases):
        h.update(np.ascontiguousarray(W).tobytes())
        h.update(np.ascontiguousarray(b).tobytes())
    return h.hexdigest()


def save_network(net, path):
    path = os.fspath(path)
    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "layer_sizes": np.array(net.layer_sizes, dtype=np.int64),
        "activation": np.array(net.activation, dtype=np.str_).reshape(-1),
        "loss": np.array(net.loss_name),
        "output_activation": np.array(net.output_activation),
        "dtype": np.array(net.dtype.name),
        "checksum": np.array(_checksum(net.weights, net.biases)),
    }
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{l}"] = W
        arrays[f"biases_{l}"] = b
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _str(data, key):
    value = data[key]
    if value.dtype.kind != "U" or value.ndim != 0:
        raise ValueError(f"field {key!r} is not a string")
    return str(value)


def load_network(path, cls):
    """Read `path` into a new `cls` (fastbp.Network or fastbp.reference.Network)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        # our own file handle, so that it is closed even when np.load fails half-way
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            keys = set(data.files)
            if "format" not in keys or _str(data, "format") != FORMAT_NAME:
                raise ValueError("not a fastbp model file (no 'format' field of fastbp.Network)")
            version = data["format_version"]
            if version.dtype.kind not in "iu" or version.ndim != 0:
                raise ValueError("field 'format_version' is not an integer")
            if int(version) != FORMAT_VERSION:
                raise ValueError(f"format version {int(version)} is not supported "
                                 f"(expected {FORMAT_VERSION})")
            sizes = data["layer_sizes"]
            if sizes.dtype.kind not in "iu" or sizes.ndim != 1:
                raise ValueError("field 'layer_sizes' is not a 1-D integer array")
            layer_sizes = [int(n) for n in sizes]
            if data["activation"].dtype.kind != "U":
                raise ValueError("field 'activation' is not an array of strings")
            activation = [str(a) for a in data["activation"]]
            weights = [data[f"weights_{l}"] for l in range(len(layer_sizes) - 1)]
            biases = [data[f"biases_{l}"] for l in range(len(layer_sizes) - 1)]
            # the stored arrays must have the shapes layer_sizes claims before a network of
            # that size is allocated: a damaged size field is found here, not as a
            # MemoryError or as gigabytes allocated and initialized for nothing
            for l, (W, b) in enumerate(zip(weights, biases)):
                n_in, n_out = layer_sizes[l], layer_sizes[l + 1]
                if W.shape != (n_in, n_out) or b.shape != (n_out,):
                    raise ValueError(f"layer {l} parameters have shapes {W.shape}, {b.shape}; "
                                     f"layer_sizes says ({n_in}, {n_out}), ({n_out},)")
            net = cls(layer_sizes, activation=activation, loss=_str(data, "loss"),
                      output_activation=_str(data, "output_activation") if _str(data, "loss") == "mse" else None,
                      dtype=np.dtype(_str(data, "dtype")), seed=0)
            for l, (W, b) in enumerate(zip(weights, biases)):  # shapes: checked above
                if W.dtype != net.dtype or b.dtype != net.dtype:
                    raise ValueError(f"layer {l} parameters are {W.dtype}; expected {net.dtype}")
            if _checksum(weights, biases) != _str(data, "checksum"):
                raise ValueError("checksum mismatch: the parameters are damaged")
    except FileNotFoundError:
        raise
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from exc
    for l, (W, b) in enumerate(zip(weights, biases)):
        net.weights[l][...] = W
        net.biases[l][...] = b
    return net
