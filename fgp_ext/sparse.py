"""Sparse structures shared by the ops and the graph layer (torch only, no compiled code)."""
from __future__ import annotations

from typing import NamedTuple

import torch


class CSR(NamedTuple):
    """A compressed-sparse-row structure: ``indptr`` [rows+1], ``index`` [E] and, for a transpose,
    ``perm`` [E] mapping each entry back to its position in the original CSR."""

    indptr: torch.Tensor
    index: torch.Tensor
    perm: torch.Tensor | None = None
