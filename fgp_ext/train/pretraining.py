"""FGP pre-training (surrogate reconstruction + optional auxiliary ranking loss), resumable."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fgp_ext.encoders import Encoder
from fgp_ext import _io
from fgp_ext.train.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError
from fgp_ext.train.common import _progress, _tqdm, as_batch, check_finite_epoch, check_finite_outputs
from fgp_ext.train.heads import MLPHead
from fgp_ext.train.losses import ranking_loss

__all__ = ["PretrainResult", "pretrain"]


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
             on_epoch=None, keep_resume: bool = False) -> PretrainResult:
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
            interrupted. The file is removed when the pre-training completes, unless
            ``keep_resume``: then the caller removes it once the result is stored elsewhere (so
            that a kill between the two loses nothing; :func:`run_protocol`'s cache does this).
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
            extra = encoder.extra_loss()   # an encoder's own training term (NAR-Former's consistency loss)
            if extra is not None:
                loss = loss + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            rec_sum += float(rec.detach())
            steps += 1
        rec_e = {"epoch": epoch + 1, "loss": tot / max(steps, 1), "rec": rec_sum / max(steps, 1),
                 "aux": aux_sum / max(steps, 1) if aux_head is not None else None,
                 "seconds": time.perf_counter() - t0}
        check_finite_epoch("pre-training", epoch + 1, rec_e["loss"], modules.values(), lr)
        result.history.append(rec_e)
        if resume_path is not None and epoch + 1 < int(epochs):
            _save_pretrain_state(resume_path, meta, epoch + 1, modules, opt, gen, result.history)
        if show:
            bar.set_postfix(rec=f"{rec_e['rec']:.4f}")
        if on_epoch is not None:
            on_epoch(rec_e)
    encoder.eval(), flow_head.eval()
    if result.history:
        # the last step can leave finite weights whose next forward pass overflows: one look at the
        # embeddings of (up to) 256 architectures before the model is handed on or saved
        with torch.no_grad():
            z = encoder(batch.select(idx_all[:256]))
        check_finite_outputs("pre-training", int(epochs), z, lr, "embedding values")
    if resume_path is not None and not keep_resume:
        resume_path.unlink(missing_ok=True)
    return result


def _save_pretrain_state(path: Path, meta: dict, epochs_done: int, modules: dict, opt, gen, history) -> None:
    state = {"format": CHECKPOINT_FORMAT + ".pretrain_state", "version": CHECKPOINT_VERSION, "meta": meta,
             "epochs_done": int(epochs_done), "history": history, "optimizer": opt.state_dict(),
             "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
             "modules": {k: m.state_dict() for k, m in modules.items() if m is not None}}
    _io.torch_save(state, path)


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
