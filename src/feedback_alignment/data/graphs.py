"""Citation graphs for node classification: Cora (offline carrier), CiteSeer and PubMed.

Loaders return a PyTorch Geometric ``Data`` when ``torch_geometric`` is importable, else a
:class:`GraphData` with the same fields:

* ``x``: ``(N, F)`` float32 node features (binary bag of words for Cora, N=2708, F=1433).
* ``y``: ``(N,)`` int64 class indices.
* ``edge_index``: ``(2, E)`` int64, undirected (both directions stored), no self loops,
  sorted and without duplicates (Cora: E = 10,556).
* ``train_mask``, ``val_mask``, ``test_mask``: ``(N,)`` bool.

Cora comes from the graphdatascience wheel (parquet), with a seeded split in the Planetoid
style (:func:`planetoid_style_split`). CiteSeer and PubMed come in the Planetoid file format
(``ind.NAME.{x,tx,allx,y,ty,ally,graph,test.index}``) with the split defined by those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import open_verified_text
from .errors import DataError, reading
from .formats import read_parquet
from .registry import DatasetSpec, register
from .safe_pickle import load_pickle
from .sources import Download, PipCarrier, RemoteFile

SPLIT_SEED = 0
"""Seed of Cora's Planetoid-style split."""

CORA_CLASSES = (
    "Neural_Networks",
    "Rule_Learning",
    "Reinforcement_Learning",
    "Probabilistic_Methods",
    "Theory",
    "Genetic_Algorithms",
    "Case_Based",
)
"""Cora subjects in the carrier's label order (``subject`` column)."""


@dataclass
class GraphData:
    """Stand-in for ``torch_geometric.data.Data`` when PyG is not installed (same fields)."""

    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_node_features(self) -> int:
        return int(self.x.shape[1])


def make_graph(
    x: torch.Tensor,
    y: torch.Tensor,
    edge_index: torch.Tensor,
    train_mask: torch.Tensor,
    val_mask: torch.Tensor,
    test_mask: torch.Tensor,
    *,
    pyg: bool | None = None,
) -> Any:
    """Build a PyG ``Data`` (when ``pyg`` is True, or None and PyG is importable) or a
    :class:`GraphData`."""
    fields = dict(
        x=x,
        y=y,
        edge_index=edge_index,
        train_mask=train_mask,
        val_mask=val_mask,
        test_mask=test_mask,
    )
    if pyg is None or pyg:
        try:
            from torch_geometric.data import Data
        except ImportError:
            if pyg:
                raise
        else:
            return Data(**fields)
    return GraphData(**fields)


def undirected_edges(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> torch.Tensor:
    """Both directions of every edge, self loops removed, duplicates removed, sorted by (row,
    col): the convention of PyG's Planetoid data sets."""
    row = np.concatenate([src, dst]).astype(np.int64)
    col = np.concatenate([dst, src]).astype(np.int64)
    keep = row != col
    key = np.unique(row[keep] * num_nodes + col[keep])
    return torch.from_numpy(np.stack([key // num_nodes, key % num_nodes]))


def planetoid_style_split(
    y: np.ndarray,
    num_classes: int,
    per_class: int = 20,
    num_val: int = 500,
    num_test: int = 1000,
    seed: int = SPLIT_SEED,
) -> tuple[torch.Tensor, ...]:
    """A random split in the style of Planetoid (Yang et al., 2016): ``per_class`` training
    nodes per class, then ``num_val`` validation and ``num_test`` test nodes drawn from the
    rest, with NumPy's PCG64 seeded by ``seed``.

    Why seeded and not the original indices: the carrier ships Cora's content in its own node
    order, so the original Planetoid index files do not apply; a fixed seed keeps the split the
    same on every machine.

    Returns:
        ``(train_mask, val_mask, test_mask)``, bool ``(N,)`` each, disjoint.

    Raises:
        ValueError: a class has fewer than ``per_class`` nodes or the graph is too small.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    train = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} nodes, fewer than {per_class}")
        train.append(rng.choice(members, per_class, replace=False))
    train_idx = np.concatenate(train)
    rest = rng.permutation(np.setdiff1d(np.arange(n), train_idx))
    if len(rest) < num_val + num_test:
        raise ValueError(
            f"{n} nodes cannot hold {len(train_idx)} train + {num_val} val + {num_test} test"
        )
    masks = []
    for idx in (train_idx, rest[:num_val], rest[num_val : num_val + num_test]):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.from_numpy(idx)] = True
        masks.append(mask)
    return tuple(masks)


def load_cora_dir(directory: Path, *, seed: int = SPLIT_SEED, pyg: bool | None = None) -> Any:
    """Cora from the graphdatascience parquet files: 2,708 nodes, 1,433 binary features,
    7 classes (:data:`CORA_CLASSES`), 5,429 citations -> 10,556 directed edges.

    Args:
        directory: Holds ``cora_nodes.parquet.gzip`` and ``cora_rels.parquet.gzip``.
        seed: Seed of :func:`planetoid_style_split` (20 per class / 500 / 1,000).
        pyg: Force (True) or refuse (False) a PyG ``Data``; None picks PyG when importable.

    Raises:
        ImportError: pandas or pyarrow is missing (they read parquet).
        DataError: a file is damaged, lacks a column or names unknown nodes.
    """
    import pandas as pd

    nodes_path = directory / "cora_nodes.parquet.gzip"
    rels_path = directory / "cora_rels.parquet.gzip"
    nodes = read_parquet(nodes_path, ("nodeId", "features", "subject"), "Cora's nodes")
    rels = read_parquet(rels_path, ("sourceNodeId", "targetNodeId"), "Cora's citations")
    with reading(nodes_path, "Cora's nodes (ids, 1,433 features, subject)"):
        index = pd.Series(np.arange(len(nodes)), index=nodes["nodeId"].to_numpy())
        x = torch.from_numpy(np.stack(nodes["features"].to_numpy()).astype(np.float32))
        y_np = nodes["subject"].to_numpy().astype(np.int64)
        if len(y_np) and not 0 <= y_np.min() <= y_np.max() < len(CORA_CLASSES):
            raise DataError(f"holds subjects outside 0..{len(CORA_CLASSES) - 1}")
    with reading(rels_path, "Cora's citations (source and target node ids)"):
        try:
            src = index.loc[rels["sourceNodeId"].to_numpy()].to_numpy()
            dst = index.loc[rels["targetNodeId"].to_numpy()].to_numpy()
        except KeyError as exc:
            raise DataError(f"names nodes missing from the node table: {exc}") from None
    masks = planetoid_style_split(y_np, len(CORA_CLASSES), seed=seed)
    edge_index = undirected_edges(src, dst, len(nodes))
    return make_graph(x, torch.from_numpy(y_np), edge_index, *masks, pyg=pyg)


# --------------------------------------------------------------------------- Planetoid files

PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def _read_pickle(path: Path) -> Any:
    """A Planetoid pickle, read without unpickling (:mod:`.safe_pickle`): a crafted file can
    name ``os.system`` or a numpy helper, but nothing it names is ever called."""
    return load_pickle(path, encoding="latin1")


DENSE_LIMIT = 1 << 28
"""Most elements of one dense Planetoid matrix (2**28: 1 GiB as float32). The real sets are far
below it (PubMed's ``allx``: 18,717 x 500; CiteSeer's: 3,327 x 3,703 at most); a tiny crafted
sparse matrix can declare any shape, and densifying it would allocate terabytes."""


def _dense(obj: Any, path: Path) -> np.ndarray:
    """A 2-D float32 array from a sparse matrix or array; DataError naming ``path`` else.

    Raises:
        DataError: not a 2-D matrix, or its dense size would pass :data:`DENSE_LIMIT`.
    """
    shape = getattr(obj, "shape", None)
    if isinstance(shape, tuple) and all(isinstance(d, (int, np.integer)) for d in shape):
        elements = 1
        for d in shape:
            elements *= max(int(d), 0)
        if elements > DENSE_LIMIT:
            raise DataError(
                f"declares a {' x '.join(map(str, shape))} matrix ({elements} elements), past "
                f"the limit of {DENSE_LIMIT} (2**28) for a dense Planetoid matrix; refusing it "
                "(a damaged or crafted file?)",
                file=path,
            )
    array = obj.toarray() if hasattr(obj, "toarray") else obj
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        kind = getattr(array, "shape", type(array).__name__)
        raise DataError(f"holds {kind}, expected a 2-D matrix", file=path)
    return array.astype(np.float32)


def read_planetoid(directory: Path, name: str) -> dict[str, Any]:
    """Parse the Planetoid files of ``name`` (``cora``, ``citeseer``, ``pubmed``).

    Follows the reference reading of Kipf & Welling's GCN code (also PyG's): test nodes are
    re-ordered by ``test.index``; CiteSeer's isolated test nodes (missing from ``tx``) get zero
    features and label 0; train = the first ``len(y)`` nodes, val = the next 500, test = the
    indices in ``test.index``.

    Returns:
        A dict with numpy arrays ``x``, ``y``, ``edge_index`` and index arrays ``train``,
        ``val``, ``test``.

    Raises:
        DataError: a file is damaged, refused (see :mod:`.safe_pickle`) or inconsistent with
            the others; the message names it.
    """
    path = {p: directory / f"ind.{name}.{p}" for p in PLANETOID_PARTS}
    parts = {p: _read_pickle(path[p]) for p in PLANETOID_PARTS[:-1]}
    with reading(path["test.index"], "one node index per line"):
        test_index = np.loadtxt(
            open_verified_text(path["test.index"], "latin-1"), dtype=np.int64, ndmin=1
        )
    if test_index.ndim != 1 or not len(test_index) or test_index.min() < 0:
        raise DataError("holds no valid node indices", file=path["test.index"])
    dense = {p: _dense(parts[p], path[p]) for p in ("x", "tx", "allx", "y", "ty", "ally")}
    tx, ty, allx, ally = dense["tx"], dense["ty"], dense["allx"], dense["ally"]
    for a, b in (("allx", "ally"), ("tx", "ty")):
        if dense[a].shape[0] != dense[b].shape[0]:
            raise DataError(
                f"has {dense[a].shape[0]} rows but ind.{name}.{b} has {dense[b].shape[0]}",
                file=path[a],
            )
    if tx.shape[1] != allx.shape[1] or ty.shape[1] != ally.shape[1]:
        raise DataError(
            f"has {tx.shape[1]} columns, ind.{name}.allx {allx.shape[1]}", file=path["tx"]
        )
    sorted_test = np.sort(test_index)
    if name == "citeseer":
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext = np.zeros((span, tx.shape[1]), np.float32)
        ty_ext = np.zeros((span, ty.shape[1]), np.float32)
        if len(sorted_test) != len(tx) or span > 10 * len(tx) + 1000:
            raise DataError(
                f"lists {len(sorted_test)} test nodes over a span of {span}, but ind.{name}.tx "
                f"has {len(tx)} rows",
                file=path["test.index"],
            )
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext
    elif len(test_index) != len(tx):
        raise DataError(
            f"lists {len(test_index)} test nodes, ind.{name}.tx has {len(tx)} rows",
            file=path["test.index"],
        )
    x = np.concatenate([allx, tx])
    y = np.concatenate([ally, ty]).argmax(axis=1).astype(np.int64)
    n = len(y)
    if test_index.max() >= n:
        raise DataError(
            f"names node {test_index.max()}, but there are {n}", file=path["test.index"]
        )
    x[test_index] = x[sorted_test]
    y[test_index] = y[sorted_test]
    graph = parts["graph"]
    if not isinstance(graph, dict) or not all(
        isinstance(k, int) and isinstance(vs, (list, tuple, set)) for k, vs in graph.items()
    ):
        raise DataError("does not hold a dict of node -> neighbour list", file=path["graph"])
    with reading(path["graph"], "a dict of node -> neighbour list"):
        src = np.array([k for k, vs in graph.items() for _ in vs], dtype=np.int64)
        dst = np.array([v for vs in graph.values() for v in vs], dtype=np.int64)
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise DataError(f"names a node outside 0..{n - 1}", file=path["graph"])
    n_train = dense["y"].shape[0]
    return {
        "x": x,
        "y": y,
        "edge_index": undirected_edges(src, dst, n).numpy(),
        "train": np.arange(n_train),
        "val": np.arange(n_train, n_train + 500),
        "test": test_index,
    }


def load_planetoid_dir(directory: Path, name: str, *, pyg: bool | None = None) -> Any:
    """Load a Planetoid-format data set as a graph with the standard public split."""
    parts = read_planetoid(directory, name)
    n = len(parts["y"])
    masks = []
    for key in ("train", "val", "test"):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.from_numpy(parts[key][parts[key] < n])] = True
        masks.append(mask)
    return make_graph(
        torch.from_numpy(parts["x"]),
        torch.from_numpy(parts["y"]),
        torch.from_numpy(parts["edge_index"]),
        *masks,
        pyg=pyg,
    )


# --------------------------------------------------------------------------- registry

register(
    DatasetSpec(
        name="cora",
        family="graphs",
        description="Cora citations: 2,708 nodes x 1,433 features, 7 classes; seeded 20/class "
        "train, 500 val, 1,000 test",
        license="no explicit licence (McCallum et al. 2000); carrier graphdatascience Apache-2.0",
        loader=load_cora_dir,
        requires=("pandas", "pyarrow"),
        files=("cora_nodes.parquet.gzip", "cora_rels.parquet.gzip"),
        sources=(
            PipCarrier(
                "graphdatascience",
                "2.2",
                "graphdatascience-2.2-py3-none-any.whl",
                {
                    f: f"graphdatascience/resources/cora/{f}"
                    for f in ("cora_nodes.parquet.gzip", "cora_rels.parquet.gzip")
                },
                archive_sha256="1e978c3bf5c2cece4282338d224d1efcffa8681733113d576c2205c4d06f549b",
                sha256={
                    "cora_nodes.parquet.gzip": "c54c0625af98570287dcb25e9f29e0b229948352a8de1dbf202fa39f36bfe591",
                    "cora_rels.parquet.gzip": "e0059f81e607c0262e93fbe3c77950b06098dab167f0071cba97a82c9440ca01",
                },
            ),
        ),
        size="0.1 MB",
    )
)

_PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"


def _planetoid_spec(name: str, summary: str, size: str) -> DatasetSpec:
    files = tuple(f"ind.{name}.{p}" for p in PLANETOID_PARTS)
    return DatasetSpec(
        name=name,
        family="graphs",
        description=f"{summary}; Planetoid public split",
        license="no explicit licence; cite Sen et al. 2008 and Yang et al. 2016",
        loader=lambda directory, **kw: load_planetoid_dir(directory, name, **kw),
        files=files,
        # No published sha256 for these files could be found: trust on first use (recorded in
        # the manifest by the first download and checked on every load).
        sources=(Download(tuple(RemoteFile(_PLANETOID_URL + f, None, f) for f in files)),),
        size=size,
    )


register(_planetoid_spec("citeseer", "CiteSeer: 3,327 nodes x 3,703 features, 6 classes", "1 MB"))
register(_planetoid_spec("pubmed", "PubMed: 19,717 nodes x 500 features, 3 classes", "8 MB"))
