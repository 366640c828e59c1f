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
// projection is per level. The per-level work runs in C++ (GEMMs by torch's aten::linear / aten::mm
// through the dispatcher, the rest fused), so a pass costs one call from Python whatever the depth.
// The op itself (fgp::flow_pass) has no C++ kernel: Python registers its composite and autograd
// formula, which call the kernels _flow_pass_forward (the output and the per-level intermediates)
// and _flow_pass_backward. The backward walks the levels in reverse from the saved per-level
// intermediates; the gradients of the predecessor rows are summed per distinct predecessor (group_*:
// the entries of each level grouped by source position, group_level_ptr the groups of each level)
// and added once per row: no atomics, reproducible. The gradients that do not feed back into
// earlier levels (h0 and all weights) are formed after the level loop, from whole-pass buffers, in
// a few GEMMs.
#pragma once

#include <cmath>

#include "ops/common.h"
#include "ops/edge_dot.h"
#include "ops/gather_attention.h"

namespace fgp {

namespace detail_flow_pass {

inline bool has_shape(const Tensor& t, const std::vector<int64_t>& shape) {
  if (t.dim() != static_cast<int64_t>(shape.size())) return false;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) != shape[d]) return false;
  return true;
}

}  // namespace detail_flow_pass

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

// The structs below keep Tensors, hence FGP_HIDDEN (stable.h).
struct FGP_HIDDEN FlowPassArgs {
  Tensor h0, level_ptr, indptr, index, group_level_ptr, group_perm, group_ptr, group_src;
  Tensor att_dst, att_src, att_bias, w_ih, w_hh, b_ih, b_hh;
};

// Shapes, dtypes, devices and the schedule's structure (every entry of level l reads a position
// before level l). The level pointers are returned on the host for the level loop.
inline std::pair<std::vector<int64_t>, std::vector<int64_t>> check_flow_pass_args(const FlowPassArgs& a) {
  using detail_flow_pass::has_shape;
  check_float(a.h0, "h0");
  FGP_CHECK(a.h0.dim() == 2, "h0 must be [N, F], got ", sizes_str(a.h0));
  const int64_t N = a.h0.size(0), F = a.h0.size(1);
  for (const auto* t : {&a.level_ptr, &a.indptr, &a.index, &a.group_level_ptr, &a.group_perm, &a.group_ptr,
                        &a.group_src}) {
    check_index_vector(*t, "schedule tensors");
    check_same_device(a.h0, "h0", *t, "the schedule tensors");
  }
  const struct FGP_HIDDEN { const Tensor* t; std::vector<int64_t> shape; const char* name; } params[] = {
      {&a.att_dst, {F}, "att_dst"}, {&a.att_src, {F}, "att_src"}, {&a.att_bias, {1}, "att_bias"},
      {&a.w_ih, {3 * F, F}, "w_ih"}, {&a.w_hh, {3 * F, F}, "w_hh"}, {&a.b_ih, {3 * F}, "b_ih"},
      {&a.b_hh, {3 * F}, "b_hh"}};
  for (const auto& p : params) {
    FGP_CHECK(has_shape(*p.t, p.shape), p.name, " must have shape ", spaced(p.shape), ", got ", sizes_str(*p.t));
    FGP_CHECK(p.t->scalar_type() == a.h0.scalar_type(), p.name, " must have the dtype of h0");
    check_same_device(a.h0, "h0", *p.t, p.name);
  }
  FGP_CHECK(a.indptr.numel() == N + 1, "indptr must have N + 1 = ", N + 1, " entries, got ", a.indptr.numel());
  check_indptr_full(a.indptr, a.index.numel(), "indptr");
  check_indptr_full(a.level_ptr, N, "level_ptr");
  check_indptr_full(a.group_ptr, a.group_perm.numel(), "group_ptr");
  FGP_CHECK(a.group_perm.numel() == a.index.numel(), "group_perm must hold every entry once");
  FGP_CHECK(a.group_src.numel() == a.group_ptr.numel() - 1, "group_src must have one entry per group");
  FGP_CHECK(a.group_level_ptr.numel() == a.level_ptr.numel(), "group_level_ptr must have one entry per level + 1");
  check_indptr_full(a.group_level_ptr, a.group_src.numel(), "group_level_ptr");
  check_index_range(a.group_perm, std::max<int64_t>(a.index.numel(), 1), "group_perm");
  check_index_range(a.group_src, std::max<int64_t>(N, 1), "group_src");
  std::vector<int64_t> levels = host_vector(a.level_ptr);
  std::vector<int64_t> groups = host_vector(a.group_level_ptr);
  if (a.index.numel()) {
    // Every entry must read a finished row: index[e] < start of its destination's level.
    const Device dev = a.indptr.device();
    const auto pos = arange(N, dev);
    // searchsorted(level_ptr, pos, right) - 1, as a search in level_ptr[1:] (level_ptr[0] = 0 <= pos).
    const int64_t L = a.level_ptr.numel() - 1;
    Tensor level_ptr = a.level_ptr;  // narrow takes a non-const handle
    const auto level_ends = contiguous(torch::stable::narrow(level_ptr, 0, 1, L));
    const auto level_of_pos = aten::searchsorted(level_ends, pos, /*right=*/true);
    const auto start_of_pos = aten::index_select(a.level_ptr, 0, level_of_pos);
    const auto indptr_diff = aten::diff(a.indptr);
    const auto start_of_entry = aten::repeat_interleave(start_of_pos, indptr_diff, a.index.numel());
    FGP_CHECK(aten::all(aten::ge(a.index, full_tensor({1}, 0.0, kLong, dev))) &&
                  aten::all(aten::lt(a.index, start_of_entry)),
              "flow_pass: an entry reads a position of its own or a later level; build the schedule with "
              "level_schedule");
    // The groups must partition each level's entries by source position (else gradients are lost
    // or read out of bounds).
    const int64_t E = a.index.numel(), G = a.group_src.numel();
    const auto entry_level = aten::repeat_interleave(level_of_pos, indptr_diff, E);
    const auto group_of_q = aten::repeat_interleave(arange(G, dev), aten::diff(a.group_ptr), E);
    const auto level_of_group = aten::repeat_interleave(arange(L, dev), aten::diff(a.group_level_ptr), G);
    const bool ok = aten::equal(aten::sort_stable(a.group_perm).first, arange(E, dev)) &&
                    aten::equal(aten::index_select(entry_level, 0, a.group_perm),
                                aten::index_select(level_of_group, 0, group_of_q)) &&
                    aten::equal(aten::index_select(a.index, 0, a.group_perm),
                                aten::index_select(a.group_src, 0, group_of_q));
    FGP_CHECK(ok, "flow_pass: group_perm/group_ptr/group_src/group_level_ptr do not group every level's entries "
              "by source; build them with fgp_ext.levels.LevelPlan");
  }
  return {levels, groups};
}

// The tensors the forward saves for the backward, checked and made contiguous.
struct FGP_HIDDEN FlowPassSaved {
  Tensor h, msg, rz, n, gh_n, logit;
};

inline FlowPassSaved unpack_flow_pass_saved(const Tensor& grad, const FlowPassSaved& saved, const FlowPassArgs& a) {
  using detail_flow_pass::has_shape;
  FGP_CHECK(has_shape(grad, {a.h0.size(0), a.h0.size(1)}), "grad must have the shape of h0");
  FGP_CHECK(grad.scalar_type() == a.h0.scalar_type(), "grad must have the dtype of h0");
  check_same_device(a.h0, "h0", grad, "grad");
  // {h, msg, rz, n, gh_n, logit} as _flow_pass_forward returns them: the kernels index them unchecked.
  const int64_t N = a.h0.size(0), F = a.h0.size(1);
  const Tensor* tensors[6] = {&saved.h, &saved.msg, &saved.rz, &saved.n, &saved.gh_n, &saved.logit};
  const std::vector<int64_t> shapes[6] = {{N, F}, {N, F}, {N, 2 * F}, {N, F}, {N, F}, {a.index.numel()}};
  for (size_t i = 0; i < 6; ++i) {
    FGP_CHECK(has_shape(*tensors[i], shapes[i]), "flow_pass_backward: saved tensor ", i, " must have shape ",
              spaced(shapes[i]), ", got ", sizes_str(*tensors[i]));
    FGP_CHECK(tensors[i]->scalar_type() == a.h0.scalar_type(), "flow_pass_backward: saved tensor ", i,
              " must have the dtype of h0");
    check_same_device(a.h0, "h0", *tensors[i], "the saved tensors");
  }
  return {contiguous(saved.h),    contiguous(saved.msg),  contiguous(saved.rz),
          contiguous(saved.n),    contiguous(saved.gh_n), contiguous(saved.logit)};
}

// The backward's gradients: {grad_h0, grad_att_dst, grad_att_src, grad_att_bias, grad_w_ih,
// grad_w_hh, grad_b_ih, grad_b_hh}.
using FlowPassGrads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The backward's whole-pass buffers, filled level by level (each row once, by its own level): the
// GRU pre-activation gradients, and the attention's per-row parts (att_src [N, F], att_bias and the
// logit sum ds [N]). Nothing in them feeds back into earlier levels, so the gradients of h0 and of
// every weight are formed from them once, after the level loop, with the same dispatcher calls on
// every device (finish()).
struct FGP_HIDDEN FlowPassGradBuffers {
  Tensor dgi, dgh, g_src_rows, g_bias_rows, ds;

  FlowPassGradBuffers(int64_t N, int64_t F, const Tensor& like)
      : dgi(zeros_tensor({N, 3 * F}, like.scalar_type(), like.device())),
        dgh(zeros_tensor({N, 3 * F}, like.scalar_type(), like.device())),
        g_src_rows(zeros_tensor({N, F}, like.scalar_type(), like.device())),
        g_bias_rows(zeros_tensor({N}, like.scalar_type(), like.device())),
        ds(zeros_tensor({N}, like.scalar_type(), like.device())) {}

  // h0 enters as the GRU input (through w_ih) and as the attention's destination (through att_dst);
  // the message (msg) is the GRU hidden state (through w_hh). add_outer(out, u, v) adds the outer
  // product u v^T to the contiguous out in place (the device's own loop: ATen's addr_ takes Scalar
  // arguments, which the stable ABI cannot pass).
  template <class AddOuter>
  FlowPassGrads finish(const FlowPassArgs& a, const Tensor& h0, const Tensor& msg, const AddOuter& add_outer) const {
    auto grad_h0 = aten::mm(dgi, a.w_ih);
    add_outer(grad_h0, ds, contiguous(a.att_dst));
    const std::vector<int64_t> dims{0};
    const torch::headeronly::IntHeaderOnlyArrayRef dim0(dims);
    return {grad_h0,
            aten::mv(torch::stable::transpose(h0, 0, 1), ds),
            torch::stable::sum(g_src_rows, dim0),
            reshape(torch::stable::sum(g_bias_rows), {1}),
            aten::mm(torch::stable::transpose(dgi, 0, 1), h0),
            aten::mm(torch::stable::transpose(dgh, 0, 1), msg),
            torch::stable::sum(dgi, dim0),
            torch::stable::sum(dgh, dim0)};
  }
};

inline FlowPassArgs flow_pass_args(const Tensor& h0, const Tensor& level_ptr, const Tensor& indptr,
                                   const Tensor& index, const Tensor& group_level_ptr, const Tensor& group_perm,
                                   const Tensor& group_ptr, const Tensor& group_src, const Tensor& att_dst,
                                   const Tensor& att_src, const Tensor& att_bias, const Tensor& w_ih,
                                   const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  return {h0,      level_ptr, indptr,   index, group_level_ptr, group_perm, group_ptr, group_src,
          att_dst, att_src,   att_bias, w_ih,  w_hh,            b_ih,       b_hh};
}

// Kernels. The arguments are the 15 inputs of flow_pass in schema order (FlowPassArgs). The forward
// returns {h, msg[N, F], rz[N, 2F], n[N, F], gh_n[N, F], logit[E]}: the output and the
// intermediates the backward needs (attention messages, GRU gates r|z, n, and the hidden
// projection's n block), so the backward needs no recomputation and no forward GEMM. The backward
// takes the upstream gradient, those 6 tensors and the 15 inputs, and returns FlowPassGrads.
using FlowPassOutputs = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

FlowPassOutputs flow_pass_forward_cpu(const Tensor& h0, const Tensor& level_ptr, const Tensor& indptr,
                                      const Tensor& index, const Tensor& group_level_ptr, const Tensor& group_perm,
                                      const Tensor& group_ptr, const Tensor& group_src, const Tensor& att_dst,
                                      const Tensor& att_src, const Tensor& att_bias, const Tensor& w_ih,
                                      const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh);
FlowPassGrads flow_pass_backward_cpu(const Tensor& grad, const Tensor& h, const Tensor& msg, const Tensor& rz,
                                     const Tensor& n, const Tensor& gh_n, const Tensor& logit, const Tensor& h0,
                                     const Tensor& level_ptr, const Tensor& indptr, const Tensor& index,
                                     const Tensor& group_level_ptr, const Tensor& group_perm, const Tensor& group_ptr,
                                     const Tensor& group_src, const Tensor& att_dst, const Tensor& att_src,
                                     const Tensor& att_bias, const Tensor& w_ih, const Tensor& w_hh,
                                     const Tensor& b_ih, const Tensor& b_hh);
FlowPassOutputs flow_pass_forward_cuda(const Tensor& h0, const Tensor& level_ptr, const Tensor& indptr,
                                       const Tensor& index, const Tensor& group_level_ptr, const Tensor& group_perm,
                                       const Tensor& group_ptr, const Tensor& group_src, const Tensor& att_dst,
                                       const Tensor& att_src, const Tensor& att_bias, const Tensor& w_ih,
                                       const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh);
FlowPassGrads flow_pass_backward_cuda(const Tensor& grad, const Tensor& h, const Tensor& msg, const Tensor& rz,
                                      const Tensor& n, const Tensor& gh_n, const Tensor& logit, const Tensor& h0,
                                      const Tensor& level_ptr, const Tensor& indptr, const Tensor& index,
                                      const Tensor& group_level_ptr, const Tensor& group_perm, const Tensor& group_ptr,
                                      const Tensor& group_src, const Tensor& att_dst, const Tensor& att_src,
                                      const Tensor& att_bias, const Tensor& w_ih, const Tensor& w_hh,
                                      const Tensor& b_ih, const Tensor& b_hh);

}  // namespace fgp
