"""The fine-tuning ranking losses (pairwise hinge, logistic, ListMLE, hinge + squared error) and the
auxiliary pre-training targets (columns, proxies, rank votes)."""
from __future__ import annotations

import numpy as np
import torch

from fgp_ext.metrics import rankdata
from fgp_ext.train.config import FINETUNE_LOSSES

__all__ = ["ranking_loss", "logistic_ranking_loss", "listmle_loss", "regression_ranking_loss", "finetune_loss",
           "resolve_aux_target"]


def _ranked_pairs(scores: torch.Tensor, y: torch.Tensor, max_pairs: int | None, generator: torch.Generator | None):
    """For flat ``scores`` and ``y`` of one length (:func:`_flat`): ``(d, sign)`` for the unordered
    pairs ``i < j`` with ``y_i != y_j`` (a random ``max_pairs`` of them when there are more): the
    score differences ``s_i - s_j`` and ``sign(y_i - y_j)``; ``None`` when no pair qualifies. The
    pairs every pairwise loss below is a mean over."""
    n = scores.numel()
    i, j = torch.triu_indices(n, n, 1, device=scores.device)
    keep = y[i] != y[j]
    i, j = i[keep], j[keep]
    if i.numel() == 0:
        return None
    if max_pairs is not None and i.numel() > int(max_pairs):
        sel = torch.randperm(i.numel(), generator=generator)[: int(max_pairs)].to(scores.device)
        i, j = i[sel], j[sel]
    return scores[i] - scores[j], torch.sign(y[i] - y[j])


def _flat(scores: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores`` and ``y`` as flat vectors of the scores' dtype and device; ``ValueError`` when
    their lengths differ. Every loss below starts here, so each refuses a mismatch the same way."""
    scores = scores.reshape(-1)
    y = torch.as_tensor(y, dtype=scores.dtype, device=scores.device).reshape(-1)
    if scores.numel() != y.numel():
        raise ValueError(f"scores and y differ in length: {scores.numel()} vs {y.numel()}")
    return scores, y


def ranking_loss(scores: torch.Tensor, y: torch.Tensor, margin: float = 0.5, max_pairs: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Pairwise hinge ranking loss ``mean(max(0, margin - sign(y_i - y_j) (s_i - s_j)))`` over the
    unordered pairs ``i < j`` of the batch with ``y_i != y_j`` (the ordered-pair mean is the same).
    ``max_pairs`` keeps a random subset of that many pairs (FGP.md §3: 8 x batch for NB101/NB301).
    Zero (with a graph) when no pair qualifies."""
    scores, y = _flat(scores, y)
    pairs = _ranked_pairs(scores, y, max_pairs, generator)
    if pairs is None:
        return scores.sum() * 0.0
    d, sign = pairs
    return torch.relu(margin - sign * d).mean()


def logistic_ranking_loss(scores: torch.Tensor, y: torch.Tensor, max_pairs: int | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Pairwise logistic ranking loss (RankNet, Burges et al., 2005): ``mean(log(1 + exp(-sign(y_i -
    y_j) (s_i - s_j))))`` over the same pairs as :func:`ranking_loss`. Unlike the hinge it never
    stops pushing a correctly ordered pair apart, only ever more gently. Zero when no pair qualifies."""
    scores, y = _flat(scores, y)
    pairs = _ranked_pairs(scores, y, max_pairs, generator)
    if pairs is None:
        return scores.sum() * 0.0
    d, sign = pairs
    return torch.nn.functional.softplus(-sign * d).mean()


def listmle_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Listwise ranking loss ListMLE (Xia et al., 2008): the negative log-likelihood, per item, of the
    batch's true order (descending ``y``) under the Plackett-Luce model of the scores, ``mean_k
    [logsumexp(s_{pi_k}, ..., s_{pi_n}) - s_{pi_k}]``. One term per item instead of one per pair,
    and the top of the list weighs most. Tied targets keep their batch order (a stable sort), so
    the loss is deterministic. Zero for fewer than two items."""
    scores, y = _flat(scores, y)
    if scores.numel() < 2:
        return scores.sum() * 0.0
    order = torch.sort(y, descending=True, stable=True).indices
    s = scores[order]
    tail = torch.logcumsumexp(s.flip(0), 0).flip(0)    # logsumexp of s[k:] for every k
    return (tail - s).mean()


def regression_ranking_loss(scores: torch.Tensor, y: torch.Tensor, margin: float = 0.5,
                            max_pairs: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`ranking_loss` plus the mean squared error between the scores and the batch's
    standardised targets ``(y - mean) / std`` (a regression term, as NAR-Former trains with): the
    hinge fixes only the order, the squared error also asks pairs far apart in ``y`` to lie far
    apart in score. Standardising within the batch keeps the term free of the targets' unit."""
    scores, y = _flat(scores, y)
    hinge = ranking_loss(scores, y, margin=margin, max_pairs=max_pairs, generator=generator)
    if scores.numel() < 2:
        return hinge
    sd = y.std()
    z = (y - y.mean()) / sd if sd > 0 else y - y.mean()
    return hinge + torch.mean((scores - z) ** 2)


def finetune_loss(name: str, scores: torch.Tensor, y: torch.Tensor, margin: float = 0.5,
                  max_pairs: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The fine-tuning loss ``name`` (:data:`~fgp_ext.train.config.FINETUNE_LOSSES`) of a batch:
    ``"hinge"`` :func:`ranking_loss` (FGP's), ``"logistic"`` :func:`logistic_ranking_loss`,
    ``"listmle"`` :func:`listmle_loss` (no margin, all items), ``"hinge+mse"``
    :func:`regression_ranking_loss`. ``ValueError`` for another name."""
    if name == "hinge":
        return ranking_loss(scores, y, margin=margin, max_pairs=max_pairs, generator=generator)
    if name == "logistic":
        return logistic_ranking_loss(scores, y, max_pairs=max_pairs, generator=generator)
    if name == "listmle":
        return listmle_loss(scores, y)
    if name == "hinge+mse":
        return regression_ranking_loss(scores, y, margin=margin, max_pairs=max_pairs, generator=generator)
    raise ValueError(f"unknown fine-tuning loss {name!r}; expected one of {list(FINETUNE_LOSSES)}")


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
