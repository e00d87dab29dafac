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

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .registry import DatasetSpec, register
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
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("Cora needs pandas and pyarrow: pip install pandas pyarrow") from exc
    nodes = pd.read_parquet(directory / "cora_nodes.parquet.gzip")
    rels = pd.read_parquet(directory / "cora_rels.parquet.gzip")
    index = pd.Series(np.arange(len(nodes)), index=nodes["nodeId"].to_numpy())
    try:
        src = index.loc[rels["sourceNodeId"].to_numpy()].to_numpy()
        dst = index.loc[rels["targetNodeId"].to_numpy()].to_numpy()
    except KeyError as exc:
        raise ValueError(f"Cora relationships name unknown nodes: {exc}") from exc
    x = torch.from_numpy(np.stack(nodes["features"].to_numpy()).astype(np.float32))
    y_np = nodes["subject"].to_numpy().astype(np.int64)
    masks = planetoid_style_split(y_np, len(CORA_CLASSES), seed=seed)
    edge_index = undirected_edges(src, dst, len(nodes))
    return make_graph(x, torch.from_numpy(y_np), edge_index, *masks, pyg=pyg)


# --------------------------------------------------------------------------- Planetoid files

PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


class _PlanetoidUnpickler(pickle.Unpickler):
    """Unpickler limited to what Planetoid files hold: numpy arrays, scipy sparse matrices,
    dicts/lists. Why: unpickling a tampered download could otherwise run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            module.split(".")[0] == "numpy"
            or module.startswith("scipy.sparse")
            or (module in ("copy_reg", "copyreg") and name == "_reconstructor")
            or (
                module in ("__builtin__", "builtins")
                and name in ("object", "list", "dict", "set", "tuple", "int")
            )
            or (module == "collections" and name in ("defaultdict", "OrderedDict"))
            or (module == "_codecs" and name == "encode")  # bytes in Python 3 protocol 2
        )
        if not allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return _PlanetoidUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path}: not a Planetoid pickle: {exc}") from exc


def _dense(obj: Any) -> np.ndarray:
    return np.asarray(obj.todense() if hasattr(obj, "todense") else obj, dtype=np.float32)


def read_planetoid(directory: Path, name: str) -> dict[str, Any]:
    """Parse the Planetoid files of ``name`` (``cora``, ``citeseer``, ``pubmed``).

    Follows the reference reading of Kipf & Welling's GCN code (also PyG's): test nodes are
    re-ordered by ``test.index``; CiteSeer's isolated test nodes (missing from ``tx``) get zero
    features and label 0; train = the first ``len(y)`` nodes, val = the next 500, test = the
    indices in ``test.index``.

    Returns:
        A dict with numpy arrays ``x``, ``y``, ``edge_index`` and index arrays ``train``,
        ``val``, ``test``.
    """
    parts = {p: _read_pickle(directory / f"ind.{name}.{p}") for p in PLANETOID_PARTS[:-1]}
    test_index = np.loadtxt(directory / f"ind.{name}.test.index", dtype=np.int64, ndmin=1)
    tx, ty = _dense(parts["tx"]), _dense(parts["ty"])
    allx, ally = _dense(parts["allx"]), _dense(parts["ally"])
    sorted_test = np.sort(test_index)
    if name == "citeseer":
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext = np.zeros((span, tx.shape[1]), np.float32)
        ty_ext = np.zeros((span, ty.shape[1]), np.float32)
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext
    x = np.concatenate([allx, tx])
    y = np.concatenate([ally, ty]).argmax(axis=1).astype(np.int64)
    x[test_index] = x[sorted_test]
    y[test_index] = y[sorted_test]
    graph = parts["graph"]
    if not isinstance(graph, dict):
        raise ValueError(f"ind.{name}.graph holds {type(graph).__name__}, expected a dict")
    src = np.array([k for k, vs in graph.items() for _ in vs], dtype=np.int64)
    dst = np.array([v for vs in graph.values() for v in vs], dtype=np.int64)
    n = len(y)
    if len(src) and max(src.max(), dst.max()) >= n:
        raise ValueError(f"ind.{name}.graph names node {max(src.max(), dst.max())} >= {n}")
    n_train = _dense(parts["y"]).shape[0]
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
        # No published sha256 for these files could be found: trust on first use.
        sources=(Download(tuple(RemoteFile(_PLANETOID_URL + f, None, f) for f in files)),),
        size=size,
    )


register(_planetoid_spec("citeseer", "CiteSeer: 3,327 nodes x 3,703 features, 6 classes", "1 MB"))
register(_planetoid_spec("pubmed", "PubMed: 19,717 nodes x 500 features, 3 classes", "8 MB"))
