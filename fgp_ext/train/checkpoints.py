"""Our checkpoint format: :func:`save_checkpoint` / :func:`load_checkpoint` and :class:`Checkpoint`.

A version-2 checkpoint is a ``torch.save`` dict (read back with ``weights_only=True``)::

    format    "fgp_ext.checkpoint"
    version   2
    space     {"name": "nb201", "vocab": [op names, id = position]} or None
    encoder   {"name", "config" (the encoder's constructor settings), "state"}
    heads     {name: {"config", "state"}}   ("flow", "aux" after pre-training, "score" after fine-tuning)
    settings  the surrogate / training settings it was made with (JSON-like)
    target    the label column a score head was fine-tuned on, or None
    meta      free-form (history, test metrics...)

The space and its ordered vocabulary let :meth:`Checkpoint.load_data` read any file through the
op ids the encoder was trained with (a file of another space is refused; generic files give the
same numbers in any line order). Version-1 files (no ``space`` / ``settings`` / ``target``) still
load: their ``meta["space"]``, when the CLI wrote one, names the space, and for NB201, NB101 and
DARTS the vocabulary is fixed, so nothing is lost; a version-1 checkpoint of a generic space did
not record its op order (ids were first-seen order of its training file), so
:meth:`Checkpoint.load_data` refuses it with a message saying to regenerate it rather than guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fgp_ext import _io
from fgp_ext.data import formats as _formats
from fgp_ext.data import spaces as _spaces
from fgp_ext.encoders import Encoder, build_encoder
from fgp_ext.train.heads import MLPHead, Predictor

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "READABLE_VERSIONS", "Checkpoint", "CheckpointError", "save_checkpoint",
           "load_checkpoint"]

#: Marker stored in every checkpoint written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT = "fgp_ext.checkpoint"
CHECKPOINT_VERSION = 2
#: Versions :func:`load_checkpoint` reads (1: no space, vocabulary, settings or target recorded).
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A file that is not an fgp_ext checkpoint (or an incompatible version of one)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the encoder, heads by name (``"flow"``, ``"aux"``, ``"score"``),
    free-form metadata, and (version 2) the search space name and ordered op vocabulary the
    encoder was trained with, its settings and target name."""

    encoder: Encoder
    heads: dict[str, MLPHead]
    meta: dict
    space_name: str | None = None
    vocab: list[str] | None = None
    settings: dict | None = None
    target: str | None = None
    version: int = CHECKPOINT_VERSION
    path: str | None = None

    def space(self) -> "_spaces.SearchSpace":
        """The search space with the checkpoint's vocabulary (op id = position in :attr:`vocab`).
        :class:`CheckpointError` when the checkpoint does not record one (see the module docstring)."""
        name = repr(self.path) if self.path else "the checkpoint"
        if self.space_name is None:
            raise CheckpointError(f"{name} records no search space (written without one, e.g. by "
                                  f"save_checkpoint(..., space=None) or an older fgp_ext); regenerate it "
                                  f"with 'fgp pretrain' / 'fgp finetune'")
        if self.vocab is None:
            raise CheckpointError(f"{name} is a version-{self.version} checkpoint of space {self.space_name!r}, "
                                  f"which does not record the order of its op vocabulary; regenerate it "
                                  f"with this fgp_ext ('fgp pretrain' / 'fgp finetune')")
        try:
            return _spaces.space_with_vocabulary(self.space_name, self.vocab)
        except ValueError as e:
            raise CheckpointError(f"{name}: {e}") from None

    def load_data(self, data, **kw):
        """Load architectures (a file or ``"nb201"``, as :func:`fgp_ext.data.formats.load`) with the
        op ids this checkpoint was trained with. A file of another search space is refused with
        ``ValueError`` ("checkpoint X was trained on space nb201; FILE is nb101"); an op outside the
        vocabulary is a :class:`~fgp_ext.data.formats.DataFormatError` naming it and its line.

        A checkpoint that records no space at all (``save_checkpoint`` without ``space=``, e.g. a
        pre-training cache entry of an older fgp_ext) is accepted for data of NB201, NB101 or DARTS
        when the encoder's op count is that space's: their vocabularies are fixed, so the ids are
        unambiguous (a warning says so); for generic data it is refused."""
        if self.space_name is None:
            ds = _formats.load(data, **kw)
            if not isinstance(ds.space, _spaces.GenericSpace) and ds.space.num_ops == self.encoder.num_ops:
                import warnings

                warnings.warn(f"{self.path or 'the checkpoint'} records no search space; reading {data} with "
                              f"the fixed {ds.space.name} vocabulary ({ds.space.num_ops} ops, as its encoder)",
                              stacklevel=2)
                return ds
            if ds.space.num_ops != self.encoder.num_ops and not isinstance(ds.space, _spaces.GenericSpace):
                raise ValueError(f"checkpoint {self.path or ''} has an encoder of {self.encoder.num_ops} op ids; "
                                 f"{data} is {ds.space.name} ({ds.space.num_ops})")
        space = self.space()
        try:
            return _formats.load(data, space, **kw)
        except ValueError as e:
            try:   # is it a file of another space? (only worth asking once reading it failed)
                other = _formats.load(data).space.name
            except Exception:  # noqa: BLE001 - unreadable either way: the first error says why
                other = None
            if other is not None and other != space.name:
                name = self.path or "the checkpoint"
                raise ValueError(f"checkpoint {name} was trained on space {space.name}; {data} is {other}") \
                    from None
            raise e

    def predictor(self) -> Predictor:
        """The encoder with its ``"score"`` head (a fresh one if the checkpoint has none)."""
        return Predictor(self.encoder, self.heads.get("score"))


def save_checkpoint(path, encoder: Encoder, heads: dict[str, MLPHead] | None = None, meta: dict | None = None,
                    *, space=None, settings: dict | None = None, target: str | None = None) -> Path:
    """Write ``encoder`` + ``heads`` + ``meta`` (JSON-like) to ``path`` with our format marker
    (atomically, :func:`fgp_ext._io.torch_save`: a killed run or a full disk never leaves a
    half-written file; a refused write is a one-line :class:`fgp_ext._io.WriteError`).

    ``space``: the :class:`~fgp_ext.data.spaces.SearchSpace` of the training data (its name and
    ordered vocabulary are stored, so that other files are read with the same op ids); ``settings``
    the surrogate / training settings; ``target`` the label a score head was trained on."""
    path = Path(path)
    if space is not None:
        space = _spaces.get_space(space)
        if encoder.num_ops != space.num_ops:
            raise ValueError(f"the encoder has {encoder.num_ops} op ids, the space {space.name!r} "
                             f"{space.num_ops}")
    blob = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "space": None if space is None else {"name": space.name, "vocab": list(space.vocab)},
        "settings": dict(settings or {}), "target": target,
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
    version = blob.get("version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {version!r}; this fgp_ext "
                              f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
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
    meta = dict(blob.get("meta", {}))
    space_name = vocab = None
    if version >= 2:
        sp = blob.get("space")
        if sp is not None:
            space_name, vocab = str(sp["name"]), [str(o) for o in sp["vocab"]]
        settings, target = dict(blob.get("settings") or {}), blob.get("target")
    else:  # version 1: the CLI kept the space name in meta; fixed spaces imply their vocabulary
        space_name = meta.get("space") if isinstance(meta.get("space"), str) else None
        if space_name is not None:
            try:
                fixed = _spaces.get_space(space_name)
            except ValueError:
                fixed = None
            if fixed is not None and not isinstance(fixed, _spaces.GenericSpace):
                space_name, vocab = fixed.name, fixed.vocab
        settings, target = {k: meta[k] for k in ("surrogate",) if k in meta}, meta.get("target")
    if vocab is not None and len(vocab) != enc.num_ops:
        raise CheckpointError(f"{str(path)!r} is inconsistent: its encoder has {enc.num_ops} op ids, its "
                              f"vocabulary {len(vocab)}")
    return Checkpoint(enc, heads, meta, space_name, vocab, settings, target, version, str(path))
