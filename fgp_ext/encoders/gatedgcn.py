"""Residual gated graph conv (GatedGCN / ResGatedGCN) on the fgp ops."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext import ops
from fgp_ext.encoders.base import Dropout, Encoder


class GatedGCNLayer(nn.Module):
    """``h'_v = U h_v + sum_u g_uv * (V h_u) / (sum_u g_uv + 1e-6)`` with per-channel edge gates
    ``g_uv = sigmoid(A h_v + B h_u)``, over the neighbours ``u`` of ``v`` in both directions (the
    graph made undirected, :attr:`ArchBatch.undirected_csr`), or over its predecessors only with
    ``undirected=False``.

    Per layer: one matmul for ``[U | A | V | B] h`` and one fused, deterministic
    :func:`fgp_ext.ops.gated_aggregate` (gather, gates, both sums and the division in one pass; no
    per-edge tensors stored; the backward recomputes the gates).
    """

    def __init__(self, dim: int, undirected: bool = True):
        super().__init__()
        self.dim = int(dim)
        self.undirected = bool(undirected)
        # U, A, V (with bias) and B (no bias) in one matmul: [U | A | V | B]
        self.proj = nn.Linear(self.dim, 4 * self.dim)
        with torch.no_grad():
            self.proj.bias[3 * self.dim:].zero_()

    def forward(self, h: torch.Tensor, batch) -> torch.Tensor:
        uh, ah, vh, bh = self.proj(h).split(self.dim, dim=-1)
        if self.undirected:
            csr = batch.undirected_csr  # symmetric: its own transpose for the backward
            return uh + ops.gated_aggregate(ah, bh, vh, csr, eps=1e-6, transpose=csr)
        return uh + ops.gated_aggregate(ah, bh, vh, batch.in_csr, eps=1e-6, transpose=batch.out_csr)


class GatedGCN(Encoder):
    """ResGatedGCN encoder: op embedding, ``layers`` :class:`GatedGCNLayer` (graph made
    undirected), each followed by ReLU, dropout and the residual mix
    ``h = res * h_in + (1 - res) * h_new`` (``res = 0.2``, FGP.md §3). ``out_dim = hidden``.

    ``undirected=False`` passes messages along the edges only (predecessors to successors). FGP.md
    says the graphs are made undirected, but the authors' published scripts run ``gatedgcn`` through
    a branch that skips that step, so both are available."""

    name = "gatedgcn"

    def __init__(self, num_ops: int, hidden: int = 128, layers: int = 3, dropout: float = 0.1,
                 residual: float = 0.2, undirected: bool = True):
        super().__init__(num_ops, hidden, dropout)
        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if not 0.0 <= float(residual) <= 1.0:
            raise ValueError(f"residual must be in [0, 1], got {residual}")
        self.layers = int(layers)
        self.residual = float(residual)
        self.undirected = bool(undirected)
        self.embed = nn.Embedding(self.num_ops, self.hidden)
        self.convs = nn.ModuleList(GatedGCNLayer(self.hidden, self.undirected) for _ in range(self.layers))
        self.drop = Dropout(self.dropout)
        self.out_dim = self.hidden

    @property
    def config(self) -> dict:
        return {**super().config, "layers": self.layers, "residual": self.residual, "undirected": self.undirected}

    def node_embeddings(self, batch) -> torch.Tensor:
        self._check(batch)
        h = self.embed(batch.op)
        for conv in self.convs:
            new = self.drop(torch.relu(conv(h, batch)))
            h = self.residual * h + (1.0 - self.residual) * new
        return h
