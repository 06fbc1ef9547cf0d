"""fastbp.show_config(): what this installation was built with and what it will run."""

import platform
import sys

import numpy as np

from . import _dispatch
from ._runtime import build_info, omp_max_threads
from ._validation import effective_n_threads
from ._version import __version__


def config():
    """The facts `show_config` prints.

    Returns
    -------
    dict
        Versions, platform, compiler, OpenMP, CPU features, SIMD targets (available and
        chosen) and the default thread count.
    """
    info = build_info()
    return {
        "fastbp": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "compiler": info["compiler"],
        "openmp": info["openmp"],
        "openmp_version": info["openmp_version"],
        "cpu_features": info["cpu_features"],
        "simd_targets_available": _dispatch.available_targets(),
        "simd_target_chosen": _dispatch.current_target(),
        "default_n_threads": effective_n_threads(None, info["openmp"], omp_max_threads()),
    }


def show_config():
    """Print how this installation was built and what it will run.

    The version of fastbp, Python and NumPy; the compiler; whether OpenMP is on; the CPU's
    features; the SIMD targets available and the one chosen (``FASTBP_ISA`` forces one);
    the default thread count.

    Examples
    --------
    >>> import fastbp
    >>> fastbp.show_config()  # doctest: +SKIP
    """
    c = config()
    openmp = f"yes (version {c['openmp_version']})" if c["openmp"] else "no (serial build)"
    lines = [
        f"fastbp {c['fastbp']}  (Python {c['python']}, NumPy {c['numpy']}, {c['platform']})",
        f"  compiler:           {c['compiler']}",
        f"  OpenMP:             {openmp}",
        f"  CPU features:       {', '.join(c['cpu_features']) or 'none detected'}",
        f"  SIMD targets:       {', '.join(c['simd_targets_available'])} (built: baseline, avx2, avx512 on x86-64)",
        f"  SIMD target chosen: {c['simd_target_chosen']}  (FASTBP_ISA=baseline|avx2|avx512 forces one)",
        f"  default n_threads:  {c['default_n_threads']}",
    ]
    print("\n".join(lines))
