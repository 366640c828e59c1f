#include "ops/gather_segment_sum.h"

#include <ATen/Parallel.h>

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

at::Tensor gather_segment_sum_cpu(const at::Tensor& x_in, const at::Tensor& index_in, const at::Tensor& indptr_in,
                                  const std::optional<at::Tensor>& weight_in) {
  check_gather_args(x_in, index_in, indptr_in, weight_in);
  check_index_range(index_in, x_in.size(0), "index");
  const auto x = as_rows(x_in).contiguous();
  const auto index = index_in.contiguous();
  const auto indptr = indptr_in.contiguous();
  const int64_t N = indptr.numel() - 1, F = x.size(1), E = index.numel();
  at::Tensor weight;
  if (weight_in.has_value()) weight = weight_in->contiguous();
  auto out = at::empty({N, F}, x.options());  // every row is written exactly once
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_segment_sum_cpu", [&] {
    const int64_t* ptr = indptr.data_ptr<int64_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* w = weight.defined() ? weight.data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t grain = csr_row_grain(E, N, F);
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      raise_bad_row(w ? gather_rows<scalar_t, true>(ptr, idx, xs, w, o, begin, end, F, E)
                      : gather_rows<scalar_t, false>(ptr, idx, xs, w, o, begin, end, F, E),
                    ptr);
    });
  });
  return out.reshape(with_rows(x_in, N));
}

}  // namespace fgp
