#include <cuda_runtime_api.h>

#include <stdexcept>
#include <type_traits>

#include "collex/common/cuda_errors.h"
#include "collex/kernels/combine.h"
#include "collex/kernels/cuda/reduce_peers.h"

namespace collex::cuda {
namespace {

using namespace kernels::elements;

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

// The launch for one dtype and operator (kernels::elements::with_elements).
struct Launch {
  void* out;
  const Sources& src;
  std::size_t n;
  cudaStream_t stream;
  template <typename Tr, ReduceOp Op>
  void run() {
    launch<Tr, Op>(out, src, n, stream);
  }
};

}  // namespace

void reduce_peers(void* out, const Sources& src, std::size_t n, DType dtype, ReduceOp op, std::uintptr_t stream,
                  int device) {
  if (n == 0) return;
  if (src.count < 1 || src.count > kMaxPeers) throw std::invalid_argument("collex: reduce_peers: bad rank count");
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  auto s = reinterpret_cast<cudaStream_t>(stream);
  Launch go{out, src, n, s};
  if (!with_elements(dtype, op, go)) {
    throw std::invalid_argument("collex: reduce_peers: operator not supported for this dtype");
  }
  throw_if_cuda_failed(cudaGetLastError(), "reduce_peers launch");
}

}  // namespace collex::cuda
