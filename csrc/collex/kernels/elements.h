// Element traits shared by the per-instruction-set loops (reduce_loops.h,
// convert_loops.h): how each dtype is stored, what it accumulates in, and how
// fp16/bf16 blocks widen to float32 and narrow back with the set's intrinsics.
// Included inside namespace collex::kernels::COLLEX_KERNEL_ISA.
#pragma once

#include <cstdint>
#include <type_traits>

#include "collex/kernels/half.h"

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace collex::kernels::COLLEX_KERNEL_ISA {
namespace {

// Elements converted per block in the fp16/bf16 loops (fits the L1 cache).
constexpr std::size_t kBlock = 256;

// Storage type <-> accumulation type. fp16/bf16 are stored as uint16 bit patterns
// and converted a block at a time (widen/narrow), which is what vectorises.
struct Fp16 {
  using Storage = std::uint16_t;
  using Acc = float;
  static Acc load(Storage s) { return fp16_to_float(s); }
  static Storage store(Acc a) { return float_to_fp16(a); }
  static void widen(const Storage* s, float* d, std::size_t m) {
    std::size_t k = 0;
#if defined(__AVX512F__)
    for (; k + 16 <= m; k += 16) {
      _mm512_storeu_ps(d + k, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + k))));
    }
#endif
#if defined(__F16C__)
    for (; k + 8 <= m; k += 8) {
      _mm256_storeu_ps(d + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k))));
    }
#endif
    for (; k < m; ++k) d[k] = load(s[k]);
  }
  static void narrow(const float* s, Storage* d, std::size_t m) {
    std::size_t k = 0;
#if defined(__AVX512F__)
    for (; k + 16 <= m; k += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k),
                          _mm512_cvtps_ph(_mm512_loadu_ps(s + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#endif
#if defined(__F16C__)
    for (; k + 8 <= m; k += 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + k),
                       _mm256_cvtps_ph(_mm256_loadu_ps(s + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#endif
    for (; k < m; ++k) d[k] = store(s[k]);
  }
};
struct Bf16 {
  using Storage = std::uint16_t;
  using Acc = float;
  static Acc load(Storage s) { return bf16_to_float(s); }
  static Storage store(Acc a) { return float_to_bf16(a); }
  // bfloat16 is the upper half of a float32: widening is a shift, narrowing rounds
  // the dropped half to nearest even (NaN stays a quiet NaN), 8 lanes at a time.
  static void widen(const Storage* s, float* d, std::size_t m) {
    std::size_t k = 0;
#if defined(__AVX512F__)
    for (; k + 16 <= m; k += 16) {
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + k)));
      _mm512_storeu_ps(d + k, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
#endif
#if defined(__AVX2__)
    for (; k + 8 <= m; k += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k)));
      _mm256_storeu_ps(d + k, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; k < m; ++k) d[k] = load(s[k]);
  }
  static void narrow(const float* s, Storage* d, std::size_t m) {
    std::size_t k = 0;
#if defined(__AVX512F__)
    {
      const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
      const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
      const __m512i quiet = _mm512_set1_epi32(0x40);
      for (; k + 16 <= m; k += 16) {
        const __m512i x = _mm512_castps_si512(_mm512_loadu_ps(s + k));
        const __m512i hi = _mm512_srli_epi32(x, 16);
        const __m512i rounded =
            _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(bias, _mm512_and_si512(hi, one))), 16);
        const __mmask16 is_nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, abs_mask), inf);
        const __m512i r = _mm512_mask_blend_epi32(is_nan, rounded, _mm512_or_si512(hi, quiet));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k), _mm512_cvtepi32_epi16(r));  // low halves, in order
      }
    }
#endif
#if defined(__AVX2__)
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    for (; k + 8 <= m; k += 8) {
      const __m256i x = _mm256_castps_si256(_mm256_loadu_ps(s + k));
      const __m256i hi = _mm256_srli_epi32(x, 16);
      const __m256i rounded =
          _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(bias, _mm256_and_si256(hi, one))), 16);
      const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
      const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, quiet), is_nan);
      // Pack the 8 low halves (each < 0x10000) into 8 uint16, in order.
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + k), _mm256_castsi256_si128(packed));
    }
#endif
    for (; k < m; ++k) d[k] = store(s[k]);
  }
};
// Signed integers wrap around like NumPy's: compute them unsigned (no UB).
template <typename T, bool = std::is_integral_v<T>>
struct AccOf {
  using type = T;
};
template <typename T>
struct AccOf<T, true> {
  using type = std::make_unsigned_t<T>;
};

template <typename T>
struct Plain {
  using Storage = T;
  using Acc = typename AccOf<T>::type;
  static Acc load(Storage s) { return static_cast<Acc>(s); }
  static Storage store(Acc a) { return static_cast<Storage>(a); }
};

}  // namespace
}  // namespace collex::kernels::COLLEX_KERNEL_ISA
