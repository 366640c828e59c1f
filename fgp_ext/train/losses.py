"""The pairwise ranking loss and the auxiliary pre-training targets (columns, proxies, rank votes)."""
from __future__ import annotations

import numpy as np
import torch

from fgp_ext.metrics import rankdata

__all__ = ["ranking_loss", "resolve_aux_target"]


def ranking_loss(scores: torch.Tensor, y: torch.Tensor, margin: float = 0.5, max_pairs: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Pairwise hinge ranking loss ``mean(max(0, margin - sign(y_i - y_j) (s_i - s_j)))`` over the
    unordered pairs ``i < j`` of the batch with ``y_i != y_j`` (the ordered-pair mean is the same).
    ``max_pairs`` keeps a random subset of that many pairs (FGP.md §3: 8 x batch for NB101/NB301).
    Zero (with a graph) when no pair qualifies."""
    scores = scores.reshape(-1)
    y = torch.as_tensor(y, dtype=scores.dtype, device=scores.device).reshape(-1)
    if scores.numel() != y.numel():
        raise ValueError(f"scores and y differ in length: {scores.numel()} vs {y.numel()}")
    n = scores.numel()
    i, j = torch.triu_indices(n, n, 1, device=scores.device)
    keep = y[i] != y[j]
    i, j = i[keep], j[keep]
    if i.numel() == 0:
        return scores.sum() * 0.0
    if max_pairs is not None and i.numel() > int(max_pairs):
        sel = torch.randperm(i.numel(), generator=generator)[: int(max_pairs)].to(scores.device)
        i, j = i[sel], j[sel]
    sign = torch.sign(y[i] - y[j])
    return torch.relu(margin - sign * (scores[i] - scores[j])).mean()


def _average_rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n (ties averaged) of the finite values; NaN stays NaN."""
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values)
    out[ok] = rankdata(values[ok])
    return out


def resolve_aux_target(name: str, dataset) -> np.ndarray:
    """An auxiliary pre-training target by name: a column of ``dataset``, or, for NAS-Bench-201, one
    of the zero-cost proxies shipped for all 15,625 cells (:data:`fgp_ext.proxies.PROXIES`: params,
    flops, synflow, nwot, jacov, grad_norm, snip, meco; :data:`fgp_ext.proxies.DEFAULT_AUX_PROXY` is the
    best single one). ``"a+b+c"`` is the rank vote of several such targets: the mean of their ranks (the
    "vote" of Abdelfattah et al., 2021, is ``synflow+jacov+snip``). ``"a,b"`` gives the columns ``[B, 2]``:
    one auxiliary output per target (:func:`pretrain`). ``ValueError`` for anything else."""
    def parts(sep: str, what: str) -> list[str]:
        out = [p.strip() for p in name.split(sep)]
        if len(out) < 2 or not all(out):
            raise ValueError(f"malformed auxiliary target {what} {name!r}: expected names joined by '{sep}'")
        return out

    if "," in name and name not in dataset.target_names:
        return np.stack([np.asarray(resolve_aux_target(p, dataset), dtype=np.float64)
                         for p in parts(",", "list")], axis=1)
    if "+" in name and name not in dataset.target_names:
        ranks = np.stack([_average_rank(np.asarray(resolve_aux_target(p, dataset), dtype=np.float64))
                          for p in parts("+", "vote")])
        return ranks.mean(0)  # NaN wherever one of the parts is missing
    if name in dataset.target_names:
        return dataset.targets(name)
    from fgp_ext import proxies

    if name in proxies.PROXIES:
        if getattr(dataset.space, "name", "") != "nb201":
            raise ValueError(f"the shipped proxy {name!r} exists for NAS-Bench-201 only; for another space compute "
                             "it with fgp_ext.proxies.compute_proxies and pass it as a data column")
        return proxies.nb201_proxy(name, dataset=dataset)
    raise ValueError(f"unknown auxiliary target {name!r}: not a column of the data {list(dataset.target_names)} "
                     f"nor a shipped proxy {list(proxies.PROXIES)}")
