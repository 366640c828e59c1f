// gather_attention(x[M, H, D], logit[E, H], index[E], indptr[R+1]) -> out[R, H, D]
//   alpha[e, h] = softmax over the entries e of row r of logit[., h]
//   out[r, h]   = sum_{e in row r} alpha[e, h] * x[index[e], h]
// Attention-weighted message passing in one pass (multi-head): the segment softmax, the gather and
// the segment sum are fused, so neither the [E, H] weights nor the [E, H, D] messages are stored.
// Empty rows give zeros. The backward (_gather_attention_backward) recomputes alpha and scatters to
// x through the transposed CSR, row-owned like the forward: no atomics, bitwise reproducible.
#pragma once

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "ops/common.h"
#include "ops/edge_dot.h"
#include "ops/fast_math.h"

namespace fgp {

// Max and 1 / sum of exp(logit - max) of head h over the entries [a, b) (a stable softmax; the sum
// runs in entry order). With exps != nullptr (a CPU task's scratch, b - a values) each entry's
// exp(logit - max) is also stored, so callers read it instead of recomputing the same value.
template <typename T>
FGP_HOST_DEVICE inline void softmax_row_stats(const T* logit, int64_t H, int64_t h, int64_t a, int64_t b, T* max_out,
                                              T* inv_sum_out, T* exps = nullptr) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t e = a; e < b; ++e) m = logit[e * H + h] > m ? logit[e * H + h] : m;
  T s = T(0);
  for (int64_t e = a; e < b; ++e) {
    const T ex = softmax_exp(logit[e * H + h] - m);
    if (exps) exps[e - a] = ex;
    s += ex;
  }
  *max_out = m;
  *inv_sum_out = T(1) / s;
}

template <typename T>
FGP_HOST_DEVICE inline T softmax_weight(T logit, T max, T inv_sum) {
  return softmax_exp(logit - max) * inv_sum;
}

// out[r, h, :] of one (row, head), entries in CSR order; CPU tasks (with scratch exps) and CUDA
// threads (exps = nullptr) both call this.
template <typename T>
FGP_HOST_DEVICE inline void attention_row_head(const T* x, const T* logit, const int64_t* index, int64_t a, int64_t b,
                                               int64_t r, int64_t h, int64_t H, int64_t D, T* out, T* exps) {
  T* o = out + (r * H + h) * D;
  for (int64_t d = 0; d < D; ++d) o[d] = T(0);
  if (a == b) return;
  T m, inv;
  softmax_row_stats(logit, H, h, a, b, &m, &inv, exps);
  for (int64_t e = a; e < b; ++e) {
    const T w = (exps ? exps[e - a] : softmax_exp(logit[e * H + h] - m)) * inv;
    const T* xr = x + (index[e] * H + h) * D;
    for (int64_t d = 0; d < D; ++d) o[d] = o[d] + w * xr[d];
  }
}

// d loss / d logit[e, h] = alpha * (<g[r, h], x[index[e], h]> - <g[r, h], out[r, h]>); g_out is the
// second dot, computed once per (row, head).
template <typename T>
FGP_HOST_DEVICE inline T attention_logit_grad(T alpha, const T* g_rh, const T* x_uh, T g_out, int64_t D) {
  return alpha * (row_dot(g_rh, x_uh, D) - g_out);
}

// One element of d loss / d x: grad_x[u, h, d] = sum over u's transposed entries q of
// alpha[t_perm[q], h] * g[t_index[q], h, d], in transposed-entry order.
template <typename T>
FGP_HOST_DEVICE inline T attention_x_grad_column(const T* alpha, const T* g, const int64_t* t_index,
                                                 const int64_t* t_perm, int64_t a, int64_t b, int64_t H, int64_t D,
                                                 int64_t h, int64_t d) {
  T acc = T(0);
  for (int64_t q = a; q < b; ++q) acc = acc + alpha[t_perm[q] * H + h] * g[(t_index[q] * H + h) * D + d];
  return acc;
}

// Backward of one (row, head): the softmax weights alpha[e, h] and d loss / d logit[e, h] of its
// entries (exps: as attention_row_head).
template <typename T>
FGP_HOST_DEVICE inline void attention_row_head_backward(const T* g, const T* x, const T* logit, const int64_t* index,
                                                        const T* out, int64_t a, int64_t b, int64_t r, int64_t h,
                                                        int64_t H, int64_t D, T* alpha, T* grad_logit, T* exps) {
  if (a == b) return;
  T m, inv;
  softmax_row_stats(logit, H, h, a, b, &m, &inv, exps);
  const T* g_rh = g + (r * H + h) * D;
  const T g_out = row_dot(g_rh, out + (r * H + h) * D, D);
  for (int64_t e = a; e < b; ++e) {
    const T w = (exps ? exps[e - a] : softmax_exp(logit[e * H + h] - m)) * inv;
    alpha[e * H + h] = w;
    grad_logit[e * H + h] = attention_logit_grad(w, g_rh, x + (index[e] * H + h) * D, g_out, D);
  }
}

// Shapes, dtypes and devices (index range and row pointers: check_index_range / the kernels).
inline void check_attention_args(const Tensor& x, const Tensor& logit, const Tensor& index, const Tensor& indptr) {
  check_float(x, "x");
  FGP_CHECK(x.dim() == 3, "x must have shape [M, H, D] (rows, heads, head width), got ", sizes_str(x));
  FGP_CHECK(logit.scalar_type() == x.scalar_type(), "logit must have the dtype of x (", dtype_name(x.scalar_type()),
            "), got ", dtype_name(logit.scalar_type()));
  check_index_vector(index, "index");
  FGP_CHECK(logit.dim() == 2 && logit.size(0) == index.numel() && logit.size(1) == x.size(1),
            "logit must have shape [E, H] = [", index.numel(), ", ", x.size(1), "], got ", sizes_str(logit));
  check_same_device(x, "x", logit, "logit");
  check_same_device(x, "x", index, "index");
  check_same_device(x, "x", indptr, "indptr");
  check_indptr_full(indptr, index.numel(), "indptr");
  check_index_range(index, x.size(0), "index");
}

inline void check_attention_backward_args(const Tensor& grad, const Tensor& x, const Tensor& logit,
                                          const Tensor& index, const Tensor& indptr, const Tensor& out,
                                          const Tensor& t_indptr, const Tensor& t_index, const Tensor& t_perm) {
  check_attention_args(x, logit, index, indptr);
  const int64_t R = indptr.numel() - 1;
  const std::vector<int64_t> out_shape{R, x.size(1), x.size(2)};
  FGP_CHECK(grad.sizes() == out_shape && out.sizes() == out_shape, "grad and out must have shape ",
            spaced(out_shape), ", got ", sizes_str(grad), " and ", sizes_str(out));
  FGP_CHECK(grad.scalar_type() == x.scalar_type() && out.scalar_type() == x.scalar_type(),
            "grad and out must have the dtype of x");
  check_index_vector(t_index, "t_index");
  check_index_vector(t_perm, "t_perm");
  FGP_CHECK(t_index.numel() == index.numel() && t_perm.numel() == index.numel(),
            "the transposed CSR must have as many entries as index (", index.numel(), ")");
  FGP_CHECK(t_indptr.numel() == x.size(0) + 1, "t_indptr must have one row per row of x plus one (", x.size(0) + 1,
            "), got ", t_indptr.numel());
  check_indptr_full(t_indptr, t_index.numel(), "t_indptr");
  check_index_range(t_index, R, "t_index");
  check_index_range(t_perm, index.numel(), "t_perm");
}

Tensor gather_attention_cpu(const Tensor& x, const Tensor& logit, const Tensor& index, const Tensor& indptr);
Tensor gather_attention_cuda(const Tensor& x, const Tensor& logit, const Tensor& index, const Tensor& indptr);
std::tuple<Tensor, Tensor> gather_attention_backward_cpu(const Tensor& grad, const Tensor& x, const Tensor& logit,
                                                         const Tensor& index, const Tensor& indptr, const Tensor& out,
                                                         const Tensor& t_indptr, const Tensor& t_index,
                                                         const Tensor& t_perm);
std::tuple<Tensor, Tensor> gather_attention_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& logit,
                                                          const Tensor& index, const Tensor& indptr, const Tensor& out,
                                                          const Tensor& t_indptr, const Tensor& t_index,
                                                          const Tensor& t_perm);

}  // namespace fgp
