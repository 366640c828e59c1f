// csr_transpose(index[E], indptr[N+1], num_cols) -> (t_indptr[num_cols+1], t_index[E], t_perm[E])
// The transposed CSR: column c's entries are t_index[t_indptr[c] .. t_indptr[c+1]-1] (row ids),
// and t_perm maps each transposed entry back to its original edge id. Entries of a column keep
// their original edge order (stable), so sums over the transpose are deterministic too.
// Computed once per batch (ArchBatch) and reused by every backward pass of gather_segment_sum.
#pragma once

#include "ops/common.h"

#include <tuple>

namespace fgp {

using CsrTriple = std::tuple<Tensor, Tensor, Tensor>;

CsrTriple csr_transpose_cpu(const Tensor& index, const Tensor& indptr, int64_t num_cols);
CsrTriple csr_transpose_cuda(const Tensor& index, const Tensor& indptr, int64_t num_cols);

inline void check_csr_transpose_args(const Tensor& index, const Tensor& indptr, int64_t num_cols) {
  check_index_vector(index, "index");
  check_same_device(index, "index", indptr, "indptr");
  FGP_CHECK(num_cols >= 0, "num_cols must be non-negative, got ", num_cols);
  check_output_size(num_cols + 1, sizeof(int64_t), "csr_transpose: num_cols + 1 row pointers");
  check_indptr_ends(indptr, index.numel(), "indptr");
}

}  // namespace fgp
