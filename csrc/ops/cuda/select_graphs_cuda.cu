#include "ops/select_graphs.h"
#include "ops/cuda/cuda_utils.cuh"

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

std::vector<at::Tensor> select_graphs_cuda(at::TensorList args_in) {
  check_select_args(args_in);
  c10::cuda::CUDAGuard guard(args_in[0].device());
  std::vector<at::Tensor> a;
  for (const auto& t : args_in) a.push_back(t.contiguous());
  const auto &node_ptr = a[0], &ids = a[1], &in_indptr = a[5];
  const int64_t Bn = ids.numel();
  const auto opts = node_ptr.options();
  const auto starts = node_ptr.index_select(0, ids), ends = node_ptr.index_select(0, ids + 1);
  // the selected ranges must be ordered and inside the arrays (the kernel checks the rest)
  TORCH_CHECK(Bn == 0 || ((ends >= starts).all().item<bool>() && (starts >= 0).all().item<bool>() &&
                          (ends <= a[2].numel()).all().item<bool>()),
              "select_graphs: node_ptr is not a valid graph partition");
  auto new_node_ptr = at::zeros({Bn + 1}, opts), new_edge_ptr = at::zeros({Bn + 1}, opts);
  if (Bn > 0) {
    new_node_ptr.slice(0, 1).copy_(at::cumsum(ends - starts, 0));
    new_edge_ptr.slice(0, 1).copy_(at::cumsum(in_indptr.index_select(0, ends) - in_indptr.index_select(0, starts), 0));
  }
  const int64_t N = new_node_ptr[-1].item<int64_t>(), E = new_edge_ptr[-1].item<int64_t>();
  auto graph = at::empty({N}, opts), op = at::empty({N}, opts), level = at::empty({N}, opts);
  auto is_source = at::empty({N}, a[4].options());
  auto in_ptr = at::empty({N + 1}, opts), in_index = at::empty({E}, opts), in_perm = at::empty({E}, opts);
  auto out_ptr = at::empty({N + 1}, opts), out_index = at::empty({E}, opts), out_perm = at::empty({E}, opts);
  in_ptr[N].fill_(E);
  out_ptr[N].fill_(E);
  auto bad_graph = at::full({1}, -1, opts);
  if (Bn > 0) {
    select_graphs_kernel<<<cuda::blocks_for(Bn, 128), 128, 0, cuda::stream()>>>(
        Bn, ids.data_ptr<int64_t>(), node_ptr.data_ptr<int64_t>(), a[2].data_ptr<int64_t>(), a[3].data_ptr<int64_t>(),
        a[4].data_ptr<bool>(), in_indptr.data_ptr<int64_t>(), a[6].data_ptr<int64_t>(), a[7].data_ptr<int64_t>(),
        a[8].data_ptr<int64_t>(), a[9].data_ptr<int64_t>(), a[10].data_ptr<int64_t>(), new_node_ptr.data_ptr<int64_t>(),
        new_edge_ptr.data_ptr<int64_t>(), graph.data_ptr<int64_t>(), op.data_ptr<int64_t>(), level.data_ptr<int64_t>(),
        is_source.data_ptr<bool>(), in_ptr.data_ptr<int64_t>(), in_index.data_ptr<int64_t>(),
        in_perm.data_ptr<int64_t>(), out_ptr.data_ptr<int64_t>(), out_index.data_ptr<int64_t>(),
        out_perm.data_ptr<int64_t>(), bad_graph.data_ptr<int64_t>(), a[6].numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t bad = bad_graph.item<int64_t>();
    if (bad >= 0) raise_bad_selected_graph(bad);
  }
  return {new_node_ptr, graph, op, level, is_source, in_ptr, in_index, in_perm, out_ptr, out_index, out_perm};
}

}  // namespace fgp
