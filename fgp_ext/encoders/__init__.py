"""Architecture encoders built on the fgp ops (PyG not needed; :meth:`ArchBatch.from_pyg` bridges).

Every encoder maps an :class:`~fgp_ext.graph.ArchBatch` to node embeddings ``[N, out_dim]``
(:meth:`Encoder.node_embeddings`) and to graph embeddings ``[B, out_dim]`` by segment mean
(:meth:`Encoder.forward`). Inputs are the op ids of the nodes (a learned embedding, i.e. one-hot
op ids times a matrix), or continuous node features (``node_features=F``), or any module
(``node_encoder=``).

Layers usable on their own, on node states and a :class:`~fgp_ext.sparse.CSR` (e.g. inside a PyG
model): :class:`GatedGCNLayer` (fused gated aggregation) and :class:`FlowPass` (FlowerFormer's
forward + backward pass over the topological generations of a DAG).

* :class:`GIN` — graph isomorphism network, 3 layers, layer-concat readout.
* :class:`GatedGCN` — residual gated graph conv, graphs made undirected, residual
  ``0.2 * x_in + 0.8 * x``.
* :class:`FlowerFormer` — flow-aware graph transformer: attention + GRU passes over topological
  generations (forward and reversed), attention restricted to flow-related node pairs.
* :class:`NARFormer` — NAR-Former: a transformer over one token per node (op code, own position,
  predecessors' positions in a topological order), multi-stage fusion by learned queries, and an
  information-flow-consistency augmentation (random other topological orders) with a consistency
  loss (:meth:`Encoder.extra_loss`).
* :class:`MLPEncoder` — a baseline on the flattened per-node one-hot encoding.

Use :func:`build_encoder` (by name) to construct one from a config dict; ``encoder.config`` gives
that dict back, which is what checkpoints store.
"""
from __future__ import annotations

from fgp_ext.encoders.base import Encoder, segment_mean
from fgp_ext.encoders.flowerformer import FlowerFormer, FlowPass
from fgp_ext.encoders.gatedgcn import GatedGCN, GatedGCNLayer
from fgp_ext.encoders.gin import GIN
from fgp_ext.encoders.mlp import MLPEncoder
from fgp_ext.encoders.narformer import NARFormer

#: Encoder classes by CLI / checkpoint name.
ENCODERS: dict[str, type[Encoder]] = {
    "gin": GIN, "gatedgcn": GatedGCN, "mlp": MLPEncoder, "flowerformer": FlowerFormer,
    "narformer": NARFormer}


def build_encoder(name: str, num_ops: int, **config) -> Encoder:
    """Construct the encoder ``name`` (``"gin"``, ``"gatedgcn"``, ``"flowerformer"``, ``"narformer"``, ``"mlp"``) for a vocabulary of
    ``num_ops`` ops; ``config`` goes to the class (``hidden``, ``layers``, ``dropout``, ...)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key == "resgatedgcn":
        key = "gatedgcn"
    if key not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[key](num_ops=num_ops, **config)


__all__ = ["Encoder", "GIN", "GatedGCN", "FlowerFormer", "NARFormer", "MLPEncoder", "ENCODERS", "build_encoder", "segment_mean",
           "GatedGCNLayer", "FlowPass"]
