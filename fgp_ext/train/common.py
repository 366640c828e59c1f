"""Small helpers shared by the training loops: seeding, batching, progress bars."""
from __future__ import annotations

import math
import random
import sys

import numpy as np
import torch

from fgp_ext.graph import ArchBatch, collate

__all__ = ["set_seed", "as_batch", "TrainingDivergedError", "check_finite_epoch",
           "check_finite_outputs"]


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


class TrainingDivergedError(ValueError):
    """Training produced a non-finite loss or non-finite weights (raised at the epoch it happened)."""


def check_finite_epoch(stage: str, epoch: int, loss: float, modules, lr: float) -> None:
    """Raise :class:`TrainingDivergedError` when epoch ``epoch`` of ``stage`` left a non-finite mean
    loss or a non-finite weight in ``modules`` (an iterable of modules, ``None`` entries skipped).

    Checked once per epoch, so a diverging run stops where it diverged instead of carrying NaN
    weights into a checkpoint or into predictions reported after all the work. The weights are
    checked as well as the loss because the last optimiser step of an epoch can turn finite weights
    into inf/NaN after the epoch's loss was computed.
    """
    bad = None
    if not math.isfinite(loss):
        bad = f"the mean training loss is {loss}"
    else:
        for module in modules:
            if module is None:
                continue
            for name, p in module.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    bad = f"weight {name!r} holds inf/NaN"
                    break
            if bad:
                break
    if bad:
        raise TrainingDivergedError(
            f"{stage} diverged in epoch {epoch}: {bad} (learning rate {lr:g}); "
            f"lower the learning rate (--lr) or check the inputs for extreme values")


def check_finite_outputs(stage: str, epoch: int, values, lr: float, what: str) -> None:
    """Raise :class:`TrainingDivergedError` when ``values`` (model outputs after epoch ``epoch``)
    hold inf/NaN. Weights can stay finite but so large (a learning rate of 1e30 gives weights near
    1e30 after one step) that the next forward pass overflows; only the outputs show it."""
    v = torch.as_tensor(values)
    if v.numel() and not bool(torch.isfinite(v).all()):
        n = int((~torch.isfinite(v)).sum())
        raise TrainingDivergedError(
            f"{stage} diverged in epoch {epoch}: {n} of {v.numel()} {what} are inf/NaN (learning rate "
            f"{lr:g}); lower the learning rate (--lr) or check the inputs for extreme values")


def _progress(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def _tqdm(iterable, enable: bool, **kw):
    if not enable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)
