"""Full-batch L-BFGS: scipy.optimize.minimize(method="L-BFGS-B") on a network's loss and
gradient, run as scikit-learn's MLP runs it (BaseMultilayerPerceptron._fit_lbfgs).

The function and its gradient over all the rows come from one compiled call
(_network.Trainer.loss_gradient: forward, loss, backward and the L2 penalty's gradient,
into the network's flat gradient buffer); scipy only sees one flat float64 vector.
scipy is needed only here, and imported only when L-BFGS is used.
"""

import contextlib
import warnings

import numpy as np

from ._common import ConvergenceWarning


def _scipy_optimize():
    try:
        import scipy
        import scipy.optimize
    except ImportError as exc:
        raise ImportError(
            "the L-BFGS optimizer needs scipy: pip install scipy (or pip install "
            f"'fastbp[sklearn]'). The import failed with: {exc}") from exc
    return scipy, scipy.optimize


def packed_order(layer_sizes):
    """Indices into the network's parameter buffer (W_0, b_0, W_1, b_1, ...) in
    scikit-learn's packed order (every coefs_ raveled, then every intercepts_)."""
    w_parts, b_parts, off = [], [], 0
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        w_parts.append(np.arange(off, off + n_in * n_out))
        off += n_in * n_out
        b_parts.append(np.arange(off, off + n_out))
        off += n_out
    return np.concatenate(w_parts + b_parts)


class FullBatch:
    """The objective of fastbp.Network over all rows of `data` (a _training.Data):
    f(x) = data loss * value_factor + the L2 penalty, and its gradient, with x the
    parameters in the order `order` gives (indices into the parameter buffer; None: the
    buffer's own). Evaluating writes x into the network's parameters. The caller holds
    the network's lock while it is used."""

    def __init__(self, net, data, l2, l2_per_sample, loss_scale=1.0, value_factor=1.0,
                 order=None):
        n = data.X.shape[0]
        self.net = net
        self.order = order
        self.value_factor = value_factor
        self.rows = np.arange(n, dtype=np.int64)
        self.trainer = net._trainer(n, net.n_threads, ())
        self.trainer.bind(data.X, data.labels, data.Y if data.labels is None else None,
                          data.weights)
        self.trainer.set_objective(loss_scale, l2, l2_per_sample)
        self.evaluations = 0

    def x0(self):
        """The network's parameters as the optimizer's float64 vector."""
        params = self.net._params
        return (params if self.order is None else params[self.order]).astype(np.float64)

    def set(self, x):
        """The network's parameters <- x (rounded to its dtype)."""
        if self.order is None:
            self.net._params[...] = x
        else:
            self.net._params[self.order] = x

    def __call__(self, x):
        self.set(x)
        value, penalty = self.trainer.loss_gradient(self.rows)
        self.evaluations += 1
        grads = self.net._grads
        g = (grads if self.order is None else grads[self.order]).astype(np.float64)
        return value * self.value_factor + penalty, g


_BLAS_CONTROLLER = []    # [a threadpoolctl ThreadpoolController, or None], made once


def _one_blas_thread():
    """A context in which the process's BLAS libraries (SciPy's, NumPy's) run on one
    thread, through threadpoolctl when it is installed (scikit-learn depends on it), else
    no change. The controller is made once, after SciPy's BLAS is loaded (making one
    costs milliseconds, using it microseconds)."""
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS_CONTROLLER.append(ThreadpoolController())
        except Exception:    # not installed, or it cannot inspect this process
            _BLAS_CONTROLLER.append(None)
    controller = _BLAS_CONTROLLER[0]
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def minimize(objective, x0, *, max_iter, max_fun, tol, verbose=False, callback=None,
             one_blas_thread=False):
    """scipy's L-BFGS-B on objective(x) -> (f, grad) from x0, with scikit-learn's
    options: at most max_iter iterations and max_fun evaluations, gtol=tol. callback:
    scipy's callback(intermediate_result), after each iteration.

    one_blas_thread: for an objective that uses no BLAS (FullBatch), the BLAS runs on one
    thread meanwhile. L-BFGS-B's own work between two evaluations is BLAS on vectors;
    OpenBLAS's threads for it and fastbp's OpenMP threads (which wait, spinning, for the
    next evaluation) would compete for the same cores."""
    scipy, optimize = _scipy_optimize()
    options = {"maxfun": int(max_fun), "maxiter": int(max_iter), "gtol": float(tol)}
    version = tuple(int(p) for p in scipy.__version__.split(".")[:2] if p.isdigit())
    if version < (1, 15):
        # iprint was deprecated in scipy 1.15 (verbose output then comes from nowhere)
        options["iprint"] = 1 if verbose else -1
    with _one_blas_thread() if one_blas_thread else contextlib.nullcontext():
        return optimize.minimize(objective, x0, method="L-BFGS-B", jac=True,
                                 options=options, callback=callback)


def iterations(result, max_iter, warning=ConvergenceWarning, advice=""):
    """The iterations scipy ran (at most max_iter), warning with `warning` when it did not
    converge, as scikit-learn's _check_optimize_result does; `advice` ends the message."""
    n_iter = min(int(result.nit), int(max_iter))
    if result.status != 0:
        message = (f"lbfgs failed to converge after {n_iter} iteration(s) "
                   f"(status={result.status}):\n{result.message}\n")
        if n_iter == max_iter:
            message += ("\nIncrease the number of iterations to improve the convergence "
                        f"(max_iter={max_iter}).")
        warnings.warn(message + advice, warning, stacklevel=3)
    return n_iter
