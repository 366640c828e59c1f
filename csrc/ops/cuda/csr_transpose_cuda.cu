#include "ops/csr_transpose.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// Row id of every entry, one thread per row.
__global__ void expand_rows_kernel(const int64_t* indptr, int64_t N, int64_t* rows) {
  FGP_CUDA_KERNEL_LOOP(i, N) {
    for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) rows[e] = i;
  }
}

}  // namespace

// A stable sort of the entries by column (device radix sort through the dispatcher, deterministic),
// then the column pointers from a histogram. Run once per batch, so a sort is an acceptable cost.
CsrTriple csr_transpose_cuda(const Tensor& index_in, const Tensor& indptr_in, int64_t num_cols) {
  check_csr_transpose_args(index_in, indptr_in, num_cols);
  check_csr_device(indptr_in, index_in, num_cols, "indptr", "index");
  const auto guard = cuda::guard_for(index_in);
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  const int64_t N = indptr.numel() - 1, E = index.numel();
  auto rows = empty_tensor({E}, kLong, index.device());
  if (N > 0 && E > 0) {
    expand_rows_kernel<<<cuda::blocks_for(N), cuda::kThreads, 0, cuda::stream()>>>(indptr.const_data_ptr<int64_t>(), N,
                                                                                     rows.mutable_data_ptr<int64_t>());
    cuda::check_launch("csr_transpose");
  }
  const auto perm = aten::sort_stable(index).second;
  auto t_indptr = zeros_tensor({num_cols + 1}, kLong, index.device());
  if (E > 0) {
    auto tail = torch::stable::narrow(t_indptr, 0, 1, num_cols);
    torch::stable::copy_(tail, aten::cumsum(aten::bincount(index, num_cols)));
  }
  return {t_indptr, aten::index_select(rows, 0, perm), perm};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("csr_transpose", TORCH_BOX(&fgp::csr_transpose_cuda)); }
