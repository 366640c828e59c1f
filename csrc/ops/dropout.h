// dropout(x, p, seed) -> x * keep / (1 - p)
// Dropout whose mask is a pure function of (seed, element index): a counter-based hash instead of a
// stateful generator. The same seed gives the same mask on the CPU (any thread count) and on CUDA,
// the mask is never stored (the backward is the same op applied to the gradient with the same seed),
// and drawing it is a few integer operations per element that vectorise, where ATen's CPU
// bernoulli_ walks a Mersenne twister one element at a time (it was 5-8% of a training step).
// p = 1 drops everything (out = 0); p = 0 is the identity.
#pragma once

#include <cstdint>

#include "ops/common.h"

namespace fgp {

// A 32-bit integer hash (the "lowbias32" finaliser: xor-shift-multiply, full avalanche).
FGP_HOST_DEVICE inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// The seed is scrambled once per call (splitmix64's finaliser) before it keys the per-element hash:
// XOR-ing a raw seed into a bijective hash would make seeds that differ in a few low bits give the
// same mask with elements swapped (seed ^ d and index ^ d cancel), e.g. seed = step counter.
inline uint64_t dropout_key(int64_t seed) {
  uint64_t s = static_cast<uint64_t>(seed) + 0x9E3779B97F4A7C15ULL;
  s = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ULL;
  s = (s ^ (s >> 27)) * 0x94D049BB133111EBULL;
  return s ^ (s >> 31);
}

// 24 uniform bits of element i under the key (dropout_key of the seed): both 32-bit halves of the
// index and of the key enter.
FGP_HOST_DEVICE inline uint32_t dropout_bits(uint64_t seed, int64_t i) {
  const uint64_t u = static_cast<uint64_t>(i);
  const uint32_t lo = static_cast<uint32_t>(u), hi = static_cast<uint32_t>(u >> 32);
  const uint32_t h = hash32(hash32(hi ^ static_cast<uint32_t>(seed >> 32)) ^ lo ^ static_cast<uint32_t>(seed));
  return h >> 8;
}

// Element i kept iff its 24 bits, read as a fraction of 2^24, are >= p: threshold = ceil(p * 2^24)
// (computed once per call by dropout_threshold), so no float conversion per element.
inline uint32_t dropout_threshold(double p) {
  const double t = p * 16777216.0;
  const auto k = static_cast<uint32_t>(t);
  return static_cast<double>(k) < t ? k + 1 : k;
}

template <typename T>
FGP_HOST_DEVICE inline T dropout_element(T x, uint64_t seed, int64_t i, uint32_t threshold, T scale) {
  return dropout_bits(seed, i) >= threshold ? x * scale : T(0);
}

inline void check_dropout_args(const Tensor& x, double p) {
  check_float(x, "x");
  FGP_CHECK(p >= 0.0 && p <= 1.0, "dropout probability must be in [0, 1], got ", p);
}

Tensor dropout_cpu(const Tensor& x, double p, int64_t seed);
Tensor dropout_cuda(const Tensor& x, double p, int64_t seed);

}  // namespace fgp
