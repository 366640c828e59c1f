#include "ops/gather_segment_sum.h"

namespace fgp {
namespace {

// Columns summed per pass over a row's entries: four 512-bit vectors of partial sums, enough for
// the usual hidden sizes (64 floats, 32 doubles) in one pass over the gathered rows.
template <typename T>
constexpr int64_t kGatherTile = 4 * 64 / static_cast<int64_t>(sizeof(T));

// How many entries ahead to prefetch the gathered row (random rows of x miss the cache).
constexpr int64_t kPrefetchDistance = 4;

// Output rows [begin, end). Each row is produced one column tile at a time: the tile's partial sums
// stay in registers while the row's entries stream by, and the row is written once. Per element
// the entries are still added in CSR order, so the result is that of gather_row_column.
// Returns the first row whose pointers are invalid, or -1.
template <typename T, bool Weighted>
FGP_CPU_CLONES int64_t gather_rows(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                   const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                                   int64_t begin, int64_t end, int64_t F, int64_t E) {
  constexpr int64_t Tile = kGatherTile<T>;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t a = ptr[i], b = ptr[i + 1];
    if (!(0 <= a && a <= b && b <= E)) return i;  // caller raises
    T* __restrict__ row = out + i * F;
    for (int64_t f0 = 0; f0 < F; f0 += Tile) {
      const int64_t width = std::min<int64_t>(Tile, F - f0);
      T acc[Tile] = {};
      if (width == Tile) {
        for (int64_t e = a; e < b; ++e) {
          if (e + kPrefetchDistance < b) __builtin_prefetch(x + idx[e + kPrefetchDistance] * F + f0);
          const T* __restrict__ xr = x + idx[e] * F + f0;
          const T we = Weighted ? w[e] : T(1);
          for (int64_t t = 0; t < Tile; ++t) acc[t] = weighted_accumulate(acc[t], we, xr[t]);
        }
      } else {
        for (int64_t e = a; e < b; ++e) {
          if (e + kPrefetchDistance < b) __builtin_prefetch(x + idx[e + kPrefetchDistance] * F + f0);
          const T* __restrict__ xr = x + idx[e] * F + f0;
          const T we = Weighted ? w[e] : T(1);
          for (int64_t t = 0; t < width; ++t) acc[t] = weighted_accumulate(acc[t], we, xr[t]);
        }
      }
      for (int64_t t = 0; t < width; ++t) row[f0 + t] = acc[t];
    }
  }
  return -1;
}

}  // namespace

Tensor gather_segment_sum_cpu(const Tensor& x_in, const Tensor& index_in, const Tensor& indptr_in,
                              const std::optional<Tensor>& weight_in) {
  check_gather_args(x_in, index_in, indptr_in, weight_in);
  check_index_range(index_in, x_in.size(0), "index");
  const auto x = contiguous(as_rows(x_in));
  const auto index = contiguous(index_in);
  const auto indptr = contiguous(indptr_in);
  const int64_t N = indptr.numel() - 1, F = x.size(1), E = index.numel();
  std::optional<Tensor> weight;
  if (weight_in.has_value()) weight = contiguous(*weight_in);
  auto out = empty_like_shape(x, {N, F});  // every row is written exactly once
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  FirstFailure bad_row;
  FGP_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_segment_sum", [&] {
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = csr_row_grain(E, N, F);
    parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      bad_row.record(w ? gather_rows<scalar_t, true>(ptr, idx, xs, w, o, begin, end, F, E)
                       : gather_rows<scalar_t, false>(ptr, idx, xs, w, o, begin, end, F, E));
    });
  });
  raise_bad_row(bad_row.get(), ptr);
  return reshape(out, with_rows(x_in, N));
}

namespace {

// The transposed-CSR arguments only matter to autograd; the forward kernel ignores them.
Tensor gather_segment_sum_cpu_op(const Tensor& x, const Tensor& index, const Tensor& indptr,
                                 const std::optional<Tensor>& weight, const std::optional<Tensor>&,
                                 const std::optional<Tensor>&, const std::optional<Tensor>&) {
  return gather_segment_sum_cpu(x, index, indptr, weight);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("gather_segment_sum", TORCH_BOX(&fgp::gather_segment_sum_cpu_op)); }
