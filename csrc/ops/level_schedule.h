// level_schedule(indptr[N+1], index[E], level[N])
//     -> (order[N], rank[N], level_ptr[L+1], sched_indptr[N+1], sched_index[E], entry_perm[E],
//         group_level_ptr[L+1], group_perm[E], group_ptr[G+1], group_src[G])
// The level schedule of a batch of DAGs, for encoders that propagate generation by generation.
// Nodes are sorted by (level, node id): order[i] is the node at position i, rank its inverse, and
// level_ptr[l]..level_ptr[l+1] the positions of level l. sched_indptr/sched_index is the CSR by
// destination re-expressed in positions (row i = node order[i], its entries are the positions of
// its predecessors, in the original entry order), and entry_perm maps every scheduled entry back to
// its original CSR entry (for edge features). Because levels are contiguous, the entries of all
// nodes of level l are one contiguous slice, and every entry of level l points to a position before
// level_ptr[l]: a propagation step reads finished rows and writes its own, no masks.
// The group_* outputs group every level's entries by predecessor position (stable): group_perm lists
// the scheduled entries level by level sorted by source, group_ptr delimits the G groups (one per
// distinct (level, predecessor)), group_src is each group's predecessor and group_level_ptr the
// groups of each level. A backward pass sums a predecessor's gradient contributions over its group
// and adds them once, which is deterministic without atomics.
// Pass the CSR by source and the reverse levels (topo_levels of the reversed graph) to get the
// schedule of the reversed graph.
#pragma once

#include "ops/common.h"

namespace fgp {

enum ScheduleStatus : int64_t { kScheduleOk = 0, kScheduleNotTopological = 1 };

// Row i of the schedule: copy node order[i]'s entries as positions. Returns kScheduleNotTopological
// (and the offending original entry in *detail) when a predecessor's level is not below the node's,
// i.e. `level` is not a topological levelling of this graph.
FGP_HOST_DEVICE inline int64_t schedule_fill_row(int64_t i, const int64_t* order, const int64_t* rank,
                                                 const int64_t* level, const int64_t* indptr, const int64_t* index,
                                                 const int64_t* sched_indptr, int64_t* sched_index,
                                                 int64_t* entry_perm, int64_t* detail) {
  const int64_t v = order[i];
  int64_t out = sched_indptr[i];
  for (int64_t e = indptr[v]; e < indptr[v + 1]; ++e, ++out) {
    const int64_t u = index[e];
    if (level[u] >= level[v]) { *detail = e; return kScheduleNotTopological; }
    sched_index[out] = rank[u];
    entry_perm[out] = e;
  }
  return kScheduleOk;
}

inline int64_t check_schedule_args(const Tensor& indptr, const Tensor& index, const Tensor& level) {
  check_index_vector(index, "index");
  check_index_vector(level, "level");
  check_same_device(indptr, "indptr", index, "index");
  check_same_device(indptr, "indptr", level, "level");
  check_indptr_full(indptr, index.numel(), "indptr");
  const int64_t N = indptr.numel() - 1;
  FGP_CHECK(level.numel() == N, "level must have one entry per node (", N, "), got ", level.numel());
  check_index_range(index, N, "index");
  if (N == 0) return 0;
  const auto [mn, mx] = aten::aminmax(level);
  const int64_t lo = item<int64_t>(mn), hi = item<int64_t>(mx);
  FGP_CHECK(lo >= 0, "level must be non-negative, found ", lo);
  // level_ptr and group_level_ptr hold max(level) + 2 entries each: a gapped levelling is valid,
  // but one with a huge value must be refused before it is allocated.
  check_output_size(std::min<int64_t>(hi, INT64_MAX - 2) + 2, 2 * sizeof(int64_t),
                    "level_schedule: the per-level pointers of max(level) + 1 levels");
  return hi + 1;  // number of levels
}

// `entry` comes from the kernels (an entry id of a validated CSR); it is still checked before any
// array is indexed with it, and so are the node ids read through it.
inline void raise_schedule_error(const Tensor& indptr, const Tensor& index, const Tensor& level, int64_t entry) {
  FGP_CHECK(0 <= entry && entry < index.numel(), "internal error: level_schedule reported entry ", entry, " of ",
            index.numel());
  const Tensor ptr = host_long(indptr);
  const int64_t* p = ptr.const_data_ptr<int64_t>();
  // the node whose row holds the entry: searchsorted(indptr, entry, right=True) - 1
  const int64_t dst = (std::upper_bound(p, p + ptr.numel(), entry) - p) - 1;
  const int64_t src = read<int64_t>(index, entry);
  const int64_t N = level.numel();
  FGP_CHECK(0 <= dst && dst < N && 0 <= src && src < N, "internal error: level_schedule entry ", entry,
            " maps to nodes ", src, " -> ", dst, " of ", N);
  FGP_FAIL("level is not a topological levelling: entry ", entry, " (node ", src, " -> node ", dst, ") has level[",
           src, "]=", read<int64_t>(level, src), " >= level[", dst, "]=", read<int64_t>(level, dst),
           "; compute it with topo_levels on the same CSR");
}

using ScheduleTensors = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

ScheduleTensors level_schedule_cpu(const Tensor& indptr, const Tensor& index, const Tensor& level);
ScheduleTensors level_schedule_cuda(const Tensor& indptr, const Tensor& index, const Tensor& level);

}  // namespace fgp
