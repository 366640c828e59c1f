#include "ops/edge_dot.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per edge; its row is found by binary search in indptr (rows are sorted).
__device__ inline int64_t row_of_entry(const int64_t* indptr, int64_t N, int64_t e) {
  int64_t lo = 0, hi = N;  // find the last row with indptr[row] <= e
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (indptr[mid] <= e) lo = mid; else hi = mid;
  }
  return lo;
}

template <typename T>
__global__ void edge_dot_kernel(const T* a, const T* b, const int64_t* index, const int64_t* indptr, int64_t N,
                                int64_t E, int64_t F, T* out) {
  FGP_CUDA_KERNEL_LOOP(e, E) {
    const int64_t i = row_of_entry(indptr, N, e);
    out[e] = row_dot(a + i * F, b + index[e] * F, F);
  }
}

}  // namespace

at::Tensor edge_dot_cuda(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& index_in,
                         const at::Tensor& indptr_in) {
  check_edge_dot_args(a_in, b_in, index_in, indptr_in);
  check_csr_device(indptr_in, index_in, b_in.size(0), "indptr", "index");
  c10::cuda::CUDAGuard guard(a_in.device());
  const auto a = as_rows(a_in).contiguous();
  const auto b = as_rows(b_in).contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = a.size(0), E = index.numel(), F = a.size(1);
  auto out = at::empty({E}, a.options());
  if (E > 0) {
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_dot_cuda", [&] {
      edge_dot_kernel<scalar_t><<<cuda::blocks_for(E), cuda::kThreads, 0, cuda::stream()>>>(
          a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), indptr.data_ptr<int64_t>(), N, E,
          F, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out;
}

}  // namespace fgp
