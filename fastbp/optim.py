"""Optimizers: the update rules fit and train_epoch apply after each minibatch's gradient.

An optimizer holds its hyperparameters and its state: buffers laid out like the network's
parameter buffer (momentum's velocity; Adam's first and second moments) and the number of
steps taken. The compiled loop (src/_optim.pxd) updates parameters and state in place.
The update rules are scikit-learn's (its module sklearn.neural_network._stochastic_optimizers),
with g the gradient of the batch loss plus the L2 penalty:

    SGD         v <- momentum * v - lr * g
                param <- param + momentum * v - lr * g      (nesterov=True)
                param <- param + v                          (nesterov=False)
                with momentum == 0: param <- param - lr * g (no state)
    Adam        m <- beta1 * m + (1 - beta1) * g
                s <- beta2 * s + (1 - beta2) * g**2
                param <- param - lr_t * m / (sqrt(s) + epsilon),
                lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t), t = steps taken (1, 2, ...)

L2 penalty `l2` on the weights (not the biases): the batch loss gains 0.5 * l2 * sum(W**2)
and g gains l2 * W (PyTorch's weight_decay). With l2_per_sample=True both are divided by
the batch's sample-weight sum (its size when unweighted): scikit-learn's `alpha`.

One optimizer serves one network: the first step binds its state to that network's
parameter layout; `reset()` forgets the state. Assigning `lr` between epochs is how
learning-rate schedules work.
"""

import numbers

import numpy as np

__all__ = ["SGD", "Adam", "LBFGS", "Optimizer"]

_KIND_SGD = 1  # src/_optim.pxd OPT_SGD
_KIND_ADAM = 2  # src/_optim.pxd OPT_ADAM


def _real(value, name, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}; got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high:g}; got {value!r}")
    return value


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


class Optimizer:
    """Base class of the optimizers: the hyperparameters they share and their state.

    Parameters
    ----------
    lr : float
        The learning rate, positive; assign `lr` between epochs to schedule it.
    l2 : float
        L2 penalty on the weights (not the biases), non-negative: the batch loss gains
        ``0.5 * l2 * sum(W**2)`` and the gradient ``l2 * W``.
    l2_per_sample : bool
        Divide the penalty by the batch's sample-weight sum (its size when unweighted),
        as scikit-learn's `alpha` is.

    Attributes
    ----------
    t : int
        Steps taken since the last `reset`.
    state : tuple of ndarray
        The state buffers (momentum's velocity; Adam's moments), laid out like the
        network's parameter buffer; empty until the first step.

    Notes
    -----
    One optimizer serves one network: the first step binds its state to that network's
    parameter layout, and a step on another network is a `ValueError` until `reset`.
    """

    _kind = None
    _n_buffers = 0

    def __init__(self, lr, l2, l2_per_sample):
        self.lr = lr
        self.l2 = _real(l2, "l2", low=0.0)
        self.l2_per_sample = _flag(l2_per_sample, "l2_per_sample")
        self.reset()

    @property
    def lr(self):
        """The learning rate of the next step (assign to change it between epochs)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _real(value, "lr", low=0.0, low_open=True)

    def reset(self):
        """Forget the state: the next step starts as the first."""
        self.t = 0
        self.state = ()
        self._layout = None

    def _bind(self, layout, make_buffers):
        """Return the state buffers for a network whose parameters have `layout` (a
        hashable description: sizes and dtype); make them (zeros) on first use."""
        if self._layout is None:
            self.state = tuple(make_buffers() for _ in range(self._n_buffers))
            self._layout = layout
        elif self._layout != layout:
            raise ValueError(
                f"this {type(self).__name__} optimizer holds state for another network "
                f"({self._layout}); use a new optimizer, or call reset() first")
        return self.state

    def _hyper(self):
        """(kind, momentum, nesterov, beta1, beta2, epsilon) for the compiled loop."""
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"fastbp.optim.{type(self).__name__}({fields})"

    def __getstate__(self):
        return dict(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)


class SGD(Optimizer):
    """Minibatch SGD, with momentum or Nesterov momentum, as scikit-learn writes it.

    With ``g`` the gradient of the batch loss plus the L2 penalty and ``v`` the velocity::

        v <- momentum * v - lr * g
        param <- param + momentum * v - lr * g      (nesterov=True)
        param <- param + v                          (nesterov=False)

    and with ``momentum == 0``, ``param <- param - lr * g`` (no state).

    Parameters
    ----------
    lr : float, default=0.1
        The learning rate, positive.
    momentum : float, default=0.0
        In [0, 1].
    nesterov : bool, default=False
        Nesterov's momentum.
    l2 : float, default=0.0
        L2 penalty on the weights (see `Optimizer`).
    l2_per_sample : bool, default=False
        Divide the penalty by the batch's sample-weight sum (see `Optimizer`).

    Examples
    --------
    >>> import fastbp
    >>> opt = fastbp.optim.SGD(lr=0.01, momentum=0.9, nesterov=True)
    >>> opt.lr *= 0.5          # a schedule: assign lr between epochs
    """

    _kind = _KIND_SGD
    _fields = ("lr", "momentum", "nesterov", "l2", "l2_per_sample")

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, l2=0.0, l2_per_sample=False):
        self.momentum = _real(momentum, "momentum", low=0.0, high=1.0)  # 1 allowed, as scikit-learn does
        self.nesterov = _flag(nesterov, "nesterov")
        self._n_buffers = 1 if self.momentum > 0 else 0
        super().__init__(lr, l2, l2_per_sample)

    def _hyper(self):
        return self._kind, self.momentum, self.nesterov, 0.0, 0.0, 0.0


class Adam(Optimizer):
    """Adam (Kingma and Ba), as scikit-learn writes it.

    With ``g`` the gradient of the batch loss plus the L2 penalty and ``t`` the steps taken
    (1, 2, ...)::

        m <- beta1 * m + (1 - beta1) * g
        s <- beta2 * s + (1 - beta2) * g**2
        param <- param - lr_t * m / (sqrt(s) + epsilon),
        lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)

    Parameters
    ----------
    lr : float, default=0.001
        The learning rate, positive.
    beta1, beta2 : float, default=0.9, 0.999
        Decay rates of the moments, in [0, 1).
    epsilon : float, default=1e-8
        Added to the denominator, positive.
    l2 : float, default=0.0
        L2 penalty on the weights (see `Optimizer`).
    l2_per_sample : bool, default=False
        Divide the penalty by the batch's sample-weight sum (see `Optimizer`).
    """

    _kind = _KIND_ADAM
    _n_buffers = 2
    _fields = ("lr", "beta1", "beta2", "epsilon", "l2", "l2_per_sample")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, l2=0.0,
                 l2_per_sample=False):
        self.beta1 = _real(beta1, "beta1", low=0.0, high=1.0, high_open=True)
        self.beta2 = _real(beta2, "beta2", low=0.0, high=1.0, high_open=True)
        self.epsilon = _real(epsilon, "epsilon", low=0.0, low_open=True)
        super().__init__(lr, l2, l2_per_sample)

    def _hyper(self):
        return self._kind, 0.0, False, self.beta1, self.beta2, self.epsilon


class LBFGS:
    """Full-batch L-BFGS: scipy.optimize.minimize(method="L-BFGS-B") on the loss over all
    the training rows and its gradient, each computed by one compiled pass (scikit-learn's
    solver="lbfgs"). Not a minibatch optimizer: Network.fit takes it (its `epochs` are
    the iterations), train_epoch does not. Needs scipy.

    Parameters
    ----------
    max_fun : int, default=15000
        At most this many evaluations of the loss and gradient.
    tol : float, default=1e-4
        scipy's gtol: stop once every component of the projected gradient is at most tol.
    l2 : float, default=0.0
        L2 penalty 0.5 * l2 * sum(W**2) on the weights.
    l2_per_sample : bool, default=False
        Divide the penalty by the sample-weight sum (scikit-learn's alpha).

    Attributes
    ----------
    n_iter_ : int
        The iterations the last fit ran.
    n_fun_ : int
        The evaluations of the loss and gradient the last fit made.
    """

    _fields = ("max_fun", "tol", "l2", "l2_per_sample")

    def __init__(self, max_fun=15000, tol=1e-4, l2=0.0, l2_per_sample=False):
        if isinstance(max_fun, (bool, np.bool_)) or not isinstance(max_fun, numbers.Integral):
            raise TypeError(f"max_fun must be an int; got {max_fun!r}")
        if max_fun < 1:
            raise ValueError(f"max_fun must be >= 1; got {max_fun!r}")
        self.max_fun = int(max_fun)
        self.tol = _real(tol, "tol", low=0.0)
        self.l2 = _real(l2, "l2", low=0.0)
        self.l2_per_sample = _flag(l2_per_sample, "l2_per_sample")
        self.n_iter_ = 0
        self.n_fun_ = 0

    def __repr__(self):
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"fastbp.optim.LBFGS({fields})"


def make_optimizer(optimizer, lr=None, momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999,
                   epsilon=1e-8, l2=0.0):
    """An `Optimizer` (or `LBFGS`) from `fit`'s arguments.

    Parameters
    ----------
    optimizer : {"sgd", "adam", "lbfgs"} or Optimizer or LBFGS
        A name builds an optimizer (lr defaults to 0.1 for sgd, 0.001 for adam; lbfgs
        takes no lr); an instance is used as it is, and the other arguments must then be
        left at their defaults.
    lr, momentum, nesterov, beta1, beta2, epsilon, l2
        As `SGD`'s and `Adam`'s (`l2` also `LBFGS`'s).

    Returns
    -------
    Optimizer or LBFGS
    """
    if isinstance(optimizer, LBFGS):
        if lr is not None or momentum != 0.0 or nesterov or l2 != 0.0 or (beta1, beta2, epsilon) != (0.9, 0.999, 1e-8):
            raise ValueError("give the hyperparameters to the optimizer object, not to fit, "
                             "when `optimizer` is an LBFGS instance")
        return optimizer
    if isinstance(optimizer, Optimizer):
        if lr is not None or momentum != 0.0 or nesterov or l2 != 0.0 or (beta1, beta2, epsilon) != (0.9, 0.999, 1e-8):
            raise ValueError("give the hyperparameters to the optimizer object, not to fit, "
                             "when `optimizer` is an Optimizer instance")
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be 'sgd', 'adam' or a fastbp.optim.Optimizer; got {optimizer!r}")
    name = optimizer.lower()
    if name == "sgd":
        return SGD(0.1 if lr is None else lr, momentum=momentum, nesterov=nesterov, l2=l2)
    if name == "adam":
        if momentum != 0.0 or nesterov:
            raise ValueError("momentum and nesterov apply to optimizer='sgd', not 'adam'")
        return Adam(0.001 if lr is None else lr, beta1=beta1, beta2=beta2, epsilon=epsilon, l2=l2)
    if name == "lbfgs":
        if lr is not None or momentum != 0.0 or nesterov or (beta1, beta2, epsilon) != (0.9, 0.999, 1e-8):
            raise ValueError("optimizer='lbfgs' takes no lr, momentum, nesterov, beta1, beta2 "
                             "or epsilon (use fastbp.optim.LBFGS for max_fun and tol)")
        return LBFGS(l2=l2)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'lbfgs'; got {optimizer!r}")
