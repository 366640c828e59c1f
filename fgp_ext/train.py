"""FGP pre-training, ranking fine-tuning, evaluation and the paper's split protocol (FGP.md §3-4).

Everything works on one pre-collated :class:`~fgp_ext.graph.ArchBatch` of the whole dataset;
every step takes a sub-batch with :meth:`ArchBatch.select` (vectorised, no per-graph Python).

Public API:

* :func:`pretrain` — surrogate reconstruction (flow head) + optional auxiliary ranking loss.
* :func:`finetune` — pairwise hinge ranking loss, gradient clipping, best-validation-tau checkpoint.
* :func:`evaluate` / :func:`predict` — metrics of :func:`fgp_ext.metrics.evaluate_ranking`.
* :func:`split_indices` / :func:`permutation` / :func:`protocol_runs` — the split protocol.
* :func:`run_protocol` — FGP vs supervised-only over several (seed, permutation) runs.
* :func:`save_checkpoint` / :func:`load_checkpoint` — our checkpoint format.
"""
from __future__ import annotations

import copy
import hashlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fgp_ext.encoders import Encoder, build_encoder
from fgp_ext.graph import ArchBatch, collate
from fgp_ext.metrics import evaluate_ranking, kendall_tau

__all__ = [
    "MLPHead", "Predictor", "ranking_loss", "set_seed", "as_batch", "pretrain", "finetune", "predict",
    "evaluate", "permutation", "split_indices", "protocol_runs", "default_n_train", "run_protocol",
    "save_checkpoint", "load_checkpoint", "Checkpoint", "CheckpointError", "PretrainResult",
    "FinetuneResult", "PROTOCOL_SEEDS", "CHECKPOINT_FORMAT", "resolve_aux_target", "lr_factor",
    "LR_SCHEDULES",
]

#: The paper's seeds (FGP.md §4); seed 21 means the identity permutation.
PROTOCOL_SEEDS: tuple[int, ...] = (21, 2021, 202121)
#: Training-pool sizes of the paper by space name.
PAPER_N_TRAIN = {"nb101": 7290, "nb201": 7813, "nb301": 5611, "darts": 5611}
#: Marker stored in every checkpoint written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT = "fgp_ext.checkpoint"
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------
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
    from scipy.stats import rankdata

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


# ----------------------------------------------------------------------------------------------
# pre-training
# ----------------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    """What :func:`pretrain` returns. ``history``: one dict per epoch (``loss``, ``rec``, ``aux``,
    ``seconds``); ``target_mean`` / ``target_std``: the surrogate standardisation used (or None)."""

    encoder: Encoder
    flow_head: MLPHead
    aux_head: MLPHead | None
    history: list[dict] = field(default_factory=list)
    target_mean: torch.Tensor | None = None
    target_std: torch.Tensor | None = None

    @property
    def time_per_epoch(self) -> float:
        return float(np.mean([h["seconds"] for h in self.history])) if self.history else math.nan


def pretrain(encoder: Encoder, data, surrogate_targets, epochs: int = 200, batch_size: int = 256,
             lr: float = 1e-3, weight_decay: float = 1e-6, aux_target=None, aux_margin: float = 0.5,
             standardize: bool = False, seed: int = 0, progress: bool | None = None,
             reconstruction: bool = True,
             indices=None, resume_path=None, resume_meta: dict | None = None,
             on_epoch=None) -> PretrainResult:
    """FGP pre-training of ``encoder`` (in place) on every architecture of ``data`` (no labels).

    Args:
        data: an ``ArchBatch`` (pre-collated, preferred), a ``Dataset`` or a list of graphs.
        surrogate_targets: ``[B, k]`` flow-surrogate vectors (:func:`fgp_ext.flow_surrogate`).
        aux_target: optional ``[B]`` cheap scalar (zero-cost proxy, params, FLOPs...); adds an
            auxiliary head (hidden 64, out 1, or out P for ``[B, P]``) trained with
            :func:`ranking_loss`; the total loss is
            then ``0.5 * rec + 0.5 * aux``. NaN marks architectures without the scalar (e.g. extra
            unlabelled cells): they are left out of the ranking loss only. ``[B, P]`` gives the
            head P outputs, one ranking loss per column, averaged (several proxies side by side
            rather than one rank vote).
        reconstruction: ``False`` drops the surrogate-reconstruction loss and trains on the auxiliary
            ranking loss alone (the "proxy only" ablation; needs ``aux_target``).
        standardize: z-score every surrogate dimension over the dataset before regression;
            constant dimensions become 0. Default ``False``: the raw surrogate, as the paper and
            the authors' code. The published NB201 surrogate spreads about 0.01 per dimension, so
            the raw reconstruction term is small next to the proxy ranking term; standardising
            makes it weigh as much, and that cost GatedGCN 0.021 Kendall tau over 9 NB201 runs
            (0.781 vs 0.802 with MeCo; ``results/fgp_nb201.md``).
        indices: optional subset of graphs to pre-train on (default: all).
        resume_path: a file that makes a long pre-training survive being killed. After every epoch
            the whole training state (encoder, heads, optimiser, the shuffling generator, torch's
            RNG for dropout, the history) is written there atomically; a call that finds the file
            continues after its last epoch and gives bit-identical results to a run that was never
            interrupted. The file is removed when the pre-training completes.
        resume_meta: JSON-like settings stored with that state; a file written with other settings
            (or for another number of epochs) raises ``ValueError`` instead of being resumed.
        on_epoch: optional callable, given each epoch's history row after its state is saved.

    Loss: mean over graphs of the squared L2 error of the flow head (Linear-ReLU-Linear, hidden
    128, out k). AdamW(lr, weight_decay). Shuffling uses a generator seeded with ``seed``.
    """
    batch = as_batch(data)
    if not reconstruction and aux_target is None:
        raise ValueError("reconstruction=False needs an aux_target: there would be nothing to pre-train on")
    t = torch.as_tensor(surrogate_targets, dtype=torch.float32)
    if t.ndim != 2 or t.shape[0] != batch.num_graphs:
        raise ValueError(f"surrogate_targets must be [{batch.num_graphs}, k], got {list(t.shape)}")
    mean = std = None
    if standardize:
        mean = t.mean(0)
        std = t.std(0)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        t = (t - mean) / std
    aux = None
    if aux_target is not None:
        aux = torch.as_tensor(np.asarray(aux_target, dtype=np.float64))
        if aux.ndim == 1:
            aux = aux[:, None]
        if aux.ndim != 2 or aux.shape[0] != batch.num_graphs or aux.shape[1] < 1:
            raise ValueError(f"aux_target must be [{batch.num_graphs}] or [{batch.num_graphs}, P], "
                             f"got {list(aux.shape)}")
        aux_known = torch.isfinite(aux)
        if int(aux_known.sum(0).min()) < 2:
            raise ValueError("aux_target has fewer than 2 finite values (in some column): nothing to rank")
    idx_all = (torch.arange(batch.num_graphs) if indices is None
               else torch.as_tensor(np.asarray(indices), dtype=torch.int64))
    torch.manual_seed(seed)
    flow_head = MLPHead(encoder.out_dim, 128, t.shape[1])
    aux_head = MLPHead(encoder.out_dim, 64, aux.shape[1]) if aux is not None else None
    params = list(encoder.parameters()) + list(flow_head.parameters())
    if aux_head is not None:
        params += list(aux_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    result = PretrainResult(encoder, flow_head, aux_head, [], mean, std)
    modules = {"encoder": encoder, "flow_head": flow_head, "aux_head": aux_head}
    meta = {**(resume_meta or {}), "epochs": int(epochs)}
    start = 0
    if resume_path is not None:
        resume_path = Path(resume_path)
        if resume_path.is_file():
            start = _load_pretrain_state(resume_path, meta, modules, opt, gen, result.history)
    show = _progress(progress)
    bar = _tqdm(range(start, int(epochs)), show, desc="pretrain", unit="epoch", initial=start, total=int(epochs))
    encoder.train(), flow_head.train()
    for epoch in bar:
        t0 = time.perf_counter()
        order = idx_all[torch.randperm(idx_all.numel(), generator=gen)]
        tot = rec_sum = aux_sum = 0.0
        steps = 0
        for s in range(0, order.numel(), int(batch_size)):
            ids = order[s: s + int(batch_size)]
            sub = batch.select(ids)
            z = encoder(sub)
            rec = (flow_head(z) - t[ids]).pow(2).sum(-1).mean()
            loss = rec
            if aux_head is not None:
                # architectures without the proxy (NaN) sit out that column's ranking loss
                scores, known, want = aux_head(z), aux_known[ids], aux[ids].to(z.dtype)
                la = torch.stack([ranking_loss(scores[:, j][known[:, j]], want[:, j][known[:, j]], margin=aux_margin)
                                  for j in range(want.shape[1])]).mean()
                loss = 0.5 * rec + 0.5 * la if reconstruction else la
                aux_sum += float(la.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            rec_sum += float(rec.detach())
            steps += 1
        rec_e = {"epoch": epoch + 1, "loss": tot / max(steps, 1), "rec": rec_sum / max(steps, 1),
                 "aux": aux_sum / max(steps, 1) if aux_head is not None else None,
                 "seconds": time.perf_counter() - t0}
        result.history.append(rec_e)
        if resume_path is not None and epoch + 1 < int(epochs):
            _save_pretrain_state(resume_path, meta, epoch + 1, modules, opt, gen, result.history)
        if show:
            bar.set_postfix(rec=f"{rec_e['rec']:.4f}")
        if on_epoch is not None:
            on_epoch(rec_e)
    if resume_path is not None and resume_path.is_file():
        resume_path.unlink()
    encoder.eval(), flow_head.eval()
    return result


def _save_pretrain_state(path: Path, meta: dict, epochs_done: int, modules: dict, opt, gen, history) -> None:
    state = {"format": CHECKPOINT_FORMAT + ".pretrain_state", "version": CHECKPOINT_VERSION, "meta": meta,
             "epochs_done": int(epochs_done), "history": history, "optimizer": opt.state_dict(),
             "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
             "modules": {k: m.state_dict() for k, m in modules.items() if m is not None}}
    _atomic_torch_save(state, path)


def _load_pretrain_state(path: Path, meta: dict, modules: dict, opt, gen, history: list) -> int:
    """Restore a state written by :func:`_save_pretrain_state`; returns the epochs already done."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(f"{str(path)!r} is not an fgp_ext pre-training state ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT + ".pretrain_state":
        raise CheckpointError(f"{str(path)!r} is not an fgp_ext pre-training state")
    saved = state.get("meta", {})
    diff = sorted(k for k in set(meta) | set(saved) if saved.get(k) != meta.get(k))
    if diff:
        raise ValueError(f"{str(path)!r} holds a pre-training state made with other settings "
                         f"({', '.join(diff)} differ); delete it to start over")
    if set(state["modules"]) != {k for k, m in modules.items() if m is not None}:
        raise ValueError(f"{str(path)!r} has other heads than this pre-training (auxiliary target differs)")
    for k, sd in state["modules"].items():
        modules[k].load_state_dict(sd)
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    history.extend(state["history"])
    return int(state["epochs_done"])


# ----------------------------------------------------------------------------------------------
# fine-tuning and evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, data, indices=None, chunk: int = 4096) -> np.ndarray:
    """Scores of ``model`` (eval mode) for the graphs ``indices`` of ``data`` (default: all)."""
    batch = as_batch(data)
    idx = (torch.arange(batch.num_graphs) if indices is None
           else torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1))
    was = model.training
    model.eval()
    out = [model(batch.select(idx[s: s + chunk])).reshape(-1) for s in range(0, idx.numel(), chunk)]
    model.train(was)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def evaluate(model: nn.Module, data, targets, indices=None) -> dict[str, float]:
    """Ranking metrics (Kendall tau-b, Spearman, P@{1,5,10,50,100}%) of ``model`` on ``indices``;
    ``targets`` is the full ``[B]`` label array of ``data``."""
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    idx = np.arange(y.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    pred = predict(model, data, idx)
    out = evaluate_ranking(pred, y[idx])
    out["n"] = int(idx.shape[0])
    return out


#: Learning-rate schedules of :func:`finetune` (stepped once per epoch).
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(epoch: int, schedule: str = "constant", warmup_epochs: int = 0,
              schedule_epochs: int | None = None) -> float:
    """Multiplier of the base learning rate in epoch ``epoch`` (0-based) of fine-tuning.

    ``"constant"``: 1 after the warm-up. ``"cosine"``: half a cosine from 1 after the warm-up down
    to 0 at ``schedule_epochs`` (it stays 0 after that). Warm-up: linear, ``epoch / warmup_epochs``
    (floored at 1e-6 so that the first epoch still moves) for the first ``warmup_epochs`` epochs.
    FlowerFormer's fine-tuning (its NB201 config) uses cosine with 30 warm-up epochs and a
    600-epoch schedule while training 500 epochs, so the rate never reaches 0 there.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    epoch, warmup = int(epoch), int(warmup_epochs)
    if epoch < 0 or warmup < 0:
        raise ValueError(f"epoch ({epoch}) and warmup_epochs ({warmup}) must be >= 0")
    if schedule == "cosine" and (schedule_epochs is None or int(schedule_epochs) <= warmup):
        raise ValueError(f"the cosine schedule needs schedule_epochs > warmup_epochs ({warmup}), "
                         f"got {schedule_epochs}")
    if epoch < warmup:
        return max(1e-6, epoch / warmup)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (epoch - warmup) / (int(schedule_epochs) - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns; ``model`` holds the best-validation weights."""

    model: Predictor
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_tau: float = math.nan

    @property
    def time_per_epoch(self) -> float:
        return float(np.mean([h["seconds"] for h in self.history])) if self.history else math.nan


def finetune(encoder: Encoder | Predictor, data, targets, train_idx, val_idx=None, epochs: int = 200,
             batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.0, margin: float = 0.5,
             max_pairs: int | None = None, clip: float = 1.0, seed: int = 0,
             progress: bool | None = None, head_hidden: int = 128, lr_schedule: str = "constant",
             warmup_epochs: int = 0, schedule_epochs: int | None = None) -> FinetuneResult:
    """Fine-tune ``encoder`` (+ a fresh score head, or a :class:`Predictor` as given) with the
    pairwise hinge :func:`ranking_loss` on the labelled graphs ``train_idx``.

    Each epoch shuffles ``train_idx`` (generator seeded with ``seed``) into batches of
    ``batch_size``; gradients are clipped to norm ``clip``; AdamW. After every epoch the Kendall tau
    on ``val_idx`` is measured and the best weights (first best on ties) are kept and restored at
    the end. Without ``val_idx`` the last epoch is kept.

    ``lr_schedule`` / ``warmup_epochs`` / ``schedule_epochs``: the learning rate of epoch ``e`` is
    ``lr * lr_factor(e, lr_schedule, warmup_epochs, schedule_epochs)`` (:func:`lr_factor`;
    ``schedule_epochs`` defaults to ``epochs``); each history row records it as ``"lr"``.
    """
    if schedule_epochs is None:
        schedule_epochs = int(epochs)
    lr_factor(0, lr_schedule, warmup_epochs, schedule_epochs)   # refuse a bad schedule before any work
    batch = as_batch(data)
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)
    if y.numel() != batch.num_graphs:
        raise ValueError(f"targets has {y.numel()} values for {batch.num_graphs} graphs")
    tr = torch.as_tensor(np.asarray(train_idx), dtype=torch.int64).reshape(-1)
    if tr.numel() < 2:
        raise ValueError(f"need at least 2 labelled architectures, got {tr.numel()}")
    if torch.isnan(y[tr]).any():
        raise ValueError("targets of the training architectures contain NaN")
    torch.manual_seed(seed)
    model = encoder if isinstance(encoder, Predictor) else Predictor(encoder, MLPHead(encoder.out_dim, head_hidden, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    y_val = None
    if val_idx is not None and len(val_idx) >= 2:
        val_idx = np.asarray(val_idx, dtype=np.int64)
        y_val = y[torch.as_tensor(val_idx)].numpy()
    result = FinetuneResult(model)
    best_state = None
    best = -math.inf
    show = _progress(progress)
    bar = _tqdm(range(int(epochs)), show, desc="finetune", unit="epoch", leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        epoch_lr = lr * lr_factor(epoch, lr_schedule, warmup_epochs, schedule_epochs)
        for group in opt.param_groups:
            group["lr"] = epoch_lr
        model.train()
        order = tr[torch.randperm(tr.numel(), generator=gen)]
        tot, steps = 0.0, 0
        for s in range(0, order.numel(), int(batch_size)):
            ids = order[s: s + int(batch_size)]
            if ids.numel() < 2:
                continue
            scores = model(batch.select(ids))
            loss = ranking_loss(scores, y[ids].to(scores.dtype), margin=margin, max_pairs=max_pairs, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            tot += float(loss.detach())
            steps += 1
        train_s = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": tot / max(steps, 1), "lr": epoch_lr, "seconds": train_s}
        if y_val is not None:
            vt = kendall_tau(predict(model, batch, val_idx), y_val)
            vt = -math.inf if math.isnan(vt) else vt
            rec["val_tau"] = vt
            if vt > best:
                best, result.best_epoch = vt, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            if show:
                bar.set_postfix(val_tau=f"{vt:.3f}", best=f"{best:.3f}")
        result.history.append(rec)
    if best_state is not None:
        model.load_state_dict(best_state)
        result.best_val_tau = best
    else:
        result.best_epoch = int(epochs)
    model.eval()
    return result


# ----------------------------------------------------------------------------------------------
# split protocol
# ----------------------------------------------------------------------------------------------
def permutation(n: int, perm_seed: int | None) -> np.ndarray:
    """The protocol's permutation of ``n`` architectures: the identity for ``perm_seed`` 21 (or
    None), otherwise ``numpy.random.RandomState(perm_seed).permutation(n)`` (the same stream as
    ``numpy.random.seed(perm_seed); numpy.random.permutation(n)``)."""
    if perm_seed is None or int(perm_seed) == 21:
        return np.arange(n, dtype=np.int64)
    return np.random.RandomState(int(perm_seed)).permutation(n).astype(np.int64)


def default_n_train(n: int, space_name: str | None = None, n_val: int = 40) -> int:
    """The paper's pool size for the space when the dataset is large enough (NB201 7813 of 15625),
    else half the dataset (our NB101/NB301 subsets are smaller than the paper's)."""
    paper = PAPER_N_TRAIN.get(str(space_name).lower()) if space_name else None
    if paper is not None and paper + n_val < n:
        return paper
    return max(2, n // 2)


def split_indices(n: int, n_train: int, ratio: float, perm_seed: int | None, n_val: int = 40) -> dict:
    """FGP.md §4: permute (see :func:`permutation`); the first ``n_train`` are the training pool,
    the next ``n_val`` validation, the rest test; fine-tune on the first ``int(n_train * ratio)``
    of the pool. Returns ``{"train", "val", "test", "pool"}`` index arrays into the dataset."""
    if n_train < 2 or n_train + n_val >= n:
        raise ValueError(f"n_train={n_train} + n_val={n_val} must leave a test set of the {n} architectures")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    perm = permutation(n, perm_seed)
    pool = perm[:n_train]
    k = int(n_train * ratio)
    if k < 2:
        raise ValueError(f"int(n_train * ratio) = {k}: need at least 2 labelled architectures")
    return {"train": pool[:k], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:],
            "pool": pool}


def protocol_runs(runs: int = 9, seeds=PROTOCOL_SEEDS) -> list[tuple[int, int]]:
    """The ``(seed, perm_seed)`` pairs of the protocol: all 3 x 3 combinations of the paper's
    seeds, ordered so that the first 3 pair each seed with its own permutation ((21, identity),
    (2021, perm 2021), (202121, perm 202121)); ``runs`` > 9 is an error."""
    seeds = tuple(int(s) for s in seeds)
    pairs = [(s, s) for s in seeds] + [(s, p) for p in seeds for s in seeds if s != p]
    if not 1 <= int(runs) <= len(pairs):
        raise ValueError(f"runs must be in 1..{len(pairs)}, got {runs}")
    return pairs[: int(runs)]


def _protocol_methods(baseline: bool, finetune_aux_head: bool) -> list[str]:
    return ["fgp"] + (["fgp_aux_head"] if finetune_aux_head else []) + (["supervised"] if baseline else [])


def run_protocol(dataset, encoder: str = "gatedgcn", target: str | None = None, *, runs: int = 3,
                 ratio: float = 0.01, n_train: int | None = None, n_val: int = 40,
                 epochs_pretrain: int = 200, epochs_finetune: int = 200, batch_size_pretrain: int = 256,
                 batch_size_finetune: int = 16, lr: float = 1e-3, margin: float = 0.5,
                 hidden: int = 128, dropout: float = 0.1, surrogate: dict | None = None,
                 surrogate_targets=None, aux_target=None, aux_name: str | None = None,
                 standardize: bool = False, reconstruction: bool = True,
                 baseline: bool = True, progress: bool | None = None, unlabelled=None,
                 encoder_config: dict | None = None, finetune_aux_head: bool = False,
                 finetune_lr: float | None = None, finetune_weight_decay: float = 0.0,
                 finetune_schedule: str = "constant", finetune_warmup: int = 0,
                 finetune_schedule_epochs: int | None = None, pretrained_dir=None, log=print) -> dict:
    """The whole protocol on one dataset: FGP (pre-train on all architectures, then fine-tune) vs a
    supervised-only baseline (same encoder, same fine-tuning budget), over ``runs`` (seed,
    permutation) pairs of :func:`protocol_runs`. Pre-training depends on the seed only, so it runs
    once per distinct seed and is reused across permutations.

    ``unlabelled``: optional extra architectures of the same search space (a :class:`Dataset` or a
    list of graphs, e.g. :func:`fgp_ext.data.spaces.sample_nb101`) added to the pre-training set
    only; they never enter a split. An auxiliary proxy target, when used, covers the labelled
    dataset only (the extras sit out the ranking loss). A given ``surrogate_targets`` must then cover
    the dataset followed by the extras.

    ``encoder_config``: further constructor arguments of the encoder (e.g.
    ``{"reverse_successors": "earliest"}`` for FlowerFormer); ``hidden`` and ``dropout`` come
    from their own arguments.

    ``aux_name``: the name recorded for an array ``aux_target`` in the summary and in
    ``pretrained_dir`` caches (default ``"array"``), e.g. the proxy it was resolved from, so that a
    cache made with ``aux_target="meco"`` is reused by a caller that resolved ``"meco"`` itself. A
    string ``aux_target`` is its own name.

    ``finetune_aux_head``: also fine-tune, from the same pre-training, with the pre-trained
    auxiliary head as the score head instead of a fresh one (method ``"fgp_aux_head"``; needs a
    one-column ``aux_target``). The auxiliary head already ranks by the proxy, so fine-tuning starts
    from the proxy's ranking rather than from a random one.

    ``finetune_lr`` (default ``lr``), ``finetune_weight_decay``, ``finetune_schedule``,
    ``finetune_warmup``, ``finetune_schedule_epochs``: the fine-tuning optimiser of every method
    (see :func:`finetune`; FlowerFormer's own NB201 recipe is lr 8e-4, weight decay 6e-5, cosine
    with 30 warm-up epochs over 600, batch 128, 500 epochs).

    ``pretrained_dir``: a folder caching one pre-trained encoder per seed
    (``<encoder>_seed<seed>.pt``, our checkpoint format, with its heads and pre-training history).
    A cached file is reused only if everything that shaped it matches (encoder and its config,
    pre-training epochs, batch, lr, surrogate settings, auxiliary target, and a fingerprint of the
    surrogate and proxy values); a file from other settings is an error, never silently reused
    or overwritten. Fine-tuning ablations can then share one pre-training. A pre-training in
    progress keeps its state in ``<encoder>_seed<seed>.partial.pt`` after every epoch, so a killed
    run started again with the same arguments continues where it stopped (same numbers).

    Returns a JSON-serialisable summary (``runs``: per-run metrics; ``mean``/``std`` per method;
    timings) plus, under ``"_artifacts"``, the first run's predictions and training curves.
    """
    from fgp_ext.surrogate import flow_surrogate

    space = dataset.space
    target = target or dataset.target_names[0]
    y = dataset.targets(target)
    t_col = time.perf_counter()
    batch = collate(dataset.graphs)
    extra = [] if unlabelled is None else list(getattr(unlabelled, "graphs", unlabelled))
    if extra:
        extra_space = getattr(unlabelled, "space", None)
        if extra_space is not None and list(extra_space.vocab) != list(space.vocab):
            raise ValueError(f"unlabelled architectures are from another search space "
                             f"({getattr(extra_space, 'name', '?')}, not {getattr(space, 'name', '?')})")
        op_ids = [int(i) for g in extra if g.num_nodes for i in (g.ops.min(), g.ops.max())]
        if op_ids and (min(op_ids) < 0 or max(op_ids) >= space.num_ops):
            raise ValueError(f"an unlabelled architecture uses an op id outside the vocabulary of {space.num_ops} ops")
    pre_batch = collate(dataset.graphs + extra) if extra else batch
    collate_s = time.perf_counter() - t_col
    n = batch.num_graphs
    n_train = int(n_train) if n_train else default_n_train(n, getattr(space, "name", None), n_val)
    sp = dict(getattr(space, "surrogate_params", {"k": 8, "std": 0.1, "alpha": 0.5}))
    sp.setdefault("seed", 0)
    sp.update(surrogate or {})
    t_sur = time.perf_counter()
    if surrogate_targets is None:
        surrogate_targets = flow_surrogate(pre_batch, k=int(sp["k"]), std=float(sp["std"]),
                                           alpha=float(sp["alpha"]), seed=int(sp["seed"]), num_ops=space.num_ops)
    sur_s = time.perf_counter() - t_sur
    if isinstance(aux_target, str):
        if aux_name is not None and aux_name != aux_target:
            raise ValueError(f"aux_name {aux_name!r} names another target than aux_target {aux_target!r}")
        aux_name = aux_target
        aux_target = resolve_aux_target(aux_target, dataset)
    elif aux_target is None:
        aux_name = None
    else:
        aux_name = "array" if aux_name is None else str(aux_name)
    if aux_target is not None and extra:
        a = np.asarray(aux_target, dtype=np.float64)
        if a.ndim not in (1, 2):
            raise ValueError(f"aux_target must be [B] or [B, P], got shape {list(a.shape)}")
        aux_target = np.concatenate([a, np.full((len(extra),) + a.shape[1:], np.nan)])
    if finetune_aux_head and (aux_target is None or np.asarray(aux_target).ndim != 1):
        raise ValueError("finetune_aux_head needs a one-column aux_target (the head scores with one output)")
    ft_lr = lr if finetune_lr is None else float(finetune_lr)
    ft_sched_epochs = epochs_finetune if finetune_schedule_epochs is None else int(finetune_schedule_epochs)
    lr_factor(0, finetune_schedule, finetune_warmup, ft_sched_epochs)   # a bad schedule fails now, not after pre-training
    enc_cfg = {**(encoder_config or {}), "hidden": hidden, "dropout": dropout}
    if encoder == "mlp":
        enc_cfg["max_nodes"] = int(pre_batch.node_ptr.diff().max())  # the extras may be larger
    pretrained: dict[int, tuple[dict, PretrainResult]] = {}
    per_run: list[dict] = []
    artifacts: dict[str, Any] = {}
    for r, (seed, perm_seed) in enumerate(protocol_runs(runs)):
        split = split_indices(n, n_train, ratio, perm_seed, n_val)
        row = {"run": r, "seed": seed, "perm_seed": perm_seed, "n_labelled": int(split["train"].size),
               "n_test": int(split["test"].size)}
        methods = _protocol_methods(baseline, finetune_aux_head)
        for method in methods:
            set_seed(seed)
            enc = build_encoder(encoder, space.num_ops, **enc_cfg)
            if method.startswith("fgp"):
                if seed not in pretrained:
                    cache_meta = None
                    if pretrained_dir is not None:
                        cache_meta = _pretrain_cache_meta(encoder, space.num_ops, enc_cfg, seed, epochs_pretrain,
                                                          batch_size_pretrain, lr, sp, standardize, reconstruction,
                                                          aux_name, surrogate_targets, aux_target)
                    cache_path = (None if pretrained_dir is None
                                  else Path(pretrained_dir) / f"{encoder}_seed{seed}.pt")
                    pre = None if cache_path is None else _load_pretrained(cache_path, enc, cache_meta)
                    if pre is None:
                        log(f"[run {r}] pre-training {encoder} (seed {seed}, {epochs_pretrain} epochs)")
                        pre = pretrain(enc, pre_batch, surrogate_targets, epochs=epochs_pretrain,
                                       batch_size=batch_size_pretrain, lr=lr, aux_target=aux_target,
                                       standardize=standardize, seed=seed, progress=progress,
                                       reconstruction=reconstruction,
                                       resume_path=None if cache_path is None else
                                       cache_path.with_name(cache_path.stem + ".partial.pt"),
                                       resume_meta=cache_meta)
                        if cache_path is not None:
                            _save_pretrained(cache_path, pre, cache_meta)
                    else:
                        log(f"[run {r}] pre-trained {encoder} (seed {seed}) loaded from {cache_path}")
                    pretrained[seed] = (copy.deepcopy(enc.state_dict()), pre)
                enc.load_state_dict(pretrained[seed][0])
                if method == "fgp_aux_head":
                    enc = Predictor(enc, copy.deepcopy(pretrained[seed][1].aux_head))
            set_seed(seed)
            ft = finetune(enc, batch, y, split["train"], split["val"], epochs=epochs_finetune,
                          batch_size=batch_size_finetune, lr=ft_lr, weight_decay=finetune_weight_decay,
                          margin=margin, seed=seed, progress=progress, lr_schedule=finetune_schedule,
                          warmup_epochs=finetune_warmup, schedule_epochs=ft_sched_epochs)
            t_eval = time.perf_counter()
            pred = predict(ft.model, batch, split["test"])
            m = evaluate_ranking(pred, y[split["test"]])
            m.update(best_epoch=ft.best_epoch, best_val_tau=ft.best_val_tau,
                     finetune_s_per_epoch=ft.time_per_epoch, eval_s=time.perf_counter() - t_eval)
            if method.startswith("fgp"):
                m["pretrain_s_per_epoch"] = pretrained[seed][1].time_per_epoch
            row[method] = m
            log(f"[run {r}] seed {seed} perm {perm_seed} {method:>10}: tau {m['kendall_tau']:.4f} "
                f"P@1% {m['p@1%']:.3f} (best epoch {ft.best_epoch}, val tau {ft.best_val_tau:.3f})")
            if r == 0:
                artifacts[method] = {"pred": pred, "true": y[split["test"]], "finetune_history": ft.history}
                if method == "fgp":
                    artifacts["pretrain_history"] = pretrained[seed][1].history
        per_run.append(row)
    summary: dict[str, Any] = {
        "dataset": getattr(space, "name", "?"), "num_archs": n, "target": target, "encoder": encoder,
        "encoder_config": enc_cfg, "ratio": ratio, "n_train": n_train, "n_val": n_val, "runs": per_run,
        "epochs_pretrain": epochs_pretrain, "epochs_finetune": epochs_finetune,
        "batch_size_pretrain": batch_size_pretrain, "batch_size_finetune": batch_size_finetune, "lr": lr,
        "margin": margin, "surrogate": sp, "standardize_surrogate": standardize, "aux_target": aux_name,
        "reconstruction": reconstruction, "num_unlabelled": len(extra), "finetune_aux_head": bool(finetune_aux_head),
        "finetune_lr": ft_lr, "finetune_weight_decay": float(finetune_weight_decay),
        "finetune_schedule": finetune_schedule, "finetune_warmup": int(finetune_warmup),
        "finetune_schedule_epochs": ft_sched_epochs,
        "pretrained_dir": None if pretrained_dir is None else str(pretrained_dir),
        "threads": torch.get_num_threads(), "collate_s": collate_s, "surrogate_s": sur_s,
    }
    for method in _protocol_methods(baseline, finetune_aux_head):
        keys = ["kendall_tau", "spearman", "p@1%", "p@5%", "p@10%", "p@50%", "p@100%"]
        vals = {k: [row[method][k] for row in per_run] for k in keys}
        summary.setdefault("mean", {})[method] = {k: float(np.mean(v)) for k, v in vals.items()}
        summary.setdefault("std", {})[method] = {k: float(np.std(v)) for k, v in vals.items()}
    summary["pretrain_s_per_epoch"] = float(np.mean([p[1].time_per_epoch for p in pretrained.values()]))
    summary["finetune_s_per_epoch"] = float(np.mean([row["fgp"]["finetune_s_per_epoch"] for row in per_run]))
    summary["_artifacts"] = artifacts
    return summary


def _fingerprint(*arrays) -> str:
    """sha256 over the shapes and float64 bytes of ``arrays`` (None counts as absent)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _pretrain_cache_meta(encoder, num_ops, enc_cfg, seed, epochs, batch_size, lr, surrogate, standardize,
                         reconstruction, aux_name, surrogate_targets, aux_target) -> dict:
    """Everything a cached pre-training depends on, JSON-like, for :func:`_load_pretrained` to compare."""
    return {"kind": "fgp_pretraining", "encoder": encoder, "num_ops": int(num_ops),
            "encoder_config": {k: v for k, v in sorted(enc_cfg.items())}, "seed": int(seed),
            "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
            "surrogate": {k: v for k, v in sorted(surrogate.items())}, "standardize": bool(standardize),
            "reconstruction": bool(reconstruction), "aux_target": aux_name,
            "data_fingerprint": _fingerprint(surrogate_targets, aux_target)}


def _save_pretrained(path: Path, pre: PretrainResult, meta: dict) -> None:
    full = {**meta, "history": pre.history,
            "target_mean": None if pre.target_mean is None else pre.target_mean.tolist(),
            "target_std": None if pre.target_std is None else pre.target_std.tolist()}
    save_checkpoint(path, pre.encoder, {"flow": pre.flow_head, "aux": pre.aux_head}, full)


def _load_pretrained(path: Path, encoder: Encoder, meta: dict) -> PretrainResult | None:
    """The cached pre-training at ``path`` loaded into ``encoder``, or None if there is no file.
    A file made with other settings raises ``ValueError`` naming what differs."""
    if not path.is_file():
        return None
    ck = load_checkpoint(path)
    diff = sorted(k for k in meta if ck.meta.get(k) != meta[k])
    if diff:
        raise ValueError(f"{str(path)!r} holds a pre-training made with other settings ({', '.join(diff)} "
                         f"differ); use another pretrained_dir or delete the file")
    if ck.encoder.config != encoder.config:
        # same arguments, other model: e.g. a constructor default changed since the file was made
        theirs, ours = ck.encoder.config, encoder.config
        keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise ValueError(f"{str(path)!r} holds a {ck.encoder.name} built with other settings ({', '.join(keys)} "
                         f"differ); use another pretrained_dir or delete the file")
    encoder.load_state_dict(ck.encoder.state_dict())
    tensor = (lambda v: None if v is None else torch.tensor(v, dtype=torch.float32))
    return PretrainResult(encoder, ck.heads["flow"], ck.heads.get("aux"), list(ck.meta.get("history", [])),
                          tensor(ck.meta.get("target_mean")), tensor(ck.meta.get("target_std")))


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A file that is not an fgp_ext checkpoint (or an incompatible version of one)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the encoder, heads by name (``"flow"``, ``"aux"``, ``"score"``) and
    free-form metadata."""

    encoder: Encoder
    heads: dict[str, MLPHead]
    meta: dict

    def predictor(self) -> Predictor:
        """The encoder with its ``"score"`` head (a fresh one if the checkpoint has none)."""
        return Predictor(self.encoder, self.heads.get("score"))


def _atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a run
    killed while writing never leaves a half-written file where a checkpoint or cache is read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_checkpoint(path, encoder: Encoder, heads: dict[str, MLPHead] | None = None, meta: dict | None = None) -> Path:
    """Write ``encoder`` + ``heads`` + ``meta`` (JSON-like) to ``path`` with our format marker
    (atomically: written beside it, then renamed)."""
    path = Path(path)
    blob = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "encoder": {"name": encoder.name, "config": encoder.config, "state": encoder.state_dict()},
        "heads": {k: {"config": h.config, "state": h.state_dict()} for k, h in (heads or {}).items() if h is not None},
        "meta": meta or {},
    }
    _atomic_torch_save(blob, path)
    return path


def load_checkpoint(path, map_location="cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`. Anything else (another program's
    ``torch.save`` file, a non-torch file, a future format version) raises :class:`CheckpointError`
    with a clear message. Loading uses ``weights_only=True`` (no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {str(path)!r}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(f"{str(path)!r} is not an fgp_ext checkpoint (could not be read as one: "
                              f"{type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an fgp_ext checkpoint (no {CHECKPOINT_FORMAT!r} "
                              f"format marker); write checkpoints with fgp_ext.train.save_checkpoint")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {blob.get('version')!r}; this fgp_ext "
                              f"reads version {CHECKPOINT_VERSION}")
    e = blob["encoder"]
    cfg = dict(e["config"])
    enc = build_encoder(e["name"], **cfg)
    enc.load_state_dict(e["state"])
    enc.eval()
    heads = {}
    for name, h in blob.get("heads", {}).items():
        head = MLPHead(**h["config"])
        head.load_state_dict(h["state"])
        head.eval()
        heads[name] = head
    return Checkpoint(enc, heads, dict(blob.get("meta", {})))
