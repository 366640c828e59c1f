// fgp_ext's thin layer over the LibTorch stable ABI (torch/csrc/stable, torch/headeronly).
//
// Every op is compiled against these headers only: no ATen, no c10 (beyond the header-only parts),
// no pybind11. CMake sets TORCH_TARGET_VERSION to the oldest torch the wheel supports (2.10), so
// a call to a newer or unstable API fails to compile instead of failing to load on an older torch.
//
// What the stable surface lacks, and what we do instead:
// - ATen ops without a stable wrapper (cumsum, sort, searchsorted, bincount, linear, mm, ...):
//   called by name through the dispatcher (torch_call_dispatcher, the stable C entry point that the
//   stable ops themselves use), see namespace fgp::aten below. Ops whose schema takes a `Scalar`
//   (addmm, arange, add/sub with alpha, ...) cannot be called that way (StableIValue has no Scalar;
//   torch::stable::subtract passes alpha as a double, which integer tensors refuse), so we use
//   Scalar-free equivalents (linear for addmm) or our own loops.
// - Tensor::item(): host reads through data pointers (copying to the CPU first for device tensors).
// - TORCH_CHECK / c10::Error: FGP_CHECK throws std::runtime_error with the message alone, which the
//   dispatcher turns into a Python RuntimeError. Nothing may throw inside a parallel_for body or a
//   target_clones function: with the stable ABI the exception would cross the C shim, which (before
//   torch 2.13) keeps only "call failed". Kernels record the failure and raise after the loop.
// - AT_DISPATCH_FLOATING_TYPES: FGP_DISPATCH_FLOATING_TYPES, a plain switch over float/double.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace fgp {

using Tensor = torch::stable::Tensor;
using torch::headeronly::ScalarType;
using Device = torch::stable::Device;
using DeviceType = torch::headeronly::DeviceType;

constexpr ScalarType kFloat = ScalarType::Float;
constexpr ScalarType kDouble = ScalarType::Double;
constexpr ScalarType kLong = ScalarType::Long;
constexpr ScalarType kBool = ScalarType::Bool;

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  ((out << args), ...);
  return out.str();
}
}  // namespace detail

// The message alone (no file/line): it is what the Python user reads.
#define FGP_FAIL(...) throw std::runtime_error(::fgp::detail::concat(__VA_ARGS__))
#define FGP_CHECK(cond, ...)      \
  do {                            \
    if (!(cond)) FGP_FAIL(__VA_ARGS__); \
  } while (0)

// Float kernels: `scalar_t` is float or double inside the body, as with ATen's macro.
#define FGP_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...)                                              \
  [&] {                                                                                           \
    switch (TYPE) {                                                                               \
      case ::fgp::ScalarType::Float: {                                                            \
        using scalar_t = float;                                                                   \
        return __VA_ARGS__();                                                                     \
      }                                                                                           \
      case ::fgp::ScalarType::Double: {                                                           \
        using scalar_t = double;                                                                  \
        return __VA_ARGS__();                                                                     \
      }                                                                                           \
      default:                                                                                    \
        FGP_FAIL(NAME, ": expected float32 or float64, got ", torch::headeronly::toString(TYPE)); \
    }                                                                                             \
  }()

inline const char* dtype_name(ScalarType t) { return torch::headeronly::toString(t); }

inline std::string sizes_str(const Tensor& t) {
  std::ostringstream out;
  out << "[";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
  out << "]";
  return out.str();
}

inline std::string device_str(const Tensor& t) {
  if (t.is_cpu()) return "cpu";
  if (t.is_cuda()) return detail::concat("cuda:", static_cast<int>(t.get_device_index()));
  return detail::concat("device type ", static_cast<int>(t.device().type()));
}

// A shape as torch's C++ messages printed a std::vector<int64_t> (values separated by spaces, e.g.
// "12 4"): the ops' error texts keep that form.
inline std::string spaced(const std::vector<int64_t>& values) {
  std::ostringstream out;
  for (size_t i = 0; i < values.size(); ++i) out << (i ? " " : "") << values[i];
  return out.str();
}

// torch::stable::Tensor has hidden visibility (torch declares its namespace hidden); a struct that
// holds one must be hidden too, or GCC warns.
#if defined(__GNUC__) && !defined(_WIN32)
#define FGP_HIDDEN __attribute__((visibility("hidden")))
#else
#define FGP_HIDDEN
#endif

inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.device().type() == b.device().type() && a.get_device_index() == b.get_device_index();
}

// ---- creation -------------------------------------------------------------------------------
inline Tensor empty_tensor(const std::vector<int64_t>& sizes, ScalarType dtype, const Device& device) {
  return torch::stable::empty(sizes, dtype, std::nullopt, device);
}
inline Tensor empty_like_shape(const Tensor& like, const std::vector<int64_t>& sizes) {
  return empty_tensor(sizes, like.scalar_type(), like.device());
}
inline Tensor zeros_tensor(const std::vector<int64_t>& sizes, ScalarType dtype, const Device& device) {
  return torch::stable::full(sizes, 0.0, dtype, std::nullopt, device);
}
// Integer fills go through a double: exact for |value| < 2^53, far beyond any index here.
inline Tensor full_tensor(const std::vector<int64_t>& sizes, double value, ScalarType dtype, const Device& device) {
  return torch::stable::full(sizes, value, dtype, std::nullopt, device);
}
using torch::stable::contiguous;
using torch::stable::reshape;

inline Tensor to_cpu(const Tensor& t) {
  if (t.is_cpu()) return t;
  return torch::stable::to(t, Device(DeviceType::CPU));
}
inline Tensor to_device(const Tensor& t, const Device& device) { return torch::stable::to(t, device); }

// A CPU int64 tensor from host values, then moved to `device`.
inline Tensor from_host(const std::vector<int64_t>& values, const Device& device) {
  auto t = empty_tensor({static_cast<int64_t>(values.size())}, kLong, Device(DeviceType::CPU));
  int64_t* p = t.mutable_data_ptr<int64_t>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return device.type() == DeviceType::CPU ? t : to_device(t, device);
}

// 0, 1, ..., n-1 (int64) on `device` (aten::arange takes a Scalar, which the stable ABI cannot pass).
inline Tensor arange(int64_t n, const Device& device) {
  auto t = empty_tensor({n}, kLong, Device(DeviceType::CPU));
  int64_t* p = t.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  return device.type() == DeviceType::CPU ? t : to_device(t, device);
}

// ---- host reads (replace Tensor::item) ------------------------------------------------------
// Element i of a 1-D tensor (negative i counts from the end), read on the host.
template <typename T>
inline T read(const Tensor& t, int64_t i) {
  const int64_t n = t.size(0);
  if (i < 0) i += n;
  FGP_CHECK(0 <= i && i < n, "internal error: read of element ", i, " of a tensor of ", n);
  if (t.is_cpu()) return t.const_data_ptr<T>()[i * t.stride(0)];
  Tensor one = torch::stable::narrow(const_cast<Tensor&>(t), 0, i, 1);
  return to_cpu(one).const_data_ptr<T>()[0];
}
// The only element of a tensor with one element (any shape).
template <typename T>
inline T item(const Tensor& t) {
  FGP_CHECK(t.numel() == 1, "internal error: item() of a tensor of ", t.numel(), " elements");
  const Tensor c = contiguous(to_cpu(t));
  return c.const_data_ptr<T>()[0];
}
// A whole 1-D int64 tensor on the host (contiguous CPU copy or the tensor itself).
inline Tensor host_long(const Tensor& t) { return contiguous(to_cpu(t)); }
// ... and as a host vector.
inline std::vector<int64_t> host_vector(const Tensor& t) {
  const Tensor c = host_long(t);
  const int64_t* p = c.const_data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

// ---- ATen ops through the dispatcher ---------------------------------------------------------
// Arguments are passed exactly as the op's schema lists them (defaults included): the dispatcher's
// boxed calling convention has no defaults. TORCH_ABI_VERSION (the torch we compile against) lets
// a newer libtorch adapt the stack if the schema has grown since.
namespace aten {

template <typename... Args>
inline std::array<StableIValue, sizeof...(Args)> call(const char* name, const char* overload, const Args&... args) {
  std::array<StableIValue, sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION));
  return stack;
}
template <typename... Args>
inline Tensor call_tensor(const char* name, const char* overload, const Args&... args) {
  auto stack = call(name, overload, args...);
  return torch::stable::detail::to<Tensor>(stack[0]);
}

using OptTensor = std::optional<Tensor>;
using OptInt = std::optional<int64_t>;

inline Tensor cumsum(const Tensor& t) {
  return call_tensor("aten::cumsum", "", t, int64_t{0}, std::optional<ScalarType>());
}
// (min, max) of all elements.
inline std::pair<Tensor, Tensor> aminmax(const Tensor& t) {
  auto s = call("aten::aminmax", "", t, OptInt(), false);
  return {torch::stable::detail::to<Tensor>(s[0]), torch::stable::detail::to<Tensor>(s[1])};
}
inline Tensor diff(const Tensor& t, int64_t dim = -1) {
  return call_tensor("aten::diff", "", t, int64_t{1}, dim, OptTensor(), OptTensor());
}
// Stable ascending sort along dim 0: (values, indices).
inline std::pair<Tensor, Tensor> sort_stable(const Tensor& t) {
  auto s = call("aten::sort", "stable", t, std::optional<bool>(true), int64_t{0}, false);
  return {torch::stable::detail::to<Tensor>(s[0]), torch::stable::detail::to<Tensor>(s[1])};
}
inline Tensor searchsorted(const Tensor& sorted, const Tensor& values, bool right) {
  return call_tensor("aten::searchsorted", "Tensor", sorted, values, false, right, std::optional<std::string>(),
                     OptTensor());
}
inline Tensor repeat_interleave(const Tensor& t, const Tensor& repeats, int64_t output_size) {
  return call_tensor("aten::repeat_interleave", "self_Tensor", t, repeats, OptInt(int64_t{0}), OptInt(output_size));
}
inline Tensor bincount(const Tensor& t, int64_t minlength) {
  return call_tensor("aten::bincount", "", t, OptTensor(), minlength);
}
inline Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index) {
  return call_tensor("aten::index_select", "", t, dim, index);
}
// self[index[i]] = source[i] along dim, in place.
inline void index_copy_(Tensor& self, int64_t dim, const Tensor& index, const Tensor& source) {
  (void)call_tensor("aten::index_copy_", "", self, dim, index, source);
}
inline Tensor nonzero_1d(const Tensor& t) {
  return reshape(call_tensor("aten::nonzero", "", t), {-1});
}
inline Tensor cat(const std::vector<Tensor>& tensors) { return call_tensor("aten::cat", "", tensors, int64_t{0}); }
inline Tensor ne(const Tensor& a, const Tensor& b) { return call_tensor("aten::ne", "Tensor", a, b); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return call_tensor("aten::lt", "Tensor", a, b); }
inline Tensor ge(const Tensor& a, const Tensor& b) { return call_tensor("aten::ge", "Tensor", a, b); }
inline Tensor eq(const Tensor& a, const Tensor& b) { return call_tensor("aten::eq", "Tensor", a, b); }
inline bool all(const Tensor& t) { return item<bool>(call_tensor("aten::all", "", t)); }
inline bool any(const Tensor& t) { return item<bool>(call_tensor("aten::any", "", t)); }
inline bool equal(const Tensor& a, const Tensor& b) {
  auto s = call("aten::equal", "", a, b);
  return torch::stable::detail::to<bool>(s[0]);
}
inline Tensor max_all(const Tensor& t) { return call_tensor("aten::max", "", t); }
inline Tensor min_all(const Tensor& t) { return call_tensor("aten::min", "", t); }
// input @ weight^T + bias (addmm without its Scalar arguments).
inline Tensor linear(const Tensor& input, const Tensor& weight, const OptTensor& bias) {
  return call_tensor("aten::linear", "", input, weight, bias);
}
inline Tensor mm(const Tensor& a, const Tensor& b) { return call_tensor("aten::mm", "", a, b); }
inline Tensor mv(const Tensor& a, const Tensor& v) { return call_tensor("aten::mv", "", a, v); }
inline Tensor expand(const Tensor& t, const std::vector<int64_t>& sizes) {
  return call_tensor("aten::expand", "", t, torch::headeronly::IntHeaderOnlyArrayRef(sizes), false);
}

inline Tensor stack_columns(const Tensor& a, const Tensor& b) {
  return call_tensor("aten::stack", "", std::vector<Tensor>{a, b}, int64_t{1});
}
// a + b and a - b of 1-D tensors (int64 included), exact and without a Scalar `alpha`: the sum and
// the difference along the rows of [a, b] stacked as columns.
inline Tensor add(const Tensor& a, const Tensor& b) {
  return torch::stable::sum(stack_columns(a, b), std::vector<int64_t>{1});
}
inline Tensor sub(const Tensor& a, const Tensor& b) { return reshape(diff(stack_columns(b, a), 1), {-1}); }

}  // namespace aten

// Parallel loops follow torch.set_num_threads (torch's own thread pool, through the stable C shim).
template <class F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  torch::stable::parallel_for(begin, end, grain, f);
}
inline int64_t get_num_threads() { return static_cast<int64_t>(torch::stable::get_num_threads()); }

// The first failure seen by the tasks of a parallel loop (the smallest code wins, so the error a
// user sees does not depend on the thread count), raised by the caller after the loop.
class FirstFailure {
 public:
  void record(int64_t where) {
    if (where < 0) return;  // -1: no failure in this task
    int64_t cur = value_.load(std::memory_order_relaxed);
    while ((cur < 0 || where < cur) && !value_.compare_exchange_weak(cur, where)) {
    }
  }
  int64_t get() const { return value_.load(); }
  bool failed() const { return value_.load() >= 0; }

 private:
  std::atomic<int64_t> value_{-1};
};

}  // namespace fgp
