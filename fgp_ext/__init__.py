"""fgp_ext: fast neural-architecture encoding with flow-based generative pre-training (FGP).

The public surface, smallest first:

* :mod:`fgp_ext.ops`: the compiled ``torch.ops.fgp`` kernels for your own encoders, every graph
  given as a :class:`~fgp_ext.sparse.CSR` (:mod:`fgp_ext.sparse` builds one from a PyG edge index),
* :func:`load` an architecture dataset (``"nb201"`` = the embedded NAS-Bench-201 table),
* :func:`collate` graphs into an :class:`ArchBatch` (CSR both ways, levels, sources: built once;
  :meth:`ArchBatch.from_pyg` / :meth:`ArchBatch.to_pyg` bridge to PyTorch Geometric),
* :func:`flow_surrogate` of a batch (the FGP pre-training target),
* :mod:`fgp_ext.encoders` (GIN, GatedGCN, FlowerFormer, MLP on the fgp ops),
* :func:`pretrain`, :func:`finetune`, :func:`evaluate` (FGP pre-training, ranking fine-tuning, metrics).

Imports are lazy (PEP 562): ``import fgp_ext.ops`` loads the ops and what they need, not the
training pipeline; the names below are imported on first use. The layers, each importing only
those before it: ``sparse < ops < graph < encoders < train < cli`` (``data`` needs numpy only).
"""
from __future__ import annotations

import importlib

__version__ = "0.3.0"

#: public name -> the module that defines it
_EXPORTS = {
    "load": "fgp_ext.data.formats",
    "ArchGraph": "fgp_ext.data.arch",
    "ArchBatch": "fgp_ext.graph",
    "collate": "fgp_ext.graph",
    "batch_from_arrays": "fgp_ext.graph",
    "CSR": "fgp_ext.sparse",
    "csr_from_edge_index": "fgp_ext.sparse",
    "flow_params": "fgp_ext.surrogate",
    "flow_surrogate": "fgp_ext.surrogate",
    "pretrain": "fgp_ext.train",
    "finetune": "fgp_ext.train",
    "evaluate": "fgp_ext.train",
}
_SUBMODULES = ("ops", "sparse", "encoders", "graph", "data", "train", "surrogate", "metrics", "reference",
               "proxies", "networks", "latency", "levels")

__all__ = ["ops", "encoders", *_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"fgp_ext.{name}")
    else:
        raise AttributeError(f"module 'fgp_ext' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
