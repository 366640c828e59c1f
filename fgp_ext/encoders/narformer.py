"""NAR-Former: a transformer over a token sequence that encodes operations and topology.

After "NAR-Former: Neural Architecture Representation Learning towards Holistic Attributes
Prediction" (Yi et al., CVPR 2023); the paper and its public code were read for understanding,
none of the code is used. Three parts:

1. **Tokenizer** (:mod:`fgp_ext.encoders.narformer_tokens`): one token per node,
   ``[op code | own position code | sum of its predecessors' position codes]`` (sinusoidal codes),
   positions taken in a topological order of the DAG. A linear map brings the tokens to ``hidden``.
2. **Multi-stage fusion transformer**: stage 1 is ``layers`` pre-norm transformer blocks
   (self-attention over the graph's tokens, feed-forward), giving the *memory*. Each later stage
   compresses into fewer learned queries (``fusion``, default 4, 2, 1): stage 2's queries attend
   over the memory; every further stage first lets the previous stage's queries read the memory
   again (a fusion block: attention with the previous queries over the memory, feed-forward) and
   then its own queries attend over that fused summary. The last stage's query (mean over its
   queries when there are several), layer-normed, is the architecture embedding
   (``out_dim = hidden``).
3. **Information-flow-consistency augmentation**: in training mode with ``consistency > 0`` the
   forward pass also encodes ``augment`` random other topological orders of every graph (the same
   DAG, the same reachability, other sequence positions:
   :func:`~fgp_ext.encoders.narformer_tokens.random_topological_rank`) and records the architecture
   consistency loss ``consistency * mean((z - z_aug) ** 2)`` between the embeddings. The
   reordered passes reuse the canonical pass's dropout masks: with fresh masks the gap measures
   dropout noise, which the model can only lower by shrinking every embedding towards one point
   (it did: the spread of the embeddings fell by 10^4 in ten fine-tuning epochs). The training
   loops (:func:`fgp_ext.train.pretrain`, :func:`fgp_ext.train.finetune`) add it to their loss
   through :meth:`Encoder.extra_loss`, so pre-training and fine-tuning both use it unchanged. The
   paper ties predictions; tying the embeddings serves the flow-surrogate, auxiliary and score heads
   alike. The returned embedding is always the canonical order's.

Differences from the paper: tokens are mapped to ``hidden`` by a learned linear layer (the paper
feeds the 192-wide codes directly), so ``--hidden`` sets the width as for the other encoders; the
codes are the transformer's sinusoids (frequencies ``10000^(-j/half)``, smooth in the position;
the paper's default NeRF-style codes ``sin(pi f x)`` have frequencies ``f`` spaced linearly up to
``2^31``, which on integer positions behave like arbitrary fixed codes); there is no
depth token and no end token (the fusion queries do the pooling); the augmented orders are drawn
anew at every step rather than generated once before training, and cover every topological order
(the paper's generator permutes the middle nodes of a cell and keeps the valid results).

The encoder's output depends on the node numbering wherever several topological orders exist (the
canonical order is a function of it): that is what the consistency loss trains away.
:meth:`node_embeddings` broadcasts the architecture embedding to the graph's nodes so that the
shared interface (graph embedding = segment mean of node embeddings) holds; :meth:`token_states`
gives the memory, one state per node.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fgp_ext.encoders.base import Dropout, Encoder
from fgp_ext.encoders.narformer_tokens import local_index, random_topological_rank, token_dim, tokenize, \
    topological_rank

__all__ = ["NARFormer"]


class _Attention(nn.Module):
    """Multi-head attention of ``query [B, q, d]`` over ``memory [B, m, d]`` (``mask [B, m]``: keys
    that exist; None: all)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = int(heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nq, d = query.shape
        nm = memory.shape[1]
        h, dh = self.heads, d // self.heads
        q = self.q(query).view(b, nq, h, dh).transpose(1, 2)
        k, v = self.kv(memory).view(b, nm, 2, h, dh).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(out.transpose(1, 2).reshape(b, nq, d))


class _FeedForward(nn.Module):
    """Pre-norm feed-forward block with a residual: ``x + drop(W2 relu(W1 norm(x)))``."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.net(self.norm(x)))


class _EncoderBlock(nn.Module):
    """Stage-1 block: pre-norm self-attention with a residual, then feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.drop = Dropout(dropout)
        self.ffn = _FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return self.ffn(x + self.drop(self.attn(y, y, mask)))


class _Compress(nn.Module):
    """Learned queries attend over (normed) inputs; no residual (the shape changes), then
    feed-forward: ``[B, m, d] -> [B, q, d]``."""

    def __init__(self, dim: int, heads: int, dropout: float, queries: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * dim ** -0.5)
        self.norm = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.drop = Dropout(dropout)
        self.ffn = _FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.ffn(self.drop(self.attn(q, self.norm(x), mask)))


class _Fuse(nn.Module):
    """The previous stage's queries read the memory again: ``[B, q, d]`` (queries) over
    ``[B, m, d]`` (memory) -> ``[B, q, d]``, then feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_m = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.drop = Dropout(dropout)
        self.ffn = _FeedForward(dim, dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.drop(self.attn(self.norm_q(q), self.norm_m(memory), mask)))


class NARFormer(Encoder):
    """NAR-Former encoder (module docstring), ``out_dim = hidden``.

    Args:
        num_ops: op vocabulary size.
        hidden: model width (divisible by ``heads``).
        layers: stage-1 transformer blocks.
        heads: attention heads.
        dropout: dropout after every attention and feed-forward block.
        fusion: learned queries of each later stage (e.g. ``(4, 2, 1)``; ``()`` pools the memory by
            its mean instead).
        op_dim, pos_dim, src_dim: widths of the three sinusoidal codes of a token (even).
        consistency: weight of the architecture consistency loss in training (0: no augmentation).
        augment: random topological orders encoded per graph and training step for that loss.
        node_features, node_encoder: continuous node inputs instead of op ids (see
            :class:`~fgp_ext.encoders.Encoder`); their states are added to the mapped topology
            tokens, which then carry no op code.
    """

    name = "narformer"

    def __init__(self, num_ops: int, hidden: int = 128, layers: int = 3, heads: int = 4, dropout: float = 0.1,
                 fusion=(4, 2, 1), op_dim: int = 32, pos_dim: int = 32, src_dim: int = 32,
                 consistency: float = 1.0, augment: int = 1, node_features: int | None = None,
                 node_encoder: nn.Module | None = None):
        super().__init__(num_ops, hidden, dropout, node_features, node_encoder)
        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if int(heads) < 1 or self.hidden % int(heads):
            raise ValueError(f"heads must be >= 1 and divide hidden ({self.hidden}), got {heads}")
        fusion = [int(q) for q in (fusion or ())]
        if any(q < 1 for q in fusion):
            raise ValueError(f"every fusion stage needs >= 1 query, got {fusion}")
        for name, d in (("op_dim", op_dim), ("pos_dim", pos_dim), ("src_dim", src_dim)):
            if int(d) < 2 or int(d) % 2:
                raise ValueError(f"{name} must be even and >= 2, got {d}")
        if not float(consistency) >= 0.0:
            raise ValueError(f"consistency must be >= 0, got {consistency}")
        if int(augment) < 0:
            raise ValueError(f"augment must be >= 0, got {augment}")
        self.layers, self.heads, self.fusion = int(layers), int(heads), fusion
        self.op_dim, self.pos_dim, self.src_dim = int(op_dim), int(pos_dim), int(src_dim)
        self.consistency, self.augment = float(consistency), int(augment)
        self._reads_features = node_features is not None or node_encoder is not None
        if self._reads_features:
            self._build_node_encoder()
        else:
            self._custom_node_encoder = None
            self.node_encoder = None
        self.token_proj = nn.Linear(token_dim(self.op_dim, self.pos_dim, self.src_dim, not self._reads_features),
                                    self.hidden)
        self.blocks = nn.ModuleList(_EncoderBlock(self.hidden, self.heads, self.dropout) for _ in range(self.layers))
        self.compress = nn.ModuleList(_Compress(self.hidden, self.heads, self.dropout, q) for q in self.fusion)
        self.fuse = nn.ModuleList(_Fuse(self.hidden, self.heads, self.dropout) for _ in self.fusion[1:])
        self.norm = nn.LayerNorm(self.hidden)
        self.out_dim = self.hidden
        self._pending_loss: torch.Tensor | None = None

    @property
    def config(self) -> dict:
        return {**super().config, "layers": self.layers, "heads": self.heads, "fusion": list(self.fusion),
                "op_dim": self.op_dim, "pos_dim": self.pos_dim, "src_dim": self.src_dim,
                "consistency": self.consistency, "augment": self.augment}

    def tokens(self, batch, rank: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, token_dim]`` NAR-Former tokens of ``batch`` with the sequence positions ``rank``
        (default: the canonical topological order), as this encoder reads them."""
        if not self._reads_features:
            self._check(batch)
        return tokenize(batch, rank, self.op_dim, self.pos_dim, self.src_dim, include_op=not self._reads_features)

    def _padded(self, batch, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the attention is permutation-equivariant and the fusion queries pool: the positions live
        # in the tokens, so the padded layout keeps the node order
        b = batch.num_graphs
        nmax = int(batch.node_ptr.diff().max()) if batch.num_nodes else 1
        slot = batch.graph * nmax + local_index(batch)
        x = h.new_zeros(b * nmax, h.shape[1]).index_copy(0, slot, h).view(b, nmax, -1)
        mask = torch.zeros(b * nmax, dtype=torch.bool, device=h.device).index_fill_(0, slot, True).view(b, nmax)
        return x, mask

    def _memory(self, batch, rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.token_proj(self.tokens(batch, rank))
        if self._reads_features:
            h = h + self.initial_states(batch)
        x, mask = self._padded(batch, h)
        for block in self.blocks:
            x = block(x, mask)
        return x, mask

    def _embed(self, batch, rank: torch.Tensor) -> torch.Tensor:
        memory, mask = self._memory(batch, rank)
        if not self.fusion:
            m = mask.unsqueeze(-1).to(memory.dtype)
            return self.norm((memory * m).sum(1) / m.sum(1).clamp_min(1.0))
        q = self.compress[0](memory, mask)
        for fuse, compress in zip(self.fuse, self.compress[1:]):
            q = compress(fuse(q, memory, mask), None)
        return self.norm(q.mean(1))

    def token_states(self, batch, rank: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, hidden]`` stage-1 states (the memory), one per node."""
        rank = topological_rank(batch) if rank is None else rank
        memory, _ = self._memory(batch, rank)
        nmax = memory.shape[1]
        return memory.reshape(-1, memory.shape[-1]).index_select(0, batch.graph * nmax + local_index(batch))

    def forward(self, batch) -> torch.Tensor:
        """``[B, hidden]`` architecture embeddings of the canonical sequences. In training mode with
        ``consistency > 0`` and ``augment > 0`` the consistency loss against ``augment`` random
        topological orders is computed as well (read it with :meth:`extra_loss`)."""
        if batch.num_graphs == 0:
            return torch.zeros(0, self.hidden, device=batch.op.device)
        self._pending_loss = None
        augment = self.training and self.consistency > 0.0 and self.augment > 0
        if augment:
            ranks = [random_topological_rank(batch) for _ in range(self.augment)]
            rng = torch.get_rng_state()
        z = self._embed(batch, topological_rank(batch))
        if augment:
            # every reordered pass draws the canonical pass's dropout masks (the masks come from
            # torch's generator; nodes keep their slots), so the gap measures the order alone
            after, diffs = torch.get_rng_state(), []
            for rank in ranks:
                torch.set_rng_state(rng)
                diffs.append((z - self._embed(batch, rank)).pow(2).mean())
            torch.set_rng_state(after)
            self._pending_loss = self.consistency * torch.stack(diffs).mean()
        return z

    def extra_loss(self) -> torch.Tensor | None:
        """The architecture consistency loss of the last training-mode forward (None when it had
        none); cleared when read."""
        loss, self._pending_loss = self._pending_loss, None
        return loss

    def node_embeddings(self, batch) -> torch.Tensor:
        """The architecture embedding broadcast to the graph's nodes (``[N, hidden]``)."""
        return self.forward(batch).index_select(0, batch.graph)
