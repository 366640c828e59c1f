#include "ops/flow_pass.h"
#include "ops/cuda/cuda_utils.cuh"

namespace fgp {
namespace {

// The level loop runs on the host; per level, the GEMMs go to ATen (cuBLAS) and the rest to these
// kernels, which call the same per-row / per-element functions as the CPU kernel.
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

std::vector<int64_t> level_entry_starts(const at::Tensor& indptr, const std::vector<int64_t>& levels) {
  const auto at_levels = at::tensor(levels, indptr.options().device(at::kCPU)).to(indptr.device());
  const auto starts = indptr.index_select(0, at_levels).cpu();
  return {starts.data_ptr<int64_t>(), starts.data_ptr<int64_t>() + starts.numel()};
}

}  // namespace

std::vector<at::Tensor> flow_pass_forward_cuda(at::TensorList args_in) {
  const FlowPassArgs a = flow_pass_args(args_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  c10::cuda::CUDAGuard guard(a.h0.device());
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous(), bias = a.att_bias.contiguous();
  const int64_t N = h0.size(0), F = h0.size(1), E = index.numel(), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  const auto gi = at::addmm(a.b_ih, h0, a.w_ih.t()).contiguous();  // the GRU input is h0: one GEMM
  auto h = at::empty({N, F}, opts);
  auto msg = at::zeros({N, F}, opts), rz = at::empty({N, 2 * F}, opts), n = at::empty({N, F}, opts);
  auto gh_n = at::empty({N, F}, opts), logit = at::empty({E}, opts);
  const auto entry_starts = level_entry_starts(indptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_cuda", [&] {
    for (int64_t l = 0; l < L; ++l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      if (El > 0) {
        attention_rows_kernel<scalar_t><<<cuda::blocks_for(R), cuda::kThreads, 0, cuda::stream()>>>(
            s, R, es, indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), h0.data_ptr<scalar_t>(),
            h.data_ptr<scalar_t>(), att_dst.data_ptr<scalar_t>(), att_src.data_ptr<scalar_t>(),
            bias.data_ptr<scalar_t>(), F, logit.data_ptr<scalar_t>() + es, msg.data_ptr<scalar_t>() + s * F);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      const auto gh = (El > 0 ? at::addmm(a.b_hh, msg.slice(0, s, t), a.w_hh.t())
                              : a.b_hh.expand({R, 3 * F})).contiguous();
      gru_forward_kernel<scalar_t><<<cuda::blocks_for(R * F), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, F, gi.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), msg.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
          rz.data_ptr<scalar_t>(), n.data_ptr<scalar_t>(), gh_n.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {h, msg, rz, n, gh_n, logit};
}

std::vector<at::Tensor> flow_pass_backward_cuda(const at::Tensor& grad, at::TensorList saved, at::TensorList args_in) {
  const FlowPassArgs a = flow_pass_args(args_in);
  const auto [levels, groups] = check_flow_pass_args(a);
  const auto sv = unpack_flow_pass_saved(grad, saved, a);
  c10::cuda::CUDAGuard guard(a.h0.device());
  const auto h0 = a.h0.contiguous(), indptr = a.indptr.contiguous(), index = a.index.contiguous();
  const auto att_src = a.att_src.contiguous();
  const auto group_perm = a.group_perm.contiguous(), group_ptr = a.group_ptr.contiguous();
  const auto group_src = a.group_src.contiguous();
  const auto &h = sv.h, &msg = sv.msg, &rz = sv.rz, &n = sv.n, &gh_n = sv.gh_n, &logit = sv.logit;
  const int64_t N = h0.size(0), F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  auto g = grad.contiguous().clone();
  FlowPassGradBuffers buf(N, F, opts);
  const auto entry_starts = level_entry_starts(indptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_backward_cuda", [&] {
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      auto dmsg = at::empty({R, F}, opts);
      gru_backward_kernel<scalar_t><<<cuda::blocks_for(R * F), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, F, rz.data_ptr<scalar_t>(), n.data_ptr<scalar_t>(), gh_n.data_ptr<scalar_t>(), msg.data_ptr<scalar_t>(),
          g.data_ptr<scalar_t>(), buf.dgi.data_ptr<scalar_t>(), buf.dgh.data_ptr<scalar_t>(), dmsg.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (El == 0) continue;  // no predecessors: the message is a constant 0
      dmsg.addmm_(buf.dgh.slice(0, s, t), a.w_hh);
      auto dx = at::empty({El, F}, opts);
      attention_rows_backward_kernel<scalar_t><<<cuda::blocks_for(R), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, es, indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), h.data_ptr<scalar_t>(),
          att_src.data_ptr<scalar_t>(), logit.data_ptr<scalar_t>() + es, msg.data_ptr<scalar_t>() + s * F,
          dmsg.data_ptr<scalar_t>(), F, dx.data_ptr<scalar_t>(), buf.g_src_rows.data_ptr<scalar_t>() + s * F,
          buf.g_bias_rows.data_ptr<scalar_t>() + s, buf.ds.data_ptr<scalar_t>() + s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t g0 = groups[l], g1 = groups[l + 1];
      if (g1 > g0) {
        group_scatter_kernel<scalar_t><<<cuda::blocks_for((g1 - g0) * F), cuda::kThreads, 0, cuda::stream()>>>(
            g0, g1 - g0, es, F, group_perm.data_ptr<int64_t>(), group_ptr.data_ptr<int64_t>(),
            group_src.data_ptr<int64_t>(), dx.data_ptr<scalar_t>(), g.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return buf.finish(a, h0, msg);
}

}  // namespace fgp
