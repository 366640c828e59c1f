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

at::Tensor segment_sum_csr_cuda(const at::Tensor& src_in, const at::Tensor& indptr_in) {
  check_float(src_in, "src");
  TORCH_CHECK(src_in.dim() >= 1, "src must have at least one dimension (the segmented one)");
  check_same_device(src_in, "src", indptr_in, "indptr");
  check_indptr_full(indptr_in, src_in.size(0), "indptr");
  c10::cuda::CUDAGuard guard(src_in.device());
  const auto src = as_rows(src_in).contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, F = src.size(1);
  auto out = at::empty({N, F}, src.options());
  if (N * F > 0) {
    AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "segment_sum_csr_cuda", [&] {
      segment_sum_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          src.data_ptr<scalar_t>(), indptr.data_ptr<int64_t>(), N, F, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out.reshape(with_rows(src_in, N));
}

}  // namespace fgp
