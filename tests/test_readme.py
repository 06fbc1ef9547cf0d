"""The README's Python blocks run as written, in order (a user copies them)."""

import os
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    if not README.exists():
        pytest.skip("no README.md next to the tests (tests run outside the source tree)")
    pytest.importorskip("sklearn")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)              # the example saves model.npz
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert os.path.exists(tmp_path / "model.npz")
    assert namespace["same"].layer_sizes == namespace["net"].layer_sizes
