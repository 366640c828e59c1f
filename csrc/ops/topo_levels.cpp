#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) { m.def("topo_levels(Tensor indptr, Tensor index, Tensor node_ptr) -> Tensor"); }
