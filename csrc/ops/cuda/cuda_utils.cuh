// Launch helpers shared by the CUDA kernels, on the stable ABI: the device guard is
// torch::stable::accelerator::DeviceGuard and the stream is torch's current CUDA stream from the C
// shim (aoti_torch_get_current_cuda_stream), so the files compile against any torch's headers,
// CPU-only wheels included (CI compiles them with nvcc without a GPU).
#pragma once

#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include <algorithm>
#include <cstdint>

#include "ops/stable.h"

namespace fgp::cuda {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t work, int threads = kThreads) {
  return std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 65535LL * 32));
}

// Makes the tensor's device current for the scope (restored on exit).
using DeviceGuard = torch::stable::accelerator::DeviceGuard;
inline DeviceGuard guard_for(const Tensor& t) { return DeviceGuard(t.get_device_index()); }

// torch's current stream on the current device: kernels queue behind the work torch queued.
inline cudaStream_t stream() {
  void* s = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(
      aoti_torch_get_current_cuda_stream(torch::stable::accelerator::getCurrentDeviceIndex(), &s));
  return static_cast<cudaStream_t>(s);
}

inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  FGP_CHECK(err == cudaSuccess, kernel, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// Grid-stride loop over [0, n).
#define FGP_CUDA_KERNEL_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

}  // namespace fgp::cuda
