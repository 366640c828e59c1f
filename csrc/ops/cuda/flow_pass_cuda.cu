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

// Gates and new state of rows [s, s + R); gi, gh are the level's [R, 3F] projections.
template <typename T>
__global__ void gru_forward_kernel(int64_t s, int64_t R, int64_t F, const T* gi, const T* gh, const T* h0, T* h,
                                   T* rz, T* n, T* gh_n) {
  FGP_CUDA_KERNEL_LOOP(t, R * F) {
    const int64_t r = t / F, f = t % F, v = s + r;
    T rg, zg, ng;
    gru_gates(gi + r * 3 * F, gh + r * 3 * F, F, f, &rg, &zg, &ng);
    rz[v * 2 * F + f] = rg;
    rz[v * 2 * F + F + f] = zg;
    n[v * F + f] = ng;
    gh_n[v * F + f] = gh[r * 3 * F + 2 * F + f];
    h[v * F + f] = gru_combine(zg, ng, h0[v * F + f]);
  }
}

template <typename T>
__global__ void gru_backward_kernel(int64_t s, int64_t R, int64_t F, const T* rz, const T* n, const T* gh_n,
                                    const T* h0, const T* g, T* dgi, T* dgh, T* dhv) {
  FGP_CUDA_KERNEL_LOOP(t, R * F) {
    const int64_t r = t / F, f = t % F, v = s + r;
    dhv[t] = gru_cell_backward(rz[v * 2 * F + f], rz[v * 2 * F + F + f], n[v * F + f], gh_n[v * F + f],
                               h0[v * F + f], g[v * F + f], F, f, dgi + r * 3 * F, dgh + r * 3 * F);
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
  auto h = h0.clone();
  auto msg = at::zeros({N, F}, opts), rz = at::zeros({N, 2 * F}, opts), n = at::zeros({N, F}, opts);
  auto gh_n = at::zeros({N, F}, opts), logit = at::empty({E}, opts);
  const auto entry_starts = level_entry_starts(indptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_cuda", [&] {
    for (int64_t l = 1; l < L; ++l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      if (R == 0) continue;
      attention_rows_kernel<scalar_t><<<cuda::blocks_for(R), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, es, indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), h0.data_ptr<scalar_t>(),
          h.data_ptr<scalar_t>(), att_dst.data_ptr<scalar_t>(), att_src.data_ptr<scalar_t>(),
          bias.data_ptr<scalar_t>(), F, logit.data_ptr<scalar_t>() + es, msg.data_ptr<scalar_t>() + s * F);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const auto gi = at::addmm(a.b_ih, msg.slice(0, s, t), a.w_ih.t()).contiguous();
      const auto gh = at::addmm(a.b_hh, h0.slice(0, s, t), a.w_hh.t()).contiguous();
      gru_forward_kernel<scalar_t><<<cuda::blocks_for(R * F), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, F, gi.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
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
  const auto att_dst = a.att_dst.contiguous(), att_src = a.att_src.contiguous();
  const auto group_perm = a.group_perm.contiguous(), group_ptr = a.group_ptr.contiguous();
  const auto group_src = a.group_src.contiguous();
  const auto &h = sv.h, &msg = sv.msg, &rz = sv.rz, &n = sv.n, &gh_n = sv.gh_n, &logit = sv.logit;
  const int64_t F = h0.size(1), L = static_cast<int64_t>(levels.size()) - 1;
  const auto opts = h0.options();
  auto g = grad.contiguous().clone();
  FlowPassWeightGrads wg(a);
  const auto entry_starts = level_entry_starts(indptr, levels);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "flow_pass_backward_cuda", [&] {
    for (int64_t l = L - 1; l >= 1; --l) {
      const int64_t s = levels[l], t = levels[l + 1], R = t - s, es = entry_starts[l];
      const int64_t El = entry_starts[l + 1] - es;
      if (R == 0) continue;
      auto dgi = at::empty({R, 3 * F}, opts), dgh = at::empty({R, 3 * F}, opts), dhv = at::empty({R, F}, opts);
      gru_backward_kernel<scalar_t><<<cuda::blocks_for(R * F), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, F, rz.data_ptr<scalar_t>(), n.data_ptr<scalar_t>(), gh_n.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
          g.data_ptr<scalar_t>(), dgi.data_ptr<scalar_t>(), dgh.data_ptr<scalar_t>(), dhv.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const auto hv = h0.slice(0, s, t), msg_l = msg.slice(0, s, t);
      const auto dmsg = at::mm(dgi, a.w_ih).contiguous();
      dhv.add_(at::mm(dgh, a.w_hh));
      wg.add_gru(dgi, dgh, msg_l, hv);
      auto dx = at::empty({std::max<int64_t>(El, 1), F}, opts), g_src_rows = at::empty({R, F}, opts);
      auto g_bias_rows = at::empty({R}, opts), ds = at::empty({R}, opts);
      attention_rows_backward_kernel<scalar_t><<<cuda::blocks_for(R), cuda::kThreads, 0, cuda::stream()>>>(
          s, R, es, indptr.data_ptr<int64_t>(), index.data_ptr<int64_t>(), h.data_ptr<scalar_t>(),
          att_src.data_ptr<scalar_t>(), logit.data_ptr<scalar_t>() + es, msg.data_ptr<scalar_t>() + s * F,
          dmsg.data_ptr<scalar_t>(), F, dx.data_ptr<scalar_t>(), g_src_rows.data_ptr<scalar_t>(),
          g_bias_rows.data_ptr<scalar_t>(), ds.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      wg.add_attention(g_src_rows, g_bias_rows, ds, hv);
      dhv.add_(at::outer(ds, att_dst));
      g.slice(0, s, t).copy_(dhv);
      const int64_t g0 = groups[l], g1 = groups[l + 1];
      if (g1 > g0) {
        group_scatter_kernel<scalar_t><<<cuda::blocks_for((g1 - g0) * F), cuda::kThreads, 0, cuda::stream()>>>(
            g0, g1 - g0, es, F, group_perm.data_ptr<int64_t>(), group_ptr.data_ptr<int64_t>(),
            group_src.data_ptr<int64_t>(), dx.data_ptr<scalar_t>(), g.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return wg.with_input_grad(g);
}

}  // namespace fgp
