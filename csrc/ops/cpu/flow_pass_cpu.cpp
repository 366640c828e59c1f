#include "ops/flow_pass.h"

#include <vector>

namespace fgp {
namespace {

// First entry of every level (indptr at the level boundaries).
std::vector<int64_t> level_entry_starts(const int64_t* indptr, const std::vector<int64_t>& levels) {
  std::vector<int64_t> starts(levels.size());
  for (size_t l = 0; l < levels.size(); ++l) starts[l] = indptr[levels[l]];
  return starts;
}

// Levels this small (rows x width) skip the dispatcher: its per-call cost would dominate deep,
// narrow DAGs (a chain has one node per level), so their message projection runs as plain loops;
// large levels use torch's GEMM. The gates are the shared gru_gates on every level.
constexpr int64_t kSmallLevelWork = 512;

// Gates and new state of rows [begin, end) of a level starting at s: gi is the pass's [N, 3F] input
// projection, gh the level's [R, 3F] message projection (row v at v - s); the message is the
// hidden state. Vectorised over the columns (gate_sigmoid / gate_tanh are branch-free).
template <typename T>
FGP_CPU_CLONES void gru_rows(int64_t begin, int64_t end, int64_t s, int64_t F, const T* __restrict__ gi,
                             const T* __restrict__ gh, const T* __restrict__ msg, T* __restrict__ h,
                             T* __restrict__ rz, T* __restrict__ n, T* __restrict__ gh_n) {
  for (int64_t v = begin; v < end; ++v) {
    const T* __restrict__ gv = gh + (v - s) * 3 * F;
    for (int64_t f = 0; f < F; ++f) {
      T rg, zg, ng;
      gru_gates(gi + v * 3 * F, gv, F, f, &rg, &zg, &ng);
      rz[v * 2 * F + f] = rg;
      rz[v * 2 * F + F + f] = zg;
      n[v * F + f] = ng;
      gh_n[v * F + f] = gv[2 * F + f];
      h[v * F + f] = gru_combine(zg, ng, msg[v * F + f]);
    }
  }
}

// The message projection of the rows [s, t) of a small level (gh: [R, 3F]), in loops: accumulated
// column by column of w_hh (w_hh_t = w_hh^T, [F, 3F]), so the inner loop is an axpy over the 3F
// outputs, which vectorises (a dot product per output would be a serial floating-point reduction).
template <typename T>
FGP_CPU_CLONES void message_projection_small_level(int64_t s, int64_t t, int64_t F, const T* __restrict__ msg,
                                                   const T* __restrict__ w_hh_t, const T* __restrict__ b_hh,
                                                   T* __restrict__ gh) {
  for (int64_t v = s; v < t; ++v) {
    T* __restrict__ g = gh + (v - s) * 3 * F;
    const T* __restrict__ m = msg + v * F;
    for (int64_t j = 0; j < 3 * F; ++j) g[j] = b_hh[j];
    for (int64_t f = 0; f < F; ++f) {
      const T mf = m[f];
      const T* __restrict__ col = w_hh_t + f * 3 * F;
      for (int64_t j = 0; j < 3 * F; ++j) g[j] = g[j] + col[j] * mf;
    }
  }
}

// dmsg[r] += dgh[s + r] @ w_hh for the rows of a small level (axpy over the F columns per j).
template <typename T>
FGP_CPU_CLONES void message_grad_small_level(int64_t s, int64_t R, int64_t F, const T* __restrict__ dgh,
                                             const T* __restrict__ w_hh, T* __restrict__ dmsg) {
  for (int64_t r = 0; r < R; ++r) {
    T* __restrict__ out = dmsg + r * F;
    for (int64_t j = 0; j < 3 * F; ++j) {
      const T b = dgh[(s + r) * 3 * F + j];
      const T* __restrict__ wh = w_hh + j * F;
      for (int64_t f = 0; f < F; ++f) out[f] = out[f] + b * wh[f];
    }
  }
}

// GRU cell backward for rows [s, t): fills the rows' dgi, dgh (whole-pass buffers [N, 3F]) and the
// direct gradient of the message (dmsg, local rows [R, F]).
template <typename T>
void gru_backward_rows(int64_t s, int64_t t, int64_t F, const T* rz, const T* n, const T* gh_n, const T* msg,
                       const T* g, T* dgi, T* dgh, T* dmsg) {
  for (int64_t v = s; v < t; ++v)
    for (int64_t f = 0; f < F; ++f)
      dmsg[(v - s) * F + f] = gru_cell_backward(rz[v * 2 * F + f], rz[v * 2 * F + F + f], n[v * F + f],
                                                gh_n[v * F + f], msg[v * F + f], g[v * F + f], F, f, dgi + v * 3 * F,
                                                dgh + v * 3 * F);
}

// Scatter a level's gathered-row gradients dx (entries es..) into g: one task per distinct
// predecessor (group), its entries summed in order, added once: no atomics.
template <typename T>
void scatter_groups(int64_t g0, int64_t g1, int64_t es, int64_t F, const int64_t* gperm, const int64_t* gptr,
                    const int64_t* gsrc, const T* dx, T* g, int64_t num_entries) {
  parallel_for(g0, g1, csr_row_grain(num_entries, g1 - g0, F), [&](int64_t begin, int64_t end) {
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

// out[i, j] += u[i] * v[j] for out [rows, cols] (contiguous): ATen's out.addr_(u, v) in a loop
// (addr_ takes Scalars, which the stable ABI cannot pass). Not contracted (-ffp-contract=off), where
// ATen's vectorised addr_ could round a column through an FMA: the term may differ in the last bit.
template <typename T>
FGP_CPU_CLONES void add_outer_rows(int64_t rows, int64_t cols, const T* __restrict__ u, const T* __restrict__ v,
                                   T* __restrict__ out) {
  for (int64_t i = 0; i < rows; ++i) {
    const T ui = u[i];
    T* __restrict__ row = out + i * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] = row[j] + ui * v[j];
  }
}

// The backward's grad_h0 += ds att_dst^T (FlowPassGradBuffers::finish).
void add_outer_cpu(Tensor& out, const Tensor& u, const Tensor& v) {
  FGP_DISPATCH_FLOATING_TYPES(out.scalar_type(), "flow_pass_backward_cpu", [&] {
    add_outer_rows<scalar_t>(out.size(0), out.size(1), u.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>());
  });
}

}  // namespace

FlowPassOutputs flow_pass_forward_cpu(const Tensor& h0_in, const Tensor& level_ptr, const Tensor& indptr_in,
                                      const Tensor& index_in, const Tensor& group_level_ptr, const Tensor& group_perm,
                                      const Tensor& group_ptr, const Tensor& group_src, const Tensor& att_dst_in,
                                      const Tensor& att_src_in, const Tensor& att_bias, const Tensor& w_ih,
                                      const Tensor& w_hh_in, const Tensor& b_ih, const Tensor& b_hh_in) {
  const FlowPassArgs a = flow_pass_args(h0_in, level_ptr, indptr_in, index_in, group_level_ptr, group_perm, group_ptr,
                                        group_src, att_dst_in, att_src_in, att_bias, w_ih, w_hh_in, b_ih, b_hh_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto h0 = contiguous(a.h0), indptr = contiguous(a.indptr), index = contiguous(a.index);
  const auto att_dst = contiguous(a.att_dst), att_src = contiguous(a.att_src);
  const auto w_hh = contiguous(a.w_hh), b_hh = contiguous(a.b_hh);
  const auto w_hh_t = contiguous(torch::stable::transpose(a.w_hh, 0, 1));
  const int64_t N = h0.size(0), F = h0.size(1), E = index.numel(), L = static_cast<int64_t>(levels.size()) - 1;
  // The GRU input is h0: its projection for every row at once (linear: addmm(b_ih, h0, w_ih^T)).
  const auto gi = contiguous(aten::linear(h0, a.w_ih, a.b_ih));
  auto h = empty_like_shape(h0, {N, F});
  auto msg = zeros_tensor({N, F}, h0.scalar_type(), h0.device()), rz = empty_like_shape(h0, {N, 2 * F});
  auto n = empty_like_shape(h0, {N, F});
  auto gh_n = empty_like_shape(h0, {N, F}), logit = empty_like_shape(h0, {E});
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  const auto entry_starts = level_entry_starts(ptr, levels);
  FGP_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_cpu", [&] {
    const scalar_t* h0p = h0.const_data_ptr<scalar_t>();
    const scalar_t* gip = gi.const_data_ptr<scalar_t>();
    const scalar_t* adp = att_dst.const_data_ptr<scalar_t>();
    const scalar_t* asp = att_src.const_data_ptr<scalar_t>();
    const scalar_t* bhp = b_hh.const_data_ptr<scalar_t>();
    const scalar_t bias = item<scalar_t>(a.att_bias);
    scalar_t* hp = h.mutable_data_ptr<scalar_t>();
    scalar_t* msgp = msg.mutable_data_ptr<scalar_t>();
    scalar_t* rzp = rz.mutable_data_ptr<scalar_t>();
    scalar_t* np = n.mutable_data_ptr<scalar_t>();
    scalar_t* ghnp = gh_n.mutable_data_ptr<scalar_t>();
    int64_t small_rows = 0;  // the largest small level: the loop path's projection scratch
    for (int64_t l = 0; l < L; ++l) {
      const int64_t rows = levels[l + 1] - levels[l];
      if (rows * F <= kSmallLevelWork) small_rows = std::max(small_rows, rows);
    }
    std::vector<scalar_t> gh_scratch(std::max<int64_t>(small_rows, 1) * 3 * F);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      if (El > 0) {  // the first generation has no predecessors: its message stays 0
        scalar_t* lgp = logit.mutable_data_ptr<scalar_t>() + es;
        parallel_for(0, R, csr_row_grain(El, R, F), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r)
            flow_attention_row(s + r, r, es, ptr, idx, h0p, hp, adp, asp, bias, F, lgp, msgp + s * F);
        });
      }
      const scalar_t* ghp;
      Tensor gh;
      if (R * F <= kSmallLevelWork) {  // the projection in loops, into the scratch
        message_projection_small_level<scalar_t>(s, t, F, msgp, w_hh_t.const_data_ptr<scalar_t>(), bhp,
                                                 gh_scratch.data());
        ghp = gh_scratch.data();
      } else if (El > 0) {  // aten::linear's GEMM (addmm(b_hh, msg[s:t], w_hh^T))
        gh = contiguous(aten::linear(torch::stable::narrow(msg, 0, s, R), w_hh, b_hh));
        ghp = gh.const_data_ptr<scalar_t>();
      } else {  // a zero message projects to b_hh: every row a copy of it
        gh = empty_like_shape(h0, {R, 3 * F});
        scalar_t* g = gh.mutable_data_ptr<scalar_t>();
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = 0; j < 3 * F; ++j) g[r * 3 * F + j] = bhp[j];
        ghp = g;
      }
      parallel_for(s, t, csr_row_grain(0, R, 8 * F), [&](int64_t begin, int64_t end) {
        gru_rows<scalar_t>(begin, end, s, F, gip, ghp, msgp, hp, rzp, np, ghnp);
      });
    }
  });
  return {h, msg, rz, n, gh_n, logit};
}

FlowPassGrads flow_pass_backward_cpu(const Tensor& grad, const Tensor& h_saved, const Tensor& msg_saved,
                                     const Tensor& rz_saved, const Tensor& n_saved, const Tensor& gh_n_saved,
                                     const Tensor& logit_saved, const Tensor& h0_in, const Tensor& level_ptr,
                                     const Tensor& indptr_in, const Tensor& index_in, const Tensor& group_level_ptr,
                                     const Tensor& group_perm_in, const Tensor& group_ptr_in,
                                     const Tensor& group_src_in, const Tensor& att_dst, const Tensor& att_src_in,
                                     const Tensor& att_bias, const Tensor& w_ih, const Tensor& w_hh_in,
                                     const Tensor& b_ih, const Tensor& b_hh) {
  const FlowPassArgs a =
      flow_pass_args(h0_in, level_ptr, indptr_in, index_in, group_level_ptr, group_perm_in, group_ptr_in,
                     group_src_in, att_dst, att_src_in, att_bias, w_ih, w_hh_in, b_ih, b_hh);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto sv = unpack_flow_pass_saved(
      grad, FlowPassSaved{h_saved, msg_saved, rz_saved, n_saved, gh_n_saved, logit_saved}, a);
  const auto h0 = contiguous(a.h0), indptr = contiguous(a.indptr), index = contiguous(a.index);
  const auto att_src = contiguous(a.att_src);
  const auto group_perm = contiguous(a.group_perm), group_ptr = contiguous(a.group_ptr);
  const auto group_src = contiguous(a.group_src);
  const auto w_hh = contiguous(a.w_hh);
  const auto w_hh_t = torch::stable::transpose(w_hh, 0, 1);  // a view: linear's weight.t() is w_hh again
  const auto &h = sv.h, &msg = sv.msg, &rz = sv.rz, &n = sv.n, &gh_n = sv.gh_n, &logit = sv.logit;
  const int64_t N = h0.size(0), F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  auto g = torch::stable::clone(contiguous(grad));  // upstream gradient of h; later levels add into earlier rows
  FlowPassGradBuffers buf(N, F, h0);
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  // Per-level scratch (message and gathered-row gradients), sized for the largest level once and
  // used through raw pointers: a deep chain has one node per level, and allocating (or even
  // slicing) tensors per level was a fifth of its backward.
  int64_t max_rows = 0, max_entries = 0;
  for (int64_t l = 0; l + 1 < static_cast<int64_t>(levels.size()); ++l) {
    max_rows = std::max(max_rows, levels[l + 1] - levels[l]);
    max_entries = std::max(max_entries, ptr[levels[l + 1]] - ptr[levels[l]]);
  }
  auto dmsg_buf = empty_like_shape(h0, {max_rows, F}), dx_buf = empty_like_shape(h0, {max_entries, F});
  const int64_t* idx = index.const_data_ptr<int64_t>();
  const int64_t* gperm = group_perm.const_data_ptr<int64_t>();
  const int64_t* gptr = group_ptr.const_data_ptr<int64_t>();
  const int64_t* gsrc = group_src.const_data_ptr<int64_t>();
  const auto entry_starts = level_entry_starts(ptr, levels);
  FGP_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_backward_cpu", [&] {
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const scalar_t* asp = att_src.const_data_ptr<scalar_t>();
    const scalar_t* rzp = rz.const_data_ptr<scalar_t>();
    const scalar_t* np = n.const_data_ptr<scalar_t>();
    const scalar_t* ghnp = gh_n.const_data_ptr<scalar_t>();
    const scalar_t* msgp = msg.const_data_ptr<scalar_t>();
    const scalar_t* whp = w_hh.const_data_ptr<scalar_t>();
    const scalar_t* lgp0 = logit.const_data_ptr<scalar_t>();
    scalar_t* gp = g.mutable_data_ptr<scalar_t>();
    scalar_t* dgip = buf.dgi.mutable_data_ptr<scalar_t>();
    scalar_t* dghp = buf.dgh.mutable_data_ptr<scalar_t>();
    scalar_t* dmp = dmsg_buf.mutable_data_ptr<scalar_t>();  // rows [0, R): the level's message gradients
    scalar_t* dxp = dx_buf.mutable_data_ptr<scalar_t>();    // rows [0, El): the level's gathered-row gradients
    scalar_t* gsp0 = buf.g_src_rows.mutable_data_ptr<scalar_t>();
    scalar_t* gbp0 = buf.g_bias_rows.mutable_data_ptr<scalar_t>();
    scalar_t* dsp0 = buf.ds.mutable_data_ptr<scalar_t>();
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      // GRU cell backward; the level's upstream rows of g are complete (later levels are done).
      parallel_for(s, t, csr_row_grain(0, R, 8 * F), [&](int64_t begin, int64_t end) {
        gru_backward_rows(begin, end, F, rzp, np, ghnp, msgp, static_cast<const scalar_t*>(gp), dgip, dghp,
                          dmp + (begin - s) * F);
      });
      if (El == 0) continue;  // no predecessors: the message is a constant 0, only dgi/dgh matter
      const scalar_t* dml = dmp;  // the level's message gradients, [R, F]
      Tensor dmsg_gemm;
      if (R * F <= kSmallLevelWork) {
        message_grad_small_level<scalar_t>(s, R, F, dghp, whp, dmp);  // dmsg += dgh @ w_hh, in loops
      } else {
        // dmsg + dgh @ w_hh by one GEMM: linear(dgh, w_hh^T, bias = dmsg) is addmm(dmsg, dgh, w_hh),
        // which copies dmsg into its output and accumulates with beta = 1: the same BLAS call, so
        // the same rounding, as ATen's in-place dmsg.addmm_(dgh, w_hh) (takes Scalars: not stable).
        dmsg_gemm = contiguous(aten::linear(torch::stable::narrow(buf.dgh, 0, s, R), w_hh_t,
                                            torch::stable::narrow(dmsg_buf, 0, 0, R)));
        dml = dmsg_gemm.const_data_ptr<scalar_t>();
      }
      // Attention backward: per-entry gradients of the gathered rows, per-row parameter parts.
      const scalar_t* lgp = lgp0 + es;
      scalar_t* gsp = gsp0 + s * F;
      scalar_t* gbp = gbp0 + s;
      scalar_t* dsp = dsp0 + s;
      parallel_for(0, R, csr_row_grain(El, R, 2 * F), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
          dsp[r] = flow_attention_row_backward(s + r, r, es, ptr, idx, hp, asp, lgp, msgp + s * F, dml, F, dxp, gsp,
                                               &gbp[r]);
      });
      scatter_groups(groups[l], groups[l + 1], es, F, gperm, gptr, gsrc, static_cast<const scalar_t*>(dxp), gp, El);
    }
  });
  return buf.finish(a, h0, msg, add_outer_cpu);
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) {
  m.impl("_flow_pass_forward", TORCH_BOX(&fgp::flow_pass_forward_cpu));
  m.impl("_flow_pass_backward", TORCH_BOX(&fgp::flow_pass_backward_cpu));
}
