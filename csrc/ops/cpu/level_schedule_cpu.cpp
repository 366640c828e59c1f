#include "ops/level_schedule.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

namespace fgp {

std::vector<at::Tensor> level_schedule_cpu(const at::Tensor& indptr_in, const at::Tensor& index_in,
                                           const at::Tensor& level_in) {
  const int64_t L = check_schedule_args(indptr_in, index_in, level_in);
  const auto indptr = indptr_in.contiguous();
  const auto index = index_in.contiguous();
  const auto level = level_in.contiguous();
  const int64_t N = indptr.numel() - 1, E = index.numel();
  const auto opts = index.options();
  auto order = at::empty({N}, opts), rank = at::empty({N}, opts);
  auto level_ptr = at::zeros({L + 1}, opts);
  auto sched_indptr = at::empty({N + 1}, opts);
  auto sched_index = at::empty({E}, opts), entry_perm = at::empty({E}, opts);
  const int64_t* ptr = indptr.data_ptr<int64_t>();
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t* lv = level.data_ptr<int64_t>();
  int64_t* ord = order.data_ptr<int64_t>();
  int64_t* rk = rank.data_ptr<int64_t>();
  int64_t* lp = level_ptr.data_ptr<int64_t>();
  int64_t* sp = sched_indptr.data_ptr<int64_t>();
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
  int64_t* si = sched_index.data_ptr<int64_t>();
  int64_t* pe = entry_perm.data_ptr<int64_t>();
  std::atomic<int64_t> bad_entry{-1};
  at::parallel_for(0, N, csr_row_grain(E, N, 1), [&](int64_t begin, int64_t end) {
    int64_t detail = -1;
    for (int64_t i = begin; i < end; ++i) {
      if (schedule_fill_row(i, ord, rk, lv, ptr, idx, sp, si, pe, &detail) != kScheduleOk) {
        bad_entry.store(detail);
        return;
      }
    }
  });
  if (bad_entry.load() >= 0) raise_schedule_error(indptr, index, level, bad_entry.load());
  // Groups: each level's entries stably sorted by predecessor position, one group per distinct one.
  auto group_perm = at::empty({E}, opts), group_level_ptr = at::zeros({L + 1}, opts);
  int64_t* gperm = group_perm.data_ptr<int64_t>();
  int64_t* glp = group_level_ptr.data_ptr<int64_t>();
  at::parallel_for(0, L, 1, [&](int64_t begin, int64_t end) {
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
  auto group_ptr = at::empty({G + 1}, opts), group_src = at::empty({G}, opts);
  int64_t* gptr = group_ptr.data_ptr<int64_t>();
  int64_t* gsrc = group_src.data_ptr<int64_t>();
  gptr[G] = E;
  at::parallel_for(0, L, 1, [&](int64_t begin, int64_t end) {
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
