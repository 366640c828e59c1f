// Shared helpers for every fgp op: host/device qualifiers and argument checks.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define FGP_HOST_DEVICE __host__ __device__
#else
#define FGP_HOST_DEVICE
#endif

namespace fgp {

// Rows per parallel task: small segments are cheap, so hand each thread a few thousand of them.
constexpr int64_t kRowGrain = 256;

inline void check_index_vector(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1, name, " must be 1-D, got shape ", t.sizes());
}

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              name, " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.device() == b.device(), an, " and ", bn, " must be on the same device, got ",
              a.device(), " and ", b.device());
}

// CSR row pointers: 1-D int64 of length rows+1, starting at 0 and ending at num_entries. The
// per-row monotonicity is checked where the rows are read (CPU kernels) or by check_csr_device.
inline void check_indptr_ends(const at::Tensor& indptr, int64_t num_entries, const char* name) {
  check_index_vector(indptr, name);
  TORCH_CHECK(indptr.numel() >= 1, name, " must hold at least one element (rows + 1), got 0");
  const int64_t first = indptr[0].item<int64_t>();
  const int64_t last = indptr[-1].item<int64_t>();
  TORCH_CHECK(first == 0, name, "[0] must be 0, got ", first);
  TORCH_CHECK(last == num_entries, name, "[-1] must equal the number of entries (", num_entries,
              "), got ", last);
}

// Full row-pointer validation (ends and monotonicity) with one ATen pass: for ops whose parallel
// tasks read rows they do not own before any of them could detect a decrease.
inline void check_indptr_full(const at::Tensor& indptr, int64_t num_entries, const char* name) {
  check_indptr_ends(indptr, num_entries, name);
  if (indptr.numel() > 1) {
    TORCH_CHECK((indptr.diff() >= 0).all().item<bool>(), name, " must be non-decreasing");
  }
}

// Whole-tensor validation with ATen reductions, for devices whose kernels cannot raise errors
// inline (CUDA). One host synchronisation per check.
inline void check_csr_device(const at::Tensor& indptr, const at::Tensor& index, int64_t num_cols,
                             const char* indptr_name, const char* index_name) {
  check_indptr_full(indptr, index.numel(), indptr_name);
  if (index.numel() > 0) {
    const auto mn = index.min().item<int64_t>();
    const auto mx = index.max().item<int64_t>();
    TORCH_CHECK(mn >= 0 && mx < num_cols, index_name, " out of range: values must lie in [0, ",
                num_cols, "), found min ", mn, " max ", mx);
  }
}

// Flatten everything after dim 0 into one feature dimension: ops see [rows, F].
inline at::Tensor as_rows(const at::Tensor& t) {
  int64_t width = 1;
  for (int64_t d = 1; d < t.dim(); ++d) width *= t.size(d);
  return t.reshape({t.size(0), width});  // explicit width: -1 is ambiguous when there are 0 rows
}

inline std::vector<int64_t> with_rows(const at::Tensor& like, int64_t rows) {
  auto sizes = like.sizes().vec();
  sizes[0] = rows;
  return sizes;
}

}  // namespace fgp
