#include "ops/level_schedule.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// One thread per scheduled row, same per-row code as the CPU kernel (schedule_fill_row).
__global__ void schedule_fill_kernel(const int64_t* order, const int64_t* rank, const int64_t* level,
                                     const int64_t* indptr, const int64_t* index, const int64_t* sched_indptr,
                                     int64_t N, int64_t* sched_index, int64_t* entry_perm, int64_t* bad_entry) {
  FGP_CUDA_KERNEL_LOOP(i, N) {
    int64_t detail = -1;
    if (schedule_fill_row(i, order, rank, level, indptr, index, sched_indptr, sched_index, entry_perm, &detail) !=
        kScheduleOk)
      *bad_entry = detail;  // any offending entry will do for the error message
  }
}

}  // namespace

std::vector<at::Tensor> level_schedule_cuda(const at::Tensor& indptr_in, const at::Tensor& index_in,
                                            const at::Tensor& level_in) {
  const int64_t L = check_schedule_args(indptr_in, index_in, level_in);
  c10::cuda::CUDAGuard guard(index_in.device());
  const auto indptr = indptr_in.contiguous();
  const auto index = index_in.contiguous();
  const auto level = level_in.contiguous();
  const int64_t N = indptr.numel() - 1, E = index.numel();
  const auto opts = index.options();
  // The sort and prefix sums are device-wide ATen primitives (a stable sort keeps node ids
  // ascending inside a level, exactly like the CPU counting sort).
  const auto order = std::get<1>(at::sort(level, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  auto rank = at::empty({N}, opts);
  rank.index_put_({order}, at::arange(N, opts));
  auto level_ptr = at::zeros({L + 1}, opts);
  if (N > 0) level_ptr.slice(0, 1).copy_(at::cumsum(at::bincount(level, {}, L), 0));
  auto sched_indptr = at::zeros({N + 1}, opts);
  if (N > 0) sched_indptr.slice(0, 1).copy_(at::cumsum(indptr.diff().index_select(0, order), 0));
  auto sched_index = at::empty({E}, opts), entry_perm = at::empty({E}, opts);
  auto bad_entry = at::full({1}, -1, opts);
  if (N > 0) {
    schedule_fill_kernel<<<cuda::blocks_for(N), cuda::kThreads, 0, cuda::stream()>>>(
        order.data_ptr<int64_t>(), rank.data_ptr<int64_t>(), level.data_ptr<int64_t>(), indptr.data_ptr<int64_t>(),
        index.data_ptr<int64_t>(), sched_indptr.data_ptr<int64_t>(), N, sched_index.data_ptr<int64_t>(),
        entry_perm.data_ptr<int64_t>(), bad_entry.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int64_t bad = bad_entry.item<int64_t>();
  if (bad >= 0) raise_schedule_error(indptr, index, level, bad);
  // Groups by (level, predecessor position), with a stable device sort (same order as the CPU's
  // per-level stable sort).
  const auto entry_ptr = sched_indptr.index_select(0, level_ptr);
  const auto entry_level = at::repeat_interleave(at::arange(L, opts), entry_ptr.diff(), 0, E);
  const auto key = entry_level * std::max<int64_t>(N, 1) + sched_index;
  const auto group_perm = std::get<1>(at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const auto sorted_key = key.index_select(0, group_perm);
  auto is_first = at::ones({E}, opts.dtype(at::kBool));
  if (E > 1) is_first.slice(0, 1).copy_(sorted_key.slice(0, 1) != sorted_key.slice(0, 0, E - 1));
  const auto group_start = at::nonzero(is_first).reshape({-1});
  const auto group_ptr = at::cat({group_start, at::full({1}, E, opts)});
  const auto group_src = sched_index.index_select(0, group_perm.index_select(0, group_start));
  const auto group_level_ptr = at::searchsorted(group_start, entry_ptr);
  return {order, rank, level_ptr, sched_indptr, sched_index, entry_perm, group_level_ptr, group_perm, group_ptr,
          group_src};
}

}  // namespace fgp
