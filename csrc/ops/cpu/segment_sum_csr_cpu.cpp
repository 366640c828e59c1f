#include "ops/segment_sum_csr.h"

namespace fgp {
namespace {

// Rows [begin, end), one column tile at a time with the partial sums in registers (see
// gather_rows); per element the rows of a segment are added in order, as segment_column_sum does.
template <typename T>
FGP_CPU_CLONES int64_t segment_rows(const int64_t* __restrict__ ptr, const T* __restrict__ src, T* __restrict__ out,
                                 int64_t begin, int64_t end, int64_t F, int64_t E) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t a = ptr[i], b = ptr[i + 1];
    if (!(0 <= a && a <= b && b <= E)) return i;  // caller raises
    T* __restrict__ row = out + i * F;
    for (int64_t f0 = 0; f0 < F; f0 += kColumnTile) {
      const int64_t width = std::min<int64_t>(kColumnTile, F - f0);
      T acc[kColumnTile] = {};
      if (width == kColumnTile) {
        for (int64_t e = a; e < b; ++e)
          for (int64_t t = 0; t < kColumnTile; ++t) acc[t] += src[e * F + f0 + t];
      } else {
        for (int64_t e = a; e < b; ++e)
          for (int64_t t = 0; t < width; ++t) acc[t] += src[e * F + f0 + t];
      }
      for (int64_t t = 0; t < width; ++t) row[f0 + t] = acc[t];
    }
  }
  return -1;
}

}  // namespace

Tensor segment_sum_csr_cpu(const Tensor& src_in, const Tensor& indptr_in) {
  check_float(src_in, "src");
  FGP_CHECK(src_in.dim() >= 1, "src must have at least one dimension (the segmented one)");
  check_same_device(src_in, "src", indptr_in, "indptr");
  check_indptr_ends(indptr_in, src_in.size(0), "indptr");
  const auto src = contiguous(as_rows(src_in));
  const auto indptr = contiguous(indptr_in);
  const int64_t N = indptr.numel() - 1, E = src.size(0), F = src.size(1);
  auto out = empty_like_shape(src, {N, F});  // every row is written exactly once
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  FirstFailure bad_row;
  FGP_DISPATCH_FLOATING_TYPES(src.scalar_type(), "segment_sum_csr", [&] {
    const scalar_t* s = src.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = csr_row_grain(E, N, F);
    parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      bad_row.record(segment_rows(ptr, s, o, begin, end, F, E));
    });
  });
  raise_bad_row(bad_row.get(), ptr);
  return reshape(out, with_rows(src_in, N));
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("segment_sum_csr", TORCH_BOX(&fgp::segment_sum_csr_cpu)); }
