#include "ops/segment_sum_csr.h"

#include <ATen/Parallel.h>

namespace fgp {

at::Tensor segment_sum_csr_cpu(const at::Tensor& src_in, const at::Tensor& indptr_in) {
  check_float(src_in, "src");
  TORCH_CHECK(src_in.dim() >= 1, "src must have at least one dimension (the segmented one)");
  check_indptr_ends(indptr_in, src_in.size(0), "indptr");
  const auto src = as_rows(src_in).contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, E = src.size(0), F = src.size(1);
  auto out = at::zeros({N, F}, src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "segment_sum_csr_cpu", [&] {
    const auto* ptr = indptr.data_ptr<int64_t>();
    const auto* s = src.data_ptr<scalar_t>();
    auto* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t a = ptr[i], b = ptr[i + 1];
        TORCH_CHECK(0 <= a && a <= b && b <= E, "indptr must be non-decreasing; indptr[", i, "]=", a,
                    " > indptr[", i + 1, "]=", b);
        scalar_t* row = o + i * F;
        // Row-major order of segment_column_sum: each column still sums its rows in order.
        for (int64_t e = a; e < b; ++e) {
          const scalar_t* x = s + e * F;
          for (int64_t f = 0; f < F; ++f) row[f] += x[f];
        }
      }
    });
  });
  return out.reshape(with_rows(src_in, N));
}

}  // namespace fgp
