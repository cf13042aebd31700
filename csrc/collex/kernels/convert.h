// Conversion kernels for gradient compression: float32 gradients packed into a
// narrower wire dtype (fp16, bf16) with an optional error-feedback residual,
// unpacked with the average's division folded in, and the plain scaled copy
// that unpacks an uncompressed bucket. Type-erased like reduce.h.
#pragma once

#include <cstddef>

#include "collex/common/dtype.h"

namespace collex::kernels {

// max over i of |src[i] + residual[i]| (residual may be null: zero). NaN when any
// sum is NaN. Zero for n == 0.
float max_abs(const float* src, const float* residual, std::size_t n);

// v = src[i] + residual[i]; wire[i] = round_to_wire(v * scale); when residual is
// not null it becomes v - wire[i] / scale (what this rounding lost, to be added
// back next time). wire_dtype is float16 or bfloat16.
void compress(void* wire, DType wire_dtype, const float* src, float* residual, std::size_t n, float scale);

// dst[i] = float(wire[i]) * factor.
void decompress(float* dst, const void* wire, DType wire_dtype, std::size_t n, float factor);

// dst[i] = src[i] / divisor in the dtype's accumulation type (float32 for
// fp16/bf16); dst may equal src. Floating dtypes only.
void divide_copy(void* dst, const void* src, std::size_t n, DType dtype, double divisor);

// One compiled copy of the loops per instruction set (see convert_loops.h).
using MaxAbsFn = float (*)(const float* src, const float* residual, std::size_t n);
using CompressFn = void (*)(void* wire, const float* src, float* residual, std::size_t n, float scale);
using DecompressFn = void (*)(float* dst, const void* wire, std::size_t n, float factor);
using DivideCopyFn = void (*)(void* dst, const void* src, std::size_t n, double divisor);
#define COLLEX_CONVERT_PICKERS              \
  MaxAbsFn pick_max_abs();                  \
  CompressFn pick_compress(DType wire);     \
  DecompressFn pick_decompress(DType wire); \
  DivideCopyFn pick_divide_copy(DType dtype);
namespace generic {
COLLEX_CONVERT_PICKERS
}  // namespace generic
namespace avx2 {
COLLEX_CONVERT_PICKERS
}  // namespace avx2
namespace avx512 {
COLLEX_CONVERT_PICKERS
}  // namespace avx512
#undef COLLEX_CONVERT_PICKERS

}  // namespace collex::kernels
