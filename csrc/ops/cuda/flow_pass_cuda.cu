#include "ops/flow_pass.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// The level loop runs on the host; per level, the GEMMs go to torch (aten::linear: cuBLAS) and the
// rest to these kernels, which call the same per-row / per-element functions as the CPU kernel.
template <typename T>
__global__ void attention_rows_kernel(int64_t s, int64_t R, int64_t es, const int64_t* indptr, const int64_t* index,
                                      const T* h0, const T* h, const T* att_dst, const T* att_src, const T* att_bias,
                                      int64_t F, T* logit, T* msg) {
  FGP_CUDA_KERNEL_LOOP(r, R) {
    flow_attention_row(s + r, r, es, indptr, index, h0, h, att_dst, att_src, att_bias[0], F, logit, msg);
  }
}

// Gates and new state of rows [s, s + R); gi is the whole pass's [N, 3F] input projection, gh the
// level's [R, 3F] message projection; the message is the cell's hidden state.
template <typename T>
__global__ void gru_forward_kernel(int64_t s, int64_t R, int64_t F, const T* gi, const T* gh, const T* msg, T* h,
                                   T* rz, T* n, T* gh_n) {
  FGP_CUDA_KERNEL_LOOP(t, R * F) {
    const int64_t r = t / F, f = t % F, v = s + r;
    T rg, zg, ng;
    gru_gates(gi + v * 3 * F, gh + r * 3 * F, F, f, &rg, &zg, &ng);
    rz[v * 2 * F + f] = rg;
    rz[v * 2 * F + F + f] = zg;
    n[v * F + f] = ng;
    gh_n[v * F + f] = gh[r * 3 * F + 2 * F + f];
    h[v * F + f] = gru_combine(zg, ng, msg[v * F + f]);
  }
}

// Cell backward of rows [s, s + R): the rows' dgi, dgh (whole-pass [N, 3F]) and the direct message
// gradient dmsg ([R, F]).
template <typename T>
__global__ void gru_backward_kernel(int64_t s, int64_t R, int64_t F, const T* rz, const T* n, const T* gh_n,
                                    const T* msg, const T* g, T* dgi, T* dgh, T* dmsg) {
  FGP_CUDA_KERNEL_LOOP(t, R * F) {
    const int64_t r = t / F, f = t % F, v = s + r;
    dmsg[t] = gru_cell_backward(rz[v * 2 * F + f], rz[v * 2 * F + F + f], n[v * F + f], gh_n[v * F + f],
                                msg[v * F + f], g[v * F + f], F, f, dgi + v * 3 * F, dgh + v * 3 * F);
  }
}

template <typename T>
__global__ void attention_rows_backward_kernel(int64_t s, int64_t R, int64_t es, const int64_t* indptr,
                                               const int64_t* index, const T* h, const T* att_src, const T* logit,
                                               const T* msg, const T* dmsg, int64_t F, T* dx, T* g_src_rows,
                                               T* g_bias_rows, T* ds) {
  FGP_CUDA_KERNEL_LOOP(r, R) {
    ds[r] = flow_attention_row_backward(s + r, r, es, indptr, index, h, att_src, logit, msg, dmsg, F, dx, g_src_rows,
                                        &g_bias_rows[r]);
  }
}

// One thread per (distinct predecessor, column): its entries summed in order, added once.
template <typename T>
__global__ void group_scatter_kernel(int64_t g0, int64_t num_groups, int64_t es, int64_t F, const int64_t* group_perm,
                                     const int64_t* group_ptr, const int64_t* group_src, const T* dx, T* g) {
  FGP_CUDA_KERNEL_LOOP(t, num_groups * F) {
    const int64_t grp = g0 + t / F, f = t % F;
    T acc = T(0);
    for (int64_t q = group_ptr[grp]; q < group_ptr[grp + 1]; ++q) acc = acc + dx[(group_perm[q] - es) * F + f];
    g[group_src[grp] * F + f] += acc;
  }
}

// out[i, j] += u[i] * v[j] for out [rows, cols] (contiguous): the backward's grad_h0 += ds att_dst^T,
// ATen's addr_ (takes Scalars, which the stable ABI cannot pass) as a kernel.
template <typename T>
__global__ void add_outer_kernel(int64_t rows, int64_t cols, const T* u, const T* v, T* out) {
  FGP_CUDA_KERNEL_LOOP(t, rows * cols) {
    const int64_t i = t / cols, j = t % cols;
    out[t] = out[t] + u[i] * v[j];
  }
}

void add_outer_cuda(Tensor& out, const Tensor& u, const Tensor& v) {
  const int64_t rows = out.size(0), cols = out.size(1);
  if (rows * cols == 0) return;
  FGP_DISPATCH_FLOATING_TYPES(out.scalar_type(), "flow_pass_backward_cuda", [&] {
    add_outer_kernel<scalar_t><<<cuda::blocks_for(rows * cols), cuda::kThreads, 0, cuda::stream()>>>(
        rows, cols, u.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    cuda::check_launch("flow_pass_backward");
  });
}

std::vector<int64_t> level_entry_starts(const Tensor& indptr, const std::vector<int64_t>& levels) {
  const auto starts = host_long(aten::index_select(indptr, 0, from_host(levels, indptr.device())));
  const int64_t* p = starts.const_data_ptr<int64_t>();
  return {p, p + starts.numel()};
}

}  // namespace

FlowPassOutputs flow_pass_forward_cuda(const Tensor& h0_in, const Tensor& level_ptr, const Tensor& indptr_in,
                                       const Tensor& index_in, const Tensor& group_level_ptr, const Tensor& group_perm,
                                       const Tensor& group_ptr, const Tensor& group_src, const Tensor& att_dst_in,
                                       const Tensor& att_src_in, const Tensor& att_bias, const Tensor& w_ih,
                                       const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  const FlowPassArgs a = flow_pass_args(h0_in, level_ptr, indptr_in, index_in, group_level_ptr, group_perm, group_ptr,
                                        group_src, att_dst_in, att_src_in, att_bias, w_ih, w_hh, b_ih, b_hh);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto guard = cuda::guard_for(a.h0);
  const auto h0 = contiguous(a.h0), indptr = contiguous(a.indptr), index = contiguous(a.index);
  const auto att_dst = contiguous(a.att_dst), att_src = contiguous(a.att_src), bias = contiguous(a.att_bias);
  const int64_t N = h0.size(0), F = h0.size(1), E = index.numel(), L = static_cast<int64_t>(levels.size()) - 1;
  // The GRU input is h0: one GEMM (linear: addmm(b_ih, h0, w_ih^T)).
  const auto gi = contiguous(aten::linear(h0, a.w_ih, a.b_ih));
  auto h = empty_like_shape(h0, {N, F});
  auto msg = zeros_tensor({N, F}, h0.scalar_type(), h0.device()), rz = empty_like_shape(h0, {N, 2 * F});
  auto n = empty_like_shape(h0, {N, F});
  auto gh_n = empty_like_shape(h0, {N, F}), logit = empty_like_shape(h0, {E});
  const auto entry_starts = level_entry_starts(indptr, levels);
  FGP_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_cuda", [&] {
    for (int64_t l = 0; l < L; ++l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      if (El > 0) {
        attention_rows_kernel<scalar_t><<<cuda::blocks_for(R), cuda::kThreads, 0, cuda::stream()>>>(
            s, R, es, indptr.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(),
            h0.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(), att_dst.const_data_ptr<scalar_t>(),
            att_src.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(), F,
            logit.mutable_data_ptr<scalar_t>() + es, msg.mutable_data_ptr<scalar_t>() + s * F);
        cuda::check_launch("flow_pass");
      }
      // linear(msg[s:t], w_hh, b_hh) is addmm(b_hh, msg[s:t], w_hh^T); a zero message projects to b_hh.
      const auto gh = contiguous(El > 0 ? aten::linear(torch::stable::narrow(msg, 0, s, R), a.w_hh, a.b_hh)
                                        : aten::expand(a.b_hh, {R, 3 * F}));
      gru_forward_kernel<scalar_t><<<cuda::blocks_for(R * F), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, F, gi.const_data_ptr<scalar_t>(), gh.const_data_ptr<scalar_t>(), msg.const_data_ptr<scalar_t>(),
          h.mutable_data_ptr<scalar_t>(), rz.mutable_data_ptr<scalar_t>(), n.mutable_data_ptr<scalar_t>(),
          gh_n.mutable_data_ptr<scalar_t>());
      cuda::check_launch("flow_pass");
    }
  });
  return {h, msg, rz, n, gh_n, logit};
}

FlowPassGrads flow_pass_backward_cuda(const Tensor& grad, const Tensor& h_saved, const Tensor& msg_saved,
                                      const Tensor& rz_saved, const Tensor& n_saved, const Tensor& gh_n_saved,
                                      const Tensor& logit_saved, const Tensor& h0_in, const Tensor& level_ptr,
                                      const Tensor& indptr_in, const Tensor& index_in, const Tensor& group_level_ptr,
                                      const Tensor& group_perm_in, const Tensor& group_ptr_in,
                                      const Tensor& group_src_in, const Tensor& att_dst, const Tensor& att_src_in,
                                      const Tensor& att_bias, const Tensor& w_ih, const Tensor& w_hh,
                                      const Tensor& b_ih, const Tensor& b_hh) {
  const FlowPassArgs a =
      flow_pass_args(h0_in, level_ptr, indptr_in, index_in, group_level_ptr, group_perm_in, group_ptr_in,
                     group_src_in, att_dst, att_src_in, att_bias, w_ih, w_hh, b_ih, b_hh);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto sv = unpack_flow_pass_saved(
      grad, FlowPassSaved{h_saved, msg_saved, rz_saved, n_saved, gh_n_saved, logit_saved}, a);
  const auto guard = cuda::guard_for(a.h0);
  const auto h0 = contiguous(a.h0), indptr = contiguous(a.indptr), index = contiguous(a.index);
  const auto att_src = contiguous(a.att_src);
  const auto group_perm = contiguous(a.group_perm), group_ptr = contiguous(a.group_ptr);
  const auto group_src = contiguous(a.group_src);
  const auto w_hh_t = torch::stable::transpose(a.w_hh, 0, 1);  // a view: linear's weight.t() is w_hh again
  const auto &h = sv.h, &msg = sv.msg, &rz = sv.rz, &n = sv.n, &gh_n = sv.gh_n, &logit = sv.logit;
  const int64_t N = h0.size(0), F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  auto g = torch::stable::clone(contiguous(grad));
  FlowPassGradBuffers buf(N, F, h0);
  const auto entry_starts = level_entry_starts(indptr, levels);
  FGP_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_backward_cuda", [&] {
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      auto dmsg = empty_like_shape(h0, {R, F});
      gru_backward_kernel<scalar_t><<<cuda::blocks_for(R * F), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, F, rz.const_data_ptr<scalar_t>(), n.const_data_ptr<scalar_t>(), gh_n.const_data_ptr<scalar_t>(),
          msg.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), buf.dgi.mutable_data_ptr<scalar_t>(),
          buf.dgh.mutable_data_ptr<scalar_t>(), dmsg.mutable_data_ptr<scalar_t>());
      cuda::check_launch("flow_pass_backward");
      if (El == 0) continue;  // no predecessors: the message is a constant 0
      // dmsg + dgh @ w_hh by one GEMM: linear(dgh, w_hh^T, bias = dmsg) is addmm(dmsg, dgh, w_hh),
      // which copies dmsg into its output and accumulates with beta = 1, as ATen's in-place
      // dmsg.addmm_(dgh, w_hh) did (addmm_ takes Scalars: not on the stable ABI).
      dmsg = contiguous(aten::linear(torch::stable::narrow(buf.dgh, 0, s, R), w_hh_t, dmsg));
      auto dx = empty_like_shape(h0, {El, F});
      attention_rows_backward_kernel<scalar_t><<<cuda::blocks_for(R), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, es, indptr.const_data_ptr<int64_t>(), index.const_data_ptr<int64_t>(), h.const_data_ptr<scalar_t>(),
          att_src.const_data_ptr<scalar_t>(), logit.const_data_ptr<scalar_t>() + es,
          msg.const_data_ptr<scalar_t>() + s * F, dmsg.const_data_ptr<scalar_t>(), F, dx.mutable_data_ptr<scalar_t>(),
          buf.g_src_rows.mutable_data_ptr<scalar_t>() + s * F, buf.g_bias_rows.mutable_data_ptr<scalar_t>() + s,
          buf.ds.mutable_data_ptr<scalar_t>() + s);
      cuda::check_launch("flow_pass_backward");
      const int64_t g0 = groups[l], g1 = groups[l + 1];
      if (g1 > g0) {
        group_scatter_kernel<scalar_t><<<cuda::blocks_for((g1 - g0) * F), cuda::kThreads, 0, cuda::stream()>>>(
            g0, g1 - g0, es, F, group_perm.const_data_ptr<int64_t>(), group_ptr.const_data_ptr<int64_t>(),
            group_src.const_data_ptr<int64_t>(), dx.const_data_ptr<scalar_t>(), g.mutable_data_ptr<scalar_t>());
        cuda::check_launch("flow_pass_backward");
      }
    }
  });
  return buf.finish(a, h0, msg, add_outer_cuda);
}

}  // namespace fgp

STABLE_TORCH_LIBRARY_IMPL(fgp, CUDA, m) {
  m.impl("_flow_pass_forward", TORCH_BOX(&fgp::flow_pass_forward_cuda));
  m.impl("_flow_pass_backward", TORCH_BOX(&fgp::flow_pass_backward_cuda));
}
