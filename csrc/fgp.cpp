// The one registration point of fgp_ext: op schemas (TORCH_LIBRARY), their CPU and CUDA kernels
// (TORCH_LIBRARY_IMPL), and the pybind11 module fgp_ext._C whose import runs the registrations.
// Autograd formulas and fake (meta) kernels live in Python: fgp_ext/ops.py.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "ops/csr_transpose.h"
#include "ops/dropout.h"
#include "ops/dot_attention.h"
#include "ops/edge_dot.h"
#include "ops/flow_pairs.h"
#include "ops/flow_pass.h"
#include "ops/flow_pass_autograd.h"
#include "ops/flow_surrogate.h"
#include "ops/gather_attention.h"
#include "ops/gather_segment_sum.h"
#include "ops/gated_aggregate.h"
#include "ops/level_schedule.h"
#include "ops/segment_sum_csr.h"
#include "ops/select_graphs.h"
#include "ops/topo_levels.h"

TORCH_LIBRARY(fgp, m) {
  m.def("segment_sum_csr(Tensor src, Tensor indptr) -> Tensor");
  // t_indptr/t_index/t_perm: optional transposed CSR (csr_transpose of index/indptr), read only by
  // the backward pass, so a batch computes it once and every layer's backward reuses it.
  m.def("gather_segment_sum(Tensor x, Tensor index, Tensor indptr, Tensor? weight=None, "
        "Tensor? t_indptr=None, Tensor? t_index=None, Tensor? t_perm=None) -> Tensor");
  m.def("edge_dot(Tensor a, Tensor b, Tensor index, Tensor indptr) -> Tensor");
  m.def("csr_transpose(Tensor index, Tensor indptr, int num_cols) -> (Tensor, Tensor, Tensor)");
  m.def("topo_levels(Tensor indptr, Tensor index, Tensor node_ptr) -> Tensor");
  m.def("flow_surrogate(Tensor op, Tensor indptr, Tensor index, Tensor node_ptr, Tensor is_source, "
        "Tensor r, Tensor P, Tensor W, float alpha, str schedule=\"auto\", "
        "Tensor? t_indptr=None, Tensor? t_index=None) -> Tensor");
  // A mini-batch of a collated batch: (node_ptr, ids, op, level, is_source, in_indptr, in_index,
  // in_perm, out_indptr, out_index, out_perm) -> the same fields (graph inserted after node_ptr).
  m.def("select_graphs(Tensor[] args) -> Tensor[]");
  // Flow-aware encoders: the level schedule of a batch, flow-related pairs, fused attention.
  m.def("level_schedule(Tensor indptr, Tensor index, Tensor level) -> Tensor[]");
  m.def("flow_pairs(Tensor indptr, Tensor index, Tensor node_ptr, Tensor topo) -> "
        "(Tensor pair_indptr, Tensor pair_index, Tensor pair_perm)");
  // As gather_segment_sum, the transposed CSR (t_*) is read only by the backward pass.
  m.def("gather_attention(Tensor x, Tensor logit, Tensor index, Tensor indptr, Tensor? t_indptr=None, "
        "Tensor? t_index=None, Tensor? t_perm=None) -> Tensor");
  // One flow pass (attention over predecessors + GRU cell) over all generations of a level schedule.
  m.def("flow_pass(Tensor h0, Tensor level_ptr, Tensor indptr, Tensor index, Tensor group_level_ptr, "
        "Tensor group_perm, Tensor group_ptr, Tensor group_src, Tensor att_dst, Tensor att_src, Tensor att_bias, "
        "Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) -> Tensor");
  // Its kernels (the autograd formula, registered below in C++, calls them): the forward with the
  // per-level intermediates the backward reads, and the backward.
  m.def("flow_pass_train(Tensor[] args) -> Tensor[]");
  m.def("flow_pass_backward(Tensor grad, Tensor[] saved, Tensor[] args) -> Tensor[]");
  // Sparse dot-product attention over a CSR of (query, key) pairs (flow-aware global attention).
  // p > 0: dropout on the attention weights, its mask a hash of (seed, e * H + h) (see dot_attention.h).
  m.def("dot_attention(Tensor q, Tensor k, Tensor v, Tensor index, Tensor indptr, float scale, "
        "Tensor? t_indptr=None, Tensor? t_index=None, Tensor? t_perm=None, float p=0., int seed=0) -> Tensor");
  m.def("dot_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor index, Tensor indptr, Tensor out, "
        "float scale, Tensor t_indptr, Tensor t_index, Tensor t_perm, float p=0., int seed=0) "
        "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  m.def("gather_attention_backward(Tensor grad, Tensor x, Tensor logit, Tensor index, Tensor indptr, "
        "Tensor out, Tensor t_indptr, Tensor t_index, Tensor t_perm) -> (Tensor grad_x, Tensor grad_logit)");
  // GatedGCN's edge-gated, normalised aggregation; t_indptr/t_index (the transposed CSR without
  // its perm: the backward recomputes every gate from node rows) are read by the backward only.
  m.def("gated_aggregate(Tensor gate_dst, Tensor gate_src, Tensor value, Tensor index, Tensor indptr, "
        "float eps=1e-6, Tensor? t_indptr=None, Tensor? t_index=None) -> Tensor");
  m.def("gated_aggregate_backward(Tensor grad, Tensor gate_dst, Tensor gate_src, Tensor value, Tensor index, "
        "Tensor indptr, Tensor out, float eps, Tensor t_indptr, Tensor t_index) -> "
        "(Tensor grad_dst, Tensor grad_src, Tensor grad_value)");
  // Dropout with a counter-based mask: a function of (seed, element index), the same on every device.
  m.def("dropout(Tensor x, float p, int seed) -> Tensor");
}

namespace {

// The transposed-CSR arguments only matter to autograd; the forward kernels ignore them.
template <at::Tensor (*Kernel)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const std::optional<at::Tensor>&)>
at::Tensor gather_forward(const at::Tensor& x, const at::Tensor& index, const at::Tensor& indptr,
                          const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>&,
                          const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  return Kernel(x, index, indptr, weight);
}

template <at::Tensor (*Kernel)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>
at::Tensor attention_forward(const at::Tensor& x, const at::Tensor& logit, const at::Tensor& index,
                             const at::Tensor& indptr, const std::optional<at::Tensor>&,
                             const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  return Kernel(x, logit, index, indptr);
}

template <std::vector<at::Tensor> (*Kernel)(at::TensorList)>
at::Tensor flow_pass_output(const at::Tensor& h0, const at::Tensor& level_ptr, const at::Tensor& indptr,
                            const at::Tensor& index, const at::Tensor& group_level_ptr, const at::Tensor& group_perm,
                            const at::Tensor& group_ptr, const at::Tensor& group_src, const at::Tensor& att_dst,
                            const at::Tensor& att_src, const at::Tensor& att_bias, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh) {
  return Kernel({h0, level_ptr, indptr, index, group_level_ptr, group_perm, group_ptr, group_src, att_dst, att_src,
                 att_bias, w_ih, w_hh, b_ih, b_hh})[0];
}

template <at::Tensor (*Kernel)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, double, double, int64_t)>
at::Tensor dot_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& index,
                                 const at::Tensor& indptr, double scale, const std::optional<at::Tensor>&,
                                 const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, double p,
                                 int64_t seed) {
  return Kernel(q, k, v, index, indptr, scale, p, seed);
}

template <at::Tensor (*Kernel)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, double)>
at::Tensor gated_forward(const at::Tensor& gate_dst, const at::Tensor& gate_src, const at::Tensor& value,
                         const at::Tensor& index, const at::Tensor& indptr, double eps,
                         const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  return Kernel(gate_dst, gate_src, value, index, indptr, eps);
}

}  // namespace

TORCH_LIBRARY_IMPL(fgp, CPU, m) {
  m.impl("segment_sum_csr", &fgp::segment_sum_csr_cpu);
  m.impl("gather_segment_sum", &gather_forward<&fgp::gather_segment_sum_cpu>);
  m.impl("edge_dot", &fgp::edge_dot_cpu);
  m.impl("csr_transpose", &fgp::csr_transpose_cpu);
  m.impl("topo_levels", &fgp::topo_levels_cpu);
  m.impl("flow_surrogate", &fgp::flow_surrogate_cpu);
  m.impl("select_graphs", &fgp::select_graphs_cpu);
  m.impl("level_schedule", &fgp::level_schedule_cpu);
  m.impl("flow_pairs", &fgp::flow_pairs_cpu);
  m.impl("gather_attention", &attention_forward<&fgp::gather_attention_cpu>);
  m.impl("gather_attention_backward", &fgp::gather_attention_backward_cpu);
  m.impl("dot_attention", &dot_attention_forward<&fgp::dot_attention_cpu>);
  m.impl("dot_attention_backward", &fgp::dot_attention_backward_cpu);
  m.impl("flow_pass", &flow_pass_output<&fgp::flow_pass_forward_cpu>);
  m.impl("flow_pass_train", &fgp::flow_pass_forward_cpu);
  m.impl("flow_pass_backward", &fgp::flow_pass_backward_cpu);
  m.impl("gated_aggregate", &gated_forward<&fgp::gated_aggregate_cpu>);
  m.impl("gated_aggregate_backward", &fgp::gated_aggregate_backward_cpu);
  m.impl("dropout", &fgp::dropout_cpu);
}

#ifdef FGP_WITH_CUDA
TORCH_LIBRARY_IMPL(fgp, CUDA, m) {
  m.impl("segment_sum_csr", &fgp::segment_sum_csr_cuda);
  m.impl("gather_segment_sum", &gather_forward<&fgp::gather_segment_sum_cuda>);
  m.impl("edge_dot", &fgp::edge_dot_cuda);
  m.impl("csr_transpose", &fgp::csr_transpose_cuda);
  m.impl("topo_levels", &fgp::topo_levels_cuda);
  m.impl("flow_surrogate", &fgp::flow_surrogate_cuda);
  m.impl("select_graphs", &fgp::select_graphs_cuda);
  m.impl("level_schedule", &fgp::level_schedule_cuda);
  m.impl("flow_pairs", &fgp::flow_pairs_cuda);
  m.impl("gather_attention", &attention_forward<&fgp::gather_attention_cuda>);
  m.impl("gather_attention_backward", &fgp::gather_attention_backward_cuda);
  m.impl("dot_attention", &dot_attention_forward<&fgp::dot_attention_cuda>);
  m.impl("dot_attention_backward", &fgp::dot_attention_backward_cuda);
  m.impl("flow_pass", &flow_pass_output<&fgp::flow_pass_forward_cuda>);
  m.impl("flow_pass_train", &fgp::flow_pass_forward_cuda);
  m.impl("flow_pass_backward", &fgp::flow_pass_backward_cuda);
  m.impl("gated_aggregate", &gated_forward<&fgp::gated_aggregate_cuda>);
  m.impl("gated_aggregate_backward", &fgp::gated_aggregate_backward_cuda);
  m.impl("dropout", &fgp::dropout_cuda);
}
#endif

// The one autograd formula written in C++ (see ops/flow_pass_autograd.h); the others are in
// fgp_ext/ops.py.
TORCH_LIBRARY_IMPL(fgp, Autograd, m) { m.impl("flow_pass", &fgp::flow_pass_autograd); }

PYBIND11_MODULE(_C, m) {
  m.doc() = "fgp_ext compiled ops; importing this module registers torch.ops.fgp.*";
#ifdef FGP_WITH_CUDA
  m.attr("cuda_kernels") = true;
#else
  m.attr("cuda_kernels") = false;
#endif
}
