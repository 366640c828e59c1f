#include "ops/topo_levels.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per graph runs the same depth-first search as the CPU kernel (graph_levels).
__global__ void topo_levels_kernel(const int64_t* indptr, const int64_t* index, const int64_t* node_ptr, int64_t B,
                                   int64_t* level, int64_t* cursor, int64_t* stack, int64_t* status, int64_t* detail) {
  FGP_CUDA_KERNEL_LOOP(g, B) {
    status[g] = graph_levels(node_ptr[g], node_ptr[g + 1], indptr, index, level, cursor, stack, &detail[g]);
  }
}

}  // namespace

Tensor topo_levels_cuda(const Tensor& indptr_in, const Tensor& index_in, const Tensor& node_ptr_in) {
  check_topo_args(indptr_in, index_in, node_ptr_in);
  const auto guard = cuda::guard_for(index_in);
  const auto indptr = contiguous(indptr_in);
  const auto index = contiguous(index_in);
  const auto node_ptr = contiguous(node_ptr_in);
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1;
  auto level = empty_like_shape(index, {N});
  auto scratch = empty_like_shape(index, {2, N});  // rows: cursor, stack
  auto status = zeros_tensor({B}, kLong, index.device());
  auto detail = full_tensor({B}, -1, kLong, index.device());
  if (B > 0) {
    int64_t* sc = scratch.mutable_data_ptr<int64_t>();
    topo_levels_kernel<<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
        indptr.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(), node_ptr.const_data_ptr<int64_t>(), B,
        level.mutable_data_ptr<int64_t>(), sc, sc + N, status.mutable_data_ptr<int64_t>(),
        detail.mutable_data_ptr<int64_t>());
    cuda::check_launch("topo_levels");
  }
  if (B > 0 && aten::any(status)) {
    const auto s = to_cpu(status), d = to_cpu(detail), gp = to_cpu(node_ptr), idx = to_cpu(index);
    raise_graph_errors(s.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>(), gp.const_data_ptr<int64_t>(), B,
                       idx.const_data_ptr<int64_t>(), 0);
  }
  return level;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("topo_levels", TORCH_BOX(&fgp::topo_levels_cuda)); }
