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

at::Tensor gated_aggregate_cuda(const at::Tensor& gate_dst_in, const at::Tensor& gate_src_in,
                                const at::Tensor& value_in, const at::Tensor& index_in, const at::Tensor& indptr_in,
                                double eps) {
  check_gated_args(gate_dst_in, gate_src_in, value_in, index_in, indptr_in, eps);
  c10::cuda::CUDAGuard guard(gate_dst_in.device());
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const int64_t N = gate_dst_in.size(0), F = gate_dst_in.size(1);
  auto out = at::empty({N, F}, gate_dst_in.options());
  if (N * F > 0) {
    AT_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "gated_aggregate_cuda", [&] {
      const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
      gated_aggregate_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          views.in, index.data_ptr<int64_t>(), indptr.data_ptr<int64_t>(), N, F, static_cast<scalar_t>(eps),
          out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_aggregate_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& gate_dst_in, const at::Tensor& gate_src_in, const at::Tensor& value_in,
    const at::Tensor& index_in, const at::Tensor& indptr_in, const at::Tensor& out_in, double eps,
    const at::Tensor& t_indptr_in, const at::Tensor& t_index_in) {
  check_gated_backward_args(grad_in, gate_dst_in, gate_src_in, value_in, index_in, indptr_in, out_in, t_indptr_in,
                            t_index_in, eps);
  c10::cuda::CUDAGuard guard(gate_dst_in.device());
  const auto grad = grad_in.contiguous(), index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const auto out = out_in.contiguous(), t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous();
  const int64_t N = gate_dst_in.size(0), M = gate_src_in.size(0), F = gate_dst_in.size(1);
  const auto opts = gate_dst_in.options();
  auto grad_dst = at::empty({N, F}, opts), grad_src = at::empty({M, F}, opts), grad_value = at::empty({M, F}, opts);
  auto scale = at::empty({N, F}, opts), shift = at::empty({N, F}, opts);
  AT_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "gated_aggregate_backward_cuda", [&] {
    const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
    if (N * F > 0) {
      gated_row_backward_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          grad.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), views.in, index.data_ptr<int64_t>(),
          indptr.data_ptr<int64_t>(), N, F, static_cast<scalar_t>(eps), scale.data_ptr<scalar_t>(),
          shift.data_ptr<scalar_t>(), grad_dst.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (M * F > 0) {
      gated_source_backward_kernel<scalar_t><<<cuda::blocks_for(M * F), cuda::kThreads, 0, cuda::stream()>>>(
          views.in, scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), t_index.data_ptr<int64_t>(),
          t_indptr.data_ptr<int64_t>(), M, F, grad_src.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_dst, grad_src, grad_value};
}

}  // namespace fgp
