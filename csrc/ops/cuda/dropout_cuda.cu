#include "ops/dropout.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

template <typename T>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, uint64_t seed, uint32_t threshold, T scale) {
  FGP_CUDA_KERNEL_LOOP(i, n) { out[i] = dropout_element(x[i], seed, i, threshold, scale); }
}

}  // namespace

at::Tensor dropout_cuda(const at::Tensor& x_in, double p, int64_t seed) {
  check_dropout_args(x_in, p);
  c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  auto out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout_cuda", [&] {
      const auto scale = p < 1.0 ? static_cast<scalar_t>(1.0 / (1.0 - p)) : scalar_t(0);
      dropout_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, cuda::stream()>>>(
          x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, dropout_key(seed), dropout_threshold(p),
          scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out;
}

}  // namespace fgp
