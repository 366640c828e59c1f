// flow_surrogate(op[N], indptr[N+1], index[E], node_ptr[B+1], is_source[N], r[k], P[F,k], W[2k,k],
//                alpha, schedule) -> [B, k]
// The FGP flow surrogate (FGP.md §2) of every graph of a batch. Graphs come as one CSR by
// destination (node v's predecessors are index[indptr[v] .. indptr[v+1]-1]).
//   f(o, m) = alpha * m + (1 - alpha) * relu(concat(o, m) @ W),   o_v = P[op_v]
//   forward : sources start at r, other nodes at 0; in topological order every node with
//             predecessors becomes f(o_v, sum of its predecessors);
//   backward: in reverse topological order every node with successors becomes
//             f(o_u, sum of its successors); sinks keep their forward value;
//   readout : the sum of the source nodes' final vectors.
// concat(o, m) @ W = o @ W[:k] + m @ W[k:], and o @ W[:k] = (P @ W[:k])[op]: the kernels take the
// precomputed table PW = P @ W[:k] [F, k] and W_msg = W[k:] [k, k].
#pragma once

#include "ops/graph_checks.h"

#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace fgp {

// Pre-activation of output column j of a node whose message is m and whose op row is pw_row.
template <typename T>
FGP_HOST_DEVICE inline T flow_preactivation(const T* m, const T* pw_row, const T* w_msg, int64_t k, int64_t j) {
  T z = pw_row[j];
  for (int64_t i = 0; i < k; ++i) z += m[i] * w_msg[i * k + j];
  return z;
}

// f(o, m) for one column, given its pre-activation z.
template <typename T>
FGP_HOST_DEVICE inline T flow_combine(T m_j, T z_j, T alpha) {
  return alpha * m_j + (T(1) - alpha) * (z_j > T(0) ? z_j : T(0));
}

// m = sum of h rows of the neighbours nbr[start .. end-1], in CSR order. K > 0 fixes k at compile
// time (the published k = 4, 7, 12 get their own instantiations); K = 0 reads k at run time.
template <typename T, int K = 0>
FGP_HOST_DEVICE inline void flow_message(const T* h, const int64_t* nbr, int64_t start, int64_t end, int64_t k_dyn,
                                         T* m) {
  const int64_t k = K > 0 ? K : k_dyn;
  for (int64_t j = 0; j < k; ++j) m[j] = T(0);
  for (int64_t e = start; e < end; ++e) {
    const T* row = h + nbr[e] * k;
    for (int64_t j = 0; j < k; ++j) m[j] += row[j];
  }
}

// out = f(o, m) for all k columns (out must not alias m). Each column's pre-activation is the same
// chain as flow_preactivation (pw_row[j], then + m[i] * w_msg[i][j] for i = 0, 1, ...), but with
// the column loop innermost, so the k chains advance side by side (vectorisable); bitwise equal.
template <typename T, int K = 0>
FGP_HOST_DEVICE inline void flow_update(const T* m, const T* pw_row, const T* w_msg, T alpha, int64_t k_dyn, T* out) {
  const int64_t k = K > 0 ? K : k_dyn;
  // With a compile-time k the k partial sums live in registers; otherwise they build up in out
  // (the compiler cannot know that out aliases nothing, so it would not keep them in registers).
  T local[K > 0 ? K : 1];
  T* z = K > 0 ? local : out;
  for (int64_t j = 0; j < k; ++j) z[j] = pw_row[j];
  for (int64_t i = 0; i < k; ++i) {
    const T mi = m[i];
    const T* wr = w_msg + i * k;
    for (int64_t j = 0; j < k; ++j) z[j] += mi * wr[j];
  }
  for (int64_t j = 0; j < k; ++j) out[j] = flow_combine(m[j], z[j], alpha);
}

// Pointers shared by both schedules and devices.
template <typename T>
struct FlowArgs {
  const int64_t* op;
  const int64_t* in_ptr;   // CSR by destination (predecessors)
  const int64_t* in_idx;
  const int64_t* out_ptr;  // CSR by source (successors), the transpose of the above
  const int64_t* out_idx;
  const bool* is_source;
  const T* r;
  const T* pw;     // [F, k]
  const T* w_msg;  // [k, k]
  T alpha;
  int64_t k;
  int64_t num_ops;
  T* h;            // node states [N, k] (level schedule; the per-graph one keeps them local)
};

// Per-graph schedule: the whole surrogate of one graph (nodes [begin, end)) serially, in Kahn's
// topological order. order, indeg and h are graph-local scratch (n, n and n*k entries, indexed by
// v - begin: a CPU task reuses one small buffer for all its graphs, a CUDA thread gets its slice);
// m has k entries. It first checks that the graph's edges, both directions, stay inside the graph,
// so a task never touches another graph's nodes. Returns a GraphStatus.
template <typename T, int K = 0>
FGP_HOST_DEVICE FGP_INLINE_IN_CLONES int64_t flow_surrogate_graph(const FlowArgs<T>& a, int64_t begin, int64_t end, int64_t* order,
                                                    int64_t* indeg, T* h, T* m, T* readout, int64_t* detail) {
  const int64_t k = K > 0 ? K : a.k;
  int64_t status = check_graph_edges(begin, end, a.in_ptr, a.in_idx, detail);
  if (status != kGraphOk) return status;
  for (int64_t u = begin; u < end; ++u)
    for (int64_t e = a.out_ptr[u]; e < a.out_ptr[u + 1]; ++e)
      if (a.out_idx[e] < begin || a.out_idx[e] >= end) { *detail = u; return kGraphBadTranspose; }
  // Local ids: node v of the batch is row v - begin of h; CSR neighbours are shifted the same way.
  const int64_t n = end - begin;
  int64_t tail = 0;
  for (int64_t v = 0; v < n; ++v) {
    const int64_t gv = begin + v;
    if (a.op[gv] < 0 || a.op[gv] >= a.num_ops) { *detail = gv; return kGraphBadOp; }
    indeg[v] = a.in_ptr[gv + 1] - a.in_ptr[gv];
    if (indeg[v] == 0) order[tail++] = v;
    for (int64_t j = 0; j < k; ++j) h[v * k + j] = a.is_source[gv] ? a.r[j] : T(0);
  }
  for (int64_t head = 0; head < tail; ++head) {
    const int64_t u = begin + order[head];
    for (int64_t e = a.out_ptr[u]; e < a.out_ptr[u + 1]; ++e) {
      const int64_t w = a.out_idx[e] - begin;
      if (--indeg[w] == 0) order[tail++] = w;
    }
  }
  if (tail < n) {
    for (int64_t v = 0; v < n; ++v)
      if (indeg[v] > 0) { *detail = begin + v; return kGraphCycle; }
  }
  // Messages sum neighbour rows in CSR order, exactly as flow_message does (bitwise equal to the
  // level schedule), here through local row ids.
  auto message = [&](int64_t gv, const int64_t* ptr, const int64_t* idx) {
    for (int64_t j = 0; j < k; ++j) m[j] = T(0);
    for (int64_t e = ptr[gv]; e < ptr[gv + 1]; ++e) {
      const T* row = h + (idx[e] - begin) * k;
      for (int64_t j = 0; j < k; ++j) m[j] += row[j];
    }
  };
  for (int64_t q = 0; q < tail; ++q) {
    const int64_t v = order[q], gv = begin + v;
    if (a.in_ptr[gv + 1] == a.in_ptr[gv]) continue;
    message(gv, a.in_ptr, a.in_idx);
    flow_update<T, K>(m, a.pw + a.op[gv] * k, a.w_msg, a.alpha, k, h + v * k);
  }
  for (int64_t q = tail - 1; q >= 0; --q) {
    const int64_t u = order[q], gu = begin + u;
    if (a.out_ptr[gu + 1] == a.out_ptr[gu]) continue;
    message(gu, a.out_ptr, a.out_idx);
    flow_update<T, K>(m, a.pw + a.op[gu] * k, a.w_msg, a.alpha, k, h + u * k);
  }
  for (int64_t j = 0; j < k; ++j) readout[j] = T(0);
  for (int64_t v = 0; v < n; ++v)
    if (a.is_source[begin + v])
      for (int64_t j = 0; j < k; ++j) readout[j] += h[v * k + j];
  return kGraphOk;
}

inline void check_flow_args(const Tensor& op, const Tensor& indptr, const Tensor& index, const Tensor& node_ptr,
                            const Tensor& is_source, const Tensor& r, const Tensor& P, const Tensor& W, double alpha,
                            std::string_view schedule, const std::optional<Tensor>& t_indptr,
                            const std::optional<Tensor>& t_index) {
  check_index_vector(op, "op");
  check_index_vector(index, "index");
  for (const auto* t : {&indptr, &index, &node_ptr, &is_source, &r, &P, &W})
    check_same_device(op, "op", *t, "every input");
  check_indptr_full(indptr, index.numel(), "indptr");
  const int64_t N = op.numel();
  FGP_CHECK(indptr.numel() == N + 1, "indptr must have N + 1 = ", N + 1, " entries (one row per node), got ",
            indptr.numel());
  check_node_ptr(node_ptr, N);
  FGP_CHECK(is_source.scalar_type() == kBool && is_source.dim() == 1 && is_source.numel() == N,
            "is_source must be a bool tensor of shape [N] = [", N, "], got ", dtype_name(is_source.scalar_type()), " ",
            sizes_str(is_source));
  check_float(r, "r");
  FGP_CHECK(r.dim() == 1 && r.numel() >= 1, "r must have shape [k] with k >= 1, got ", sizes_str(r));
  const int64_t k = r.numel();
  FGP_CHECK(P.scalar_type() == r.scalar_type() && W.scalar_type() == r.scalar_type(),
            "r, P and W must share a dtype, got ", dtype_name(r.scalar_type()), ", ", dtype_name(P.scalar_type()), ", ",
            dtype_name(W.scalar_type()));
  FGP_CHECK(P.dim() == 2 && P.size(1) == k && P.size(0) >= 1, "P must have shape [num_ops, k] = [F, ", k,
            "], got ", sizes_str(P));
  FGP_CHECK(W.dim() == 2 && W.size(0) == 2 * k && W.size(1) == k, "W must have shape [2k, k] = [", 2 * k, ", ", k,
            "], got ", sizes_str(W));
  FGP_CHECK(alpha >= 0.0 && alpha <= 1.0, "alpha must lie in [0, 1], got ", alpha);
  FGP_CHECK(schedule == "auto" || schedule == "graph" || schedule == "level",
            "schedule must be 'auto', 'graph' or 'level', got '", std::string(schedule), "'");
  FGP_CHECK(t_indptr.has_value() == t_index.has_value(), "pass both t_indptr and t_index (the successor CSR) or neither");
  if (t_indptr.has_value()) {
    check_index_vector(*t_index, "t_index");
    check_same_device(op, "op", *t_indptr, "t_indptr");
    check_same_device(op, "op", *t_index, "t_index");
    FGP_CHECK(t_indptr->numel() == N + 1 && t_index->numel() == index.numel(),
              "t_indptr/t_index must be the successor CSR (csr_transpose of indptr/index): shapes [N + 1] = [", N + 1,
              "] and [E] = [", index.numel(), "], got ", sizes_str(*t_indptr), " and ", sizes_str(*t_index));
    check_indptr_full(*t_indptr, index.numel(), "t_indptr");
    check_index_range(*t_index, N, "t_index");
  }
}

// The tables both devices' kernels read: the successor CSR (the caller's, else built by
// `transpose`, the device's csr_transpose), PW = P @ W[:k] and W_msg = W[k:], in that order:
// (out_ptr, out_idx, pw, w_msg). A tuple rather than a struct of Tensors: torch::stable::Tensor
// has hidden visibility, which a struct with default visibility must not hold.
using FlowTables = std::tuple<Tensor, Tensor, Tensor, Tensor>;

template <typename Transpose>
FlowTables flow_tables(const Tensor& in_idx, const Tensor& in_ptr, int64_t num_nodes,
                       const std::optional<Tensor>& t_indptr, const std::optional<Tensor>& t_index, const Tensor& P,
                       const Tensor& W, Transpose transpose) {
  Tensor out_ptr, out_idx;
  if (t_indptr.has_value()) {
    out_ptr = contiguous(*t_indptr);
    out_idx = contiguous(*t_index);
  } else {
    std::tie(out_ptr, out_idx, std::ignore) = transpose(in_idx, in_ptr, num_nodes);
  }
  const int64_t k = W.size(1);
  Tensor w = W;  // torch::stable::narrow takes a non-const reference (a view; W itself is unchanged)
  Tensor pw = contiguous(torch::stable::matmul(P, torch::stable::narrow(w, 0, 0, k)));
  Tensor w_msg = contiguous(torch::stable::narrow(w, 0, k, k));
  return {out_ptr, out_idx, pw, w_msg};
}

Tensor flow_surrogate_cpu(const Tensor& op, const Tensor& indptr, const Tensor& index, const Tensor& node_ptr,
                          const Tensor& is_source, const Tensor& r, const Tensor& P, const Tensor& W, double alpha,
                          std::string_view schedule, const std::optional<Tensor>& t_indptr,
                          const std::optional<Tensor>& t_index);
Tensor flow_surrogate_cuda(const Tensor& op, const Tensor& indptr, const Tensor& index, const Tensor& node_ptr,
                           const Tensor& is_source, const Tensor& r, const Tensor& P, const Tensor& W, double alpha,
                           std::string_view schedule, const std::optional<Tensor>& t_indptr,
                           const std::optional<Tensor>& t_index);

}  // namespace fgp
