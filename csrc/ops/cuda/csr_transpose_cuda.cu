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

// A stable sort of the entries by column (device radix sort through ATen, deterministic), then the
// column pointers from a histogram. Run once per batch, so a sort is an acceptable cost.
CsrTriple csr_transpose_cuda(const at::Tensor& index_in, const at::Tensor& indptr_in, int64_t num_cols) {
  check_csr_transpose_args(index_in, indptr_in, num_cols);
  check_csr_device(indptr_in, index_in, num_cols, "indptr", "index");
  c10::cuda::CUDAGuard guard(index_in.device());
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, E = index.numel();
  auto rows = at::empty({E}, index.options());
  if (N > 0 && E > 0) {
    expand_rows_kernel<<<cuda::blocks_for(N), cuda::kThreads, 0, cuda::stream()>>>(indptr.data_ptr<int64_t>(), N,
                                                                                     rows.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const auto perm = std::get<1>(index.sort(/*stable=*/true));
  auto t_indptr = at::zeros({num_cols + 1}, index.options());
  if (E > 0) t_indptr.narrow(0, 1, num_cols).copy_(at::bincount(index, {}, num_cols).cumsum(0));
  return {t_indptr, rows.index_select(0, perm), perm};
}

}  // namespace fgp
