// edge_dot(a[N, F], b[M, F], index[E], indptr[N+1]) -> out[E]
//   out[e] = <a[row(e)], b[index[e]]>, row(e) the CSR row holding edge e
// The gradient of gather_segment_sum with respect to its edge weights (a sampled dense-dense
// product); also the score of dot-product attention on edges.
#pragma once

#include "ops/common.h"

namespace fgp {

// A dot product with 8 fixed partial sums combined in a fixed tree: vectorisable on the CPU
// without reassociation, and the same rounding on every device and thread count.
constexpr int64_t kDotLanes = 8;

template <typename T>
FGP_HOST_DEVICE inline T row_dot(const T* a, const T* b, int64_t F) {
  T lane[kDotLanes] = {};
  int64_t f = 0;
  for (; f + kDotLanes <= F; f += kDotLanes)
    for (int64_t t = 0; t < kDotLanes; ++t) lane[t] += a[f + t] * b[f + t];
  for (int64_t t = 0; f + t < F; ++t) lane[t] += a[f + t] * b[f + t];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

inline void check_edge_dot_args(const Tensor& a, const Tensor& b, const Tensor& index, const Tensor& indptr) {
  check_float(a, "a");
  FGP_CHECK(b.scalar_type() == a.scalar_type(), "a and b must share a dtype, got ", dtype_name(a.scalar_type()),
            " and ", dtype_name(b.scalar_type()));
  FGP_CHECK(a.dim() >= 1 && b.dim() >= 1, "a and b need a row dimension");
  check_index_vector(index, "index");
  check_same_device(a, "a", b, "b");
  check_same_device(a, "a", index, "index");
  check_same_device(a, "a", indptr, "indptr");
  check_indptr_ends(indptr, index.numel(), "indptr");
  FGP_CHECK(a.size(0) == indptr.numel() - 1, "a must have one row per CSR row (", indptr.numel() - 1, "), got ",
            a.size(0));
  FGP_CHECK(as_rows(a).size(1) == as_rows(b).size(1), "a and b must have the same row width, got shapes ",
            sizes_str(a), " and ", sizes_str(b));
}

Tensor edge_dot_cpu(const Tensor& a, const Tensor& b, const Tensor& index, const Tensor& indptr);
Tensor edge_dot_cuda(const Tensor& a, const Tensor& b, const Tensor& index, const Tensor& indptr);

}  // namespace fgp
