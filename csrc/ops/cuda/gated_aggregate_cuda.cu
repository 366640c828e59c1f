#include "ops/gated_aggregate.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per output element, the per-element functions the CPU kernel loops over.
template <typename T>
__global__ void gated_aggregate_kernel(const GatedInputs<T> in, const int64_t* index, const int64_t* indptr, int64_t N,
                                       int64_t F, T eps, T* out) {
  FGP_CUDA_KERNEL_LOOP(t, N * F) {
    const int64_t v = t / F, f = t % F;
    out[t] = gated_row_column(in, index, indptr[v], indptr[v + 1], v, f, eps);
  }
}

template <typename T>
__global__ void gated_row_backward_kernel(const T* grad, const T* out, const GatedInputs<T> in, const int64_t* index,
                                          const int64_t* indptr, int64_t N, int64_t F, T eps, T* scale, T* shift,
                                          T* grad_dst) {
  FGP_CUDA_KERNEL_LOOP(t, N * F) {
    const int64_t v = t / F, f = t % F;
    grad_dst[t] = gated_row_backward_column(grad, out, in, index, indptr[v], indptr[v + 1], v, F, f, eps, scale, shift);
  }
}

// One thread per element of grad_src / grad_value, summed over the transposed CSR (no atomics).
template <typename T>
__global__ void gated_source_backward_kernel(const GatedInputs<T> in, const T* scale, const T* shift,
                                             const int64_t* t_index, const int64_t* t_indptr, int64_t M, int64_t F,
                                             T* grad_src, T* grad_value) {
  FGP_CUDA_KERNEL_LOOP(t, M * F) {
    const int64_t u = t / F, f = t % F;
    gated_source_backward_column(in, scale, shift, t_index, t_indptr[u], t_indptr[u + 1], u, F, f, grad_src,
                                 grad_value);
  }
}

}  // namespace

Tensor gated_aggregate_cuda(const Tensor& gate_dst_in, const Tensor& gate_src_in, const Tensor& value_in,
                            const Tensor& index_in, const Tensor& indptr_in, double eps) {
  check_gated_args(gate_dst_in, gate_src_in, value_in, index_in, indptr_in, eps);
  const auto guard = cuda::guard_for(gate_dst_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in);
  const int64_t N = gate_dst_in.size(0), F = gate_dst_in.size(1);
  auto out = empty_like_shape(gate_dst_in, {N, F});
  if (N * F > 0) {
    FGP_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "gated_aggregate", [&] {
      const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
      gated_aggregate_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          views.in, index.const_data_ptr<int64_t>(), indptr.const_data_ptr<int64_t>(), N, F,
          static_cast<scalar_t>(eps), out.mutable_data_ptr<scalar_t>());
      cuda::check_launch("gated_aggregate");
    });
  }
  return out;
}

std::tuple<Tensor, Tensor, Tensor> gated_aggregate_backward_cuda(const Tensor& grad_in, const Tensor& gate_dst_in,
                                                                 const Tensor& gate_src_in, const Tensor& value_in,
                                                                 const Tensor& index_in, const Tensor& indptr_in,
                                                                 const Tensor& out_in, double eps,
                                                                 const Tensor& t_indptr_in,
                                                                 const Tensor& t_index_in) {
  check_gated_backward_args(grad_in, gate_dst_in, gate_src_in, value_in, index_in, indptr_in, out_in, t_indptr_in,
                            t_index_in, eps);
  const auto guard = cuda::guard_for(gate_dst_in);
  const auto grad = contiguous(grad_in), index = contiguous(index_in), indptr = contiguous(indptr_in);
  const auto out = contiguous(out_in), t_indptr = contiguous(t_indptr_in), t_index = contiguous(t_index_in);
  const int64_t N = gate_dst_in.size(0), M = gate_src_in.size(0), F = gate_dst_in.size(1);
  const auto& like = gate_dst_in;  // dtype and device of every result
  auto grad_dst = empty_like_shape(like, {N, F}), grad_src = empty_like_shape(like, {M, F});
  auto grad_value = empty_like_shape(like, {M, F});
  auto scale = empty_like_shape(like, {N, F}), shift = empty_like_shape(like, {N, F});
  FGP_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "_gated_aggregate_backward", [&] {
    const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
    if (N * F > 0) {
      gated_row_backward_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), views.in, index.const_data_ptr<int64_t>(),
          indptr.const_data_ptr<int64_t>(), N, F, static_cast<scalar_t>(eps), scale.mutable_data_ptr<scalar_t>(),
          shift.mutable_data_ptr<scalar_t>(), grad_dst.mutable_data_ptr<scalar_t>());
      cuda::check_launch("_gated_aggregate_backward");
    }
    if (M * F > 0) {
      gated_source_backward_kernel<scalar_t><<<cuda::blocks_for(M * F), cuda::kThreads, 0, cuda::stream()>>>(
          views.in, scale.const_data_ptr<scalar_t>(), shift.const_data_ptr<scalar_t>(),
          t_index.const_data_ptr<int64_t>(), t_indptr.const_data_ptr<int64_t>(), M, F,
          grad_src.mutable_data_ptr<scalar_t>(), grad_value.mutable_data_ptr<scalar_t>());
      cuda::check_launch("_gated_aggregate_backward");
    }
  });
  return {grad_dst, grad_src, grad_value};
}

namespace {

// The transposed CSR only matters to autograd (read by the backward); the forward ignores it.
Tensor gated_aggregate_op(const Tensor& gate_dst, const Tensor& gate_src, const Tensor& value, const Tensor& index,
                          const Tensor& indptr, double eps, const std::optional<Tensor>&,
                          const std::optional<Tensor>&) {
  return gated_aggregate_cuda(gate_dst, gate_src, value, index, indptr, eps);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) {
  m.impl("gated_aggregate", TORCH_BOX(&fgp::gated_aggregate_op));
  m.impl("_gated_aggregate_backward", TORCH_BOX(&fgp::gated_aggregate_backward_cuda));
}
