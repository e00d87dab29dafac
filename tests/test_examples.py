"""Every top-level ``examples/*.py`` runs with ``--smoke`` and exits 0 (a new example is picked
up by the glob). Each runs in its own process, from a temporary folder that also serves as its
``TMPDIR`` (where the examples write their default output)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))

REQUIRES: dict[str, tuple[str, ...]] = {
    "gpt2_trainer.py": ("transformers", "accelerate", "tensorboard"),
    "gpt2_lightning.py": ("lightning", "transformers", "tensorboard"),
    "gcn_cora.py": ("torch_geometric",),
}
"""Optional packages an example needs; the test skips, naming them, where one is missing."""

DATA: dict[str, str] = {"gcn_cora.py": "cora"}
"""Data sets an example needs in the cache (it refuses to run without them, see below)."""


def _run(script: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TMPDIR": str(cwd), "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_with_smoke(script: Path, tmp_path: Path) -> None:
    """Wall times on the 2-core AMD EPYC, 2026-12-05, quiet (load 0-2) / busy (load 4-6, other
    engineers' jobs): own_cnn 5.7 / 26 s, gcn_cora 6.6 / 37 s, gpt2_trainer 7.2 / 29 s,
    gpt2_lightning 8.6 / 41 s; most of it is importing torch, transformers, Lightning and PyG.
    """
    missing = [m for m in REQUIRES.get(script.name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}")
    if script.name in DATA:
        from feedback_alignment import data

        if not data.is_cached(DATA[script.name]):
            pytest.skip(f"{script.name} needs {DATA[script.name]!r} in the data cache")
    result = _run(script, tmp_path)
    output = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, output


def test_gcn_cora_names_the_fetch_command_when_cora_is_not_cached(tmp_path: Path) -> None:
    """2.0 s quiet, 12.6 s busy (the cache is checked before PyTorch Geometric is imported)."""
    script = next(p for p in EXAMPLES if p.name == "gcn_cora.py")
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    result = _run(script, tmp_path, {"FEEDBACK_ALIGNMENT_DATA": str(empty)})
    assert result.returncode != 0
    assert "feedback-alignment data fetch cora" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
