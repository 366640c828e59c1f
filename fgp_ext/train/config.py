"""The settings of a protocol run in one object (:class:`ProtocolConfig`), and the flow-surrogate
parameters resolved in one place (:func:`resolve_surrogate`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SurrogateParams", "resolve_surrogate", "ProtocolConfig", "PROTOCOL_SEEDS", "seed_runs",
           "protocol_runs", "ensemble_seeds", "cross_fit_folds", "FINETUNE_LOSSES"]

def check_positive_weight(value, name: str) -> float:
    """``value`` as a float, or ``ValueError`` unless it is finite and > 0 (a loss weight). One rule
    for :func:`~fgp_ext.train.finetune` and for :class:`ProtocolConfig`, which checks before any
    pre-training (this module does not import torch)."""
    w = float(value)
    if not (np.isfinite(w) and w > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return w


def check_ema_decay(value, name: str) -> float:
    """``value`` as a float, or ``ValueError`` unless it lies in [0, 1) (0: no weight average;
    NaN is refused). Shared by :func:`~fgp_ext.train.finetune` and :class:`ProtocolConfig`."""
    d = float(value)
    if not 0.0 <= d < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (0: off), got {value!r}")
    return d


#: The fine-tuning losses by name (:func:`fgp_ext.train.losses.finetune_loss`); ``"hinge"``, FGP's
#: pairwise hinge, is the default.
FINETUNE_LOSSES: tuple[str, ...] = ("hinge", "logistic", "listmle", "hinge+mse")


def check_finetune_loss(value, name: str) -> str:
    """``value`` if it names a fine-tuning loss (:data:`FINETUNE_LOSSES`), else ``ValueError``."""
    if value not in FINETUNE_LOSSES:
        raise ValueError(f"{name} must be one of {list(FINETUNE_LOSSES)}, got {value!r}")
    return value


#: The paper's seeds (FGP.md §4); seed 21 means the identity permutation.
PROTOCOL_SEEDS: tuple[int, ...] = (21, 2021, 202121)
#: Surrogate parameters of a dataset whose space names none (FGP.md §3's NB201 values, k 8).
_FALLBACK_SURROGATE = {"k": 8, "std": 0.1, "alpha": 0.5}


@dataclass(frozen=True)
class SurrogateParams:
    """Parameters of the flow surrogate (:func:`fgp_ext.surrogate.flow_surrogate`): dimension ``k``,
    std of the random draws, the mixing ``alpha`` and the seed of the draws."""

    k: int
    std: float
    alpha: float = 0.5
    seed: int = 0

    def as_dict(self) -> dict:
        """``{"k", "std", "alpha", "seed"}``: how summaries, checkpoints and cache keys record them."""
        return {"k": self.k, "std": self.std, "alpha": self.alpha, "seed": self.seed}

    def compute(self, batch, num_ops: int):
        """The ``[B, k]`` surrogate of every graph of ``batch`` with these parameters."""
        from fgp_ext.surrogate import flow_surrogate

        return flow_surrogate(batch, k=self.k, std=self.std, alpha=self.alpha, seed=self.seed, num_ops=num_ops)


def resolve_surrogate(space=None, overrides: SurrogateParams | dict | None = None, **given) -> SurrogateParams:
    """The surrogate parameters of a run: the search space's defaults (``space.surrogate_params``;
    k 8, std 0.1, alpha 0.5 for a space without them), seed 0, then every non-None value of
    ``overrides`` (a dict, or a :class:`SurrogateParams` taken whole) and of the keywords ``k``,
    ``std``, ``alpha``, ``seed``. ``ValueError`` for another key. The CLI, :func:`run_protocol`
    and the pre-training cache key all get their parameters here."""
    if isinstance(overrides, SurrogateParams):
        if any(v is not None for v in given.values()):
            raise ValueError("give surrogate parameters either as a SurrogateParams or as keywords, not both")
        return overrides
    sp = {**dict(getattr(space, "surrogate_params", None) or _FALLBACK_SURROGATE), "seed": 0}
    for source in (overrides or {}, given):
        unknown = sorted(set(source) - {"k", "std", "alpha", "seed"})
        if unknown:
            raise ValueError(f"unknown surrogate parameter(s) {unknown}; expected k, std, alpha, seed")
        sp.update({k: v for k, v in source.items() if v is not None})
    return SurrogateParams(k=int(sp["k"]), std=float(sp["std"]), alpha=float(sp.get("alpha", 0.5)),
                           seed=int(sp["seed"]))


def seed_runs(seeds, perms=PROTOCOL_SEEDS) -> list[tuple[int, int]]:
    """The ``(seed, perm_seed)`` runs of the pre-training ``seeds``, each with every permutation of
    ``perms``: first each seed with its own permutation (where it is one of ``perms``), then
    permutation by permutation the seeds that differ from it. ``seed_runs(PROTOCOL_SEEDS)`` is the
    protocol's 9 runs in :func:`protocol_runs`' order; ``seed_runs([2021])`` is
    ``[(2021, 2021), (2021, 21), (2021, 202121)]``."""
    seeds = [int(s) for s in seeds]
    perms = [int(p) for p in perms]
    if not seeds:
        raise ValueError("no pre-training seed given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed is given twice: {seeds}")
    own = [(s, s) for s in seeds if s in perms]
    return own + [(s, p) for p in perms for s in seeds if s != p]


def protocol_runs(runs: int = 9, seeds=PROTOCOL_SEEDS) -> list[tuple[int, int]]:
    """The ``(seed, perm_seed)`` pairs of the protocol: all 3 x 3 combinations of the paper's
    seeds, ordered so that the first 3 pair each seed with its own permutation ((21, identity),
    (2021, perm 2021), (202121, perm 202121)); ``runs`` > 9 is an error."""
    pairs = seed_runs(seeds, seeds)
    if not 1 <= int(runs) <= len(pairs):
        raise ValueError(f"runs must be in 1..{len(pairs)}, got {runs}")
    return pairs[: int(runs)]


def cross_fit_folds(train, val, folds: int, perm_seed: int, partition: int = 0
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(train, val)`` index pairs of ``folds`` fine-tunings that together learn from every
    labelled architecture of a run (``train`` and ``val``, disjoint). Fold 0 is ``(train, val)``
    itself, so a fold ensemble's member 0 is the plain run. Fold ``k`` > 0 validates on the k-th of
    ``folds - 1`` equal parts of ``train`` (after a shuffle seeded with ``perm_seed``) and trains
    on the other parts plus ``val``. Every part must hold at least 2 architectures (a ranking
    needs a pair).

    ``partition`` > 0 cuts ``train`` into other parts: the shuffle is seeded with
    ``(perm_seed, partition)`` instead, so each partition's folds 1.. hold out other cells
    (``ProtocolConfig.reshuffle_folds`` gives ensemble member ``j`` partition ``j``). Partition 0 is
    the shuffle above, and fold 0 is the same in every partition."""
    train = np.asarray(train, dtype=np.int64).reshape(-1)
    val = np.asarray(val, dtype=np.int64).reshape(-1)
    folds = int(folds)
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    if folds == 1:
        return [(train, val)]
    if val.size < 2:
        raise ValueError(f"cross-fitting needs a validation set of at least 2 architectures, got {val.size}")
    if np.intersect1d(train, val).size:
        raise ValueError("the training and validation sets overlap")
    if train.size < 2 * (folds - 1):
        raise ValueError(f"{folds} folds need at least {2 * (folds - 1)} training architectures "
                         f"(2 per validation part), got {train.size}")
    partition = int(partition)
    if partition < 0:
        raise ValueError(f"partition must be >= 0, got {partition}")
    seed = int(perm_seed) % 2**32
    rng = np.random.RandomState(seed if partition == 0 else [seed, partition])
    shuffled = train[rng.permutation(train.size)]
    parts = np.array_split(shuffled, folds - 1)
    out = [(train, val)]
    for k, part in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != k] + [val])
        out.append((np.sort(rest), np.sort(part)))
    return out


def ensemble_seeds(seed: int, size: int) -> list[int]:
    """The pre-training seeds of the ``size`` members of a run with seed ``seed``: ``seed``,
    ``seed + 1``, ... Member 0 is the run's own model, so an ensemble of one is the plain run and a
    larger ensemble reports that model's score beside the ensemble's."""
    if int(size) < 1:
        raise ValueError(f"an ensemble needs at least 1 member, got {size}")
    return [int(seed) + j for j in range(int(size))]


@dataclass
class ProtocolConfig:
    """Every setting of :func:`~fgp_ext.train.run_protocol`.

    ``runs``: the explicit ``(pre-training seed, permutation seed)`` pairs to run, in order (see
    :func:`protocol_runs`, :func:`seed_runs`); an int ``n`` stands for ``protocol_runs(n)``.
    Pre-training depends on the seed only, so it runs once per distinct seed.

    ``target``: the label column (default: the dataset's first). ``aux_target``: the name of the
    auxiliary pre-training target (a data column, a shipped NB201 proxy, ``"a+b"`` rank vote or
    ``"a,b"`` several outputs; :func:`~fgp_ext.train.resolve_aux_target`), or None for none.
    ``surrogate``: the flow-surrogate parameters (:func:`resolve_surrogate`; a dict or None is
    resolved against the dataset's space by ``run_protocol``). ``encoder_config``: further
    constructor arguments of the encoder besides ``hidden`` and ``dropout``.

    Fine-tuning: ``finetune_lr`` (default ``lr``), ``finetune_weight_decay``, ``finetune_schedule``,
    ``finetune_warmup``, ``finetune_schedule_epochs`` (default ``epochs_finetune``),
    ``finetune_select_after`` (checkpoints of the first that many epochs are never kept),
    ``finetune_ema`` (validate and keep a moving average of the weights with that decay; 0: off),
    ``finetune_loss`` (a name of :data:`FINETUNE_LOSSES`; ``"hinge"``, FGP's, by default);
    see :func:`~fgp_ext.train.finetune`. ``finetune_aux_head`` adds the method ``"fgp_aux_head"``
    (fine-tune with the pre-trained auxiliary head as the score head; needs a one-column
    ``aux_target``). ``baseline`` adds the supervised-only method.

    ``pretrained_dir``: a folder caching one pre-trained encoder per seed (see ``run_protocol``).

    ``ensemble``: members per method and run (default 1). Member ``j`` is pre-trained with seed
    ``seed + j`` (:func:`ensemble_seeds`) and fine-tuned on the run's split with that seed; the
    run's score is the mean of the members' standardised scores. Pre-training and fine-tuning cost
    ``ensemble`` times as much.

    ``folds``: fine-tunings per ensemble member (default 1), each on another split of the run's
    labelled architectures (train + validation, :func:`cross_fit_folds`): fold 0 validates on the
    run's own validation set and trains on its training set (the plain run); fold ``k`` > 0
    validates on the k-th of ``folds - 1`` equal parts of the training set and trains on the rest
    plus the validation set. Together the models learn from every labelled architecture, where a
    single model never sees its validation labels. Fine-tuning costs ``folds`` times as much;
    pre-training costs nothing more.

    ``reshuffle_folds``: with ``folds`` > 1 and ``ensemble`` > 1, member ``j`` cross-fits on its
    own partition of the training set (``cross_fit_folds(..., partition=j)``) instead of every
    member on the same one, so the members' fold models hold out different cells. Member 0's
    models are unchanged; fold 0 is the run's split in every member. Costs nothing more.

    ``ensemble_aux_targets``: further auxiliary targets (names as ``aux_target``; default none).
    Every ensemble member is also pre-trained once on each of them instead of ``aux_target``, with
    the member's seed, and those encoders are fine-tuned on the member's folds as its own are; all
    their models join the FGP methods' combined score. Models pre-trained on other targets err
    differently from a second seed of the same target (``results/folds.md``). Pre-training and
    fine-tuning of the FGP methods cost ``1 + len(ensemble_aux_targets)`` times as much; the
    supervised baseline is unchanged. Member 0 on ``aux_target`` stays the plain run.

    ``self_train``: self-training on that many architectures outside the run's labelled ones
    (default 0: none). After every FGP model above is fine-tuned, their combined score (the teacher:
    all heads, members and folds, :func:`~fgp_ext.train.protocol.combine_scores`) ranks a fixed
    sample of ``self_train`` unlabelled architectures of the dataset; then one student per member
    and FGP head is fine-tuned from the same pre-training on all the run's labels (training and
    validation) plus that pseudo-ranking, weighted ``self_train_weight``
    (:func:`~fgp_ext.train.finetune`'s ``pseudo_*``). No label is held out for a student, so it
    keeps its last epoch. The sample is drawn from every architecture outside the labelled split,
    the test set included (no test label is read: the teacher's scores stand in for them).
    Methods ``"fgp_self_train"`` (the students) and ``"fgp_teacher_students"`` (teacher and students
    in one score) are added.
    """

    encoder: str = "gatedgcn"
    target: str | None = None
    runs: Any = field(default_factory=lambda: protocol_runs(3))
    ratio: float = 0.01
    n_train: int | None = None
    n_val: int = 40
    epochs_pretrain: int = 200
    epochs_finetune: int = 200
    batch_size_pretrain: int = 256
    batch_size_finetune: int = 16
    lr: float = 1e-3
    margin: float = 0.5
    hidden: int = 128
    dropout: float = 0.1
    encoder_config: dict = field(default_factory=dict)
    surrogate: SurrogateParams | dict | None = None
    aux_target: str | None = None
    standardize: bool = False
    reconstruction: bool = True
    baseline: bool = True
    finetune_aux_head: bool = False
    finetune_lr: float | None = None
    finetune_weight_decay: float = 0.0
    finetune_schedule: str = "constant"
    finetune_warmup: int = 0
    finetune_schedule_epochs: int | None = None
    finetune_select_after: int = 0
    finetune_ema: float = 0.0
    finetune_loss: str = "hinge"
    pretrained_dir: Any = None
    ensemble: int = 1
    folds: int = 1
    reshuffle_folds: bool = False
    ensemble_aux_targets: tuple = ()
    self_train: int = 0
    self_train_weight: float = 1.0
    progress: bool | None = None

    def __post_init__(self):
        if isinstance(self.runs, int):
            self.runs = protocol_runs(self.runs)
        try:
            self.runs = [(int(s), int(p)) for s, p in self.runs]
        except (TypeError, ValueError):
            raise ValueError(f"runs must be an int or (seed, perm_seed) pairs, got {self.runs!r}") from None
        if not self.runs:
            raise ValueError("runs is empty: no (seed, perm_seed) pair to run")
        if len(set(self.runs)) != len(self.runs):
            raise ValueError(f"a (seed, perm_seed) run is given twice: {self.runs}")
        self.encoder_config = dict(self.encoder_config or {})
        ensemble_seeds(0, self.ensemble)      # a bad size fails here, not after pre-training
        if isinstance(self.folds, bool) or not isinstance(self.folds, (int, np.integer)) or self.folds < 1:
            raise ValueError(f"folds must be an int >= 1, got {self.folds!r}")
        self.folds = int(self.folds)
        if not isinstance(self.reshuffle_folds, (bool, np.bool_)):
            raise ValueError(f"reshuffle_folds must be a bool, got {self.reshuffle_folds!r}")
        self.reshuffle_folds = bool(self.reshuffle_folds)
        if self.reshuffle_folds and (self.folds < 2 or self.ensemble < 2):
            raise ValueError("reshuffle_folds gives each ensemble member its own fold partition: it needs folds >= 2 "
                             f"and ensemble >= 2, got folds={self.folds}, ensemble={self.ensemble}")
        if isinstance(self.ensemble_aux_targets, str):
            raise ValueError("ensemble_aux_targets takes a list of target names, got the string "
                             f"{self.ensemble_aux_targets!r}")
        self.ensemble_aux_targets = tuple(self.ensemble_aux_targets or ())
        for name in self.ensemble_aux_targets:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"ensemble_aux_targets holds names of auxiliary targets, got {name!r}")
        repeated = [t for i, t in enumerate(self.ensemble_aux_targets)
                    if t == self.aux_target or t in self.ensemble_aux_targets[:i]]
        if repeated:
            raise ValueError(f"ensemble_aux_targets repeats {repeated[0]!r}: the same target and seed would pre-train "
                             "the same encoder again (for more seeds of one target: ensemble)")
        if isinstance(self.self_train, bool) or not isinstance(self.self_train, (int, np.integer)) \
                or self.self_train < 0 or self.self_train == 1:
            raise ValueError(f"self_train must be 0 (off) or an int >= 2, got {self.self_train!r}")
        self.self_train = int(self.self_train)
        self.self_train_weight = check_positive_weight(self.self_train_weight, "self_train_weight")
        self.finetune_ema = check_ema_decay(self.finetune_ema, "finetune_ema")
        self.finetune_loss = check_finetune_loss(self.finetune_loss, "finetune_loss")

    def replace(self, **changes) -> ProtocolConfig:
        """A copy with ``changes`` applied (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    @property
    def seeds(self) -> list[int]:
        """The distinct pre-training seeds of ``runs``, in order of first use (ensemble members'
        seeds not included: :func:`ensemble_seeds`)."""
        return list(dict.fromkeys(s for s, _ in self.runs))
