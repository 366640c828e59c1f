// flow_pass(h0[N, F], level_ptr[L+1], indptr[N+1], index[E], group_level_ptr[L+1], group_perm[E],
//           group_ptr[G+1], group_src[G], att_dst[F], att_src[F], att_bias[1],
//           w_ih[3F, F], w_hh[3F, F], b_ih[3F], b_hh[3F]) -> h[N, F]
// One whole flow pass of a flow-aware encoder (FlowerFormer style), generation by generation, on a
// level schedule (positions sorted by level; level_ptr, and the predecessor CSR indptr/index in
// positions, from level_schedule). For every level l >= 0, each node v of the level:
//   logit_e = <att_dst, h0[v]> + (<att_src, h[u_e]> + att_bias)      over its entries e (u_e earlier)
//   m_v     = sum_e softmax(logit)_e * h[u_e]                         (0 without predecessors)
//   h[v]    = GRUCell(input = h0[v], hidden = m_v)   (torch.nn.GRUCell's equations: w_ih, w_hh, b_ih, b_hh)
// As in FlowerFormer, the node's own state is the GRU input and the aggregated message its hidden
// state, and the first generation goes through the cell too (with a zero message). Because the GRU
// input is h0, its projection h0 @ w_ih^T is one GEMM for the whole pass; only the message's
// projection is per level. The per-level work runs in C++ (GEMMs by ATen, the rest fused), so a pass
// costs one call from Python whatever the depth. The backward (flow_pass_backward) walks the levels
// in reverse from the saved per-level intermediates; the gradients of the predecessor rows are
// summed per distinct predecessor (group_*: the entries of each level grouped by source position,
// group_level_ptr the groups of each level) and added once per row: no atomics, reproducible. The
// gradients that do not feed back into earlier levels (h0 and all weights) are formed after the
// level loop, from whole-pass buffers, in a few GEMMs.
#pragma once

#include <cmath>

#include "ops/common.h"
#include "ops/edge_dot.h"
#include "ops/gather_attention.h"

namespace fgp {

// The GRU cell (torch.nn.GRUCell equations); the algebra and its backward are shared by every path
// (CPU small and large levels, CUDA), and so are the transcendental functions: gate_sigmoid and
// gate_tanh, built on our exp (fast_math.h), branch-free so CPU loops over a row vectorise.
//   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n)   (gru_gates)
//   h' = (1 - z) * n + z * h                                                        (gru_combine)
// gi, gh are one row's [3F] input / hidden projections (blocks r, z, n), f the column.
template <typename T>
FGP_HOST_DEVICE inline void gru_gates(const T* gi, const T* gh, int64_t F, int64_t f, T* r, T* z, T* n) {
  *r = gate_sigmoid(gi[f] + gh[f]);
  *z = gate_sigmoid(gi[F + f] + gh[F + f]);
  *n = gate_tanh(gi[2 * F + f] + *r * gh[2 * F + f]);
}

template <typename T>
FGP_HOST_DEVICE inline T gru_combine(T z, T n, T h) {
  return (T(1) - z) * n + z * h;
}

// Backward of the cell at one element for upstream gradient dh, given the gates, gh_n and the
// hidden state h: writes the gradients of the pre-activations (dgi, dgh: rows of [3F]) and returns
// the direct gradient of h (through z * h).
template <typename T>
FGP_HOST_DEVICE inline T gru_cell_backward(T r, T z, T n, T gh_n, T h, T dh, int64_t F, int64_t f, T* dgi, T* dgh) {
  const T dz = dh * (h - n), dn_pre = dh * (T(1) - z) * (T(1) - n * n);
  const T dr_pre = dn_pre * gh_n * r * (T(1) - r);
  const T dz_pre = dz * z * (T(1) - z);
  dgi[f] = dr_pre;
  dgi[F + f] = dz_pre;
  dgi[2 * F + f] = dn_pre;
  dgh[f] = dr_pre;
  dgh[F + f] = dz_pre;
  dgh[2 * F + f] = dn_pre * r;
  return dh * z;
}

// Attention message of node v (position v, local row `row`): fills logit[e - e0] for its entries
// and writes msg[row] (F values). Sums run in entry order.
template <typename T>
FGP_HOST_DEVICE inline void flow_attention_row(int64_t v, int64_t row, int64_t e0, const int64_t* indptr,
                                               const int64_t* index, const T* h0, const T* h, const T* att_dst,
                                               const T* att_src, T att_bias, int64_t F, T* logit, T* msg) {
  const int64_t a = indptr[v], b = indptr[v + 1];
  const T sv = row_dot(att_dst, h0 + v * F, F);
  for (int64_t e = a; e < b; ++e) logit[e - e0] = sv + (row_dot(att_src, h + index[e] * F, F) + att_bias);
  T* out = msg + row * F;
  for (int64_t f = 0; f < F; ++f) out[f] = T(0);
  if (a == b) return;
  T mx, sum;
  softmax_row_stats(logit, 1, 0, a - e0, b - e0, &mx, &sum);
  for (int64_t e = a; e < b; ++e) {
    const T w = softmax_weight(logit[e - e0], mx, sum);
    const T* x = h + index[e] * F;
    for (int64_t f = 0; f < F; ++f) out[f] = out[f] + w * x[f];
  }
}

// Backward of flow_attention_row for the message gradient dmsg[row]: the gradient of each entry's
// gathered row (dx[e - e0], F values), and per row the att_src gradient part (g_src_row, F values),
// the att_bias part (*g_bias) and the logit-sum ds (the att_dst / h0[v] factor).
template <typename T>
FGP_HOST_DEVICE inline T flow_attention_row_backward(int64_t v, int64_t row, int64_t e0, const int64_t* indptr,
                                                     const int64_t* index, const T* h, const T* att_src,
                                                     const T* logit, const T* msg, const T* dmsg, int64_t F, T* dx,
                                                     T* g_src_row, T* g_bias) {
  const int64_t a = indptr[v], b = indptr[v + 1];
  for (int64_t f = 0; f < F; ++f) g_src_row[row * F + f] = T(0);
  T ds = T(0), gb = T(0);
  if (a < b) {
    T mx, sum;
    softmax_row_stats(logit, 1, 0, a - e0, b - e0, &mx, &sum);
    const T* dm = dmsg + row * F;
    const T g_out = row_dot(dm, msg + row * F, F);
    for (int64_t e = a; e < b; ++e) {
      const T w = softmax_weight(logit[e - e0], mx, sum);
      const T* x = h + index[e] * F;
      const T dl = w * (row_dot(dm, x, F) - g_out);
      T* dxe = dx + (e - e0) * F;
      for (int64_t f = 0; f < F; ++f) {
        dxe[f] = w * dm[f] + dl * att_src[f];
        g_src_row[row * F + f] = g_src_row[row * F + f] + dl * x[f];
      }
      gb = gb + dl;
      ds = ds + dl;
    }
  }
  *g_bias = gb;
  return ds;
}

struct FlowPassArgs {
  at::Tensor h0, level_ptr, indptr, index, group_level_ptr, group_perm, group_ptr, group_src;
  at::Tensor att_dst, att_src, att_bias, w_ih, w_hh, b_ih, b_hh;
};

// Shapes, dtypes, devices and the schedule's structure (every entry of level l reads a position
// before level l). The level pointers are returned on the host for the level loop.
inline std::pair<std::vector<int64_t>, std::vector<int64_t>> check_flow_pass_args(const FlowPassArgs& a) {
  check_float(a.h0, "h0");
  TORCH_CHECK(a.h0.dim() == 2, "h0 must be [N, F], got ", a.h0.sizes());
  const int64_t N = a.h0.size(0), F = a.h0.size(1);
  for (const auto* t : {&a.level_ptr, &a.indptr, &a.index, &a.group_level_ptr, &a.group_perm, &a.group_ptr,
                        &a.group_src}) {
    check_index_vector(*t, "schedule tensors");
    check_same_device(a.h0, "h0", *t, "the schedule tensors");
  }
  const struct { const at::Tensor* t; std::vector<int64_t> shape; const char* name; } params[] = {
      {&a.att_dst, {F}, "att_dst"}, {&a.att_src, {F}, "att_src"}, {&a.att_bias, {1}, "att_bias"},
      {&a.w_ih, {3 * F, F}, "w_ih"}, {&a.w_hh, {3 * F, F}, "w_hh"}, {&a.b_ih, {3 * F}, "b_ih"},
      {&a.b_hh, {3 * F}, "b_hh"}};
  for (const auto& p : params) {
    TORCH_CHECK(p.t->sizes() == p.shape, p.name, " must have shape ", p.shape, ", got ", p.t->sizes());
    TORCH_CHECK(p.t->scalar_type() == a.h0.scalar_type(), p.name, " must have the dtype of h0");
    check_same_device(a.h0, "h0", *p.t, p.name);
  }
  TORCH_CHECK(a.indptr.numel() == N + 1, "indptr must have N + 1 = ", N + 1, " entries, got ", a.indptr.numel());
  check_indptr_full(a.indptr, a.index.numel(), "indptr");
  check_indptr_full(a.level_ptr, N, "level_ptr");
  check_indptr_full(a.group_ptr, a.group_perm.numel(), "group_ptr");
  TORCH_CHECK(a.group_perm.numel() == a.index.numel(), "group_perm must hold every entry once");
  TORCH_CHECK(a.group_src.numel() == a.group_ptr.numel() - 1, "group_src must have one entry per group");
  TORCH_CHECK(a.group_level_ptr.numel() == a.level_ptr.numel(), "group_level_ptr must have one entry per level + 1");
  check_indptr_full(a.group_level_ptr, a.group_src.numel(), "group_level_ptr");
  check_index_range(a.group_perm, std::max<int64_t>(a.index.numel(), 1), "group_perm");
  check_index_range(a.group_src, std::max<int64_t>(N, 1), "group_src");
  const auto lp = a.level_ptr.cpu(), glp = a.group_level_ptr.cpu();
  std::vector<int64_t> levels(lp.data_ptr<int64_t>(), lp.data_ptr<int64_t>() + lp.numel());
  std::vector<int64_t> groups(glp.data_ptr<int64_t>(), glp.data_ptr<int64_t>() + glp.numel());
  if (a.index.numel()) {
    // Every entry must read a finished row: index[e] < start of its destination's level.
    const auto pos = at::arange(N, a.indptr.options());
    const auto level_of_pos = at::searchsorted(a.level_ptr, pos, /*out_int32=*/false, /*right=*/true) - 1;
    const auto start_of_pos = a.level_ptr.index_select(0, level_of_pos);
    const auto start_of_entry = at::repeat_interleave(start_of_pos, a.indptr.diff(), 0, a.index.numel());
    TORCH_CHECK((a.index >= 0).logical_and(a.index < start_of_entry).all().item<bool>(),
                "flow_pass: an entry reads a position of its own or a later level; build the schedule with "
                "level_schedule");
    // The groups must partition each level's entries by source position (else gradients are lost
    // or read out of bounds).
    const int64_t E = a.index.numel(), G = a.group_src.numel();
    const auto entry_level = at::repeat_interleave(level_of_pos, a.indptr.diff(), 0, E);
    const auto group_of_q = at::repeat_interleave(at::arange(G, a.indptr.options()), a.group_ptr.diff(), 0, E);
    const auto level_of_group = at::repeat_interleave(at::arange(a.level_ptr.numel() - 1, a.indptr.options()),
                                                      a.group_level_ptr.diff(), 0, G);
    const bool ok = at::equal(std::get<0>(at::sort(a.group_perm)), at::arange(E, a.indptr.options())) &&
                    at::equal(entry_level.index_select(0, a.group_perm), level_of_group.index_select(0, group_of_q)) &&
                    at::equal(a.index.index_select(0, a.group_perm), a.group_src.index_select(0, group_of_q));
    TORCH_CHECK(ok, "flow_pass: group_perm/group_ptr/group_src/group_level_ptr do not group every level's entries "
                "by source; build them with fgp_ext.levels.LevelPlan");
  }
  return {levels, groups};
}

// The tensors the forward saves for the backward, checked and made contiguous.
struct FlowPassSaved {
  at::Tensor h, msg, rz, n, gh_n, logit;
};

inline FlowPassSaved unpack_flow_pass_saved(const at::Tensor& grad, at::TensorList saved, const FlowPassArgs& a) {
  TORCH_CHECK(saved.size() == 6, "flow_pass_backward: expected the 6 tensors saved by the forward");
  TORCH_CHECK(grad.sizes() == a.h0.sizes(), "grad must have the shape of h0");
  TORCH_CHECK(grad.scalar_type() == a.h0.scalar_type(), "grad must have the dtype of h0");
  check_same_device(a.h0, "h0", grad, "grad");
  // {h, msg, rz, n, gh_n, logit} as flow_pass_train returns them: the kernels index them unchecked.
  const int64_t N = a.h0.size(0), F = a.h0.size(1);
  const std::vector<int64_t> shapes[6] = {{N, F}, {N, F}, {N, 2 * F}, {N, F}, {N, F}, {a.index.numel()}};
  for (size_t i = 0; i < 6; ++i) {
    TORCH_CHECK(saved[i].sizes() == shapes[i], "flow_pass_backward: saved tensor ", i, " must have shape ", shapes[i],
                ", got ", saved[i].sizes());
    TORCH_CHECK(saved[i].scalar_type() == a.h0.scalar_type(), "flow_pass_backward: saved tensor ", i,
                " must have the dtype of h0");
    check_same_device(a.h0, "h0", saved[i], "the saved tensors");
  }
  return {saved[0].contiguous(), saved[1].contiguous(), saved[2].contiguous(),
          saved[3].contiguous(), saved[4].contiguous(), saved[5].contiguous()};
}

// The backward's whole-pass buffers, filled level by level (each row once, by its own level): the
// GRU pre-activation gradients, and the attention's per-row parts (att_src [N, F], att_bias and the
// logit sum ds [N]). Nothing in them feeds back into earlier levels, so the gradients of h0 and of
// every weight are formed from them once, after the level loop, with the same ATen calls on every
// device (finish()).
struct FlowPassGradBuffers {
  at::Tensor dgi, dgh, g_src_rows, g_bias_rows, ds;

  FlowPassGradBuffers(int64_t N, int64_t F, const at::TensorOptions& opts)
      : dgi(at::zeros({N, 3 * F}, opts)), dgh(at::zeros({N, 3 * F}, opts)), g_src_rows(at::zeros({N, F}, opts)),
        g_bias_rows(at::zeros({N}, opts)), ds(at::zeros({N}, opts)) {}

  // {grad_h0, grad_att_dst, grad_att_src, grad_att_bias, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh}:
  // h0 enters as the GRU input (through w_ih) and as the attention's destination (through att_dst);
  // the message (msg) is the GRU hidden state (through w_hh).
  std::vector<at::Tensor> finish(const FlowPassArgs& a, const at::Tensor& h0, const at::Tensor& msg) const {
    auto grad_h0 = at::mm(dgi, a.w_ih);
    grad_h0.addr_(ds, a.att_dst);
    return {grad_h0,
            at::mv(h0.t(), ds),
            g_src_rows.sum(0),
            g_bias_rows.sum().reshape({1}),
            at::mm(dgi.t(), h0),
            at::mm(dgh.t(), msg),
            dgi.sum(0),
            dgh.sum(0)};
  }
};

// Kernels. args = the 15 inputs of flow_pass in schema order (FlowPassArgs). The forward returns
// {h, msg[N, F], rz[N, 2F], n[N, F], gh_n[N, F], logit[E]}: the output and the intermediates the
// backward needs (attention messages, GRU gates r|z, n, and the hidden projection's n block), so the
// backward needs no recomputation and no forward GEMM. The backward
// returns {grad_h0, grad_att_dst, grad_att_src, grad_att_bias, grad_w_ih, grad_w_hh, grad_b_ih,
// grad_b_hh}.
std::vector<at::Tensor> flow_pass_forward_cpu(at::TensorList args);
std::vector<at::Tensor> flow_pass_backward_cpu(const at::Tensor& grad, at::TensorList saved, at::TensorList args);
std::vector<at::Tensor> flow_pass_forward_cuda(at::TensorList args);
std::vector<at::Tensor> flow_pass_backward_cuda(const at::Tensor& grad, at::TensorList saved, at::TensorList args);

inline FlowPassArgs flow_pass_args(at::TensorList t) {
  TORCH_CHECK(t.size() == 15, "flow_pass takes 15 tensors (h0, 7 schedule tensors, 7 weights), got ", t.size());
  return {t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13], t[14]};
}

}  // namespace fgp
