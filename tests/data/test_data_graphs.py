"""Graph loaders: Planetoid files written here (and served as a download), real Cora."""

from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import require_cached
from feedback_alignment import data
from feedback_alignment.data import graphs
from feedback_alignment.data.errors import DataError

A = [1.0, 0.0, 1.0]
B = [0.0, 1.0, 1.0]


def _planetoid_files() -> dict[str, bytes]:
    """A CiteSeer-like set: 4 labelled/unlabelled nodes, test nodes 6 and 4 (node 5 isolated,
    missing from tx), 3 features, 2 classes."""
    allx = sp.csr_matrix(np.eye(4, 3, dtype=np.float32))
    parts = {
        "x": sp.csr_matrix(np.eye(2, 3, dtype=np.float32)),
        "allx": allx,
        "tx": sp.csr_matrix(np.array([A, B], dtype=np.float32)),
        "y": np.array([[1, 0], [0, 1]]),
        "ally": np.array([[1, 0], [0, 1], [1, 0], [0, 1]]),
        "ty": np.array([[0, 1], [1, 0]]),
        "graph": defaultdict(list, {0: [1, 2], 1: [0], 2: [0, 2], 3: [6], 4: [6, 6]}),
    }
    files = {f"ind.citeseer.{k}": pickle.dumps(v, protocol=2) for k, v in parts.items()}
    files["ind.citeseer.test.index"] = b"6\n4\n"
    return files


def _check_graph(g, n: int, f: int) -> None:
    assert g.x.shape == (n, f) and g.x.dtype == torch.float32
    assert g.y.shape == (n,) and g.y.dtype == torch.int64
    assert g.edge_index.dtype == torch.int64 and g.edge_index.shape[0] == 2
    for mask in (g.train_mask, g.val_mask, g.test_mask):
        assert mask.shape == (n,) and mask.dtype == torch.bool
    ei = g.edge_index
    assert bool((ei[0] != ei[1]).all()), "self loops must be removed"
    pairs = set(map(tuple, ei.t().tolist()))
    assert all((b, a) in pairs for a, b in pairs), "edges must be undirected"
    assert len(pairs) == ei.shape[1], "no duplicate edges"


def test_planetoid_download_and_parse(tmp_cache, web) -> None:
    files = _planetoid_files()
    spec = data.get_spec("citeseer")
    for remote in spec.sources[0].files:
        web.serve(remote.url, files[remote.target])
    g = data.load("citeseer", pyg=False)
    assert isinstance(g, data.GraphData)
    _check_graph(g, 7, 3)
    assert g.x[6].tolist() == A and g.x[4].tolist() == B  # tx row i is node test.index[i]
    assert g.x[5].tolist() == [0, 0, 0] and int(g.y[5]) == 0  # isolated CiteSeer node
    assert g.y.tolist()[:4] == [0, 1, 0, 1] and int(g.y[6]) == 1 and int(g.y[4]) == 0
    assert g.train_mask.nonzero().flatten().tolist() == [0, 1]
    assert g.test_mask.nonzero().flatten().tolist() == [4, 6]
    assert sorted(map(tuple, g.edge_index.t().tolist())) == [
        (0, 1),
        (0, 2),
        (1, 0),
        (2, 0),
        (3, 6),
        (4, 6),
        (6, 3),
        (6, 4),
    ]


def _random_planetoid(rng: np.random.Generator) -> dict[str, bytes]:
    """CiteSeer-shaped random files, big enough for the 500 validation nodes."""
    n_all, n_lab, f, c = 700, 30, 12, 4
    test = rng.permutation(np.setdiff1d(np.arange(n_all, n_all + 120), [n_all + 7, n_all + 50]))

    def onehot(k: int) -> np.ndarray:
        return np.eye(c, dtype=np.int64)[rng.integers(0, c, k)]

    n = n_all + 120
    graph = defaultdict(list)
    for a, b in rng.integers(0, n, (900, 2)):  # both directions, as in the real files
        graph[int(a)].append(int(b))
        graph[int(b)].append(int(a))
    parts = {
        "x": sp.csr_matrix(rng.integers(0, 2, (n_lab, f)).astype(np.float32)),
        "allx": sp.csr_matrix(rng.integers(0, 2, (n_all, f)).astype(np.float32)),
        "tx": sp.csr_matrix(rng.integers(0, 2, (len(test), f)).astype(np.float32)),
        "y": onehot(n_lab),
        "ally": onehot(n_all),
        "ty": onehot(len(test)),
        "graph": graph,
    }
    files = {f"ind.citeseer.{k}": pickle.dumps(v, protocol=2) for k, v in parts.items()}
    files["ind.citeseer.test.index"] = (
        "\n".join(map(str, test)) + "\n"
    ).encode()  # PyG drops the last line
    return files


def test_planetoid_matches_pyg_reader(tmp_path: Path) -> None:
    pyg_io = pytest.importorskip("torch_geometric.io")
    for name, payload in _random_planetoid(np.random.default_rng(0)).items():
        (tmp_path / name).write_bytes(payload)
    ours = graphs.load_planetoid_dir(tmp_path, "citeseer", pyg=False)
    ref = pyg_io.read_planetoid_data(str(tmp_path), "citeseer")
    for key in ("x", "y", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(ours, key), getattr(ref, key)), key
    # PyG keeps the file's edge order (sorted by target); compare the sets.
    assert set(map(tuple, ours.edge_index.t().tolist())) == set(
        map(tuple, ref.edge_index.t().tolist())
    )


def test_planetoid_refuses_code_and_bad_graph(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    files = _planetoid_files()
    files["ind.citeseer.graph"] = pickle.dumps(Evil())
    for name, payload in files.items():
        (tmp_path / name).write_bytes(payload)
    with pytest.raises(DataError, match=r"ind\.citeseer\.graph: refusing .* builtins\.print"):
        graphs.read_planetoid(tmp_path, "citeseer")
    (tmp_path / "ind.citeseer.graph").write_bytes(pickle.dumps({0: [99]}))
    with pytest.raises(DataError, match=r"ind\.citeseer\.graph: names a node outside 0\.\.6"):
        graphs.read_planetoid(tmp_path, "citeseer")


def test_planetoid_style_split() -> None:
    y = np.repeat(np.arange(3), 30)
    tr, va, te = graphs.planetoid_style_split(y, 3, per_class=5, num_val=10, num_test=20)
    assert tr.sum() == 15 and va.sum() == 10 and te.sum() == 20
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
    assert np.bincount(y[tr.numpy()]).tolist() == [5, 5, 5]
    again = graphs.planetoid_style_split(y, 3, per_class=5, num_val=10, num_test=20)
    assert all(torch.equal(a, b) for a, b in zip((tr, va, te), again, strict=True))
    with pytest.raises(ValueError, match="fewer than 40"):
        graphs.planetoid_style_split(y, 3, per_class=40)


def test_cora_real() -> None:
    require_cached("cora")
    pytest.importorskip("pyarrow")
    g = data.load("cora", pyg=False)
    _check_graph(g, 2708, 1433)
    assert int(g.y.max()) + 1 == 7 == len(graphs.CORA_CLASSES)
    assert g.edge_index.shape[1] == 10556  # 5,429 citations, both directions, deduplicated
    assert set(g.x.unique().tolist()) == {0.0, 1.0}
    assert int(g.train_mask.sum()) == 140 and int(g.val_mask.sum()) == 500
    assert int(g.test_mask.sum()) == 1000
    assert torch.bincount(g.y[g.train_mask]).tolist() == [20] * 7
    assert not (g.train_mask & g.test_mask).any() and not (g.val_mask & g.test_mask).any()


def test_cora_real_as_pyg_data() -> None:
    require_cached("cora")
    pytest.importorskip("torch_geometric")
    g = data.load("cora")
    assert type(g).__name__ == "Data"
    assert g.num_nodes == 2708 and g.num_node_features == 1433
    assert g.is_undirected()
