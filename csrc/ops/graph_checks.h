// Per-graph status codes shared by the DAG ops (topo_levels, flow_surrogate), and the host-side
// translation of a failing graph into a Python-facing error that names the graph.
#pragma once

#include "ops/common.h"

namespace fgp {

enum GraphStatus : int64_t {
  kGraphOk = 0,
  kGraphCycle = 1,          // detail: a node on (or behind) a cycle
  kGraphEdgeOutside = 2,    // detail: the edge id whose source lies outside the graph
  kGraphBadIndptr = 3,      // detail: the node whose row pointers decrease
  kGraphBadOp = 4,          // detail: the node whose op id is out of range
  kGraphBadTranspose = 5,   // detail: the node whose successor list leaves the graph
  kGraphBadOrder = 6,       // detail: the node placed twice, or before one of its predecessors
};

// Every predecessor of graph [begin, end) lies inside the graph and its row pointers do not
// decrease. Run for all graphs before any kernel walks successors, so no task can reach a node of
// another graph (tasks own disjoint node ranges).
FGP_HOST_DEVICE inline int64_t check_graph_edges(int64_t begin, int64_t end, const int64_t* indptr,
                                                 const int64_t* index, int64_t* detail) {
  for (int64_t v = begin; v < end; ++v) {
    if (indptr[v] > indptr[v + 1]) { *detail = v; return kGraphBadIndptr; }
    for (int64_t e = indptr[v]; e < indptr[v + 1]; ++e)
      if (index[e] < begin || index[e] >= end) { *detail = e; return kGraphEdgeOutside; }
  }
  return kGraphOk;
}

// node_ptr: int64 [B+1], 0 = node_ptr[0] <= ... <= node_ptr[B] = num_nodes (graph g owns nodes
// node_ptr[g] .. node_ptr[g+1]-1; empty graphs are allowed).
inline void check_node_ptr(const Tensor& node_ptr, int64_t num_nodes) {
  check_indptr_full(node_ptr, num_nodes, "node_ptr");
}

// Raise for the first failing graph (status/detail are host int64 arrays of length B). Called on
// the host after the (parallel) kernels, never inside a parallel_for body.
inline void raise_graph_errors(const int64_t* status, const int64_t* detail, const int64_t* node_ptr,
                               int64_t num_graphs, const int64_t* index, int64_t num_ops) {
  for (int64_t g = 0; g < num_graphs; ++g) {
    if (status[g] == kGraphOk) continue;
    const int64_t b = node_ptr[g], e = node_ptr[g + 1], d = detail[g];
    switch (status[g]) {
      case kGraphCycle:
        FGP_FAIL("graph ", g, " (nodes ", b, "..", e - 1, ") is not a DAG: it contains a cycle ",
                 "reaching node ", d, " (node ", d - b, " of that graph)");
      case kGraphEdgeOutside:
        FGP_FAIL("graph ", g, " (nodes ", b, "..", e - 1, ") has an edge (edge id ", d,
                 ") from node ", index ? index[d] : -1, ", which lies outside the graph's node range");
      case kGraphBadIndptr:
        FGP_FAIL("indptr must be non-decreasing; it decreases at node ", d, " (graph ", g, ")");
      case kGraphBadOp:
        FGP_FAIL("op id out of range at node ", d, " (graph ", g, "): op ids must lie in [0, ",
                 num_ops, ")");
      case kGraphBadTranspose:
        FGP_FAIL("graph ", g, ": the successor CSR (t_indptr/t_index) of node ", d,
                 " leaves the graph; it must be csr_transpose(index, indptr)");
      case kGraphBadOrder:
        FGP_FAIL("graph ", g, ": the given order is not a topological order of the graph (node ", d,
                 " repeats or comes before one of its predecessors)");
      default:
        FGP_FAIL("graph ", g, ": unknown error status ", status[g]);
    }
  }
}

}  // namespace fgp
