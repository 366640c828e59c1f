#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  // t_indptr/t_index/t_perm: optional transposed CSR (csr_transpose of index/indptr), read only by
  // the backward pass, so a batch computes it once and every layer's backward reuses it.
  m.def("gather_segment_sum(Tensor x, Tensor index, Tensor indptr, Tensor? weight=None, "
        "Tensor? t_indptr=None, Tensor? t_index=None, Tensor? t_perm=None) -> Tensor");
}
