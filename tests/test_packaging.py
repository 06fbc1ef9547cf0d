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


# The public methods of fastbp.Network and of fastbp.reference.Network.
_NETWORK_METHODS = ("forward", "loss", "gradients", "train_step", "train_epoch", "fit",
                    "predict", "save")

# The public objects whose docstrings the numpydoc check below holds. Add a module's
# objects here once their docstrings have Parameters and Returns sections.
NUMPYDOC_CHECKED = (
    ["fastbp.show_config", "fastbp.DivergedError", "fastbp.ConvergenceWarning"]
    + [f"fastbp.kernels.{name}" for name in fastbp.kernels.__all__]
    + [f"fastbp.optim.{name}" for name in fastbp.optim.__all__]
    + ["fastbp.optim.make_optimizer", "fastbp.optim.Optimizer.reset"]
    + ["fastbp.Network", "fastbp.load"]
    + [f"fastbp.Network.{name}" for name in _NETWORK_METHODS]
    + ["fastbp.reference.Network", "fastbp.reference.load"]
    + [f"fastbp.reference.Network.{name}" for name in _NETWORK_METHODS]
    + [f"fastbp.sklearn.{cls}{member}" for cls in ("MLPClassifier", "MLPRegressor")
       for member in ("", ".fit", ".partial_fit", ".predict")]
    + ["fastbp.sklearn.MLPClassifier.predict_proba",
       "fastbp.sklearn.MLPClassifier.predict_log_proba"]
)


@pytest.mark.parametrize("name", NUMPYDOC_CHECKED)
def test_public_docstrings_follow_numpydoc(name):
    """Every parameter documented, a return value described, a docstring at all (the API
    reference is generated from these)."""
    validate = pytest.importorskip("numpydoc.validate").validate
    if name.startswith("fastbp.sklearn."):
        pytest.importorskip("sklearn")  # an optional dependency
    errors = [(code, message) for code, message in validate(name)["errors"]
              if code in ("GL08", "PR01", "PR02", "RT01")]
    assert errors == []
