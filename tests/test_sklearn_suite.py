"""scikit-learn's own test module for its MLP (sklearn/neural_network/tests/test_mlp.py,
shipped inside scikit-learn) run against fastbp.sklearn: the file as installed, with its
one import of MLPClassifier and MLPRegressor swapped for fastbp's, in a subprocess."""

import os
import re
import subprocess
import sys

import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import fastbp  # noqa: E402

IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"


def _suite_path():
    path = os.path.join(os.path.dirname(sklearn.__file__), "neural_network", "tests",
                        "test_mlp.py")
    if not os.path.exists(path):
        pytest.skip("this scikit-learn was installed without its tests")
    return path


def test_scikit_learns_mlp_tests_pass(tmp_path):
    with open(_suite_path(), encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines()
    assert lines.count(IMPORT) == 1, "scikit-learn's test module imports its MLP differently"
    swapped = source.replace(IMPORT, "from fastbp.sklearn import MLPClassifier, MLPRegressor")
    # one test of ours, so that the run shows it tested fastbp's estimators
    swapped += ("\n\ndef test_fastbp_is_under_test():\n"
                "    assert MLPClassifier.__module__ == MLPRegressor.__module__ == 'fastbp.sklearn'\n")
    (tmp_path / "test_mlp_fastbp.py").write_text(swapped, encoding="utf-8")
    root = os.path.dirname(os.path.dirname(fastbp.__file__))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        # scikit-learn's conftest gives the module its fixtures (global_random_seed) as
        # in scikit-learn's own runs
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "sklearn.conftest", "-rfEs", "test_mlp_fastbp.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", summary), summary
    assert not re.search(r"failed|error", summary), summary
