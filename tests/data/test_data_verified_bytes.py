"""Issue 21 item 6: a cached file swapped between its digest check and its parsing is not used.

The load parses the very bytes whose sha256 it checked: a file replaced (renamed over) right after
the check, as a concurrent writer or an attacker with access to the cache could, changes nothing
in what is loaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from feedback_alignment import data
from feedback_alignment.data import registry, text
from feedback_alignment.data.images import load_idx_dir, write_idx
from feedback_alignment.data.registry import DatasetSpec
from feedback_alignment.data.sources import Download, RemoteFile

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40
URL = "https://example.invalid/toy/input.txt"


def _swap_after_every_check(monkeypatch, path_of, payload_of):
    """After each ``verify`` (the digest check), rename other bytes over each checked file."""
    real = registry.verify
    swapped: list[Path] = []

    def verify(spec, directory, recorded, source, *args, **kwargs):
        problems = real(spec, directory, recorded, source, *args, **kwargs)
        for rel in spec.files:
            target = path_of(directory, rel)
            evil = target.with_name(".evil")
            evil.write_bytes(payload_of(rel))
            os.replace(evil, target)
            swapped.append(target)
        return problems

    monkeypatch.setattr(registry, "verify", verify)
    return swapped


def test_a_text_swapped_after_its_check_is_not_parsed(tmp_cache, web, temp_spec, monkeypatch):
    sha = web.serve(URL, TEXT.encode())
    temp_spec(
        DatasetSpec(
            name="toy-text",
            family="text",
            description="test",
            license="test",
            loader=text.load_tiny_shakespeare_dir,
            files=("input.txt",),
            sources=(Download((RemoteFile(URL, sha, "input.txt"),)),),
        )
    )
    first = data.load("toy-text")  # fetched and recorded
    swapped = _swap_after_every_check(
        monkeypatch, lambda d, rel: d / rel, lambda rel: b"EVIL " * 400
    )
    again = data.load("toy-text")
    assert swapped, "the swap never happened"
    assert "EVIL" not in again.vocab and again.vocab == first.vocab
    assert again.train.tolist() == first.train.tolist()


def test_an_idx_image_file_swapped_after_its_check_is_not_parsed(
    tmp_cache, web, temp_spec, monkeypatch, tmp_path
):
    images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28) % 251
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)

    def idx_files(images, labels, folder):
        folder.mkdir()
        out = {}
        for rel, array in (
            ("train-images-idx3-ubyte.gz", images),
            ("train-labels-idx1-ubyte.gz", labels),
            ("t10k-images-idx3-ubyte.gz", images[:2]),
            ("t10k-labels-idx1-ubyte.gz", labels[:2]),
        ):
            write_idx(folder / rel, array)
            out[rel] = (folder / rel).read_bytes()
        return out

    files = idx_files(images, labels, tmp_path / "good")
    evil = idx_files(255 - images, labels[::-1].copy(), tmp_path / "evil")
    remote = tuple(
        RemoteFile(
            f"https://example.invalid/{rel}", web.serve(f"https://example.invalid/{rel}", b), rel
        )
        for rel, b in files.items()
    )
    temp_spec(
        DatasetSpec(
            name="toy-idx",
            family="images",
            description="test",
            license="test",
            loader=load_idx_dir,
            files=tuple(files),
            sources=(Download(remote),),
        )
    )
    first = data.load("toy-idx")
    _swap_after_every_check(monkeypatch, lambda d, rel: d / rel, lambda rel: evil[rel])
    again = data.load("toy-idx")
    assert again.x_train.tolist() == first.x_train.tolist()
    assert again.y_train.tolist() == first.y_train.tolist() == [0, 1, 2, 3]
    on_disk = data.dataset_dir("toy-idx") / "train-labels-idx1-ubyte.gz"
    assert (
        hashlib.sha256(on_disk.read_bytes()).hexdigest()
        != hashlib.sha256(files["train-labels-idx1-ubyte.gz"]).hexdigest()
    )  # the cache holds the swapped file, and it was not used
