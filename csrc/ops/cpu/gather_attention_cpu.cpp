#include "ops/gather_attention.h"

#include <vector>

namespace fgp {

Tensor gather_attention_cpu(const Tensor& x_in, const Tensor& logit_in, const Tensor& index_in,
                            const Tensor& indptr_in) {
  check_attention_args(x_in, logit_in, index_in, indptr_in);
  const auto x = contiguous(x_in);
  const auto logit = contiguous(logit_in);
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  const int64_t R = indptr.numel() - 1, H = x.size(1), D = x.size(2), E = index.numel();
  auto out = empty_like_shape(x, {R, H, D});
  FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_attention", [&] {
    const int64_t* ptr = indptr.const_data_ptr<int64_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* lg = logit.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_for(0, R, csr_row_grain(E, R, H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> exps;  // scratch: one row's exps, computed once and reused
      for (int64_t r = begin; r < end; ++r) {
        exps.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h) attention_row_head(xs, lg, idx, ptr[r], ptr[r + 1], r, h, H, D, o, exps.data());
      }
    });
  });
  return out;
}

std::tuple<Tensor, Tensor> gather_attention_backward_cpu(const Tensor& grad_in, const Tensor& x_in,
                                                         const Tensor& logit_in, const Tensor& index_in,
                                                         const Tensor& indptr_in, const Tensor& out_in,
                                                         const Tensor& t_indptr_in, const Tensor& t_index_in,
                                                         const Tensor& t_perm_in) {
  check_attention_backward_args(grad_in, x_in, logit_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                t_perm_in);
  const auto grad = contiguous(grad_in), x = contiguous(x_in), logit = contiguous(logit_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in), out = contiguous(out_in);
  const auto t_indptr = contiguous(t_indptr_in), t_index = contiguous(t_index_in), t_perm = contiguous(t_perm_in);
  const int64_t R = indptr.numel() - 1, M = x.size(0), H = x.size(1), D = x.size(2), E = index.numel();
  auto alpha = empty_like_shape(x, {E, H});
  auto grad_logit = empty_like_shape(x, {E, H});
  auto grad_x = empty_like_shape(x, {M, H, D});
  FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_gather_attention_backward", [&] {
    const int64_t* ptr = indptr.const_data_ptr<int64_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* lg = logit.const_data_ptr<scalar_t>();
    const scalar_t* os = out.const_data_ptr<scalar_t>();
    scalar_t* al = alpha.mutable_data_ptr<scalar_t>();
    scalar_t* gl = grad_logit.mutable_data_ptr<scalar_t>();
    parallel_for(0, R, csr_row_grain(E, R, H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> exps;
      for (int64_t r = begin; r < end; ++r) {
        exps.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h)
          attention_row_head_backward(g, xs, lg, idx, os, ptr[r], ptr[r + 1], r, h, H, D, al, gl, exps.data());
      }
    });
    const int64_t* tptr = t_indptr.const_data_ptr<int64_t>();
    const int64_t* tidx = t_index.const_data_ptr<int64_t>();
    const int64_t* tperm = t_perm.const_data_ptr<int64_t>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    // Each row of x is owned by one task and summed in transposed-entry order (no atomics).
    parallel_for(0, M, csr_row_grain(E, M, H * D), [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < D; ++d)
            gx[(u * H + h) * D + d] = attention_x_grad_column(al, g, tidx, tperm, tptr[u], tptr[u + 1], H, D, h, d);
    });
  });
  return {grad_x, grad_logit};
}

namespace {

// The transposed-CSR arguments only matter to autograd (read by the backward); the forward ignores them.
Tensor gather_attention_op(const Tensor& x, const Tensor& logit, const Tensor& index, const Tensor& indptr,
                           const std::optional<Tensor>&, const std::optional<Tensor>&, const std::optional<Tensor>&) {
  return gather_attention_cpu(x, logit, index, indptr);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) {
  m.impl("gather_attention", TORCH_BOX(&fgp::gather_attention_op));
  m.impl("_gather_attention_backward", TORCH_BOX(&fgp::gather_attention_backward_cpu));
}
