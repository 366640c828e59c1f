"""What ``--aux-target auto`` pre-trains on: :func:`choose_aux_target`.

FGP's gain comes mostly from the auxiliary ranking loss (results/fgp_nb201.md), so the default job
must find an auxiliary target for any data, not only for NAS-Bench-201:

* **NAS-Bench-201** (embedded table or a file of NB201 cells): the shipped MeCo proxy of every cell
  (:data:`fgp_ext.proxies.DEFAULT_AUX_TARGET`), as before.
* **Any other data**: the first usable column of the file in :data:`AUTO_PRIORITY` order — the cost
  columns ``params`` > ``flops`` > ``macs`` (under their usual spellings: ``num_params``,
  ``params_m``, ``MFLOPs``, ``mult_adds``...), then the zero-cost proxies ``meco`` > ``zico`` >
  ``nwot`` > ``synflow``. None usable: no auxiliary target (reconstruction alone), with a reason the
  caller shows as a warning.

Why this order (results/fgp_nb101_nb301.md, "The default auxiliary target on files"): cost columns exist for
every space and their rank correlation with accuracy is positive and similar everywhere we looked
(Kendall with validation accuracy: params 0.518 / 0.367 / 0.562 on the NB101, NB301 and NB201
NASLib files, flops 0.520 / 0.336 / 0.520; params 0.62 on an MBConv-chain benchmark), while the
zero-cost proxies swing from space to space (synflow 0.452 / 0.146 / 0.537; jacov -0.339 / -0.026 /
0.584), and as FGP targets on the NB101 and NB301 files no proxy beat params by more than the
runs' spread (nwot +0.005 on NB301, synflow 0.000 on NB101). ZiCo is listed on its paper's results
across spaces (not measured here). The other proxies of those files (jacov, snip, grad_norm,
fisher, grasp, epe_nas, plain) change sign between spaces, and l2_norm (the initial weights' norm)
stands in for the parameter count; ``auto`` never picks them, ``--aux-target NAME`` does.

Leakage rule: ``auto`` only ever picks a column whose *name* is a known cost or zero-cost proxy,
i.e. a quantity computable from the architecture without training or measuring it. Accuracies,
errors, losses and latencies (``val_acc*``, ``test_acc*``, ``lat_*``...) — other labels of the same
architecture — are therefore never chosen, whatever the target. On top of that the target column
itself is never chosen, nor a column ranking the architectures like the target (|Spearman| >= 0.99
over the rows where both are known: a copy of the label under another name). A column must also be
finite for at least 95% of the architectures and take at least two distinct values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fgp_ext.metrics import spearman

__all__ = ["AuxChoice", "AUTO_PRIORITY", "MIN_FINITE_SHARE", "COPY_SPEARMAN", "choose_aux_target",
           "auto_kind"]

_PREFIX = r"(n|num|numof|numberof|total|count)?"
#: (kind, compact-name pattern) in the order ``auto`` tries them; a column's compact name is its
#: name lower-cased with every character other than a-z and 0-9 removed ("#Params (M)" -> "paramsm")
AUTO_PRIORITY: tuple[tuple[str, str], ...] = (
    ("params", _PREFIX + r"(params?|parameters?|paramcount)(k|m|g|b|mb|million|millions|count)?"),
    ("flops", _PREFIX + r"[kmgt]?flops?(k|m|g|t|count)?"),
    ("macs", _PREFIX + r"[kmgt]?(macs?|madds|multadds|multiplyadds)(k|m|g|t|count)?"),
    ("meco", r"meco"),
    ("zico", r"zico"),
    ("nwot", r"(nwot|naswot)"),
    ("synflow", r"(log)?synflow"),
)
_KINDS = tuple((k, re.compile(p)) for k, p in AUTO_PRIORITY)
_COST = frozenset({"params", "flops", "macs"})
#: share of architectures a column must have a finite value for
MIN_FINITE_SHARE = 0.95
#: |Spearman| with the target from which a column counts as a copy of it
COPY_SPEARMAN = 0.99


@dataclass(frozen=True)
class AuxChoice:
    """What ``auto`` chose: ``name`` (a column or shipped proxy; ``None`` = reconstruction alone)
    and ``reason``, one sentence for the run's output and ``summary.json``."""

    name: str | None
    reason: str


def auto_kind(column: str) -> str | None:
    """The :data:`AUTO_PRIORITY` kind a column name is (``"params"``, ``"flops"``, ``"macs"``, or
    a proxy name), or ``None`` when ``auto`` never picks a column of that name."""
    compact = re.sub(r"[^a-z0-9]", "", str(column).lower())
    for kind, pat in _KINDS:
        if pat.fullmatch(compact):
            return kind
    return None


def _unusable(values: np.ndarray, target_values: np.ndarray | None) -> str | None:
    """Why a candidate column cannot be the auxiliary target, or None if it can."""
    finite = np.isfinite(values)
    n = values.size
    if n == 0 or finite.sum() < MIN_FINITE_SHARE * n:
        return f"finite for {int(finite.sum())}/{n} architectures"
    if np.unique(values[finite]).size < 2:
        return "constant"
    if target_values is not None:
        both = finite & np.isfinite(target_values)
        if both.sum() >= 3:
            r = spearman(values[both], target_values[both])
            if np.isfinite(r) and abs(r) >= COPY_SPEARMAN:
                return f"ranks like the target (Spearman {r:+.3f})"
    return None


def choose_aux_target(dataset, target: str | None = None) -> AuxChoice:
    """The auxiliary pre-training target ``--aux-target auto`` uses for ``dataset`` when ``target``
    is the label column (the rules and their reasons: this module's docstring)."""
    space = getattr(getattr(dataset, "space", None), "name", "")
    if space == "nb201":
        from fgp_ext.proxies import DEFAULT_AUX_TARGET

        return AuxChoice(DEFAULT_AUX_TARGET, f"{DEFAULT_AUX_TARGET}: the zero-cost proxy shipped for every "
                                             "NAS-Bench-201 cell (the best single NB201 proxy)")
    target_values = None
    if target is not None and target in dataset.target_names:
        target_values = np.asarray(dataset.targets(target), dtype=np.float64)
    found: dict[str, list[str]] = {}
    for col in dataset.target_names:
        kind = auto_kind(col)
        if kind is not None:
            found.setdefault(kind, []).append(col)
    rejected = []
    for kind, _ in AUTO_PRIORITY:
        for col in found.get(kind, []):
            if col == target:
                rejected.append(f"{col} (the target)")
                continue
            why = _unusable(np.asarray(dataset.targets(col), dtype=np.float64), target_values)
            if why is not None:
                rejected.append(f"{col} ({why})")
                continue
            what = "cost column" if kind in _COST else "zero-cost proxy column"
            skipped = f"; skipped {', '.join(rejected)}" if rejected else ""
            return AuxChoice(col, f"{what} {col!r}, the first usable of the file's columns in the order "
                                  f"params > flops > macs > meco > zico > nwot > synflow{skipped}")
    if rejected:
        detail = "no usable cost or proxy column (" + ", ".join(rejected) + ")"
    else:
        detail = ("no cost (params, flops, macs) or proxy (meco, zico, nwot, synflow) column among "
                  f"{list(dataset.target_names)}")
    return AuxChoice(None, detail)
