#include "ops/gather_segment_sum.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per output element (row, column): consecutive threads read consecutive columns of the
// same gathered rows (coalesced), and each output is summed in edge order: no atomics.
template <typename T>
__global__ void gather_segment_sum_kernel(const T* x, const int64_t* index, const int64_t* indptr, const T* weight,
                                          int64_t N, int64_t F, T* out) {
  FGP_CUDA_KERNEL_LOOP(t, N * F) {
    const int64_t i = t / F, f = t % F;
    out[t] = gather_row_column(x, index, weight, indptr[i], indptr[i + 1], F, f);
  }
}

}  // namespace

Tensor gather_segment_sum_cuda(const Tensor& x_in, const Tensor& index_in, const Tensor& indptr_in,
                               const std::optional<Tensor>& weight_in) {
  check_gather_args(x_in, index_in, indptr_in, weight_in);
  check_csr_device(indptr_in, index_in, x_in.size(0), "indptr", "index");
  const auto guard = cuda::guard_for(x_in);
  const auto x = contiguous(as_rows(x_in));
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  std::optional<Tensor> weight;
  if (weight_in.has_value()) weight = contiguous(*weight_in);
  const int64_t N = indptr.numel() - 1, F = x.size(1);
  auto out = empty_like_shape(x, {N, F});
  if (N * F > 0) {
    FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_segment_sum", [&] {
      gather_segment_sum_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          x.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(), indptr.const_data_ptr<int64_t>(),
          weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr, N, F, out.mutable_data_ptr<scalar_t>());
      cuda::check_launch("gather_segment_sum");
    });
  }
  return reshape(out, with_rows(x_in, N));
}

namespace {

// The transposed-CSR arguments only matter to autograd; the forward kernel ignores them.
Tensor gather_segment_sum_cuda_op(const Tensor& x, const Tensor& index, const Tensor& indptr,
                                  const std::optional<Tensor>& weight, const std::optional<Tensor>&,
                                  const std::optional<Tensor>&, const std::optional<Tensor>&) {
  return gather_segment_sum_cuda(x, index, indptr, weight);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("gather_segment_sum", TORCH_BOX(&fgp::gather_segment_sum_cuda_op)); }
