"""Ranking metrics of the FGP evaluation protocol (FGP.md §4): Kendall tau-b, Spearman, Precision@K.

Pure numpy (no scipy, no torch import). Inputs are 1-D array-likes of equal length (torch tensors
are accepted and detached); NaN / inf values and fewer than 2 items are errors.

* :func:`kendall_tau` — Kendall tau-b (ties corrected), O(n log^2 n) with Knight's method; agrees
  with ``scipy.stats.kendalltau`` (default ``variant="b"``). 16k items take a few milliseconds.
* :func:`spearman` — Pearson correlation of average ranks (ties get the mean of their ranks);
  agrees with ``scipy.stats.spearmanr``.
* :func:`precision_at` — P@r: sort by true score descending, ``k = int(N * r)``,
  ``|top-k predicted ∩ top-k true| / k``; NaN when ``k == 0``. Ties are broken by position (a
  stable sort: among equal scores the earlier item ranks higher), so results are deterministic.
* :func:`evaluate_ranking` — all of the above as a dict.

Both correlations are NaN when either input is constant (no ranking information).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "kendall_tau",
    "spearman",
    "rankdata",
    "precision_at",
    "evaluate_ranking",
    "P_AT_RATIOS",
]

#: Precision@K ratios reported by :func:`evaluate_ranking`, with their dict keys.
P_AT_RATIOS: dict[str, float] = {
    "p@1%": 0.01, "p@5%": 0.05, "p@10%": 0.10, "p@50%": 0.50, "p@100%": 1.00,
}


def _vector(x, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise ValueError(f"{what} must be real-valued")
    a = a.astype(np.float64, copy=False)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {list(a.shape)}")
    return a


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = _vector(pred, "pred")
    t = _vector(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same length, got {p.shape[0]} and "
                         f"{t.shape[0]}")
    if p.shape[0] < 2:
        raise ValueError(f"need at least 2 items to compare rankings, got {p.shape[0]}")
    for a, what in ((p, "pred"), (t, "true")):
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what} contains {int(bad.sum())} NaN/inf value(s) "
                             f"(first at position {i})")
    return p, t


def rankdata(x) -> np.ndarray:
    """1-based ranks of ``x`` (float64), ties getting the average of their ranks."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    n = a.shape[0]
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new_group = np.empty(n, dtype=bool)
    new_group[:1] = True
    new_group[1:] = s[1:] != s[:-1]
    starts = np.flatnonzero(new_group)                    # first sorted position of each group
    ends = np.append(starts[1:], n)                       # one past the last
    avg = (starts + ends + 1) / 2.0                       # mean of 1-based ranks start+1..end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(pred, true) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either input is constant."""
    p, t = _pair(pred, true)
    rp, rt = rankdata(p), rankdata(t)
    rp -= rp.mean()
    rt -= rt.mean()
    den = math.sqrt(float(rp @ rp) * float(rt @ rt))
    if den == 0.0:
        return math.nan
    return float(np.clip(float(rp @ rt) / den, -1.0, 1.0))


def _tied_pairs(sorted_keys: np.ndarray) -> int:
    """Number of pairs with equal key, given the keys sorted."""
    n = sorted_keys.shape[0]
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    sizes = np.diff(np.concatenate([[0], change, [n]])).astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _count_inversions(r: np.ndarray) -> int:
    """Pairs i < j with ``r[i] > r[j]`` (strictly), for integer codes ``0 <= r < n``.

    Bottom-up merge decomposition: at width ``w`` every pair (i, j) whose positions fall into the
    left and right halves of the same block of size ``2w`` is counted once, by a searchsorted of
    the right half's values into the sorted left half (all blocks at once via a key offset).
    """
    n = r.shape[0]
    pos = np.arange(n, dtype=np.int64)
    r = r.astype(np.int64)
    total = 0
    w = 1
    while w < n:
        block = pos // (2 * w)
        left = (pos // w) % 2 == 0
        key = block * n + r                                  # values of different blocks never mix
        sorted_left = np.sort(key[left])
        kr = key[~left]
        br = block[~left]
        # left elements of the same block with value > r: [block*n + r + 1, block*n + n)
        hi = np.searchsorted(sorted_left, br * n + n, side="left")
        lo = np.searchsorted(sorted_left, kr, side="right")
        total += int((hi - lo).sum())
        w *= 2
    return total


def kendall_tau(pred, true) -> float:
    """Kendall tau-b between ``pred`` and ``true`` (ties corrected); NaN if either is constant.

    ``tau_b = (n_c - n_d) / sqrt((n0 - n1) (n0 - n2))`` with ``n0 = n(n-1)/2``, ``n1`` / ``n2`` the
    pairs tied in ``pred`` / ``true``. Computed exactly with integer pair counts in
    O(n log^2 n) (sort by ``(pred, true)``, count discordant pairs as inversions of ``true``).
    """
    p, t = _pair(pred, true)
    n = p.shape[0]
    order = np.lexsort((t, p))                  # by pred, then true
    ps, ts = p[order], t[order]
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs(ps)                        # tied in pred
    n2 = _tied_pairs(np.sort(t))                # tied in true
    # tied in both: consecutive equal (pred, true) rows after the lexsort
    same = np.concatenate([[False], (ps[1:] == ps[:-1]) & (ts[1:] == ts[:-1])])
    grp = np.cumsum(~same)
    sizes = np.bincount(grp).astype(np.int64)
    n3 = int((sizes * (sizes - 1) // 2).sum())
    # discordant pairs = strict inversions of true's dense codes in (pred, true) order; pairs tied
    # in pred are sorted by true ascending there, so they never count.
    codes = np.unique(t, return_inverse=True)[1].reshape(-1)[order]
    n_d = _count_inversions(codes)
    num = n0 - n1 - n2 + n3 - 2 * n_d           # = n_c - n_d
    den2 = (n0 - n1) * (n0 - n2)
    if den2 <= 0:
        return math.nan
    return float(np.clip(num / math.sqrt(den2), -1.0, 1.0))


def precision_at(pred, true, ratio: float) -> float:
    """Precision@K of FGP.md §4: ``k = int(N * ratio)``; share of the true top-k found in the
    predicted top-k. NaN when ``k == 0``. Ties are broken by position (stable sort)."""
    p, t = _pair(pred, true)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    n = p.shape[0]
    k = int(n * ratio)
    if k == 0:
        return math.nan
    top_true = np.argsort(-t, kind="stable")[:k]
    top_pred = np.argsort(-p, kind="stable")[:k]
    return float(np.intersect1d(top_true, top_pred, assume_unique=True).size / k)


def evaluate_ranking(pred, true) -> dict[str, float]:
    """All ranking metrics of the protocol.

    Returns ``{"kendall_tau", "spearman", "p@1%", "p@5%", "p@10%", "p@50%", "p@100%"}`` (floats;
    P@K is NaN where ``int(N * r) == 0``). ``ValueError`` on shape mismatch, non-finite values or
    fewer than 2 items.
    """
    p, t = _pair(pred, true)
    out = {"kendall_tau": kendall_tau(p, t), "spearman": spearman(p, t)}
    n = p.shape[0]
    top_true = np.argsort(-t, kind="stable")
    top_pred = np.argsort(-p, kind="stable")
    for key, r in P_AT_RATIOS.items():
        k = int(n * r)
        out[key] = (math.nan if k == 0 else
                    float(np.intersect1d(top_true[:k], top_pred[:k], assume_unique=True).size / k))
    return out
