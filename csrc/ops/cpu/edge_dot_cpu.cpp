#include "ops/edge_dot.h"

#include <ATen/Parallel.h>

namespace fgp {
namespace {

template <typename T>
FGP_CPU_CLONES int64_t edge_dot_rows(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                  const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                                  int64_t begin, int64_t end, int64_t F, int64_t E) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t s = ptr[i], t = ptr[i + 1];
    if (!(0 <= s && s <= t && t <= E)) return i;  // caller raises
    for (int64_t e = s; e < t; ++e) out[e] = row_dot(a + i * F, b + idx[e] * F, F);
  }
  return -1;
}

}  // namespace

at::Tensor edge_dot_cpu(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& index_in,
                        const at::Tensor& indptr_in) {
  check_edge_dot_args(a_in, b_in, index_in, indptr_in);
  check_index_range(index_in, b_in.size(0), "index");
  const auto a = as_rows(a_in).contiguous();
  const auto b = as_rows(b_in).contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = a.size(0), E = index.numel(), F = a.size(1);
  auto out = at::empty({E}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_dot_cpu", [&] {
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* as = a.data_ptr<scalar_t>();
    const scalar_t* bs = b.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t grain = csr_row_grain(E, N, F);
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      raise_bad_row(edge_dot_rows(ptr, idx, as, bs, o, begin, end, F, E), ptr);
    });
  });
  return out;
}

}  // namespace fgp
