#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "collex/kernels/cuda/reduce_peers.h"
#include "collex/kernels/half.h"

namespace collex::cuda {
namespace {

// Storage type S, accumulation type A, and the conversions between them.
template <typename T>
struct Plain {  // float, double: accumulate as they are
  using S = T;
  using A = T;
  __device__ static A load(S s) { return s; }
  __device__ static S store(A a) { return a; }
};
template <typename T>
struct Integer {  // wrap-around sums and products: computed unsigned
  using S = T;
  using A = std::make_unsigned_t<T>;
  __device__ static A load(S s) { return static_cast<A>(s); }
  __device__ static S store(A a) { return static_cast<S>(a); }
};
struct Half {
  using S = std::uint16_t;
  using A = float;
  __device__ static A load(S s) { return kernels::fp16_to_float(s); }
  __device__ static S store(A a) { return kernels::float_to_fp16(a); }
};
struct BFloat {
  using S = std::uint16_t;
  using A = float;
  __device__ static A load(S s) { return kernels::bf16_to_float(s); }
  __device__ static S store(A a) { return kernels::float_to_bf16(a); }
};

// min and max propagate NaN (as numpy.minimum/maximum do); integers compare in
// their own, possibly signed, type.
template <typename Tr, ReduceOp Op>
__device__ typename Tr::A combine(typename Tr::A a, typename Tr::A b) {
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

// Grid-stride: each thread combines element i of every rank, in rank order.
template <typename Tr, ReduceOp Op>
__global__ void reduce_kernel(typename Tr::S* out, Sources src, std::size_t n) {
  using S = typename Tr::S;
  using A = typename Tr::A;
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    A acc = Tr::load(static_cast<const S*>(src.at[0])[i]);
    for (int r = 1; r < src.count; ++r) acc = combine<Tr, Op>(acc, Tr::load(static_cast<const S*>(src.at[r])[i]));
    if constexpr (Op == ReduceOp::kAvg) acc = acc / static_cast<A>(src.count);
    out[i] = Tr::store(acc);
  }
}

template <typename Tr, ReduceOp Op>
void launch(void* out, const Sources& src, std::size_t n, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const std::size_t blocks = (n + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 4096 ? blocks : 4096);
  reduce_kernel<Tr, Op><<<grid, kThreads, 0, stream>>>(static_cast<typename Tr::S*>(out), src, n);
}

template <typename Tr>
void launch_op(void* out, const Sources& src, std::size_t n, ReduceOp op, cudaStream_t stream) {
  switch (op) {
    case ReduceOp::kSum: return launch<Tr, ReduceOp::kSum>(out, src, n, stream);
    case ReduceOp::kProd: return launch<Tr, ReduceOp::kProd>(out, src, n, stream);
    case ReduceOp::kMin: return launch<Tr, ReduceOp::kMin>(out, src, n, stream);
    case ReduceOp::kMax: return launch<Tr, ReduceOp::kMax>(out, src, n, stream);
    case ReduceOp::kAvg:
      if constexpr (!std::is_integral_v<typename Tr::A>) return launch<Tr, ReduceOp::kAvg>(out, src, n, stream);
      break;
  }
  throw std::invalid_argument("collex: reduce_peers: operator not supported for this dtype");
}

}  // namespace

void reduce_peers(void* out, const Sources& src, std::size_t n, DType dtype, ReduceOp op, std::uintptr_t stream,
                  int device) {
  if (n == 0) return;
  if (src.count < 1 || src.count > kMaxPeers) throw std::invalid_argument("collex: reduce_peers: bad rank count");
  cudaError_t set = cudaSetDevice(device);
  if (set != cudaSuccess) throw std::runtime_error(std::string("collex: cudaSetDevice: ") + cudaGetErrorName(set));
  auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kFloat16: launch_op<Half>(out, src, n, op, s); break;
    case DType::kBFloat16: launch_op<BFloat>(out, src, n, op, s); break;
    case DType::kFloat32: launch_op<Plain<float>>(out, src, n, op, s); break;
    case DType::kFloat64: launch_op<Plain<double>>(out, src, n, op, s); break;
    case DType::kInt8: launch_op<Integer<std::int8_t>>(out, src, n, op, s); break;
    case DType::kUInt8: launch_op<Integer<std::uint8_t>>(out, src, n, op, s); break;
    case DType::kInt32: launch_op<Integer<std::int32_t>>(out, src, n, op, s); break;
    case DType::kInt64: launch_op<Integer<std::int64_t>>(out, src, n, op, s); break;
  }
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("collex: reduce_peers launch: ") + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
  }
}

}  // namespace collex::cuda
