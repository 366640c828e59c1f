// dot_attention(q[M, H, D], k[C, H, D], v[C, H, D], index[E], indptr[M+1], scale) -> out[M, H, D]
//   score[e, h] = scale * <q[r, h], k[index[e], h]>          for the entries e of row r
//   out[r, h]   = sum_e softmax_e(score[., h]) * v[index[e], h]
// Sparse multi-head dot-product attention over a CSR of allowed (query, key) pairs -- e.g. the
// flow-related pairs of flow-aware attention -- fused: neither the gathered [E, H, D] queries/keys
// nor the [E, H] scores are materialised. Empty rows give zeros. The backward recomputes the scores
// and scatters to keys and values through the transposed CSR (no atomics).
// Optional attention dropout (p in [0, 1), seed): weight [e, h] is kept with probability 1 - p by
// dropout.h's counter-based hash of element e * H + h and scaled by 1 / (1 - p), so the mask is
// that of fgp::dropout on the [E, H] weights, recomputed in the backward and never stored. The
// softmax gradient keeps its usual form: sum_e weight_e * keep_e <g, v_e> is still <g, out>.
#pragma once

#include <limits>
#include <tuple>

#include "ops/common.h"
#include "ops/dropout.h"
#include "ops/edge_dot.h"
#include "ops/fast_math.h"

namespace fgp {

// Attention dropout of one call: threshold 0 means no dropout (every weight kept, scale 1).
template <typename T>
struct AttentionDropout {
  uint64_t key;
  uint32_t threshold;
  T scale;  // 1 / (1 - p)
};

template <typename T>
inline AttentionDropout<T> attention_dropout(double p, int64_t seed) {
  if (p <= 0.0) return {0, 0, T(1)};
  return {dropout_key(seed), dropout_threshold(p), static_cast<T>(1.0 / (1.0 - p))};
}

// The factor of weight [e, h]: 0 or 1 / (1 - p).
template <typename T>
FGP_HOST_DEVICE inline T attention_keep(const AttentionDropout<T>& drop, int64_t e, int64_t h, int64_t H) {
  if (drop.threshold == 0) return T(1);
  return dropout_element(T(1), drop.key, e * H + h, drop.threshold, drop.scale);
}

template <typename T>
FGP_HOST_DEVICE inline T attention_score(const T* q, const T* k, int64_t D, T scale) {
  return scale * row_dot(q, k, D);
}

// Softmax statistics of (row r, head h): the max score and 1 / sum of softmax_exp(score - max).
// With w != nullptr (a CPU task's scratch, b - a values) each score is computed once and w ends
// holding the entries' softmax_exp(score - max); without it, callers recompute the same values.
template <typename T>
FGP_HOST_DEVICE inline void dot_attention_stats(const T* q, const T* k, const int64_t* index, int64_t a, int64_t b,
                                                int64_t r, int64_t h, int64_t H, int64_t D, T scale, T* max_out,
                                                T* inv_out, T* w) {
  const T* qr = q + (r * H + h) * D;
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t e = a; e < b; ++e) {
    const T s = attention_score(qr, k + (index[e] * H + h) * D, D, scale);
    if (w) w[e - a] = s;
    m = s > m ? s : m;
  }
  T sum = T(0);
  for (int64_t e = a; e < b; ++e) {
    const T ex = softmax_exp((w ? w[e - a] : attention_score(qr, k + (index[e] * H + h) * D, D, scale)) - m);
    if (w) w[e - a] = ex;
    sum += ex;
  }
  *max_out = m;
  *inv_out = T(1) / sum;
}

// The softmax weight of entry e (after dot_attention_stats with the same w).
template <typename T>
FGP_HOST_DEVICE inline T dot_attention_weight(const T* qr, const T* kc, int64_t D, T scale, T m, T inv, const T* w,
                                              int64_t slot) {
  return (w ? w[slot] : softmax_exp(attention_score(qr, kc, D, scale) - m)) * inv;
}

// out[r, h, :] for one (row, head); CPU tasks (with scratch w) and CUDA threads (w = nullptr) both
// call this.
template <typename T>
FGP_HOST_DEVICE inline void dot_attention_row_head(const T* q, const T* k, const T* v, const int64_t* index,
                                                   int64_t a, int64_t b, int64_t r, int64_t h, int64_t H, int64_t D,
                                                   T scale, T* out, T* w, AttentionDropout<T> drop) {
  T* o = out + (r * H + h) * D;
  for (int64_t d = 0; d < D; ++d) o[d] = T(0);
  if (a == b) return;
  T m, inv;
  dot_attention_stats(q, k, index, a, b, r, h, H, D, scale, &m, &inv, w);
  const T* qr = q + (r * H + h) * D;
  for (int64_t e = a; e < b; ++e) {
    const int64_t c = index[e];
    const T wt = dot_attention_weight(qr, k + (c * H + h) * D, D, scale, m, inv, w, e - a) *
                 attention_keep(drop, e, h, H);
    const T* vc = v + (c * H + h) * D;
    for (int64_t d = 0; d < D; ++d) o[d] = o[d] + wt * vc[d];
  }
}

// Backward of one (row, head): alpha and d loss / d score of its entries, and dq[r, h, :].
template <typename T>
FGP_HOST_DEVICE inline void dot_attention_row_head_backward(const T* g, const T* q, const T* k, const T* v,
                                                            const T* out, const int64_t* index, int64_t a, int64_t b,
                                                            int64_t r, int64_t h, int64_t H, int64_t D, T scale,
                                                            T* alpha, T* dscore, T* dq, T* w,
                                                            AttentionDropout<T> drop) {
  T* dqr = dq + (r * H + h) * D;
  for (int64_t d = 0; d < D; ++d) dqr[d] = T(0);
  if (a == b) return;
  T m, inv;
  dot_attention_stats(q, k, index, a, b, r, h, H, D, scale, &m, &inv, w);
  const T* qr = q + (r * H + h) * D;
  const T* gr = g + (r * H + h) * D;
  const T g_out = row_dot(gr, out + (r * H + h) * D, D);
  for (int64_t e = a; e < b; ++e) {
    const int64_t c = index[e];
    const T* kc = k + (c * H + h) * D;
    const T wt = dot_attention_weight(qr, kc, D, scale, m, inv, w, e - a);
    const T keep = attention_keep(drop, e, h, H);
    // d out / d weight_e = keep_e v_e; the softmax backward's sum_j weight_j keep_j <g, v_j> = <g, out>
    const T ds = wt * (keep * row_dot(gr, v + (c * H + h) * D, D) - g_out);
    alpha[e * H + h] = wt * keep;  // the dropped weight: the value gradient
    dscore[e * H + h] = ds;
    for (int64_t d = 0; d < D; ++d) dqr[d] = dqr[d] + scale * ds * kc[d];
  }
}

// dk[c, h, d] and dv[c, h, d] over the transposed entries q of key c (in transposed order).
template <typename T>
FGP_HOST_DEVICE inline void dot_attention_key_grad(const T* g, const T* q, const T* alpha, const T* dscore,
                                                   const int64_t* t_index, const int64_t* t_perm, int64_t a, int64_t b,
                                                   int64_t h, int64_t d, int64_t H, int64_t D, T scale, T* dk, T* dv) {
  T acc_k = T(0), acc_v = T(0);
  for (int64_t t = a; t < b; ++t) {
    const int64_t e = t_perm[t], r = t_index[t];
    acc_k = acc_k + scale * dscore[e * H + h] * q[(r * H + h) * D + d];
    acc_v = acc_v + alpha[e * H + h] * g[(r * H + h) * D + d];
  }
  *dk = acc_k;
  *dv = acc_v;
}

inline void check_dot_attention_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& index,
                                     const Tensor& indptr, double p = 0.0) {
  check_float(q, "q");
  FGP_CHECK(p >= 0.0 && p < 1.0, "attention dropout must be in [0, 1), got ", p);
  FGP_CHECK(q.dim() == 3, "q must have shape [M, H, D], got ", sizes_str(q));
  FGP_CHECK(k.dim() == 3 && k.size(1) == q.size(1) && k.size(2) == q.size(2),
            "k must have shape [C, H, D] with the heads and width of q, got ", sizes_str(k));
  FGP_CHECK(v.sizes() == k.sizes(), "v must have the shape of k, got ", sizes_str(v), " and ", sizes_str(k));
  FGP_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
            "q, k and v must share a dtype");
  check_index_vector(index, "index");
  for (const auto* t : {&k, &v, &index, &indptr}) check_same_device(q, "q", *t, "k, v, index and indptr");
  FGP_CHECK(indptr.numel() == q.size(0) + 1, "indptr must have one row per query plus one (", q.size(0) + 1,
            "), got ", indptr.numel());
  check_indptr_full(indptr, index.numel(), "indptr");
  check_index_range(index, k.size(0), "index");
}

inline void check_dot_attention_backward_args(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& index, const Tensor& indptr, const Tensor& out,
                                              const Tensor& t_indptr, const Tensor& t_index, const Tensor& t_perm,
                                              double p) {
  check_dot_attention_args(q, k, v, index, indptr, p);
  FGP_CHECK(grad.sizes() == q.sizes() && out.sizes() == q.sizes(), "grad and out must have the shape of q");
  FGP_CHECK(grad.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
            "grad and out must have the dtype of q");
  check_index_vector(t_index, "t_index");
  check_index_vector(t_perm, "t_perm");
  FGP_CHECK(t_indptr.numel() == k.size(0) + 1, "t_indptr must have one row per key plus one");
  FGP_CHECK(t_index.numel() == index.numel() && t_perm.numel() == index.numel(),
            "the transposed CSR must have as many entries as index");
  check_indptr_full(t_indptr, t_index.numel(), "t_indptr");
  check_index_range(t_index, q.size(0), "t_index");
  check_index_range(t_perm, index.numel(), "t_perm");
}

Tensor dot_attention_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& index, const Tensor& indptr,
                         double scale, double p, int64_t seed);
Tensor dot_attention_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& index, const Tensor& indptr,
                          double scale, double p, int64_t seed);
std::tuple<Tensor, Tensor, Tensor> dot_attention_backward_cpu(const Tensor& grad, const Tensor& q, const Tensor& k,
                                                              const Tensor& v, const Tensor& index,
                                                              const Tensor& indptr, const Tensor& out, double scale,
                                                              const Tensor& t_indptr, const Tensor& t_index,
                                                              const Tensor& t_perm, double p, int64_t seed);
std::tuple<Tensor, Tensor, Tensor> dot_attention_backward_cuda(const Tensor& grad, const Tensor& q, const Tensor& k,
                                                               const Tensor& v, const Tensor& index,
                                                               const Tensor& indptr, const Tensor& out, double scale,
                                                               const Tensor& t_indptr, const Tensor& t_index,
                                                               const Tensor& t_perm, double p, int64_t seed);

}  // namespace fgp
