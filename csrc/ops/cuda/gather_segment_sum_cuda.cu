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

at::Tensor gather_segment_sum_cuda(const at::Tensor& x_in, const at::Tensor& index_in, const at::Tensor& indptr_in,
                                   const std::optional<at::Tensor>& weight_in) {
  check_gather_args(x_in, index_in, indptr_in, weight_in);
  check_csr_device(indptr_in, index_in, x_in.size(0), "indptr", "index");
  c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = as_rows(x_in).contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  at::Tensor weight;
  if (weight_in.has_value()) weight = weight_in->contiguous();
  const int64_t N = indptr.numel() - 1, F = x.size(1);
  auto out = at::empty({N, F}, x.options());
  if (N * F > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_segment_sum_cuda", [&] {
      gather_segment_sum_kernel<scalar_t><<<cuda::blocks_for(N * F), cuda::kThreads, 0, cuda::stream()>>>(
          x.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), indptr.data_ptr<int64_t>(),
          weight.defined() ? weight.data_ptr<scalar_t>() : nullptr, N, F, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out.reshape(with_rows(x_in, N));
}

}  // namespace fgp
