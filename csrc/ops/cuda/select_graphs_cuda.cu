#include "ops/select_graphs.h"
#include "ops/cuda/cuda_utils.cuh"

#include <vector>

namespace fgp {
namespace {

// One thread per selected graph, the same copy as the CPU kernel (select_graph_copy).
__global__ void select_graphs_kernel(int64_t Bn, const int64_t* ids, const int64_t* node_ptr, const int64_t* op,
                                     const int64_t* level, const bool* is_source, const int64_t* in_indptr,
                                     const int64_t* in_index, const int64_t* in_perm, const int64_t* out_indptr,
                                     const int64_t* out_index, const int64_t* out_perm, const int64_t* new_node_ptr,
                                     const int64_t* new_edge_ptr, int64_t* n_graph, int64_t* n_op, int64_t* n_level,
                                     bool* n_is_source, int64_t* n_in_indptr, int64_t* n_in_index, int64_t* n_in_perm,
                                     int64_t* n_out_indptr, int64_t* n_out_index, int64_t* n_out_perm,
                                     int64_t* bad_graph, int64_t num_entries) {
  FGP_CUDA_KERNEL_LOOP(i, Bn) {
    if (!select_graph_copy(i, ids, node_ptr, op, level, is_source, in_indptr, in_index, in_perm, out_indptr, out_index,
                      out_perm, new_node_ptr, new_edge_ptr, n_graph, n_op, n_level, n_is_source, n_in_indptr,
                      n_in_index, n_in_perm, n_out_indptr, n_out_index, n_out_perm, num_entries))
      *bad_graph = ids[i];
  }
}

}  // namespace

SelectedGraphs select_graphs_cuda(const Tensor& node_ptr_in, const Tensor& ids_in, const Tensor& op_in,
                                  const Tensor& level_in, const Tensor& is_source_in, const Tensor& in_indptr_in,
                                  const Tensor& in_index_in, const Tensor& in_perm_in, const Tensor& out_indptr_in,
                                  const Tensor& out_index_in, const Tensor& out_perm_in) {
  const std::vector<Tensor> args_in{node_ptr_in, ids_in,      op_in,         level_in,     is_source_in, in_indptr_in,
                                    in_index_in, in_perm_in,  out_indptr_in, out_index_in, out_perm_in};
  check_select_args(args_in);
  const auto guard = cuda::guard_for(args_in[0]);
  std::vector<Tensor> a;
  for (const auto& t : args_in) a.push_back(contiguous(t));
  const auto &node_ptr = a[0], &ids = a[1], &in_indptr = a[5];
  const int64_t Bn = ids.numel();
  const Device dev = node_ptr.device();
  // node_ptr[ids] and node_ptr[ids + 1] (= node_ptr[1:][ids]: ids lie in [0, B), checked above).
  Tensor node_ptr_view = node_ptr;
  const auto starts = aten::index_select(node_ptr, 0, ids);
  const auto ends = aten::index_select(torch::stable::narrow(node_ptr_view, 0, 1, node_ptr.numel() - 1), 0, ids);
  // the selected ranges must be ordered and inside the arrays (the kernel checks the rest)
  FGP_CHECK(Bn == 0 || (aten::all(aten::ge(ends, starts)) && item<int64_t>(aten::min_all(starts)) >= 0 &&
                        item<int64_t>(aten::max_all(ends)) <= a[2].numel()),
            "select_graphs: node_ptr is not a valid graph partition");
  auto new_node_ptr = zeros_tensor({Bn + 1}, kLong, dev), new_edge_ptr = zeros_tensor({Bn + 1}, kLong, dev);
  if (Bn > 0) {
    auto node_tail = torch::stable::narrow(new_node_ptr, 0, 1, Bn);
    torch::stable::copy_(node_tail, aten::cumsum(aten::sub(ends, starts)));
    auto edge_tail = torch::stable::narrow(new_edge_ptr, 0, 1, Bn);
    torch::stable::copy_(edge_tail, aten::cumsum(aten::sub(aten::index_select(in_indptr, 0, ends),
                                                           aten::index_select(in_indptr, 0, starts))));
  }
  const int64_t N = read<int64_t>(new_node_ptr, -1), E = read<int64_t>(new_edge_ptr, -1);
  auto graph = empty_like_shape(node_ptr, {N}), op = empty_like_shape(node_ptr, {N}),
       level = empty_like_shape(node_ptr, {N});
  auto is_source = empty_like_shape(a[4], {N});
  auto in_ptr = empty_like_shape(node_ptr, {N + 1}), in_index = empty_like_shape(node_ptr, {E}),
       in_perm = empty_like_shape(node_ptr, {E});
  auto out_ptr = empty_like_shape(node_ptr, {N + 1}), out_index = empty_like_shape(node_ptr, {E}),
       out_perm = empty_like_shape(node_ptr, {E});
  // in_ptr[N] = out_ptr[N] = E (fill_ takes a double: exact for any realistic E < 2^53).
  torch::stable::fill_(torch::stable::narrow(in_ptr, 0, N, 1), static_cast<double>(E));
  torch::stable::fill_(torch::stable::narrow(out_ptr, 0, N, 1), static_cast<double>(E));
  auto bad_graph = full_tensor({1}, -1, kLong, dev);
  if (Bn > 0) {
    select_graphs_kernel<<<cuda::blocks_for(Bn, 128), 128, 0, cuda::stream()>>>(
        Bn, ids.const_data_ptr<int64_t>(), node_ptr.const_data_ptr<int64_t>(), a[2].const_data_ptr<int64_t>(),
        a[3].const_data_ptr<int64_t>(), a[4].const_data_ptr<bool>(), in_indptr.const_data_ptr<int64_t>(),
        a[6].const_data_ptr<int64_t>(), a[7].const_data_ptr<int64_t>(), a[8].const_data_ptr<int64_t>(),
        a[9].const_data_ptr<int64_t>(), a[10].const_data_ptr<int64_t>(), new_node_ptr.const_data_ptr<int64_t>(),
        new_edge_ptr.const_data_ptr<int64_t>(), graph.mutable_data_ptr<int64_t>(), op.mutable_data_ptr<int64_t>(),
        level.mutable_data_ptr<int64_t>(), is_source.mutable_data_ptr<bool>(), in_ptr.mutable_data_ptr<int64_t>(),
        in_index.mutable_data_ptr<int64_t>(), in_perm.mutable_data_ptr<int64_t>(), out_ptr.mutable_data_ptr<int64_t>(),
        out_index.mutable_data_ptr<int64_t>(), out_perm.mutable_data_ptr<int64_t>(),
        bad_graph.mutable_data_ptr<int64_t>(), a[6].numel());
    cuda::check_launch("select_graphs");
    const int64_t bad = item<int64_t>(bad_graph);
    if (bad >= 0) raise_bad_selected_graph(bad);
  }
  return {new_node_ptr, graph, op, level, is_source, in_ptr, in_index, in_perm, out_ptr, out_index, out_perm};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("select_graphs", TORCH_BOX(&fgp::select_graphs_cuda)); }
