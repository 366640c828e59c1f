#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) { m.def("segment_sum_csr(Tensor src, Tensor indptr) -> Tensor"); }
