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

std::tuple<Tensor, Tensor, Tensor> flow_pairs_cuda(const Tensor& indptr_in, const Tensor& index_in,
                                                   const Tensor& node_ptr_in, const Tensor& topo_in) {
  check_flow_pair_args(indptr_in, index_in, node_ptr_in, topo_in);
  const auto guard = cuda::guard_for(index_in);
  const auto indptr = contiguous(indptr_in);
  const auto index = contiguous(index_in);
  const auto node_ptr = contiguous(node_ptr_in);
  const auto topo = contiguous(topo_in);
  const int64_t N = indptr.numel() - 1, B = node_ptr.numel() - 1, E = index.numel();
  const Device dev = index.device();
  const std::vector<int64_t> host_offsets = flow_scratch_offsets(node_ptr);
  const auto offsets = from_host(host_offsets, dev);
  const int64_t words = host_offsets.back();
  auto bits = empty_tensor({words}, kLong, dev);  // int64 storage reinterpreted as uint64 words
  auto count = zeros_tensor({N}, kLong, dev);
  auto status = zeros_tensor({std::max<int64_t>(B, 1)}, kLong, dev);
  auto detail = full_tensor({std::max<int64_t>(B, 1)}, -1.0, kLong, dev);
  if (B > 0) {
    flow_relation_kernel<<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
        indptr.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(), node_ptr.const_data_ptr<int64_t>(),
        topo.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(), B,
        reinterpret_cast<uint64_t*>(bits.mutable_data_ptr<int64_t>()), count.mutable_data_ptr<int64_t>(),
        status.mutable_data_ptr<int64_t>(), detail.mutable_data_ptr<int64_t>());
    cuda::check_launch("flow_pairs");
    if (aten::any(status)) {
      const auto s = host_long(status), d = host_long(detail), gp = host_long(node_ptr), idx = host_long(index),
                 tp = host_long(topo);
      raise_flow_pair_errors(s.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>(), gp.const_data_ptr<int64_t>(),
                             B, idx.const_data_ptr<int64_t>(), E, tp.const_data_ptr<int64_t>());
    }
  }
  auto pair_indptr = zeros_tensor({N + 1}, kLong, dev);
  if (N > 0) {
    auto tail = torch::stable::narrow(pair_indptr, 0, 1, N);
    torch::stable::copy_(tail, aten::cumsum(count));
  }
  const int64_t P = read<int64_t>(pair_indptr, -1);
  check_output_size(P, 2 * sizeof(int64_t), "flow_pairs: the flow-related pairs (index and perm)");
  auto pair_index = empty_tensor({P}, kLong, dev), pair_perm = empty_tensor({P}, kLong, dev);
  auto cursor = empty_tensor({N}, kLong, dev);
  if (B > 0) {
    flow_fill_kernel<<<cuda::blocks_for(B, 128), 128, 0, cuda::stream()>>>(
        node_ptr.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(), B,
        reinterpret_cast<const uint64_t*>(bits.const_data_ptr<int64_t>()), pair_indptr.const_data_ptr<int64_t>(),
        pair_index.mutable_data_ptr<int64_t>(), pair_perm.mutable_data_ptr<int64_t>(),
        cursor.mutable_data_ptr<int64_t>());
    cuda::check_launch("flow_pairs");
  }
  return {pair_indptr, pair_index, pair_perm};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("flow_pairs", TORCH_BOX(&fgp::flow_pairs_cuda)); }
