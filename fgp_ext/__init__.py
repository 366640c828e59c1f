"""fgp_ext: fast neural-architecture encoding with flow-based generative pre-training (FGP).

The compiled ops live in ``torch.ops.fgp``; :mod:`fgp_ext.ops` has their documented wrappers.
"""
from fgp_ext import ops
from fgp_ext.graph import ArchBatch, ArchGraph, batch_from_arrays, collate
from fgp_ext.surrogate import flow_params, flow_surrogate

__version__ = "0.1.0"
__all__ = ["ops", "ArchGraph", "ArchBatch", "collate", "batch_from_arrays", "flow_params", "flow_surrogate",
           "__version__"]
