"""Issue 21 (items 5, 13): results files are sealed, and render trusts only what it can check.

Every file a run writes carries a digest of its cells and the feedback stream version; ``render``
refuses an edited file (exit 2, naming it), refuses text where a number belongs (naming the file
and the field), marks files written before digests until they are rerun, renders every doc from
the same bytes and writes no doc unless all rendered.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from feedback_alignment.experiments import render, results, tuning
from feedback_alignment.experiments.results import Column, Table
from feedback_alignment.feedback import STREAM_VERSION

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOCS = ROOT / "docs" / "REPRODUCTION.md"
README = ROOT / "README.md"


def _table(value: float = 71.5) -> Table:
    table = Table("graphs_cora", [Column("layer", align="left"), Column("BP", 1)])
    table.add("GCNConv", {"mean": value, "std": 0.5})
    return table


def _doc(tmp_path: Path, name: str = "graphs_cora") -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- results: {name} -->\n<!-- /results -->\n")
    return doc


def test_a_written_table_is_sealed_and_records_the_stream_version(tmp_path):
    json_path, _ = results.write_table(tmp_path, _table(), seeds=[0])
    payload = json.loads(json_path.read_text())
    assert payload["digest"].startswith("sha256:")
    assert results.seal_state(payload) == results.SEALED
    assert payload["provenance"]["feedback_stream_version"] == STREAM_VERSION == 2
    body = results.write_results(tmp_path, "x", True, [0], runs=[1.5])
    assert json.loads(body.read_text())["provenance"]["feedback_stream_version"] == STREAM_VERSION
    assert results.seal_state(json.loads(body.read_text())) == results.SEALED


def test_render_refuses_a_sealed_file_edited_after_it_was_written(tmp_path, capsys):
    folder = tmp_path / "results"
    results.write_table(folder, _table(), seeds=[0])
    doc = _doc(tmp_path)
    assert render.main([str(doc), "--results", str(folder)]) == 0
    before = doc.read_text()
    assert "71.5 ± 0.5" in before and render.LEGACY_MARK not in before
    path = folder / "graphs_cora.json"
    payload = json.loads(path.read_text())
    payload["rows"][0][1]["mean"] = 99.9  # a hand edit
    path.write_text(json.dumps(payload, indent=1))
    assert render.main([str(doc), "--results", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "edited after its run wrote it" in err
    assert doc.read_text() == before  # nothing written
    assert render.main([str(doc), "--results", str(folder), "--check"]) == 2


def test_an_edit_cannot_flip_a_claim_in_one_doc_and_not_the_other(tmp_path, monkeypatch, capsys):
    """The hand-edited number is refused for every doc, and naming one default doc renders the
    other too, so README's summary and REPRODUCTION's tables never show different cells."""
    folder = tmp_path / "docs" / "results"
    shutil.copytree(RESULTS, folder)
    (tmp_path / "docs" / "REPRODUCTION.md").write_text(DOCS.read_text())
    (tmp_path / "README.md").write_text(README.read_text())
    monkeypatch.chdir(tmp_path)
    path = folder / "transformer.json"
    payload = json.loads(path.read_text())
    payload["provenance"]["feedback_stream_version"] = STREAM_VERSION
    sealed = results.seal(payload)  # as a run of today would have written it
    path.write_text(json.dumps(sealed, indent=1))
    assert render.main([]) == 0
    capsys.readouterr()
    sealed["rows"][1][2] = 6.0  # DFA-macro's perplexity: flips the claim to reproduced
    path.write_text(json.dumps(sealed, indent=1))
    readme, repro = Path("README.md").read_text(), Path("docs/REPRODUCTION.md").read_text()
    assert render.main(["README.md"]) == 2
    assert "transformer.json was edited after its run wrote it" in capsys.readouterr().err
    assert Path("README.md").read_text() == readme
    assert Path("docs/REPRODUCTION.md").read_text() == repro
    # a properly written new file: both docs follow it
    path.write_text(json.dumps(results.seal(sealed), indent=1))
    assert render.main(["README.md"]) == 0
    assert "re-rendered" in capsys.readouterr().out
    assert render.main(["--check"]) == 0
    assert "6.000" in Path("docs/REPRODUCTION.md").read_text()


def test_a_file_written_before_digests_is_marked_until_it_is_rerun(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    legacy = {**_table().to_json(), "provenance": {"command": "old run", "seeds": [0]}}
    (folder / "graphs_cora.json").write_text(json.dumps(legacy))
    doc = _doc(tmp_path)
    assert render.main([str(doc), "--results", str(folder)]) == 0
    text = doc.read_text()
    assert text.count(render.LEGACY_MARK) == 1 and "stream v1" in text
    assert "rerun `feedback-alignment reproduce --tasks graphs --seeds 0,1,2`" in text
    results.write_table(folder, _table(), seeds=[0])  # the rerun
    assert render.main([str(doc), "--results", str(folder)]) == 0
    assert render.LEGACY_MARK not in doc.read_text()


def test_the_committed_docs_mark_every_legacy_file_once():
    text = DOCS.read_text()
    legacy = [
        p.stem
        for p in RESULTS.glob("*.json")
        if results.seal_state(json.loads(p.read_text())) != results.SEALED
    ]
    assert legacy, "every committed file is sealed: drop this test's premise"
    for name in legacy:
        block = text.split(f"<!-- results: {name} -->\n", 1)[1].split("<!-- /results -->")[0]
        assert block.startswith(render.LEGACY_MARK), name


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda p: p["rows"][0][1].__setitem__("mean", "abc"), "column 'BP': 'mean' is 'abc'"),
        (lambda p: p["rows"][0][1].__setitem__("std", "0.5"), "column 'BP': 'std' is '0.5'"),
        (lambda p: p["columns"][1].__setitem__("digits", "x"), "column 1 ('BP') has 'digits' 'x'"),
        (lambda p: p["rows"].append(["GAT", "70.1"]), "row 1 ('GAT'), column 'BP' holds the text"),
    ],
)
def test_render_names_the_file_and_field_of_text_where_a_number_belongs(
    tmp_path, capsys, edit, field
):
    folder = tmp_path / "results"
    folder.mkdir()
    payload = {**_table().to_json(), "provenance": {"command": "old run", "seeds": [0]}}
    edit(payload)
    (folder / "graphs_cora.json").write_text(json.dumps(payload))
    assert render.main([str(_doc(tmp_path)), "--results", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(folder / "graphs_cora.json") in err and field in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_tuned_file_is_sealed_with_the_stream_version_and_checked(tmp_path, monkeypatch):
    tunable = tuning.Tunable(
        task="toy",
        arms=("BP",),
        space=lambda arm: {"lr": tuning.Param(1e-4, 1e-1)},
        defaults=lambda arm: {"lr": 1e-3},
        objective=lambda *a: 0.5,
        direction="maximize",
        metric="acc",
    )
    arm = tuning.ArmResult({"lr": 0.01}, 0.9, 3, 1, 0.8, 1.0)
    path = tmp_path / "toy.json"
    tuning._write(path, "toy", tunable, {"BP": arm}, 3, False, 0, "4.0", "abc")
    stored = json.loads(path.read_text())
    assert stored["provenance"]["feedback_stream_version"] == STREAM_VERSION
    assert results.seal_state(stored) == results.SEALED
    assert render.LEGACY_MARK not in tuning.markdown("toy", tmp_path)
    stored["arms"]["BP"]["values"]["lr"] = "0.02"
    path.write_text(json.dumps(results.seal(stored)))
    with pytest.raises(ValueError, match=r"toy.json: arms.BP.values.lr is '0.02', where a number"):
        tuning.markdown("toy", tmp_path)
    stored["arms"]["BP"]["values"]["lr"] = 0.02
    path.write_text(json.dumps(stored))  # edited, digest not updated
    with pytest.raises(ValueError, match=r"toy\.json was edited after its run wrote it"):
        tuning.markdown("toy", tmp_path)
    del stored["digest"], stored["provenance"]["feedback_stream_version"]
    path.write_text(json.dumps(stored))  # a file of before: rendered, with the mark
    assert tuning.markdown("toy", tmp_path).startswith(render.LEGACY_MARK)


def test_render_on_a_full_disk_leaves_the_doc_whole(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "results"
    results.write_table(folder, _table(), seeds=[0])
    doc = _doc(tmp_path)
    before = doc.read_text()

    def full(path, data):
        raise results.ResultsWriteError(path, OSError(28, "No space left on device"))

    monkeypatch.setattr(render, "write_atomic", full)
    assert render.main([str(doc), "--results", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"could not write {doc} (No space left on device)" in err and "left as it was" in err
    assert doc.read_text() == before
