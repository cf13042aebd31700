// Gradient compression over a bucket's gradients where they lie, written once
// for host and device: the CUDA kernels of GradientReducer's GPU path
// (kernels/cuda/compress.cu) run these per element, and so does their CPU
// stand-in (the test hook in bindings/testing.cpp), which CI runs. The formulas
// are the CPU loops' (convert_loops.h) element for element: v = grad +
// residual; wire = v * scale rounded to fp16/bf16; the residual keeps what the
// rounding lost; unpacking multiplies by 1 / (scale * ranks).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "collex/kernels/half.h"

namespace collex::kernels::segments {

// A gradient's memory and its place in the bucket (the first element's index
// in the wire and residual buffers). Laid out for device memory: three words.
struct Segment {
  std::uint64_t grad;    // address of `count` float32
  std::uint64_t count;   // elements
  std::uint64_t offset;  // in the bucket
};

// fp16 holds magnitudes up to 65504. Scaling the bucket so that the sum over p
// ranks stays within half of that leaves room for rounding in every partial sum;
// a power of two keeps the scaling itself exact. Zeros, NaN and infinities
// scale by 1 (and pass on as they are).
COLLEX_HD float fp16_scale(float amax, int ranks) {
  if (!(amax > 0.0f) || !(amax <= 3.4028234663852886e38f)) return 1.0f;
  int exponent = static_cast<int>(::floor(::log2(32768.0 / (static_cast<double>(amax) * ranks))));
  exponent = exponent < -100 ? -100 : exponent > 100 ? 100 : exponent;
  return ::ldexpf(1.0f, exponent);
}

// The scale a bucket packs with: fp16's from the ranks' agreed largest
// magnitude, 1 for bf16 (whose range is float32's).
COLLEX_HD float wire_scale(bool fp16, float amax, int ranks) { return fp16 ? fp16_scale(amax, ranks) : 1.0f; }

COLLEX_HD std::uint16_t to_wire(bool fp16, float v) { return fp16 ? float_to_fp16(v) : float_to_bf16(v); }
COLLEX_HD float from_wire(bool fp16, std::uint16_t w) { return fp16 ? fp16_to_float(w) : bf16_to_float(w); }

// |grad[i] + residual[i]| (residual may be null), NaN where the sum is NaN.
COLLEX_HD float magnitude(const float* grad, const float* residual, std::size_t i) {
  return ::fabsf(grad[i] + (residual != nullptr ? residual[i] : 0.0f));
}

// Element i of a segment into the wire (and its residual, when kept).
COLLEX_HD void pack_element(std::uint16_t* wire, const float* grad, float* residual, std::size_t i, float scale,
                            bool fp16) {
  if (residual == nullptr) {
    wire[i] = to_wire(fp16, grad[i] * scale);
    return;
  }
  const float v = grad[i] + residual[i];
  wire[i] = to_wire(fp16, v * scale);
  residual[i] = v - from_wire(fp16, wire[i]) * (1.0f / scale);
}

COLLEX_HD void unpack_element(float* grad, const std::uint16_t* wire, std::size_t i, float factor, bool fp16) {
  grad[i] = from_wire(fp16, wire[i]) * factor;
}

}  // namespace collex::kernels::segments
