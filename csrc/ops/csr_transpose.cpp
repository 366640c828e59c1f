#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  m.def("csr_transpose(Tensor index, Tensor indptr, int num_cols) -> (Tensor, Tensor, Tensor)");
}
