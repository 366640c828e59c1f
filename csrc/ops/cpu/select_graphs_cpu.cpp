#include "ops/select_graphs.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {

std::vector<at::Tensor> select_graphs_cpu(at::TensorList args_in) {
  check_select_args(args_in);
  std::vector<at::Tensor> a;
  for (const auto& t : args_in) a.push_back(t.contiguous());
  const auto &node_ptr = a[0], &ids = a[1], &in_indptr = a[5];
  const int64_t Bn = ids.numel();
  const auto opts = node_ptr.options();
  const int64_t* gp = node_ptr.data_ptr<int64_t>();
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* ip = in_indptr.data_ptr<int64_t>();
  auto new_node_ptr = at::empty({Bn + 1}, opts), new_edge_ptr = at::empty({Bn + 1}, opts);
  int64_t* nnp = new_node_ptr.data_ptr<int64_t>();
  int64_t* nep = new_edge_ptr.data_ptr<int64_t>();
  nnp[0] = nep[0] = 0;
  const int64_t N_in = a[2].numel(), E_in = a[6].numel();
  for (int64_t i = 0; i < Bn; ++i) {  // prefix sums over the selected graphs (cheap, sequential)
    const int64_t g = id[i];
    check_selected_ranges(g, gp, ip, N_in, E_in);
    nnp[i + 1] = nnp[i] + (gp[g + 1] - gp[g]);
    nep[i + 1] = nep[i] + (ip[gp[g + 1]] - ip[gp[g]]);
  }
  const int64_t N = nnp[Bn], E = nep[Bn];
  auto graph = at::empty({N}, opts), op = at::empty({N}, opts), level = at::empty({N}, opts);
  auto is_source = at::empty({N}, a[4].options());
  auto in_ptr = at::empty({N + 1}, opts), in_index = at::empty({E}, opts), in_perm = at::empty({E}, opts);
  auto out_ptr = at::empty({N + 1}, opts), out_index = at::empty({E}, opts), out_perm = at::empty({E}, opts);
  in_ptr[N].fill_(E);
  out_ptr[N].fill_(E);
  std::vector<char> ok(Bn, 1);
  at::parallel_for(0, Bn, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      ok[i] = select_graph_copy(i, id, gp, a[2].data_ptr<int64_t>(), a[3].data_ptr<int64_t>(), a[4].data_ptr<bool>(), ip,
                        a[6].data_ptr<int64_t>(), a[7].data_ptr<int64_t>(), a[8].data_ptr<int64_t>(),
                        a[9].data_ptr<int64_t>(), a[10].data_ptr<int64_t>(), nnp, nep, graph.data_ptr<int64_t>(),
                        op.data_ptr<int64_t>(), level.data_ptr<int64_t>(), is_source.data_ptr<bool>(),
                        in_ptr.data_ptr<int64_t>(), in_index.data_ptr<int64_t>(), in_perm.data_ptr<int64_t>(),
                        out_ptr.data_ptr<int64_t>(), out_index.data_ptr<int64_t>(), out_perm.data_ptr<int64_t>(), E_in);
  });
  for (int64_t i = 0; i < Bn; ++i)
    if (!ok[i]) raise_bad_selected_graph(id[i]);
  return {new_node_ptr, graph, op, level, is_source, in_ptr, in_index, in_perm, out_ptr, out_index, out_perm};
}

}  // namespace fgp
