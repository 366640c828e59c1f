#include "ops/gather_attention.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per (row, head), the per-(row, head) functions of the CPU kernel (recomputing each exp
// instead of keeping a scratch row).
template <typename T>
__global__ void gather_attention_kernel(const T* x, const T* logit, const int64_t* index, const int64_t* indptr,
                                        int64_t R, int64_t H, int64_t D, T* out) {
  FGP_CUDA_KERNEL_LOOP(t, R * H) {
    const int64_t r = t / H, h = t % H;
    attention_row_head(x, logit, index, indptr[r], indptr[r + 1], r, h, H, D, out, static_cast<T*>(nullptr));
  }
}

template <typename T>
__global__ void attention_logit_grad_kernel(const T* g, const T* x, const T* logit, const int64_t* index,
                                            const int64_t* indptr, const T* out, int64_t R, int64_t H, int64_t D,
                                            T* alpha, T* grad_logit) {
  FGP_CUDA_KERNEL_LOOP(t, R * H) {
    const int64_t r = t / H, h = t % H;
    attention_row_head_backward(g, x, logit, index, out, indptr[r], indptr[r + 1], r, h, H, D, alpha, grad_logit,
                                static_cast<T*>(nullptr));
  }
}

// One thread per element of grad_x, summed over the transposed CSR (no atomics).
template <typename T>
__global__ void attention_x_grad_kernel(const T* alpha, const T* g, const int64_t* t_indptr, const int64_t* t_index,
                                        const int64_t* t_perm, int64_t M, int64_t H, int64_t D, T* grad_x) {
  FGP_CUDA_KERNEL_LOOP(t, M * H * D) {
    const int64_t u = t / (H * D), h = (t / D) % H, d = t % D;
    grad_x[t] = attention_x_grad_column(alpha, g, t_index, t_perm, t_indptr[u], t_indptr[u + 1], H, D, h, d);
  }
}

}  // namespace

Tensor gather_attention_cuda(const Tensor& x_in, const Tensor& logit_in, const Tensor& index_in,
                             const Tensor& indptr_in) {
  check_attention_args(x_in, logit_in, index_in, indptr_in);
  const auto guard = cuda::guard_for(x_in);
  const auto x = contiguous(x_in), logit = contiguous(logit_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in);
  const int64_t R = indptr.numel() - 1, H = x.size(1), D = x.size(2);
  auto out = empty_like_shape(x, {R, H, D});
  if (R * H > 0) {
    FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_attention", [&] {
      gather_attention_kernel<scalar_t><<<cuda::blocks_for(R * H), cuda::kThreads, 0, cuda::stream()>>>(
          x.const_data_ptr<scalar_t>(), logit.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
          indptr.const_data_ptr<int64_t>(), R, H, D, out.mutable_data_ptr<scalar_t>());
      cuda::check_launch("gather_attention");
    });
  }
  return out;
}

std::tuple<Tensor, Tensor> gather_attention_backward_cuda(const Tensor& grad_in, const Tensor& x_in,
                                                          const Tensor& logit_in, const Tensor& index_in,
                                                          const Tensor& indptr_in, const Tensor& out_in,
                                                          const Tensor& t_indptr_in, const Tensor& t_index_in,
                                                          const Tensor& t_perm_in) {
  check_attention_backward_args(grad_in, x_in, logit_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                t_perm_in);
  const auto guard = cuda::guard_for(x_in);
  const auto grad = contiguous(grad_in), x = contiguous(x_in), logit = contiguous(logit_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in), out = contiguous(out_in);
  const auto t_indptr = contiguous(t_indptr_in), t_index = contiguous(t_index_in), t_perm = contiguous(t_perm_in);
  const int64_t R = indptr.numel() - 1, M = x.size(0), H = x.size(1), D = x.size(2), E = index.numel();
  auto alpha = zeros_tensor({E, H}, x.scalar_type(), x.device());
  auto grad_logit = zeros_tensor({E, H}, x.scalar_type(), x.device());
  auto grad_x = empty_like_shape(x, {M, H, D});
  FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_gather_attention_backward", [&] {
    if (R * H > 0) {
      attention_logit_grad_kernel<scalar_t><<<cuda::blocks_for(R * H), cuda::kThreads, 0, cuda::stream()>>>(
          grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), logit.const_data_ptr<scalar_t>(),
          index.const_data_ptr<int64_t>(), indptr.const_data_ptr<int64_t>(), out.const_data_ptr<scalar_t>(), R, H, D,
          alpha.mutable_data_ptr<scalar_t>(), grad_logit.mutable_data_ptr<scalar_t>());
      cuda::check_launch("_gather_attention_backward");
    }
    if (M * H * D > 0) {
      attention_x_grad_kernel<scalar_t><<<cuda::blocks_for(M * H * D), cuda::kThreads, 0, cuda::stream()>>>(
          alpha.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), t_indptr.const_data_ptr<int64_t>(),
          t_index.const_data_ptr<int64_t>(), t_perm.const_data_ptr<int64_t>(), M, H, D,
          grad_x.mutable_data_ptr<scalar_t>());
      cuda::check_launch("_gather_attention_backward");
    }
  });
  return {grad_x, grad_logit};
}

namespace {

// The transposed-CSR arguments only matter to autograd (read by the backward); the forward ignores them.
Tensor gather_attention_op(const Tensor& x, const Tensor& logit, const Tensor& index, const Tensor& indptr,
                           const std::optional<Tensor>&, const std::optional<Tensor>&, const std::optional<Tensor>&) {
  return gather_attention_cuda(x, logit, index, indptr);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) {
  m.impl("gather_attention", TORCH_BOX(&fgp::gather_attention_op));
  m.impl("_gather_attention_backward", TORCH_BOX(&fgp::gather_attention_backward_cuda));
}
