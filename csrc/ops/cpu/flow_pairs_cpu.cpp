#include "ops/flow_pairs.h"

#include <vector>

namespace fgp {

std::tuple<Tensor, Tensor, Tensor> flow_pairs_cpu(const Tensor& indptr_in, const Tensor& index_in,
                                                  const Tensor& node_ptr_in, const Tensor& topo_in) {
  check_flow_pair_args(indptr_in, index_in, node_ptr_in, topo_in);
  const auto indptr = contiguous(indptr_in);
  const auto index = contiguous(index_in);
  const auto node_ptr = contiguous(node_ptr_in);
  const auto topo = contiguous(topo_in);
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1, E = index.numel();
  const Device dev = index.device();
  const std::vector<int64_t> offsets = flow_scratch_offsets(node_ptr);
  const int64_t* off = offsets.data();
  // Bitsets of all graphs stay alive between the count and the fill pass (2 n^2 / 8 bytes a graph).
  std::vector<uint64_t> bits(static_cast<size_t>(B > 0 ? off[B] : 0));
  auto pair_indptr = zeros_tensor({N + 1}, kLong, dev);
  std::vector<int64_t> status(B, kGraphOk), detail(B, -1);
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  const int64_t* gp = node_ptr.const_data_ptr<int64_t>();
  const int64_t* tp = topo.const_data_ptr<int64_t>();
  int64_t* pp = pair_indptr.mutable_data_ptr<int64_t>();
  // Each graph records its status; the first failing graph is raised after the loop.
  parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      status[g] = flow_relation(gp[g], gp[g + 1], ptr, idx, tp, bits.data() + off[g], pp + 1, &detail[g]);
  });
  raise_flow_pair_errors(status.data(), detail.data(), gp, B, idx, E, tp);
  for (int64_t v = 0; v < N; ++v) pp[v + 1] += pp[v];
  const int64_t P = pp[N];
  check_output_size(P, 2 * sizeof(int64_t), "flow_pairs: the flow-related pairs (index and perm)");
  auto pair_index = empty_tensor({P}, kLong, dev), pair_perm = empty_tensor({P}, kLong, dev);
  std::vector<int64_t> cursor(N);
  int64_t* pi = pair_index.mutable_data_ptr<int64_t>();
  int64_t* pm = pair_perm.mutable_data_ptr<int64_t>();
  parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) flow_fill(gp[g], gp[g + 1], bits.data() + off[g], pp, pi, pm, cursor.data());
  });
  return {pair_indptr, pair_index, pair_perm};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("flow_pairs", TORCH_BOX(&fgp::flow_pairs_cpu)); }
