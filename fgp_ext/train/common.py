"""Small helpers shared by the training loops: seeding, batching, progress bars."""
from __future__ import annotations

import random
import sys

import numpy as np
import torch

from fgp_ext.graph import ArchBatch, collate

__all__ = ["set_seed", "as_batch"]


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch."""
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


def as_batch(data) -> ArchBatch:
    """An :class:`ArchBatch` from a batch, a :class:`~fgp_ext.data.Dataset` or a list of graphs."""
    if isinstance(data, ArchBatch):
        return data
    graphs = getattr(data, "graphs", data)
    return collate(graphs)


def _progress(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def _tqdm(iterable, enable: bool, **kw):
    if not enable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)
