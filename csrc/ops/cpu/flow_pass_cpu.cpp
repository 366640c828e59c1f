#include "ops/flow_pass.h"

#include <ATen/Parallel.h>

namespace fgp {
namespace {

// First entry of every level (indptr at the level boundaries).
std::vector<int64_t> level_entry_starts(const int64_t* indptr, const std::vector<int64_t>& levels) {
  std::vector<int64_t> starts(levels.size());
  for (size_t l = 0; l < levels.size(); ++l) starts[l] = indptr[levels[l]];
  return starts;
}

}  // namespace

std::vector<at::Tensor> flow_pass_forward_cpu(at::TensorList args_in) {
  const FlowPassArgs a = flow_pass_args(args_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous();
  const int64_t N = h0.size(0), F = h0.size(1), E = index.numel(), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  auto h = h0.clone();
  auto msg = at::zeros({N, F}, opts), rz = at::zeros({N, 2 * F}, opts), n = at::zeros({N, F}, opts);
  auto gh_n = at::zeros({N, F}, opts), logit = at::empty({E}, opts);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const auto entry_starts = level_entry_starts(ptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_cpu", [&] {
    const scalar_t* h0p = h0.data_ptr<scalar_t>();
    const scalar_t* adp = att_dst.data_ptr<scalar_t>();
    const scalar_t* asp = att_src.data_ptr<scalar_t>();
    const scalar_t bias = a.att_bias.item<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    for (int64_t l = 1; l < L; ++l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      if (R == 0) continue;
      scalar_t* lgp = logit.data_ptr<scalar_t>() + es;
      scalar_t* msgp = msg.data_ptr<scalar_t>() + s * F;
      at::parallel_for(0, R, csr_row_grain(entry_starts[l + 1] - es, R, F), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
          flow_attention_row(s + r, r, es, ptr, idx, h0p, hp, adp, asp, bias, F, lgp, msgp);
      });
      // GEMMs by ATen; the gates with ATen's vectorised sigmoid/tanh (the formulas of gru_gates).
      const auto gi = at::addmm(a.b_ih, msg.slice(0, s, t), a.w_ih.t());
      const auto gh = at::addmm(a.b_hh, h0.slice(0, s, t), a.w_hh.t());
      auto rz_l = rz.slice(0, s, t), n_l = n.slice(0, s, t);
      rz_l.copy_(at::sigmoid(gi.slice(1, 0, 2 * F) + gh.slice(1, 0, 2 * F)));
      gh_n.slice(0, s, t).copy_(gh.slice(1, 2 * F, 3 * F));
      n_l.copy_(at::tanh(gi.slice(1, 2 * F, 3 * F) + rz_l.slice(1, 0, F) * gh.slice(1, 2 * F, 3 * F)));
      const scalar_t* rzp = rz.data_ptr<scalar_t>();
      const scalar_t* np = n.data_ptr<scalar_t>();
      at::parallel_for(s, t, csr_row_grain(0, R, 8 * F), [&](int64_t begin, int64_t end) {
        for (int64_t v = begin; v < end; ++v)
          for (int64_t f = 0; f < F; ++f)
            hp[v * F + f] = gru_combine(rzp[v * 2 * F + F + f], np[v * F + f], h0p[v * F + f]);
      });
    }
  });
  return {h, msg, rz, n, gh_n, logit};
}

std::vector<at::Tensor> flow_pass_backward_cpu(const at::Tensor& grad, at::TensorList saved, at::TensorList args_in) {
  const FlowPassArgs a = flow_pass_args(args_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  TORCH_CHECK(saved.size() == 6, "flow_pass_backward: expected the 6 tensors saved by the forward");
  TORCH_CHECK(grad.sizes() == a.h0.sizes(), "grad must have the shape of h0");
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous();
  const auto group_perm = a.group_perm.contiguous(), group_ptr = a.group_ptr.contiguous();
  const auto group_src = a.group_src.contiguous();
  const auto h = saved[0].contiguous(), msg = saved[1].contiguous(), rz = saved[2].contiguous();
  const auto n = saved[3].contiguous(), gh_n = saved[4].contiguous(), logit = saved[5].contiguous();
  const int64_t F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  auto g = grad.contiguous().clone();
  auto g_att_dst = at::zeros_like(att_dst), g_att_src = at::zeros_like(att_src), g_att_bias = at::zeros_like(a.att_bias);
  auto g_w_ih = at::zeros_like(a.w_ih), g_w_hh = at::zeros_like(a.w_hh);
  auto g_b_ih = at::zeros_like(a.b_ih), g_b_hh = at::zeros_like(a.b_hh);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t* gperm = group_perm.data_ptr<int64_t>();
  const int64_t* gptr = group_ptr.data_ptr<int64_t>();
  const int64_t* gsrc = group_src.data_ptr<int64_t>();
  const auto entry_starts = level_entry_starts(ptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_backward_cpu", [&] {
    const scalar_t* h0p = h0.data_ptr<scalar_t>();
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* asp = att_src.data_ptr<scalar_t>();
    const scalar_t* rzp = rz.data_ptr<scalar_t>();
    const scalar_t* np = n.data_ptr<scalar_t>();
    const scalar_t* ghnp = gh_n.data_ptr<scalar_t>();
    scalar_t* gp = g.data_ptr<scalar_t>();
    for (int64_t l = L - 1; l >= 1; --l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      // GRU cell backward; upstream g rows of the level are complete (later levels are done).
      auto dgi = at::empty({R, 3 * F}, opts), dgh = at::empty({R, 3 * F}, opts), dhv = at::empty({R, F}, opts);
      scalar_t* dgip = dgi.data_ptr<scalar_t>();
      scalar_t* dghp = dgh.data_ptr<scalar_t>();
      scalar_t* dhvp = dhv.data_ptr<scalar_t>();
      at::parallel_for(0, R, csr_row_grain(0, R, 8 * F), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t v = s + r;
          for (int64_t f = 0; f < F; ++f)
            dhvp[r * F + f] = gru_cell_backward(rzp[v * 2 * F + f], rzp[v * 2 * F + F + f], np[v * F + f],
                                                ghnp[v * F + f], h0p[v * F + f], gp[v * F + f], F, f,
                                                dgip + r * 3 * F, dghp + r * 3 * F);
        }
      });
      const auto hv = h0.slice(0, s, t), msg_l = msg.slice(0, s, t);
      const auto dmsg = at::mm(dgi, a.w_ih);
      dhv.add_(at::mm(dgh, a.w_hh));
      g_w_ih.addmm_(dgi.t(), msg_l);
      g_w_hh.addmm_(dgh.t(), hv);
      g_b_ih.add_(dgi.sum(0));
      g_b_hh.add_(dgh.sum(0));
      // Attention backward: per-entry gradients of the gathered rows, per-row parameter parts.
      auto dx = at::empty({El, F}, opts), g_src_rows = at::empty({R, F}, opts);
      auto g_bias_rows = at::empty({R}, opts), ds = at::empty({R}, opts);
      {
        const scalar_t* lgp = logit.data_ptr<scalar_t>() + es;
        const scalar_t* msgp = msg.data_ptr<scalar_t>() + s * F;
        const scalar_t* dmp = dmsg.data_ptr<scalar_t>();
        scalar_t* dxp = dx.data_ptr<scalar_t>();
        scalar_t* gsp = g_src_rows.data_ptr<scalar_t>();
        scalar_t* gbp = g_bias_rows.data_ptr<scalar_t>();
        scalar_t* dsp = ds.data_ptr<scalar_t>();
        at::parallel_for(0, R, csr_row_grain(El, R, 2 * F), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r)
            dsp[r] = flow_attention_row_backward(s + r, r, es, ptr, idx, hp, asp, lgp, msgp, dmp, F, dxp, gsp,
                                                 &gbp[r]);
        });
      }
      g_att_src.add_(g_src_rows.sum(0));
      g_att_bias.add_(g_bias_rows.sum().reshape({1}));
      g_att_dst.add_(at::mv(hv.t(), ds));
      dhv.add_(at::outer(ds, att_dst));
      g.slice(0, s, t).copy_(dhv);  // what reaches h0 at this level
      // Scatter the gathered rows' gradients: one task per distinct predecessor, entries in order.
      const scalar_t* dxp = dx.data_ptr<scalar_t>();
      const int64_t g0 = groups[l], g1 = groups[l + 1];
      at::parallel_for(g0, g1, csr_row_grain(El, g1 - g0, F), [&](int64_t begin, int64_t end) {
        for (int64_t grp = begin; grp < end; ++grp) {
          scalar_t* row = gp + gsrc[grp] * F;
          for (int64_t f = 0; f < F; ++f) {
            scalar_t acc = scalar_t(0);
            for (int64_t q = gptr[grp]; q < gptr[grp + 1]; ++q) acc = acc + dxp[(gperm[q] - es) * F + f];
            row[f] = row[f] + acc;
          }
        }
      });
    }
  });
  return {g, g_att_dst, g_att_src, g_att_bias, g_w_ih, g_w_hh, g_b_ih, g_b_hh};
}

}  // namespace fgp
