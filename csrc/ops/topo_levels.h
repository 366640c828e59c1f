// topo_levels(indptr[N+1], index[E], node_ptr[B+1]) -> level[N]
// The topological generation of every node of a batch of DAGs: 0 for nodes without predecessors,
// otherwise 1 + the largest level among its predecessors (the longest path from a source). The
// graphs are given as one CSR by destination: node v's predecessors are
// index[indptr[v] .. indptr[v+1]-1]. A cycle is an error naming the graph.
#pragma once

#include "ops/graph_checks.h"

namespace fgp {

// Levels of one graph (nodes [begin, end)) by an iterative depth-first search over predecessors.
// level doubles as the visit state: -2 unvisited, -1 on the DFS stack, >= 0 finished. cursor and
// stack are scratch slices of the batch-wide buffers (same node range). Runs per CPU task and per
// CUDA thread alike.
FGP_HOST_DEVICE inline int64_t graph_levels(int64_t begin, int64_t end, const int64_t* indptr, const int64_t* index,
                                            int64_t* level, int64_t* cursor, int64_t* stack, int64_t* detail) {
  const int64_t status = check_graph_edges(begin, end, indptr, index, detail);
  if (status != kGraphOk) return status;
  for (int64_t v = begin; v < end; ++v) level[v] = -2;
  for (int64_t root = begin; root < end; ++root) {
    if (level[root] != -2) continue;
    int64_t sp = 0;
    stack[begin + sp++] = root;
    level[root] = -1;
    cursor[root] = indptr[root];
    while (sp > 0) {
      const int64_t u = stack[begin + sp - 1];
      if (cursor[u] < indptr[u + 1]) {
        const int64_t p = index[cursor[u]++];
        if (level[p] == -1) { *detail = p; return kGraphCycle; }
        if (level[p] == -2) {
          level[p] = -1;
          cursor[p] = indptr[p];
          stack[begin + sp++] = p;
        }
      } else {
        int64_t lv = 0;
        for (int64_t e = indptr[u]; e < indptr[u + 1]; ++e) {
          const int64_t cand = level[index[e]] + 1;
          lv = cand > lv ? cand : lv;
        }
        level[u] = lv;
        --sp;
      }
    }
  }
  return kGraphOk;
}

inline void check_topo_args(const Tensor& indptr, const Tensor& index, const Tensor& node_ptr) {
  check_index_vector(index, "index");
  check_same_device(indptr, "indptr", index, "index");
  check_same_device(indptr, "indptr", node_ptr, "node_ptr");
  check_indptr_full(indptr, index.numel(), "indptr");
  check_node_ptr(node_ptr, indptr.numel() - 1);
}

Tensor topo_levels_cpu(const Tensor& indptr, const Tensor& index, const Tensor& node_ptr);
Tensor topo_levels_cuda(const Tensor& indptr, const Tensor& index, const Tensor& node_ptr);

}  // namespace fgp
