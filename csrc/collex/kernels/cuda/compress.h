// GradientReducer's compression on the GPU: a bucket's float32 gradients packed
// into an fp16/bf16 wire buffer where they lie (with error feedback), and the
// averages unpacked back, as kernels on a stream; the element arithmetic is
// kernels/compress_segments.h, shared with the CPU stand-in that CI tests.
#pragma once

#include <cstdint>

#include "collex/kernels/compress_segments.h"

namespace collex::cuda {

using kernels::segments::Segment;

// Every pointer is device memory on `device`; `segments` holds `count` Segments
// (none empty), `residual` (may be null: no error feedback) and the wire are
// indexed by a segment's offset. Each queues its work on `stream` and returns;
// each throws std::runtime_error with the runtime's message when a launch fails.

// *amax = the largest |grad + residual| over the segments, NaN if any is NaN.
void bucket_amax(const Segment* segments, int count, const float* residual, float* amax, std::uintptr_t stream,
                 int device);

// The wire from the gradients (and residual), scaled by wire_scale(fp16, *amax,
// ranks); `amax` may be null (bf16: scale 1).
void bucket_pack(const Segment* segments, int count, std::uint16_t* wire, float* residual, const float* amax, int ranks,
                 bool fp16, std::uintptr_t stream, int device);

// Each gradient = its part of the summed wire / (scale * ranks): the average.
void bucket_unpack(const Segment* segments, int count, const std::uint16_t* wire, const float* amax, int ranks,
                   bool fp16, std::uintptr_t stream, int device);

}  // namespace collex::cuda
