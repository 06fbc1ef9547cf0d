"""`fastbp demo`: the table's rows, the same training in every library, the chart."""

import io
import re
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastbp import demo  # noqa: E402
from fastbp.__main__ import DEMO_DATASETS, main  # noqa: E402

ROW = re.compile(r"^(\w+)\s+(fastbp|scikit-learn|pytorch)\s+([\d.]+)\s+([\d.]+)x\s+"
                 r"([\d.-]+) (accuracy|R\^2)\s+([\d.]+)$")


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr(demo, "COOL_DOWN_S", 0.0)


def run_demo(capsys, *args):
    assert main(["demo", "--epochs", "3", "--threads", "2", "--repeats", "1", *args]) == 0
    out = capsys.readouterr()
    rows = [m.groups() for m in map(ROW.match, out.out.splitlines()) if m]
    return out, rows


def test_cli_lists_the_datasets_demo_runs():
    assert DEMO_DATASETS == demo.DATASETS


def test_table_has_one_row_per_dataset_and_library(capsys):
    out, rows = run_demo(capsys, "--datasets", "digits", "breast_cancer", "diabetes",
                         "--no-torch")
    assert [(r[0], r[1]) for r in rows] == [
        (d, lib) for d in ("digits", "breast_cancer", "diabetes")
        for lib in ("fastbp", "scikit-learn")]
    metrics = {r[0]: r[5] for r in rows}
    assert metrics == {"digits": "accuracy", "breast_cancer": "accuracy", "diabetes": "R^2"}
    for r in rows:
        assert float(r[2]) > 0
        if r[1] == "scikit-learn":
            assert r[3] == "1.0"
    # the same initial parameters, minibatches and updates: the same loss and score
    by_key = {(r[0], r[1]): r for r in rows}
    for d in ("digits", "breast_cancer", "diabetes"):
        assert by_key[d, "fastbp"][4] == by_key[d, "scikit-learn"][4]
        assert by_key[d, "fastbp"][6] == by_key[d, "scikit-learn"][6]
    assert re.search(r"fastbp's speedup over scikit-learn: [\d.]+x to [\d.]+x", out.out)
    assert "pytorch" not in "\n".join(out.out.splitlines()[2:])


def test_progress_is_a_line_per_fit_off_a_terminal(capsys):
    out, rows = run_demo(capsys, "--datasets", "breast_cancer", "--no-torch", "--repeats", "2")
    lines = [line for line in out.err.splitlines() if line.startswith("[")]
    assert len(lines) == 4                  # 2 libraries x 2 repeats
    assert lines[-1].startswith("[" + "#" * 20 + "] 4/4")
    assert len(rows) == 2                   # one row per library: the median of its repeats


def test_progress_rewrites_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = demo.Progress(2, stream=stream)
    progress.start("digits", "fastbp")
    progress.finish("digits", "fastbp", 0.5)
    progress.start("digits", "scikit-learn")
    progress.finish("digits", "scikit-learn", 1.0)
    text = stream.getvalue()
    assert "\n" not in text
    assert text.count("\r") >= 4 and "1/2" in text and text.endswith("\r\033[K")


def test_torch_follows_scikit_learn_step_for_step(capsys):
    pytest.importorskip("torch")
    out, rows = run_demo(capsys, "--datasets", "digits", "breast_cancer")
    assert [r[1] for r in rows] == ["fastbp", "scikit-learn", "pytorch"] * 2
    for d in ("digits", "breast_cancer"):
        sk = next(r for r in rows if r[:2] == (d, "scikit-learn"))
        pt = next(r for r in rows if r[:2] == (d, "pytorch"))
        # torch's Adam puts eps under the bias correction: the losses agree to rounding
        # of that, not bit for bit
        assert float(pt[6]) == pytest.approx(float(sk[6]), rel=1e-3)


def test_torch_initial_parameters_are_scikit_learns():
    from sklearn.neural_network import MLPClassifier

    split = demo.load_split("breast_cancer")
    coefs, intercepts, _ = demo.initial_parameters([split.X_train.shape[1], *demo.HIDDEN, 1],
                                                   seed=3)
    # scikit-learn's MLP after zero learning: one epoch at lr 1e-300 leaves the draws
    clf = MLPClassifier(hidden_layer_sizes=demo.HIDDEN, solver="sgd", learning_rate_init=1e-300,
                        momentum=0.0, alpha=0.0, max_iter=1, random_state=3)
    with pytest.warns(Warning):
        clf.fit(split.X_train, split.y_train)
    for mine, theirs in zip(coefs + intercepts, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("name", demo.DATASETS)
def test_torch_output_width_is_scikit_learns(name):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    split = demo.load_split(name)
    cls = MLPClassifier if split.task == "classification" else MLPRegressor
    with pytest.warns(ConvergenceWarning):
        fitted = cls(hidden_layer_sizes=(3,), max_iter=1).fit(split.X_train, split.y_train)
    assert demo.n_outputs(split) == fitted.n_outputs_


def test_chart_is_written_as_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "demo.png"
    out, rows = run_demo(capsys, "--datasets", "digits", "--no-torch", "--chart", str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart written to {path}" in out.out


def test_chart_without_matplotlib_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib fails
    path = tmp_path / "demo.png"
    out, rows = run_demo(capsys, "--datasets", "digits", "--no-torch", "--chart", str(path))
    assert not path.exists()
    assert "pip install matplotlib" in out.out
    assert len(rows) == 2


def test_bad_arguments_are_refused(capsys):
    for argv in (["demo", "--epochs", "0"], ["demo", "--datasets", "mnist"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    with pytest.raises(ValueError, match="data set"):
        demo.load_split("mnist")
