// segment_sum_csr(src[E, ...], indptr[N+1]) -> out[N, ...]
// out[i] = sum of src rows indptr[i] .. indptr[i+1]-1, added in row order (deterministic: no
// atomics, the same order on every device and thread count).
#pragma once

#include "ops/common.h"

namespace fgp {

// One output element: the sum of column f over the segment's rows, in order. The CPU kernel runs
// this order row-major for vectorisation; the CUDA kernel calls it per element.
template <typename T>
FGP_HOST_DEVICE inline T segment_column_sum(const T* src, int64_t start, int64_t end, int64_t F, int64_t f) {
  T acc = T(0);
  for (int64_t e = start; e < end; ++e) acc += src[e * F + f];
  return acc;
}

Tensor segment_sum_csr_cpu(const Tensor& src, const Tensor& indptr);
Tensor segment_sum_csr_cuda(const Tensor& src, const Tensor& indptr);

}  // namespace fgp
