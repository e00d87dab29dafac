"""Every parser, fed damaged files it sees for the first time, fails with one error type.

The files are placed by hand into a data set whose only source is unreachable and which pins
nothing (so they pass the integrity check and reach the parser, as a first download without a
published digest would). Whatever the damage -- truncation, an empty file, garbage, bit flips,
a folder in place of a file -- ``data.load`` either returns or raises :class:`DataError` naming
the data set and one of its files; never ``EOFError``, ``KeyError``, ``StopIteration``,
``OSError`` or ``IsADirectoryError``.
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_data_graphs import _planetoid_files

from feedback_alignment import data
from feedback_alignment.data import graphs, images, ratings, scenes, text
from feedback_alignment.data.errors import DataError
from feedback_alignment.data.registry import DatasetSpec
from feedback_alignment.data.sources import Download, RemoteFile


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def _idx_set() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = _idx(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = _idx(rng.integers(0, 10, n))
    return files


def _mnist5k() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    rows = np.concatenate(
        [rng.integers(0, 256, (20, 784)), np.repeat(np.arange(10), 2)[:, None]], 1
    )
    text_ = "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    return {"mnist_5k.csv.gz": gzip.compress(text_.encode())}


def _cifar() -> dict[str, bytes]:
    rng = np.random.default_rng(2)

    def batch(n: int) -> bytes:
        return pickle.dumps(
            {
                b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                b"labels": [int(v) for v in rng.integers(0, 10, n)],
            },
            protocol=2,
        )

    files = {f"data_batch_{i}": batch(2) for i in range(1, 6)}
    files["test_batch"] = batch(2)
    return files


def _recbole() -> dict[str, bytes]:
    from test_data_integrity import _recbole_files

    return _recbole_files()


def _grouplens() -> dict[str, bytes]:
    flags = "|".join(["0"] * 3 + ["1"] + ["0"] * 15)
    return {
        "u.data": b"1\t10\t5\t881250949\n2\t2\t3\t891717742\n1\t2\t4\t1\n",
        "u.user": b"1|24|M|technician|85711\n2|53|F|other|94043\n",
        "u.item": f"2|GoldenEye|01-Jan-1995||http://x|{flags}\n10|Toy|1995||http://x|{flags}\n".encode(),
    }


def _criteo() -> dict[str, bytes]:
    rows = []
    for i in range(12):
        rows.append("\t".join([str(i % 2), *[str(i + k) for k in range(13)], *[f"c{i % 3}"] * 26]))
    return {"dac_sample.txt": ("\n".join(rows) + "\n").encode()}


def _parquet(frame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def _cora() -> dict[str, bytes]:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    n = 7 * 20 + 1500
    rng = np.random.default_rng(3)
    nodes = pd.DataFrame(
        {
            "nodeId": np.arange(100, 100 + n),
            "features": [rng.integers(0, 2, 3).tolist() for _ in range(n)],
            "subject": np.arange(n) % 7,
        }
    )
    rels = pd.DataFrame(
        {"sourceNodeId": 100 + rng.integers(0, n, 50), "targetNodeId": 100 + rng.integers(0, n, 50)}
    )
    return {"cora_nodes.parquet.gzip": _parquet(nodes), "cora_rels.parquet.gzip": _parquet(rels)}


def _adult() -> dict[str, bytes]:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    n = 40
    cols = {c: [f"v{i % 3}" for i in range(n)] for c in ratings.ADULT_CATEGORICAL}
    cols |= {c: list(range(n)) for c in ratings.ADULT_DENSE}
    cols["income"] = [">50K" if i % 2 else "<=50K" for i in range(n)]
    return {"adult.parquet.brotli": _parquet(pd.DataFrame(cols))}


def _kjv() -> dict[str, bytes]:
    lines = [json.dumps({"text": f"verse {i} of the beginning"}) for i in range(30)]
    return {"kjv.jsonl": ("\n".join(lines) + "\n").encode()}


def _shakespeare() -> dict[str, bytes]:
    return {
        "texts/a_gut.txt": "To be, or not to be: that is the question.\n".encode("latin-1") * 5,
        "texts/b_gut.txt": "All the world's a stage, ay.\n".encode("latin-1") * 5,
    }


def _tiny_nerf() -> dict[str, bytes]:
    import io

    rng = np.random.default_rng(4)
    buf = io.BytesIO()
    np.savez(
        buf,
        images=rng.random((8, 4, 4, 3)).astype(np.float32),
        poses=np.tile(np.eye(4, dtype=np.float32), (8, 1, 1)),
        focal=np.float32(3.0),
    )
    return {"tiny_nerf_data.npz": buf.getvalue()}


def _wikitext() -> dict[str, bytes]:
    return {
        "wiki.train.raw": " = Valkyria = \n Senjō no Valkyria \n".encode() * 4,
        "wiki.valid.raw": b" = Homarus = \n" * 4,
        "wiki.test.raw": b" = Robert = \n" * 4,
    }


def _planetoid() -> dict[str, bytes]:
    return _planetoid_files()


FIXTURES: dict[str, tuple[Callable[[], dict[str, bytes]], Callable[[Path], object]]] = {
    "idx": (_idx_set, images.load_idx_dir),
    "mnist-5k": (_mnist5k, images.load_mnist5k_dir),
    "cifar": (_cifar, images.load_cifar10_dir),
    "recbole": (_recbole, ratings.load_movielens_dir),
    "grouplens": (_grouplens, ratings.load_movielens_dir),
    "criteo": (_criteo, ratings.load_criteo_dir),
    "cora": (_cora, lambda d: graphs.load_cora_dir(d, pyg=False)),
    "adult": (_adult, ratings.load_adult_dir),
    "planetoid": (_planetoid, lambda d: graphs.load_planetoid_dir(d, "citeseer", pyg=False)),
    "kjv": (_kjv, text.load_bible_dir),
    "shakespeare": (
        _shakespeare,
        lambda d: text.CharCorpus.from_text(text.read_shakespeare(d, ["a_gut.txt", "b_gut.txt"])),
    ),
    "tiny-nerf": (_tiny_nerf, scenes.load_tiny_nerf_dir),
    "wikitext": (_wikitext, text.load_wikitext_dir),
}


def _corruptions(raw: bytes) -> dict[str, bytes | None]:
    n = len(raw)
    out: dict[str, bytes | None] = {
        "truncated-half": raw[: n // 2],
        "truncated-1": raw[:1],
        "empty": b"",
        "garbage": bytes(range(256)) * 3,
        "folder": None,
    }
    for frac in (0.1, 0.5, 0.9):
        flipped = bytearray(raw)
        flipped[int(n * frac)] ^= 0x10
        out[f"bit-flip-{frac}"] = bytes(flipped)
    return out


CASES = [
    (fixture, rel, damage)
    for fixture, (make, _) in FIXTURES.items()
    if fixture not in ("cora", "adult")  # built lazily below (need pandas)
    for rel, raw in make().items()
    for damage in _corruptions(raw)
] + [
    (fixture, rel, damage)
    for fixture, rels in (
        ("cora", ("cora_nodes.parquet.gzip", "cora_rels.parquet.gzip")),
        ("adult", ("adult.parquet.brotli",)),
    )
    for rel in rels
    for damage in ("truncated-half", "truncated-1", "empty", "garbage", "folder", "bit-flip-0.5")
]


def test_fixtures_load_when_intact(tmp_cache, temp_spec) -> None:
    for fixture, (make, loader) in FIXTURES.items():
        files = make()
        _place(fixture, files, loader, temp_spec)
        assert data.load(f"bad-{fixture}") is not None, fixture


def _place(fixture: str, files: dict[str, bytes], loader, temp_spec) -> Path:
    name = f"bad-{fixture}"
    temp_spec(
        DatasetSpec(
            name=name,
            family="text",
            description="t",
            license="t",
            loader=loader,
            files=tuple(files),
            sources=(
                Download(tuple(RemoteFile(f"https://x.invalid/{f}", None, f) for f in files)),
            ),
        )
    )
    directory = data.dataset_dir(name)
    for rel, payload in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(payload)
    return directory


@pytest.mark.parametrize(("fixture", "rel", "damage"), CASES)
def test_damaged_file_fails_with_a_data_error(
    tmp_cache, web, temp_spec, fixture: str, rel: str, damage: str
) -> None:
    make, loader = FIXTURES[fixture]
    files = make()
    bad = _corruptions(files[rel])[damage]
    directory = _place(fixture, files, loader, temp_spec)
    target = directory / rel
    if bad is None:
        target.unlink()
        target.mkdir()
    else:
        target.write_bytes(bad)
    try:
        data.load(f"bad-{fixture}")
    except DataError as exc:
        message = str(exc)
        assert f"bad-{fixture}" in message
        assert any(Path(f).name in message for f in files) or str(directory) in message, message
        assert "fix:" in message or "--force" in message or "place" in message
    # Returning is allowed: a flipped bit inside a text field is still a valid file (the
    # integrity check, not the parser, catches such changes once a digest exists).
