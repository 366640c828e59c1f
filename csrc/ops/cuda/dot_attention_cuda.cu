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

Tensor dot_attention_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& index_in,
                          const Tensor& indptr_in, double scale, double p, int64_t seed) {
  check_dot_attention_args(q_in, k_in, v_in, index_in, indptr_in, p);
  const auto guard = cuda::guard_for(q_in);
  const auto q = contiguous(q_in), k = contiguous(k_in), v = contiguous(v_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in);
  const int64_t M = q.size(0), H = q.size(1), D = q.size(2);
  auto out = empty_like_shape(q, {M, H, D});
  if (M * H > 0) {
    FGP_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention", [&] {
      dot_attention_kernel<scalar_t><<<cuda::blocks_for(M * H), cuda::kThreads, 0, cuda::stream()>>>(
          q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
          index.const_data_ptr<int64_t>(), indptr.const_data_ptr<int64_t>(), M, H, D, static_cast<scalar_t>(scale),
          out.mutable_data_ptr<scalar_t>(), attention_dropout<scalar_t>(p, seed));
      cuda::check_launch("dot_attention");
    });
  }
  return out;
}

std::tuple<Tensor, Tensor, Tensor> dot_attention_backward_cuda(const Tensor& grad_in, const Tensor& q_in,
                                                               const Tensor& k_in, const Tensor& v_in,
                                                               const Tensor& index_in, const Tensor& indptr_in,
                                                               const Tensor& out_in, double scale,
                                                               const Tensor& t_indptr_in, const Tensor& t_index_in,
                                                               const Tensor& t_perm_in, double p, int64_t seed) {
  check_dot_attention_backward_args(grad_in, q_in, k_in, v_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                    t_perm_in, p);
  const auto guard = cuda::guard_for(q_in);
  const auto g = contiguous(grad_in), q = contiguous(q_in), k = contiguous(k_in), v = contiguous(v_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in), out = contiguous(out_in);
  const auto t_indptr = contiguous(t_indptr_in), t_index = contiguous(t_index_in), t_perm = contiguous(t_perm_in);
  const int64_t M = q.size(0), C = k.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto alpha = zeros_tensor({E, H}, q.scalar_type(), q.device());
  auto dscore = zeros_tensor({E, H}, q.scalar_type(), q.device());
  auto dq = empty_like_shape(q, {M, H, D}), dk = empty_like_shape(k, {C, H, D}), dv = empty_like_shape(v, {C, H, D});
  FGP_DISPATCH_FLOATING_TYPES(q.scalar_type(), "_dot_attention_backward", [&] {
    const scalar_t s = static_cast<scalar_t>(scale);
    if (M * H > 0) {
      dot_attention_query_grad_kernel<scalar_t><<<cuda::blocks_for(M * H), cuda::kThreads, 0, cuda::stream()>>>(
          g.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
          v.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
          indptr.const_data_ptr<int64_t>(), M, H, D, s, alpha.mutable_data_ptr<scalar_t>(),
          dscore.mutable_data_ptr<scalar_t>(), dq.mutable_data_ptr<scalar_t>(), attention_dropout<scalar_t>(p, seed));
      cuda::check_launch("_dot_attention_backward");
    }
    if (C * H * D > 0) {
      dot_attention_key_grad_kernel<scalar_t><<<cuda::blocks_for(C * H * D), cuda::kThreads, 0, cuda::stream()>>>(
          g.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), alpha.const_data_ptr<scalar_t>(),
          dscore.const_data_ptr<scalar_t>(), t_indptr.const_data_ptr<int64_t>(), t_index.const_data_ptr<int64_t>(),
          t_perm.const_data_ptr<int64_t>(), C, H, D, s, dk.mutable_data_ptr<scalar_t>(),
          dv.mutable_data_ptr<scalar_t>());
      cuda::check_launch("_dot_attention_backward");
    }
  });
  return {dq, dk, dv};
}

namespace {

// The transposed-CSR arguments only matter to autograd (read by the backward); the forward ignores them.
Tensor dot_attention_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& index, const Tensor& indptr,
                        double scale, const std::optional<Tensor>&, const std::optional<Tensor>&,
                        const std::optional<Tensor>&, double p, int64_t seed) {
  return dot_attention_cuda(q, k, v, index, indptr, scale, p, seed);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) {
  m.impl("dot_attention", TORCH_BOX(&fgp::dot_attention_op));
  m.impl("_dot_attention_backward", TORCH_BOX(&fgp::dot_attention_backward_cuda));
}
