// The reduction loops, compiled once per instruction set: a source file defines
// COLLEX_KERNEL_ISA (a namespace name), is built with that set's compiler flags
// and includes this file. Everything here has internal linkage or lives in that
// namespace, so the copies never mix. dispatch.cpp picks one at run time.
#ifndef COLLEX_KERNEL_ISA
#error "define COLLEX_KERNEL_ISA before including reduce_loops.h"
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "collex/kernels/elements.h"
#include "collex/kernels/reduce.h"

namespace collex::kernels::COLLEX_KERNEL_ISA {
namespace {

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

// dst may alias a (accumulate in place); b never overlaps a, so it is
// __restrict. The direct all-reduces also pass dst == b exactly (rank 1's result
// written over its own input, the second source), which works because every
// element is read before it is written; no other overlap is allowed.
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

}  // namespace

ReduceFn pick_reduce(DType dtype, ReduceOp op) { return pick(dtype, op); }

namespace {

// float32 sums (divided by `divisor`, for an average) written with streaming
// stores, which skip the read of each line a normal store makes first (a third
// of a large reduction's memory traffic). dst may be a (same index), never b.
[[maybe_unused]] void sum_f32_streaming(void* dst_v, const void* a_v, const void* b_v, std::size_t n, double divisor) {
  float* dst = static_cast<float*>(dst_v);
  const float* a = static_cast<const float*>(a_v);
  const float* __restrict b = static_cast<const float*>(b_v);
  const float d = static_cast<float>(divisor);
  std::size_t i = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
  constexpr std::size_t kLanes = 16;
#else
  constexpr std::size_t kLanes = 8;
#endif
  // Streaming stores need aligned addresses: the head goes the ordinary way.
  for (; i < n && reinterpret_cast<std::uintptr_t>(dst + i) % (kLanes * sizeof(float)) != 0; ++i)
    dst[i] = (a[i] + b[i]) / d;
  for (; i + kLanes <= n; i += kLanes) {
#if defined(__AVX512F__)
    _mm512_stream_ps(dst + i,
                     _mm512_div_ps(_mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)), _mm512_set1_ps(d)));
#else
    _mm256_stream_ps(dst + i,
                     _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)), _mm256_set1_ps(d)));
#endif
  }
  _mm_sfence();  // order the streaming stores before whatever signals that they are done
#endif
  for (; i < n; ++i) dst[i] = (a[i] + b[i]) / d;
}

}  // namespace

StreamingFn pick_reduce_streaming(DType dtype, ReduceOp op) {
#if defined(__AVX512F__) || defined(__AVX2__)
  if (dtype == DType::kFloat32 && pairwise_op(op) == ReduceOp::kSum) return &sum_f32_streaming;
#endif
  (void)dtype;
  (void)op;
  return nullptr;
}

}  // namespace collex::kernels::COLLEX_KERNEL_ISA
