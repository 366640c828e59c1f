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

at::Tensor topo_levels_cuda(const at::Tensor& indptr_in, const at::Tensor& index_in, const at::Tensor& node_ptr_in) {
  check_topo_args(indptr_in, index_in, node_ptr_in);
  c10::cuda::CUDAGuard guard(index_in.device());
  const auto indptr = indptr_in.contiguous();
  const auto index = index_in.contiguous();
  const auto node_ptr = node_ptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1;
  auto level = at::empty({N}, index.options());
  auto scratch = at::empty({2, N}, index.options());
  auto status = at::zeros({B}, index.options());
  auto detail = at::full({B}, -1, index.options());
  if (B > 0) {
    topo_levels_kernel<<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
        indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), node_ptr.data_ptr<int64_t>(), B,
        level.data_ptr<int64_t>(), scratch[0].data_ptr<int64_t>(), scratch[1].data_ptr<int64_t>(),
        status.data_ptr<int64_t>(), detail.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (B > 0 && status.any().item<bool>()) {
    const auto s = status.cpu(), d = detail.cpu(), gp = node_ptr.cpu(), idx = index.cpu();
    raise_graph_errors(s.data_ptr<int64_t>(), d.data_ptr<int64_t>(), gp.data_ptr<int64_t>(), B,
                       idx.data_ptr<int64_t>(), 0);
  }
  return level;
}

}  // namespace fgp
