// Shared helpers for every fgp op: host/device qualifiers and argument checks.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define FGP_HOST_DEVICE __host__ __device__
#else
#define FGP_HOST_DEVICE
#endif

// Runtime ISA dispatch for the CPU inner loops (GCC ifunc): one clone per vector width, chosen at
// load time, so a portable wheel still uses AVX2/AVX-512 where present. Floating-point contraction
// is off (-ffp-contract=off), so every clone, and the CUDA build (--fmad=false), rounds alike.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__CUDACC__)
#define FGP_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FGP_CPU_CLONES
#endif

namespace fgp {

// Output columns kept in registers while a row's entries are summed (one AVX-512 float vector).
constexpr int64_t kColumnTile = 16;

// The ISA-dispatched row loops report the first row whose pointers are invalid (-1: none) and the
// caller raises: an exception thrown inside a target_clones function aborts instead of unwinding.
inline void raise_bad_row(int64_t bad_row, const int64_t* ptr) {
  TORCH_CHECK(bad_row < 0, "indptr must be non-decreasing (and end at the number of entries); indptr[", bad_row,
              "]=", ptr[bad_row < 0 ? 0 : bad_row], " > indptr[", bad_row + 1, "]=", ptr[bad_row < 0 ? 0 : bad_row + 1]);
}

// Rows per parallel task for the CSR row kernels: about 32k multiply-adds per task, so small
// batches run inline instead of paying for waking threads.
inline int64_t csr_row_grain(int64_t num_entries, int64_t num_rows, int64_t width) {
  const int64_t cost_per_row = std::max<int64_t>(1, (num_entries / std::max<int64_t>(num_rows, 1) + 1) * width);
  return std::max<int64_t>(1, 32768 / cost_per_row);
}

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

// Every index lies in [0, num_cols): one vectorised min/max pass, done before the kernels so their
// inner loops stay free of checks.
inline void check_index_range(const at::Tensor& index, int64_t num_cols, const char* name) {
  if (index.numel() == 0) return;
  const auto [mn, mx] = at::aminmax(index);
  const auto lo = mn.item<int64_t>(), hi = mx.item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < num_cols, name, " out of range: values must lie in [0, ", num_cols,
              "), found min ", lo, " max ", hi);
}

// Whole-tensor validation with ATen reductions, for devices whose kernels cannot raise errors
// inline (CUDA). One host synchronisation per check.
inline void check_csr_device(const at::Tensor& indptr, const at::Tensor& index, int64_t num_cols,
                             const char* indptr_name, const char* index_name) {
  check_indptr_full(indptr, index.numel(), indptr_name);
  check_index_range(index, num_cols, index_name);
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
