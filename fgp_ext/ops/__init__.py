"""fgp_ext's compiled ops (``torch.ops.fgp``) with documented wrappers, autograd formulas, fake
(meta) kernels and CUDA fallbacks, one module per op family:

* :mod:`~fgp_ext.ops.message_passing` — segment sums, CSR sparse-dense product, per-edge dot
  products, CSR transpose, GatedGCN's gated aggregation;
* :mod:`~fgp_ext.ops.dag` — topological generations, the FGP flow surrogate, mini-batch selection,
  level schedules, flow-related pairs;
* :mod:`~fgp_ext.ops.attention` — fused sparse attention (softmax-gather-sum, dot-product);
* :mod:`~fgp_ext.ops.flow` — the fused flow pass of flow-aware encoders;
* :mod:`~fgp_ext.ops.dropout` — counter-based dropout.

Conventions shared by every op:

* Every op that takes a graph takes one :class:`~fgp_ext.sparse.CSR` by destination: row ``i``
  holds the entries ``index[indptr[i]:indptr[i+1]]``, for a graph node ``i``'s predecessors (edge
  sources). :func:`fgp_ext.sparse.csr_from_edge_index` builds one from a PyG ``edge_index``; a CSR
  carrying its ``transpose`` spares the backward passes from rebuilding it.
* Index tensors are ``int64``; features are ``float32`` or ``float64``.
* Every reduction sums in entry order inside one worker: results are bitwise reproducible across
  runs and thread counts (no atomics).

When the library was built without CUDA kernels (a CPU-only torch), CUDA tensors still work: the
ops fall back to the plain-PyTorch implementations of :mod:`fgp_ext.reference`.
"""
from fgp_ext.ops import attention, dag, dropout as _dropout_module, flow, message_passing
from fgp_ext.ops._library import CUDA_KERNELS, LIBRARY_PATH, public_op_names
from fgp_ext.ops.attention import *  # noqa: F401,F403
from fgp_ext.ops.dag import *  # noqa: F401,F403
from fgp_ext.ops.dropout import *  # noqa: F401,F403
from fgp_ext.ops.flow import *  # noqa: F401,F403
from fgp_ext.ops.message_passing import *  # noqa: F401,F403
from fgp_ext.sparse import CSR

__all__ = ["CSR", "CUDA_KERNELS", *message_passing.__all__, *dag.__all__, *attention.__all__, *flow.__all__,
           *_dropout_module.__all__]
