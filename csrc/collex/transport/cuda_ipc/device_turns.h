// The turns' kernels (turns.h): one launch per part of a round on the caller's
// stream, a grid of blocks over each piece (blockIdx.y the piece), 16-byte
// vector loads where every address allows, float32 accumulation for fp16/bf16
// in rank order. Nothing in them waits for a peer: the host orders the ranks'
// kernels with CUDA IPC events between the parts (python/collex/cuda/turns.py).
#pragma once

#include <cstdint>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/cuda_ipc/turns.h"

namespace collex::ipc {

// Queues part `which` of round `round` of `call` (rank peers.rank's) on
// `stream`. Every pointer is a device pointer valid in this process. Throws
// std::invalid_argument for arguments outside the protocol's limits and
// std::runtime_error for a failed launch.
void launch_turn(const Peers& peers, const Call& call, TurnPart which, std::uint64_t round, DType dtype, ReduceOp op,
                 int threads, std::uintptr_t stream);

}  // namespace collex::ipc
