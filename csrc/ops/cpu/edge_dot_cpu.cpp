#include "ops/edge_dot.h"

#include <ATen/Parallel.h>

namespace fgp {

at::Tensor edge_dot_cpu(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& index_in,
                        const at::Tensor& indptr_in) {
  check_edge_dot_args(a_in, b_in, index_in, indptr_in);
  const auto a = as_rows(a_in).contiguous();
  const auto b = as_rows(b_in).contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = a.size(0), M = b.size(0), E = index.numel();
  const int64_t F = a.size(1);
  auto out = at::empty({E}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_dot_cpu", [&] {
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* as = a.data_ptr<scalar_t>();
    const scalar_t* bs = b.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t s = ptr[i], t = ptr[i + 1];
        TORCH_CHECK(0 <= s && s <= t && t <= E, "indptr must be non-decreasing; indptr[", i, "]=", s,
                    " > indptr[", i + 1, "]=", t);
        for (int64_t e = s; e < t; ++e) {
          const int64_t j = idx[e];
          TORCH_CHECK(j >= 0 && j < M, "index out of range: index[", e, "]=", j, " but b has ", M, " rows");
          o[e] = row_dot(as + i * F, bs + j * F, F);
        }
      }
    });
  });
  return out;
}

}  // namespace fgp
