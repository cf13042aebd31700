// Element types collex moves and reduces. Only kernels interpret the bits;
// every other room sees a DType as an opaque tag with a size and a name.
#pragma once

#include <cstddef>
#include <cstdint>

namespace collex {

// The numeric values are part of the binding contract (python/collex/_dtypes.py).
enum class DType : std::uint8_t {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,
  kFloat64 = 3,
  kInt8 = 4,
  kUInt8 = 5,
  kInt32 = 6,
  kInt64 = 7,
};

constexpr int kNumDTypes = 8;

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat64:
    case DType::kInt64: return 8;
    case DType::kInt8:
    case DType::kUInt8: return 1;
  }
  return 0;
}

constexpr bool dtype_is_float(DType t) {
  return t == DType::kFloat16 || t == DType::kBFloat16 || t == DType::kFloat32 || t == DType::kFloat64;
}

const char* dtype_name(DType t);
bool dtype_from_int(int code, DType* out);

}  // namespace collex
