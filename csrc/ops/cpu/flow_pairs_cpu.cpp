#include "ops/flow_pairs.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fgp {

std::tuple<at::Tensor, at::Tensor, at::Tensor> flow_pairs_cpu(const at::Tensor& indptr_in, const at::Tensor& index_in,
                                                              const at::Tensor& node_ptr_in, const at::Tensor& topo_in) {
  check_flow_pair_args(indptr_in, index_in, node_ptr_in, topo_in);
  const auto indptr = indptr_in.contiguous();
  const auto index = index_in.contiguous();
  const auto node_ptr = node_ptr_in.contiguous();
  const auto topo = topo_in.contiguous();
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1;
  const auto opts = index.options();
  const auto offsets = flow_scratch_offsets(node_ptr);
  const int64_t* off = offsets.data_ptr<int64_t>();
  // Bitsets of all graphs stay alive between the count and the fill pass (2 n^2 / 8 bytes a graph).
  std::vector<uint64_t> bits(static_cast<size_t>(B > 0 ? off[B] : 0));
  auto pair_indptr = at::zeros({N + 1}, opts);
  std::vector<int64_t> status(B, kGraphOk), detail(B, -1);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t* gp = node_ptr.data_ptr<int64_t>();
  const int64_t* tp = topo.data_ptr<int64_t>();
  int64_t* pp = pair_indptr.data_ptr<int64_t>();
  at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      status[g] = flow_relation(gp[g], gp[g + 1], ptr, idx, tp, bits.data() + off[g], pp + 1, &detail[g]);
  });
  raise_graph_errors(status.data(), detail.data(), gp, B, idx, 0);
  for (int64_t v = 0; v < N; ++v) pp[v + 1] += pp[v];
  const int64_t P = pp[N];
  auto pair_index = at::empty({P}, opts), pair_perm = at::empty({P}, opts);
  std::vector<int64_t> cursor(N);
  int64_t* pi = pair_index.data_ptr<int64_t>();
  int64_t* pm = pair_perm.data_ptr<int64_t>();
  at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) flow_fill(gp[g], gp[g + 1], bits.data() + off[g], pp, pi, pm, cursor.data());
  });
  return {pair_indptr, pair_index, pair_perm};
}

}  // namespace fgp
