#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  // As gather_segment_sum, the transposed CSR (t_*) is read only by the backward pass: a batch
  // computes it once (csr_transpose) and every layer's backward reuses it.
  m.def("gather_attention(Tensor x, Tensor logit, Tensor index, Tensor indptr, Tensor? t_indptr=None, "
        "Tensor? t_index=None, Tensor? t_perm=None) -> Tensor");
  // Its backward (called by the autograd formula in fgp_ext/ops.py).
  m.def("_gather_attention_backward(Tensor grad, Tensor x, Tensor logit, Tensor index, Tensor indptr, "
        "Tensor out, Tensor t_indptr, Tensor t_index, Tensor t_perm) -> (Tensor grad_x, Tensor grad_logit)");
}
