"""GIN on the fgp ops: ``h' = MLP((1 + eps) h + sum_{u -> v} h_u)``, layer-concat readout."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext import ops
from fgp_ext.encoders.base import Dropout, Encoder


class GIN(Encoder):
    """Graph isomorphism network.

    Node inputs: the node encoder (a learned embedding of the op id by default; see
    :class:`~fgp_ext.encoders.Encoder`). Each of ``layers`` layers sums the messages of
    the predecessors (and of the successors too with ``undirected=True``) with the compiled
    ``gather_segment_sum``, adds ``(1 + eps) * h``, applies a 2-layer MLP, ReLU and dropout.
    Readout (layer concat): node embeddings are the concatenation of every layer's output, so
    ``out_dim = hidden * layers``.
    """

    name = "gin"

    def __init__(self, num_ops: int, hidden: int = 128, layers: int = 3, dropout: float = 0.1,
                 undirected: bool = False, node_features: int | None = None, node_encoder: nn.Module | None = None):
        super().__init__(num_ops, hidden, dropout, node_features, node_encoder)
        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.layers = int(layers)
        self.undirected = bool(undirected)
        self._build_node_encoder()
        self.eps = nn.Parameter(torch.zeros(self.layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(self.hidden, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.hidden))
            for _ in range(self.layers))
        self.drop = Dropout(self.dropout)
        self.out_dim = self.hidden * self.layers

    @property
    def config(self) -> dict:
        return {**super().config, "layers": self.layers, "undirected": self.undirected}

    def node_embeddings(self, batch) -> torch.Tensor:
        h = self.initial_states(batch)
        outs = []
        for i, mlp in enumerate(self.mlps):
            agg = ops.gather_segment_sum(h, batch.in_csr)  # in_csr carries its transpose
            if self.undirected:
                agg = agg + ops.gather_segment_sum(h, batch.out_csr)
            h = self.drop(torch.relu(mlp((1.0 + self.eps[i]) * h + agg)))
            outs.append(h)
        return torch.cat(outs, dim=-1)
