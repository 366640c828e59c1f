#include "ops/edge_dot.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per edge; its row is found by binary search in indptr (rows are sorted).
__device__ inline int64_t row_of_entry(const int64_t* indptr, int64_t N, int64_t e) {
  int64_t lo = 0, hi = N;  // find the last row with indptr[row] <= e
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (indptr[mid] <= e) lo = mid; else hi = mid;
  }
  return lo;
}

template <typename T>
__global__ void edge_dot_kernel(const T* a, const T* b, const int64_t* index, const int64_t* indptr, int64_t N,
                                int64_t E, int64_t F, T* out) {
  FGP_CUDA_KERNEL_LOOP(e, E) {
    const int64_t i = row_of_entry(indptr, N, e);
    out[e] = row_dot(a + i * F, b + index[e] * F, F);
  }
}

}  // namespace

Tensor edge_dot_cuda(const Tensor& a_in, const Tensor& b_in, const Tensor& index_in, const Tensor& indptr_in) {
  check_edge_dot_args(a_in, b_in, index_in, indptr_in);
  check_csr_device(indptr_in, index_in, b_in.size(0), "indptr", "index");
  const auto guard = cuda::guard_for(a_in);
  const auto a = contiguous(as_rows(a_in));
  const auto b = contiguous(as_rows(b_in));
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  const int64_t N = a.size(0), E = index.numel(), F = a.size(1);
  auto out = empty_like_shape(a, {E});
  if (E > 0) {
    FGP_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_dot", [&] {
      edge_dot_kernel<scalar_t><<<cuda::blocks_for(E), cuda::kThreads, 0, cuda::stream()>>>(
          a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
          indptr.const_data_ptr<int64_t>(), N, E, F, out.mutable_data_ptr<scalar_t>());
      cuda::check_launch("edge_dot");
    });
  }
  return out;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("edge_dot", TORCH_BOX(&fgp::edge_dot_cuda)); }
