#include "ops/dot_attention.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {
namespace {

// The scores of (row r, head h) computed once and their softmax_exp(score - max) in w, with
// 1 / sum in *inv: the values dot_attention_stats and dot_attention_row_head(_backward) compute
// (same functions, same order), without recomputing each score three times.
template <typename T>
void row_head_softmax(const T* q, const T* k, const int64_t* index, int64_t a, int64_t b, int64_t r, int64_t h,
                      int64_t H, int64_t D, T scale, std::vector<T>& w, T* inv) {
  w.resize(b - a);
  const T* qr = q + (r * H + h) * D;
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t e = a; e < b; ++e) {
    w[e - a] = attention_score(qr, k + (index[e] * H + h) * D, D, scale);
    m = w[e - a] > m ? w[e - a] : m;
  }
  T sum = T(0);
  for (int64_t e = 0; e < b - a; ++e) {
    w[e] = softmax_exp(w[e] - m);
    sum += w[e];
  }
  *inv = T(1) / sum;
}

}  // namespace

at::Tensor dot_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                             const at::Tensor& index_in, const at::Tensor& indptr_in, double scale) {
  check_dot_attention_args(q_in, k_in, v_in, index_in, indptr_in);
  const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const int64_t M = q.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto out = at::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention_cpu", [&] {
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    at::parallel_for(0, M, csr_row_grain(E, M, 2 * H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> w;
      for (int64_t r = begin; r < end; ++r)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t a = ptr[r], b = ptr[r + 1];
          scalar_t* o = op + (r * H + h) * D;
          for (int64_t d = 0; d < D; ++d) o[d] = scalar_t(0);
          if (a == b) continue;
          scalar_t inv;
          row_head_softmax(qp, kp, idx, a, b, r, h, H, D, s, w, &inv);
          for (int64_t e = a; e < b; ++e) {  // as dot_attention_row_head
            const scalar_t wt = w[e - a] * inv;
            const scalar_t* vc = vp + (idx[e] * H + h) * D;
            for (int64_t d = 0; d < D; ++d) o[d] = o[d] + wt * vc[d];
          }
        }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& index_in, const at::Tensor& indptr_in, const at::Tensor& out_in, double scale,
    const at::Tensor& t_indptr_in, const at::Tensor& t_index_in, const at::Tensor& t_perm_in) {
  check_dot_attention_backward_args(grad_in, q_in, k_in, v_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                    t_perm_in);
  const auto g = grad_in.contiguous(), q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous(), out = out_in.contiguous();
  const auto t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous(), t_perm = t_perm_in.contiguous();
  const int64_t M = q.size(0), C = k.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto alpha = at::empty({E, H}, q.options()), dscore = at::empty({E, H}, q.options());
  auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention_backward_cpu", [&] {
    const scalar_t s = static_cast<scalar_t>(scale);
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* dsc = dscore.data_ptr<scalar_t>();
    scalar_t* dqp = dq.data_ptr<scalar_t>();
    at::parallel_for(0, M, csr_row_grain(E, M, 3 * H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> w;
      for (int64_t r = begin; r < end; ++r)
        for (int64_t h = 0; h < H; ++h) {  // as dot_attention_row_head_backward
          const int64_t a = ptr[r], b = ptr[r + 1];
          scalar_t* dqr = dqp + (r * H + h) * D;
          for (int64_t d = 0; d < D; ++d) dqr[d] = scalar_t(0);
          if (a == b) continue;
          scalar_t inv;
          row_head_softmax(qp, kp, idx, a, b, r, h, H, D, s, w, &inv);
          const scalar_t* gr = gp + (r * H + h) * D;
          const scalar_t g_out = row_dot(gr, op + (r * H + h) * D, D);
          for (int64_t e = a; e < b; ++e) {
            const int64_t c = idx[e];
            const scalar_t wt = w[e - a] * inv;
            const scalar_t ds = wt * (row_dot(gr, vp + (c * H + h) * D, D) - g_out);
            al[e * H + h] = wt;
            dsc[e * H + h] = ds;
            const scalar_t* kc = kp + (c * H + h) * D;
            for (int64_t d = 0; d < D; ++d) dqr[d] = dqr[d] + s * ds * kc[d];
          }
        }
    });
    const int64_t* tptr = t_indptr.data_ptr<int64_t>();
    const int64_t* tidx = t_index.data_ptr<int64_t>();
    const int64_t* tperm = t_perm.data_ptr<int64_t>();
    scalar_t* dkp = dk.data_ptr<scalar_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    at::parallel_for(0, C, csr_row_grain(E, C, 2 * H * D), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        // as dot_attention_key_grad, the columns innermost: every (c, h, d) sums its entries in order
        scalar_t* dkc = dkp + c * H * D;
        scalar_t* dvc = dvp + c * H * D;
        for (int64_t t = 0; t < H * D; ++t) dkc[t] = dvc[t] = scalar_t(0);
        for (int64_t t = tptr[c]; t < tptr[c + 1]; ++t) {
          const int64_t e = tperm[t], r = tidx[t];
          for (int64_t h = 0; h < H; ++h) {
            const scalar_t sk = s * dsc[e * H + h], av = al[e * H + h];
            const scalar_t* qr = qp + (r * H + h) * D;
            const scalar_t* gr = gp + (r * H + h) * D;
            for (int64_t d = 0; d < D; ++d) {
              dkc[h * D + d] = dkc[h * D + d] + sk * qr[d];
              dvc[h * D + d] = dvc[h * D + d] + av * gr[d];
            }
          }
        }
      }
    });
  });
  return {dq, dk, dv};
}

}  // namespace fgp
