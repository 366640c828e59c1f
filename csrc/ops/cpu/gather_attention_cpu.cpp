#include "ops/gather_attention.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {

namespace {

// Softmax of one row for every head, heads innermost (contiguous logits): max[h], inv_sum[h] and the
// entries' exp(logit - max) in w[(e - a) * H + h]. The same sums, in the same order, as
// softmax_row_stats, with each exp computed once.
template <typename T>
FGP_CPU_CLONES void row_exps(const T* __restrict__ lg, const T* __restrict__ mx, int64_t n, int64_t H,
                             T* __restrict__ w) {
  for (int64_t k = 0; k < n; ++k) w[k] = softmax_exp(lg[k] - mx[k % H]);
}

template <typename T>
void row_softmax(const T* lg, int64_t a, int64_t b, int64_t H, std::vector<T>& w, std::vector<T>& mx,
                 std::vector<T>& inv) {
  w.resize((b - a) * H);
  for (int64_t h = 0; h < H; ++h) mx[h] = -std::numeric_limits<T>::infinity();
  for (int64_t e = a; e < b; ++e)
    for (int64_t h = 0; h < H; ++h) mx[h] = lg[e * H + h] > mx[h] ? lg[e * H + h] : mx[h];
  row_exps(lg + a * H, mx.data(), (b - a) * H, H, w.data());  // independent exps: vectorised
  for (int64_t h = 0; h < H; ++h) inv[h] = T(0);
  for (int64_t e = 0; e < b - a; ++e)
    for (int64_t h = 0; h < H; ++h) inv[h] += w[e * H + h];  // entry order, as softmax_row_stats
  for (int64_t h = 0; h < H; ++h) inv[h] = T(1) / inv[h];
}

}  // namespace

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
      std::vector<scalar_t> w, mx(H), inv(H);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t a = ptr[r], b = ptr[r + 1];
        scalar_t* orow = o + r * H * D;
        for (int64_t k = 0; k < H * D; ++k) orow[k] = scalar_t(0);
        if (a == b) continue;
        row_softmax(lg, a, b, H, w, mx, inv);
        // out[r, h, :] += softmax_weight * x[index[e], h, :], entries in order (as attention_row_column)
        for (int64_t e = a; e < b; ++e) {
          const scalar_t* xr = xs + idx[e] * H * D;
          for (int64_t h = 0; h < H; ++h) {
            const scalar_t wt = w[(e - a) * H + h] * inv[h];
            for (int64_t d = 0; d < D; ++d) orow[h * D + d] = orow[h * D + d] + wt * xr[h * D + d];
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
      std::vector<scalar_t> w, mx(H), inv(H), g_out(H);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t a = ptr[r], b = ptr[r + 1];
        if (a == b) continue;
        row_softmax(lg, a, b, H, w, mx, inv);
        for (int64_t h = 0; h < H; ++h) g_out[h] = row_dot(g + (r * H + h) * D, os + (r * H + h) * D, D);
        for (int64_t e = a; e < b; ++e)
          for (int64_t h = 0; h < H; ++h) {
            const scalar_t wt = w[(e - a) * H + h] * inv[h];
            al[e * H + h] = wt;
            gl[e * H + h] = attention_logit_grad(wt, g + (r * H + h) * D, xs + (idx[e] * H + h) * D, g_out[h], D);
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
