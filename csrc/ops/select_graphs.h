// select_graphs(node_ptr[B+1], ids[B'], op[N], level[N], is_source[N], in_indptr[N+1], in_index[E],
//               in_perm[E], out_indptr[N+1], out_index[E], out_perm[E])
//     -> (node_ptr', graph', op', level', is_source', in_indptr', in_index', in_perm', out_indptr',
//         out_index', out_perm')
// The sub-batch of graphs ids (in that order, repeats allowed) of a collated batch, every array
// copied and re-offset in one pass: training pre-collates a dataset once and draws each step's
// mini-batch from it with this op (no Python per graph, no recomputed CSR or levels). Requires the
// batch layout of collate: each graph's edges contiguous in the edge order the perms refer to, so
// a graph's first in-CSR entry is its first edge.
#pragma once

#include "ops/common.h"

#include <tuple>
#include <vector>

namespace fgp {

// Copy graph g = ids[i] into slot i. new_node_ptr / new_edge_ptr are the output prefix sums.
// Validates only what it reads (the selected graph), so a step costs O(mini-batch), not O(dataset):
// returns false when the graph's rows decrease, its in- and out-CSR sizes differ, or an index or
// perm leaves the graph (the caller raises).
template <typename B>
FGP_HOST_DEVICE inline bool select_graph_copy(int64_t i, const int64_t* ids, const int64_t* node_ptr,
                                              const int64_t* op, const int64_t* level, const B* is_source,
                                              const int64_t* in_indptr, const int64_t* in_index,
                                              const int64_t* in_perm, const int64_t* out_indptr,
                                              const int64_t* out_index, const int64_t* out_perm,
                                              const int64_t* new_node_ptr, const int64_t* new_edge_ptr,
                                              int64_t* n_graph, int64_t* n_op, int64_t* n_level, B* n_is_source,
                                              int64_t* n_in_indptr, int64_t* n_in_index, int64_t* n_in_perm,
                                              int64_t* n_out_indptr, int64_t* n_out_index, int64_t* n_out_perm,
                                              int64_t num_entries) {
  const int64_t g = ids[i];
  const int64_t old_start = node_ptr[g], new_start = new_node_ptr[i], n = node_ptr[g + 1] - old_start;
  const int64_t node_shift = old_start - new_start;
  const int64_t old_edge = in_indptr[old_start], new_edge = new_edge_ptr[i];
  const int64_t num_edges = in_indptr[old_start + n] - old_edge;
  const int64_t old_out_edge = out_indptr[old_start];
  if (n < 0 || num_edges < 0 || old_out_edge < 0 || old_out_edge + num_edges > num_entries ||
      out_indptr[old_start + n] - old_out_edge != num_edges ||
      new_edge_ptr[i + 1] - new_edge != num_edges)
    return false;
  for (int64_t j = 0; j < n; ++j)
    if (in_indptr[old_start + j + 1] < in_indptr[old_start + j] ||
        out_indptr[old_start + j + 1] < out_indptr[old_start + j])
      return false;
  for (int64_t e = 0; e < num_edges; ++e) {
    const int64_t a = in_index[old_edge + e] - old_start, b = out_index[old_out_edge + e] - old_start;
    const int64_t p = in_perm[old_edge + e] - old_edge, q = out_perm[old_out_edge + e] - old_edge;
    if (a < 0 || a >= n || b < 0 || b >= n || p < 0 || p >= num_edges || q < 0 || q >= num_edges) return false;
  }
  for (int64_t j = 0; j < n; ++j) {
    const int64_t u = old_start + j, v = new_start + j;
    n_graph[v] = i;
    n_op[v] = op[u];
    n_level[v] = level[u];
    n_is_source[v] = is_source[u];
    n_in_indptr[v] = in_indptr[u] - old_edge + new_edge;
    n_out_indptr[v] = out_indptr[u] - old_out_edge + new_edge;
  }
  for (int64_t e = 0; e < num_edges; ++e) {
    n_in_index[new_edge + e] = in_index[old_edge + e] - node_shift;
    n_in_perm[new_edge + e] = in_perm[old_edge + e] - old_edge + new_edge;
    n_out_index[new_edge + e] = out_index[old_out_edge + e] - node_shift;
    n_out_perm[new_edge + e] = out_perm[old_out_edge + e] - old_edge + new_edge;
  }
  return true;
}

// t: the 11 inputs in schema order (node_ptr, ids, op, level, is_source, in_indptr, in_index,
// in_perm, out_indptr, out_index, out_perm).
inline void check_select_args(const std::vector<Tensor>& t) {
  FGP_CHECK(t.size() == 11, "select_graphs takes 11 tensors");
  const char* names[] = {"node_ptr", "ids", "op", "level", "is_source", "in_indptr", "in_index", "in_perm",
                         "out_indptr", "out_index", "out_perm"};
  for (size_t k = 0; k < t.size(); ++k) {
    if (k == 4) {
      FGP_CHECK(t[k].scalar_type() == kBool && t[k].dim() == 1, "is_source must be a 1-D bool tensor");
    } else {
      check_index_vector(t[k], names[k]);
    }
    check_same_device(t[0], "node_ptr", t[k], names[k]);
  }
  const int64_t B = t[0].numel() - 1, N = t[2].numel(), E = t[6].numel();
  FGP_CHECK(B >= 0, "node_ptr must hold at least one element");
  for (int k : {3, 4}) FGP_CHECK(t[k].numel() == N, names[k], " must have one entry per node (", N, ")");
  for (int k : {5, 8}) FGP_CHECK(t[k].numel() == N + 1, names[k], " must have N + 1 = ", N + 1, " entries");
  for (int k : {7, 9, 10}) FGP_CHECK(t[k].numel() == E, names[k], " must have one entry per edge (", E, ")");
  check_index_range(t[1], B, "ids");
}

// node_ptr and in_indptr at the selected graphs, checked for order and range (O(ids)).
inline void check_selected_ranges(int64_t g, const int64_t* node_ptr, const int64_t* in_indptr, int64_t N, int64_t E) {
  FGP_CHECK(0 <= node_ptr[g] && node_ptr[g] <= node_ptr[g + 1] && node_ptr[g + 1] <= N,
            "select_graphs: node_ptr is not a valid graph partition at graph ", g);
  FGP_CHECK(0 <= in_indptr[node_ptr[g]] && in_indptr[node_ptr[g]] <= in_indptr[node_ptr[g + 1]] &&
                in_indptr[node_ptr[g + 1]] <= E,
            "select_graphs: in_indptr is not valid over graph ", g);
}

inline void raise_bad_selected_graph(int64_t g) {
  FGP_FAIL("select_graphs: graph ", g, " is malformed (decreasing row pointers, in- and out-CSR of ",
           "different sizes, or an index/perm outside the graph); select needs a batch built by collate");
}

// (node_ptr', graph', op', level', is_source', in_indptr', in_index', in_perm', out_indptr',
//  out_index', out_perm'): the order of the schema's returns.
using SelectedGraphs = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                  Tensor>;

SelectedGraphs select_graphs_cpu(const Tensor& node_ptr, const Tensor& ids, const Tensor& op, const Tensor& level,
                                 const Tensor& is_source, const Tensor& in_indptr, const Tensor& in_index,
                                 const Tensor& in_perm, const Tensor& out_indptr, const Tensor& out_index,
                                 const Tensor& out_perm);
SelectedGraphs select_graphs_cuda(const Tensor& node_ptr, const Tensor& ids, const Tensor& op, const Tensor& level,
                                  const Tensor& is_source, const Tensor& in_indptr, const Tensor& in_index,
                                  const Tensor& in_perm, const Tensor& out_indptr, const Tensor& out_index,
                                  const Tensor& out_perm);

}  // namespace fgp
