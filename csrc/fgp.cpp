// The entry point of fgp_ext's op library: it claims the `fgp` namespace (a second library that
// tries to is refused by the dispatcher). Every op registers its schema and kernels from its own
// files (csrc/ops/<op>.cpp, cpu/<op>_cpu.cpp, cuda/<op>_cuda.cu) with STABLE_TORCH_LIBRARY_FRAGMENT
// and STABLE_TORCH_LIBRARY_IMPL; autograd formulas, fake kernels and the CUDA fallbacks are
// registered from Python (fgp_ext/ops/). The library is plain C++ on torch's stable ABI: Python
// loads it with torch.ops.load_library, and loading it runs the registrations.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(fgp, m) {}
