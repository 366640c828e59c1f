#include "ops/gated_aggregate.h"

namespace fgp {
namespace {

// Channels handled per pass over a row's entries, their accumulators kept in registers (the usual
// hidden sizes, 64 floats / 32 doubles, in one pass).
template <typename T>
constexpr int64_t kGatedTile = 4 * 64 / static_cast<int64_t>(sizeof(T));

// The row loops below are those of gated_row_column / gated_row_backward_column /
// gated_source_backward_column with the channel loop innermost (vectorised, ISA-dispatched); per
// element the entries are visited in the same order, so CPU and CUDA round alike. Index ranges and
// row pointers were validated before (check_gated_args), so the loops carry no checks.

template <typename T>
FGP_CPU_CLONES void gated_forward_rows(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                       const GatedInputs<T> in, T* __restrict__ out, int64_t begin, int64_t end,
                                       int64_t F, T eps) {
  constexpr int64_t Tile = kGatedTile<T>;
  for (int64_t v = begin; v < end; ++v) {
    for (int64_t f0 = 0; f0 < F; f0 += Tile) {
      const int64_t width = std::min<int64_t>(Tile, F - f0);
      const T* __restrict__ gdv = in.gate_dst + v * in.ld_dst + f0;
      T num[Tile] = {}, den[Tile] = {};
      for (int64_t e = ptr[v]; e < ptr[v + 1]; ++e) {
        const T* __restrict__ gsu = in.gate_src + idx[e] * in.ld_src + f0;
        const T* __restrict__ xu = in.value + idx[e] * in.ld_value + f0;
        for (int64_t t = 0; t < width; ++t) gated_accumulate(edge_gate(gdv[t], gsu[t]), xu[t], &num[t], &den[t]);
      }
      for (int64_t t = 0; t < width; ++t) out[v * F + f0 + t] = gated_output(num[t], den[t], eps);
    }
  }
}

template <typename T>
FGP_CPU_CLONES void gated_backward_rows(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                        const T* __restrict__ grad, const T* __restrict__ out, const GatedInputs<T> in,
                                        T* __restrict__ scale, T* __restrict__ shift, T* __restrict__ grad_dst,
                                        int64_t begin, int64_t end, int64_t F, T eps) {
  constexpr int64_t Tile = kGatedTile<T>;
  for (int64_t v = begin; v < end; ++v) {
    for (int64_t f0 = 0; f0 < F; f0 += Tile) {
      const int64_t width = std::min<int64_t>(Tile, F - f0), o = v * F + f0;
      const T* __restrict__ gdv = in.gate_dst + v * in.ld_dst + f0;
      T den[Tile] = {}, sc[Tile], sh[Tile], acc[Tile] = {};
      for (int64_t e = ptr[v]; e < ptr[v + 1]; ++e) {
        const T* __restrict__ gsu = in.gate_src + idx[e] * in.ld_src + f0;
        for (int64_t t = 0; t < width; ++t) den[t] = den[t] + edge_gate(gdv[t], gsu[t]);
      }
      for (int64_t t = 0; t < width; ++t) gated_output_factors(grad[o + t], out[o + t], den[t], eps, &sc[t], &sh[t]);
      for (int64_t e = ptr[v]; e < ptr[v + 1]; ++e) {
        const T* __restrict__ gsu = in.gate_src + idx[e] * in.ld_src + f0;
        const T* __restrict__ xu = in.value + idx[e] * in.ld_value + f0;
        for (int64_t t = 0; t < width; ++t) acc[t] = acc[t] + gate_pre_grad(edge_gate(gdv[t], gsu[t]), xu[t], sc[t], sh[t]);
      }
      for (int64_t t = 0; t < width; ++t) {
        scale[o + t] = sc[t];
        shift[o + t] = sh[t];
        grad_dst[o + t] = acc[t];
      }
    }
  }
}

template <typename T>
FGP_CPU_CLONES void gated_source_rows(const int64_t* __restrict__ tptr, const int64_t* __restrict__ tidx,
                                      const GatedInputs<T> in, const T* __restrict__ scale,
                                      const T* __restrict__ shift, T* __restrict__ grad_src, T* __restrict__ grad_value,
                                      int64_t begin, int64_t end, int64_t F) {
  constexpr int64_t Tile = kGatedTile<T>;
  for (int64_t u = begin; u < end; ++u) {
    for (int64_t f0 = 0; f0 < F; f0 += Tile) {
      const int64_t width = std::min<int64_t>(Tile, F - f0), o = u * F + f0;
      const T* __restrict__ gsu = in.gate_src + u * in.ld_src + f0;
      const T* __restrict__ xu = in.value + u * in.ld_value + f0;
      T acc_src[Tile] = {}, acc_value[Tile] = {};
      for (int64_t q = tptr[u]; q < tptr[u + 1]; ++q) {
        const int64_t ov = tidx[q] * F + f0;
        const T* __restrict__ gdv = in.gate_dst + tidx[q] * in.ld_dst + f0;
        const T* __restrict__ scv = scale + ov;
        const T* __restrict__ shv = shift + ov;
        for (int64_t t = 0; t < width; ++t) {
          const T gate = edge_gate(gdv[t], gsu[t]);
          acc_src[t] = acc_src[t] + gate_pre_grad(gate, xu[t], scv[t], shv[t]);
          acc_value[t] = acc_value[t] + gate * scv[t];
        }
      }
      for (int64_t t = 0; t < width; ++t) {
        grad_src[o + t] = acc_src[t];
        grad_value[o + t] = acc_value[t];
      }
    }
  }
}

}  // namespace

Tensor gated_aggregate_cpu(const Tensor& gate_dst_in, const Tensor& gate_src_in, const Tensor& value_in,
                           const Tensor& index_in, const Tensor& indptr_in, double eps) {
  check_gated_args(gate_dst_in, gate_src_in, value_in, index_in, indptr_in, eps);
  const auto index = contiguous(index_in), indptr = contiguous(indptr_in);
  const int64_t N = gate_dst_in.size(0), F = gate_dst_in.size(1), E = index.numel();
  auto out = empty_like_shape(gate_dst_in, {N, F});
  FGP_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "gated_aggregate", [&] {
    const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
    const int64_t* ptr = indptr.const_data_ptr<int64_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_for(0, N, csr_row_grain(E, N, 8 * F), [&](int64_t begin, int64_t end) {
      gated_forward_rows<scalar_t>(ptr, idx, views.in, o, begin, end, F, static_cast<scalar_t>(eps));
    });
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> gated_aggregate_backward_cpu(const Tensor& grad_in, const Tensor& gate_dst_in,
                                                                const Tensor& gate_src_in, const Tensor& value_in,
                                                                const Tensor& index_in, const Tensor& indptr_in,
                                                                const Tensor& out_in, double eps,
                                                                const Tensor& t_indptr_in, const Tensor& t_index_in) {
  check_gated_backward_args(grad_in, gate_dst_in, gate_src_in, value_in, index_in, indptr_in, out_in, t_indptr_in,
                            t_index_in, eps);
  const auto grad = contiguous(grad_in), index = contiguous(index_in), indptr = contiguous(indptr_in);
  const auto out = contiguous(out_in), t_indptr = contiguous(t_indptr_in), t_index = contiguous(t_index_in);
  const int64_t N = gate_dst_in.size(0), M = gate_src_in.size(0), F = gate_dst_in.size(1), E = index.numel();
  const auto& like = gate_dst_in;  // dtype and device of every result
  auto grad_dst = empty_like_shape(like, {N, F}), grad_src = empty_like_shape(like, {M, F});
  auto grad_value = empty_like_shape(like, {M, F});
  auto scale = empty_like_shape(like, {N, F}), shift = empty_like_shape(like, {N, F});
  FGP_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "_gated_aggregate_backward", [&] {
    const auto ep = static_cast<scalar_t>(eps);
    const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
    const int64_t* ptr = indptr.const_data_ptr<int64_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const int64_t* tptr = t_indptr.const_data_ptr<int64_t>();
    const int64_t* tidx = t_index.const_data_ptr<int64_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* o = out.const_data_ptr<scalar_t>();
    scalar_t* sc = scale.mutable_data_ptr<scalar_t>();
    scalar_t* sh = shift.mutable_data_ptr<scalar_t>();
    scalar_t* gd = grad_dst.mutable_data_ptr<scalar_t>();
    scalar_t* gs = grad_src.mutable_data_ptr<scalar_t>();
    scalar_t* gv = grad_value.mutable_data_ptr<scalar_t>();
    // Row pass: the gate sums again, each row's output factors, grad_dst (a row sum).
    parallel_for(0, N, csr_row_grain(E, N, 16 * F), [&](int64_t begin, int64_t end) {
      gated_backward_rows<scalar_t>(ptr, idx, g, o, views.in, sc, sh, gd, begin, end, F, ep);
    });
    // Transposed pass: every source row owned by one task, its entries (the rows reading it) in order.
    parallel_for(0, M, csr_row_grain(E, M, 8 * F), [&](int64_t begin, int64_t end) {
      gated_source_rows<scalar_t>(tptr, tidx, views.in, sc, sh, gs, gv, begin, end, F);
    });
  });
  return {grad_dst, grad_src, grad_value};
}

namespace {

// The transposed CSR only matters to autograd (read by the backward); the forward ignores it.
Tensor gated_aggregate_op(const Tensor& gate_dst, const Tensor& gate_src, const Tensor& value, const Tensor& index,
                          const Tensor& indptr, double eps, const std::optional<Tensor>&,
                          const std::optional<Tensor>&) {
  return gated_aggregate_cpu(gate_dst, gate_src, value, index, indptr, eps);
}

}  // namespace

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CPU, m) {
  m.impl("gated_aggregate", TORCH_BOX(&fgp::gated_aggregate_op));
  m.impl("_gated_aggregate_backward", TORCH_BOX(&fgp::gated_aggregate_backward_cpu));
}
