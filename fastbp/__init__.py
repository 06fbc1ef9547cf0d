"""fastbp: fast CPU training of multi-layer perceptrons by backpropagation.

    >>> import numpy as np, fastbp
    >>> net = fastbp.Network([784, 256, 10], activation="relu", loss="cross_entropy", seed=0)
    >>> net.fit(X, y, epochs=5, batch_size=32, lr=0.1)  # X (n, 784), y labels (n,)

fastbp.reference holds the same network in plain NumPy (the oracle and the baseline);
fastbp.kernels exposes each compiled hot loop on its own; fastbp.optim the optimizers;
fastbp.sklearn (which needs scikit-learn) the drop-in MLPClassifier and MLPRegressor.
The documentation is in docs/ (build it with sphinx-build docs docs/_build/html).
"""

from ._version import __version__
from . import _dispatch  # chooses the SIMD target before anything runs
from .network import Network, load
from ._common import ConvergenceWarning, DivergedError
from ._config import show_config
from . import kernels, optim, reference

__all__ = ["Network", "load", "ConvergenceWarning", "DivergedError", "show_config", "kernels", "optim", "reference", "__version__"]
