"""What the installed package carries: one version, type stubs that match the compiled
modules, and a configuration that says what runs."""

import ast
import importlib
import importlib.metadata
import pathlib

import pytest

import fastbp

PACKAGE = pathlib.Path(fastbp.__file__).parent


@pytest.mark.parametrize("module", ["_kernels", "_network", "_runtime"])
def test_stubs_match_the_compiled_modules(module):
    stub = PACKAGE / f"{module}.pyi"
    assert stub.exists(), f"{stub} is not installed"
    declared = {n.name for n in ast.parse(stub.read_text()).body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    mod = importlib.import_module(f"fastbp.{module}")
    public = {n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))}
    assert declared == public


def test_package_is_marked_typed():
    assert (PACKAGE / "py.typed").exists()


def test_one_version():
    try:
        installed = importlib.metadata.version("fastbp")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("running from a source tree that is not installed")
    assert fastbp.__version__ == installed


def test_show_config_names_what_runs(capsys):
    fastbp.show_config()
    out = capsys.readouterr().out
    for field in ("fastbp " + fastbp.__version__, "compiler:", "OpenMP:", "SIMD target chosen:",
                  "default n_threads:"):
        assert field in out
