#include "ops/dot_attention.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per (query row, head), one per (key, head, column) for the key/value gradients: the
// per-row / per-element functions of the CPU kernel, in the same order.
template <typename T>
__global__ void dot_attention_kernel(const T* q, const T* k, const T* v, const int64_t* index, const int64_t* indptr,
                                     int64_t M, int64_t H, int64_t D, T scale, T* out, AttentionDropout<T> drop) {
  FGP_CUDA_KERNEL_LOOP(t, M * H) {
    const int64_t r = t / H, h = t % H;
    dot_attention_row_head(q, k, v, index, indptr[r], indptr[r + 1], r, h, H, D, scale, out, static_cast<T*>(nullptr), drop);
  }
}

template <typename T>
__global__ void dot_attention_query_grad_kernel(const T* g, const T* q, const T* k, const T* v, const T* out,
                                                const int64_t* index, const int64_t* indptr, int64_t M, int64_t H,
                                                int64_t D, T scale, T* alpha, T* dscore, T* dq,
                                                AttentionDropout<T> drop) {
  FGP_CUDA_KERNEL_LOOP(t, M * H) {
    const int64_t r = t / H, h = t % H;
    dot_attention_row_head_backward(g, q, k, v, out, index, indptr[r], indptr[r + 1], r, h, H, D, scale, alpha,
                                    dscore, dq, static_cast<T*>(nullptr), drop);
  }
}

template <typename T>
__global__ void dot_attention_key_grad_kernel(const T* g, const T* q, const T* alpha, const T* dscore,
                                              const int64_t* t_indptr, const int64_t* t_index, const int64_t* t_perm,
                                              int64_t C, int64_t H, int64_t D, T scale, T* dk, T* dv) {
  FGP_CUDA_KERNEL_LOOP(t, C * H * D) {
    const int64_t c = t / (H * D), h = (t / D) % H, d = t % D;
    dot_attention_key_grad(g, q, alpha, dscore, t_index, t_perm, t_indptr[c], t_indptr[c + 1], h, d, H, D, scale,
                           dk + t, dv + t);
  }
}

}  // namespace

at::Tensor dot_attention_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                              const at::Tensor& index_in, const at::Tensor& indptr_in, double scale, double p,
                              int64_t seed) {
  check_dot_attention_args(q_in, k_in, v_in, index_in, indptr_in, p);
  c10::cuda::CUDAGuard guard(q_in.device());
  const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const int64_t M = q.size(0), H = q.size(1), D = q.size(2);
  auto out = at::empty_like(q);
  if (M * H > 0) {
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention_cuda", [&] {
      dot_attention_kernel<scalar_t><<<cuda::blocks_for(M * H), cuda::kThreads, 0, cuda::stream()>>>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), index.data_ptr<int64_t>(),
          indptr.data_ptr<int64_t>(), M, H, D, static_cast<scalar_t>(scale), out.data_ptr<scalar_t>(),
          attention_dropout<scalar_t>(p, seed));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& index_in, const at::Tensor& indptr_in, const at::Tensor& out_in, double scale,
    const at::Tensor& t_indptr_in, const at::Tensor& t_index_in, const at::Tensor& t_perm_in, double p, int64_t seed) {
  check_dot_attention_backward_args(grad_in, q_in, k_in, v_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                    t_perm_in, p);
  c10::cuda::CUDAGuard guard(q_in.device());
  const auto g = grad_in.contiguous(), q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous(), out = out_in.contiguous();
  const auto t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous(), t_perm = t_perm_in.contiguous();
  const int64_t M = q.size(0), C = k.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto alpha = at::zeros({E, H}, q.options()), dscore = at::zeros({E, H}, q.options());
  auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention_backward_cuda", [&] {
    const scalar_t s = static_cast<scalar_t>(scale);
    if (M * H > 0) {
      dot_attention_query_grad_kernel<scalar_t><<<cuda::blocks_for(M * H), cuda::kThreads, 0, cuda::stream()>>>(
          g.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), indptr.data_ptr<int64_t>(), M, H, D, s,
          alpha.data_ptr<scalar_t>(), dscore.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(),
          attention_dropout<scalar_t>(p, seed));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (C * H * D > 0) {
      dot_attention_key_grad_kernel<scalar_t><<<cuda::blocks_for(C * H * D), cuda::kThreads, 0, cuda::stream()>>>(
          g.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), dscore.data_ptr<scalar_t>(),
          t_indptr.data_ptr<int64_t>(), t_index.data_ptr<int64_t>(), t_perm.data_ptr<int64_t>(), C, H, D, s,
          dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {dq, dk, dv};
}

}  // namespace fgp
