#include "ops/level_schedule.h"

#include <algorithm>
#include <vector>

namespace fgp {

ScheduleTensors level_schedule_cpu(const Tensor& indptr_in, const Tensor& index_in, const Tensor& level_in) {
  const int64_t L = check_schedule_args(indptr_in, index_in, level_in);
  const auto indptr = contiguous(indptr_in);
  const auto index = contiguous(index_in);
  const auto level = contiguous(level_in);
  const int64_t N = indptr.numel() - 1, E = index.numel();
  const Device dev = index.device();
  auto order = empty_tensor({N}, kLong, dev), rank = empty_tensor({N}, kLong, dev);
  auto level_ptr = zeros_tensor({L + 1}, kLong, dev);
  auto sched_indptr = empty_tensor({N + 1}, kLong, dev);
  auto sched_index = empty_tensor({E}, kLong, dev), entry_perm = empty_tensor({E}, kLong, dev);
  const int64_t* ptr = indptr.const_data_ptr<int64_t>();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  const int64_t* lv = level.const_data_ptr<int64_t>();
  int64_t* ord = order.mutable_data_ptr<int64_t>();
  int64_t* rk = rank.mutable_data_ptr<int64_t>();
  int64_t* lp = level_ptr.mutable_data_ptr<int64_t>();
  int64_t* sp = sched_indptr.mutable_data_ptr<int64_t>();
  // Counting sort by level (stable, so node ids ascend inside a level): O(N + L), memory-bound and
  // cheap next to the fill below, hence sequential.
  for (int64_t v = 0; v < N; ++v) ++lp[lv[v] + 1];
  for (int64_t l = 0; l < L; ++l) lp[l + 1] += lp[l];
  std::vector<int64_t> cursor(lp, lp + L);
  for (int64_t v = 0; v < N; ++v) {
    const int64_t i = cursor[lv[v]]++;
    ord[i] = v;
    rk[v] = i;
  }
  sp[0] = 0;
  for (int64_t i = 0; i < N; ++i) sp[i + 1] = sp[i] + (ptr[ord[i] + 1] - ptr[ord[i]]);
  int64_t* si = sched_index.mutable_data_ptr<int64_t>();
  int64_t* pe = entry_perm.mutable_data_ptr<int64_t>();
  // Every failing row records its first offending entry and the smallest one is reported, so the
  // error does not depend on the thread count (nothing is thrown inside the loop).
  FirstFailure bad_entry;
  parallel_for(0, N, csr_row_grain(E, N, 1), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t detail = -1;
      if (schedule_fill_row(i, ord, rk, lv, ptr, idx, sp, si, pe, &detail) != kScheduleOk) bad_entry.record(detail);
    }
  });
  if (bad_entry.failed()) raise_schedule_error(indptr, index, level, bad_entry.get());
  // Groups: each level's entries stably sorted by predecessor position, one group per distinct one.
  auto group_perm = empty_tensor({E}, kLong, dev), group_level_ptr = zeros_tensor({L + 1}, kLong, dev);
  int64_t* gperm = group_perm.mutable_data_ptr<int64_t>();
  int64_t* glp = group_level_ptr.mutable_data_ptr<int64_t>();
  parallel_for(0, L, 1, [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      const int64_t es = sp[lp[l]], et = sp[lp[l + 1]];
      for (int64_t q = es; q < et; ++q) gperm[q] = q;
      std::stable_sort(gperm + es, gperm + et, [&](int64_t x, int64_t y) { return si[x] < si[y]; });
      int64_t groups = 0;
      for (int64_t q = es; q < et; ++q) groups += (q == es || si[gperm[q]] != si[gperm[q - 1]]);
      glp[l + 1] = groups;
    }
  });
  for (int64_t l = 0; l < L; ++l) glp[l + 1] += glp[l];
  const int64_t G = glp[L];
  auto group_ptr = empty_tensor({G + 1}, kLong, dev), group_src = empty_tensor({G}, kLong, dev);
  int64_t* gptr = group_ptr.mutable_data_ptr<int64_t>();
  int64_t* gsrc = group_src.mutable_data_ptr<int64_t>();
  gptr[G] = E;
  parallel_for(0, L, 1, [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      int64_t g = glp[l];
      for (int64_t q = sp[lp[l]]; q < sp[lp[l + 1]]; ++q) {
        if (q == sp[lp[l]] || si[gperm[q]] != si[gperm[q - 1]]) {
          gptr[g] = q;
          gsrc[g++] = si[gperm[q]];
        }
      }
    }
  });
  return {order, rank, level_ptr, sched_indptr, sched_index, entry_perm, group_level_ptr, group_perm, group_ptr,
          group_src};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) { m.impl("level_schedule", TORCH_BOX(&fgp::level_schedule_cpu)); }
