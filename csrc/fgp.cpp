// The one registration point of fgp_ext: op schemas (TORCH_LIBRARY), their CPU and CUDA kernels
// (TORCH_LIBRARY_IMPL), and the pybind11 module fgp_ext._C whose import runs the registrations.
// Autograd formulas and fake (meta) kernels live in Python: fgp_ext/ops.py.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "ops/csr_transpose.h"
#include "ops/edge_dot.h"
#include "ops/flow_surrogate.h"
#include "ops/gather_segment_sum.h"
#include "ops/segment_sum_csr.h"
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

}  // namespace

TORCH_LIBRARY_IMPL(fgp, CPU, m) {
  m.impl("segment_sum_csr", &fgp::segment_sum_csr_cpu);
  m.impl("gather_segment_sum", &gather_forward<&fgp::gather_segment_sum_cpu>);
  m.impl("edge_dot", &fgp::edge_dot_cpu);
  m.impl("csr_transpose", &fgp::csr_transpose_cpu);
  m.impl("topo_levels", &fgp::topo_levels_cpu);
  m.impl("flow_surrogate", &fgp::flow_surrogate_cpu);
}

#ifdef FGP_WITH_CUDA
TORCH_LIBRARY_IMPL(fgp, CUDA, m) {
  m.impl("segment_sum_csr", &fgp::segment_sum_csr_cuda);
  m.impl("gather_segment_sum", &gather_forward<&fgp::gather_segment_sum_cuda>);
  m.impl("edge_dot", &fgp::edge_dot_cuda);
  m.impl("csr_transpose", &fgp::csr_transpose_cuda);
  m.impl("topo_levels", &fgp::topo_levels_cuda);
  m.impl("flow_surrogate", &fgp::flow_surrogate_cuda);
}
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fgp_ext compiled ops; importing this module registers torch.ops.fgp.*";
#ifdef FGP_WITH_CUDA
  m.attr("cuda_kernels") = true;
#else
  m.attr("cuda_kernels") = false;
#endif
}
