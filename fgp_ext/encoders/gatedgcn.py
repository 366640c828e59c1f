"""Residual gated graph conv (GatedGCN / ResGatedGCN) on the fgp ops."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext import ops
from fgp_ext.encoders.base import Encoder


class GatedGCNLayer(nn.Module):
    """``h'_v = U h_v + sum_u g_uv * (V h_u) / (sum_u g_uv + 1e-6)`` with per-channel edge gates
    ``g_uv = sigmoid(A h_v + B h_u)``, over the neighbours ``u`` of ``v`` in both directions (the
    graph made undirected, :attr:`ArchBatch.undirected_csr`).

    Per layer: one gather of ``[V h | B h]`` per CSR entry, and one compiled, deterministic
    ``segment_sum_csr`` of ``[gated message | gate]`` over the CSR rows (numerator and
    denominator together).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        # U, A, V (with bias) and B (no bias) in one matmul: [U | A | V | B]
        self.proj = nn.Linear(self.dim, 4 * self.dim)
        with torch.no_grad():
            self.proj.bias[3 * self.dim:].zero_()

    def forward(self, h: torch.Tensor, batch) -> torch.Tensor:
        d = self.dim
        uh, ah, vbh = self.proj(h).split([d, d, 2 * d], dim=-1)
        csr, rows = batch.undirected_csr, batch.undirected_rows
        vb_src = vbh.index_select(0, csr.index)
        gate = torch.sigmoid(ah.index_select(0, rows) + vb_src[:, d:])
        num, den = ops.segment_sum_csr(torch.cat([gate * vb_src[:, :d], gate], dim=-1), csr.indptr).split(d, dim=-1)
        return uh + num / (den + 1e-6)


class GatedGCN(Encoder):
    """ResGatedGCN encoder: op embedding, ``layers`` :class:`GatedGCNLayer` (graph made
    undirected), each followed by ReLU, dropout and the residual mix
    ``h = res * h_in + (1 - res) * h_new`` (``res = 0.2``, FGP.md §3). ``out_dim = hidden``."""

    name = "gatedgcn"

    def __init__(self, num_ops: int, hidden: int = 128, layers: int = 3, dropout: float = 0.1,
                 residual: float = 0.2):
        super().__init__(num_ops, hidden, dropout)
        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if not 0.0 <= float(residual) <= 1.0:
            raise ValueError(f"residual must be in [0, 1], got {residual}")
        self.layers = int(layers)
        self.residual = float(residual)
        self.embed = nn.Embedding(self.num_ops, self.hidden)
        self.convs = nn.ModuleList(GatedGCNLayer(self.hidden) for _ in range(self.layers))
        self.drop = nn.Dropout(self.dropout)
        self.out_dim = self.hidden

    @property
    def config(self) -> dict:
        return {**super().config, "layers": self.layers, "residual": self.residual}

    def node_embeddings(self, batch) -> torch.Tensor:
        self._check(batch)
        h = self.embed(batch.op)
        for conv in self.convs:
            new = self.drop(torch.relu(conv(h, batch)))
            h = self.residual * h + (1.0 - self.residual) * new
        return h
