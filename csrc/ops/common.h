// Shared helpers for every fgp op: host/device qualifiers and argument checks.
#pragma once

#include "ops/stable.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
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

// For per-graph / per-row functions shared with CUDA that the CPU calls from inside an ISA-cloned
// loop: forced inline, so each clone (avx512f, avx2, default) compiles them for its own ISA. Left
// to itself, GCC may keep one out-of-line baseline copy and call it from every clone (measured:
// flow_surrogate's per-graph schedule 7% slower).
#if defined(__CUDACC__)
#define FGP_INLINE_IN_CLONES __forceinline__
#elif defined(__GNUC__)
#define FGP_INLINE_IN_CLONES inline __attribute__((always_inline))
#else
#define FGP_INLINE_IN_CLONES inline
#endif

namespace fgp {

// Output columns kept in registers while a row's entries are summed (one AVX-512 float vector).
constexpr int64_t kColumnTile = 16;

// The ISA-dispatched row loops report the first row whose pointers are invalid (-1: none); the
// parallel loop records it (FirstFailure) and the caller raises after the loop: an exception
// thrown inside a target_clones function aborts, and one thrown inside a parallel_for body would
// cross the stable C shim.
inline void raise_bad_row(int64_t bad_row, const int64_t* ptr) {
  FGP_CHECK(bad_row < 0, "indptr must be non-decreasing (and end at the number of entries); indptr[", bad_row,
            "]=", ptr[bad_row < 0 ? 0 : bad_row], " > indptr[", bad_row + 1, "]=", ptr[bad_row < 0 ? 0 : bad_row + 1]);
}

// Rows per parallel task for the CSR row kernels: about 32k multiply-adds per task, so small
// batches run inline instead of paying for waking threads.
inline int64_t csr_row_grain(int64_t num_entries, int64_t num_rows, int64_t width) {
  const int64_t cost_per_row = std::max<int64_t>(1, (num_entries / std::max<int64_t>(num_rows, 1) + 1) * width);
  return std::max<int64_t>(1, 32768 / cost_per_row);
}

inline void check_index_vector(const Tensor& t, const char* name) {
  FGP_CHECK(t.scalar_type() == kLong, name, " must be int64, got ", dtype_name(t.scalar_type()));
  FGP_CHECK(t.dim() == 1, name, " must be 1-D, got shape ", sizes_str(t));
}

inline void check_float(const Tensor& t, const char* name) {
  FGP_CHECK(t.scalar_type() == kFloat || t.scalar_type() == kDouble, name, " must be float32 or float64, got ",
            dtype_name(t.scalar_type()));
}

inline void check_same_device(const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  FGP_CHECK(same_device(a, b), an, " and ", bn, " must be on the same device, got ", device_str(a), " and ",
            device_str(b));
}

// CSR row pointers: 1-D int64 of length rows+1, starting at 0 and ending at num_entries. The
// per-row monotonicity is checked where the rows are read (CPU kernels) or by check_csr_device.
inline void check_indptr_ends(const Tensor& indptr, int64_t num_entries, const char* name) {
  check_index_vector(indptr, name);
  FGP_CHECK(indptr.numel() >= 1, name, " must hold at least one element (rows + 1), got 0");
  const int64_t first = read<int64_t>(indptr, 0);
  const int64_t last = read<int64_t>(indptr, -1);
  FGP_CHECK(first == 0, name, "[0] must be 0, got ", first);
  FGP_CHECK(last == num_entries, name, "[-1] must equal the number of entries (", num_entries, "), got ", last);
}

// Full row-pointer validation (ends and monotonicity) with one vectorised pass: for ops whose
// parallel tasks read rows they do not own before any of them could detect a decrease.
inline void check_indptr_full(const Tensor& indptr, int64_t num_entries, const char* name) {
  check_indptr_ends(indptr, num_entries, name);
  if (indptr.numel() > 1) {
    bool ok = true;
    if (indptr.is_cpu()) {
      const Tensor c = contiguous(indptr);
      const int64_t* p = c.const_data_ptr<int64_t>();
      const int64_t n = c.numel();
      int64_t decreases = 0;  // a branch-free reduction, which GCC vectorises
      for (int64_t i = 0; i + 1 < n; ++i) decreases |= static_cast<int64_t>(p[i] > p[i + 1]);
      ok = decreases == 0;
    } else {
      ok = item<int64_t>(aten::min_all(aten::diff(indptr))) >= 0;
    }
    FGP_CHECK(ok, name, " must be non-decreasing");
  }
}

// Every index lies in [0, num_cols): one vectorised min/max pass, done before the kernels so their
// inner loops stay free of checks.
inline void check_index_range(const Tensor& index, int64_t num_cols, const char* name) {
  if (index.numel() == 0) return;
  const auto [mn, mx] = aten::aminmax(index);
  const int64_t lo = item<int64_t>(mn), hi = item<int64_t>(mx);
  FGP_CHECK(lo >= 0 && hi < num_cols, name, " out of range: values must lie in [0, ", num_cols, "), found min ", lo,
            " max ", hi);
}

// Whole-tensor validation for devices whose kernels cannot raise errors inline (CUDA). One host
// synchronisation per check.
inline void check_csr_device(const Tensor& indptr, const Tensor& index, int64_t num_cols, const char* indptr_name,
                             const char* index_name) {
  check_indptr_full(indptr, index.numel(), indptr_name);
  check_index_range(index, num_cols, index_name);
}

// Outputs and scratch whose size follows from index VALUES (num_cols, levels, pair counts) rather
// than from the input sizes are refused above a limit, before anything is allocated: a bad value
// must give an error, not a multi-GB allocation that the kernel then kills the process filling.
// FGP_MAX_OUTPUT_BYTES (read at every check, so os.environ changes apply at once) sets the limit;
// default 8 GiB.
constexpr int64_t kDefaultMaxOutputBytes = int64_t{8} << 30;

inline int64_t max_output_bytes() {
  const char* env = std::getenv("FGP_MAX_OUTPUT_BYTES");
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long long value = std::strtoll(env, &end, 10);
    FGP_CHECK(*end == '\0' && value > 0, "FGP_MAX_OUTPUT_BYTES must be a positive integer (bytes), got '", env, "'");
    return static_cast<int64_t>(value);
  }
  return kDefaultMaxOutputBytes;
}

// `count` elements of `element_bytes` each, for `what` (e.g. "csr_transpose: num_cols + 1 row pointers").
inline void check_output_size(int64_t count, int64_t element_bytes, const char* what) {
  const int64_t limit = max_output_bytes();
  FGP_CHECK(count >= 0 && count <= limit / element_bytes, what, " would need ", count, " elements of ", element_bytes,
            " bytes (", static_cast<double>(count) * static_cast<double>(element_bytes) / double(1 << 30),
            " GiB), above the limit of ", limit, " bytes; set the environment variable FGP_MAX_OUTPUT_BYTES to allow more");
}

// Flatten everything after dim 0 into one feature dimension: ops see [rows, F].
inline Tensor as_rows(const Tensor& t) {
  int64_t width = 1;
  for (int64_t d = 1; d < t.dim(); ++d) width *= t.size(d);
  return reshape(t, {t.size(0), width});  // explicit width: -1 is ambiguous with 0 rows
}

inline std::vector<int64_t> with_rows(const Tensor& like, int64_t rows) {
  std::vector<int64_t> sizes(like.dim());
  for (int64_t d = 0; d < like.dim(); ++d) sizes[d] = like.size(d);
  sizes[0] = rows;
  return sizes;
}

}  // namespace fgp
