#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  m.def("flow_pairs(Tensor indptr, Tensor index, Tensor node_ptr, Tensor topo) -> (Tensor pair_indptr, "
        "Tensor pair_index, Tensor pair_perm)");
}
