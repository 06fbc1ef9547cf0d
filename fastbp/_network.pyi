# Type stubs of the compiled module built from src/_network.pyx. These functions trust
# their arguments; the checked public API is fastbp.Network.
from typing import Callable

import numpy as np
import numpy.typing as npt

_Float = np.float32 | np.float64
_Arr = npt.NDArray[_Float]
_Idx = npt.NDArray[np.intp]
_Acts = npt.NDArray[np.intc]
_Labels = npt.NDArray[np.int64]

def set_target(code: int) -> bool: ...
def target_supported(code: int) -> bool: ...
def active_target() -> int: ...
def sizes_of(sizes: _Idx, acts: _Acts, capacity: int, input_slot: bool,
             n_threads: int) -> tuple[int, int]: ...
def forward(params: _Arr, work: _Arr, sizes: _Idx, acts: _Acts, X: _Arr, out: _Arr,
            n_threads: int) -> None: ...
def loss_gradients_step(params: _Arr, grads: _Arr, work: _Arr, sizes: _Idx, acts: _Acts,
                        loss: int, X: _Arr, labels: _Labels, Y: _Arr, weights: _Arr,
                        want_grad: bool, lr: float, n_threads: int) -> tuple[float, bool]: ...
def train_epoch(params: _Arr, grads: _Arr, state1: _Arr, state2: _Arr, work: _Arr,
                label_buf: _Labels, w_buf: _Arr, sizes: _Idx, acts: _Acts, loss: int,
                X: _Arr, labels: _Labels, Y: _Arr, weights: _Arr, order: _Labels,
                batch_size: int, kind: int, lr: float, momentum: float, nesterov: bool,
                beta1: float, beta2: float, eps: float, t0: int, scale: float, l2: float,
                l2_per_sample: bool, n_threads: int, steps_done: _Labels,
                progress: Callable[[int], object] | None = ...
                ) -> tuple[float, float, int, int, int]: ...
