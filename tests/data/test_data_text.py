"""Character corpora: splits, vocabulary, parsers on tiny files, real carriers."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import require_cached
from feedback_alignment import data
from feedback_alignment.data import text
from feedback_alignment.data.registry import DatasetSpec, DataUnavailableError
from feedback_alignment.data.sources import DownloadArchive, RemoteFile


def test_char_corpus_split_and_round_trip() -> None:
    c = data.CharCorpus.from_text("abcdefghij" * 10)
    assert (len(c.train), len(c.val), len(c.test)) == (90, 5, 5)
    assert c.train.dtype == torch.int64 and c.vocab == tuple("abcdefghij")
    assert c.decode(c.train[:3]) == "abc" and c.decode(c.test) == "fghij"
    assert torch.equal(c.encode("jab"), torch.tensor([9, 0, 1]))
    with pytest.raises(ValueError, match="character 'z' is not in the vocabulary"):
        c.encode("z")
    with pytest.raises(ValueError, match="three non-negative numbers summing to 1"):
        data.CharCorpus.from_text("abc", fractions=(0.5, 0.5))


def test_shakespeare_reader(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "b_gut.txt").write_bytes("Exit, pursued by a bear.\r\n".encode("latin-1"))
    (tmp_path / "texts" / "a_gut.txt").write_bytes("Où est\n".encode("latin-1"))
    assert text.read_shakespeare(tmp_path) == "Où est\n\nExit, pursued by a bear."
    with pytest.raises(ValueError, match=r"no \*_gut\.txt files"):
        text.read_shakespeare(tmp_path / "texts")


def test_kjv_reader(tmp_path: Path) -> None:
    path = tmp_path / "kjv.jsonl"
    path.write_text(
        json.dumps({"text": "In the beginning"})
        + "\n\n"
        + json.dumps({"text": "And the earth"})
        + "\n"
    )
    assert text.read_kjv(path) == "In the beginning\nAnd the earth\n"
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match=r"kjv\.jsonl: line 1 is not a verse record"):
        text.read_kjv(path)


def _wikitext_zip() -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as zf:
        zf.writestr("wikitext-2-raw/wiki.train.raw", " = Valkyria = \n Senjō no \n")
        zf.writestr("wikitext-2-raw/wiki.valid.raw", " = Homarus = \n")
        zf.writestr("wikitext-2-raw/wiki.test.raw", " = Robert = \n")
    return bio.getvalue()


def test_wikitext_download_path(tmp_cache, web, temp_spec) -> None:
    real = data.get_spec("wikitext-2")
    payload = _wikitext_zip()
    web.serve(real.sources[0].remote.url, payload)
    with pytest.raises(DataUnavailableError, match="sha256 mismatch"):
        data.load("wikitext-2")  # the real spec pins the canonical archive
    temp_spec(
        DatasetSpec(
            name="wikitext-tiny",
            family="text",
            description="t",
            license="t",
            loader=real.loader,
            files=real.files,
            sources=(
                DownloadArchive(
                    RemoteFile(
                        real.sources[0].remote.url, hashlib.sha256(payload).hexdigest(), "tiny.zip"
                    ),
                    real.sources[0].members,
                ),
            ),
        )
    )
    c = data.load("wikitext-tiny")
    assert c.decode(c.val) == " = Homarus = \n" and c.decode(c.test) == " = Robert = \n"
    assert "ō" in c.vocab
    assert text.read_wikitext(data.dataset_dir("wikitext-tiny"))["train"].startswith(" = V")


def test_tiny_shakespeare_pinned(tmp_cache, web) -> None:
    web.serve(data.get_spec("tiny-shakespeare").sources[0].files[0].url, b"First Citizen:\n")
    with pytest.raises(DataUnavailableError, match="sha256 mismatch"):
        data.load("tiny-shakespeare")
    assert not (data.dataset_dir("tiny-shakespeare") / "input.txt").exists()


def test_shakespeare_real() -> None:
    require_cached("shakespeare")
    c = data.load("shakespeare")
    total = len(c.train) + len(c.val) + len(c.test)
    assert 4_500_000 < total < 5_500_000
    assert len(c.val) == int(total * 0.05)
    assert "Hamlet" in c.decode(c.train[: total // 2]) or "HAMLET" in c.decode(c.train)
    assert c.vocab_size < 120


def test_bible_real() -> None:
    require_cached("bible")
    c = data.load("bible")
    joined = c.decode(torch.cat([c.train, c.val, c.test]))
    assert joined.count("\n") == 31_103  # one verse per line
    assert joined.startswith("In the beginning God created the heaven and the earth.")
