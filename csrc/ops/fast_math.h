// exp(x) written out (Cody-Waite range reduction + Taylor polynomial) instead of calling libm:
// the same operations on the host and in CUDA kernels (so softmax weights round identically on
// every device), inlined, and about 3x cheaper than glibc's scalar exp in our softmax loops.
// Accuracy: about 1 ulp in float32 and float64 over the whole range (checked against torch.exp in
// python_tests/test_flow_encoder.py). Callers clamp the argument to the normal range first
// (softmax_exp, exp_clamped): a clamp, unlike a branch, keeps loops vectorisable.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ops/common.h"

namespace fgp {

FGP_HOST_DEVICE inline float float_from_bits(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

FGP_HOST_DEVICE inline double double_from_bits(int64_t bits) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
#endif
}

// x rounded to the nearest integer (ties to even) by adding and subtracting 1.5 * 2^(mantissa bits):
// plain IEEE arithmetic (the build has no fast-math, so it is not folded away), where std::floor is
// a libm call on baseline x86-64 that stops loops from vectorising. Valid for |x| < 2^22 (float),
// 2^51 (double); exp_in_range needs |x| < 1100.
template <typename T>
FGP_HOST_DEVICE inline T round_to_integer(T x) {
  const T magic = sizeof(T) == 4 ? T(12582912.0) : T(6755399441055744.0);
  return (x + magic) - magic;
}

// exp(x) for x in the normal range [exp_lower_bound, 88 or 709]: Cody-Waite reduction x = k ln2 + r,
// |r| <= ln2 / 2, a Taylor polynomial in r of degree 7 (float) or 13 (double) -- truncation below
// half an ulp -- and 2^k put in the exponent bits. Branch-free, so loops over it vectorise.
template <typename T>
FGP_HOST_DEVICE inline T exp_in_range(T x) {
  constexpr bool kSingle = sizeof(T) == 4;
  const T ln2_hi = kSingle ? T(0.693145751953125) : T(6.93147180369123816490e-01);
  const T ln2_lo = kSingle ? T(1.428606765330187045e-06) : T(1.90821492927058770002e-10);
  const T kf = round_to_integer(x * T(1.4426950408889634));
  const T r = (x - kf * ln2_hi) - kf * ln2_lo;
  T p;
  if constexpr (kSingle) {
    p = T(1.0 / 5040);
    p = p * r + T(1.0 / 720);
    p = p * r + T(1.0 / 120);
    p = p * r + T(1.0 / 24);
    p = p * r + T(1.0 / 6);
    p = p * r + T(0.5);
    p = p * r + T(1);
    p = p * r + T(1);
    return p * float_from_bits((static_cast<int32_t>(kf) + 127) << 23);
  } else {
    p = T(1.0 / 6227020800.0);
    p = p * r + T(1.0 / 479001600.0);
    p = p * r + T(1.0 / 39916800.0);
    p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0);
    p = p * r + T(1.0 / 40320.0);
    p = p * r + T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0);
    p = p * r + T(1.0 / 120.0);
    p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0);
    p = p * r + T(0.5);
    p = p * r + T(1);
    p = p * r + T(1);
    return p * double_from_bits((static_cast<int64_t>(kf) + 1023) << 52);
  }
}

template <typename T>
FGP_HOST_DEVICE inline T exp_lower_bound() {
  return sizeof(T) == 4 ? T(-87.0) : T(-708.0);
}

// The softmax's exp: its arguments are logit - max <= 0, so only the lower end needs care; it is
// clamped (exp(-87) ~ 1e-38 stands in for smaller weights, invisible next to the max's weight 1)
// instead of branched on, so CPU loops over it vectorise. Used by the CPU and CUDA kernels alike.
template <typename T>
FGP_HOST_DEVICE inline T softmax_exp(T x) {
  const T lo = exp_lower_bound<T>();
  return exp_in_range(x < lo ? lo : x);
}

// exp(x) with x clamped to exp_in_range's normal range [exp_lower_bound, 88 or 709]: beyond it the
// result saturates (about 1e-38, or a finite maximum) instead of branching, so CPU loops over it
// vectorise. The gates below use it on both devices.
template <typename T>
FGP_HOST_DEVICE inline T exp_clamped(T x) {
  const T lo = exp_lower_bound<T>(), hi = sizeof(T) == 4 ? T(88.0) : T(709.0);
  return exp_in_range(x < lo ? lo : (x > hi ? hi : x));
}

// sigmoid(x) = 1 / (1 + exp(-x)); beyond exp's range the result is 1, or below 1e-38, either way.
// The edge gates of gated_aggregate and the GRU gates of flow_pass use it.
template <typename T>
FGP_HOST_DEVICE inline T gate_sigmoid(T x) {
  return T(1) / (T(1) + exp_clamped(-x));
}

// tanh(x) = 1 - 2 / (exp(2x) + 1); beyond exp's range tanh is +-1 to the last bit. Near 0 the error
// is absolute (about one ulp of 1), which is what the GRU update needs.
template <typename T>
FGP_HOST_DEVICE inline T gate_tanh(T x) {
  return T(1) - T(2) / (exp_clamped(T(2) * x) + T(1));
}

}  // namespace fgp
