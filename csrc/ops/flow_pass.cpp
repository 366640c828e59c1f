#include "ops/stable.h"

// One flow pass (attention over predecessors + GRU cell) over all generations of a level schedule.
// flow_pass has no C++ kernel: Python registers its CompositeImplicitAutograd kernel (which calls
// _flow_pass_forward and returns its first output) and the autograd formula, which saves the
// forward's per-level intermediates and calls _flow_pass_backward.
STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  m.def("flow_pass(Tensor h0, Tensor level_ptr, Tensor indptr, Tensor index, Tensor group_level_ptr, "
        "Tensor group_perm, Tensor group_ptr, Tensor group_src, Tensor att_dst, Tensor att_src, Tensor att_bias, "
        "Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) -> Tensor");
  // Its kernels: the forward with the per-level intermediates the backward reads, and the backward
  // (its saved tensors are the forward's 6 outputs, followed by the 15 inputs).
  m.def("_flow_pass_forward(Tensor h0, Tensor level_ptr, Tensor indptr, Tensor index, Tensor group_level_ptr, "
        "Tensor group_perm, Tensor group_ptr, Tensor group_src, Tensor att_dst, Tensor att_src, Tensor att_bias, "
        "Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) "
        "-> (Tensor h, Tensor msg, Tensor rz, Tensor n, Tensor gh_n, Tensor logit)");
  m.def("_flow_pass_backward(Tensor grad, Tensor h, Tensor msg, Tensor rz, Tensor n, Tensor gh_n, Tensor logit, "
        "Tensor h0, Tensor level_ptr, Tensor indptr, Tensor index, Tensor group_level_ptr, Tensor group_perm, "
        "Tensor group_ptr, Tensor group_src, Tensor att_dst, Tensor att_src, Tensor att_bias, Tensor w_ih, "
        "Tensor w_hh, Tensor b_ih, Tensor b_hh) "
        "-> (Tensor grad_h0, Tensor grad_att_dst, Tensor grad_att_src, Tensor grad_att_bias, Tensor grad_w_ih, "
        "Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
}
