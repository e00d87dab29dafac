"""Two-layer graph networks built from PyTorch Geometric's own, unmodified convolution layers.

The model is the one of the paper's node-classification experiments: ``conv1 -> activation ->
dropout -> conv2``, with 16 hidden channels (GAT: 8 heads of 8 channels), returning one row of
class logits per node. The activation is a *module* (``nn.ReLU`` / ``nn.ELU``), so a
direct-feedback rule's automatic placement puts its one feedback point on the hidden layer's
output without any marker; the PyG layers themselves are used as PyG ships them.

Nodes are the batch-like axis: the output ``(num_nodes, classes)`` makes every node a sample, so
one feedback matrix ``B`` of shape ``(classes, hidden)`` is shared by all nodes (as in the paper)
and node ``i`` receives ``B e_i`` where ``e_i`` is its row of the error (zero for unlabelled nodes).

References:
    Kipf, Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017.
    Defferrard, Bresson, Vandergheynst, "Convolutional Neural Networks on Graphs with Fast
    Localized Spectral Filtering", NeurIPS 2016.
    Veličković et al., "Graph Attention Networks", ICLR 2018.
    Morris et al., "Weisfeiler and Leman Go Neural: Higher-order Graph Neural Networks", AAAI 2019.
    Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
    Architectures", NeurIPS 2020, section 3.1.2.
"""

from __future__ import annotations

import torch
from torch import nn

GNN_KINDS: tuple[str, ...] = ("gcn", "cheb", "gat", "graphconv")
"""The PyG layers the graph experiments use (paper: GCN, ChebNet, GAT; GraphConv is ours)."""


class GraphNet(nn.Module):
    """``conv2(dropout(act(conv1(dropout_in(x)))))``: logits ``(num_nodes, classes)``.

    Args:
        conv1, conv2: message-passing layers called as ``conv(x, edge_index)`` (any PyG conv).
        activation: the hidden nonlinearity as a module (the automatic feedback point).
        dropout: dropout on the hidden layer's output.
        input_dropout: dropout on the node features (GAT uses it).
    """

    def __init__(
        self,
        conv1: nn.Module,
        conv2: nn.Module,
        activation: nn.Module,
        dropout: float = 0.5,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {p}")
        self.input_dropout = nn.Dropout(input_dropout)
        self.conv1 = conv1
        self.act = activation
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv2

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(self.input_dropout(x), edge_index))  # (N, hidden)
        return self.conv2(self.dropout(h), edge_index)  # (N, classes)


def build_gnn(
    kind: str,
    in_features: int,
    classes: int,
    *,
    hidden: int = 16,
    heads: int = 8,
    dropout: float = 0.5,
    input_dropout: float = 0.0,
    attention_dropout: tuple[float, float] = (0.6, 0.6),
    cheb_k: int = 2,
) -> GraphNet:
    """The paper's two-layer model with PyG's ``kind`` of layer (see :data:`GNN_KINDS`).

    ``gcn``: GCNConv (cached normalised adjacency, transductive), ReLU. ``cheb``: ChebConv with
    ``K = cheb_k`` (paper: 2), ReLU. ``gat``: GATConv with ``heads`` heads of ``hidden // heads``
    channels concatenated (paper: 8 x 8 = 64), ELU, one output head; ``attention_dropout`` are the
    attention-coefficient dropouts of the two layers. ``graphconv``: GraphConv (Morris et al.,
    sum aggregation), ReLU.

    Raises:
        ValueError: unknown ``kind``, or ``hidden`` not divisible by ``heads`` for GAT.
        ImportError: torch-geometric is not installed.
    """
    try:
        from torch_geometric.nn import ChebConv, GATConv, GCNConv, GraphConv
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "graph networks need PyTorch Geometric: pip install torch-geometric"
        ) from error
    if kind == "gcn":
        conv1, conv2 = (
            GCNConv(in_features, hidden, cached=True),
            GCNConv(hidden, classes, cached=True),
        )
        activation: nn.Module = nn.ReLU()
    elif kind == "cheb":
        conv1, conv2 = ChebConv(in_features, hidden, K=cheb_k), ChebConv(hidden, classes, K=cheb_k)
        activation = nn.ReLU()
    elif kind == "gat":
        if hidden % heads:
            raise ValueError(f"GAT hidden={hidden} must be a multiple of heads={heads}")
        conv1 = GATConv(in_features, hidden // heads, heads=heads, dropout=attention_dropout[0])
        conv2 = GATConv(hidden, classes, heads=1, dropout=attention_dropout[1])
        activation = nn.ELU()
    elif kind == "graphconv":
        conv1, conv2 = GraphConv(in_features, hidden), GraphConv(hidden, classes)
        activation = nn.ReLU()
    else:
        raise ValueError(f"unknown graph layer {kind!r}; choose one of {GNN_KINDS}")
    return GraphNet(conv1, conv2, activation, dropout=dropout, input_dropout=input_dropout)
