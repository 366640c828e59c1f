#include "ops/gather_attention.h"

#include <ATen/Parallel.h>

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
      for (int64_t r = begin; r < end; ++r) {
        const int64_t a = ptr[r], b = ptr[r + 1];
        for (int64_t h = 0; h < H; ++h) {
          scalar_t* orow = o + (r * H + h) * D;
          for (int64_t d = 0; d < D; ++d) orow[d] = scalar_t(0);
          if (a == b) continue;
          scalar_t m, s;
          softmax_row_stats(lg, H, h, a, b, &m, &s);
          // Same sums as attention_row_column, with the weight hoisted out of the column loop.
          for (int64_t e = a; e < b; ++e) {
            const scalar_t w = softmax_weight(lg[e * H + h], m, s);
            const scalar_t* xr = xs + (idx[e] * H + h) * D;
            for (int64_t d = 0; d < D; ++d) orow[d] = orow[d] + w * xr[d];
          }
        }
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
      for (int64_t r = begin; r < end; ++r) {
        const int64_t a = ptr[r], b = ptr[r + 1];
        if (a == b) continue;
        for (int64_t h = 0; h < H; ++h) {
          scalar_t m, s;
          softmax_row_stats(lg, H, h, a, b, &m, &s);
          const scalar_t* g_rh = g + (r * H + h) * D;
          const scalar_t g_out = row_dot(g_rh, os + (r * H + h) * D, D);
          for (int64_t e = a; e < b; ++e) {
            const scalar_t w = softmax_weight(lg[e * H + h], m, s);
            al[e * H + h] = w;
            gl[e * H + h] = attention_logit_grad(w, g_rh, xs + (idx[e] * H + h) * D, g_out, D);
          }
        }
      }
    });
    const int64_t* tptr = t_indptr.data_ptr<int64_t>();
    const int64_t* tidx = t_index.data_ptr<int64_t>();
    const int64_t* tperm = t_perm.data_ptr<int64_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    // Each row of x is owned by one task and summed in transposed-entry order (no atomics).
    at::parallel_for(0, M, csr_row_grain(E, M, H * D), [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t a = tptr[u], b = tptr[u + 1];
        for (int64_t h = 0; h < H; ++h) {
          scalar_t* row = gx + (u * H + h) * D;
          for (int64_t d = 0; d < D; ++d) row[d] = scalar_t(0);
          for (int64_t q = a; q < b; ++q) {
            const scalar_t w = al[tperm[q] * H + h];
            const scalar_t* gr = g + (tidx[q] * H + h) * D;
            for (int64_t d = 0; d < D; ++d) row[d] = row[d] + w * gr[d];
          }
        }
      }
    });
  });
  return {grad_x, grad_logit};
}

}  // namespace fgp
