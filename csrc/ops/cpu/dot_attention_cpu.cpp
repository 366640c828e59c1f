#include "ops/dot_attention.h"

#include <vector>

namespace fgp {

Tensor dot_attention_cpu(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& index_in,
                         const Tensor& indptr_in, double scale, double p, int64_t seed) {
  check_dot_attention_args(q_in, k_in, v_in, index_in, indptr_in, p);
  const auto q = contiguous(q_in), k = contiguous(k_in), v = contiguous(v_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in);
  const int64_t M = q.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto out = empty_like_shape(q, {M, H, D});
  FGP_DISPATCH_FLOATING_TYPES(q.scalar_type(), "dot_attention", [&] {
    const int64_t* ptr = indptr.const_data_ptr<int64_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* qp = q.const_data_ptr<scalar_t>();
    const scalar_t* kp = k.const_data_ptr<scalar_t>();
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    const auto drop = attention_dropout<scalar_t>(p, seed);
    parallel_for(0, M, csr_row_grain(E, M, 2 * H * D), [&](int64_t begin, int64_t end) {
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

std::tuple<Tensor, Tensor, Tensor> dot_attention_backward_cpu(const Tensor& grad_in, const Tensor& q_in,
                                                              const Tensor& k_in, const Tensor& v_in,
                                                              const Tensor& index_in, const Tensor& indptr_in,
                                                              const Tensor& out_in, double scale,
                                                              const Tensor& t_indptr_in, const Tensor& t_index_in,
                                                              const Tensor& t_perm_in, double p, int64_t seed) {
  check_dot_attention_backward_args(grad_in, q_in, k_in, v_in, index_in, indptr_in, out_in, t_indptr_in, t_index_in,
                                    t_perm_in, p);
  const auto g = contiguous(grad_in), q = contiguous(q_in), k = contiguous(k_in), v = contiguous(v_in);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in), out = contiguous(out_in);
  const auto t_indptr = contiguous(t_indptr_in), t_index = contiguous(t_index_in), t_perm = contiguous(t_perm_in);
  const int64_t M = q.size(0), C = k.size(0), H = q.size(1), D = q.size(2), E = index.numel();
  auto alpha = empty_like_shape(q, {E, H}), dscore = empty_like_shape(q, {E, H});
  auto dq = empty_like_shape(q, {M, H, D}), dk = empty_like_shape(k, {C, H, D}), dv = empty_like_shape(v, {C, H, D});
  FGP_DISPATCH_FLOATING_TYPES(q.scalar_type(), "_dot_attention_backward", [&] {
    const scalar_t s = static_cast<scalar_t>(scale);
    const auto drop = attention_dropout<scalar_t>(p, seed);
    const int64_t* ptr = indptr.const_data_ptr<int64_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* qp = q.const_data_ptr<scalar_t>();
    const scalar_t* kp = k.const_data_ptr<scalar_t>();
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    const scalar_t* op = out.const_data_ptr<scalar_t>();
    scalar_t* al = alpha.mutable_data_ptr<scalar_t>();
    scalar_t* dsc = dscore.mutable_data_ptr<scalar_t>();
    scalar_t* dqp = dq.mutable_data_ptr<scalar_t>();
    parallel_for(0, M, csr_row_grain(E, M, 3 * H * D), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> w;
      for (int64_t r = begin; r < end; ++r) {
        w.resize(ptr[r + 1] - ptr[r]);
        for (int64_t h = 0; h < H; ++h)
          dot_attention_row_head_backward(gp, qp, kp, vp, op, idx, ptr[r], ptr[r + 1], r, h, H, D, s, al, dsc, dqp,
                                          w.data(), drop);
      }
    });
    // Keys and values: each owned by one task, its transposed entries summed in order (no atomics).
    const int64_t* tptr = t_indptr.const_data_ptr<int64_t>();
    const int64_t* tidx = t_index.const_data_ptr<int64_t>();
    const int64_t* tperm = t_perm.const_data_ptr<int64_t>();
    scalar_t* dkp = dk.mutable_data_ptr<scalar_t>();
    scalar_t* dvp = dv.mutable_data_ptr<scalar_t>();
    parallel_for(0, C, csr_row_grain(E, C, 2 * H * D), [&](int64_t begin, int64_t end) {
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

namespace {

// The transposed-CSR arguments only matter to autograd (read by the backward); the forward ignores them.
Tensor dot_attention_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& index, const Tensor& indptr,
                        double scale, const std::optional<Tensor>&, const std::optional<Tensor>&,
                        const std::optional<Tensor>&, double p, int64_t seed) {
  return dot_attention_cpu(q, k, v, index, indptr, scale, p, seed);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) {
  m.impl("dot_attention", TORCH_BOX(&fgp::dot_attention_op));
  m.impl("_dot_attention_backward", TORCH_BOX(&fgp::dot_attention_backward_cpu));
}
