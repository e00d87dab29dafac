"""Image loaders: IDX and CIFAR parsers on tiny files, download paths, real carriers."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_cached
from feedback_alignment import data
from feedback_alignment.data import images
from feedback_alignment.data.registry import DatasetSpec, DataUnavailableError
from feedback_alignment.data.sources import DownloadArchive, RemoteFile


def _check(d: data.ImageData, shape: tuple[int, ...], n_train: int, n_test: int) -> None:
    assert d.x_train.shape == (n_train, *shape) and d.x_test.shape == (n_test, *shape)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.shape == (n_train,) and d.y_test.shape == (n_test,)
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    assert int(d.y_train.max()) < d.num_classes
    train, test = d.datasets()
    assert len(train) == n_train and len(test) == n_test


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    images.write_idx(path, array)
    np.testing.assert_array_equal(images.read_idx(path), array)


def test_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="not an IDX file"):
        images.read_idx(bad)
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(
        ValueError, match=r"bad: has IDX dimensions \(5,\), which need 5 bytes; it has 2"
    ):
        images.read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01")
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        images.read_idx(bad)


def _idx_files(rng: np.random.Generator) -> dict[str, bytes]:
    files = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        for kind, arr in (
            ("images-idx3", rng.integers(0, 256, (n, 28, 28))),
            ("labels-idx1", rng.integers(0, 10, n)),
        ):
            header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
            files[f"{prefix}-{kind}-ubyte.gz"] = gzip.compress(
                header + arr.astype(np.uint8).tobytes()
            )
    return files


def test_mnist_download_path_and_pinned_checksums(tmp_cache, web) -> None:
    """The real 'mnist' spec pins the canonical checksums: tiny stand-ins are refused and
    nothing is left behind; the same bytes under a spec that pins them load fine."""
    files = _idx_files(np.random.default_rng(0))
    spec = data.get_spec("mnist")
    for remote in spec.sources[0].files:
        web.serve(remote.url, files[remote.target])
    with pytest.raises(DataUnavailableError, match="sha256 mismatch"):
        data.load("mnist")
    assert not any(data.dataset_dir("mnist").glob("*.gz"))
    d = images.load_idx_dir(_write_all(data.dataset_dir("mnist-copy"), files))
    _check(d, (1, 28, 28), 6, 4)


def _write_all(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (directory / name).write_bytes(payload)
    return directory


def _cifar_batch(rng: np.random.Generator, n: int) -> bytes:
    batch = {
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"batch_label": b"x",
    }
    return pickle.dumps(batch, protocol=2)


def test_cifar_parser_and_download(tmp_cache, web, temp_spec, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    members = {f"cifar-10-batches-py/data_batch_{i}": _cifar_batch(rng, 3) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = _cifar_batch(rng, 2)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": []})
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    sha = web.serve(url, bio.getvalue())
    real = data.get_spec("cifar10")
    with pytest.raises(DataUnavailableError, match="sha256 mismatch"):
        data.load("cifar10")  # the real spec pins the canonical archive
    temp_spec(
        DatasetSpec(
            name="cifar10-tiny",
            family="images",
            description="t",
            license="t",
            loader=real.loader,
            files=real.files,
            sources=(
                DownloadArchive(RemoteFile(url, sha, "tiny.tar.gz"), real.sources[0].members),
            ),
        )
    )
    d = data.load("cifar10-tiny")
    _check(d, (3, 32, 32), 15, 2)
    raw = pickle.loads(members["cifar-10-batches-py/data_batch_1"])[b"data"]
    np.testing.assert_allclose(d.x_train[0].numpy().reshape(-1), raw[0] / 255.0, rtol=1e-6)
    assert d.classes[0] == "airplane"


def test_cifar_parser_refuses_code_in_pickles(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_1: refusing .* builtins\.print"):
        images.read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"nope": 1}))
    with pytest.raises(ValueError, match="needs b'data' and b'labels'"):
        images.read_cifar_batch(path)


def test_stratified_split_is_fixed_and_stratified() -> None:
    labels = np.repeat(np.arange(4), 10)
    a = images.stratified_split(labels, 0.2, seed=0)
    b = images.stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.bincount(labels[a[1]]).tolist() == [2, 2, 2, 2]
    assert not set(a[0]) & set(a[1])


def test_digits() -> None:
    _check(data.load("digits"), (1, 8, 8), 1438, 359)


def test_mnist_5k_real() -> None:
    require_cached("mnist-5k")
    d = data.load("mnist-5k")
    _check(d, (1, 28, 28), 4000, 1000)  # 5,000 images, 500 per class
    assert torch.bincount(d.y_train).tolist() == [400] * 10
    assert torch.bincount(d.y_test).tolist() == [100] * 10


def test_fashion_mnist_real() -> None:
    require_cached("fashion-mnist")
    d = data.load("fashion-mnist")
    _check(d, (1, 28, 28), 60000, 10000)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert d.classes[9] == "Ankle boot"
