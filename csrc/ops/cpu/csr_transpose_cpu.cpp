#include "ops/csr_transpose.h"

namespace fgp {

// A stable counting sort by column: O(E + N + num_cols), one pass to count, one to place.
CsrTriple csr_transpose_cpu(const Tensor& index_in, const Tensor& indptr_in, int64_t num_cols) {
  check_csr_transpose_args(index_in, indptr_in, num_cols);
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  const int64_t N = indptr.numel() - 1, E = index.numel();
  auto t_indptr = zeros_tensor({num_cols + 1}, kLong, index.device());
  auto t_index = empty_tensor({E}, kLong, index.device());
  auto t_perm = empty_tensor({E}, kLong, index.device());
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  int64_t* tp = t_indptr.mutable_data_ptr<int64_t>();
  int64_t* ti = t_index.mutable_data_ptr<int64_t>();
  int64_t* tperm = t_perm.mutable_data_ptr<int64_t>();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t c = idx[e];
    FGP_CHECK(c >= 0 && c < num_cols, "index out of range: index[", e, "]=", c, " but num_cols is ", num_cols);
    ++tp[c + 1];
  }
  for (int64_t c = 0; c < num_cols; ++c) tp[c + 1] += tp[c];
  std::vector<int64_t> cursor(tp, tp + num_cols);
  for (int64_t i = 0; i < N; ++i) {
    FGP_CHECK(ptr[i] <= ptr[i + 1] && ptr[i + 1] <= E, "indptr must be non-decreasing; indptr[", i, "]=", ptr[i],
              " > indptr[", i + 1, "]=", ptr[i + 1]);
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      const int64_t slot = cursor[idx[e]]++;
      ti[slot] = i;
      tperm[slot] = e;
    }
  }
  return {t_indptr, t_index, t_perm};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("csr_transpose", TORCH_BOX(&fgp::csr_transpose_cpu)); }
