#include "ops/edge_dot.h"

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

Tensor edge_dot_cpu(const Tensor& a_in, const Tensor& b_in, const Tensor& index_in, const Tensor& indptr_in) {
  check_edge_dot_args(a_in, b_in, index_in, indptr_in);
  check_index_range(index_in, b_in.size(0), "index");
  const auto a = contiguous(as_rows(a_in));
  const auto b = contiguous(as_rows(b_in));
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  const int64_t N = a.size(0), E = index.numel(), F = a.size(1);
  auto out = empty_like_shape(a, {E});
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  FirstFailure bad_row;
  FGP_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_dot", [&] {
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* as = a.const_data_ptr<scalar_t>();
    const scalar_t* bs = b.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = csr_row_grain(E, N, F);
    parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      bad_row.record(edge_dot_rows(ptr, idx, as, bs, o, begin, end, F, E));
    });
  });
  raise_bad_row(bad_row.get(), ptr);
  return out;
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("edge_dot", TORCH_BOX(&fgp::edge_dot_cpu)); }
