"""The README's code runs as written, its links resolve, and its set-up commands are CI's.

Every ```python block of README.md (and of the docs site's home page, docs/index.md, which shows the
same example) is run in a fresh interpreter, in a temporary working folder, with ``MPLBACKEND=Agg``,
and must exit with status 0. Measured on the 2-core AMD EPYC, 2026-12-05: README.md's one block
(DFA on the digits, 10 epochs, one thread) 8 s at load average 2 (about 2 s of training, the rest
importing torch and scikit-learn), 14-16 s at load 3; docs/index.md's block is the same code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = (README, ROOT / "docs" / "index.md")

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[str]:
    """The code of every ```python block of a markdown file, in order."""
    return _FENCE.findall(path.read_text(encoding="utf-8"))


def _blocks() -> list:
    return [
        pytest.param(path, index, code, id=f"{path.relative_to(ROOT)}#{index}")
        for path in PAGES
        for index, code in enumerate(python_blocks(path))
    ]


def test_the_readme_holds_a_complete_example():
    blocks = python_blocks(README)
    assert blocks, "README.md must show a complete ```python example (tests/test_readme.py runs it)"
    assert any("import feedback_alignment" in code for code in blocks)


@pytest.mark.parametrize(("path", "index", "code"), _blocks())
def test_python_block_runs_as_written(path: Path, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg")
    # the checkout's package first, as the editable install of the README's commands would give
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    where = f"{path.relative_to(ROOT)}, python block {index}"
    assert result.returncode == 0, (
        f"{where} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
    )
    accuracy = re.search(r"test accuracy (\d\.\d+)", result.stdout)
    if accuracy is not None:  # the example's claim: DFA learns the digits
        assert float(accuracy.group(1)) > 0.8, f"{where}: {result.stdout}"


def test_the_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    missing = [
        t
        for t in targets
        if not re.match(r"[a-z]+://|#|mailto:", t) and not (ROOT / t.split("#")[0]).exists()
    ]
    assert missing == [], f"README.md links to files that do not exist: {missing}"


def test_the_readme_second_command_is_what_ci_runs():
    """.ci/run runs the README's test command: the two must not drift apart."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "```bash" and lines[5] == "```", "the two set-up commands open the README"
    install_and_demo, test_command = lines[3], lines[4]
    assert install_and_demo.endswith("python3 -m feedback_alignment demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci, "the README's second command is not the one in .ci/run"
