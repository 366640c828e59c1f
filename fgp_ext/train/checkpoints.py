"""Our checkpoint format: :func:`save_checkpoint` / :func:`load_checkpoint` and :class:`Checkpoint`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fgp_ext import _io
from fgp_ext.encoders import Encoder, build_encoder
from fgp_ext.train.heads import MLPHead, Predictor

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Checkpoint", "CheckpointError", "save_checkpoint",
           "load_checkpoint"]

#: Marker stored in every checkpoint written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT = "fgp_ext.checkpoint"
CHECKPOINT_VERSION = 1


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


def save_checkpoint(path, encoder: Encoder, heads: dict[str, MLPHead] | None = None, meta: dict | None = None) -> Path:
    """Write ``encoder`` + ``heads`` + ``meta`` (JSON-like) to ``path`` with our format marker
    (atomically, :func:`fgp_ext._io.torch_save`: a killed run or a full disk never leaves a
    half-written file; a refused write is a one-line :class:`fgp_ext._io.WriteError`)."""
    path = Path(path)
    blob = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "encoder": {"name": encoder.name, "config": encoder.config, "state": encoder.state_dict()},
        "heads": {k: {"config": h.config, "state": h.state_dict()} for k, h in (heads or {}).items() if h is not None},
        "meta": meta or {},
    }
    _io.torch_save(blob, path)
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
