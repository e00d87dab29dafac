"""Click-through tables: Criteo and MovieLens parsers on tiny files, real carriers."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from conftest import require_cached
from feedback_alignment import data
from feedback_alignment.data import ratings


def _criteo_lines(n: int) -> str:
    lines = []
    for i in range(n):
        dense = [str(i), "", "-1"] + [str(k) for k in range(10)]
        cats = [f"{(i * 7 + k) % 3:08x}" if k != 5 else "" for k in range(26)]
        lines.append("\t".join([str(i % 2), *dense, *cats]))
    return "\n".join(lines) + "\n"


def _check_table(t: data.CTRData, n: int, n_fields: int, n_dense: int) -> None:
    assert len(t) == n
    assert t.x_cat.shape == (n, n_fields) and t.x_cat.dtype == torch.int64
    assert t.x_dense.shape == (n, n_dense) and t.x_dense.dtype == torch.float32
    assert t.y.shape == (n,) and t.y.dtype == torch.float32
    assert set(t.y.unique().tolist()) <= {0.0, 1.0}
    assert len(t.field_names) == n_fields == len(t.field_dims)
    for f, dim in enumerate(t.field_dims):
        assert int(t.x_cat[:, f].min()) >= 0 and int(t.x_cat[:, f].max()) < dim
    idx = torch.cat([t.train_idx, t.val_idx, t.test_idx])
    assert torch.equal(idx.sort().values, torch.arange(n))
    x_cat, x_dense, _y = t.dataset("train")[0]
    assert x_cat.shape == (n_fields,) and x_dense.shape == (n_dense,)


def test_criteo_download_and_parse(tmp_cache, web) -> None:
    payload = _criteo_lines(20).encode()
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w:gz") as tf:
        info = tarfile.TarInfo("dac/dac_sample.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    web.serve(data.get_spec("criteo-sample").sources[0].remote.url, bio.getvalue())
    t = data.load("criteo-sample")
    _check_table(t, 20, 26, 13)
    assert t.field_names[0] == "C1" and t.dense_names[-1] == "I13"
    assert t.field_dims[0] == 4  # three hashed values + "missing"
    assert int(t.x_cat[:, 5].max()) == 0  # an always-empty field is all "missing"
    assert t.x_dense[3, 0] == pytest.approx(torch.log1p(torch.tensor(3.0)).item())
    assert float(t.x_dense[:, 1].abs().max()) == 0.0 and float(t.x_dense[:, 2].min()) == 0.0
    with pytest.raises(ValueError, match="split must be"):
        t.dataset("dev")


def test_criteo_min_count_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(_criteo_lines(9))
    t = ratings.read_criteo(path, min_count=4, max_rows=6)
    assert len(t) == 6 and t.field_dims[0] == 1  # every value seen < 4 times -> missing
    path.write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match=r"c\.txt: line 1 has 3 fields, expected 40"):
        ratings.read_criteo(path)
    path.write_text("x" + _criteo_lines(1)[1:])
    with pytest.raises(ValueError, match="label 'x' is not 0 or 1"):
        ratings.read_criteo(path)


def _write_grouplens(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text("1\t10\t5\t881250949\n2\t2\t3\t891717742\n1\t2\t4\t1\n")
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags_a = ["0"] * 19
    flags_a[3] = flags_a[5] = "1"  # Animation, Comedy
    (d / "u.item").write_text(
        "2|GoldenEye (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 19) + "\n"
        "10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags_a) + "\n",
        encoding="latin-1",
    )


def _write_recbole(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\t"
        "timestamp:float\n1\t10\t5\t881250949\n2\t2\t3\t891717742\n"
        "1\t2\t4\t1\n"
    )
    (d / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\t"
        "occupation:token\tzip_code:token\n1\t24\tM\ttechnician\t"
        "85711\n2\t53\tF\tother\t94043\n"
    )
    (d / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
        "class:token_seq\n2\tGoldenEye\t1995\t\n10\tToy Story\t1995\t"
        "Comedy Animation\n"
    )


@pytest.mark.parametrize("writer", [_write_grouplens, _write_recbole])
def test_movielens_formats_agree(tmp_path: Path, writer) -> None:
    writer(tmp_path)
    t = ratings.load_movielens_dir(tmp_path)
    _check_table(t, 3, 6, 0)
    assert t.field_names == ("user", "item", "genre", "age", "gender", "occupation")
    assert t.y.tolist() == [1.0, 0.0, 1.0]  # click = rating >= 4
    assert t.extras["rating"].tolist() == [5.0, 3.0, 4.0]
    assert t.extras["genres"].shape == (3, 19)
    genre = t.field_names.index("genre")
    assert t.x_cat[1, genre] == 0  # a movie without genre is "missing"
    assert t.extras["genres"][0, ratings.ML_GENRES.index("Animation")] == 1
    # primary genre = first in canonical order, whatever order the file lists them in
    assert t.field_dims[genre] == 2
    assert [ratings._age_bucket(a) for a in (17, 18, 24, 25, 53, 56)] == [
        "0",
        "1",
        "1",
        "2",
        "5",
        "6",
    ]
    assert t.x_cat[:, t.field_names.index("age")].tolist() == [1, 2, 1]  # buckets "1" and "5"


def test_movielens_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"neither ml-100k\.inter nor u\.data"):
        ratings.load_movielens_dir(tmp_path)


def test_movielens_real() -> None:
    require_cached("movielens-100k")
    t = data.load("movielens-100k")
    _check_table(t, 100_000, 6, 0)
    dims = dict(zip(t.field_names, t.field_dims, strict=True))
    assert dims["user"] == 943 + 1 and dims["item"] == 1682 + 1
    assert int(t.x_cat[:, 0].unique().numel()) == 943
    assert int(t.x_cat[:, 1].unique().numel()) == 1682
    assert (len(t.train_idx), len(t.val_idx), len(t.test_idx)) == (80_000, 10_000, 10_000)
    assert float(t.y.mean()) == pytest.approx(float((t.extras["rating"] >= 4).float().mean()))
    assert t.extras["genres"].sum(1).min() >= 1  # every movie has a known genre token


def test_adult_real() -> None:
    require_cached("adult")
    pytest.importorskip("pyarrow")
    t = data.load("adult")
    _check_table(t, 48_842, 9, 5)
    assert 0.2 < float(t.y.mean()) < 0.3  # ~24% earn >50K
    train = t.x_dense[t.train_idx]
    assert torch.allclose(train.mean(0), torch.zeros(5), atol=1e-4)
