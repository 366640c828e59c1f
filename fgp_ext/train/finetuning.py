"""Ranking fine-tuning with learning-rate schedules, and prediction / evaluation of a model."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fgp_ext.encoders import Encoder
from fgp_ext.metrics import evaluate_ranking, kendall_tau
from fgp_ext.train.common import _progress, _tqdm, as_batch, check_finite_epoch, check_finite_outputs
from fgp_ext.train.config import check_ema_decay, check_finetune_loss, check_positive_weight
from fgp_ext.train.heads import MLPHead, Predictor
from fgp_ext.train.losses import finetune_loss

__all__ = ["predict", "evaluate", "LR_SCHEDULES", "lr_factor", "FinetuneResult", "finetune"]


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
    ``targets`` is the full ``[B]`` label array of ``data``. Architectures whose target is NaN
    (unlabelled) are left out; ``"n"`` counts the ones measured."""
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    idx = np.arange(y.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    idx = idx[~np.isnan(y[idx])]
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


def check_select_after(select_after, epochs, name: str = "select_after", epochs_name: str = "epochs") -> int:
    """``select_after`` as an int, or ``ValueError`` unless it leaves an epoch to keep: it must lie in
    ``[0, epochs)`` (any value >= 0 with 0 epochs, which keep nothing). One rule for
    :func:`finetune` and for the protocol, which checks it before pre-training."""
    sel, n = int(select_after), int(epochs)
    if sel < 0 or (n > 0 and sel >= n):
        raise ValueError(f"{name} must be in [0, {epochs_name}) = [0, {n}), got {select_after}")
    return sel


def _pseudo_labels(pseudo_targets, pseudo_idx, weight, num_graphs: int):
    """``(indices, [B] targets, weight)`` for :func:`finetune`'s self-training, or None without
    ``pseudo_targets``; ``ValueError`` for anything that would train on garbage."""
    if pseudo_targets is None and pseudo_idx is None:
        return None
    if pseudo_targets is None or pseudo_idx is None:
        raise ValueError("self-training needs both pseudo_targets and pseudo_idx")
    w = check_positive_weight(weight, "pseudo_weight")
    t = torch.as_tensor(np.asarray(pseudo_targets, dtype=np.float64)).reshape(-1)
    if t.numel() != num_graphs:
        raise ValueError(f"pseudo_targets has {t.numel()} values for {num_graphs} graphs")
    idx = torch.as_tensor(np.asarray(pseudo_idx), dtype=torch.int64).reshape(-1)
    if idx.numel() < 2:
        raise ValueError(f"self-training needs at least 2 pseudo-labelled architectures, got {idx.numel()}")
    if int(idx.min()) < 0 or int(idx.max()) >= num_graphs:
        raise ValueError(f"pseudo_idx has an index outside [0, {num_graphs})")
    if not torch.isfinite(t[idx]).all():
        raise ValueError("pseudo_targets are not all finite on pseudo_idx")
    return idx, t, w


class _WeightAverage:
    """An exponential moving average of a model's weights, held in ``module`` (a deep copy of the
    model in eval mode): parameters are averaged, buffers (batch-norm statistics) copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        self.decay = float(decay)
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        for avg, cur in zip(self.module.parameters(), model.parameters()):
            avg.lerp_(cur, 1.0 - d)
        for avg, cur in zip(self.module.buffers(), model.buffers()):
            avg.copy_(cur)


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
             warmup_epochs: int = 0, schedule_epochs: int | None = None,
             select_after: int = 0, pseudo_targets=None, pseudo_idx=None,
             pseudo_weight: float = 1.0, ema_decay: float = 0.0, loss: str = "hinge") -> FinetuneResult:
    """Fine-tune ``encoder`` (+ a fresh score head, or a :class:`Predictor` as given) with the
    ranking loss ``loss`` on the labelled graphs ``train_idx``: by default FGP's pairwise hinge
    :func:`~fgp_ext.train.losses.ranking_loss` with ``margin``; ``"logistic"``, ``"listmle"`` or
    ``"hinge+mse"`` (:func:`~fgp_ext.train.losses.finetune_loss`) instead.

    Each epoch shuffles ``train_idx`` (generator seeded with ``seed``) into batches of
    ``batch_size``; gradients are clipped to norm ``clip``; AdamW. After every epoch the Kendall tau
    on ``val_idx`` is measured and the best weights (first best on ties) are kept and restored at
    the end. Without ``val_idx`` the last epoch is kept.

    ``lr_schedule`` / ``warmup_epochs`` / ``schedule_epochs``: the learning rate of epoch ``e`` is
    ``lr * lr_factor(e, lr_schedule, warmup_epochs, schedule_epochs)`` (:func:`lr_factor`;
    ``schedule_epochs`` defaults to ``epochs``); each history row records it as ``"lr"``.

    ``select_after``: epochs ``1..select_after`` are trained and validated but never kept, so the
    kept checkpoint comes from a later epoch (0, the default: any epoch). With a validation set of
    a few dozen cells the first epochs, while the score head is still near its initialisation and
    a warm-up has barely moved the encoder, can win the validation Kendall tau by chance and then
    rank the test set far worse than a later checkpoint; ``select_after = warmup_epochs`` rules
    them out. Must be below ``epochs``.

    ``pseudo_targets`` / ``pseudo_idx`` / ``pseudo_weight``: self-training. ``pseudo_targets`` is a
    ``[B]`` array of scores (e.g. a fine-tuned ensemble's) defined on the graphs ``pseudo_idx``;
    every step then also draws ``batch_size`` of those graphs (without replacement, from a generator
    of its own, so the labelled batches are the same as without them) and adds ``pseudo_weight``
    times their loss against the pseudo scores. The pairwise and listwise losses read only the
    order of the scores, so the pseudo scores need not share the labels' scale (``"hinge+mse"``
    standardises them per batch). Both batches go
    through the model in one forward pass (batch-norm statistics then cover both).

    ``ema_decay``: 0 (the default) validates and keeps the trained weights. A value in (0, 1)
    keeps an exponential moving average of the weights instead, updated after every optimiser
    step with decay ``min(ema_decay, (1 + t) / (10 + t))`` at step ``t`` (the short ramp keeps the
    first steps from being pinned to the starting weights); buffers (batch-norm statistics) are
    copied, not averaged. Validation, checkpoint selection and the returned model then use the
    averaged weights, as NAR-Former's training does: an average over the last ``1 / (1 -
    ema_decay)`` steps is smoother than any single step, so the validation curve the checkpoint is
    picked from is less noisy. Training itself is unchanged.
    """
    select_after = check_select_after(select_after, epochs)
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
    pseudo = _pseudo_labels(pseudo_targets, pseudo_idx, pseudo_weight, batch.num_graphs)
    ema_decay = check_ema_decay(ema_decay, "ema_decay")
    loss_name = check_finetune_loss(loss, "loss")
    torch.manual_seed(seed)
    model = encoder if isinstance(encoder, Predictor) else Predictor(encoder, MLPHead(encoder.out_dim, head_hidden, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    average = _WeightAverage(model, ema_decay) if ema_decay else None
    scored = model if average is None else average.module   # what is validated, kept and returned
    gen = torch.Generator().manual_seed(int(seed))
    pseudo_gen = torch.Generator().manual_seed(int(seed) + 1_000_003)
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
            pick = None
            if pseudo is not None:   # the pseudo-labelled cells ride in the same forward pass
                p_idx, p_y, p_weight = pseudo
                pick = p_idx[torch.randperm(p_idx.numel(), generator=pseudo_gen)[: int(batch_size)]]
            out = model(batch.select(ids if pick is None else torch.cat([ids, pick]))).reshape(-1)
            scores = out[: ids.numel()]
            loss = finetune_loss(loss_name, scores, y[ids].to(scores.dtype), margin=margin, max_pairs=max_pairs,
                                 generator=gen)
            if pick is not None:
                p_scores = out[ids.numel():]
                loss = loss + p_weight * finetune_loss(loss_name, p_scores, p_y[pick].to(p_scores.dtype),
                                                       margin=margin, max_pairs=max_pairs, generator=pseudo_gen)
            extra = model.encoder.extra_loss()   # an encoder's own training term (NAR-Former's consistency loss)
            if extra is not None:
                loss = loss + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if average is not None:
                average.update(model)
            tot += float(loss.detach())
            steps += 1
        train_s = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": tot / max(steps, 1), "lr": epoch_lr, "seconds": train_s}
        check_finite_epoch("fine-tuning", epoch + 1, rec["loss"], (model,), epoch_lr)
        if y_val is not None:
            val_pred = predict(scored, batch, val_idx)
            check_finite_outputs("fine-tuning", epoch + 1, val_pred, epoch_lr, "validation predictions")
            vt = kendall_tau(val_pred, y_val)
            vt = -math.inf if math.isnan(vt) else vt
            rec["val_tau"] = vt
            if vt > best and epoch + 1 > select_after:
                best, result.best_epoch = vt, epoch + 1
                best_state = copy.deepcopy(scored.state_dict())
            if show:
                bar.set_postfix(val_tau=f"{vt:.3f}", best=f"{best:.3f}")
        result.history.append(rec)
    if best_state is not None:
        model.load_state_dict(best_state)
        result.best_val_tau = best
    else:    # no validation: the last epoch (with ema_decay, the weight average at the last epoch)
        if scored is not model:
            model.load_state_dict(scored.state_dict())
        result.best_epoch = int(epochs)
        if int(epochs) > 0:
            check_finite_outputs("fine-tuning", int(epochs), predict(model, batch, tr), lr, "training-set predictions")
    model.eval()
    return result
