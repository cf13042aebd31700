// The CUDA IPC collectives' kernels: one block per lane of the lane protocol
// (lanes.h), queued on the caller's stream; flags in device memory ordered with
// release stores and acquire loads at system scope; 16-byte vector loads;
// float32 accumulation for fp16/bf16 in rank order (kernels/combine.h). No host
// step between launch and completion: later work on the stream sees the result.
#pragma once

#include <cstdint>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/cuda_ipc/lanes.h"

namespace collex::ipc {

// Queues `call` on `stream` as peers.lanes blocks of `threads` (32-512) threads. Every
// pointer in `peers` and `call` is a device pointer valid in this process (the
// peers' opened by CUDA IPC), staging buffers 16-byte aligned (the call's
// arrays may lie at any element offset); `status` is written only on failure:
// a wait longer than `timeout_s` ends its lane (so a dead peer never hangs the
// GPU), as does a peer whose call differs (call_signature). The kernels of all
// ranks must be able to run at the same time (separate GPUs, or MPS): a lane
// spins on its peers' flags. Throws std::invalid_argument for arguments outside
// the protocol's limits and std::runtime_error for a failed launch.
void launch_lanes(const Peers& peers, const Call& call, DType dtype, ReduceOp op, int threads, double timeout_s,
                  LaneStatus* status, std::uintptr_t stream);

// How many lanes (blocks of `threads` threads) `device` runs at once, for the
// lanes' kernel that fits fewest per multiprocessor. Every lane of every rank
// spins until its peers' same lane comes, so the ranks' lanes must all fit at
// once: ranks sharing a GPU divide this among them (python/collex/cuda/lanes.py).
// Throws std::runtime_error where the runtime cannot say.
int lanes_resident(int threads, int device);

}  // namespace collex::ipc
