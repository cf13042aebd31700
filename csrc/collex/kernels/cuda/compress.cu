#include <cuda_runtime_api.h>

#include "collex/common/cuda_errors.h"
#include "collex/kernels/cuda/compress.h"

namespace collex::cuda {
namespace {

namespace cx = kernels::segments;

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerSegment = 64;
constexpr int kMaxSegmentsPerLaunch = 65535;  // gridDim.y's limit

// The blocks of one segment (blockIdx.y) share its elements grid-stride.
__device__ std::size_t first_element() { return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ std::size_t element_stride() { return static_cast<std::size_t>(blockDim.x) * gridDim.x; }

// Non-negative floats order as their bits do; NaN is kept as the largest bits.
__global__ void amax_kernel(const Segment* segments, const float* residual, unsigned* amax_bits) {
  const Segment s = segments[blockIdx.y];
  const float* grad = reinterpret_cast<const float*>(s.grad);
  const float* r = residual != nullptr ? residual + s.offset : nullptr;
  unsigned best = 0;
  for (std::size_t i = first_element(); i < s.count; i += element_stride()) {
    const float m = cx::magnitude(grad, r, i);
    const unsigned bits = m != m ? 0x7fffffffu : __float_as_uint(m);
    best = bits > best ? bits : best;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned other = __shfl_down_sync(0xffffffffu, best, o);
    best = other > best ? other : best;
  }
  if ((threadIdx.x & 31) == 0) atomicMax(amax_bits, best);
}

__global__ void pack_kernel(const Segment* segments, std::uint16_t* wire, float* residual, const float* amax, int ranks,
                            bool fp16) {
  const Segment s = segments[blockIdx.y];
  const float scale = amax != nullptr ? cx::wire_scale(fp16, *amax, ranks) : 1.0f;
  const float* grad = reinterpret_cast<const float*>(s.grad);
  float* r = residual != nullptr ? residual + s.offset : nullptr;
  for (std::size_t i = first_element(); i < s.count; i += element_stride()) {
    cx::pack_element(wire + s.offset, grad, r, i, scale, fp16);
  }
}

__global__ void unpack_kernel(const Segment* segments, const std::uint16_t* wire, const float* amax, int ranks,
                              bool fp16) {
  const Segment s = segments[blockIdx.y];
  const float scale = amax != nullptr ? cx::wire_scale(fp16, *amax, ranks) : 1.0f;
  const float factor = 1.0f / (scale * static_cast<float>(ranks));
  float* grad = reinterpret_cast<float*>(s.grad);
  for (std::size_t i = first_element(); i < s.count; i += element_stride()) {
    cx::unpack_element(grad, wire + s.offset, i, factor, fp16);
  }
}

// Launches `launch(grid, first segment)` over the segments, at most
// kMaxSegmentsPerLaunch at a time, with enough blocks for the largest.
template <typename Fn>
void over_segments(int count, std::uintptr_t stream, int device, const char* what, Fn launch) {
  if (count <= 0) return;
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  for (int first = 0; first < count; first += kMaxSegmentsPerLaunch) {
    const int n = count - first < kMaxSegmentsPerLaunch ? count - first : kMaxSegmentsPerLaunch;
    launch(dim3(kMaxBlocksPerSegment, static_cast<unsigned>(n)), first, reinterpret_cast<cudaStream_t>(stream));
  }
  throw_if_cuda_failed(cudaGetLastError(), what);
}

}  // namespace

void bucket_amax(const Segment* segments, int count, const float* residual, float* amax, std::uintptr_t stream,
                 int device) {
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  throw_if_cuda_failed(cudaMemsetAsync(amax, 0, sizeof(float), reinterpret_cast<cudaStream_t>(stream)),
                       "cudaMemsetAsync");
  over_segments(count, stream, device, "bucket_amax", [&](dim3 grid, int first, cudaStream_t s) {
    amax_kernel<<<grid, kThreads, 0, s>>>(segments + first, residual, reinterpret_cast<unsigned*>(amax));
  });
}

void bucket_pack(const Segment* segments, int count, std::uint16_t* wire, float* residual, const float* amax, int ranks,
                 bool fp16, std::uintptr_t stream, int device) {
  over_segments(count, stream, device, "bucket_pack", [&](dim3 grid, int first, cudaStream_t s) {
    pack_kernel<<<grid, kThreads, 0, s>>>(segments + first, wire, residual, amax, ranks, fp16);
  });
}

void bucket_unpack(const Segment* segments, int count, const std::uint16_t* wire, const float* amax, int ranks,
                   bool fp16, std::uintptr_t stream, int device) {
  over_segments(count, stream, device, "bucket_unpack", [&](dim3 grid, int first, cudaStream_t s) {
    unpack_kernel<<<grid, kThreads, 0, s>>>(segments + first, wire, amax, ranks, fp16);
  });
}

}  // namespace collex::cuda
