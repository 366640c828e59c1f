#include "ops/flow_pass.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {
namespace {

// First entry of every level (indptr at the level boundaries).
std::vector<int64_t> level_entry_starts(const int64_t* indptr, const std::vector<int64_t>& levels) {
  std::vector<int64_t> starts(levels.size());
  for (size_t l = 0; l < levels.size(); ++l) starts[l] = indptr[levels[l]];
  return starts;
}

// Levels this small (rows x width) skip ATen: its per-call cost (~25 calls per level and pass)
// would dominate deep, narrow DAGs (a chain has one node per level). They run as plain loops with
// the shared gate functions; large levels use ATen's GEMMs and vectorised sigmoid/tanh.
constexpr int64_t kSmallLevelWork = 512;

// out[j] = bias[j] + <w[j, :], x> for j < rows_w (one row of x @ w^T + bias).
template <typename T>
void affine_row(const T* w, const T* bias, const T* x, int64_t rows_w, int64_t F, T* out) {
  for (int64_t j = 0; j < rows_w; ++j) out[j] = bias[j] + row_dot(w + j * F, x, F);
}

// Forward of the GRU cell for the rows [s, t) of a small level, loops only.
template <typename T>
void gru_small_level(int64_t s, int64_t t, int64_t F, const T* msg, const T* h0, const T* w_ih, const T* w_hh,
                     const T* b_ih, const T* b_hh, T* h, T* rz, T* n, T* gh_n) {
  std::vector<T> gi(3 * F), gh(3 * F);
  for (int64_t v = s; v < t; ++v) {
    affine_row(w_ih, b_ih, msg + v * F, 3 * F, F, gi.data());
    affine_row(w_hh, b_hh, h0 + v * F, 3 * F, F, gh.data());
    for (int64_t f = 0; f < F; ++f) {
      T rg, zg, ng;
      gru_gates(gi.data(), gh.data(), F, f, &rg, &zg, &ng);
      rz[v * 2 * F + f] = rg;
      rz[v * 2 * F + F + f] = zg;
      n[v * F + f] = ng;
      gh_n[v * F + f] = gh[2 * F + f];
      h[v * F + f] = gru_combine(zg, ng, h0[v * F + f]);
    }
  }
}

// Scatter a level's gathered-row gradients dx (entries es..) into g: one task per distinct
// predecessor (group), its entries summed in order, added once: no atomics.
template <typename T>
void scatter_groups(int64_t g0, int64_t g1, int64_t es, int64_t F, const int64_t* gperm, const int64_t* gptr,
                    const int64_t* gsrc, const T* dx, T* g, int64_t num_entries) {
  at::parallel_for(g0, g1, csr_row_grain(num_entries, g1 - g0, F), [&](int64_t begin, int64_t end) {
    for (int64_t grp = begin; grp < end; ++grp) {
      T* row = g + gsrc[grp] * F;
      for (int64_t f = 0; f < F; ++f) {
        T acc = T(0);
        for (int64_t q = gptr[grp]; q < gptr[grp + 1]; ++q) acc = acc + dx[(gperm[q] - es) * F + f];
        row[f] = row[f] + acc;
      }
    }
  });
}

// Everything the backward does for one small level, in loops (same order of operations per row
// as the large-level path up to the GEMMs' summation order). Parameter gradients accumulate in
// place; rows are visited in order, so the result is deterministic.
template <typename T>
struct SmallLevelGrads {
  T *g_att_dst, *g_att_src, *g_att_bias, *g_w_ih, *g_w_hh, *g_b_ih, *g_b_hh;
};

template <typename T>
void backward_small_level(int64_t s, int64_t t, int64_t es, int64_t F, const int64_t* ptr, const int64_t* idx,
                          const T* h0, const T* h, const T* msg, const T* rz, const T* n, const T* gh_n,
                          const T* logit, const T* att_dst, const T* att_src, const T* w_ih, const T* w_hh, T* g,
                          T* dx, const SmallLevelGrads<T>& out) {
  std::vector<T> dgi(3 * F), dgh(3 * F), dhv(F), dmsg(F), g_src_row(F);
  for (int64_t v = s; v < t; ++v) {
    for (int64_t f = 0; f < F; ++f)
      dhv[f] = gru_cell_backward(rz[v * 2 * F + f], rz[v * 2 * F + F + f], n[v * F + f], gh_n[v * F + f],
                                 h0[v * F + f], g[v * F + f], F, f, dgi.data(), dgh.data());
    for (int64_t f = 0; f < F; ++f) dmsg[f] = T(0);
    for (int64_t j = 0; j < 3 * F; ++j) {
      const T a = dgi[j], b = dgh[j];
      const T* wi = w_ih + j * F;
      const T* wh = w_hh + j * F;
      T* gwi = out.g_w_ih + j * F;
      T* gwh = out.g_w_hh + j * F;
      for (int64_t f = 0; f < F; ++f) {
        dmsg[f] = dmsg[f] + a * wi[f];
        dhv[f] = dhv[f] + b * wh[f];
        gwi[f] = gwi[f] + a * msg[v * F + f];
        gwh[f] = gwh[f] + b * h0[v * F + f];
      }
      out.g_b_ih[j] = out.g_b_ih[j] + a;
      out.g_b_hh[j] = out.g_b_hh[j] + b;
    }
    // the attention row works on local row 0 of one-row buffers
    T gb;
    const T ds = flow_attention_row_backward(v, 0, ptr[v], ptr, idx, h, att_src, logit + (ptr[v] - es),
                                             msg + v * F, dmsg.data(), F, dx + (ptr[v] - es) * F, g_src_row.data(),
                                             &gb);
    for (int64_t f = 0; f < F; ++f) {
      out.g_att_src[f] = out.g_att_src[f] + g_src_row[f];
      out.g_att_dst[f] = out.g_att_dst[f] + ds * h0[v * F + f];
      g[v * F + f] = dhv[f] + ds * att_dst[f];
    }
    out.g_att_bias[0] = out.g_att_bias[0] + gb;
  }
}

}  // namespace

std::vector<at::Tensor> flow_pass_forward_cpu(at::TensorList args_in) {
  const FlowPassArgs a = flow_pass_args(args_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous();
  const auto w_ih = a.w_ih.contiguous(), w_hh = a.w_hh.contiguous(), b_ih = a.b_ih.contiguous();
  const auto b_hh = a.b_hh.contiguous();
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
      if (R * F <= kSmallLevelWork) {
        gru_small_level(s, t, F, msg.data_ptr<scalar_t>(), h0p, w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(),
                        b_ih.data_ptr<scalar_t>(), b_hh.data_ptr<scalar_t>(), hp, rz.data_ptr<scalar_t>(),
                        n.data_ptr<scalar_t>(), gh_n.data_ptr<scalar_t>());
        continue;
      }
      // GEMMs by ATen; the gates with ATen's vectorised sigmoid/tanh (the formulas of gru_gates).
      const auto gi = at::addmm(b_ih, msg.slice(0, s, t), w_ih.t());
      const auto gh = at::addmm(b_hh, h0.slice(0, s, t), w_hh.t());
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
  const auto sv = unpack_flow_pass_saved(grad, saved, a);
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous();
  const auto group_perm = a.group_perm.contiguous(), group_ptr = a.group_ptr.contiguous();
  const auto group_src = a.group_src.contiguous();
  const auto w_ih = a.w_ih.contiguous(), w_hh = a.w_hh.contiguous();
  const auto &h = sv.h, &msg = sv.msg, &rz = sv.rz, &n = sv.n, &gh_n = sv.gh_n, &logit = sv.logit;
  const int64_t F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  auto g = grad.contiguous().clone();
  FlowPassWeightGrads wg(a);
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
      if (R * F <= kSmallLevelWork) {
        auto dx_small = at::empty({El, F}, opts);
        const SmallLevelGrads<scalar_t> grads{wg.att_dst.data_ptr<scalar_t>(), wg.att_src.data_ptr<scalar_t>(),
                                              wg.att_bias.data_ptr<scalar_t>(), wg.w_ih.data_ptr<scalar_t>(),
                                              wg.w_hh.data_ptr<scalar_t>(), wg.b_ih.data_ptr<scalar_t>(),
                                              wg.b_hh.data_ptr<scalar_t>()};
        backward_small_level(s, t, es, F, ptr, idx, h0p, hp, msg.data_ptr<scalar_t>(), rzp, np, ghnp,
                             logit.data_ptr<scalar_t>() + es, att_dst.data_ptr<scalar_t>(), asp,
                             w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(), gp, dx_small.data_ptr<scalar_t>(),
                             grads);
        scatter_groups(groups[l], groups[l + 1], es, F, gperm, gptr, gsrc, dx_small.data_ptr<scalar_t>(), gp, El);
        continue;
      }
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
      const auto dmsg = at::mm(dgi, w_ih);
      dhv.add_(at::mm(dgh, w_hh));
      wg.add_gru(dgi, dgh, msg_l, hv);
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
      wg.add_attention(g_src_rows, g_bias_rows, ds, hv);
      dhv.add_(at::outer(ds, att_dst));
      g.slice(0, s, t).copy_(dhv);  // what reaches h0 at this level
      scatter_groups(groups[l], groups[l + 1], es, F, gperm, gptr, gsrc, dx.data_ptr<scalar_t>(), gp, El);
    }
  });
  return wg.with_input_grad(g);
}

}  // namespace fgp
