// The compression loops, compiled once per instruction set like reduce_loops.h
// (a source file defines COLLEX_KERNEL_ISA and includes both).
#ifndef COLLEX_KERNEL_ISA
#error "define COLLEX_KERNEL_ISA before including convert_loops.h"
#endif

#include <cmath>
#include <cstdint>

#include "collex/kernels/convert.h"
#include "collex/kernels/elements.h"

namespace collex::kernels::COLLEX_KERNEL_ISA {
namespace {

float max_abs_loop(const float* src, const float* residual, std::size_t n) {
  std::size_t i = 0;
  float best = 0.0f;
  bool nan = false;
#if defined(__AVX2__)
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(src + i);
    if (residual != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(residual + i));
    m = _mm256_max_ps(m, _mm256_and_ps(v, abs_mask));
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  for (float l : lanes) best = l > best ? l : best;
  nan = _mm256_movemask_ps(unordered) != 0;
#endif
  for (; i < n; ++i) {
    const float v = std::fabs(src[i] + (residual != nullptr ? residual[i] : 0.0f));
    nan |= v != v;
    best = v > best ? v : best;
  }
  return nan ? std::nanf("") : best;
}

template <typename Wire>
void compress_loop(void* wire_v, const float* src, float* residual, std::size_t n, float scale) {
  auto* wire = static_cast<typename Wire::Storage*>(wire_v);
  const float inverse = 1.0f / scale;
  alignas(64) float v[kBlock];
  alignas(64) float back[kBlock];
  for (std::size_t i = 0; i < n; i += kBlock) {
    const std::size_t m = n - i < kBlock ? n - i : kBlock;
    if (residual == nullptr) {
      for (std::size_t k = 0; k < m; ++k) v[k] = src[i + k] * scale;
      Wire::narrow(v, wire + i, m);
      continue;
    }
    for (std::size_t k = 0; k < m; ++k) v[k] = (src[i + k] + residual[i + k]) * scale;
    Wire::narrow(v, wire + i, m);
    Wire::widen(wire + i, back, m);
    for (std::size_t k = 0; k < m; ++k) residual[i + k] = (src[i + k] + residual[i + k]) - back[k] * inverse;
  }
}

template <typename Wire>
void decompress_loop(float* dst, const void* wire_v, std::size_t n, float factor) {
  const auto* wire = static_cast<const typename Wire::Storage*>(wire_v);
  for (std::size_t i = 0; i < n; i += kBlock) {
    const std::size_t m = n - i < kBlock ? n - i : kBlock;
    Wire::widen(wire + i, dst + i, m);
    for (std::size_t k = 0; k < m; ++k) dst[i + k] *= factor;
  }
}

template <typename Traits>
void divide_copy_loop(void* dst_v, const void* src_v, std::size_t n, double divisor) {
  using S = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  S* dst = static_cast<S*>(dst_v);
  const S* src = static_cast<const S*>(src_v);
  const Acc d = static_cast<Acc>(divisor);
  if constexpr (std::is_same_v<S, Acc>) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = src[i] / d;
  } else {
    alignas(64) float f[kBlock];
    for (std::size_t i = 0; i < n; i += kBlock) {
      const std::size_t m = n - i < kBlock ? n - i : kBlock;
      Traits::widen(src + i, f, m);
      for (std::size_t k = 0; k < m; ++k) f[k] = f[k] / d;
      Traits::narrow(f, dst + i, m);
    }
  }
}

}  // namespace

MaxAbsFn pick_max_abs() { return &max_abs_loop; }

CompressFn pick_compress(DType wire) {
  switch (wire) {
    case DType::kFloat16: return &compress_loop<Fp16>;
    case DType::kBFloat16: return &compress_loop<Bf16>;
    default: return nullptr;
  }
}

DecompressFn pick_decompress(DType wire) {
  switch (wire) {
    case DType::kFloat16: return &decompress_loop<Fp16>;
    case DType::kBFloat16: return &decompress_loop<Bf16>;
    default: return nullptr;
  }
}

DivideCopyFn pick_divide_copy(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return &divide_copy_loop<Fp16>;
    case DType::kBFloat16: return &divide_copy_loop<Bf16>;
    case DType::kFloat32: return &divide_copy_loop<Plain<float>>;
    case DType::kFloat64: return &divide_copy_loop<Plain<double>>;
    default: return nullptr;
  }
}

}  // namespace collex::kernels::COLLEX_KERNEL_ISA
