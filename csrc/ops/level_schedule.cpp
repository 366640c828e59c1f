#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  m.def("level_schedule(Tensor indptr, Tensor index, Tensor level) -> (Tensor order, Tensor rank, Tensor level_ptr, "
        "Tensor sched_indptr, Tensor sched_index, Tensor entry_perm, Tensor group_level_ptr, Tensor group_perm, "
        "Tensor group_ptr, Tensor group_src)");
}
