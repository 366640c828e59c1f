#include "ops/topo_levels.h"

#include <ATen/Parallel.h>

namespace fgp {

at::Tensor topo_levels_cpu(const at::Tensor& indptr_in, const at::Tensor& index_in, const at::Tensor& node_ptr_in) {
  check_topo_args(indptr_in, index_in, node_ptr_in);
  const auto indptr = indptr_in.contiguous();
  const auto index = index_in.contiguous();
  const auto node_ptr = node_ptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1;
  auto level = at::empty({N}, index.options());
  std::vector<int64_t> cursor(N), stack(N), status(B, kGraphOk), detail(B, -1);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t* gp = node_ptr.data_ptr<int64_t>();
  int64_t* lv = level.data_ptr<int64_t>();
  // Graphs are independent and own disjoint node ranges, so each task writes only its own slices.
  at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      status[g] = graph_levels(gp[g], gp[g + 1], ptr, idx, lv, cursor.data(), stack.data(), &detail[g]);
  });
  raise_graph_errors(status.data(), detail.data(), gp, B, idx, 0);
  return level;
}

}  // namespace fgp
