#include "collex/kernels/reduce.h"

#include <cstdint>
#include <type_traits>

#include "collex/kernels/half.h"

namespace collex::kernels {
namespace {

// Storage type <-> accumulation type. fp16/bf16 are stored as uint16 bit patterns.
struct Fp16 {
  using Storage = std::uint16_t;
  using Acc = float;
  static Acc load(Storage s) { return fp16_to_float(s); }
  static Storage store(Acc a) { return float_to_fp16(a); }
};
struct Bf16 {
  using Storage = std::uint16_t;
  using Acc = float;
  static Acc load(Storage s) { return bf16_to_float(s); }
  static Storage store(Acc a) { return float_to_bf16(a); }
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
  for (std::size_t i = 0; i < n; ++i) {
    dst[i] = Traits::store(Op::apply(Traits::load(a[i]), Traits::load(b[i])));
  }
}

using ReduceFn = void (*)(void*, const void*, const void*, std::size_t);

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
  for (std::size_t i = 0; i < n; ++i) dst[i] = Traits::store(Traits::load(dst[i]) / d);
}

}  // namespace

void reduce(void* dst, const void* a, const void* b, std::size_t n, DType dtype, ReduceOp op) {
  if (n == 0) return;
  pick(dtype, op)(dst, a, b, n);
}

void divide(void* dst, std::size_t n, DType dtype, double divisor) {
  switch (dtype) {
    case DType::kFloat16: return divide_loop<Fp16>(dst, n, divisor);
    case DType::kBFloat16: return divide_loop<Bf16>(dst, n, divisor);
    case DType::kFloat32: return divide_loop<Plain<float>>(dst, n, divisor);
    case DType::kFloat64: return divide_loop<Plain<double>>(dst, n, divisor);
    default: return;  // integer averages are rejected before reaching a kernel
  }
}

}  // namespace collex::kernels
