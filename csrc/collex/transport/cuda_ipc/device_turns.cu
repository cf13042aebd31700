#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "collex/common/cuda_errors.h"
#include "collex/kernels/combine.h"
#include "collex/transport/cuda_ipc/device_turns.h"
#include "collex/transport/cuda_ipc/lane_elements.h"
#include "collex/transport/cuda_ipc/turn_pieces.h"

namespace collex::ipc {
namespace {

// Blocks per piece: enough to fill the GPU on large pieces (about four vectors
// per thread each), one for small ones.
constexpr unsigned kMaxBlocks = 1024;

template <typename Tr, ReduceOp Op>
__global__ void turn_kernel(Turn turn) {
  const Piece& piece = turn.piece[blockIdx.y];
  const std::size_t first = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  work_piece<Tr, Op>(piece, first, static_cast<std::size_t>(gridDim.x) * blockDim.x);
}

struct Launch {
  const Turn& turn;
  dim3 grid;
  unsigned threads;
  cudaStream_t stream;
  template <typename Tr, ReduceOp Op>
  void run() {
    turn_kernel<Tr, Op><<<grid, threads, 0, stream>>>(turn);
  }
};

}  // namespace

void launch_turn(const Peers& peers, const Call& call, TurnPart which, std::uint64_t round, DType dtype, ReduceOp op,
                 int threads, std::uintptr_t stream) {
  if (const char* why = invalid(peers, call)) throw std::invalid_argument(std::string("collex: launch_turn: ") + why);
  if (threads < 32 || threads > 1024) throw std::invalid_argument("collex: launch_turn: bad thread count");
  const Turn turn = turn_part(peers, call, which, round);
  if (turn.count == 0) return;
  std::size_t largest = 0;
  for (int i = 0; i < turn.count; ++i) largest = turn.piece[i].bytes > largest ? turn.piece[i].bytes : largest;
  const std::size_t per_block = static_cast<std::size_t>(threads) * kVector * 4;
  std::size_t blocks = (largest + per_block - 1) / per_block;
  blocks = blocks < 1 ? 1 : blocks > kMaxBlocks ? kMaxBlocks : blocks;
  Launch go{turn, dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(turn.count)),
            static_cast<unsigned>(threads), reinterpret_cast<cudaStream_t>(stream)};
  const LaneElements elements = turn_elements(call.kind, which, dtype, op);
  if (!kernels::elements::with_elements(elements.dtype, elements.op, go)) {
    throw std::invalid_argument("collex: launch_turn: avg is not defined for integer dtypes");
  }
  throw_if_cuda_failed(cudaGetLastError(), "launch_turn");
}

}  // namespace collex::ipc
