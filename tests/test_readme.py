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


ROOT = README.parent
PAGES = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "docs/*.md"]


def _pages():
    if not README.exists():
        pytest.skip("no README.md next to the tests (tests run outside the source tree)")
    return [p for pattern in PAGES for p in sorted(ROOT.glob(pattern))]


def test_readme_is_read_in_two_minutes():
    if not README.exists():
        pytest.skip("no README.md next to the tests")
    assert len(README.read_text().splitlines()) <= 160


def test_quick_start_is_the_demo_then_the_tests():
    """.ci/run runs these two commands as written; the first must be the demo."""
    if not README.exists():
        pytest.skip("no README.md next to the tests")
    section = README.read_text().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = block.strip().splitlines()
    assert len(commands) == 2
    assert "fastbp demo" in commands[0]
    assert "pytest" in commands[1]


def test_relative_links_resolve_inside_the_repository():
    """Every link of the Markdown pages that is not a URL names a file of the repository
    (nothing refers to files outside it)."""
    checked = 0
    for page in _pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            assert ROOT in path.parents or path == ROOT, f"{page.name} links outside: {target}"
            checked += 1
    assert checked > 10
