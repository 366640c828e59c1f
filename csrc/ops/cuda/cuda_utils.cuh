// Launch helpers shared by the CUDA kernels. Only c10/cuda headers (not ATen/cuda/CUDAContext.h),
// so the files also compile against a CPU-only torch's headers in CI.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace fgp::cuda {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t work, int threads = kThreads) {
  return std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 65535LL * 32));
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Grid-stride loop over [0, n).
#define FGP_CUDA_KERNEL_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

}  // namespace fgp::cuda
