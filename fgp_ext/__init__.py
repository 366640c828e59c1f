"""fgp_ext: fast neural-architecture encoding with flow-based generative pre-training (FGP).

The public surface, smallest first:

* :func:`load` an architecture dataset (``"nb201"`` = the embedded NAS-Bench-201 table),
* :func:`collate` graphs into an :class:`ArchBatch` (CSR both ways, levels, sources: built once),
* :func:`flow_surrogate` of a batch (the FGP pre-training target),
* :mod:`fgp_ext.encoders` (GIN, GatedGCN, MLP on the fgp ops),
* :func:`pretrain`, :func:`finetune`, :func:`evaluate` (FGP pre-training, ranking fine-tuning, metrics),
* :mod:`fgp_ext.ops`: the compiled ``torch.ops.fgp`` kernels for your own encoders.
"""
from fgp_ext import encoders, ops
from fgp_ext.data.formats import load
from fgp_ext.graph import ArchBatch, ArchGraph, batch_from_arrays, collate
from fgp_ext.surrogate import flow_params, flow_surrogate
from fgp_ext.train import evaluate, finetune, pretrain

__version__ = "0.2.0"
__all__ = ["ops", "encoders", "load", "ArchGraph", "ArchBatch", "collate", "batch_from_arrays", "flow_params",
           "flow_surrogate", "pretrain", "finetune", "evaluate", "__version__"]
