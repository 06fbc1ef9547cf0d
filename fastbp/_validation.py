"""The trust boundary: every public entry point checks and converts its arguments here.

The compiled kernels run without bounds checks and trust what they receive, so everything
they rely on (dtype, shape, C-contiguity, native byte order, finiteness, label ranges) is
established by these functions first. Errors name the argument and what was expected.
"""

import math
import numbers
import operator
import os
import sys

import numpy as np

from ._common import ACTIVATIONS, LOSSES, SUPPORTED_DTYPES, canonical_activation


def check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64; got {dtype!r}") from exc
    if dt not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be np.float32 or np.float64; got {dt}")
    return dt


def check_positive_int(value, name, minimum=1):
    """An int (not a bool, not a float) >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def check_layer_sizes(layer_sizes):
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(
            f"layer_sizes must be a sequence of positive ints such as [784, 128, 10]; "
            f"got {layer_sizes!r}"
        )
    if len(layer_sizes) < 2:
        raise ValueError(
            f"layer_sizes needs at least an input and an output size; got {list(layer_sizes)!r}"
        )
    return tuple(check_positive_int(n, f"layer_sizes[{i}]") for i, n in enumerate(layer_sizes))


def check_activations(activation, n_hidden):
    """One canonical name per hidden layer."""
    if isinstance(activation, str):
        return [canonical_activation(activation)] * n_hidden
    if not isinstance(activation, (list, tuple)):
        raise TypeError(
            f"activation must be a string or a list of one string per hidden layer; "
            f"got {activation!r}"
        )
    if len(activation) != n_hidden:
        raise ValueError(
            f"activation must name one activation per hidden layer ({n_hidden}); "
            f"got {len(activation)} names"
        )
    return [canonical_activation(a, f"activation[{i}]") for i, a in enumerate(activation)]


def check_loss(loss, output_activation):
    """Canonical (loss, output activation) pair."""
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}; got {loss!r}")
    implied = LOSSES[loss][1]
    if implied is None:  # mse: any hidden activation may sit on the output, identity by default
        if output_activation is None:
            return loss, "identity"
        return loss, canonical_activation(output_activation, "output_activation")
    if output_activation is not None and (
        not isinstance(output_activation, str)
        or (output_activation.lower() != implied
            and canonical_activation(output_activation, "output_activation") != implied)
    ):
        raise ValueError(
            f"loss={loss!r} fixes the output activation to {implied!r}; "
            f"got output_activation={output_activation!r}"
        )
    return loss, implied


def check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or a non-negative int; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be None or a non-negative int; got {seed}")
    return int(seed)


def cpu_count():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


_MAX_THREADS = 1 << 16     # far above any machine's cores; keeps C's int from overflowing


def check_n_threads(n_threads):
    """None or a non-zero int (the request, before it is resolved against the machine)."""
    if n_threads is not None:
        if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
            raise TypeError(f"n_threads must be None or a non-zero int; got {n_threads!r}")
        if n_threads == 0 or abs(n_threads) > _MAX_THREADS:
            raise ValueError(f"n_threads must be None or a non-zero int of at most "
                             f"{_MAX_THREADS} in size; got {n_threads}")
        return int(n_threads)
    return None


# libgomp cannot run a parallel region in a child made by fork after the parent ran one:
# the child has none of the parent's worker threads, and the region waits for them
# forever. A child forked after fastbp used threads therefore runs on one thread. (This
# records a fact about the process's OpenMP runtime, not a choice: nothing else reads it.)
_threads_used = False
_forked_after_threads = False


def _note_fork_in_child():
    global _forked_after_threads
    if _threads_used:
        _forked_after_threads = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_fork_in_child)


def effective_n_threads(n_threads, openmp=True, omp_max_threads=None):
    """Threads to use now: see _resolve_n_threads, at most the usable cores; 1 in a child
    forked after this process used threads (libgomp cannot run parallel regions there)."""
    global _threads_used
    # never more threads than usable cores: compute-bound threads beyond them only wait
    # for each other (the results are the same bits for any count)
    resolved = min(_resolve_n_threads(n_threads, openmp, omp_max_threads), cpu_count())
    if _forked_after_threads:
        return 1
    if resolved > 1:
        _threads_used = True
    return resolved


def _resolve_n_threads(n_threads, openmp=True, omp_max_threads=None):
    """Threads to use now (scikit-learn's rule): None follows OMP_NUM_THREADS when it is
    set, else OpenMP's current maximum (which threadpoolctl's limits change) capped at the
    usable cores; a positive int caps; -1 means all cores, -2 all but one, ...; 0 is an
    error; a serial build gives 1."""
    n_threads = check_n_threads(n_threads)
    if not openmp:
        return 1
    cores = cpu_count()
    if n_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
        return max(1, min(omp_max_threads or cores, cores))
    if n_threads < 0:
        return max(1, cores + 1 + n_threads)
    return n_threads


def _as_numeric_array(value, name):
    """np.asarray that refuses what cannot be a real number (strings, complex, objects)."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of real numbers: {exc}") from exc
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except OverflowError as exc:  # a Python int beyond float64's range
            raise ValueError(f"{name} contains a number too large for a float: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must contain real numbers; got objects: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must contain real numbers (bool, int or float); got dtype {arr.dtype}")
    return arr


_FINITE_CHUNK = 1 << 16


def _all_finite(arr):
    """np.isfinite(arr).all() in slices of 64Ki elements: the same speed without a boolean
    temporary the size of the whole data set at every fit."""
    flat = arr.reshape(-1)
    return all(np.isfinite(flat[i:i + _FINITE_CHUNK]).all()
               for i in range(0, flat.size, _FINITE_CHUNK))


def _check_finite(arr, name):
    if not _all_finite(arr):
        raise ValueError(
            f"{name} contains NaN or infinite values (after conversion to {arr.dtype})"
        )


class CsrRows:
    """A checked sparse X as fastbp keeps it: its own copies of a canonical CSR's arrays,
    data (nnz,) finite in the network's dtype, indices (nnz,) int64 in [0, n_features)
    sorted without duplicates within each row, indptr (n_rows + 1,) int64 non-decreasing
    from 0 to nnz. Made by check_X; never shares memory with the caller's matrix, so
    nothing the caller does to its arrays afterwards reaches the kernels."""

    __slots__ = ("data", "indices", "indptr", "shape")
    ndim = 2

    def __init__(self, data, indices, indptr, shape):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (int(shape[0]), int(shape[1]))

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self):
        return self.data.shape[0]

    def __getitem__(self, rows):
        """Rows [start, stop) (a slice of step 1) as a CsrRows (views of these arrays)."""
        if not isinstance(rows, slice):
            raise TypeError("a CsrRows takes a slice of rows")
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("a CsrRows takes a slice of step 1")
        stop = max(start, stop)
        p0, p1 = self.indptr[start], self.indptr[stop]
        return CsrRows(self.data[p0:p1], self.indices[p0:p1],
                       self.indptr[start:stop + 1] - p0, (stop - start, self.shape[1]))

    def astype(self, dtype):
        return CsrRows(self.data.astype(dtype), self.indices, self.indptr, self.shape)

    def toarray(self):
        """The dense (n_rows, n_features) matrix (for the NumPy reference)."""
        out = np.zeros(self.shape, dtype=self.data.dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out


def _scipy_sparse(X):
    """X's scipy.sparse module when X is a scipy sparse matrix or array, else None; never
    imports scipy (a scipy matrix cannot exist unless scipy.sparse is imported)."""
    sparse = sys.modules.get("scipy.sparse")
    if sparse is not None and sparse.issparse(X):
        return sparse
    return None


def check_sparse_X(X, n_features, dtype, name="X"):
    """A scipy CSR or CSC X (matrix or array) as a CsrRows of `dtype` (CSC through scipy's
    tocsr, never densified): TypeError for another format or an index dtype other than
    int32/int64, ValueError for a wrong shape, a non-canonical matrix (unsorted or
    duplicate indices) or non-finite values. The checks run on fastbp's own copies."""
    fmt = X.format
    if fmt not in ("csr", "csc"):
        raise TypeError(f"{name}: a sparse X must be CSR or CSC; got {fmt!r} "
                        f"(convert it with {name}.tocsr())")
    for part in ("indices", "indptr"):
        if getattr(X, part).dtype not in (np.int32, np.int64):
            raise TypeError(f"{name}.{part} must be int32 or int64; got "
                            f"{getattr(X, part).dtype}")
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D with shape (batch, {n_features}); got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {X.shape}); expected at least one row")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns; got shape {X.shape}")
    if X.data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must contain real numbers (bool, int or float); got dtype "
                        f"{X.data.dtype}")
    if fmt == "csc":
        # canonical as given (tocsr would sort the indices anyway), then scipy's tocsr
        _compressed_arrays(X, name)
        X = X.tocsr()
    indices, indptr = _compressed_arrays(X, name)
    with np.errstate(over="ignore"):    # a value past float32's range: the error below
        data = np.array(X.data[:indices.shape[0]], dtype=dtype)
    _check_finite(data, name)
    return CsrRows(data, indices, indptr, (X.shape[0], n_features))


def canonical_csr(X, name="X"):
    """A scipy CSR or CSC X, checked canonical as given (ValueError naming sort_indices()
    or sum_duplicates()), as a scipy CSR (CSC through tocsr): for callers that select
    rows of it before check_X sees them (fastbp.sklearn's validation split)."""
    if X.format not in ("csr", "csc"):
        raise TypeError(f"{name}: a sparse X must be CSR or CSC; got {X.format!r}")
    _compressed_arrays(X, name)
    return X.tocsr() if X.format == "csc" else X


def _compressed_arrays(X, name):
    """(indices, indptr) of a CSR or CSC X as int64 copies, checked on the copies: indptr
    non-decreasing from 0 to at most the arrays' length, indices in [0, n_minor) and
    strictly increasing within each row (column): ValueError naming sort_indices() or
    sum_duplicates() otherwise. scipy's cached flags are never trusted."""
    n_major, n_minor = X.shape if X.format == "csr" else X.shape[::-1]
    indptr = np.array(X.indptr, dtype=np.int64)
    if (indptr.shape != (n_major + 1,) or indptr[0] != 0 or (np.diff(indptr) < 0).any()
            or indptr[-1] > min(len(X.indices), len(X.data))):
        raise ValueError(f"{name}.indptr is inconsistent with the shape or the arrays")
    indices = np.array(X.indices[:indptr[-1]], dtype=np.int64)
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= n_minor):
        raise ValueError(f"{name}.indices must lie in [0, {n_minor})")
    fault = _order_fault(indices, indptr)
    if fault == "duplicate":
        raise ValueError(f"{name} holds duplicate indices in a {'row' if X.format == 'csr' else 'column'}; "
                         f"sum them first with {name}.sum_duplicates()")
    if fault == "unsorted":
        raise ValueError(f"{name} has unsorted indices in a {'row' if X.format == 'csr' else 'column'}; "
                         f"sort them first with {name}.sort_indices()")
    return indices, indptr


def _order_fault(indices, indptr):
    """None when every row's indices strictly increase; else "duplicate" when some row
    holds an index twice, "unsorted" otherwise."""
    if indices.shape[0] < 2:
        return None
    step = np.diff(indices)
    bad = step <= 0
    # a pair that straddles a row boundary (the first entry of a non-empty row) is fine
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < indices.shape[0])]
    bad[starts - 1] = False
    if not bad.any():
        return None
    return "duplicate" if (step[bad] == 0).any() else "unsorted"


def check_X(X, n_features, dtype, name="X"):
    """A finite, C-contiguous, native (B, n_features) matrix of `dtype`, B >= 1; for a
    scipy CSR or CSC X (or a CsrRows), a CsrRows (check_sparse_X)."""
    if isinstance(X, CsrRows):
        if X.shape[1] != n_features:
            raise ValueError(f"{name} must have {n_features} columns; got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (shape {X.shape}); expected at least one row")
        return X if X.dtype == dtype else X.astype(dtype)
    if _scipy_sparse(X) is not None:
        return check_sparse_X(X, n_features, dtype, name)
    arr = _as_numeric_array(X, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (batch, {n_features}); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); expected at least one row")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns; got shape {arr.shape}")
    arr = _c_aligned(arr, dtype)
    _check_finite(arr, name)
    return arr


def _c_aligned(arr, dtype):
    """arr as the kernels read it: C-contiguous, native byte order, aligned, of dtype
    (ascontiguousarray keeps a C-contiguous view at an odd address: that is copied)."""
    with np.errstate(over="ignore"):    # a value past float32's range: check_X's error
        arr = np.ascontiguousarray(arr, dtype=dtype)
    return arr if arr.flags.aligned else arr.copy()


def check_targets(y, loss, n_out, n_samples, dtype, name="y"):
    """Targets in the form the kernels use: (labels, Y).

    cross_entropy with class labels gives (int64 labels of shape (B,), None); every other
    case gives (None, finite C-contiguous Y of shape (B, n_out) and `dtype`).
    """
    arr = _as_numeric_array(y, name)
    if loss == "cross_entropy" and arr.ndim == 1:
        # checked and converted on a copy: the compiled code indexes by the labels, and
        # the caller may change its own array after this check (another thread)
        arr = np.array(arr, copy=True)
        if arr.shape[0] != n_samples:
            raise ValueError(f"{name} must have {n_samples} labels (one per row of X); got {arr.shape[0]}")
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} contains NaN or infinite labels")
            if not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"{name} must hold integer class labels; got non-integer values")
        if arr.size and (arr.min() < 0 or arr.max() >= n_out):
            raise ValueError(
                f"{name} labels must lie in [0, {n_out}) for {n_out} outputs; "
                f"got values from {arr.min()} to {arr.max()}"
            )
        return _c_aligned(arr, np.int64), None

    if arr.ndim == 1 and n_out == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape != (n_samples, n_out):
        expected = f"({n_samples}, {n_out})"
        if loss == "cross_entropy":
            expected = f"({n_samples},) class labels or {expected} probability rows"
        raise ValueError(f"{name} must have shape {expected}; got shape {arr.shape}")
    Y = _c_aligned(arr, dtype)
    _check_finite(Y, name)
    if loss in ("cross_entropy", "binary_cross_entropy") and ((Y < 0).any() or (Y > 1).any()):
        raise ValueError(f"{name} must hold probabilities in [0, 1] for loss={loss!r}")
    if loss == "poisson" and (Y < 0).any():
        raise ValueError(f"{name} must be non-negative (counts or rates) for loss='poisson'; "
                         f"got a minimum of {Y.min()}")
    return None, Y


def check_lr(lr, dtype=np.float64):
    """A positive learning rate that stays finite in the network's dtype (1e39 is a finite
    Python float but infinite in float32, and would turn the weights into inf)."""
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number; got {lr!r}")
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number; got {lr}")
    dtype = np.dtype(dtype)
    if dtype == np.float32 and lr >= _FLOAT32_ROUNDS_TO_INF:
        raise ValueError(f"lr must be finite in {dtype}; got {lr}")
    # the step multiplies in the network's dtype: an lr that is zero there trains nothing
    if lr < (_FLOAT32_SMALLEST if dtype == np.float32 else _FLOAT64_SMALLEST):
        raise ValueError(f"lr must be positive in {dtype}; got {lr}, which rounds to 0")
    return lr


# The smallest double that rounds to inf in float32: the midpoint between float32's largest
# value (2^128 - 2^104) and 2^128, which rounds to the even 2^128. A comparison, because
# converting with NumPy needs an errstate context, a tenth of an epoch on small data.
_FLOAT32_ROUNDS_TO_INF = 2.0 ** 128 - 2.0 ** 103
# The smallest doubles that do not round to zero in float32 and float64: just above half of
# the smallest subnormal (exactly half rounds to the even 0).
_FLOAT32_SMALLEST = np.nextafter(2.0 ** -150, 1.0)
_FLOAT64_SMALLEST = 2.0 ** -1074


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def activation_codes(names):
    return [ACTIVATIONS[n] for n in names]


def check_buffer_size(n_elements, dtype, what):
    """n_elements as an int, or ValueError when the buffer could not even be indexed on
    this machine (more bytes than a signed pointer-sized integer holds)."""
    n_bytes = int(n_elements) * np.dtype(dtype).itemsize
    if n_bytes >= np.iinfo(np.intp).max:
        raise ValueError(f"{what} would need {n_bytes:.3e} bytes, more than this machine "
                         f"can address")
    return int(n_elements)
