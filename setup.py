"""Build the compiled kernels of fastbp.

Metadata lives in pyproject.toml; this file only defines the extension modules and
decides whether they are built with OpenMP.

OpenMP is probed by compiling, linking and running a tiny program with the compiler's
OpenMP flag. When that fails the extensions are built serially, with a warning.

Environment variables:
    FASTBP_NO_OPENMP=1        build serially without probing.
    FASTBP_FAIL_NO_OPENMP=1   make a missing OpenMP a build error instead of a warning.
    FASTBP_SANITIZE=1         build with AddressSanitizer and UndefinedBehaviorSanitizer
                              (-O1 -g), for tools/sanitize.sh; never for a release.

The distributed build never uses -march=native or -ffast-math: a wheel must run on any
x86-64 CPU (SIMD targets are chosen at run time, see docs/simd.md).
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        printf("%d", n);
        return n == 2 ? 0 : 1;
    }
    """
)


def _truthy(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler):
    """(compile flags, link flags) that enable OpenMP for this compiler."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs the preprocessor flag and an explicit libomp.
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _probe_openmp(compiler, cflags, ldflags):
    """Compile, link and run a two-thread OpenMP program; True when all three work."""
    tmp = tempfile.mkdtemp(prefix="fastbp_omp_")
    try:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST_PROGRAM)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        exe = os.path.join(tmp, "omp_probe")
        compiler.link_executable(objects, exe, extra_postargs=ldflags)
        if compiler.compiler_type == "msvc":
            exe += ".exe"
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "2"
    except Exception:  # any compile, link or run failure means no usable OpenMP
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that adds OpenMP flags when the compiler supports them."""

    def build_extensions(self):
        compiler = self.compiler
        if compiler.compiler_type == "msvc":
            base = ["/O2"]
        else:
            # -O3 for the auto-vectorizer; no -march and no -ffast-math (see module doc).
            # -fno-math-errno lets the compiler inline sqrt; it changes no result.
            base = ["-O3", "-fno-math-errno", "-Wno-unreachable-code"]
        cflags, ldflags = _openmp_flags(compiler)
        use_openmp = False
        if _truthy("FASTBP_NO_OPENMP"):
            print("fastbp: FASTBP_NO_OPENMP set, building without OpenMP")
        elif _probe_openmp(compiler, cflags, ldflags):
            use_openmp = True
        else:
            msg = (
                "fastbp: the compiler cannot build and run an OpenMP program; the "
                "kernels will run on one thread. Install OpenMP (libgomp / libomp) "
                "and rebuild for multi-threaded training."
            )
            if _truthy("FASTBP_FAIL_NO_OPENMP"):
                raise RuntimeError(msg + " (FASTBP_FAIL_NO_OPENMP is set)")
            warnings.warn(msg)
            print("WARNING: " + msg, file=sys.stderr)
        sanitize = []
        if _truthy("FASTBP_SANITIZE") and compiler.compiler_type != "msvc":
            sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-fno-omit-frame-pointer", "-g"]
            base = [f for f in base if not f.startswith("-O")] + ["-O1"]
        for ext in self.extensions:
            ext.extra_compile_args = base + sanitize + (cflags if use_openmp else [])
            ext.extra_link_args = sanitize + (ldflags if use_openmp else [])
        super().build_extensions()


def _extension(name, source):
    return Extension(
        name,
        [source],
        include_dirs=[np.get_include(), "src"],
        # rebuilt when a header or a cimported .pxd changes
        depends=sorted(glob.glob("src/*.h") + glob.glob("src/*.pxd")),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    )


extensions = [
    _extension("fastbp._kernels", "src/_kernels.pyx"),
    _extension("fastbp._network", "src/_network.pyx"),
    _extension("fastbp._runtime", "src/_runtime.pyx"),
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
            "nonecheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
