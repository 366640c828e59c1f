#include "ops/dropout.h"

namespace fgp {
namespace {

template <typename T>
FGP_CPU_CLONES void dropout_range(const T* __restrict__ x, T* __restrict__ out, int64_t begin, int64_t end,
                                  uint64_t seed, uint32_t threshold, T scale) {
  for (int64_t i = begin; i < end; ++i) out[i] = dropout_element(x[i], seed, i, threshold, scale);
}

}  // namespace

Tensor dropout_cpu(const Tensor& x_in, double p, int64_t seed) {
  check_dropout_args(x_in, p);
  const auto x = contiguous(x_in);
  auto out = torch::stable::empty_like(x);
  const int64_t n = x.numel();
  const uint32_t threshold = dropout_threshold(p);
  FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout", [&] {
    const auto scale = p < 1.0 ? static_cast<scalar_t>(1.0 / (1.0 - p)) : scalar_t(0);
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      dropout_range<scalar_t>(xs, o, begin, end, dropout_key(seed), threshold, scale);
    });
  });
  return out;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("dropout", TORCH_BOX(&fgp::dropout_cpu)); }
