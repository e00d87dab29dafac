"""The real ``--quick`` mode of the families whose other tests use smaller settings.

Each family's quick mode should take about a minute on 2 cores; these runs check that it still
runs end to end through the registry and that every output says it is quick mode. (``graphs``,
``recommenders`` and ``digits`` run their real quick mode in their own test files.)
"""

from __future__ import annotations

import json

import pytest

from feedback_alignment import data
from feedback_alignment.experiments.registry import RunOptions, resolve

FAMILIES = {
    "convnets": (["fashion-mnist"], "convnets_fashion_mnist", "| uSF | no |"),
    "resnet": (["fashion-mnist"], "resnet_fashion_mnist", "| uSF |"),
    "principled": (
        ["mnist-5k", "fashion-mnist"],
        "principled_conv",
        "| DFA, convolutions frozen |",
    ),
    "transformer": (["shakespeare"], "transformer_quick", "| DFA-macro |"),
    "nerf": (["duck"], "nerf_quick", "| Shallow |"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_quick_mode_runs_and_says_so(family, tmp_path, one_thread):
    needed, table, row = FAMILIES[family]
    missing = [name for name in needed if not data.is_cached(name)]
    if missing:
        pytest.skip(f"not cached: python -m feedback_alignment data fetch {' '.join(missing)}")
    markdown = []
    for name, task in resolve([family]).items():
        report = task.run(RunOptions(out_dir=tmp_path / name, quick=True, progress=False))
        markdown.append(report.markdown)
    text = "\n".join(markdown)
    assert row in text and "**QUICK MODE**" in text
    written = list(tmp_path.rglob(f"{table}.json"))
    assert len(written) == 1, f"no {table}.json under {tmp_path}"
    payload = json.loads(written[0].read_text())
    assert payload["mode"] == "quick" and payload["provenance"]["mode"] == "quick"
    for path in tmp_path.rglob("results.json"):
        assert json.loads(path.read_text())["quick"] is True
