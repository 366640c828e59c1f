#include "ops/stable.h"

// A mini-batch of a collated batch: (node_ptr, ids, op, level, is_source, in_indptr, in_index,
// in_perm, out_indptr, out_index, out_perm) -> the same fields (graph inserted after node_ptr).
STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  m.def("select_graphs(Tensor node_ptr, Tensor ids, Tensor op, Tensor level, Tensor is_source, Tensor in_indptr, "
        "Tensor in_index, Tensor in_perm, Tensor out_indptr, Tensor out_index, Tensor out_perm) -> (Tensor node_ptr, "
        "Tensor graph, Tensor op, Tensor level, Tensor is_source, Tensor in_indptr, Tensor in_index, Tensor in_perm, "
        "Tensor out_indptr, Tensor out_index, Tensor out_perm)");
}
