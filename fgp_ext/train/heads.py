"""Score and auxiliary heads: :class:`MLPHead` and :class:`Predictor` (an encoder plus a score head)."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext.encoders import Encoder

__all__ = ["MLPHead", "Predictor"]


class MLPHead(nn.Sequential):
    """Linear-ReLU-Linear head (``in_dim -> hidden -> out_dim``)."""

    def __init__(self, in_dim: int, hidden: int = 128, out_dim: int = 1):
        super().__init__(nn.Linear(int(in_dim), int(hidden)), nn.ReLU(), nn.Linear(int(hidden), int(out_dim)))
        self.config = {"in_dim": int(in_dim), "hidden": int(hidden), "out_dim": int(out_dim)}


class Predictor(nn.Module):
    """An encoder plus a scalar score head: ``forward(batch) -> [B]`` scores (higher = better)."""

    def __init__(self, encoder: Encoder, head: MLPHead | None = None):
        super().__init__()
        if head is not None and head[-1].out_features != 1:
            raise ValueError(f"a Predictor scores with one output; this head has {head[-1].out_features} "
                             "(an auxiliary head of several targets: score with one column of it)")
        self.encoder = encoder
        self.head = head if head is not None else MLPHead(encoder.out_dim, 128, 1)

    def forward(self, batch) -> torch.Tensor:
        return self.head(self.encoder(batch)).squeeze(-1)
