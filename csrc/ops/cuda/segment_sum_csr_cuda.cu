#include "ops/segment_sum_csr.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per output element; each sums its column over the segment in row order.
template <typename T>
__global__ void segment_sum_kernel(const T* src, const int64_t* indptr, int64_t N, int64_t F, T* out) {
  FGP_CUDA_KERNEL_LOOP(t, N * F) {
    const int64_t i = t / F, f = t % F;
    out[t] = segment_column_sum(src, indptr[i], indptr[i + 1], F, f);
  }
}

}  // namespace

Tensor segment_sum_csr_cuda(const Tensor& src_in, const Tensor& indptr_in) {
  check_float(src_in, "src");
  FGP_CHECK(src_in.dim() >= 1, "src must have at least one dimension (the segmented one)");
  check_same_device(src_in, "src", indptr_in, "indptr");
  check_indptr_full(indptr_in, src_in.size(0), "indptr");
  const auto guard = cuda::guard_for(src_in);
  const auto src = contiguous(as_rows(src_in));
  const auto indptr = contiguous(indptr_in);
  const int64_t N = indptr.numel() - 1, F = src.size(1);
  auto out = empty_like_shape(src, {N, F});
  if (N * F > 0) {
    FGP_DISPATCH_FLOATING_TYPES(src.scalar_type(), "segment_sum_csr", [&] {
      segment_sum_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          src.const_data_ptr<scalar_t>(), indptr.const_data_ptr<int64_t>(), N, F, out.mutable_data_ptr<scalar_t>());
      cuda::check_launch("segment_sum_csr");
    });
  }
  return reshape(out, with_rows(src_in, N));
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("segment_sum_csr", TORCH_BOX(&fgp::segment_sum_csr_cuda)); }
