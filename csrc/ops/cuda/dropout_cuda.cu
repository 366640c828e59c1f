#include "ops/dropout.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

template <typename T>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, uint64_t seed, uint32_t threshold, T scale) {
  FGP_CUDA_KERNEL_LOOP(i, n) { out[i] = dropout_element(x[i], seed, i, threshold, scale); }
}

}  // namespace

Tensor dropout_cuda(const Tensor& x_in, double p, int64_t seed) {
  check_dropout_args(x_in, p);
  const auto guard = cuda::guard_for(x_in);
  const auto x = contiguous(x_in);
  auto out = torch::stable::empty_like(x);
  const int64_t n = x.numel();
  if (n > 0) {
    FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout", [&] {
      const auto scale = p < 1.0 ? static_cast<scalar_t>(1.0 / (1.0 - p)) : scalar_t(0);
      dropout_kernel<scalar_t><<<cuda::blocks_for(n), cuda::kThreads, 0, cuda::stream()>>>(
          x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, dropout_key(seed), dropout_threshold(p),
          scale);
      cuda::check_launch("dropout");
    });
  }
  return out;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("dropout", TORCH_BOX(&fgp::dropout_cuda)); }
