"""FGP pre-training, ranking fine-tuning, evaluation and the paper's split protocol (FGP.md §3-4).

Everything works on one pre-collated :class:`~fgp_ext.graph.ArchBatch` of the whole dataset;
every step takes a sub-batch with :meth:`ArchBatch.select` (vectorised, no per-graph Python).

Modules (every public name is also importable from ``fgp_ext.train``):

* :mod:`~fgp_ext.train.heads` — :class:`MLPHead`, :class:`Predictor`.
* :mod:`~fgp_ext.train.losses` — the fine-tuning losses (:func:`ranking_loss`, FGP's pairwise hinge;
  :func:`logistic_ranking_loss`, :func:`listmle_loss`, :func:`regression_ranking_loss`, chosen by name
  with :func:`finetune_loss`), :func:`resolve_aux_target` (columns, proxies, rank votes).
* :mod:`~fgp_ext.train.pretraining` — :func:`pretrain`: surrogate reconstruction (flow head) +
  optional auxiliary ranking loss, resumable.
* :mod:`~fgp_ext.train.finetuning` — :func:`finetune` (a ranking loss, gradient
  clipping, best-validation-tau checkpoint, lr schedules), :func:`evaluate` / :func:`predict`.
* :mod:`~fgp_ext.train.config` — :class:`ProtocolConfig` (every setting of a protocol run, with
  its explicit (seed, permutation) runs: :func:`protocol_runs`, :func:`seed_runs`) and
  :func:`resolve_surrogate` (the flow-surrogate parameters, :class:`SurrogateParams`).
* :mod:`~fgp_ext.train.protocol` — :func:`split_indices` / :func:`permutation` and
  :func:`run_protocol`: FGP vs supervised-only over several (seed, permutation) runs, with its
  pre-training cache and optional ensembles (:func:`ensemble_seeds`, :func:`cross_fit_folds`,
  :func:`combine_scores`).
* :mod:`~fgp_ext.train.checkpoints` — :func:`save_checkpoint` / :func:`load_checkpoint`: our
  checkpoint format.
* :mod:`~fgp_ext.train.predictions` — :func:`save_predictions` / :func:`load_predictions`: every
  run's test scores of every model (``predictions.npz`` of ``fgp run``); :func:`recorded_models`:
  the models a spec such as ``"job/predictions.npz:fgp[0:5]"`` names, run by run.
* :mod:`~fgp_ext.train.auto_aux` — :func:`choose_aux_target`: what ``--aux-target auto`` uses
  (NB201: MeCo; a file: its first usable cost or proxy column, never a label).
"""
from __future__ import annotations

from fgp_ext.train.auto_aux import AuxChoice, choose_aux_target
from fgp_ext.train.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint, CheckpointError,
                                       load_checkpoint, save_checkpoint)
from fgp_ext.train.common import TrainingDivergedError, as_batch, set_seed
from fgp_ext.train.config import (FINETUNE_LOSSES, ProtocolConfig, SurrogateParams, cross_fit_folds, ensemble_seeds,
                                  resolve_surrogate, seed_runs)
from fgp_ext.train.finetuning import LR_SCHEDULES, FinetuneResult, evaluate, finetune, lr_factor, predict
from fgp_ext.train.heads import MLPHead, Predictor
from fgp_ext.train.losses import (finetune_loss, listmle_loss, logistic_ranking_loss, ranking_loss,
                                  regression_ranking_loss, resolve_aux_target)
from fgp_ext.train.predictions import (
    PREDICTIONS_FORMAT,
    load_job_runs,
    load_predictions,
    parse_models_spec,
    recorded_models,
    save_predictions,
)
from fgp_ext.train.pretraining import PretrainResult, pretrain
from fgp_ext.train.protocol import (PAPER_N_TRAIN, PROTOCOL_SEEDS, _load_pretrained, _save_pretrained,
                                    combine_scores, default_n_train, labelled_indices, permutation, protocol_runs,
                                    run_protocol, split_indices, split_labelled)

__all__ = [
    "MLPHead", "Predictor", "ranking_loss", "set_seed", "as_batch", "pretrain", "finetune", "predict",
    "evaluate", "permutation", "split_indices", "protocol_runs", "default_n_train", "run_protocol",
    "save_checkpoint", "load_checkpoint", "Checkpoint", "CheckpointError", "PretrainResult",
    "FinetuneResult", "PROTOCOL_SEEDS", "CHECKPOINT_FORMAT", "resolve_aux_target", "lr_factor",
    "LR_SCHEDULES", "ProtocolConfig", "SurrogateParams", "resolve_surrogate", "seed_runs",
    "labelled_indices", "split_labelled", "TrainingDivergedError", "AuxChoice", "choose_aux_target",
    "ensemble_seeds", "combine_scores", "cross_fit_folds", "FINETUNE_LOSSES", "finetune_loss", "listmle_loss",
    "logistic_ranking_loss", "regression_ranking_loss", "PREDICTIONS_FORMAT", "load_predictions", "save_predictions",
    "recorded_models", "parse_models_spec", "load_job_runs",
]
