// flow_pairs(indptr[N+1], index[E], node_ptr[B+1], topo[N]) -> (pair_indptr[N+1], pair_index[P], pair_perm[P])
// The flow-related node pairs of every DAG of a batch, as a CSR: row v lists, in ascending order,
// every node u of v's graph with u == v, u reaches v, or v reaches u. Flow-aware attention
// (FlowerFormer) attends only along these pairs. The relation is symmetric, so the CSR is its own
// transpose up to entry order: pair_perm[q] is the entry (v, u) of the entry q = (u, v), which is
// what a backward pass needs to scatter gradients to columns without atomics.
// topo is any per-graph topological order (graph g's nodes at positions node_ptr[g]..node_ptr[g+1],
// every predecessor before its node), e.g. nodes sorted by (graph, level).
// Cost: O(n^2 / 64) words of scratch and time per graph of n nodes (bitsets of ancestors); graphs
// above kMaxFlowPairNodes nodes are refused.
#pragma once

#include "ops/graph_checks.h"

#include <vector>

namespace fgp {

constexpr int64_t kMaxFlowPairNodes = 1 << 14;  // 16k nodes: 32 MiB of bitsets per graph

// flow_pairs' own statuses for a bad `topo`, next to the GraphStatus codes of graph_checks.h. Their
// detail is the position in `topo` (inside the graph's range), never the bad value itself, which is
// read back from `topo` when the error is raised.
enum FlowTopoStatus : int64_t {
  kFlowTopoOutside = 100,   // topo[detail] is not a node of the graph
  kFlowTopoRepeated = 101,  // topo[detail] was already listed earlier in the graph's range
};

FGP_HOST_DEVICE inline int64_t flow_words(int64_t n) { return (n + 63) / 64; }

FGP_HOST_DEVICE inline int64_t popcount64(uint64_t w) {
#if defined(__CUDA_ARCH__)
  return __popcll(w);
#else
  return __builtin_popcountll(w);
#endif
}

FGP_HOST_DEVICE inline int64_t lowest_bit(uint64_t w) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(w)) - 1;
#else
  return __builtin_ctzll(w);
#endif
}

// Graph [begin, end): rel[v - begin] (n rows of flow_words(n) words, scratch for 2n rows) becomes
// the bitset of v's flow-related nodes, and count[v] its size. Ancestors (with self) are ORed along
// the topological order; descendants are the transpose of the ancestor matrix. Returns a
// GraphStatus (a predecessor outside the graph or after its node in `topo`) or a FlowTopoStatus (a
// `topo` value outside the graph or repeated: checked before the value indexes anything).
FGP_HOST_DEVICE inline int64_t flow_relation(int64_t begin, int64_t end, const int64_t* indptr, const int64_t* index,
                                             const int64_t* topo, uint64_t* bits, int64_t* count, int64_t* detail) {
  const int64_t n = end - begin, W = flow_words(n);
  uint64_t* anc = bits;          // [n, W]: ancestors of each node, self included
  uint64_t* rel = bits + n * W;  // [n, W]: ancestors | descendants
  for (int64_t t = 0; t < 2 * n * W; ++t) bits[t] = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t v = topo[begin + t];
    if (v < begin || v >= end) { *detail = begin + t; return kFlowTopoOutside; }
    const int64_t lv = v - begin;
    if ((anc[lv * W + lv / 64] >> (lv % 64)) & 1) { *detail = begin + t; return kFlowTopoRepeated; }
    anc[lv * W + lv / 64] |= uint64_t(1) << (lv % 64);
    for (int64_t e = indptr[v]; e < indptr[v + 1]; ++e) {
      const int64_t u = index[e];
      if (u < begin || u >= end) { *detail = e; return kGraphEdgeOutside; }
      if (u == v) { *detail = v; return kGraphCycle; }  // a self-loop
      const int64_t lu = u - begin;
      // u must be finished: it contains itself once visited
      if (!((anc[lu * W + lu / 64] >> (lu % 64)) & 1)) { *detail = v; return kGraphBadOrder; }
      for (int64_t w = 0; w < W; ++w) anc[lv * W + w] |= anc[lu * W + w];
    }
  }
  for (int64_t lw = 0; lw < n; ++lw) {  // rel[v] bit w for every ancestor v of w; rel[w] |= anc[w]
    for (int64_t w = 0; w < W; ++w) {
      uint64_t word = anc[lw * W + w];
      rel[lw * W + w] |= word;
      while (word) {
        const int64_t lv = w * 64 + lowest_bit(word);
        word &= word - 1;
        rel[lv * W + lw / 64] |= uint64_t(1) << (lw % 64);
      }
    }
  }
  for (int64_t lv = 0; lv < n; ++lv) {
    int64_t c = 0;
    for (int64_t w = 0; w < W; ++w) c += popcount64(rel[lv * W + w]);
    count[begin + lv] = c;
  }
  return kGraphOk;
}

// Write the pairs of graph [begin, end) from its relation bitsets. Rows are visited in ascending
// order, so appending (v, u) to row u's transposed cursor keeps every row's entries ascending, which
// is the row order itself: cursor (n scratch) gives the transposed position of every entry.
FGP_HOST_DEVICE inline void flow_fill(int64_t begin, int64_t end, const uint64_t* bits, const int64_t* pair_indptr,
                                      int64_t* pair_index, int64_t* pair_perm, int64_t* cursor) {
  const int64_t n = end - begin, W = flow_words(n);
  const uint64_t* rel = bits + n * W;
  for (int64_t lv = 0; lv < n; ++lv) cursor[begin + lv] = pair_indptr[begin + lv];
  for (int64_t lv = 0; lv < n; ++lv) {
    int64_t p = pair_indptr[begin + lv];
    for (int64_t w = 0; w < W; ++w) {
      uint64_t word = rel[lv * W + w];
      while (word) {
        const int64_t lu = w * 64 + lowest_bit(word);
        word &= word - 1;
        pair_index[p] = begin + lu;
        pair_perm[cursor[begin + lu]++] = p;
        ++p;
      }
    }
  }
}

inline void check_flow_pair_args(const Tensor& indptr, const Tensor& index, const Tensor& node_ptr,
                                 const Tensor& topo) {
  check_index_vector(index, "index");
  check_index_vector(topo, "topo");
  check_same_device(indptr, "indptr", index, "index");
  check_same_device(indptr, "indptr", node_ptr, "node_ptr");
  check_same_device(indptr, "indptr", topo, "topo");
  check_indptr_full(indptr, index.numel(), "indptr");
  const int64_t N = indptr.numel() - 1;
  check_node_ptr(node_ptr, N);
  FGP_CHECK(topo.numel() == N, "topo must hold every node once (", N, " entries), got ", topo.numel());
  check_index_range(index, N, "index");
  if (node_ptr.numel() > 1) {
    const int64_t biggest = item<int64_t>(aten::max_all(aten::diff(node_ptr)));
    FGP_CHECK(biggest <= kMaxFlowPairNodes, "flow_pairs: a graph has ", biggest, " nodes; the flow relation ",
              "is quadratic in graph size and is limited to ", kMaxFlowPairNodes, " nodes per graph");
  }
}

// Scratch words (uint64) per graph: 2 n * flow_words(n); offsets as an exclusive prefix sum, on the
// host (B + 1 values, from a host copy of node_ptr).
inline std::vector<int64_t> flow_scratch_offsets(const Tensor& node_ptr) {
  const Tensor gp = host_long(node_ptr);
  const int64_t* p = gp.const_data_ptr<int64_t>();
  const int64_t size = gp.numel();
  std::vector<int64_t> offsets(static_cast<size_t>(size), 0);
  for (int64_t g = 0; g + 1 < size; ++g) {
    const int64_t n = p[g + 1] - p[g];
    offsets[g + 1] = offsets[g] + 2 * n * flow_words(n);
  }
  check_output_size(offsets.back(), sizeof(uint64_t), "flow_pairs: the reachability bitsets of the batch");
  return offsets;
}

// Raise for the first failing graph. status, detail, node_ptr (B + 1) and topo (N) are host arrays,
// index (E) a host array or null. Every detail is range-checked before it indexes an array.
inline void raise_flow_pair_errors(const int64_t* status, const int64_t* detail, const int64_t* node_ptr,
                                   int64_t num_graphs, const int64_t* index, int64_t num_entries,
                                   const int64_t* topo) {
  for (int64_t g = 0; g < num_graphs; ++g) {
    if (status[g] == kGraphOk) continue;
    const int64_t b = node_ptr[g], e = node_ptr[g + 1], d = detail[g];
    if (status[g] == kFlowTopoOutside || status[g] == kFlowTopoRepeated) {
      FGP_CHECK(b <= d && d < e, "internal error: flow_pairs reported topo position ", d, " for graph ", g,
                " (nodes ", b, "..", e - 1, ")");
      const int64_t v = topo[d];
      if (status[g] == kFlowTopoOutside)
        FGP_FAIL("flow_pairs: topo is not a topological order of graph ", g, " (nodes ", b, "..", e - 1, "): topo[",
                 d, "]=", v, " lies outside the graph's node range (positions ", b, "..", e - 1,
                 " of topo must list each node of graph ", g, " once)");
      FGP_FAIL("flow_pairs: topo is not a topological order of graph ", g, " (nodes ", b, "..", e - 1, "): node ", v,
               " is listed twice (again at topo[", d, "])");
    }
    // an edge id, for kGraphEdgeOutside: name its source only when it is a valid entry
    const bool edge_ok = status[g] == kGraphEdgeOutside && 0 <= d && d < num_entries;
    raise_graph_errors(status, detail, node_ptr, num_graphs, edge_ok ? index : nullptr, 0);  // raises for graph g
    FGP_FAIL("graph ", g, ": unknown error status ", status[g]);
  }
}

std::tuple<Tensor, Tensor, Tensor> flow_pairs_cpu(const Tensor& indptr, const Tensor& index, const Tensor& node_ptr,
                                                  const Tensor& topo);
std::tuple<Tensor, Tensor, Tensor> flow_pairs_cuda(const Tensor& indptr, const Tensor& index, const Tensor& node_ptr,
                                                   const Tensor& topo);

}  // namespace fgp
