#include "ops/csr_transpose.h"
#include "ops/flow_surrogate.h"
#include "ops/topo_levels.h"
#include "ops/cuda/cuda_utils.cuh"

#include <algorithm>

namespace fgp {
namespace {

// Many small DAGs (NAS cells): one thread per graph runs flow_surrogate_graph, the CPU's
// per-graph code. m is a k-wide scratch row per graph.
template <typename T>
__global__ void flow_per_graph_kernel(FlowArgs<T> a, const int64_t* node_ptr, int64_t B, int64_t* order,
                                      int64_t* indeg, T* m, T* out, int64_t* status, int64_t* detail) {
  FGP_CUDA_KERNEL_LOOP(g, B) {
    const int64_t b = node_ptr[g];
    status[g] = flow_surrogate_graph(a, b, node_ptr[g + 1], order + b, indeg + b, a.h + b * a.k, m + g * a.k,
                                     out + g * a.k, &detail[g]);
  }
}

// Few large DAGs: level-synchronous. For the nodes order[lo..hi) of one level, first the messages
// (one thread per node and column), then the update (one thread per node and column, reading the
// whole message row). Nodes of a level only read other levels, so updating h in place is safe.
template <typename T>
__global__ void level_message_kernel(FlowArgs<T> a, const int64_t* order, int64_t lo, int64_t hi, const int64_t* ptr,
                                     const int64_t* idx, T* m) {
  const int64_t k = a.k;
  FGP_CUDA_KERNEL_LOOP(t, (hi - lo) * k) {
    const int64_t v = order[lo + t / k], j = t % k;
    T acc = T(0);
    for (int64_t e = ptr[v]; e < ptr[v + 1]; ++e) acc += a.h[idx[e] * k + j];
    m[v * k + j] = acc;
  }
}

template <typename T>
__global__ void level_update_kernel(FlowArgs<T> a, const int64_t* order, int64_t lo, int64_t hi, const int64_t* ptr,
                                    const T* m) {
  const int64_t k = a.k;
  FGP_CUDA_KERNEL_LOOP(t, (hi - lo) * k) {
    const int64_t v = order[lo + t / k], j = t % k;
    if (ptr[v + 1] == ptr[v]) continue;
    const T* mv = m + v * k;
    a.h[v * k + j] = flow_combine(mv[j], flow_preactivation(mv, a.pw + a.op[v] * k, a.w_msg, k, j), a.alpha);
  }
}

template <typename T>
__global__ void init_states_kernel(FlowArgs<T> a, int64_t N) {
  FGP_CUDA_KERNEL_LOOP(t, N * a.k) {
    const int64_t v = t / a.k, j = t % a.k;
    a.h[t] = a.is_source[v] ? a.r[j] : T(0);
  }
}

template <typename T>
__global__ void readout_kernel(FlowArgs<T> a, const int64_t* node_ptr, int64_t B, T* out) {
  FGP_CUDA_KERNEL_LOOP(t, B * a.k) {
    const int64_t g = t / a.k, j = t % a.k;
    T acc = T(0);
    for (int64_t v = node_ptr[g]; v < node_ptr[g + 1]; ++v)
      if (a.is_source[v]) acc += a.h[v * a.k + j];
    out[t] = acc;
  }
}

void raise_from_device(const Tensor& status, const Tensor& detail, const Tensor& node_ptr, const Tensor& index,
                       int64_t num_ops) {
  if (status.numel() == 0 || !aten::any(status)) return;
  const auto s = to_cpu(status), d = to_cpu(detail), gp = to_cpu(node_ptr), idx = to_cpu(index);
  raise_graph_errors(s.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>(), gp.const_data_ptr<int64_t>(),
                     status.numel(), idx.const_data_ptr<int64_t>(), num_ops);
}

}  // namespace

Tensor flow_surrogate_cuda(const Tensor& op_in, const Tensor& indptr_in, const Tensor& index_in,
                           const Tensor& node_ptr_in, const Tensor& is_source_in, const Tensor& r_in, const Tensor& P,
                           const Tensor& W, double alpha, std::string_view schedule,
                           const std::optional<Tensor>& t_indptr, const std::optional<Tensor>& t_index) {
  check_flow_args(op_in, indptr_in, index_in, node_ptr_in, is_source_in, r_in, P, W, alpha, schedule, t_indptr,
                  t_index);
  const auto guard = cuda::guard_for(op_in);
  const auto op = contiguous(op_in);
  const auto in_ptr = contiguous(indptr_in);
  const auto in_idx = contiguous(index_in);
  const auto node_ptr = contiguous(node_ptr_in);
  const auto is_source = contiguous(is_source_in);
  const auto r = contiguous(r_in);
  const int64_t N = op.numel(), B = node_ptr.numel() - 1, k = r.numel(), F = P.size(0);
  auto out = zeros_tensor({B, k}, r.scalar_type(), r.device());
  if (B == 0) return out;
  auto status = zeros_tensor({B}, kLong, op.device());
  auto detail = full_tensor({B}, -1, kLong, op.device());
  if (N > 0) {
    FGP_CHECK(item<int64_t>(aten::min_all(op)) >= 0 && item<int64_t>(aten::max_all(op)) < F,
              "op id out of range: op ids must lie in [0, ", F, ")");
  }
  const auto [out_ptr, out_idx, pw, w_msg] = flow_tables(in_idx, in_ptr, N, t_indptr, t_index, P, W, csr_transpose_cuda);
  auto h = empty_like_shape(r, {N, k});
  auto m = empty_like_shape(r, {std::max(N, B), k});
  // Per-graph threads win when there are enough graphs to fill the device; otherwise go level-synchronous.
  const bool per_graph = schedule == "graph" || (schedule == "auto" && B >= 4096);
  FGP_DISPATCH_FLOATING_TYPES(r.scalar_type(), "flow_surrogate_cuda", [&] {
    FlowArgs<scalar_t> a{op.const_data_ptr<int64_t>(),      in_ptr.const_data_ptr<int64_t>(),
                         in_idx.const_data_ptr<int64_t>(),  out_ptr.const_data_ptr<int64_t>(),
                         out_idx.const_data_ptr<int64_t>(), is_source.const_data_ptr<bool>(),
                         r.const_data_ptr<scalar_t>(),      pw.const_data_ptr<scalar_t>(),
                         w_msg.const_data_ptr<scalar_t>(),  static_cast<scalar_t>(alpha),
                         k,                                 F,
                         h.mutable_data_ptr<scalar_t>()};
    if (per_graph) {
      auto scratch = empty_like_shape(op, {2, N});  // rows: order, indeg
      int64_t* sc = scratch.mutable_data_ptr<int64_t>();
      flow_per_graph_kernel<scalar_t><<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
          a, node_ptr.const_data_ptr<int64_t>(), B, sc, sc + N, m.mutable_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), status.mutable_data_ptr<int64_t>(), detail.mutable_data_ptr<int64_t>());
      cuda::check_launch("flow_surrogate");
      raise_from_device(status, detail, node_ptr, in_idx, F);
      return;
    }
    const auto level = topo_levels_cuda(in_ptr, in_idx, node_ptr);  // validates edges, raises on a cycle
    const auto order = aten::sort_stable(level).second;
    const int64_t depth = N > 0 ? item<int64_t>(aten::max_all(level)) + 1 : 0;
    auto level_ptr = zeros_tensor({depth + 1}, kLong, op.device());
    if (depth > 0) {
      auto tail = torch::stable::narrow(level_ptr, 0, 1, depth);
      torch::stable::copy_(tail, aten::cumsum(aten::bincount(level, depth)));
    }
    const auto lp = to_cpu(level_ptr);  // one copy: the host drives the level loop
    const int64_t* lph = lp.const_data_ptr<int64_t>();
    const int64_t* ord = order.const_data_ptr<int64_t>();
    scalar_t* mp = m.mutable_data_ptr<scalar_t>();
    init_states_kernel<scalar_t><<<cuda::blocks_for(N * k), cuda::kThreads, 0, cuda::stream()>>>(a, N);
    cuda::check_launch("flow_surrogate");
    auto sweep = [&](int64_t l, const int64_t* ptr, const int64_t* idx) {
      const int64_t lo = lph[l], hi = lph[l + 1];
      if (hi == lo) return;
      const auto blocks = cuda::blocks_for((hi - lo) * k);
      level_message_kernel<scalar_t><<<blocks, cuda::kThreads, 0, cuda::stream()>>>(a, ord, lo, hi, ptr, idx, mp);
      cuda::check_launch("flow_surrogate");
      level_update_kernel<scalar_t><<<blocks, cuda::kThreads, 0, cuda::stream()>>>(a, ord, lo, hi, ptr, mp);
      cuda::check_launch("flow_surrogate");
    };
    for (int64_t l = 1; l < depth; ++l) sweep(l, a.in_ptr, a.in_idx);
    for (int64_t l = depth - 1; l >= 0; --l) sweep(l, a.out_ptr, a.out_idx);
    readout_kernel<scalar_t><<<cuda::blocks_for(B * k), cuda::kThreads, 0, cuda::stream()>>>(
        a, node_ptr.const_data_ptr<int64_t>(), B, out.mutable_data_ptr<scalar_t>());
    cuda::check_launch("flow_surrogate");
  });
  return out;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("flow_surrogate", TORCH_BOX(&fgp::flow_surrogate_cuda)); }
