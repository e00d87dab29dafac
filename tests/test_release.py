"""The release files: the wheel and sdist build, pass `twine check`, carry the licence, and the
wheel installed in a fresh virtual environment runs the demo (the installed copy, not this tree).

Everything is built from a copy of the project in a temporary folder, so the shared working tree
gets no build/, dist/ or *.egg-info. About 25-35 s on the 2-core machine (2026-12-05).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")

pytest.importorskip("build", reason="the release test needs `build` (test extra)")
pytest.importorskip("twine", reason="the release test needs `twine` (test extra)")


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel of a copy of the project (the wheel is built from the sdist)."""
    base = tmp_path_factory.mktemp("release")
    project = base / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    out = base / "dist"
    # --no-isolation: the installed setuptools builds it, no network needed
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)], base
    )
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {dist}, found {found}"
    return found[0]


def test_twine_check_passes(dist: Path) -> None:
    files = [str(_one(dist, "*.whl")), str(_one(dist, "*.tar.gz"))]
    _run([sys.executable, "-m", "twine", "check", "--strict", *files], dist)


def test_the_licence_is_in_the_wheel_and_the_sdist(dist: Path) -> None:
    with zipfile.ZipFile(_one(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        licences = [n for n in names if ".dist-info/" in n and n.endswith("/LICENSE")]
        assert licences, f"no LICENSE in the wheel's .dist-info: {names[-10:]}"
        assert wheel.read(licences[0]) == (ROOT / "LICENSE").read_bytes()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        assert b"License-File: LICENSE" in metadata
        # the committed tuned values, settings presets and papers' figures travel as package data
        assert any(n.startswith("feedback_alignment/experiments/tuned/") for n in names)
        assert "feedback_alignment/experiments/presets/convnets.json" in names
        assert "feedback_alignment/experiments/papers.json" in names
    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        assert any(n.endswith("/LICENSE") for n in sdist.getnames())


def test_pyproject_declares_the_licence_file() -> None:
    """PEP 639 metadata: an SPDX expression and the licence file named (setuptools >= 77)."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project.get("license") == "MIT", 'pyproject: license = "MIT" (an SPDX expression)'
    assert "LICENSE" in project.get("license-files", []), 'pyproject: license-files = ["LICENSE"]'


def test_the_installed_wheel_runs_the_demo(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # --system-site-packages: torch and the other dependencies come from this environment
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    wheel = _one(dist, "*.whl")
    # --ignore-installed: this environment's editable install must not satisfy the requirement
    _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
         "--quiet", "--disable-pip-version-check", str(wheel)],
        tmp_path,
    )  # fmt: skip
    outside = tmp_path / "elsewhere"  # not the repository: '' on sys.path finds nothing
    outside.mkdir()
    code = "import feedback_alignment; print(feedback_alignment.__file__)"
    where = _run([str(python), "-c", code], outside).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    assert not Path(where).resolve().is_relative_to(ROOT), where
    # the smallest demo that still shows learning: DFA only, one seed, 3 epochs (about 10 s)
    report = outside / "demo.json"
    script = bindir / ("feedback-alignment.exe" if os.name == "nt" else "feedback-alignment")
    _run(
        [str(script), "demo", "--rules", "DFA", "--seeds", "0", "--epochs", "3", "--hidden", "64",
         "-q", "--out", str(report)],
        outside,
    )  # fmt: skip
    (run,) = json.loads(report.read_text())["runs"]
    assert run["rule"] == "DFA"
    assert run["test_accuracy"] > 0.5, run  # 10 classes: chance is 0.1 (82.7 % on 2026-12-05)
    assert run["loss_curve"][-1] < run["loss_curve"][0], run


def test_citation_and_licence_agree_with_the_package() -> None:
    yaml = pytest.importorskip("yaml", reason="reading CITATION.cff needs PyYAML")
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == project["version"]
    assert citation["license"] == "MIT"
    assert citation["title"] and citation["authors"]
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert "Copyright (c) 2026 the feedback-alignment authors" in licence
