// The autograd formula of fgp::flow_pass, in C++: a pass is called a few times per batch, and a
// Python autograd wrapper around its 15 inputs cost as much as the pass itself on small batches.
// Forward: fgp::flow_pass_train (device kernels) gives the output and the per-level intermediates;
// backward: fgp::flow_pass_backward. Both go through the dispatcher, so CPU and CUDA share this.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

namespace fgp {

class FlowPassFunction : public torch::autograd::Function<FlowPassFunction> {
 public:
  static constexpr size_t kNumInputs = 15;
  static constexpr size_t kFirstWeight = 8;  // h0, 7 schedule tensors, then 7 weights

  // Tensors one by one: autograd tracks the Tensor arguments of apply(), not a vector of them.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h0, const at::Tensor& level_ptr,
                            const at::Tensor& indptr, const at::Tensor& index, const at::Tensor& group_level_ptr,
                            const at::Tensor& group_perm, const at::Tensor& group_ptr, const at::Tensor& group_src,
                            const at::Tensor& att_dst, const at::Tensor& att_src, const at::Tensor& att_bias,
                            const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                            const at::Tensor& b_hh) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const std::vector<at::Tensor> inputs{h0,        level_ptr, indptr,   index, group_level_ptr,
                                         group_perm, group_ptr, group_src, att_dst, att_src,
                                         att_bias,  w_ih,      w_hh,     b_ih,  b_hh};
    static const auto train = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("fgp::flow_pass_train", "")
                                  .typed<std::vector<at::Tensor>(at::TensorList)>();
    auto outputs = train.call(inputs);
    std::vector<at::Tensor> to_save(inputs);
    to_save.insert(to_save.end(), outputs.begin(), outputs.end());
    ctx->save_for_backward(to_save);
    return outputs[0];
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    static const auto backward_op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fgp::flow_pass_backward", "")
            .typed<std::vector<at::Tensor>(const at::Tensor&, at::TensorList, at::TensorList)>();
    const auto saved = ctx->get_saved_variables();
    const std::vector<at::Tensor> inputs(saved.begin(), saved.begin() + kNumInputs);
    const std::vector<at::Tensor> outputs(saved.begin() + kNumInputs, saved.end());
    const auto grads = backward_op.call(grad_outputs[0].contiguous(), outputs, inputs);
    torch::autograd::variable_list result(kNumInputs);  // undefined: no gradient (schedule tensors)
    result[0] = grads[0];
    for (size_t i = 0; i + 1 < grads.size(); ++i) result[kFirstWeight + i] = grads[i + 1];
    return result;
  }
};

inline at::Tensor flow_pass_autograd(const at::Tensor& h0, const at::Tensor& level_ptr, const at::Tensor& indptr,
                                     const at::Tensor& index, const at::Tensor& group_level_ptr,
                                     const at::Tensor& group_perm, const at::Tensor& group_ptr,
                                     const at::Tensor& group_src, const at::Tensor& att_dst, const at::Tensor& att_src,
                                     const at::Tensor& att_bias, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const at::Tensor& b_ih, const at::Tensor& b_hh) {
  return FlowPassFunction::apply(h0, level_ptr, indptr, index, group_level_ptr, group_perm, group_ptr, group_src,
                                 att_dst, att_src, att_bias, w_ih, w_hh, b_ih, b_hh);
}

}  // namespace fgp
