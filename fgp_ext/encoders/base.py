"""The shared encoder interface and segment-mean pooling."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext import ops


def segment_mean(x: torch.Tensor, node_ptr: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``x [N, d]`` per graph (``node_ptr [B+1]``); empty graphs give zeros.
    Uses the deterministic compiled ``segment_sum_csr``."""
    counts = node_ptr.diff().clamp_min(1).to(x.dtype).unsqueeze(-1)
    return ops.segment_sum_csr(x, node_ptr) / counts


class Dropout(nn.Module):
    """``nn.Dropout`` on :func:`fgp_ext.ops.dropout`: a counter-based mask, the same on every device
    for the same torch seed, never stored for the backward, and several times cheaper to draw than
    ATen's CPU ``bernoulli_``."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`node_embeddings`; :meth:`forward` pools them by
    segment mean. ``out_dim`` is the embedding width, ``config`` the constructor arguments.

    Node inputs (the *node encoder*, ``self.node_encoder``, applied by :meth:`initial_states`):

    * default: a learned embedding of the op ids (``nn.Embedding(num_ops, hidden)`` on ``batch.op``);
    * ``node_features=F``: a linear map of continuous node features (``nn.Linear(F, hidden)`` on
      ``batch.x [N, F]``, e.g. a PyG batch's ``x`` via :meth:`ArchBatch.from_pyg`);
    * ``node_encoder=module``: any module mapping ``batch.x`` (when the batch has features, else
      ``batch.op``) to ``[N, hidden]``. Its weights are saved with the model, but it is not part of
      :attr:`config`: rebuild such a model by passing the module again.
    """

    name: str = "encoder"
    out_dim: int

    def __init__(self, num_ops: int, hidden: int = 128, dropout: float = 0.1, node_features: int | None = None,
                 node_encoder: nn.Module | None = None):
        super().__init__()
        if int(num_ops) < 1:
            raise ValueError(f"num_ops must be >= 1, got {num_ops}")
        if int(hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if node_features is not None and int(node_features) < 1:
            raise ValueError(f"node_features must be >= 1, got {node_features}")
        if node_encoder is not None and not isinstance(node_encoder, nn.Module):
            raise TypeError(f"node_encoder must be a torch.nn.Module, got {type(node_encoder).__name__}")
        if node_encoder is not None and node_features is not None:
            raise ValueError("give node_features (a linear map of batch.x) or node_encoder (your module), not both")
        self.num_ops = int(num_ops)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.node_features = None if node_features is None else int(node_features)
        self._custom_node_encoder = node_encoder

    def _build_node_encoder(self) -> None:
        """Create ``self.node_encoder``. Subclasses call it where their first module is created:
        the order of parameter creation sets their initial values for a given torch seed, which the
        published numbers depend on."""
        if self._custom_node_encoder is not None:
            self.node_encoder = self._custom_node_encoder
        elif self.node_features is not None:
            self.node_encoder = nn.Linear(self.node_features, self.hidden)
        else:
            self.node_encoder = nn.Embedding(self.num_ops, self.hidden)
        self._custom_node_encoder = None  # registered as a child module from here on

    def initial_states(self, batch) -> torch.Tensor:
        """``[N, hidden]`` input states of the nodes: the node encoder applied to the op ids, or to
        the node features ``batch.x`` (see the class docstring)."""
        x = getattr(batch, "x", None)
        if isinstance(self.node_encoder, nn.Embedding):
            self._check(batch)
            return self.node_encoder(batch.op)
        if isinstance(self.node_encoder, nn.Linear) and self.node_features is not None:
            if x is None:
                raise ValueError(f"the encoder reads {self.node_features} node features (batch.x), but the batch "
                                 f"has none")
            if x.dim() != 2 or x.shape[1] != self.node_features:
                raise ValueError(f"the encoder reads {self.node_features} node features, batch.x has shape "
                                 f"{list(x.shape)}")
            return self.node_encoder(x.to(self.node_encoder.weight.dtype))
        return self.node_encoder(batch.op if x is None else x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved before the node encoder was pluggable call the op embedding ``embed``.
        for key in [k for k in state_dict if k.startswith(prefix + "embed.")]:
            state_dict[prefix + "node_encoder." + key[len(prefix) + len("embed."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``build_encoder(self.name, **config)``
        rebuilds the module (a custom ``node_encoder`` module excepted)."""
        cfg = {"num_ops": self.num_ops, "hidden": self.hidden, "dropout": self.dropout}
        if self.node_features is not None:
            cfg["node_features"] = self.node_features
        return cfg

    def _check(self, batch) -> None:
        if batch.num_nodes and int(batch.op.max()) >= self.num_ops:
            raise ValueError(f"batch has op id {int(batch.op.max())} but the encoder was built for "
                             f"{self.num_ops} ops")

    def extra_loss(self) -> torch.Tensor | None:
        """A loss term of the last training-mode forward pass that the training loops add to their
        objective (e.g. :class:`~fgp_ext.encoders.NARFormer`'s consistency loss), cleared when read;
        None (the default) when there is none."""
        return None

    def node_embeddings(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        """``[N, out_dim]`` embedding of every node of ``batch``."""
        raise NotImplementedError

    def forward(self, batch) -> torch.Tensor:
        """``[B, out_dim]`` graph embeddings: segment mean of :meth:`node_embeddings`."""
        return segment_mean(self.node_embeddings(batch), batch.node_ptr)
