// gather_segment_sum(x[M, ...], index[E], indptr[N+1], weight[E]?) -> out[N, ...]
//   out[i] = sum_{e = indptr[i]}^{indptr[i+1]-1} weight[e] * x[index[e]]
// The message-passing step (a CSR sparse-dense product). Each output row is owned by one worker
// and summed in edge order, so results are bitwise reproducible without atomics.
#pragma once

#include "ops/common.h"

namespace fgp {

// acc + w * x: the per-edge update, written once so that CPU and CUDA round identically (the CUDA
// build disables FMA contraction, see CMakeLists.txt / scripts/check_cuda_compile.sh).
template <typename T>
FGP_HOST_DEVICE inline T weighted_accumulate(T acc, T w, T x) {
  return acc + w * x;
}

// One output element (row i, column f), used per element by the CUDA kernel; the CPU kernel walks
// the same edges in the same order with the column loop innermost.
template <typename T>
FGP_HOST_DEVICE inline T gather_row_column(const T* x, const int64_t* index, const T* weight,
                                           int64_t start, int64_t end, int64_t F, int64_t f) {
  T acc = T(0);
  for (int64_t e = start; e < end; ++e)
    acc = weighted_accumulate(acc, weight ? weight[e] : T(1), x[index[e] * F + f]);
  return acc;
}

Tensor gather_segment_sum_cpu(const Tensor& x, const Tensor& index, const Tensor& indptr,
                              const std::optional<Tensor>& weight);
Tensor gather_segment_sum_cuda(const Tensor& x, const Tensor& index, const Tensor& indptr,
                               const std::optional<Tensor>& weight);

// Validation shared by both devices (shapes, dtypes, devices); row-pointer monotonicity and index
// range are checked by the kernels (CPU) or check_csr_device (CUDA).
inline void check_gather_args(const Tensor& x, const Tensor& index, const Tensor& indptr,
                              const std::optional<Tensor>& weight) {
  check_float(x, "x");
  FGP_CHECK(x.dim() >= 1, "x must have at least one dimension (the gathered one)");
  check_index_vector(index, "index");
  check_same_device(x, "x", index, "index");
  check_same_device(x, "x", indptr, "indptr");
  check_indptr_ends(indptr, index.numel(), "indptr");
  if (weight.has_value()) {
    const auto& w = *weight;
    FGP_CHECK(w.scalar_type() == x.scalar_type(), "weight must have the dtype of x (", dtype_name(x.scalar_type()),
              "), got ", dtype_name(w.scalar_type()));
    FGP_CHECK(w.dim() == 1 && w.numel() == index.numel(), "weight must have shape [E] = [", index.numel(), "], got ",
              sizes_str(w));
    check_same_device(x, "x", w, "weight");
  }
}

}  // namespace fgp
