#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  // Sparse dot-product attention over a CSR of (query, key) pairs (flow-aware global attention).
  // p > 0: dropout on the attention weights, its mask a hash of (seed, e * H + h) (see dot_attention.h).
  // As gather_segment_sum, the transposed CSR (t_*) is read only by the backward pass.
  m.def("dot_attention(Tensor q, Tensor k, Tensor v, Tensor index, Tensor indptr, float scale, "
        "Tensor? t_indptr=None, Tensor? t_index=None, Tensor? t_perm=None, float p=0., int seed=0) -> Tensor");
  // Its backward (called by the autograd formula in fgp_ext/ops.py).
  m.def("_dot_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor index, Tensor indptr, Tensor out, "
        "float scale, Tensor t_indptr, Tensor t_index, Tensor t_perm, float p=0., int seed=0) "
        "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
}
