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

at::Tensor gather_attention_cuda(const at::Tensor& x_in, const at::Tensor& logit_in, const at::Tensor& index_in,
                                 const at::Tensor& indptr_in) {
  check_attention_args(x_in, logit_in, index_in, indptr_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(), logit = logit_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const int64_t R = indptr.numel() - 1, H = x.size(1), D = x.size(2);
  auto out = at::empty({R, H, D}, x.options());
  if (R * H > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_attention_cuda", [&] {
      gather_attention_kernel<scalar_t><<<cuda::blocks_for(R * H), cuda::kThreads, 0, cuda::stream()>>>(
          x.data_ptr<scalar_t>(), logit.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), indptr.data_ptr<int64_t>(),
          R, H, D, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> gather_attention_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                  const at::Tensor& logit_in,
                                                                  const at::Tensor& index_in,
                                                                  const at::Tensor& indptr_in, const at::Tensor& out_in,
                                                                  const at::Tensor& t_indptr_in,
                                                                  const at::Tensor& t_index_in,
                                                                  const at::Tensor& t_perm_in) {
  check_attention_backward_args(grad_in, x_in, logit_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                t_perm_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  const auto grad = grad_in.contiguous(), x = x_in.contiguous(), logit = logit_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous(), out = out_in.contiguous();
  const auto t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous(), t_perm = t_perm_in.contiguous();
  const int64_t R = indptr.numel() - 1, M = x.size(0), H = x.size(1), D = x.size(2), E = index.numel();
  auto alpha = at::zeros({E, H}, x.options());
  auto grad_logit = at::zeros({E, H}, x.options());
  auto grad_x = at::empty({M, H, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_attention_backward_cuda", [&] {
    if (R * H > 0) {
      attention_logit_grad_kernel<scalar_t><<<cuda::blocks_for(R * H), cuda::kThreads, 0, cuda::stream()>>>(
          grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), logit.data_ptr<scalar_t>(), index.data_ptr<int64_t>(),
          indptr.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), R, H, D, alpha.data_ptr<scalar_t>(),
          grad_logit.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (M * H * D > 0) {
      attention_x_grad_kernel<scalar_t><<<cuda::blocks_for(M * H * D), cuda::kThreads, 0, cuda::stream()>>>(
          alpha.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), t_indptr.data_ptr<int64_t>(),
          t_index.data_ptr<int64_t>(), t_perm.data_ptr<int64_t>(), M, H, D, grad_x.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_x, grad_logit};
}

}  // namespace fgp
