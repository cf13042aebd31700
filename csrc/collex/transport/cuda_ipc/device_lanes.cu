#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "collex/common/cuda_errors.h"
#include "collex/kernels/combine.h"
#include "collex/transport/cuda_ipc/device_lanes.h"
#include "collex/transport/cuda_ipc/lane_elements.h"
#include "collex/transport/cuda_ipc/lane_rounds.h"

namespace collex::ipc {
namespace {

namespace el = kernels::elements;

__device__ std::uint64_t global_nanoseconds() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Vector loads and stores need 16-byte addresses; range bounds fall on
// vectors, so a pointer's own alignment decides. Staging buffers always are; a
// user's array (a view at an odd offset) may not be, and goes by bytes.
__host__ __device__ bool vector_aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kVector == 0; }

// The block's work and meetings, out of line (__noinline__): the rounds copy,
// combine and meet at a dozen places each, and inlined there every kernel
// carried a dozen copies of every loop (nvcc took about 100 s per architecture
// for this file, two thirds of the whole build; now about 30 s). Out of line, copy_range
// and lane_barrier are compiled once for all kernels and combine_range once per
// kernel; a call costs a few instructions per range of a round, against the
// range's thousands of bytes.

__device__ __noinline__ void copy_range(char* dst, const char* src, Range r) {
  std::size_t whole = r.begin + (r.end - r.begin) / kVector * kVector;
  if (!vector_aligned(dst) || !vector_aligned(src)) whole = r.begin;
  for (std::size_t v = r.begin / kVector + threadIdx.x; v < whole / kVector; v += blockDim.x) {
    el::copy_vector(dst + v * kVector, src + v * kVector);
  }
  for (std::size_t b = whole + threadIdx.x; b < r.end; b += blockDim.x) dst[b] = src[b];
}

// Every out (a user's array at any element offset, or a staging buffer)
// gets the sources' range combined; the sources are staging buffers, or in a
// direct call the ranks' arrays, which go element by element unless every one
// is aligned. Each vector (element) is read from every source before any out
// is written, so an out may be a source that no other thread reads.
template <typename Tr, ReduceOp Op>
__device__ __noinline__ void combine_range(const Outs& outs, const char* const* src, int count, Range r) {
  using S = typename Tr::S;
  std::size_t whole = r.begin + (r.end - r.begin) / kVector * kVector;
  for (int q = 0; q < count; ++q) {
    if (!vector_aligned(src[q])) whole = r.begin;
  }
  for (std::size_t v = r.begin / kVector + threadIdx.x; v < whole / kVector; v += blockDim.x) {
    alignas(kVector) char reduced[kVector];
    el::combine_vector_to<Tr, Op>(reduced, src, count, v);
    for (int k = 0; k < outs.count; ++k) {
      char* at = outs.at[k] + v * kVector;
      if (vector_aligned(at)) {
        el::copy_vector(at, reduced);
      } else {
        for (std::size_t b = 0; b < kVector; ++b) at[b] = reduced[b];
      }
    }
  }
  for (std::size_t e = whole / sizeof(S) + threadIdx.x; e < r.end / sizeof(S); e += blockDim.x) {
    el::combine_element<Tr, Op>(outs.at[0], src, count, e);
    for (int k = 1; k < outs.count; ++k) memcpy(outs.at[k] + e * sizeof(S), outs.at[0] + e * sizeof(S), sizeof(S));
  }
}

// How a block meets the same lane of its peers (lanes.h's barrier): thread 0
// signals and waits for the block.
struct DeviceFlags {
  std::uint64_t timeout_ns;
  LaneStatus* status;

  __device__ void sync() { __syncthreads(); }
  __device__ bool sync_and(bool ok) { return __syncthreads_and(ok) != 0; }
  __device__ bool leader() const { return threadIdx.x == 0; }

  // The block's writes (ordered before this thread by the barrier before it)
  // are visible to every GPU and process before the flag is.
  __device__ void signal(std::uint64_t* word, std::uint64_t value) {
    __threadfence_system();
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(word), "l"(value) : "memory");
  }

  __device__ bool wait(const std::uint64_t* word, std::uint64_t value) {
    const std::uint64_t deadline_ns = global_nanoseconds() + timeout_ns;
    for (unsigned spin = 0;; ++spin) {
      std::uint64_t seen;
      asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(seen) : "l"(word) : "memory");
      if (seen >= value) return true;
      if ((spin & 1023u) == 1023u && global_nanoseconds() > deadline_ns) return false;
    }
  }

  // Words that a flag's release and acquire order (signature words).
  __device__ void store(std::uint64_t* word, std::uint64_t value) {
    *reinterpret_cast<volatile std::uint64_t*>(word) = value;
  }
  __device__ std::uint64_t load(const std::uint64_t* word) {
    return *reinterpret_cast<const volatile std::uint64_t*>(word);
  }

  // The first lane to give up, of any block of this rank, says why.
  __device__ void report(const LaneStatus& why) {
    if (atomicCAS(reinterpret_cast<unsigned long long*>(&status->failed), 0ull, why.failed) == 0ull) {
      fill_status(status, why);
      __threadfence_system();
    }
  }
};

__device__ __noinline__ bool lane_barrier(const Peers& w, int lane, std::uint64_t value, std::uint64_t signature,
                                          DeviceFlags flags) {
  return barrier(w, lane, value, flags, signature);
}

// A lane as one CUDA block: its threads share the bytes vector by vector.
template <typename Tr, ReduceOp Op>
struct DeviceLane {
  DeviceFlags flags;

  __device__ void copy(char* dst, const char* src, Range r) { copy_range(dst, src, r); }
  __device__ void combine(const Outs& outs, const char* const* src, int count, Range r) {
    combine_range<Tr, Op>(outs, src, count, r);
  }
  __device__ bool barrier(const Peers& w, int lane, std::uint64_t value, std::uint64_t signature = 0) {
    return lane_barrier(w, lane, value, signature, flags);
  }
};

// The most threads a lane may have: __launch_bounds__ holds the kernels'
// registers to what a block of this size can get (they take 64 to 104 per
// thread, the most for integer min and max), so that every launch allowed here runs.
constexpr int kMaxThreads = 512;

template <typename Tr, ReduceOp Op>
__global__ void __launch_bounds__(kMaxThreads)
    lanes_kernel(Peers peers, Call call, std::uint64_t timeout_ns, LaneStatus* status) {
  DeviceLane<Tr, Op> ctx{{timeout_ns, status}};
  run_lane(peers, call, static_cast<int>(blockIdx.x), ctx);
}

struct Launch {
  const Peers& peers;
  const Call& call;
  int threads;
  std::uint64_t timeout_ns;
  LaneStatus* status;
  cudaStream_t stream;
  template <typename Tr, ReduceOp Op>
  void run() {
    lanes_kernel<Tr, Op><<<static_cast<unsigned>(peers.lanes), static_cast<unsigned>(threads), 0, stream>>>(
        peers, call, timeout_ns, status);
  }
};

// The fewest blocks of `threads` threads per multiprocessor of any kernel's.
struct FewestResident {
  int threads;
  int fewest = 1 << 30;
  template <typename Tr, ReduceOp Op>
  void run() {
    int blocks = 0;
    throw_if_cuda_failed(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, lanes_kernel<Tr, Op>, threads, std::size_t{0}),
        "lanes_resident");
    fewest = blocks < fewest ? blocks : fewest;
  }
};

}  // namespace

int lanes_resident(int threads, int device) {
  if (threads < 32 || threads > kMaxThreads) throw std::invalid_argument("collex: lanes_resident: bad thread count");
  throw_if_cuda_failed(cudaSetDevice(device), "lanes_resident");
  int multiprocessors = 0;
  throw_if_cuda_failed(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device),
                       "lanes_resident");
  FewestResident kernels{threads};
  for (int d = 0; d < kNumDTypes; ++d) {
    for (ReduceOp o : kReduceOps) el::with_elements(static_cast<DType>(d), o, kernels);  // none: avg of integers
  }
  return kernels.fewest * multiprocessors;
}

void launch_lanes(const Peers& peers, const Call& call, DType dtype, ReduceOp op, int threads, double timeout_s,
                  LaneStatus* status, std::uintptr_t stream) {
  if (const char* why = invalid(peers, call)) throw std::invalid_argument(std::string("collex: launch_lanes: ") + why);
  if (threads < 32 || threads > kMaxThreads) throw std::invalid_argument("collex: launch_lanes: bad thread count");
  for (int r = 0; r < peers.ranks; ++r) {
    if (!vector_aligned(peers.staging[r]))
      throw std::invalid_argument("collex: launch_lanes: staging buffers must be 16-byte aligned");
  }
  if (call.bytes == 0) return;
  const auto timeout_ns = static_cast<std::uint64_t>(timeout_s * 1e9);
  Call checked = call;
  checked.signature = call_signature(call, static_cast<int>(dtype), static_cast<int>(op));
  Launch go{peers, checked, threads, timeout_ns, status, reinterpret_cast<cudaStream_t>(stream)};
  const LaneElements elements = lane_elements(call.kind, dtype, op);
  if (!el::with_elements(elements.dtype, elements.op, go)) {
    throw std::invalid_argument("collex: launch_lanes: avg is not defined for integer dtypes");
  }
  throw_if_cuda_failed(cudaGetLastError(), "launch_lanes");
}

}  // namespace collex::ipc
