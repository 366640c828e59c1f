#include "ops/stable.h"

STABLE_TORCH_LIBRARY_FRAGMENT(fgp, m) {
  // Dropout with a counter-based mask: a function of (seed, element index), the same on every device.
  m.def("dropout(Tensor x, float p, int seed) -> Tensor");
}
