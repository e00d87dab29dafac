"""docs/DATA.md lists every registered data set, with the registry's sources, digest status,
licence and size (so the two cannot drift apart)."""

from __future__ import annotations

from pathlib import Path

from feedback_alignment import data
from feedback_alignment.data.sources import digest_status, source_label

DOC = Path(__file__).resolve().parents[2] / "docs" / "DATA.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_registered_data_set_has_a_matching_row() -> None:
    rows = _rows()
    specs = data.list_specs()
    assert sorted(rows) == sorted(s.name for s in specs)
    for spec in specs:
        _, family, sources, digest, licence, size = rows[spec.name]
        assert family == spec.family, spec.name
        assert sources == "; ".join(f"`{source_label(s)}`" for s in spec.sources), spec.name
        assert digest == "; ".join(digest_status(s) for s in spec.sources), spec.name
        assert licence == spec.license, spec.name
        assert size == spec.size, spec.name
