// Element arithmetic of the reductions that combine every rank's copy of a range
// at once (the GPU path's kernels and their CPU stand-in), written once for host
// and device: each element is combined in rank order in an accumulation type
// (float32 for fp16/bf16, unsigned for integers, so sums wrap like NumPy's) and
// stored once, so every rank that combines the same sources gets the same bits.
// The pairwise CPU kernels (reduce.h) round after every step instead; the two
// agree exactly for float32, float64 and integers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/kernels/half.h"

#if defined(__CUDACC__)
#define COLLEX_ELEMENTS __host__ __device__ inline
#else
#define COLLEX_ELEMENTS inline
#endif

namespace collex::kernels::elements {

// Storage type S, accumulation type A, and the conversions between them.
template <typename T>
struct Plain {  // float, double: accumulate as they are
  using S = T;
  using A = T;
  COLLEX_ELEMENTS static A load(S s) { return s; }
  COLLEX_ELEMENTS static S store(A a) { return a; }
};
template <typename T>
struct Integer {  // wrap-around sums and products: computed unsigned
  using S = T;
  using A = std::make_unsigned_t<T>;
  COLLEX_ELEMENTS static A load(S s) { return static_cast<A>(s); }
  COLLEX_ELEMENTS static S store(A a) { return static_cast<S>(a); }
};
struct Half {
  using S = std::uint16_t;
  using A = float;
  COLLEX_ELEMENTS static A load(S s) { return fp16_to_float(s); }
  COLLEX_ELEMENTS static S store(A a) { return float_to_fp16(a); }
};
struct BFloat {
  using S = std::uint16_t;
  using A = float;
  COLLEX_ELEMENTS static A load(S s) { return bf16_to_float(s); }
  COLLEX_ELEMENTS static S store(A a) { return float_to_bf16(a); }
};

// min and max propagate NaN (as numpy.minimum/maximum do); integers compare in
// their own, possibly signed, type.
template <typename Tr, ReduceOp Op>
COLLEX_ELEMENTS typename Tr::A combine(typename Tr::A a, typename Tr::A b) {
  using A = typename Tr::A;
  using S = typename Tr::S;
  if constexpr (Op == ReduceOp::kSum || Op == ReduceOp::kAvg) {
    return static_cast<A>(a + b);
  } else if constexpr (Op == ReduceOp::kProd) {
    return static_cast<A>(a * b);
  } else if constexpr (std::is_integral_v<A>) {
    const bool a_first =
        Op == ReduceOp::kMin ? static_cast<S>(a) <= static_cast<S>(b) : static_cast<S>(a) >= static_cast<S>(b);
    return a_first ? a : b;
  } else {
    if (a != a) return a;
    if (b != b) return b;
    return (Op == ReduceOp::kMin ? a <= b : a >= b) ? a : b;
  }
}

// Element e of `out` = element e of every source, combined in rank order (avg:
// the sum divided by the rank count at the end). Byte pointers, any alignment:
// for the elements of a range's last, partial vector.
template <typename Tr, ReduceOp Op>
COLLEX_ELEMENTS void combine_element(char* out, const char* const* src, int count, std::size_t e) {
  using S = typename Tr::S;
  using A = typename Tr::A;
  S s;
  std::memcpy(&s, src[0] + e * sizeof(S), sizeof(S));
  A acc = Tr::load(s);
  for (int r = 1; r < count; ++r) {
    std::memcpy(&s, src[r] + e * sizeof(S), sizeof(S));
    acc = combine<Tr, Op>(acc, Tr::load(s));
  }
  if constexpr (Op == ReduceOp::kAvg) acc = acc / static_cast<A>(count);
  s = Tr::store(acc);
  std::memcpy(out + e * sizeof(S), &s, sizeof(S));
}

// Bytes per vector step: every element size divides it, and 16-byte aligned
// loads and stores are the widest a GPU thread makes.
constexpr std::size_t kVectorBytes = 16;

// 16 bytes from `from` to `to`: one vector load and store on the device (both
// must be 16-byte aligned there), a memcpy the compiler turns into one on the host.
COLLEX_ELEMENTS void copy_vector(void* to, const void* from) {
#if defined(__CUDA_ARCH__)
  *static_cast<uint4*>(to) = *static_cast<const uint4*>(from);
#else
  std::memcpy(to, from, kVectorBytes);
#endif
}

// `to` (16 bytes) = vector v (16 bytes at v * kVector) of every source,
// combined element by element. `to` may lie in one of the sources: each
// vector is loaded whole first.
template <typename Tr, ReduceOp Op>
COLLEX_ELEMENTS void combine_vector_to(char* to, const char* const* src, int count, std::size_t v) {
  using S = typename Tr::S;
  constexpr std::size_t kPer = kVectorBytes / sizeof(S);
  const std::size_t at = v * kVectorBytes;
  alignas(kVectorBytes) S acc_in[kPer];
  alignas(kVectorBytes) S next[kPer];
  typename Tr::A acc[kPer];
  copy_vector(acc_in, src[0] + at);
  for (std::size_t e = 0; e < kPer; ++e) acc[e] = Tr::load(acc_in[e]);
  for (int r = 1; r < count; ++r) {
    copy_vector(next, src[r] + at);
    for (std::size_t e = 0; e < kPer; ++e) acc[e] = combine<Tr, Op>(acc[e], Tr::load(next[e]));
  }
  for (std::size_t e = 0; e < kPer; ++e) {
    if constexpr (Op == ReduceOp::kAvg) acc[e] = acc[e] / static_cast<typename Tr::A>(count);
    acc_in[e] = Tr::store(acc[e]);
  }
  copy_vector(to, acc_in);
}

// Vector v of `out` = vector v of every source combined.
template <typename Tr, ReduceOp Op>
COLLEX_ELEMENTS void combine_vector(char* out, const char* const* src, int count, std::size_t v) {
  combine_vector_to<Tr, Op>(out + v * kVectorBytes, src, count, v);
}

template <typename Tr, typename Fn>
inline bool with_op(ReduceOp op, Fn& fn) {
  switch (op) {
    case ReduceOp::kSum: fn.template run<Tr, ReduceOp::kSum>(); return true;
    case ReduceOp::kProd: fn.template run<Tr, ReduceOp::kProd>(); return true;
    case ReduceOp::kMin: fn.template run<Tr, ReduceOp::kMin>(); return true;
    case ReduceOp::kMax: fn.template run<Tr, ReduceOp::kMax>(); return true;
    case ReduceOp::kAvg:
      if constexpr (!std::is_integral_v<typename Tr::A>) {
        fn.template run<Tr, ReduceOp::kAvg>();
        return true;
      }
      break;
  }
  return false;
}

// Calls fn.template run<Tr, Op>() for the element traits of `dtype` and the
// operator `op` (host code: it picks which kernel to run); returns false,
// calling nothing, for avg of an integer type.
template <typename Fn>
inline bool with_elements(DType dtype, ReduceOp op, Fn& fn) {
  switch (dtype) {
    case DType::kFloat16: return with_op<Half>(op, fn);
    case DType::kBFloat16: return with_op<BFloat>(op, fn);
    case DType::kFloat32: return with_op<Plain<float>>(op, fn);
    case DType::kFloat64: return with_op<Plain<double>>(op, fn);
    case DType::kInt8: return with_op<Integer<std::int8_t>>(op, fn);
    case DType::kUInt8: return with_op<Integer<std::uint8_t>>(op, fn);
    case DType::kInt32: return with_op<Integer<std::int32_t>>(op, fn);
    case DType::kInt64: return with_op<Integer<std::int64_t>>(op, fn);
  }
  return false;
}

}  // namespace collex::kernels::elements
