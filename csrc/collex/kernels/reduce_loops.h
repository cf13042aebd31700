// The reduction loops, compiled once per instruction set: a source file defines
// COLLEX_KERNEL_ISA (a namespace name), is built with that set's compiler flags
// and includes this file. Everything here has internal linkage or lives in that
// namespace, so the copies never mix. reduce.cpp picks one at run time.
#ifndef COLLEX_KERNEL_ISA
#error "define COLLEX_KERNEL_ISA before including reduce_loops.h"
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "collex/kernels/half.h"
#include "collex/kernels/reduce.h"

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
#if defined(__F16C__)
    for (; k + 8 <= m; k += 8) {
      _mm256_storeu_ps(d + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k))));
    }
#endif
    for (; k < m; ++k) d[k] = load(s[k]);
  }
  static void narrow(const float* s, Storage* d, std::size_t m) {
    std::size_t k = 0;
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

template <typename T>
struct SumOp {
  static T apply(T a, T b) { return static_cast<T>(a + b); }
};
template <typename T>
struct ProdOp {
  static T apply(T a, T b) { return static_cast<T>(a * b); }
};
// min and max propagate NaN, as numpy.minimum/maximum do. Integers are computed
// unsigned (see AccOf), so compare them in their own (possibly signed) type.
template <typename Traits>
struct MinOp {
  using Acc = typename Traits::Acc;
  using S = typename Traits::Storage;
  static Acc apply(Acc a, Acc b) {
    if constexpr (std::is_integral_v<Acc>) {
      return static_cast<S>(a) <= static_cast<S>(b) ? a : b;
    } else {
      if (a != a) return a;
      if (b != b) return b;
      return a <= b ? a : b;
    }
  }
};
template <typename Traits>
struct MaxOp {
  using Acc = typename Traits::Acc;
  using S = typename Traits::Storage;
  static Acc apply(Acc a, Acc b) {
    if constexpr (std::is_integral_v<Acc>) {
      return static_cast<S>(a) >= static_cast<S>(b) ? a : b;
    } else {
      if (a != a) return a;
      if (b != b) return b;
      return a >= b ? a : b;
    }
  }
};

// dst may alias a (accumulate in place) but never b, so only b is __restrict.
template <typename Traits, typename Op>
void reduce_loop(void* dst_v, const void* a_v, const void* b_v, std::size_t n) {
  using S = typename Traits::Storage;
  S* dst = static_cast<S*>(dst_v);
  const S* a = static_cast<const S*>(a_v);
  const S* __restrict b = static_cast<const S*>(b_v);
  if constexpr (std::is_same_v<S, typename Traits::Acc> || std::is_integral_v<typename Traits::Acc>) {
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = Traits::store(Op::apply(Traits::load(a[i]), Traits::load(b[i])));
    }
  } else {
    // fp16/bf16: widen a block of each operand to float32, combine, narrow back.
    // Each of these short loops vectorises (the fused one does not).
    alignas(64) float fa[kBlock];
    alignas(64) float fb[kBlock];
    for (std::size_t i = 0; i < n; i += kBlock) {
      const std::size_t m = n - i < kBlock ? n - i : kBlock;
      Traits::widen(a + i, fa, m);
      Traits::widen(b + i, fb, m);
      for (std::size_t k = 0; k < m; ++k) fa[k] = Op::apply(fa[k], fb[k]);
      Traits::narrow(fa, dst + i, m);
    }
  }
}

template <typename Traits>
ReduceFn pick(ReduceOp op) {
  using Acc = typename Traits::Acc;
  switch (pairwise_op(op)) {
    case ReduceOp::kSum: return &reduce_loop<Traits, SumOp<Acc>>;
    case ReduceOp::kProd: return &reduce_loop<Traits, ProdOp<Acc>>;
    case ReduceOp::kMin: return &reduce_loop<Traits, MinOp<Traits>>;
    case ReduceOp::kMax: return &reduce_loop<Traits, MaxOp<Traits>>;
    default: return nullptr;
  }
}

ReduceFn pick(DType dtype, ReduceOp op) {
  switch (dtype) {
    case DType::kFloat16: return pick<Fp16>(op);
    case DType::kBFloat16: return pick<Bf16>(op);
    case DType::kFloat32: return pick<Plain<float>>(op);
    case DType::kFloat64: return pick<Plain<double>>(op);
    case DType::kInt8: return pick<Plain<std::int8_t>>(op);
    case DType::kUInt8: return pick<Plain<std::uint8_t>>(op);
    case DType::kInt32: return pick<Plain<std::int32_t>>(op);
    case DType::kInt64: return pick<Plain<std::int64_t>>(op);
  }
  return nullptr;
}

template <typename Traits>
void divide_loop(void* dst_v, std::size_t n, double divisor) {
  using S = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  S* dst = static_cast<S*>(dst_v);
  const Acc d = static_cast<Acc>(divisor);
  if constexpr (std::is_same_v<S, Acc>) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = dst[i] / d;
  } else {
    alignas(64) float f[kBlock];
    for (std::size_t i = 0; i < n; i += kBlock) {
      const std::size_t m = n - i < kBlock ? n - i : kBlock;
      Traits::widen(dst + i, f, m);
      for (std::size_t k = 0; k < m; ++k) f[k] = f[k] / d;
      Traits::narrow(f, dst + i, m);
    }
  }
}

}  // namespace

ReduceFn pick_reduce(DType dtype, ReduceOp op) { return pick(dtype, op); }

DivideFn pick_divide(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return &divide_loop<Fp16>;
    case DType::kBFloat16: return &divide_loop<Bf16>;
    case DType::kFloat32: return &divide_loop<Plain<float>>;
    case DType::kFloat64: return &divide_loop<Plain<double>>;
    default: return nullptr;  // integer averages are rejected before reaching a kernel
  }
}

}  // namespace collex::kernels::COLLEX_KERNEL_ISA
