"""The claims table: statuses computed from the committed JSON, and held equal to the docs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from feedback_alignment.experiments import claims, render
from feedback_alignment.experiments.results import Column, Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
STATUSES = (claims.REPRODUCED, claims.NOT_REPRODUCED, claims.NOT_TESTABLE, claims.NOT_MEASURED)


def _write(folder: Path, name: str, columns: list[str], rows: list[list], **extra) -> Path:
    table = Table(name, [Column(c) for c in columns], rows=rows)
    payload = {**table.to_json(), "provenance": {"seeds": extra.pop("seeds", [0])}, **extra}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload))
    return path


def _nerf(folder: Path, dfa: float, rules=("BP", "DFA", "Shallow"), **extra) -> Path:
    psnr = {"BP": 25.0, "DFA": dfa, "Shallow": 9.0}
    rows = [[r, psnr[r]] for r in rules]
    return _write(folder, "nerf", ["rule", "test PSNR dB (ours)"], rows, **extra)


def _claim(claim_id: str) -> claims.Claim:
    (found,) = [c for c in claims.CLAIMS if c.id == claim_id]
    return found


def _status(claim_id: str, folder: Path) -> claims.Outcome:
    return claims.assess(_claim(claim_id), claims.Results(folder))


def test_committed_claims_tables_equal_the_rendering():
    for doc, marker in ((ROOT / "docs" / "REPRODUCTION.md", "<!-- claims -->"),
                        (ROOT / "README.md", "<!-- claims: summary -->")):  # fmt: skip
        text = doc.read_text()
        assert marker in text, f"{doc.name} lost its {marker} block"
        rendered, changed = render.render_text(text, RESULTS)
        assert changed == [], f"{doc.name}: stale {changed}: python -m {render.__name__}"
        assert rendered == text


def test_every_claim_gets_a_known_status_from_the_committed_json():
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids)) >= 20
    results = claims.Results(RESULTS)
    for claim in claims.CLAIMS:
        outcome = claims.assess(claim, results)
        assert outcome.status in STATUSES, claim.id
        assert claim.paper_figure and claim.target, claim.id
        if outcome.status == claims.NOT_REPRODUCED:
            assert outcome.detail, f"{claim.id}: a miss must say by how much"
    targets = [c.id for c in claims.CLAIMS if c.target.startswith("issue 13")]
    assert targets == ["transformer-macro", "transformer-micro", "nerf-gap", "graphs-gcn-gap",
                       "recs-setting", "sign-symmetry-uSF", "sign-symmetry-frSF"]  # fmt: skip


def test_a_status_flips_when_the_value_crosses_its_target(tmp_path):
    _nerf(tmp_path, dfa=19.5)  # gap 5.5 dB <= 5.6
    assert _status("nerf-gap", tmp_path).status == claims.REPRODUCED
    _nerf(tmp_path, dfa=19.3)  # gap 5.7 dB
    miss = _status("nerf-gap", tmp_path)
    assert miss.status == claims.NOT_REPRODUCED and miss.detail.startswith("0.10 dB wider")
    assert "gap 5.70 dB" in miss.ours and "[nerf, 1 seed]" in miss.ours

    columns = ["rule", "val perplexity (ours, per char)"]
    ppl = {"BP": 5.0, "DFA-micro": 9.0, "Shallow": 20.0}
    for macro, status in ((6.6, claims.REPRODUCED), (6.8, claims.NOT_REPRODUCED)):
        # log-ppl gap closure (log 20 - log macro) / (log 20 - log 5) = 0.79 at macro = 6.69
        rows = [[k, v] for k, v in {**ppl, "DFA-macro": macro}.items()]
        _write(tmp_path, "transformer", columns, rows)
        assert _status("transformer-macro", tmp_path).status == status


@pytest.mark.parametrize(
    ("errors", "status", "detail"),
    [
        ({"uSF": 9.9}, claims.REPRODUCED, "0.90 points, within issue 13's 1 point"),
        ({"uSF": 10.4}, claims.REPRODUCED, "1.40 points, outside issue 13's 1 point"),
        ({"uSF": 10.5}, claims.NOT_REPRODUCED, "uSF − BP = 1.50 points"),
        ({"uSF": 9.5, "DFA": 9.4}, claims.NOT_REPRODUCED, "uSF not ahead of FA and DFA"),
    ],
)
def test_the_resnet_claim_holds_usf_to_biotorchs_own_gap(tmp_path, errors, status, detail):
    error = {"BP": 9.0, "FA": 20.0, "DFA": 30.0, **errors}
    rows = [[rule, value] for rule, value in error.items()]
    _write(tmp_path, "resnet_fashion_mnist", ["rule", "test error %"], rows)
    outcome = _status("sign-symmetry-resnet", tmp_path)
    assert outcome.status == status and outcome.detail.endswith(detail)
    assert "BP 9.00 / uSF" in outcome.ours and "[resnet_fashion_mnist, 1 seed]" in outcome.ours


def test_spread_and_seeds_come_from_the_json(tmp_path):
    cell = {"mean": 78.0, "std": 1.25}
    rows = [[layer, cell, {"mean": 77.0, "std": 2.0}, {"mean": 30.0, "std": 2.0}]
            for layer in ("GCNConv", "ChebConv (K=2)", "GATConv (8x8)")]  # fmt: skip
    _write(tmp_path, "graphs_cora", ["layer", "BP", "DFA", "Shallow"], rows, seeds=[0, 1, 2])
    outcome = _status("graphs-gcn-gap", tmp_path)
    assert outcome.status == claims.REPRODUCED  # G = 47 / 48 = 0.979
    assert "BP 78.0 ± 1.2" in outcome.ours and "[graphs_cora, 3 seeds]" in outcome.ours


def test_a_missing_or_quick_json_renders_not_measured(tmp_path):
    table = claims.claims_table(tmp_path)  # an empty folder: nothing crashes
    statuses = {row[0].split("`")[1]: row[-1] for row in table.rows}
    assert statuses["nerf-gap"].startswith(f"**{claims.NOT_MEASURED}**")
    assert "`feedback-alignment reproduce --tasks nerf`" in statuses["nerf-gap"]
    assert statuses["recs-level"].startswith(f"**{claims.NOT_TESTABLE}**")
    rows = [
        ["BP", {"mean": 25.0, "std": 0.1}],
        ["DFA", {"mean": None, "std": None}],
        ["Shallow", 9.0],
    ]
    _write(tmp_path, "nerf", ["rule", "test PSNR dB (ours)"], rows)  # DFA's seeds all NaN
    assert _status("nerf-gap", tmp_path).status == claims.NOT_MEASURED
    _nerf(tmp_path, dfa=20.0, mode="quick")
    outcome = _status("nerf-gap", tmp_path)
    assert outcome.status == claims.NOT_MEASURED and "quick mode" in outcome.detail


def test_a_json_without_the_expected_row_or_column_fails_loudly(tmp_path):
    _nerf(tmp_path, dfa=20.0, rules=("BP", "DFA"))
    with pytest.raises(claims.ClaimDataError, match=r"nerf\.json: no row \{'rule': 'Shallow'\}"):
        claims.claims_table(tmp_path)
    _write(tmp_path, "nerf", ["rule", "PSNR"], [["BP", 1.0], ["DFA", 1.0], ["Shallow", 1.0]])
    with pytest.raises(claims.ClaimDataError, match=r"nerf\.json: no column 'test PSNR dB"):
        claims.claims_table(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- claims -->\n<!-- /claims -->\n")
    assert render.main([str(doc), "--results", str(tmp_path), "--check"]) == 2


def test_a_rerun_that_crosses_a_target_makes_the_docs_stale(tmp_path, capsys):
    shutil.copytree(RESULTS, tmp_path / "results")
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text((ROOT / "docs" / "REPRODUCTION.md").read_text())
    path = tmp_path / "results" / "nerf.json"
    payload = json.loads(path.read_text())
    bp = payload["rows"][0][1]
    bp = bp["mean"] if isinstance(bp, dict) else bp
    payload["rows"][1][1] = bp - 1.0  # DFA 1 dB below BP
    path.write_text(json.dumps(payload))
    args = [str(doc), "--results", str(tmp_path / "results")]
    assert render.main([*args, "--check"]) == 1
    assert "table 'claims' differs" in capsys.readouterr().out
    assert render.main(args) == 0
    (row,) = [line for line in doc.read_text().splitlines() if line.startswith("| `nerf-gap`")]
    assert row.endswith("| **reproduced** |") and "gap 1.00 dB" in row
    assert render.main([*args, "--check"]) == 0


def test_spearman():
    assert claims.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert claims.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert claims.spearman([1, 2, 3], [1, 1, 2]) == pytest.approx(0.8660254)


def test_the_nerf_ordering_fails_when_one_dfa_seed_is_below_shallow(tmp_path):
    columns = ["rule", "test PSNR dB (ours)", "worst seed PSNR dB (ours)"]
    rows = [["BP", 25.0, 24.9], ["DFA", 13.0, 8.0], ["Shallow", 9.5, 9.4]]
    _write(tmp_path, "nerf", columns, rows, seeds=[0, 1])
    outcome = _status("nerf-order", tmp_path)
    assert outcome.status == claims.NOT_REPRODUCED and "below Shallow" in outcome.detail
    rows[1][2] = 12.0  # every seed above Shallow: the ordering holds
    _write(tmp_path, "nerf", columns, rows, seeds=[0, 1])
    assert _status("nerf-order", tmp_path).status == claims.REPRODUCED
