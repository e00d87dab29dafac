"""A task's table is a function of the ``results.json`` its run wrote: rebuilt from the file
alone (``experiments.rerender``), it equals the table the run wrote, cell for cell and caption for
caption. A task whose report reached for something the file does not hold would fail here."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from feedback_alignment.experiments import rerender
from feedback_alignment.experiments.registry import RunOptions


def _written(folder: Path, name: str) -> dict:
    table = json.loads((folder / f"{name}.json").read_text())
    return {k: v for k, v in table.items() if k not in ("digest", "provenance")}


def _rebuilt(folder: Path) -> dict:
    return rerender.table(folder / "results.json").to_json()


@pytest.mark.parametrize("authors", [False, True], ids=["nerf", "nerf-authors"])
def test_a_nerf_table_is_rebuilt_from_its_results_file(tmp_path, authors):
    from feedback_alignment.experiments import nerf

    base = nerf.QUICK_AUTHORS if authors else nerf.QUICK
    config = replace(base, downscale=5, steps=6, eval_every=3, rays=64, test_views=2)
    nerf.run(RunOptions(out_dir=tmp_path, quick=True, progress=False, tuned=False), config)
    name = "nerf_authors_quick" if authors else "nerf_quick"
    assert _rebuilt(tmp_path) == _written(tmp_path, name)


def test_a_transformer_table_is_rebuilt_from_its_results_file(tmp_path):
    from feedback_alignment.experiments import language

    config = replace(language.QUICK, steps=4, warmup=2, eval_every=2, eval_batches=1,
                     sample_chars=2, rules=("BP", "DFA-macro", "Shallow"))  # fmt: skip
    language.run(RunOptions(out_dir=tmp_path, quick=True, progress=False, tuned=False), config)
    (table,) = [p for p in tmp_path.glob("transformer*.json")]
    assert _rebuilt(tmp_path) == _written(tmp_path, table.stem)


def test_a_null_float_reads_back_as_nan_and_a_bad_file_is_named(tmp_path):
    from feedback_alignment.experiments.recommenders_schema import RecRun

    row = {"model": "fm", "dataset": "d", "rule": "BP", "seed": 0, "test_auc": 0.8,
           "test_logloss": 0.4, "best_epoch": 1, "seconds": 1.0, "hidden_update_angle": None}  # fmt: skip
    (run,) = rerender.records([row], RecRun)
    assert run.hidden_update_angle != run.hidden_update_angle  # NaN, as the run held it
    with pytest.raises(ValueError, match="fields \\['extra'\\]"):
        rerender.records([{**row, "extra": 1}], RecRun)
    (tmp_path / "results.json").write_text(json.dumps({"task": "convnets"}))
    with pytest.raises(ValueError, match=r"task 'convnets' cannot be re-rendered.*'nerf'"):
        rerender.table(tmp_path / "results.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: not a readable results file"):
        rerender.table(tmp_path / "broken.json")
    assert rerender.main([str(tmp_path / "nowhere")]) == 2


def test_a_recommenders_table_is_rebuilt_through_the_results_writer(tmp_path):
    """The writer sanitises NaN to null and tuples to lists; the table read back is the same."""
    import math

    from feedback_alignment.experiments import recommenders
    from feedback_alignment.experiments.recommenders_schema import RecConfig, RecRun
    from feedback_alignment.experiments.results import write_results

    def run(rule: str, seed: int, auc: float, angle: float) -> RecRun:
        return RecRun("dcn", "movielens-100k", rule, seed, auc, 0.45 - auc / 10, 2, 1.0,
                      [auc - 0.01, auc], angle, {"0": 0.5} if rule == "DFA" else {})  # fmt: skip

    runs = [run("BP", s, 0.80 + 0.01 * s, math.nan) for s in range(2)]
    runs += [run("DFA", s, 0.79 + 0.01 * s, 60.0 + s) for s in range(2)]
    runs += [run("Shallow", s, 0.70, math.nan) for s in range(2)]
    config = RecConfig(models=("dcn",), datasets=("movielens-100k",), seeds=(0, 1))
    written = recommenders.summary(recommenders.aggregate(runs, config), True).to_json()
    write_results(tmp_path, "recommenders", True, (0, 1), config=config, runs=runs)
    assert _rebuilt(tmp_path) == written


def test_a_results_file_edited_after_its_run_is_refused(tmp_path):
    from feedback_alignment.experiments import nerf
    from feedback_alignment.experiments.sealed import RenderError

    config = replace(nerf.QUICK, downscale=5, steps=2, eval_every=2, rays=16, test_views=1,
                     rules=("BP",))  # fmt: skip
    nerf.run(RunOptions(out_dir=tmp_path, quick=True, progress=False, tuned=False), config)
    payload = json.loads((tmp_path / "results.json").read_text())
    payload["runs"][0]["psnr"] += 10.0  # a better number, typed in by hand
    (tmp_path / "results.json").write_text(json.dumps(payload))
    with pytest.raises(RenderError, match=r"results\.json was edited after its run wrote it"):
        rerender.table(tmp_path / "results.json")
    assert rerender.main([str(tmp_path)]) == 2  # the command line says so and writes nothing
