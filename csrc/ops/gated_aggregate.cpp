#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  // GatedGCN's edge-gated, normalised aggregation; t_indptr/t_index (the transposed CSR without
  // its perm: the backward recomputes every gate from node rows) are read by the backward only.
  m.def("gated_aggregate(Tensor gate_dst, Tensor gate_src, Tensor value, Tensor index, Tensor indptr, "
        "float eps=1e-6, Tensor? t_indptr=None, Tensor? t_index=None) -> Tensor");
  // Its backward (called by the autograd formula in fgp_ext/ops.py).
  m.def("_gated_aggregate_backward(Tensor grad, Tensor gate_dst, Tensor gate_src, Tensor value, Tensor index, "
        "Tensor indptr, Tensor out, float eps, Tensor t_indptr, Tensor t_index) -> "
        "(Tensor grad_dst, Tensor grad_src, Tensor grad_value)");
}
