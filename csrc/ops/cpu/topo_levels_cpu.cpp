#include "ops/topo_levels.h"

#include <vector>

namespace fgp {

Tensor topo_levels_cpu(const Tensor& indptr_in, const Tensor& index_in, const Tensor& node_ptr_in) {
  check_topo_args(indptr_in, index_in, node_ptr_in);
  const auto indptr = contiguous(indptr_in);
  const auto index = contiguous(index_in);
  const auto node_ptr = contiguous(node_ptr_in);
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1;
  auto level = empty_like_shape(index, {N});
  std::vector<int64_t> cursor(N), stack(N), status(B, kGraphOk), detail(B, -1);
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  const int64_t* gp = node_ptr.const_data_ptr<int64_t>();
  int64_t* lv = level.mutable_data_ptr<int64_t>();
  // Graphs are independent and own disjoint node ranges, so each task writes only its own slices.
  // Failures are statuses (graph_levels never throws), raised after the loop.
  parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      status[g] = graph_levels(gp[g], gp[g + 1], ptr, idx, lv, cursor.data(), stack.data(), &detail[g]);
  });
  raise_graph_errors(status.data(), detail.data(), gp, B, idx, 0);
  return level;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("topo_levels", TORCH_BOX(&fgp::topo_levels_cpu)); }
