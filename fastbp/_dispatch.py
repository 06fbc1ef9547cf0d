"""Run-time choice of the SIMD target of the GEMM micro-kernels.

Chosen once at import: the best target this build and CPU support, or the one named by
the environment variable FASTBP_ISA (baseline, avx2, avx512); naming one the CPU lacks is
an ImportError that says so, never an illegal instruction later. Every extension module
that holds kernels keeps its own copy of the choice, so use_target() sets them all.
"""

import os

from . import _kernels, _network

TARGETS = {"baseline": 0, "avx2": 1, "avx512": 2}
_NAMES = {code: name for name, code in TARGETS.items()}
_MODULES = (_kernels, _network)


def available_targets():
    """Targets this build and this CPU can run, slowest first."""
    return [name for name, code in TARGETS.items() if _kernels.target_supported(code)]


def use_target(name):
    """Switch every kernel module to SIMD target `name`; ValueError if it cannot run here."""
    if name not in TARGETS:
        raise ValueError(f"SIMD target must be one of {', '.join(TARGETS)}; got {name!r}")
    if name not in available_targets():
        raise ValueError(f"SIMD target {name!r} is not supported by this CPU or build; "
                         f"available: {', '.join(available_targets())}")
    for module in _MODULES:
        if not module.set_target(TARGETS[name]):  # pragma: no cover - checked above
            raise RuntimeError(f"could not select SIMD target {name!r}")


def current_target():
    return _NAMES[_kernels.active_target()]


def _select_at_import():
    requested = os.environ.get("FASTBP_ISA", "").strip().lower()
    if requested:
        try:
            use_target(requested)
        except ValueError as exc:
            raise ImportError(f"FASTBP_ISA={requested!r}: {exc}") from None
    else:
        use_target(available_targets()[-1])


_select_at_import()
