// gated_aggregate(gate_dst[N, F], gate_src[M, F], value[M, F], index[E], indptr[N+1], eps) -> out[N, F]
//   g_e    = sigmoid(gate_dst[v] + gate_src[u_e])                 (per channel; v the row of entry e)
//   out[v] = sum_e g_e * value[u_e] / (sum_e g_e + eps)        (eps > 0)
// The edge-gated aggregation of GatedGCN / ResGatedGCN (Bresson & Laurent), fused: gather, gate,
// both segment sums and the normalisation in one pass, so neither the [E, F] gates nor the gathered
// rows are stored. Rows without entries give 0. The backward (_gated_aggregate_backward) recomputes
// the gates: a row pass gives grad_dst (and each row's two output factors), a pass over the
// transposed CSR gives grad_src and grad_value, each row owned by one task or thread: no atomics,
// bitwise reproducible.
#pragma once

#include <tuple>

#include "ops/common.h"
#include "ops/fast_math.h"

namespace fgp {

// The per-element algebra, shared by the CPU loops (columns innermost) and the CUDA threads (one per
// element), so both round the same way (entries are visited in CSR order on both).
template <typename T>
FGP_HOST_DEVICE inline T edge_gate(T gate_dst, T gate_src) {
  return gate_sigmoid(gate_dst + gate_src);
}

template <typename T>
FGP_HOST_DEVICE inline void gated_accumulate(T gate, T value, T* num, T* den) {
  *num = *num + gate * value;
  *den = *den + gate;
}

// eps > 0 (checked): a row without entries gives 0 / eps = 0.
template <typename T>
FGP_HOST_DEVICE inline T gated_output(T num, T den, T eps) {
  return num / (den + eps);
}

// The row's two output factors: d out / d gate_e = (value_e - out) / (den + eps), so with
// scale = grad_out / (den + eps) and shift = -scale * out the gradient through entry e is
// scale * value_e + shift (gate_pre_grad) and through value_e it is gate_e * scale.
template <typename T>
FGP_HOST_DEVICE inline void gated_output_factors(T grad_out, T out, T den, T eps, T* scale, T* shift) {
  *scale = grad_out / (den + eps);
  *shift = -*scale * out;
}

// d loss / d (gate_dst + gate_src) of one entry and one channel.
template <typename T>
FGP_HOST_DEVICE inline T gate_pre_grad(T gate, T value, T scale, T shift) {
  return (scale * value + shift) * gate * (T(1) - gate);
}

// The three inputs as rows with their own row strides (elements between rows; channels are
// contiguous). The layer passes column slices of one [N, 4F] projection, so no copies are made.
template <typename T>
struct GatedInputs {
  const T* gate_dst;
  const T* gate_src;
  const T* value;
  int64_t ld_dst, ld_src, ld_value;
};

// One output element (row v, channel f) over the entries [a, b) (CUDA: one thread each).
template <typename T>
FGP_HOST_DEVICE inline T gated_row_column(const GatedInputs<T>& in, const int64_t* index, int64_t a, int64_t b,
                                          int64_t v, int64_t f, T eps) {
  T num = T(0), den = T(0);
  const T gd = in.gate_dst[v * in.ld_dst + f];
  for (int64_t e = a; e < b; ++e) {
    const int64_t u = index[e];
    gated_accumulate(edge_gate(gd, in.gate_src[u * in.ld_src + f]), in.value[u * in.ld_value + f], &num, &den);
  }
  return gated_output(num, den, eps);
}

// Backward row pass of one element (row v, channel f): the gate sum again, the output factors
// (written to scale/shift, contiguous [N, F]), and the returned grad_dst element (CUDA: one thread
// each). grad and out are contiguous [N, F].
template <typename T>
FGP_HOST_DEVICE inline T gated_row_backward_column(const T* grad, const T* out, const GatedInputs<T>& in,
                                                   const int64_t* index, int64_t a, int64_t b, int64_t v, int64_t F,
                                                   int64_t f, T eps, T* scale, T* shift) {
  const T gd = in.gate_dst[v * in.ld_dst + f];
  T den = T(0);
  for (int64_t e = a; e < b; ++e) den = den + edge_gate(gd, in.gate_src[index[e] * in.ld_src + f]);
  T sc, sh;
  gated_output_factors(grad[v * F + f], out[v * F + f], den, eps, &sc, &sh);
  scale[v * F + f] = sc;
  shift[v * F + f] = sh;
  T acc = T(0);
  for (int64_t e = a; e < b; ++e) {
    const int64_t u = index[e];
    acc = acc + gate_pre_grad(edge_gate(gd, in.gate_src[u * in.ld_src + f]), in.value[u * in.ld_value + f], sc, sh);
  }
  return acc;
}

// Backward transposed pass of one element (source row u, channel f) over its transposed entries
// [a, b) (t_index: the rows v reading u): grad_src and grad_value (contiguous [M, F]).
template <typename T>
FGP_HOST_DEVICE inline void gated_source_backward_column(const GatedInputs<T>& in, const T* scale, const T* shift,
                                                         const int64_t* t_index, int64_t a, int64_t b, int64_t u,
                                                         int64_t F, int64_t f, T* grad_src, T* grad_value) {
  const T gs = in.gate_src[u * in.ld_src + f], x = in.value[u * in.ld_value + f];
  T acc_src = T(0), acc_value = T(0);
  for (int64_t q = a; q < b; ++q) {
    const int64_t v = t_index[q];
    const T gate = edge_gate(in.gate_dst[v * in.ld_dst + f], gs);
    acc_src = acc_src + gate_pre_grad(gate, x, scale[v * F + f], shift[v * F + f]);
    acc_value = acc_value + gate * scale[v * F + f];
  }
  grad_src[u * F + f] = acc_src;
  grad_value[u * F + f] = acc_value;
}

// Rows with unit channel stride are read in place (their row stride recorded); anything else is
// made contiguous first. `keep` holds the tensor the pointer refers to.
template <typename T>
inline const T* rows_view(const Tensor& t, Tensor* keep, int64_t* ld) {
  *keep = (t.size(1) <= 1 || t.stride(1) == 1) && t.stride(0) >= t.size(1) ? t : contiguous(t);
  *ld = keep->size(0) > 1 ? keep->stride(0) : keep->size(1);
  return keep->template const_data_ptr<T>();
}

template <typename T>
struct FGP_HIDDEN GatedViews {
  Tensor dst, src, value;
  GatedInputs<T> in;
  GatedViews(const Tensor& gate_dst, const Tensor& gate_src, const Tensor& val) {
    in.gate_dst = rows_view<T>(gate_dst, &dst, &in.ld_dst);
    in.gate_src = rows_view<T>(gate_src, &src, &in.ld_src);
    in.value = rows_view<T>(val, &value, &in.ld_value);
  }
};

// Shapes, dtypes and devices; index ranges (index < M, t_index < N) and the row pointers are checked
// here too (check_index_range, check_indptr_full), so bad input is an error on either device.
inline void check_gated_args(const Tensor& gate_dst, const Tensor& gate_src, const Tensor& value, const Tensor& index,
                             const Tensor& indptr, double eps) {
  check_float(gate_dst, "gate_dst");
  // eps > 0: with eps = 0 a row whose gates all saturate (below exp's range) would divide by a
  // clamped ~1e-38 (an unweighted mean forward, inf/NaN gradients) where torch's sigmoid gives 0.
  FGP_CHECK(eps > 0, "eps must be > 0, got ", eps);
  FGP_CHECK(gate_dst.dim() == 2, "gate_dst must be [N, F], got ", sizes_str(gate_dst));
  FGP_CHECK(gate_src.dim() == 2 && gate_src.size(1) == gate_dst.size(1), "gate_src must be [M, F] with F = ",
            gate_dst.size(1), ", got ", sizes_str(gate_src));
  FGP_CHECK(value.sizes() == gate_src.sizes(), "value must have the shape of gate_src ", sizes_str(gate_src),
            ", got ", sizes_str(value));
  FGP_CHECK(gate_src.scalar_type() == gate_dst.scalar_type() && value.scalar_type() == gate_dst.scalar_type(),
            "gate_dst, gate_src and value must have one dtype");
  check_index_vector(index, "index");
  check_same_device(gate_dst, "gate_dst", gate_src, "gate_src");
  check_same_device(gate_dst, "gate_dst", value, "value");
  check_same_device(gate_dst, "gate_dst", index, "index");
  check_same_device(gate_dst, "gate_dst", indptr, "indptr");
  FGP_CHECK(indptr.numel() == gate_dst.size(0) + 1, "indptr must have N + 1 = ", gate_dst.size(0) + 1,
            " entries (one row per row of gate_dst), got ", indptr.numel());
  check_indptr_full(indptr, index.numel(), "indptr");
  check_index_range(index, gate_src.size(0), "index");
}

inline void check_gated_backward_args(const Tensor& grad, const Tensor& gate_dst, const Tensor& gate_src,
                                      const Tensor& value, const Tensor& index, const Tensor& indptr,
                                      const Tensor& out, const Tensor& t_indptr, const Tensor& t_index, double eps) {
  check_gated_args(gate_dst, gate_src, value, index, indptr, eps);
  FGP_CHECK(grad.sizes() == gate_dst.sizes() && out.sizes() == gate_dst.sizes(),
            "grad and out must have the shape of gate_dst ", sizes_str(gate_dst));
  FGP_CHECK(grad.scalar_type() == gate_dst.scalar_type() && out.scalar_type() == gate_dst.scalar_type(),
            "grad and out must have the dtype of gate_dst");
  check_same_device(gate_dst, "gate_dst", grad, "grad");
  check_same_device(gate_dst, "gate_dst", out, "out");
  check_index_vector(t_index, "t_index");
  check_same_device(gate_dst, "gate_dst", t_index, "t_index");
  check_same_device(gate_dst, "gate_dst", t_indptr, "t_indptr");
  FGP_CHECK(t_index.numel() == index.numel(), "the transposed CSR must have as many entries as index (",
            index.numel(), "), got ", t_index.numel());
  FGP_CHECK(t_indptr.numel() == gate_src.size(0) + 1, "t_indptr must have one row per row of gate_src plus one (",
            gate_src.size(0) + 1, "), got ", t_indptr.numel());
  check_indptr_full(t_indptr, t_index.numel(), "t_indptr");
  check_index_range(t_index, gate_dst.size(0), "t_index");
}

Tensor gated_aggregate_cpu(const Tensor& gate_dst, const Tensor& gate_src, const Tensor& value, const Tensor& index,
                           const Tensor& indptr, double eps);
Tensor gated_aggregate_cuda(const Tensor& gate_dst, const Tensor& gate_src, const Tensor& value, const Tensor& index,
                            const Tensor& indptr, double eps);
std::tuple<Tensor, Tensor, Tensor> gated_aggregate_backward_cpu(const Tensor& grad, const Tensor& gate_dst,
                                                                const Tensor& gate_src, const Tensor& value,
                                                                const Tensor& index, const Tensor& indptr,
                                                                const Tensor& out, double eps, const Tensor& t_indptr,
                                                                const Tensor& t_index);
std::tuple<Tensor, Tensor, Tensor> gated_aggregate_backward_cuda(const Tensor& grad, const Tensor& gate_dst,
                                                                 const Tensor& gate_src, const Tensor& value,
                                                                 const Tensor& index, const Tensor& indptr,
                                                                 const Tensor& out, double eps,
                                                                 const Tensor& t_indptr, const Tensor& t_index);

}  // namespace fgp
