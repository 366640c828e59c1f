#include "ops/gated_aggregate.h"

#include <ATen/Parallel.h>

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

at::Tensor gated_aggregate_cpu(const at::Tensor& gate_dst_in, const at::Tensor& gate_src_in, const at::Tensor& value_in,
                               const at::Tensor& index_in, const at::Tensor& indptr_in, double eps) {
  check_gated_args(gate_dst_in, gate_src_in, value_in, index_in, indptr_in, eps);
  const auto index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const int64_t N = gate_dst_in.size(0), F = gate_dst_in.size(1), E = index.numel();
  auto out = at::empty({N, F}, gate_dst_in.options());
  AT_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "gated_aggregate_cpu", [&] {
    const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
    at::parallel_for(0, N, csr_row_grain(E, N, 8 * F), [&](int64_t begin, int64_t end) {
      gated_forward_rows<scalar_t>(indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), views.in,
                                   out.data_ptr<scalar_t>(), begin, end, F, static_cast<scalar_t>(eps));
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_aggregate_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& gate_dst_in, const at::Tensor& gate_src_in, const at::Tensor& value_in,
    const at::Tensor& index_in, const at::Tensor& indptr_in, const at::Tensor& out_in, double eps,
    const at::Tensor& t_indptr_in, const at::Tensor& t_index_in) {
  check_gated_backward_args(grad_in, gate_dst_in, gate_src_in, value_in, index_in, indptr_in, out_in, t_indptr_in,
                            t_index_in, eps);
  const auto grad = grad_in.contiguous(), index = index_in.contiguous(), indptr = indptr_in.contiguous();
  const auto out = out_in.contiguous(), t_indptr = t_indptr_in.contiguous(), t_index = t_index_in.contiguous();
  const int64_t N = gate_dst_in.size(0), M = gate_src_in.size(0), F = gate_dst_in.size(1), E = index.numel();
  const auto opts = gate_dst_in.options();
  auto grad_dst = at::empty({N, F}, opts), grad_src = at::empty({M, F}, opts), grad_value = at::empty({M, F}, opts);
  auto scale = at::empty({N, F}, opts), shift = at::empty({N, F}, opts);
  AT_DISPATCH_FLOATING_TYPES(gate_dst_in.scalar_type(), "gated_aggregate_backward_cpu", [&] {
    const auto ep = static_cast<scalar_t>(eps);
    const GatedViews<scalar_t> views(gate_dst_in, gate_src_in, value_in);
    // Row pass: the gate sums again, each row's output factors, grad_dst (a row sum).
    at::parallel_for(0, N, csr_row_grain(E, N, 16 * F), [&](int64_t begin, int64_t end) {
      gated_backward_rows<scalar_t>(indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), grad.data_ptr<scalar_t>(),
                                    out.data_ptr<scalar_t>(), views.in, scale.data_ptr<scalar_t>(),
                                    shift.data_ptr<scalar_t>(), grad_dst.data_ptr<scalar_t>(), begin, end, F, ep);
    });
    // Transposed pass: every source row owned by one task, its entries (the rows reading it) in order.
    at::parallel_for(0, M, csr_row_grain(E, M, 8 * F), [&](int64_t begin, int64_t end) {
      gated_source_rows<scalar_t>(t_indptr.data_ptr<int64_t>(), t_index.data_ptr<int64_t>(), views.in,
                                  scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(),
                                  grad_src.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>(), begin, end, F);
    });
  });
  return {grad_dst, grad_src, grad_value};
}

}  // namespace fgp
