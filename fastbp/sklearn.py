"""Drop-in replacements for scikit-learn's MLPClassifier and MLPRegressor.

    from fastbp.sklearn import MLPClassifier   # instead of sklearn.neural_network

The estimators take scikit-learn's constructor parameters with their defaults and
meanings, set the same fitted attributes and follow scikit-learn's training procedure
step by step (scikit-learn's BaseMultilayerPerceptron: _initialize, _fit,
_fit_stochastic, _fit_lbfgs, _update_no_improvement_count, and the optimizers of
sklearn.neural_network._stochastic_optimizers): the same initial parameters drawn from the same
random state, the same shuffles and validation split, the same minibatches, update rules,
learning-rate schedules, stopping rules, early-stopping restore, and the same reported
losses (the log loss of a probability clipped to [eps, 1 - eps]). A fit that diverges
goes on as scikit-learn's does (NaN or infinite losses and scores) and ends as it does.
Only the arithmetic runs elsewhere: each epoch is a single call to fastbp.Network's
compiled epoch, and solver="lbfgs" gets the full-batch loss and gradient from one
compiled pass (scipy's L-BFGS-B drives it, as in scikit-learn). In float64 and with the
same random_state, a fit here follows scikit-learn's fit to rounding.

Differences:
  * MLPRegressor(loss="poisson") refuses a negative y with a ValueError (scikit-learn
    documents y >= 0 as required but trains on, with NaN losses).
  * Sparse X must be CSR or CSC (other formats are converted to CSR, as scikit-learn's
    validation does) with sorted, unique indices; the first layer's products run sparse.
  * sample_weight must be non-negative and not all zero (fastbp.optim's rules).
  * Two extra parameters: n_threads (fastbp.Network's) and dtype (None: float32 when X
    is float32, else float64; float32 trains in float32).
  * solver="lbfgs" keeps float32 parameters float32 (scikit-learn's become float64).

scikit-learn is an optional dependency of fastbp: only this module needs it.
"""

import numbers
import warnings

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (
        _check_partial_fit_first_call,
        type_of_target,
        unique_labels,
    )
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as exc:  # scikit-learn missing, or older than 1.6 (no validate_data)
    raise ImportError(
        "fastbp.sklearn needs scikit-learn >= 1.6: pip install 'fastbp[sklearn]' "
        f"(or pip install scikit-learn). The import failed with: {exc}"
    ) from exc

import numpy as np
from scipy.sparse import issparse

from .network import Network
from ._validation import canonical_csr
from . import _lbfgs, _network, optim

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")


# Whether fit runs epochs in compiled runs where it can (see _fit_stochastic); the tests
# turn it off to hold the runs against the loop that takes one epoch at a time.
_EPOCHS_IN_RUNS = True

_FAST_SHUFFLE_CHECKED = []    # [True] or [False] once checked in this process

# validate_data's accept_sparse: fastbp's first layer takes CSR (CSC converted to it)
_ACCEPT_SPARSE = ["csr", "csc"]


def _as_network_input(X, dtype):
    """X as fastbp.Network takes it for training: a sparse X stays sparse, as CSR (whose
    row selections, the validation split's, keep each row's indices sorted; the network
    checks and copies it), a dense one C-contiguous in `dtype`."""
    if issparse(X):
        return canonical_csr(X)
    return np.ascontiguousarray(X, dtype=dtype)


def _fast_shuffle_matches():
    """Whether _network.shuffle_like_random_state draws exactly what
    RandomState.shuffle does with this NumPy: checked once per process, on 1000 elements
    and on the generator's state afterwards."""
    if not _FAST_SHUFFLE_CHECKED:
        try:
            a, b = np.random.RandomState(20261201), np.random.RandomState(20261201)
            x = np.arange(1000)
            a.shuffle(x)
            y = np.arange(1000, dtype=np.int64)
            with b._bit_generator.lock:
                _network.shuffle_like_random_state(b._bit_generator.capsule, y)
            ok = bool(np.array_equal(x, y)) and a.random_sample() == b.random_sample()
        except Exception:  # another NumPy's internals: use RandomState.shuffle
            ok = False
        _FAST_SHUFFLE_CHECKED.append(ok)
    return _FAST_SHUFFLE_CHECKED[0]


def _shuffled_range(random_state, n):
    """np.arange(n) shuffled with random_state.shuffle, drawing the same numbers, in
    compiled code when it has been checked to match (it runs every epoch)."""
    if isinstance(random_state, np.random.RandomState) and _fast_shuffle_matches():
        perm = np.arange(n, dtype=np.int64)
        bit_generator = random_state._bit_generator
        with bit_generator.lock:
            _network.shuffle_like_random_state(bit_generator.capsule, perm)
        return perm
    perm = np.arange(n)
    random_state.shuffle(perm)
    return perm


def _binarize_fitted_labels(binarizer, y):
    """binarizer.transform(y).astype(bool) for the y it was just fitted on, when y is
    a 1-d array of integer, boolean or string labels of two or more classes, else None.
    The same matrix from the class indices that np.searchsorted finds (checked to give y
    back), without LabelBinarizer.transform's checks, a large part of a small fit's fixed
    cost."""
    classes = binarizer.classes_
    if (y.ndim != 1 or y.dtype.kind not in "biuU" or len(classes) < 2
            or binarizer.y_type_ not in ("binary", "multiclass") or binarizer.sparse_output
            or binarizer.neg_label != 0 or binarizer.pos_label != 1):
        return None
    idx = np.searchsorted(classes, y)
    if idx.size and (idx.max() >= len(classes) or not np.array_equal(classes[idx], y)):
        return None
    if binarizer.y_type_ == "binary":
        return (idx == 1).reshape(-1, 1)
    Y = np.zeros((y.shape[0], len(classes)), dtype=bool)
    Y[np.arange(y.shape[0]), idx] = True
    return Y


class _SGDOptimizer(optim.SGD):
    """fastbp's SGD with scikit-learn's SGDOptimizer.learning_rate (the current rate)."""

    @property
    def learning_rate(self):
        return self.lr


class _AdamOptimizer(optim.Adam):
    """fastbp's Adam with scikit-learn's AdamOptimizer.learning_rate: the rate of the
    last step with its bias correction (the initial rate before any step)."""

    @property
    def learning_rate(self):
        t = self.t
        if t == 0:
            return self.lr
        return self.lr * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)


def _check_dtype_param(dtype):
    """The dtype parameter: None, or something np.dtype reads as float32 or float64."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be None, np.float32 or np.float64; got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be None, np.float32 or np.float64; got {dtype!r}")
    return dt


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron).
    Not to be used directly."""

    # scikit-learn's constraints (BaseMultilayerPerceptron._parameter_constraints), plus
    # fastbp's two extras.
    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"),
                             Options(numbers.Real, {np.inf})],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        # fastbp's extras; fastbp.Network checks n_threads (0 is an error), fit checks dtype
        "n_threads": [None, Interval(numbers.Integral, None, None, closed="neither")],
        "dtype": "no_validation",
    }

    _loss = None  # scikit-learn's loss name (log_loss / squared_error)

    # -- set-up ---------------------------------------------------------------------------

    def _set_params_common(self, hidden_layer_sizes, activation, solver, alpha, batch_size,
                           learning_rate, learning_rate_init, power_t, max_iter, shuffle,
                           random_state, tol, verbose, warm_start, momentum,
                           nesterovs_momentum, early_stopping, validation_fraction, beta_1,
                           beta_2, epsilon, n_iter_no_change, max_fun, n_threads, dtype):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_threads = n_threads
        self.dtype = dtype

    def _check_supported(self):
        """Raises for a configuration fastbp does not train (none left here)."""

    def _validate_dtype_arg(self):
        """validate_data's dtype argument: X is converted to the training dtype at once."""
        dt = _check_dtype_param(self.dtype)
        return (np.float64, np.float32) if dt is None else dt.type

    def _network_loss(self):
        """fastbp loss name and the loss_scale that makes its gradient scikit-learn's."""
        if self.out_activation_ == "softmax":
            # log_loss on one-hot rows: the mean over rows of -log softmax
            return "cross_entropy", 1.0
        if self.out_activation_ == "logistic":
            # binary_log_loss sums over the n_outputs_ columns what fastbp averages
            return "binary_cross_entropy", float(self.n_outputs_)
        if self.out_activation_ == "exp":
            # poisson_loss too: the sum over the outputs of each column's mean
            return "poisson", float(self.n_outputs_)
        # squared_loss is 0.5 * the mean over all elements; fastbp's mse is the mean
        # (its gradient 2/(B n) (A - Y)); scale n/2 gives scikit-learn's (A - Y)/B
        return "mse", self.n_outputs_ / 2.0

    def _layer_units(self):
        return [self.n_features_in_] + list(self._hidden_sizes()) + [self.n_outputs_]

    def _hidden_sizes(self):
        hidden = self.hidden_layer_sizes
        if not hasattr(hidden, "__iter__"):
            hidden = [hidden]
        return list(hidden)

    def _get_network(self, role="_net"):
        """The fastbp.Network that trains (role "_net") or predicts ("_predict_net"),
        (re)built when missing (after unpickling) or when its configuration no longer
        matches the fitted attributes. Its parameters are not loaded here. Predictions
        have their own network: loading coefs_ into the one a fit is training (from
        another thread, between two epochs) would undo the fit's steps."""
        units = tuple(int(u) for u in [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_])
        loss, _ = self._network_loss()
        dtype = np.dtype(self.coefs_[0].dtype)
        key = (units, self.activation, loss, dtype, self.n_threads)
        net = getattr(self, role, None)
        if net is None or getattr(self, role + "_key", None) != key:
            net = Network(list(units), activation=self.activation, loss=loss, dtype=dtype,
                          seed=0, n_threads=self.n_threads)
            # the loss values scikit-learn reports (and stops on) take the log of the
            # probability clipped to [eps, 1 - eps]; the gradients are the same
            clipped = {"cross_entropy": _network.LOSS_LOG_LOSS_CLIPPED,
                       "binary_cross_entropy": _network.LOSS_BINARY_LOG_LOSS_CLIPPED}
            if loss in clipped:
                net._loss_code = clipped[loss]
            setattr(self, role, net)
            setattr(self, role + "_key", key)
        return net

    def _load_parameters(self, net):
        for views, values in ((net.weights, self.coefs_), (net.biases, self.intercepts_)):
            for i, (view, value) in enumerate(zip(views, values)):
                if type(value) is np.ndarray and value.shape == view.shape:
                    np.copyto(view, value, casting="unsafe")   # what views[i] = value does
                else:
                    views[i] = value   # converted and checked, or refused

    def __getstate__(self):
        # The network is rebuilt from coefs_/intercepts_ when needed; pickles carry the
        # parameters once, as the plain arrays scikit-learn's estimators hold.
        state = super().__getstate__()
        state = dict(state)
        for role in ("_net", "_predict_net"):
            state.pop(role, None)
            state.pop(role + "_key", None)
        return state

    # -- scikit-learn's _initialize and _init_coef -----------------------------------------

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not isinstance(self, ClassifierMixin):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"

        self.coefs_ = []
        self.intercepts_ = []
        for i in range(self.n_layers_ - 1):
            coef_init, intercept_init = self._init_coef(layer_units[i], layer_units[i + 1], dtype)
            self.coefs_.append(coef_init)
            self.intercepts_.append(intercept_init)

        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]

        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _init_coef(self, fan_in, fan_out, dtype):
        # Glorot et al.'s uniform initialization, drawn exactly as scikit-learn draws it
        factor = 2.0 if self.activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return coef_init.astype(dtype, copy=False), intercept_init.astype(dtype, copy=False)

    # -- training -------------------------------------------------------------------------

    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._check_supported()
        hidden_layer_sizes = self._hidden_sizes()
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % hidden_layer_sizes)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]

        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype)
        elif [c.shape for c in self.coefs_] != list(zip(layer_units[:-1], layer_units[1:])):
            raise ValueError(
                "warm_start or partial_fit needs the fitted network's layer sizes: coefs_ "
                f"has shapes {[c.shape for c in self.coefs_]}, hidden_layer_sizes and the "
                f"data ask for {list(zip(layer_units[:-1], layer_units[1:]))}; fit with "
                "warm_start=False to start a new network")
        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(X, y, sample_weight, layer_units, incremental)
        else:
            self._fit_lbfgs(X, y, sample_weight, layer_units)
        # made here, so that predicting leaves the estimator's attributes as they are
        self._get_network("_predict_net")

        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed.")
        return self

    def _make_optimizer(self):
        if self.solver == "sgd":
            return _SGDOptimizer(lr=self.learning_rate_init, momentum=self.momentum,
                                 nesterov=self.nesterovs_momentum, l2=self.alpha,
                                 l2_per_sample=True)
        return _AdamOptimizer(lr=self.learning_rate_init, beta1=self.beta_1,
                              beta2=self.beta_2, epsilon=self.epsilon, l2=self.alpha,
                              l2_per_sample=True)

    # -- L-BFGS (scikit-learn's _fit_lbfgs, _unpack and _loss_grad_lbfgs) -----------------

    def _set_indptr(self, layer_units):
        """scikit-learn's _coef_indptr and _intercept_indptr: where each layer's
        coefficients and intercepts lie in the packed vector (coefs first)."""
        self._coef_indptr, self._intercept_indptr = [], []
        start = 0
        for n_in, n_out in zip(layer_units[:-1], layer_units[1:]):
            self._coef_indptr.append((start, start + n_in * n_out, (n_in, n_out)))
            start += n_in * n_out
        for n_out in layer_units[1:]:
            self._intercept_indptr.append((start, start + n_out))
            start += n_out

    def _unpack(self, packed_parameters):
        """coefs_ and intercepts_ <- views of the packed vector (scikit-learn's)."""
        for i in range(self.n_layers_ - 1):
            start, end, shape = self._coef_indptr[i]
            self.coefs_[i] = np.reshape(packed_parameters[start:end], shape)
            start, end = self._intercept_indptr[i]
            self.intercepts_[i] = packed_parameters[start:end]

    def _full_batch(self, net, X, y, sample_weight):
        """_lbfgs.FullBatch of the network over (X, y): scikit-learn's objective in its
        packed order (the reported loss: for the squared error half the mean over all
        elements, with the gradient of its own _backprop)."""
        loss_name, loss_scale = self._network_loss()
        X = _as_network_input(X, net.dtype)
        targets = self._network_targets(y if y.ndim == 2 else y.reshape(-1, 1), net.dtype)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=net.dtype)
        data = net._prepare(X, targets, sample_weight)
        value_factor = 0.5 / loss_scale if loss_name == "mse" else 1.0
        return _lbfgs.FullBatch(net, data, float(self.alpha), True, loss_scale, value_factor,
                                order=_lbfgs.packed_order(net.layer_sizes))

    def _fit_lbfgs(self, X, y, sample_weight, layer_units):
        self._set_indptr(layer_units)
        net = self._get_network()
        self._load_parameters(net)
        with net._lock:
            objective = self._full_batch(net, X, y, sample_weight)
            result = _lbfgs.minimize(objective, objective.x0(), max_iter=self.max_iter,
                                     max_fun=self.max_fun, tol=self.tol,
                                     verbose=self.verbose, one_blas_thread=True)
            self.n_iter_ = _lbfgs.iterations(
                result, self.max_iter, ConvergenceWarning,
                advice=("\nYou might also want to scale the data as shown in:\n"
                        "    https://scikit-learn.org/stable/modules/preprocessing.html"))
            self.loss_ = result.fun
            objective.set(result.x)
        self._store_parameters(net)

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight, activations=None,
                         deltas=None, coef_grads=None, intercept_grads=None):
        """scikit-learn's: the loss and its gradient (packed like packed_coef_inter) at
        those parameters, which become coefs_ and intercepts_. y is the training target
        as fit passes it on (binarized labels for a classifier). The lists activations and
        deltas are not used (the compiled pass keeps its own); coef_grads and
        intercept_grads, when given, receive the gradient's layers."""
        if not hasattr(self, "_coef_indptr"):
            self._set_indptr([self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_])
        self._unpack(packed_coef_inter)
        net = self._get_network()
        y = np.asarray(y)
        with net._lock:
            self._load_parameters(net)
            loss, grad = self._full_batch(net, X, y, sample_weight)(
                np.asarray(packed_coef_inter, dtype=np.float64))
        for i in range(self.n_layers_ - 1):
            start, end, shape = self._coef_indptr[i]
            if coef_grads is not None:
                coef_grads[i] = grad[start:end].reshape(shape)
            start, end = self._intercept_indptr[i]
            if intercept_grads is not None:
                intercept_grads[i] = grad[start:end]
        return loss, grad

    def _fit_stochastic(self, X, y, sample_weight, layer_units, incremental):
        net = self._get_network()
        self._load_parameters(net)
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._make_optimizer()
            self._learning_rate = float(self.learning_rate_init)
        opt = self._optimizer
        if self.solver == "sgd":
            opt.lr = self._learning_rate
        loss_name, loss_scale = self._network_loss()
        # once here, not in every epoch's checks: C order in the network's dtype
        X = _as_network_input(X, net.dtype)
        targets = self._network_targets(y, net.dtype)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=net.dtype)

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        n_all = X.shape[0]
        if early_stopping:
            if self.validation_scores_ is None:  # the previous (warm) fit did not stop early
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
            # don't stratify in multilabel (or multiclass: n_outputs_ > 1) classification
            should_stratify = isinstance(self, ClassifierMixin) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            # Splitting the row indices draws from the random state exactly as splitting
            # (X, y[, sample_weight]) does (the split depends only on n and stratify); the
            # training rows then stay in X, addressed through `order`.
            train_rows, val_rows = train_test_split(
                np.arange(n_all), random_state=self._random_state,
                test_size=self.validation_fraction, stratify=stratify)
            if val_rows.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset.")
            X_val = X[val_rows]
            y_val = y[val_rows]
            if isinstance(self, ClassifierMixin):
                y_val = self._label_binarizer.inverse_transform(y_val)
            sample_weight_val = None if sample_weight is None else sample_weight[val_rows]
            best_aliases_current = self._best_coefs is self.coefs_
        else:
            train_rows = None
            X_val = y_val = sample_weight_val = None
            best_aliases_current = False

        n_samples = n_all if train_rows is None else train_rows.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        # checked and converted once here (train_epoch would check X in every epoch: a
        # tenth of an epoch's time on data this small)
        data = net._prepare(X, targets, sample_weight)
        # buffers, thread count and optimizer bound once for all epochs
        # scikit-learn's fit goes on through a divergence (NaN losses and scores, and
        # early stopping's restore of the best parameters): so does this one
        run_epoch = net._epoch_runner(data, n_samples, batch_size, opt, loss_scale,
                                      step_non_finite=True)
        improved = False
        # Runs of epochs in one compiled call (Network._epoch_runner's run_epochs: the
        # shuffle, the rollback copies and the stopping rule between epochs in compiled
        # code) where nothing between two epochs needs Python: no validation score, no
        # progress printed, a learning rate that changes only when the rule triggers, the
        # shuffle drawn exactly as RandomState.shuffle draws it, and the rule's numbers
        # plain floats (a NumPy scalar tol would round the rule's sums in its own dtype).
        in_runs = (_EPOCHS_IN_RUNS and not early_stopping and not incremental
                   and not self.verbose
                   and not (self.solver == "sgd" and self.learning_rate == "invscaling")
                   and type(self.tol) in (int, float) and type(self.best_loss_) is float
                   and (not self.shuffle
                        or (isinstance(self._random_state, np.random.RandomState)
                            and _fast_shuffle_matches())))
        if in_runs:
            sample_idx = np.ascontiguousarray(sample_idx, dtype=np.int64)
        try:
            self.n_iter_ = 0
            while self.n_iter_ < self.max_iter:
                steady = run_epoch.steady_epochs() if in_runs else 0
                in_a_run = steady >= 2 and self.max_iter - self.n_iter_ >= 2
                if in_a_run:
                    # a run of epochs: what the rest of this loop does for each epoch
                    # (without early stopping, verbose and invscaling), compiled
                    rule = _network.StopRule(self.best_loss_, self._no_improvement_count,
                                             float(self.tol), float(self.n_iter_no_change),
                                             loss_name == "mse")

                    def completed(losses):
                        for loss in losses:
                            self.n_iter_ += 1
                            self.loss_ = loss
                            self.t_ += n_samples
                            self.loss_curve_.append(loss)
                        if losses:
                            self.best_loss_ = float(rule.best_loss)
                            self._no_improvement_count = int(rule.no_improvement_count)
                else:
                    if self.shuffle:
                        # sklearn.utils.shuffle(sample_idx, random_state=...), without its
                        # parameter validation (a fifth of an epoch's time on small data):
                        # resample(replace=False) shuffles an arange with the random
                        # state and indexes with it, exactly this (and what a run's
                        # shuffle in place of sample_idx draws)
                        sample_idx = sample_idx[_shuffled_range(self._random_state,
                                                                n_samples)]
                    order = sample_idx if train_rows is None else train_rows[sample_idx]
                    order = np.ascontiguousarray(order, dtype=np.int64)
                    if in_runs:
                        sample_idx = order      # the next run shuffles it in place
                # the data were checked once, before the loop; the order is ours
                with net._lock:
                    if in_a_run:
                        run_epoch.run_epochs(
                            sample_idx, self._random_state if self.shuffle else None,
                            min(steady, self.max_iter - self.n_iter_), rule, completed)
                    else:
                        stats = run_epoch(order)

                if not in_a_run:
                    self.n_iter_ += 1
                    if loss_name == "mse":
                        # scikit-learn reports 0.5 * the mean squared error plus the
                        # penalty
                        self.loss_ = 0.5 * stats.data_loss + stats.penalty
                    else:
                        self.loss_ = stats.loss
                    self.t_ += n_samples
                    self.loss_curve_.append(self.loss_)
                    if self.verbose:
                        print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

                    if self._update_no_improvement_count(early_stopping, net, X_val, y_val,
                                                         sample_weight_val):
                        improved = True

                    # SGDOptimizer.iteration_ends
                    if self.solver == "sgd" and self.learning_rate == "invscaling":
                        self._learning_rate = (
                            float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t)
                        opt.lr = self._learning_rate

                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than "
                               "tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f"
                               " for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                    opt.lr = self._learning_rate

                if incremental:
                    break

                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        "Stochastic Optimizer: Maximum iterations (%d) "
                        "reached and the optimization hasn't converged yet."
                        % self.max_iter,
                        ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")

        self._store_parameters(net)
        if early_stopping:
            if best_aliases_current and not improved:
                # scikit-learn's restore makes coefs_ the very arrays of _best_coefs, and
                # a later warm-started fit updates them in place: when that fit never
                # improves the best score, its "best" parameters are its last ones.
                self._best_coefs = self.coefs_
                self._best_intercepts = self.intercepts_
            # restore best weights
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    def _trigger_stopping(self, msg):
        """The optimizers' trigger_stopping: True to stop; adaptive sgd divides the
        learning rate by 5 instead until it is at most 1e-6."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._learning_rate /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._learning_rate)
        return False

    def _store_parameters(self, net):
        self.coefs_ = [w.copy() for w in net.weights]
        self.intercepts_ = [b.copy() for b in net.biases]

    def _update_no_improvement_count(self, early_stopping, net, X_val, y_val, sample_weight):
        """scikit-learn's; returns True when the best validation score improved (the
        network's current parameters were copied as the best)."""
        if early_stopping:
            val_score = self._score_net(net, X_val, y_val, sample_weight)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_coefs = [w.copy() for w in net.weights]
                self._best_intercepts = [b.copy() for b in net.biases]
                return True
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]
        return False

    def _score_net(self, net, X, y, sample_weight):
        """scikit-learn's _score_with_function on the network's current parameters."""
        y_pred = self._output_to_prediction(net.forward(X))
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y, y_pred, sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC. float32 input trains in float32
            unless `dtype` says otherwise.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers in
            regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights: non-negative, not all zero.

        Returns
        -------
        self : object
            Returns a trained MLP model.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                " optimizers. %s is not stochastic." % self.solver)
        return True

    # -- prediction -----------------------------------------------------------------------

    def _forward(self, X, check_input=True):
        """The output layer's activations for X, computed by fastbp from coefs_ and
        intercepts_ (the fitted attributes are the parameters: changing them changes the
        predictions, as in scikit-learn)."""
        if check_input:
            out = self._forward_if_plain(X)
            if out is not None:
                return out
            X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32),
                              accept_sparse=_ACCEPT_SPARSE)
        net = self._get_network("_predict_net")
        with net._lock:
            self._load_parameters(net)
            out = net.forward(X)
        # scikit-learn's products take the wider of the input's and the parameters' dtype
        return out.astype(np.result_type(X.dtype, out.dtype), copy=False)

    def _forward_if_plain(self, X):
        """_forward(X) without scikit-learn's validation when X is a plain batch, one that
        validate_data would pass through unchanged with nothing to warn about: an ndarray
        (no feature names) of the fitted width and the network's dtype, C-contiguous,
        finite, for an estimator fitted without feature names. None for any other X, which
        then goes scikit-learn's way (its errors and warnings)."""
        if (type(X) is not np.ndarray or "feature_names_in_" in self.__dict__
                or X.ndim != 2 or X.shape[1] != getattr(self, "n_features_in_", None)):
            return None
        net = self._get_network("_predict_net")
        if X.dtype != net.dtype:
            return None
        with net._lock:
            self._load_parameters(net)
            return net._forward_if_plain(X)

    def _is_fitted(self):
        """check_is_fitted's answer for these estimators without its scan of every
        attribute: a fit sets coefs_ (an attribute ending in "_", which it looks for)."""
        if "coefs_" not in self.__dict__:
            check_is_fitted(self)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's, trained by fastbp's compiled code.

    A drop-in for sklearn.neural_network.MLPClassifier: its parameters, fitted attributes
    and training procedure, with each epoch (or each L-BFGS evaluation) run by fastbp.

    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate
        Every parameter before `n_threads` is scikit-learn's, with its default and
        meaning (see scikit-learn's documentation of
        sklearn.neural_network.MLPClassifier). solver="lbfgs" runs scipy's L-BFGS-B
        as scikit-learn's does.
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose
        As scikit-learn's.
    warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction
        As scikit-learn's.
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        As scikit-learn's.
    n_threads : int or None, default=None
        The threads fastbp uses, as ``fastbp.Network``'s `n_threads`: None follows
        OMP_NUM_THREADS or the usable cores, a positive int caps the threads, -1 means
        all cores, -2 all but one. Results do not depend on it.
    dtype : {None, np.float32, np.float64}, default=None
        The training precision; None: float32 when X is float32, else float64.

    Attributes
    ----------
    classes_
        As scikit-learn's.
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_
        As scikit-learn's.
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_
        As scikit-learn's; ``coefs_`` and ``intercepts_`` are the parameters predictions use.
    n_outputs_, out_activation_
        As scikit-learn's.

    See Also
    --------
    MLPRegressor : The regressor.
    fastbp.Network : The network it trains.

    Notes
    -----
    The same random_state gives the same initial parameters, shuffles, validation split
    and minibatches as scikit-learn's; in float64 a fit follows scikit-learn's to
    rounding. X may be dense or a scipy CSR or CSC matrix (sorted, unique indices).
    sample_weight must be non-negative and not all zero. The documentation's page
    "The scikit-learn drop-in" lists every difference.
    """

    _loss = "log_loss"

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        n_threads=None,
        dtype=None,
    ):
        self._set_params_common(
            hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
            learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
            warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
            beta_1, beta_2, epsilon, n_iter_no_change, max_fun, n_threads, dtype)

    @staticmethod
    def _score_function(y, y_pred, sample_weight=None):
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=_ACCEPT_SPARSE, multi_output=True,
                             dtype=self._validate_dtype_arg(), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # scikit-learn's table of cases (MLPClassifier._validate_input)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
            fast = _binarize_fitted_labels(self._label_binarizer, y)
            if fast is not None:
                return X, fast
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}.")
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _network_targets(self, y, dtype):
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(y.argmax(axis=1), dtype=np.int64)
        return np.ascontiguousarray(y, dtype=dtype)

    def _output_to_prediction(self, y_pred):
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        binarizer = self._label_binarizer
        classes = binarizer.classes_
        if type(y_pred) is np.ndarray and not binarizer.sparse_input_:
            # LabelBinarizer.inverse_transform's two common cases without its array-API
            # dispatch: multiclass, the class of each row's first maximum; binary (one
            # output), the second class where the output passes the threshold
            if binarizer.y_type_ == "multiclass" and y_pred.ndim == 2:
                return classes[y_pred.argmax(axis=1)]
            if binarizer.y_type_ == "binary" and y_pred.ndim == 1 and len(classes) == 2:
                threshold = (binarizer.pos_label + binarizer.neg_label) / 2.0
                return classes[(y_pred > threshold).astype(np.intp)]
        return binarizer.inverse_transform(y_pred)

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC.

        Returns
        -------
        y : ndarray, shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        self._is_fitted()
        return self._output_to_prediction(self._forward(X))

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC.
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights: non-negative, not all zero.
        classes : array of shape (n_classes,), default=None
            Classes across all calls to partial_fit; required on the first call, may be
            omitted afterwards.

        Returns
        -------
        self : object
            Trained MLP model.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Return the log of probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            The natural log of `predict_proba`'s result.
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The predicted probability of the sample for each class in the model, where
            classes are ordered as they are in `self.classes_`.
        """
        self._is_fitted()
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's, trained by fastbp's compiled code.

    A drop-in for sklearn.neural_network.MLPRegressor: its parameters, fitted attributes
    and training procedure, with each epoch (or each L-BFGS evaluation) run by fastbp.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        As scikit-learn's: "poisson" trains half the Poisson deviance through an exp
        output, and y must be non-negative.
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate
        Every parameter before `n_threads` is scikit-learn's, with its default and
        meaning (see scikit-learn's documentation of
        sklearn.neural_network.MLPRegressor). solver="lbfgs" runs scipy's L-BFGS-B
        as scikit-learn's does.
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose
        As scikit-learn's.
    warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction
        As scikit-learn's.
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        As scikit-learn's.
    n_threads : int or None, default=None
        The threads fastbp uses, as ``fastbp.Network``'s `n_threads`: None follows
        OMP_NUM_THREADS or the usable cores, a positive int caps the threads, -1 means
        all cores, -2 all but one. Results do not depend on it.
    dtype : {None, np.float32, np.float64}, default=None
        The training precision; None: float32 when X is float32, else float64.

    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_
        As scikit-learn's.
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_
        As scikit-learn's; ``coefs_`` and ``intercepts_`` are the parameters predictions use.
    n_outputs_, out_activation_
        As scikit-learn's.

    See Also
    --------
    MLPClassifier : The classifier.
    fastbp.Network : The network it trains.

    Notes
    -----
    The same random_state gives the same initial parameters, shuffles, validation split
    and minibatches as scikit-learn's; in float64 a fit follows scikit-learn's to
    rounding. X may be dense or a scipy CSR or CSC matrix (sorted, unique indices).
    sample_weight must be non-negative and not all zero. A negative y with
    loss="poisson" is a ValueError (scikit-learn trains on, with NaN losses). The
    documentation's page "The scikit-learn drop-in" lists every difference.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        n_threads=None,
        dtype=None,
    ):
        self.loss = loss
        self._set_params_common(
            hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
            learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
            warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
            beta_1, beta_2, epsilon, n_iter_no_change, max_fun, n_threads, dtype)

    @staticmethod
    def _score_function(y, y_pred, sample_weight=None):
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=_ACCEPT_SPARSE, multi_output=True,
                             y_numeric=True, dtype=self._validate_dtype_arg(), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("y must be non-negative for loss='poisson' (counts or rates: "
                             "the Poisson deviance of a negative y is undefined); got a "
                             f"minimum of {np.min(y)}")
        return X, y

    def _network_targets(self, y, dtype):
        return np.ascontiguousarray(y, dtype=dtype)

    def _output_to_prediction(self, y_pred):
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def predict(self, X):
        """Predict using the multi-layer perceptron model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        self._is_fitted()
        return self._output_to_prediction(self._forward(X))

    # scikit-learn's MLPRegressor offers partial_fit whatever the solver (its condition
    # tests the method, never calls it); with lbfgs it runs a whole L-BFGS fit
    @available_if(lambda est: est._check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; a sparse X is CSR or CSC.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights: non-negative, not all zero.

        Returns
        -------
        self : object
            Trained MLP model.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
