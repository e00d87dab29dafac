"""Docs and data held together: the committed tables equal the rendering of the committed JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from feedback_alignment.experiments import render
from feedback_alignment.experiments.results import Table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "REPRODUCTION.md"
RESULTS = ROOT / "docs" / "results"


def test_committed_docs_tables_equal_the_rendering_of_the_committed_json():
    text = DOCS.read_text()
    names = render.marked_tables(text)
    assert len(names) >= 12 and len(names) == len(set(names))
    rendered, changed = render.render_text(text, RESULTS)
    assert changed == [], f"stale tables {changed}: python -m feedback_alignment.experiments.render"
    assert rendered == text


def test_every_committed_json_is_in_the_docs_and_says_where_it_came_from():
    names = set(render.marked_tables(DOCS.read_text()))
    for path in sorted(RESULTS.glob("*.json")):
        payload = json.loads(path.read_text())
        assert path.stem in names, f"{path.name} is not rendered anywhere"
        assert payload["table"] == path.stem
        provenance = payload["provenance"]
        assert {"command", "machine", "date", "seeds", "mode"} <= set(provenance)
        assert payload.get("source") or provenance.get("commit"), path.name


def test_a_changed_number_is_caught_and_rerendered(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "results")
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text(DOCS.read_text())
    path = tmp_path / "results" / "graphs_cora.json"
    payload = json.loads(path.read_text())
    payload["rows"][0][1]["mean"], payload["rows"][0][1]["std"] = 12.3, 1.1
    path.write_text(json.dumps(payload))
    args = [str(doc), "--results", str(tmp_path / "results")]
    assert render.main([*args, "--check"]) == 1
    assert render.main(args) == 0
    assert "| GCNConv | 12.3 ± 1.1 |" in doc.read_text()
    assert render.main([*args, "--check"]) == 0


def test_a_missing_json_is_a_clear_error(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- results: nowhere -->\n| a |\n<!-- /results -->\n")
    assert render.main([str(doc), "--results", str(tmp_path), "--check"]) == 2
    assert "name a results table 'nowhere'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"keys \['columns', 'rows'\] are missing"):
        Table.from_json({"table": "x"})


def test_no_readme_renders_reproduction_and_leaves_readme_untouched(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    table = "<!-- results: graphs_cora -->\nstale\n<!-- /results -->\n"
    (tmp_path / "docs" / "REPRODUCTION.md").write_text(table)
    readme = "# hand edits\n" + table
    (tmp_path / "README.md").write_text(readme)
    monkeypatch.chdir(tmp_path)
    args = ["--results", str(RESULTS)]
    assert render.main([*args, "--no-readme"]) == 0
    assert "| GCNConv |" in (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert (tmp_path / "README.md").read_text() == readme
    # naming README.md with --no-readme still leaves it alone
    assert render.main(["README.md", *args, "--no-readme"]) == 0
    assert (tmp_path / "README.md").read_text() == readme
    assert render.main(args) == 0  # without the flag both render
    assert "| GCNConv |" in (tmp_path / "README.md").read_text()
