# Type stubs of the compiled module built from src/_network.pyx. These functions trust
# their arguments; the checked public API is fastbp.Network.
import enum
from typing import Callable

import numpy as np
import numpy.typing as npt

_Float = np.float32 | np.float64
_Arr = npt.NDArray[_Float]
_Idx = npt.NDArray[np.intp]
_Acts = npt.NDArray[np.intc]
_Labels = npt.NDArray[np.int64]

OPTIMIZER_NONE: int
OPTIMIZER_SGD: int
OPTIMIZER_ADAM: int
ACTIVATION_SOFTMAX: int

class EpochStatus(enum.IntEnum):
    EPOCH_DONE = 0
    EPOCH_LOSS_NOT_FINITE = 1
    EPOCH_PARAMS_NOT_FINITE = 2

class RecordColumn(enum.IntEnum):
    REC_LOSS_SUM = 0
    REC_PENALTY_SUM = 1
    REC_ROWS = 2
    REC_STEPS = 3
    REC_STATUS = 4
    REC_SECONDS = 5
    REC_REPORTED_LOSS = 6
    REC_COLUMNS = 7

def set_target(code: int) -> bool: ...
def target_supported(code: int) -> bool: ...
def active_target() -> int: ...
def parts_of(sizes: _Idx, capacity: int) -> int: ...
def work_size(sizes: _Idx, acts: _Acts, capacity: int, input_slot: bool, training: bool,
              n_threads: int) -> tuple[int, int]: ...
def shuffle_like_random_state(capsule: object, x: _Labels) -> None: ...
def forward(params: _Arr, work: _Arr, sizes: _Idx, acts: _Acts, X: _Arr, out: _Arr,
            n_threads: int) -> None: ...
def serial_rows(sizes: _Idx) -> int: ...

class Forward:
    n_threads: int
    capacity: int
    work_bytes: int
    def __init__(self, params: _Arr, sizes: _Idx, acts: _Acts, capacity: int, n_threads: int,
                 exp_output: bool = ...) -> None: ...
    def plain(self, X: object) -> _Arr | None: ...
    def run(self, X: _Arr, out: _Arr) -> None: ...

def loss_gradients_step(params: _Arr, grads: _Arr, work: _Arr, sizes: _Idx, acts: _Acts,
                        loss: int, X: _Arr, labels: _Labels, Y: _Arr, weights: _Arr,
                        want_grad: bool, lr: float, n_threads: int) -> tuple[float, bool]: ...
def loss_gradients_step_sparse(params: _Arr, grads: _Arr, work: _Arr, sizes: _Idx,
                               acts: _Acts, loss: int, X: object, labels: _Labels, Y: _Arr,
                               weights: _Arr, want_grad: bool, lr: float,
                               n_threads: int) -> tuple[float, bool]: ...
def forward_sparse(params: _Arr, work: _Arr, sizes: _Idx, acts: _Acts, X: object, lo: int,
                   hi: int, out: _Arr, n_threads: int) -> None: ...
def sparse_part_nnz(indptr: npt.NDArray[np.int64], rows: int) -> int: ...

class StopRule:
    best_loss: float
    no_improvement_count: float
    tol: float
    n_iter_no_change: float
    mse: bool
    epochs: int
    steps: int
    def __init__(self, best_loss: float, no_improvement_count: float, tol: float,
                 n_iter_no_change: float, mse: bool) -> None: ...

class Trainer:
    n_threads: int
    dtype: np.dtype
    capacity: int
    parts: int
    work_bytes: int
    def __init__(self, params: _Arr, grads: _Arr, state: tuple[_Arr, ...], sizes: _Idx,
                 acts: _Acts, loss: int, capacity: int, n_threads: int) -> None: ...
    def set_optimizer(self, kind: int, lr: float, momentum: float, nesterov: bool,
                      beta1: float, beta2: float, eps: float) -> None: ...
    def set_objective(self, scale: float, l2: float, l2_per_sample: bool) -> None: ...
    def bind(self, X: _Arr, labels: _Labels | None, Y: _Arr | None,
             weights: _Arr | None) -> None: ...
    def epoch(self, order: _Labels, t0: int, steps_done: _Labels,
              progress: Callable[[int], object] | None = ...
              ) -> tuple[float, float, int, int, int]: ...
    def run_epochs(self, order: _Labels, t0: int, steps_done: _Labels,
                   saved: tuple[_Arr | None, ...], shuffle_capsule: object,
                   shuffle_lock: object, max_epochs: int, rule: StopRule,
                   record: npt.NDArray[np.float64]) -> int: ...
