#include "ops/csr_transpose.h"
#include "ops/flow_surrogate.h"
#include "ops/topo_levels.h"
#include "ops/cuda/cuda_utils.cuh"

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

void raise_from_device(const at::Tensor& status, const at::Tensor& detail, const at::Tensor& node_ptr,
                       const at::Tensor& index, int64_t num_ops) {
  if (status.numel() == 0 || !status.any().item<bool>()) return;
  const auto s = status.cpu(), d = detail.cpu(), gp = node_ptr.cpu(), idx = index.cpu();
  raise_graph_errors(s.data_ptr<int64_t>(), d.data_ptr<int64_t>(), gp.data_ptr<int64_t>(), status.numel(),
                     idx.data_ptr<int64_t>(), num_ops);
}

}  // namespace

at::Tensor flow_surrogate_cuda(const at::Tensor& op_in, const at::Tensor& indptr_in, const at::Tensor& index_in,
                               const at::Tensor& node_ptr_in, const at::Tensor& is_source_in, const at::Tensor& r_in,
                               const at::Tensor& P, const at::Tensor& W, double alpha, c10::string_view schedule,
                               const std::optional<at::Tensor>& t_indptr, const std::optional<at::Tensor>& t_index) {
  check_flow_args(op_in, indptr_in, index_in, node_ptr_in, is_source_in, r_in, P, W, alpha, schedule, t_indptr,
                  t_index);
  c10::cuda::CUDAGuard guard(op_in.device());
  const auto op = op_in.contiguous();
  const auto in_ptr = indptr_in.contiguous();
  const auto in_idx = index_in.contiguous();
  const auto node_ptr = node_ptr_in.contiguous();
  const auto is_source = is_source_in.contiguous();
  const auto r = r_in.contiguous();
  const int64_t N = op.numel(), B = node_ptr.numel() - 1, k = r.numel(), F = P.size(0);
  auto out = at::zeros({B, k}, r.options());
  if (B == 0) return out;
  auto status = at::zeros({B}, op.options());
  auto detail = at::full({B}, -1, op.options());
  if (N > 0) {
    TORCH_CHECK(op.min().item<int64_t>() >= 0 && op.max().item<int64_t>() < F,
                "op id out of range: op ids must lie in [0, ", F, ")");
  }
  const auto [out_ptr, out_idx, pw, w_msg] = flow_tables(in_idx, in_ptr, N, t_indptr, t_index, P, W, csr_transpose_cuda);
  auto h = at::empty({N, k}, r.options());
  auto m = at::empty({std::max(N, B), k}, r.options());
  // Per-graph threads win when there are enough graphs to fill the device; otherwise go level-synchronous.
  const bool per_graph = schedule == "graph" || (schedule == "auto" && B >= 4096);
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "flow_surrogate_cuda", [&] {
    FlowArgs<scalar_t> a{op.data_ptr<int64_t>(), in_ptr.data_ptr<int64_t>(), in_idx.data_ptr<int64_t>(),
                         out_ptr.data_ptr<int64_t>(), out_idx.data_ptr<int64_t>(), is_source.data_ptr<bool>(),
                         r.data_ptr<scalar_t>(), pw.data_ptr<scalar_t>(), w_msg.data_ptr<scalar_t>(),
                         static_cast<scalar_t>(alpha), k, F, h.data_ptr<scalar_t>()};
    if (per_graph) {
      auto scratch = at::empty({2, N}, op.options());
      flow_per_graph_kernel<scalar_t><<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
          a, node_ptr.data_ptr<int64_t>(), B, scratch[0].data_ptr<int64_t>(), scratch[1].data_ptr<int64_t>(),
          m.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), status.data_ptr<int64_t>(), detail.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      raise_from_device(status, detail, node_ptr, in_idx, F);
      return;
    }
    const auto level = topo_levels_cuda(in_ptr, in_idx, node_ptr);  // validates edges, raises on a cycle
    const auto order = std::get<1>(level.sort(/*stable=*/true));
    const int64_t depth = N > 0 ? level.max().item<int64_t>() + 1 : 0;
    const auto level_ptr = at::zeros({depth + 1}, op.options());
    if (depth > 0) level_ptr.narrow(0, 1, depth).copy_(at::bincount(level, {}, depth).cumsum(0));
    const auto lp = level_ptr.cpu();  // one copy: the host drives the level loop
    const int64_t* lph = lp.data_ptr<int64_t>();
    const int64_t* ord = order.data_ptr<int64_t>();
    scalar_t* mp = m.data_ptr<scalar_t>();
    init_states_kernel<scalar_t><<<cuda::blocks_for(N * k), cuda::kThreads, 0, cuda::stream()>>>(a, N);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto sweep = [&](int64_t l, const int64_t* ptr, const int64_t* idx) {
      const int64_t lo = lph[l], hi = lph[l + 1];
      if (hi == lo) return;
      const auto blocks = cuda::blocks_for((hi - lo) * k);
      level_message_kernel<scalar_t><<<blocks, cuda::kThreads, 0, cuda::stream()>>>(a, ord, lo, hi, ptr, idx, mp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      level_update_kernel<scalar_t><<<blocks, cuda::kThreads, 0, cuda::stream()>>>(a, ord, lo, hi, ptr, mp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    for (int64_t l = 1; l < depth; ++l) sweep(l, a.in_ptr, a.in_idx);
    for (int64_t l = depth - 1; l >= 0; --l) sweep(l, a.out_ptr, a.out_idx);
    readout_kernel<scalar_t><<<cuda::blocks_for(B * k), cuda::kThreads, 0, cuda::stream()>>>(
        a, node_ptr.data_ptr<int64_t>(), B, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace fgp
