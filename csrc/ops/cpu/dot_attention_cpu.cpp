#include "ops/dot_attention.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {

at::Tensor dot_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                             const at::Tensor& index_in, const at::Tensor& indptr_in, double scale, double p,
                             int64_t seed) {
  check_dot_attention_args(q_in, k_in, v_in, index_in, indptr_in, p);
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
    const auto drop = attention_dropout<scalar_t>(p, seed);
    at::parallel_for(0, M, csr_row_grain(E, M, 2 * H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> w;  // scratch: each score computed once per (row, head)
      for (int64_t r = begin; r < end; ++r) {
        w.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h)
          dot_attention_row_head(qp, kp, vp, idx, ptr[r], ptr[r + 1], r, h, H, D, s, op, w.data(), drop);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& index_in, const at::Tensor& indptr_in, const at::Tensor& out_in, double scale,
    const at::Tensor& t_indptr_in, const at::Tensor& t_index_in, const at::Tensor& t_perm_in, double p, int64_t seed) {
  check_dot_attention_backward_args(grad_in, q_in, k_in, v_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                    t_perm_in, p);
  const auto g = grad_in.contiguous(), q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous(), out = out_in.contiguous();
  const auto t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous(), t_perm = t_perm_in.contiguous();
  const int64_t M = q.size(0), C = k.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto alpha = at::empty({E, H}, q.options()), dscore = at::empty({E, H}, q.options());
  auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention_backward_cpu", [&] {
    const scalar_t s = static_cast<scalar_t>(scale);
    const auto drop = attention_dropout<scalar_t>(p, seed);
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* dsc = dscore.data_ptr<scalar_t>();
    at::parallel_for(0, M, csr_row_grain(E, M, 3 * H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> w;
      for (int64_t r = begin; r < end; ++r) {
        w.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h)
          dot_attention_row_head_backward(gp, qp, k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                          out.data_ptr<scalar_t>(), idx, ptr[r], ptr[r + 1], r, h, H, D, s, al, dsc,
                                          dq.data_ptr<scalar_t>(), w.data(), drop);
      }
    });
    // Keys and values: each owned by one task, its transposed entries summed in order (no atomics).
    const int64_t* tptr = t_indptr.data_ptr<int64_t>();
    const int64_t* tidx = t_index.data_ptr<int64_t>();
    const int64_t* tperm = t_perm.data_ptr<int64_t>();
    scalar_t* dkp = dk.data_ptr<scalar_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    at::parallel_for(0, C, csr_row_grain(E, C, 2 * H * D), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < D; ++d) {
            const int64_t o = (c * H + h) * D + d;
            dot_attention_key_grad(gp, qp, al, dsc, tidx, tperm, tptr[c], tptr[c + 1], h, d, H, D, s, dkp + o,
                                   dvp + o);
          }
    });
  });
  return {dq, dk, dv};
}

}  // namespace fgp
