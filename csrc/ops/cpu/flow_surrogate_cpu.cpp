#include "ops/flow_surrogate.h"

#include <ATen/Parallel.h>

#include "ops/csr_transpose.h"
#include "ops/topo_levels.h"

namespace fgp {
namespace {

template <typename T>
FlowArgs<T> make_args(const at::Tensor& op, const at::Tensor& in_ptr, const at::Tensor& in_idx, const at::Tensor& out_ptr,
                      const at::Tensor& out_idx, const at::Tensor& is_source, const at::Tensor& r, const at::Tensor& pw,
                      const at::Tensor& w_msg, double alpha, at::Tensor& h) {
  return FlowArgs<T>{op.data_ptr<int64_t>(), in_ptr.data_ptr<int64_t>(), in_idx.data_ptr<int64_t>(),
                     out_ptr.data_ptr<int64_t>(), out_idx.data_ptr<int64_t>(), is_source.data_ptr<bool>(),
                     r.data_ptr<T>(), pw.data_ptr<T>(), w_msg.data_ptr<T>(), static_cast<T>(alpha), r.numel(),
                     pw.size(0), h.data_ptr<T>()};
}

// Many graphs: one task per graph, each graph's nodes in Kahn order.
template <typename T>
void run_per_graph(const FlowArgs<T>& a, const int64_t* gp, int64_t B, T* out) {
  const int64_t N = gp[B];
  std::vector<int64_t> order(N), indeg(N), status(B, kGraphOk), detail(B, -1);
  at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> m(a.k);
    for (int64_t g = begin; g < end; ++g)
      status[g] = flow_surrogate_graph(a, gp[g], gp[g + 1], order.data(), indeg.data(), m.data(), out + g * a.k,
                                       &detail[g]);
  });
  raise_graph_errors(status.data(), detail.data(), gp, B, a.in_idx, a.num_ops);
}

// Few large graphs: level-synchronous over the whole batch, parallel over the nodes of a level.
// Nodes of one level depend only on other levels, so the in-place update is race-free, and each
// node's arithmetic is exactly that of the per-graph schedule (same message order): both schedules
// give bitwise-identical results.
template <typename T>
void run_per_level(const FlowArgs<T>& a, const at::Tensor& level_t, const int64_t* gp, int64_t B, T* out) {
  const int64_t N = level_t.numel(), k = a.k;
  const int64_t* level = level_t.data_ptr<int64_t>();
  for (int64_t v = 0; v < N; ++v)
    TORCH_CHECK(a.op[v] >= 0 && a.op[v] < a.num_ops, "op id out of range at node ", v, ": op ids must lie in [0, ",
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
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v)
      for (int64_t j = 0; j < k; ++j) a.h[v * k + j] = a.is_source[v] ? a.r[j] : T(0);
  });
  auto sweep = [&](int64_t l, const int64_t* ptr, const int64_t* idx) {
    const int64_t lo = level_ptr[l], hi = level_ptr[l + 1];
    const int64_t grain = std::max<int64_t>(1, 4096 / (k * k + 1));
    at::parallel_for(lo, hi, grain, [&](int64_t begin, int64_t end) {
      std::vector<T> m(k);
      for (int64_t q = begin; q < end; ++q) {
        const int64_t v = order[q];
        if (ptr[v + 1] == ptr[v]) continue;
        flow_message(a.h, idx, ptr[v], ptr[v + 1], k, m.data());
        flow_update(m.data(), a.pw + a.op[v] * k, a.w_msg, a.alpha, k, a.h + v * k);
      }
    });
  };
  for (int64_t l = 1; l < depth; ++l) sweep(l, a.in_ptr, a.in_idx);
  for (int64_t l = depth - 1; l >= 0; --l) sweep(l, a.out_ptr, a.out_idx);
  at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      T* o = out + g * k;
      for (int64_t j = 0; j < k; ++j) o[j] = T(0);
      for (int64_t v = gp[g]; v < gp[g + 1]; ++v)
        if (a.is_source[v])
          for (int64_t j = 0; j < k; ++j) o[j] += a.h[v * k + j];
    }
  });
}

}  // namespace

at::Tensor flow_surrogate_cpu(const at::Tensor& op_in, const at::Tensor& indptr_in, const at::Tensor& index_in,
                              const at::Tensor& node_ptr_in, const at::Tensor& is_source_in, const at::Tensor& r_in,
                              const at::Tensor& P, const at::Tensor& W, double alpha, c10::string_view schedule) {
  check_flow_args(op_in, indptr_in, index_in, node_ptr_in, is_source_in, r_in, P, W, alpha, schedule);
  const auto op = op_in.contiguous();
  const auto in_ptr = indptr_in.contiguous();
  const auto in_idx = index_in.contiguous();
  const auto node_ptr = node_ptr_in.contiguous();
  const auto is_source = is_source_in.contiguous();
  const auto r = r_in.contiguous();
  const int64_t N = op.numel(), B = node_ptr.numel() - 1, k = r.numel();
  const int64_t* gp = node_ptr.data_ptr<int64_t>();

  // Phase 1: every edge stays inside its graph (so graph tasks never touch each other's nodes).
  {
    std::vector<int64_t> status(B, kGraphOk), detail(B, -1);
    const int64_t* ptr = in_ptr.data_ptr<int64_t>();
    const int64_t* idx = in_idx.data_ptr<int64_t>();
    at::parallel_for(0, B, 256, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) status[g] = check_graph_edges(gp[g], gp[g + 1], ptr, idx, &detail[g]);
    });
    raise_graph_errors(status.data(), detail.data(), gp, B, idx, P.size(0));
  }
  const auto [out_ptr, out_idx, perm] = csr_transpose_cpu(in_idx, in_ptr, N);
  const auto pw = at::matmul(P, W.narrow(0, 0, k)).contiguous();
  const auto w_msg = W.narrow(0, k, k).contiguous();
  auto h = at::empty({N, k}, r.options());
  auto out = at::zeros({B, k}, r.options());
  const bool per_graph = schedule == "graph" || (schedule == "auto" && B >= 4 * at::get_num_threads());
  at::Tensor level;
  if (!per_graph) level = topo_levels_cpu(in_ptr, in_idx, node_ptr);  // raises on a cycle
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "flow_surrogate_cpu", [&] {
    const auto args = make_args<scalar_t>(op, in_ptr, in_idx, out_ptr, out_idx, is_source, r, pw, w_msg, alpha, h);
    if (per_graph)
      run_per_graph(args, gp, B, out.data_ptr<scalar_t>());
    else
      run_per_level(args, level, gp, B, out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace fgp
