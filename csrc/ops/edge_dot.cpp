#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) { m.def("edge_dot(Tensor a, Tensor b, Tensor index, Tensor indptr) -> Tensor"); }
