#include "ops/flow_surrogate.h"

#include <algorithm>
#include <vector>

#include "ops/csr_transpose.h"
#include "ops/topo_levels.h"

namespace fgp {
namespace {

// Many graphs: one task per graph, each graph's nodes in Kahn order. Each task validates its own
// graph first (flow_surrogate_graph), so no separate checking pass is needed.
// The graphs [begin, end) of one task, ISA-dispatched (statuses are returned, never thrown: the
// scratch is allocated by the caller, so nothing in here can throw).
template <typename T, int K>
FGP_CPU_CLONES void surrogate_of_graphs(const FlowArgs<T>& a, const int64_t* gp, int64_t begin, int64_t end, T* out,
                                        int64_t* status, int64_t* detail, int64_t* order, int64_t* indeg, T* h,
                                        T* m) {
  for (int64_t g = begin; g < end; ++g)
    status[g] = flow_surrogate_graph<T, K>(a, gp[g], gp[g + 1], order, indeg, h, m, out + g * a.k, &detail[g]);
}

template <typename T, int K>
void run_per_graph(const FlowArgs<T>& a, const int64_t* gp, int64_t B, T* out) {
  std::vector<int64_t> status(B, kGraphOk), detail(B, -1);
  parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    // One scratch per task, sized for its largest graph and reused: node states stay in cache.
    int64_t n_max = 0;
    for (int64_t g = begin; g < end; ++g) n_max = std::max(n_max, gp[g + 1] - gp[g]);
    std::vector<int64_t> order(n_max), indeg(n_max);
    std::vector<T> h(n_max * a.k), m(a.k);
    surrogate_of_graphs<T, K>(a, gp, begin, end, out, status.data(), detail.data(), order.data(), indeg.data(),
                              h.data(), m.data());
  });
  raise_graph_errors(status.data(), detail.data(), gp, B, a.in_idx, a.num_ops);
}

// Few large graphs: level-synchronous over the whole batch, parallel over the nodes of a level.
// Nodes of one level depend only on other levels, so the in-place update is race-free, and each
// node's arithmetic is exactly that of the per-graph schedule (same message order): both schedules
// give bitwise-identical results.
template <typename T, int K>
void run_per_level(const FlowArgs<T>& a, const Tensor& level_t, const int64_t* gp, int64_t B, T* out) {
  const int64_t N = level_t.numel(), k = a.k;
  const int64_t* level = level_t.const_data_ptr<int64_t>();
  for (int64_t v = 0; v < N; ++v)
    FGP_CHECK(a.op[v] >= 0 && a.op[v] < a.num_ops, "op id out of range at node ", v, ": op ids must lie in [0, ",
              a.num_ops, ")");
  int64_t depth = 0;
  for (int64_t v = 0; v < N; ++v) depth = std::max(depth, level[v] + 1);
  // Counting sort of the nodes by level (stable in node id).
  std::vector<int64_t> level_ptr(depth + 1, 0), order(N);
  for (int64_t v = 0; v < N; ++v) ++level_ptr[level[v] + 1];
  for (int64_t l = 0; l < depth; ++l) level_ptr[l + 1] += level_ptr[l];
  {
    std::vector<int64_t> cursor(level_ptr.begin(), level_ptr.end() - 1);
    for (int64_t v = 0; v < N; ++v) order[cursor[level[v]]++] = v;
  }
  parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v)
      for (int64_t j = 0; j < k; ++j) a.h[v * k + j] = a.is_source[v] ? a.r[j] : T(0);
  });
  auto sweep = [&](int64_t l, const int64_t* ptr, const int64_t* idx) {
    const int64_t lo = level_ptr[l], hi = level_ptr[l + 1];
    const int64_t grain = std::max<int64_t>(1, 4096 / (k * k + 1));
    parallel_for(lo, hi, grain, [&](int64_t begin, int64_t end) {
      std::vector<T> m(k);
      for (int64_t q = begin; q < end; ++q) {
        const int64_t v = order[q];
        if (ptr[v + 1] == ptr[v]) continue;
        flow_message<T, K>(a.h, idx, ptr[v], ptr[v + 1], k, m.data());
        flow_update<T, K>(m.data(), a.pw + a.op[v] * k, a.w_msg, a.alpha, k, a.h + v * k);
      }
    });
  };
  for (int64_t l = 1; l < depth; ++l) sweep(l, a.in_ptr, a.in_idx);
  for (int64_t l = depth - 1; l >= 0; --l) sweep(l, a.out_ptr, a.out_idx);
  parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      T* o = out + g * k;
      for (int64_t j = 0; j < k; ++j) o[j] = T(0);
      for (int64_t v = gp[g]; v < gp[g + 1]; ++v)
        if (a.is_source[v])
          for (int64_t j = 0; j < k; ++j) o[j] += a.h[v * k + j];
    }
  });
}

template <typename T, int K>
void run(bool per_graph, const FlowArgs<T>& a, const Tensor& level, const int64_t* gp, int64_t B, T* out) {
  if (per_graph)
    run_per_graph<T, K>(a, gp, B, out);
  else
    run_per_level<T, K>(a, level, gp, B, out);
}

}  // namespace

Tensor flow_surrogate_cpu(const Tensor& op_in, const Tensor& indptr_in, const Tensor& index_in,
                          const Tensor& node_ptr_in, const Tensor& is_source_in, const Tensor& r_in, const Tensor& P,
                          const Tensor& W, double alpha, std::string_view schedule,
                          const std::optional<Tensor>& t_indptr, const std::optional<Tensor>& t_index) {
  check_flow_args(op_in, indptr_in, index_in, node_ptr_in, is_source_in, r_in, P, W, alpha, schedule, t_indptr,
                  t_index);
  const auto op = contiguous(op_in);
  const auto in_ptr = contiguous(indptr_in);
  const auto in_idx = contiguous(index_in);
  const auto node_ptr = contiguous(node_ptr_in);
  const auto is_source = contiguous(is_source_in);
  const auto r = contiguous(r_in);
  const int64_t N = op.numel(), B = node_ptr.numel() - 1, k = r.numel();
  const int64_t* gp = node_ptr.const_data_ptr<int64_t>();
  // Enough graphs to give every thread its own: one task per graph (no per-level barriers).
  const bool per_graph = schedule == "graph" || (schedule == "auto" && B >= get_num_threads());
  Tensor level;
  if (!per_graph) level = topo_levels_cpu(in_ptr, in_idx, node_ptr);  // validates edges, raises on a cycle
  const auto [out_ptr, out_idx, pw, w_msg] = flow_tables(in_idx, in_ptr, N, t_indptr, t_index, P, W, csr_transpose_cpu);
  auto h = per_graph ? Tensor() : empty_like_shape(r, {N, k});
  auto out = empty_like_shape(r, {B, k});
  FGP_DISPATCH_FLOATING_TYPES(r.scalar_type(), "flow_surrogate_cpu", [&] {
    const FlowArgs<scalar_t> a{op.const_data_ptr<int64_t>(),      in_ptr.const_data_ptr<int64_t>(),
                               in_idx.const_data_ptr<int64_t>(),  out_ptr.const_data_ptr<int64_t>(),
                               out_idx.const_data_ptr<int64_t>(), is_source.const_data_ptr<bool>(),
                               r.const_data_ptr<scalar_t>(),      pw.const_data_ptr<scalar_t>(),
                               w_msg.const_data_ptr<scalar_t>(),  static_cast<scalar_t>(alpha),
                               k,                                 P.size(0),
                               h.defined() ? h.mutable_data_ptr<scalar_t>() : nullptr};
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // The published surrogate sizes get a compile-time k (unrolled, vectorised updates).
    switch (k) {
      case 4: run<scalar_t, 4>(per_graph, a, level, gp, B, o); break;
      case 7: run<scalar_t, 7>(per_graph, a, level, gp, B, o); break;
      case 8: run<scalar_t, 8>(per_graph, a, level, gp, B, o); break;
      case 12: run<scalar_t, 12>(per_graph, a, level, gp, B, o); break;
      case 16: run<scalar_t, 16>(per_graph, a, level, gp, B, o); break;
      default: run<scalar_t, 0>(per_graph, a, level, gp, B, o); break;
    }
  });
  return out;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("flow_surrogate", TORCH_BOX(&fgp::flow_surrogate_cpu)); }
