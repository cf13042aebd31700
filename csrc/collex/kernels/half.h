// float16 and bfloat16 <-> float32 conversions, round-to-nearest-even, shared by
// the CPU kernels and (later) the CUDA kernels, hence plain C++ with no intrinsics.
#pragma once

#include <cstdint>
#include <cstring>

// Internal linkage on the host: the kernels are compiled several times with
// different instruction sets, and each copy must keep its own conversions.
#if defined(__CUDACC__)
#define COLLEX_HD __host__ __device__ inline
#else
#define COLLEX_HD static inline
#endif

namespace collex::kernels {

COLLEX_HD std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

COLLEX_HD float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

COLLEX_HD float bf16_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

// Branch-free, so that loops over it vectorise.
COLLEX_HD std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // nearest, ties to even
  const std::uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

COLLEX_HD float fp16_to_float(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf or NaN
  if (exp == 0) {
    // zero or subnormal: value = man * 2^-24, exact in float32
    float mag = static_cast<float>(man) * (1.0f / 16777216.0f);
    return sign ? -mag : mag;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

COLLEX_HD std::uint16_t float_to_fp16(float f) {
  std::uint32_t u = float_bits(f);
  std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: scale so the float's rounding does the work.
    float mag = bits_float(abs) * 16777216.0f;  // exact: power-of-two scaling
    // mag in [0, 1024): round to nearest even integer, that is the fp16 mantissa.
    std::uint32_t m = static_cast<std::uint32_t>(mag);
    float rest = mag - static_cast<float>(m);
    if (rest > 0.5f || (rest == 0.5f && (m & 1u))) ++m;
    return static_cast<std::uint16_t>(sign | m);
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  std::uint32_t r = abs - 0x38000000u;  // exponent bias 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

}  // namespace collex::kernels
