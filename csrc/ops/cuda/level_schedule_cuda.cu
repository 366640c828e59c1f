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
      // the smallest offending entry (as on the CPU): -1 is the largest value as unsigned
      atomicMin(reinterpret_cast<unsigned long long*>(bad_entry), static_cast<unsigned long long>(detail));
  }
}

}  // namespace

ScheduleTensors level_schedule_cuda(const Tensor& indptr_in, const Tensor& index_in, const Tensor& level_in) {
  const int64_t L = check_schedule_args(indptr_in, index_in, level_in);
  const auto guard = cuda::guard_for(index_in);
  const auto indptr = contiguous(indptr_in);
  const auto index = contiguous(index_in);
  const auto level = contiguous(level_in);
  const int64_t N = indptr.numel() - 1, E = index.numel();
  const Device dev = index.device();
  // The sort and prefix sums are device-wide torch ops, called through the dispatcher (a stable
  // sort keeps node ids ascending inside a level, exactly like the CPU counting sort).
  const auto order = aten::sort_stable(level).second;
  auto rank = empty_tensor({N}, kLong, dev);
  aten::index_copy_(rank, 0, order, arange(N, dev));  // rank[order[i]] = i
  auto level_ptr = zeros_tensor({L + 1}, kLong, dev);
  if (N > 0) {
    auto tail = torch::stable::narrow(level_ptr, 0, 1, L);
    torch::stable::copy_(tail, aten::cumsum(aten::bincount(level, L)));
  }
  auto sched_indptr = zeros_tensor({N + 1}, kLong, dev);
  if (N > 0) {
    auto tail = torch::stable::narrow(sched_indptr, 0, 1, N);
    torch::stable::copy_(tail, aten::cumsum(aten::index_select(aten::diff(indptr), 0, order)));
  }
  auto sched_index = empty_tensor({E}, kLong, dev), entry_perm = empty_tensor({E}, kLong, dev);
  auto bad_entry = full_tensor({1}, -1.0, kLong, dev);
  if (N > 0) {
    schedule_fill_kernel<<<cuda::blocks_for(N), cuda::kThreads, 0, cuda::stream()>>>(
        order.const_data_ptr<int64_t>(), rank.const_data_ptr<int64_t>(), level.const_data_ptr<int64_t>(),
        indptr.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(), sched_indptr.const_data_ptr<int64_t>(), N,
        sched_index.mutable_data_ptr<int64_t>(), entry_perm.mutable_data_ptr<int64_t>(),
        bad_entry.mutable_data_ptr<int64_t>());
    cuda::check_launch("level_schedule");
  }
  const int64_t bad = item<int64_t>(bad_entry);
  if (bad >= 0) raise_schedule_error(indptr, index, level, bad);
  // Groups by (level, predecessor position), with a stable device sort (same order as the CPU's
  // per-level stable sort). key = level * max(N, 1) + sched_index, built without Scalar arguments:
  // the per-level offsets come from the host and are repeated over each level's entries, and the
  // int64 sum is a stack-and-sum (aten::add of stable.h).
  const auto entry_ptr = aten::index_select(sched_indptr, 0, level_ptr);
  std::vector<int64_t> level_offset(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) level_offset[l] = l * std::max<int64_t>(N, 1);
  const auto entry_offset = aten::repeat_interleave(from_host(level_offset, dev), aten::diff(entry_ptr), E);
  const auto key = aten::add(entry_offset, sched_index);
  const auto group_perm = aten::sort_stable(key).second;
  const auto sorted_key = aten::index_select(key, 0, group_perm);
  auto is_first = full_tensor({E}, 1.0, kBool, dev);
  if (E > 1) {
    auto rest = torch::stable::narrow(is_first, 0, 1, E - 1);
    auto keys = sorted_key;  // narrow takes a non-const handle
    torch::stable::copy_(rest,
                         aten::ne(torch::stable::narrow(keys, 0, 1, E - 1), torch::stable::narrow(keys, 0, 0, E - 1)));
  }
  const auto group_start = aten::nonzero_1d(is_first);
  const auto group_ptr = aten::cat({group_start, full_tensor({1}, static_cast<double>(E), kLong, dev)});
  const auto group_src = aten::index_select(sched_index, 0, aten::index_select(group_perm, 0, group_start));
  const auto group_level_ptr = aten::searchsorted(group_start, entry_ptr, /*right=*/false);
  return {order, rank, level_ptr, sched_indptr, sched_index, entry_perm, group_level_ptr, group_perm, group_ptr,
          group_src};
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) { m.impl("level_schedule", TORCH_BOX(&fgp::level_schedule_cuda)); }
