#include "ops/gather_segment_sum.h"

#include <ATen/Parallel.h>

namespace fgp {

at::Tensor gather_segment_sum_cpu(const at::Tensor& x_in, const at::Tensor& index_in, const at::Tensor& indptr_in,
                                  const std::optional<at::Tensor>& weight_in) {
  check_gather_args(x_in, index_in, indptr_in, weight_in);
  const auto x = as_rows(x_in).contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, M = x.size(0), F = x.size(1), E = index.numel();
  at::Tensor weight;
  if (weight_in.has_value()) weight = weight_in->contiguous();
  auto out = at::zeros({N, F}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_segment_sum_cpu", [&] {
    const int64_t* __restrict__ ptr = indptr.data_ptr<int64_t>();
    const int64_t* __restrict__ idx = index.data_ptr<int64_t>();
    const scalar_t* __restrict__ xs = x.data_ptr<scalar_t>();
    const scalar_t* __restrict__ w = weight.defined() ? weight.data_ptr<scalar_t>() : nullptr;
    scalar_t* __restrict__ o = out.data_ptr<scalar_t>();
    // Grain: aim for ~32k multiply-adds per task so tiny graphs do not pay thread start-up.
    const int64_t avg_cost = std::max<int64_t>(1, (E / std::max<int64_t>(N, 1) + 1) * F);
    const int64_t grain = std::max<int64_t>(1, 32768 / avg_cost);
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t a = ptr[i], b = ptr[i + 1];
        TORCH_CHECK(0 <= a && a <= b && b <= E, "indptr must be non-decreasing; indptr[", i, "]=", a,
                    " > indptr[", i + 1, "]=", b);
        scalar_t* __restrict__ row = o + i * F;
        for (int64_t e = a; e < b; ++e) {
          const int64_t j = idx[e];
          TORCH_CHECK(j >= 0 && j < M, "index out of range: index[", e, "]=", j, " but x has ", M, " rows");
          const scalar_t we = w ? w[e] : scalar_t(1);
          const scalar_t* __restrict__ xr = xs + j * F;
          for (int64_t f = 0; f < F; ++f) row[f] = weighted_accumulate(row[f], we, xr[f]);
        }
      }
    });
  });
  return out.reshape(with_rows(x_in, N));
}

}  // namespace fgp
