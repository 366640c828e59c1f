"""MLP baseline on the flattened per-node one-hot encoding of an architecture."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext.encoders.base import Dropout, Encoder


class MLPEncoder(Encoder):
    """Flatten the per-node one-hot op ids of each graph, zero-padded to ``max_nodes`` nodes (in the
    graph's node order), into ``[B, max_nodes * num_ops]`` and apply an MLP
    (``layers`` x Linear-ReLU-Dropout). Graphs larger than ``max_nodes`` are an error.

    :meth:`node_embeddings` broadcasts the graph embedding to the graph's nodes so the shared
    interface (segment mean = graph embedding) holds; :meth:`forward` skips that round trip.
    """

    name = "mlp"

    def __init__(self, num_ops: int, hidden: int = 128, layers: int = 3, dropout: float = 0.1,
                 max_nodes: int = 8):
        # no node encoder: the input is the padded one-hot op layout itself
        super().__init__(num_ops, hidden, dropout)
        if int(layers) < 1 or int(max_nodes) < 1:
            raise ValueError(f"layers and max_nodes must be >= 1, got {layers}, {max_nodes}")
        self.layers = int(layers)
        self.max_nodes = int(max_nodes)
        dims = [self.max_nodes * self.num_ops] + [self.hidden] * self.layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU(), Dropout(self.dropout)]
        self.mlp = nn.Sequential(*mods)
        self.out_dim = self.hidden

    @property
    def config(self) -> dict:
        return {**super().config, "layers": self.layers, "max_nodes": self.max_nodes}

    def flat_onehot(self, batch) -> torch.Tensor:
        """``[B, max_nodes * num_ops]`` padded one-hot encoding (vectorised, no per-graph loop)."""
        self._check(batch)
        sizes = batch.node_ptr.diff()
        if sizes.numel() and int(sizes.max()) > self.max_nodes:
            raise ValueError(f"a graph has {int(sizes.max())} nodes; this MLP encoder takes at most "
                             f"{self.max_nodes} (set max_nodes)")
        pos = torch.arange(batch.num_nodes, device=batch.op.device) - batch.node_ptr.index_select(0, batch.graph)
        x = torch.zeros(batch.num_graphs, self.max_nodes * self.num_ops, device=batch.op.device)
        x[batch.graph, pos * self.num_ops + batch.op] = 1.0
        return x

    def forward(self, batch) -> torch.Tensor:
        return self.mlp(self.flat_onehot(batch))

    def node_embeddings(self, batch) -> torch.Tensor:
        return self.forward(batch).index_select(0, batch.graph)
