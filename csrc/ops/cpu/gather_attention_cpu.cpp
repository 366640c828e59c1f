#include "ops/gather_attention.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {

at::Tensor gather_attention_cpu(const at::Tensor& x_in, const at::Tensor& logit_in, const at::Tensor& index_in,
                                const at::Tensor& indptr_in) {
  check_attention_args(x_in, logit_in, index_in, indptr_in);
  const auto x = x_in.contiguous();
  const auto logit = logit_in.contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t R = indptr.numel() - 1, H = x.size(1), D = x.size(2), E = index.numel();
  auto out = at::empty({R, H, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_attention_cpu", [&] {
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* lg = logit.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, csr_row_grain(E, R, H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> exps;  // scratch: one row's exps, computed once and reused
      for (int64_t r = begin; r < end; ++r) {
        exps.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h) attention_row_head(xs, lg, idx, ptr[r], ptr[r + 1], r, h, H, D, o, exps.data());
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gather_attention_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                 const at::Tensor& logit_in, const at::Tensor& index_in,
                                                                 const at::Tensor& indptr_in, const at::Tensor& out_in,
                                                                 const at::Tensor& t_indptr_in,
                                                                 const at::Tensor& t_index_in,
                                                                 const at::Tensor& t_perm_in) {
  check_attention_backward_args(grad_in, x_in, logit_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                t_perm_in);
  const auto grad = grad_in.contiguous(), x = x_in.contiguous(), logit = logit_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous(), out = out_in.contiguous();
  const auto t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous(), t_perm = t_perm_in.contiguous();
  const int64_t R = indptr.numel() - 1, M = x.size(0), H = x.size(1), D = x.size(2), E = index.numel();
  auto alpha = at::empty({E, H}, x.options());
  auto grad_logit = at::empty({E, H}, x.options());
  auto grad_x = at::empty({M, H, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_attention_backward_cpu", [&] {
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* lg = logit.data_ptr<scalar_t>();
    const scalar_t* os = out.data_ptr<scalar_t>();
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* gl = grad_logit.data_ptr<scalar_t>();
    at::parallel_for(0, R, csr_row_grain(E, R, H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> exps;
      for (int64_t r = begin; r < end; ++r) {
        exps.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h)
          attention_row_head_backward(g, xs, lg, idx, os, ptr[r], ptr[r + 1], r, h, H, D, al, gl, exps.data());
      }
    });
    const int64_t* tptr = t_indptr.data_ptr<int64_t>();
    const int64_t* tidx = t_index.data_ptr<int64_t>();
    const int64_t* tperm = t_perm.data_ptr<int64_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    // Each row of x is owned by one task and summed in transposed-entry order (no atomics).
    at::parallel_for(0, M, csr_row_grain(E, M, H * D), [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < D; ++d)
            gx[(u * H + h) * D + d] = attention_x_grad_column(al, g, tidx, tperm, tptr[u], tptr[u + 1], H, D, h, d);
    });
  });
  return {grad_x, grad_logit};
}

}  // namespace fgp
