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

// Levels this small (rows x width) skip ATen: its per-call cost would dominate deep, narrow DAGs (a
// chain has one node per level), so their message projection runs as plain loops; large levels use
// ATen's GEMM. The gates are the shared gru_gates on every level.
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

}  // namespace

std::vector<at::Tensor> flow_pass_forward_cpu(at::TensorList args_in) {
  const FlowPassArgs a = flow_pass_args(args_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous();
  const auto w_hh = a.w_hh.contiguous(), b_hh = a.b_hh.contiguous(), w_hh_t = a.w_hh.t().contiguous();
  const int64_t N = h0.size(0), F = h0.size(1), E = index.numel(), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  // The GRU input is h0: its projection for every row at once.
  const auto gi = at::addmm(a.b_ih, h0, a.w_ih.t()).contiguous();
  auto h = at::empty({N, F}, opts);
  auto msg = at::zeros({N, F}, opts), rz = at::empty({N, 2 * F}, opts), n = at::empty({N, F}, opts);
  auto gh_n = at::empty({N, F}, opts), logit = at::empty({E}, opts);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const auto entry_starts = level_entry_starts(ptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_cpu", [&] {
    const scalar_t* h0p = h0.data_ptr<scalar_t>();
    const scalar_t* gip = gi.data_ptr<scalar_t>();
    const scalar_t* adp = att_dst.data_ptr<scalar_t>();
    const scalar_t* asp = att_src.data_ptr<scalar_t>();
    const scalar_t bias = a.att_bias.item<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    scalar_t* msgp = msg.data_ptr<scalar_t>();
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
        scalar_t* lgp = logit.data_ptr<scalar_t>() + es;
        at::parallel_for(0, R, csr_row_grain(El, R, F), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r)
            flow_attention_row(s + r, r, es, ptr, idx, h0p, hp, adp, asp, bias, F, lgp, msgp + s * F);
        });
      }
      const scalar_t* ghp;
      at::Tensor gh;
      if (R * F <= kSmallLevelWork) {  // the projection in loops, into the scratch
        message_projection_small_level<scalar_t>(s, t, F, msgp, w_hh_t.data_ptr<scalar_t>(),
                                                 b_hh.data_ptr<scalar_t>(), gh_scratch.data());
        ghp = gh_scratch.data();
      } else {  // ATen's GEMM (a zero message projects to b_hh)
        gh = El > 0 ? at::addmm(b_hh, msg.slice(0, s, t), w_hh.t()) : b_hh.expand({R, 3 * F}).contiguous();
        ghp = gh.data_ptr<scalar_t>();
      }
      at::parallel_for(s, t, csr_row_grain(0, R, 8 * F), [&](int64_t begin, int64_t end) {
        gru_rows<scalar_t>(begin, end, s, F, gip, ghp, msgp, hp, rz.data_ptr<scalar_t>(), n.data_ptr<scalar_t>(),
                           gh_n.data_ptr<scalar_t>());
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
  const auto att_src = a.att_src.contiguous();
  const auto group_perm = a.group_perm.contiguous(), group_ptr = a.group_ptr.contiguous();
  const auto group_src = a.group_src.contiguous();
  const auto w_hh = a.w_hh.contiguous();
  const auto &h = sv.h, &msg = sv.msg, &rz = sv.rz, &n = sv.n, &gh_n = sv.gh_n, &logit = sv.logit;
  const int64_t N = h0.size(0), F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  auto g = grad.contiguous().clone();  // upstream gradient of h; later levels add into earlier rows
  FlowPassGradBuffers buf(N, F, opts);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  // Per-level scratch (message and gathered-row gradients), sized for the largest level once and
  // used through raw pointers: a deep chain has one node per level, and allocating (or even
  // slicing) tensors per level was a fifth of its backward.
  int64_t max_rows = 0, max_entries = 0;
  for (int64_t l = 0; l + 1 < static_cast<int64_t>(levels.size()); ++l) {
    max_rows = std::max(max_rows, levels[l + 1] - levels[l]);
    max_entries = std::max(max_entries, ptr[levels[l + 1]] - ptr[levels[l]]);
  }
  auto dmsg_buf = at::empty({max_rows, F}, opts), dx_buf = at::empty({max_entries, F}, opts);
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t* gperm = group_perm.data_ptr<int64_t>();
  const int64_t* gptr = group_ptr.data_ptr<int64_t>();
  const int64_t* gsrc = group_src.data_ptr<int64_t>();
  const auto entry_starts = level_entry_starts(ptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_backward_cpu", [&] {
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* asp = att_src.data_ptr<scalar_t>();
    const scalar_t* rzp = rz.data_ptr<scalar_t>();
    const scalar_t* np = n.data_ptr<scalar_t>();
    const scalar_t* ghnp = gh_n.data_ptr<scalar_t>();
    const scalar_t* msgp = msg.data_ptr<scalar_t>();
    const scalar_t* whp = w_hh.data_ptr<scalar_t>();
    scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dgip = buf.dgi.data_ptr<scalar_t>();
    scalar_t* dghp = buf.dgh.data_ptr<scalar_t>();
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      // GRU cell backward; the level's upstream rows of g are complete (later levels are done).
      scalar_t* dmp = dmsg_buf.data_ptr<scalar_t>();  // rows [0, R): the level's message gradients
      at::parallel_for(s, t, csr_row_grain(0, R, 8 * F), [&](int64_t begin, int64_t end) {
        gru_backward_rows(begin, end, F, rzp, np, ghnp, msgp, static_cast<const scalar_t*>(gp), dgip, dghp,
                          dmp + (begin - s) * F);
      });
      if (El == 0) continue;  // no predecessors: the message is a constant 0, only dgi/dgh matter
      if (R * F <= kSmallLevelWork)
        message_grad_small_level<scalar_t>(s, R, F, dghp, whp, dmp);  // dmsg += dgh @ w_hh, in loops
      else
        dmsg_buf.narrow(0, 0, R).addmm_(buf.dgh.slice(0, s, t), w_hh);
      // Attention backward: per-entry gradients of the gathered rows, per-row parameter parts.
      const scalar_t* lgp = logit.data_ptr<scalar_t>() + es;
      scalar_t* dxp = dx_buf.data_ptr<scalar_t>();  // rows [0, El): the level's gathered-row gradients
      scalar_t* gsp = buf.g_src_rows.data_ptr<scalar_t>() + s * F;
      scalar_t* gbp = buf.g_bias_rows.data_ptr<scalar_t>() + s;
      scalar_t* dsp = buf.ds.data_ptr<scalar_t>() + s;
      at::parallel_for(0, R, csr_row_grain(El, R, 2 * F), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
          dsp[r] = flow_attention_row_backward(s + r, r, es, ptr, idx, hp, asp, lgp, msgp + s * F,
                                               static_cast<const scalar_t*>(dmp), F, dxp, gsp, &gbp[r]);
      });
      scatter_groups(groups[l], groups[l + 1], es, F, gperm, gptr, gsrc, static_cast<const scalar_t*>(dxp), gp, El);
    }
  });
  return buf.finish(a, h0, msg);
}

}  // namespace fgp
