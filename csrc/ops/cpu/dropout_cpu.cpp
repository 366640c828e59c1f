#include "ops/dropout.h"

#include <ATen/Parallel.h>

namespace fgp {
namespace {

template <typename T>
FGP_CPU_CLONES void dropout_range(const T* __restrict__ x, T* __restrict__ out, int64_t begin, int64_t end,
                                  uint64_t seed, uint32_t threshold, T scale) {
  for (int64_t i = begin; i < end; ++i) out[i] = dropout_element(x[i], seed, i, threshold, scale);
}

}  // namespace

at::Tensor dropout_cpu(const at::Tensor& x_in, double p, int64_t seed) {
  check_dropout_args(x_in, p);
  const auto x = x_in.contiguous();
  auto out = at::empty_like(x);
  const int64_t n = x.numel();
  const uint32_t threshold = dropout_threshold(p);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout_cpu", [&] {
    const auto scale = p < 1.0 ? static_cast<scalar_t>(1.0 / (1.0 - p)) : scalar_t(0);
    const scalar_t* xs = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      dropout_range<scalar_t>(xs, o, begin, end, dropout_key(seed), threshold, scale);
    });
  });
  return out;
}

}  // namespace fgp
