"""One provenance helper for every results writer: the commit, the machine, JSON-ready values."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from feedback_alignment import provenance
from feedback_alignment.bench import memory
from feedback_alignment.bench import results as bench_results
from feedback_alignment.experiments import results, tuning


def test_every_writer_reads_commit_machine_and_sanitising_from_one_module():
    assert results.sanitize is provenance.sanitize is bench_results.sanitize
    assert results.commit is provenance.commit is memory.commit
    assert tuning.commit_label is provenance.commit_label
    assert bench_results.machine_description is provenance.machine
    assert results.processor_name is tuning.processor_name is provenance.processor_name


def test_commit_of_this_checkout_or_none_outside_a_repository(tmp_path, monkeypatch):
    found = provenance.commit()
    if found is not None:  # a source checkout (CI, developers); an installed wheel has none
        assert re.fullmatch(r"[0-9a-f]{40}", found)
        label = provenance.commit_label().removesuffix("-dirty")
        assert found.startswith(label.rsplit("-g", 1)[-1])  # "<tag>-<n>-g<hash>" or "<hash>"
    assert provenance.git("rev-parse", "HEAD", cwd=tmp_path) is None  # no repository there
    monkeypatch.setattr(provenance.subprocess, "run", _missing_git)
    assert provenance.commit() is None and provenance.commit_label() == "unknown"
    assert provenance.modified_sources() == []


def _missing_git(*args, **kwargs):
    raise FileNotFoundError("git")


@dataclasses.dataclass
class _Record:
    loss: float
    where: Path


def test_sanitize_writes_strict_json():
    value = {1: (math.nan, math.inf, 2.5), "record": _Record(-math.inf, Path("a/b"))}
    clean = provenance.sanitize(value)
    assert clean == {"1": [None, None, 2.5], "record": {"loss": None, "where": "a/b"}}
    json.dumps(clean, allow_nan=False)  # raises on a NaN left behind


def test_machine_names_the_processor_threads_and_device():
    info = provenance.machine("cpu")
    assert info["processor"] == provenance.processor_name() and info["processor"]
    assert info["device"] == "cpu" and info["threads"] >= 1 and info["cpus"] >= 1
    assert info["date"].endswith("UTC")
