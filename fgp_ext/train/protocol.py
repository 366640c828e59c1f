"""The paper's split protocol (FGP.md §4), :func:`run_protocol` and its pre-training cache."""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgp_ext._io import FileLock
from fgp_ext.encoders import Encoder, build_encoder
from fgp_ext.graph import collate
from fgp_ext.metrics import evaluate_ranking, kendall_tau
from fgp_ext.train.checkpoints import load_checkpoint, save_checkpoint
from fgp_ext.train.common import set_seed
from fgp_ext.train.config import (PROTOCOL_SEEDS, ProtocolConfig, cross_fit_folds, ensemble_seeds, protocol_runs,
                                  resolve_surrogate, seed_runs)
from fgp_ext.train.finetuning import check_select_after, finetune, lr_factor, predict
from fgp_ext.train.heads import Predictor
from fgp_ext.train.losses import resolve_aux_target
from fgp_ext.train.predictions import run_order
from fgp_ext.train.pretraining import PretrainResult, pretrain

__all__ = ["PROTOCOL_SEEDS", "PAPER_N_TRAIN", "permutation", "default_n_train", "split_indices", "protocol_runs",
           "seed_runs", "ProtocolConfig", "run_protocol", "labelled_indices", "split_labelled", "combine_scores"]

#: The ranking metrics a protocol run reports per method (:func:`~fgp_ext.metrics.evaluate_ranking`).
_RANK_KEYS = ("kendall_tau", "spearman", "p@1%", "p@5%", "p@10%", "p@50%", "p@100%")

#: Training-pool sizes of the paper by space name.
PAPER_N_TRAIN = {"nb101": 7290, "nb201": 7813, "nb301": 5611, "darts": 5611}


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


def labelled_indices(targets, target: str = "target") -> np.ndarray:
    """Indices of the architectures that have a label: NaN marks an unlabelled one (it may still be
    pre-trained on, but never enters a split or a metric). ``ValueError`` when none is labelled or a
    label is infinite."""
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if np.isinf(y).any():
        raise ValueError(f"target {target!r} holds infinite values (NaN marks an unlabelled architecture)")
    labelled = np.flatnonzero(~np.isnan(y))
    if labelled.size == 0:
        raise ValueError(f"no labelled architectures for target {target!r}" + (
            f" (all {y.size} values are missing)" if y.size else ""))
    return labelled


def split_labelled(targets, n_train: int | None, ratio: float, perm_seed: int | None, n_val: int = 40,
                   space_name: str | None = None, target: str = "target") -> tuple[dict, int]:
    """:func:`split_indices` over the labelled architectures only (:func:`labelled_indices`), as
    indices into the whole dataset; ``n_train`` None means :func:`default_n_train` of the labelled
    count. Returns the split and the pool size used. With every architecture labelled this is
    exactly ``split_indices(len(targets), ...)``."""
    labelled = labelled_indices(targets, target)
    n = labelled.size
    n_train = int(n_train) if n_train else default_n_train(n, space_name, n_val)
    try:
        split = split_indices(n, n_train, ratio, perm_seed, n_val)
    except ValueError as e:
        total = np.asarray(targets).size
        raise ValueError(f"{e} ({n} of the {total} architectures are labelled with {target!r})" if n < total
                         else str(e)) from None
    return {k: labelled[v] for k, v in split.items()}, n_train


def combine_scores(scores) -> np.ndarray:
    """One score from several models' scores of the same architectures: the mean of each model's
    scores standardised over those architectures (zero mean, unit std). Ranking heads trained with
    a hinge loss have arbitrary offsets and scales, so raw scores are not comparable; standardising
    keeps how far apart each model places two architectures, which a plain rank average would not."""
    members = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    if not members:
        raise ValueError("no member's scores to combine")
    sizes = sorted({m.size for m in members})
    if len(sizes) > 1:
        raise ValueError(f"the members scored different numbers of architectures: {sizes}")
    arr = np.stack(members)
    if not np.isfinite(arr).all():
        raise ValueError("a member's scores are not all finite")
    std = arr.std(axis=1, keepdims=True)
    return ((arr - arr.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)).mean(axis=0)


#: The methods that ``ProtocolConfig.self_train`` adds: the students alone, and teacher + students.
SELF_TRAIN_METHODS = ("fgp_self_train", "fgp_teacher_students")


def self_train_pool(n: int, split: dict, size: int, perm_seed: int | None) -> np.ndarray:
    """The ``size`` architectures (sorted indices into the ``n`` of the dataset) whose teacher
    scores a run's self-training students learn: a random sample (seeded by ``perm_seed``) of all
    architectures outside the split's training and validation sets."""
    outside = np.setdiff1d(np.arange(int(n)), np.concatenate([split["train"], split["val"]]))
    if int(size) > outside.size:
        raise ValueError(f"self_train asks for {size} architectures outside the labelled split, but only "
                         f"{outside.size} exist")
    rng = np.random.default_rng(None if perm_seed is None else [int(perm_seed), 1])
    return np.sort(rng.choice(outside, size=int(size), replace=False))


def _self_train(fit, batch, member_preds: dict, pool_preds: list, pool: np.ndarray, keys: list[tuple],
                split: dict, y: np.ndarray, weight: float, log) -> tuple[dict, list[np.ndarray]]:
    """A run's self-training (``ProtocolConfig.self_train``): the FGP models' combined score of
    ``pool`` (the teacher) becomes the pseudo-target of one student per pre-training (``keys``:
    (member seed, auxiliary target index)) and FGP head, fine-tuned with ``fit`` on all of the
    run's labels; returns the run's rows for :data:`SELF_TRAIN_METHODS` and the students' test
    scores."""
    heads = [m for m in member_preds if m.startswith("fgp")]
    pseudo = np.full(batch.num_graphs, np.nan)
    pseudo[pool] = combine_scores(pool_preds)
    labelled = np.concatenate([split["train"], split["val"]])
    y_test = y[split["test"]]
    students = []
    for head in heads:
        for key in keys:
            ft = fit(head, key, labelled, None, pseudo_targets=pseudo, pseudo_idx=pool, pseudo_weight=weight)
            students.append(predict(ft.model, batch, split["test"]))
            log(f"self-training student {len(students) - 1} ({head}, seed {key[0]}"
                + (f", auxiliary target index {key[1]}" if key[1] else "") + "): tau "
                f"{kendall_tau(students[-1], y_test):.4f}")
    teacher = [p for h in heads for p in member_preds[h]]
    rows = {"fgp_self_train": evaluate_ranking(combine_scores(students), y_test),
            "fgp_teacher_students": evaluate_ranking(combine_scores(teacher + students), y_test)}
    rows["fgp_self_train"].update({f"single_{k}": v for k, v in evaluate_ranking(students[0], y_test).items()
                                   if k in _RANK_KEYS})
    rows["fgp_self_train"]["member_taus"] = [kendall_tau(p, y_test) for p in students]
    for name, m in rows.items():
        log(f"{name}: tau {m['kendall_tau']:.4f} P@1% {m['p@1%']:.3f}")
    return rows, students


def _protocol_methods(baseline: bool, finetune_aux_head: bool) -> list[str]:
    return ["fgp"] + (["fgp_aux_head"] if finetune_aux_head else []) + (["supervised"] if baseline else [])


def _legacy_config(encoder: str | None, target: str | None, settings: dict) -> tuple[ProtocolConfig, Any]:
    """The :class:`ProtocolConfig` (and the auxiliary values, if given as an array) of the older call
    ``run_protocol(dataset, encoder, target, runs=3, aux_target=..., aux_name=..., **settings)``."""
    aux = settings.pop("aux_target", None)
    aux_name = settings.pop("aux_name", None)
    values = None
    if isinstance(aux, str):
        if aux_name is not None and aux_name != aux:
            raise ValueError(f"aux_name {aux_name!r} names another target than aux_target {aux!r}")
        name = aux
    elif aux is None:
        name = None
    else:
        name, values = ("array" if aux_name is None else str(aux_name)), aux
    if settings.get("encoder_config") is None:
        settings.pop("encoder_config", None)
    return ProtocolConfig(encoder=encoder or "gatedgcn", target=target, aux_target=name, **settings), values


def _extra_graphs(unlabelled, space) -> list:
    """The graphs of ``unlabelled`` (a Dataset, a list of graphs or None), checked against ``space``."""
    extra = [] if unlabelled is None else list(getattr(unlabelled, "graphs", unlabelled))
    if extra:
        extra_space = getattr(unlabelled, "space", None)
        if extra_space is not None and list(extra_space.vocab) != list(space.vocab):
            raise ValueError(f"unlabelled architectures are from another search space "
                             f"({getattr(extra_space, 'name', '?')}, not {getattr(space, 'name', '?')})")
        op_ids = [int(i) for g in extra if g.num_nodes for i in (g.ops.min(), g.ops.max())]
        if op_ids and (min(op_ids) < 0 or max(op_ids) >= space.num_ops):
            raise ValueError(f"an unlabelled architecture uses an op id outside the vocabulary of {space.num_ops} ops")
    return extra


def run_protocol(dataset, config: ProtocolConfig | str | None = None, target: str | None = None, *,
                 aux_values=None, surrogate_targets=None, unlabelled=None, combine_with=None, log=print,
                 **settings) -> dict:
    """The whole protocol on one dataset, as :class:`ProtocolConfig` ``config`` says: FGP
    (pre-train on all architectures, then fine-tune) vs a supervised-only baseline (same encoder,
    same fine-tuning budget), over the (seed, permutation) pairs ``config.runs``. Pre-training
    depends on the seed only, so it runs once per distinct seed and is reused across permutations.

    The older form ``run_protocol(dataset, "gatedgcn", "acc", runs=3, aux_target=..., ...)`` (the
    encoder, the target, and the settings of :class:`ProtocolConfig` as keywords, ``runs`` as a
    count, ``aux_target`` a name or an array named by ``aux_name``) is still accepted.

    Inputs beside the settings:

    ``aux_values``: the ``[B]`` or ``[B, P]`` values of ``config.aux_target`` if the caller has
    them already (e.g. resolved once to check them); by default resolved here with
    :func:`resolve_aux_target`. Without ``config.aux_target`` they are recorded as ``"array"``.

    ``unlabelled``: optional extra architectures of the same search space (a :class:`Dataset` or a
    list of graphs, e.g. :func:`fgp_ext.data.spaces.sample_nb101`) added to the pre-training set
    only; they never enter a split. An auxiliary proxy target, when used, covers the labelled
    dataset only (the extras sit out the ranking loss). A given ``surrogate_targets`` must then cover
    the dataset followed by the extras.

    Architectures whose target is NaN are unlabelled: pre-training uses them, the splits and the
    metrics leave them out (the protocol runs on the labelled ones as if they were the dataset).

    ``combine_with``: models recorded by another job on the same splits, ``(seed, perm_seed) ->
    {"test_index", "true", "scores": [M, T]}`` for every run of ``config.runs`` (as
    :func:`~fgp_ext.train.predictions.recorded_models` returns them, e.g. another encoder's models).
    Method ``"fgp_combined"`` scores each run with this job's FGP models (both heads' with
    ``finetune_aux_head``) and the recorded ones together, by :func:`combine_scores`. A missing
    run, another test set or other labels raise ``ValueError`` before any training.

    ``log``: where progress lines go (default ``print``).

    ``config.finetune_aux_head``: also fine-tune, from the same pre-training, with the pre-trained
    auxiliary head as the score head instead of a fresh one (method ``"fgp_aux_head"``). The
    auxiliary head already ranks by the proxy, so fine-tuning starts from the proxy's ranking rather
    than from a random one. FlowerFormer's own NB201 fine-tuning recipe is lr 8e-4, weight decay
    6e-5, cosine with 30 warm-up epochs over 600, batch 128, 500 epochs.

    ``config.folds``: fine-tune every member ``folds`` times, on the cross-fitting splits of
    :func:`~fgp_ext.train.config.cross_fit_folds` (fold 0 is the run's own split), and score with
    all ``ensemble * folds`` models; the summary keeps member 0's metrics as ``single_*``.

    ``config.pretrained_dir``: a folder caching one pre-trained encoder per seed and settings
    (``<encoder>_seed<seed>-<key>.pt``, our checkpoint format, with its heads and pre-training
    history). ``key`` is a hash of everything that shaped it (encoder and its config, pre-training
    epochs, batch, lr, surrogate settings, auxiliary target, and a fingerprint of the surrogate and
    proxy values), so runs with other settings use other files and never overwrite each other, and
    a file is reused only when all of that matches. Fine-tuning ablations can then share one
    pre-training. Runs sharing the folder take turns on one entry (a file lock, ``<entry>.lock``):
    the second waits, saying which process holds it, then loads the first one's result. A
    pre-training in progress keeps its state in ``<encoder>_seed<seed>-<key>.partial.pt`` after
    every epoch until the entry is written, so a killed run started again with the same arguments
    continues where it stopped (same numbers). Every file is written atomically
    (:mod:`fgp_ext._io`).

    Returns a JSON-serialisable summary (``runs``: per-run metrics; ``mean``/``std`` per method;
    timings) plus, under ``"_artifacts"``, the first run's predictions and training curves, and
    (``summary["_artifacts"]["model_scores"]``) every run's test scores of every model, as
    :func:`fgp_ext.train.predictions.save_predictions` takes them.
    """
    if isinstance(config, ProtocolConfig):
        if target is not None or settings:
            raise TypeError("run_protocol(dataset, config): put the settings in the ProtocolConfig "
                            f"(config.replace(...)), not beside it: {sorted(settings) or ['target']}")
    else:
        if aux_values is not None:
            raise TypeError("aux_values goes with a ProtocolConfig; the keyword form takes aux_target")
        config, aux_values = _legacy_config(config, target, settings)
    c = config
    space = dataset.space
    target = c.target or dataset.target_names[0]
    y = dataset.targets(target)
    t_col = time.perf_counter()
    batch = collate(dataset.graphs)
    extra = _extra_graphs(unlabelled, space)
    pre_batch = collate(dataset.graphs + extra) if extra else batch
    collate_s = time.perf_counter() - t_col
    n = batch.num_graphs
    labelled = labelled_indices(y, target)
    n_train = int(c.n_train) if c.n_train else default_n_train(labelled.size, getattr(space, "name", None), c.n_val)
    sp = resolve_surrogate(space, c.surrogate)
    t_sur = time.perf_counter()
    if surrogate_targets is None:
        surrogate_targets = sp.compute(pre_batch, space.num_ops)
    sur_s = time.perf_counter() - t_sur
    aux_name, aux_target = c.aux_target, aux_values
    if aux_target is None and aux_name is not None:
        aux_target = resolve_aux_target(aux_name, dataset)
    elif aux_target is not None and aux_name is None:
        aux_name = "array"

    def pad_extra(values):
        """The extras sit out the ranking loss: NaN rows after the dataset's."""
        if values is None or not extra:
            return values
        a = np.asarray(values, dtype=np.float64)
        if a.ndim not in (1, 2):
            raise ValueError(f"aux_target must be [B] or [B, P], got shape {list(a.shape)}")
        return np.concatenate([a, np.full((len(extra),) + a.shape[1:], np.nan)])

    # (name, values) of every pre-training target: aux_target first, then ensemble_aux_targets,
    # all resolved now so a bad name fails before any training
    aux_targets = [(aux_name, pad_extra(aux_target))] + [
        (name, pad_extra(resolve_aux_target(name, dataset))) for name in c.ensemble_aux_targets]
    if c.finetune_aux_head and any(v is None or np.asarray(v).ndim != 1 for _, v in aux_targets):
        raise ValueError("finetune_aux_head needs a one-column aux_target (and one-column ensemble_aux_targets): "
                         "the head scores with one output")
    ft_lr = c.lr if c.finetune_lr is None else float(c.finetune_lr)
    ft_sched_epochs = c.epochs_finetune if c.finetune_schedule_epochs is None else int(c.finetune_schedule_epochs)
    lr_factor(0, c.finetune_schedule, c.finetune_warmup, ft_sched_epochs)   # a bad schedule fails now, not after pre-training
    check_select_after(c.finetune_select_after, c.epochs_finetune, "finetune_select_after", "epochs_finetune")
    enc_cfg = {**c.encoder_config, "hidden": c.hidden, "dropout": c.dropout}
    if c.encoder == "mlp":
        enc_cfg["max_nodes"] = int(pre_batch.node_ptr.diff().max())  # the extras may be larger
    methods = _protocol_methods(c.baseline, c.finetune_aux_head)
    if combine_with is not None:
        _check_recorded_runs(combine_with, c, y, n_train, target)
    pretrained: dict[tuple[int, int], tuple[dict, PretrainResult]] = {}
    per_run: list[dict] = []
    artifacts: dict[str, Any] = {}
    for r, (seed, perm_seed) in enumerate(c.runs):
        split, _ = split_labelled(y, n_train, c.ratio, perm_seed, c.n_val, target=target)
        row = {"run": r, "seed": seed, "perm_seed": perm_seed, "n_labelled": int(split["train"].size),
               "n_test": int(split["test"].size)}
        # before pre-training, so a split too small for the folds fails in seconds, not after it;
        # member j's folds: partition j with reshuffle_folds, else partition 0 for every member
        folds = cross_fit_folds(split["train"], split["val"], c.folds, perm_seed)
        member_folds = [cross_fit_folds(split["train"], split["val"], c.folds, perm_seed, partition=j)
                        if c.reshuffle_folds and j > 0 else folds for j in range(c.ensemble)]
        pool = self_train_pool(n, split, c.self_train, perm_seed) if c.self_train else None
        members = ensemble_seeds(seed, c.ensemble)
        # one pre-training per member seed and auxiliary target: key (seed, index into aux_targets)
        keys = [(mseed, t) for mseed in members for t in range(len(aux_targets))]
        for key in keys:
            mseed, (t_name, t_values) = key[0], aux_targets[key[1]]
            if key not in pretrained and any(m.startswith("fgp") for m in methods):
                set_seed(mseed)
                enc = build_encoder(c.encoder, space.num_ops, **enc_cfg)
                about = "" if key[1] == 0 else f", auxiliary target {t_name}"

                def run_pretrain(resume_path=None, resume_meta=None, enc=enc, mseed=mseed, r=r, about=about,
                                 t_values=t_values):
                    log(f"[run {r}] pre-training {c.encoder} (seed {mseed}, {c.epochs_pretrain} epochs{about})")
                    return pretrain(enc, pre_batch, surrogate_targets, epochs=c.epochs_pretrain,
                                    batch_size=c.batch_size_pretrain, lr=c.lr, aux_target=t_values,
                                    standardize=c.standardize, seed=mseed, progress=c.progress,
                                    reconstruction=c.reconstruction, resume_path=resume_path,
                                    resume_meta=resume_meta, keep_resume=resume_path is not None)

                if c.pretrained_dir is None:
                    pre = run_pretrain()
                else:
                    cache_meta = _pretrain_cache_meta(c.encoder, space.num_ops, enc_cfg, mseed, c.epochs_pretrain,
                                                      c.batch_size_pretrain, c.lr, sp.as_dict(), c.standardize,
                                                      c.reconstruction, t_name, surrogate_targets, t_values)
                    pre = _cached_pretraining(Path(c.pretrained_dir), c.encoder, mseed, enc, cache_meta,
                                              run_pretrain, log, f"[run {r}] ", space=space)
                pretrained[key] = (copy.deepcopy(enc.state_dict()), pre)
        member_preds: dict[str, list[np.ndarray]] = {}
        # model j: pre-training seed members[j // (T * folds)] on auxiliary target (j // folds) % T
        # (T = len(aux_targets)), fine-tuned on fold j % folds of that member's folds; model 0 is the
        # plain run. The supervised baseline has no pre-training: one model per member and fold.
        fits = [((mseed, t), k, tr, va) for mseed, its_folds in zip(members, member_folds)
                for t in range(len(aux_targets)) for k, (tr, va) in enumerate(its_folds)]

        def fit(method, key, fit_train, fit_val, **pseudo):
            mseed = key[0]
            set_seed(mseed)
            enc = build_encoder(c.encoder, space.num_ops, **enc_cfg)
            if method.startswith("fgp"):
                enc.load_state_dict(pretrained[key][0])
                if method == "fgp_aux_head":
                    enc = Predictor(enc, copy.deepcopy(pretrained[key][1].aux_head))
            set_seed(mseed)
            return finetune(enc, batch, y, fit_train, fit_val, epochs=c.epochs_finetune,
                            batch_size=c.batch_size_finetune, lr=ft_lr, weight_decay=c.finetune_weight_decay,
                            margin=c.margin, seed=mseed, progress=c.progress, lr_schedule=c.finetune_schedule,
                            warmup_epochs=c.finetune_warmup, schedule_epochs=ft_sched_epochs,
                            select_after=c.finetune_select_after, ema_decay=c.finetune_ema, loss=c.finetune_loss,
                            **pseudo)

        pool_preds: list[np.ndarray] = []     # the FGP models' scores of the self-training pool
        for method in methods:
            its_fits = fits if method.startswith("fgp") else [f for f in fits if f[0][1] == 0]
            for j, (key, fold, fit_train, fit_val) in enumerate(its_fits):
                mseed = key[0]
                ft = fit(method, key, fit_train, fit_val)
                t_eval = time.perf_counter()
                pred = predict(ft.model, batch, split["test"])
                member_preds.setdefault(method, []).append(pred)
                if pool is not None and method.startswith("fgp"):
                    pool_preds.append(predict(ft.model, batch, pool))
                if j == 0:      # member 0 is the plain run: its metrics and history are the run's
                    m = evaluate_ranking(pred, y[split["test"]])
                    m.update(best_epoch=ft.best_epoch, best_val_tau=ft.best_val_tau,
                             finetune_s_per_epoch=ft.time_per_epoch, eval_s=time.perf_counter() - t_eval)
                    if method.startswith("fgp"):
                        m["pretrain_s_per_epoch"] = pretrained[key][1].time_per_epoch
                    history = ft.history
                if len(its_fits) > 1:
                    m.setdefault("member_taus", []).append(kendall_tau(pred, y[split["test"]]))
                    log(f"[run {r}] seed {seed} perm {perm_seed} {method:>10} member {j} (seed {mseed}"
                        + (f", auxiliary target {aux_targets[key[1]][0]}" if key[1] > 0 else "")
                        + (f", fold {fold}" if c.folds > 1 else "") + "): "
                        f"tau {m['member_taus'][-1]:.4f} (best epoch {ft.best_epoch}, val tau {ft.best_val_tau:.3f})")
            if len(its_fits) > 1:
                pred = combine_scores(member_preds[method])
                single = {f"single_{k}": m[k] for k in _RANK_KEYS}
                m.update(evaluate_ranking(pred, y[split["test"]]), **single)
            row[method] = m
            log(f"[run {r}] seed {seed} perm {perm_seed} {method:>10}: tau {m['kendall_tau']:.4f} "
                f"P@1% {m['p@1%']:.3f} (best epoch {m['best_epoch']}, val tau {m['best_val_tau']:.3f})"
                + (f", ensemble of {len(its_fits)} (single model {m['single_kendall_tau']:.4f})"
                   if len(its_fits) > 1 else ""))
            if r == 0:
                artifacts[method] = {"pred": pred, "true": y[split["test"]], "finetune_history": history}
                if method == "fgp":
                    artifacts["pretrain_history"] = pretrained[(seed, 0)][1].history
        if c.finetune_aux_head:
            # both heads' fine-tuned models in one score: free, since both are fine-tuned anyway
            pred = combine_scores(member_preds["fgp"] + member_preds["fgp_aux_head"])
            row["fgp_both_heads"] = evaluate_ranking(pred, y[split["test"]])
            log(f"[run {r}] seed {seed} perm {perm_seed} fgp_both_heads: tau {row['fgp_both_heads']['kendall_tau']:.4f}")
        if combine_with is not None:
            own = member_preds["fgp"] + member_preds.get("fgp_aux_head", [])
            recorded = combine_with[(seed, perm_seed)]["scores"]
            pred = combine_scores(own + list(recorded))
            row["fgp_combined"] = dict(evaluate_ranking(pred, y[split["test"]]), models=len(own) + len(recorded))
            log(f"[run {r}] seed {seed} perm {perm_seed} fgp_combined: tau {row['fgp_combined']['kendall_tau']:.4f} "
                f"({len(own)} models of this job + {len(recorded)} recorded)")
        if pool is not None:
            rows, students = _self_train(
                fit, batch, member_preds, pool_preds, pool, keys, split, y, c.self_train_weight,
                log=lambda text: log(f"[run {r}] seed {seed} perm {perm_seed} {text}"))
            row.update(rows)
            member_preds["fgp_self_train"] = students
        per_run.append(row)
        # every model's test scores, for fgp_ext.train.predictions (the summary keeps metrics only)
        artifacts.setdefault("model_scores", []).append(
            {"seed": seed, "perm_seed": perm_seed, "train_index": split["train"], "val_index": split["val"],
             "test_index": split["test"], "true": y[split["test"]],
             "scores": {m: np.stack(p) for m, p in member_preds.items()}})
    summary: dict[str, Any] = {
        "dataset": getattr(space, "name", "?"), "num_archs": n, "target": target, "encoder": c.encoder,
        "encoder_config": enc_cfg, "ratio": c.ratio, "n_train": n_train, "n_val": c.n_val, "runs": per_run,
        "epochs_pretrain": c.epochs_pretrain, "epochs_finetune": c.epochs_finetune,
        "batch_size_pretrain": c.batch_size_pretrain, "batch_size_finetune": c.batch_size_finetune, "lr": c.lr,
        "margin": c.margin, "surrogate": sp.as_dict(), "standardize_surrogate": c.standardize,
        "aux_target": aux_name, "reconstruction": c.reconstruction, "num_labelled": int(labelled.size),
        "num_unlabelled": len(extra) + n - int(labelled.size),
        "finetune_aux_head": bool(c.finetune_aux_head),
        "finetune_lr": ft_lr, "finetune_weight_decay": float(c.finetune_weight_decay),
        "finetune_schedule": c.finetune_schedule, "finetune_warmup": int(c.finetune_warmup),
        "finetune_schedule_epochs": ft_sched_epochs, "finetune_select_after": int(c.finetune_select_after),
        "finetune_ema": float(c.finetune_ema), "finetune_loss": c.finetune_loss,
        "pretrained_dir": None if c.pretrained_dir is None else str(c.pretrained_dir), "ensemble": int(c.ensemble),
        "folds": int(c.folds), "reshuffle_folds": bool(c.reshuffle_folds),
        "ensemble_aux_targets": list(c.ensemble_aux_targets), "self_train": int(c.self_train),
        "self_train_weight": float(c.self_train_weight),
        "threads": torch.get_num_threads(), "collate_s": collate_s, "surrogate_s": sur_s,
    }
    reported = methods + (["fgp_both_heads"] if c.finetune_aux_head else []) + \
        (list(SELF_TRAIN_METHODS) if c.self_train else []) + (["fgp_combined"] if combine_with is not None else [])
    for method in reported:
        keys = list(_RANK_KEYS) + ([f"single_{k}" for k in _RANK_KEYS]
                                   if "single_kendall_tau" in per_run[0][method] else [])
        vals = {k: [row[method][k] for row in per_run] for k in keys}
        summary.setdefault("mean", {})[method] = {k: float(np.mean(v)) for k, v in vals.items()}
        summary.setdefault("std", {})[method] = {k: float(np.std(v)) for k, v in vals.items()}
    summary["pretrain_s_per_epoch"] = float(np.mean([p[1].time_per_epoch for p in pretrained.values()]))
    summary["finetune_s_per_epoch"] = float(np.mean([row["fgp"]["finetune_s_per_epoch"] for row in per_run]))
    summary["_artifacts"] = artifacts
    return summary


def _check_recorded_runs(recorded: dict, c: ProtocolConfig, y: np.ndarray, n_train: int, target: str) -> None:
    """Raise ``ValueError`` unless ``recorded`` (``run_protocol``'s ``combine_with``) holds every run
    of ``c.runs`` with this dataset's test set and labels: before training, not after it."""
    for seed, perm_seed in c.runs:
        run = recorded.get((seed, perm_seed))
        if run is None:
            have = sorted(recorded, key=run_order)
            raise ValueError(f"the recorded models have no run seed {seed} perm {perm_seed} (they have {have}); "
                             "run the other job with the same seeds")
        split, _ = split_labelled(y, n_train, c.ratio, perm_seed, c.n_val, target=target)
        if not np.array_equal(np.asarray(run["test_index"]), split["test"]):
            raise ValueError(f"the recorded models of run seed {seed} perm {perm_seed} have another test set "
                             "(another dataset, --limit, --n-train or --n-val)")
        for part, name in (("train", "training"), ("val", "validation")):
            # layout 1 files lack them; a smaller --ratio keeps the test set but trains on fewer labels
            if run.get(f"{part}_index") is not None and not np.array_equal(run[f"{part}_index"], split[part]):
                raise ValueError(f"the recorded models of run seed {seed} perm {perm_seed} have another {name} "
                                 "set (another --ratio, --n-train or --n-val): they learnt from other labels")
        if not np.array_equal(np.asarray(run["true"], dtype=np.float64), y[split["test"]].astype(np.float64)):
            raise ValueError(f"the recorded models of run seed {seed} perm {perm_seed} have other labels "
                             "(another target or file)")
        scores = np.asarray(run["scores"])
        if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] != split["test"].size:
            raise ValueError(f"the recorded models of run seed {seed} perm {perm_seed} have scores of shape "
                             f"{list(scores.shape)}, expected [models, {split['test'].size}]")


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


def _cache_path(folder: Path, encoder: str, seed: int, meta: dict) -> Path:
    """``<encoder>_seed<seed>-<key>.pt`` in ``folder``; ``key``: 12 hex digits of the sha256 of
    ``meta`` (every setting and the data fingerprint), so other settings never share a file."""
    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(folder) / f"{encoder}_seed{int(seed)}-{key}.pt"


def _cached_pretraining(folder: Path, encoder: str, seed: int, enc: Encoder, meta: dict, train, log,
                        prefix: str = "", space=None) -> PretrainResult:
    """The pre-training of ``enc`` for ``meta`` from the cache in ``folder``, else ``train(resume_path,
    resume_meta)`` and then stored there.

    One process at a time works on one entry: the others wait on ``<entry>.lock`` (saying which
    process holds it) and then load what it wrote. The resume state ``<entry stem>.partial.pt`` is
    removed only after the entry is in place, so a kill at any point keeps the progress. A file of
    the earlier, unkeyed name ``<encoder>_seed<seed>.pt`` is reused when its settings match."""
    path = _cache_path(folder, encoder, seed, meta)
    partial = path.with_name(path.stem + ".partial.pt")
    with FileLock(path.with_name(path.name + ".lock"), what=f"the pre-training cache {path}", log=log):
        # temporary files of this entry left by a killed writer: only the lock holder writes them
        for name in (path.name, partial.name):
            for stale in Path(folder).glob(f".{glob.escape(name)}.*.tmp"):
                stale.unlink(missing_ok=True)
        source, pre = path, _load_pretrained(path, enc, meta)
        if pre is None:
            source = Path(folder) / f"{encoder}_seed{int(seed)}.pt"
            pre = _load_pretrained(source, enc, meta, other_settings_ok=True)
        if pre is not None:
            log(f"{prefix}pre-trained {encoder} (seed {seed}) loaded from {source}")
            partial.unlink(missing_ok=True)     # left by a run killed after it wrote the entry
            return pre
        pre = train(resume_path=partial, resume_meta=meta)
        _save_pretrained(path, pre, meta, space)
        partial.unlink(missing_ok=True)         # only now: until the entry is in place it holds the progress
        return pre


def _save_pretrained(path: Path, pre: PretrainResult, meta: dict, space=None) -> None:
    full = {**meta, "history": pre.history,
            "target_mean": None if pre.target_mean is None else pre.target_mean.tolist(),
            "target_std": None if pre.target_std is None else pre.target_std.tolist()}
    # the space (name + ordered vocabulary) goes into the checkpoint, not into meta: meta keys the cache
    save_checkpoint(path, pre.encoder, {"flow": pre.flow_head, "aux": pre.aux_head}, full, space=space,
                    settings={"stage": "pretrain", **meta})


def _load_pretrained(path: Path, encoder: Encoder, meta: dict, other_settings_ok: bool = False
                     ) -> PretrainResult | None:
    """The cached pre-training at ``path`` loaded into ``encoder``, or None if there is no file.
    A file made with other settings raises ``ValueError`` naming what differs (returns None with
    ``other_settings_ok``); a file that is no checkpoint raises :class:`CheckpointError` either way."""
    if not path.is_file():
        return None
    ck = load_checkpoint(path)
    diff = sorted(k for k in meta if ck.meta.get(k) != meta[k])
    if (diff or ck.encoder.config != encoder.config) and other_settings_ok:
        return None
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
