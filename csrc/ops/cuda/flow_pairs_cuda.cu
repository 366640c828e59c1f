#include "ops/flow_pairs.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per graph, the same per-graph code as the CPU kernel (cells are small; a graph of
// thousands of nodes would want a block per graph).
__global__ void flow_relation_kernel(const int64_t* indptr, const int64_t* index, const int64_t* node_ptr,
                                     const int64_t* topo, const int64_t* offsets, int64_t B, uint64_t* bits,
                                     int64_t* count, int64_t* status, int64_t* detail) {
  FGP_CUDA_KERNEL_LOOP(g, B) {
    status[g] = flow_relation(node_ptr[g], node_ptr[g + 1], indptr, index, topo, bits + offsets[g], count, &detail[g]);
  }
}

__global__ void flow_fill_kernel(const int64_t* node_ptr, const int64_t* offsets, int64_t B, const uint64_t* bits,
                                 const int64_t* pair_indptr, int64_t* pair_index, int64_t* pair_perm, int64_t* cursor) {
  FGP_CUDA_KERNEL_LOOP(g, B) {
    flow_fill(node_ptr[g], node_ptr[g + 1], bits + offsets[g], pair_indptr, pair_index, pair_perm, cursor);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> flow_pairs_cuda(const at::Tensor& indptr_in, const at::Tensor& index_in,
                                                               const at::Tensor& node_ptr_in, const at::Tensor& topo_in) {
  check_flow_pair_args(indptr_in, index_in, node_ptr_in, topo_in);
  c10::cuda::CUDAGuard guard(index_in.device());
  const auto indptr = indptr_in.contiguous();
  const auto index = index_in.contiguous();
  const auto node_ptr = node_ptr_in.contiguous();
  const auto topo = topo_in.contiguous();
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1;
  const auto opts = index.options();
  const auto offsets = flow_scratch_offsets(node_ptr);
  const int64_t words = offsets[-1].item<int64_t>();
  auto bits = at::empty({words}, opts);  // int64 storage reinterpreted as uint64 words
  auto count = at::zeros({N}, opts);
  auto status = at::zeros({std::max<int64_t>(B, 1)}, opts);
  auto detail = at::full({std::max<int64_t>(B, 1)}, -1, opts);
  if (B > 0) {
    flow_relation_kernel<<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
        indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), node_ptr.data_ptr<int64_t>(), topo.data_ptr<int64_t>(),
        offsets.data_ptr<int64_t>(), B, reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>()),
        count.data_ptr<int64_t>(), status.data_ptr<int64_t>(), detail.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (status.any().item<bool>()) {
      const auto s = status.cpu(), d = detail.cpu(), gp = node_ptr.cpu(), idx = index.cpu();
      raise_graph_errors(s.data_ptr<int64_t>(), d.data_ptr<int64_t>(), gp.data_ptr<int64_t>(), B,
                         idx.data_ptr<int64_t>(), 0);
    }
  }
  auto pair_indptr = at::zeros({N + 1}, opts);
  if (N > 0) pair_indptr.slice(0, 1).copy_(at::cumsum(count, 0));
  const int64_t P = pair_indptr[-1].item<int64_t>();
  auto pair_index = at::empty({P}, opts), pair_perm = at::empty({P}, opts);
  auto cursor = at::empty({N}, opts);
  if (B > 0) {
    flow_fill_kernel<<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
        node_ptr.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(), B,
        reinterpret_cast<const uint64_t*>(bits.data_ptr<int64_t>()), pair_indptr.data_ptr<int64_t>(),
        pair_index.data_ptr<int64_t>(), pair_perm.data_ptr<int64_t>(), cursor.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {pair_indptr, pair_index, pair_perm};
}

}  // namespace fgp
