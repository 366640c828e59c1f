#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  m.def("flow_surrogate(Tensor op, Tensor indptr, Tensor index, Tensor node_ptr, Tensor is_source, "
        "Tensor r, Tensor P, Tensor W, float alpha, str schedule=\"auto\", "
        "Tensor? t_indptr=None, Tensor? t_index=None) -> Tensor");
}
