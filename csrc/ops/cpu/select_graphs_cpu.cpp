#include "ops/select_graphs.h"

#include <vector>

namespace fgp {

SelectedGraphs select_graphs_cpu(const Tensor& node_ptr_in, const Tensor& ids_in, const Tensor& op_in,
                                 const Tensor& level_in, const Tensor& is_source_in, const Tensor& in_indptr_in,
                                 const Tensor& in_index_in, const Tensor& in_perm_in, const Tensor& out_indptr_in,
                                 const Tensor& out_index_in, const Tensor& out_perm_in) {
  const std::vector<Tensor> args_in{node_ptr_in, ids_in,      op_in,         level_in,     is_source_in, in_indptr_in,
                                    in_index_in, in_perm_in,  out_indptr_in, out_index_in, out_perm_in};
  check_select_args(args_in);
  std::vector<Tensor> a;
  for (const auto& t : args_in) a.push_back(contiguous(t));
  const auto &node_ptr = a[0], &ids = a[1], &in_indptr = a[5];
  const int64_t Bn = ids.numel();
  const int64_t* gp = node_ptr.const_data_ptr<int64_t>();
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* ip = in_indptr.const_data_ptr<int64_t>();
  auto new_node_ptr = empty_like_shape(node_ptr, {Bn + 1}), new_edge_ptr = empty_like_shape(node_ptr, {Bn + 1});
  int64_t* nnp = new_node_ptr.mutable_data_ptr<int64_t>();
  int64_t* nep = new_edge_ptr.mutable_data_ptr<int64_t>();
  nnp[0] = nep[0] = 0;
  const int64_t N_in = a[2].numel(), E_in = a[6].numel();
  for (int64_t i = 0; i < Bn; ++i) {  // prefix sums over the selected graphs (cheap, sequential)
    const int64_t g = id[i];
    check_selected_ranges(g, gp, ip, N_in, E_in);
    nnp[i + 1] = nnp[i] + (gp[g + 1] - gp[g]);
    nep[i + 1] = nep[i] + (ip[gp[g + 1]] - ip[gp[g]]);
  }
  const int64_t N = nnp[Bn], E = nep[Bn];
  auto graph = empty_like_shape(node_ptr, {N}), op = empty_like_shape(node_ptr, {N}),
       level = empty_like_shape(node_ptr, {N});
  auto is_source = empty_like_shape(a[4], {N});
  auto in_ptr = empty_like_shape(node_ptr, {N + 1}), in_index = empty_like_shape(node_ptr, {E}),
       in_perm = empty_like_shape(node_ptr, {E});
  auto out_ptr = empty_like_shape(node_ptr, {N + 1}), out_index = empty_like_shape(node_ptr, {E}),
       out_perm = empty_like_shape(node_ptr, {E});
  // Every pointer is taken before the parallel loop, so its body makes no (possibly throwing) calls.
  const int64_t *s_op = a[2].const_data_ptr<int64_t>(), *s_level = a[3].const_data_ptr<int64_t>();
  const bool* s_is_source = a[4].const_data_ptr<bool>();
  const int64_t *s_in_index = a[6].const_data_ptr<int64_t>(), *s_in_perm = a[7].const_data_ptr<int64_t>();
  const int64_t *s_out_indptr = a[8].const_data_ptr<int64_t>(), *s_out_index = a[9].const_data_ptr<int64_t>(),
                *s_out_perm = a[10].const_data_ptr<int64_t>();
  int64_t *n_graph = graph.mutable_data_ptr<int64_t>(), *n_op = op.mutable_data_ptr<int64_t>(),
          *n_level = level.mutable_data_ptr<int64_t>();
  bool* n_is_source = is_source.mutable_data_ptr<bool>();
  int64_t *n_in_ptr = in_ptr.mutable_data_ptr<int64_t>(), *n_in_index = in_index.mutable_data_ptr<int64_t>(),
          *n_in_perm = in_perm.mutable_data_ptr<int64_t>();
  int64_t *n_out_ptr = out_ptr.mutable_data_ptr<int64_t>(), *n_out_index = out_index.mutable_data_ptr<int64_t>(),
          *n_out_perm = out_perm.mutable_data_ptr<int64_t>();
  n_in_ptr[N] = E;
  n_out_ptr[N] = E;
  std::vector<char> ok(Bn, 1);
  parallel_for(0, Bn, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      ok[i] = select_graph_copy(i, id, gp, s_op, s_level, s_is_source, ip, s_in_index, s_in_perm, s_out_indptr,
                                s_out_index, s_out_perm, nnp, nep, n_graph, n_op, n_level, n_is_source, n_in_ptr,
                                n_in_index, n_in_perm, n_out_ptr, n_out_index, n_out_perm, E_in);
  });
  for (int64_t i = 0; i < Bn; ++i)
    if (!ok[i]) raise_bad_selected_graph(id[i]);
  return {new_node_ptr, graph, op, level, is_source, in_ptr, in_index, in_perm, out_ptr, out_index, out_perm};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("select_graphs", TORCH_BOX(&fgp::select_graphs_cpu)); }
